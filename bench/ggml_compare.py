#!/usr/bin/env python3
"""qkern's ggml block formats against ggml's own quantizer, in the same run.

For every type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K .. Q6_K by default), one large
float32 buffer (Laplace(0, 0.02) weights, rows of 4096) is quantized, and the
blocks dequantized again, by
  - ggml: ggml_quantize_chunk and the type traits' to_float, the rows split over
    THREADS threads as llama-quantize does (the oracle driver of tests/oracle,
    built from llama-cpp-python's source distribution with GGML_NATIVE=OFF);
  - qkern: qk_ggml_quantize / qk_ggml_dequantize on each available backend, on
    host tensors (the library's whole path, finiteness check included), into
    output buffers allocated and touched beforehand (as ggml's driver does);
and the float32 bytes are read once (a plain sum over them, THREADS threads) as
the memory-bound yardstick. Every figure is the best of REPEATS passes over
memory already touched (no first-touch page faults); qkern's bytes (and
dequantized values) are checked equal to ggml's before anything is timed.
Ratios are what to read: this machine is shared.

    /usr/bin/python3 bench/ggml_compare.py --lib build/libqkern.so --build-dir build [--elements N]
        [--types q8_0,q4_0,q4_K] [--threads 2] [--repeats 5] [--backends opencl,cpu]

writes bench/results/ggml_<machine>.csv and .md and prints the table.
"""
import argparse
import ctypes as C
import csv
import datetime
import io
import os
import subprocess
import sys
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests"))
sys.path.insert(0, here)
from compare import atomic_write, cpu_model, slug  # noqa: E402
from qkern_ctypes import QK_F32, QK_OK, QK_U8, Qkern, Tensor  # noqa: E402

TYPES = {"q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13,
         "q6_K": 14}
ROW = 4096


