#!/usr/bin/env bash
# ggml's block formats (kernels/opencl/ggml.cl) under oclgrind, both kernel
# styles: test_ggml on small inputs (every type, every input case, host and
# device tensors at offsets; bytes and dequantized values equal to the CPU
# backend's). Any oclgrind report (race, out-of-bounds access, API misuse)
# fails the test, as does any test failure.
#
#   tests/oclgrind_ggml.sh TEST_GGML WORKDIR
#
# The kernels are built with -cl-opt-disable here: oclgrind 21.10 interprets
# the optimised IR of qkg_f16_to_f32 wrongly (it returns -2^-15 for the half
# 0x8000, so Q4_0 blocks of subnormals dequantize to 2^-12, and Q6_K's
# re-read scales differ), while unoptimised it agrees with the CPU backend,
# with PoCL and with ggml itself; oclgrind's checks (races, bounds, API) are
# the same on unoptimised code. Like tests/oclgrind.sh, QKERN_OPENCL_ROUNDEVEN=0
# avoids a first build that oclgrind's back end cannot finish. Exit 77 without oclgrind.
set -uo pipefail
TEST=$1
WORK=$2
command -v oclgrind > "$WORK.probe" 2>&1 || { echo "SKIPPED: oclgrind is not installed (apt-get install oclgrind)"; exit 77; }
rm -rf "$WORK" "$WORK.probe"
mkdir -p "$WORK"
cd "$WORK" || exit 1
export QKERN_CACHE_DIR=$WORK/cache
unset QKERN_DEVICE QKERN_OPENCL_STYLE QKERN_BACKEND
fail=0
for style in cpu gpu; do
    env QKERN_TEST_BACKEND=opencl QKERN_TEST_GGML_SMALL=1 QKERN_OPENCL_ROUNDEVEN=0 QKERN_OPENCL_STYLE=$style \
        oclgrind --build-options -cl-opt-disable --data-races --uniform-writes --check-api "$TEST" \
        > "$style.out" 2> "$style.err"
    rc=$?
    if grep -qiE "oclgrind|invalid (read|write)|data race|uninitiali|out of bounds|work-group divergence|barrier" "$style.err"; then
        echo "FAIL $style style: oclgrind reported:"; sed -n 1,40p "$style.err"; fail=1
    elif [ $rc -ne 0 ] || ! grep -q "PASSED  \] 4 test" "$style.out" "$style.err"; then
        echo "FAIL $style style: exit $rc"; tail -n 20 "$style.out" "$style.err"; fail=1
    elif ! grep -q "backend opencl, device Oclgrind" "$style.out"; then
        echo "FAIL $style style: the test did not run on the OpenCL backend"; fail=1
    else
        echo "ok   $style style: test_ggml under oclgrind, no reports"
    fi
done
exit $fail
