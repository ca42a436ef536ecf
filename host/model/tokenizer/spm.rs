//! SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`: Gemma, Llama 2, …)
//! tokenized the way llama.cpp does: `llm_tokenizer_spm_session` in src/llama-vocab.cpp.
//!
//! Hand-written rather than the `tokenizers` crate: a GGUF carries the SentencePiece pieces
//! and scores, and the crate's `Unigram` model would run Viterbi over those scores, a
//! different algorithm that segments differently. llama.cpp instead merges greedily: start
//! from single characters, repeatedly join the adjacent pair whose concatenation is the
//! best-scoring piece (the leftmost among equal scores), and emit what is left, falling
//! back to `<0xXX>` byte tokens for characters the vocabulary lacks. That is what the GGUF's
//! ids must match, so that is what is here.
use super::special::{Fragment, SpecialTokens, TokenType};
use crate::error::{Error, Result};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// SentencePiece's escaped space, U+2581 "▁".
const SPACE: &str = "\u{2581}";

pub(super) struct Spm {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    /// Piece text → id (the last id of a duplicated text, as llama.cpp's `token_to_id`).
    index: HashMap<String, u32>,
    /// The token of each byte: `<0xXX>`, else the byte itself as a piece (llama.cpp's
    /// `byte_to_token`).
    byte_tokens: Vec<Option<u32>>,
    specials: SpecialTokens,
    /// Prefix a space to text that follows a special token or starts the input
    /// (`tokenizer.ggml.add_space_prefix`; Llama 2 yes, Gemma no).
    add_space_prefix: bool,
}

impl Spm {
    /// `pieces` as the GGUF stores them (empty ones renamed `[EMPTY_i]`, as llama.cpp does),
    /// `scores` (0 where absent) and `types` after llama.cpp's load-time adjustments.
    pub(super) fn new(mut pieces: Vec<String>, scores: Vec<f32>, types: Vec<TokenType>, add_space_prefix: bool) -> Self {
        for (i, p) in pieces.iter_mut().enumerate() {
            if p.is_empty() {
                *p = format!("[EMPTY_{i}]");
            }
        }
        let index: HashMap<String, u32> = pieces.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        let byte_tokens =
            (0..=255u8).map(|b| index.get(&format!("<0x{b:02X}>")).or_else(|| std::str::from_utf8(&[b]).ok().and_then(|s| index.get(s))).copied()).collect();
        let specials = SpecialTokens::new(&pieces, &types);
        Spm { pieces, scores, types, index, byte_tokens, specials, add_space_prefix }
    }

    /// llama.cpp's `impl::tokenize` for SPM, less BOS/EOS (the caller adds them): special
    /// tokens split out of the text, every other fragment escaped and merged.
    pub(super) fn encode(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) -> Result<()> {
        let mut prev_special = true; // the start of the input counts as after a special token
        for frag in self.specials.partition(text, parse_special) {
            match frag {
                Fragment::Text(t) => {
                    let prefix = if self.add_space_prefix && prev_special { " " } else { "" };
                    self.merge(&format!("{prefix}{t}").replace(' ', SPACE), out)?;
                    prev_special = false;
                }
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
            }
        }
        Ok(())
    }

    /// `llm_tokenizer_spm_session::tokenize` on one escaped fragment.
    pub(super) fn merge(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        // Symbols: one per character at first, a doubly linked list through `prev`/`next`
        // (usize::MAX for none); a symbol merged into its left neighbour has `len` 0.
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            syms.push(Symbol { start, len: c.len_utf8(), prev: i.wrapping_sub(1), next: i + 1 });
        }
        let Some(last) = syms.last_mut() else { return Ok(()) };
        last.next = NONE;
        let mut queue = BinaryHeap::new();
        for i in 1..syms.len() {
            self.try_pair(text, &syms, i - 1, i, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (syms[b.left], syms[b.right]);
            // Skip pairs made stale by an earlier merge of either side.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            syms[b.left].len += r.len;
            syms[b.right].len = 0;
            syms[b.left].next = r.next;
            if r.next != NONE {
                syms[r.next].prev = b.left;
            }
            if l.prev != NONE {
                self.try_pair(text, &syms, l.prev, b.left, &mut queue);
            }
            if r.next != NONE {
                self.try_pair(text, &syms, b.left, r.next, &mut queue);
            }
        }
        let mut i = 0;
        while i != NONE {
            let s = syms[i];
            let piece = &text[s.start..s.start + s.len];
            // llama.cpp's `resegment` would split a symbol that is not a piece back along
            // the merge that made it (`rev_merge`), but every merge makes a piece, so only
            // single characters can miss the vocabulary: those become byte tokens.
            match self.index.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        let id = self.byte_tokens[b as usize]
                            .ok_or_else(|| Error::Invalid(format!("tokenizer: the vocabulary has no piece for '{piece}' and no byte token <0x{b:02X}>")))?;
                        out.push(id);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    fn try_pair(&self, text: &str, syms: &[Symbol], left: usize, right: usize, queue: &mut BinaryHeap<Bigram>) {
        let size = syms[left].len + syms[right].len;
        let start = syms[left].start;
        if let Some(&id) = self.index.get(&text[start..start + size]) {
            queue.push(Bigram { left, right, score: self.scores.get(id as usize).copied().unwrap_or(0.0), size });
        }
    }

    /// The bytes token `id` stands for (llama.cpp's `token_to_piece` with specials shown):
    /// CONTROL, UNKNOWN and USER_DEFINED tokens as written, normal pieces with "▁" as a
    /// space, byte tokens as their byte; other types (unused) as nothing.
    pub(super) fn piece(&self, id: u32, out: &mut Vec<u8>) -> Result<()> {
        let i = id as usize;
        let text = self.pieces.get(i).ok_or_else(|| Error::Invalid(format!("tokenizer: token id {id} is outside the vocabulary ({})", self.pieces.len())))?;
        match self.types[i] {
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => out.extend_from_slice(text.as_bytes()),
            TokenType::Normal => out.extend_from_slice(text.replace(SPACE, " ").as_bytes()),
            TokenType::Byte => match text.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text.as_bytes()),
            },
            TokenType::Unused | TokenType::Undefined => {}
        }
        Ok(())
    }

