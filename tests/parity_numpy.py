#!/usr/bin/python3
"""Parity of libqkern with numpy (Debian's numpy 1.24; run with /usr/bin/python3).

An independent check of docs/numerics.md's numeric contract, calling the library through
ctypes on numpy arrays:

  1. percentiles bit for bit vs numpy.percentile (float32, float64, many p per call)
  2. percentiles past 2^24 elements
  3. QK_ABS, QK_IGNORE_NONFINITE, and the QK_ERR_NONFINITE path (count, first index)
  4. min/max
  5. calibration parameters (minmax, percentile) and codes vs docs/numerics.md's formulas in numpy
  6. dequantize bit for bit
  7. MSE within 1e-9 relative, and the same bits on a repeated call
  8. the grid-search table and the chosen candidate

    /usr/bin/python3 tests/parity_numpy.py --lib build/libqkern.so [--backend cpu] [--quick]

Prints one line per named case (PASS/FAIL with detail; the first failing
sub-cases with their seeds below a FAIL), then "N passed, M failed"; exits 1
if anything failed, 77 (ctest: skipped) with "SKIPPED: ..." when the backend is not available.
Every random draw comes from np.random.default_rng([seed, case, i]), printed
with each failure, so a failure reproduces with --seed and --only.
"""
import argparse
import math
import os
import sys
import time
import traceback

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qkern_ctypes as Q  # noqa: E402

F32, F64 = np.float32, np.float64
SPECIAL_P = [0.0, 100.0, 50.0, 25.0, 75.0, 99.0, 99.9, 99.99, 0.01]
KINDS = ["normal", "uniform", "laplace_outliers", "int_ties", "near_zero", "all_negative", "constant",
         "wide_range", "signed_zeros", "two_values", "near_max"]
FLT_TRUE_MIN = np.float32(2.0 ** -149)
MAX_DETAILS = 8


# ---- bookkeeping ---------------------------------------------------------------
class Case:
    """One named check: counts sub-checks, keeps the first failure details."""

    def __init__(self, name):
        self.name = name
        self.checks = 0
        self.failures = 0
        self.details = []
        self.notes = []

    def ok(self, cond, detail_fn):
        self.checks += 1
        if not cond:
            self.failures += 1
            if len(self.details) < MAX_DETAILS:
                self.details.append(detail_fn() if callable(detail_fn) else str(detail_fn))
        return cond

    def add(self, nchecks, nfailed, detail_fn):
        """nchecks checks at once, nfailed of them failed (detail_fn describes the first)."""
        self.checks += nchecks
        if nfailed:
            self.failures += nfailed
            if len(self.details) < MAX_DETAILS:
                self.details.append(detail_fn())

    def note(self, s):
        self.notes.append(s)


class Runner:
    def __init__(self, only):
        self.only = only
        self.passed = 0
        self.failed = 0

    def wanted(self, name):
        return not self.only or any(o in name for o in self.only)

    def report(self, case, seconds):
        good = case.failures == 0 and case.checks > 0
        if good:
            self.passed += 1
        else:
            self.failed += 1
        detail = "%d checks" % case.checks
        if case.failures:
            detail += ", %d failed" % case.failures
        if case.notes:
            detail += "; " + "; ".join(case.notes)
        print("%s %s: %s (%.1f s)" % ("PASS" if good else "FAIL", case.name, detail, seconds), flush=True)
        for d in case.details:
            print("    " + d, flush=True)

    def run(self, name, fn, *args):
        """Run fn(case, *args) as the named case."""
        if not self.wanted(name):
            return
        case = Case(name)
        t0 = time.time()
        try:
            fn(case, *args)
        except Exception:  # a crash in a case is a failure of that case, not of the run
            case.failures += 1
            case.details.extend(("exception: " + traceback.format_exc()).rstrip().split("\n")[-6:])
        self.report(case, time.time() - t0)

    def run_group(self, names, fn, *args):
        """fn(cases_dict, *args) fills several named cases from one pass over the data."""
        wanted = [n for n in names if self.wanted(n)]
        if not wanted:
            return
        cases = {n: Case(n) for n in names}
        t0 = time.time()
        try:
            fn(cases, *args)
        except Exception:
            for n in wanted:
                cases[n].failures += 1
                cases[n].details.extend(("exception: " + traceback.format_exc()).rstrip().split("\n")[-6:])
        dt = time.time() - t0
        for n in wanted:
            self.report(cases[n], dt)


# ---- data ------------------------------------------------------------------------
def rng_for(seed, tag, i):
    return np.random.default_rng([seed, tag, i])


def log_uniform_int(rng, lo, hi):
    return int(min(hi, max(lo, math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))))


