#!/usr/bin/env bash
# qkern's first-GPU check: one script for the first 15 minutes on a GPU machine
# (and for a user who wants to trust qkern on their own GPU).
#
#   scripts/gpu-check.sh OUTDIR
#
# For a machine with one H100/H200 (sm_90), nvcc, compute-sanitizer and ncu
# (PyTorch where installed). It first looks for a CUDA device and, without
# one, exits 2 at once saying so. With one it runs these steps in at most
# about 8 minutes, each with its own time limit, and does not stop at the
# first failure:
#
#   build      configure and build (Release, all cores, sm_90 only)
#   ctest      the whole ctest with the CUDA tests running: a CUDA test that
#              skips is a failure here
#   ctest48m   the CUDA tests again with QKERN_DEVICE_MEMORY_LIMIT=48M (the
#              chunked, staged paths)
#   huge       test_cuda_huge: 2^31 + 17 elements (about 12 GB of host and
#              11 GB of device memory)
#   sanitizer  compute-sanitizer memcheck and racecheck on a subset (about 2 min)
#   bench      bench/compare.py from 2^16 to 2^28 elements, PyTorch beside it
#              where installed (skipped, and said so, where it is not)
#   ncu        Nsight Compute on the error-pass and radix-select kernels of a
#              grid search (a few metrics)
#
# and prints a one-screen summary (step, PASS/FAIL/SKIP/TIMEOUT, seconds). It
# writes at most 8 files into OUTDIR: build.log, ctest.log, huge.log,
# sanitizer.log, bench.csv, bench.png, ncu.csv, summary.txt. Exit status: 0 when
# every step passed (or was skipped with a reason), 1 when one failed, 2 when
# there is no CUDA device, 64 on bad usage.
#
# Environment:
#   QKERN_GPU_CHECK_BUILD    build directory (default build-gpu-check in the repository)
#   QKERN_GPU_CHECK_ARCH     CUDA architectures to build (default 90-real)
#   QKERN_GPU_CHECK_STEPS    a comma list of the steps above (default: all)
#   QKERN_GPU_CHECK_SECONDS  the whole run's limit (default 470; steps get what is left)
#   QKERN_GPU_CHECK_DEBS     a folder of .deb files (libcmocka-dev, libcjson-dev and
#                            their libraries: `apt-get download` them elsewhere) for a
#                            GPU machine without them and without a network
#   QKERN_GPU_CHECK_DRY=1    dry run for a machine without a GPU: no device
#                            check; every step's command runs on the backend
#                            QKERN_GPU_CHECK_BACKEND (cpu or opencl) with small
#                            sizes, compute-sanitizer and ncu left out (their
#                            wrapped commands still run); an existing, configured
#                            build directory is built as it is (no reconfigure)
#   QKERN_GPU_CHECK_CTEST    dry run only: the ctest -R regex of the ctest steps
set -uo pipefail

# ---- the steps (each runs as "gpu-check.sh --run-step NAME" under its time limit) ------

