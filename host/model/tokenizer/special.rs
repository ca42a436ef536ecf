//! What llama.cpp (src/llama-vocab.cpp, `llama_vocab::impl::load`) decides about special
//! tokens when it loads a GGUF vocabulary, reproduced so that our ids match its ids:
//! token types, the tokens it detects by their text (end of turn, fill-in-the-middle) and
//! forces to CONTROL, the end-of-generation set, and the pre-split of special tokens written
//! in the text (`tokenizer_st_partition`).
use std::collections::{BTreeMap, BTreeSet};

/// GGUF `tokenizer.ggml.token_type` (llama.h `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    pub(super) fn from_gguf(t: i64) -> Self {
        match t {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// Texts llama.cpp takes for the end-of-turn token when `tokenizer.ggml.eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"];
const FIM_SUF_TEXTS: &[&str] = &["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"];
const FIM_MID_TEXTS: &[&str] = &["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// llama.cpp's end-of-generation list: a token with one of these texts stops generation
/// (and is made a CONTROL token if it was not one).
pub(super) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Applies llama.cpp's detection of special roles to `texts`/`types` (changing `types`
/// where it forces a token to CONTROL or back) and returns the tokens that end generation:
/// EOS, EOT, EOM, FIM pad/repo/separator and the `EOG_TEXTS` tokens. `id_key` reads an optional
/// `tokenizer.ggml.<name>_token_id` (an out-of-range id counts as absent, as llama.cpp
/// ignores it).
///
/// Where several tokens carry texts of one role's list, llama.cpp takes whichever its hash
/// map yields first; we take the lowest id (no model here has two).
pub(super) fn end_of_generation(texts: &[String], types: &mut [TokenType], eos: Option<u32>, id_key: &dyn Fn(&str) -> Option<u32>) -> BTreeSet<u32> {
    let n = texts.len() as u32;
    let key = |name: &str| id_key(name).filter(|&id| id < n);
    // text → lowest id with that text, like a lookup of llama.cpp's token_to_id (which
    // keeps the last id for a duplicated text; no vocabulary here has duplicates).
    let mut by_text: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, t) in texts.iter().enumerate() {
        by_text.entry(t.as_str()).or_insert(i as u32);
    }
    let find = |list: &[&str]| list.iter().filter_map(|t| by_text.get(t).copied()).min();
    // A role given by its key is taken as it is; one found by its text is forced to CONTROL.
    let role = |name: &str, list: &[&str], types: &mut [TokenType]| -> Option<u32> {
        key(name).or_else(|| {
            let id = find(list)?;
            types[id as usize] = TokenType::Control;
            Some(id)
        })
    };
    let eot = role("eot", EOT_TEXTS, types);
    let eom = role("eom", EOM_TEXTS, types);
    for (name, list) in [("fim_pre", FIM_PRE_TEXTS), ("fim_suf", FIM_SUF_TEXTS), ("fim_mid", FIM_MID_TEXTS)] {
        role(name, list, types);
    }
    let fim_pad = role("fim_pad", FIM_PAD_TEXTS, types);
    let fim_rep = role("fim_rep", FIM_REP_TEXTS, types);
    let fim_sep = role("fim_sep", FIM_SEP_TEXTS, types);
    let mut eog: BTreeSet<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
    for (i, t) in texts.iter().enumerate() {
        if EOG_TEXTS.contains(&t.as_str()) {
            eog.insert(i as u32);
            types[i] = TokenType::Control;
        }
    }
    eog.extend([eos.filter(|&e| e < n), eot, eom].into_iter().flatten());
    // o200k_harmony / solar-open: "<|end|>" ends a message there, not the generation.
    let with = |eog: &BTreeSet<u32>, s: &str| eog.iter().copied().find(|&id| texts[id as usize] == s);
    let has = |eog: &BTreeSet<u32>, s: &str| with(eog, s).is_some();
    if has(&eog, "<|end|>") && (has(&eog, "<|call|>") || has(&eog, "<|calls|>")) && (has(&eog, "<|return|>") || has(&eog, "<|flush|>")) {
        let end = with(&eog, "<|end|>").expect("present");
        eog.remove(&end);
        types[end as usize] = TokenType::UserDefined;
    }
    // gemma4 and plamo have a plain-text "</s>".
    if has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>") {
        if let Some(s) = with(&eog, "</s>") {
            eog.remove(&s);
            types[s as usize] = TokenType::Normal;
        }
    }
    eog
}

/// A piece of the text after the special-token pre-split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// The tokens llama.cpp splits out of the raw text before the model tokenizes it: CONTROL,
/// USER_DEFINED and UNKNOWN tokens, longest text first (`cache_special_tokens`).
pub(super) struct SpecialTokens {
    /// (text, id, skipped when specials are not parsed): longest first, then by id (llama.cpp's
    /// sort is not stable; the order among tokens of one length only matters for two such
    /// tokens overlapping in the text).
    list: Vec<(String, u32, bool)>,
    trie: Trie,
}

