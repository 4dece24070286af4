//! One error type for every route, answered as RFC 9457 `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;
use crate::validation::FieldError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Every field or line at fault, when the problem is about the request's content.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    /// Seconds a client should wait before trying again (503, 507).
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "about:blank", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "urn:muscle:problem:conflict", detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "about:blank",
            "this route needs `Authorization: Bearer <token>` with the server's MUSCLE_API_TOKEN",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "about:blank",
            "this route does not answer this method; see /openapi.json",
        )
    }

    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "about:blank", detail)
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "about:blank", detail)
    }

    /// 408: the request (its body) did not arrive in time.
    pub fn request_timeout(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "urn:muscle:problem:slow-body",
            detail,
        )
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "about:blank", detail)
    }

    /// 422 listing the fields or lines at fault: the first [`MOST_ERRORS_LISTED`], each
    /// message cut to [`LONGEST_MESSAGE`] characters, so that no answer grows with the input.
    pub fn invalid(detail: impl Into<String>, mut errors: Vec<FieldError>) -> Self {
        let mut detail = detail.into();
        if errors.len() > MOST_ERRORS_LISTED {
            detail = format!(
                "{detail} (the first {MOST_ERRORS_LISTED} of {} errors listed)",
                errors.len()
            );
            errors.truncate(MOST_ERRORS_LISTED);
        }
        for error in &mut errors {
            error.message = shortened(&error.message);
        }
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "urn:muscle:problem:validation",
                shortened(&detail),
            )
        }
    }

    /// A submission the kind's checks refused: 422 with every field at fault.
    pub fn rejected(detail: &str, rejected: crate::kinds::submit::Rejected) -> Self {
        match rejected {
            crate::kinds::submit::Rejected::Invalid(errors) => Self::invalid(detail, errors),
            crate::kinds::submit::Rejected::Store(error) => error.into(),
        }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let error = FieldError::field(field, message);
        Self::invalid(format!("{}: {}", error.field, error.message), vec![error])
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "about:blank", detail)
    }

    /// 503 with Retry-After: the request may succeed as it is, later.
    pub fn busy(detail: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:muscle:problem:busy",
                detail,
            )
        }
    }

    /// 507: the database's disk is full; nothing of the request was stored.
    pub fn storage_full() -> Self {
        Self {
            retry_after: Some(60),
            ..Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "urn:muscle:problem:storage",
                "the database has no space left; nothing of this request was stored",
            )
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        // The cause goes to the log only; the client learns nothing about internals.
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "about:blank",
            "the server failed to answer this request; the cause is in its log",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// Errors a 422 lists at most.
pub const MOST_ERRORS_LISTED: usize = 100;
/// Characters of one message or detail at most.
pub const LONGEST_MESSAGE: usize = 1000;

fn shortened(text: &str) -> String {
    match text.char_indices().nth(LONGEST_MESSAGE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StoreError::Conflict(detail) => Self::conflict(detail),
            taken @ StoreError::OutputTaken { .. } => {
                Self::invalid_field("output", taken.to_string())
            }
            StoreError::IdempotencyMismatch => Self::invalid_field(
                "Idempotency-Key",
                "this key was already used with a different request body",
            ),
            StoreError::Database(db) => match database_trouble(&db) {
                Some(Trouble::Busy) => {
                    tracing::warn!(error = %db, "database busy; answering 503");
                    Self::busy(
                        "the database is busy or unreachable; nothing of this request was \
                         stored, try again",
                        2,
                    )
                }
                Some(Trouble::Full) => {
                    tracing::error!(error = %db, "database storage full");
                    Self::storage_full()
                }
                None => Self::internal(db),
            },
            other => Self::internal(other),
        }
    }
}

enum Trouble {
    Busy,
    Full,
}

/// Errors that say the database cannot take the request now, rather than that it is wrong.
fn database_trouble(error: &sqlx::Error) -> Option<Trouble> {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Some(Trouble::Busy),
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // Postgres answers a five-character SQLSTATE; SQLite its (extended) result code,
            // at most four digits.
            if code.len() == 5 {
                match code.as_ref() {
                    "53100" => Some(Trouble::Full),
                    c if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                        Some(Trouble::Busy)
                    }
                    _ => None,
                }
            } else {
                // The primary code is the low byte: BUSY 5, LOCKED 6, IOERR 10, FULL 13.
                match code.parse::<i64>().map(|c| c & 0xff) {
                    Ok(13) => Some(Trouble::Full),
                    Ok(5 | 6 | 10) => Some(Trouble::Busy),
                    _ => None,
                }
            }
        }
        _ => None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: self.kind.to_string(),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        // The body was not read to its end: the server drops the connection, and a client
        // that pooled it would send its next request into a closed socket.
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_or_busy_database_is_503_with_retry_after() {
        let busy = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = busy.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let other = ApiError::from(StoreError::Database(sqlx::Error::RowNotFound));
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
