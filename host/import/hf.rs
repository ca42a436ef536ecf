//! Hugging Face checkpoints: safetensors with `config.json` (and `tokenizer.json`,
//! `tokenizer_config.json`) beside them are presented the way llama.cpp's converter
//! presents the same model as a GGUF, so one code path (`model`) serves both: tensor names
//! mapped to llama.cpp's, the configuration and tokenizer carried as GGUF-style metadata,
//! and the converter's transformations applied on access —
//! - LLaMA: q/k rows regrouped per head. HF applies RoPE with `rotate_half` (pairs `i` and
//!   `i + d/2`); LLaMA GGUFs rotate adjacent pairs, so row `h·d + 2i + j` of the regrouped
//!   weight is row `h·d + j·d/2 + i` of the HF one. llama3 RoPE scaling becomes the
//!   `rope_freqs.weight` factors the converter computes.
//! - Qwen2, Qwen3: names only (both formats rotate split halves).
//! - Gemma 3: every RMSNorm weight plus one (HF computes `x · (1 + w)`), the attention
//!   scale from `query_pre_attn_scalar`, the local RoPE base and sliding window.
use super::checkpoint::View;
use super::SourceModel;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// Regroups the rows of a `[heads · d, cols]` matrix per head (see the module docs).
pub fn permute_rows(raw: &[u8], row_bytes: usize, heads: usize) -> Vec<u8> {
    let rows = raw.len() / row_bytes.max(1);
    let d = rows / heads.max(1);
    let mut out = vec![0u8; raw.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let (to, from) = (h * d + 2 * i + j, h * d + j * (d / 2) + i);
                out[to * row_bytes..(to + 1) * row_bytes].copy_from_slice(&raw[from * row_bytes..(from + 1) * row_bytes]);
            }
        }
    }
    out
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| Error::input(path, format!("not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The families HF checkpoints are adopted from: `config.json`'s `model_type` and the
/// GGUF architecture it becomes.
const MODEL_TYPES: [(&str, &str); 4] = [("llama", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen3"), ("gemma3_text", "gemma3")];

/// The llama3 RoPE frequency factors of `rope_scaling` for pairs of a `head_dim`-wide
/// head, as llama.cpp's converter computes them (conversion/llama.py): 1 for high
/// frequencies, `factor` for low ones, a smooth blend between.
pub fn llama3_rope_factors(rope_scaling: &Value, base: f64, head_dim: usize) -> Vec<f32> {
    let get = |k: &str, default: f64| rope_scaling[k].as_f64().unwrap_or(default);
    let (factor, low, high, old_ctx) =
        (get("factor", 8.0), get("low_freq_factor", 1.0), get("high_freq_factor", 4.0), get("original_max_position_embeddings", 8192.0));
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf(2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            (if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }) as f32
        })
        .collect()
}

/// The GGUF name of HF tensor `name` in family `arch`, or `None` for tensors that stay as
/// they are (rotary `inv_freq` buffers and the like).
fn gguf_name(arch: &str, name: &str) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let (layer, rest) = name.strip_prefix("model.layers.")?.split_once('.')?;
    let part = match (rest, arch) {
        ("input_layernorm.weight", _) => "attn_norm.weight",
        ("self_attn.q_proj.weight", _) => "attn_q.weight",
        ("self_attn.k_proj.weight", _) => "attn_k.weight",
        ("self_attn.v_proj.weight", _) => "attn_v.weight",
        ("self_attn.o_proj.weight", _) => "attn_output.weight",
        ("self_attn.q_proj.bias", _) => "attn_q.bias",
        ("self_attn.k_proj.bias", _) => "attn_k.bias",
        ("self_attn.v_proj.bias", _) => "attn_v.bias",
        ("self_attn.q_norm.weight", _) => "attn_q_norm.weight",
        ("self_attn.k_norm.weight", _) => "attn_k_norm.weight",
        // The same HF name is the MLP's input norm in LLaMA and Qwen, the attention
        // output's norm in Gemma 3 (whose MLP input norm is `pre_feedforward_layernorm`).
        ("post_attention_layernorm.weight", "gemma3") => "post_attention_norm.weight",
        ("post_attention_layernorm.weight", _) => "ffn_norm.weight",
        ("pre_feedforward_layernorm.weight", _) => "ffn_norm.weight",
        ("post_feedforward_layernorm.weight", _) => "post_ffw_norm.weight",
        ("mlp.gate_proj.weight", _) => "ffn_gate.weight",
        ("mlp.up_proj.weight", _) => "ffn_up.weight",
        ("mlp.down_proj.weight", _) => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}"))
}

/// When `config.json` beside `model.path` describes one of the supported families, adopts
/// llama.cpp's names and conventions (see the module docs). Other checkpoints are left as
/// they are.
pub fn adopt(model: &mut SourceModel) -> Result<()> {
    let dir = model.path.parent().unwrap_or(Path::new(".")).to_owned();
    let config_path = dir.join("config.json");
    let Some(config) = read_json(&config_path)? else { return Ok(()) };
    let model_type = config["model_type"].as_str().unwrap_or("");
    let Some(&(_, arch)) = MODEL_TYPES.iter().find(|(t, _)| *t == model_type) else {
        if model_type == "gemma3" {
            return Err(Error::input(&config_path, "Gemma 3 multimodal checkpoints are not supported: only the text model (model_type gemma3_text)"));
        }
        return Ok(());
    };
    let num = |key: &str| config[key].as_f64();
    let need = |key: &str| num(key).ok_or_else(|| Error::input(&config_path, format!("{model_type} config lacks a numeric '{key}'")));
    let (dim, heads) = (need("hidden_size")?, need("num_attention_heads")? as usize);
    let kv_heads = num("num_key_value_heads").map_or(heads, |v| v as usize);
    let head_dim = num("head_dim").map_or(dim as usize / heads.max(1), |v| v as usize);
    let rope_base = num("rope_theta").unwrap_or(10000.0);
    let key = |k: &str| format!("{arch}.{k}");
    let mut meta = vec![
        ("general.architecture".to_string(), json!(arch)),
        (key("block_count"), json!(need("num_hidden_layers")?)),
        (key("embedding_length"), json!(dim)),
        (key("feed_forward_length"), json!(need("intermediate_size")?)),
        (key("attention.head_count"), json!(heads)),
        (key("attention.head_count_kv"), json!(kv_heads)),
        (key("attention.key_length"), json!(head_dim)),
        (key("rope.freq_base"), json!(rope_base)),
        (key("attention.layer_norm_rms_epsilon"), json!(num("rms_norm_eps").unwrap_or(1e-5))),
        (key("vocab_size"), json!(need("vocab_size")?)),
        (key("context_length"), json!(num("max_position_embeddings").unwrap_or(2048.0))),
    ];
    let rope_scaling = &config["rope_scaling"];
    let mut rope_factors = None;
    match rope_scaling["rope_type"].as_str().or(rope_scaling["type"].as_str()) {
        None | Some("default") => {}
        Some("llama3") if arch == "llama" => rope_factors = Some(llama3_rope_factors(rope_scaling, rope_base, head_dim)),
        Some("linear") => {
            meta.push((key("rope.scaling.type"), json!("linear")));
            meta.push((key("rope.scaling.factor"), json!(rope_scaling["factor"].as_f64().unwrap_or(1.0))));
        }
        Some(other) => return Err(Error::input(&config_path, format!("RoPE scaling '{other}' is not supported (llama3 for LLaMA, linear)"))),
    }
    if arch == "gemma3" {
        if let Some(w) = num("sliding_window") {
            meta.push((key("attention.sliding_window"), json!(w)));
        }
        // `layer_types` (newer configs) or `sliding_window_pattern`: every n-th layer global.
        let period = num("sliding_window_pattern").map(|p| p as usize).or_else(|| {
            let types = config["layer_types"].as_array()?;
            types.iter().position(|t| t == "full_attention").map(|i| i + 1)
        });
        if let Some(p) = period {
            meta.push((key("attention.sliding_window_pattern"), json!(p)));
        }
        if let Some(b) = num("rope_local_base_freq") {
            meta.push((key("rope.freq_base_swa"), json!(b)));
        }
        if let Some(s) = num("query_pre_attn_scalar") {
            meta.push((key("attention.scale"), json!(1.0 / s.sqrt())));
        }
        if let Some(c) = num("final_logit_softcapping") {
            meta.push((key("final_logit_softcapping"), json!(c)));
        }
    }
    let first_id = |v: &Value| v.as_u64().or_else(|| v.as_array().and_then(|a| a.first()).and_then(|x| x.as_u64()));
    if let Some(eos) = first_id(&config["eos_token_id"]) {
        meta.push(("tokenizer.ggml.eos_token_id".into(), json!(eos)));
    }
    if let Some(tc) = read_json(&dir.join("tokenizer_config.json"))? {
        if let Some(t) = tc["chat_template"].as_str() {
            meta.push(("tokenizer.chat_template".into(), json!(t)));
        }
        if tc["add_bos_token"].as_bool() == Some(true) {
            if let Some(bos) = first_id(&config["bos_token_id"]) {
                meta.push(("tokenizer.ggml.bos_token_id".into(), json!(bos)));
                meta.push(("tokenizer.ggml.add_bos_token".into(), json!(true)));
            }
        }
    }
    for (k, v) in meta {
        model.metadata.insert(format!("gguf.{k}"), v.to_string());
    }
    let tokenizer_path = dir.join("tokenizer.json");
    match std::fs::read_to_string(&tokenizer_path) {
        Ok(text) => {
            model.metadata.insert("hf.tokenizer.json".into(), text);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&tokenizer_path, e)),
    }
    for i in 0..model.tensors.len() {
        let t = &model.tensors[i];
        let Some(new) = gguf_name(arch, &t.name) else { continue };
        let rope_heads = match new.rsplit_once('.').map(|(n, _)| n.rsplit('.').next().unwrap_or("")) {
            Some("attn_q") if arch == "llama" => Some(heads),
            Some("attn_k") if arch == "llama" => Some(kv_heads),
            _ => None,
        };
        let view = if let Some(h) = rope_heads {
            let rows = t.shape.first().copied().unwrap_or(0) as usize;
            if t.shape.len() != 2 || h == 0 || !rows.is_multiple_of(h) || !(rows / h).is_multiple_of(2) {
                return Err(Error::input(&model.path, format!("tensor '{}' of shape {:?} does not split into {h} heads", t.name, t.shape)));
            }
            View::RopeRows(h)
        } else if arch == "gemma3" && new.ends_with("norm.weight") {
            if !t.dtype.is_float() {
                return Err(Error::input(&model.path, format!("tensor '{}' is {:?}, not a norm weight", t.name, t.dtype)));
            }
            View::PlusOne(t.dtype)
        } else {
            View::Stored
        };
        model.adopt(i, new, view);
    }
    if let Some(f) = rope_factors {
        model.add_made(crate::import::ROPE_FREQS, vec![f.len() as u64], &f);
    }
    Ok(())
}
