#!/usr/bin/env python3
"""qkern's GGUF reader and writer against gguf-py, the PyPI package `gguf`
(llama.cpp's own Python reader/writer), installed at test time into the build
directory (pip --target; its dependencies are Debian's python3-numpy and
python3-yaml).

  1. a file written by gguf-py with every value type, nested arrays, a custom
     alignment and tensors of several ggml types is read by qkern: every key,
     type, value and tensor info and every tensor byte equal GGUFReader's;
  2. qkern copies that file through its writer, and gguf-py reads the copy
     with every key, value and tensor equal to the original's;
  3. qkern quantizes to every block type and writes a GGUF; gguf-py reads it,
     its numpy quantizers (where it has one) give the same bytes, and its
     `dequantize` gives the same floats as qkern's dequantization.

    test_gguf_py.py --tool build/tests/gguf_tool --lib build/libqkern.so --build-dir build

Exit status 77 (skipped) only when gguf-py cannot be installed and
QKERN_TEST_OFFLINE=1 is set; without that, a missing gguf-py is a failure.
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

GGUF_VERSION = "0.19.0"


def install_gguf(build_dir):
    target = os.path.join(os.path.abspath(build_dir), "gguf-py", GGUF_VERSION)
    if not os.path.isfile(os.path.join(target, "gguf", "__init__.py")):
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target,
                            "gguf==" + GGUF_VERSION], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            print(r.stdout[-2000:])
            return None
    sys.path.insert(0, target)
    return target


def tool(args, *cmd):
    r = subprocess.run([args.tool] + list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("gguf_tool %s failed: %s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout


# ---- qkern's dump, turned into Python values -----------------------------------
SCALAR_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def from_dump(v, t, et=None):
    if t == 8:
        return bytes.fromhex(v).decode("utf-8")
    if t == 9:
        return [from_dump(e, et) for e in v]
    if t in (6, 12):
        return struct.unpack(SCALAR_FMT[t], bytes.fromhex(v))[0]
    return int(v) if t != 7 else bool(int(v))


def reader_value(field):
    """A ReaderField's value, with floats as Python floats and strings as str."""
    return field.contents()


def normalize(v):
    """Nested lists of scalars from either side, comparable (floats by bits)."""
    if isinstance(v, list):
        return [normalize(e) for e in v]
    if isinstance(v, float):
        return ("f", struct.pack("<d", v).hex())
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return ("f", struct.pack("<d", float(v)).hex())
    return v


def check_read(args, gguf, path, failures):
    """qkern's dump of path equals GGUFReader's view."""
    d = json.loads(tool(args, "dump", path))
    rd = gguf.GGUFReader(path)
    fields = [f for f in rd.fields.values() if not f.name.startswith("GGUF.")]
    if [f.name for f in fields] != [kv["key"] for kv in d["kv"]]:
        failures.append("keys differ: gguf-py %s, qkern %s" % ([f.name for f in fields], [kv["key"] for kv in d["kv"]]))
        return d
    for f, kv in zip(fields, d["kv"]):
        t = int(f.types[0])
        if t != kv["type"]:
            failures.append("%s: type %d (gguf-py) vs %d (qkern)" % (f.name, t, kv["type"]))
            continue
        want = normalize(reader_value(f))
        if t == 9:
            et = int(f.types[1])
            if et == 9:
                got = normalize(decode_nested(kv["value"], [int(x) for x in f.types[1:]]))
            else:
                got = normalize([from_dump(e, et) for e in kv["value"]])
        else:
            got = normalize(from_dump(kv["value"], t))
        if t == 9 and int(f.types[1]) == 9:
            # gguf-py's contents() flattens arrays of arrays: compare the leaves,
            # and the structure with what the test wrote.
            if flatten(got) != flatten(want) or (f.name in NESTED and got != normalize(NESTED[f.name])):
                failures.append("%s: nested value %r (gguf-py) vs %r (qkern)" % (f.name, want, got))
        elif want != got:
            failures.append("%s: value %r (gguf-py) vs %r (qkern)" % (f.name, want, got))
    if len(rd.tensors) != len(d["tensors"]):
        failures.append("tensor count %d vs %d" % (len(rd.tensors), len(d["tensors"])))
        return d
    for rt, qt in zip(rd.tensors, d["tensors"]):
        ne = [int(x) for x in rt.shape]
        checks = [(rt.name, qt["name"]), (int(rt.tensor_type), qt["type"]), (ne, qt["ne"]),
                  (int(rt.data_offset), d["data_offset"] + qt["offset"]), (int(rt.n_bytes), qt["nbytes"]),
                  (bytes(np.asarray(rt.data).view(np.uint8).reshape(-1)).hex(), qt["data"])]
        for a, b in checks:
            if a != b:
                failures.append("tensor %s: %r (gguf-py) vs %r (qkern)" % (rt.name, str(a)[:80], str(b)[:80]))
    return d


