#!/usr/bin/env bash
# Line and branch coverage of cpp/src by the committed fuzz corpus: the
# harness and libbnorm built as in run.sh (clang, ASan + UBSan, no OpenMP),
# plus clang's source-based coverage; every corpus input run once; then
# llvm-cov's report for the library's sources. Outside CI (it is a
# measurement): tests/fuzz/coverage.sh [corpus dir]
# Needs Debian's clang, libclang-rt-14-dev and llvm (llvm-profdata, llvm-cov).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
corpus="${1:-$root/tests/fuzz/corpus}"
CXX="${CXX_FUZZ:-clang++}"
CC="${CC_FUZZ:-clang}"
ver="$("$CXX" --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)"
profdata="$(command -v "llvm-profdata-$ver" || command -v llvm-profdata)"
cov="$(command -v "llvm-cov-$ver" || command -v llvm-cov)"
work="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-fuzzcov.XXXXXX")"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -g -O1 -Wno-pass-failed"
covflags="-fprofile-instr-generate -fcoverage-mapping"

cmake -S "$root" -B "$work/build" -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
  -DBNORM_SHARED=OFF -DBNORM_OPENMP=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$flags $covflags -fsanitize=fuzzer-no-link" >/dev/null
cmake --build "$work/build" -j2 --target bnorm >/dev/null
# shellcheck disable=SC2086
"$CXX" -std=c++17 $flags $covflags -fsanitize=fuzzer -I "$root/cpp/include" \
  "$root/tests/fuzz/fuzz_api.cc" "$work/build/cpp/libbnorm.a" -o "$work/fuzz_api"
LLVM_PROFILE_FILE="$work/run.profraw" ASAN_OPTIONS=detect_leaks=0 \
  "$work/fuzz_api" -runs=0 "$corpus" 2>"$work/log"
"$profdata" merge -sparse "$work/run.profraw" -o "$work/run.profdata"
echo "coverage of cpp/src by $(ls "$corpus" | wc -l) corpus inputs:"
"$cov" report "$work/fuzz_api" -instr-profile="$work/run.profdata" \
  "$root"/cpp/src/*.cpp "$root"/cpp/src/*.hpp
