#!/usr/bin/python3
"""End-to-end test of `qkern quantize-model` and `qkern dequantize-model`.

Writes safetensors files from Python (no safetensors package: the format is an
8-byte little-endian header length, a JSON header and the data), runs the built
binary on them, and checks codes, scales, zero points and restored values bit
for bit against an independent numpy implementation of docs/numerics.md's formulas
applied per channel and per group; PyTorch's per-channel observer and
quantize_per_channel where torch is installed; hostile files, interrupted runs
and a file-size limit (no output file, no temporaries); and, given --model or
QKERN_TEST_MODEL, a real model (all-MiniLM-L6-v2, scripts/get-model.sh). Run as:

    /usr/bin/python3 tests/test_model.py --qkern build/qkern [--model PATH] [--backend cpu]

Prints one line per failure and a final "N passed, M failed"; exits 1 on any
failure. The default backend is cpu: the per-block loops are run once per block
on a device backend, which is slow on PoCL; pass --backend auto to test another.
"""

import argparse
import json
import math
import os
import pty
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

QKERN = None
BACKEND = ["--backend", "cpu"]
TMP = None
MODEL = None
VERBOSE = False
TESTS = []
NOTES = []  # numbers worth reading in the log (torch agreement, real-model table)

F32, F64, F16, BF16 = "F32", "F64", "F16", "BF16"
NP_DTYPE = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
            "I32": np.int32, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16, "BOOL": np.uint8}


def test(fn):
    TESTS.append(fn)
    return fn


def note(msg):
    NOTES.append(msg)
    print(msg)


# ---- safetensors from scratch ----------------------------------------------------

def st_bytes(tensors, metadata=None, header_patch=None):
    """tensors: list of (name, dtype, shape, raw bytes) in data order."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    if header_patch:
        header_patch(header)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def write_st(path, tensors, metadata=None):
    with open(path, "wb") as f:
        f.write(st_bytes(tensors, metadata))
    return path


def read_st(path):
    """-> (metadata dict or {}, {name: (dtype, shape, raw bytes)}, header order)"""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        out[name] = (e["dtype"], tuple(e["shape"]), data[base + b:base + en])
    return meta, out, list(header)


def as_array(entry):
    dtype, shape, raw = entry
    return np.frombuffer(raw, dtype=NP_DTYPE[dtype]).reshape(shape)


def tensor(name, arr, dtype=None):
    """(name, dtype, shape, bytes) for an array; BF16 arrays are passed as uint16 bits."""
    if dtype is None:
        dtype = {np.float32: F32, np.float64: F64, np.float16: F16, np.int64: "I64",
                 np.int32: "I32", np.uint8: "U8"}[arr.dtype.type]
    return (name, dtype, arr.shape, np.ascontiguousarray(arr).tobytes())


def f32_to_bf16(a):
    """Round float32 to bfloat16 bits, to nearest, ties to even (as torch's .to(torch.bfloat16))."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


# ---- running qkern -------------------------------------------------------------------

def run(args, **kw):
    cmd = [QKERN] + list(args)
    if args and args[0] in ("quantize-model", "dequantize-model") and "--backend" not in args:
        cmd += BACKEND
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def expect(args, rc, **kw):
    p = run(args, **kw)
    assert "Sanitizer" not in p.stderr and "runtime error:" not in p.stderr, \
        f"qkern {' '.join(args)}: sanitizer report:\n{p.stderr[-4000:]}"
    assert p.returncode == rc, (f"qkern {' '.join(args)}: exit {p.returncode}, expected {rc}\n"
                                f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-3000:]}")
    return p


def expect_json(args):
    p = expect(list(args) + ["--json"], 0)
    assert len(p.stdout.splitlines()) == 1, "--json printed more than one line"
    return json.loads(p.stdout)


def tmpdir():
    return tempfile.mkdtemp(dir=TMP)


def child_log():
    """The path of a file for the output of children nobody reads (runs killed on
    purpose; append to it): in a fresh directory of its own, never one a test lists,
    and never /dev/null (tests run as root and write no system path)."""
    return os.path.join(tmpdir(), "child.log")


def listing(d):
    return sorted(os.listdir(d))


# ---- the reference: docs/numerics.md's formulas per block ----------------------------------------

def code_range(scheme, bits, narrow):
    if scheme == "asymmetric":
        return 0, 2 ** bits - 1
    qp = 2 ** (bits - 1) - 1
    return (-qp if narrow else -qp - 1), qp


def compute_view(x, dtype):
    """The values the library computes on: float32 for F32/F16/BF16 (exact), float64 for F64."""
    if dtype == BF16:
        return bf16_to_f32(x)
    if dtype == F16:
        return x.astype(np.float32)
    return x


def blocks_of(x, gran):
    """2-D (blocks, block_len) view of x for 'tensor', ('channel', axis), ('group', G)."""
    if gran == "tensor" or x.ndim < 2 and gran[0] == "channel":
        return x.reshape(1, -1)
    if gran[0] == "channel":
        return np.moveaxis(x, gran[1], 0).reshape(x.shape[gran[1]], -1)
    return x.reshape(-1, gran[1])


def unblock(b, shape, gran):
    if gran == "tensor" or len(shape) < 2 and gran[0] == "channel" or gran[0] == "group":
        return b.reshape(shape)
    axis = gran[1]
    moved = (shape[axis],) + tuple(s for i, s in enumerate(shape) if i != axis)
    return np.moveaxis(b.reshape(moved), 0, axis)


def ref_block_params(B, bits, scheme, narrow=False, include_zero=False):
    """Per row of B: (scale float32, zero point int64) by docs/numerics.md's minmax formulas."""
    Bd = B.astype(np.float64)
    qmin, qmax = code_range(scheme, bits, narrow)
    if scheme == "asymmetric":
        lo, hi = Bd.min(axis=1), Bd.max(axis=1)
        if include_zero:
            lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        eq = lo == hi  # a constant block widens to include 0
        lo = np.where(eq, np.minimum(lo, 0.0), lo)
        hi = np.where(eq, np.maximum(hi, 0.0), hi)
        empty = (hi - lo) == 0  # all zeros: scale 1, zero point qmin
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(empty, 1.0, (hi - lo) / (2 ** bits - 1)).astype(np.float32)
            zp = np.where(empty, qmin, -np.rint(lo / scale.astype(np.float64)))
    else:
        c = np.abs(Bd).max(axis=1)
        scale = np.where(c == 0, 1.0, c / qmax).astype(np.float32)
        zp = np.zeros(len(c))
    return scale, zp.astype(np.int64)


def ref_block_codes(B, scale, zp, qmin, qmax):
    """clip(rint(x / scale) + zp): the division in B's precision, the add in double."""
    s = scale.astype(B.dtype)[:, None]
    q = np.rint(B / s).astype(np.float64) + zp[:, None].astype(np.float64)
    return np.clip(q, qmin, qmax).astype(np.int64)


def ref_dequant(q, zp, scale):
    return (q - zp[:, None]).astype(np.float32) * scale[:, None]