NESTED = {"t.nested": [[1, 2], [3, 4, 5]]}


def flatten(v):
    if isinstance(v, list):
        return [x for e in v for x in flatten(e)]
    return [v]


def decode_nested(v, types):
    """A nested array value from the dump, its element types from gguf-py's type list (depth-first)."""
    # gguf-py's types for [[1,2],[3]] of uint16 are [ARRAY, ARRAY, UINT16] (the first inner
    # array's types); arrays of arrays in gguf-py's writer have one leaf type throughout.
    leaf = [t for t in types if t != 9]
    leaf = leaf[0] if leaf else None

    def rec(e):
        if isinstance(e, list):
            return [rec(x) for x in e]
        return from_dump(e, leaf)
    return rec(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    if install_gguf(args.build_dir) is None:
        if os.environ.get("QKERN_TEST_OFFLINE") == "1":
            print("SKIPPED: gguf-py cannot be installed and QKERN_TEST_OFFLINE=1")
            return 77
        print("FAILED: gguf-py (PyPI gguf==%s) could not be installed; set QKERN_TEST_OFFLINE=1 to skip offline"
              % GGUF_VERSION)
        return 1
    import gguf
    from gguf import GGMLQuantizationType as Q
    failures = []
    rng = np.random.default_rng(1616)
    with tempfile.TemporaryDirectory() as tmp:
        # 1. gguf-py writes, qkern reads.
        src = os.path.join(tmp, "pywritten.gguf")
        w = gguf.GGUFWriter(src, "llama")
        w.add_custom_alignment(64)
        w.add_uint8("t.u8", 200)
        w.add_int8("t.i8", -100)
        w.add_uint16("t.u16", 60000)
        w.add_int16("t.i16", -30000)
        w.add_uint32("t.u32", 4000000000)
        w.add_int32("t.i32", -2000000000)
        w.add_float32("t.f32", 0.1)
        w.add_uint64("t.u64", 2 ** 64 - 1)
        w.add_int64("t.i64", -2 ** 63)
        w.add_float64("t.f64", -1.0 / 3.0)
        w.add_bool("t.bool", True)
        w.add_string("t.str", "h\u00e9llo \u2603")
        w.add_string("t.empty", "")
        w.add_array("t.ints", [1, -2, 3])
        w.add_array("t.floats", [0.5, -1.25])
        w.add_array("t.strs", ["a", "", "\u00e9t\u00e9"])
        w.add_array("t.nested", NESTED["t.nested"])
        w.add_tensor("a.weight", rng.standard_normal((3, 5)).astype(np.float32))
        w.add_tensor("h.weight", rng.standard_normal((2, 8)).astype(np.float16))
        q8 = rng.integers(0, 256, 2 * 34, dtype=np.uint8)
        w.add_tensor("q8.weight", q8, raw_shape=(2, 34), raw_dtype=Q.Q8_0)
        q4k = rng.integers(0, 256, 144, dtype=np.uint8)
        w.add_tensor("q4k.weight", q4k, raw_shape=(1, 144), raw_dtype=Q.Q4_K)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        d = check_read(args, gguf, src, failures)
        print("read a gguf-py file: %d keys, %d tensors, alignment %d" % (len(d["kv"]), len(d["tensors"]),
                                                                         d["alignment"]))
        # 2. qkern writes (a copy through its writer), gguf-py reads.
        dst = os.path.join(tmp, "copy.gguf")
        tool(args, "copy", src, dst)
        a, b = gguf.GGUFReader(src), gguf.GGUFReader(dst)
        fa = [(f.name, [int(t) for t in f.types], normalize(f.contents())) for f in a.fields.values()
              if not f.name.startswith("GGUF.")]
        fb = [(f.name, [int(t) for t in f.types], normalize(f.contents())) for f in b.fields.values()
              if not f.name.startswith("GGUF.")]
        if fa != fb:
            failures.append("the copy's keys/values differ from the original's")
        ta = [(t.name, int(t.tensor_type), [int(x) for x in t.shape], bytes(np.asarray(t.data).view(np.uint8)))
              for t in a.tensors]
        tb = [(t.name, int(t.tensor_type), [int(x) for x in t.shape], bytes(np.asarray(t.data).view(np.uint8)))
              for t in b.tensors]
        if ta != tb:
            failures.append("the copy's tensors differ from the original's")
        check_read(args, gguf, dst, failures)
        print("gguf-py read qkern's copy: %d keys, %d tensors" % (len(fb), len(tb)))
        # 3. quantized by qkern, read and dequantized by gguf-py.
        qk = Qkern(args.lib)
        st, ctx, msg = qk.context_create("cpu")
        if st != QK_OK:
            failures.append("context: " + msg)
            ctx = None
        x = (rng.standard_normal(256 * 32) * 0.05).astype(np.float32)
        x[::101] = rng.uniform(-2, 2, x[::101].size).astype(np.float32)
        xf = os.path.join(tmp, "x.f32")
        x.tofile(xf)
        for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "F16",
                     "BF16", "F32"):
            qt = Q[name]
            out = os.path.join(tmp, name + ".gguf")
            tool(args, "quantize", xf, name, out)
            t = gguf.GGUFReader(out).tensors[0]
            raw = np.asarray(t.data).view(np.uint8).reshape(-1)
            if int(t.tensor_type) != int(qt) or [int(v) for v in t.shape] != [x.size]:
                failures.append("%s: gguf-py reads type %d shape %s" % (name, int(t.tensor_type), list(t.shape)))
            mine = qk.ggml_quantize(ctx, x, int(qt)) if ctx else None
            if mine is not None and not np.array_equal(mine, raw):
                failures.append("%s: the GGUF's bytes are not qk_ggml_quantize's" % name)
            note = ""
            try:
                theirs = gguf.quants.quantize(x.reshape(8, -1), qt).reshape(-1).view(np.uint8)
                if not np.array_equal(theirs, raw):
                    failures.append("%s: gguf-py's quantizer gives other bytes (%d differ)"
                                    % (name, int((theirs != raw).sum())))
                else:
                    note = ", gguf-py's quantizer: same bytes"
            except NotImplementedError:
                note = ", gguf-py has no quantizer for it"
            deq = gguf.quants.dequantize(raw, qt).reshape(-1).astype(np.float32)
            back = qk.ggml_dequantize(ctx, raw, int(qt), x.size) if ctx else None
            if back is not None and not np.array_equal(deq.view(np.uint32), back.view(np.uint32)):
                bad = np.nonzero(deq.view(np.uint32) != back.view(np.uint32))[0]
                failures.append("%s: gguf-py dequantize differs at %d values (first %d: %r vs %r)"
                                % (name, bad.size, bad[0], deq[bad[0]], back[bad[0]]))
            print("%-5s written by qkern, read by gguf-py, dequantized equal%s" % (name, note))
        if ctx:
            qk.context_destroy(ctx)
    if failures:
        for f in failures:
            print("MISMATCH " + f)
        print("FAILED: %d mismatches with gguf-py %s" % (len(failures), GGUF_VERSION))
        return 1
    print("PASSED: GGUF files and block bytes agree with gguf-py %s" % GGUF_VERSION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
