#!/usr/bin/env bash
# Build a fuzz target (tests/fuzz/fuzz_TARGET.c) with clang's libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer, and fuzz its reader for a
# bounded time from a seed corpus of valid files made here.
#
#   run_fuzz.sh [TARGET] [SECONDS]   TARGET: safetensors (default) or gguf;
#                                    SECONDS: default 30, or $QK_FUZZ_SECONDS
#
# Exit status: 0 no crash; 1 a crash, leak, sanitizer report or build failure
# (the crashing input is kept and its path printed); 77 skipped: no clang that
# can link -fsanitize=fuzzer (Debian: clang-14 with libclang-rt-14-dev).
# $QK_FUZZ_CC picks the compiler; $QK_FUZZ_KEEP=1 keeps the work directory.
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap, seeds_TARGET by name
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=safetensors
case "${1:-}" in
    safetensors|gguf) target=$1; shift ;;
    ''|[0-9]*) ;;
    *) echo "run_fuzz.sh: unknown target '$1' (safetensors or gguf)" >&2; exit 2 ;;
esac
secs=${1:-${QK_FUZZ_SECONDS:-30}}
work=$(mktemp -d "${TMPDIR:-/tmp}/qk_fuzz_$target.XXXXXX") || exit 1
keep=${QK_FUZZ_KEEP:-0}
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

# A clang whose libFuzzer runtime is installed (clang alone is not enough).
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
    >"$work/probe.c"
cc=""
for c in ${QK_FUZZ_CC:-} clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
    [ -n "$(command -v "$c")" ] || continue
    # the probe's output goes to a log in the work directory (never /dev/null)
    if "$c" -fsanitize=fuzzer,address,undefined "$work/probe.c" -o "$work/probe" >>"$work/probe.log" 2>&1; then
        cc=$c
        break
    fi
done
if [ -z "$cc" ]; then
    echo "SKIPPED: no clang with the libFuzzer runtime (Debian: apt-get install clang-14 libclang-rt-14-dev)"
    exit 77
fi
if ! cjson_flags=$(pkg-config --cflags --libs libcjson 2>"$work/pkg-config.log"); then
    echo "FAILED: pkg-config does not find libcjson (Debian: libcjson-dev)"
    cat "$work/pkg-config.log"
    exit 1
fi

echo "building the $target fuzz target with $cc ($("$cc" --version | head -n 1))"
case $target in
    safetensors) sources=("$root/host/io/safetensors.c") ;;
    gguf) sources=("$root/host/io/gguf.c") ;;
esac
# shellcheck disable=SC2086  # cjson_flags is a list of flags
if ! "$cc" -std=c11 -g -O1 -D_DEFAULT_SOURCE -Wall -Wextra \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
    -I"$root/include" -I"$root/host/io" \
    "$here/fuzz_$target.c" "${sources[@]}" "$root"/host/io/atomic_*.c \
    "$root/host/io/big_alloc.c" "$root/host/io/map_file.c" $cjson_flags -lm -o "$work/fuzz"; then
    echo "FAILED: the fuzz target does not build"
    exit 1
fi

