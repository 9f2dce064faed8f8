#!/usr/bin/python3
"""End-to-end test of sharded checkpoints and bounded memory in `qkern
quantize-model` / `qkern dequantize-model` (streamed pieces, --memory-limit,
--jobs, --backend lists, --max-shard-size, output directories).

Models come from scripts/gen-laplace-model.py --shards (Hugging Face layout:
model-0000K-of-0000N.safetensors, model.safetensors.index.json, config.json,
tokenizer_config.json). Codes, scales and zero points are checked bit for bit
against test_model.py's numpy reference of docs/numerics.md's formulas, shard by
shard. Run as:

    /usr/bin/python3 tests/test_model_sharded.py --qkern build/qkern

Prints one line per failure and a final "N passed, M failed"; exits 1 on any failure.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_model as tm  # noqa: E402  (the reference formulas and file helpers)

GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "gen-laplace-model.py")
TESTS = []
MIB = 1 << 20
SANITIZED = False  # --sanitized: ASan's shadow memory counts in RSS, so peaks are not asserted
# What a run holds beside its pieces' buffers, over the VmHWM of the same run on a
# 1 MiB model: allocator slack and per-thread arenas on the CPU backend; on OpenCL
# (PoCL) its worker threads' stacks and memory pools, which grow with the work-group
# count and vary from run to run. Measured here: cpu 41-60 MiB against 64 MiB + 6 MiB;
# opencl 78-140 MiB over its 96 MiB baseline.
OVERHEAD = {"cpu": 16 * MIB, "opencl": 96 * MIB}


def test(fn):
    TESTS.append(fn)
    return fn


def gen(path, *args):
    p = subprocess.run([sys.executable, GEN, path] + list(args), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"gen-laplace-model {args}: exit {p.returncode}\n{p.stderr[-3000:]}"


def files(d):
    return sorted(f for f in os.listdir(d))


def same_dirs(a, b, what):
    assert files(a) == files(b), (what, files(a), files(b))
    for f in files(a):
        with open(os.path.join(a, f), "rb") as x, open(os.path.join(b, f), "rb") as y:
            assert x.read() == y.read(), f"{what}: {f} differs"


def shards_of(d):
    return [f for f in files(d) if f.endswith(".safetensors")]


def index_of(d):
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        return json.load(f)


def sub_report(rep, names):
    t = [x for x in rep["tensors"] if x["name"] in names]
    q = sum(1 for x in t if x["quantized"])
    return {"tensors": t, "totals": {"tensors_quantized": q, "tensors_kept": len(t) - q}}


def check_index(src, out, quantized):
    """The new index names every output tensor (scales and zero points too) and its shard."""
    idx = index_of(out)
    wm = idx["weight_map"]
    total = 0
    for shard in shards_of(out):
        _, t, _ = tm.read_st(os.path.join(out, shard))
        for name, (_, _, raw) in t.items():
            assert wm.get(name) == shard, (name, wm.get(name), shard)
            total += len(raw)
    assert len(wm) == sum(len(tm.read_st(os.path.join(out, s))[1]) for s in shards_of(out))
    assert idx["metadata"]["total_size"] == total, (idx["metadata"], total)
    for name in quantized:
        assert name + ".qscale" in wm and name + ".qzero" in wm, name
    for f in ("config.json", "tokenizer_config.json"):
        with open(os.path.join(src, f), "rb") as x, open(os.path.join(out, f), "rb") as y:
            assert x.read() == y.read(), f"{f} not copied byte for byte"


@test
def three_shards_round_trip_like_the_single_file():
    d = tm.tmpdir()
    src, single = os.path.join(d, "m"), os.path.join(d, "single.safetensors")
    gen(src, "--shards", "3", "--size-gib", "0.02", "--dtype", "bfloat16", "--seed", "11")
    gen(single, "--size-gib", "0.02", "--dtype", "bfloat16", "--seed", "11")
    assert len(shards_of(src)) == 3
    for gran, bits, scheme, pack in (("channel:0", 8, "symmetric", False), ("group:64", 4, "asymmetric", True)):
        extra = ["--granularity", gran, "--bits", str(bits), "--scheme", scheme] + (["--pack4"] if pack else [])
        q, dq = os.path.join(d, "q"), os.path.join(d, "dq")
        qs = os.path.join(d, "qs.safetensors")
        rep = tm.expect_json(["quantize-model", src, "-o", q] + extra)
        assert rep["totals"]["shards_in"] == 3 and rep["totals"]["shards_out"] == 3, rep["totals"]
        assert rep["totals"]["files_copied"] == 2 and rep["peak_rss"] > 0, rep["totals"]
        assert shards_of(q) == shards_of(src)
        quantized, refs = [], {}
        for shard in shards_of(src):
            _, t, _ = tm.read_st(os.path.join(src, shard))
            want = {k for k, (_, sh, _) in t.items() if len(sh) >= 2}
            refs[shard] = tm.check_quantized(os.path.join(src, shard), os.path.join(q, shard),
                                             sub_report(rep, set(t)), bits, scheme, gran, pack4=pack,
                                             expect_quantized=want)
            quantized += sorted(want)
        check_index(src, q, quantized)
        # The same tensors, byte for byte, as the single file's run.
        tm.expect(["quantize-model", single, "-o", qs] + extra, 0)
        _, one, _ = tm.read_st(qs)
        seen = {}
        for shard in shards_of(q):
            seen.update(tm.read_st(os.path.join(q, shard))[1])
        assert seen == one, "the sharded run's tensors differ from the single file's"
        # Back: shards like the input's, the same index names, the copies.
        drep = tm.expect_json(["dequantize-model", q, "-o", dq, "--memory-limit", "16M"])
        assert drep["totals"]["tensors_dequantized"] == len(quantized), drep["totals"]
        for shard in shards_of(src):
            tm.check_dequantized(os.path.join(src, shard), os.path.join(dq, shard), refs[shard])
        assert index_of(dq)["weight_map"] == index_of(src)["weight_map"]
        for f in ("config.json", "tokenizer_config.json"):
            with open(os.path.join(src, f), "rb") as x, open(os.path.join(dq, f), "rb") as y:
                assert x.read() == y.read(), f
        # The index file itself as input gives the same output.
        q2 = os.path.join(d, "q2")
        tm.expect(["quantize-model", os.path.join(src, "model.safetensors.index.json"), "-o", q2] + extra, 0)
        same_dirs(q, q2, "index path vs directory")
        for p in (q, dq, q2):
            subprocess.run(["rm", "-rf", p], check=True)
        os.unlink(qs)


@test
def memory_limit_max_shard_size_jobs_and_backends_give_identical_bytes():
    d = tm.tmpdir()
    src = os.path.join(d, "m")
    gen(src, "--shards", "3", "--size-gib", "0.03", "--dtype", "bfloat16", "--seed", "12")
    backends = [b for b in tm.available_backends() if b in ("opencl", "cpu")]
    for extra in (["--granularity", "channel:0"],
                  ["--granularity", "group:64", "--bits", "4", "--pack4", "--calib", "percentile:99.9"],
                  ["--granularity", "channel:1", "--bits", "6"]):
        ref = os.path.join(d, "ref")
        tm.expect(["quantize-model", src, "-o", ref, "--memory-limit", "2G"] + extra, 0)
        runs = [["--memory-limit", "16M"], ["--jobs", "2"], ["--jobs", "2", "--memory-limit", "32M"]]
        if "opencl" in backends:
            runs.append(["--backend", "opencl,cpu", "--memory-limit", "32M"])
        else:
            print("SKIPPED --backend opencl,cpu: no OpenCL device")
        for args in runs:
            out = os.path.join(d, "o")
            tm.expect(["quantize-model", src, "-o", out] + [a for a in extra] + args, 0)
            same_dirs(ref, out, " ".join(extra + args))
            subprocess.run(["rm", "-rf", out], check=True)
        # Dequantize with pieces, jobs and two backends: the same files too.
        back = os.path.join(d, "back")
        tm.expect(["dequantize-model", ref, "-o", back, "--memory-limit", "2G"], 0)
        for args in (["--memory-limit", "16M"], ["--jobs", "2"]) + ((["--backend", "opencl,cpu"],)
                                                                      if "opencl" in backends else ()):
            out = os.path.join(d, "o")
            tm.expect(["dequantize-model", ref, "-o", out] + args, 0)
            same_dirs(back, out, "dequantize " + " ".join(args))
            subprocess.run(["rm", "-rf", out], check=True)
        # Re-sharded by size: the same tensors, shards under the limit (but for a lone big tensor).
        rs = os.path.join(d, "rs")
        rep = tm.expect_json(["quantize-model", src, "-o", rs, "--max-shard-size", "2M"] + extra)
        assert rep["totals"]["shards_out"] == len(shards_of(rs)) > 3, rep["totals"]
        a, b = {}, {}
        for s in shards_of(ref):
            a.update(tm.read_st(os.path.join(ref, s))[1])
        for s in shards_of(rs):
            t = tm.read_st(os.path.join(rs, s))[1]
            items = {k[:-7] if k.endswith((".qscale", ".qzero")) else k for k in t}
            assert len(items) == 1 or sum(len(r) for _, _, r in t.values()) <= 2 * MIB, (s, sorted(items))
            b.update(t)
        assert a == b, "--max-shard-size changed the tensors"
        wm = index_of(rs)["weight_map"]
        assert set(wm) == set(b) and all(wm[n] in shards_of(rs) for n in wm)
        for p in (ref, back, rs):
            subprocess.run(["rm", "-rf", p], check=True)
    # Blocks that are not runs of consecutive elements need a whole tensor at once:
    # a limit below that is an error that names the tensor, before anything is written.
    p = tm.expect(["quantize-model", src, "-o", os.path.join(d, "x"), "--granularity", "channel:1",
                   "--memory-limit", "4M"], 1)
    assert "embed_tokens.weight" in p.stderr and "raise the memory limit" in p.stderr, p.stderr
    assert files(d) == ["m"], files(d)


def peak(args):
    return tm.expect_json(args)["peak_rss"]


@test
def peak_rss_stays_under_the_memory_limit():
    if SANITIZED:
        print("SKIPPED peak_rss_stays_under_the_memory_limit: sanitizer build (its shadow memory is in the RSS)")
        return
    d = tm.tmpdir()
    src, tiny = os.path.join(d, "m"), os.path.join(d, "tiny.safetensors")
    gen(src, "--shards", "3", "--size-gib", "0.3", "--dtype", "bfloat16", "--seed", "13")
    gen(tiny, "--size-gib", "0.001", "--dtype", "bfloat16", "--seed", "13")
    size = sum(os.path.getsize(os.path.join(src, s)) for s in shards_of(src))
    for b in [x for x in tm.available_backends() if x in ("cpu", "opencl")]:
        for extra in (["--granularity", "channel:0"], ["--granularity", "group:32", "--bits", "4", "--pack4"]):
            base = peak(["quantize-model", tiny, "-o", os.path.join(d, "t.safetensors"), "--backend", b,
                         "--granularity", "channel:0"] + extra[2:])
            os.unlink(os.path.join(d, "t.safetensors"))
            q = os.path.join(d, "q")
            got = peak(["quantize-model", src, "-o", q, "--backend", b, "--memory-limit", "64M"] + extra)
            bound = 64 * MIB + base + OVERHEAD[b]
            assert got <= bound, f"{b} {extra}: VmHWM {got / MIB:.0f} MiB > {bound / MIB:.0f} MiB"
            back = os.path.join(d, "back")
            dgot = peak(["dequantize-model", q, "-o", back, "--backend", b, "--memory-limit", "64M"])
            assert dgot <= bound, f"{b} dequantize: VmHWM {dgot / MIB:.0f} MiB > {bound / MIB:.0f} MiB"
            tm.note(f"{size / MIB:.0f} MiB model, --memory-limit 64M, {b} {' '.join(extra)}: VmHWM "
                    f"{got / MIB:.0f} MiB quantize, {dgot / MIB:.0f} MiB dequantize (1 MiB model: {base / MIB:.0f} MiB)")
            subprocess.run(["rm", "-rf", q, back], check=True)


@test
def failures_and_cancels_leave_no_output_directory():
    d = tm.tmpdir()
    src = os.path.join(d, "m")
    gen(src, "--shards", "3", "--size-gib", "0.02", "--dtype", "float32", "--seed", "14")
    third = os.path.join(src, shards_of(src)[2])
    # A NaN in the third shard: found while the first two are already written.
    bad = os.path.join(d, "bad")
    subprocess.run(["cp", "-r", src, bad], check=True)
    meta, t, order = tm.read_st(os.path.join(bad, shards_of(bad)[2]))
    name = next(k for k in order if len(t[k][1]) >= 2)
    with open(os.path.join(bad, shards_of(bad)[2]), "rb") as f:
        data = bytearray(f.read())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    off = 8 + n + header[name]["data_offsets"][0] + 40
    data[off:off + 4] = np.array([np.nan], dtype=np.float32).tobytes()
    with open(os.path.join(bad, shards_of(bad)[2]), "wb") as f:
        f.write(data)
    out = os.path.join(d, "out")
    p = tm.expect(["quantize-model", bad, "-o", out, "--memory-limit", "16M"], 1)
    assert "NaN" in p.stderr or "nonfinite" in p.stderr.lower(), p.stderr
    assert name in p.stderr, p.stderr
    assert files(d) == ["bad", "m"], files(d)
    # A corrupt third shard header: refused before anything is written.
    with open(third, "r+b") as f:
        f.seek(3)
        f.write(b"\xff")
    p = tm.expect(["quantize-model", src, "-o", out], 1)
    assert "QK_ERR_FORMAT" in p.stderr and shards_of(src)[2] in p.stderr, p.stderr
    assert files(d) == ["bad", "m"], files(d)
    # The output directory must not exist or be empty.
    good = os.path.join(d, "good")
    gen(good, "--shards", "2", "--size-gib", "0.005", "--dtype", "float32", "--seed", "15")
    os.mkdir(out)
    with open(os.path.join(out, "keep"), "w") as f:
        f.write("x")
    p = tm.expect(["quantize-model", good, "-o", out], 1)
    assert "not empty" in p.stderr, p.stderr
    assert files(out) == ["keep"]
    os.unlink(os.path.join(out, "keep"))
    tm.expect(["quantize-model", good, "-o", out], 0)  # an empty one is fine
    assert len(shards_of(out)) == 2
    subprocess.run(["rm", "-rf", out], check=True)
    # SIGTERM in the middle of a run: everything written so far is removed.
    big = os.path.join(d, "big")
    gen(big, "--shards", "3", "--size-gib", "0.2", "--dtype", "float32", "--seed", "16")
    cmd = [tm.QKERN, "quantize-model", big, "-o", out, "--backend", "cpu", "--calib", "percentile:99.9"]
    t0 = time.monotonic()
    subprocess.run(cmd, capture_output=True, check=True, timeout=600)
    full = time.monotonic() - t0
    subprocess.run(["rm", "-rf", out], check=True)
    with open(tm.child_log(), "ab") as log:  # not in d, which is listed below
        p = subprocess.Popen(cmd, stdout=log, stderr=log)
    time.sleep(full * 0.5)
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=600)
    if rc == 0:
        print("note: the run finished before SIGTERM; nothing learnt from it")
        subprocess.run(["rm", "-rf", out], check=True)
    else:
        assert rc == 128 + signal.SIGTERM, rc  # 143: interrupted, nothing written
    assert files(d) == ["bad", "big", "good", "m"], files(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qkern", required=True, help="path to the qkern binary")
    ap.add_argument("--backend", default="cpu", help="backend for runs that do not name one (default cpu)")
    ap.add_argument("-k", dest="only", help="run only tests whose name contains this")
    ap.add_argument("--sanitized", action="store_true", help="a sanitizer build: peak RSS is not asserted")
    args = ap.parse_args()
    global SANITIZED
    SANITIZED = args.sanitized
    tm.QKERN = os.path.abspath(args.qkern)
    # --jobs runs call OpenCL from worker threads: the rusticl driver's own per-thread
    # allocation is not ours to report (sanitizer builds).
    supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsan.supp")
    os.environ["LSAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("LSAN_OPTIONS"), "suppressions=" + supp]))
    tm.BACKEND = ["--backend", args.backend]
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="qkern-test-sharded-") as tmp:
        tm.TMP = tmp
        for fn in TESTS:
            if args.only and args.only not in fn.__name__:
                continue
            t0 = time.monotonic()
            try:
                fn()
                passed += 1
                print(f"ok   {fn.__name__} ({time.monotonic() - t0:.1f} s)")
            except Exception:  # one failing check must not hide the others
                failed += 1
                print(f"FAIL {fn.__name__}:")
                print("    " + traceback.format_exc().strip().replace("\n", "\n    "))
    for n in tm.NOTES:
        print("note: " + n)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