def restore_dtype(v32, dtype):
    if dtype == F16:
        return v32.astype(np.float16)
    if dtype == BF16:
        return f32_to_bf16(v32)
    if dtype == F64:
        return v32.astype(np.float64)
    return v32


def unpack4(packed, n, signed):
    p = np.frombuffer(packed, dtype=np.uint8)
    nib = np.empty(2 * len(p), dtype=np.int64)
    nib[0::2] = p & 0xF
    nib[1::2] = p >> 4
    nib = nib[:n]
    if signed:
        nib = np.where(nib >= 8, nib - 16, nib)
    return nib


def gran_tuple(spec):
    if spec == "tensor":
        return "tensor"
    kind, _, v = spec.partition(":")
    return (kind, int(v) if v else 0)


def check_quantized(src_path, q_path, report, bits, scheme, gran_spec, narrow=False, pack4=False,
                    include_zero=False, expect_quantized=None):
    """Compare every tensor of q_path with the reference applied to src_path.
    Returns {name: (codes, scale, zp, qmin, qmax, shape, dtype)} for the dequantize check."""
    smeta, src, _ = read_st(src_path)
    qmeta, q, _ = read_st(q_path)
    # The source's metadata is kept as is, plus "qkern".
    for k, v in smeta.items():
        assert qmeta.get(k) == v, f"metadata {k!r} not preserved"
    assert set(qmeta) == set(smeta) | {"qkern"}, f"metadata keys {sorted(qmeta)}"
    fmt = json.loads(qmeta["qkern"])
    assert fmt["format"] == "qkern-quantized-safetensors" and fmt["version"] == 1, fmt
    entries = {e["name"]: e for e in fmt["tensors"]}
    rep = {t["name"]: t for t in report["tensors"]}
    assert set(rep) == set(src), "the report lists every input tensor once"
    if expect_quantized is not None:
        assert set(entries) == set(expect_quantized), \
            f"quantized {sorted(entries)}, expected {sorted(expect_quantized)}"
    gran = gran_tuple(gran_spec)
    out = {}
    n_quant = 0
    for name, (dtype, shape, raw) in src.items():
        r = rep[name]
        if name not in entries:
            assert not r["quantized"], name
            assert q[name] == (dtype, shape, raw), f"kept tensor {name} changed"
            continue
        n_quant += 1
        e = entries[name]
        assert r["quantized"], name
        assert e["dtype"] == dtype and tuple(e["shape"]) == shape, e
        assert e["scheme"] == scheme and e["bits"] == bits and e["narrow_range"] == narrow, e
        assert e["packed"] == pack4 and e["scale"] == name + ".qscale" and e["zero_point"] == name + ".qzero", e
        x = compute_view(as_array((dtype, shape, raw)), dtype)
        g = gran
        if gran != "tensor" and gran[0] == "channel":
            if len(shape) < 2:
                g = "tensor"
            else:
                g = ("channel", gran[1] % len(shape))
        if g == "tensor":
            assert e["granularity"] == "tensor", e
        elif g[0] == "channel":
            assert e["granularity"] == "channel" and e["axis"] == g[1], e
        else:
            assert e["granularity"] == "group" and e["group_size"] == g[1], e
        B = blocks_of(x, g)
        scale, zp = ref_block_params(B, bits, scheme, narrow, include_zero)
        qmin, qmax = code_range(scheme, bits, narrow)
        codes = ref_block_codes(B, scale, zp, qmin, qmax)
        assert e["blocks"] == len(scale) == r["blocks"], (e["blocks"], len(scale), r["blocks"])
        assert e["qmin"] == qmin and e["qmax"] == qmax, e

        sd, sshape, sraw = q[name + ".qscale"]
        zd, zshape, zraw = q[name + ".qzero"]
        assert sd == "F32" and zd == "I32" and sshape == (len(scale),) and zshape == (len(scale),)
        got_scale = np.frombuffer(sraw, dtype=np.float32)
        got_zp = np.frombuffer(zraw, dtype=np.int32)
        bad = np.flatnonzero(got_scale.view(np.uint32) != scale.view(np.uint32))
        assert len(bad) == 0, f"{name}: scale of block {bad[0]}: {got_scale[bad[0]]!r} != {scale[bad[0]]!r}"
        assert np.array_equal(got_zp.astype(np.int64), zp), f"{name}: zero points differ"

        cd, cshape, craw = q[name]
        n = int(np.prod(shape))
        if pack4:
            assert cd == "U8" and cshape == ((n + 1) // 2,), (cd, cshape)
            got = unpack4(craw, n, scheme == "symmetric")
        else:
            want_dt = ("U8" if bits <= 8 else "U16") if scheme == "asymmetric" else ("I8" if bits <= 8 else "I16")
            assert cd == want_dt and cshape == shape, (name, cd, cshape)
            got = np.frombuffer(craw, dtype=NP_DTYPE[cd]).astype(np.int64)
        want = unblock(codes, shape, g).reshape(-1)
        bad = np.flatnonzero(got != want)
        assert len(bad) == 0, f"{name}: {len(bad)} codes differ, first at {bad[0]}: {got[bad[0]]} != {want[bad[0]]}"

        # The report's error figures against numpy's (MSE accumulated in double).
        xd = B.astype(np.float64)
        xh = ref_dequant(codes, zp, scale).astype(np.float64)
        sse = float(((xd - xh) ** 2).sum())
        mse = sse / xd.size
        assert math.isclose(r["mse"], mse, rel_tol=1e-9, abs_tol=1e-30), (name, r["mse"], mse)
        sumsq = float((xd ** 2).sum())
        if sse == 0:
            assert r["sqnr_db"] is None, (name, r["sqnr_db"])
        else:
            assert math.isclose(r["sqnr_db"], 10 * math.log10(sumsq / sse), rel_tol=1e-9, abs_tol=1e-9), \
                (name, r["sqnr_db"])
        assert r["clipped"] == 0 and r["percentile_min"] == r["percentile_median"] == r["percentile_max"] == 100
        out[name] = (codes, scale, zp, g, shape, dtype)
    assert report["totals"]["tensors_quantized"] == n_quant
    assert report["totals"]["tensors_kept"] == len(src) - n_quant
    assert not [k for k in q if k not in src and not k.endswith((".qscale", ".qzero"))]
    return out


def check_dequantized(src_path, d_path, ref):
    smeta, src, _ = read_st(src_path)
    dmeta, d, _ = read_st(d_path)
    assert dmeta == smeta, f"metadata after the round trip: {dmeta} != {smeta}"
    assert set(d) == set(src), f"tensors after the round trip: {sorted(set(d) ^ set(src))}"
    for name, (dtype, shape, raw) in src.items():
        dd, dshape, draw = d[name]
        assert dd == dtype and dshape == shape, (name, dd, dshape, dtype, shape)
        if name not in ref:
            assert draw == raw, f"kept tensor {name} changed in the round trip"
            continue
        codes, scale, zp, g, _, _ = ref[name]
        v = unblock(ref_dequant(codes, zp, scale), shape, g)
        want = np.ascontiguousarray(restore_dtype(v, dtype))
        got = np.frombuffer(draw, dtype=want.dtype).reshape(shape)
        bad = np.flatnonzero(got.reshape(-1).view(np.uint8 if want.itemsize == 1 else
                                                 {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.itemsize])
                             != want.reshape(-1).view({2: np.uint16, 4: np.uint32, 8: np.uint64}[want.itemsize]))
        assert len(bad) == 0, f"{name}: {len(bad)} restored values differ, first at {bad[0]}"


# ---- the synthetic model -----------------------------------------------------------------

def synthetic_model(d, misalign=True):
    rng = np.random.default_rng(8)
    w1 = (rng.standard_normal((96, 64)) * 0.05).astype(np.float32)
    w1[3] *= 50.0           # outlier rows
    w1[7, 5] = 40.0         # one huge value in a row
    w1[10] = 0.25           # constant rows: widened to include 0
    w1[11] = -1.5
    w1[12] = 0.0            # all zero: scale 1
    w1[13, :32] = 0.0       # a zero group
    w0 = (rng.standard_normal((64, 128)) * 0.02).astype(np.float32)
    half = (rng.standard_normal((32, 64)) * 0.1).astype(np.float16)
    bf = f32_to_bf16((rng.standard_normal((48, 128)) * 0.03).astype(np.float32))
    conv = (rng.standard_normal((16, 8, 3, 3)) * 0.1).astype(np.float32)
    dbl = rng.standard_normal((16, 64)) * 0.2
    tensors = []
    if misalign:  # three bytes first: every later tensor starts misaligned
        tensors.append(tensor("odd.flags", np.array([1, 0, 1], dtype=np.uint8)))
    tensors += [
        tensor("layer0.weight", w0),
        tensor("layer0.bias", (rng.standard_normal(64) * 0.01).astype(np.float32)),
        tensor("layer1.weight", w1),
        tensor("norm.weight", np.ones(128, dtype=np.float32)),
        ("bf.weight", BF16, bf.shape, bf.tobytes()),
        tensor("half.weight", half),
        tensor("ids", np.arange(8, dtype=np.int64).reshape(2, 4)),
        tensor("conv.weight", conv),
        tensor("dbl.weight", dbl),
        tensor("scalar", np.array(0.5, dtype=np.float32)),
    ]
    meta = {"format": "pt", "note": "synthetic \u00fc model"}
    return write_st(os.path.join(d, "model.safetensors"), tensors, meta)


MATRICES = {"layer0.weight", "layer1.weight", "bf.weight", "half.weight", "conv.weight", "dbl.weight"}


def round_trip(gran, bits=8, scheme="asymmetric", narrow=False, pack4=False, extra=(), expect_q=None,
               misalign=True):
    d = tmpdir()
    src = synthetic_model(d, misalign)
    qp, dp = os.path.join(d, "q.safetensors"), os.path.join(d, "d.safetensors")
    args = ["quantize-model", src, "-o", qp, "--granularity", gran, "--bits", str(bits), "--scheme", scheme]
    if narrow:
        args.append("--narrow-range")
    if pack4:
        args.append("--pack4")
    rep = expect_json(args + list(extra))
    assert rep["granularity"] == gran and rep["bits"] == bits and rep["scheme"] == scheme, rep
    ref = check_quantized(src, qp, rep, bits, scheme, gran, narrow, pack4,
                          expect_quantized=MATRICES if expect_q is None else expect_q)
    drep = expect_json(["dequantize-model", qp, "-o", dp])
    assert drep["totals"]["tensors_dequantized"] == len(ref), drep["totals"]
    check_dequantized(src, dp, ref)
    assert listing(d) == ["d.safetensors", "model.safetensors", "q.safetensors"], listing(d)
    return rep


@test
def channel0_8bit_asymmetric():
    round_trip("channel:0")


@test
def channel0_8bit_symmetric_narrow():
    round_trip("channel:0", scheme="symmetric", narrow=True)


@test
def channel_last_axis_6bit_symmetric_aligned_file():
    round_trip("channel:-1", bits=6, scheme="symmetric", misalign=False)


@test
def tensor_granularity_12bit():
    round_trip("tensor", bits=12)


@test
def group32_8bit_both_schemes():
    # conv.weight's last dimension (3) is not a multiple of 32: excluded here, an error below.
    for scheme in ("asymmetric", "symmetric"):
        rep = round_trip("group:32", scheme=scheme, extra=["--exclude", "^conv"],
                         expect_q=MATRICES - {"conv.weight"})
        conv = [t for t in rep["tensors"] if t["name"] == "conv.weight"][0]
        assert not conv["quantized"] and conv["reason"] == "excluded by --exclude", conv


@test
def group64_4bit_packed_both_schemes():
    for scheme in ("asymmetric", "symmetric"):
        round_trip("group:64", bits=4, scheme=scheme, pack4=True, extra=["--exclude", "conv"],
                   expect_q=MATRICES - {"conv.weight"})


@test
def packed_3bit_channel_odd_count():
    # half.weight has 2048 elements; a [5, 7] tensor gives an odd count (last high nibble 0).
    d = tmpdir()
    x = np.linspace(-1, 1, 35, dtype=np.float32).reshape(5, 7)
    src = write_st(os.path.join(d, "m.safetensors"), [tensor("w", x)])
    qp, dp = os.path.join(d, "q.safetensors"), os.path.join(d, "d.safetensors")
    rep = expect_json(["quantize-model", src, "-o", qp, "--bits", "3", "--pack4"])
    ref = check_quantized(src, qp, rep, 3, "asymmetric", "channel:0", pack4=True, expect_quantized={"w"})
    _, q, _ = read_st(qp)
    assert q["w"][2][-1] >> 4 == 0, "the unused high nibble of an odd count is 0"
    expect_json(["dequantize-model", qp, "-o", dp])
    check_dequantized(src, dp, ref)


@test
def include_adds_1d_tensors_exclude_wins():
    rep = round_trip("channel:0", extra=["--include", r"\.bias$", "--include", "^scalar$", "--exclude", "^half"],
                     expect_q=(MATRICES - {"half.weight"}) | {"layer0.bias", "scalar"})
    t = {x["name"]: x for x in rep["tensors"]}
    assert t["layer0.bias"]["granularity"] == "tensor" and t["layer0.bias"]["blocks"] == 1
    assert not t["norm.weight"]["quantized"] and t["norm.weight"]["reason"] == "fewer than 2 dimensions"
    assert not t["ids"]["quantized"] and t["ids"]["reason"] == "not a float tensor"
    assert t["half.weight"]["reason"] == "excluded by --exclude"
    sel = rep["selection"]
    assert sel["include"] == [r"\.bias$", "^scalar$"] and sel["exclude"] == ["^half"], sel
    assert "plus float tensors matching" in sel["rule"] and "minus tensors matching" in sel["rule"], sel


@test
def text_report_and_quiet_stderr():
    d = tmpdir()
    src = synthetic_model(d)
    p = expect(["quantize-model", src, "-o", os.path.join(d, "q.safetensors")], 0)
    assert p.stderr == "", f"stderr without a terminal must be empty: {p.stderr!r}"
    for word in ("selection:", "layer1.weight", "channel:0", "sqnr", "kept byte for byte", "total:"):
        assert word in p.stdout, (word, p.stdout)


@test
def lossless_tensor_reports_inf_and_null():
    d = tmpdir()
    x = np.array([np.arange(8), 2 * np.arange(8)], dtype=np.float32)  # scales 1 and 2 at 3 bits: exact
    src = write_st(os.path.join(d, "m.safetensors"), [tensor("w", x)])
    out = os.path.join(d, "q.safetensors")
    rep = expect_json(["quantize-model", src, "-o", out, "--bits", "3"])
    w = rep["tensors"][0]
    assert w["mse"] == 0 and w["sqnr_db"] is None and rep["totals"]["sqnr_db"] is None, rep
    p = expect(["quantize-model", src, "-o", out, "--bits", "3"], 0)
    assert " inf " in p.stdout and "sqnr inf dB" in p.stdout, p.stdout


@test
def empty_model_and_output_is_input():
    d = tmpdir()
    src = write_st(os.path.join(d, "e.safetensors"), [], {"a": "b"})
    q, b = os.path.join(d, "q.safetensors"), os.path.join(d, "b.safetensors")
    rep = expect_json(["quantize-model", src, "-o", q])
    assert rep["tensors"] == [] and rep["totals"]["mse"] is None, rep
    expect(["dequantize-model", q, "-o", b], 0)
    assert read_st(b)[:2] == ({"a": "b"}, {}), read_st(b)
    # -o onto the input itself (or a link to it) is a usage error that touches nothing.
    m = synthetic_model(d)
    with open(m, "rb") as f:
        orig = f.read()
    os.symlink(m, os.path.join(d, "link.safetensors"))
    for cmd in ("quantize-model", "dequantize-model"):
        for o in (m, os.path.join(d, "link.safetensors")):
            p = expect([cmd, m, "-o", o], 2)
            assert "is the input" in p.stderr, p.stderr
    with open(m, "rb") as f:
        assert f.read() == orig


@test
def percentile_calibration_per_channel():
    # Percentile clipping per row, against numpy.percentile on each row (numpy 1.24, linear).
    d = tmpdir()
    rng = np.random.default_rng(3)
    x = rng.laplace(0, 0.05, (24, 256)).astype(np.float32)
    x[5, 17] = 9.0
    src = write_st(os.path.join(d, "m.safetensors"), [tensor("w", x)])
    qp = os.path.join(d, "q.safetensors")
    rep = expect_json(["quantize-model", src, "-o", qp, "--calib", "percentile:99.5"])
    w = rep["tensors"][0]
    assert w["percentile_min"] == w["percentile_median"] == w["percentile_max"] == 99.5, w
    _, q, _ = read_st(qp)
    scale = np.frombuffer(q["w.qscale"][2], dtype=np.float32)
    zp = np.frombuffer(q["w.qzero"][2], dtype=np.int32)
    clipped = 0
    for r in range(x.shape[0]):
        lo, hi = np.percentile(x[r], 100 - 99.5), np.percentile(x[r], 99.5)
        s = np.float32((float(hi) - float(lo)) / 255)
        z = -np.rint(float(lo) / np.float64(s))
        assert scale[r] == s and zp[r] == z, (r, scale[r], s, zp[r], z)
        xd = x[r].astype(np.float64)
        clipped += int(((xd < lo) | (xd > hi)).sum())
    assert w["clipped"] == clipped, (w["clipped"], clipped)


@test
def gridsearch_reports_percentile_spread():
    d = tmpdir()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 128)).astype(np.float32)
    x[::4, 0] = 30.0  # some rows with an outlier: clipping pays there
    src = write_st(os.path.join(d, "m.safetensors"), [tensor("w", x)])
    rep = expect_json(["quantize-model", src, "-o", os.path.join(d, "q.safetensors"),
                       "--calib", "gridsearch:99:100:0.25", "--objective", "mse-inliers", "--bits", "4"])
    w = rep["tensors"][0]
    assert rep["calib"] == "gridsearch:99:100:0.25" and rep["objective"] == "mse-inliers"
    assert 99 <= w["percentile_min"] <= w["percentile_median"] <= w["percentile_max"] <= 100, w
    assert w["blocks"] == 16 and w["method"] == "gridsearch:99:100:0.25", w


