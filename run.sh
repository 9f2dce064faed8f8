#!/usr/bin/env bash
# qkern's two entry points, for a fresh Debian 12 machine (as root):
#   bash run.sh demo   install what is needed, build, quantize a real model (all-MiniLM-L6-v2),
#                      a generated 2.5 GiB float32 model, a large tensor and the worked example
#                      on the best available backend, print the reports
#   bash run.sh test   install what is needed, build (release and ASan+UBSan), run every test
# Other verbs: deps (install only), build (release build only).
set -euo pipefail
cd "$(dirname "$0")"
# No system path is written (not even /dev/null): output that is not shown goes to
# a log in the build directory.
JOBS=$(nproc 2>&1) || JOBS=2
[[ $JOBS =~ ^[0-9]+$ ]] || JOBS=2

# Debian packages only; python3-numpy (Debian's 1.24) is the reference numpy.
PACKAGES=(build-essential cmake pkg-config git libcmocka-dev libcjson-dev python3 python3-numpy
          python3-matplotlib python3-torch python3-pip ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
          clang libclang-rt-14-dev  # clang + its libFuzzer runtime: the fuzz test
          shellcheck                # scripts/gpu-check.sh is linted by a test
          oclgrind mesa-opencl-icd  # OpenCL beyond PoCL: a race checker, and Mesa 22.3 rusticl (refused)
          python3-yaml python3-tqdm)  # gguf-py's dependencies (the GGUF oracle test pip-installs gguf itself)

deps() {
    local missing=() status
    for p in "${PACKAGES[@]}"; do
        # an unknown package: exit 1 and "no packages found" (stderr) in $status
        status=$(dpkg-query -W -f='${Status}' "$p" 2>&1) || true
        [[ $status == *"install ok installed"* ]] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "run.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    mkdir -p build
    local log=build/apt-get.log
    apt-get install -y -qq --no-install-recommends "${missing[@]}" > "$log" 2>&1 ||
        { echo "run.sh: apt-get install failed; the end of $log:" >&2; tail -n 40 "$log" >&2; exit 1; }
}

build() { # build DIR [cmake args...]
    local dir=$1; shift
    mkdir -p "$dir"
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" > "$dir/configure.log" 2>&1 ||
        { cat "$dir/configure.log"; exit 1; }
    # Diagnostics only: "warning:"/"error:" as compilers and make print them, not
    # build lines that merely name a file such as ocl_error.c.
    cmake --build "$dir" -j "$JOBS" 2>&1 | grep -E "(warning|error)(\[[^]]*\])?:|\*\*\* |CMake (Error|Warning)|undefined reference" || true
    cmake --build "$dir" -j "$JOBS" > "$dir/build.log" 2>&1 ||
        { echo "run.sh: the build in $dir failed; the end of $dir/build.log:" >&2; tail -n 60 "$dir/build.log" >&2; exit 1; }
}

