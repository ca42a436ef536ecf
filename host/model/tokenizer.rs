//! The model's own tokenizer, rebuilt from the GGUF metadata a container carries
//! (`gguf.tokenizer.ggml.*`): byte-level BPE from the vocabulary and merges through the
//! `tokenizers` crate, control tokens as special tokens, and the chat template rendered
//! with `minijinja` (the template language it is written in).
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

/// GGUF token type of control tokens (`<|im_start|>` and the like).
const CONTROL: i64 = 3;

pub struct ModelTokenizer {
    inner: Tokenizer,
    pub bos: Option<u32>,
    pub eos: u32,
    chat_template: Option<String>,
    pub vocab_size: usize,
}

fn meta<T: serde::de::DeserializeOwned>(m: &BTreeMap<String, String>, key: &str) -> Result<T> {
    let v = m.get(&format!("gguf.{key}")).ok_or_else(|| Error::Invalid(format!("the model carries no tokenizer metadata ({key} missing)")))?;
    serde_json::from_str(v).map_err(|e| Error::Invalid(format!("tokenizer metadata {key} is malformed: {e}")))
}

impl ModelTokenizer {
    /// Builds the tokenizer from a container's (or GGUF's) metadata.
    pub fn from_metadata(m: &BTreeMap<String, String>) -> Result<Self> {
        if let Some(json) = m.get("hf.tokenizer.json") {
            // A Hugging Face checkpoint's own tokenizer.json (see `hf`).
            let inner = Tokenizer::from_bytes(json.as_bytes()).map_err(|e| Error::Invalid(format!("tokenizer.json: {e}")))?;
            let eos: u32 = meta(m, "tokenizer.ggml.eos_token_id")?;
            let add_bos: bool = meta(m, "tokenizer.ggml.add_bos_token").unwrap_or(false);
            let bos = if add_bos { Some(meta(m, "tokenizer.ggml.bos_token_id")?) } else { None };
            let vocab_size = inner.get_vocab_size(true);
            return Ok(ModelTokenizer { inner, bos, eos, chat_template: meta(m, "tokenizer.chat_template").ok(), vocab_size });
        }
        let model: String = meta(m, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Invalid(format!("tokenizer model '{model}' is not supported (byte-level BPE 'gpt2' only)")));
        }
        let tokens: Vec<String> = meta(m, "tokenizer.ggml.tokens")?;
        let merges: Vec<String> = meta(m, "tokenizer.ggml.merges")?;
        let types: Vec<i64> = meta(m, "tokenizer.ggml.token_type").unwrap_or_default();
        let pre: String = meta(m, "tokenizer.ggml.pre").unwrap_or_else(|_| "default".into());
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = merges
            .iter()
            .map(|s| s.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).ok_or_else(|| Error::Invalid(format!("merge '{s}' is not two tokens"))))
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| Error::Invalid(format!("BPE: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
            // SmolLM2: every digit on its own, then GPT-2's byte-level split.
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "default" | "gpt2" => byte_level.into(),
            other => return Err(Error::Invalid(format!("pre-tokenizer '{other}' is not supported (smollm, gpt2)"))),
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, &t)| t == CONTROL)
            .map(|(tok, _)| AddedToken::from(tok.clone(), true))
            .collect();
        inner.add_special_tokens(&special);
        let eos: u32 = meta(m, "tokenizer.ggml.eos_token_id")?;
        let add_bos: bool = meta(m, "tokenizer.ggml.add_bos_token").unwrap_or(false);
        let bos = if add_bos { Some(meta(m, "tokenizer.ggml.bos_token_id")?) } else { None };
        Ok(ModelTokenizer { inner, bos, eos, chat_template: meta(m, "tokenizer.chat_template").ok(), vocab_size: tokens.len() })
    }

    /// Token ids of `text` (control tokens written in it are recognized), with BOS when
    /// the model asks for one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
        Ok(self.bos.into_iter().chain(enc.get_ids().iter().copied()).collect())
    }

    /// Text of `ids`, control tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Invalid(format!("tokenizer: {e}")))
    }

    /// `user` wrapped in the model's chat template, ready for the assistant's reply.
    pub fn chat_prompt(&self, user: &str) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| Error::Invalid("the model carries no chat template".into()))?;
        let env = minijinja::Environment::new();
        let ctx = minijinja::context! { messages => vec![minijinja::context! { role => "user", content => user }], add_generation_prompt => true };
        env.render_str(template, ctx).map_err(|e| Error::Invalid(format!("chat template: {e}")))
    }
}
