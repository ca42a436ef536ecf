#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/) with cargo-fuzz under the kernels' pinned nightly.
# Usage: scripts/fuzz.sh [SECONDS per target, default 600] [target ...]
# Findings land in fuzz/artifacts/; minimized ones are kept in fuzz/regressions/<target>/
# and replayed by tests/fuzz_regressions.rs in every test run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"; shift || true
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(container chunk safetensors gguf)
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' kernels/rust-toolchain.toml)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  seeds="fuzz/seeds/$t"; [ -d "$seeds" ] || seeds=""
  echo "== fuzz $t for ${secs}s"
  cargo "+$channel" fuzz run "$t" "fuzz/corpus/$t" $seeds -- -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 2>&1 | tail -n 4
done
