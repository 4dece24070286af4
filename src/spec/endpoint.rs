//! A side served by an OpenAI-compatible inference server (vLLM, SGLang, llama.cpp's server):
//! what a spec says of it, and the checks that need neither the server nor the policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use utoipa::ToSchema;

use crate::models::{FolderKind, Resolver};
use crate::validation::Errors;

/// Variables an `api_key_env` may name: a spec never names any other of the server's variables.
pub const ENDPOINT_KEY_PREFIX: &str = "MUSCLE_ENDPOINT_KEY";
/// Upper bound of `max_in_flight`.
pub const MAX_IN_FLIGHT_LIMIT: u32 = 256;
/// Upper bound of `prompts_per_request`.
pub const PROMPTS_PER_REQUEST_LIMIT: u32 = 256;
/// Upper bound of `timeout_seconds`.
pub const TIMEOUT_LIMIT_SECONDS: u32 = 3600;

/// `{"endpoint": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointRef {
    pub endpoint: EndpointSpec,
}

/// A model served by an OpenAI-compatible server. The worker tokenises every request with
/// `tokenizer` and sends token ids, so both sides of a comparison score the same tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// The server's OpenAI base URL, `/v1` included (`http://vllm-a:8000/v1`); its host:port
    /// must be in MUSCLE_ENDPOINT_HOSTS.
    pub url: String,
    /// The served model's id as `GET {url}/models` lists it (a LoRA module's name on vLLM).
    pub model: String,
    /// A folder under MUSCLE_MODEL_DIR with the served model's `tokenizer.json` (and its
    /// `config.json`, `tokenizer_config.json`, `generation_config.json` when it has them).
    pub tokenizer: String,
    /// A MUSCLE_ENDPOINT_KEY* variable holding the bearer token, set where the workers run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Requests in flight at once to this server and model, across the shards of one worker
    /// process.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// `completions` (every task) or `chat` (one user message to `/chat/completions`;
    /// generation only: chat answers carry no prompt log-probabilities).
    #[serde(default)]
    pub api: EndpointApi,
    /// How `/completions` prompts are sent: `token_ids` (default; tokenised by the worker with
    /// `tokenizer`, BOS as `options.add_bos` says), or `text` for servers that refuse ids
    /// (llama-cpp-python's): the server tokenises and adds its own BOS, and a multiple-choice
    /// continuation is found in the echo by its tokens' `text_offset`.
    #[serde(default)]
    pub prompt_format: PromptFormat,
    /// Prompts sent in one `/completions` request (the OpenAI API takes a list; llama.cpp's
    /// server takes one at a time).
    #[serde(default = "default_prompts_per_request")]
    pub prompts_per_request: u32,
    /// Seconds one request may take before it is abandoned and retried.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u32,
    /// Tries of one request on a 429, a 5xx, a timeout or a lost connection before the shard
    /// fails with the server's last error (the shard itself then retries as any shard does).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// More fields for every request body, as the server documents them (vLLM's
    /// `"skip_special_tokens"`, llama.cpp's `"repeat_penalty": 1.0`); none may be a field
    /// muscle sets itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, serde_json::Value>)]
    pub extra_body: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromptFormat {
    #[default]
    TokenIds,
    Text,
}

/// Request fields muscle sets, which `extra_body` may not name.
const SET_BY_MUSCLE: [&str; 13] = [
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "temperature",
    "echo",
    "logprobs",
    "stop",
    "no_repeat_ngram_size",
    "top_p",
    "top_k",
    "seed",
    "n",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointApi {
    #[default]
    Completions,
    Chat,
}

fn default_max_in_flight() -> u32 {
    8
}

fn default_prompts_per_request() -> u32 {
    1
}

fn default_timeout_seconds() -> u32 {
    120
}

fn default_max_retries() -> u32 {
    5
}

impl EndpointSpec {
    /// The parsed URL, or why it is refused.
    pub fn parsed_url(&self) -> Result<Url, String> {
        let url = Url::parse(&self.url).map_err(|e| format!("is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; name a key with api_key_env".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not carry a query or a fragment".into());
        }
        if url.host().is_none() {
            return Err("names no host".into());
        }
        Ok(url)
    }

    /// The checks that need neither the server nor the policy; `field` is `old` or `new`.
    pub fn check(&self, field: &str, resolver: &Resolver, errors: &mut Errors) {
        let at = |name: &str| format!("{field}.endpoint.{name}");
        if let Err(message) = self.parsed_url() {
            errors.add(at("url"), message);
        }
        if self.model.is_empty() || self.model.chars().count() > 500 {
            errors.add(at("model"), "must be 1 to 500 characters");
        }
        if let Err(message) = resolver.resolve(&self.tokenizer, FolderKind::Tokenizer) {
            errors.add(at("tokenizer"), message);
        }
        if let Some(name) = &self.api_key_env
            && !name.starts_with(ENDPOINT_KEY_PREFIX)
        {
            errors.add(
                at("api_key_env"),
                format!("must name a {ENDPOINT_KEY_PREFIX}* variable"),
            );
        }
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&self.max_in_flight) {
            errors.add(
                at("max_in_flight"),
                format!("must be from 1 to {MAX_IN_FLIGHT_LIMIT}"),
            );
        }
        if !(1..=PROMPTS_PER_REQUEST_LIMIT).contains(&self.prompts_per_request) {
            errors.add(
                at("prompts_per_request"),
                format!("must be from 1 to {PROMPTS_PER_REQUEST_LIMIT}"),
            );
        }
        if !(1..=TIMEOUT_LIMIT_SECONDS).contains(&self.timeout_seconds) {
            errors.add(
                at("timeout_seconds"),
                format!("must be from 1 to {TIMEOUT_LIMIT_SECONDS}"),
            );
        }
        if self.max_retries > 20 {
            errors.add(at("max_retries"), "must be at most 20");
        }
        for key in self.extra_body.keys() {
            if SET_BY_MUSCLE.contains(&key.as_str()) || key == "n" || key == "stream" {
                errors.add(
                    format!("{field}.endpoint.extra_body.{key}"),
                    "is set by muscle itself (or would change how answers are read)",
                );
            }
        }
        if self.extra_body.len() > 32 {
            errors.add(at("extra_body"), "at most 32 fields");
        }
    }
}
