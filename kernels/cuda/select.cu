// One pass of the multi-target radix select (host/cuda/cuda_select.c drives
// the passes). Each element's key (float bits mapped to an order-preserving
// unsigned integer, QK_ABS clearing the sign first, QK_IGNORE_NONFINITE
// dropping NaN/Inf) is tested against the current nodes (distinct target
// prefixes of the higher digits); a key in a node is counted in that node's
// histogram of the next digit and, when the pass compacts, appended to a
// candidate buffer that later passes read instead of the whole tensor.
//
// Shapes: 256 threads, tiles of 2048 keys (8 per thread, 16-byte vector loads
// when aligned), a grid-stride loop over tiles. Node lookup: none for the root,
// a 2048-entry table for one-digit prefixes, a binary search in shared memory
// after that. Histograms: per block in shared memory when they fit (8192
// counters), merged with one global integer atomic per non-zero bin; else
// global atomics aggregated per warp (__match_any_sync). Compaction: a block
// scan of the keep flags and one atomicAdd per tile for the block's range.
// Counts are integers, so the histograms are exact whatever the schedule; the
// order inside the candidate buffer varies, which no result depends on.
#include <cub/block/block_scan.cuh>

#include "common.cuh"

namespace {

using qkcu::kFullMask;
using qkcu::kThreads;

constexpr int kItems = 8;
constexpr int64_t kTile = (int64_t)kThreads * kItems;
constexpr int kLutBits = QK_CU_SELECT_ROOT_BITS;
constexpr int kLutSize = 1 << kLutBits;
constexpr int kSharedBins = 8192;
// dynamic shared memory: [lut: int16 x 2048][prefixes: 8 B x 512][histogram: u32 x 8192]
constexpr size_t kLutOff = 0;
constexpr size_t kPrefixOff = kLutOff + kLutSize * sizeof(short);
constexpr size_t kHistOff = kPrefixOff + QK_CU_SELECT_MAX_NODES * sizeof(uint64_t);

template <typename K> struct KeyTraits;
template <> struct KeyTraits<uint32_t> {
    static constexpr int bits = 32;
};
template <> struct KeyTraits<uint64_t> {
    static constexpr int bits = 64;
};

// The key of raw value bits u, or false when the element is dropped.
__device__ __forceinline__ bool make_key(uint32_t u, unsigned flags, uint32_t &key)
{
    if ((flags & QK_IGNORE_NONFINITE) && !qkcu::finite_bits32(u)) return false;
    if (flags & QK_ABS) u &= 0x7fffffffu;
    key = qkcu::key_bits32(u);
    return true;
}

__device__ __forceinline__ bool make_key(uint64_t u, unsigned flags, uint64_t &key)
{
    if ((flags & QK_IGNORE_NONFINITE) && !qkcu::finite_bits64(u)) return false;
    if (flags & QK_ABS) u &= 0x7fffffffffffffffull;
    key = qkcu::key_bits64(u);
    return true;
}

// kItems consecutive elements from e0 (e0 + kItems <= count or the tail):
// their keys and keep flags. RAW: the source holds value bits to key.
template <typename K, bool RAW>
__device__ __forceinline__ void load_keys(const K *__restrict__ src, int64_t e0, int64_t count, bool vec, unsigned flags,
                                          K (&key)[kItems], bool (&ok)[kItems])
{
    K u[kItems];
    if (vec && e0 + kItems <= count) {
        constexpr int per16 = 16 / sizeof(K);
        const uint4 *p = reinterpret_cast<const uint4 *>(src + e0);
#pragma unroll
        for (int q = 0; q < kItems / per16; q++) {
            const uint4 w = p[q];
            if (sizeof(K) == 4) {
                u[q * 4 + 0] = (K)w.x;
                u[q * 4 + 1] = (K)w.y;
                u[q * 4 + 2] = (K)w.z;
                u[q * 4 + 3] = (K)w.w;
            } else {
                u[q * 2 + 0] = (K)(((uint64_t)w.y << 32) | w.x);
                u[q * 2 + 1] = (K)(((uint64_t)w.w << 32) | w.z);
            }
        }
#pragma unroll
        for (int j = 0; j < kItems; j++) ok[j] = true;
    } else {
#pragma unroll
        for (int j = 0; j < kItems; j++) {
            ok[j] = e0 + j < count;
            u[j] = ok[j] ? src[e0 + j] : (K)0;
        }
    }
#pragma unroll
    for (int j = 0; j < kItems; j++) {
        if (RAW) {
            if (ok[j]) ok[j] = make_key(u[j], flags, key[j]);
            else key[j] = 0;
        } else {
            key[j] = u[j];
        }
    }
}

template <typename K, bool RAW> __global__ void __launch_bounds__(kThreads) pass_kernel(qk_cu_pass a, bool vec)
{
    constexpr int KB = KeyTraits<K>::bits;
    extern __shared__ __align__(16) unsigned char smem[];
    short *lut = reinterpret_cast<short *>(smem + kLutOff);
    K *pre = reinterpret_cast<K *>(smem + kPrefixOff);
    unsigned *sh = reinterpret_cast<unsigned *>(smem + kHistOff);
    typedef cub::BlockScan<int, kThreads> Scan;
    __shared__ typename Scan::TempStorage scan_tmp;
    __shared__ unsigned long long s_base;

    const K *__restrict__ src = static_cast<const K *>(a.src);
    const K *__restrict__ prefixes = static_cast<const K *>(a.prefixes);
    K *__restrict__ out = static_cast<K *>(a.out);
    const bool root = a.filter_shift >= KB;
    const bool use_lut = !root && KB - a.filter_shift <= kLutBits;
    const int nnodes = root ? 1 : a.nnodes;
    const int nb = 1 << a.digit_bits;
    const int nbins = nnodes * nb;
    const bool shared_hist = nbins <= kSharedBins;
    const int fshift = root ? 0 : a.filter_shift;
    const int hshift = a.filter_shift - a.digit_bits;
    const K dmask = (K)(nb - 1);

    if (use_lut) {
        for (int i = threadIdx.x; i < kLutSize; i += kThreads) lut[i] = -1;
        __syncthreads();
        for (int j = threadIdx.x; j < nnodes; j += kThreads) lut[(int)prefixes[j]] = (short)j;
    } else if (!root) {
        for (int j = threadIdx.x; j < nnodes; j += kThreads) pre[j] = prefixes[j];
    }
    if (shared_hist) {
        for (int i = threadIdx.x; i < nbins; i += kThreads) sh[i] = 0;
    }
    __syncthreads();

    const int64_t stride = (int64_t)gridDim.x * kTile;
    for (int64_t t0 = (int64_t)blockIdx.x * kTile; t0 < a.count; t0 += stride) {
        const int64_t e0 = t0 + (int64_t)threadIdx.x * kItems;
        K key[kItems];
        bool ok[kItems];
        load_keys<K, RAW>(src, e0, a.count, vec, a.flags, key, ok);

        int bin[kItems];
#pragma unroll
        for (int j = 0; j < kItems; j++) {
            int node = 0;
            if (ok[j] && !root) {
                const K p = key[j] >> fshift;
                if (use_lut) {
                    node = lut[(int)p];
                } else {
                    int lo = 0, hi = nnodes;
                    while (lo < hi) {
                        const int mid = (lo + hi) >> 1;
                        if (pre[mid] < p) lo = mid + 1;
                        else hi = mid;
                    }
                    node = (lo < nnodes && pre[lo] == p) ? lo : -1;
                }
                ok[j] = node >= 0;
            }
            bin[j] = ok[j] ? node * nb + (int)((key[j] >> hshift) & dmask) : -1;
        }

        if (shared_hist) {
#pragma unroll
            for (int j = 0; j < kItems; j++) {
                if (ok[j]) atomicAdd(&sh[bin[j]], 1u);
            }
        } else {
            // all lanes are here (uniform trip counts): combine equal bins of a warp
            const int lane = threadIdx.x & 31;
#pragma unroll
            for (int j = 0; j < kItems; j++) {
                const unsigned peers = __match_any_sync(kFullMask, bin[j]);
                if (ok[j] && lane == __ffs(peers) - 1) atomicAdd(&a.hist[bin[j]], (unsigned long long)__popc(peers));
            }
        }

        if (out) {
            int mine = 0;
#pragma unroll
            for (int j = 0; j < kItems; j++) mine += ok[j] ? 1 : 0;
            int offset, total;
            Scan(scan_tmp).ExclusiveSum(mine, offset, total);
            if (threadIdx.x == 0) s_base = total ? atomicAdd(a.out_count, (unsigned long long)total) : 0ull;
            __syncthreads();
            unsigned long long w = s_base + (unsigned long long)offset;
#pragma unroll
            for (int j = 0; j < kItems; j++) {
                if (ok[j]) {
                    if (w < a.out_cap) out[w] = key[j];
                    w++;
                }
            }
            __syncthreads(); // scan_tmp and s_base are reused by the next tile
        }
    }

    if (shared_hist) {
        __syncthreads();
        for (int i = threadIdx.x; i < nbins; i += kThreads) {
            const unsigned c = sh[i];
            if (c) atomicAdd(&a.hist[i], (unsigned long long)c);
        }
    }
}

template <typename K, bool RAW> cudaError_t launch(cudaStream_t s, int sms, const qk_cu_pass &a)
{
    const int nnodes = a.filter_shift >= KeyTraits<K>::bits ? 1 : a.nnodes;
    const int nbins = nnodes << a.digit_bits;
    const size_t shmem = kHistOff + (nbins <= kSharedBins ? (size_t)nbins * sizeof(unsigned) : 0);
    int64_t tiles = (a.count + kTile - 1) / kTile;
    int64_t cap = (int64_t)(sms > 0 ? sms : 1) * 4;
    const unsigned grid = (unsigned)(tiles < cap ? (tiles > 0 ? tiles : 1) : cap);
    return qkcu::launch(pass_kernel<K, RAW>, grid, kThreads, shmem, s, a, qkcu::aligned16(a.src));
}

} // namespace

extern "C" cudaError_t qk_cu_select_pass(cudaStream_t s, int sms, const qk_cu_pass *pass)
{
    const qk_cu_pass &a = *pass;
    if (a.count <= 0) return cudaSuccess;
    if (a.digit_bits < 1 || a.digit_bits > kLutBits || a.nnodes < 1 || a.nnodes > QK_CU_SELECT_MAX_NODES)
        return cudaErrorInvalidValue;
    switch (a.src_kind) {
    case QK_CU_SRC_F32: return launch<uint32_t, true>(s, sms, a);
    case QK_CU_SRC_KEY32: return launch<uint32_t, false>(s, sms, a);
    case QK_CU_SRC_F64: return launch<uint64_t, true>(s, sms, a);
    case QK_CU_SRC_KEY64: return launch<uint64_t, false>(s, sms, a);
    default: return cudaErrorInvalidValue;
    }
}
