#!/usr/bin/python3
"""End-to-end test of the `qkern` command.

Runs the built binary on small .npy files and checks its exit codes, messages,
JSON and output files against independent numpy implementations of docs/numerics.md's
formulas. Run as:

    /usr/bin/python3 tests/test_cli.py --qkern build/qkern [--backend cpu]

(/usr/bin/python3 is Debian's, with numpy 1.24, whose percentile is the one
qkern must match bit for bit.) Prints one line per failure and a final
"N passed, M failed"; exits non-zero on any failure.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import traceback

import numpy as np

QKERN = None
BACKEND_ARGS = []  # e.g. ["--backend", "cpu"], added to every command that computes
TMP = None
TESTS = []

COMMANDS = ["info", "stats", "quantize", "dequantize", "gridsearch"]  # all but info compute

# Every option each subcommand must document in its --help.
HELP_OPTIONS = {
    "info": ["--json", "--backend", "--help"],
    "stats": ["--percentile", "--ignore-nonfinite", "--backend", "--json", "--help"],
    "quantize": ["--output", "-o", "--bits", "--scheme", "--calib", "--objective", "--fence-k",
                 "--include-zero", "--narrow-range", "--scale", "--zero-point",
                 "--ignore-nonfinite", "--backend", "--json", "--help"],
    "dequantize": ["--output", "-o", "--scale", "--zero-point", "--backend", "--json", "--help"],
    "gridsearch": ["--grid", "--grid-list", "--objective", "--fence-k", "--bits", "--scheme",
                   "--include-zero", "--narrow-range", "--ignore-nonfinite", "--backend", "--json",
                   "--help"],
}


def test(fn):
    TESTS.append(fn)
    return fn


# ---- helpers ------------------------------------------------------------------

def run(args, compute=True):
    """Run qkern; `compute` adds the --backend under test."""
    cmd = [QKERN] + list(args)
    if compute and BACKEND_ARGS and len(args) > 0 and args[0] in COMMANDS[1:] and "--backend" not in args:
        cmd += BACKEND_ARGS
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def expect(args, rc, compute=True):
    p = run(args, compute)
    # A sanitizer build reports leaks with exit 1, which an error path expects anyway.
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
    return json.loads(p.stdout), p.stdout


def expect_usage_error(args):
    p = expect(args, 2)
    assert p.stderr.strip(), f"qkern {' '.join(args)}: no message on stderr"
    assert "--help" in p.stderr, f"qkern {' '.join(args)}: no hint to use --help: {p.stderr!r}"
    return p


def expect_runtime_error(args):
    p = expect(args, 1)
    assert "qkern: error:" in p.stderr, f"qkern {' '.join(args)}: stderr {p.stderr!r}"
    return p


def tmpdir():
    return tempfile.mkdtemp(dir=TMP)


def save(name, arr, d=None):
    path = os.path.join(d or tmpdir(), name)
    np.save(path, arr)
    return path


def worked_case():
    """docs/numerics.md's seed example: a uniform bulk and one far outlier."""
    rng = np.random.default_rng(0)
    bulk = rng.uniform(-80, 100, 1000)
    return np.concatenate([bulk, [580.0]]).astype(np.float32)


def ref_quantize(x, bits, scheme, narrow=False):
    """Independent numpy version of docs/numerics.md's minmax formulas -> (codes, scale, zp, qmin, qmax)."""
    if scheme == "asymmetric":
        lo, hi = float(x.min()), float(x.max())
        qmin, qmax = 0, 2 ** bits - 1
        scale = np.float32((hi - lo) / (2 ** bits - 1))
        zp = -np.rint(lo / np.float64(scale))
    else:
        c = float(np.abs(x.astype(np.float64)).max())
        qmax = 2 ** (bits - 1) - 1
        qmin = -qmax if narrow else -(2 ** (bits - 1))
        scale = np.float32(c / qmax)
        zp = 0.0
    return codes_for(x, scale, zp, qmin, qmax), scale, int(zp), qmin, qmax


def codes_for(x, scale, zp, qmin, qmax):
    # x / scale in the input's precision, correctly rounded, then rint (half even);
    # the zero point is added in double, never as a float32 add.
    s = x.dtype.type(scale)
    q = np.rint(x / s).astype(np.float64) + np.float64(zp)
    return np.clip(q, qmin, qmax)


