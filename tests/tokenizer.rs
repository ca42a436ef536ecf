//! The models' tokenizers rebuilt from their GGUF metadata give exactly llama.cpp's ids:
//! SmolLM2 (byte-level BPE, `smollm`), Gemma 3 (SentencePiece) and Qwen2.5 (byte-level
//! BPE, `qwen2`), on tricky strings and on Paradise Lost, with special tokens parsed and
//! not; decoding is exact; end of generation, BOS and chat prompts follow llama.cpp.
//! The expected ids in tests/data/tokenizer/ were made with llama.cpp's `llama-tokenize`
//! (its README says how). Each test skips, saying why, when its model cannot be fetched.
mod common;
use codecllm::import::SourceModel;
use codecllm::model::tokenizer::ModelTokenizer;
use common::fetch_model;
use serde_json::Value;

/// The tokenizer of the GGUF `script` fetches, and its vocabulary.
fn model(script: &str, test: &str) -> Option<(ModelTokenizer, Vec<String>)> {
    let path = fetch_model(script, test)?;
    let model = SourceModel::open(std::path::Path::new(&path)).unwrap();
    let tokens: Vec<String> = serde_json::from_str(&model.metadata["gguf.tokenizer.ggml.tokens"]).unwrap();
    Some((ModelTokenizer::from_metadata(&model.metadata).unwrap(), tokens))
}

