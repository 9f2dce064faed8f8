#!/usr/bin/python3
"""Test of the benchmark harness: `qkern bench` and bench/compare.py.

Runs `qkern bench` at small sizes and checks its exit codes, JSON schema, the
arithmetic between its fields (gbps = bytes / seconds / 1e9, fraction_of_copy =
gbps / copy_gbps), the CSV it appends, and usage errors; then runs compare.py in
its quick mode into a temporary directory. Timing values are never compared with
thresholds: only their consistency is checked. Run as:

    /usr/bin/python3 tests/test_bench.py --qkern build/qkern

Prints one line per failure and a final "N passed, M failed"; exits non-zero on
any failure.
"""

import argparse
import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
COMPARE = os.path.join(HERE, "..", "bench", "compare.py")

QKERN = None
TMP = None
TESTS = []

OPS = ["minmax", "percentile", "quantize", "dequantize", "mse", "gridsearch", "quantize_e2e", "minmax_e2e"]
BYTES_PER_ELEMENT = {"minmax": 4, "percentile": 4, "quantize": 5, "dequantize": 5, "mse": 4, "gridsearch": 4,
                     "quantize_e2e": 5, "minmax_e2e": 4}
CSV_HEADER = ["device", "backend", "op", "elements", "seconds", "seconds_min", "gbps", "copy_gbps",
              "fraction_of_copy", "date", "host"]
SMALL = ["--elements", "65536", "--reps", "2"]


def test(fn):
    TESTS.append(fn)
    return fn


# ---- helpers ----------------------------------------------------------------------

def run(args, timeout=300):
    return subprocess.run([QKERN] + list(args), capture_output=True, text=True, timeout=timeout)


def expect(args, rc):
    p = run(args)
    assert "Sanitizer" not in p.stderr and "runtime error:" not in p.stderr, \
        f"qkern {' '.join(args)}: sanitizer report:\n{p.stderr[-4000:]}"
    assert p.returncode == rc, (
        f"qkern {' '.join(args)}: exit {p.returncode}, expected {rc}\n"
        f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}")
    return p


def expect_json(args):
    p = expect(list(args) + ["--json"], 0)
    lines = p.stdout.splitlines()
    assert len(lines) == 1, f"--json printed {len(lines)} lines"
    return json.loads(p.stdout), p


def expect_usage_error(args):
    p = expect(args, 2)
    assert p.stderr.strip(), f"qkern {' '.join(args)}: no message on stderr"
    assert "--help" in p.stderr, f"qkern {' '.join(args)}: no hint to use --help: {p.stderr!r}"
    assert p.stdout == "", f"qkern {' '.join(args)}: printed to stdout on a usage error"
    return p


def tmpdir():
    return tempfile.mkdtemp(dir=TMP)


def close(a, b, rel=1e-12):
    return abs(a - b) <= rel * max(abs(a), abs(b))


def available_backends():
    j = json.loads(expect(["info", "--json"], 0).stdout)
    return [b["name"] for b in j["backends"] if b["available"]], [b["name"] for b in j["backends"]]


def check_run(run, n, ops, backend=None):
    """One backend's object: schema and the arithmetic between its fields."""
    for key in ("device", "backend", "copy_gbps", "results", "elements", "reps", "warmup", "seed",
                "copy_bytes", "copy_seconds", "copy_seconds_min"):
        assert key in run, f"run has no {key!r}: {sorted(run)}"
    assert isinstance(run["device"], str) and run["device"], run["device"]
    assert run["backend"] in ("cpu", "opencl", "cuda"), run["backend"]
    if backend:
        assert run["backend"] == backend, (run["backend"], backend)
    assert run["elements"] == n
    assert run["copy_bytes"] == 8 * n, run["copy_bytes"]
    assert run["copy_seconds"] > 0 and 0 < run["copy_seconds_min"] <= run["copy_seconds"]
    assert run["copy_gbps"] > 0
    assert close(run["copy_gbps"], run["copy_bytes"] / run["copy_seconds"] / 1e9, 1e-9), run
    assert [r["op"] for r in run["results"]] == ops, [r["op"] for r in run["results"]]
    for r in run["results"]:
        for key in ("op", "elements", "bytes", "seconds", "seconds_min", "gbps", "fraction_of_copy"):
            assert key in r, f"result has no {key!r}: {r}"
        assert r["elements"] == n
        assert r["bytes"] == BYTES_PER_ELEMENT[r["op"]] * n, r
        assert r["seconds"] > 0 and r["seconds_min"] > 0, r
        assert r["seconds_min"] <= r["seconds"], r
        assert r["gbps"] > 0, r
        assert close(r["gbps"], r["bytes"] / r["seconds"] / 1e9, 1e-9), r
        assert close(r["fraction_of_copy"], r["gbps"] / run["copy_gbps"]), r
        if r["op"] == "gridsearch":
            assert r.get("x_minmax", 0) > 0, r
        else:
            assert "x_minmax" not in r, r


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def check_csv_rows(rows, runs):
    """CSV data rows against the JSON runs of the same invocation."""
    expected = [(run, r) for run in runs for r in run["results"]]
    assert len(rows) == len(expected), (len(rows), len(expected))
    for row, (run, r) in zip(rows, expected):
        assert len(row) == len(CSV_HEADER), row
        d = dict(zip(CSV_HEADER, row))
        assert d["device"] == run["device"] and d["backend"] == run["backend"] and d["op"] == r["op"], d
        assert int(d["elements"]) == r["elements"]
        for key in ("seconds", "seconds_min", "gbps", "fraction_of_copy"):
            assert float(d[key]) == r[key], (key, d[key], r[key])
        assert float(d["copy_gbps"]) == run["copy_gbps"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d["date"]), d["date"]
        assert d["host"], "empty host"


