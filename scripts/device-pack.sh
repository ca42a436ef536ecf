#!/usr/bin/env bash
# Packs what a GPU session needs into calls of the device tool, each under its 64 MiB carry
# limit: the bundle (scripts/device-bundle.sh) compressed, libnvcomp, llama.cpp's source
# (or a build an earlier machine returned), and the SmolLM2 GGUF in parts. Writes
# .device-pack/ (git-ignored through .git/info/exclude) and prints, per call, the carry list
# and the command — `scripts/device-call.sh STEP` on the device. The calls must follow
# each other within the machine's ~30 s idle window: each leaves its files in /tmp there.
#
#   call 1  unpack       binaries, llama.cpp's source, SmolLM2 part 0; starts the llama.cpp
#                        build and the peer benchmark's data in the background; ptxas
#                        (with a build an earlier machine returned: no source, and the
#                        build's 47 MB come with the peer call instead)
#   call 2  gpu-tests    libnvcomp, SmolLM2 part 1; every GPU test that needs no model file,
#                        compute-sanitizer over the kernels, families and tiny LLaMA
#   call 3  model-tests  SmolLM2's last part; the SmolLM2 forward, hybrid placement,
#                        perplexity against llama.cpp, smoke and run tests
#   call 4+ peer         scripts/peer-bench.sh all once the background work is done
#                        (repeat while it exits with 3)
# This session's measured timings (H200, 16 cores): call 1 ~10 s plus the machine's start
# (~60–90 s), call 2 ~4 min, call 3 ~2–4 min, peer ~4–9 min.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SKIP_BUNDLE:-0}" = 1 ] || bash scripts/device-bundle.sh
b=.device-bundle p=.device-pack
[ -x "$b/codecllm" ] || { echo "device-pack: no $b (run scripts/device-bundle.sh)" >&2; exit 2; }
grep -qx '/.device-pack/' .git/info/exclude 2>/dev/null || echo '/.device-pack/' >> .git/info/exclude
rm -rf "$p" && mkdir -p "$p"
text=$(bash scripts/fetch-text.sh)
smol=$(bash scripts/fetch-smollm2.sh)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$text" "$stage/paradise-lost.txt"
# Everything but libnvcomp and llama.cpp's source (xz: the test binaries shrink ~8x).
tar cf - -C "$b" --exclude=libnvcomp.so.6 --exclude=peer-src --exclude=peer-llama . -C "$stage" paradise-lost.txt | xz -T0 -6 > "$p/bins.tar.xz"
xz -T0 -6 -c "$b/libnvcomp.so.6" > "$p/nvcomp.xz"
# llama.cpp: a build an earlier machine returned (peer-bench.sh leaves it in \$OUT as
# peer-llama-bin.tgz.part*: keep them in .cache/peer-llama/), else its source.
# The build is too large to share a call with the binaries; the peer call carries it.
first=("$p/bins.tar.xz") peer=()
if compgen -G ".cache/peer-llama/peer-llama-bin.tgz.part*" > /dev/null; then
  mkdir -p "$p/peer-llama" && cp .cache/peer-llama/peer-llama-bin.tgz.part* "$p/peer-llama/"
  peer=("$p/peer-llama")
else
  cp -r "$b/peer-src" "$p/peer-src"
  first+=("$p/peer-src")
fi
sha256sum "$smol" | cut -d' ' -f1 > "$p/smollm2.sha256"
mib() { echo $(( ($(du -cb "$@" | tail -n 1 | cut -f1) + (1 << 20) - 1) >> 20 )); }
tree=$(( ($(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1) >> 20) + 1 ))
limit=62
room1=$(( limit - tree - $(mib "${first[@]}") ))
room2=$(( limit - tree - $(mib "$p/nvcomp.xz") ))
size=$(( $(stat -c %s "$smol") >> 20 ))
[ "$room1" -ge 0 ] && [ "$room2" -ge 0 ] || { echo "device-pack: the first calls are over ${limit} MiB" >&2; exit 1; }
[ $(( size - room1 - room2 )) -le $(( limit - tree )) ] || { echo "device-pack: SmolLM2 does not fit three calls" >&2; exit 1; }
dd if="$smol" of="$p/smol.part0" bs=1M count="$room1" status=none
dd if="$smol" of="$p/smol.part1" bs=1M skip="$room1" count="$room2" status=none
dd if="$smol" of="$p/smol.part2" bs=1M skip=$(( room1 + room2 )) status=none
git describe --always --dirty > "$p/commit.txt"
carry() { printf '"%s", ' "$@" | sed 's/, $//'; }
cat > "$p/CALLS.md" <<EOF
# Device calls for $(cat "$p/commit.txt") (kind nvidia-h200; one after the other, within ~30 s)
1. carry [$(carry "${first[@]}" "$p/smol.part0")]
   command: bash scripts/device-call.sh unpack        (timeout 120)
2. carry [$(carry "$p/nvcomp.xz" "$p/smol.part1")]
   command: bash scripts/device-call.sh gpu-tests     (timeout 600)
3. carry [$(carry "$p/smol.part2" "$p/smollm2.sha256")]
   command: bash scripts/device-call.sh model-tests   (timeout 600)
4. carry [$( [ ${#peer[@]} -eq 0 ] || carry "${peer[@]}" )]
   command: bash scripts/device-call.sh peer          (timeout 600; again while it prints "peer-bench rc 3")
EOF
cat "$p/CALLS.md"
du -sh "$p"/*