def ref_dequantize(q, zp, scale):
    return (q.astype(np.int64) - zp).astype(np.float32) * np.float32(scale)


def ref_mse(x, q, zp, scale):
    xh = ref_dequantize(q, zp, scale).astype(np.float64)
    return float(np.mean((x.astype(np.float64) - xh) ** 2))


def close(a, b, rel):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def n_outside(x, lo, hi):
    # In double: numpy 1.24 would compare a float32 array with a Python float in
    # float32 (value-based casting) and round the interpolated bounds.
    xd = x.astype(np.float64)
    return int(np.sum((xd < lo) | (xd > hi)))


def listing(d):
    return sorted(os.listdir(d))


# ---- help, version, usage errors ------------------------------------------------

@test
def help_top_level():
    for args in (["--help"], ["-h"], ["help"]):
        p = expect(args, 0, compute=False)
        assert "Usage" in p.stdout
        for c in COMMANDS:
            assert c in p.stdout, f"top-level help does not list {c}"


@test
def help_every_subcommand():
    for c in COMMANDS:
        for flag in ("--help", "-h"):
            p = expect([c, flag], 0, compute=False)
            assert p.stdout.startswith("Usage: qkern " + c), p.stdout[:80]
            for opt in HELP_OPTIONS[c]:
                assert opt in p.stdout, f"qkern {c} --help does not mention {opt}"
        p = expect(["help", c], 0, compute=False)
        assert p.stdout.startswith("Usage: qkern " + c)


@test
def version():
    p = expect(["--version"], 0, compute=False)
    assert p.stdout.startswith("qkern 0."), p.stdout


@test
def usage_errors():
    d = tmpdir()
    x = save("x.npy", np.linspace(-1, 1, 50, dtype=np.float32), d)
    out = os.path.join(d, "out.npy")
    q = ["quantize", x, "-o", out]
    cases = [
        [],
        ["frobnicate"],
        ["--frobnicate"],
        ["info", "--frobnicate"],
        ["info", "extra"],
        ["info", "--backend"],
        ["info", "--backend", "tpu"],
        ["info", "--json=yes"],
        ["stats"],
        ["stats", x, x],
        ["stats", x, "--percentile", "101"],
        ["stats", x, "--percentile", "-1"],
        ["stats", x, "--percentile", "nan"],
        ["stats", x, "--percentile", "50,"],
        ["stats", x, "--percentile", ""],
        ["stats", x, "--percentile"],
        ["quantize", x],                          # no -o
        ["quantize", "-o", out],                  # no input
        q + ["--bits", "abc"],
        q + ["--bits", "1"],
        q + ["--bits", "17"],
        q + ["--bits", "8x"],
        q + ["--bits", ""],
        q + ["--bits", "nan"],
        q + ["--bits", " 8"],
        q + ["--bits", "8.0"],
        q + ["--bits"],
        q + ["--scheme", "sym"],
        q + ["--objective", "mae"],
        q + ["--calib", "foo"],
        q + ["--calib", "percentile"],
        q + ["--calib", "percentile:"],
        q + ["--calib", "percentile:abc"],
        q + ["--calib", "percentile:101"],
        q + ["--calib", "percentile:40"],          # < 50 for asymmetric
        q + ["--calib", "gridsearch:1:2"],
        q + ["--calib", "gridsearch:99:100:0"],
        q + ["--calib", "gridsearch:100:99:0.1"],
        q + ["--calib", "gridsearch:99:100:1e-12"],  # far too many points
        q + ["--calib", "minmax", "--scale", "0.1"],
        q + ["--zero-point", "3"],
        q + ["--scale", "0"],
        q + ["--scale", "-1"],
        q + ["--scale", "inf"],
        q + ["--scale", "1e-60"],                 # 0 as a float32
        q + ["--scale", "0.1", "--zero-point", "2147483648"],
        q + ["--scale", "0.1", "--zero-point", "1.5"],
        q + ["--scale", "0.1", "--zero-point", "3", "--scheme", "symmetric"],
        q + ["--scale", "0.1", "--include-zero"],
        q + ["--narrow-range"],                   # asymmetric
        q + ["--fence-k", "x"],
        q + ["--backend", "tpu"],
        ["dequantize", x, "-o", out, "--scale", "0.1"],
        ["dequantize", x, "-o", out, "--zero-point", "0"],
        ["dequantize", x, "--scale", "0.1", "--zero-point", "0"],
        ["dequantize", x, "-o", out, "--scale", "0.1", "--zero-point", "0", "--bits", "8"],
        ["gridsearch"],
        ["gridsearch", x, "--grid", "99:100"],
        ["gridsearch", x, "--grid", "99:101:0.5"],
        ["gridsearch", x, "--grid", "a:b:c"],
        ["gridsearch", x, "--grid-list", "99,,100"],
        ["gridsearch", x, "--grid-list", "10,99"],  # 10 < 50 for asymmetric
        ["gridsearch", x, "--grid", "99:100:0.5", "--grid-list", "99,100"],
        ["gridsearch", x, "-o", out],
        ["help", "frobnicate"],
    ]
    for args in cases:
        expect_usage_error(args)
    assert listing(d) == ["x.npy"], f"usage errors left files: {listing(d)}"


