"""A small ctypes binding of libqkern (include/qkern.h) for the parity scripts.

The structs mirror qkern.h field for field (enums are C ints); ctypes applies the
same natural alignment as the C compiler, so the padding matches on LP64
platforms. Only the entry points the tests use are declared.

    from qkern_ctypes import Qkern
    qk = Qkern("build/libqkern.so")
    ctx = qk.context("cpu")            # raises QkError on failure
    vals = qk.percentiles(ctx, x, [50, 99.9])
"""
import ctypes as C

import numpy as np

# ---- enums (qkern.h order) -------------------------------------------------
QK_OK = 0
QK_ERR_INVALID_ARG = 1
QK_ERR_NO_MEMORY = 2
QK_ERR_UNSUPPORTED = 3
QK_ERR_NO_DEVICE = 4
QK_ERR_NONFINITE = 5
QK_ERR_RANGE = 6
QK_ERR_BACKEND = 7
QK_ERR_IO = 8
QK_ERR_FORMAT = 9

QK_BACKEND_AUTO, QK_BACKEND_CPU, QK_BACKEND_OPENCL, QK_BACKEND_CUDA = 0, 1, 2, 3
BACKENDS = {"auto": QK_BACKEND_AUTO, "cpu": QK_BACKEND_CPU, "opencl": QK_BACKEND_OPENCL, "cuda": QK_BACKEND_CUDA}

QK_F32, QK_F64, QK_F16, QK_BF16, QK_U8, QK_I8, QK_U16, QK_I16, QK_I32 = range(9)
DTYPE_OF_NUMPY = {
    np.dtype(np.float32): QK_F32,
    np.dtype(np.float64): QK_F64,
    np.dtype(np.float16): QK_F16,
    np.dtype(np.uint8): QK_U8,
    np.dtype(np.int8): QK_I8,
    np.dtype(np.uint16): QK_U16,
    np.dtype(np.int16): QK_I16,
    np.dtype(np.int32): QK_I32,
}

QK_ASYMMETRIC, QK_SYMMETRIC = 0, 1
QK_CALIB_MINMAX, QK_CALIB_PERCENTILE, QK_CALIB_GRIDSEARCH = 0, 1, 2
QK_OBJECTIVE_MSE, QK_OBJECTIVE_MSE_INLIERS = 0, 1

QK_IGNORE_NONFINITE = 1
QK_ABS = 2


# ---- structs ------------------------------------------------------------------
class Tensor(C.Structure):
    _fields_ = [("dtype", C.c_int), ("n", C.c_int64), ("host", C.c_void_p), ("buffer", C.c_void_p),
                ("offset", C.c_int64)]


class Qparams(C.Structure):
    _fields_ = [("scheme", C.c_int), ("bits", C.c_int), ("narrow_range", C.c_int), ("scale", C.c_float),
                ("zero_point", C.c_int32), ("qmin", C.c_int32), ("qmax", C.c_int32),
                ("clip_lo", C.c_double), ("clip_hi", C.c_double)]


class MinmaxResult(C.Structure):
    _fields_ = [("min", C.c_double), ("max", C.c_double), ("absmax", C.c_double), ("n_finite", C.c_int64),
                ("nonfinite_count", C.c_int64), ("first_nonfinite", C.c_int64)]


class CalibOptions(C.Structure):
    _fields_ = [("scheme", C.c_int), ("bits", C.c_int), ("narrow_range", C.c_int), ("include_zero", C.c_int),
                ("ignore_nonfinite", C.c_int), ("method", C.c_int), ("percentile", C.c_double),
                ("grid", C.POINTER(C.c_double)), ("grid_len", C.c_size_t), ("grid_start", C.c_double),
                ("grid_stop", C.c_double), ("grid_step", C.c_double), ("objective", C.c_int),
                ("fence_k", C.c_double)]


class Candidate(C.Structure):
    _fields_ = [("percentile", C.c_double), ("clip_lo", C.c_double), ("clip_hi", C.c_double),
                ("scale", C.c_float), ("zero_point", C.c_int32), ("clipped", C.c_int64), ("mse", C.c_double),
                ("mse_inliers", C.c_double)]


