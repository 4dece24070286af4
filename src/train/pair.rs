//! The compatibility objective needs teachers that share the student's token ids.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::engine::config::ModelConfig;

/// (tokenizer.json SHA-256, vocab_size) of a model folder.
pub fn vocabulary(dir: &Path) -> Result<(String, usize), String> {
    let path = dir.join("tokenizer.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg = ModelConfig::from_dir(dir).map_err(|e| e.to_string())?;
    Ok((hex::encode(Sha256::digest(bytes)), cfg.vocab_size))
}

/// Refuses an old/new pair whose tokenizers or vocabularies differ: the MUSCLE loss compares
/// the models' distributions token id by token id.
pub fn check_same_vocabulary(old: &Path, new: &Path) -> Result<(), String> {
    let (old_sha, old_vocab) = vocabulary(old)?;
    let (new_sha, new_vocab) = vocabulary(new)?;
    if old_sha != new_sha {
        return Err(format!(
            "the old and new models have different tokenizers (tokenizer.json sha256 {}… vs \
             {}…): the compatibility loss compares their next-token distributions id by id, so \
             it cannot be trained across a tokenizer change (evaluation still works)",
            &old_sha[..12],
            &new_sha[..12]
        ));
    }
    if old_vocab != new_vocab {
        return Err(format!(
            "the old and new models have different vocabulary sizes ({old_vocab} vs {new_vocab}): \
             the compatibility loss needs the same token ids on both sides"
        ));
    }
    Ok(())
}
