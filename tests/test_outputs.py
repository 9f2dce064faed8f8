#!/usr/bin/env python3
"""Outputs that never hurt the user (host/io/atomic_file.h, README "Outputs").

For every command that writes (quantize, dequantize, quantize-model,
dequantize-model): character devices, FIFOs, sockets and "-" are written in
place; symbolic links stay links; modes and owners are kept; unwritable
targets are refused (as an unprivileged user, through setpriv); output = input
is a usage error; kill -9, a file-size limit and SIGINT/SIGTERM leave every
target and directory as they were. Runs as root (CI does); everything happens
in a temporary directory. Run as:
    python3 tests/test_outputs.py --qkern build/qkern
"""
import argparse
import hashlib
import io
import json
import os
import pty
import random
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

QKERN = None
TESTS = []
NOBODY = 65534


def test(fn):
    TESTS.append(fn)
    return fn


def note(msg):
    print(msg, flush=True)


def st_bytes(tensors, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors:
        b = np.ascontiguousarray(arr).tobytes()
        dt = {np.float32: "F32", np.float16: "F16", np.int64: "I64"}[arr.dtype.type]
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def parse_st(data):
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    end = max([v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"] + [0])
    assert len(body) == end, (len(body), end)
    return header


def valid_output(kind, data):
    """kind: 'npy' or 'st'; raises when data is not a whole file of that kind."""
    if kind == "npy":
        a = np.load(io.BytesIO(data))
        assert a.size > 0
    else:
        parse_st(data)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def listing(d):
    """Names, kinds and contents' hashes of everything in d (links not followed)."""
    out = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            out[name] = ("f", digest(p), stat.S_IMODE(st.st_mode))
        elif stat.S_ISLNK(st.st_mode):
            out[name] = ("l", os.readlink(p))
        else:
            out[name] = ("o", stat.S_IFMT(st.st_mode))
    return out


class Fixture:
    """Inputs for every writing command, made once, in a directory of their own."""

    def __init__(self, root):
        self.dir = os.path.join(root, "inputs")
        os.mkdir(self.dir)
        os.chmod(root, 0o755)
        os.chmod(self.dir, 0o755)
        rng = np.random.default_rng(13)
        self.x = os.path.join(self.dir, "x.npy")
        np.save(self.x, rng.standard_normal((64, 160)).astype(np.float32))
        self.codes = os.path.join(self.dir, "codes.npy")
        np.save(self.codes, rng.integers(0, 256, (64, 160)).astype(np.uint8))
        self.model = os.path.join(self.dir, "m.safetensors")
        with open(self.model, "wb") as f:
            f.write(st_bytes([("w", rng.standard_normal((64, 96)).astype(np.float32)),
                              ("b", rng.standard_normal(64).astype(np.float32))]))
        self.qmodel = os.path.join(self.dir, "q.safetensors")
        run(["quantize-model", self.model, "-o", self.qmodel], check=True)

    def commands(self):
        """(name, argv without -o, input path, output kind)."""
        return [
            ("quantize", ["quantize", self.x], self.x, "npy"),
            ("dequantize", ["dequantize", self.codes, "--scale", "0.5", "--zero-point", "3"], self.codes, "npy"),
            ("quantize-model", ["quantize-model", self.model], self.model, "st"),
            ("dequantize-model", ["dequantize-model", self.qmodel], self.qmodel, "st"),
        ]


def run(args, check=False, env=None, **kw):
    cmd = [QKERN] + list(args) + ["--backend", "cpu"]
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(cmd, capture_output=True, text=kw.pop("text", True), timeout=600, env=e, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr}")
    return p


def workdir(root, name):
    d = os.path.join(root, name)
    os.mkdir(d)
    return d


def child_log(root):
    """The path of a file for the output of children nobody reads (runs killed on
    purpose; append to it): in a fresh directory of its own, never a workdir a test
    lists, and never /dev/null (tests run as root and write no system path)."""
    return os.path.join(tempfile.mkdtemp(prefix="child-log.", dir=root), "child.log")


@test
def character_devices_stay_devices(fx, root):
    d = workdir(root, "chr")
    for name, args, _, _ in fx.commands():
        null, full = os.path.join(d, "null"), os.path.join(d, "full")
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        p = run(args + ["-o", null])
        assert p.returncode == 0, (name, p.stderr)
        st = os.lstat(null)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3), (name, st)
        # /dev/full proves the bytes go to the device: writing there fails with ENOSPC.
        p = run(args + ["-o", full])
        assert p.returncode == 1 and "No space left" in p.stderr, (name, p.returncode, p.stderr)
        st = os.lstat(full)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 7), (name, st)
        assert sorted(os.listdir(d)) == ["full", "null"], os.listdir(d)
        os.unlink(null)
        os.unlink(full)


def read_all(f, sink):
    while True:
        b = f.read(1 << 16)
        if not b:
            break
        sink.append(b)


@test
def fifos_and_sockets_get_valid_bytes(fx, root):
    d = workdir(root, "fifo")
    for name, args, _, kind in fx.commands():
        fifo = os.path.join(d, "out.fifo")
        os.mkfifo(fifo)
        got = []
        t = threading.Thread(target=lambda: read_all(open(fifo, "rb"), got))
        t.start()
        p = run(args + ["-o", fifo])
        t.join(60)
        assert p.returncode == 0, (name, p.stderr)
        valid_output(kind, b"".join(got))
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        os.unlink(fifo)

        sock = os.path.join(d, "out.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(sock)
        srv.listen(1)
        got = []

        def serve():
            c, _ = srv.accept()
            with c.makefile("rb") as f:
                read_all(f, got)
            c.close()
        t = threading.Thread(target=serve)
        t.start()
        p = run(args + ["-o", sock])
        t.join(60)
        srv.close()
        assert p.returncode == 0, (name, p.stderr)
        valid_output(kind, b"".join(got))
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        os.unlink(sock)
        assert os.listdir(d) == [], os.listdir(d)


@test
def stdout_pipe_and_terminal(fx, root):
    for name, args, _, kind in fx.commands():
        p = run(args + ["-o", "-"], text=False)
        assert p.returncode == 0, (name, p.stderr)
        valid_output(kind, p.stdout)  # the report went to stderr
        assert b"->" in p.stderr, p.stderr
        # /dev/stdout style: a link to /proc/self/fd/1, a pipe that has no path
        link = os.path.join(root, "stdout-link")
        if not os.path.islink(link):
            os.symlink("/proc/self/fd/1", link)
        p = run(args + ["-o", link], text=False)
        assert p.returncode == 0, (name, p.stderr)
        valid_output(kind, p.stdout)  # the report moved to stderr here too
        assert b"->" in p.stderr, p.stderr
        # a terminal is refused: usage error, nothing written
        master, slave = pty.openpty()
        try:
            q = subprocess.run([QKERN] + args + ["-o", "-", "--backend", "cpu"], stdout=slave,
                               stderr=subprocess.PIPE, text=True, timeout=60)
        finally:
            os.close(slave)
            os.close(master)
        assert q.returncode == 2 and "terminal" in q.stderr, (name, q.returncode, q.stderr)


@test
def links_modes_and_owners(fx, root):
    d = workdir(root, "links")
    other = workdir(root, "links-target")
    for name, args, _, kind in fx.commands():
        target = os.path.join(other, "t.out")
        with open(target, "wb") as f:
            f.write(b"old")
        os.chmod(target, 0o640)
        os.chown(target, NOBODY, NOBODY)
        link = os.path.join(d, "link.out")
        os.symlink(os.path.relpath(target, d), link)
        chain = os.path.join(d, "chain.out")
        os.symlink("link.out", chain)
        p = run(args + ["-o", chain])
        assert p.returncode == 0, (name, p.stderr)
        assert os.path.islink(link) and os.path.islink(chain), name
        with open(target, "rb") as f:
            valid_output(kind, f.read())
        st = os.stat(target)
        assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (NOBODY, NOBODY), (name, st)
        assert sorted(os.listdir(d)) == ["chain.out", "link.out"] and os.listdir(other) == ["t.out"]
        # a dangling link: its target is created, the link stays
        os.unlink(target)
        p = run(args + ["-o", link])
        assert p.returncode == 0 and os.path.islink(link) and os.path.isfile(target), (name, p.stderr)
        for mode in (0o444, 0o600, 0o755):
            os.chmod(target, mode)
            p = run(args + ["-o", target])
            assert p.returncode == 0, (name, p.stderr)
            assert stat.S_IMODE(os.stat(target).st_mode) == mode, (name, oct(os.stat(target).st_mode))
        for p_ in (chain, link, target):
            os.unlink(p_)


def as_nobody(argv, env=None):
    e = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    e.update(env or {})
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] + argv,
                          capture_output=True, text=True, timeout=120, env=e)


