//! `/templates/<file>`: the workshop's templates, for the frontend's
//! Templates browser.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;
use crate::templates::TemplateFile;

pub async fn file(
    CurrentUser(_): CurrentUser,
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let found = state
        .templates
        .file(&file)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)?;
    let mut response = match found {
        TemplateFile::Json(v) => Json(v).into_response(),
        TemplateFile::File { path, content_type } => {
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                ApiError::internal(format!("template file {}: {e}", path.display()))
            })?;
            ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        TemplateFile::Svg(svg) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "image/svg+xml")],
            svg,
        )
            .into_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