def best(reps, fn):
    fn()  # warm: kernels built, pages touched
    t = 1e30
    for _ in range(reps):
        a = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - a)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--elements", type=int, default=1 << 24)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", default="opencl,cpu")
    ap.add_argument("--out-dir", default=os.path.join(here, "results"))
    args = ap.parse_args()
    n = args.elements // ROW * ROW
    r = subprocess.run(["bash", os.path.join(here, "..", "tests", "oracle", "build_ggml_oracle.sh"), args.build_dir],
                       stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print("the ggml oracle is not available")
        return 1
    driver = r.stdout.strip().splitlines()[-1]
    machine = f"cpu-{slug(cpu_model())}-{os.cpu_count()}core"
    x = np.random.default_rng(2026).laplace(0.0, 0.02, n).astype(np.float32)
    work = os.path.join(os.path.abspath(args.build_dir), "bench-ggml")
    os.makedirs(work, exist_ok=True)
    xf = os.path.join(work, "x.f32")
    x.tofile(xf)

    def run_driver(*a):
        out = subprocess.run([driver] + [str(v) for v in a], check=True, stdout=subprocess.PIPE, text=True)
        return float(out.stdout.split()[0])

    t_read = run_driver("read", xf, args.repeats, args.threads)
    qk = Qkern(args.lib)
    ctxs = {}
    for b in args.backends.split(","):
        st, ctx, msg = qk.context_create(b)
        if st == QK_OK:
            ctxs[b] = ctx
        else:
            print("backend %s not available: %s" % (b, msg))
    back = np.zeros(n, dtype=np.float32)  # dequantized values, touched
    rows = []
    for name in args.types.split(","):
        gtype = TYPES[name]
        yf, xbf = os.path.join(work, "y.bin"), os.path.join(work, "x_back.f32")
        subprocess.run([driver, "quantize", str(gtype), str(ROW), xf, yf], check=True)
        want = np.fromfile(yf, dtype=np.uint8)
        subprocess.run([driver, "dequantize", str(gtype), str(n), yf, xbf], check=True)
        want_back = np.fromfile(xbf, dtype=np.float32)
        t_gq = run_driver("bench", gtype, ROW, xf, args.repeats, args.threads)
        t_gd = run_driver("benchdq", gtype, ROW, yf, args.repeats, args.threads)
        got = np.zeros(want.size, dtype=np.uint8)  # qkern's blocks, touched
        tx, ty = qk.tensor(x), Tensor(QK_U8, got.size, got.ctypes.data, None, 0)
        tw, tb = Tensor(QK_U8, want.size, want.ctypes.data, None, 0), Tensor(QK_F32, n, back.ctypes.data, None, 0)
        for b, ctx in ctxs.items():
            def quant():
                qk.check(ctx, qk.lib.qk_ggml_quantize(ctx, C.byref(tx), gtype, C.byref(ty)), "qk_ggml_quantize")

            def dequant():
                qk.check(ctx, qk.lib.qk_ggml_dequantize(ctx, C.byref(tw), gtype, C.byref(tb)), "qk_ggml_dequantize")

            got[:] = 0
            quant()
            if not np.array_equal(got, want):
                print("MISMATCH: %s on %s differs from ggml; not timed" % (name, b))
                return 1
            dequant()
            if not np.array_equal(back.view(np.uint32), want_back.view(np.uint32)):
                print("MISMATCH: %s dequantized on %s differs from ggml; not timed" % (name, b))
                return 1
            t_q = best(args.repeats, quant)
            t_d = best(args.repeats, dequant)
            rows.append({"type": name, "backend": b, "elements": n, "input_mib": n * 4 / 2 ** 20,
                         "ggml_threads": args.threads, "read_s": t_read,
                         "ggml_quant_s": t_gq, "qkern_quant_s": t_q, "quant_speedup_vs_ggml": t_gq / t_q,
                         "qkern_quant_over_read": t_q / t_read, "ggml_quant_over_read": t_gq / t_read,
                         "ggml_dequant_s": t_gd, "qkern_dequant_s": t_d, "dequant_speedup_vs_ggml": t_gd / t_d})
            print("%-5s %-7s quantize: ggml %.4f s qkern %.4f s (%.2fx ggml's speed, %.1fx read)  "
                  "dequantize: ggml %.4f s qkern %.4f s (%.2fx)  read %.4f s"
                  % (name, b, t_gq, t_q, t_gq / t_q, t_q / t_read, t_gd, t_d, t_gd / t_d, t_read), flush=True)
    for ctx in ctxs.values():
        qk.context_destroy(ctx)
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, "ggml_" + machine)
    fields = list(rows[0].keys()) + ["machine", "cpu", "date"]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=fields)
    wr.writeheader()
    for row in rows:
        wr.writerow(dict(row, machine=machine, cpu=cpu_model(), date=date))
    atomic_write(base + ".csv", buf.getvalue())
    lines = ["# qkern vs ggml: ggml block formats, %s" % machine, "",
             "- machine: %s, %d cores, no GPU (OpenCL = PoCL on the same CPU); %s" % (cpu_model(), os.cpu_count(),
                                                                                  date),
             "- %d float32 elements (%.0f MiB), rows of %d; ggml on %d threads; best of %d; memory already touched; "
             "bytes and dequantized values checked equal to ggml's first" % (n, n * 4 / 2 ** 20, ROW, args.threads,
                                                                              args.repeats),
             "- plain read of the float32 bytes (%d threads): %.4f s" % (args.threads, t_read),
             "- command: `/usr/bin/python3 bench/ggml_compare.py --lib build/libqkern.so --build-dir build`", "",
             "| type | qkern backend | quantize: ggml s | qkern s | qkern speed vs ggml | qkern time / read "
             "| dequantize: ggml s | qkern s | qkern speed vs ggml |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append("| %s | %s | %.4f | %.4f | %.2fx | %.1fx | %.4f | %.4f | %.2fx |" % (
            row["type"], row["backend"], row["ggml_quant_s"], row["qkern_quant_s"], row["quant_speedup_vs_ggml"],
            row["qkern_quant_over_read"], row["ggml_dequant_s"], row["qkern_dequant_s"],
            row["dequant_speedup_vs_ggml"]))
    atomic_write(base + ".md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote %s.csv and .md" % base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
