//! The CPU reference forward pass in f32 over a `WeightSource` (a container's INT8
//! weights, lossless tensors as stored; or a checkpoint's original values) — the oracle
//! for GPU forwards, the perplexity command's CPU engine, and a way to run a model on a
//! machine without a GPU. Linears a container stores as INT8 stay INT8 in RAM and are
//! computed from the codes by `stream::cpu_gemv` (f32 arithmetic: the values of the
//! dequantized product up to f32 rounding, from a quarter of the bytes); the rest are f32.
//!
//! Conventions are llama.cpp's, as GGUF weights are laid out for them, for every family in
//! `ModelConfig`: RoPE on adjacent pairs or on split halves (`RopeStyle`), grouped-query
//! attention sharing KV head `h / (heads / kv_heads)` among query heads, optionally over a
//! sliding window, RMSNorm (also per head on q and k, and after the attention and MLP
//! branches, where the family has those), a gated MLP with SiLU or tanh-GELU. A batch of
//! tokens runs as matrix products, so each weight is read once per batch.
use crate::codec::Int8Matrix;
use crate::container::Encoding;
use crate::error::{Error, Result};
use crate::import::WeightSource;
use crate::model::config::{Activation, BlockNames, ModelConfig, RopeStyle, ROPE_FREQS};
use crate::stream::cpu_gemv::{gemv_int8, Int8View};
use crate::stream::cpu_ggml::{gemv_ggml, GgmlMatrix};
use rayon::prelude::*;

/// A linear layer's weights `[rows, cols]` as the CPU computes with them.
enum CpuLinear {
    F32(Vec<f32>),
    /// Stored as INT8 in the container: kept so (a byte per weight), multiplied by the
    /// INT8 GEMV.
    Int8(Int8Matrix),
    /// GGUF blocks of a type the GPU computes on as stored (a GGUF, or a `--keep-quant`
    /// container): kept so, multiplied by the GGUF-block GEMV.
    Ggml(GgmlMatrix),
}

impl CpuLinear {
    fn load(c: &dyn WeightSource, name: &str, rows: usize, cols: usize) -> Result<Self> {
        if let Some((layout, r, k)) = crate::gpu::native_blocks(c, name) {
            if (r, k) != (rows, cols) {
                return Err(Error::Invalid(format!("tensor '{name}' is {r}×{k}, the configuration needs {rows}×{cols}")));
            }
            return Ok(CpuLinear::Ggml(GgmlMatrix::from_blocks(layout, &c.ggml_bytes(name)?, rows, cols)?));
        }
        let stored_int8 = c.container().and_then(|k| k.tensor(name)).is_some_and(|t| matches!(t.encoding, Encoding::Int8 { .. }));
        if !stored_int8 {
            return Ok(CpuLinear::F32(tensor(c, name, rows * cols)?));
        }
        let w = c.int8(name)?;
        if (w.rows, w.cols) != (rows, cols) {
            return Err(Error::Invalid(format!("tensor '{name}' is {}×{}, the configuration needs {rows}×{cols}", w.rows, w.cols)));
        }
        Ok(CpuLinear::Int8(w))
    }

    /// `Y[m, rows] = X[m, cols] · Wᵀ`.
    fn apply(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            CpuLinear::F32(w) => Ok(matmul(x, m, w)),
            CpuLinear::Int8(w) => {
                let mut y = vec![0f32; m * w.rows];
                gemv_int8(&Int8View::try_from(w)?, 0..w.rows, x, m, &mut y, None)?;
                Ok(y)
            }
            CpuLinear::Ggml(w) => {
                let mut y = vec![0f32; m * w.rows];
                gemv_ggml(w, x, m, &mut y)?;
                Ok(y)
            }
        }
    }
}

struct CpuBlock {
    attn_norm: Vec<f32>,
    q: CpuLinear,
    k: CpuLinear,
    v: CpuLinear,
    o: CpuLinear,
    /// q, k, v biases (Qwen2).
    qkv_bias: Option<[Vec<f32>; 3]>,
    /// Per-head norms of q and k (Qwen3, Gemma 3).
    qk_norm: Option<[Vec<f32>; 2]>,
    /// Norms of the attention and MLP outputs (Gemma 3).
    post_norms: Option<[Vec<f32>; 2]>,
    ffn_norm: Vec<f32>,
    gate: CpuLinear,
    up: CpuLinear,
    down: CpuLinear,
}