# ---- runtime errors ---------------------------------------------------------------

def bad_inputs(d):
    """name -> path of inputs every float-taking subcommand must refuse with exit 1."""
    paths = {"missing": os.path.join(d, "does-not-exist.npy")}
    p = os.path.join(d, "garbage.npy")
    with open(p, "wb") as f:
        f.write(b"this is not a numpy file at all, just text\n" * 4)
    paths["garbage"] = p
    paths["int64"] = save("int64.npy", np.arange(20, dtype=np.int64), d)
    paths["uint8"] = save("uint8.npy", np.arange(20, dtype=np.uint8), d)
    paths["fortran"] = save("fortran.npy", np.asfortranarray(np.ones((4, 5), np.float32)), d)
    full = save("full.npy", np.ones(1000, np.float32), d)
    with open(full, "rb") as f:
        data = f.read()
    p = os.path.join(d, "truncated.npy")
    with open(p, "wb") as f:
        f.write(data[:-10])
    paths["truncated"] = p
    p = os.path.join(d, "header-only.npy")
    with open(p, "wb") as f:
        f.write(data[:40])
    paths["header-cut"] = p
    paths["empty-array"] = save("empty.npy", np.zeros(0, np.float32), d)
    x = np.linspace(-1, 1, 100).astype(np.float32)
    x[37] = np.nan
    paths["nan"] = save("nan.npy", x, d)
    paths["directory"] = d
    return paths


@test
def runtime_errors_leave_no_output():
    d = tmpdir()
    inputs = bad_inputs(d)
    outdir = tmpdir()
    out = os.path.join(outdir, "out.npy")
    for name, path in inputs.items():
        cmds = [
            ["stats", path],
            ["quantize", path, "-o", out],
            ["quantize", path, "-o", out, "--calib", "gridsearch"],
            ["gridsearch", path],
        ]
        if name != "uint8":
            cmds.append(["dequantize", path, "-o", out, "--scale", "0.5", "--zero-point", "0"])
        for args in cmds:
            p = expect_runtime_error(args)
            if name == "nan" and args[0] != "dequantize":
                assert "--ignore-nonfinite" in p.stderr, f"no hint for NaN input: {p.stderr!r}"
            assert listing(outdir) == [], f"{args}: left {listing(outdir)} in the output dir"


@test
def nonfinite_message_names_count_and_index():
    x = np.linspace(-1, 1, 100).astype(np.float32)
    x[[37, 50]] = [np.nan, np.inf]
    path = save("nan.npy", x)
    p = expect_runtime_error(["stats", path])
    assert "QK_ERR_NONFINITE" in p.stderr or "non-finite" in p.stderr.lower(), p.stderr
    assert "37" in p.stderr, f"first index not named: {p.stderr!r}"


@test
def missing_output_directory():
    x = save("x.npy", np.linspace(-1, 1, 100, dtype=np.float32))
    d = tmpdir()
    missing = os.path.join(d, "no", "such", "dir")
    codes = save("q.npy", np.arange(10, dtype=np.uint8))
    for args in (["quantize", x, "-o", os.path.join(missing, "q.npy")],
                 ["dequantize", codes, "-o", os.path.join(missing, "x.npy"), "--scale", "1",
                  "--zero-point", "0"]):
        expect_runtime_error(args)
        assert listing(d) == [], listing(d)