class CalibResult(C.Structure):
    _fields_ = [("params", Qparams), ("best", C.c_size_t), ("candidates", C.POINTER(Candidate)),
                ("n_candidates", C.c_size_t), ("fence_lo", C.c_double), ("fence_hi", C.c_double),
                ("n", C.c_int64), ("n_inliers", C.c_int64)]


class ErrorResult(C.Structure):
    _fields_ = [("mse", C.c_double), ("sse", C.c_double), ("n", C.c_int64), ("clipped", C.c_int64)]


# sizeof/offsetof as gcc lays out qkern.h on x86-64 and aarch64 Linux (LP64):
# a drifted header shows up here instead of as garbage values.
_EXPECTED_SIZES = {Tensor: 40, Qparams: 48, MinmaxResult: 48, CalibOptions: 88, Candidate: 56,
                   CalibResult: 104, ErrorResult: 32}
if C.sizeof(C.c_void_p) == 8:
    for _t, _s in _EXPECTED_SIZES.items():
        assert C.sizeof(_t) == _s, "%s: ctypes size %d, C size %d" % (_t.__name__, C.sizeof(_t), _s)


class QkError(Exception):
    def __init__(self, status, what, message=""):
        self.status = status
        self.message = message
        super().__init__("%s: status %d%s" % (what, status, (" (" + message + ")") if message else ""))


def _f64_array(values):
    a = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    return a, a.ctypes.data_as(C.POINTER(C.c_double))


