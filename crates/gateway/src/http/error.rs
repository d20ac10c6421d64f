//! `ApiError`: every way a request can fail, and the one place that turns it
//! into an HTTP response.
//!
//! ComfyUI's own routes answer errors in several shapes (aiohttp's plain-text
//! "404: Not Found", a bare text reason, `{"error": …}` JSON, …); each
//! variant names the shape so handlers pick the one ComfyUI uses for that
//! route.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;

#[derive(Debug)]
pub enum ApiError {
    /// No live session: API routes and sockets get 401.
    Unauthorized,
    /// No live session on a page a browser navigates to.
    LoginRequired { next: String },
    /// A request from another site (cross-site request forgery or socket
    /// hijacking).
    CrossSite,
    /// aiohttp's `web.Response(status=…)` with no text: "404: Not Found".
    Status(StatusCode),
    /// A plain-text body, as ComfyUI's `web.Response(status, text=…)`.
    Text(StatusCode, String),
    /// A JSON body.
    Json(StatusCode, Value),
    /// Something broke on our side; the error, with its whole chain of
    /// causes, goes to the log only.
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn not_found() -> Self {
        ApiError::Status(StatusCode::NOT_FOUND)
    }
    pub fn bad_request(text: impl Into<String>) -> Self {
        ApiError::Text(StatusCode::BAD_REQUEST, text.into())
    }
    pub fn json_error(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::Json(status, serde_json::json!({ "error": message.into() }))
    }
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized => {
                let mut r = (StatusCode::UNAUTHORIZED, "401: Unauthorized").into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            ApiError::LoginRequired { next } => {
                let target = format!(
                    "/login?next={}",
                    percent_encoding::utf8_percent_encode(&next, QUERY)
                );
                Redirect::to(&target).into_response()
            }
            ApiError::CrossSite => {
                (StatusCode::FORBIDDEN, "403: Forbidden (cross-site request)").into_response()
            }
            ApiError::Status(status) => {
                let reason = status.canonical_reason().unwrap_or("");
                (status, format!("{}: {}", status.as_u16(), reason)).into_response()
            }
            ApiError::Text(status, text) => (status, text).into_response(),
            ApiError::Json(status, body) => (status, axum::Json(body)).into_response(),
            ApiError::Internal(error) => {
                tracing::error!(error = %Chain(error.as_ref()), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error\n\nServer got itself in trouble",
                )
                    .into_response()
            }
        }
    }
}

/// An error and its causes, `outer: inner: root`.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// Characters escaped in a `next=` query value.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        match e {
            A::BadBatch(_) | A::PasswordTooLong => {
                ApiError::json_error(StatusCode::BAD_REQUEST, e.to_string())
            }
            A::Exists(_) => ApiError::json_error(StatusCode::CONFLICT, e.to_string()),
            _ => ApiError::internal(e),
        }
    }
}

impl From<crate::room::RoomError> for ApiError {
    fn from(e: crate::room::RoomError) -> Self {
        use crate::room::RoomError as R;
        match e {
            R::NotFound(m) => ApiError::json_error(StatusCode::NOT_FOUND, m),
            R::Conflict(m) => ApiError::json_error(StatusCode::CONFLICT, m),
            R::Invalid(m) => ApiError::json_error(StatusCode::BAD_REQUEST, m),
            R::Store(e) => ApiError::internal(e),
            R::Files(e) => {
                use crate::workspace::WorkspaceError as W;
                match e {
                    W::NotFound(m) => ApiError::json_error(StatusCode::NOT_FOUND, m),
                    W::BadRequest(m) => ApiError::json_error(StatusCode::BAD_REQUEST, m),
                    W::Forbidden(m) => ApiError::json_error(StatusCode::FORBIDDEN, m),
                    W::QuotaExceeded(m) | W::DiskFull(m) => {
                        ApiError::json_error(StatusCode::INSUFFICIENT_STORAGE, m)
                    }
                    other => ApiError::internal(other),
                }
            }
        }
    }
}

impl From<crate::workspace::preview::PreviewError> for ApiError {
    fn from(e: crate::workspace::preview::PreviewError) -> Self {
        use crate::workspace::preview::PreviewError as P;
        match e {
            P::Decode(_) | P::TooLarge { .. } => {
                ApiError::json_error(StatusCode::BAD_REQUEST, e.to_string())
            }
            P::Encode(_) | P::WebP(_) => ApiError::internal(e),
        }
    }
}

impl From<crate::workspace::WorkspaceError> for ApiError {
    fn from(e: crate::workspace::WorkspaceError) -> Self {
        use crate::workspace::WorkspaceError as W;
        match e {
            W::NotFound(m) => ApiError::Text(StatusCode::NOT_FOUND, m.to_string()),
            W::Conflict => ApiError::Text(StatusCode::CONFLICT, e.to_string()),
            W::Forbidden(m) => ApiError::Text(StatusCode::FORBIDDEN, m.to_string()),
            W::BadRequest(m) => ApiError::Text(StatusCode::BAD_REQUEST, m),
            W::TooLarge(m) => ApiError::Text(StatusCode::PAYLOAD_TOO_LARGE, m),
            W::QuotaExceeded(m) | W::DiskFull(m) => {
                ApiError::Text(StatusCode::INSUFFICIENT_STORAGE, m)
            }
            W::Io(io) => ApiError::internal(io),
        }
    }
}
