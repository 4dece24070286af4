//! Evaluation sides served by an OpenAI-compatible inference server (vLLM, SGLang, llama.cpp's
//! server). The worker tokenises every request itself and sends token ids, so both sides of a
//! comparison score the same tokens; the scores come back as log-probabilities and text, which
//! the evaluation turns into results with the same code as for local models.

mod checks;
mod client;
mod policy;
mod retry;
mod served;
pub mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

pub use checks::{check_served, listed_model, provenance};
pub use client::{Answer, EndpointClient, EndpointError};
pub use policy::EndpointPolicy;
pub use retry::Backoff;
pub use served::{GenerationRequest, Scored, ServedModel};

use crate::engine::tokenize::TokenizerInfo;
use crate::models::{FolderKind, Resolver};
use crate::spec::EndpointSpec;
use crate::validation::FieldError;

/// Seconds to open a connection to a server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a process needs to reach servers: the policy, one HTTP client, the in-flight permits
/// of each server and model, and the tokenizers already read.
pub struct Endpoints {
    policy: EndpointPolicy,
    http: reqwest::Client,
    permits: Mutex<HashMap<(String, String, u32), Arc<Semaphore>>>,
    tokenizers: Mutex<HashMap<PathBuf, Arc<Tokenizer>>>,
    backoff: Backoff,
}

/// A served model's tokenizer and the context length its folder gives.
pub struct Tokenizer {
    pub info: TokenizerInfo,
    pub context: Option<usize>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Default for Endpoints {
    /// No server allowed.
    fn default() -> Self {
        Self::new(EndpointPolicy::default())
    }
}

impl Endpoints {
    pub fn new(policy: EndpointPolicy) -> Self {
        // No redirects: a server moved elsewhere must be allowed by its new address.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            policy,
            http,
            permits: Mutex::default(),
            tokenizers: Mutex::default(),
            backoff: Backoff::default(),
        }
    }

    /// As `new`, with other waits between tries (tests of the retries).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn policy(&self) -> &EndpointPolicy {
        &self.policy
    }

    /// A client for the side `spec` when the policy admits it; `field` is `old` or `new`.
    pub fn client(
        &self,
        spec: &EndpointSpec,
        field: &str,
    ) -> Result<EndpointClient, Vec<FieldError>> {
        let (url, key) = self.policy.admit(spec, field)?;
        let permits = self
            .permits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((spec.url.clone(), spec.model.clone(), spec.max_in_flight))
            .or_insert_with(|| Arc::new(Semaphore::new(spec.max_in_flight as usize)))
            .clone();
        Ok(EndpointClient::new(
            self.http.clone(),
            url,
            key,
            permits,
            Duration::from_secs(u64::from(spec.timeout_seconds)),
            spec.max_retries,
        )
        .with_backoff(self.backoff))
    }

    /// The side's tokenizer, read once per folder.
    pub fn tokenizer(
        &self,
        resolver: &Resolver,
        spec: &EndpointSpec,
    ) -> Result<Arc<Tokenizer>, String> {
        let folder = resolver.resolve(&spec.tokenizer, FolderKind::Tokenizer)?;
        if let Some(found) = self
            .tokenizers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&folder)
        {
            return Ok(found.clone());
        }
        let (info, context) = TokenizerInfo::load_standalone(&folder).map_err(|e| e.to_string())?;
        let tokenizer = Arc::new(Tokenizer { info, context });
        self.tokenizers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(folder, tokenizer.clone());
        Ok(tokenizer)
    }
}