@test
def output_onto_a_directory_fails_cleanly():
    """The rename itself fails: the temporary must be removed."""
    x = save("x.npy", np.linspace(-1, 1, 100, dtype=np.float32))
    d = tmpdir()
    os.mkdir(os.path.join(d, "sub"))
    expect_runtime_error(["quantize", x, "-o", os.path.join(d, "sub")])
    assert listing(d) == ["sub"], listing(d)
    assert listing(os.path.join(d, "sub")) == []


@test
def existing_output_untouched_on_failure():
    d = tmpdir()
    inputs = bad_inputs(tmpdir())
    out = os.path.join(d, "out.npy")
    old = b"precious old contents"
    with open(out, "wb") as f:
        f.write(old)
    os.utime(out, (1_000_000_000, 1_000_000_000))
    for args in (["quantize", inputs["nan"], "-o", out],
                 ["quantize", inputs["truncated"], "-o", out],
                 ["quantize", inputs["int64"], "-o", out],
                 ["dequantize", inputs["garbage"], "-o", out, "--scale", "1", "--zero-point", "0"]):
        expect_runtime_error(args)
    expect_usage_error(["quantize", inputs["nan"], "-o", out, "--bits", "99"])
    with open(out, "rb") as f:
        assert f.read() == old, "the old output was modified"
    assert os.stat(out).st_mtime == 1_000_000_000, "the old output was rewritten"
    assert listing(d) == ["out.npy"], listing(d)


@test
def success_replaces_output_and_leaves_no_temporaries():
    d = tmpdir()
    x = save("x.npy", np.linspace(-1, 1, 100, dtype=np.float32), d)
    out = os.path.join(d, "out.npy")
    with open(out, "wb") as f:
        f.write(b"old")
    expect(["quantize", x, "-o", out], 0)
    assert np.load(out).dtype == np.uint8
    assert listing(d) == ["out.npy", "x.npy"], listing(d)


# ---- info -------------------------------------------------------------------------

@test
def info_json():
    j, _ = expect_json(["info"])
    names = [b["name"] for b in j["backends"]]
    assert names == ["cpu", "opencl", "cuda"], names
    for b in j["backends"]:
        for k in ("compiled", "available", "devices"):
            assert k in b, f"{b['name']}: no {k}"
        if not b["available"]:
            assert b.get("reason"), f"{b['name']}: unavailable without a reason"
        for dev in b["devices"]:
            for k in ("name", "vendor", "type", "version", "global_mem"):
                assert k in dev, f"device without {k}"
    cuda = j["backends"][2]
    if cuda["compiled"]:  # versions: CUDA's "13.0"; the driver's is null where there is no driver
        assert re.fullmatch(r"\d+\.\d+", cuda["runtime_version"]), cuda
        assert "driver_version" in cuda, cuda
        assert cuda["driver_version"] is None or re.fullmatch(r"\d+\.\d+", cuda["driver_version"]), cuda
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", cuda["driver_needed"]), cuda
    cpu = j["backends"][0]
    assert cpu["compiled"] is True and cpu["available"] is True and len(cpu["devices"]) >= 1
    # --backend NAME: exit 0 exactly when that backend is available.
    for b in j["backends"]:
        p = run(["info", "--backend", b["name"]], compute=False)
        assert p.returncode == (0 if b["available"] else 1), (b["name"], p.returncode, p.stderr)
    j2, _ = expect_json(["info", "--backend", "cpu"])
    assert [b["name"] for b in j2["backends"]] == ["cpu"]
    expect(["info", "--backend", "auto"], 0, compute=False)
    p = expect(["info"], 0, compute=False)
    assert "cpu" in p.stdout and "opencl" in p.stdout and "cuda" in p.stdout
    if cuda["compiled"]:
        assert "CUDA runtime " + cuda["runtime_version"] in p.stdout, p.stdout
        assert "driver " + cuda["driver_needed"] + " or newer" in p.stdout, p.stdout


# ---- stats --------------------------------------------------------------------------

PCTS = [0, 100, 99.99, 50, 25, 75, 1, 99, 99.9, 0.01, 33.3, 66.7, 12.5]


