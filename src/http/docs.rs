//! Swagger UI at `/docs` and the OpenAPI document it shows at `/openapi.json`, sent with the
//! dashboard's security headers.

use axum::Router;
use axum::middleware;
use axum::response::Response;
use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::AppState;
use super::ui::security_headers;

/// Swagger UI's files come from this origin, and so do its requests (the document, "Try it
/// out"); it injects `<style>` elements and `style` attributes (inline styles, never inline
/// scripts), and its icons are data: URIs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router(spec: OpenApi) -> Router<AppState> {
    // No online validator: its badge would load an image from validator.swagger.io.
    let swagger = SwaggerUi::new("/docs")
        .url("/openapi.json", spec)
        .config(Config::default().validator_url("none"));
    Router::from(swagger).layer(middleware::map_response(
        |mut response: Response| async move {
            security_headers(response.headers_mut(), CONTENT_SECURITY_POLICY);
            response
        },
    ))
}