@test
def unwritable_targets_are_refused(fx, root):
    if shutil.which("setpriv") is None:
        note("SKIPPED unwritable_targets_are_refused: setpriv (util-linux) is missing")
        return
    d = workdir(root, "perm")
    os.chmod(d, 0o777)  # anyone may create files here, but not overwrite root's read-only ones
    exe = os.path.join(root, "qkern-copy")  # the build tree may not be readable by nobody
    if not os.path.exists(exe):
        shutil.copy2(QKERN, exe)
        os.chmod(exe, 0o755)
    for name, args, _, kind in fx.commands():
        target = os.path.join(d, "t.out")
        with open(target, "wb") as f:
            f.write(b"root's")
        os.chmod(target, 0o444)
        before = listing(d)
        p = as_nobody([exe] + args[:] + ["-o", target, "--backend", "cpu"])
        assert p.returncode == 1 and "may not be written" in p.stderr, (name, p.returncode, p.stderr)
        assert listing(d) == before, name
        # a directory nobody may not write: refused before any work
        ro = workdir(root, f"ro-{name}")
        os.chmod(ro, 0o755)
        p = as_nobody([exe] + args + ["-o", os.path.join(ro, "new.out"), "--backend", "cpu"])
        assert p.returncode == 1 and "cannot create files" in p.stderr, (name, p.returncode, p.stderr)
        assert os.listdir(ro) == []
        # and what nobody may write works, keeping nobody's mode
        mine = os.path.join(d, "mine.out")
        p = as_nobody([exe] + args + ["-o", mine, "--backend", "cpu"])
        assert p.returncode == 0, (name, p.stderr)
        with open(mine, "rb") as f:
            valid_output(kind, f.read())
        assert os.stat(mine).st_uid == NOBODY
        os.unlink(mine)
        os.unlink(target)