fn data(name: &str) -> Value {
    let path = format!("{}/tests/data/tokenizer/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// What tests/data/tokenizer/README.md says the Paradise Lost entries hash: xxh3-64 of the
/// ids as little-endian u32s.
fn digest(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// `tok` against llama.cpp's ids in tests/data/tokenizer/`name`.json: every case in both
/// modes, decoding back to the case (all three tokenizers are lossless: byte-level BPE,
/// and SentencePiece with byte fallback), the end-of-generation set, and Paradise Lost.
fn matches_llama_cpp(tok: &ModelTokenizer, name: &str, test: &str) {
    let want = data(name);
    let cases: Vec<String> = serde_json::from_value(data("cases")).unwrap();
    let bos: Vec<u32> = tok.add_bos().into_iter().collect();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        for (mode, got) in [("text", tok.encode_text(case).unwrap()), ("special", tok.encode(case).unwrap())] {
            let expected = ids(&want[mode][i]);
            if got != expected {
                failures.push(format!("{mode} {case:?}:\n   got {got:?}\n  want {expected:?}"));
            }
            assert_eq!(got[..bos.len()], bos[..], "{mode} {case:?} starts with the BOS the model adds");
            assert_eq!(tok.decode(&got[bos.len()..]).unwrap(), *case, "{mode}: decode(encode(s)) == s");
        }
    }
    assert!(failures.is_empty(), "{name}: {} of {} encodings differ from llama.cpp's:\n{}", failures.len(), 2 * cases.len(), failures.join("\n"));

    let roles = &want["llama_cpp"];
    assert_eq!(tok.eos, roles["eos"].as_u64().unwrap() as u32);
    if let Some(b) = tok.add_bos() {
        assert_eq!(b, roles["bos"].as_u64().unwrap() as u32);
    }
    let eog: Vec<u32> = (0..tok.vocab_size as u32).filter(|&id| tok.is_end_of_generation(id)).collect();
    assert_eq!(eog, ids(&roles["eog"]), "{name}: the end-of-generation set is llama.cpp's");
    assert!(tok.is_end_of_generation(tok.eos) && tok.is_end_of_generation(roles["eot"].as_u64().unwrap() as u32), "EOS and EOT end generation");

    // Paradise Lost (LF line ends), as the perplexity run tokenizes it. The expected
    // lengths and digests are of llama-tokenize's `--no-parse-special` ids for the same
    // bytes (the first `prefix_bytes`, then the whole file), hashed as `digest` does.
    let Some(path) = fetch_model("fetch-text.sh", test) else { return };
    let text = std::fs::read_to_string(path).unwrap();
    let pl = &want["paradise_lost"];
    let prefix = &text[..pl["prefix_bytes"].as_u64().unwrap() as usize];
    for (what, part, len, hash) in [("the first 20 KB", prefix, "prefix_len", "prefix_xxh3"), ("the whole text", &text[..], "whole_len", "whole_xxh3")] {
        let got = tok.encode_text(part).unwrap();
        assert_eq!((got.len(), digest(&got)), (pl[len].as_u64().unwrap() as usize, pl[hash].as_str().unwrap().to_string()), "{name}: {what} of Paradise Lost");
        assert_eq!(tok.decode(&got[bos.len()..]).unwrap(), part, "{name}: {what} decodes back");
    }
}

/// One test per model: two would fetch it at once on a first run.
#[test]
fn smollm2_tokenizer_round_trips_and_follows_its_rules() {
    let test = "smollm2_tokenizer_round_trips_and_follows_its_rules";
    let Some((tok, vocab)) = model("fetch-smollm2.sh", test) else { return };
    let id = |s: &str| vocab.iter().position(|t| t == s).unwrap() as u32;
    assert_eq!(tok.vocab_size, 49152);
    for text in [
        "Hello world",
        "The year 2024 had 366 days.",
        "  leading spaces\tand\ttabs\n\nnewlines",
        "naïve café – “quotes” 日本語 😀",
        "fn main() { println!(\"hi\"); }",
        "",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "{ids:?}");
    }
    assert_eq!(tok.encode("Hello world").unwrap(), [id("Hello"), id("Ġworld")]);
    assert_eq!(tok.encode("2024").unwrap(), [id("2"), id("0"), id("2"), id("4")], "smollm splits every digit");
    let chat = tok.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
    assert_eq!((chat[0], *chat.last().unwrap()), (1, 2), "control tokens are single tokens");
    assert_eq!(tok.eos, 2);
    assert_eq!(tok.bos, None, "SmolLM2 adds no BOS");
    let prompt = tok.chat_prompt("Hi").unwrap();
    assert!(prompt.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"), "{prompt}");
    assert!(prompt.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), "{prompt}");
    matches_llama_cpp(&tok, "smollm2", test);
}

#[test]
fn gemma3_tokenizer_matches_llama_cpp() {
    let test = "gemma3_tokenizer_matches_llama_cpp";
    let Some((tok, vocab)) = model("fetch-gemma3.sh", test) else { return };
    assert_eq!(tok.vocab_size, 262_144);
    assert_eq!(tok.add_bos(), Some(2), "Gemma adds <bos>");
    matches_llama_cpp(&tok, "gemma3", test);
    let id = |s: &str| vocab.iter().position(|t| t == s).unwrap() as u32;
    // Byte fallback: a character the vocabulary lacks is its UTF-8 bytes.
    let rare = tok.encode_text("\u{10FFFD}").unwrap();
    assert_eq!(rare[1..], ["<0xF4>", "<0x8F>", "<0xBF>", "<0xBD>"].map(id));
    // The GGUF has no chat template: llama.cpp's built-in Gemma one, BOS from encoding.
    let prompt = tok.chat_prompt("Hi there").unwrap();
    assert_eq!(prompt, "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n");
    let cases: Vec<String> = serde_json::from_value(data("cases")).unwrap();
    let i = cases.iter().position(|c| *c == prompt).unwrap();
    assert_eq!(tok.encode(&prompt).unwrap(), ids(&data("gemma3")["special"][i]), "the prompt encodes as llama.cpp encodes it");
    assert!(tok.is_end_of_generation(id("<end_of_turn>")) && !tok.is_end_of_generation(id("<start_of_turn>")));
}

#[test]
fn qwen25_tokenizer_matches_llama_cpp() {
    let test = "qwen25_tokenizer_matches_llama_cpp";
    let Some((tok, vocab)) = model("fetch-qwen25.sh", test) else { return };
    assert_eq!(tok.vocab_size, 151_936);
    assert_eq!(tok.add_bos(), None, "Qwen adds no BOS");
    matches_llama_cpp(&tok, "qwen25", test);
    let id = |s: &str| vocab.iter().position(|t| t == s).unwrap() as u32;
    assert_eq!(tok.encode_text("<tool_call>").unwrap(), [id("<tool_call>")], "a user-defined token is one token even in plain text");
    assert_ne!(tok.encode_text("<|im_end|>").unwrap(), [id("<|im_end|>")], "a control token in plain text is text");
    assert!(tok.is_end_of_generation(id("<|im_end|>")) && tok.is_end_of_generation(id("<|endoftext|>")));
    let prompt = tok.chat_prompt("Hi").unwrap();
    assert!(prompt.starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."), "{prompt}");
    assert!(prompt.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), "{prompt}");
}

#[test]
fn tokenizer_metadata_problems_are_clear() {
    let mut m = std::collections::BTreeMap::new();
    assert!(ModelTokenizer::from_metadata(&m).err().unwrap().to_string().contains("no tokenizer metadata"));
    m.insert("gguf.tokenizer.ggml.model".into(), "\"bert\"".into());
    m.insert("gguf.tokenizer.ggml.tokens".into(), "[\"a\"]".into());
    assert!(ModelTokenizer::from_metadata(&m).err().unwrap().to_string().contains("'bert' is not supported"));
    m.insert("gguf.tokenizer.ggml.model".into(), "\"gpt2\"".into());
    m.insert("gguf.tokenizer.ggml.merges".into(), "[]".into());
    m.insert("gguf.tokenizer.ggml.eos_token_id".into(), "0".into());
    m.insert("gguf.tokenizer.ggml.pre".into(), "\"jais\"".into());
    assert!(ModelTokenizer::from_metadata(&m).err().unwrap().to_string().contains("pre-tokenizer 'jais' is not supported"));
    m.insert("gguf.tokenizer.ggml.pre".into(), "\"qwen2\"".into());
    m.insert("gguf.tokenizer.ggml.eos_token_id".into(), "7".into());
    assert!(ModelTokenizer::from_metadata(&m).err().unwrap().to_string().contains("EOS id 7 is outside the vocabulary"));
    m.insert("gguf.tokenizer.ggml.model".into(), "\"llama\"".into());
    m.insert("gguf.tokenizer.ggml.token_type".into(), "[1, 1]".into());
    m.insert("gguf.tokenizer.ggml.tokens".into(), "[\"a\", \"b\", \"c\"]".into());
    assert!(ModelTokenizer::from_metadata(&m).err().unwrap().to_string().contains("token_type has 2 entries for 3 tokens"));
}
