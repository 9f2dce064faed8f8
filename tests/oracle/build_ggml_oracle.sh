#!/usr/bin/env bash
# Build the ggml oracle (tests/oracle/ggml_driver.c linked to ggml's base
# library) from the source distribution of the PyPI package llama-cpp-python,
# which carries llama.cpp's tree. Everything is cached under BUILD_DIR/ggml-oracle;
# nothing from it is ever part of qkern.
#
#   build_ggml_oracle.sh BUILD_DIR     prints the driver's path on success
#
# ggml-base is built with GGML_NATIVE=OFF: baseline x86-64, no FMA, which is the
# behaviour qkern matches (see docs/ggml-formats.md).
# Exit status: 0 built; 1 the oracle could not be fetched or built; 77 when that
# happened and QKERN_TEST_OFFLINE=1 asks to skip instead of failing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=0.3.36  # pinned: the cache stays valid and results reproducible
out=$(cd "${1:?usage: build_ggml_oracle.sh BUILD_DIR}" && pwd)/ggml-oracle
driver=$out/ggml_driver-$version
log=$out/build.log

giveup() {
    echo "ggml oracle: $1 (log: $log)" >&2
    if [ "${QKERN_TEST_OFFLINE:-0}" = 1 ]; then
        echo "SKIPPED: QKERN_TEST_OFFLINE=1 and the ggml oracle is not available" >&2
        exit 77
    fi
    echo "FAILED: the ggml oracle is required (set QKERN_TEST_OFFLINE=1 to skip the oracle tests offline)" >&2
    exit 1
}

if [ -x "$driver" ] && [ "$driver" -nt "$here/ggml_driver.c" ]; then
    echo "$driver"
    exit 0
fi
mkdir -p "$out"
: >"$log"
sdist=$out/llama_cpp_python-$version.tar.gz
if [ ! -s "$sdist" ]; then
    /usr/bin/python3 -m pip download --no-binary llama-cpp-python --no-deps "llama-cpp-python==$version" \
        -d "$out" >>"$log" 2>&1 || giveup "pip download of llama-cpp-python==$version failed"
fi
src=$out/src
if [ ! -f "$src/ggml/CMakeLists.txt" ]; then
    rm -rf "$src" && mkdir -p "$src"
    tar xzf "$sdist" -C "$src" --strip-components=3 --wildcards "llama_cpp_python-$version/vendor/llama.cpp/ggml/*" \
        >>"$log" 2>&1 || giveup "cannot unpack $sdist"
fi
# The sdist's tree lacks ggml.pc.in, which ggml's CMakeLists configures: an empty one does.
[ -f "$src/ggml/ggml.pc.in" ] || : >"$src/ggml/ggml.pc.in"
cmake -S "$src/ggml" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_BUILD_TESTS=OFF \
    -DGGML_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >>"$log" 2>&1 || giveup "ggml does not configure"
jobs=$(nproc 2>&1) || jobs=2
[[ $jobs =~ ^[0-9]+$ ]] || jobs=2
cmake --build "$out/build" --target ggml-base -j "$jobs" >>"$log" 2>&1 ||
    giveup "ggml-base does not build"
lib=$(find "$out/build" -name 'libggml-base.a' | head -n 1)
[ -n "$lib" ] || giveup "libggml-base.a not found"
cc -O2 -std=c11 -D_DEFAULT_SOURCE -I"$src/ggml/include" "$here/ggml_driver.c" "$lib" -lm -lpthread -lstdc++ \
    -fopenmp -o "$driver.tmp" >>"$log" 2>&1 || giveup "the driver does not link"
mv "$driver.tmp" "$driver"
echo "$driver"