# ---- PyTorch -------------------------------------------------------------------------------

@test
def pytorch_per_channel_symmetric_agreement():
    try:
        import torch
    except ImportError:
        print("SKIPPED pytorch_per_channel_symmetric_agreement: torch is not installed")
        return
    d = tmpdir()
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((1024, 1024)) * 0.02).astype(np.float32)
    w[::97] *= 30.0  # outlier rows
    src = write_st(os.path.join(d, "m.safetensors"), [tensor("w", w)])
    qp = os.path.join(d, "q.safetensors")
    expect_json(["quantize-model", src, "-o", qp, "--scheme", "symmetric", "--narrow-range"])
    _, q, _ = read_st(qp)
    scale = np.frombuffer(q["w.qscale"][2], dtype=np.float32)
    codes = np.frombuffer(q["w"][2], dtype=np.int8).reshape(w.shape).astype(np.int64)

    obs = torch.ao.quantization.PerChannelMinMaxObserver(
        ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127)
    wt = torch.from_numpy(w.copy())
    obs(wt)
    t_scale, t_zp = obs.calculate_qparams()
    t_scale = t_scale.numpy().astype(np.float32)
    # PyTorch: scale = max(|min|, |max|) / ((127 - -127) / 2), a float32 division by 127.0;
    # qkern: float32(c / 127) with the division in double. c is a float32 and 127 is
    # exact, and double has more than 2*24 + 2 bits, so rounding the double quotient
    # to float32 gives the correctly rounded float32 quotient (no double-rounding
    # error): the two agree bit for bit. (PyTorch would also clamp a scale below
    # float32 eps to eps; no row here is that small.)
    diff = int((t_scale.view(np.uint32) != scale.view(np.uint32)).sum())
    note(f"torch agreement: per-channel scales differ in {diff} of {len(scale)} rows")
    assert diff == 0, f"{diff} scales differ from PyTorch's"
    assert (t_zp.numpy() == 0).all()

    def torch_codes(x, sc):
        return torch.quantize_per_channel(torch.from_numpy(x.copy()), torch.from_numpy(sc.copy()),
                                          torch.zeros(len(sc), dtype=torch.int64), 0,
                                          torch.qint8).int_repr().numpy().astype(np.int64)

    def compare(x, sc, qk):
        """Mismatches between PyTorch's and qkern's codes, checked to be the rounding of ties.
        PyTorch quantizes x * (1 / scale) (a float32 reciprocal, then a float32 product);
        qkern divides, x / scale, correctly rounded; both round half to even. They can
        only differ where the two float32 quotients fall on different sides of, or one
        exactly on, a half-integer k + 0.5."""
        tq = torch_codes(x, sc)
        div = x / sc[:, None]                              # float32, correctly rounded
        mul = x * (np.float32(1.0) / sc[:, None])          # float32 reciprocal then product
        assert np.array_equal(qk, np.clip(np.rint(div), -127, 127)), "qkern's codes are rint(x / scale)"
        assert np.array_equal(tq, np.clip(np.rint(mul), -127, 127)), "PyTorch's codes are rint(x * (1/scale))"
        m = tq != qk
        a, b = div[m].astype(np.float64), mul[m].astype(np.float64)
        assert (np.abs(tq[m] - qk[m]) == 1).all(), "a mismatch larger than one code"
        k = np.floor(np.minimum(a, b)) + 0.5
        at_tie = (a == k) | (b == k) | ((np.minimum(a, b) < k) & (k < np.maximum(a, b)))
        assert at_tie.all(), "a mismatch away from a half-integer"
        exact = int((np.abs(div - np.trunc(div)) == 0.5).sum())
        return int(m.sum()), int((a == k).sum()), exact

    n_mis, n_at_exact, exact = compare(w, scale, codes)
    frac = n_mis / w.size
    note(f"torch agreement (random weights, {w.size} values): codes differ in {n_mis} ({frac:.2e}); "
         f"exact ties x/scale == k+0.5 in qkern's quotients: {exact}")
    assert frac < 1e-4, f"{n_mis} codes differ from PyTorch's"

    # Tie-rich weights: x = float32((k + 0.5) * scale), so that x / scale is often an
    # exact tie. Every difference must be one code at such a tie.
    rows, cols = 256, 1024
    c = rng.uniform(0.5, 2.0, rows).astype(np.float32)
    s64 = (c.astype(np.float64) / 127).astype(np.float32).astype(np.float64)
    k = rng.integers(-126, 126, (rows, cols)).astype(np.float64) + 0.5
    t = (k * s64[:, None]).astype(np.float32)
    t[:, 0] = c  # the row's max |x|, so qkern's scale is c / 127
    src2 = write_st(os.path.join(d, "t.safetensors"), [tensor("t", t)])
    qp2 = os.path.join(d, "tq.safetensors")
    expect_json(["quantize-model", src2, "-o", qp2, "--scheme", "symmetric", "--narrow-range"])
    _, q2, _ = read_st(qp2)
    sc2 = np.frombuffer(q2["t.qscale"][2], dtype=np.float32)
    qk2 = np.frombuffer(q2["t"][2], dtype=np.int8).reshape(t.shape).astype(np.int64)
    n_mis2, n_at_exact2, exact2 = compare(t, sc2, qk2)
    note(f"torch agreement (tie-rich weights, {t.size} values, {exact2} exact ties): codes differ in "
         f"{n_mis2}, each by one code at a half-integer ({n_at_exact2} where qkern's x/scale is the exact tie)")
    assert n_mis2 > 0, "the tie-rich case should show PyTorch's reciprocal at work"


