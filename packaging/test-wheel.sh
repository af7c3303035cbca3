#!/usr/bin/env bash
# The wheel as a user without a compiler meets it: a fresh virtual
# environment, the wheel and its test extra (and PyTorch, for the parity
# tests) installed, then the tests, all with no C or C++ compiler and no
# CMake on the PATH (the tests that build C programs skip).
#
#   bash packaging/test-wheel.sh dist/bnorm-*-manylinux_*.whl [pytest args]
set -euo pipefail
wheel="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
shift
cd "$(dirname "$0")/.."
work="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-wheel-test.XXXXXX")"
python3 -m venv "$work/venv"

# The PATH without compilers: every program of the usual directories except
# the compilers, assemblers, linkers and build tools, as links in one directory.
nocc="$work/bin"
mkdir "$nocc"
IFS=: read -r -a dirs <<< "/usr/local/bin:/usr/bin:/bin"
for d in "${dirs[@]}"; do
  for f in "$d"/*; do
    name="$(basename "$f")"
    case "$name" in
      cc|c++|c89*|c99*|cpp|cpp-*|gcc|gcc-*|g++|g++-*|clang|clang-*|clang++*|*-linux-gnu-*|\
      ld|ld.*|as|cmake|ctest|cpack|ninja|make|tcc|icx|icpx|nvcc) continue ;;
    esac
    [ -e "$nocc/$name" ] || ln -s "$f" "$nocc/$name"
  done
done
export PATH="$work/venv/bin:$nocc"
for tool in cc c++ gcc g++ clang cmake; do
  if command -v "$tool" >/dev/null; then echo "test-wheel: $tool is still on the PATH"; exit 1; fi
done
echo "test-wheel: no compiler on the PATH ($(python --version))"

python -m pip install -q --upgrade pip
start=$(date +%s)
python -m pip install -q --only-binary :all: "$wheel[test]"
echo "test-wheel: installed $(basename "$wheel") with its test extra in $(( $(date +%s) - start )) s"
python -m pip install -q --only-binary :all: "torch==2.13.0"
python -m bnorm info
# (the source tree has no importable bnorm at its top: the tests import the
# installed package)
python -m pytest "$@"
