#!/usr/bin/env bash
# scripts/gpu-check.sh, checked as far as a machine without a GPU allows:
#   'nodevice'       without a CUDA device it exits 2 within seconds, saying so,
#                    and runs nothing (CUDA_VISIBLE_DEVICES=-1 hides any device;
#                    where no driver is installed, also without it)
#   'shellcheck'     shellcheck finds nothing (skipped, 77, without shellcheck)
#   'dry' BUILD      QKERN_GPU_CHECK_DRY=1: every step's command runs on the
#                    OpenCL backend (the CPU one without OpenCL) with small
#                    sizes; every step passes or says why it skipped, at most 8
#                    files are written, and the summary lists every step
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
script=$here/../scripts/gpu-check.sh
mode=${1:-}
fail() { echo "FAIL: $*"; exit 1; }

case $mode in
shellcheck)
    sc=$(command -v shellcheck) || { echo "skipped: shellcheck is not installed (apt-get install shellcheck)"; exit 77; }
    "$sc" "$script" "$here/test_gpu_check.sh" || fail "shellcheck"
    echo "shellcheck: clean"
    ;;
nodevice)
    work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT
    check() { # LABEL ENV...
        local label=$1 t0 t1 rc
        shift
        t0=$(date +%s)
        env "$@" bash "$script" "$work/out" > "$work/stdout" 2> "$work/stderr"
        rc=$?
        t1=$(date +%s)
        cat "$work/stderr"
        [ "$rc" -eq 2 ] || fail "$label: exit $rc, expected 2"
        [ $((t1 - t0)) -le 10 ] || fail "$label: took $((t1 - t0)) s"
        grep -q "no CUDA device" "$work/stderr" || fail "$label: no 'no CUDA device' message"
        [ ! -e "$work/out" ] || fail "$label: wrote $work/out"
        echo "$label: exit 2 in $((t1 - t0)) s"
    }
    check "CUDA_VISIBLE_DEVICES=-1" CUDA_VISIBLE_DEVICES=-1
    check "CUDA_VISIBLE_DEVICES=''" CUDA_VISIBLE_DEVICES=
    nodes=(/dev/nvidia[0-9]*) # unmatched, the pattern itself, which does not exist
    if [ -z "$(command -v nvidia-smi)" ] && [ ! -e "${nodes[0]}" ]; then
        check "no driver" -u CUDA_VISIBLE_DEVICES
    fi
    # usage (its output kept in the work directory: tests write no system path)
    bash "$script" > "$work/usage.out" 2>&1
    [ $? -eq 64 ] || fail "no OUTDIR: expected exit 64"
    bash "$script" --help | grep -q "OUTDIR" || fail "--help"
    ;;
dry)
    build=${2:?build directory}
    work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT
    backend=cpu
    "$build/qkern" info --backend opencl > "$work/opencl-info.log" 2>&1 && backend=opencl
    t0=$(date +%s)
    QKERN_GPU_CHECK_DRY=1 QKERN_GPU_CHECK_BACKEND=$backend QKERN_GPU_CHECK_BUILD=$build \
        QKERN_GPU_CHECK_CTEST='^test_params$' bash "$script" "$work/out"
    rc=$?
    echo "dry run on $backend: exit $rc in $(($(date +%s) - t0)) s"
    cat "$work/out/summary.txt"
    [ "$rc" -eq 0 ] || fail "dry run exit $rc"
    n=$(find "$work/out" -type f | wc -l)
    [ "$n" -le 8 ] || fail "$n files written (at most 8)"
    grep -q "DRY RUN" "$work/out/summary.txt" || fail "summary does not say dry run"
    for s in build ctest ctest48m huge sanitizer bench ncu; do
        grep -Eq "^$s +(PASS|SKIP) " "$work/out/summary.txt" || fail "step $s: not PASS or SKIP"
    done
    grep -Eq "^huge +SKIP .*CUDA device" "$work/out/summary.txt" || fail "huge: no reason"
    for f in build.log ctest.log sanitizer.log bench.csv summary.txt; do
        [ -s "$work/out/$f" ] || fail "$f missing or empty"
    done
    grep -q "test_params" "$work/out/ctest.log" || fail "ctest did not run"
    grep -q "memcheck test_segments" "$work/out/sanitizer.log" || fail "sanitizer commands did not run"
    grep -q "gridsearch" "$work/out/summary.txt" || fail "the profiled grid search did not run"
    ;;
*)
    echo "usage: test_gpu_check.sh shellcheck | nodevice | dry BUILD" >&2
    exit 64
    ;;
esac