# ---- hostile files, failures and interrupted runs ----------------------------------------------

def good_tensors():
    return [tensor("w", np.arange(64, dtype=np.float32).reshape(8, 8)),
            tensor("b", np.zeros(8, dtype=np.float32))]


def hostile_cases():
    good = st_bytes(good_tensors())
    n = struct.unpack("<Q", good[:8])[0]

    def with_header(h):
        hb = json.dumps(h).encode()
        hb += b" " * (-len(hb) % 8)
        return struct.pack("<Q", len(hb)) + hb

    data = good[8 + n:]
    hdr = json.loads(good[8:8 + n])
    cases = {
        "truncated": (good[:-10], "truncat"),
        "header length larger than the file": (struct.pack("<Q", len(good)) + good[8:], "header"),
        "bad JSON": (struct.pack("<Q", 16) + b'{"w": {"dtype": ' + data, "JSON"),
    }
    h = json.loads(json.dumps(hdr))
    h["w"]["data_offsets"] = [0, 10_000]
    cases["offsets past the end"] = (with_header(h) + data, "w")
    h = json.loads(json.dumps(hdr))
    h["b"]["data_offsets"] = [h["w"]["data_offsets"][1] - 16, h["w"]["data_offsets"][1] + 16]
    cases["overlapping tensors"] = (with_header(h) + data, "overlap")
    h = json.loads(json.dumps(hdr))
    h["w"]["dtype"] = "F7"
    cases["unknown dtype"] = (with_header(h) + data, "F7")
    return cases