# ---- help ------------------------------------------------------------------------------

@test
def help_text():
    for args in (["bench", "--help"], ["bench", "-h"], ["help", "bench"]):
        p = expect(args, 0)
        assert p.stdout.startswith("Usage: qkern bench"), p.stdout[:80]
        for word in ["--backend", "all", "--elements", "2^K", "--ops", "--reps", "--warmup", "--seed", "--json",
                     "--csv", "--help", "copy_gbps", "fraction_of_copy", "x_minmax", "first-touch",
                     "device", "median"] + OPS:
            assert word in p.stdout, f"qkern bench --help does not mention {word}"
    p = expect(["--help"], 0)
    assert re.search(r"^\s+bench\s", p.stdout, re.M), "top-level help does not list bench"


# ---- JSON ------------------------------------------------------------------------------

@test
def json_cpu():
    j, _ = expect_json(["bench", "--backend", "cpu"] + SMALL)
    check_run(j, 65536, OPS, "cpu")
    assert j["reps"] == 2 and j["warmup"] == 1 and j["seed"] == 1, j


@test
def json_all():
    avail, every = available_backends()
    j, p = expect_json(["bench", "--backend", "all"] + SMALL)
    assert list(j) == ["runs"], list(j)
    names = [run["backend"] for run in j["runs"]]
    assert names == [b for b in every if b in avail], (names, avail)
    for run in j["runs"]:
        check_run(run, 65536, OPS)
    for b in every:
        if b not in avail:
            assert f"skipping {b}" in p.stderr, f"no note on stderr for unavailable {b}: {p.stderr!r}"


@test
def json_auto():
    j, _ = expect_json(["bench", "--elements", "4096", "--reps", "1", "--ops", "minmax"])
    check_run(j, 4096, ["minmax"])


@test
def ops_subset_order_and_duplicates():
    j, _ = expect_json(["bench", "--backend", "cpu", "--elements", "2^12", "--reps", "3", "--warmup", "0",
                        "--ops", "mse,minmax,mse,quantize_e2e"])
    check_run(j, 4096, ["mse", "minmax", "quantize_e2e"])
    assert j["reps"] == 3 and j["warmup"] == 0
    # gridsearch alone still gets its x_minmax (minmax is timed for it, not reported).
    j, _ = expect_json(["bench", "--backend", "cpu", "--elements", "4K", "--reps", "1", "--ops", "gridsearch"])
    check_run(j, 4096, ["gridsearch"])
    j, _ = expect_json(["bench", "--backend", "cpu", "--elements", "4096", "--reps", "1", "--ops", "all",
                        "--seed", "12345"])
    check_run(j, 4096, OPS)
    assert j["seed"] == 12345


@test
def element_counts():
    for text, n in (("1", 1), ("2", 2), ("13", 13), ("2^10", 1024), ("1K", 1024), ("3k", 3072), ("1000", 1000)):
        j, _ = expect_json(["bench", "--backend", "cpu", "--elements", text, "--reps", "1"])
        check_run(j, n, OPS)


@test
def table():
    p = expect(["bench", "--backend", "cpu", "--elements", "4096", "--reps", "1"], 0)
    assert "copy" in p.stdout and "GB/s" in p.stdout and "of copy" in p.stdout, p.stdout
    for op in OPS:
        assert re.search(rf"^{op}\s", p.stdout, re.M), f"table has no {op} row:\n{p.stdout}"
    assert "x minmax" in p.stdout


# ---- CSV ---------------------------------------------------------------------------------