def check_stats(x, path, extra=()):
    args = ["stats", path] + [a for p in PCTS for a in ("--percentile", repr(float(p)))] + list(extra)
    j, _ = expect_json(args)
    xf = x[np.isfinite(x)] if "--ignore-nonfinite" in extra else x
    assert j["n"] == xf.size, (j["n"], xf.size)
    assert float(j["min"]) == float(xf.min()), (j["min"], float(xf.min()))
    assert float(j["max"]) == float(xf.max()), (j["max"], float(xf.max()))
    got = j["percentiles"]
    assert [float(e["p"]) for e in got] == [float(p) for p in PCTS]
    for e in got:
        want = float(np.percentile(xf, e["p"]))
        assert float(e["value"]) == want, f"p={e['p']}: got {e['value']!r}, numpy {want!r}"


@test
def stats_matches_numpy_float32():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 1000, 12345):
        x = (rng.standard_normal(n) * 10).astype(np.float32)
        check_stats(x, save("x.npy", x))
    # Ties, negatives and a multi-dimensional shape.
    x = rng.integers(-5, 5, size=(7, 11, 13)).astype(np.float32)
    check_stats(x, save("ties.npy", x))


@test
def stats_matches_numpy_float64():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(5001) * 1e3
    check_stats(x, save("x64.npy", x))


@test
def stats_ignore_nonfinite():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(2000).astype(np.float32)
    x[[3, 500, 1999]] = [np.nan, np.inf, -np.inf]
    path = save("nf.npy", x)
    check_stats(x, path, ["--ignore-nonfinite"])
    j, _ = expect_json(["stats", path, "--ignore-nonfinite", "-p", "50"])
    assert j["nonfinite"] == 3


@test
def stats_percentile_list_and_default():
    x = np.arange(101, dtype=np.float32)
    path = save("x.npy", x)
    j, _ = expect_json(["stats", path, "--percentile", "10,20", "-p", "30", "--percentile=40"])
    assert [e["p"] for e in j["percentiles"]] == [10, 20, 30, 40]
    assert [e["value"] for e in j["percentiles"]] == [10, 20, 30, 40]
    j, _ = expect_json(["stats", path])
    assert len(j["percentiles"]) >= 1
    p = expect(["stats", path, "-p", "50"], 0)
    assert "50" in p.stdout


@test
def json_numbers_are_exact_and_keep_negative_zero():
    x = np.array([-0.0, 1.0, 0.1], dtype=np.float64)
    j, raw = expect_json(["stats", save("z.npy", x), "-p", "100"])
    assert '"min":-0' in raw, raw
    # Python's json reads "-0" as int 0; read it as a float to see the sign.
    jf = json.loads(raw, parse_int=float)
    assert math.copysign(1.0, jf["min"]) == -1.0
    # A float32 value widened to double needs up to 17 significant digits;
    # cJSON's own %.15g printer would lose it.
    v = float(np.float32(0.1))
    x = np.array([v, 2.0], dtype=np.float32)
    j, raw = expect_json(["stats", save("f.npy", x), "-p", "0"])
    assert j["min"] == v, (j["min"], v)


# ---- quantize / dequantize ------------------------------------------------------------

CODE_DTYPES = {("asymmetric", 8): np.uint8, ("symmetric", 8): np.int8,
               ("asymmetric", 16): np.uint16, ("symmetric", 16): np.int16}


def code_dtype(scheme, bits):
    return CODE_DTYPES[(scheme, 8 if bits <= 8 else 16)]


def check_quantize(x, scheme, bits, extra=(), narrow=False):
    d = tmpdir()
    path = save("x.npy", x, d)
    out = os.path.join(d, "q.npy")
    j, _ = expect_json(["quantize", path, "-o", out, "--bits", str(bits), "--scheme", scheme] + list(extra))
    want, scale, zp, qmin, qmax = ref_quantize(x, bits, scheme, narrow)
    q = np.load(out)
    tag = f"{scheme} {bits}-bit {x.dtype} {x.shape}"
    assert q.dtype == code_dtype(scheme, bits), f"{tag}: dtype {q.dtype}"
    assert q.shape == x.shape, f"{tag}: shape {q.shape}"
    assert j["scale"] == float(scale), f"{tag}: scale {j['scale']!r} != {float(scale)!r}"
    assert j["zero_point"] == zp, f"{tag}: zero point {j['zero_point']} != {zp}"
    assert (j["qmin"], j["qmax"]) == (qmin, qmax), f"{tag}: code range {j['qmin']}..{j['qmax']}"
    assert j["bits"] == bits and j["scheme"] == scheme and j["n"] == x.size
    assert j["calib"] == "minmax" and j["percentile"] == 100 and j["clipped"] == 0
    bad = np.flatnonzero(q.astype(np.int64).ravel() != want.astype(np.int64).ravel())
    assert bad.size == 0, f"{tag}: {bad.size} codes differ, first at {bad[0]}: " \
                          f"{q.ravel()[bad[0]]} != {want.ravel()[bad[0]]} (x={x.ravel()[bad[0]]!r})"
    mse = ref_mse(x, q, zp, scale)
    assert close(j["mse"], mse, 1e-6), f"{tag}: mse {j['mse']} != {mse}"
    return q, j, d


