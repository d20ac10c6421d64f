//! `/templates/<file>`: the workshop's templates and the official gallery,
//! for the frontend's Templates browser; `/docs/<node>/<locale>.md`: node
//! documentation for the node library.

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
        TemplateFile::Index(bytes) => {
            ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        TemplateFile::Official { path, content_type } => {
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                ApiError::internal(format!("template file {}: {e}", path.display()))
            })?;
            let mut r = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
            // As ComfyUI's cache middleware: its pictures for a day; the
            // gallery does not change while the server runs.
            if content_type.starts_with("image/") {
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                );
                return Ok(r);
            }
            r
        }
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `/docs/<path>`: the node documentation folder, for logged-in users.
pub async fn docs(
    CurrentUser(_): CurrentUser,
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Response {
    use tower::ServiceExt;
    let Some(dir) = state.node_docs.as_ref() else {
        return ApiError::not_found().into_response();
    };
    let uri = request.uri();
    let inner = uri
        .path()
        .strip_prefix("/docs")
        .unwrap_or_default()
        .to_string();
    let mut request = axum::extract::Request::new(axum::body::Body::empty());
    match inner.parse() {
        Ok(path) => *request.uri_mut() = path,
        Err(_) => return ApiError::not_found().into_response(),
    }
    match tower_http::services::ServeDir::new(dir)
        .append_index_html_on_directories(false)
        .oneshot(request)
        .await
    {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => ApiError::not_found().into_response(),
        Ok(r) => r.map(axum::body::Body::new),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
