//! Serving the frontend: `index.html` only to a logged-in user (with
//! ComfyUI's no-store headers), every other static file to anyone, since
//! browsers fetch some of them (the web-app manifest, module scripts)
//! without cookies and none holds user data.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::app::AppState;
use crate::http::comfy::packs;
use crate::http::error::ApiError;
use crate::http::session::{CurrentUser, PageUser};
use axum::extract::FromRequestParts;

pub async fn index(
    PageUser(_user): PageUser,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let html = tokio::fs::read(state.frontend.dir.join("index.html"))
        .await
        .map_err(ApiError::internal)?;
    let mut r = (StatusCode::OK, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    Ok(r)
}

/// Everything else under the web root. Files under `assets/` carry a content
/// hash in their name and may be cached for good; the rest (the legacy
/// `scripts/` and `extensions/` shims) must be revalidated.
///
/// A custom node pack's file (`/extensions/<pack>/…`) that the web root
/// lacks comes from a GPU backend that has the pack, for a logged-in user.
pub async fn file(State(state): State<AppState>, request: Request) -> Response {
    let immutable = request.uri().path().starts_with("/assets/");
    let uri = request.uri().clone();
    // Kept only for a pack's file, which needs the session: the other
    // static files are served without looking it up.
    let pack_request =
        crate::backend_assets::is_pack_file(uri.path()).then(|| request.headers().clone());
    let request = request.map(|_| Body::empty());
    let served = ServeDir::new(&state.frontend.dir)
        .append_index_html_on_directories(false)
        .oneshot(request)
        .await;
    let mut r = match served {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => {
            let Some(headers) = pack_request else {
                return ApiError::not_found().into_response();
            };
            let (mut parts, ()) = Request::new(()).into_parts();
            parts.headers = headers;
            if let Err(refused) = CurrentUser::from_request_parts(&mut parts, &state).await {
                return refused.into_response();
            }
            return match packs::pack_file(&state, &uri).await {
                Some(r) => r,
                None => ApiError::not_found().into_response(),
            };
        }
        Ok(r) => r.map(Body::new),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}
