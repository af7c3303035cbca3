#!/usr/bin/env bash
# ABI check of libbnorm against the committed baseline (libbnorm.abi, made
# by abidw from Debian's abigail-tools).
#
#   tests/abi/check.sh LIB            compare LIB with the baseline
#   tests/abi/check.sh --update LIB   write LIB's ABI as the new baseline
#   tests/abi/check.sh LIB OTHER.abi  compare OTHER.abi (instead of the
#                                     baseline) with LIB's ABI
#
# LIB is a shared libbnorm.so.N built with debug information, e.g.
#   cmake -S . -B build-abi -DCMAKE_BUILD_TYPE=RelWithDebInfo
#   cmake --build build-abi --target bnorm
#   tests/abi/check.sh build-abi/cpp/libbnorm.so.0
#
# Exit status: 0 when the ABI is unchanged or only added to (additions:
# update the baseline together with the minor version), 1 when a function
# or variable was removed or changed (a parameter, return or struct type:
# that needs a new major version), 2 on a usage or tool error.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
headers="$here/../../cpp/include/bnorm"
baseline="$here/libbnorm.abi"

update=0
if [ "${1:-}" = "--update" ]; then update=1; shift; fi
lib="${1:-}"
[ -n "${2:-}" ] && baseline="$2"
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
  echo "usage: $0 [--update] path/to/libbnorm.so.N [baseline.abi]" >&2
  exit 2
fi
for tool in abidw abidiff; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install abigail-tools)" >&2; exit 2; }
done

current="$(mktemp)"
trap 'rm -f "$current"' EXIT
# Only what the library exports, described by the public header; no paths,
# so the file is the same from any checkout.
if ! abidw --exported-interfaces-only --headers-dir "$headers" --drop-private-types \
      --no-corpus-path --no-comp-dir-path --no-show-locs "$lib" \
    | sed -E "s#path='[^']*/cpp/src/#path='cpp/src/#" > "$current"; then
  echo "abidw failed on $lib" >&2
  exit 2
fi
if ! grep -q "function-decl name='bnorm_" "$current"; then
  echo "$lib has no debug information for the API (build with -g)" >&2
  exit 2
fi

if [ "$update" = 1 ]; then
  cp "$current" "$baseline"
  echo "wrote $baseline"
  exit 0
fi

report="$(abidiff --exported-interfaces-only "$baseline" "$current")"
rc=$?
echo "$report"
# abidiff's status is a bit set: 1 error, 2 usage, 4 change, 8 incompatible.
# It calls only removals incompatible; for a C ABI a changed function (a
# parameter or return type, a struct layout) breaks callers too, so only
# additions pass.
if (( rc & 3 )); then
  echo "abidiff failed (status $rc)" >&2
  exit 2
fi
breaking="$(printf '%s\n' "$report" | grep -E 'changes summary:' |
            grep -Ev ' 0 Removed.*, 0 Changed' || true)"
if (( rc & 8 )) || [ -n "$breaking" ]; then
  echo "ABI check FAILED: removed or changed interfaces against $(basename "$baseline")" >&2
  exit 1
fi
if (( rc & 4 )); then
  echo "ABI check passed: additions only (update the baseline with the minor version)"
else
  echo "ABI check passed: no change against $(basename "$baseline")"
fi
exit 0
