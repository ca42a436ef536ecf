#!/usr/bin/env bash
# Quality against llama.cpp on the same model, text and context (issue 15): llama.cpp's
# `llama-perplexity` on the model's F16 and Q8_0 GGUFs (made from it with llama-quantize),
# and `codecllm perplexity` on the F16 GGUF and on INT8 containers compressed from it (per
# channel, and with --group-size GROUP), each container also scored for KL divergence
# against the F16 GGUF. Prints a table; writes every number, with provenance, to
# $OUT/peer-perplexity.json (or ./peer-perplexity.json).
#
# Usage: scripts/peer-perplexity.sh MODEL.gguf [TEXT] [CTX] [CHUNKS]
#   TEXT    default: Paradise Lost (scripts/fetch-text.sh); CTX default 512; CHUNKS default
#           all windows of the text.
# Knobs: LLAMA_BIN (directory holding llama-perplexity and llama-quantize; default: the
#   peer benchmark's build, /tmp/peer-bench/llama-build/bin), CODECLLM_BIN
#   (target/release/codecllm), WEIGHTS (codecllm's --weights: auto, the GPU when there is
#   one; cpu for the reference forward), GROUP (32), THREADS (nproc), WORK (a temp dir).
# A llama.cpp CPU build is enough for everything but GPU timings: the numbers compared are
# perplexities, which do not depend on where they were computed (the cross-check is that
# both agree within 0.3 %).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: scripts/peer-perplexity.sh MODEL.gguf [TEXT] [CTX] [CHUNKS]}
text=${2:-$(bash scripts/fetch-text.sh)}
ctx=${3:-512}
chunks=${4:-}
lbin=${LLAMA_BIN:-/tmp/peer-bench/llama-build/bin}
cli=${CODECLLM_BIN:-target/release/codecllm}
weights=${WEIGHTS:-auto}
group=${GROUP:-32}
threads=${THREADS:-$(nproc)}
out=${OUT:-.}/peer-perplexity.json
for tool in "$lbin/llama-perplexity" "$lbin/llama-quantize" "$cli"; do
  [ -x "$tool" ] || { echo "peer-perplexity: $tool is missing (set LLAMA_BIN / CODECLLM_BIN)" >&2; exit 2; }
done
[ -s "$model" ] && [ -s "$text" ] || { echo "peer-perplexity: no such model or text: $model, $text" >&2; exit 2; }
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
export LD_LIBRARY_PATH="$lbin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
chunk_args=(); [ -n "$chunks" ] && chunk_args=(--chunks "$chunks")
rows=$work/rows.jsonl
: > "$rows"

# llama.cpp: F16 (the reference both systems start from) and Q8_0, from the given GGUF.
for type in F16 Q8_0; do
  gguf=$work/model-$type.gguf
  [ -s "$gguf" ] || "$lbin/llama-quantize" --allow-requantize "$model" "$gguf" "$type" > "$work/quantize-$type.log" 2>&1 \
    || { tail -n 5 "$work/quantize-$type.log" >&2; exit 1; }
  echo "== llama.cpp $type"
  # F16 saves its logits; Q8_0 is scored against them (llama.cpp's own KL divergence).
  kld=(--kl-divergence-base "$work/f16.kld"); [ "$type" = Q8_0 ] && kld+=(--kl-divergence)
  "$lbin/llama-perplexity" -m "$gguf" -f "$text" -c "$ctx" -t "$threads" "${chunk_args[@]}" "${kld[@]}" > "$work/llama-$type.log" 2>&1 \
    || { tail -n 20 "$work/llama-$type.log" >&2; exit 1; }
  python3 - "$work/llama-$type.log" "$type" "$gguf" >> "$rows" <<'PY'
import json, os, re, sys
log, kind, gguf = sys.argv[1:]
text = open(log, errors="replace").read()
m = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", text) or re.search(r"Mean PPL\(Q\)\s*:\s*([\d.]+)\s*(?:±|\+/-)\s*([\d.]+)", text)
if not m:
    sys.exit(f"{log}: no final estimate")
