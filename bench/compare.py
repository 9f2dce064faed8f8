#!/usr/bin/python3
"""qkern beside numpy (and PyTorch where installed), measured in the same run.

Runs `qkern bench --json` on every available backend (one run per backend, so a
failing backend costs only its own rows and makes the exit status 1) for element
counts 2^min-log2 ... 2^max-log2, and the same work in numpy and torch on the same
synthetic tensor, timed the same way (rounds, median), then writes

    OUT_DIR/<machine>.csv        one row per (backend or peer, op, size)
    OUT_DIR/<machine>.md         the table at the largest size, machine, date, command
    OUT_DIR/<machine>_gbps.png   GB/s per op at the largest size
    OUT_DIR/<machine>_time.png   seconds vs element count, log-log, per op

<machine> is a slug of the CPU model and core count, plus the GPU name when a GPU
backend answers (never the host name), e.g. "cpu-amd-epyc-2core".

Run with Debian's interpreter (numpy 1.24; matplotlib and torch from apt):

    /usr/bin/python3 bench/compare.py --qkern build/qkern

Peers work in host memory: their figures include allocating their outputs and
temporaries (as numpy code does), and there is no transfer to exclude. The numpy
grid search (a Python loop over 101 candidates) is measured up to
2^--numpy-grid-max-log2 elements and extrapolated linearly above that; such rows
carry note "extrapolated".
"""

import argparse
import csv
import datetime
import io
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

QKERN_OPS = ["minmax", "percentile", "quantize", "dequantize", "mse", "gridsearch", "quantize_e2e", "minmax_e2e"]
# Nominal traffic (bytes read + written) per element, as `qkern bench` counts it.
BYTES_PER_ELEMENT = {"copy": 8, "minmax": 4, "percentile": 4, "quantize": 5, "dequantize": 5, "mse": 4,
                     "gridsearch": 4, "quantize_e2e": 5, "minmax_e2e": 4}
PLOT_OPS = ["copy"] + QKERN_OPS
PEERS = ("numpy", "torch")  # the backend column of peers; qkern's rows carry its backend's name
CSV_COLUMNS = ["device", "backend", "op", "elements", "seconds", "seconds_min", "gbps", "copy_gbps",
               "fraction_of_copy", "date", "host", "method", "note"]
PERCENTILE_P = 99.99
GRID = [99.0 + 0.01 * i for i in range(101)]  # 99:100:0.01, as qkern's default grid


def log(msg):
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the synthetic tensor (the same generator as host/cli/bench_data.c) ----------

M1, M2, M3 = np.uint64(0x9e3779b97f4a7c15), np.uint64(0xbf58476d1ce4e5b9), np.uint64(0x94d049bb133111eb)


def mix64(z):
    z = z + M1
    z = (z ^ (z >> np.uint64(30))) * M2
    z = (z ^ (z >> np.uint64(27))) * M3
    return z ^ (z >> np.uint64(31))


