#!/usr/bin/env python3
"""qkern's ggml block quantization against ggml's own quantizer, in the same run.

For each type (Q8_0, Q4_0, Q4_K by default) one large float32 buffer
(Laplace(0, 0.02) weights, rows of 4096) is quantized by
  - ggml: ggml_quantize_chunk, the rows split over THREADS threads as
    llama-quantize does (the oracle driver of tests/oracle, built from
    llama-cpp-python's source distribution with GGML_NATIVE=OFF);
  - qkern: qk_ggml_quantize on each available backend (host tensors: the
    library's whole path, finiteness check included);
and the same bytes are read once (a plain sum over them, THREADS threads) as the
memory-bound yardstick. Every figure is the best of REPEATS passes over memory
already touched (no first-touch page faults); qkern's bytes are checked equal to
ggml's before anything is timed. Ratios are what to read: this machine is shared.

    /usr/bin/python3 bench/ggml_compare.py --lib build/libqkern.so --build-dir build [--elements N]

writes bench/results/ggml_<machine>.csv and .md and prints the table.
"""
import argparse
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
from qkern_ctypes import QK_OK, Qkern  # noqa: E402

TYPES = {"q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13,
         "q6_K": 14}


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
    ap.add_argument("--types", default="q8_0,q4_0,q4_K")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="opencl,cpu")
    ap.add_argument("--out-dir", default=os.path.join(here, "results"))
    args = ap.parse_args()
    n = args.elements // 4096 * 4096
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
    out = subprocess.run([driver, "read", xf, str(args.repeats), str(args.threads)], check=True,
                         stdout=subprocess.PIPE, text=True)
    t_read = float(out.stdout.split()[0])
    qk = Qkern(args.lib)
    ctxs = {}
    for b in args.backends.split(","):
        st, ctx, msg = qk.context_create(b)
        if st == QK_OK:
            ctxs[b] = ctx
        else:
            print("backend %s not available: %s" % (b, msg))
    rows = []
    for name in args.types.split(","):
        gtype = TYPES[name]
        yf = os.path.join(work, "y.bin")
        subprocess.run([driver, "quantize", str(gtype), "4096", xf, yf], check=True)
        want = np.fromfile(yf, dtype=np.uint8)
        out = subprocess.run([driver, "bench", str(gtype), "4096", xf, str(args.repeats), str(args.threads)],
                             check=True, stdout=subprocess.PIPE, text=True)
        t_ggml = float(out.stdout.strip())
        for b, ctx in ctxs.items():
            got = qk.ggml_quantize(ctx, x, gtype)
            if not np.array_equal(got, want):
                print("MISMATCH: %s on %s differs from ggml; not timed" % (name, b))
                return 1
            t_qk = best(args.repeats, lambda: qk.ggml_quantize(ctx, x, gtype))
            rows.append({"type": name, "backend": b, "elements": n, "input_mib": n * 4 / 2 ** 20,
                         "ggml_threads": args.threads, "ggml_s": t_ggml, "qkern_s": t_qk, "read_s": t_read,
                         "speedup_vs_ggml": t_ggml / t_qk, "qkern_over_read": t_qk / t_read,
                         "ggml_over_read": t_ggml / t_read})
            print("%-5s %-7s ggml %.4f s  qkern %.4f s  read %.4f s  qkern/ggml speed %.2fx  qkern/read %.1fx"
                  % (name, b, t_ggml, t_qk, t_read, t_ggml / t_qk, t_qk / t_read))
    for ctx in ctxs.values():
        qk.context_destroy(ctx)
    os.makedirs(args.out_dir, exist_ok=True)
    base = os.path.join(args.out_dir, "ggml_" + machine)
    fields = list(rows[0].keys()) + ["machine", "cpu", "date"]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = []
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=fields)
    wr.writeheader()
    for row in rows:
        wr.writerow(dict(row, machine=machine, cpu=cpu_model(), date=date))
    atomic_write(base + ".csv", buf.getvalue())
    lines.append("# qkern vs ggml: quantizing to ggml block formats, %s" % machine)
    lines.append("")
    lines.append("- machine: %s, %d cores, no GPU (OpenCL = PoCL on the same CPU); %s" % (cpu_model(), os.cpu_count(),
                                                                                         date))
    lines.append("- %d float32 elements (%.0f MiB), rows of 4096; ggml on %d threads; best of %d; "
                 "memory already touched" % (n, n * 4 / 2 ** 20, args.threads, args.repeats))
    lines.append("- command: `/usr/bin/python3 bench/ggml_compare.py --lib build/libqkern.so --build-dir build`")
    lines.append("")
    lines.append("| type | qkern backend | ggml s | qkern s | plain read s | qkern speed vs ggml | qkern time / read |")
    lines.append("|---|---|---|---|---|---|---|")
    for row in rows:
        lines.append("| %s | %s | %.4f | %.4f | %.4f | %.2fx | %.1fx |" % (
            row["type"], row["backend"], row["ggml_s"], row["qkern_s"], row["read_s"], row["speedup_vs_ggml"],
            row["qkern_over_read"]))
    atomic_write(base + ".md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote %s.csv and .md" % base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
