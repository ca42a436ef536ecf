//! The model's own tokenizer, rebuilt from the GGUF metadata a container carries
//! (`gguf.tokenizer.ggml.*`, each value as JSON) so that it gives llama.cpp's ids:
//!
//! - byte-level BPE (`tokenizer.ggml.model = "gpt2"`: SmolLM2, Llama 3, Qwen2) from the
//!   vocabulary and merges through the `tokenizers` crate, with the pre-tokenizer that
//!   `tokenizer.ggml.pre` names;
//! - SentencePiece (`"llama"`: Gemma) in [`spm`], llama.cpp's greedy merge;
//! - or a Hugging Face checkpoint's own `tokenizer.json` (`hf.tokenizer.json`).
//!
//! Special tokens, end-of-generation tokens and BOS/EOS follow llama.cpp's load-time rules
//! ([`special`]); the chat template is rendered with `minijinja` (the template language it
//! is written in).
mod special;
mod spm;

use crate::error::{Error, Result};
use special::TokenType;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// Llama 3's pre-tokenizer split (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`; tokenizer.json's
/// `(?i:'s|…)` with the case-insensitive group written out): digits in groups of up to 3.
const LLAMA3_SPLIT: &str =
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (`LLAMA_VOCAB_PRE_TYPE_QWEN2`): Llama 3's with every digit on its own.
const QWEN2_SPLIT: &str =
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct ModelTokenizer {
    engine: Engine,
    /// The BOS id when the model puts one before every encoding (llama.cpp's `add_bos`),
    /// else `None`.
    pub bos: Option<u32>,
    pub eos: u32,
    pub vocab_size: usize,
    /// Whether an EOS ends every encoding (`tokenizer.ggml.add_eos_token`).
    add_eos: bool,
    /// The texts of BOS (whether or not it is added) and EOS, for chat templates.
    bos_text: Option<String>,
    eos_text: Option<String>,
    eog: BTreeSet<u32>,
    chat_template: Option<String>,
    /// `general.architecture`: picks the built-in chat template when the model has none.
    architecture: Option<String>,
}

enum Engine {
    /// A `tokenizers` pipeline (GGUF BPE or an HF tokenizer.json), and the same pipeline
    /// with special tokens treated as text, made on the first `encode_text`.
    /// (Boxed: a `Tokenizer` is some 3 KB in place.)
    Hf {
        tokenizer: Box<Tokenizer>,
        text_mode: OnceLock<Box<Tokenizer>>,
    },
    Spm(spm::Spm),
}

fn meta<T: serde::de::DeserializeOwned>(m: &BTreeMap<String, String>, key: &str) -> Result<T> {
    let v = m.get(&format!("gguf.{key}")).ok_or_else(|| Error::Invalid(format!("the model carries no tokenizer metadata ({key} missing)")))?;
    serde_json::from_str(v).map_err(|e| Error::Invalid(format!("tokenizer metadata {key} is malformed: {e}")))
}

/// An optional key: absent is `None`, present but malformed an error.
fn meta_opt<T: serde::de::DeserializeOwned>(m: &BTreeMap<String, String>, key: &str) -> Result<Option<T>> {
    if m.contains_key(&format!("gguf.{key}")) {
        meta(m, key).map(Some)
    } else {
        Ok(None)
    }
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("tokenizer: {e}"))
}

