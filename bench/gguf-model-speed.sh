#!/usr/bin/env bash
# quantize-model to ggml block formats, measured against ggml's own quantizer
# and a plain read of the file, in the same run (issue 16, item 5).
#
#   bash bench/gguf-model-speed.sh QKERN [MODEL.safetensors] [SCRATCH_DIR]
#
# MODEL defaults to the demo's generated 2.5 GiB float32 model,
# build/demo/laplace-2.5g.safetensors (made here by scripts/gen-laplace-model.py
# --size-gib 2.5 --dtype float32 --seed 2026 --reuse when absent, ~25 s);
# SCRATCH_DIR defaults to build/gguf-speed. For each type T in $TYPES (default
# Q8_0 Q4_0 Q4_K), each round runs, every one from a cold page cache (the
# model's pages dropped with posix_fadvise DONTNEED; nothing system-wide is
# touched):
#   - qkern:  QKERN quantize-model MODEL -o OUT.gguf --type T --backend $BACKEND (default opencl)
#             --jobs $JOBS (default: all cores, as ggml gets; two jobs overlap one
#             tensor's reading and report with another's quantizing)
#   - ggml:   the oracle driver (tests/oracle/ggml_driver.c, ggml-base built
#             from llama-cpp-python's sdist with GGML_NATIVE=OFF) in its model
#             mode: every tensor read from the file, every 2-D tensor whose rows
#             are whole blocks quantized with ggml_quantize_chunk, rows split
#             over $THREADS threads (default: all cores), as llama-quantize does,
#             the others copied; all written to one output file;
#   - read:   the file read once in 16 MiB chunks (Python readinto), nothing else.
# LIBRARY=build/libqkern.so replaces the qkern command by bench/gguf_lib_quantize.py
# (the same work through qk_ggml_quantize on an mmap of the file, raw blocks
# written, no GGUF header), for measuring before quantize-model has --type.
# The best of $ROUNDS rounds (default 3) of each is kept; the rounds interleave
# the three so they see the same machine. Outputs are removed after each run.
# Prints a markdown table with the ratios; timings are wall-clock on a shared
# machine: read them as ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
qkern=${1:?usage: gguf-model-speed.sh QKERN [MODEL.safetensors] [SCRATCH_DIR] (QKERN unused with LIBRARY=)}
model=${2:-$root/build/demo/laplace-2.5g.safetensors}
scratch=${3:-$root/build/gguf-speed}
types=${TYPES:-Q8_0 Q4_0 Q4_K}
rounds=${ROUNDS:-3}
threads=${THREADS:-$(nproc)}
backend=${BACKEND:-opencl}
jobs=${JOBS:-$(nproc)}
mkdir -p "$scratch"

if [ ! -f "$model" ]; then
    mkdir -p "$(dirname "$model")"
    /usr/bin/python3 "$root/scripts/gen-laplace-model.py" "$model" --size-gib 2.5 --dtype float32 --seed 2026 --reuse
fi
driver=$(bash "$root/tests/oracle/build_ggml_oracle.sh" "$root/build" | tail -n 1)

drop() { # cold start for the file $1
    /usr/bin/python3 - "$1" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)
PY
    sync
}

