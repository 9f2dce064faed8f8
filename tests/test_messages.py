#!/usr/bin/env python3
"""The CLI's messages (issue 13, part 3): no --ignore-nonfinite hint when it
was given, float32 overflow in dequantize is an error with the count, a zero
point outside the codes' range is a usage error, --include matching nothing is
an error and non-float matches are listed as skipped, sizes in readable units,
and a grid search whose best candidate is on the grid's edge warns
("at_grid_edge" in JSON). Run as:
    python3 tests/test_messages.py --qkern build/qkern
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

QKERN = None


def run(*args):
    return subprocess.run([QKERN] + list(args) + ["--backend", "cpu"], capture_output=True, text=True, timeout=300)


def st_file(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors:
        b = arr.tobytes()
        dt = {np.float32: "F32", np.int64: "I64", np.uint8: "U8"}[arr.dtype.type]
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    global QKERN
    ap = argparse.ArgumentParser()
    ap.add_argument("--qkern", required=True)
    QKERN = os.path.abspath(ap.parse_args().qkern)
    d = tempfile.mkdtemp(prefix="qkern-test-messages-")
    p = lambda n: os.path.join(d, n)

    # --ignore-nonfinite given: no hint to pass it (every value NaN still fails)
    np.save(p("nan.npy"), np.full(50, np.nan, np.float32))
    for args in (["quantize", p("nan.npy"), "-o", p("o.npy")], ["stats", p("nan.npy")], ["gridsearch", p("nan.npy")]):
        r = run(*args)
        assert r.returncode == 1 and "hint: pass --ignore-nonfinite" in r.stderr, (args, r.stderr)
        r = run(*args, "--ignore-nonfinite")
        assert r.returncode == 1 and "--ignore-nonfinite" not in r.stderr, (args, r.stderr)
    assert not os.path.exists(p("o.npy"))

    # float32 overflow in dequantize: an error with the count, no output
    np.save(p("i32.npy"), np.array([0, 5, -7, 2**31 - 1], np.int32))
    r = run("dequantize", p("i32.npy"), "-o", p("d.npy"), "--scale", "1e38", "--zero-point", "-2147483648")
    assert r.returncode == 1 and "4 of 4 values overflow float32" in r.stderr, r.stderr
    r = run("dequantize", p("i32.npy"), "-o", p("d.npy"), "--scale", "1e30", "--zero-point", "0")
    assert r.returncode == 1 and "1 of 4 values overflow" in r.stderr, r.stderr
    assert not os.path.exists(p("d.npy"))

    # a zero point outside the codes' range: usage error
    np.save(p("u8.npy"), np.arange(10, dtype=np.uint8))
    np.save(p("x.npy"), np.random.default_rng(1).standard_normal(1000).astype(np.float32))
    for args in (["dequantize", p("u8.npy"), "-o", p("d.npy"), "--scale", "1", "--zero-point", "256"],
                 ["dequantize", p("u8.npy"), "-o", p("d.npy"), "--scale", "1", "--zero-point", "-1"],
                 ["quantize", p("x.npy"), "-o", p("q.npy"), "--scale", "0.1", "--zero-point", "300"],
                 ["quantize", p("x.npy"), "-o", p("q.npy"), "--scale", "0.1", "--zero-point", "16", "--bits", "4"]):
        r = run(*args)
        assert r.returncode == 2 and "outside" in r.stderr, (args, r.returncode, r.stderr)
    r = run("dequantize", p("u8.npy"), "-o", p("d.npy"), "--scale", "1", "--zero-point", "255")
    assert r.returncode == 0, r.stderr

    # --include: no match is an error; non-float matches are listed as skipped
    rng = np.random.default_rng(2)
    st_file(p("m.safetensors"), [("w", rng.standard_normal((8, 16)).astype(np.float32)),
                                 ("pos_ids", np.arange(8, dtype=np.int64)),
                                 ("pos_bias", rng.standard_normal(8).astype(np.float32))])
    r = run("quantize-model", p("m.safetensors"), "-o", p("q.safetensors"), "--include", "nomatch")
    assert r.returncode == 2 and "--include /nomatch/ matches no tensor" in r.stderr, r.stderr
    assert not os.path.exists(p("q.safetensors"))
    r = run("quantize-model", p("m.safetensors"), "-o", p("q.safetensors"), "--include", "^pos")
    assert r.returncode == 0 and "skipped: pos_ids (I64)" in r.stderr, r.stderr

    # readable sizes: a tiny model is a few hundred bytes, not "0.0 MB"
    assert "0.0 MB" not in r.stdout and " B -> " in r.stdout, r.stdout
    r = run("dequantize-model", p("q.safetensors"), "-o", p("r.safetensors"))
    assert r.returncode == 0 and "0.0 MB" not in r.stdout and " B" in r.stdout, r.stdout

    # grid edges
    r = run("gridsearch", p("x.npy"), "--grid", "90:99:1", "--json")
    j = json.loads(r.stdout)
    assert j["at_grid_edge"] is True and j["best"]["percentile"] == 99, j["best"]
    assert "upper edge" in r.stderr and "may do better" in r.stderr, r.stderr
    r = run("gridsearch", p("x.npy"), "--grid", "99:100:0.1", "--json")
    assert json.loads(r.stdout)["at_grid_edge"] is False and "warning" not in r.stderr, r.stderr  # 100 is the limit
    r = run("quantize", p("x.npy"), "-o", p("q.npy"), "--calib", "gridsearch:90:99:1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["at_grid_edge"] is True and "upper edge" in r.stderr
    r = run("quantize", p("x.npy"), "-o", p("q.npy"), "--json")
    assert "at_grid_edge" not in json.loads(r.stdout)
    print("messages: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
