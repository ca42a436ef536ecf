#!/usr/bin/env bash
# Fetches "Paradise Lost" (John Milton, 1667; public domain; the February 1992 Project
# Gutenberg release, plrabn12.txt of the Canterbury corpus) from the sdist of the PyPI
# package brotli==1.2.1 (tests/testdata/plrabn12.txt; the wheels lack it), turns its CRLF
# line ends into LF (llama.cpp reads text files as bytes, so a CR would be a token), checks
# the sha256 of the result and prints its path. Written beside it, then renamed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dest="${CODECLLM_CACHE:-$root/.cache}/text"
text="$dest/paradise-lost.txt"
# sha256 of the LF file (471,162 bytes; the CRLF original is 07e2e0b4…).
sha256=7f498b78f161d81bf4e121e80fa052b491babb64de44b6364304a117db5fbbb3
if [ ! -s "$text" ]; then
  mkdir -p "$dest"
  tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check brotli==1.2.1 -d "$tmp/sdist" >&2
  python3 - "$tmp"/sdist/brotli-1.2.1.tar.gz "$tmp/text" "$sha256" <<'PY'
import hashlib, sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    data = t.extractfile("brotli-1.2.1/tests/testdata/plrabn12.txt").read()
data = data.replace(b"\r\n", b"\n")
got = hashlib.sha256(data).hexdigest()
if got != sys.argv[3]:
    sys.exit(f"fetch-text.sh: plrabn12.txt with LF line ends has sha256 {got}, not {sys.argv[3]}")
open(sys.argv[2], "wb").write(data)
PY
  mv "$tmp/text" "$text"
fi
echo "$text"
