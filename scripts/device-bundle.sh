#!/usr/bin/env bash
# Builds everything a GPU machine needs into .device-bundle/ (git-ignored): the release
# CLI, the GPU test binary and libnvcomp.so.6. GPU machines have no Rust toolchain; carry
# this folder and run scripts/device-check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=.device-bundle
rm -rf "$out" && mkdir -p "$out"
cargo build --release --locked
cp target/release/codecllm "$out/"
cargo test --release --locked --no-run --test gpu --test stream --test llama_gpu --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json,shutil
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"] in ("gpu","stream","llama_gpu") and m.get("executable"):
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"] + "-tests")' "$out"
strip "$out/codecllm" "$out/gpu-tests" "$out/stream-tests" "$out/llama_gpu-tests"
cp .cache/nvcomp/libnvcomp.so.6 "$out/"
cp target/kernels/sm_90/nvptx64-nvidia-cuda/release/codecllm_kernels.ptx "$out/kernels_sm_90.ptx"
du -sh "$out"/*
