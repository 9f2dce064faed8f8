#!/usr/bin/env python3
"""GGUF models end to end: `qkern quantize-model --type T` and `qkern
dequantize-model` on GGUF, checked with gguf-py (the PyPI package `gguf`,
llama.cpp's own reader; installed at test time into the build directory as
test_gguf_py.py does):

  1. a generated safetensors model (F32, F16, BF16, F64 and I64 tensors, 1-D and
     2-D, rows of 32, 48, 256 and 512) to every type on the CPU and to Q8_0,
     Q4_0, Q4_K, Q6_K and F16 on every other backend given: gguf-py reads every
     key, general.file_type and quantization_version, every tensor info
     (shape reversed, type by the selection rule), kept tensors byte for byte,
     quantized bytes equal to qk_ggml_quantize on the CPU (and to gguf-py's
     numpy quantizer where it has one); the report's SQNR equals the one
     computed from gguf-py's dequantization;
  2. a GGUF written by gguf-py (every value type, nested arrays, alignment 64,
     a Q8_0 and an I32 tensor): every key and value copied (file_type replaced),
     kept tensors byte for byte;
  3. dequantize-model to safetensors and GGUF (f32, f16, bf16): values equal to
     gguf-py's dequantize; float16 overflow is an error naming the tensor;
  4. a sharded safetensors input gives one GGUF;
  5. errors: bad --type, non-.gguf output, integer options with --type, hostile
     or truncated GGUF input, a tensor type GGUF cannot hold: a clear error,
     the right exit status, and no output file or temporary left.

    test_model_gguf.py --qkern build/qkern --lib build/libqkern.so --build-dir build [--backends cpu,opencl]

Exit status 77 only when gguf-py cannot be installed and QKERN_TEST_OFFLINE=1.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkern_ctypes import QK_OK, Qkern  # noqa: E402
from test_gguf_py import GGUF_VERSION, install_gguf  # noqa: E402

FTYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K": 12,
         "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "BF16": 32}
ALL_TYPES = list(FTYPE)
DEVICE_TYPES = ["Q8_0", "Q4_0", "Q4_K", "Q6_K", "F16"]
NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "BF16": np.uint16, "U8": np.uint8}
ST_TO_GGML = {"F32": 0, "F16": 1, "I8": 24, "I16": 25, "I32": 26, "I64": 27, "F64": 28, "BF16": 30}

FAILURES = []
COUNT = {"runs": 0, "tensors": 0}


def fail(msg):
    FAILURES.append(msg)
    print("FAIL: " + msg)


def run(args, *cmd):
    COUNT["runs"] += 1
    return subprocess.run([args.qkern] + list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def bf16_of(x):
    """float32 -> bfloat16 bits, round to nearest even (finite values)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def write_st(path, tensors, metadata=None):
    """tensors: [(name, dtype, shape, array)]."""
    header, off, blobs = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape, arr in tensors:
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], data[8 + n + a:8 + n + b])
    return meta, out


