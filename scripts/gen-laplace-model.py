#!/usr/bin/python3
"""Write a synthetic transformer-shaped safetensors model of a chosen size.

    /usr/bin/python3 scripts/gen-laplace-model.py OUT.safetensors [--size-gib 2.5]
        [--dtype float32|bfloat16|float16] [--seed 2026] [--reuse]
    /usr/bin/python3 scripts/gen-laplace-model.py OUT_DIR --shards N [...]

--shards N writes a sharded checkpoint as Hugging Face publishes them: OUT_DIR
holds model-0000K-of-0000N.safetensors (consecutive tensors, about the same
bytes each), model.safetensors.index.json (its weight_map names each tensor's
shard), config.json and tokenizer_config.json. The tensors and their values are
those of the single file with the same arguments. The directory is written under
a temporary name beside OUT_DIR and renamed into place.

The tensors are those of a decoder-only transformer: an embedding [vocab, d], per
layer q/k/v/o projections [d, d] with biases [d], an MLP up [4d, d] (bias [4d]) and
down [d, 4d] (bias [d]), two norms (weight and bias, [d]), and a final norm. The
width d, the layer count and the vocabulary are chosen so the data section is
--size-gib GiB (to within one embedding row block). Weights and biases are
Laplace(0, 0.02) with a handful of outliers per tensor (2..8 values of magnitude 1..4,
either sign), as trained weights are; norm weights are 1 + Laplace(0, 0.02), norm
biases Laplace(0, 0.02). Every tensor is seeded from (--seed, its index), so a file is
reproducible whatever the chunking.

The file is streamed: the header is known from the shapes alone, then each tensor
is generated and written in chunks of at most CHUNK elements, so memory stays near
one chunk whatever the size. It is written to a temporary file beside OUT and
renamed into place after an fsync: an interrupted run (Ctrl-C, SIGTERM, an error)
removes the temporary and never leaves a partial OUT (SIGKILL may leave the hidden
temporary .OUT.tmp.*, never OUT).

bfloat16 has no numpy dtype: values are generated in float32 and rounded to
nearest, ties to even, on the upper 16 bits, written as uint16 bits.

--reuse: if OUT exists and its header records the same parameters and its size is
the expected one, print so and exit without writing (the demo's cache).

The last line on stdout says what was written (or reused): tensors, elements, bytes,
d, layers, vocab.
"""

import argparse
import json
import math
import os
import signal
import struct
import sys
import tempfile
import time

import numpy as np

CHUNK = 1 << 23  # elements generated at once: 32 MiB of float32
SCALE = 0.02
GENERATOR = "qkern scripts/gen-laplace-model.py v1"
DTYPES = {  # name: (safetensors dtype, bytes per element)
    "float32": ("F32", 4),
    "bfloat16": ("BF16", 2),
    "float16": ("F16", 2),
}
WIDTHS = [64 * k for k in (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128)]
MIN_LAYERS = 8


# ---- the architecture ---------------------------------------------------------------

def layer_tensors(i, d):
    """(name, shape, kind) of one transformer layer; kind is weight, bias or norm."""
    p = f"layers.{i}."
    out = []
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        out += [(p + f"attn.{proj}.weight", (d, d), "weight"), (p + f"attn.{proj}.bias", (d,), "bias")]
    out += [(p + "mlp.up_proj.weight", (4 * d, d), "weight"), (p + "mlp.up_proj.bias", (4 * d,), "bias"),
            (p + "mlp.down_proj.weight", (d, 4 * d), "weight"), (p + "mlp.down_proj.bias", (d,), "bias")]
    for norm in ("input_norm", "post_attn_norm"):
        out += [(p + f"{norm}.weight", (d,), "norm"), (p + f"{norm}.bias", (d,), "bias")]
    return out


def per_layer(d):
    return sum(math.prod(s) for _, s, _ in layer_tensors(0, d))


