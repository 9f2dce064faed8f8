/* The known-answer self-test (host/opencl/ocl_selftest.c): tiny problems whose
 * answers the host knows, each aimed at a way a driver has been seen to get
 * things wrong. A device that fails any of them is refused. */

/* One work-item, n iterations (llvmpipe in Mesa 22.3 ends every loop after
 * 65535 iterations per work-item). */
__kernel void qk_selftest_loop(__global uint *out, uint n)
{
    if (get_global_id(0) != 0) return;
    uint h = 2166136261u, i = 0;
    for (; i < n; i++) h = (h ^ i) * 16777619u;
    out[0] = h;
    out[1] = i;
}

/* A reduction across work-groups: per-group sums in local memory, then one
 * work-item adds the groups' sums (a second launch on the same queue). */
__kernel void qk_selftest_partial(__global const uint *x, uint n, __global ulong *part)
{
    __local ulong l[QK_WG];
    uint lid = get_local_id(0);
    ulong s = 0;
    for (uint i = get_global_id(0); i < n; i += get_global_size(0)) s += x[i];
    l[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint h = QK_WG / 2; h > 0; h >>= 1) {
        if (lid < h) l[lid] += l[lid + h];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) part[get_group_id(0)] = l[0];
}

__kernel void qk_selftest_total(__global const ulong *part, uint groups, __global ulong *out)
{
    if (get_global_id(0) != 0) return;
    ulong s = 0;
    for (uint g = 0; g < groups; g++) s += part[g];
    out[0] = s;
}

/* Division and rounding as the kernels do them (QK_DIV_float, QK_RINT), scalar
 * and vector: q[i] = a[i] / b[i], r[i] = rint(q[i]); n a multiple of 8. */
__kernel void qk_selftest_div(__global const float *a, __global const float *b, __global float *q,
                              __global float *r, __global float *q8, __global float *r8, uint n)
{
    uint i = get_global_id(0);
    if (i < n) {
        float v = QK_DIV_float(a[i], b[i]);
        q[i] = v;
        r[i] = QK_RINT(v);
    }
    if (8 * i < n) {
        float8 v = QK_DIV_float8(vload8(i, a), vload8(i, b));
        vstore8(v, i, q8);
        vstore8(QK_RINT(v), i, r8);
    }
}
