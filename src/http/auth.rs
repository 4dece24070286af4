//! Bearer-token authentication of the /v1 routes (health, metrics and docs stay open).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

pub async fn require_token(
    State(token): State<Option<String>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// A token an `Authorization: Bearer` header can carry: visible ASCII, no spaces. Another
/// would be accepted at start and then match no request; the error names the variable and
/// where the fault is, never the token.
pub fn check_token(token: &str) -> Result<(), String> {
    let fault = if token.trim() != token {
        Some("it begins or ends with whitespace".to_string())
    } else {
        token
            .chars()
            .position(|c| !c.is_ascii_graphic())
            .map(|at| match token.chars().nth(at) {
                Some(c) if !c.is_ascii() => format!("character {} is not ASCII", at + 1),
                _ => format!("character {} is a space or a control character", at + 1),
            })
    };
    match fault {
        None => Ok(()),
        Some(fault) => Err(format!(
            "MUSCLE_API_TOKEN cannot be sent in an HTTP header, so no request could \
             authenticate: {fault} (use visible ASCII characters only, e.g. `openssl rand -hex 32`)"
        )),
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_http_cannot_carry_is_refused_without_echoing_it() {
        assert_eq!(super::check_token("s3cret-token_~+/="), Ok(()));
        for (token, fault) in [
            ("tøken", "character 2 is not ASCII"),
            ("token ", "begins or ends with whitespace"),
            ("\ttoken", "begins or ends with whitespace"),
            ("tok en", "character 4 is a space"),
            (
                "tok\u{7f}en",
                "character 4 is a space or a control character",
            ),
        ] {
            let error = super::check_token(token).unwrap_err();
            assert!(error.starts_with("MUSCLE_API_TOKEN "), "{error}");
            assert!(error.contains(fault), "{token:?}: {error}");
            assert!(!error.contains(token.trim()), "{error}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(super::bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(super::bearer_token("Basic abc"), None);
        assert_eq!(super::bearer_token("Bearer"), None);
    }
}
