#!/usr/bin/env bash
# Bitcode link step for rustc's nvptx64-nvidia-cuda target, used as its `-C linker`.
# rustc calls the linker the way it calls llvm-bitcode-linker (a component no registry
# here serves): `--export-symbol NAME ... *.o *.rlib -L DIR --target T --target-cpu CPU -o OUT`.
# We link the bitcode, internalize everything but the kernels, optimize and emit PTX with
# the llvm-tools of the pinned nightly, whose directory build.rs passes in CODECLLM_LLVM_BIN.
set -euo pipefail
bin="${CODECLLM_LLVM_BIN:?CODECLLM_LLVM_BIN must name the llvm-tools bin directory}"
objs=() rlibs=() exports=() out="" cpu=""
while [ $# -gt 0 ]; do
  case "$1" in
    --export-symbol) exports+=("$2"); shift 2 ;;
    -o) out="$2"; shift 2 ;;
    --target-cpu) cpu="$2"; shift 2 ;;
    --target|-L) shift 2 ;;
    *.o) objs+=("$1"); shift ;;
    *.rlib) rlibs+=("$1"); shift ;;
    *) shift ;;
  esac
done
[ -n "$out" ] && [ -n "$cpu" ] && [ ${#objs[@]} -gt 0 ] || { echo "nvptx-link: missing -o, --target-cpu or objects" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Library archives (core's compiler_builtins) hold bitcode members: take only what is used.
extra=()
for lib in "${rlibs[@]}"; do
  d="$work/$(basename "$lib")"; mkdir -p "$d"
  (cd "$d" && "$bin/llvm-ar" x "$lib")
  for m in "$d"/*.o; do [ -e "$m" ] && extra+=(--only-needed "$m"); done
done
"$bin/llvm-link" "${objs[@]}" "${extra[@]}" -o "$work/linked.bc"
keep=$(IFS=,; echo "${exports[*]}")
"$bin/opt" -passes='internalize,default<O3>' -internalize-public-api-list="$keep" "$work/linked.bc" -o "$work/opt.bc"
"$bin/llc" -mtriple=nvptx64-nvidia-cuda -mcpu="$cpu" -O3 "$work/opt.bc" -o "$out"