do_build() {
    set -e
    if [ "$DRY" = 1 ] && [ -f "$BUILD/CMakeCache.txt" ]; then
        echo "dry run: $BUILD is configured already: built as it is"
    else
        # a bare GPU machine may lack the build's libraries (and a network):
        # .deb files in QKERN_GPU_CHECK_DEBS, else apt-get
        local missing
        if ! missing=$(pkg-config --exists --print-errors cmocka libcjson 2>&1); then
            echo "cmocka or cJSON development files are missing: installing them"
            echo "$missing"
            if [ -n "${QKERN_GPU_CHECK_DEBS:-}" ]; then
                dpkg -i "$QKERN_GPU_CHECK_DEBS"/*.deb
            else
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                    libcmocka-dev libcjson-dev pkg-config
            fi
        fi
        local arch=()
        [ "$DRY" = 1 ] || arch=(-DQKERN_CUDA_ARCHITECTURES="$ARCH")
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${arch[@]}"
    fi
    cmake --build "$BUILD" -j "$JOBS"
    "$BUILD/qkern" info
}

# run_ctest ENV...: ctest in BUILD with the environment given; the backend's
# tests (named after it; all of them on a GPU) must pass, not skip.
run_ctest() {
    # left out: this check itself, the huge test (a step of its own), and the
    # CPU-only long runs CI covers (the benchmark harness, whole models, fuzzing)
    local args=(--output-on-failure -j "$JOBS" --timeout 300 -E 'gpu_check|test_cuda_huge|^bench$|^model$|fuzz')
    [ -n "$QK_CTEST_REGEX" ] && args+=(-R "$QK_CTEST_REGEX")
    local log="$TMP/ctest.$$"
    # from a folder of its own that includes BUILD's tests: ctest's Testing/
    # logs go there, not over those of a ctest that may be running this (the dry run)
    mkdir -p "$TMP/ctest"
    printf 'subdirs("%s")\n' "$BUILD" > "$TMP/ctest/CTestTestfile.cmake"
    (cd "$TMP/ctest" && env "$@" ctest "${args[@]}") 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local skipped
    skipped=$(grep -E '^[[:space:]]*[0-9]+ - .*\(Skipped\)' "$log" | grep -E "$BACKEND" || true)
    if [ -n "$skipped" ]; then
        echo "FAIL: $BACKEND tests skipped (they must run here):"
        echo "$skipped"
        return 1
    fi
    if [ "$BACKEND" = cuda ] && ! grep -qE '_cuda|cuda' "$log"; then
        echo "FAIL: no CUDA test ran"
        return 1
    fi
    return "$rc"
}

do_ctest() {
    run_ctest
}

do_ctest48m() {
    local saved=$QK_CTEST_REGEX
    # the device backends' tests; the CPU reference has no device memory to limit
    [ -n "$saved" ] || QK_CTEST_REGEX="_$BACKEND|cuda"
    [ "$BACKEND" = cpu ] && [ -z "$saved" ] && QK_CTEST_REGEX='^test_(ops|calibrate|blocks|segments|large)$'
    run_ctest QKERN_DEVICE_MEMORY_LIMIT=48M
}

do_huge() {
    if [ "$DRY" = 1 ]; then
        # the same code paths past 2^31 cannot be had without a device; the
        # executable runs and must say why it skips
        "$BUILD/tests/test_cuda_huge"
        local rc=$?
        [ "$rc" -eq 77 ] && { echo "SKIP: dry run: test_cuda_huge needs a CUDA device (it said so)"; return 77; }
        return "$rc"
    fi
    QKERN_TEST_HUGE=1 "$BUILD/tests/test_cuda_huge"
}

# each run under memcheck or racecheck gets a share of the step's limit
do_sanitizer() {
    local tool cs=() rc=0 t path
    local per=$(((QK_STEP_LIMIT - 10) / 4))
    if [ "$DRY" = 1 ]; then
        echo "dry run: the commands below run without compute-sanitizer"
    elif path=$(command -v compute-sanitizer); then
        cs=("$path" --error-exitcode 1 --print-limit 20)
    else
        echo "SKIP: compute-sanitizer is not installed"
        return 77
    fi
    for tool in memcheck racecheck; do
        # test_segments: shared-memory sort, warp kernels; test_ops: every
        # per-tensor kernel on small and odd sizes (QKERN_TEST_LARGE_N keeps
        # the large case small under the sanitizer)
        for t in test_segments test_ops; do
            echo "---- $tool $t"
            local tc=()
            [ ${#cs[@]} -gt 0 ] && tc=("${cs[@]}" --tool "$tool")
            timeout "$per" env QKERN_TEST_BACKEND="$BACKEND" QKERN_TEST_LARGE_N=1000003 \
                "${tc[@]}" "$BUILD/tests/$t" || { echo "FAIL: $tool $t"; rc=1; }
        done
    done
    return "$rc"
}

do_bench() {
    local torch=(--no-torch) max=28 min=16 extra=()
    # the probes' messages (an ImportError) go to a log in TMP, not to /dev/null
    if /usr/bin/python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>> "$TMP/torch-probe.log"; then
        torch=(--torch-device cuda) # PyTorch on the same GPU, in device memory
    elif /usr/bin/python3 -c 'import torch' 2>> "$TMP/torch-probe.log"; then
        echo "PyTorch is installed but sees no CUDA device: it is measured on the host"
        torch=()
    else
        echo "PyTorch is not installed: the PyTorch comparison is skipped (numpy only)"
    fi
    if [ "$DRY" = 1 ]; then
        max=18
        extra=(--reps 1 --warmup 0 --grid-reps 1 --grid-warmup 0 --numpy-grid-max-log2 17)
    else
        extra=(--reps 2 --warmup 1 --numpy-grid-max-log2 20)
    fi
    /usr/bin/python3 "$ROOT/bench/compare.py" --qkern "$BUILD/qkern" --backend "$BACKEND" --min-log2 "$min" \
        --max-log2 "$max" --out-dir "$TMP/bench" --machine gpu-check "${torch[@]}" "${extra[@]}"
    local rc=$?
    [ -f "$TMP/bench/gpu-check.csv" ] && cp "$TMP/bench/gpu-check.csv" "$OUT/bench.csv"
    [ -f "$TMP/bench/gpu-check_gbps.png" ] && cp "$TMP/bench/gpu-check_gbps.png" "$OUT/bench.png"
    [ -f "$TMP/bench/gpu-check.md" ] && cat "$TMP/bench/gpu-check.md"
    return "$rc"
}

do_ncu() {
    local n=$((1 << 26)) prof=() path
    [ "$DRY" = 1 ] && n=$((1 << 18))
    /usr/bin/python3 - "$TMP/x.npy" "$n" <<'PY' || return 1
import sys, numpy as np
rng = np.random.default_rng(3)
x = rng.laplace(0, 0.02, int(sys.argv[2])).astype(np.float32)
x[rng.choice(x.size, 16, replace=False)] = 3.0
np.save(sys.argv[1], x)
PY
    if [ "$DRY" = 1 ]; then
        echo "dry run: the profiled command runs without ncu"
    elif path=$(command -v ncu); then
        # the first launches of the error pass and of the radix-select passes
        prof=("$path" --csv --log-file "$OUT/ncu.csv" --kernel-name 'regex:error_kernel|pass_kernel' --launch-count 6
              --metrics 'gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__occupancy_limit_registers')
    else
        echo "SKIP: ncu is not installed"
        return 77
    fi
    "${prof[@]}" "$BUILD/qkern" gridsearch "$TMP/x.npy" --backend "$BACKEND" --grid 99:100:0.05
}

# The script calls itself for each step (timeout cannot run a shell function);
# the settings come through the environment.
if [ "${1:-}" = --run-step ] && [ $# -eq 2 ]; then
    case $2 in
        build) do_build ;;
        ctest) do_ctest ;;
        ctest48m) do_ctest48m ;;
        huge) do_huge ;;
        sanitizer) do_sanitizer ;;
        bench) do_bench ;;
        ncu) do_ncu ;;
        *) echo "gpu-check: no step $2" >&2; exit 64 ;;
    esac
    exit $?
fi

usage() {
    sed -n '2,/^set -uo/p' "$0" | sed -e '/^set -uo/d' -e 's/^# \{0,1\}//'
}

if [ $# -ne 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    usage
    [ $# -eq 1 ] && exit 0
    exit 64
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF=$ROOT/scripts/$(basename "$0")
OUT=$1
DRY=${QKERN_GPU_CHECK_DRY:-0}
BACKEND=cuda
if [ "$DRY" = 1 ]; then
    BACKEND=${QKERN_GPU_CHECK_BACKEND:-cpu}
    case $BACKEND in cpu | opencl) ;; *) echo "gpu-check: QKERN_GPU_CHECK_BACKEND must be cpu or opencl" >&2; exit 64 ;; esac
fi
STEPS=${QKERN_GPU_CHECK_STEPS:-build,ctest,ctest48m,huge,sanitizer,bench,ncu}
BUILD=${QKERN_GPU_CHECK_BUILD:-$ROOT/build-gpu-check}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
ARCH=${QKERN_GPU_CHECK_ARCH:-90-real}
JOBS=$(nproc 2>&1) || JOBS=4
[[ $JOBS =~ ^[0-9]+$ ]] || JOBS=4
START=$(date +%s)
DEADLINE=${QKERN_GPU_CHECK_SECONDS:-470} # the first run's 15 minutes include the machine's start
SCALE=1
if [ "$DRY" = 1 ]; then # a shared CPU machine: the limits are the GPU's, four times over
    SCALE=4
    DEADLINE=${QKERN_GPU_CHECK_SECONDS:-1880}
fi

say() { printf '[gpu-check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# ---- is there a CUDA device? (seconds, before anything else) --------------------------
# CUDA_VISIBLE_DEVICES hides them all when empty or -1; then the driver's own
# tool, or its device nodes. Nothing is written here (not even to /dev/null).
no_device() {
    echo "gpu-check: no CUDA device: $1" >&2
    echo "gpu-check: nothing was run (QKERN_GPU_CHECK_DRY=1 runs every step's command on the CPU)" >&2
    exit 2
}
if [ "$DRY" != 1 ]; then
    if [ "${CUDA_VISIBLE_DEVICES+set}" = set ] && { [ -z "$CUDA_VISIBLE_DEVICES" ] || [ "$CUDA_VISIBLE_DEVICES" = -1 ]; }; then
        no_device "CUDA_VISIBLE_DEVICES='$CUDA_VISIBLE_DEVICES' hides every device"
    fi
    if nvsmi=$(command -v nvidia-smi); then
        # its messages stay in the variable; only the "GPU n: ..." lines count
        gpus=$(timeout 20 "$nvsmi" -L 2>&1) || true
        gpus=$(printf '%s\n' "$gpus" | grep -c '^GPU ' || true)
        [ "${gpus:-0}" -ge 1 ] || no_device "nvidia-smi -L lists no GPU"
        say "devices: $(timeout 20 "$nvsmi" --query-gpu=name,driver_version,memory.total --format=csv,noheader | paste -sd ';' -)"
    else
        nodes=(/dev/nvidia[0-9]*) # unmatched, the pattern itself, which does not exist
        [ -e "${nodes[0]}" ] || no_device "no nvidia-smi and no /dev/nvidia* device node"
    fi
fi

mkdir -p "$OUT" || { echo "gpu-check: cannot create $OUT" >&2; exit 64; }
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/qkern-gpu-check.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
SUMMARY=()
FAILED=0

want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# step NAME LIMIT_SECONDS LOG: run step NAME under a time limit with its output
# appended to OUTDIR/LOG; note PASS/FAIL/TIMEOUT, or SKIP when it prints
# "SKIP: why" and returns 77.
step() {
    local name=$1 limit=$2 log=$3 t0 rc note=""
    if ! want "$name"; then return 0; fi
    # the whole run stays within DEADLINE seconds: a step gets what is left
    local left=$((DEADLINE - ($(date +%s) - START)))
    if [ "$left" -lt 5 ]; then
        SUMMARY+=("$(printf '%-10s %-8s %5ss  %s' "$name" TIMEOUT 0 "not run: the ${DEADLINE}s were used up")")
        FAILED=1
        return 0
    fi
    limit=$((limit * SCALE))
    [ "$limit" -gt "$left" ] && limit=$left
    say "step $name (limit ${limit}s) -> $log"
    printf '\n==== %s (%s) ====\n' "$name" "$(date -u +%FT%TZ)" >> "$OUT/$log"
    t0=$(date +%s)
    QK_STEP_LIMIT=$limit timeout --kill-after=10 "$limit" bash "$SELF" --run-step "$name" >> "$OUT/$log" 2>&1
    rc=$?
    local dt=$(($(date +%s) - t0)) status
    case $rc in
        0) status=PASS ;;
        77) status=SKIP; note=$(grep '^SKIP: ' "$OUT/$log" | tail -n 1 | cut -c7-) ;;
        124 | 137) status=TIMEOUT; FAILED=1 ;;
        *) status=FAIL; FAILED=1 ;;
    esac
    [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && note=$(grep -E 'FAIL|[Ee]rror|ERROR' "$OUT/$log" | tail -n 1 | cut -c1-60)
    SUMMARY+=("$(printf '%-10s %-8s %5ss  %s' "$name" "$status" "$dt" "$note")")
    say "step $name: $status in ${dt}s"
}

export ROOT BUILD ARCH JOBS DRY BACKEND OUT TMP QKERN_GPU_CHECK_DRY
export QK_CTEST_REGEX=${QKERN_GPU_CHECK_CTEST:-}

# limits: 475 s in all, the device check and the summary take seconds
step build 100 build.log
step ctest 120 ctest.log
step ctest48m 40 ctest.log
step huge 45 huge.log
step sanitizer 110 sanitizer.log
step bench 40 bench.log.tmp
step ncu 20 ncu.log.tmp
# the bench and ncu logs are short: they go into the summary's file, not files of their own
for f in bench.log.tmp ncu.log.tmp; do
    [ -f "$OUT/$f" ] || continue
    { printf '\n'; cat "$OUT/$f"; } >> "$TMP/extra.txt"
    rm -f "$OUT/$f"
done

{
    printf 'qkern gpu-check: %s, %s backend%s, %ss in all\n' "$(date -u +%FT%TZ)" "$BACKEND" \
        "$([ "$DRY" = 1 ] && echo ', DRY RUN (no GPU)')" "$(($(date +%s) - START))"
    printf '%-10s %-8s %6s  %s\n' step status time note
    printf '%s\n' "${SUMMARY[@]}"
    [ -f "$TMP/extra.txt" ] && { printf '\n---- bench and ncu output\n'; tail -n 120 "$TMP/extra.txt"; }
} > "$OUT/summary.txt"
echo
sed -n '1,/^$/p' "$OUT/summary.txt" | head -n 12
echo "files in $OUT: $(find "$OUT" -maxdepth 1 -type f -printf '%f ')"
exit $FAILED