@test
def output_equal_to_input_is_refused(fx, root):
    d = workdir(root, "same")
    for name, args, inp, _ in fx.commands():
        sym, hard = os.path.join(d, "sym"), os.path.join(d, "hard")
        os.symlink(inp, sym)
        os.link(inp, hard)
        before = digest(inp)
        for o in (inp, sym, hard):
            p = run(args + ["-o", o])
            assert p.returncode == 2 and "is the input" in p.stderr, (name, o, p.returncode, p.stderr)
        # the input given through a link, the output the file itself
        p = run([args[0], hard] + args[2:] + ["-o", inp])
        assert p.returncode == 2, (name, p.stderr)
        assert digest(inp) == before and os.path.islink(sym)
        os.unlink(sym)
        os.unlink(hard)


def limit_fsize(nbytes):
    def f():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return f


@test
def file_size_limit(fx, root):
    d = workdir(root, "ulimit")
    old = os.path.join(d, "old.out")
    with open(old, "wb") as f:
        f.write(b"x" * 100)
    for named in ("0", "1"):
        for name, args, _, _ in fx.commands():
            before = listing(d)
            for o in (old, os.path.join(d, "new.out")):
                p = subprocess.run([QKERN] + args + ["-o", o, "--backend", "cpu"], capture_output=True,
                                   text=True, timeout=120, preexec_fn=limit_fsize(4096),
                                   env=dict(os.environ, QKERN_ATOMIC_NAMED=named))
                assert p.returncode == 1, (name, named, p.returncode, p.stderr)
                assert "file size limit" in p.stderr, (name, p.stderr)
                assert listing(d) == before, (name, named, listing(d))


def big_codes(root):
    """~50 MB of uint8 codes: dequantize writes ~200 MB of float32."""
    path = os.path.join(root, "inputs", "big-codes.npy")
    if not os.path.exists(path):
        n = int(os.environ.get("QK_TEST_OUTPUTS_MB", "200")) * (1 << 20) // 4
        np.save(path, np.random.default_rng(5).integers(0, 256, n, dtype=np.uint8))
    return path


def timed_run(argv):
    t0 = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    return time.monotonic() - t0