def rand_sign(rng, n):
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def gen_data(rng, n, dtype, kind):
    """n values of dtype from one of KINDS (drawn in float64, then rounded once)."""
    f32 = dtype == F32
    if kind == "normal":
        x = rng.normal(rng.uniform(-5, 5), 10.0 ** rng.uniform(-3, 3), n)
    elif kind == "uniform":
        a = rng.uniform(-100, 100)
        x = rng.uniform(a, a + 10.0 ** rng.uniform(-4, 3), n)
    elif kind == "laplace_outliers":
        s = 10.0 ** rng.uniform(-2, 1)
        x = rng.laplace(0.0, s, n)
        k = int(rng.integers(0, n // 100 + 2))
        idx = rng.integers(0, n, k)
        x[idx] = rand_sign(rng, k) * s * 10.0 ** rng.uniform(1, 5, k)
    elif kind == "int_ties":
        m = int(rng.choice([1, 2, 5, 50]))
        x = rng.integers(-m, m + 1, n).astype(F64) * float(rng.choice([1.0, 0.5, 0.1, 1e-3]))
    elif kind == "near_zero":
        e = (-46.0, -36.0) if f32 else (-325.0, -300.0)  # float32 / float64 denormals and the smallest normals
        x = rand_sign(rng, n) * 10.0 ** rng.uniform(e[0], e[1], n)
        z = rng.random(n) < 0.2
        x[z] = np.copysign(0.0, rand_sign(rng, int(z.sum())))
    elif kind == "all_negative":
        x = -np.abs(rng.normal(0.0, 10.0 ** rng.uniform(-3, 3), n)) - float(rng.choice([0.0, rng.uniform(0, 100)]))
    elif kind == "constant":
        v = float(rng.choice([0.0, -0.0, 1.0, -3.5, 1e-40, 123456.789, 1e30, -7e-3]))
        x = np.full(n, v)
    elif kind == "wide_range":
        e = 30.0 if f32 else 300.0
        x = rand_sign(rng, n) * 10.0 ** rng.uniform(-e, e, n)
    elif kind == "signed_zeros":
        tiny = float(FLT_TRUE_MIN) if f32 else 5e-324
        vals = np.array([-0.0, 0.0, 1.0, -1.0, tiny, -tiny])
        x = vals[rng.choice(6, n, p=[0.3, 0.3, 0.1, 0.1, 0.1, 0.1])]
    elif kind == "two_values":
        a, b = sorted(rand_sign(rng, 2) * 10.0 ** rng.uniform(-20, 20, 2))
        x = np.where(rng.random(n) < rng.uniform(0.05, 0.95), a, b)
    elif kind == "near_max":
        top = 3.4e38 if f32 else 1.7e308
        x = rand_sign(rng, n) * rng.uniform(0.3 * top, top, n)
    else:
        raise ValueError(kind)
    with np.errstate(over="ignore", under="ignore"):
        return np.ascontiguousarray(x.astype(dtype))


def gen_p(rng, n, m=None):
    """Several p for one call: uniform ones, docs/numerics.md's specials, and exact-index ones."""
    m = int(rng.integers(1, 13)) if m is None else m
    out = []
    for _ in range(m):
        r = rng.random()
        if r < 0.5:
            out.append(float(rng.uniform(0, 100)))
        elif r < 0.85:
            out.append(float(rng.choice(SPECIAL_P)))
        else:  # p at (or next to) a data index: v = (n-1)*p/100 lands on an integer
            k = int(rng.integers(0, n)) if n > 1 else 0
            out.append(min(100.0, 100.0 * k / max(1, n - 1)))
    return np.array(out, dtype=F64)


def has_both_zeros(x):
    z = x == 0
    if not z.any():
        return False
    s = np.signbit(x)
    return bool(np.any(z & s)) and bool(np.any(z & ~s))


def same_bits(a, b, zeros_equal=False):
    """Elementwise bit equality of float64 arrays; NaN matches NaN; +0/-0 match only if zeros_equal."""
    a = np.asarray(a, F64)
    b = np.asarray(b, F64)
    eq = a.view(np.uint64) == b.view(np.uint64)
    eq |= np.isnan(a) & np.isnan(b)
    if zeros_equal:
        eq |= (a == 0) & (b == 0)
    return eq


def fhex(v):
    return float(v).hex()


def rel_close(a, b, tol=1e-9):
    a, b = float(a), float(b)
    if a == b:
        return True
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= tol * max(abs(a), abs(b))


# ---- the reference formulas (docs/numerics.md) in numpy ------------------------------
def code_range(scheme, bits, narrow):
    if scheme == Q.QK_ASYMMETRIC:
        return 0, (1 << bits) - 1
    qmax = (1 << (bits - 1)) - 1
    return (-qmax if narrow else -qmax - 1), qmax


def code_dtype(scheme, bits):
    if scheme == Q.QK_ASYMMETRIC:
        return np.uint8 if bits <= 8 else np.uint16
    return np.int8 if bits <= 8 else np.int16


def ref_qparams(scheme, bits, narrow, include_zero, lo, hi):
    """dict(status, scale (np.float32), zp, qmin, qmax, clip_lo, clip_hi) by docs/numerics.md's formulas."""
    lo, hi = float(lo), float(hi)
    qmin, qmax = code_range(scheme, bits, narrow)
    r = {"status": Q.QK_OK, "qmin": qmin, "qmax": qmax}

    def to_scale(s):
        with np.errstate(over="ignore"):
            f = np.float32(s)
        if not np.isfinite(f):
            return None
        return f if f > 0 else FLT_TRUE_MIN  # a denormal-sized range: the smallest scale, never 0

    if scheme == Q.QK_SYMMETRIC:
        c = max(abs(lo), abs(hi))
        r.update(clip_lo=-c, clip_hi=c, zp=0)
        if c == 0:
            r["scale"] = np.float32(1.0)
        else:
            s = to_scale(c / qmax)
            if s is None:
                return {"status": Q.QK_ERR_RANGE}
            r["scale"] = s
        return r
    if include_zero or lo == hi:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    r.update(clip_lo=lo, clip_hi=hi)
    if lo == hi:
        r.update(scale=np.float32(1.0), zp=qmin)
        return r
    s = to_scale((hi - lo) / (qmax - qmin))
    if s is None:
        return {"status": Q.QK_ERR_RANGE}
    zp = -np.rint(lo / np.float64(s))
    if not (-2.0 ** 31 <= zp <= 2.0 ** 31 - 1):
        return {"status": Q.QK_ERR_RANGE}
    r.update(scale=s, zp=int(zp))
    return r


def ref_quantize(x, scale, zp, qmin, qmax):
    """clamp(rint(x / scale) + zp): the division in the input's precision (float32 / float32 is
    correctly rounded in numpy, like C), the addition exact in float64. NaN -> code of 0."""
    with np.errstate(all="ignore"):
        if x.dtype == F32:
            r = np.rint(x / np.float32(scale)).astype(F64)
        else:
            r = np.rint(x / np.float64(scale))
        t = np.clip(r + float(zp), qmin, qmax)
        t[np.isnan(t)] = min(max(zp, qmin), qmax)
    return t.astype(np.int64)


def ref_dequantize(q, scale, zp):
    return (q.astype(np.int64) - zp).astype(F32) * np.float32(scale)


def ref_mse(x, xhat):
    d = x.astype(F64) - xhat.astype(F64)
    return float(np.mean(d * d)), float(np.sum(d * d))


# ---- 1. percentiles ---------------------------------------------------------------------
def check_pct_call(case, qk, ctx, x, p, flags, expected, zeros_equal, label):
    st, got = qk.percentiles_st(ctx, x, p, flags)
    if not case.ok(st == Q.QK_OK, lambda: "%s: status %d (%s)" % (label, st, qk.message(ctx))):
        return
    bad = np.flatnonzero(~same_bits(got, expected, zeros_equal))
    case.add(len(p), len(bad), lambda: "%s: p=%r qkern %s numpy %s (%d of %d p differ)" % (
        label, float(p[bad[0]]), fhex(got[bad[0]]), fhex(expected[bad[0]]), len(bad), len(p)))


def case_percentile_random(case, qk, ctx, seed, dtype, count, max_n, tag):
    npv = 0
    kinds_seen = set()
    for i in range(count):
        rng = rng_for(seed, tag, i)
        n = log_uniform_int(rng, 1, max_n)
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        x = gen_data(rng, n, dtype, kind)
        p = gen_p(rng, n)
        expected = np.percentile(x, p)
        npv += len(p)
        kinds_seen.add(kind)
        check_pct_call(case, qk, ctx, x, p, 0, expected, has_both_zeros(x),
                       "seed=[%d,%d,%d] n=%d kind=%s %s" % (seed, tag, i, n, kind, np.dtype(dtype).name))
    case.note("%d arrays, %d p values, %d kinds" % (count, npv, len(kinds_seen)))


def case_percentile_f16(case, qk, ctx, seed, count, max_n, tag):
    """float16 input: numpy subtracts neighbours in half precision (d = b - a rounded to half)."""
    npv = 0
    for i in range(count):
        rng = rng_for(seed, tag, i)
        n = log_uniform_int(rng, 1, max_n)
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            x = gen_data(rng, n, F64, kind).astype(np.float16)
        x[~np.isfinite(x)] = np.float16(65504.0)
        p = gen_p(rng, n)
        with np.errstate(over="ignore", invalid="ignore"):
            expected = np.percentile(x, p)
        npv += len(p)
        check_pct_call(case, qk, ctx, x, p, 0, expected, has_both_zeros(x),
                       "seed=[%d,%d,%d] n=%d kind=%s float16" % (seed, tag, i, n, kind))
    case.note("%d arrays, %d p values" % (count, npv))


def case_percentile_small_n(case, qk, ctx, seed, tag):
    """Every n from 1 to 9, every kind, both dtypes, all special p and a sweep."""
    p = np.array(SPECIAL_P + list(np.linspace(0, 100, 41)) + [12.5, 37.5, 62.5, 87.5, 1e-12, 100 - 1e-12])
    i = 0
    for dtype in (F32, F64):
        for n in range(1, 10):
            for kind in KINDS:
                rng = rng_for(seed, tag, i)
                x = gen_data(rng, n, dtype, kind)
                check_pct_call(case, qk, ctx, x, p, 0, np.percentile(x, p), has_both_zeros(x),
                               "seed=[%d,%d,%d] n=%d kind=%s %s" % (seed, tag, i, n, kind, np.dtype(dtype).name))
                i += 1
    case.note("%d arrays x %d p" % (i, len(p)))


def case_percentile_many_p(case, qk, ctx, seed, tag, n):
    for j, (dtype, kind) in enumerate([(F32, "laplace_outliers"), (F32, "int_ties"), (F64, "normal")]):
        rng = rng_for(seed, tag, j)
        x = gen_data(rng, n, dtype, kind)
        p = np.concatenate([rng.uniform(0, 100, 700), SPECIAL_P, np.linspace(0, 100, 201),
                            100.0 * rng.integers(0, n, 90) / (n - 1)])
        rng.shuffle(p)  # unsorted, with duplicates
        check_pct_call(case, qk, ctx, x, p, 0, np.percentile(x, p), has_both_zeros(x),
                       "seed=[%d,%d,%d] n=%d kind=%s %s, %d p in one call" % (
                           seed, tag, j, n, kind, np.dtype(dtype).name, len(p)))
    case.note("3 arrays of n=%d, %d p per call" % (n, len(p)))


def case_percentile_buffer(case, qk, ctx, seed, tag):
    """The device-resident path: the same numbers from a qk_buffer at an offset."""
    rng = rng_for(seed, tag, 0)
    n = 100_003
    x = gen_data(rng, n, F32, "laplace_outliers")
    pad = 7  # elements before the tensor in the buffer
    whole = np.concatenate([rng.standard_normal(pad).astype(F32), x])
    buf = qk.buffer_from(ctx, whole)
    try:
        p = gen_p(rng, n, 20)
        t = Q.Tensor(Q.QK_F32, n, None, buf, pad * 4)
        st, got = qk.percentiles_st(ctx, None, p, 0, tensor=t)
        if case.ok(st == Q.QK_OK, lambda: "buffer percentiles: status %d (%s)" % (st, qk.message(ctx))):
            exp = np.percentile(x, p)
            eq = same_bits(got, exp)
            j = int(np.argmin(eq))
            case.ok(eq.all(), lambda: "seed=[%d,%d,0] buffer offset %d: p=%r qkern %s numpy %s" % (
                seed, tag, pad * 4, p[j], fhex(got[j]), fhex(exp[j])))
    finally:
        qk.buffer_destroy(ctx, buf)


# ---- 2. large --------------------------------------------------------------------------
def case_percentile_large(case, qk, ctx, seed, tag, n, kind):
    rng = rng_for(seed, tag, n)
    x = gen_data(rng, n, F32, kind) if kind != "normal" else rng.standard_normal(n, dtype=F32)
    p = np.array([0.0, 100.0, 50.0, 99.99, 0.01, 25.0, 75.0, 99.9] + list(rng.uniform(0, 100, 2)))
    t0 = time.time()
    exp = np.percentile(x, p)
    t1 = time.time()
    st, got = qk.percentiles_st(ctx, x, p)
    t2 = time.time()
    case.ok(st == Q.QK_OK, lambda: "n=%d: status %d (%s)" % (n, st, qk.message(ctx)))
    if st == Q.QK_OK:
        bad = np.flatnonzero(~same_bits(got, exp))
        for j in bad[:3]:
            case.ok(False, lambda: "seed=[%d,%d,%d] n=%d kind=%s p=%r qkern %s numpy %s" % (
                seed, tag, n, n, kind, p[j], fhex(got[j]), fhex(exp[j])))
        case.add(len(p) - min(3, len(bad)), 0, None)
    case.note("n=%d %s, %d p; numpy %.2f s, qkern %.2f s" % (n, kind, len(p), t1 - t0, t2 - t1))


# ---- 3. flags and non-finite input --------------------------------------------------------
def inject_nonfinite(rng, x):
    n = x.size
    k = int(rng.integers(1, max(2, n // 10) + 1))
    idx = rng.integers(0, n, k)
    x = x.copy()
    x[idx] = rng.choice(np.array([np.nan, np.inf, -np.inf, -np.nan], dtype=x.dtype), k)
    return x


def case_percentile_abs(case, qk, ctx, seed, tag, count, max_n):
    for i in range(count):
        rng = rng_for(seed, tag, i)
        n = log_uniform_int(rng, 1, max_n)
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        dtype = F32 if i % 4 else F64
        x = gen_data(rng, n, dtype, kind)
        p = gen_p(rng, n)
        check_pct_call(case, qk, ctx, x, p, Q.QK_ABS, np.percentile(np.abs(x), p), False,
                       "seed=[%d,%d,%d] n=%d kind=%s %s QK_ABS" % (seed, tag, i, n, kind, np.dtype(dtype).name))
    case.note("%d arrays" % count)


def case_percentile_ignore_nonfinite(case, qk, ctx, seed, tag, count, max_n):
    for i in range(count):
        rng = rng_for(seed, tag, i)
        n = log_uniform_int(rng, 2, max_n)
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        dtype = F32 if i % 4 else F64
        x = inject_nonfinite(rng, gen_data(rng, n, dtype, kind))
        fin = x[np.isfinite(x)]
        if fin.size == 0:
            continue
        p = gen_p(rng, fin.size)
        label = "seed=[%d,%d,%d] n=%d kind=%s %s" % (seed, tag, i, n, kind, np.dtype(dtype).name)
        exp = np.percentile(fin, p)
        case.ok(same_bits(exp, np.nanpercentile(np.where(np.isfinite(x), x, np.nan), p), has_both_zeros(fin)).all(),
                lambda: label + ": numpy's nanpercentile disagrees with percentile of the finite values")
        check_pct_call(case, qk, ctx, x, p, Q.QK_IGNORE_NONFINITE, exp, has_both_zeros(fin),
                       label + " QK_IGNORE_NONFINITE")
        check_pct_call(case, qk, ctx, x, p, Q.QK_IGNORE_NONFINITE | Q.QK_ABS, np.percentile(np.abs(fin), p), False,
                       label + " QK_IGNORE_NONFINITE|QK_ABS")
    case.note("%d arrays with NaN/Inf" % count)


def case_nonfinite_errors(case, qk, ctx, seed, tag, count, max_n):
    """Without the flag: QK_ERR_NONFINITE from every entry point, with the count and first index."""
    for i in range(count):
        rng = rng_for(seed, tag, i)
        n = log_uniform_int(rng, 2, max_n)
        dtype = F32 if i % 3 else F64
        x = inject_nonfinite(rng, gen_data(rng, n, dtype, "normal"))
        bad = ~np.isfinite(x)
        cnt, first = int(bad.sum()), int(np.argmax(bad))
        label = "seed=[%d,%d,%d] n=%d %s (%d non-finite, first at %d)" % (seed, tag, i, n, np.dtype(dtype).name,
                                                                          cnt, first)

        def expect_nonfinite(st, what):
            if case.ok(st == Q.QK_ERR_NONFINITE, lambda: "%s: %s gave status %d, expected %d (QK_ERR_NONFINITE)" % (
                    label, what, st, Q.QK_ERR_NONFINITE)):
                got = qk.nonfinite(ctx)
                case.ok(got == (cnt, first), lambda: "%s: %s: qk_context_nonfinite gave %r" % (label, what, got))
                case.ok(len(qk.message(ctx)) > 0, lambda: "%s: %s: empty context message" % (label, what))

        st, _ = qk.percentiles_st(ctx, x, [50.0, 99.0])
        expect_nonfinite(st, "qk_percentiles")
        st, _ = qk.percentiles_st(ctx, x, [50.0], Q.QK_ABS)
        expect_nonfinite(st, "qk_percentiles(QK_ABS)")
        st, mm = qk.minmax_st(ctx, x)
        expect_nonfinite(st, "qk_minmax")
        fin = x[~bad]
        if fin.size:
            case.ok((mm.nonfinite_count, mm.first_nonfinite, mm.n_finite) == (cnt, first, fin.size),
                    lambda: "%s: qk_minmax result counts %r" % (
                        label, (mm.nonfinite_count, mm.first_nonfinite, mm.n_finite)))
            case.ok(mm.min == fin.min() and mm.max == fin.max(),
                    lambda: "%s: qk_minmax on error: min/max %r %r, finite min/max %r %r" % (
                        label, mm.min, mm.max, float(fin.min()), float(fin.max())))
        st, _ = qk.calibrate_st(ctx, x, qk.options(method=Q.QK_CALIB_PERCENTILE, percentile=99.0))
        expect_nonfinite(st, "qk_calibrate")
        st, params = qk.qparams_from_range(ctx, Q.QK_ASYMMETRIC, 8, 0, 0, -1.0, 1.0)
        st, _ = qk.quant_error_st(ctx, x, params)
        expect_nonfinite(st, "qk_quant_error")
    # all non-finite: an error even with the flag (there is nothing to count)
    x = np.array([np.nan, np.inf, -np.inf], dtype=F32)
    st, _ = qk.percentiles_st(ctx, x, [50.0], Q.QK_IGNORE_NONFINITE)
    case.ok(st != Q.QK_OK, lambda: "all-non-finite input with QK_IGNORE_NONFINITE: status OK")
    case.note("%d arrays x 5 entry points" % count)


def case_nonfinite_ignored_calibration(case, qk, ctx, seed, tag, count, max_n):
    """ignore_nonfinite: calibration, quantize and MSE count only the finite values."""
    for i in range(count):
        rng = rng_for(seed, tag, i)
        n = log_uniform_int(rng, 50, max_n)
        dtype = F32 if i % 3 else F64
        x = inject_nonfinite(rng, gen_data(rng, n, dtype, "laplace_outliers"))
        fin = x[np.isfinite(x)]
        if fin.size < 2:
            continue
        scheme = Q.QK_ASYMMETRIC if i % 2 else Q.QK_SYMMETRIC
        p = float(rng.uniform(90, 100))
        label = "seed=[%d,%d,%d] n=%d %s scheme=%d p=%r" % (seed, tag, i, n, np.dtype(dtype).name, scheme, p)
        res = qk.calibrate(ctx, x, qk.options(scheme=scheme, method=Q.QK_CALIB_PERCENTILE, percentile=p,
                                              ignore_nonfinite=1))
        if scheme == Q.QK_ASYMMETRIC:
            lo, hi = np.percentile(fin, [100.0 - p, p])
        else:
            hi = np.percentile(np.abs(fin), p)
            lo = -hi
        ref = ref_qparams(scheme, 8, 0, 0, lo, hi)
        prm = res["params"]
        case.ok(res["n"] == fin.size, lambda: "%s: n %d, finite %d" % (label, res["n"], fin.size))
        case.ok(np.float32(prm.scale) == ref["scale"] and prm.zero_point == ref["zp"],
                lambda: "%s: scale/zp %r/%d, numpy %r/%d" % (label, prm.scale, prm.zero_point, float(ref["scale"]),
                                                             ref["zp"]))
        codes = qk.quantize(ctx, x, prm, code_dtype(scheme, 8))
        exp = ref_quantize(x, prm.scale, prm.zero_point, prm.qmin, prm.qmax)
        case.ok(np.array_equal(codes.astype(np.int64), exp),
                lambda: "%s: codes of non-finite input (NaN -> code of 0, +-Inf -> qmax/qmin) differ at %d" % (
                    label, int(np.argmax(codes.astype(np.int64) != exp))))
        er = qk.quant_error(ctx, x, prm, Q.QK_IGNORE_NONFINITE)
        xhat = ref_dequantize(ref_quantize(fin, prm.scale, prm.zero_point, prm.qmin, prm.qmax), prm.scale,
                              prm.zero_point)
        mse, _ = ref_mse(fin, xhat)
        case.ok(er.n == fin.size and rel_close(er.mse, mse),
                lambda: "%s: quant_error n=%d mse=%r, numpy n=%d mse=%r" % (label, er.n, er.mse, fin.size, mse))
    case.note("%d arrays" % count)


# ---- 4. min/max ----------------------------------------------------------------------------
def case_minmax(case, qk, ctx, seed, tag, count, max_n):
    for i in range(count):
        rng = rng_for(seed, tag, i)
        n = log_uniform_int(rng, 1, max_n)
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        dtype = F32 if i % 3 else F64
        x = gen_data(rng, n, dtype, kind)
        label = "seed=[%d,%d,%d] n=%d kind=%s %s" % (seed, tag, i, n, kind, np.dtype(dtype).name)
        flags = Q.QK_IGNORE_NONFINITE if i % 5 == 0 else 0
        if flags and n > 1:
            x = inject_nonfinite(rng, x)
        fin = x[np.isfinite(x)]
        st, mm = qk.minmax_st(ctx, x, flags)
        if fin.size == 0:
            case.ok(st != Q.QK_OK, lambda: label + ": no finite values, status OK")
            continue
        if not case.ok(st == Q.QK_OK, lambda: "%s: status %d (%s)" % (label, st, qk.message(ctx))):
            continue
        mn, mx = float(fin.min()), float(fin.max())
        case.ok(mm.min == mn and mm.max == mx and mm.absmax == max(abs(mn), abs(mx)),
                lambda: "%s: qkern min/max/absmax %s %s %s numpy %s %s" % (
                    label, fhex(mm.min), fhex(mm.max), fhex(mm.absmax), fhex(mn), fhex(mx)))
        nb = x.size - fin.size
        first = int(np.argmax(~np.isfinite(x))) if nb else -1
        case.ok((mm.n_finite, mm.nonfinite_count, mm.first_nonfinite) == (fin.size, nb, first),
                lambda: "%s: counts %r expected %r" % (label, (mm.n_finite, mm.nonfinite_count, mm.first_nonfinite),
                                                       (fin.size, nb, first)))
    # qkern.h: -0 orders before +0
    st, mm = qk.minmax_st(ctx, np.array([0.0, -0.0, 0.0], dtype=F32))
    case.ok(st == Q.QK_OK and math.copysign(1, mm.min) < 0 and math.copysign(1, mm.max) > 0,
            lambda: "min/max of [+0, -0, +0]: %r %r, expected -0.0 0.0 (qkern.h: -0 orders before +0)" % (
                mm.min, mm.max))
    case.note("%d arrays" % count)


# ---- 5-7. parameters, codes, dequantize, MSE -------------------------------------------------
QUANT_CASES = ["calibrate.params", "qparams.from_range", "quantize.codes", "dequantize.bits", "quant_error.mse"]


def check_quant_config(cases, qk, ctx, x, label, scheme, bits, narrow, include_zero, method, p, zeros, cd=None):
    """Calibrate x by (method, p), check the parameters against numpy's percentiles and docs/numerics.md's
    formulas, then the codes, the dequantized values and the MSE."""
    cp, cq, cdq, ce = (cases[k] for k in ("calibrate.params", "quantize.codes", "dequantize.bits",
                                          "quant_error.mse"))
    label = "%s scheme=%s bits=%d narrow=%d include_zero=%d method=%s p=%r" % (
        label, "sym" if scheme else "asym", bits, narrow, include_zero,
        "minmax" if method == Q.QK_CALIB_MINMAX else "percentile", p)
    opts = qk.options(scheme=scheme, bits=bits, narrow_range=narrow, include_zero=include_zero, method=method)
    if method == Q.QK_CALIB_PERCENTILE:
        opts.percentile = p
    x64 = x.astype(F64)
    if method == Q.QK_CALIB_MINMAX:
        lo, hi = (float(x.min()), float(x.max())) if scheme == Q.QK_ASYMMETRIC else (0.0, float(np.abs(x).max()))
    elif scheme == Q.QK_ASYMMETRIC:
        lo, hi = (float(v) for v in np.percentile(x, [100.0 - p, p]))
    else:
        lo, hi = 0.0, float(np.percentile(np.abs(x), p))
    ref = ref_qparams(scheme, bits, narrow, include_zero, lo, hi)
    st, res = qk.calibrate_st(ctx, x, opts)
    if ref["status"] != Q.QK_OK:
        cp.ok(st == ref["status"], lambda: "%s: status %d, expected %d" % (label, st, ref["status"]))
        return
    if not cp.ok(st == Q.QK_OK, lambda: "%s: status %d (%s)" % (label, st, qk.message(ctx))):
        return
    prm = res["params"]
    got = (np.float32(prm.scale).view(np.uint32), prm.zero_point, prm.qmin, prm.qmax)
    want = (ref["scale"].view(np.uint32), ref["zp"], ref["qmin"], ref["qmax"])
    cp.ok(got == want, lambda: "%s: (scale bits, zp, qmin, qmax) qkern %r numpy %r; scale %r vs %r" % (
        label, got, want, float(prm.scale), float(ref["scale"])))
    # Percentile clips are numpy's bits, zero signs included, unless the data has both signed zeros
    # (numpy's order of tied zeros is unspecified) or the range was widened to 0 (fmin/fmax of a
    # zero and a zero may return either); min/max are compared by value.
    strict = method == Q.QK_CALIB_PERCENTILE and not zeros and not include_zero and lo != hi
    clip = same_bits([prm.clip_lo, prm.clip_hi], [ref["clip_lo"], ref["clip_hi"]], not strict)
    cp.ok(clip.all(), lambda: "%s: clip [%s, %s], numpy [%s, %s]" % (
        label, fhex(prm.clip_lo), fhex(prm.clip_hi), fhex(ref["clip_lo"]), fhex(ref["clip_hi"])))
    cands = res["candidates"]
    cp.ok(res["n_candidates"] == 1 and res["best"] == 0 and cands[0]["percentile"] == (
        100.0 if method == Q.QK_CALIB_MINMAX else p) and cands[0]["zero_point"] == prm.zero_point
        and np.float32(cands[0]["scale"]) == np.float32(prm.scale),
        lambda: "%s: the 1-row table %r does not match the params" % (label, cands))

    # codes, with the library's parameters (equal to the reference ones when the above passed)
    scale, zp = np.float32(prm.scale), int(prm.zero_point)
    qref = ref_quantize(x, scale, zp, prm.qmin, prm.qmax)
    cdt = cd or code_dtype(scheme, bits)
    codes = qk.quantize(ctx, x, prm, cdt)
    diff = np.flatnonzero(codes.astype(np.int64) != qref)
    cq.ok(diff.size == 0, lambda: "%s: %d codes differ (%s), first x[%d]=%s: qkern %d numpy %d" % (
        label, diff.size, np.dtype(cdt).name, diff[0], fhex(x[diff[0]]), int(codes[diff[0]]), int(qref[diff[0]])))

    deq = qk.dequantize(ctx, codes, prm)
    dref = ref_dequantize(codes, scale, zp)
    d = np.flatnonzero(deq.view(np.uint32) != dref.view(np.uint32))
    cdq.ok(d.size == 0, lambda: "%s: %d dequantized values differ, first [%d] code %d: qkern %s numpy %s" % (
        label, d.size, d[0], int(codes[d[0]]), fhex(deq[d[0]]), fhex(dref[d[0]])))

    er = qk.quant_error(ctx, x, prm)
    er2 = qk.quant_error(ctx, x, prm)
    mse, sse = ref_mse(x, ref_dequantize(qref, scale, zp))
    clipped = int(np.count_nonzero((x64 < prm.clip_lo) | (x64 > prm.clip_hi)))
    ce.ok(rel_close(er.mse, mse) and rel_close(er.sse, sse) and er.n == x.size and er.clipped == clipped,
          lambda: "%s: qkern mse=%r sse=%r n=%d clipped=%d, numpy mse=%r sse=%r n=%d clipped=%d" % (
              label, er.mse, er.sse, er.n, er.clipped, mse, sse, x.size, clipped))
    ce.ok(same_bits([er.mse, er.sse], [er2.mse, er2.sse]).all(),
          lambda: "%s: a repeated call gave other bits: %s vs %s" % (label, fhex(er.mse), fhex(er2.mse)))
    # the 1-row table's MSE is the same quantity
    ce.ok(rel_close(cands[0]["mse"], mse), lambda: "%s: table mse %r, numpy %r" % (label, cands[0]["mse"], mse))


def quant_configs(rng, all_configs):
    cfgs = []
    for bits in (2, 4, 8, 16):
        for scheme, narrow in ((Q.QK_ASYMMETRIC, 0), (Q.QK_SYMMETRIC, 0), (Q.QK_SYMMETRIC, 1)):
            for method in (Q.QK_CALIB_MINMAX, Q.QK_CALIB_PERCENTILE):
                if not all_configs and rng.random() < 0.5:
                    continue
                if method == Q.QK_CALIB_PERCENTILE:
                    p = float(rng.choice([99.0, 99.9, 99.99, rng.uniform(50 if scheme == Q.QK_ASYMMETRIC else 1, 100)]))
                else:
                    p = 100.0
                iz = int(scheme == Q.QK_ASYMMETRIC and rng.random() < 0.25)
                cfgs.append((scheme, bits, narrow, iz, method, p))
    return cfgs


def group_quant(cases, qk, ctx, seed, tag, count, max_n, large_n):
    arrays = 0
    for i in range(count):
        rng = rng_for(seed, tag, i)
        n = log_uniform_int(rng, 1, max_n)
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        if kind == "near_max":
            kind = "wide_range"  # (hi - lo) of +-3e38 overflows a float scale: checked in qparams.from_range
        dtype = F32 if i % 4 else F64
        x = gen_data(rng, n, dtype, kind)
        zeros = has_both_zeros(x) or has_both_zeros(np.abs(x))
        label = "seed=[%d,%d,%d] n=%d kind=%s %s" % (seed, tag, i, n, kind, np.dtype(dtype).name)
        for cfg in quant_configs(rng, True):
            cd = np.int32 if rng.random() < 0.1 else None
            check_quant_config(cases, qk, ctx, x, label, *cfg, zeros=zeros, cd=cd)
        arrays += 1
    if large_n:
        rng = rng_for(seed, tag, 10_000)
        for j, kind in enumerate(("laplace_outliers", "normal")):
            x = gen_data(rng, large_n, F32, kind)
            label = "seed=[%d,%d,10000] large#%d n=%d kind=%s float32" % (seed, tag, j, large_n, kind)
            for cfg in quant_configs(rng, j == 0):
                check_quant_config(cases, qk, ctx, x, label, *cfg, zeros=has_both_zeros(x))
            arrays += 1
    for k in ("calibrate.params", "quantize.codes", "dequantize.bits", "quant_error.mse"):
        cases[k].note("%d arrays%s" % (arrays, " incl. n=%d" % large_n if large_n else ""))

    # qk_qparams_from_range directly: random, degenerate, tiny and out-of-range ranges
    c = cases["qparams.from_range"]
    rng = rng_for(seed, tag + 1, 0)
    for i in range(3000):
        scheme = int(rng.integers(0, 2))
        bits = int(rng.integers(2, 17))
        narrow = int(scheme == Q.QK_SYMMETRIC and rng.random() < 0.5)
        iz = int(rng.random() < 0.2)
        form = i % 7
        if form == 0:
            lo, hi = sorted(rng.normal(0, 10.0 ** rng.uniform(-5, 5), 2))
        elif form == 1:  # lo == hi (constant tensor)
            lo = hi = float(rng.choice([0.0, -0.0, rng.normal(0, 100)]))
        elif form == 2:  # a range of a few denormals
            lo, hi = sorted(rand_sign(rng, 2) * rng.integers(0, 20, 2) * 2.0 ** -149)
        elif form == 3:  # far from 0: zero points past int32
            c0 = float(rng.choice([1e3, 1e6, 1e9, 1e20]))
            lo, hi = c0, c0 * (1 + 10.0 ** rng.uniform(-12, -2))
            if rng.random() < 0.5:
                lo, hi = -hi, -lo
        elif form == 4:  # wide: the scale overflows a float
            lo, hi = -float(10.0 ** rng.uniform(37, 300)), float(10.0 ** rng.uniform(37, 300))
        elif form == 5:  # lo / scale exactly halfway between integers: round half to even
            s0 = float(2.0 ** int(rng.integers(-20, 20)))
            qn = (1 << bits) - 1 if scheme == Q.QK_ASYMMETRIC else (1 << (bits - 1)) - 1
            lo = -(int(rng.integers(-300, 300)) + 0.5) * s0
            hi = lo + qn * s0
        else:
            lo, hi = sorted(rng.uniform(-1, 1, 2) * 10.0 ** rng.uniform(-40, 38))
        ref = ref_qparams(scheme, bits, narrow, iz, lo, hi)
        st, prm = qk.qparams_from_range(ctx, scheme, bits, narrow, iz, lo, hi)
        label = "from_range(scheme=%d, bits=%d, narrow=%d, include_zero=%d, lo=%s, hi=%s)" % (
            scheme, bits, narrow, iz, fhex(lo), fhex(hi))
        if ref["status"] != Q.QK_OK:
            c.ok(st == ref["status"], lambda: "%s: status %d, expected %d" % (label, st, ref["status"]))
            continue
        if not c.ok(st == Q.QK_OK, lambda: "%s: status %d (%s)" % (label, st, qk.message(ctx))):
            continue
        got = (np.float32(prm.scale).view(np.uint32), prm.zero_point, prm.qmin, prm.qmax)
        want = (ref["scale"].view(np.uint32), ref["zp"], ref["qmin"], ref["qmax"])
        c.ok(got == want and prm.clip_lo == ref["clip_lo"] and prm.clip_hi == ref["clip_hi"],
             lambda: "%s: (scale bits, zp, qmin, qmax, lo, hi) qkern %r numpy %r" % (
                 label, got + (prm.clip_lo, prm.clip_hi), want + (ref["clip_lo"], ref["clip_hi"])))
    c.note("3000 ranges (random, lo == hi, denormal, far from 0, overflowing, half-way zero points)")


# ---- 8. grid search -----------------------------------------------------------------------
def grid_expand(start, stop, step):
    last = math.floor((stop - start) / step + 1e-9)
    return [min(stop, start + i * step) for i in range(last + 1)]


def gridsearch_data(seed, tag, n, kind):
    rng = rng_for(seed, tag, 0 if kind == "laplace" else 1)
    if kind == "laplace":  # Laplace bulk and 0.2% outliers 20x..1000x its scale
        s = 0.05
        x = rng.laplace(0.0, s, n)
        k = n // 500
        idx = rng.integers(0, n, k)
        x[idx] = rand_sign(rng, k) * s * 10.0 ** rng.uniform(1.3, 3, k)
        return x.astype(F32)
    # Ties: small integers (Q1 = -2, Q3 = 2, fences exactly -14 and 14) and 0.3% outliers, some of
    # them exactly on the fences. Every candidate in 99..100 then has the same clip range and the
    # same error, so the choice is decided by the tie rule (the largest p).
    x = np.clip(np.rint(rng.normal(0.0, 3.0, n)), -9, 9)
    k = n * 3 // 1000
    x[rng.integers(0, n, k)] = rng.choice([-14.0, 14.0, -14.5, 14.5, -40.0, 40.0], k)
    return x.astype(F32)


def case_gridsearch(case, qk, ctx, seed, tag, n, kind):
    x = gridsearch_data(seed, tag, n, kind)
    x64 = x.astype(F64)
    q1, q3 = np.percentile(x, [25.0, 75.0])
    fk = 3.0
    flo, fhi = q1 - fk * (q3 - q1), q3 + fk * (q3 - q1)
    inl = (x64 >= flo) & (x64 <= fhi)
    label0 = "seed=[%d,%d] n=%d %s" % (seed, tag, n, kind)
    if kind == "ties":
        case.note("fences [%g, %g], %d values on them, %d distinct candidates clip ranges" % (
            flo, fhi, int(np.count_nonzero((x64 == flo) | (x64 == fhi))),
            len({tuple(np.percentile(x, [100 - p, p])) for p in grid_expand(99.0, 100.0, 0.05)})))
    grids = [("99:100:0.05", None), ("list", [99.9, 99.0, 100.0, 99.5, 99.97, 99.0])]
    runs = 0
    for gname, glist in grids:
        for scheme in (Q.QK_ASYMMETRIC, Q.QK_SYMMETRIC):
            for bits in (4, 8):
                for obj in (Q.QK_OBJECTIVE_MSE, Q.QK_OBJECTIVE_MSE_INLIERS):
                    label = "%s grid=%s scheme=%s bits=%d objective=%s" % (
                        label0, gname, "sym" if scheme else "asym", bits, "mse" if obj == 0 else "mse-inliers")
                    opts = qk.options(scheme=scheme, bits=bits, method=Q.QK_CALIB_GRIDSEARCH, objective=obj,
                                      fence_k=fk)
                    if glist is None:
                        opts.grid_start, opts.grid_stop, opts.grid_step = 99.0, 100.0, 0.05
                        plist = grid_expand(99.0, 100.0, 0.05)
                    else:
                        garr = np.array(glist, dtype=F64)
                        opts.grid = garr.ctypes.data_as(Q.C.POINTER(Q.C.c_double))
                        opts.grid_len = garr.size
                        plist = list(glist)
                    res = qk.calibrate(ctx, x, opts)
                    runs += 1
                    cands = res["candidates"]
                    if not case.ok(len(cands) == len(plist) and [c["percentile"] for c in cands] == plist,
                                   lambda: "%s: candidates p %r, expected %r" % (
                                       label, [c["percentile"] for c in cands], plist)):
                        continue
                    case.ok(same_bits([res["fence_lo"], res["fence_hi"]], [flo, fhi]).all()
                            and res["n"] == n and res["n_inliers"] == int(inl.sum()),
                            lambda: "%s: fences [%r, %r] n=%d n_inliers=%d, numpy [%r, %r] %d %d" % (
                                label, res["fence_lo"], res["fence_hi"], res["n"], res["n_inliers"], flo, fhi, n,
                                int(inl.sum())))
                    objs = []
                    for c in cands:
                        p = c["percentile"]
                        if scheme == Q.QK_ASYMMETRIC:
                            lo, hi = (float(v) for v in np.percentile(x, [100.0 - p, p]))
                        else:
                            hi = float(np.percentile(np.abs(x), p))
                            lo = -hi
                        ref = ref_qparams(scheme, bits, 0, 0, lo, hi)
                        cl = "%s p=%r" % (label, p)
                        case.ok(same_bits([c["clip_lo"], c["clip_hi"]], [lo, hi]).all(),
                                lambda: "%s: clip [%s, %s], numpy [%s, %s]" % (
                                    cl, fhex(c["clip_lo"]), fhex(c["clip_hi"]), fhex(lo), fhex(hi)))
                        case.ok(np.float32(c["scale"]).view(np.uint32) == ref["scale"].view(np.uint32)
                                and c["zero_point"] == ref["zp"],
                                lambda: "%s: scale/zp %r/%d, numpy %r/%d" % (
                                    cl, c["scale"], c["zero_point"], float(ref["scale"]), ref["zp"]))
                        clipped = int(np.count_nonzero((x64 < lo) | (x64 > hi)))
                        case.ok(c["clipped"] == clipped, lambda: "%s: clipped %d, numpy %d" % (cl, c["clipped"],
                                                                                              clipped))
                        qmin, qmax = code_range(scheme, bits, 0)
                        xhat = ref_dequantize(ref_quantize(x, ref["scale"], ref["zp"], qmin, qmax), ref["scale"],
                                              ref["zp"])
                        e = x64 - xhat.astype(F64)
                        e2 = e * e
                        mse = float(np.mean(e2))
                        mse_in = float(np.mean(e2[inl]))
                        case.ok(rel_close(c["mse"], mse) and rel_close(c["mse_inliers"], mse_in),
                                lambda: "%s: mse %r mse_inliers %r, numpy %r %r" % (cl, c["mse"], c["mse_inliers"],
                                                                                   mse, mse_in))
                        objs.append(mse if obj == Q.QK_OBJECTIVE_MSE else mse_in)
                    best = min(objs)
                    ties = [i for i, v in enumerate(objs) if v <= best + 1e-9 * abs(best)]
                    want = max(ties, key=lambda i: (cands[i]["percentile"], -i))
                    got = res["best"]
                    case.ok(cands[got]["percentile"] == cands[want]["percentile"],
                            lambda: "%s: best #%d (p=%r, objective %r), numpy's choice #%d (p=%r, objective %r)" % (
                                label, got, cands[got]["percentile"], objs[got], want, cands[want]["percentile"],
                                objs[want]))
                    prm = res["params"]
                    case.ok(np.float32(prm.scale) == np.float32(cands[got]["scale"])
                            and prm.zero_point == cands[got]["zero_point"]
                            and prm.clip_lo == cands[got]["clip_lo"] and prm.clip_hi == cands[got]["clip_hi"],
                            lambda: "%s: params are not those of the best row" % label)
    case.note("%d searches over n=%d" % (runs, n))


# ---- main ----------------------------------------------------------------------------------
def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default=os.path.join(here, "..", "build", "libqkern.so"), help="path to libqkern.so")
    ap.add_argument("--backend", default="cpu", choices=["cpu", "opencl", "cuda", "auto"])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer cases (sanitizer builds)")
    ap.add_argument("--seed", type=int, default=20240611, help="base seed of every random draw")
    ap.add_argument("--only", action="append", default=[], help="run only cases whose name contains this (repeatable)")
    args = ap.parse_args()
    # Overflow in numpy's own lerp (d = b - a of +-3e38) is part of what is compared, not a problem.
    np.seterr(all="ignore")

    print("numpy %s, python %s, lib %s, backend %s%s, seed %d" % (
        np.__version__, sys.version.split()[0], args.lib, args.backend, " (quick)" if args.quick else "", args.seed),
        flush=True)
    if not np.__version__.startswith("1.24"):
        print("note: the contract is numpy 1.24's percentile; this is numpy %s" % np.__version__, flush=True)
    qk = Q.Qkern(args.lib)
    st, ctx, msg = qk.context_create(args.backend)
    if st in (Q.QK_ERR_UNSUPPORTED, Q.QK_ERR_NO_DEVICE):
        print("SKIPPED: backend %s not available (%s: %s)" % (args.backend, qk.status_string(st), msg))
        return 77  # ctest's SKIP_RETURN_CODE: reported as skipped, never as passed
    if st != Q.QK_OK:
        print("ERROR: qk_context_create(%s): %s: %s" % (args.backend, qk.status_string(st), msg))
        return 1

    quick = args.quick
    seed = args.seed
    r = Runner(args.only)
    t_start = time.time()
    # 1. percentiles
    r.run("percentile.f32.random", case_percentile_random, qk, ctx, seed, F32, 1000 if quick else 3000, 5000, 1)
    r.run("percentile.f64.random", case_percentile_random, qk, ctx, seed, F64, 100 if quick else 300, 5000, 2)
    r.run("percentile.f16.random", case_percentile_f16, qk, ctx, seed, 100 if quick else 300, 5000, 15)
    r.run("percentile.small_n", case_percentile_small_n, qk, ctx, seed, 3)
    r.run("percentile.many_p", case_percentile_many_p, qk, ctx, seed, 4, 20_011 if quick else 100_003)
    r.run("percentile.buffer", case_percentile_buffer, qk, ctx, seed, 5)
    # 2. large
    large = [(2 ** 24 + 13, "normal")] if quick else [
        (2 ** 24 + 13, "normal"), (2 ** 24 + 997, "laplace_outliers"), (17_000_003, "normal"),
        (2 ** 26 + 13, "laplace_outliers")]
    for n, kind in large:
        r.run("percentile.large.n%d" % n, case_percentile_large, qk, ctx, seed, 6, n, kind)
    # 3. flags and non-finite input
    r.run("percentile.abs", case_percentile_abs, qk, ctx, seed, 7, 100 if quick else 300, 5000)
    r.run("percentile.ignore_nonfinite", case_percentile_ignore_nonfinite, qk, ctx, seed, 8,
          100 if quick else 300, 5000)
    r.run("nonfinite.errors", case_nonfinite_errors, qk, ctx, seed, 9, 30 if quick else 100, 5000)
    r.run("nonfinite.ignored_calibration", case_nonfinite_ignored_calibration, qk, ctx, seed, 10,
          20 if quick else 60, 20_000)
    # 4. min/max
    r.run("minmax", case_minmax, qk, ctx, seed, 11, 200 if quick else 600, 20_000)
    # 5-7. parameters, codes, dequantize, MSE
    r.run_group(QUANT_CASES, group_quant, qk, ctx, seed, 12, 15 if quick else 40, 50_000,
                2 ** 20 + 7 if quick else 2 ** 22 + 3)
    # 8. grid search
    r.run("gridsearch.laplace", case_gridsearch, qk, ctx, seed, 14, 50_000 if quick else 200_000, "laplace")
    r.run("gridsearch.ties", case_gridsearch, qk, ctx, seed, 14, 20_000 if quick else 100_000, "ties")

    qk.context_destroy(ctx)
    print("total %.1f s" % (time.time() - t_start))
    print("%d passed, %d failed" % (r.passed, r.failed))
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
