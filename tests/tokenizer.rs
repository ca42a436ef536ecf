//! SmolLM2's tokenizer rebuilt from its GGUF metadata: exact round trips, the encodings the
//! format's rules fix (single-digit splitting, control tokens, whole-word tokens), and the
//! chat template. Skips, saying why, when the model cannot be fetched.
mod common;
use codecllm::import::SourceModel;
use codecllm::model::tokenizer::ModelTokenizer;
use common::fetch_model;

fn smollm2() -> Option<(ModelTokenizer, Vec<String>)> {
    let path = fetch_model("fetch-smollm2.sh", "smollm2_tokenizer_round_trips_and_follows_its_rules")?;
    let model = SourceModel::open(std::path::Path::new(&path)).unwrap();
    let tokens: Vec<String> = serde_json::from_str(&model.metadata["gguf.tokenizer.ggml.tokens"]).unwrap();
    Some((ModelTokenizer::from_metadata(&model.metadata).unwrap(), tokens))
}

#[test]
fn smollm2_tokenizer_round_trips_and_follows_its_rules() {
    let Some((tok, vocab)) = smollm2() else { return };
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
}

#[test]
fn tokenizer_metadata_problems_are_clear() {
    let mut m = std::collections::BTreeMap::new();
    assert!(ModelTokenizer::from_metadata(&m).err().unwrap().to_string().contains("no tokenizer metadata"));
    m.insert("gguf.tokenizer.ggml.model".into(), "\"llama\"".into());
    assert!(ModelTokenizer::from_metadata(&m).err().unwrap().to_string().contains("'llama' is not supported"));
}
