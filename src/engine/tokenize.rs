//! Tokenisation as lm-evaluation-harness does it: joint encoding of context + continuation,
//! trailing whitespace of the context moved to the continuation, no special tokens by default.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::config::{ModelConfig, generation_eos_ids, token_ids};
use super::error::{EngineError, Result};
use super::types::Bos;

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
        Self::load_with(dir, cfg.bos_token_id, cfg.eos_token_ids.clone())
    }

    /// The tokenizer of a model served elsewhere: tokenizer.json, with BOS and EOS from the
    /// folder's config.json when it has one (read loosely: the model itself is never loaded
    /// here, so its architecture need not be one the engine runs). Also the context length
    /// config.json gives, if any.
    pub fn load_standalone(dir: &Path) -> Result<(Self, Option<usize>)> {
        let path = dir.join("config.json");
        let config: Value = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| EngineError::config(&path, format!("not JSON: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
            Err(e) => return Err(EngineError::io(&path, e)),
        };
        let bos = config
            .get("bos_token_id")
            .and_then(Value::as_u64)
            .map(|id| id as u32);
        let eos = token_ids(config.get("eos_token_id"));
        let context = config
            .get("max_position_embeddings")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        Ok((Self::load_with(dir, bos, eos)?, context))
    }

    fn load_with(dir: &Path, bos_token_id: Option<u32>, eos_token_ids: Vec<u32>) -> Result<Self> {
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
        let bos = id_of("bos_token").or(bos_token_id);
        let mut eos = eos_token_ids;
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

    /// Whether `text` already starts with the BOS token's text (as lm-eval checks, so that a
    /// prompt holding its own BOS does not get a second one).
    fn starts_with_bos(&self, text: &str) -> bool {
        self.bos
            .and_then(|id| self.tokenizer.id_to_token(id))
            .is_some_and(|token| text.starts_with(&token))
    }

    /// Ids of `text` with BOS as `bos` says.
    pub fn encode_with(&self, text: &str, bos: Bos) -> Result<Vec<u32>> {
        if self.starts_with_bos(text) {
            return self.encode(text);
        }
        match bos {
            Bos::Never => self.encode(text),
            Bos::Always => {
                let mut ids = vec![self.bos_or_err()?];
                ids.extend(self.encode(text)?);
                Ok(ids)
            }
            Bos::Auto => {
                let enc = self
                    .tokenizer
                    .encode(text, true)
                    .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
                Ok(enc.get_ids().to_vec())
            }
        }
    }

    /// The prompt ids for generation.
    pub fn encode_prompt(&self, prompt: &str, bos: Bos) -> Result<Vec<u32>> {
        self.encode_with(prompt, bos)
    }

    /// lm-evaluation-harness `_encode_pair`: (context ids, continuation ids).
    ///
    /// An empty context becomes `[BOS]` (or the first EOS id when there is no BOS), as the
    /// harness's `prefix_token_id`.
    pub fn encode_pair(
        &self,
        context: &str,
        continuation: &str,
        bos: Bos,
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
        let mut whole = self.encode_with(&format!("{context}{continuation}"), bos)?;
        let ctx = self.encode_with(&context, bos)?;
        let cont = whole.split_off(ctx.len().min(whole.len()));
        Ok((ctx, cont))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(dir: &str) -> TokenizerInfo {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        TokenizerInfo::load(&dir, &ModelConfig::from_dir(&dir).unwrap()).unwrap()
    }

    #[test]
    fn auto_follows_the_post_processor_and_never_adds_bos_twice() {
        // A Llama-style template that prepends <s> (id 1).
        let llama = tokenizer("tests/fixtures/engine/models/llama-gqa");
        let plain = llama.encode("The glorp").unwrap();
        assert_eq!(llama.encode_with("The glorp", Bos::Auto).unwrap()[0], 1);
        assert_eq!(
            llama.encode_with("The glorp", Bos::Auto).unwrap()[1..],
            plain
        );
        assert_eq!(llama.encode_with("The glorp", Bos::Never).unwrap(), plain);
        assert_eq!(
            llama.encode_with("The glorp", Bos::Always).unwrap(),
            llama.encode_with("The glorp", Bos::Auto).unwrap()
        );
        for bos in [Bos::Auto, Bos::Always, Bos::Never] {
            let ids = llama.encode_with("<s>The glorp", bos).unwrap();
            assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 1, "{bos:?}");
        }
        let (ctx, cont) = llama
            .encode_pair("The glorp of", " Kavo", Bos::Auto)
            .unwrap();
        assert_eq!(ctx[0], 1);
        assert_eq!(
            cont,
            llama
                .encode_pair("The glorp of", " Kavo", Bos::Never)
                .unwrap()
                .1
        );

        // A word-level tokenizer with no post-processor: auto adds nothing.
        let words = tokenizer("examples/model-update/old-base");
        let text = "the cat";
        assert_eq!(
            words.encode_with(text, Bos::Auto).unwrap(),
            words.encode(text).unwrap()
        );
    }
}
