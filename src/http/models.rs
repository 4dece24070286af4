use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::models::{Catalog, catalog};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_models))
}

/// The model and adapter folders under MUSCLE_MODEL_DIR, described from their files.
#[utoipa::path(
    get,
    path = "/models",
    tag = "models",
    responses((status = 200, body = Catalog)),
    security(("bearer" = []))
)]
async fn list_models(State(state): State<AppState>) -> ApiResult<Json<Catalog>> {
    let resolver = state.resolver.clone();
    // Reading headers of many files is blocking I/O.
    let catalog = tokio::task::spawn_blocking(move || catalog::list(&resolver))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(catalog))
}
