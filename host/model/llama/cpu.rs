//! The CPU reference forward pass in f32 over a `WeightSource` (a container's INT8
//! dequantized, lossless tensors as stored; or a checkpoint's original values) — the
//! oracle for GPU forwards, and a way to run a model on a machine without a GPU.
//!
//! Conventions are llama.cpp's, as GGUF weights are laid out for them: RoPE rotates
//! adjacent pairs `(x[2i], x[2i+1])` (the converter permuted q and k for that), grouped-query
//! attention shares KV head `h / (heads / kv_heads)` among query heads, RMSNorm, SwiGLU.
use crate::error::{Error, Result};
use crate::import::WeightSource;
use crate::model::config::{block_names, LlamaConfig};
use rayon::prelude::*;

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
