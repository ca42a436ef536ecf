//! LLaMA-family models from a container: the configuration (from the GGUF metadata the
//! container carries), and the CPU reference forward pass in f32 over the container's own
//! weights (INT8 dequantized, lossless tensors as stored) — the oracle for GPU forwards,
//! and a way to run a model on a machine without a GPU.
//!
//! Conventions are llama.cpp's, as GGUF weights are laid out for them: RoPE rotates
//! adjacent pairs `(x[2i], x[2i+1])` (the converter permuted q and k for that), grouped-query
//! attention shares KV head `h / (heads / kv_heads)` among query heads, RMSNorm, SwiGLU.
use crate::error::{Error, Result};
use crate::format::Container;
use crate::input::SourceModel;
use crate::quant::Int8Matrix;
use crate::reference::{decode_f32, decode_int8};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Where a model's weights come from: a container (INT8 as stored) or the source
/// checkpoint (the original values: the FP16 baseline; INT8 quantized on the fly).
pub trait WeightSource: Sync {
    fn metadata(&self) -> &BTreeMap<String, String>;
    fn has(&self, name: &str) -> bool;
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    fn f32(&self, name: &str) -> Result<Vec<f32>>;
    fn int8(&self, name: &str) -> Result<Int8Matrix>;
    /// The container behind this source, if any (its GPU-only codecs decode on the GPU).
    fn container(&self) -> Option<&Container> {
        None
    }
}

impl WeightSource for Container {
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.index.metadata
    }
    fn has(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor(name).map(|t| t.shape.iter().map(|&d| d as usize).collect())
    }
    fn f32(&self, name: &str) -> Result<Vec<f32>> {
        decode_f32(self, name)
    }
    fn int8(&self, name: &str) -> Result<Int8Matrix> {
        if let Some(crate::format::Encoding::Int8 { .. }) = self.tensor(name).map(|t| &t.encoding) {
            return decode_int8(self, name);
        }
        quantize_2d(self, name)
    }
    fn container(&self) -> Option<&Container> {
        Some(self)
    }
}

impl WeightSource for SourceModel {
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    fn has(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor(name).map(|t| t.shape.iter().map(|&d| d as usize).collect())
    }
    fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name).ok_or_else(|| Error::input(&self.path, format!("no tensor named '{name}'")))?;
        if !t.dtype.is_float() {
            return Err(Error::input(&self.path, format!("tensor '{name}' is not floating point")));
        }
        Ok(self.to_f32(t))
    }
    fn int8(&self, name: &str) -> Result<Int8Matrix> {
        quantize_2d(self, name)
    }
}

/// Columns per scale when a tensor is quantized at load time (not stored as INT8, e.g. a
/// tied embedding used as the LM head, or any weight of a GGUF source): 32, GGUF's block
/// size, so the INT8 grid follows the source's own quantization blocks.
pub const LOAD_TIME_GROUP: usize = 32;

/// INT8 of a 2-D tensor that is not stored as INT8 (per group of `LOAD_TIME_GROUP`, or
/// per row when the row length is not a multiple of it).
fn quantize_2d(src: &dyn WeightSource, name: &str) -> Result<Int8Matrix> {
    let Some([rows, cols]) = src.shape(name).as_deref().and_then(|s| <[usize; 2]>::try_from(s).ok()) else {
        return Err(Error::Invalid(format!("tensor '{name}' is not a matrix")));
    };
    let group = if cols % LOAD_TIME_GROUP == 0 && cols > LOAD_TIME_GROUP { LOAD_TIME_GROUP } else { cols };
    let w = src.f32(name)?;
    Int8Matrix::quantize(&w, rows, cols, group).map(|(m, _)| m).map_err(|e| Error::Invalid(format!("tensor '{name}': {e}")))
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    pub layers: usize,
    pub dim: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub context: usize,
    pub rope_base: f32,
    pub eps: f32,
}

fn meta_num(m: &BTreeMap<String, String>, key: &str) -> Result<f64> {
    m.get(&format!("gguf.{key}"))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| Error::Invalid(format!("the model's metadata lacks a numeric gguf.{key}")))
}