@test
def quantize_matches_reference():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 5, 7)) * 3 + 0.5).astype(np.float32)
    for scheme in ("asymmetric", "symmetric"):
        for bits in (2, 4, 8, 16):
            check_quantize(x, scheme, bits)


@test
def quantize_float64_and_narrow_range():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 25)) * 7 - 2
    for scheme in ("asymmetric", "symmetric"):
        for bits in (3, 8, 12):
            check_quantize(x, scheme, bits)
    xf = x.astype(np.float32)
    q, j, _ = check_quantize(xf, "symmetric", 8, ["--narrow-range"], narrow=True)
    assert q.min() >= -127 and j["qmin"] == -127


@test
def quantize_include_zero():
    x = np.linspace(1, 5, 64, dtype=np.float32)
    d = tmpdir()
    path = save("x.npy", x, d)
    out = os.path.join(d, "q.npy")
    j, _ = expect_json(["quantize", path, "-o", out, "--include-zero"])
    scale = np.float32(5.0 / 255)
    assert j["scale"] == float(scale) and j["zero_point"] == 0 and j["clip_lo"] == 0
    assert np.array_equal(np.load(out), codes_for(x, scale, 0, 0, 255).astype(np.uint8))


@test
def quantize_percentile_calibration():
    x = worked_case()
    d = tmpdir()
    path = save("w.npy", x, d)
    out = os.path.join(d, "q.npy")
    j, _ = expect_json(["quantize", path, "-o", out, "--calib", "percentile:99"])
    lo, hi = float(np.percentile(x, 1)), float(np.percentile(x, 99))
    assert j["clip_lo"] == lo and j["clip_hi"] == hi, (j["clip_lo"], j["clip_hi"], lo, hi)
    scale = np.float32((hi - lo) / 255)
    zp = int(-np.rint(lo / np.float64(scale)))
    assert j["scale"] == float(scale) and j["zero_point"] == zp
    assert j["percentile"] == 99 and j["calib"] == "percentile:99"
    assert j["clipped"] == n_outside(x, lo, hi)
    q = np.load(out)
    assert np.array_equal(q, codes_for(x, scale, zp, 0, 255).astype(np.uint8))
    assert close(j["mse"], ref_mse(x, q, zp, scale), 1e-6)


@test
def quantize_given_scale():
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((9, 4)) * 4).astype(np.float32)
    d = tmpdir()
    path = save("x.npy", x, d)
    for scheme, bits, scale, zp in (("asymmetric", 8, 0.05, 128), ("asymmetric", 4, 0.5, 7),
                                    ("symmetric", 8, 0.03, None), ("symmetric", 16, 1e-4, 0)):
        out = os.path.join(d, f"q-{scheme}-{bits}.npy")
        args = ["quantize", path, "-o", out, "--scheme", scheme, "--bits", str(bits), "--scale", str(scale)]
        if zp is not None:
            args += ["--zero-point", str(zp)]
        j, _ = expect_json(args)
        zp = zp or 0
        s32 = np.float32(scale)
        if scheme == "asymmetric":
            qmin, qmax = 0, 2 ** bits - 1
        else:
            qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        want = codes_for(x, s32, zp, qmin, qmax)
        q = np.load(out)
        assert q.dtype == code_dtype(scheme, bits) and q.shape == x.shape
        assert np.array_equal(q.astype(np.int64), want.astype(np.int64)), f"{scheme} {bits}: codes differ"
        assert j["scale"] == float(s32) and j["zero_point"] == zp
        assert j["percentile"] is None and j["calib"] == "scale"
        assert close(j["mse"], ref_mse(x, q, zp, s32), 1e-6), (j["mse"], ref_mse(x, q, zp, s32))
        assert j["clipped"] == n_outside(x, j["clip_lo"], j["clip_hi"]), j


