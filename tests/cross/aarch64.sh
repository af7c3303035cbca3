#!/usr/bin/env bash
# Cross-builds libbnorm and the C tests for aarch64 and runs the tests under
# qemu-user, with the baseline (NEON) kernels and the scalar ones: the
# library must build and be right on a CPU without any of the x86 paths.
# Needs Debian's g++-aarch64-linux-gnu and qemu-user (installed by .ci/run).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-aarch64.XXXXXX")"
cmake -S "$root" -B "$build" \
  -DCMAKE_TOOLCHAIN_FILE="$root/packaging/aarch64-toolchain.cmake" \
  -DBNORM_BUILD_TESTS=ON >/dev/null
cmake --build "$build" -j2 >/dev/null
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
export LD_LIBRARY_PATH="$build/cpp"
passed=0
for isa in baseline scalar; do
  for t in test_c_api test_host_pool test_no_alloc test_fused; do
    echo "aarch64, BNORM_ISA=$isa, $t:"
    BNORM_ISA=$isa qemu-aarch64 "$build/tests/c/$t"
    passed=$((passed + 1))
  done
done
echo "aarch64: $passed passed, 0 failed"
