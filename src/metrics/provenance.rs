//! Where each side's numbers came from, as the final report names it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Provenance {
    pub old: SideProvenance,
    pub new: SideProvenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SideProvenance {
    /// A model folder run by muscle's engine.
    Model {
        model: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adapter: Option<String>,
    },
    /// A model served by an OpenAI-compatible server.
    Endpoint(EndpointProvenance),
    /// A run recorded elsewhere.
    Predictions { predictions: String },
}

/// A served side, as the server described itself when the report was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointProvenance {
    /// The server's base URL as the spec gives it.
    pub endpoint: String,
    pub model: String,
    /// The server's `server` or `x-powered-by` header.
    pub server: Option<String>,
    /// `system_fingerprint` of a completion (the deployment's build and configuration, where
    /// the server gives one).
    pub system_fingerprint: Option<String>,
    /// The model's entry in `GET {url}/models`.
    pub listed: Option<ListedModel>,
    /// Why the server could not be asked, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// One model a server lists; vLLM adds `root` (the weights), `parent` (a LoRA module's base)
/// and `max_model_len`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListedModel {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<u64>,
}