@test
def quantize_ignore_nonfinite():
    x = np.linspace(-2, 2, 50).astype(np.float32)
    x[[5, 6, 7]] = [np.nan, np.inf, -np.inf]
    d = tmpdir()
    path = save("x.npy", x, d)
    out = os.path.join(d, "q.npy")
    j, _ = expect_json(["quantize", path, "-o", out, "--ignore-nonfinite"])
    q = np.load(out)
    finite = np.isfinite(x)
    want, scale, zp, _, _ = ref_quantize(x[finite], 8, "asymmetric")
    assert np.array_equal(q[finite], want.astype(np.uint8))
    assert (q[5], q[6], q[7]) == (min(max(zp, 0), 255), 255, 0), (q[5], q[6], q[7], zp)


@test
def dequantize_matches_reference():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 5, 7)) * 3 + 0.5).astype(np.float32)
    for scheme in ("asymmetric", "symmetric"):
        for bits in (2, 4, 8, 16):
            q, j, d = check_quantize(x, scheme, bits)
            out = os.path.join(d, "x.npy")
            jd, _ = expect_json(["dequantize", os.path.join(d, "q.npy"), "-o", out,
                                 "--scale", repr(j["scale"]), "--zero-point", str(j["zero_point"])])
            y = np.load(out)
            want = ref_dequantize(q, j["zero_point"], j["scale"])
            assert y.dtype == np.float32 and y.shape == x.shape
            assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), f"{scheme} {bits}: values differ"
            assert jd["n"] == x.size and jd["scale"] == j["scale"] and jd["zero_point"] == j["zero_point"]
    # int32 codes and a zero point on signed codes.
    q = rng.integers(-(2 ** 20), 2 ** 20, size=(17, 3)).astype(np.int32)
    d = tmpdir()
    path = save("q32.npy", q, d)
    out = os.path.join(d, "y.npy")
    expect(["dequantize", path, "-o", out, "--scale", "0.001", "--zero-point", "-12345"], 0)
    want = ref_dequantize(q, -12345, np.float32(0.001))
    assert np.array_equal(np.load(out).view(np.uint32), want.view(np.uint32))
    q8 = np.arange(-128, 128, dtype=np.int8)
    path = save("q8.npy", q8, d)
    expect(["dequantize", path, "-o", out, "--scale", "0.25", "--zero-point", "3"], 0)
    assert np.array_equal(np.load(out), ref_dequantize(q8, 3, 0.25))


# ---- gridsearch --------------------------------------------------------------------------

def check_ties(j, key):
    cands = j["candidates"]
    m = min(c[key] for c in cands)
    ties = [c["percentile"] for c in cands if abs(c[key] - m) <= 1e-9 * abs(m)]
    assert j["best"]["percentile"] == max(ties), \
        f"{key}: best {j['best']['percentile']} but ties {ties} (min {m})"
    row = [c for c in cands if c["percentile"] == j["best"]["percentile"]]
    assert len(row) == 1
    for k in ("mse", "mse_inliers", "scale", "zero_point", "clip_lo", "clip_hi", "clipped"):
        assert j["best"][k] == row[0][k], f"best.{k} {j['best'][k]} != its row's {row[0][k]}"


