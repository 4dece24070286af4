//! One side of an evaluation: a model to run, a model served elsewhere, or a run recorded
//! elsewhere.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::ModelRef;
use super::endpoint::{EndpointRef, EndpointSpec};
use crate::models::Resolver;
use crate::validation::Errors;

/// `{"predictions": ID}`: a recorded run (POST /v1/predictions), by id or unique name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictionsRef {
    pub predictions: String,
}

/// A model (`{"model": ..., "adapter": ...}`), a model served by an OpenAI-compatible server
/// (`{"endpoint": {...}}`) or a recorded run (`{"predictions": ID}`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Side {
    Model(ModelRef),
    Endpoint(EndpointRef),
    Predictions(PredictionsRef),
}

// By hand: an untagged enum would answer "did not match any variant" instead of naming the
// field at fault.
impl<'de> Deserialize<'de> for Side {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let result = if value.get("predictions").is_some() {
            serde_json::from_value(value).map(Side::Predictions)
        } else if value.get("endpoint").is_some() {
            serde_json::from_value(value).map(Side::Endpoint)
        } else {
            serde_json::from_value(value).map(Side::Model)
        };
        result.map_err(serde::de::Error::custom)
    }
}

impl Side {
    pub fn model(&self) -> Option<&ModelRef> {
        match self {
            Self::Model(model) => Some(model),
            Self::Endpoint(_) | Self::Predictions(_) => None,
        }
    }

    pub fn endpoint(&self) -> Option<&EndpointSpec> {
        match self {
            Self::Endpoint(e) => Some(&e.endpoint),
            Self::Model(_) | Self::Predictions(_) => None,
        }
    }

    pub fn predictions(&self) -> Option<&str> {
        match self {
            Self::Predictions(p) => Some(&p.predictions),
            Self::Model(_) | Self::Endpoint(_) => None,
        }
    }

    /// The folder whose tokenizer.json tokenises this side's requests (none for a recorded
    /// run).
    pub fn tokenizer_folder(&self) -> Option<&str> {
        match self {
            Self::Model(model) => Some(&model.model),
            Self::Endpoint(e) => Some(&e.endpoint.tokenizer),
            Self::Predictions(_) => None,
        }
    }

    pub fn check(&self, field: &str, resolver: &Resolver, errors: &mut Errors) {
        match self {
            Self::Model(model) => model.check(field, resolver, errors),
            Self::Endpoint(e) => e.endpoint.check(field, resolver, errors),
            Self::Predictions(p) if p.predictions.is_empty() => {
                errors.add(format!("{field}.predictions"), "must name a recorded run")
            }
            Self::Predictions(_) => {}
        }
    }
}

impl From<ModelRef> for Side {
    fn from(model: ModelRef) -> Self {
        Self::Model(model)
    }
}
