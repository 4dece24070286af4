//! Signed notifications when a job ends: the server POSTs the job's document to a URL the spec
//! names, on a host the operator allowed, signed with a secret from the server's environment,
//! and retries with backoff until a 2xx answer or the last attempt.

mod deliver;
mod policy;
mod sign;

pub use deliver::{BACKOFF_CAP, JobDocuments, MAX_ATTEMPTS, MAX_IN_FLIGHT, deliver_callbacks};
pub use policy::{AllowedHost, CallbackPolicy, SECRET_PREFIX};
pub use sign::{SIGNATURE_HEADER, sign, verify};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::NewCallback;
use crate::validation::FieldError;

/// Where to report the job's end: `url` receives a POST of the job (as GET returns it), signed
/// `X-Muscle-Signature: sha256=<hex HMAC-SHA256 of the body>` with the secret in `secret_env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackSpec {
    /// An http or https URL whose host and port the server's MUSCLE_CALLBACK_HOSTS allows.
    pub url: String,
    /// The server environment variable holding the signing secret; its name must begin with
    /// MUSCLE_CALLBACK_SECRET (so that no other server secret can be named).
    pub secret_env: String,
}

impl CallbackSpec {
    /// Every problem with the callback on this server, `field` naming it.
    pub fn check(&self, policy: &CallbackPolicy, field: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Err(message) = policy.check_url(&self.url) {
            errors.push(FieldError::field(format!("{field}.url"), message));
        }
        if let Err(message) = policy.check_secret_env(&self.secret_env) {
            errors.push(FieldError::field(format!("{field}.secret_env"), message));
        }
        errors
    }

    pub fn to_new(&self) -> NewCallback {
        NewCallback {
            url: self.url.clone(),
            secret_env: self.secret_env.clone(),
        }
    }
}