impl ModelTokenizer {
    /// Builds the tokenizer from a container's (or GGUF's) metadata.
    pub fn from_metadata(m: &BTreeMap<String, String>) -> Result<Self> {
        let chat_template = meta_opt(m, "tokenizer.chat_template")?;
        let architecture = meta_opt(m, "general.architecture")?;
        let id_key = |name: &str| meta_opt::<u32>(m, &format!("tokenizer.ggml.{name}_token_id")).ok().flatten();
        if let Some(json) = m.get("hf.tokenizer.json") {
            // A Hugging Face checkpoint's own tokenizer.json (see `hf`).
            let tokenizer = Tokenizer::from_bytes(json.as_bytes()).map_err(|e| Error::Invalid(format!("tokenizer.json: {e}")))?;
            let eos: u32 = meta(m, "tokenizer.ggml.eos_token_id")?;
            let add_bos = meta_opt(m, "tokenizer.ggml.add_bos_token")?.unwrap_or(false);
            let bos_id: Option<u32> = meta_opt(m, "tokenizer.ggml.bos_token_id")?;
            let vocab_size = tokenizer.get_vocab_size(true);
            let texts: Vec<String> = (0..vocab_size as u32).map(|i| tokenizer.id_to_token(i).unwrap_or_default()).collect();
            let mut types = vec![TokenType::Normal; texts.len()];
            let eog = special::end_of_generation(&texts, &mut types, Some(eos), &id_key);
            let text = |id: Option<u32>| id.and_then(|i| texts.get(i as usize).cloned());
            return Ok(ModelTokenizer {
                bos: if add_bos { Some(bos_id.ok_or_else(|| Error::Invalid("the model adds a BOS but names none".into()))?) } else { None },
                eos,
                vocab_size,
                add_eos: meta_opt(m, "tokenizer.ggml.add_eos_token")?.unwrap_or(false),
                bos_text: text(bos_id),
                eos_text: text(Some(eos)),
                eog,
                chat_template,
                architecture,
                engine: Engine::Hf { tokenizer: Box::new(tokenizer), text_mode: OnceLock::new() },
            });
        }
        let model: String = meta(m, "tokenizer.ggml.model")?;
        let tokens: Vec<String> = meta(m, "tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let mut types: Vec<TokenType> = match meta_opt::<Vec<i64>>(m, "tokenizer.ggml.token_type")? {
            Some(t) if t.len() < n => return Err(Error::Invalid(format!("tokenizer metadata token_type has {} entries for {n} tokens", t.len()))),
            Some(t) => t.iter().take(n).map(|&t| TokenType::from_gguf(t)).collect(),
            None => vec![TokenType::Normal; n],
        };
        let eos_key: Option<u32> = meta_opt(m, "tokenizer.ggml.eos_token_id")?;
        let bos_key: Option<u32> = meta_opt(m, "tokenizer.ggml.bos_token_id")?;
        let in_range = |id: u32| Some(id).filter(|&i| (i as usize) < n);
        match model.as_str() {
            "gpt2" => {
                let pre: String = meta_opt(m, "tokenizer.ggml.pre")?.unwrap_or_else(|| "default".into());
                let llama3 = matches!(pre.as_str(), "llama-bpe" | "llama3" | "llama-v3");
                let eos = eos_key.ok_or_else(|| Error::Invalid("the model carries no tokenizer metadata (tokenizer.ggml.eos_token_id missing)".into()))?;
                let eog = special::end_of_generation(&tokens, &mut types, in_range(eos), &id_key);
                let engine = Engine::Hf { tokenizer: Box::new(bpe(m, &tokens, &types, &pre, llama3)?), text_mode: OnceLock::new() };
                // Llama 3 adds BOS unless the GGUF says otherwise; other BPE models do not.
                finish(m, engine, tokens, eog, bos_key, eos, llama3, chat_template, architecture)
            }
            "llama" => {
                // llama.cpp's SentencePiece defaults: BOS 1, EOS 2, add BOS, a space prefix.
                let eos = eos_key.unwrap_or(2);
                let eog = special::end_of_generation(&tokens, &mut types, in_range(eos), &id_key);
                let scores: Vec<f32> = match meta_opt::<Vec<f64>>(m, "tokenizer.ggml.scores")? {
                    Some(s) if s.len() < n => return Err(Error::Invalid(format!("tokenizer metadata scores has {} entries for {n} tokens", s.len()))),
                    Some(s) => s.iter().take(n).map(|&v| v as f32).collect(),
                    None => vec![0.0; n],
                };
                let add_space_prefix = meta_opt(m, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                let engine = Engine::Spm(spm::Spm::new(tokens.clone(), scores, types, add_space_prefix));
                finish(m, engine, tokens, eog, bos_key.or(Some(1)), eos, true, chat_template, architecture)
            }
            other => Err(Error::Invalid(format!("tokenizer model '{other}' is not supported (byte-level BPE 'gpt2', SentencePiece 'llama')"))),
        }
    }

    /// Token ids of `text` as llama.cpp's `common_tokenize(text, add_special = true,
    /// parse_special = true)` gives them: special tokens written in it are recognized, BOS
    /// (and EOS) added when the model asks for them. What chat prompts are encoded with.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize(text, true)
    }