# The tensor list for the driver: "OFFSET ROWS COLS DTYPE Q" per tensor, for a block size.
list() { # block size, output
    /usr/bin/python3 - "$model" "$1" "$2" <<'PY'
import json, struct, sys
path, block, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    head = json.loads(f.read(n))
rows = []
for name, t in head.items():
    if name == "__metadata__":
        continue
    shape, (a, b) = t["shape"], t["data_offsets"]
    cols = shape[-1] if shape else 1
    count = 1
    for s in shape:
        count *= s
    q = int(len(shape) >= 2 and cols % block == 0 and t["dtype"] in ("F32", "F16", "BF16"))
    dt = t["dtype"] if t["dtype"] in ("F32", "F16", "BF16") else "F32"
    if not q and t["dtype"] not in ("F32", "F16", "BF16"):
        raise SystemExit("%s: dtype %s not handled by the driver" % (name, t["dtype"]))
    rows.append((8 + n + a, count // cols, cols, dt, q))
rows.sort()
with open(out, "w") as f:
    for r in rows:
        f.write("%d %d %d %s %d\n" % r)
PY
}

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
minof() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }

plain_read() {
    /usr/bin/python3 - "$model" <<'PY'
import os, sys, time
buf = bytearray(16 << 20)
t = time.perf_counter()
with open(sys.argv[1], "rb", buffering=0) as f:
    while f.readinto(buf):
        pass
print("%.3f" % (time.perf_counter() - t))
PY
}

gtype() { case $1 in Q8_0) echo 8 ;; Q4_0) echo 2 ;; Q4_1) echo 3 ;; Q5_0) echo 6 ;; Q5_1) echo 7 ;;
          Q2_K) echo 10 ;; Q3_K) echo 11 ;; Q4_K) echo 12 ;; Q5_K) echo 13 ;; Q6_K) echo 14 ;;
          *) echo "unknown type $1" >&2; exit 2 ;; esac; }
bsize() { case $1 in Q*_K) echo 256 ;; *) echo 32 ;; esac; }

for t in $types; do list "$(bsize "$t")" "$scratch/list-$t.txt"; done
bytes=$(stat -c %s "$model")
declare -A best_q best_g
best_read=""
for ((r = 1; r <= rounds; r++)); do
    drop "$model"
    best_read=$(minof "$best_read" "$(plain_read)")
    for t in $types; do
        out=$scratch/out-$t.gguf
        rm -f "$out"
        drop "$model"
        t0=$(date +%s.%N)
        if [ -n "${LIBRARY:-}" ]; then
            run=(/usr/bin/python3 "$here/gguf_lib_quantize.py" "$LIBRARY" "$model" "$t" "$out" "$backend")
        else
            run=("$qkern" quantize-model "$model" -o "$out" --type "$t" --backend "$backend" --jobs "$jobs")
        fi
        "${run[@]}" > "$scratch/qkern-$t.log" 2>&1 ||
            { echo "qkern quantize-model --type $t failed:"; tail -n 20 "$scratch/qkern-$t.log"; exit 1; }
        t1=$(date +%s.%N)
        best_q[$t]=$(minof "${best_q[$t]:-}" "$(secs "$t0" "$t1")")
        rm -f "$out"
        drop "$model"
        t0=$(date +%s.%N)
        "$driver" model "$model" "$scratch/list-$t.txt" "$(gtype "$t")" "$threads" "$scratch/ggml-$t.bin" \
            > "$scratch/ggml-$t.log"
        t1=$(date +%s.%N)
        best_g[$t]=$(minof "${best_g[$t]:-}" "$(secs "$t0" "$t1")")
        rm -f "$scratch/ggml-$t.bin"
    done
done

gib=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1073741824 }')
echo "model: $model ($gib GiB); machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "qkern: ${LIBRARY:+qk_ggml_quantize on an mmap of the file (bench/gguf_lib_quantize.py) standing in for }quantize-model --backend $backend --jobs $jobs; ggml: ggml_quantize_chunk on $threads threads; best of $rounds cold runs"
echo "plain read of the file (16 MiB chunks, cold): $best_read s"
echo
echo "| type | qkern $backend s | ggml ($threads threads) s | qkern speed vs ggml | qkern time / plain read | ggml time / plain read |"
echo "|---|---|---|---|---|---|"
for t in $types; do
    awk -v t="$t" -v q="${best_q[$t]}" -v g="${best_g[$t]}" -v r="$best_read" \
        'BEGIN { printf "| %s | %.2f | %.2f | %.2fx | %.2fx | %.2fx |\n", t, q, g, g / q, q / r, g / r }'
done
