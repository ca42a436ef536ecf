#!/usr/bin/env bash
# On a GPU machine: unpacks .device-bundle/packed/*.xz (scripts/device-bundle.sh) into
# .device-bundle/ where the plain file is missing. The device tool carries at most 64 MiB a
# call, and the stripped binaries are ~6x that compressed; device-check.sh and
# peer-bench.sh call this first, so a call may carry packed/ instead of the plain files.
set -euo pipefail
b="${1:-$(cd "$(dirname "$0")/.." && pwd)/.device-bundle}"
[ -d "$b/packed" ] || exit 0
for f in "$b"/packed/*.xz; do
  plain="$b/$(basename "$f" .xz)"
  [ -s "$plain" ] && continue
  xz -dc "$f" > "$plain.tmp" && mv "$plain.tmp" "$plain"
  case "$plain" in *.so*|*.ptx) ;; *) chmod +x "$plain" ;; esac
done