    /// Token ids of plain `text`, as llama.cpp's `common_tokenize(text, add_special = true,
    /// parse_special = false)` gives them (what `llama-perplexity` scores): BOS when the
    /// model adds one, control tokens written in the text encoded as the text they are
    /// (user-defined tokens are still split out, as llama.cpp does).
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize(text, false)
    }

    fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut out: Vec<u32> = self.bos.into_iter().collect();
        match &self.engine {
            Engine::Hf { tokenizer, text_mode } => {
                let t = if parse_special {
                    tokenizer
                } else {
                    text_mode.get_or_init(|| {
                        let mut t = tokenizer.clone();
                        t.set_encode_special_tokens(true);
                        t
                    })
                };
                out.extend_from_slice(t.encode(text, false).map_err(tk_err)?.get_ids());
            }
            Engine::Spm(s) => s.encode(text, parse_special, &mut out)?,
        }
        if self.add_eos {
            out.push(self.eos);
        }
        Ok(out)
    }

    /// Text of `ids`, control tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.engine {
            Engine::Hf { tokenizer, .. } => tokenizer.decode(ids, false).map_err(tk_err),
            Engine::Spm(s) => s.decode(ids),
        }
    }

    /// The BOS id when the model adds one to every encoding (`encode`, `encode_text`).
    pub fn add_bos(&self) -> Option<u32> {
        self.bos
    }

    /// Whether generating `id` ends the reply: EOS, EOT, EOM, and the tokens llama.cpp
    /// treats as end of generation by their text (`<|im_end|>`, `<end_of_turn>`,
    /// `<|endoftext|>`, `<|eot_id|>`, …; see `special::EOG_TEXTS`).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// `user` wrapped in the model's chat template, ready for the assistant's reply and for
    /// `encode`. The template sees `messages`, `add_generation_prompt`, `bos_token`,
    /// `eos_token` and `raise_exception`; a BOS it writes first is dropped when the model
    /// adds one anyway (as llama.cpp's `common_chat_templates_apply` does), so `encode`
    /// does not double it. A model without a template gets its family's built-in one
    /// (llama.cpp's `llm_chat_apply_template`; Gemma only for now).
    pub fn chat_prompt(&self, user: &str) -> Result<String> {
        let Some(template) = self.chat_template.as_deref() else {
            return match self.architecture.as_deref() {
                Some(a) if a.starts_with("gemma") => Ok(format!("<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n", user.trim())),
                _ => Err(Error::Invalid("the model carries no chat template".into())),
            };
        };
        let mut env = minijinja::Environment::new();
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        let ctx = minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => user }],
            add_generation_prompt => true,
            bos_token => self.bos_text.as_deref().unwrap_or(""),
            eos_token => self.eos_text.as_deref().unwrap_or(""),
        };
        let mut out = env.render_str(template, ctx).map_err(|e| Error::Invalid(format!("chat template: {e}")))?;
        if let (Some(_), Some(b)) = (self.bos, self.bos_text.as_deref()) {
            if !b.is_empty() && out.starts_with(b) {
                out.drain(..b.len());
            }
        }
        if let (true, Some(e)) = (self.add_eos, self.eos_text.as_deref()) {
            if !e.is_empty() && out.ends_with(e) {
                out.truncate(out.len() - e.len());
            }
        }
        Ok(out)
    }
}

