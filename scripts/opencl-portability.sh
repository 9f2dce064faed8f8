#!/usr/bin/env bash
# qkern's OpenCL tests on a second OpenCL implementation: Debian 13's Mesa
# rusticl on llvmpipe (Mesa 25), in a chroot made with debootstrap, in both
# kernel styles, with RUSTICL_FEATURES=fp64 and without it (a device without
# cl_khr_fp64, as Intel Arc/Xe and most mobile GPUs are). Too slow for CI on a
# 2-core machine; run it (as root) before every change to OpenCL code lands:
#
#   bash scripts/opencl-portability.sh            # all four runs
#   bash scripts/opencl-portability.sh gpu fp64   # one style, one fp64 setting
#
# The chroot is made once and kept in $QKERN_PORTABILITY_DIR (default
# build-portability/ in the repository); the source tree is copied in fresh
# every run and built there. Needs debootstrap and network access to
# $DEBIAN_MIRROR the first time. Prints a summary line per run; exits non-zero
# when any run has a failing test.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${QKERN_PORTABILITY_DIR:-$ROOT/build-portability}
CHROOT=$DIR/trixie
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PKGS=build-essential,cmake,pkg-config,libcmocka-dev,libcjson-dev,python3,python3-numpy,ocl-icd-opencl-dev,opencl-headers,ocl-icd-libopencl1,mesa-opencl-icd,clinfo
# The OpenCL tests (ctest names; QKERN_PORTABILITY_TESTS overrides the regex);
# numpy_parity_opencl is left out: Debian 13's
# numpy 2 returns float32 percentiles for float32 input, not numpy 1.24's double.
TESTS=${QKERN_PORTABILITY_TESTS:-'^(test_ops_opencl|test_calibrate_opencl|test_blocks_opencl|test_large_opencl|test_segments_opencl|test_segments_opencl_gpu|test_blocks_opencl_pieces|test_opencl_chunked|test_opencl_portable|test_ggml_opencl|test_ggml_opencl_pieces)$'}
JOBS=$(nproc 2>&1) || JOBS=2
[[ $JOBS =~ ^[0-9]+$ ]] || JOBS=2

[ "$(id -u)" -eq 0 ] || { echo "opencl-portability.sh: run as root (debootstrap, chroot, mounts)" >&2; exit 1; }
styles=(cpu gpu)
fp64s=(fp64 nofp64)
if [ $# -ge 1 ]; then styles=("$1"); fi
if [ $# -ge 2 ]; then fp64s=("$2"); fi

if [ ! -x "$CHROOT/usr/bin/cmake" ]; then
    [ -n "$(command -v debootstrap)" ] || { echo "opencl-portability.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
    mkdir -p "$DIR"
    rm -rf "$CHROOT.partial"
    echo "== debootstrap trixie into $CHROOT (once)"
    debootstrap --variant=minbase --include="$PKGS" trixie "$CHROOT.partial" "$MIRROR" > "$DIR/debootstrap.log" 2>&1 ||
        { tail -20 "$DIR/debootstrap.log"; exit 1; }
    mv "$CHROOT.partial" "$CHROOT"
fi

# PoCL 6 aborts without /sys; llvmpipe counts CPUs there too.
mounted=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    # umount's complaints go to a log in DIR (nothing is written to /dev/null)
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" >> "$DIR/umount.log" 2>&1 || true; done
}
trap cleanup EXIT
for m in proc sys dev; do
    mkdir -p "$CHROOT/$m"
    if ! mountpoint -q "$CHROOT/$m"; then
        mount --bind "/$m" "$CHROOT/$m"
        mounted+=("$CHROOT/$m")
    fi
done

echo "== copying the source tree and building (Release) in the chroot"
rm -rf "$CHROOT/qkern"
mkdir -p "$CHROOT/qkern/src"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$CHROOT/qkern/src"
chroot "$CHROOT" /bin/bash -c "cmake -S /qkern/src -B /qkern/build -DCMAKE_BUILD_TYPE=Release > /qkern/configure.log 2>&1 &&
    cmake --build /qkern/build -j $JOBS 2>&1 | grep -E 'warning|error' ; test -x /qkern/build/qkern" ||
    { echo "build failed in the chroot"; tail -20 "$CHROOT/qkern/configure.log"; exit 1; }
# shellcheck disable=SC2016  # ${Version} is dpkg-query's, not the shell's
mesa=$(chroot "$CHROOT" dpkg-query -W -f='${Version}' mesa-opencl-icd)
echo "   Mesa rusticl $mesa (mesa-opencl-icd), Debian $(cat "$CHROOT/etc/debian_version")"

status=0
summary=()
for fp in "${fp64s[@]}"; do
    for style in "${styles[@]}"; do
        env=(OCL_ICD_VENDORS=rusticl.icd RUSTICL_ENABLE=llvmpipe QKERN_TEST_DEVICE=0 "QKERN_OPENCL_STYLE=$style"
             QKERN_CACHE_DIR=/qkern/build/cache)
        [ "$fp" = fp64 ] && env+=(RUSTICL_FEATURES=fp64)
        echo "== rusticl llvmpipe, $style style, $fp"
        chroot "$CHROOT" env "${env[@]}" /qkern/build/qkern info | sed 's/^/   /' || true
        t0=$(date +%s)
        log=$DIR/ctest-$style-$fp.log
        set +e
        chroot "$CHROOT" env "${env[@]}" /bin/bash -c \
            "cd /qkern/build && ctest --output-on-failure -j $JOBS --timeout 3000 -R '$TESTS'" > "$log" 2>&1
        rc=$?
        set -e
        t1=$(date +%s)
        line=$(grep -E "tests passed|tests failed" "$log" | tail -1)
        skipped=$(grep -c "Not Run\|Skipped" "$log" || true)
        summary+=("$style $fp: ${line:-no ctest summary (see $log)}, $skipped skipped, $((t1 - t0)) s")
        grep -E "^\s+[0-9]+ - |\*\*\*|Failed|SKIPPED|skipped" "$log" | head -40 | sed 's/^/   /' || true
        [ $rc -eq 0 ] || status=1
    done
done
echo "== summary (Mesa rusticl $mesa on llvmpipe, Debian 13 chroot; logs in $DIR)"
printf '   %s\n' "${summary[@]}"
exit $status
