//! The routes whose answers live on the GPU backends (see
//! `backend_assets`): the extension list with custom node packs' scripts
//! and the packs' files, translations, packs' example workflows, and the
//! model lists, each in ComfyUI's shape, merged over the enabled backends.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::backend::Backend;
use crate::backend_assets::{Asset, is_static};
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;

/// Which backends to ask: those that serve the room now (see
/// `Dispatcher::serving`).
fn asked(state: &AppState) -> impl Fn(&Backend) -> bool + Send + Sync + use<> {
    let serving = state.dispatcher.serving();
    move |b: &Backend| serving.contains(&b.name)
}

/// The backend's path for the request (the browser's, still
/// percent-encoded, without the `/api` prefix but for
/// `/api/workflow_templates/…`, which ComfyUI serves there only), with its
/// query for the routes that read one; `None` for a path no backend is
/// asked about.
fn target(uri: &Uri) -> Option<String> {
    let path = uri.path();
    let path = match path.strip_prefix("/api") {
        Some(rest) if !path.starts_with("/api/workflow_templates/") => rest,
        _ => path,
    };
    if !comfyume_protocol::worker::relays(path) {
        return None;
    }
    // A static file's query is not passed on, nor kept apart in the cache.
    Some(match uri.query() {
        Some(q) if !is_static(path) => format!("{path}?{q}"),
        _ => path.to_string(),
    })
}

pub async fn extensions(
    CurrentUser(_): CurrentUser,
    State(state): State<AppState>,
) -> Json<Vec<String>> {
    // The frontend's own, then ComfyUME's participant panel, then the
    // packs' from the backends.
    let mut own = state.frontend.extensions.clone();
    own.push(crate::http::room::EXTENSION_PATH.to_string());
    Json(state.assets.extensions(&own, &asked(&state)).await)
}

pub async fn i18n(CurrentUser(_): CurrentUser, State(state): State<AppState>) -> Json<Value> {
    Json(state.assets.translations(&asked(&state)).await)
}

pub async fn workflow_templates(
    CurrentUser(_): CurrentUser,
    State(state): State<AppState>,
) -> Json<Value> {
    Json(state.assets.templates(&asked(&state)).await)
}

/// `/models`, `/experiment/models` and `/embeddings`: always a list.
pub async fn list(
    CurrentUser(_): CurrentUser,
    State(state): State<AppState>,
    uri: Uri,
) -> Json<Value> {
    let Some(path) = target(&uri) else {
        return Json(json!([]));
    };
    Json(
        state
            .assets
            .model_list(&path, &asked(&state))
            .await
            .unwrap_or_else(|| json!([])),
    )
}

/// `/models/{folder}` and `/experiment/models/{folder}`: 404 for a folder
/// no backend has.
pub async fn folder(
    CurrentUser(_): CurrentUser,
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let path = target(&uri).ok_or_else(ApiError::not_found)?;
    state
        .assets
        .model_list(&path, &asked(&state))
        .await
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// `/view_metadata/{folder}?filename=…` and
/// `/api/workflow_templates/{pack}/{file}`: from a backend that has it, or
/// ComfyUI's bare 404.
pub async fn file(
    CurrentUser(_): CurrentUser,
    State(state): State<AppState>,
    uri: Uri,
) -> Response {
    let Some(path) = target(&uri) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match state.assets.file(&path, &asked(&state)).await {
        Some(asset) => served(asset, None),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `/extensions/{pack}/{file}`: a custom node pack's frontend file, with
/// ComfyUI's cache headers (scripts and styles never stored, images for
/// a day).
pub async fn pack_file(state: &AppState, uri: &Uri) -> Option<Response> {
    let path = target(uri)?;
    let asset = state.assets.file(&path, &asked(state)).await?;
    let lower = uri.path().to_ascii_lowercase();
    let cache = if lower.ends_with(".js") || lower.ends_with(".css") {
        Some("no-store")
    } else if [
        ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
    ]
    .iter()
    .any(|e| lower.ends_with(e))
    {
        Some("public, max-age=86400")
    } else {
        None
    };
    Some(served(asset, cache))
}

/// A backend's file with the type it gave.
fn served(asset: Asset, cache: Option<&'static str>) -> Response {
    let mut r = Response::new(Body::from(asset.body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        asset
            .content_type
            .and_then(|t| HeaderValue::from_str(&t).ok())
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(cache) = cache {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_files_lose_their_query_and_other_routes_keep_it() {
        let target_of = |uri: &str| target(&uri.parse::<Uri>().unwrap());
        assert_eq!(
            target_of("/extensions/pack/a.js?v=2").as_deref(),
            Some("/extensions/pack/a.js")
        );
        assert_eq!(
            target_of("/api/view_metadata/loras?filename=x.safetensors").as_deref(),
            Some("/view_metadata/loras?filename=x.safetensors")
        );
        assert_eq!(
            target_of("/api/workflow_templates/pack/a.json?x=1").as_deref(),
            Some("/api/workflow_templates/pack/a.json")
        );
        assert_eq!(target_of("/api/prompt"), None);
        assert_eq!(target_of("/extensions/pack/%2e%2e/x"), None);
    }
}
