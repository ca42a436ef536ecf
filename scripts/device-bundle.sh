#!/usr/bin/env bash
# Builds everything a GPU machine needs into .device-bundle/ (git-ignored): the release
# CLI, the test binaries that exercise a GPU (or behave differently with one), the PTX and
# libnvcomp.so.6. GPU machines have no Rust toolchain; carry this folder and run
# scripts/device-check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=.device-bundle
rm -rf "$out" && mkdir -p "$out"
cargo build --release --locked
cp target/release/codecllm "$out/"
tests=(gpu stream llama_gpu families perplexity smoke bad_input faults run)
cargo test --release --locked --no-run "${tests[@]/#/--test=}" --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json,shutil
names=set(sys.argv[2:])
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"] in names and m.get("executable"):
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"] + "-tests")' "$out" "${tests[@]}"
strip "$out/codecllm"
for t in "${tests[@]}"; do strip "$out/$t-tests"; done
cp .cache/nvcomp/libnvcomp.so.6 "$out/"
cp target/kernels/sm_90/nvptx64-nvidia-cuda/release/codecllm_kernels.ptx "$out/kernels_sm_90.ptx"
du -sh "$out"/*