@test
def csv_new_then_append():
    d = tmpdir()
    path = os.path.join(d, "b.csv")
    j1, _ = expect_json(["bench", "--backend", "cpu", "--elements", "4096", "--reps", "2", "--csv", path])
    rows = read_csv(path)
    assert rows[0] == CSV_HEADER, rows[0]
    check_csv_rows(rows[1:], [j1])
    j2, _ = expect_json(["bench", "--backend", "all", "--elements", "2048", "--reps", "1", "--ops", "minmax,mse",
                         "--csv", path])
    rows = read_csv(path)
    assert rows[0] == CSV_HEADER
    assert sum(r == CSV_HEADER for r in rows) == 1, "header written twice"
    check_csv_rows(rows[1:], [j1] + j2["runs"])
    with open(path, "rb") as f:
        assert f.read().endswith(b"\n"), "last row not terminated"
    # Without --json too.
    expect(["bench", "--backend", "cpu", "--elements", "1024", "--reps", "1", "--ops", "minmax", "--csv", path], 0)
    rows = read_csv(path)
    assert rows[-1][2] == "minmax" and rows[-1][3] == "1024", rows[-1]
    assert sum(r == CSV_HEADER for r in rows) == 1


@test
def csv_empty_file_gets_header():
    path = os.path.join(tmpdir(), "empty.csv")
    open(path, "w").close()
    j, _ = expect_json(["bench", "--backend", "cpu", "--elements", "1024", "--reps", "1", "--ops", "minmax",
                        "--csv", path])
    rows = read_csv(path)
    assert rows[0] == CSV_HEADER
    check_csv_rows(rows[1:], [j])


@test
def csv_errors_leave_file_alone():
    d = tmpdir()
    other = os.path.join(d, "other.csv")
    with open(other, "w") as f:
        f.write("a,b,c\n1,2,3\n")
    p = expect(["bench", "--backend", "cpu", "--elements", "1024", "--reps", "1", "--ops", "minmax",
                "--csv", other], 1)
    assert "qkern: error:" in p.stderr, p.stderr
    with open(other) as f:
        assert f.read() == "a,b,c\n1,2,3\n", "a foreign CSV was changed"
    p = expect(["bench", "--backend", "cpu", "--elements", "1024", "--reps", "1", "--ops", "minmax", "--csv", d], 1)
    assert "qkern: error:" in p.stderr, p.stderr
    missing_dir = os.path.join(d, "no", "such", "dir.csv")
    expect(["bench", "--backend", "cpu", "--elements", "1024", "--reps", "1", "--ops", "minmax",
            "--csv", missing_dir], 1)


@test
def csv_append_is_atomic_and_keeps_the_file():
    """The append rewrites the file through the atomic output: a symbolic link
    stays a link to the same file, the mode is kept, no temporary is left, a
    last row without a newline gets one, and the check comes before the work."""
    d = tmpdir()
    real = os.path.join(d, "real.csv")
    link = os.path.join(d, "link.csv")
    j1, _ = expect_json(["bench", "--backend", "cpu", "--elements", "1024", "--reps", "1", "--ops", "minmax",
                         "--csv", real])
    with open(real, "rb") as f:
        body = f.read()
    with open(real, "wb") as f:
        f.write(body.rstrip(b"\n"))  # edited by hand: no final newline
    os.chmod(real, 0o640)
    os.symlink("real.csv", link)
    j2, _ = expect_json(["bench", "--backend", "cpu", "--elements", "1024", "--reps", "1", "--ops", "minmax",
                         "--csv", link])
    assert os.path.islink(link) and os.readlink(link) == "real.csv", "the link was replaced"
    assert (os.stat(real).st_mode & 0o777) == 0o640, oct(os.stat(real).st_mode)
    rows = read_csv(real)
    assert rows[0] == CSV_HEADER
    check_csv_rows(rows[1:], [j1, j2])
    assert sorted(os.listdir(d)) == ["link.csv", "real.csv"], os.listdir(d)
    # A foreign file is refused before the benchmark runs (nothing measured, nothing printed).
    other = os.path.join(d, "other.csv")
    with open(other, "w") as f:
        f.write("x\n")
    p = expect(["bench", "--backend", "cpu", "--elements", "1024", "--reps", "1", "--ops", "minmax", "--json",
                "--csv", other], 1)
    assert p.stdout == "", "the benchmark ran before the CSV was checked"


# ---- usage errors ----------------------------------------------------------------------------