class Qkern:
    """The library, with thin Python wrappers that raise QkError (or return the status)."""

    def __init__(self, path):
        lib = C.CDLL(path)
        self.lib = lib
        vp = C.c_void_p
        P = C.POINTER
        sig = {
            "qk_status_string": (C.c_char_p, [C.c_int]),
            "qk_context_create": (C.c_int, [C.c_int, P(vp), C.c_char_p, C.c_size_t]),
            "qk_context_destroy": (C.c_int, [vp]),
            "qk_context_message": (C.c_char_p, [vp]),
            "qk_context_nonfinite": (C.c_int, [vp, P(C.c_int64), P(C.c_int64)]),
            "qk_buffer_create": (C.c_int, [vp, C.c_size_t, P(vp)]),
            "qk_buffer_destroy": (C.c_int, [vp, vp]),
            "qk_buffer_write": (C.c_int, [vp, vp, C.c_size_t, vp, C.c_size_t]),
            "qk_buffer_read": (C.c_int, [vp, vp, C.c_size_t, vp, C.c_size_t]),
            "qk_calib_options_default": (C.c_int, [P(CalibOptions)]),
            "qk_qparams_from_range": (C.c_int, [vp, C.c_int, C.c_int, C.c_int, C.c_int, C.c_double, C.c_double,
                                                P(Qparams)]),
            "qk_qparams_from_scale": (C.c_int, [vp, C.c_int, C.c_int, C.c_int, C.c_float, C.c_int32, P(Qparams)]),
            "qk_minmax": (C.c_int, [vp, P(Tensor), C.c_uint, P(MinmaxResult)]),
            "qk_percentiles": (C.c_int, [vp, P(Tensor), P(C.c_double), C.c_size_t, C.c_uint, P(C.c_double)]),
            "qk_calibrate": (C.c_int, [vp, P(Tensor), P(CalibOptions), P(CalibResult)]),
            "qk_calib_result_release": (C.c_int, [P(CalibResult)]),
            "qk_quantize": (C.c_int, [vp, P(Tensor), P(Qparams), P(Tensor)]),
            "qk_dequantize": (C.c_int, [vp, P(Tensor), P(Qparams), P(Tensor)]),
            "qk_quant_error": (C.c_int, [vp, P(Tensor), P(Qparams), C.c_uint, P(ErrorResult)]),
            "qk_ggml_quantize": (C.c_int, [vp, P(Tensor), C.c_int, P(Tensor)]),
            "qk_ggml_dequantize": (C.c_int, [vp, P(Tensor), C.c_int, P(Tensor)]),
            "qk_ggml_size": (C.c_int, [C.c_int, C.c_int64, P(C.c_size_t)]),
        }
        for name, (res, args) in sig.items():
            f = getattr(lib, name)
            f.restype = res
            f.argtypes = args

    # ---- helpers ----
    def status_string(self, st):
        s = self.lib.qk_status_string(st)
        return s.decode() if s else "?"

    def message(self, ctx):
        s = self.lib.qk_context_message(ctx)
        return s.decode(errors="replace") if s else ""

    def check(self, ctx, st, what):
        if st != QK_OK:
            raise QkError(st, what, "%s; %s" % (self.status_string(st), self.message(ctx) if ctx else ""))

    @staticmethod
    def tensor(arr):
        """A host qk_tensor over a C-contiguous numpy array (keep arr alive)."""
        if not arr.flags.c_contiguous:
            raise ValueError("tensor: array must be C-contiguous")
        return Tensor(DTYPE_OF_NUMPY[arr.dtype], arr.size, arr.ctypes.data, None, 0)

    # ---- context ----
    def context_create(self, backend):
        """(status, ctx or None, message)."""
        ctx = C.c_void_p()
        msg = C.create_string_buffer(512)
        st = self.lib.qk_context_create(BACKENDS[backend], C.byref(ctx), msg, len(msg))
        return st, (ctx if st == QK_OK else None), msg.value.decode(errors="replace")

    def context_destroy(self, ctx):
        self.lib.qk_context_destroy(ctx)

    def nonfinite(self, ctx):
        cnt, first = C.c_int64(), C.c_int64()
        self.check(ctx, self.lib.qk_context_nonfinite(ctx, C.byref(cnt), C.byref(first)), "qk_context_nonfinite")
        return cnt.value, first.value

    # ---- operations (each returns (status, result)) ----
    def percentiles_st(self, ctx, x, p, flags=0, tensor=None):
        pa, pp = _f64_array(p)
        out = np.full(pa.size, np.nan)
        t = tensor if tensor is not None else self.tensor(x)
        st = self.lib.qk_percentiles(ctx, C.byref(t), pp, pa.size, flags, out.ctypes.data_as(C.POINTER(C.c_double)))
        return st, out

    def percentiles(self, ctx, x, p, flags=0):
        st, out = self.percentiles_st(ctx, x, p, flags)
        self.check(ctx, st, "qk_percentiles")
        return out

    def minmax_st(self, ctx, x, flags=0):
        r = MinmaxResult()
        t = self.tensor(x)
        st = self.lib.qk_minmax(ctx, C.byref(t), flags, C.byref(r))
        return st, r

    def options(self, **kw):
        o = CalibOptions()
        self.check(None, self.lib.qk_calib_options_default(C.byref(o)), "qk_calib_options_default")
        for k, v in kw.items():
            if not hasattr(o, k):
                raise AttributeError("qk_calib_options has no field %s" % k)
            setattr(o, k, v)
        return o

    def calibrate_st(self, ctx, x, opts):
        """(status, CalibResult or None, [candidate dicts]); the result is released here."""
        r = CalibResult()
        t = self.tensor(x)
        st = self.lib.qk_calibrate(ctx, C.byref(t), C.byref(opts), C.byref(r))
        cands = []
        if st == QK_OK:
            for i in range(r.n_candidates):
                c = r.candidates[i]
                cands.append({f: getattr(c, f) for f, _ in Candidate._fields_})
            params = Qparams()
            C.pointer(params)[0] = r.params
            res = {"params": params, "best": r.best, "n_candidates": r.n_candidates, "fence_lo": r.fence_lo,
                   "fence_hi": r.fence_hi, "n": r.n, "n_inliers": r.n_inliers, "candidates": cands}
            self.lib.qk_calib_result_release(C.byref(r))
            return st, res
        return st, None

    def calibrate(self, ctx, x, opts):
        st, res = self.calibrate_st(ctx, x, opts)
        self.check(ctx, st, "qk_calibrate")
        return res

    def qparams_from_range(self, ctx, scheme, bits, narrow, include_zero, lo, hi):
        p = Qparams()
        st = self.lib.qk_qparams_from_range(ctx, scheme, bits, narrow, include_zero, lo, hi, C.byref(p))
        return st, p

    def quantize(self, ctx, x, params, code_dtype):
        codes = np.empty(x.size, dtype=code_dtype)
        tx, tc = self.tensor(x), self.tensor(codes)
        self.check(ctx, self.lib.qk_quantize(ctx, C.byref(tx), C.byref(params), C.byref(tc)), "qk_quantize")
        return codes

    def dequantize(self, ctx, codes, params):
        out = np.empty(codes.size, dtype=np.float32)
        tc, to = self.tensor(codes), self.tensor(out)
        self.check(ctx, self.lib.qk_dequantize(ctx, C.byref(tc), C.byref(params), C.byref(to)), "qk_dequantize")
        return out

    def quant_error_st(self, ctx, x, params, flags=0):
        r = ErrorResult()
        t = self.tensor(x)
        st = self.lib.qk_quant_error(ctx, C.byref(t), C.byref(params), flags, C.byref(r))
        return st, r

    def quant_error(self, ctx, x, params, flags=0):
        st, r = self.quant_error_st(ctx, x, params, flags)
        self.check(ctx, st, "qk_quant_error")
        return r

    # ---- device buffers ----
    def buffer_from(self, ctx, arr):
        buf = C.c_void_p()
        self.check(ctx, self.lib.qk_buffer_create(ctx, arr.nbytes, C.byref(buf)), "qk_buffer_create")
        st = self.lib.qk_buffer_write(ctx, buf, 0, arr.ctypes.data, arr.nbytes)
        if st != QK_OK:
            self.lib.qk_buffer_destroy(ctx, buf)
            self.check(ctx, st, "qk_buffer_write")
        return buf

    def buffer_destroy(self, ctx, buf):
        self.lib.qk_buffer_destroy(ctx, buf)

    # ---- ggml block formats ----
    def ggml_size(self, gtype, n):
        b = C.c_size_t()
        st = self.lib.qk_ggml_size(gtype, n, C.byref(b))
        if st != QK_OK:
            raise QkError(st, "qk_ggml_size")
        return b.value

    def _device_tensor(self, ctx, arr, dtype):
        buf = C.c_void_p()
        self.check(ctx, self.lib.qk_buffer_create(ctx, max(arr.nbytes, 1), C.byref(buf)), "qk_buffer_create")
        self.check(ctx, self.lib.qk_buffer_write(ctx, buf, 0, arr.ctypes.data, arr.nbytes), "qk_buffer_write")
        return buf, Tensor(dtype, arr.size, None, buf, 0)

    def ggml_quantize_st(self, ctx, x, gtype, device=False):
        """(status, bytes as a uint8 array); device=True passes device buffers."""
        out = np.zeros(self.ggml_size(gtype, x.size), dtype=np.uint8)
        if not device:
            tx, to = self.tensor(x), Tensor(QK_U8, out.size, out.ctypes.data, None, 0)
            return self.lib.qk_ggml_quantize(ctx, C.byref(tx), gtype, C.byref(to)), out
        bx, tx = self._device_tensor(ctx, x, QK_F32)
        bo, to = self._device_tensor(ctx, out, QK_U8)
        try:
            st = self.lib.qk_ggml_quantize(ctx, C.byref(tx), gtype, C.byref(to))
            if st == QK_OK:
                self.check(ctx, self.lib.qk_buffer_read(ctx, bo, 0, out.ctypes.data, out.nbytes), "qk_buffer_read")
            return st, out
        finally:
            self.lib.qk_buffer_destroy(ctx, bx)
            self.lib.qk_buffer_destroy(ctx, bo)

    def ggml_quantize(self, ctx, x, gtype, device=False):
        st, out = self.ggml_quantize_st(ctx, x, gtype, device)
        self.check(ctx, st, "qk_ggml_quantize")
        return out

    def ggml_dequantize(self, ctx, blocks, gtype, n, device=False):
        out = np.zeros(n, dtype=np.float32)
        if not device:
            tb, to = Tensor(QK_U8, blocks.size, blocks.ctypes.data, None, 0), self.tensor(out)
            self.check(ctx, self.lib.qk_ggml_dequantize(ctx, C.byref(tb), gtype, C.byref(to)), "qk_ggml_dequantize")
            return out
        bb, tb = self._device_tensor(ctx, blocks, QK_U8)
        bo, to = self._device_tensor(ctx, out, QK_F32)
        try:
            self.check(ctx, self.lib.qk_ggml_dequantize(ctx, C.byref(tb), gtype, C.byref(to)), "qk_ggml_dequantize")
            self.check(ctx, self.lib.qk_buffer_read(ctx, bo, 0, out.ctypes.data, out.nbytes), "qk_buffer_read")
            return out
        finally:
            self.lib.qk_buffer_destroy(ctx, bb)
            self.lib.qk_buffer_destroy(ctx, bo)
