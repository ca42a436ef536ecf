//! The model's configuration, read from the GGUF metadata a container (or GGUF, or HF
//! checkpoint through `import::hf`) carries, and its tensor names.
use crate::error::{Error, Result};
use std::collections::BTreeMap;

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
    m.get(&format!("gguf.{key}")).and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| Error::Invalid(format!("the model's metadata lacks a numeric gguf.{key}")))
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
        if cfg.heads == 0
            || cfg.kv_heads == 0
            || cfg.heads % cfg.kv_heads != 0
            || cfg.dim % cfg.heads != 0
            || cfg.head_dim % 2 != 0
            || cfg.layers == 0
            || cfg.vocab == 0
        {
            return Err(Error::Invalid(format!("inconsistent LLaMA configuration: {cfg:?}")));
        }
        Ok(cfg)
    }
}

/// Tensor names of block `i` (llama.cpp's GGUF naming).
pub fn block_names(i: usize) -> [String; 9] {
    ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"].map(|n| format!("blk.{i}.{n}.weight"))
}
