#!/usr/bin/env bash
# Builds the libFuzzer harness (clang, ASan + UBSan, libbnorm linked in
# statically, no OpenMP: the harness drives the host-pool path itself) and
# fuzzes the C API for SECONDS (default 60), starting from the committed
# corpus. New inputs go to a scratch directory, so the corpus only changes
# when someone merges them in on purpose:
#   tests/fuzz/run.sh 600 --merge     (also minimizes them into the corpus)
#   tests/fuzz/run.sh 0 --coverage    (no fuzzing: line and branch coverage
#                                      of cpp/src by the corpus, with clang's
#                                      source-based coverage; needs llvm)
# Prints the calls per function (BNORM_FUZZ_STATS). Needs Debian's clang and
# libclang-rt-14-dev (or any clang with libFuzzer).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
seconds="${1:-60}"
mode="${2:-}"
CXX="${CXX_FUZZ:-clang++}"
CC="${CC_FUZZ:-clang}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-fuzz.XXXXXX")"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -g -O1"
# (clang notes loops it could not vectorize under the sanitizers: not errors)
quiet="-Wno-pass-failed"
cov=""
if [ "$mode" = "--coverage" ]; then
  cov="-fprofile-instr-generate -fcoverage-mapping"
fi

cmake -S "$root" -B "$work/build" -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
  -DBNORM_SHARED=OFF -DBNORM_OPENMP=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$san $quiet $cov -fsanitize=fuzzer-no-link" >/dev/null
cmake --build "$work/build" -j2 --target bnorm >/dev/null
# shellcheck disable=SC2086
"$CXX" -std=c++17 $san $cov -fsanitize=fuzzer -I "$root/cpp/include" \
  "$root/tests/fuzz/fuzz_api.cc" "$work/build/cpp/libbnorm.a" -o "$work/fuzz_api"

export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export BNORM_FUZZ_STATS=1  # calls per function, printed at exit
if [ "$mode" = "--coverage" ]; then
  ver="$("$CXX" --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)"
  profdata="$(command -v "llvm-profdata-$ver" || command -v llvm-profdata)"
  llvmcov="$(command -v "llvm-cov-$ver" || command -v llvm-cov)"
  LLVM_PROFILE_FILE="$work/run.profraw" ASAN_OPTIONS=detect_leaks=0 \
    "$work/fuzz_api" -runs=0 "$root/tests/fuzz/corpus" 2>"$work/log"
  "$profdata" merge -sparse "$work/run.profraw" -o "$work/run.profdata"
  echo "coverage of cpp/src by the $(ls "$root/tests/fuzz/corpus" | wc -l) corpus inputs:"
  "$llvmcov" report "$work/fuzz_api" -instr-profile="$work/run.profdata" \
    "$root"/cpp/src/*.cpp "$root"/cpp/src/*.hpp
  exit 0
fi

mkdir -p "$work/new"
export ASAN_OPTIONS="detect_leaks=1"
"$work/fuzz_api" -max_total_time="$seconds" -print_final_stats=1 -max_len=4096 \
  -timeout=10 -artifact_prefix="$work/" "$work/new" "$root/tests/fuzz/corpus" 2>"$work/log" || {
  tail -60 "$work/log"; echo "fuzzing FAILED (log: $work/log)"; exit 1; }
grep -E "stat::number_of_executed_units|stat::new_units_added|^#[0-9]+.*DONE" "$work/log" || true
sed -n '/^fuzz_api calls per function/,$p' "$work/log" | grep -E "^(fuzz_api|  )" || true
execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")"
echo "fuzz: ${execs:-?} executions in ${seconds} s, no crash, leak or sanitizer report"
if [ "$mode" = "--merge" ]; then
  "$work/fuzz_api" -merge=1 -max_len=4096 "$root/tests/fuzz/corpus" "$work/new" 2>/dev/null
  echo "corpus: $(ls "$root/tests/fuzz/corpus" | wc -l) inputs"
fi