@test
def hostile_files_fail_cleanly():
    for what, (blob, word) in hostile_cases().items():
        d = tmpdir()
        src = os.path.join(d, "bad.safetensors")
        with open(src, "wb") as f:
            f.write(blob)
        out = os.path.join(d, "out.safetensors")
        p = expect(["quantize-model", src, "-o", out], 1)
        assert "qkern: error:" in p.stderr and "QK_ERR_FORMAT" in p.stderr, (what, p.stderr)
        assert word.lower() in p.stderr.lower(), (what, word, p.stderr)
        assert listing(d) == ["bad.safetensors"], (what, listing(d))


@test
def missing_input_and_output_directory():
    d = tmpdir()
    p = expect(["quantize-model", os.path.join(d, "nope.safetensors"), "-o", os.path.join(d, "o")], 1)
    assert "qkern: error:" in p.stderr and "nope.safetensors" in p.stderr, p.stderr
    src = write_st(os.path.join(d, "m.safetensors"), good_tensors())
    p = expect(["quantize-model", src, "-o", os.path.join(d, "no", "such", "o.safetensors")], 1)
    assert "temporary" in p.stderr or "No such file" in p.stderr, p.stderr
    p = expect(["quantize-model", src, "-o", d], 1)
    assert "directory" in p.stderr, p.stderr
    assert listing(d) == ["m.safetensors"], listing(d)


@test
def group_size_must_divide_and_names_the_tensor():
    d = tmpdir()
    src = synthetic_model(d)
    out = os.path.join(d, "q.safetensors")
    with open(out, "wb") as f:
        f.write(b"precious")
    p = expect(["quantize-model", src, "-o", out, "--granularity", "group:32"], 1)
    assert "conv.weight" in p.stderr and "does not divide" in p.stderr, p.stderr
    p = expect(["quantize-model", src, "-o", out, "--granularity", "channel:3"], 1)
    assert "has no axis 3" in p.stderr and "layer0.weight" in p.stderr, p.stderr
    with open(out, "rb") as f:
        assert f.read() == b"precious", "an existing output must stay untouched on failure"
    assert listing(d) == ["model.safetensors", "q.safetensors"], listing(d)


@test
def name_clash_and_requantizing_are_errors():
    d = tmpdir()
    src = write_st(os.path.join(d, "m.safetensors"),
                   [tensor("w", np.ones((4, 4), dtype=np.float32)), tensor("w.qscale", np.ones(4, dtype=np.float32))])
    p = expect(["quantize-model", src, "-o", os.path.join(d, "o.safetensors")], 1)
    assert "w.qscale" in p.stderr and "already has" in p.stderr, p.stderr
    src2 = synthetic_model(d)
    q = os.path.join(d, "q.safetensors")
    expect(["quantize-model", src2, "-o", q], 0)
    p = expect(["quantize-model", q, "-o", os.path.join(d, "qq.safetensors")], 1)
    assert "already holds qkern-quantized" in p.stderr, p.stderr