def model_tensors(rng):
    def f(shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    return [
        ("emb.weight", "F32", (4, 512), f((4, 512), 0.05)),
        ("l0.w", "F16", (3, 256), f((3, 256)).astype(np.float16)),
        ("l0.b", "F32", (256,), f(256)),
        ("l1.w", "BF16", (2, 256), bf16_of(f((2, 256)))),
        ("l2.w", "F64", (2, 64), rng.standard_normal((2, 64))),
        ("l3.w", "F32", (5, 48), f((5, 48))),      # rows of 48: no 32- or 256-element blocks fit
        ("l4.w", "F32", (2, 2, 32), f((2, 2, 32))),
        ("pos", "I64", (6,), np.arange(6, dtype=np.int64)),
        ("big.w", "F32", (256, 512), f((256, 512))),  # 512 KiB: pieces under --memory-limit 1M
    ]


def as_f32(dt, arr):
    if dt == "BF16":
        return bf16_to_f32(arr)
    return np.asarray(arr).astype(np.float32)


def block_size(name):
    return 256 if name.endswith("_K") else 32 if name.startswith("Q") else 1


def fields_of(rd):
    return [(f.name, [int(t) for t in f.types], norm(f.contents())) for f in rd.fields.values()
            if not f.name.startswith("GGUF.")]


def norm(v):
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    return v


def tensor_bytes(t):
    return bytes(np.asarray(t.data).view(np.uint8).reshape(-1))


def check_quantized(args, gguf, qk, cpu, src_tensors, out, tname, report, where):
    """The GGUF `out` from src_tensors quantized to tname: infos, bytes and the report."""
    Q = gguf.GGMLQuantizationType
    rd = gguf.GGUFReader(out)
    fields = {f.name: f for f in rd.fields.values()}
    ft = fields.get("general.file_type")
    if ft is None or int(ft.contents()) != FTYPE[tname] or int(ft.types[0]) != 4:
        fail("%s: general.file_type %r, expected uint32 %d" % (where, ft and ft.contents(), FTYPE[tname]))
    qv = fields.get("general.quantization_version")
    if (qv is not None) != (block_size(tname) > 1) or (qv is not None and int(qv.contents()) != 2):
        fail("%s: general.quantization_version %r" % (where, qv and qv.contents()))
    by_name = {t.name: t for t in rd.tensors}
    if [t.name for t in rd.tensors] != [t[0] for t in src_tensors]:
        fail("%s: tensor order %s" % (where, [t.name for t in rd.tensors]))
        return
    rep = {t["name"]: t for t in report["tensors"]}
    bs = block_size(tname)
    for name, dt, shape, arr in src_tensors:
        t = by_name[name]
        if [int(x) for x in t.shape] != list(reversed(shape)):
            fail("%s: %s shape %s, expected ne %s" % (where, name, list(t.shape), list(reversed(shape))))
        quant = dt in ("F32", "F16", "BF16", "F64") and len(shape) >= 2 and shape[-1] % bs == 0
        want_type = int(Q[tname]) if quant else ST_TO_GGML[dt]
        if int(t.tensor_type) != want_type:
            fail("%s: %s type %d, expected %d" % (where, name, int(t.tensor_type), want_type))
            continue
        COUNT["tensors"] += 1
        r = rep[name]
        if r["quantized"] != quant or r["ggml_type"] != (tname if quant else
                                                          {0: "F32", 1: "F16", 27: "I64", 28: "F64", 30: "BF16"}[want_type]):
            fail("%s: %s report quantized=%r ggml_type=%r" % (where, name, r["quantized"], r["ggml_type"]))
        raw = tensor_bytes(t)
        if not quant:
            if raw != np.ascontiguousarray(arr).tobytes():
                fail("%s: kept tensor %s is not byte for byte the input's" % (where, name))
            continue
        x = as_f32(dt, arr).reshape(-1)
        mine = qk.ggml_quantize(cpu, np.ascontiguousarray(x), int(Q[tname]))
        if bytes(mine) != raw:
            fail("%s: %s bytes differ from qk_ggml_quantize on the CPU" % (where, name))
        try:
            theirs = gguf.quants.quantize(x.reshape(-1, shape[-1]), Q[tname]).reshape(-1).view(np.uint8)
            if tname != "BF16" and bytes(theirs) != raw:  # gguf-py's bf16 flushes subnormals; none here anyway
                fail("%s: %s bytes differ from gguf-py's quantizer" % (where, name))
        except NotImplementedError:
            pass
        deq = gguf.quants.dequantize(np.frombuffer(raw, np.uint8), Q[tname]).reshape(-1).astype(np.float64)
        ref = np.asarray(arr, dtype=np.float64).reshape(-1) if dt == "F64" else x.astype(np.float64)
        sse = float(((deq - ref) ** 2).sum())
        sq = float((ref ** 2).sum())
        want = 10 * np.log10(sq / sse) if sse > 0 else None
        got = r["sqnr_db"]
        if (want is None) != (got is None) or (want is not None and abs(got - want) > 1e-6 * max(1.0, abs(want))):
            fail("%s: %s SQNR %r in the report, %r from gguf-py's dequantize" % (where, name, got, want))
        if r["blocks"] != x.size // bs:
            fail("%s: %s blocks %r" % (where, name, r["blocks"]))


def test_safetensors(args, gguf, qk, cpu, tmp, backends):
    rng = np.random.default_rng(16)
    src = model_tensors(rng)
    path = os.path.join(tmp, "m.safetensors")
    meta = {"format": "pt", "note": "h\u00e9llo"}
    write_st(path, src, meta)
    cpu_bytes = {}
    for be in backends:
        for tname in (ALL_TYPES if be == "cpu" else DEVICE_TYPES):
            out = os.path.join(tmp, "st_%s_%s.gguf" % (be, tname))
            r = run(args, "quantize-model", path, "-o", out, "--type", tname.lower() if tname == "Q4_K" else tname,
                    "--backend", be, "--json")
            where = "safetensors -> %s on %s" % (tname, be)
            if r.returncode != 0:
                fail("%s: exit %d: %s" % (where, r.returncode, r.stderr.strip()))
                continue
            report = json.loads(r.stdout)
            check_quantized(args, gguf, qk, cpu, src, out, tname, report, where)
            rd = gguf.GGUFReader(out)
            fields = {f.name: f.contents() for f in rd.fields.values()}
            for k, v in meta.items():
                if fields.get(k) != v:
                    fail("%s: metadata %s = %r, expected %r" % (where, k, fields.get(k), v))
            with open(out, "rb") as f:
                data = f.read()
            if tname in ("Q4_K", "Q8_0"):  # in pieces of whole rows, two jobs: the same file
                out2 = out + ".pieces.gguf"
                r = run(args, "quantize-model", path, "-o", out2, "--type", tname, "--backend", be,
                        "--memory-limit", "1M", "--jobs", "2")
                with open(out2, "rb") as f:
                    if r.returncode != 0 or f.read() != data:
                        fail("%s: --memory-limit 1M --jobs 2 gives another file (%s)" % (where, r.stderr.strip()))
            if be == "cpu":
                cpu_bytes[tname] = data
            elif cpu_bytes.get(tname) != data:
                fail("%s: the file differs from the CPU backend's" % where)
    print("safetensors -> GGUF: %d types on cpu, %d on %s" % (len(ALL_TYPES), len(DEVICE_TYPES),
                                                               ",".join(b for b in backends if b != "cpu") or "-"))


def write_py_gguf(gguf, path, rng):
    Q = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_name("tiny")
    w.add_uint8("t.u8", 200)
    w.add_int16("t.i16", -30000)
    w.add_uint32("general.file_type", 0)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2 ** 64 - 1)
    w.add_int64("t.i64", -2 ** 63)
    w.add_float64("t.f64", -1.0 / 3.0)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "h\u00e9llo")
    w.add_array("t.strs", ["a", "", "b"])
    w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.nested", [[1, 2], [3, 4, 5]])
    ts = [("tok.weight", rng.standard_normal((6, 256)).astype(np.float32)),
          ("blk.0.w", rng.standard_normal((4, 64)).astype(np.float16)),
          ("blk.0.norm", rng.standard_normal(64).astype(np.float32)),
          ("blk.0.ids", np.arange(10, dtype=np.int32))]
    for name, a in ts:
        w.add_tensor(name, a)
    q8 = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), Q.Q8_0)
    w.add_tensor("blk.0.q8", q8, raw_shape=q8.shape, raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_input(args, gguf, qk, cpu, tmp, backends):
    rng = np.random.default_rng(17)
    src = os.path.join(tmp, "py.gguf")
    write_py_gguf(gguf, src, rng)
    a = gguf.GGUFReader(src)
    for tname in DEVICE_TYPES:
        for be in backends:
            out = os.path.join(tmp, "py_%s_%s.gguf" % (tname, be))
            r = run(args, "quantize-model", src, "-o", out, "--type", tname, "--backend", be, "--json")
            where = "gguf -> %s on %s" % (tname, be)
            if r.returncode != 0:
                fail("%s: exit %d: %s" % (where, r.returncode, r.stderr.strip()))
                continue
            b = gguf.GGUFReader(out)
            fa = [x for x in fields_of(a) if x[0] != "general.file_type"]
            fb = [x for x in fields_of(b) if x[0] not in ("general.file_type", "general.quantization_version")]
            if fa != fb:
                fail("%s: keys/values differ from the input's" % where)
            names_a = [x[0] for x in fields_of(a)]
            names_b = [x[0] for x in fields_of(b)]
            if names_b[:len(names_a)] != names_a:  # file_type replaced in place, quantization_version appended
                fail("%s: key order %s" % (where, names_b))
            fb_all = {f.name: f for f in b.fields.values()}
            if int(fb_all["general.file_type"].contents()) != FTYPE[tname]:
                fail("%s: file_type %r" % (where, fb_all["general.file_type"].contents()))
            if int(fb_all["general.alignment"].contents()) != 64 or any(int(t.data_offset) % 64 for t in b.tensors):
                fail("%s: alignment 64 not kept" % where)
            bs = block_size(tname)
            for ta, tb in zip(a.tensors, b.tensors):
                ne = [int(x) for x in ta.shape]
                quant = int(ta.tensor_type) in (0, 1) and len(ne) >= 2 and ne[0] % bs == 0
                if ta.name != tb.name or [int(x) for x in tb.shape] != ne:
                    fail("%s: tensor %s info changed" % (where, ta.name))
                elif not quant and (int(tb.tensor_type) != int(ta.tensor_type) or tensor_bytes(ta) != tensor_bytes(tb)):
                    fail("%s: kept tensor %s not byte for byte" % (where, ta.name))
                elif quant:
                    x = np.asarray(ta.data).astype(np.float32).reshape(-1)
                    if int(tb.tensor_type) != int(gguf.GGMLQuantizationType[tname]) or \
                            bytes(qk.ggml_quantize(cpu, np.ascontiguousarray(x), int(tb.tensor_type))) != tensor_bytes(tb):
                        fail("%s: %s not quantized as qk_ggml_quantize" % (where, ta.name))
    # nothing left to quantize (every matrix already Q8_0): the input's file_type stays
    q8 = os.path.join(tmp, "py_Q8_0_cpu.gguf")
    again = os.path.join(tmp, "again.gguf")
    r = run(args, "quantize-model", q8, "-o", again, "--type", "Q4_K", "--backend", "cpu", "--json")
    if r.returncode != 0:
        fail("requantize: exit %d: %s" % (r.returncode, r.stderr.strip()))
    else:
        reasons = {t["name"]: t["reason"] for t in json.loads(r.stdout)["tensors"]}
        fa, fb = fields_of(gguf.GGUFReader(q8)), fields_of(gguf.GGUFReader(again))
        if fa != fb or reasons.get("tok.weight") != "already in a ggml block type":
            fail("requantize: keys changed or reason %r" % reasons.get("tok.weight"))
    print("gguf-py GGUF -> GGUF: keys, values and kept tensors copied")


def test_dequantize(args, gguf, tmp, backends):
    Q = gguf.GGMLQuantizationType
    rng = np.random.default_rng(18)
    src = model_tensors(rng)
    path = os.path.join(tmp, "d.safetensors")
    write_st(path, src, {"k": "v"})
    for tname in ("Q4_K", "Q8_0", "Q6_K"):
        q = os.path.join(tmp, "d_%s.gguf" % tname)
        r = run(args, "quantize-model", path, "-o", q, "--type", tname, "--backend", "cpu")
        if r.returncode != 0:
            fail("dequantize setup %s: %s" % (tname, r.stderr.strip()))
            continue
        rq = gguf.GGUFReader(q)
        for be in backends:
            for dtype, suffix in (("f32", "safetensors"), ("f32", "gguf"), ("f16", "gguf"), ("bf16", "safetensors")):
                out = os.path.join(tmp, "dq_%s_%s_%s.%s" % (tname, be, dtype, suffix))
                r = run(args, "dequantize-model", q, "-o", out, "--dtype", dtype, "--backend", be, "--json")
                where = "dequantize %s -> %s %s on %s" % (tname, dtype, suffix, be)
                if r.returncode != 0:
                    fail("%s: exit %d: %s" % (where, r.returncode, r.stderr.strip()))
                    continue
                rep = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}
                if suffix == "safetensors":
                    meta, got = read_st(out)
                    if meta != {"k": "v"}:
                        fail("%s: metadata %r" % (where, meta))
                else:
                    rd = gguf.GGUFReader(out)
                    got = {t.name: ({0: "F32", 1: "F16", 27: "I64", 28: "F64", 30: "BF16"}.get(int(t.tensor_type), "?"),
                                    list(reversed([int(x) for x in t.shape])), tensor_bytes(t)) for t in rd.tensors}
                    ft = {f.name: f for f in rd.fields.values()}["general.file_type"].contents()
                    if int(ft) != {"f32": 0, "f16": 1, "bf16": 32}[dtype]:
                        fail("%s: file_type %r" % (where, ft))
                for t in rq.tensors:
                    shape = list(reversed([int(x) for x in t.shape]))
                    dt, gshape, raw = got[t.name]
                    if gshape != shape:
                        fail("%s: %s shape %s" % (where, t.name, gshape))
                    if int(t.tensor_type) in (0, 1, 27, 28, 30):
                        if raw != tensor_bytes(t) or rep[t.name]["dequantized"]:
                            fail("%s: %s not copied byte for byte" % (where, t.name))
                        continue
                    deq = gguf.quants.dequantize(np.asarray(t.data).view(np.uint8).reshape(-1),
                                                 Q(int(t.tensor_type))).astype(np.float32).reshape(-1)
                    want = {"f32": deq.tobytes(), "f16": deq.astype(np.float16).tobytes(),
                            "bf16": bf16_of(deq).tobytes()}[dtype]
                    if dt != dtype.upper() or raw != want:
                        fail("%s: %s values differ from gguf-py's dequantize (%s)" % (where, t.name, dt))
                    if rep[t.name].get("ggml_type") != tname or not rep[t.name]["dequantized"]:
                        fail("%s: %s report %r" % (where, t.name, rep[t.name]))
    # float16 overflow: a Q8_0 tensor whose values reach 1e5
    big = os.path.join(tmp, "big.gguf")
    w = gguf.GGUFWriter(big, "llama")
    x = np.linspace(-1e5, 1e5, 64, dtype=np.float32).reshape(2, 32)
    q8 = gguf.quants.quantize(x, Q.Q8_0)
    w.add_tensor("huge.w", q8, raw_shape=q8.shape, raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    deq = gguf.quants.dequantize(q8.reshape(-1), Q.Q8_0).astype(np.float32)
    n_over = int((np.abs(deq.astype(np.float64)) > 65519.99).sum())  # rounds to inf in float16
    out = os.path.join(tmp, "big.safetensors")
    r = run(args, "dequantize-model", big, "-o", out, "--dtype", "f16")
    if r.returncode != 1 or "huge.w" not in r.stderr or (" %d values" % n_over) not in r.stderr or os.path.exists(out):
        fail("f16 overflow: exit %d, stderr %r, output left %s (expected %d values)"
             % (r.returncode, r.stderr.strip(), os.path.exists(out), n_over))
    print("dequantize-model: values equal gguf-py's dequantize; f16 overflow refused")


def test_sharded(args, gguf, tmp):
    rng = np.random.default_rng(19)
    d = os.path.join(tmp, "sharded")
    os.mkdir(d)
    a = [("a.w", "F32", (2, 64), rng.standard_normal((2, 64)).astype(np.float32))]
    b = [("b.w", "F32", (2, 64), rng.standard_normal((2, 64)).astype(np.float32)),
         ("b.b", "F32", (64,), rng.standard_normal(64).astype(np.float32))]
    write_st(os.path.join(d, "model-00001-of-00002.safetensors"), a, {"format": "pt"})
    write_st(os.path.join(d, "model-00002-of-00002.safetensors"), b, {"format": "pt"})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {"a.w": "model-00001-of-00002.safetensors",
                                                   "b.w": "model-00002-of-00002.safetensors",
                                                   "b.b": "model-00002-of-00002.safetensors"}}, f)
    out = os.path.join(tmp, "sharded.gguf")
    r = run(args, "quantize-model", d, "-o", out, "--type", "Q8_0", "--backend", "cpu")
    if r.returncode != 0:
        fail("sharded: exit %d: %s" % (r.returncode, r.stderr.strip()))
        return
    rd = gguf.GGUFReader(out)
    if sorted(t.name for t in rd.tensors) != ["a.w", "b.b", "b.w"]:
        fail("sharded: tensors %s" % [t.name for t in rd.tensors])
    print("sharded safetensors -> one GGUF")


