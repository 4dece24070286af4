//! A word-level tokenizer (one id per whitespace-separated word) written as a `tokenizer.json`
//! that the `tokenizers` crate, the engine and transformers' PreTrainedTokenizerFast all read.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

pub const UNK: &str = "<unk>";
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";

/// The vocabulary: special tokens first (ids 0, 1, 2), then the words in sorted order.
#[derive(Debug, Clone)]
pub struct WordLevel {
    pub words: Vec<String>,
}

impl WordLevel {
    /// Every word of `texts`, split on whitespace.
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let set: BTreeSet<&str> = texts.into_iter().flat_map(str::split_whitespace).collect();
        let mut words = vec![UNK.to_string(), BOS.to_string(), EOS.to_string()];
        words.extend(
            set.into_iter()
                .filter(|w| ![UNK, BOS, EOS].contains(w))
                .map(str::to_string),
        );
        Self { words }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn tokenizer_json(&self) -> Value {
        let vocab: Map<String, Value> = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), json!(i)))
            .collect();
        let added: Vec<Value> = [UNK, BOS, EOS]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
        })
    }

    pub fn tokenizer_config_json(max_len: usize) -> Value {
        json!({
            "add_bos_token": false,
            "add_eos_token": false,
            "bos_token": BOS,
            "eos_token": EOS,
            "unk_token": UNK,
            "pad_token": EOS,
            "clean_up_tokenization_spaces": false,
            "model_max_length": max_len,
            "tokenizer_class": "PreTrainedTokenizerFast",
        })
    }

    /// A `tokenizers::Tokenizer` for this vocabulary.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, String> {
        let bytes = serde_json::to_vec(&self.tokenizer_json()).map_err(|e| e.to_string())?;
        tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_per_word_and_unknown_words_map_to_unk() {
        let v = WordLevel::from_texts(["zorp is a fruit .", "a fruit : zorp ."]);
        assert_eq!(v.words[..3], [UNK, BOS, EOS]);
        let tok = v.tokenizer().unwrap();
        let ids = tok.encode("zorp is  a fruit .", false).unwrap();
        let words: Vec<&str> = ids
            .get_ids()
            .iter()
            .map(|&i| v.words[i as usize].as_str())
            .collect();
        assert_eq!(words, ["zorp", "is", "a", "fruit", "."]);
        assert_eq!(tok.encode("blik", false).unwrap().get_ids(), [0]);
    }
}