row = {"system": "llama.cpp", "what": kind, "ppl": float(m[1]), "ppl_err": float(m[2]), "chunks": len(re.findall(r"\[(\d+)\]([\d.]+)", text)),
       "bytes": os.path.getsize(gguf)}
kl = re.search(r"Mean\s+KLD:\s*([-\d.]+)\s*±\s*([\d.]+)", text)
if kl:
    top = re.search(r"Same top p:\s*([\d.]+)", text)
    row["kl"] = {"mean_kl": float(kl[1]), "mean_kl_err": float(kl[2]), "top1_agreement": float(top[1]) / 100 if top else None}
print(json.dumps(row))
PY
done

# codecllm: the same F16 file, and INT8 containers compressed from it.
f16=$work/model-F16.gguf
echo "== codecllm F16 ($weights)"
"$cli" perplexity "$f16" --text "$text" --ctx "$ctx" "${chunk_args[@]}" --weights "$weights" --json > "$work/codecllm-f16.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r.update(system="codecllm", what="F16"); print(json.dumps(r))' "$work/codecllm-f16.json" >> "$rows"
for variant in per-channel "group-$group"; do
  clm=$work/model-$variant.clm
  extra=(); [ "$variant" != per-channel ] && extra=(--group-size "$group")
  [ -s "$clm" ] || "$cli" compress "$f16" -o "$clm" "${extra[@]}" > "$work/compress-$variant.log" 2>&1 \
    || { tail -n 5 "$work/compress-$variant.log" >&2; exit 1; }
  echo "== codecllm INT8 $variant ($weights), KL against F16"
  "$cli" perplexity "$clm" --text "$text" --ctx "$ctx" "${chunk_args[@]}" --weights "$weights" --kl-divergence "$f16" --json > "$work/codecllm-$variant.json"
  python3 -c 'import json,os,sys; r=json.load(open(sys.argv[1])); r.update(system="codecllm", what="INT8 "+sys.argv[2], bytes=os.path.getsize(sys.argv[3])); print(json.dumps(r))' \
    "$work/codecllm-$variant.json" "$variant" "$clm" >> "$rows"
done

python3 - "$rows" "$out" "$model" "$text" "$ctx" "$weights" "$cli" <<'PY'
import json, subprocess, sys, time
rows_path, out, model, text, ctx, weights, cli = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path) if l.strip()]
def run(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return None
f16 = {r["system"]: r["ppl"] for r in rows if r["what"] == "F16"}
for r in rows:
    base = f16.get(r["system"])
    r["delta_ppl_pct"] = None if base is None else 100 * (r["ppl"] / base - 1)
cross = 100 * (f16["codecllm"] / f16["llama.cpp"] - 1) if len(f16) == 2 else None
json.dump({"provenance": {"commit": run("git describe --always --dirty"), "codecllm": run(f"{cli} --version"), "model": model, "text": text,
                          "ctx": int(ctx), "weights": weights, "unix_time": int(time.time()), "cpu": run("grep -m1 'model name' /proc/cpuinfo"),
                          "gpu": run("nvidia-smi --query-gpu=name,driver_version --format=csv,noheader")},
           "f16_cross_check_pct": cross, "rows": rows}, open(out, "w"), indent=1)
print(f"\n{'system':10} {'weights':22} {'PPL':>10} {'±':>8} {'ΔPPL %':>8} {'mean KL':>9} {'top-1 %':>8}")
for r in rows:
    kl = r.get("kl") or {}
    d = r["delta_ppl_pct"]
    print(f"{r['system']:10} {r['what']:22} {r['ppl']:10.4f} {r['ppl_err']:8.4f} {'' if d is None else f'{d:+.3f}':>8} "
          f"{kl.get('mean_kl', float('nan')):9.6f} {100 * kl.get('top1_agreement', float('nan')):8.2f}")
if cross is not None:
    print(f"\nF16 cross-check: codecllm {f16['codecllm']:.4f} vs llama.cpp {f16['llama.cpp']:.4f} ({cross:+.3f} %, target within 0.3 %)")
print(f"written: {out}")
PY
