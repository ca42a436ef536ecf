//! Hugging Face LLaMA checkpoints (safetensors + config.json + tokenizer.json) run through
//! the same path as GGUF: a tiny model written both ways — the HF copy with q/k rows in
//! HF's rotate-half order, derived here from the definition — gives identical logits.
mod common;
use codecllm::import::SourceModel;
use codecllm::model::llama::{CpuLlama, KvCache};
use codecllm::model::tokenizer::ModelTokenizer;
use common::gguf::{llama_kvs, write_gguf};
use common::*;
use rand::Rng;
use safetensors::Dtype;

const D: usize = 64;
const F: usize = 96;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HD: usize = D / HEADS;
const VOCAB: usize = 20;

#[test]
fn hf_checkpoint_matches_the_same_model_as_gguf() {
    let mut rng = rng(fresh_seed());
    let dir = tempfile::tempdir().unwrap();
    let mut gguf_tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)> = Vec::new();
    let mut hf_tensors = Vec::new();
    let mut add = |cpp: &str, hf: &str, rows: usize, cols: usize, heads: Option<usize>, rng: &mut dyn rand::RngCore| {
        let scale = if rows == 1 { 1.0 } else { 1.0 / (cols as f32).sqrt() };
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect();
        let dims = if rows == 1 { vec![cols as u64] } else { vec![cols as u64, rows as u64] };
        gguf_tensors.push((cpp.to_string(), dims, 0, w.iter().flat_map(|x| x.to_le_bytes()).collect()));
        let hf_w = heads.map_or(w.clone(), |h| to_hf_rows(&w, h, cols));
        let shape: Vec<usize> = if rows == 1 { vec![cols] } else { vec![rows, cols] };
        hf_tensors.push(RawTensor::float(hf, Dtype::F32, &shape, &hf_w));
    };
    add("token_embd.weight", "model.embed_tokens.weight", VOCAB, D, None, &mut rng);
    add("output_norm.weight", "model.norm.weight", 1, D, None, &mut rng);
    add("output.weight", "lm_head.weight", VOCAB, D, None, &mut rng);
    for l in 0..2 {
        let (c, h) = (|n: &str| format!("blk.{l}.{n}.weight"), |n: &str| format!("model.layers.{l}.{n}.weight"));
        add(&c("attn_norm"), &h("input_layernorm"), 1, D, None, &mut rng);
        add(&c("attn_q"), &h("self_attn.q_proj"), D, D, Some(HEADS), &mut rng);
        add(&c("attn_k"), &h("self_attn.k_proj"), KV_HEADS * HD, D, Some(KV_HEADS), &mut rng);
        add(&c("attn_v"), &h("self_attn.v_proj"), KV_HEADS * HD, D, None, &mut rng);
        add(&c("attn_output"), &h("self_attn.o_proj"), D, D, None, &mut rng);
        add(&c("ffn_norm"), &h("post_attention_layernorm"), 1, D, None, &mut rng);
        add(&c("ffn_gate"), &h("mlp.gate_proj"), F, D, None, &mut rng);
        add(&c("ffn_up"), &h("mlp.up_proj"), F, D, None, &mut rng);
        add(&c("ffn_down"), &h("mlp.down_proj"), D, F, None, &mut rng);
    }
    let gguf = dir.path().join("m.gguf");
    let refs: Vec<(&str, Vec<u64>, u32, Vec<u8>)> = gguf_tensors.iter().map(|(n, d, t, b)| (n.as_str(), d.clone(), *t, b.clone())).collect();
    write_gguf(&gguf, &llama_kvs([2, D, F, HEADS, KV_HEADS, VOCAB], 1e-5), &refs);
    let hf_dir = dir.path().join("hf");
    std::fs::create_dir(&hf_dir).unwrap();
    write_safetensors(&hf_dir.join("model.safetensors"), &hf_tensors);
    std::fs::write(hf_dir.join("config.json"), format!(
        r#"{{"model_type":"llama","hidden_size":{D},"intermediate_size":{F},"num_attention_heads":{HEADS},"num_key_value_heads":{KV_HEADS},"num_hidden_layers":2,"vocab_size":{VOCAB},"rms_norm_eps":1e-5,"rope_theta":10000.0,"eos_token_id":1}}"#
    )).unwrap();
    // A tokenizer.json as the `tokenizers` crate writes it.
    let vocab: tokenizers::models::bpe::Vocab =
        ["<s>", "</s>", "a", "b", "c", "ab", "abc"].iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
    let bpe = tokenizers::models::bpe::BPE::builder().vocab_and_merges(vocab, vec![("a".into(), "b".into()), ("ab".into(), "c".into())]).build().unwrap();
    std::fs::write(hf_dir.join("tokenizer.json"), tokenizers::Tokenizer::new(bpe).to_string(false).unwrap()).unwrap();

    let from_gguf = SourceModel::open(&gguf).unwrap();
    let from_hf = SourceModel::open(&hf_dir.join("model.safetensors")).unwrap();
    assert!(from_hf.tensor("blk.1.attn_q.weight").is_some(), "HF names are mapped to llama.cpp's");
    let tok = ModelTokenizer::from_metadata(&from_hf.metadata).unwrap();
    assert_eq!(tok.encode("abc").unwrap(), [6]);
    assert_eq!(tok.eos, 1);
    let (a, b) = (CpuLlama::load(&from_gguf).unwrap(), CpuLlama::load(&from_hf).unwrap());
    let (mut ca, mut cb) = (KvCache::default(), KvCache::default());
    for t in [2, 5, 6, 3, 4, 2, 19] {
        let (la, lb) = (a.step(t, &mut ca).unwrap(), b.step(t, &mut cb).unwrap());
        assert!(la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits()), "token {t}: HF and GGUF logits differ");
    }

    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    write_safetensors(&bad.join("model.safetensors"), &[RawTensor::float("model.layers.0.self_attn.q_proj.weight", Dtype::F32, &[6, 4], &[0.0; 24])]);
    std::fs::write(
        bad.join("config.json"),
        r#"{"model_type":"llama","hidden_size":4,"intermediate_size":8,"num_attention_heads":4,"num_hidden_layers":1,"vocab_size":3}"#,
    )
    .unwrap();
    let err = SourceModel::open(&bad.join("model.safetensors")).err().unwrap().to_string();
    assert!(err.contains("does not split into 4 heads"), "{err}");
}