@test
def nonfinite_weights():
    d = tmpdir()
    x = np.ones((4, 8), dtype=np.float32)
    x[2, 3] = np.nan
    src = write_st(os.path.join(d, "m.safetensors"), [tensor("w", x)])
    out = os.path.join(d, "q.safetensors")
    p = expect(["quantize-model", src, "-o", out], 1)
    assert "'w'" in p.stderr and "NaN" in p.stderr or "nonfinite" in p.stderr.lower(), p.stderr
    assert listing(d) == ["m.safetensors"]
    rep = expect_json(["quantize-model", src, "-o", out, "--ignore-nonfinite"])
    assert rep["tensors"][0]["elements"] == 31, rep


@test
def usage_errors():
    d = tmpdir()
    src = write_st(os.path.join(d, "m.safetensors"), good_tensors())
    out = os.path.join(d, "o.safetensors")
    bad = [
        ["quantize-model", src],
        ["quantize-model", "-o", out],
        ["quantize-model", src, "-o", out, "--granularity", "group:16"],
        ["quantize-model", src, "-o", out, "--granularity", "group:8192"],
        ["quantize-model", src, "-o", out, "--granularity", "group:abc"],
        ["quantize-model", src, "-o", out, "--granularity", "row"],
        ["quantize-model", src, "-o", out, "--granularity", "channel:x"],
        ["quantize-model", src, "-o", out, "--pack4"],
        ["quantize-model", src, "-o", out, "--bits", "5", "--pack4"],
        ["quantize-model", src, "-o", out, "--include", "("],
        ["quantize-model", src, "-o", out, "--exclude", "[a"],
        ["quantize-model", src, "-o", out, "--narrow-range"],
        ["quantize-model", src, "-o", out, "--calib", "percentile:20"],
        ["quantize-model", src, "-o", out, "--bits", "1"],
        ["quantize-model", src, "-o", out, "--scale", "1"],
        ["quantize-model", src, src, "-o", out],
        ["dequantize-model", src],
        ["dequantize-model", src, "-o", out, "--bits", "8"],
    ]
    for args in bad:
        p = expect(args, 2)
        assert "--help" in p.stderr, (args, p.stderr)
    assert listing(d) == ["m.safetensors"], listing(d)
    for cmd in ("quantize-model", "dequantize-model"):
        p = expect([cmd, "--help"], 0)
        assert p.stdout.startswith("Usage: qkern " + cmd), p.stdout[:80]
        p2 = expect(["help", cmd], 0)
        assert p2.stdout == p.stdout
    h = expect(["quantize-model", "--help"], 0).stdout
    for opt in ("--output", "--bits", "--scheme", "--granularity", "--calib", "--objective", "--include",
                "--exclude", "--narrow-range", "--include-zero", "--pack4", "--backend", "--json", "group:G",
                "exclude wins", ".OUT.tmp.XXXXXX"):
        assert opt in h, opt
    top = expect(["--help"], 0).stdout
    assert "quantize-model" in top and "dequantize-model" in top


@test
def dequantize_rejects_files_without_or_with_bad_metadata():
    d = tmpdir()
    src = write_st(os.path.join(d, "m.safetensors"), good_tensors(), {"format": "pt"})
    out = os.path.join(d, "o.safetensors")
    p = expect(["dequantize-model", src, "-o", out], 1)
    assert "no \"qkern\" metadata" in p.stderr, p.stderr

    q = os.path.join(d, "q.safetensors")
    expect(["quantize-model", src, "-o", q], 0)
    meta, tens, order = read_st(q)
    fmt = json.loads(meta["qkern"])

    def rewrite(name, mutate_fmt=None, drop=None, replace=None):
        m = dict(meta)
        f = json.loads(json.dumps(fmt))
        if callable(mutate_fmt):
            mutate_fmt(f)
        m["qkern"] = mutate_fmt if isinstance(mutate_fmt, str) else json.dumps(f)
        ts = [(k, *tens[k]) for k in order if k != drop]
        if replace:
            ts = [replace.get(t[0], t) for t in ts]
        return write_st(os.path.join(d, name), ts, m)

    def set_(key, value):
        return lambda f: f["tensors"][0].__setitem__(key, value)

    s = tens["w.qscale"]
    cases = {
        "version": (rewrite("v.st", lambda f: f.__setitem__("version", 2)), "version 2"),
        "not json": (rewrite("j.st", "{not json"), "not valid JSON"),
        "missing scale": (rewrite("s.st", drop="w.qscale"), "w.qscale"),
        "wrong blocks": (rewrite("b.st", set_("blocks", 3)), "blocks"),
        "wrong shape": (rewrite("sh.st", set_("shape", [8, 9])), "codes"),
        "bad dtype": (rewrite("dt.st", set_("dtype", "I64")), "dtype"),
        "bad bits": (rewrite("bits.st", set_("bits", 1)), "bits"),
        "code dtype": (rewrite("cd.st", set_("codes_dtype", "I8")), "codes_dtype"),
        "axis": (rewrite("ax.st", set_("axis", 5)), "axis"),
        "shared scale": (rewrite("sz.st", set_("zero_point", "w.qscale")), "used twice"),
        "zero scale": (rewrite("z.st", replace={"w.qscale": ("w.qscale", "F32", s[1], bytes(len(s[2])))}),
                       "scale"),
        "nan scale": (rewrite("n.st", replace={"w.qscale": ("w.qscale", "F32", s[1],
                                                            np.full(8, np.nan, np.float32).tobytes())}), "scale"),
    }
    for what, (path, word) in cases.items():
        p = expect(["dequantize-model", path, "-o", out], 1)
        assert "qkern: error:" in p.stderr and word in p.stderr, (what, p.stderr)
        assert not os.path.exists(out), what
    assert not [f for f in listing(d) if f.startswith(".")], listing(d)


def big_model(d, mb=200):
    """~mb MB of [1024, 1024] float32 weights, written without holding it all."""
    rng = np.random.default_rng(5)
    n = mb // 4
    path = os.path.join(d, "big.safetensors")
    shape = (1024, 1024)
    nbytes = 4 * 1024 * 1024
    header = {"__metadata__": {"format": "pt"}}
    for i in range(n):
        header[f"layer{i}.weight"] = {"dtype": "F32", "shape": list(shape),
                                      "data_offsets": [i * nbytes, (i + 1) * nbytes]}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        block = rng.standard_normal(shape, dtype=np.float32).tobytes()
        for i in range(n):
            f.write(block)
    return path