/// The f32 reference model.
pub struct CpuLlama {
    pub cfg: ModelConfig,
    embed: Vec<f32>,
    blocks: Vec<CpuBlock>,
    out_norm: Vec<f32>,
    /// `output.weight`, or `None` when tied to the embedding.
    lm_head: Option<CpuLinear>,
    /// Inverse RoPE frequencies per layer, `head_dim / 2` each.
    inv_freq: Vec<Vec<f64>>,
}

/// Keys and values of past positions, per layer: `[pos][kv_heads · head_dim]` flattened.
#[derive(Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    pub len: usize,
}

pub(crate) fn tensor(c: &dyn WeightSource, name: &str, numel: usize) -> Result<Vec<f32>> {
    let v = c.f32(name)?;
    if v.len() != numel {
        return Err(Error::Invalid(format!("tensor '{name}' has {} elements, the configuration needs {numel}", v.len())));
    }
    Ok(v)
}

/// `Σ a[i]·b[i]` with eight independent partial sums, so the compiler keeps them in vector
/// registers instead of one serial chain.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Y[m, n] = X[m, k] · W[n, k]ᵀ` (row-major), parallel over weight rows: each weight row
/// is read once for all `m` rows of `X`.
pub(crate) fn matmul(x: &[f32], m: usize, w: &[f32]) -> Vec<f32> {
    let k = x.len() / m.max(1);
    let n = w.len() / k.max(1);
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(m * 16).zip(w.par_chunks(k * 16)).for_each(|(out, rows)| {
        for (o, row) in out.chunks_mut(m).zip(rows.chunks(k)) {
            for (v, xr) in o.iter_mut().zip(x.chunks(k)) {
                *v = dot(row, xr);
            }
        }
    });
    if m == 1 {
        return yt;
    }
    let mut y = vec![0f32; m * n];
    y.par_chunks_mut(n).enumerate().for_each(|(r, yr)| yr.iter_mut().enumerate().for_each(|(j, v)| *v = yt[j * m + r]));
    y
}

/// `x / √(mean(x²) + eps) · w` for each `w.len()`-wide row of `x`, in place.
pub(crate) fn rmsnorm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_mut(w.len()) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        let r = 1.0 / (ms + eps).sqrt();
        row.iter_mut().zip(w).for_each(|(v, g)| *v *= r * g);
    }
}

/// RMSNorm of one vector into a new one.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut y = x.to_vec();
    rmsnorm_rows(&mut y, w, eps);
    y
}

/// Rotates each `head_dim` slice of `x` by position `pos` (`inv_freq` has head_dim / 2
/// entries), pairing dimensions as `style` says.
pub(crate) fn rope(x: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f64], style: RopeStyle) {
    let half = head_dim / 2;
    for head in x.chunks_mut(head_dim) {
        for (i, f) in inv_freq.iter().enumerate() {
            // Angles reach thousands of radians: computed in f64 as the GPU's table is.
            let (s, c) = (pos as f64 * f).sin_cos();
            let (s, c) = (s as f32, c as f32);
            let (ia, ib) = match style {
                RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                RopeStyle::HalfSplit => (i, i + half),
            };
            let (a, b) = (head[ia], head[ib]);
            head[ia] = a * c - b * s;
            head[ib] = a * s + b * c;
        }
    }
}