@test
def kill_9_leaves_nothing(fx, root):
    d = workdir(root, "kill9")
    src = big_codes(root)
    out = os.path.join(d, "out.npy")
    with open(os.path.join(d, "keep.txt"), "w") as f:
        f.write("kept")
    argv = [QKERN, "dequantize", src, "--scale", "0.25", "--zero-point", "7", "-o", out, "--backend", "cpu"]
    full = timed_run(argv)
    whole = digest(out)
    os.unlink(out)
    rng = random.Random(2026)
    outcomes = {"untouched": 0, "complete": 0}
    log = child_log(root)
    for k in range(20):
        if os.path.exists(out):  # half the runs replace an old output, half create one
            os.unlink(out)
        if k % 2:
            with open(out, "wb") as f:
                f.write(b"old output")
        before = listing(d)
        with open(log, "ab") as f:  # the child has its own copy of the descriptor
            p = subprocess.Popen(argv, stdout=f, stderr=f)
        time.sleep(rng.uniform(0.0, full * 1.1))
        p.kill()
        p.wait(60)
        after = listing(d)
        if after == before:
            outcomes["untouched"] += 1
        else:
            assert set(after) == set(before) | {"out.npy"}, (k, sorted(after))
            assert {n: v for n, v in after.items() if n != "out.npy"} == \
                {n: v for n, v in before.items() if n != "out.npy"}, k
            assert after["out.npy"][1] == whole, f"kill -9 #{k} left an incomplete out.npy"
            outcomes["complete"] += 1
    # The named fallback cannot avoid a leftover after kill -9; the next run into
    # that directory removes it (its process is gone).
    env = dict(os.environ, QKERN_ATOMIC_NAMED="1")
    os.unlink(out) if os.path.exists(out) else None
    before = listing(d)
    with open(log, "ab") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=f, env=env)
    time.sleep(full * 0.5)
    p.kill()
    p.wait(60)
    stray = [n for n in os.listdir(d) if n not in before and n != "out.npy"]
    assert all(n.startswith(".out.npy.qkern-") for n in stray), stray
    subprocess.run(argv, check=True, capture_output=True, env=env, timeout=600)
    assert set(os.listdir(d)) == set(before) | {"out.npy"}, os.listdir(d)
    note(f"kill -9 at 20 moments of a {full:.2f} s run ({os.path.getsize(out) >> 20} MB): "
         f"{outcomes['untouched']} untouched, {outcomes['complete']} complete; named leftovers: {len(stray)}, "
         "removed by the next run")


@test
def sigint_sigterm_leave_targets(fx, root):
    d = workdir(root, "signals")
    src = big_codes(root)
    out = os.path.join(d, "out.npy")
    argv = [QKERN, "dequantize", src, "--scale", "0.25", "--zero-point", "7", "-o", out, "--backend", "cpu"]
    full = timed_run(argv)
    whole = digest(out)
    rng = random.Random(7)
    seen = {}
    log = child_log(root)
    for k in range(12):
        sig = (signal.SIGINT, signal.SIGTERM)[k % 2]
        named = "1" if k % 3 == 2 else "0"
        with open(out, "wb") as f:
            f.write(b"old output")
        os.chmod(out, 0o600)
        before = listing(d)
        with open(log, "ab") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.PIPE,
                                 env=dict(os.environ, QKERN_ATOMIC_NAMED=named))
        time.sleep(rng.uniform(0.0, full * 1.1))
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        after = listing(d)
        if p.returncode == 0:  # finished before the signal counted: the whole new output
            assert after["out.npy"][1] == whole and set(after) == set(before), (k, sorted(after))
            seen["finished"] = seen.get("finished", 0) + 1
            continue
        assert p.returncode == 128 + sig, (k, sig, p.returncode, err)
        assert after == before, (k, sig, sorted(after))
        assert b"interrupted" in err, err
        seen[sig.name] = seen.get(sig.name, 0) + 1
    note(f"SIGINT/SIGTERM at 12 moments of a {full:.2f} s run: {seen}")


def main():
    global QKERN
    ap = argparse.ArgumentParser()
    ap.add_argument("--qkern", required=True)
    ap.add_argument("-k", help="run only tests whose name contains this")
    args = ap.parse_args()
    QKERN = os.path.abspath(args.qkern)
    if os.geteuid() != 0:
        print("SKIPPED: these checks need root (mknod, chown, setpriv), as CI runs them")
        return 77
    root = tempfile.mkdtemp(prefix="qkern-test-outputs-")
    failed = 0
    try:
        fx = Fixture(root)
        for fn in TESTS:
            if args.k and args.k not in fn.__name__:
                continue
            t0 = time.monotonic()
            try:
                fn(fx, root)
                note(f"ok {fn.__name__} ({time.monotonic() - t0:.1f} s)")
            except Exception:
                failed += 1
                print(f"FAIL {fn.__name__}:")
                traceback.print_exc(file=sys.stdout)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{len(TESTS) - failed} passed, {failed} failed" if not args.k else f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