def architecture(elements):
    """(d, layers, vocab) whose element count is close to `elements`.

    The widest d that still gives MIN_LAYERS layers with a vocabulary of 16 d, then
    the vocabulary (a multiple of 64) takes up the remainder, so sizes are hit to
    within 64 d elements rather than a whole layer."""
    d = WIDTHS[0]
    for w in WIDTHS:
        if elements - 16 * w * w - 2 * w >= MIN_LAYERS * per_layer(w):
            d = w
    layers = max(1, int((elements - 16 * d * d - 2 * d) // per_layer(d)))
    rest = elements - layers * per_layer(d) - 2 * d
    vocab = max(64, int(round(rest / d / 64)) * 64)
    return d, layers, vocab


def tensors_of(d, layers, vocab):
    out = [("embed_tokens.weight", (vocab, d), "weight")]
    for i in range(layers):
        out += layer_tensors(i, d)
    out += [("final_norm.weight", (d,), "norm"), ("final_norm.bias", (d,), "bias")]
    return out


# ---- values --------------------------------------------------------------------------

def f32_to_bf16(a):
    """float32 -> bfloat16 bits, to nearest, ties to even (torch's .to(torch.bfloat16)).
    NaN cannot occur here (Laplace values and outliers are finite)."""
    u = a.view(np.uint32)
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)


def outliers(rng, n, kind):
    """{flat index: value}: 2..8 values of magnitude 1..4 with random signs."""
    if kind == "norm" or n < 16:
        return {}
    k = int(rng.integers(2, 9))
    idx = rng.choice(n, size=k, replace=False)
    val = rng.uniform(1.0, 4.0, size=k) * rng.choice([-1.0, 1.0], size=k)
    return dict(zip(idx.tolist(), val.tolist()))


def chunks(index, shape, kind, seed):
    """The tensor's values as float32 arrays of at most CHUNK elements, in order."""
    n = math.prod(shape)
    rng = np.random.default_rng([seed, index])
    spikes = outliers(rng, n, kind)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        x = rng.laplace(0.0, SCALE, m).astype(np.float32)
        if kind == "norm":
            x += np.float32(1.0)
        for i, v in spikes.items():
            if start <= i < start + m:
                x[i - start] = v
        yield x


def encode(x, dtype):
    if dtype == "bfloat16":
        return f32_to_bf16(x)
    if dtype == "float16":
        return x.astype(np.float16)
    return x


# ---- the file --------------------------------------------------------------------------

def header_bytes(tensors, st_dtype, esize, meta):
    header, off = {"__metadata__": meta}, 0
    for name, shape, _ in tensors:
        nbytes = math.prod(shape) * esize
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # keeps every tensor aligned, as the official writer does
    return struct.pack("<Q", len(h)) + h, off


def read_metadata(path):
    """The __metadata__ of an existing safetensors file, or None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > 100_000_000:
                return None
            return json.loads(f.read(n)).get("__metadata__")
    except (OSError, ValueError, struct.error):
        return None


class Interrupted(Exception):
    pass


def on_signal(sig, _frame):
    raise Interrupted(signal.Signals(sig).name)


def write_model(out, tensors, dtype, seed, head, total):
    """Header then data into a temporary beside out; fsync; rename. Removes the
    temporary on any failure or caught signal."""
    directory = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".tmp.", dir=directory)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            f.write(head)
            written = 0
            for i, (_, shape, kind) in enumerate(tensors):
                for x in chunks(i, shape, kind, seed):
                    written += f.write(memoryview(encode(x, dtype)).cast("B"))
            if written != total:
                raise OSError(f"wrote {written} data bytes, expected {total}")
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would surprise whoever reads the model
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def split(tensors, esize, shards):
    """Consecutive groups of about total/shards bytes each (never an empty one)."""
    sizes = [math.prod(shape) * esize for _, shape, _ in tensors]
    target, groups, cur, acc = sum(sizes) / shards, [], [], 0
    for i, size in enumerate(sizes):
        left_tensors, left_groups = len(sizes) - i, shards - len(groups) - 1
        if cur and (acc + size / 2 > target * (len(groups) + 1) or left_tensors <= left_groups - 0):
            if len(groups) < shards - 1:
                groups.append(cur)
                cur = []
        cur.append(i)
        acc += size
    groups.append(cur)
    return groups


def write_sharded(out, tensors, dtype, seed, meta, d, layers, vocab, shards):
    """Shards, index and config into a temporary directory beside out, renamed into place."""
    st_dtype, esize = DTYPES[dtype]
    parent = os.path.dirname(os.path.abspath(out))
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out.rstrip("/")) + ".tmp.", dir=parent)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        groups = split(tensors, esize, shards)
        weight_map, total_size = {}, 0
        for k, group in enumerate(groups):
            name = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
            part = [tensors[i] for i in group]
            head, total = header_bytes(part, st_dtype, esize, {"format": "pt"})
            with open(os.path.join(tmp, name), "wb", buffering=0) as f:
                f.write(head)
                for i in group:
                    _, shape, kind = tensors[i]
                    for x in chunks(i, shape, kind, seed):
                        f.write(memoryview(encode(x, dtype)).cast("B"))
                os.fsync(f.fileno())
            for tname, _, _ in part:
                weight_map[tname] = name
            total_size += total
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}, f,
                      indent=2)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump({"architectures": ["LaplaceForCausalLM"], "hidden_size": d, "intermediate_size": 4 * d,
                       "num_hidden_layers": layers, "vocab_size": vocab, "torch_dtype": dtype,
                       "qkern_generator": meta}, f, indent=2)
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump({"model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    except BaseException:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return len(groups)


def sharded_is_current(out, meta, shards):
    try:
        with open(os.path.join(out, "config.json")) as f:
            if json.load(f).get("qkern_generator") != meta:
                return False
        with open(os.path.join(out, "model.safetensors.index.json")) as f:
            files = set(json.load(f)["weight_map"].values())
        return len(files) == shards and all(os.path.isfile(os.path.join(out, n)) for n in files)
    except (OSError, ValueError, KeyError):
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the .safetensors file to write")
    ap.add_argument("--size-gib", type=float, default=2.5, help="data size in GiB (default 2.5)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="element type (default float32)")
    ap.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep an existing OUT written with the same parameters")
    ap.add_argument("--shards", type=int, default=0, help="write OUT as a directory of this many shards")
    a = ap.parse_args()
    if a.shards < 0 or a.shards > 10000:
        ap.error("--shards must be in 1..10000")
    if not 0 < a.size_gib <= 1024:
        ap.error("--size-gib must be in (0, 1024]")
    if a.seed < 0:
        ap.error("--seed must be >= 0")

    st_dtype, esize = DTYPES[a.dtype]
    d, layers, vocab = architecture(a.size_gib * 2**30 / esize)
    tensors = tensors_of(d, layers, vocab)
    meta = {"generator": GENERATOR, "dtype": a.dtype, "seed": str(a.seed), "size_gib": repr(a.size_gib),
            "laplace_scale": repr(SCALE), "d_model": str(d), "layers": str(layers), "vocab": str(vocab)}
    head, total = header_bytes(tensors, st_dtype, esize, meta)
    elements = total // esize
    what = (f"{len(tensors)} tensors, {elements} {a.dtype} elements, {(len(head) + total) / 2**30:.3f} GiB "
            f"(d {d}, {layers} layers, vocab {vocab})")

    if a.shards:
        meta["shards"] = str(a.shards)
        if a.reuse and sharded_is_current(a.out, meta, a.shards):
            print(f"{a.out}: reused: {what}, {a.shards} shards")
            return 0
        t0 = time.monotonic()
        try:
            if os.path.exists(a.out):
                if not os.path.isdir(a.out) or os.listdir(a.out):
                    print(f"gen-laplace-model: {a.out} exists and is not an empty directory", file=sys.stderr)
                    return 1
                os.rmdir(a.out)
            n = write_sharded(a.out, tensors, a.dtype, a.seed, meta, d, layers, vocab, a.shards)
        except Interrupted as e:
            print(f"gen-laplace-model: interrupted ({e}): nothing written", file=sys.stderr)
            return 130
        except OSError as e:
            print(f"gen-laplace-model: {a.out}: {e}", file=sys.stderr)
            return 1
        print(f"{a.out}: written in {time.monotonic() - t0:.1f} s: {what}, {n} shards")
        return 0
    if a.reuse and read_metadata(a.out) == meta and os.path.getsize(a.out) == len(head) + total:
        print(f"{a.out}: reused: {what}")
        return 0
    t0 = time.monotonic()
    try:
        write_model(a.out, tensors, a.dtype, a.seed, head, total)
    except Interrupted as e:
        print(f"gen-laplace-model: interrupted ({e}): nothing written", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"gen-laplace-model: {a.out}: {e}", file=sys.stderr)
        return 1
    print(f"{a.out}: written in {time.monotonic() - t0:.1f} s: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