# ---- seed corpus: valid files (and the official crate's test vectors) --------
seeds=$work/seeds
mkdir -p "$seeds" "$work/corpus" "$work/artifacts"
# seed NAME HEADER DATA_BYTES: 8-byte little-endian header length, header, data.
seed() {
    local n=${#2} i le=""
    for i in 0 1 2 3 4 5 6 7; do
        le="$le\\x$(printf %02x $(((n >> (8 * i)) & 255)))"
    done
    {
        printf '%b' "$le"
        printf '%s' "$2"
        head -c "$3" /dev/zero
    } >"$seeds/$1"
}
seeds_safetensors() {
seed empty '{}      ' 0
seed meta '{"__metadata__":{"framework":"pt"}}     ' 0
seed attn '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}' 24
seed aligned '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       ' 24
seed mixed '{"__metadata__":{"format":"pt","k":"v"},"b":{"dtype":"F32","shape":[2,1],"data_offsets":[4,12]},"a":{"dtype":"I16","shape":[2],"data_offsets":[0,4]},"c":{"dtype":"U8","shape":[0],"data_offsets":[12,12]},"d":{"dtype":"BOOL","shape":[],"data_offsets":[12,13]}}' 13
seed kinds '{"a":{"dtype":"I64","shape":[1,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"c":{"dtype":"F16","shape":[1],"data_offsets":[22,24]},"d":{"dtype":"F64","shape":[],"data_offsets":[24,32]},"e":{"dtype":"F4","shape":[2],"data_offsets":[32,33]},"f":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[33,34]},"g":{"dtype":"U64","shape":[0,5],"data_offsets":[34,34]},"h":{"dtype":"C64","shape":[1],"data_offsets":[34,42]}}' 42
seed escapes ' {"\u00e9\n\"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"__metadata__":{"":"\t"}} ' 2

cat >"$work/dict" <<'DICT'
"{"
"}"
"["
"]"
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"F32\""
"\"F64\""
"\"F16\""
"\"BF16\""
"\"I8\""
"\"U8\""
"\"I16\""
"\"U16\""
"\"I32\""
"\"U32\""
"\"I64\""
"\"U64\""
"\"BOOL\""
"\"C64\""
"\"F4\""
"\"F6_E2M3\""
"\"F8_E5M2\""
"9007199254740992"
"4294967296"
"\\u0000"
"\\ud83d\\ude00"
DICT
}

# GGUF seeds: valid files with every value type, an array of arrays, tensors of
# several ggml types and a non-default alignment (made with python3's struct).
seeds_gguf() {
    python3 - "$seeds" <<'PY'
import struct, sys
out = sys.argv[1]
def s(x): x = x.encode(); return struct.pack('<Q', len(x)) + x
def kv(k, t, enc): return s(k) + struct.pack('<I', t) + enc
def arr(et, elems): return struct.pack('<IQ', et, len(elems)) + b''.join(elems)
def tinfo(name, ne, typ, off): return s(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', d) for d in ne) + struct.pack('<IQ', typ, off)
def gguf(kvs, tensors, data, align=32, version=3):
    h = b'GGUF' + struct.pack('<IQQ', version, len(tensors), len(kvs)) + b''.join(kvs) + b''.join(tensors)
    return h + b'\0' * (-len(h) % align) + data
scalars = [kv('u8', 0, b'\x07'), kv('i8', 1, b'\xf9'), kv('u16', 2, b'\1\2'), kv('i16', 3, b'\xff\xff'),
           kv('u32', 4, struct.pack('<I', 9)), kv('i32', 5, struct.pack('<i', -9)), kv('f32', 6, struct.pack('<f', 1.5)),
           kv('b', 7, b'\1'), kv('str', 8, s('hello')), kv('u64', 10, struct.pack('<Q', 1 << 40)),
           kv('i64', 11, struct.pack('<q', -5)), kv('f64', 12, struct.pack('<d', 0.25))]
open(out + '/empty', 'wb').write(gguf([], [], b''))
open(out + '/v2', 'wb').write(gguf(scalars[:3], [], b'', version=2))
open(out + '/scalars', 'wb').write(gguf(scalars, [], b''))
nested = arr(9, [arr(2, [b'\1\0', b'\2\0']), arr(8, [s('a'), s('')]), arr(9, [arr(0, [b'\5'])])])
open(out + '/arrays', 'wb').write(gguf([kv('tok', 9, arr(8, [s('x'), s('yz'), s('')])), kv('n', 9, nested),
                                         kv('f', 9, arr(6, [struct.pack('<f', 2.0)] * 3))], [], b''))
data = b'\1' * 24 + b'\0' * 8 + b'\2' * 34 + b'\0' * 30 + b'\3' * 144
open(out + '/tensors', 'wb').write(gguf([kv('general.architecture', 8, s('llama'))],
    [tinfo('a', [3, 2], 0, 0), tinfo('q8', [32], 8, 32), tinfo('q4k', [256], 12, 96)], data))
open(out + '/align64', 'wb').write(gguf([kv('general.alignment', 4, struct.pack('<I', 64))],
    [tinfo('w', [2, 2, 1, 1], 1, 0), tinfo('z', [0], 0, 64)], b'\4' * 8 + b'\0' * 56, align=64))
PY
}

"seeds_$target"
dict=()
[ "$target" = safetensors ] && dict=(-dict="$work/dict")
echo "fuzzing the $target reader for ${secs}s"
"$work/fuzz" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds" 2>"$work/log"
rc=$?
tail -n 25 "$work/log"
if [ "$rc" -ne 0 ]; then
    keep=1
    echo "FAILED: the fuzzer found a problem (exit $rc); inputs in $work/artifacts:"
    ls -l "$work/artifacts"
    exit 1
fi
echo "PASSED: no crash in ${secs}s ($(find "$work/corpus" -maxdepth 1 -type f | wc -l) corpus inputs)"
exit 0
