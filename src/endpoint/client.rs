//! One side's connection to its server: at most `max_in_flight` requests at once (a permit
//! shared by every shard of this process using the same server and model), a timeout per try,
//! retries with backoff on 429, 5xx, timeouts and lost connections, and cancellation that stops
//! sending at once. Errors name the request's path and the server's answer, never the host or
//! the key.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::retry::{Backoff, retry_after, retryable_status};

/// Characters of a server's answer kept in an error.
const ANSWER_EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cancelled")]
    Cancelled,
    /// The server refused the request or answered something unreadable: trying again would
    /// get the same answer.
    #[error("{0}")]
    Refused(String),
    /// The server kept failing (or could not be reached) through every try.
    #[error("{0}")]
    Unavailable(String),
}

pub struct EndpointClient {
    pub(super) http: reqwest::Client,
    /// The base URL, its path ending in `/` so that `join("completions")` stays under it.
    pub(super) base: Url,
    pub(super) key: Option<String>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) timeout: Duration,
    pub(super) max_retries: u32,
    pub(super) backoff: Backoff,
}

/// A successful answer: its body and headers.
pub struct Answer<T> {
    pub body: T,
    pub headers: HeaderMap,
}

impl<T> Answer<T> {
    /// The server's self-description: its `server` or `x-powered-by` header.
    pub fn server(&self) -> Option<String> {
        ["server", "x-powered-by"]
            .iter()
            .find_map(|name| self.headers.get(*name)?.to_str().ok())
            .map(str::to_string)
    }
}

enum Try<T> {
    Done(Answer<T>),
    Again {
        why: String,
        retry_after: Option<Duration>,
    },
}

impl EndpointClient {
    pub fn new(
        http: reqwest::Client,
        mut base: Url,
        key: Option<String>,
        permits: Arc<Semaphore>,
        timeout: Duration,
        max_retries: u32,
    ) -> Self {
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Self {
            http,
            base,
            key,
            permits,
            timeout,
            max_retries,
            backoff: Backoff::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        stop: &CancellationToken,
    ) -> Result<Answer<T>, EndpointError> {
        self.send::<(), T>(path, None, stop).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        stop: &CancellationToken,
    ) -> Result<Answer<T>, EndpointError> {
        self.send(path, Some(body), stop).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
        stop: &CancellationToken,
    ) -> Result<Answer<T>, EndpointError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| EndpointError::Refused(format!("{path}: {e}")))?;
        let method = if body.is_some() { "POST" } else { "GET" };
        let what = format!("{method} /{path}");
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| EndpointError::Refused(format!("{what}: {e}")))?;
        let mut attempt = 0;
        loop {
            let outcome = tokio::select! {
                biased;
                () = stop.cancelled() => return Err(EndpointError::Cancelled),
                outcome = self.try_once(&url, body.as_deref(), &what) => outcome?,
            };
            let (why, asked) = match outcome {
                Try::Done(answer) => return Ok(answer),
                Try::Again { why, retry_after } => (why, retry_after),
            };
            if attempt >= self.max_retries {
                let tries = attempt + 1;
                return Err(EndpointError::Unavailable(self.redact(format!(
                    "{what} failed {tries} time{}: {why}",
                    if tries == 1 { "" } else { "s" }
                ))));
            }
            let wait = self.backoff.wait(attempt, asked);
            tracing::warn!(request = %what, attempt, wait_ms = wait.as_millis() as u64, error = %self.redact(why), "endpoint request failed; trying again");
            tokio::select! {
                biased;
                () = stop.cancelled() => return Err(EndpointError::Cancelled),
                () = tokio::time::sleep(wait) => {}
            }
            attempt += 1;
        }
    }

    /// One try, holding a permit while the request is in flight (not while waiting to retry).
    async fn try_once<T: DeserializeOwned>(
        &self,
        url: &Url,
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<Try<T>, EndpointError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| EndpointError::Cancelled)?;
        let mut request = match body {
            Some(body) => self
                .http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec()),
            None => self.http.get(url.clone()),
        }
        .timeout(self.timeout);
        if let Some(key) = &self.key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Ok(Try::Again {
                    why: describe(&error, self.timeout),
                    retry_after: None,
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => {
                return Ok(Try::Again {
                    why: describe(&error, self.timeout),
                    retry_after: None,
                });
            }
        };
        if status.is_success() {
            return match serde_json::from_str(&text) {
                Ok(body) => Ok(Try::Done(Answer { body, headers })),
                Err(error) => Err(EndpointError::Refused(self.redact(format!(
                    "{what}: the answer is not the expected JSON ({error}): {}",
                    excerpt(&text)
                )))),
            };
        }
        let why = format!("answered {status}: {}", excerpt(&text));
        if retryable_status(status) {
            return Ok(Try::Again {
                why,
                retry_after: retry_after(&headers),
            });
        }
        Err(EndpointError::Refused(self.redact(format!("{what} {why}"))))
    }

    /// `text` without the key or the server's address.
    fn redact(&self, text: String) -> String {
        let mut text = text;
        if let Some(key) = self.key.as_deref().filter(|k| !k.is_empty()) {
            text = text.replace(key, "[key]");
        }
        let origin = self.base.origin().ascii_serialization();
        text.replace(&origin, "[server]")
    }
}

/// A transport failure in words, without the URL reqwest would print.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f64());
    }
    if error.is_connect() {
        return "the connection was refused or could not be made".into();
    }
    if error.is_redirect() {
        return "the server redirected the request (redirects are not followed)".into();
    }
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut deepest = None;
    while let Some(cause) = source {
        deepest = Some(cause.to_string());
        source = cause.source();
    }
    match deepest {
        Some(cause) => format!("the request failed: {cause}"),
        None => "the request failed".into(),
    }
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(ANSWER_EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