impl LlamaConfig {
    pub fn from_metadata(m: &BTreeMap<String, String>) -> Result<Self> {
        let arch = m.get("gguf.general.architecture").map(String::as_str).unwrap_or("");
        if arch != "\"llama\"" {
            return Err(Error::Invalid(format!("architecture {arch} is not supported (LLaMA family only)")));
        }
        let n = |k: &str| meta_num(m, &format!("llama.{k}"));
        let (dim, heads) = (n("embedding_length")? as usize, n("attention.head_count")? as usize);
        let cfg = LlamaConfig {
            layers: n("block_count")? as usize,
            dim,
            ffn: n("feed_forward_length")? as usize,
            heads,
            kv_heads: n("attention.head_count_kv").unwrap_or(heads as f64) as usize,
            head_dim: dim.checked_div(heads).unwrap_or(0),
            vocab: n("vocab_size").or_else(|_| {
                let tokens = m.get("gguf.tokenizer.ggml.tokens").ok_or_else(|| Error::Invalid("no vocabulary size".into()))?;
                Ok::<f64, Error>(serde_json::from_str::<Vec<serde_json::Value>>(tokens).map(|v| v.len() as f64).unwrap_or(0.0))
            })? as usize,
            context: n("context_length").unwrap_or(2048.0) as usize,
            rope_base: n("rope.freq_base").unwrap_or(10000.0) as f32,
            eps: n("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
        };
        if cfg.heads == 0 || cfg.kv_heads == 0 || cfg.heads % cfg.kv_heads != 0 || cfg.dim % cfg.heads != 0 || cfg.head_dim % 2 != 0 || cfg.layers == 0 || cfg.vocab == 0 {
            return Err(Error::Invalid(format!("inconsistent LLaMA configuration: {cfg:?}")));
        }
        Ok(cfg)
    }
}

/// Tensor names of block `i` (llama.cpp's GGUF naming).
pub fn block_names(i: usize) -> [String; 9] {
    ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"].map(|n| format!("blk.{i}.{n}.weight"))
}

struct CpuBlock {
    attn_norm: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    ffn_norm: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

/// The f32 reference model.
pub struct CpuLlama {
    pub cfg: LlamaConfig,
    embed: Vec<f32>,
    blocks: Vec<CpuBlock>,
    out_norm: Vec<f32>,
    /// `output.weight`, or `None` when tied to the embedding.
    lm_head: Option<Vec<f32>>,
}

/// Keys and values of past positions, per layer: `[pos][kv_heads · head_dim]`.
#[derive(Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    pub len: usize,
}

fn tensor(c: &dyn WeightSource, name: &str, numel: usize) -> Result<Vec<f32>> {
    let v = c.f32(name)?;
    if v.len() != numel {
        return Err(Error::Invalid(format!("tensor '{name}' has {} elements, the configuration needs {numel}", v.len())));
    }
    Ok(v)
}

/// `y = W x` for row-major `W` `[rows, x.len()]`, rows in parallel.
fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.par_chunks(x.len()).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * r * g).collect()
}

/// Rotates adjacent pairs of each `head_dim` slice of `x` by position `pos`.
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, base: f32) {
    for head in x.chunks_mut(head_dim) {
        for i in 0..head_dim / 2 {
            let theta = pos as f32 * base.powf(-2.0 * i as f32 / head_dim as f32);
            let (s, c) = theta.sin_cos();
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * c - b * s;
            head[2 * i + 1] = a * s + b * c;
        }
    }
}

