#!/usr/bin/env python3
"""Parameters travel with the codes (issue 13, part 2): `qkern quantize x.npy -o
q.safetensors [--granularity channel[:AXIS]|group:G]` writes codes, scales and
zero points in docs/model-format.md's format; `qkern dequantize q.safetensors`
needs no --scale and equals numpy's (q - z) * s per block; every block's
parameters are what quantize gives that block alone; float16 .npy input is
accepted. Read back with numpy alone. Run as:
    python3 tests/test_quantize_st.py --qkern build/qkern
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

QKERN = None
DT = {"U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16, "F32": np.float32, "I32": np.int32}


def run(*args, rc=0):
    p = subprocess.run([QKERN] + list(args) + ["--backend", "cpu"], capture_output=True, text=True, timeout=300)
    assert p.returncode == rc, (args, p.returncode, p.stderr)
    return p


def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    out = {}
    for name, v in header.items():
        a, b = v["data_offsets"]
        out[name] = np.frombuffer(body[a:b], DT[v["dtype"]]).reshape(v["shape"])
    return meta, out


def blocks_of(x, gran):
    """Flat C-order element index -> block index, per docs/model-format.md."""
    idx = np.arange(x.size).reshape(x.shape)
    if gran == "tensor":
        return np.zeros(x.size, np.int64)
    if gran.startswith("channel:"):
        axis = int(gran.split(":")[1])
        return np.indices(x.shape)[axis].ravel()
    g = int(gran.split(":")[1])
    return idx.ravel() // g


def main():
    global QKERN
    ap = argparse.ArgumentParser()
    ap.add_argument("--qkern", required=True)
    QKERN = os.path.abspath(ap.parse_args().qkern)
    d = tempfile.mkdtemp(prefix="qkern-test-quantize-st-")
    p = lambda n: os.path.join(d, n)
    rng = np.random.default_rng(11)
    x = rng.laplace(0, 0.05, (6, 48)).astype(np.float32)
    x[2, 7] = 3.0
    np.save(p("w.npy"), x)

    for gran, scheme, bits in (("tensor", "asymmetric", 8), ("channel:0", "symmetric", 8), ("channel:1", "asymmetric", 4),
                               ("group:16", "asymmetric", 8), ("channel", "symmetric", 12)):
        run("quantize", p("w.npy"), "-o", p("q.safetensors"), "--granularity", gran, "--scheme", scheme,
            "--bits", str(bits))
        meta, t = read_st(p("q.safetensors"))
        doc = json.loads(meta["qkern"])
        e = doc["tensors"][0]
        assert doc["format"] == "qkern-quantized-safetensors" and len(doc["tensors"]) == 1, doc
        g = "channel:0" if gran == "channel" else gran
        assert e["name"] == "w" and e["scheme"] == scheme and e["bits"] == bits, e
        q, s, z = t["w"], t["w.qscale"], t["w.qzero"]
        assert q.shape == x.shape and q.dtype == (np.uint8 if scheme == "asymmetric" and bits <= 8 else
                                                  np.int8 if bits <= 8 else np.int16), (q.dtype, gran)
        b = blocks_of(x, g)
        assert s.size == b.max() + 1 and z.size == s.size, (gran, s.size)
        if scheme == "symmetric":
            assert (z == 0).all()
        # the reader's formula, in numpy: float32(q - z) * scale
        ref = ((q.ravel().astype(np.int64) - z[b]).astype(np.float32) * s[b]).reshape(x.shape)
        run("dequantize", p("q.safetensors"), "-o", p("back.npy"))
        back = np.load(p("back.npy"))
        assert back.dtype == np.float32 and np.array_equal(back, ref), gran
        assert np.abs(back - x).max() <= s.max() * 0.5 + 1e-7 or scheme == "asymmetric" and bits == 4, gran
        # every block's parameters are what quantize gives that block alone
        for blk in (0, s.size - 1):
            np.save(p("blk.npy"), x.ravel()[b == blk])
            j = json.loads(run("quantize", p("blk.npy"), "-o", p("blk.q.npy"), "--scheme", scheme,
                               "--bits", str(bits), "--json").stdout)
            assert np.float32(j["scale"]) == s[blk] and j["zero_point"] == z[blk], (gran, blk, j, s[blk], z[blk])
        # dequantize-model reads the one-tensor model too
        run("dequantize-model", p("q.safetensors"), "-o", p("m.safetensors"))
        assert np.array_equal(read_st(p("m.safetensors"))[1]["w"], ref)

    # per tensor: the codes equal the codes-only .npy output, and the parameters its report
    j = json.loads(run("quantize", p("w.npy"), "-o", p("q.npy"), "--calib", "percentile:99.5", "--json").stdout)
    run("quantize", p("w.npy"), "-o", p("q.safetensors"), "--calib", "percentile:99.5")
    _, t = read_st(p("q.safetensors"))
    assert np.array_equal(t["w"], np.load(p("q.npy"))) and np.float32(j["scale"]) == t["w.qscale"][0]
    assert t["w.qzero"][0] == j["zero_point"]
    # given parameters travel too
    run("quantize", p("w.npy"), "-o", p("q.safetensors"), "--scale", "0.01", "--zero-point", "100")
    _, t = read_st(p("q.safetensors"))
    assert t["w.qscale"][0] == np.float32(0.01) and t["w.qzero"][0] == 100

    # float16 input
    h = x.astype(np.float16)
    np.save(p("h.npy"), h)
    run("quantize", p("h.npy"), "-o", p("h.q.npy"))
    run("quantize", p("h.npy"), "-o", p("h.q.safetensors"), "--granularity", "channel")
    meta, _ = read_st(p("h.q.safetensors"))
    assert json.loads(meta["qkern"])["tensors"][0]["dtype"] == "F16"
    np.save(p("hx.npy"), h.astype(np.float32))  # float16 converts to float32 exactly: the same codes
    run("quantize", p("hx.npy"), "-o", p("hx.q.npy"))
    assert np.array_equal(np.load(p("h.q.npy")), np.load(p("hx.q.npy")))
    run("stats", p("h.npy"))

    # usage errors
    assert "needs a .safetensors output" in run("quantize", p("w.npy"), "-o", p("q.npy"), "--granularity",
                                                "channel", rc=2).stderr
    run("quantize", p("w.npy"), "-o", p("q.safetensors"), "--granularity", "channel", "--scale", "0.1", rc=2)
    run("quantize", p("w.npy"), "-o", p("q.safetensors"), "--granularity", "bogus", rc=2)
    assert "drop --scale" in run("dequantize", p("q.safetensors"), "-o", p("b.npy"), "--scale", "1", rc=2).stderr
    run("quantize", p("w.npy"), "-o", p("q.safetensors"), "--granularity", "group:5", rc=1)  # 5 does not divide 48
    # a whole model is dequantize-model's: dequantize says so
    hdr, blob = {}, b""
    for name in ("a", "b"):
        hdr[name] = {"dtype": "F32", "shape": [4, 8], "data_offsets": [len(blob), len(blob) + 128]}
        blob += x.ravel()[:32].tobytes()
    hj = json.dumps(hdr).encode()
    hj += b" " * (-len(hj) % 8)
    with open(p("two.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + blob)
    run("quantize-model", p("two.safetensors"), "-o", p("two.q.safetensors"))
    assert "use qkern dequantize-model" in run("dequantize", p("two.q.safetensors"), "-o", p("b.npy"), rc=1).stderr
    assert not os.path.exists(p("b.npy"))
    shutil.rmtree(d)
    print("quantize/dequantize with .safetensors: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
