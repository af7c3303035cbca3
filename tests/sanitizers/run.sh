#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer runs (gcc), from one
# sanitized build of the library (-O1 -g, as ASan advises: a third less
# compile time than -O2, the same checks):
#   1. the C tests (ctest) against the sanitized libbnorm, leak checking on;
#   2. the Python test suite against the sanitized package, built in the same
#      tree and installed into the active environment (the Python
#      interpreter is not instrumented, so libasan is preloaded and leak
#      checking is off: CPython keeps memory on purpose). The C-build tests
#      (test_c.py) are left out there: they build their own, unsanitized
#      libraries and run step 1's programs. ASan lets a huge allocation fail
#      (return NULL) as malloc would, so the tests of impossible sizes see
#      their MemoryError. The slow tests (whole networks, torch.compile,
#      several processes: pytest -m slow) are left out; they call the
#      kernels the other tests call.
# Any report fails the run (-fno-sanitize-recover, halt_on_error).
# Usage: tests/sanitizers/run.sh [c|python|all]   (default all; c builds
# with CMake alone and leaves the Python environment as it was)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
what="${1:-all}"
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
build="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-asan.XXXXXX")"

# (Debug adds -g alone; the -O1 above is the optimization level)
if [ "$what" = c ]; then
  cmake -S "$root" -B "$build" -DBNORM_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >/dev/null
  cmake --build "$build" -j2 >/dev/null
else
  python -m pip install --force-reinstall --no-deps "$root" \
    -Ccmake.build-type=Debug -Ccmake.define.BNORM_BUILD_TESTS=ON \
    -Ccmake.define.CMAKE_C_FLAGS="$flags" -Ccmake.define.CMAKE_CXX_FLAGS="$flags" \
    -Cbuild-dir="$build" >/dev/null
fi

if [ "$what" = c ] || [ "$what" = all ]; then
  ASAN_OPTIONS="detect_leaks=1:halt_on_error=1" ctest --test-dir "$build" -j2 --output-on-failure
  echo "sanitizers: C tests clean under ASan+UBSan"
fi

if [ "$what" = python ] || [ "$what" = all ]; then
  # libstdc++ is preloaded beside libasan so that ASan's __cxa_throw
  # interceptor finds the real one: without it the first C++ exception thrown
  # by another extension (scikit-learn's, in the demo test) aborts the run.
  libasan="$(gcc -print-file-name=libasan.so)"
  libstdcxx="$(gcc -print-file-name=libstdc++.so.6)"
  (cd "$root" && LD_PRELOAD="$libasan $libstdcxx" ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:allocator_may_return_null=1" \
     python -m pytest -q -p no:cacheprovider --ignore=tests/test_c.py -m "not slow")
  echo "sanitizers: Python tests clean under ASan+UBSan"
fi
