//! Hugging Face LLaMA checkpoints: safetensors with `config.json` (and `tokenizer.json`,
//! `tokenizer_config.json`) beside them are presented the way a GGUF presents the same
//! model, so one code path (`model`) serves both:
//! tensor names mapped to llama.cpp's, the configuration and tokenizer carried as
//! metadata, and q/k rows regrouped per head. HF applies RoPE with `rotate_half` (pairs
//! `i` and `i + d/2`); our kernels rotate adjacent pairs, so — as llama.cpp's converter does
//! — row `h·d + 2i + j` of the regrouped weight is row `h·d + j·d/2 + i` of the HF one.
use super::SourceModel;
use crate::error::{Error, Result};
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

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| Error::input(path, format!("not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// When `config.json` beside `model.path` describes a LLaMA model, adopts llama.cpp's names
/// and conventions (see the module docs). Other checkpoints are left as they are.
pub fn adopt_llama(model: &mut SourceModel) -> Result<()> {
    let dir = model.path.parent().unwrap_or(Path::new(".")).to_owned();
    let config_path = dir.join("config.json");
    let Some(config) = read_json(&config_path)? else { return Ok(()) };
    if config["model_type"] != "llama" {
        return Ok(());
    }
    let num = |key: &str| config[key].as_f64();
    let need = |key: &str| num(key).ok_or_else(|| Error::input(&config_path, format!("LLaMA config lacks a numeric '{key}'")));
    let heads = need("num_attention_heads")? as usize;
    let kv_heads = num("num_key_value_heads").map_or(heads, |v| v as usize);
    let layers = need("num_hidden_layers")? as usize;
    let mut meta = vec![
        ("general.architecture", serde_json::json!("llama")),
        ("llama.block_count", serde_json::json!(layers)),
        ("llama.embedding_length", serde_json::json!(need("hidden_size")?)),
        ("llama.feed_forward_length", serde_json::json!(need("intermediate_size")?)),
        ("llama.attention.head_count", serde_json::json!(heads)),
        ("llama.attention.head_count_kv", serde_json::json!(kv_heads)),
        ("llama.rope.freq_base", serde_json::json!(num("rope_theta").unwrap_or(10000.0))),
        ("llama.attention.layer_norm_rms_epsilon", serde_json::json!(num("rms_norm_eps").unwrap_or(1e-5))),
        ("llama.vocab_size", serde_json::json!(need("vocab_size")?)),
        ("llama.context_length", serde_json::json!(num("max_position_embeddings").unwrap_or(2048.0))),
    ];
    let first_id = |v: &serde_json::Value| v.as_u64().or_else(|| v.as_array().and_then(|a| a.first()).and_then(|x| x.as_u64()));
    if let Some(eos) = first_id(&config["eos_token_id"]) {
        meta.push(("tokenizer.ggml.eos_token_id", serde_json::json!(eos)));
    }
    if let Some(tc) = read_json(&dir.join("tokenizer_config.json"))? {
        if let Some(t) = tc["chat_template"].as_str() {
            meta.push(("tokenizer.chat_template", serde_json::json!(t)));
        }
        if tc["add_bos_token"].as_bool() == Some(true) {
            if let Some(bos) = first_id(&config["bos_token_id"]) {
                meta.push(("tokenizer.ggml.bos_token_id", serde_json::json!(bos)));
                meta.push(("tokenizer.ggml.add_bos_token", serde_json::json!(true)));
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
        let name = model.tensors[i].name.clone();
        let (new, rope) = match name.as_str() {
            "model.embed_tokens.weight" => ("token_embd.weight".to_string(), None),
            "model.norm.weight" => ("output_norm.weight".into(), None),
            "lm_head.weight" => ("output.weight".into(), None),
            n => match n.strip_prefix("model.layers.").and_then(|r| r.split_once('.')) {
                Some((layer, rest)) => {
                    let (part, rope) = match rest {
                        "input_layernorm.weight" => ("attn_norm", None),
                        "self_attn.q_proj.weight" => ("attn_q", Some(heads)),
                        "self_attn.k_proj.weight" => ("attn_k", Some(kv_heads)),
                        "self_attn.v_proj.weight" => ("attn_v", None),
                        "self_attn.o_proj.weight" => ("attn_output", None),
                        "post_attention_layernorm.weight" => ("ffn_norm", None),
                        "mlp.gate_proj.weight" => ("ffn_gate", None),
                        "mlp.up_proj.weight" => ("ffn_up", None),
                        "mlp.down_proj.weight" => ("ffn_down", None),
                        _ => continue, // e.g. rotary inv_freq buffers: kept as they are
                    };
                    (format!("blk.{layer}.{part}.weight"), rope)
                }
                None => continue,
            },
        };
        if let Some(h) = rope {
            let rows = model.tensors[i].shape.first().copied().unwrap_or(0) as usize;
            if model.tensors[i].shape.len() != 2 || h == 0 || rows % h != 0 || (rows / h) % 2 != 0 {
                return Err(Error::input(&model.path, format!("tensor '{name}' of shape {:?} does not split into {h} heads", model.tensors[i].shape)));
            }
        }
        model.adopt(i, new, rope);
    }
    Ok(())
}
