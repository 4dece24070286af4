use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::{self, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{CallbackPolicy, SIGNATURE_HEADER, sign};
use crate::store::{CallbackAttempt, DueCallback, Job, Store};
use crate::time::now_ms;

/// Attempts before a callback is given up (about 17 minutes of retries with the backoff below).
pub const MAX_ATTEMPTS: i64 = 10;
/// Longest pause between two attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(600);
/// How long one attempt may take; the claim on the callback lasts a little longer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CLAIM_MS: i64 = 30_000;
const POLL: Duration = Duration::from_secs(1);
/// Attempts in flight at once in one process.
pub const MAX_IN_FLIGHT: usize = 16;
/// Due callbacks read per poll: more than the room, since those already in flight are skipped.
const DUE_BATCH: i64 = 2 * MAX_IN_FLIGHT as i64;
/// How long a stopping server waits for the attempts in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Renders the document a callback carries: the job as GET /v1/{kind}s/{id} answers it.
#[async_trait]
pub trait JobDocuments: Send + Sync + 'static {
    async fn document(&self, job: &Job) -> anyhow::Result<serde_json::Value>;
}

/// The pause after failed attempt `attempt` (1-based): 1 s, 2 s, 4 s ... capped.
fn backoff(attempt: i64) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    Duration::from_secs(1u64 << exponent).min(BACKOFF_CAP)
}

/// Sends the callbacks of finished jobs until `shutdown`. Several API processes may run this on
/// one database: each callback attempt is claimed first, so one process sends it. Attempts run
/// side by side (at most [`MAX_IN_FLIGHT`], one per job), so a receiver that hangs holds up only
/// its own callbacks.
pub async fn deliver_callbacks(
    store: Arc<Store>,
    policy: CallbackPolicy,
    documents: Arc<dyn JobDocuments>,
    shutdown: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        // A redirect could lead off the allowed hosts.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("muscle/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client; callbacks are not sent");
            return;
        }
    };
    let sender = Arc::new(Sender {
        client,
        store,
        policy,
        documents,
    });
    let mut in_flight: JoinSet<()> = JoinSet::new();
    // The job of each attempt in flight, by task.
    let mut jobs: HashMap<task::Id, String> = HashMap::new();
    while !shutdown.is_cancelled() {
        let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        if room > 0 {
            match sender.store.due_callbacks(now_ms(), DUE_BATCH).await {
                Ok(due) => {
                    for callback in due.into_iter().take(room) {
                        if jobs.values().any(|job| *job == callback.job_id) {
                            continue;
                        }
                        let job = callback.job_id.clone();
                        let sender = sender.clone();
                        let handle = in_flight.spawn(async move { sender.attempt(callback).await });
                        jobs.insert(handle.id(), job);
                    }
                }
                Err(error) => tracing::warn!(%error, "could not read due callbacks"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.cancelled() => {}
            Some(done) = in_flight.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(error) => {
                        tracing::error!(%error, "a callback attempt failed");
                        error.id()
                    }
                };
                jobs.remove(&id);
            }
        }
    }
    // Attempts under way get a moment to finish and record their outcome; one cut short is
    // sent again once its claim expires.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
}

/// What an attempt needs, shared by the attempts in flight.
struct Sender {
    client: reqwest::Client,
    store: Arc<Store>,
    policy: CallbackPolicy,
    documents: Arc<dyn JobDocuments>,
}

impl Sender {
    async fn attempt(&self, callback: DueCallback) {
        attempt(
            &self.client,
            self.store.as_ref(),
            &self.policy,
            self.documents.as_ref(),
            callback,
        )
        .await;
    }
}

async fn attempt(
    client: &reqwest::Client,
    store: &Store,
    policy: &CallbackPolicy,
    documents: &dyn JobDocuments,
    callback: DueCallback,
) {
    match store
        .claim_callback(&callback.job_id, callback.attempts, now_ms() + CLAIM_MS)
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(%error, job.id = %callback.job_id, "could not claim a callback");
            return;
        }
    }
    let number = callback.attempts + 1;
    let outcome = match send(client, store, policy, documents, &callback, number).await {
        Ok(status) => {
            tracing::info!(job.id = %callback.job_id, status, attempt = number, "callback delivered");
            CallbackAttempt::Delivered { status }
        }
        Err(Failure::Final(error)) => {
            tracing::warn!(job.id = %callback.job_id, %error, "callback cannot be sent; given up");
            CallbackAttempt::GaveUp { error }
        }
        Err(Failure::Retry(error)) if number >= MAX_ATTEMPTS => {
            tracing::warn!(job.id = %callback.job_id, %error, attempts = number, "callback failed on its last attempt; given up");
            CallbackAttempt::GaveUp { error }
        }
        Err(Failure::Retry(error)) => {
            let pause = backoff(number);
            tracing::warn!(job.id = %callback.job_id, %error, attempt = number, retry_in = ?pause, "callback failed; will retry");
            CallbackAttempt::Retry {
                error,
                next_at: now_ms() + i64::try_from(pause.as_millis()).unwrap_or(i64::MAX / 2),
            }
        }
    };
    if let Err(error) = store.record_callback(&callback.job_id, &outcome).await {
        tracing::warn!(%error, job.id = %callback.job_id, "could not record a callback attempt; it will be tried again");
    }
}

enum Failure {
    Retry(String),
    Final(String),
}

async fn send(
    client: &reqwest::Client,
    store: &Store,
    policy: &CallbackPolicy,
    documents: &dyn JobDocuments,
    callback: &DueCallback,
    number: i64,
) -> Result<u16, Failure> {
    // Checked again: the allowed hosts or the secret may have changed since submission.
    let url = policy.check_url(&callback.url).map_err(Failure::Final)?;
    let secret = policy
        .check_secret_env(&callback.secret_env)
        .map_err(Failure::Final)?;
    let job = store
        .get_job(callback.kind, &callback.job_id)
        .await
        .map_err(|e| Failure::Retry(format!("reading the job: {e}")))?
        .ok_or_else(|| Failure::Final("the job no longer exists".into()))?;
    let document = documents
        .document(&job)
        .await
        .map_err(|e| Failure::Retry(format!("rendering the job: {e:#}")))?;
    let body = serde_json::to_vec(&document).map_err(|e| Failure::Final(e.to_string()))?;
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sign(&secret, &body))
        .header(
            "x-muscle-event",
            format!("{}.{}", job.kind.as_str(), job.status.as_str()),
        )
        .header("x-muscle-delivery", format!("{}-{number}", job.id))
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::Retry(error_chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(Failure::Retry(format!("the receiver answered {status}")))
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(MAX_ATTEMPTS), Duration::from_secs(512));
        assert_eq!(backoff(40), BACKOFF_CAP);
    }
}
