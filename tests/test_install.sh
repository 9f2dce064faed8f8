#!/usr/bin/env bash
# Install the build into a temporary prefix and build the README's C example
# against it three ways: pkg-config, CMake find_package (shared and static).
set -euo pipefail
build=$1
flags=${QK_CONSUMER_CFLAGS:-}   # the sanitizer build passes its -fsanitize flags
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
libdirs=("$tmp"/prefix/lib*/)
libdir=${libdirs[0]}
[ -d "$libdir" ] || { echo "install: no lib directory under $tmp/prefix"; exit 1; }
test -f "$tmp/prefix/include/qkern.h"
test -x "$tmp/prefix/bin/qkern"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2086,SC2046  # $flags and pkg-config's output are lists of flags
cc -std=c11 -Wall -Wextra -Werror $flags "$src/examples/quantize_example.c" $(pkg-config --cflags --libs qkern) -lm \
   -Wl,-rpath,"$libdir" -o "$tmp/example_pc"
"$tmp/example_pc"
cmake -S "$src/tests/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
      -DEXAMPLE="$src/examples/quantize_example.c" -DCMAKE_C_FLAGS="$flags" \
      -DCMAKE_EXE_LINKER_FLAGS="$flags" > "$tmp/consumer.log"
cmake --build "$tmp/consumer" > "$tmp/consumer-build.log"
"$tmp/consumer/consumer_shared"
"$tmp/consumer/consumer_static"
"$tmp/prefix/bin/qkern" info > "$tmp/info.log"
echo "install: pkg-config, find_package (shared, static) and the installed CLI work"