def test_fifo(args, tmp):
    """An output that cannot seek (a FIFO): tensors in file order, the alignment
    padding written as zeros between them; the bytes are the regular file's."""
    import threading
    rng = np.random.default_rng(21)
    path = os.path.join(tmp, "fifo.safetensors")
    write_st(path, [("a", "F32", (3, 64), rng.standard_normal((3, 64)).astype(np.float32)),  # 108 bytes of Q4_0
                    ("b", "F32", (64,), rng.standard_normal(64).astype(np.float32)),
                    ("c", "F32", (2, 256), rng.standard_normal((2, 256)).astype(np.float32))])
    reg = os.path.join(tmp, "fifo_reg.gguf")
    r = run(args, "quantize-model", path, "-o", reg, "--type", "Q4_0", "--backend", "cpu")
    fifo = os.path.join(tmp, "fifo.gguf")
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    r2 = run(args, "quantize-model", path, "-o", fifo, "--type", "Q4_0", "--backend", "cpu")
    reader.join(30)
    with open(reg, "rb") as f:
        want = f.read()
    if r.returncode != 0 or r2.returncode != 0 or not got or got[0] != want:
        fail("FIFO output: exit %d/%d (%s), %s bytes vs %d" % (r.returncode, r2.returncode, r2.stderr.strip(),
                                                                len(got[0]) if got else None, len(want)))
    # stdout (-o -): the same bytes again, the report on stderr
    r3 = subprocess.run([args.qkern, "quantize-model", path, "-o", "-", "--type", "Q4_0", "--backend", "cpu"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r3.returncode != 0 or r3.stdout != want:
        fail("-o -: exit %d (%s), %d bytes vs %d" % (r3.returncode, r3.stderr.decode().strip()[:300], len(r3.stdout),
                                                    len(want)))
    print("a FIFO output and stdout: the same bytes, written in order")


def test_errors(args, tmp):
    rng = np.random.default_rng(20)
    path = os.path.join(tmp, "e.safetensors")
    write_st(path, [("w", "F32", (2, 32), rng.standard_normal((2, 32)).astype(np.float32))])
    u8 = os.path.join(tmp, "u8.safetensors")
    write_st(u8, [("w", "F32", (2, 32), rng.standard_normal((2, 32)).astype(np.float32)),
                  ("mask", "U8", (4,), np.ones(4, np.uint8))])
    nan = os.path.join(tmp, "nan.safetensors")
    xn = rng.standard_normal((2, 32)).astype(np.float32)
    xn[1, 3] = np.nan
    write_st(nan, [("w", "F32", (2, 32), xn)])
    # a NaN far into a 4 MiB tensor quantized in pieces: the message counts from the tensor's start
    nan_late = os.path.join(tmp, "nan_late.safetensors")
    xl = rng.standard_normal((4096, 256)).astype(np.float32)
    xl[4000, 5] = np.inf
    write_st(nan_late, [("w", "F32", (4096, 256), xl)])
    good = os.path.join(tmp, "good.gguf")
    r = run(args, "quantize-model", path, "-o", good, "--type", "Q8_0", "--backend", "cpu")
    if r.returncode != 0:
        fail("errors setup: %s" % r.stderr)
        return
    with open(good, "rb") as f:
        data = f.read()
    trunc = os.path.join(tmp, "trunc.gguf")
    with open(trunc, "wb") as f:
        f.write(data[:len(data) - 7])
    hostile = os.path.join(tmp, "hostile.gguf")
    with open(hostile, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 2 ** 60, 0))
    outdir = os.path.join(tmp, "errout")
    os.mkdir(outdir)
    cases = [
        (["quantize-model", path, "-o", "OUT.gguf", "--type", "Q9_9"], 2, "--type"),
        (["quantize-model", path, "-o", "OUT.safetensors", "--type", "Q8_0"], 2, ".gguf"),
        (["quantize-model", path, "-o", "OUT.gguf", "--type", "Q8_0", "--bits", "4"], 2, "--bits"),
        (["quantize-model", path, "-o", "OUT.gguf", "--type", "Q8_0", "--granularity", "tensor"], 2, "--granularity"),
        (["quantize-model", path, "-o", "OUT.gguf"], 2, "--type"),
        (["quantize-model", good, "-o", "OUT.safetensors"], 2, "GGUF"),
        (["quantize-model", trunc, "-o", "OUT.gguf", "--type", "Q4_0"], 1, "trunc.gguf"),
        (["quantize-model", hostile, "-o", "OUT.gguf", "--type", "Q4_0"], 1, "hostile.gguf"),
        (["quantize-model", u8, "-o", "OUT.gguf", "--type", "Q4_0"], 1, "mask"),
        (["quantize-model", nan, "-o", "OUT.gguf", "--type", "Q4_0"], 1, "finite"),
        (["quantize-model", nan_late, "-o", "OUT.gguf", "--type", "Q4_K", "--memory-limit", "1M"], 1,
         "element %d" % (4000 * 256 + 5)),
        (["dequantize-model", trunc, "-o", "OUT.safetensors"], 1, "trunc.gguf"),
        (["dequantize-model", hostile, "-o", "OUT.gguf"], 1, "hostile.gguf"),
        (["dequantize-model", good, "-o", "OUT.gguf", "--dtype", "f8"], 2, "--dtype"),
        (["dequantize-model", path, "-o", "OUT.safetensors", "--dtype", "f16"], 2, "--dtype"),
    ]
    for argv, code, needle in cases:
        argv = [os.path.join(outdir, a) if a.startswith("OUT.") else a for a in argv]
        r = run(args, *argv)
        left = os.listdir(outdir)
        if r.returncode != code or needle not in r.stderr or left:
            fail("%s: exit %d (expected %d), stderr %r, left %s" % (" ".join(argv[:1] + argv[2:]), r.returncode, code,
                                                                     r.stderr.strip()[:300], left))
            for x in left:
                os.remove(os.path.join(outdir, x))
    print("errors: %d cases, no output left" % len(cases))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qkern", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--backends", default="cpu")
    ap.add_argument("--skip-without-device", action="store_true",
                    help="exit 77 (skip) when no backend but the CPU can run")
    args = ap.parse_args()
    if install_gguf(args.build_dir) is None:
        if os.environ.get("QKERN_TEST_OFFLINE") == "1":
            print("SKIPPED: gguf-py cannot be installed and QKERN_TEST_OFFLINE=1")
            return 77
        print("FAILED: gguf-py (PyPI gguf==%s) could not be installed" % GGUF_VERSION)
        return 1
    import gguf
    qk = Qkern(args.lib)
    st, cpu, msg = qk.context_create("cpu")
    if st != QK_OK:
        print("FAILED: cpu context: " + msg)
        return 1
    backends = [b for b in args.backends.split(",") if b]
    # A backend without a device (CUDA on a machine without a GPU) skips the
    # whole run, saying so, when it is the one asked for besides the CPU.
    for b in [b for b in backends if b != "cpu"]:
        st, ctx, msg = qk.context_create(b)
        if st == QK_OK:
            qk.context_destroy(ctx)
            continue
        print("SKIPPED: backend %s: %s" % (b, msg))
        backends.remove(b)
    if args.backends != "cpu" and backends == ["cpu"] and args.skip_without_device:
        qk.context_destroy(cpu)
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        for fn, fa in ((test_safetensors, (args, gguf, qk, cpu, tmp, backends)),
                       (test_gguf_input, (args, gguf, qk, cpu, tmp, backends)),
                       (test_dequantize, (args, gguf, tmp, backends)),
                       (test_sharded, (args, gguf, tmp)),
                       (test_fifo, (args, tmp)),
                       (test_errors, (args, tmp))):
            try:
                fn(*fa)
            except Exception as e:  # a crash of one part is a failure, the others still run
                import traceback
                traceback.print_exc()
                fail("%s raised %r" % (fn.__name__, e))
    qk.context_destroy(cpu)
    print("%d qkern runs, %d tensors checked in quantized files" % (COUNT["runs"], COUNT["tensors"]))
    print("%d failure%s" % (len(FAILURES), "" if len(FAILURES) == 1 else "s"))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