@test
def killed_runs_leave_no_output():
    d = tmpdir()
    src = big_model(d)
    out = os.path.join(d, "out.safetensors")
    base = [QKERN, "quantize-model", src, "-o", out, "--calib", "percentile:99.9"] + BACKEND
    # How long a whole run takes, to kill the next ones well inside it.
    t0 = time.monotonic()
    subprocess.run(base, capture_output=True, check=True, timeout=600)
    full = time.monotonic() - t0
    os.unlink(out)
    log = child_log()
    for sig, frac in ((signal.SIGKILL, 0.3), (signal.SIGKILL, 0.6), (signal.SIGTERM, 0.3), (signal.SIGINT, 0.5)):
        with open(log, "ab") as f:  # the child has its own copy of the descriptor
            p = subprocess.Popen(base, stdout=f, stderr=f)
        time.sleep(full * frac)
        p.send_signal(sig)
        rc = p.wait(timeout=600)
        stray = [f for f in listing(d) if f not in ("big.safetensors", "out.safetensors")]
        if rc == 0:  # finished before the signal: nothing to learn from this one
            os.unlink(out)
            continue
        if sig == signal.SIGKILL:
            assert rc == -sig, (sig, rc)
            # kill -9 gives no chance to clean up, but the data went to an unnamed
            # O_TMPFILE: nothing is left behind, never a file at the output path.
            assert not os.path.exists(out), "SIGKILL left an output file"
            assert stray == [], stray
        else:
            # Caught signals abort the run and drop the temporary: 128 + signal,
            # never a temporary, never an output.
            assert rc == 128 + sig, (sig, rc)
            assert stray == [] and not os.path.exists(out), (sig, stray)
    note(f"interrupted runs: a whole 200 MB run takes {full:.2f} s on this machine")


@test
def file_size_limit_fails_cleanly():
    d = tmpdir()
    src = synthetic_model(d)
    # 8 MB of weights: the output passes a 1 MiB limit.
    rng = np.random.default_rng(9)
    src = write_st(os.path.join(d, "m8.safetensors"),
                   [tensor("w", rng.standard_normal((2048, 1024)).astype(np.float32))])
    out = os.path.join(d, "out.safetensors")
    with open(out, "wb") as f:
        f.write(b"keep me")

    def limit(ignore):
        def f():
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
            if ignore:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        return f

    for ignore in (True, False):  # qkern ignores SIGXFSZ itself while writing
        p = expect(["quantize-model", src, "-o", out], 1, preexec_fn=limit(ignore))
        assert "qkern: error:" in p.stderr and ("File too large" in p.stderr or "write failed" in p.stderr), p.stderr
        with open(out, "rb") as f:
            assert f.read() == b"keep me"
        assert listing(d) == ["m8.safetensors", "model.safetensors", "out.safetensors"], listing(d)


@test
def progress_bar_on_a_terminal():
    d = tmpdir()
    src = synthetic_model(d)
    master, slave = pty.openpty()
    p = subprocess.Popen([QKERN, "quantize-model", src, "-o", os.path.join(d, "q.safetensors")] + BACKEND,
                         stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    out, _ = p.communicate(timeout=60)
    os.close(master)
    assert p.returncode == 0, err
    text = err.decode()
    assert "tensors" in text and "MB/s" in text and "ETA" in text, text
    assert text.endswith("\r\x1b[K"), repr(text[-40:])
    assert b"\x1b" not in out, "the report on stdout has no terminal codes"


# ---- the generated Laplace model (scripts/gen-laplace-model.py) -----------------------------------

GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "gen-laplace-model.py")
LAPLACE_SCALE = 0.02