demo() {
    deps
    mkdir -p build
    build build
    # the OpenCL self-test's verdict cache: in the build tree, not in $HOME
    export QKERN_CACHE_DIR=$PWD/build/cache
    local q=build/qkern out=build/demo
    mkdir -p "$out"
    /usr/bin/python3 - "$out" <<'PY'
import sys, numpy as np
out = sys.argv[1]
rng = np.random.default_rng(2026)
n = 1 << 26  # 64 Mi float32 weights: Laplace bulk, a few huge outliers
x = rng.laplace(0.0, 0.02, n).astype(np.float32)
idx = rng.choice(n, 64, replace=False)
x[idx] = rng.uniform(-4.0, 4.0, 64).astype(np.float32)
np.save(f"{out}/weights.npy", x)
PY
    echo "== backends"
    $q info
    echo
    local model
    if model=$(scripts/get-model.sh); then
        echo "== a real model: all-MiniLM-L6-v2 ($model)"
        echo "   8-bit symmetric, one scale per output channel, then restored"
        $q quantize-model "$model" -o "$out/minilm.q8.safetensors" --bits 8 --scheme symmetric \
            --granularity channel:0
        $q dequantize-model "$out/minilm.q8.safetensors" -o "$out/minilm.restored.safetensors"
        echo
        # GGUF for llama.cpp and the rest of the ggml family. MiniLM's rows are 384
        # (and 1536) wide: Q8_0's 32-element blocks fit every matrix, Q4_K's 256-element
        # super-blocks only the 1536-wide ones (the FFN down projections); the others
        # keep their float32, as llama-quantize --pure would, and the report says so.
        local t
        for type in Q8_0 Q4_K; do
            echo "== all-MiniLM-L6-v2 as GGUF $type (ggml's bytes; kept tensors byte for byte)"
            t=$(date +%s.%N)
            $q quantize-model "$model" -o "$out/minilm.$type.gguf" --type "$type" | short_report 6
            echo "   quantize-model --type $type: $(elapsed "$t") s"
        done
        $q dequantize-model "$out/minilm.Q4_K.gguf" -o "$out/minilm.Q4_K.restored.safetensors" | short_report 3
    else
        echo "== (the real model could not be downloaded: skipping it)"
    fi
    echo
    big_model "$q" "$out"
    echo
    echo "== a large tensor: $out/weights.npy (2^26 float32, Laplace with 64 outliers)"
    $q stats "$out/weights.npy" -p 0.01 -p 1 -p 50 -p 99 -p 99.99
    echo
    $q gridsearch "$out/weights.npy" --grid 99.9:100:0.01 --objective mse-inliers
    echo
    $q quantize "$out/weights.npy" -o "$out/weights.q8.npy" --calib gridsearch:99.9:100:0.01 \
        --objective mse-inliers
    echo
    echo "== the worked case: 1000 values uniform in [-80, 100) and one outlier at 580, 8-bit"
    echo "   (the README's worked example is this output: scripts/worked_example.py)"
    /usr/bin/python3 scripts/worked_example.py --qkern "$q" --dir "$out/worked"
}

# A model command's report with its per-tensor rows ("  NAME [SHAPE] ...") cut to the first KEEP.
short_report() { # KEEP
    awk -v keep="$1" '/^  [^ ]+ +\[/ { if (++rows <= keep) print; next }
        rows > keep && !said { print "  ... (" rows - keep " more tensors)"; said = 1 }
        { print }'
}

elapsed() { # START: seconds since START (date +%s.%N)
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

# A multi-GiB model: the large-size path of quantize-model/dequantize-model
# (memory-mapped input, read ahead by a second thread). Generated once
# (scripts/gen-laplace-model.py, ~25 s) and kept in build/demo.
big_model() { # QKERN OUTDIR
    local q=$1 out=$2 t
    local model=$out/laplace-2.5g.safetensors
    echo "== a generated model: 2.5 GiB of float32, transformer-shaped, Laplace(0, 0.02) weights"
    echo "   with 2..8 outliers of |x| 1..4 per tensor (made once, then reused)"
    /usr/bin/python3 scripts/gen-laplace-model.py "$model" --size-gib 2.5 --dtype float32 --seed 2026 --reuse
    echo "   8-bit symmetric, one scale per output channel, then restored"
    t=$(date +%s.%N)
    $q quantize-model "$model" -o "$out/laplace.q8.safetensors" --granularity channel:0 --bits 8 \
        --scheme symmetric | short_report 4
    echo "   quantize-model: $(elapsed "$t") s"
    t=$(date +%s.%N)
    $q dequantize-model "$out/laplace.q8.safetensors" -o "$out/laplace.restored.safetensors" | short_report 4
    echo "   dequantize-model: $(elapsed "$t") s"
}

run_tests() { # DIR
    (cd "$1" && ctest --output-on-failure -j "$JOBS" --timeout 1500)
}

test_all() {
    deps
    mkdir -p build build-asan
    build build
    run_tests build
    # The suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
    build build-asan -DQKERN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 run_tests build-asan
}

case "${1:-}" in
    deps) deps ;;
    build) deps; mkdir -p build; build build ;;
    demo) demo ;;
    test) test_all ;;
    *) echo "usage: bash run.sh demo|test|deps|build" >&2; exit 2 ;;
esac