impl CpuLlama {
    pub fn load(c: &dyn WeightSource) -> Result<Self> {
        let cfg = LlamaConfig::from_metadata(c.metadata())?;
        let (d, f, kv) = (cfg.dim, cfg.ffn, cfg.kv_heads * cfg.head_dim);
        let blocks = (0..cfg.layers)
            .map(|i| {
                let n = block_names(i);
                Ok(CpuBlock {
                    attn_norm: tensor(c, &n[0], d)?,
                    q: tensor(c, &n[1], d * d)?,
                    k: tensor(c, &n[2], kv * d)?,
                    v: tensor(c, &n[3], kv * d)?,
                    o: tensor(c, &n[4], d * d)?,
                    ffn_norm: tensor(c, &n[5], d)?,
                    gate: tensor(c, &n[6], f * d)?,
                    up: tensor(c, &n[7], f * d)?,
                    down: tensor(c, &n[8], d * f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if c.has("output.weight") { Some(tensor(c, "output.weight", cfg.vocab * d)?) } else { None };
        Ok(CpuLlama { embed: tensor(c, "token_embd.weight", cfg.vocab * d)?, out_norm: tensor(c, "output_norm.weight", d)?, blocks, lm_head, cfg })
    }

    /// Feeds `token` at the next position of `cache`; returns the logits.
    pub fn step(&self, token: u32, cache: &mut KvCache) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (d, hd) = (cfg.dim, cfg.head_dim);
        if token as usize >= cfg.vocab {
            return Err(Error::Invalid(format!("token {token} is outside the vocabulary of {}", cfg.vocab)));
        }
        if cache.k.is_empty() {
            cache.k = vec![Vec::new(); cfg.layers];
            cache.v = vec![Vec::new(); cfg.layers];
        }
        let pos = cache.len;
        let mut x = self.embed[token as usize * d..(token as usize + 1) * d].to_vec();
        let group = cfg.heads / cfg.kv_heads;
        for (l, b) in self.blocks.iter().enumerate() {
            let h = rmsnorm(&x, &b.attn_norm, cfg.eps);
            let mut q = matvec(&b.q, &h);
            let mut k = matvec(&b.k, &h);
            let v = matvec(&b.v, &h);
            rope(&mut q, hd, pos, cfg.rope_base);
            rope(&mut k, hd, pos, cfg.rope_base);
            cache.k[l].extend_from_slice(&k);
            cache.v[l].extend_from_slice(&v);
            let kv_len = cfg.kv_heads * hd;
            let mut attn = vec![0f32; d];
            for head in 0..cfg.heads {
                let kvh = head / group;
                let qh = &q[head * hd..(head + 1) * hd];
                let scores: Vec<f32> = (0..=pos)
                    .map(|j| {
                        let kj = &cache.k[l][j * kv_len + kvh * hd..j * kv_len + (kvh + 1) * hd];
                        qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                let out = &mut attn[head * hd..(head + 1) * hd];
                for (j, w) in e.iter().enumerate() {
                    let vj = &cache.v[l][j * kv_len + kvh * hd..j * kv_len + (kvh + 1) * hd];
                    out.iter_mut().zip(vj).for_each(|(o, v)| *o += w / sum * v);
                }
            }
            x.iter_mut().zip(matvec(&b.o, &attn)).for_each(|(a, b)| *a += b);
            let h = rmsnorm(&x, &b.ffn_norm, cfg.eps);
            let (g, u) = (matvec(&b.gate, &h), matvec(&b.up, &h));
            let act: Vec<f32> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            x.iter_mut().zip(matvec(&b.down, &act)).for_each(|(a, b)| *a += b);
        }
        cache.len += 1;
        let h = rmsnorm(&x, &self.out_norm, cfg.eps);
        Ok(matvec(self.lm_head.as_deref().unwrap_or(&self.embed), &h))
    }
}

/// Picks the next token: greedy at temperature 0, else temperature + top-p sampling.
pub fn sample(logits: &[f32], temperature: f32, top_p: f32, rng: &mut impl rand::Rng) -> u32 {
    let argmax = || logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
    if temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut p: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &v)| (i as u32, ((v - max) / temperature).exp())).collect();
    p.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f32 = p.iter().map(|x| x.1).sum();
    let (mut kept, mut acc) = (0, 0.0);
    for (i, (_, w)) in p.iter().enumerate() {
        acc += w / total;
        kept = i + 1;
        if acc >= top_p {
            break;
        }
    }
    let mass: f32 = p[..kept].iter().map(|x| x.1).sum();
    let mut r = rng.gen::<f32>() * mass;
    for &(id, w) in &p[..kept] {
        r -= w;
        if r <= 0.0 {
            return id;
        }
    }
    p[kept - 1].0
}
