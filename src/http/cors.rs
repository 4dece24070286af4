//! Which browser origins may call the API (MUSCLE_CORS_ORIGINS), checked when the server starts.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::REQUEST_ID;

/// The origins allowed to call from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No cross-origin calls (no CORS headers).
    #[default]
    None,
    /// `*`: any origin. Browsers send no credentials with such calls; the bearer token, an
    /// ordinary header, is allowed.
    Any,
    /// These origins exactly, as browsers write them (`https://dash.example.com`).
    List(Vec<HeaderValue>),
}

const VARIABLE: &str = "MUSCLE_CORS_ORIGINS";

impl CorsOrigins {
    /// The comma-separated values of MUSCLE_CORS_ORIGINS (empty items skipped); a clear error
    /// naming the variable for `*` among other origins or for anything that is not an origin.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let values: Vec<&str> = values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .collect();
        if values.contains(&"*") {
            return if values.len() == 1 {
                Ok(Self::Any)
            } else {
                Err(format!(
                    "{VARIABLE}: `*` (any origin) cannot be listed with other origins; give `*` \
                     alone or only origins"
                ))
            };
        }
        if values.is_empty() {
            return Ok(Self::None);
        }
        values
            .into_iter()
            .map(origin)
            .collect::<Result<_, _>>()
            .map(Self::List)
    }

    pub(super) fn layer(&self) -> Option<CorsLayer> {
        let allow = match self {
            Self::None => return None,
            Self::Any => AllowOrigin::any(),
            Self::List(origins) => AllowOrigin::list(origins.iter().cloned()),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("idempotency-key"),
                ])
                .expose_headers([header::LOCATION, REQUEST_ID])
                .max_age(Duration::from_secs(600)),
        )
    }
}

/// An origin as a browser sends it in `Origin` (scheme, host, port if not the default; no path,
/// lower case), which is what the header is compared with.
fn origin(value: &str) -> Result<HeaderValue, String> {
    let refuse = |why: String| format!("{VARIABLE}: {value:?} is not an origin: {why}");
    let url = reqwest::Url::parse(value).map_err(|e| refuse(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(refuse("give scheme://host[:port] (http or https)".into()));
    }
    let canonical = url.origin().ascii_serialization();
    if canonical != value {
        return Err(refuse(format!(
            "a browser sends it as {canonical:?} (no path, no trailing slash, lower case)"
        )));
    }
    HeaderValue::from_str(&canonical).map_err(|e| refuse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<CorsOrigins, String> {
        CorsOrigins::parse(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_star_alone_means_any_origin() {
        assert_eq!(parse(&["*"]), Ok(CorsOrigins::Any));
        assert_eq!(parse(&[" * ", ""]), Ok(CorsOrigins::Any));
        assert!(CorsOrigins::Any.layer().is_some());
    }

    #[test]
    fn a_star_among_origins_is_refused_naming_the_variable() {
        let error = parse(&["https://a.example", "*"]).unwrap_err();
        assert!(error.starts_with("MUSCLE_CORS_ORIGINS: `*`"), "{error}");
    }

    #[test]
    fn origins_are_listed_as_browsers_send_them() {
        assert_eq!(parse(&[]), Ok(CorsOrigins::None));
        assert_eq!(parse(&["", " "]), Ok(CorsOrigins::None));
        assert!(CorsOrigins::None.layer().is_none());
        let listed = parse(&["https://dash.example.com", " http://localhost:3000"]).unwrap();
        assert_eq!(
            listed,
            CorsOrigins::List(vec![
                HeaderValue::from_static("https://dash.example.com"),
                HeaderValue::from_static("http://localhost:3000"),
            ])
        );
        assert!(listed.layer().is_some());
    }

    #[test]
    fn what_is_not_an_origin_is_refused_with_the_form_a_browser_sends() {
        for (value, says) in [
            ("dash.example.com", "relative URL without a base"),
            ("https://dash.example.com/", "\"https://dash.example.com\""),
            ("https://Dash.example.com", "\"https://dash.example.com\""),
            (
                "https://dash.example.com:443",
                "\"https://dash.example.com\"",
            ),
            ("https://dash.example.com/app", "no path"),
            ("ftp://dash.example.com", "http or https"),
            ("null", "relative URL"),
        ] {
            let error = parse(&[value]).unwrap_err();
            assert!(
                error.starts_with(&format!("MUSCLE_CORS_ORIGINS: {value:?} is not an origin")),
                "{error}"
            );
            assert!(error.contains(says), "{value}: {error}");
        }
    }
}