impl SpecialTokens {
    pub(super) fn new(texts: &[String], types: &[TokenType]) -> Self {
        let mut list: Vec<(String, u32, bool)> = texts
            .iter()
            .zip(types)
            .enumerate()
            .filter_map(|(i, (t, ty))| match ty {
                TokenType::Control | TokenType::Unknown => Some((t.clone(), i as u32, true)),
                TokenType::UserDefined => Some((t.clone(), i as u32, false)),
                _ => None,
            })
            .filter(|(t, _, _)| !t.is_empty())
            .collect();
        list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut trie = Trie::default();
        for (i, (t, _, _)) in list.iter().enumerate() {
            trie.insert(t.as_bytes(), i);
        }
        SpecialTokens { list, trie }
    }

    /// llama.cpp's `tokenizer_st_partition`: for each special token in turn (longest
    /// first), every occurrence in the text fragments left so far becomes a token fragment.
    /// Without `parse_special`, CONTROL and UNKNOWN tokens stay text (USER_DEFINED ones are
    /// still split out).
    pub(super) fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        if text.is_empty() {
            return Vec::new();
        }
        // Only the tokens that occur somewhere in the text can split it (a fragment is a
        // substring of it): found in one pass over the trie, so that a vocabulary with
        // thousands of special tokens (Gemma: 6414) costs a few lookups per byte rather
        // than a search of the whole text per token.
        let present = self.trie.present(text.as_bytes(), self.list.len());
        let mut frags = vec![Fragment::Text(text)];
        for (i, (tok, id, control)) in self.list.iter().enumerate() {
            if !present[i] || (*control && !parse_special) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(s) = f else {
                    next.push(f);
                    continue;
                };
                let mut rest = 0;
                for (at, _) in s.match_indices(tok.as_str()) {
                    if at > rest {
                        next.push(Fragment::Text(&s[rest..at]));
                    }
                    next.push(Fragment::Token(*id));
                    rest = at + tok.len();
                }
                if rest < s.len() {
                    next.push(Fragment::Text(&s[rest..]));
                }
            }
            frags = next;
        }
        frags
    }
}

/// A byte trie over the special tokens' texts; node 0 is the root.
#[derive(Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Default)]
struct Node {
    /// (byte, child node), sorted by byte.
    children: Vec<(u8, u32)>,
    /// The list index of the token ending here.
    value: Option<usize>,
}

impl Trie {
    fn insert(&mut self, key: &[u8], value: usize) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut at = 0usize;
        for &b in key {
            at = match self.nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.nodes[at].children[i].1 as usize,
                Err(i) => {
                    let new = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[at].children.insert(i, (b, new as u32));
                    new
                }
            };
        }
        self.nodes[at].value.get_or_insert(value);
    }

    /// Which of the `n` values have their key somewhere in `text`.
    fn present(&self, text: &[u8], n: usize) -> Vec<bool> {
        let mut seen = vec![false; n];
        if self.nodes.is_empty() {
            return seen;
        }
        for start in 0..text.len() {
            let mut at = 0usize;
            for &b in &text[start..] {
                match self.nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => at = self.nodes[at].children[i].1 as usize,
                    Err(_) => break,
                }
                if let Some(v) = self.nodes[at].value {
                    seen[v] = true;
                }
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(texts: &[&str], types: &[i64]) -> (Vec<String>, Vec<TokenType>) {
        (texts.iter().map(|s| s.to_string()).collect(), types.iter().map(|&t| TokenType::from_gguf(t)).collect())
    }

    #[test]
    fn partition_splits_longest_first_and_keeps_control_tokens_as_text_unless_asked() {
        let (t, ty) = vocab(&["a", "<s>", "<s><s>", "\n", "\n\n", "<x>"], &[1, 3, 3, 4, 4, 2]);
        let sp = SpecialTokens::new(&t, &ty);
        use Fragment::{Text, Token};
        assert_eq!(sp.partition("", true), []);
        assert_eq!(sp.partition("<s><s><s>a\n\n\nb<x>", true), [Token(2), Token(1), Text("a"), Token(4), Token(3), Text("b"), Token(5)]);
        assert_eq!(sp.partition("<s>a\n\n\nb<x>", false), [Text("<s>a"), Token(4), Token(3), Text("b<x>")]);
        assert_eq!(sp.partition("plain", true), [Text("plain")]);
    }

    #[test]
    fn roles_follow_llama_cpp() {
        let (t, mut ty) = vocab(&["<eos>", "</s>", "<end_of_turn>", "<|fim_pad|>", "x", "<reponame>"], &[3, 1, 3, 3, 1, 1]);
        let eog = end_of_generation(&t, &mut ty, Some(0), &|_| None);
        assert_eq!(eog.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 5]);
        assert_eq!(ty[1], TokenType::Control, "'</s>' is forced to CONTROL");
        assert_eq!(ty[5], TokenType::Control, "the detected FIM repo token is forced to CONTROL");
        let (t, mut ty) = vocab(&["a", "b", "<eos>"], &[1, 1, 3]);
        let eog = end_of_generation(&t, &mut ty, Some(2), &|k| (k == "eot").then_some(1));
        assert_eq!(eog.iter().copied().collect::<Vec<_>>(), [1, 2], "eot_token_id is an end of generation");
        assert_eq!(ty[1], TokenType::Normal, "a role given by its key keeps its type");
    }
}