def uniform_open(r):
    return ((r >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


def laplace(n, seed):
    """Laplace(0, 1) plus 3 + n/2^20 outliers of |x| in [40, 80): qkern bench's tensor."""
    x = np.empty(n, np.float32)
    with np.errstate(over="ignore"):
        key = mix64(np.array([seed], np.uint64) ^ np.uint64(0x4c61706c616365))[0]
        chunk = 1 << 22
        for i0 in range(0, n, chunk):
            i = np.arange(i0, min(n, i0 + chunk), dtype=np.uint64)
            u = uniform_open(mix64(key + i))
            x[i0:i0 + len(i)] = np.where(u < 0.5, np.log(2.0 * u), -np.log(2.0 * (1.0 - u)))
        okey = mix64(np.array([seed], np.uint64) ^ np.uint64(0x6f75746c69657273))[0]
        for k in range(min(3 + n // (1 << 20), n)):
            r = mix64(np.array([okey + np.uint64(2 * k)], np.uint64))[0]
            mag = 40.0 + 40.0 * uniform_open(mix64(np.array([okey + np.uint64(2 * k + 1)], np.uint64)))[0]
            x[int(r % np.uint64(n))] = mag if int(r) & 1 else -mag
    return x


# ---- timing --------------------------------------------------------------------------

def timed_rounds(fns, warmup, reps):
    """[(median, min) seconds] of each fn: every fn once per round, `warmup` untimed
    rounds then `reps` timed ones (as `qkern bench` does)."""
    times = [[] for _ in fns]
    for r in range(warmup + reps):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[k].append(max(dt, 1e-9))
    return [(statistics.median(t), min(t)) for t in times]


class Rows:
    """The measurements, as CSV-ready dicts."""

    def __init__(self, date, host):
        self.rows = []
        self.date, self.host = date, host

    def add(self, device, backend, op, n, seconds, seconds_min, copy_gbps, method="", note="", x_minmax=None):
        nbytes = BYTES_PER_ELEMENT[op] * n
        gbps = nbytes / seconds / 1e9 if seconds else None
        frac = gbps / copy_gbps if gbps and copy_gbps else None
        self.rows.append({"device": device, "backend": backend, "op": op, "elements": n, "seconds": seconds,
                          "seconds_min": seconds_min, "gbps": gbps, "copy_gbps": copy_gbps,
                          "fraction_of_copy": frac, "date": self.date, "host": self.host, "method": method,
                          "note": note, "x_minmax": x_minmax})

    def find(self, backend, op, n, method=None):
        for r in self.rows:
            if r["backend"] == backend and r["op"] == op and r["elements"] == n and \
                    (method is None or r["method"] == method):
                return r
        return None


# ---- qkern ------------------------------------------------------------------------------

def qkern_backends(args):
    """The backends to run, and notes on those left out. Each backend gets its own
    `qkern bench` run, so one that fails costs only its own rows."""
    p = subprocess.run([args.qkern, "info", "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"compare.py: {args.qkern} info --json failed:\n{p.stderr}")
    info = json.loads(p.stdout)["backends"]
    avail = [b["name"] for b in info if b["available"]]
    notes = {f"skipping {b['name']}: {'not available' if b['compiled'] else 'not compiled'}: {b.get('reason', '')}"
             for b in info if not b["available"]}
    if args.backend == "all":
        return avail, notes
    wanted = args.backend.split(",")
    for b in wanted:
        if b not in avail:
            sys.exit(f"compare.py: backend {b!r} is not available here (available: {', '.join(avail)})")
    return wanted, set()


def run_qkern(args, backend, n, ops, reps, warmup):
    """The run's JSON object, or None after noting the failure."""
    cmd = [args.qkern, "bench", "--backend", backend, "--json", "--elements", str(n), "--ops", ",".join(ops),
           "--reps", str(reps), "--warmup", str(warmup), "--seed", str(args.seed)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        errors = [line for line in p.stderr.splitlines() if line.startswith("qkern")] or p.stderr.splitlines()[-1:]
        log(f"FAILED (exit {p.returncode}): {shlex.join(cmd)}: {' '.join(errors)}")
        args.failures.append(f"`qkern bench --backend {backend} --elements {n} --ops {','.join(ops)}` failed "
                             f"(exit {p.returncode}): {' '.join(errors)}")
        return None
    return json.loads(p.stdout)


def qkern_sizes(args, rows, n, backends):
    cheap = [op for op in QKERN_OPS if op != "gridsearch"]
    grid_reps, grid_warmup = (args.reps, args.warmup) if n <= 1 << 20 else (args.grid_reps, args.grid_warmup)
    for backend in backends:
        for ops, reps, warmup in ((cheap, args.reps, args.warmup), (["gridsearch"], grid_reps, grid_warmup)):
            run = run_qkern(args, backend, n, ops, reps, warmup)
            if run is None:
                continue
            if rows.find(backend, "copy", n) is None:
                rows.add(run["device"], backend, "copy", n, run["copy_seconds"], run["copy_seconds_min"],
                         run["copy_gbps"], method="qk_buffer_copy")
            for r in run["results"]:
                note = f"{reps} run(s) after {warmup} warm-up(s)" if r["op"] == "gridsearch" else ""
                rows.add(run["device"], backend, r["op"], n, r["seconds"], r["seconds_min"], run["copy_gbps"],
                         note=note, x_minmax=r.get("x_minmax"))


# ---- numpy -----------------------------------------------------------------------------

def asym_params(lo, hi):
    scale = np.float32((float(hi) - float(lo)) / 255.0)
    zp = -float(np.rint(float(lo) / float(scale)))
    return scale, zp


def np_quant(x, scale, zp):
    return np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)


def np_dequant(q, scale, zp):
    return (q.astype(np.float32) - zp) * scale


def np_grid(x):
    best = None
    for p in GRID:
        lo, hi = np.percentile(x, [100.0 - p, p])
        scale, zp = asym_params(lo, hi)
        mse = float(np.mean((x - np_dequant(np_quant(x, scale, zp), scale, zp)) ** 2))
        if best is None or mse < best[0]:
            best = (mse, p)
    return best


def add_measured(rows, device, backend, n, jobs, warmup, reps):
    """Time jobs [(op, method, fn)] in rounds, the copy first; add the rows. Returns {method: seconds}."""
    res = timed_rounds([fn for _, _, fn in jobs], warmup, reps)
    copy_gbps = 8 * n / res[0][0] / 1e9
    for (op, method, _), (s, smin) in zip(jobs, res):
        rows.add(device, backend, op, n, s, smin, copy_gbps, method=method)
    return copy_gbps, {method: s for (_, method, _), (s, _) in zip(jobs, res)}


def numpy_size(args, rows, x, device, grid_measured):
    n = len(x)
    dst = np.empty_like(x)
    dst[:] = 0  # first touch before timing, as qkern's buffers
    scale, zp = asym_params(x.min(), x.max())
    q = np_quant(x, scale, zp)
    jobs = [
        ("copy", "np.copyto", lambda: np.copyto(dst, x)),
        ("minmax", "x.min(), x.max()", lambda: (x.min(), x.max())),
        ("percentile", "np.percentile(x, 99.99)", lambda: np.percentile(x, PERCENTILE_P)),
        ("quantize", "clip(rint(x/scale)+zp).astype(uint8)", lambda: np_quant(x, scale, zp)),
        ("dequantize", "(q.astype(float32)-zp)*scale", lambda: np_dequant(q, scale, zp)),
        ("mse", "mean((x-dequant(quant(x)))**2)",
         lambda: np.mean((x - np_dequant(np_quant(x, scale, zp), scale, zp)) ** 2)),
    ]
    copy_gbps, sec = add_measured(rows, device, "numpy", n, jobs, args.warmup, args.reps)
    mm_s = sec["x.min(), x.max()"]
    method = "loop over 101 candidates: percentile pair + quantize/dequantize/mse"
    if n <= 1 << args.numpy_grid_max_log2:
        reps, warmup = (args.reps, args.warmup) if n <= 1 << 18 else (1, 0)
        s, smin = timed_rounds([lambda: np_grid(x)], warmup, reps)[0]
        grid_measured[n] = (s, smin)
        rows.add(device, "numpy", "gridsearch", n, s, smin, copy_gbps, method=method,
                 note=f"{reps} run(s) after {warmup} warm-up(s)", x_minmax=s / mm_s)
    else:
        m = max(grid_measured)
        f = n / m
        s, smin = grid_measured[m][0] * f, grid_measured[m][1] * f
        rows.add(device, "numpy", "gridsearch", n, s, smin, copy_gbps, method=method,
                 note=f"extrapolated linearly from 2^{int(math.log2(m))}", x_minmax=s / mm_s)


# ---- torch -----------------------------------------------------------------------------

def torch_size(args, rows, torch, x, device):
    from torch.ao.quantization import HistogramObserver, MinMaxObserver
    n = len(x)
    t = torch.from_numpy(x)
    gpu = args.torch_device == "cuda"
    if gpu:
        t = t.cuda()  # copied before timing: the peer works in device memory, as qkern's device rows
    dst = torch.zeros_like(t)
    lo, hi = torch.aminmax(t)
    scale, zp = asym_params(float(lo), float(hi))
    scale, zp = float(scale), int(zp)
    qt = torch.quantize_per_tensor(t, scale, zp, torch.quint8)

    def observe(cls):
        o = cls().to(t.device)  # its state beside the data (a no-op on the host)
        o(t)
        return o.calculate_qparams()

    # numpy's linear percentile from two order statistics.
    v = (n - 1) * (PERCENTILE_P / 100.0)
    i = int(math.floor(v))
    k2 = min(i + 2, n)

    def kth():
        a = torch.kthvalue(t, i + 1).values
        b = torch.kthvalue(t, k2).values
        return a + (b - a) * (v - i)

    jobs = [
        ("copy", "Tensor.copy_", lambda: dst.copy_(t)),
        ("minmax", "torch.aminmax", lambda: torch.aminmax(t)),
        ("minmax", "MinMaxObserver", lambda: observe(MinMaxObserver)),
        ("percentile", "torch.kthvalue x2", kth),
        ("quantize", "torch.quantize_per_tensor", lambda: torch.quantize_per_tensor(t, scale, zp, torch.quint8)),
        ("dequantize", "Tensor.dequantize", lambda: qt.dequantize()),
        ("mse", "mean((x-fake_quantize_per_tensor_affine(x))**2)",
         lambda: torch.mean((t - torch.fake_quantize_per_tensor_affine(t, scale, zp, 0, 255)) ** 2)),
        ("gridsearch", "HistogramObserver (2048-bin histogram, L2 range search)",
         lambda: observe(HistogramObserver)),
    ]
    if gpu:  # CUDA calls return before the work is done: each timed call ends with a synchronize
        jobs = [(op, method, (lambda f=fn: (f(), torch.cuda.synchronize())[0])) for op, method, fn in jobs]
    refused = None
    try:
        torch.quantile(t, PERCENTILE_P / 100.0)
        jobs.insert(3, ("percentile", "torch.quantile",
                        (lambda: (torch.quantile(t, PERCENTILE_P / 100.0), torch.cuda.synchronize())[0]) if gpu
                        else (lambda: torch.quantile(t, PERCENTILE_P / 100.0))))
    except RuntimeError as e:  # "quantile() input tensor is too large" above 2^24 elements
        refused = "refused: " + str(e).splitlines()[0]
    copy_gbps, sec = add_measured(rows, device, "torch", n, jobs, args.warmup, args.reps)
    if refused:
        rows.add(device, "torch", "percentile", n, None, None, copy_gbps, method="torch.quantile", note=refused)
    r = rows.find("torch", "gridsearch", n)
    r["x_minmax"] = r["seconds"] / sec["torch.aminmax"]


# ---- machine ---------------------------------------------------------------------------

def slug(s):
    s = re.sub(r"\((r|tm)\)", "", s.lower())
    s = re.sub(r"\b(\d+-core processor|processor|cpu @.*|with radeon.*)\b", "", s)
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names(qkern):
    p = subprocess.run([qkern, "info", "--json"], capture_output=True, text=True)
    names = []
    if p.returncode == 0:
        for b in json.loads(p.stdout)["backends"]:
            if b["available"] and b["name"] != "cpu":
                names += [d["name"] for d in b["devices"] if d["type"] == "gpu"]
    return sorted(set(names))


def machine_slug(qkern):
    name = f"cpu-{slug(cpu_model())}-{os.cpu_count()}core"
    for g in gpu_names(qkern):
        name += "_gpu-" + slug(g)
    return name


# ---- output ----------------------------------------------------------------------------

def fmt_num(v):
    return "" if v is None else repr(float(v)) if isinstance(v, float) else str(v)


def atomic_write(path, data, binary=False):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide the results from others
        with os.fdopen(fd, "wb" if binary else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_csv(path, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows.rows:
        w.writerow([fmt_num(r[c]) if c not in ("device", "backend", "op", "date", "host", "method", "note")
                    else r[c] for c in CSV_COLUMNS])
    atomic_write(path, buf.getvalue())


def read_rows(path):
    """Rows back from a CSV written by write_csv()."""
    rows = Rows("", "")
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for key in ("seconds", "seconds_min", "gbps", "copy_gbps", "fraction_of_copy"):
                r[key] = float(r[key]) if r[key] else None
            r["elements"] = int(r["elements"])
            r["x_minmax"] = None
            rows.rows.append(r)
    return rows


def g3(v):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def label(b):
    return b if b in PEERS else f"qkern {b}"


def series(rows):
    """Backends and peers in a stable order: qkern's first, then numpy, then torch."""
    names = []
    for r in rows.rows:
        if r["backend"] not in names:
            names.append(r["backend"])
    return sorted(names, key=lambda b: (0 if b not in PEERS else 1 + PEERS.index(b), b))


PRIMARY = {"torch": {"minmax": "torch.aminmax", "percentile": "torch.quantile"}}


def primary(rows, backend, op, n):
    """The row a table shows for a peer's op (peers have no _e2e ops: in host memory they already are)."""
    base = op.replace("_e2e", "") if not backend not in PEERS else op
    m = PRIMARY.get(backend, {}).get(base)
    r = rows.find(backend, base, n, m)
    if r is not None and r["seconds"] is None and backend == "torch" and base == "percentile":
        return r, rows.find(backend, base, n, "torch.kthvalue x2")
    return r, None


def markdown(rows, n, info):
    names = series(rows)
    qk = [b for b in names if b not in PEERS]
    peers = [b for b in names if not b not in PEERS]
    out = [f"# qkern bench: {info['machine']}", ""]
    out += [f"- machine: {info['cpu']}, {os.cpu_count()} cores, {info['mem']}; {info['os']}",
            f"- date: {info['date']}",
            f"- command: `{info['command']}`",
            f"- qkern backends: {info['backends']}"]
    for note in sorted(info["skipped"]):
        out.append(f"  - {note}")
    for note in info["failures"]:
        out.append(f"  - FAILED: {note}")
    out += [f"- 1-minute load average: {info['load']} ({os.cpu_count()} cores; other jobs may share the machine)",
            f"- peers: {info['peers']}",
            f"- size: 2^{int(math.log2(n))} = {n} float32 elements ({4 * n / 2**20:.0f} MiB); sizes "
            f"2^{info['min_log2']}..2^{info['max_log2']} in the CSV",
            f"- timing: median of {info['reps']} runs after {info['warmup']} warm-up(s); qkern gridsearch above "
            f"2^20: {info['grid_reps']} run(s) after {info['grid_warmup']} warm-up(s); numpy gridsearch "
            f"measured up to 2^{info['np_grid_max']} (1 run above 2^18) and extrapolated linearly above", ""]
    out += ["GB/s = nominal bytes (read + written) / median seconds; in brackets the fraction of that "
            "backend's own copy bandwidth (copy row) measured in the same run. "
            "Ratio = qkern GB/s / peer GB/s (above 1: qkern is faster). "
            "Peers work in host memory, so their figures for the `_e2e` rows are those of the plain op.", ""]
    head = ["op"] + [f"{label(b)} GB/s" for b in names]
    for b in qk:
        for p in peers:
            head.append(f"{b} ÷ {p}")
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    notes = []
    for op in PLOT_OPS:
        cells = [op]
        g = {}
        for b in names:
            r, alt = primary(rows, b, op, n)
            if r is None:
                cells.append("—")
                g[b] = None
                continue
            if r["seconds"] is None:
                shown = alt
                cell = "refused"
                if alt is not None:
                    cell += f"; {alt['method']}: {g3(alt['gbps'])} ({alt['fraction_of_copy']:.3f})"
                    notes.append(f"{b} {op}: {r['method']} {r['note']}; shown: {alt['method']}")
                cells.append(cell)
                g[b] = shown["gbps"] if shown else None
                continue
            mark = "*" if "extrapolated" in r["note"] else ""
            cells.append(f"{g3(r['gbps'])}{mark} ({r['fraction_of_copy']:.3f})")
            g[b] = r["gbps"]
        for b in qk:
            for p in peers:
                cells.append(f"{g[b] / g[p]:.3g}" if g.get(b) and g.get(p) else "—")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Seconds (median) at this size, and how each was done:")
    out.append("")
    out.append("| op | " + " | ".join(label(b) for b in names) + " |")
    out.append("|" + "---|" * (len(names) + 1))
    for op in PLOT_OPS:
        cells = [op]
        for b in names:
            r, alt = primary(rows, b, op, n)
            use = alt if (r is not None and r["seconds"] is None) else r
            if use is None:
                cells.append("—")
                continue
            c = f"{use['seconds']:.4g}"
            if "extrapolated" in use["note"]:
                c += "*"
            if use.get("x_minmax"):
                c += f" (= {use['x_minmax']:.0f} × minmax)"
            if use["method"] and not b not in PEERS:
                c += f" `{use['method']}`"
            cells.append(c)
        out.append("| " + " | ".join(cells) + " |")
    shown = set()
    for b in peers:
        for op in PLOT_OPS:
            r, alt = primary(rows, b, op, n)
            shown.update(id(v) for v in (r, alt) if v is not None)
    extra = [r for r in rows.rows if r["elements"] == n and r["backend"] in peers and id(r) not in shown]
    if extra:
        out += ["", "Other peer idioms at this size:", "", "| peer | op | method | seconds | GB/s |",
                "|---|---|---|---|---|"]
        for r in extra:
            s = "refused" if r["seconds"] is None else f"{r['seconds']:.4g}"
            out.append(f"| {r['backend']} | {r['op']} | `{r['method']}` | {s} | {g3(r['gbps'])} |")
    out.append("")
    if any("extrapolated" in r["note"] for r in rows.rows if r["elements"] == n):
        out.append("\\* extrapolated linearly from the largest size measured (see the CSV's note column).")
    for note in notes:
        out.append(f"- {note}")
    refused = sorted({r["elements"] for r in rows.rows if r["seconds"] is None})
    if refused:
        out.append(f"- torch.quantile refused at {', '.join(f'2^{int(math.log2(e))}' for e in refused)} "
                   f"elements (\"{next(r['note'] for r in rows.rows if r['seconds'] is None)[9:]}\").")
    out.append("")
    return "\n".join(out)


README_BEGIN = "<!-- compare.py results: begin (generated, do not edit) -->"
README_END = "<!-- compare.py results: end -->"


def include_in_readme(path, md):
    """Put md between README_BEGIN and README_END in path, headings one level down."""
    with open(path) as f:
        text = f.read()
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        sys.exit(f"compare.py: {path} has no '{README_BEGIN}' ... '{README_END}' markers")
    body = re.sub(r"^(#+) ", r"#\1 ", md.strip(), flags=re.M)
    atomic_write(path, text[:i + len(README_BEGIN)] + "\n" + body + "\n" + text[j:])


def plots(rows, n, machine, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: skipping the plots (apt-get install python3-matplotlib)")
        return []
    names = series(rows)
    colors = {b: c for b, c in zip(names, ["tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:red",
                                          "tab:brown", "tab:gray"])}
    written = []

    # (a) GB/s per op at the largest size.
    fig, ax = plt.subplots(figsize=(13, 5))
    width = 0.8 / len(names)
    for k, b in enumerate(names):
        xs, ys, hatch = [], [], []
        for i, op in enumerate(PLOT_OPS):
            r, alt = primary(rows, b, op, n)
            use = alt if (r is not None and r["seconds"] is None) else r
            if use is None or not use["gbps"]:
                continue
            xs.append(i + (k - (len(names) - 1) / 2) * width)
            ys.append(use["gbps"])
            hatch.append("extrapolated" in use["note"] or use is alt)
        bars = ax.bar(xs, ys, width, label=label(b), color=colors[b])
        for bar, h in zip(bars, hatch):
            if h:
                bar.set_hatch("//")
    ax.set_xticks(range(len(PLOT_OPS)))
    ax.set_xticklabels(PLOT_OPS, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("GB/s (nominal bytes / median s)")
    ax.set_title(f"{machine}: 2^{int(math.log2(n))} float32 elements (hatched: extrapolated or substitute idiom)")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = os.path.join(out_dir, f"{machine}_gbps.png")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue(), binary=True)
    written.append(path)

    # (b) time vs element count per op, log-log.
    cols = 3
    rws = math.ceil(len(PLOT_OPS) / cols)
    fig, axes = plt.subplots(rws, cols, figsize=(14, 4 * rws), squeeze=False)
    sizes = sorted({r["elements"] for r in rows.rows})
    for ax, op in zip(axes.flat, PLOT_OPS):
        for b in names:
            pts = []
            for m in sizes:
                r, alt = primary(rows, b, op, m)
                use = alt if (r is not None and r["seconds"] is None) else r
                if use is not None and use["seconds"]:
                    pts.append((m, use["seconds"], "extrapolated" in use["note"]))
            if not pts:
                continue
            meas = [(m, s) for m, s, e in pts if not e]
            extr = [(m, s) for m, s, e in pts if e]
            if meas:
                ax.plot(*zip(*meas), "o-", ms=3, color=colors[b], label=label(b))
            if extr:
                link = ([meas[-1]] if meas else []) + extr
                ax.plot(*zip(*link), "o--", ms=3, color=colors[b], alpha=0.6,
                        label=f"{label(b)} (extrapolated)")
        # A guide with slope 1: linear growth is parallel to it.
        ax.plot([sizes[0], sizes[-1]], [1e-9 * sizes[0], 1e-9 * sizes[-1]], ":", color="black", lw=0.8,
                label="∝ n (1 ns/element)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(op)
        ax.set_xlabel("elements")
        ax.set_ylabel("median seconds")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(PLOT_OPS):]:
        ax.axis("off")
    fig.suptitle(f"{machine}: time vs element count")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{machine}_time.png")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue(), binary=True)
    written.append(path)
    return written


# ---- main ------------------------------------------------------------------------------

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--qkern", help="path to the qkern binary (required)")
    ap.add_argument("--min-log2", type=int, default=16, help="smallest size, 2^K elements (default 16)")
    ap.add_argument("--max-log2", type=int, default=26, help="largest size, 2^K elements (default 26)")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per op (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before them (default 1)")
    ap.add_argument("--grid-reps", type=int, default=1,
                    help="timed runs of qkern's gridsearch above 2^20 elements (default 1)")
    ap.add_argument("--grid-warmup", type=int, default=1,
                    help="untimed runs of qkern's gridsearch above 2^20 elements (default 1)")
    ap.add_argument("--numpy-grid-max-log2", type=int, default=22,
                    help="largest size the numpy grid loop is measured at; extrapolated above (default 22)")
    ap.add_argument("--backend", default="all",
                    help="qkern backends: all (every available one, default) or a comma list, e.g. cuda")
    ap.add_argument("--seed", type=int, default=1, help="seed of the synthetic tensor (default 1)")
    ap.add_argument("--out-dir", default=os.path.join(here, "results"), help="default bench/results")
    ap.add_argument("--machine", help="name of the outputs (default: a slug of the CPU/GPU model)")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    ap.add_argument("--torch-device", choices=("cpu", "cuda"), default="cpu",
                    help="where PyTorch works: cpu (host memory, default) or cuda (the first GPU, device memory)")
    ap.add_argument("--no-plots", action="store_true", help="write no PNG")
    ap.add_argument("--replot", metavar="CSV",
                    help="measure nothing: redraw the plots from a CSV this script wrote (into --out-dir, "
                         "named after --machine or the CSV)")
    ap.add_argument("--readme", help="also copy the markdown table into this file, between the markers "
                                     "(bench/README.md has them)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 2^16..2^18, 2 runs after 1 warm-up (overrides those options)")
    args = ap.parse_args()
    if args.quick:
        args.min_log2, args.max_log2, args.reps, args.warmup = 16, 18, 2, 1
        args.grid_reps, args.grid_warmup, args.numpy_grid_max_log2 = 2, 1, 17
    if not (0 <= args.min_log2 <= args.max_log2 <= 40) or args.reps < 1 or args.warmup < 0 \
            or args.grid_reps < 1 or args.grid_warmup < 0:
        ap.error("need 0 <= --min-log2 <= --max-log2 <= 40, --reps/--grid-reps >= 1, --warmup/--grid-warmup >= 0")
    args.numpy_grid_max_log2 = max(min(args.numpy_grid_max_log2, args.max_log2), args.min_log2)
    if args.replot:
        rows = read_rows(args.replot)
        os.makedirs(args.out_dir, exist_ok=True)
        machine = args.machine or os.path.splitext(os.path.basename(args.replot))[0]
        for p in plots(rows, max(r["elements"] for r in rows.rows), machine, args.out_dir):
            log(f"wrote {p}")
        return
    if not args.qkern:
        ap.error("--qkern is required (unless --replot)")
    args.qkern = os.path.abspath(args.qkern)
    if not os.access(args.qkern, os.X_OK):
        sys.exit(f"compare.py: {args.qkern} is not an executable")
    os.makedirs(args.out_dir, exist_ok=True)

    torch = None
    if not args.no_torch:
        try:
            import torch as torch_mod
            torch = torch_mod
        except ImportError:
            log("PyTorch is not installed: numpy is the only peer (apt-get install python3-torch)")
    torch_where = None
    if torch is not None and args.torch_device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("compare.py: --torch-device cuda: PyTorch sees no CUDA device")
        torch_where = "cuda: " + torch.cuda.get_device_name(0)

    started = time.time()
    load_start = os.getloadavg()[0]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = Rows(date, platform.node())
    machine = args.machine or machine_slug(args.qkern)
    cpu = cpu_model()
    backends, skipped = qkern_backends(args)
    args.failures = []
    grid_measured = {}
    for k in range(args.min_log2, args.max_log2 + 1):
        n = 1 << k
        t0 = time.time()
        qkern_sizes(args, rows, n, backends)
        t1 = time.time()
        x = laplace(n, args.seed)
        numpy_size(args, rows, x, cpu, grid_measured)
        t2 = time.time()
        if torch is not None:
            torch_size(args, rows, torch, x, cpu if args.torch_device == "cpu" else torch_where)
        t3 = time.time()
        del x
        log(f"2^{k}: qkern {t1 - t0:.1f} s, numpy {t2 - t1:.1f} s" +
            (f", torch {t3 - t2:.1f} s" if torch is not None else ""))

    n = 1 << args.max_log2
    qk_backends = sorted({r["backend"] for r in rows.rows if r["backend"] not in PEERS})
    devices = {r["backend"]: r["device"] for r in rows.rows}
    try:
        mem = f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB RAM"
    except (ValueError, OSError):
        mem = "RAM unknown"
    peers = [f"numpy {np.__version__}"]
    if torch is not None:
        peers.append(f"torch {torch.__version__} ({torch.get_num_threads()} thread(s))" if args.torch_device == "cpu"
                     else f"torch {torch.__version__} on {torch_where}")
    else:
        peers.append("torch not installed")
    cmd = [sys.executable] + sys.argv
    info = {"machine": machine, "cpu": cpu, "mem": mem, "os": f"{platform.system()} {platform.release()}",
            "date": date, "command": shlex.join(cmd),
            "backends": ", ".join(f"{b} ({devices[b]})" for b in qk_backends),
            "skipped": skipped, "failures": args.failures, "peers": ", ".join(peers),
            "min_log2": args.min_log2, "max_log2": args.max_log2,
            "load": f"{load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
            "reps": args.reps, "warmup": args.warmup, "grid_reps": args.grid_reps,
            "grid_warmup": args.grid_warmup, "np_grid_max": args.numpy_grid_max_log2}

    csv_path = os.path.join(args.out_dir, f"{machine}.csv")
    md_path = os.path.join(args.out_dir, f"{machine}.md")
    write_csv(csv_path, rows)
    md = markdown(rows, n, info)
    md += f"\nTotal run time of this command: {time.time() - started:.0f} s.\n"
    atomic_write(md_path, md)
    written = [csv_path, md_path]
    if args.readme:
        include_in_readme(args.readme, md)
        written.append(args.readme)
    if not args.no_plots:
        written += plots(rows, n, machine, args.out_dir)
    print(md)
    for p in written:
        log(f"wrote {p}")
    if args.failures:
        log(f"{len(args.failures)} qkern bench run(s) failed; their rows are missing (see the notes above)")
        sys.exit(1)


if __name__ == "__main__":
    main()