/// What follows the q/k/v products of `m` rows at positions `pos0..`: the biases (Qwen 2),
/// the per-head norms (Qwen 3), then RoPE on q and k — for the whole model and for a
/// tensor-parallel rank's heads alike.
#[allow(clippy::too_many_arguments)]
pub(crate) fn qkv_epilogue(
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
    bias: Option<&[Vec<f32>; 3]>,
    qk_norm: Option<&[Vec<f32>; 2]>,
    m: usize,
    pos0: usize,
    inv_freq: &[f64],
    cfg: &ModelConfig,
) {
    if let Some([bq, bk, bv]) = bias {
        for (t, bias) in [(&mut *q, bq), (&mut *k, bk), (&mut *v, bv)] {
            t.chunks_mut(bias.len()).for_each(|row| row.iter_mut().zip(bias).for_each(|(a, c)| *a += c));
        }
    }
    if let Some([nq, nk]) = qk_norm {
        rmsnorm_rows(q, nq, cfg.eps);
        rmsnorm_rows(k, nk, cfg.eps);
    }
    let (qd, kvd) = (q.len() / m.max(1), k.len() / m.max(1));
    for r in 0..m {
        rope(&mut q[r * qd..(r + 1) * qd], cfg.head_dim, pos0 + r, inv_freq, cfg.rope_style);
        rope(&mut k[r * kvd..(r + 1) * kvd], cfg.head_dim, pos0 + r, inv_freq, cfg.rope_style);
    }
}

/// Causal softmax attention of the `m = q.len() / (heads · hd)` new rows at positions
/// `pos0..`, over the cached keys and values `[pos][kv_heads · hd]` (the new rows' already
/// in), each query head reading KV head `head / (heads / kv_heads)`, over the last `window`
/// positions when given. Returns `[m, heads · hd]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    q: &[f32],
    pos0: usize,
    kc: &[f32],
    vc: &[f32],
    heads: usize,
    kv_heads: usize,
    hd: usize,
    window: Option<usize>,
    scale: f32,
) -> Vec<f32> {
    let (qd, kvd, group) = (heads * hd, kv_heads * hd, heads / kv_heads);
    let mut att = vec![0f32; q.len()];
    att.par_chunks_mut(hd).enumerate().for_each(|(item, out)| {
        let (r, head) = (item / heads, item % heads);
        let p = pos0 + r;
        let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
        let kvh = head / group;
        let qh = &q[r * qd + head * hd..r * qd + (head + 1) * hd];
        let scores: Vec<f32> = (first..=p).map(|j| dot(qh, &kc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd]) * scale).collect();
        let max = scores.iter().fold(f32::NEG_INFINITY, |a, &s| a.max(s));
        let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f32 = e.iter().sum();
        for (j, w) in (first..=p).zip(&e) {
            let vj = &vc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
            out.iter_mut().zip(vj).for_each(|(o, v)| *o += w / sum * v);
        }
    });
    att
}

pub(crate) fn act(a: Activation, g: f32) -> f32 {
    match a {
        Activation::Silu => g / (1.0 + (-g).exp()),
        Activation::GeluTanh => 0.5 * g * (1.0 + (0.797_884_6 * (g + 0.044_715 * g * g * g)).tanh()),
    }
}