@test
def gridsearch_worked_case():
    x = worked_case()
    path = save("w.npy", x)
    q1, q3 = np.percentile(x, 25), np.percentile(x, 75)
    runs = {}
    for objective in ("mse", "mse-inliers"):
        j, _ = expect_json(["gridsearch", path, "--grid", "90:100:0.1", "--objective", objective])
        runs[objective] = j
        assert j["objective"] == objective
        assert j["n"] == 1001 and j["n_inliers"] == 1000, (j["n"], j["n_inliers"])
        assert close(j["fence_lo"], q1 - 3 * (q3 - q1), 1e-12) and close(j["fence_hi"], q3 + 3 * (q3 - q1), 1e-12)
        cands = j["candidates"]
        assert len(cands) == 101, len(cands)
        for i, c in enumerate(cands):
            p = 90 + i * 0.1
            assert abs(c["percentile"] - p) < 1e-9, (i, c["percentile"])
            # Percentiles are exact: the clip range is numpy's, bit for bit.
            lo = float(np.percentile(x, 100 - c["percentile"]))
            hi = float(np.percentile(x, c["percentile"]))
            assert c["clip_lo"] == lo and c["clip_hi"] == hi, (c["percentile"], c["clip_lo"], lo, c["clip_hi"], hi)
            assert c["clipped"] == n_outside(x, lo, hi), (c["percentile"], c["clipped"], n_outside(x, lo, hi))
        check_ties(j, "mse" if objective == "mse" else "mse_inliers")
        minmax = cands[-1]
        assert minmax["percentile"] == 100 and minmax["clip_hi"] == 580
        assert 0.4 < minmax["mse_inliers"] < 0.7, minmax["mse_inliers"]  # the bulk's error at minmax, ~0.56
        p99 = [c for c in cands if abs(c["percentile"] - 99) < 1e-9][0]
        assert p99["mse_inliers"] < 0.1, p99["mse_inliers"]               # ~0.06 once the outlier is clipped
    best = runs["mse-inliers"]["best"]
    assert best["percentile"] < 100
    assert best["mse_inliers"] < runs["mse-inliers"]["candidates"][-1]["mse_inliers"] / 5
    # Over all elements, clipping the outlier at ~100 costs (580-100)^2/1001 ~ 230,
    # so docs/numerics.md's formulas make minmax the best by plain mse on this input.
    assert runs["mse"]["best"]["percentile"] == 100


@test
def gridsearch_list_text_and_quantize_agree():
    x = worked_case()
    d = tmpdir()
    path = save("w.npy", x, d)
    j, _ = expect_json(["gridsearch", path, "--grid-list", "99,99.5,100", "--objective", "mse-inliers"])
    assert [c["percentile"] for c in j["candidates"]] == [99, 99.5, 100]
    check_ties(j, "mse_inliers")
    p = expect(["gridsearch", path, "--grid", "99:100:0.5", "--objective", "mse-inliers"], 0)
    marked = [line for line in p.stdout.splitlines() if line.startswith("*")]
    assert len(marked) >= 1, p.stdout
    # quantize --calib gridsearch picks the same row.
    jg, _ = expect_json(["gridsearch", path, "--grid", "90:100:0.1", "--objective", "mse-inliers"])
    out = os.path.join(d, "q.npy")
    jq, _ = expect_json(["quantize", path, "-o", out, "--calib", "gridsearch:90:100:0.1",
                         "--objective", "mse-inliers"])
    assert jq["percentile"] == jg["best"]["percentile"]
    assert jq["scale"] == jg["best"]["scale"] and jq["zero_point"] == jg["best"]["zero_point"]
    assert jq["mse"] == jg["best"]["mse"] and jq["clipped"] == jg["best"]["clipped"]
    # Default grid 99:100:0.01.
    j, _ = expect_json(["gridsearch", path])
    assert len(j["candidates"]) == 101 and j["candidates"][0]["percentile"] == 99


@test
def gridsearch_symmetric():
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.standard_normal(3000), [40.0, -35.0]]).astype(np.float32)
    j, _ = expect_json(["gridsearch", save("s.npy", x), "--scheme", "symmetric", "--grid", "99:100:0.25",
                        "--objective", "mse-inliers"])
    ax = np.abs(x)
    for c in j["candidates"]:
        cval = float(np.percentile(ax, c["percentile"]))
        assert c["zero_point"] == 0
        assert c["scale"] == float(np.float32(cval / 127)), (c["percentile"], c["scale"], cval)
    check_ties(j, "mse_inliers")
    assert j["best"]["percentile"] < 100


# ---- main --------------------------------------------------------------------------

def main():
    global QKERN, BACKEND_ARGS, TMP
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qkern", required=True, help="path to the qkern binary")
    ap.add_argument("--backend", help="run every computing command on this backend (default: auto)")
    ap.add_argument("-k", dest="only", help="run only tests whose name contains this")
    args = ap.parse_args()
    QKERN = os.path.abspath(args.qkern)
    if args.backend:
        BACKEND_ARGS = ["--backend", args.backend]
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="qkern-test-cli-") as tmp:
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