def gen_model(path, *args):
    p = subprocess.run([sys.executable, GEN, path] + list(args), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"gen-laplace-model {args}: exit {p.returncode}\n{p.stderr[-3000:]}"
    return p.stdout


def check_laplace_shape(path, dtype):
    """Matrices: Laplace(0, b) bulk (median |x| = b ln 2, mean |x| = b) and 2..8 outliers
    of magnitude 1..4 each; 1-D tensors: norm weights near 1, biases near 0."""
    meta, t, _ = read_st(path)
    assert meta["dtype"] == {F32: "float32", BF16: "bfloat16", F16: "float16"}[dtype], meta
    bulk = []
    for name, entry in t.items():
        assert entry[0] == dtype, (name, entry[0])
        x = compute_view(as_array(entry), dtype).astype(np.float64)
        big = np.abs(x) >= 1.0
        if name.endswith("norm.weight"):
            assert abs(np.median(x) - 1.0) < 0.01, name
            continue
        if x.ndim == 2:
            assert 2 <= big.sum() <= 8 and np.abs(x).max() <= 4.0, (name, big.sum(), np.abs(x).max())
        bulk.append(x[~big])
    a = np.abs(np.concatenate(bulk))
    med, mean = float(np.median(a)), float(a.mean())
    assert math.isclose(med, LAPLACE_SCALE * math.log(2), rel_tol=0.01), (med, LAPLACE_SCALE * math.log(2))
    assert math.isclose(mean, LAPLACE_SCALE, rel_tol=0.01), (mean, LAPLACE_SCALE)
    return a.size


@test
def generated_laplace_model_round_trips():
    d = tmpdir()
    for dtype, name in ((F32, "float32"), (BF16, "bfloat16")):
        src = os.path.join(d, f"laplace-{name}.safetensors")
        gen_model(src, "--size-gib", "0.02", "--dtype", name, "--seed", "7")
        size = os.path.getsize(src)
        assert abs(size - 0.02 * 2**30) < 0.001 * 2**30, size
        check_laplace_shape(src, dtype)
        _, t, _ = read_st(src)
        want = {k for k, (_, sh, _) in t.items() if len(sh) >= 2}
        assert any(k.startswith("embed") for k in want) and len(want) > 6 * 4, sorted(want)
        qp, dp = os.path.join(d, "q.safetensors"), os.path.join(d, "d.safetensors")
        rep = expect_json(["quantize-model", src, "-o", qp, "--granularity", "channel:0", "--bits", "8",
                           "--scheme", "symmetric"])
        ref = check_quantized(src, qp, rep, 8, "symmetric", "channel:0", expect_quantized=want)
        drep = expect_json(["dequantize-model", qp, "-o", dp])
        assert drep["totals"]["tensors_dequantized"] == len(want), drep["totals"]
        check_dequantized(src, dp, ref)  # 1-D tensors byte for byte, the rest by the formula
        # The same without the read-ahead thread: the same bytes.
        q0 = os.path.join(d, "q0.safetensors")
        expect(["quantize-model", src, "-o", q0, "--granularity", "channel:0", "--bits", "8",
                "--scheme", "symmetric"], 0, env=dict(os.environ, QKERN_PREFETCH="0"))
        with open(qp, "rb") as f1, open(q0, "rb") as f2:
            assert f1.read() == f2.read(), "QKERN_PREFETCH=0 changed the output"
        for f in (src, qp, dp, q0):
            os.unlink(f)
    assert listing(d) == [], listing(d)


@test
def generator_is_reproducible_cached_and_atomic():
    d = tmpdir()
    a, b = os.path.join(d, "a.safetensors"), os.path.join(d, "b.safetensors")
    gen_model(a, "--size-gib", "0.002", "--dtype", "float16", "--seed", "3")
    gen_model(b, "--size-gib", "0.002", "--dtype", "float16", "--seed", "3")
    with open(a, "rb") as f1, open(b, "rb") as f2:
        assert f1.read() == f2.read(), "the same seed gave different files"
    check_laplace_shape(a, F16)
    mtime = os.stat(a).st_mtime_ns
    assert "reused" in gen_model(a, "--size-gib", "0.002", "--dtype", "float16", "--seed", "3", "--reuse")
    assert os.stat(a).st_mtime_ns == mtime
    assert "reused" not in gen_model(a, "--size-gib", "0.002", "--dtype", "float16", "--seed", "4", "--reuse")
    # SIGTERM once the temporary exists: it is removed and no output appears.
    out = os.path.join(d, "big.safetensors")
    p = subprocess.Popen([sys.executable, GEN, out, "--size-gib", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not [f for f in listing(d) if f.startswith(".big.safetensors.tmp.")] and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "nothing written" in err, (p.returncode, err)
    assert listing(d) == ["a.safetensors", "b.safetensors"], listing(d)


# ---- every backend gives the same file ---------------------------------------------------------------

def available_backends():
    info = json.loads(run(["info", "--json"]).stdout)
    return [b["name"] for b in info["backends"] if b["available"]]


@test
def backends_write_identical_models():
    """Per-block work runs as segmented kernels on a device backend and as per-block
    loops on the CPU reference: the output files must be the same bytes, for
    contiguous blocks (groups, channels of axis 0), gathered ones (axis 1), every
    calibration method and float32/bfloat16/float16 input."""
    others = [b for b in available_backends() if b != "cpu"]
    if not others:
        print("SKIPPED backends_write_identical_models: no backend other than cpu is available")
        return
    d = tmpdir()
    rng = np.random.default_rng(808)
    w = rng.laplace(0.0, 0.02, (96, 640)).astype(np.float32)
    w[rng.integers(0, 96, 6), rng.integers(0, 640, 6)] = rng.uniform(-3, 3, 6).astype(np.float32)
    src = os.path.join(d, "m.safetensors")
    write_st(src, [tensor("w.f32", w), tensor("w.bf16", f32_to_bf16(w[:48]), BF16),
                   tensor("w.f16", w[48:].astype(np.float16)), tensor("b", w[0, :64].copy())])
    runs = [["--granularity", "group:64", "--bits", "4", "--pack4"],
            ["--granularity", "group:128", "--calib", "gridsearch:99:100:0.1", "--objective", "mse-inliers"],
            ["--granularity", "channel:0", "--scheme", "symmetric", "--narrow-range", "--calib", "percentile:99.9"],
            ["--granularity", "channel:1", "--calib", "gridsearch:98:100:0.5"],
            ["--granularity", "tensor", "--bits", "6"]]
    for extra in runs:
        outs = {}
        for b in ["cpu"] + others:
            outs[b] = os.path.join(d, f"q.{b}.safetensors")
            expect(["quantize-model", src, "-o", outs[b], "--backend", b] + extra, 0)
        for b in others:
            assert open(outs[b], "rb").read() == open(outs["cpu"], "rb").read(), \
                f"{b} and cpu wrote different files for {' '.join(extra)}"
            back = os.path.join(d, f"d.{b}.safetensors")
            expect(["dequantize-model", outs[b], "-o", back, "--backend", b], 0)
            expect(["dequantize-model", outs["cpu"], "-o", back + ".cpu", "--backend", "cpu"], 0)
            assert open(back, "rb").read() == open(back + ".cpu", "rb").read(), \
                f"{b} and cpu restored different files for {' '.join(extra)}"


# ---- the real model ---------------------------------------------------------------------------------

@test
def real_model_round_trips():
    if not MODEL:
        print("SKIPPED real_model_round_trips: no --model or QKERN_TEST_MODEL given "
              "(scripts/get-model.sh downloads all-MiniLM-L6-v2)")
        return
    d = tmpdir()
    _, src, _ = read_st(MODEL)
    assert src["embeddings.position_ids"][0] == "I64"
    for gran, bits, scheme, pack in (("channel:0", 8, "symmetric", False), ("group:128", 4, "asymmetric", True)):
        qp, dp = os.path.join(d, "q.safetensors"), os.path.join(d, "d.safetensors")
        args = ["quantize-model", MODEL, "-o", qp, "--granularity", gran, "--bits", str(bits), "--scheme", scheme]
        rep = expect_json(args + (["--pack4"] if pack else []))
        want = {k for k, (dt, sh, _) in src.items() if dt == "F32" and len(sh) >= 2}
        ref = check_quantized(MODEL, qp, rep, bits, scheme, gran, pack4=pack, expect_quantized=want)
        _, q, _ = read_st(qp)
        assert q["embeddings.position_ids"] == src["embeddings.position_ids"]
        expect_json(["dequantize-model", qp, "-o", dp])
        check_dequantized(MODEL, dp, ref)
        tot = rep["totals"]
        note(f"real model, {gran} {bits}-bit {scheme}{' packed' if pack else ''}: "
             f"{tot['tensors_quantized']} tensors quantized, {tot['tensors_kept']} kept, "
             f"{tot['bytes_in'] / 1e6:.1f} MB -> {tot['bytes_out'] / 1e6:.1f} MB, "
             f"MSE {tot['mse']:.4g}, SQNR {tot['sqnr_db']:.2f} dB")
        if VERBOSE:
            for t in rep["tensors"]:
                if t["quantized"]:
                    print(f"    {t['name']:48s} {str(t['shape']):14s} mse {t['mse']:.4g}  sqnr {t['sqnr_db']:.2f} dB")
        os.unlink(qp)
        os.unlink(dp)


def main():
    global QKERN, BACKEND, TMP, MODEL, VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qkern", required=True, help="path to the qkern binary")
    ap.add_argument("--model", default=os.environ.get("QKERN_TEST_MODEL"),
                    help="all-MiniLM-L6-v2 model.safetensors (default: $QKERN_TEST_MODEL)")
    ap.add_argument("--backend", default="cpu", help="backend for every run (default cpu)")
    ap.add_argument("-k", dest="only", help="run only tests whose name contains this")
    ap.add_argument("-v", dest="verbose", action="store_true", help="print the real model's per-tensor table")
    args = ap.parse_args()
    QKERN = os.path.abspath(args.qkern)
    BACKEND = ["--backend", args.backend]
    MODEL = args.model or None
    VERBOSE = args.verbose
    if MODEL and not os.path.isfile(MODEL):
        print(f"--model {MODEL}: no such file")
        sys.exit(1)
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="qkern-test-model-") as tmp:
        TMP = tmp
        for fn in TESTS:
            if args.only and args.only not in fn.__name__:
                continue
            t0 = time.monotonic()
            try:
                fn()
                passed += 1
                if VERBOSE:
                    print(f"ok   {fn.__name__} ({time.monotonic() - t0:.1f} s)")
            except Exception:  # one failing check must not hide the others
                failed += 1
                print(f"FAIL {fn.__name__}:")
                print("    " + traceback.format_exc().strip().replace("\n", "\n    "))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
