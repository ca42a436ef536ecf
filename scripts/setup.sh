#!/usr/bin/env bash
# Installs what codecllm needs beyond the machine's Rust toolchain, into places it owns:
#  - the nightly pinned in kernels/rust-toolchain.toml, with rust-src and llvm-tools
#    (the GPU kernels are compiled to PTX by build.rs with it);
#  - nvCOMP's shared library from PyPI (nvidia-libnvcomp-cu13==6.0.0.12) into .cache/nvcomp
#    (proprietary licence: fetched, never committed). The GPU code finds it there, or
#    through NVCOMP_LIB;
#  - NCCL's shared library from PyPI (nvidia-nccl-cu13==2.30.7, the version of cudarc's
#    bindings; 200 MB) into .cache/nccl, with the libnccl.so link cudarc's loader looks for.
#    Multi-GPU runs (--gpus N) need that folder on LD_LIBRARY_PATH. CODECLLM_NO_NCCL=1 skips it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$root/kernels/rust-toolchain.toml")
if ! rustup run "$channel" rustc --version >/dev/null 2>&1 \
   || ! rustup component list --toolchain "$channel" --installed | grep -q '^rust-src' \
   || ! rustup component list --toolchain "$channel" --installed | grep -q '^llvm-tools'; then
  echo "setup: installing $channel with rust-src and llvm-tools" >&2
  rustup toolchain install "$channel" --profile minimal --component rust-src,llvm-tools >&2
fi

cache="${CODECLLM_CACHE:-$root/.cache}"
lib="$cache/nvcomp/libnvcomp.so.6"
if [ ! -s "$lib" ]; then
  echo "setup: fetching nvCOMP 6.0.0.12 from PyPI" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if python3 -m pip download --quiet --no-deps --disable-pip-version-check --only-binary=:all: \
       --platform manylinux_2_28_x86_64 nvidia-libnvcomp-cu13==6.0.0.12 -d "$tmp" >&2; then
    python3 - "$tmp"/nvidia_libnvcomp_cu13-*.whl "$tmp/lib" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("nvidia/libnvcomp/lib64/libnvcomp.so.6")
os.makedirs(sys.argv[2], exist_ok=True)
open(os.path.join(sys.argv[2], "libnvcomp.so.6"), "wb").write(data)
PY
    mkdir -p "$cache/nvcomp" && mv "$tmp/lib/libnvcomp.so.6" "$lib"
  else
    echo "setup: nvCOMP could not be fetched; GPU decode will be unavailable" >&2
  fi
fi

nccl="$cache/nccl/libnccl.so.2"
if [ "${CODECLLM_NO_NCCL:-0}" != 1 ] && [ ! -s "$nccl" ]; then
  echo "setup: fetching NCCL 2.30.7 from PyPI" >&2
  tmp_nccl=$(mktemp -d)
  if python3 -m pip download --quiet --no-deps --disable-pip-version-check --only-binary=:all: \
       --platform manylinux_2_18_x86_64 nvidia-nccl-cu13==2.30.7 -d "$tmp_nccl" >&2 \
     && python3 - "$tmp_nccl"/nvidia_nccl_cu13-*.whl "$tmp_nccl/lib" <<'PY'
import sys, zipfile, os, shutil
os.makedirs(sys.argv[2], exist_ok=True)
with zipfile.ZipFile(sys.argv[1]) as z, z.open("nvidia/nccl/lib/libnccl.so.2") as src, \
        open(os.path.join(sys.argv[2], "libnccl.so.2"), "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  then
    mkdir -p "$cache/nccl" && mv "$tmp_nccl/lib/libnccl.so.2" "$nccl"
  else
    echo "setup: NCCL could not be fetched; --gpus N > 1 will be unavailable" >&2
  fi
  rm -rf "$tmp_nccl"
fi
if [ -s "$nccl" ]; then
  ln -sfn libnccl.so.2 "$cache/nccl/libnccl.so"
fi
