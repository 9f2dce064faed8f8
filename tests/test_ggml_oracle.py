#!/usr/bin/env python3
"""qkern's ggml block formats against ggml itself, byte for byte.

The oracle is ggml's own quantizer (ggml_quantize_chunk, no importance matrix)
and dequantizer, built at test time from llama-cpp-python's source distribution
by tests/oracle/build_ggml_oracle.sh (cached under the build directory). For
every type and every case (normal, Laplace with outliers, all-zero and constant
blocks, exact ties, subnormals, tiny values, values near and beyond the float16
limit, rows of 256 to 16,384 elements) qkern's bytes must equal ggml's, from
host memory and from device buffers, and qkern's dequantization of ggml's bytes
must equal ggml's bit for bit.

    test_ggml_oracle.py --lib build/libqkern.so --build-dir build --backend cpu|opencl|cuda [--quick]

Exit status 77 (skipped) when the backend has no device, or when the oracle
cannot be built and QKERN_TEST_OFFLINE=1 is set (else that is a failure).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qkern_ctypes import QK_ERR_NO_DEVICE, QK_ERR_NONFINITE, QK_ERR_UNSUPPORTED, QK_OK, Qkern  # noqa: E402

TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_K": 10, "q3_K": 11,
         "q4_K": 12, "q5_K": 13, "q6_K": 14, "bf16": 30}


def cases(quick):
    """(name, float32 array, row length): every array a whole number of 256-blocks."""
    rng = np.random.default_rng(16)
    blocks = 16 if quick else 96
    n = 256 * blocks
    out = []
    out.append(("normal", rng.standard_normal(n).astype(np.float32), 4096 if n % 4096 == 0 else 256))
    lap = rng.laplace(0.0, 0.02, n).astype(np.float32)
    idx = rng.choice(n, 24, replace=False)
    lap[idx] = rng.uniform(-4, 4, 24).astype(np.float32)
    out.append(("laplace+outliers", lap, 512))
    mixed = rng.standard_normal(n).astype(np.float32)
    mixed[0:256] = 0.0                      # an all-zero super-block
    mixed[256:288] = 0.0                    # an all-zero 32-block inside a super-block
    mixed[512:768] = 0.75                   # constant, positive
    mixed[768:1024] = -3.0                  # constant, negative
    mixed[1024:1056] = -0.0                 # negative zeros
    mixed[1280:1536] = np.float32(1e-3) * np.where(np.arange(256) % 2 == 0, 1, -1)
    out.append(("zeros+constants", mixed, 256))
    # Exact ties: small integers times a power of two make x * (1/d) land on .5
    ties = (rng.integers(-16, 17, n) * 0.5).astype(np.float32)
    ties[::32] = 8.0  # the block maximum fixed, so scales are exact
    out.append(("ties", ties, 1024))
    # the largest magnitude both signed ways in most blocks: which comes first decides Q4_0/Q5_0's sign
    out.append(("ties-both-signs", rng.integers(-2, 3, n).astype(np.float32), 256))
    # min (max) of a block is a zero: the sign of the first zero, as ggml's loop keeps it
    nonneg = np.abs(rng.standard_normal(n)).astype(np.float32)
    zi = rng.choice(n, n // 8, replace=False)
    nonneg[zi] = np.where(rng.integers(0, 2, zi.size) == 0, np.float32(0.0), np.float32(-0.0))
    out.append(("nonneg+signed-zeros", nonneg, 256))
    out.append(("nonpos+signed-zeros", -nonneg, 256))
    ties2 = (rng.integers(-64, 65, n) * 0.25).astype(np.float32)
    out.append(("ties-quarter", ties2, 256))
    out.append(("subnormal", (rng.standard_normal(n) * 1e-39).astype(np.float32), 256))
    sub_mix = rng.standard_normal(n).astype(np.float32) * np.float32(1e-20)
    sub_mix[::7] = np.float32(1e-41)
    out.append(("tiny+subnormal", sub_mix, 256))
    out.append(("tiny", (rng.standard_normal(n) * 1e-30).astype(np.float32), 256))
    out.append(("near-f16-max", rng.uniform(-65504, 65504, n).astype(np.float32), 256))
    out.append(("beyond-f16", (rng.standard_normal(n) * 1e6).astype(np.float32), 256))
    out.append(("huge", (rng.standard_normal(n) * 1e30).astype(np.float32), 256))
    big = rng.standard_normal(n).astype(np.float32)
    big[::97] = np.float32(3e38)
    out.append(("float32-max-outliers", big, 256))
    if not quick:
        out.append(("long-rows", rng.standard_normal(16384 * 4).astype(np.float32), 16384))
    return out


class Oracle:
    def __init__(self, driver, tmp):
        self.driver, self.tmp = driver, tmp

    def quantize(self, x, gtype, per_row):
        src, dst = os.path.join(self.tmp, "x.f32"), os.path.join(self.tmp, "y.bin")
        x.tofile(src)
        subprocess.run([self.driver, "quantize", str(gtype), str(per_row), src, dst], check=True)
        return np.fromfile(dst, dtype=np.uint8)

    def dequantize(self, blocks, gtype, n):
        src, dst = os.path.join(self.tmp, "y.bin"), os.path.join(self.tmp, "x.f32")
        blocks.tofile(src)
        subprocess.run([self.driver, "dequantize", str(gtype), str(n), src, dst], check=True)
        return np.fromfile(dst, dtype=np.float32)


def describe_mismatch(name, want, got, x, bpb, epb):
    bad = np.nonzero(want != got)[0]
    b = int(bad[0]) // bpb
    return ("%s: %d of %d bytes differ; first in block %d (bytes %d..%d)\n  ggml:  %s\n  qkern: %s\n  input: %s"
            % (name, bad.size, want.size, b, b * bpb, (b + 1) * bpb - 1, want[b * bpb:(b + 1) * bpb].tolist(),
               got[b * bpb:(b + 1) * bpb].tolist(), x[b * epb:(b + 1) * epb].tolist()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()

    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run(["bash", os.path.join(here, "oracle", "build_ggml_oracle.sh"), args.build_dir],
                       stdout=subprocess.PIPE, text=True)
    if r.returncode == 77:
        print("SKIPPED: the ggml oracle is not available offline")
        return 77
    if r.returncode != 0:
        print("FAILED: the ggml oracle could not be built")
        return 1
    driver = r.stdout.strip().splitlines()[-1]

    qk = Qkern(args.lib)
    st, ctx, msg = qk.context_create(args.backend)
    if st in (QK_ERR_NO_DEVICE, QK_ERR_UNSUPPORTED):
        print("SKIPPED: backend %s not available: %s" % (args.backend, msg))
        return 77
    if st != QK_OK:
        print("FAILED: context: %s" % msg)
        return 1
    failures = 0
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        oracle = Oracle(driver, tmp)
        for gname, gtype in TYPES.items():
            info = subprocess.run([driver, "info", str(gtype)], check=True, stdout=subprocess.PIPE, text=True)
            epb, bpb = (int(v) for v in info.stdout.split())
            for cname, x, per_row in cases(args.quick):
                want = oracle.quantize(x, gtype, per_row)
                for device in (False, True):
                    got = qk.ggml_quantize(ctx, x, gtype, device=device)
                    checked += 1
                    where = "%s %s %s" % (gname, cname, "device" if device else "host")
                    if not np.array_equal(want, got):
                        failures += 1
                        print("MISMATCH " + describe_mismatch(where, want, got, x, bpb, epb))
                # Dequantization of ggml's own bytes: bit for bit.
                ref = oracle.dequantize(want, gtype, x.size)
                back = qk.ggml_dequantize(ctx, want, gtype, x.size, device=(cname == "normal"))
                if not np.array_equal(ref.view(np.uint32), back.view(np.uint32)):
                    failures += 1
                    bad = np.nonzero(ref.view(np.uint32) != back.view(np.uint32))[0]
                    print("MISMATCH dequantize %s %s: %d values differ, first at %d: ggml %r qkern %r"
                          % (gname, cname, bad.size, bad[0], ref[bad[0]], back[bad[0]]))
            print("%-5s %s: %d cases" % (gname, "ok" if failures == 0 else "...", len(cases(args.quick))))
        # Non-finite input is refused for the block types, nothing written.
        x = np.ones(256, dtype=np.float32)
        x[77] = np.nan
        st, out = qk.ggml_quantize_st(ctx, x, TYPES["q4_K"])
        if st != QK_ERR_NONFINITE or out.any():
            failures += 1
            print("MISMATCH: NaN input gave status %d" % st)
    qk.context_destroy(ctx)
    if failures:
        print("FAILED: %d of %d comparisons differ from ggml (%s backend)" % (failures, checked, args.backend))
        return 1
    print("PASSED: %d comparisons byte-identical with ggml (%s backend)" % (checked, args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
