//! Refuses cross-site requests: state-changing requests and WebSocket
//! upgrades must come from a page of this very server. Browsers attach the
//! session cookie to cross-site WebSocket upgrades and form posts, so
//! without this check another site could act as a logged-in participant.

use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

pub async fn same_origin(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let is_upgrade = headers.contains_key(header::UPGRADE);
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && !is_upgrade;
    if !safe {
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v == "cross-site");
        let foreign_origin = match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
            (Some(origin), Some(host)) => {
                let origin = origin.to_str().unwrap_or("");
                let origin_host = origin
                    .split_once("://")
                    .map(|(_, rest)| rest)
                    .unwrap_or(origin);
                // "null" (sandboxed or file:// pages) is foreign too.
                Some(origin_host.trim_end_matches('/')) != host.to_str().ok()
            }
            _ => false,
        };
        if cross_site || foreign_origin {
            return ApiError::CrossSite.into_response();
        }
    }
    next.run(request).await
}