    /// Text of `ids`: their pieces' bytes as UTF-8 (invalid sequences as U+FFFD). With
    /// `add_space_prefix`, the space the encoder put before the first piece is dropped,
    /// like llama.cpp's `detokenize`.
    pub(super) fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            let at = bytes.len();
            self.piece(id, &mut bytes)?;
            if k == 0 && self.add_space_prefix && bytes.get(at) == Some(&b' ') {
                bytes.remove(at);
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    #[cfg(test)]
    fn text(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }
}

const NONE: usize = usize::MAX;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

/// A candidate merge of two adjacent symbols into the piece of `score`.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

// The queue's order (llama.cpp's `llm_bigram_spm::comparator`): the highest score first,
// among equal scores the leftmost pair.
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.partial_cmp(&other.score).unwrap_or(Ordering::Equal).then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary of (piece, score, GGUF type) plus the byte tokens for "é" (C3 A9).
    fn spm(pieces: &[(&str, f32, i64)], add_space_prefix: bool) -> Spm {
        let mut all: Vec<(String, f32, i64)> = pieces.iter().map(|&(p, s, t)| (p.to_string(), s, t)).collect();
        all.extend(["<0xC3>", "<0xA9>"].map(|b| (b.to_string(), 0.0, 6)));
        Spm::new(
            all.iter().map(|p| p.0.clone()).collect(),
            all.iter().map(|p| p.1).collect(),
            all.iter().map(|p| TokenType::from_gguf(p.2)).collect(),
            add_space_prefix,
        )
    }

    fn ids(s: &Spm, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        s.encode(text, true, &mut out).unwrap();
        out
    }

    fn pieces(s: &Spm, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| s.text(i).unwrap().to_string()).collect()
    }

    #[test]
    fn the_best_scoring_pair_merges_first() {
        // "abc": "ab" (-1) beats "bc" (-2), so a+b merge, then "ab"+"c" is not a piece.
        let s = spm(&[("a", -10.0, 1), ("b", -10.0, 1), ("c", -10.0, 1), ("ab", -1.0, 1), ("bc", -2.0, 1)], false);
        assert_eq!(pieces(&s, &ids(&s, "abc")), ["ab", "c"]);
        // With "bc" scoring higher, b+c merge first and "a" stays alone.
        let s = spm(&[("a", -10.0, 1), ("b", -10.0, 1), ("c", -10.0, 1), ("ab", -2.0, 1), ("bc", -1.0, 1)], false);
        assert_eq!(pieces(&s, &ids(&s, "abc")), ["a", "bc"]);
        // Merges chain: a+b, then ab+c, then abc+d into the whole word.
        let s = spm(&[("a", 0.0, 1), ("b", 0.0, 1), ("c", 0.0, 1), ("d", 0.0, 1), ("ab", -1.0, 1), ("abc", -3.0, 1), ("abcd", -2.0, 1)], false);
        assert_eq!(pieces(&s, &ids(&s, "abcd")), ["abcd"]);
    }

    #[test]
    fn equal_scores_merge_the_leftmost_pair() {
        let s = spm(&[("a", 0.0, 1), ("aa", -1.0, 1)], false);
        assert_eq!(pieces(&s, &ids(&s, "aaa")), ["aa", "a"]);
        assert_eq!(pieces(&s, &ids(&s, "aaaaa")), ["aa", "aa", "a"]);
    }

    #[test]
    fn missing_characters_fall_back_to_bytes_and_decode_back() {
        let s = spm(&[("c", 0.0, 1), ("a", 0.0, 1), ("f", 0.0, 1), ("▁", 0.0, 1), ("▁c", -1.0, 1), ("ca", -2.0, 1)], true);
        let got = ids(&s, "café");
        assert_eq!(pieces(&s, &got), ["▁c", "a", "f", "<0xC3>", "<0xA9>"], "a space prefix, then é as its UTF-8 bytes");
        assert_eq!(s.decode(&got).unwrap(), "café", "the prefixed space is dropped again");
        let mut out = Vec::new();
        assert!(s.encode("x", true, &mut out).unwrap_err().to_string().contains("no byte token <0x78>"));
    }

    #[test]
    fn spaces_are_escaped_and_special_tokens_split_out() {
        let s = spm(&[("<s>", 0.0, 3), ("\n", 0.0, 4), ("a", 0.0, 1), ("▁", 0.0, 1), ("▁a", -1.0, 1), ("<", 0.0, 1), ("s", 0.0, 1), (">", 0.0, 1)], false);
        let (s0, nl) = (0, 1);
        let got = ids(&s, "a a\n<s> a");
        assert_eq!(got[..3], [2, 4, nl]);
        assert_eq!(got[3..], [s0, 4]);
        let mut text_mode = Vec::new();
        s.encode("<s>", false, &mut text_mode).unwrap();
        assert_eq!(pieces(&s, &text_mode), ["<", "s", ">"], "a control token stays text unless specials are parsed");
        assert_eq!(s.decode(&got).unwrap(), "a a\n<s> a");
    }
}