@test
def usage_errors():
    d = tmpdir()
    path = os.path.join(d, "never.csv")
    b = ["bench", "--elements", "1024", "--reps", "1", "--csv", path]
    cases = [
        b + ["--ops", "frobnicate"],
        b + ["--ops", "minmax,frobnicate"],
        b + ["--ops", ""],
        b + ["--ops", "minmax,"],
        b + ["--ops", ",minmax"],
        b + ["--ops"],
        b + ["--elements", "0"],
        b + ["--elements", "-5"],
        b + ["--elements", "2^41"],
        b + ["--elements", "2^"],
        b + ["--elements", "3^4"],
        b + ["--elements", "abc"],
        b + ["--elements", "1.5"],
        b + ["--elements", " 8"],
        b + ["--elements", ""],
        b + ["--reps", "0"],
        b + ["--reps", "-1"],
        b + ["--reps", "x"],
        b + ["--warmup", "-1"],
        b + ["--seed", "-1"],
        b + ["--seed", "1.5"],
        b + ["--backend", "tpu"],
        b + ["--backend"],
        b + ["--json=1"],
        b + ["--frobnicate"],
        b + ["extra"],
        ["bench", "--csv", ""],
        ["bench", "--csv"],
    ]
    for args in cases:
        expect_usage_error(args)
    assert os.listdir(d) == [], f"usage errors left files: {os.listdir(d)}"


# ---- compare.py ------------------------------------------------------------------------------

@test
def compare_quick():
    d = tmpdir()
    cmd = [sys.executable, COMPARE, "--qkern", QKERN, "--quick", "--out-dir", d, "--machine", "test-machine"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"compare.py --quick: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    files = sorted(os.listdir(d))
    for f in ("test-machine.csv", "test-machine.md"):
        assert f in files, files
    rows = read_csv(os.path.join(d, "test-machine.csv"))
    assert rows[0][:len(CSV_HEADER)] == CSV_HEADER, rows[0]
    head = rows[0]
    recs = [dict(zip(head, r)) for r in rows[1:]]
    avail, _ = available_backends()
    backends = {r["backend"] for r in recs}
    for b in avail + ["numpy"]:
        assert b in backends, f"no rows for {b}: {backends}"
    if importlib.util.find_spec("torch") is not None:
        assert "torch" in backends, "torch is installed but has no rows"
    else:
        print("note: PyTorch not installed; compare.py ran without it")
    assert {int(r["elements"]) for r in recs} == {1 << 16, 1 << 17, 1 << 18}
    for r in recs:
        if r["seconds"] == "":  # a refused peer op carries a note instead of numbers
            assert r["note"].startswith("refused"), r
            continue
        s, smin, g = float(r["seconds"]), float(r["seconds_min"]), float(r["gbps"])
        assert s > 0 and 0 < smin <= s and g > 0, r
        assert close(float(r["fraction_of_copy"]), g / float(r["copy_gbps"]), 1e-9), r
    for b in avail:
        ops = {r["op"] for r in recs if r["backend"] == b}
        assert ops == set(OPS) | {"copy"}, (b, ops)
    md = open(os.path.join(d, "test-machine.md")).read()
    assert "| op |" in md and "command:" in md and "compare.py" in md, md[:500]
    for op in OPS:
        assert f"| {op} |" in md, f"markdown table has no {op} row"
    if importlib.util.find_spec("matplotlib") is None:
        print("note: matplotlib not installed: skipping the plot checks")
        return
    for f in ("test-machine_gbps.png", "test-machine_time.png"):
        assert f in files, files
        with open(os.path.join(d, f), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{f} is not a PNG"


@test
def compare_default_machine_name():
    sys.path.insert(0, os.path.dirname(COMPARE))
    sys.dont_write_bytecode = True  # no __pycache__ left in bench/
    import compare
    name = compare.machine_slug(QKERN)
    assert re.fullmatch(r"cpu-[a-z0-9-]+-\d+core(_gpu-[a-z0-9-]+)*", name), name
    assert compare.slug("AMD EPYC 7B13 64-Core Processor") == "amd-epyc-7b13"
    assert compare.slug("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz") == "intel-xeon-platinum-8375c"
    assert compare.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


# ---- main ----------------------------------------------------------------------------------------

def main():
    global QKERN, TMP
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qkern", required=True, help="path to the qkern binary")
    ap.add_argument("-k", dest="only", help="run only tests whose name contains this")
    args = ap.parse_args()
    QKERN = os.path.abspath(args.qkern)
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="qkern-test-bench-") as tmp:
        TMP = tmp
        for fn in TESTS:
            if args.only and args.only not in fn.__name__:
                continue
            try:
                fn()
                passed += 1
            except Exception:  # one failing check must not hide the others
                failed += 1
                print(f"FAIL {fn.__name__}:")
                print("    " + traceback.format_exc().strip().replace("\n", "\n    "))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
