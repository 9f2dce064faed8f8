#!/usr/bin/env bash
# Whole-model streaming, measured: peak RSS against --memory-limit, end-to-end
# throughput against this disk's cold read rate (measured in the same run), and
# --jobs 1 against --jobs 2, on a sharded model (make one with
# scripts/gen-laplace-model.py OUT --shards 12 --size-gib 26 --dtype bfloat16).
#
#   bash bench/model-large.sh QKERN MODEL_DIR SCRATCH_DIR [RUNS...]
#
# RUNS (default: all) name the runs: q8 q4 q8j2 dq4. Each run starts cold: the
# model's pages are dropped from the page cache first (posix_fadvise DONTNEED on
# every file, and /proc/sys/vm/drop_caches when writable). Outputs go to
# SCRATCH_DIR and are removed after each run; nothing goes to /dev/null (output
# not shown goes to SCRATCH_DIR too). Prints one markdown table row per
# run; timings are wall-clock on a shared machine, read them as ratios.
set -euo pipefail
qkern=$1 model=$2 scratch=$3
shift 3
runs=${*:-q8 q4 q8j2 dq4}
limit=${QKERN_BENCH_LIMIT:-2G}
backend=${QKERN_BENCH_BACKEND:-opencl}
mkdir -p "$scratch"

drop() { # cold start for the files under $1
  /usr/bin/python3 - "$1" <<'PY'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        fd = os.open(os.path.join(root, f), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
PY
  sync
  # refused in a container (read-only /proc/sys): the message goes to a log in SCRATCH_DIR
  (echo 3 > /proc/sys/vm/drop_caches) 2>> "$scratch/drop_caches.log" || true
}

bytes=$(du -sb "$model" | cut -f1)
gib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1073741824 }'; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

# The disk's cold read rate, over the same files: read in 16 MiB pieces and
# dropped (what `cat > /dev/null` measured, without writing anywhere).
drop "$model"
t0=$(date +%s.%N)
/usr/bin/python3 - "$model"/*.safetensors <<'PY'
import sys
buf = bytearray(16 << 20)
for path in sys.argv[1:]:
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
PY
t1=$(date +%s.%N)
cold=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
echo "model: $model, $(gib "$bytes") GiB; cold read (16 MiB reads): ${cold} s = $(rate "$bytes" "$cold") MB/s"
echo "| run | memory limit | jobs | time (s) | MB/s of input | of the cold read rate | peak RSS (MiB) |"
echo "|---|---|---|---|---|---|---|"

one() { # name, input, extra args...
  local name=$1 in=$2
  shift 2
  local out="$scratch/out-$name"
  rm -rf "$out"
  drop "$in"
  local t0 t1 json
  t0=$(date +%s.%N)
  json=$("$qkern" "$@" "$in" -o "$out" --memory-limit "$limit" --json)
  t1=$(date +%s.%N)
  local secs in_bytes rss jobs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  in_bytes=$(du -sb "$in" | cut -f1)
  rss=$(echo "$json" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["peak_rss"] >> 20)')
  jobs=$(echo "$json" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"])')
  local r
  r=$(rate "$in_bytes" "$secs")
  echo "| $name: $* | $limit | $jobs | $(printf %.1f "$secs") | $r | $(awk -v r="$r" -v c="$(rate "$bytes" "$cold")" 'BEGIN { printf "%.0f%%", 100 * r / c }') | $rss |"
}

for r in $runs; do
  case $r in
  q8) one q8 "$model" quantize-model --backend "$backend" --granularity channel:0 --bits 8 --scheme symmetric ;;
  q4) one q4 "$model" quantize-model --backend "$backend" --granularity group:128 --bits 4 --pack4 ;;
  q8j2) one q8j2 "$model" quantize-model --backend "$backend" --jobs 2 --granularity channel:0 --bits 8 --scheme symmetric ;;
  dq4)
    "$qkern" quantize-model "$model" -o "$scratch/q4" --backend "$backend" --granularity group:128 --bits 4 --pack4 \
      --memory-limit "$limit" > "$scratch/q4.report"
    one dq4 "$scratch/q4" dequantize-model --backend "$backend"
    rm -rf "$scratch/q4" "$scratch/q4.report" ;;
  esac
  rm -rf "$scratch/out-$r"
done
