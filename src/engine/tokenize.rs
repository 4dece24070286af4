//! Tokenisation as lm-evaluation-harness does it: joint encoding of context + continuation,
//! trailing whitespace of the context moved to the continuation, no special tokens by default.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::config::{ModelConfig, generation_eos_ids};
use super::error::{EngineError, Result};

pub struct TokenizerInfo {
    tokenizer: Tokenizer,
    /// The tokenizer's BOS id (tokenizer_config.json's bos_token, else config.json's bos_token_id).
    pub bos: Option<u32>,
    /// Every id that ends generation (config, generation_config and tokenizer_config).
    pub eos: Vec<u32>,
    /// Hex SHA-256 of tokenizer.json.
    pub sha256: String,
}

/// A special token in tokenizer_config.json: a string or an AddedToken object.
fn special_token(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl TokenizerInfo {
    pub fn load(dir: &Path, cfg: &ModelConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
        let tokenizer = Tokenizer::from_bytes(&bytes)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let tc: Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let id_of = |key: &str| special_token(tc.get(key)).and_then(|t| tokenizer.token_to_id(&t));
        let bos = id_of("bos_token").or(cfg.bos_token_id);
        let mut eos = cfg.eos_token_ids.clone();
        eos.extend(generation_eos_ids(dir));
        eos.extend(id_of("eos_token"));
        eos.sort_unstable();
        eos.dedup();
        Ok(Self {
            tokenizer,
            bos,
            eos,
            sha256,
        })
    }

    /// Ids of `text` without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    fn bos_or_err(&self) -> Result<u32> {
        self.bos.ok_or_else(|| {
            EngineError::InvalidRequest(
                "add_bos was asked but the tokenizer has no BOS token".into(),
            )
        })
    }

    /// The prompt ids for generation (BOS prepended when `add_bos`).
    pub fn encode_prompt(&self, prompt: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = if add_bos {
            vec![self.bos_or_err()?]
        } else {
            Vec::new()
        };
        ids.extend(self.encode(prompt)?);
        Ok(ids)
    }

    /// lm-evaluation-harness `_encode_pair`: (context ids, continuation ids).
    ///
    /// An empty context becomes `[BOS]` (or the first EOS id when there is no BOS), as the
    /// harness's `prefix_token_id`.
    pub fn encode_pair(
        &self,
        context: &str,
        continuation: &str,
        add_bos: bool,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        if context.is_empty() {
            let prefix = self
                .bos
                .or_else(|| self.eos.first().copied())
                .ok_or_else(|| {
                    EngineError::InvalidRequest(
                        "empty context and the tokenizer has neither BOS nor EOS".into(),
                    )
                })?;
            return Ok((vec![prefix], self.encode(continuation)?));
        }
        let trimmed = context.trim_end();
        let (context, continuation) = if trimmed.len() < context.len() {
            (
                trimmed.to_string(),
                format!("{}{continuation}", &context[trimmed.len()..]),
            )
        } else {
            (context.to_string(), continuation.to_string())
        };
        let prefix: Vec<u32> = if add_bos {
            vec![self.bos_or_err()?]
        } else {
            Vec::new()
        };
        let mut whole = prefix.clone();
        whole.extend(self.encode(&format!("{context}{continuation}"))?);
        let mut ctx = prefix;
        ctx.extend(self.encode(&context)?);
        let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
        Ok((ctx, cont))
    }
}
