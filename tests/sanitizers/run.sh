#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer runs (gcc):
#   1. the C tests (ctest) against a sanitized libbnorm, leak checking on;
#   2. the Python test suite against a sanitized wheel installed into the
#      active environment (the Python interpreter is not instrumented, so
#      libasan is preloaded and leak checking is off: CPython keeps memory
#      on purpose). The C-build tests (test_c.py) are left out there: they
#      build their own, unsanitized libraries and run step 1's programs.
#      ASan lets a huge allocation fail (return NULL) as malloc would, so
#      the tests of impossible sizes see their MemoryError. The slow tests
#      (whole networks, torch.compile, several processes: pytest -m slow)
#      are left out; they call the kernels the other tests call.
# Any report fails the run (-fno-sanitize-recover, halt_on_error).
# Usage: tests/sanitizers/run.sh [c|python|all]   (default all)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
what="${1:-all}"
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

if [ "$what" = c ] || [ "$what" = all ]; then
  build="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-asan.XXXXXX")"
  cmake -S "$root" -B "$build" -DBNORM_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >/dev/null
  cmake --build "$build" -j2 >/dev/null
  ASAN_OPTIONS="detect_leaks=1:halt_on_error=1" ctest --test-dir "$build" --output-on-failure
  echo "sanitizers: C tests clean under ASan+UBSan"
fi

if [ "$what" = python ] || [ "$what" = all ]; then
  python -m pip install --force-reinstall --no-deps "$root" \
    -Ccmake.build-type=RelWithDebInfo \
    -Ccmake.define.CMAKE_C_FLAGS="$flags" -Ccmake.define.CMAKE_CXX_FLAGS="$flags" \
    -Cbuild-dir="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-asan-wheel.XXXXXX")" >/dev/null
  # libstdc++ is preloaded beside libasan so that ASan's __cxa_throw
  # interceptor finds the real one: without it the first C++ exception thrown
  # by another extension (scikit-learn's, in the demo test) aborts the run.
  libasan="$(gcc -print-file-name=libasan.so)"
  libstdcxx="$(gcc -print-file-name=libstdc++.so.6)"
  (cd "$root" && LD_PRELOAD="$libasan $libstdcxx" ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:allocator_may_return_null=1" \
     python -m pytest -q -p no:cacheprovider --ignore=tests/test_c.py -m "not slow")
  echo "sanitizers: Python tests clean under ASan+UBSan"
fi