impl CpuLlama {
    pub fn load(c: &dyn WeightSource) -> Result<Self> {
        let cfg = ModelConfig::from_metadata(c.metadata())?;
        let (d, f, qd, kv, hd) = (cfg.dim, cfg.ffn, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
        let blocks = (0..cfg.layers)
            .into_par_iter()
            .map(|i| {
                let n = BlockNames::of(i);
                Ok(CpuBlock {
                    attn_norm: tensor(c, &n.attn_norm, d)?,
                    q: CpuLinear::load(c, &n.q, qd, d)?,
                    k: CpuLinear::load(c, &n.k, kv, d)?,
                    v: CpuLinear::load(c, &n.v, kv, d)?,
                    o: CpuLinear::load(c, &n.o, d, qd)?,
                    qkv_bias: cfg
                        .qkv_bias
                        .then(|| Ok::<_, Error>([tensor(c, &n.q_bias, qd)?, tensor(c, &n.k_bias, kv)?, tensor(c, &n.v_bias, kv)?]))
                        .transpose()?,
                    qk_norm: cfg.qk_norm.then(|| Ok::<_, Error>([tensor(c, &n.q_norm, hd)?, tensor(c, &n.k_norm, hd)?])).transpose()?,
                    post_norms: cfg.post_norms.then(|| Ok::<_, Error>([tensor(c, &n.post_attn_norm, d)?, tensor(c, &n.post_ffn_norm, d)?])).transpose()?,
                    ffn_norm: tensor(c, &n.ffn_norm, d)?,
                    gate: CpuLinear::load(c, &n.gate, f, d)?,
                    up: CpuLinear::load(c, &n.up, f, d)?,
                    down: CpuLinear::load(c, &n.down, d, f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if c.has("output.weight") { Some(CpuLinear::load(c, "output.weight", cfg.vocab, d)?) } else { None };
        let factors = if c.has(ROPE_FREQS) { Some(tensor(c, ROPE_FREQS, hd / 2)?) } else { None };
        let inv_freq = (0..cfg.layers).map(|l| (0..hd / 2).map(|i| cfg.rope_inv_freq(l, i, factors.as_deref())).collect()).collect();
        Ok(CpuLlama { embed: tensor(c, "token_embd.weight", cfg.vocab * d)?, out_norm: tensor(c, "output_norm.weight", d)?, blocks, lm_head, inv_freq, cfg })
    }

    /// Feeds `token` at the next position of `cache`; returns the logits.
    pub fn step(&self, token: u32, cache: &mut KvCache) -> Result<Vec<f32>> {
        Ok(self.forward(&[token], cache, 0..1)?.remove(0))
    }

    /// Feeds `tokens` at the next positions of `cache` as one batch; returns the logits of
    /// the batch rows in `logits_for` (e.g. the scored half of a perplexity window).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits_for: std::ops::Range<usize>) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let (d, hd, m) = (cfg.dim, cfg.head_dim, tokens.len());
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
            return Err(Error::Invalid(format!("token {bad} is outside the vocabulary of {}", cfg.vocab)));
        }
        if logits_for.end > m {
            return Err(Error::Invalid(format!("logits of rows {logits_for:?} asked of a batch of {m}")));
        }
        if cache.k.is_empty() {
            cache.k = vec![Vec::new(); cfg.layers];
            cache.v = vec![Vec::new(); cfg.layers];
        }
        let pos0 = cache.len;
        let mut x: Vec<f32> = tokens.iter().flat_map(|&t| self.embed[t as usize * d..(t as usize + 1) * d].iter().map(|v| v * cfg.embed_scale)).collect();
        for (l, b) in self.blocks.iter().enumerate() {
            let mut h = x.clone();
            rmsnorm_rows(&mut h, &b.attn_norm, cfg.eps);
            let (mut q, mut k, mut v) = (b.q.apply(&h, m)?, b.k.apply(&h, m)?, b.v.apply(&h, m)?);
            qkv_epilogue(&mut q, &mut k, &mut v, b.qkv_bias.as_ref(), b.qk_norm.as_ref(), m, pos0, &self.inv_freq[l], cfg);
            cache.k[l].extend_from_slice(&k);
            cache.v[l].extend_from_slice(&v);
            let (kc, vc) = (&cache.k[l], &cache.v[l]);
            let window = if cfg.is_local(l) { cfg.sliding_window } else { None };
            let att = attention(&q, pos0, kc, vc, cfg.heads, cfg.kv_heads, hd, window, cfg.attn_scale);
            let mut o = b.o.apply(&att, m)?;
            if let Some([post_attn, _]) = &b.post_norms {
                rmsnorm_rows(&mut o, post_attn, cfg.eps);
            }
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let mut h = x.clone();
            rmsnorm_rows(&mut h, &b.ffn_norm, cfg.eps);
            let (g, u) = (b.gate.apply(&h, m)?, b.up.apply(&h, m)?);
            let a: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| act(cfg.activation, g) * u).collect();
            let mut down = b.down.apply(&a, m)?;
            if let Some([_, post_ffn]) = &b.post_norms {
                rmsnorm_rows(&mut down, post_ffn, cfg.eps);
            }
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
        cache.len += m;
        let mut h = x[logits_for.start * d..logits_for.end * d].to_vec();
        rmsnorm_rows(&mut h, &self.out_norm, cfg.eps);
        let n = logits_for.len();
        let mut logits = match &self.lm_head {
            Some(w) => w.apply(&h, n)?,
            None => matmul(&h, n, &self.embed),
        };
        if let Some(c) = cfg.logit_softcap {
            logits.iter_mut().for_each(|v| *v = (*v / c).tanh() * c);
        }
        Ok(logits.chunks(cfg.vocab).map(<[f32]>::to_vec).collect())
    }
}