/// The rest of a GGUF tokenizer: BOS/EOS and what travels with them.
#[allow(clippy::too_many_arguments)]
fn finish(
    m: &BTreeMap<String, String>,
    engine: Engine,
    tokens: Vec<String>,
    eog: BTreeSet<u32>,
    bos_id: Option<u32>,
    eos: u32,
    default_add_bos: bool,
    chat_template: Option<String>,
    architecture: Option<String>,
) -> Result<ModelTokenizer> {
    let n = tokens.len();
    let check = |what: &str, id: u32| {
        if (id as usize) < n {
            Ok(id)
        } else {
            Err(Error::Invalid(format!("tokenizer metadata: the {what} id {id} is outside the vocabulary ({n} tokens)")))
        }
    };
    let eos = check("EOS", eos)?;
    let add_bos = meta_opt(m, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
    let bos = match (add_bos, bos_id) {
        (false, _) => None,
        (true, Some(b)) => Some(check("BOS", b)?),
        (true, None) => return Err(Error::Invalid("the model adds a BOS but names none (tokenizer.ggml.bos_token_id missing)".into())),
    };
    let text = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
    Ok(ModelTokenizer {
        bos,
        eos,
        vocab_size: n,
        add_eos: meta_opt(m, "tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        bos_text: text(bos_id),
        eos_text: text(Some(eos)),
        eog,
        chat_template,
        architecture,
        engine,
    })
}

/// Byte-level BPE from the GGUF vocabulary and merges, with `pre`'s pre-tokenizer.
fn bpe(m: &BTreeMap<String, String>, tokens: &[String], types: &[TokenType], pre: &str, llama3: bool) -> Result<Tokenizer> {
    let merges: Vec<String> = meta(m, "tokenizer.ggml.merges")?;
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = merges
        .iter()
        .map(|s| s.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).ok_or_else(|| Error::Invalid(format!("merge '{s}' is not two tokens"))))
        .collect::<Result<Vec<_>>>()?;
    // Llama 3 emits a pre-token that is a whole vocabulary entry as it is, merges or not.
    let model = BPE::builder().vocab_and_merges(vocab, merges).ignore_merges(llama3).build().map_err(|e| Error::Invalid(format!("BPE: {e}")))?;
    let mut inner = Tokenizer::new(model);
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false).map_err(tk_err)?;
        Ok(Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        // SmolLM2: every digit on its own, then GPT-2's byte-level split.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(),
        "default" | "gpt2" => ByteLevel::new(false, true, true).into(),
        _ if llama3 => split(LLAMA3_SPLIT)?,
        "qwen2" => split(QWEN2_SPLIT)?,
        other => return Err(Error::Invalid(format!("pre-tokenizer '{other}' is not supported (smollm, gpt2, llama-bpe, qwen2)"))),
    };
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    // CONTROL (and UNKNOWN) tokens are special: recognized in `encode`, text in
    // `encode_text`. USER_DEFINED ones are split out of the text either way.
    let added = |want: &dyn Fn(TokenType) -> bool, special: bool| -> Vec<AddedToken> {
        tokens.iter().zip(types).filter(|(t, &ty)| !t.is_empty() && want(ty)).map(|(t, _)| AddedToken::from(t.clone(), special)).collect()
    };
    inner.add_special_tokens(&added(&|t| matches!(t, TokenType::Control | TokenType::Unknown), true));
    inner.add_tokens(&added(&|t| t == TokenType::UserDefined, false));
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: serde_json::Value) -> String {
        v.to_string()
    }

    /// A byte-level BPE vocabulary of a few words, with pre-tokenizer `pre`.
    fn tiny_bpe(pre: &str) -> BTreeMap<String, String> {
        let tokens =
            ["<|begin_of_text|>", "<|eot_id|>", "<tool>", "h", "e", "l", "o", "Ġ", "1", "2", "3", "4", "5", "he", "ll", "Ġhello", "123", "45", "'", "s", "'s"];
        let types: Vec<i64> = tokens.iter().enumerate().map(|(i, _)| [3, 3, 4].get(i).copied().unwrap_or(1)).collect();
        let merges = ["h e", "l l", "' s"];
        let mut m = BTreeMap::new();
        m.insert("gguf.tokenizer.ggml.model".into(), json("gpt2".into()));
        m.insert("gguf.tokenizer.ggml.pre".into(), json(pre.into()));
        m.insert("gguf.tokenizer.ggml.tokens".into(), json(tokens.into()));
        m.insert("gguf.tokenizer.ggml.token_type".into(), json(types.into()));
        m.insert("gguf.tokenizer.ggml.merges".into(), json(merges.into()));
        m.insert("gguf.tokenizer.ggml.bos_token_id".into(), "0".into());
        m.insert("gguf.tokenizer.ggml.eos_token_id".into(), "1".into());
        m
    }

    #[test]
    fn llama3_ignores_merges_groups_digits_and_adds_bos() {
        let m = tiny_bpe("llama-bpe");
        let tok = ModelTokenizer::from_metadata(&m).unwrap();
        assert_eq!(tok.add_bos(), Some(0), "Llama 3 adds BOS unless the GGUF says otherwise");
        // " hello" is a vocabulary entry: emitted whole although no merge makes it.
        assert_eq!(tok.encode(" hello").unwrap(), [0, 15]);
        assert_eq!(tok.encode("12345").unwrap(), [0, 16, 17], "digits in groups of three");
        assert_eq!(tok.encode("<|eot_id|><tool>").unwrap(), [0, 1, 2]);
        assert_eq!(tok.encode_text("<tool>").unwrap(), [0, 2], "a user-defined token is split out in plain text too");
        assert_ne!(tok.encode_text("<|eot_id|>").unwrap(), [0, 1], "a control token in plain text is text");
        assert!(tok.is_end_of_generation(1) && !tok.is_end_of_generation(0));
        let mut m = tiny_bpe("llama3");
        m.insert("gguf.tokenizer.ggml.add_bos_token".into(), "false".into());
        assert_eq!(ModelTokenizer::from_metadata(&m).unwrap().add_bos(), None);
    }

    #[test]
    fn qwen2_merges_and_splits_every_digit() {
        let tok = ModelTokenizer::from_metadata(&tiny_bpe("qwen2")).unwrap();
        assert_eq!(tok.add_bos(), None);
        // No "Ġ hell o" merges: " hello" goes through the merges, not the vocabulary.
        assert_eq!(tok.encode(" hello").unwrap(), [7, 13, 14, 6]);
        assert_eq!(tok.encode("12345").unwrap(), [8, 9, 10, 11, 12]);
        assert_eq!(tok.encode("he's").unwrap(), [13, 20]);
        assert_eq!(tok.decode(&[7, 13, 14, 6, 1]).unwrap(), " hello<|eot_id|>");
    }

    fn tiny_spm() -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let tokens = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "\n", "▁", "h", "i", "▁h", "▁hi", "<0x21>"];
        let types = [3, 3, 3, 3, 3, 4, 1, 1, 1, 1, 1, 6];
        let scores = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0, -1.0, -2.0, -3.0, 0.0];
        m.insert("gguf.general.architecture".into(), json("gemma3".into()));
        m.insert("gguf.tokenizer.ggml.model".into(), json("llama".into()));
        m.insert("gguf.tokenizer.ggml.tokens".into(), json(tokens.into()));
        m.insert("gguf.tokenizer.ggml.token_type".into(), json(types.into()));
        m.insert("gguf.tokenizer.ggml.scores".into(), json(scores.into()));
        m.insert("gguf.tokenizer.ggml.bos_token_id".into(), "2".into());
        m.insert("gguf.tokenizer.ggml.eos_token_id".into(), "1".into());
        m.insert("gguf.tokenizer.ggml.add_space_prefix".into(), "false".into());
        m
    }

    #[test]
    fn sentencepiece_from_metadata_with_bos_eog_and_the_builtin_gemma_template() {
        let mut m = tiny_spm();
        let tok = ModelTokenizer::from_metadata(&m).unwrap();
        assert_eq!(tok.add_bos(), Some(2), "SentencePiece adds BOS by default");
        assert_eq!(tok.encode(" hi!\n").unwrap(), [2, 10, 11, 5]);
        assert_eq!(tok.decode(&tok.encode(" hi!\n").unwrap()[1..]).unwrap(), " hi!\n");
        assert_eq!(tok.encode("<start_of_turn>hi").unwrap(), [2, 3, 7, 8]);
        assert!(tok.is_end_of_generation(1) && tok.is_end_of_generation(4) && !tok.is_end_of_generation(3));
        let prompt = tok.chat_prompt(" hi ").unwrap();
        assert_eq!(prompt, "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n");
        // A template of the model's own: bos_token is there, and dropped again since
        // encoding adds the BOS.
        m.insert(
            "gguf.tokenizer.chat_template".into(),
            json("{{ bos_token }}{% for m in messages %}{% if m.role != 'user' %}{{ raise_exception('no') }}{% endif %}<start_of_turn>{{ m.content | trim }}{% endfor %}|{{ eos_token }}".into()),
        );
        let tok = ModelTokenizer::from_metadata(&m).unwrap();
        assert_eq!(tok.chat_prompt("hi ").unwrap(), "<start_of_turn>hi|<eos>");
        m.insert("gguf.tokenizer.chat_template".into(), json("{{ raise_exception('roles must alternate') }}".into()));
        let err = ModelTokenizer::from_metadata(&m).unwrap().chat_prompt("x").unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
        m.remove("gguf.tokenizer.chat_template");
        m.insert("gguf.general.architecture".into(), json("llama".into()));
        assert!(ModelTokenizer::from_metadata(&m).unwrap().chat_prompt("x").is_err(), "no template and no built-in one");
    }
}
