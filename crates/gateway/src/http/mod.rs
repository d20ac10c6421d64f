//! HTTP: the route table and everything that knows axum. Handlers are thin:
//! they parse the request into domain types, call one service, and shape
//! the answer the way ComfyUI does.

mod admin;
mod client_addr;
mod comfy;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod guard;
mod login;
mod serve;
mod session;
mod static_files;

pub use serve::serve;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::app::AppState;
use crate::config::Limits;

/// `/ready`: whether this gateway can serve a room: its database answers
/// and it has a node catalogue (fetched from a backend, or the last one
/// saved). 200 or 503, with each check's word, for a load balancer or an
/// orchestrator; `/health` only says the process answers.
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let database = match state.store.ping().await {
        Ok(()) => Ok("ok".to_string()),
        Err(e) => Err(format!("unreachable: {e}")),
    };
    let catalogue = match state.catalogue.snapshot().await {
        Ok(snapshot) => Ok(format!("{} nodes", snapshot.nodes.len())),
        Err(e) => Err(e.to_string()),
    };
    let ready = database.is_ok() && catalogue.is_ok();
    let word = |check: Result<String, String>| check.unwrap_or_else(|e| e);
    let body = serde_json::json!({
        "ready": ready,
        "database": word(database),
        "catalogue": word(catalogue),
    });
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    axum::response::IntoResponse::into_response((status, axum::Json(body)))
}

pub fn router(state: AppState) -> Router {
    let limits = &state.config.limits;
    let comfy = comfy::routes(limits);
    Router::new()
        .route("/", get(static_files::index))
        .route("/index.html", get(static_files::index))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", get(login::logout_page).post(login::logout))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/admin/api/backends", get(admin::backends))
        .route(
            "/admin/api/backends/{name}/{action}",
            axum::routing::post(admin::set_backend),
        )
        .route(
            "/admin/api/groups/{group}/use",
            axum::routing::post(admin::use_group),
        )
        // ComfyUI registers each of its routes twice: plain and under /api.
        .merge(comfy.clone())
        .nest("/api", comfy)
        .merge(comfy::unprefixed_routes())
        .fallback(static_files::file)
        .layer(axum::middleware::from_fn(guard::same_origin))
        // Routes that take more say so themselves (comfy::routes).
        .layer(DefaultBodyLimit::max(Limits::bytes(limits.max_body_bytes)))
        // A request, body included, is read and answered in bounded time
        // (408 beyond): a body sent a byte at a time holds nothing forever.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(limits.request_timeout_seconds),
        ))
        // A request refused before its body was read leaves that body on
        // the connection: say the connection ends, so no client sends its
        // next request into it.
        .layer(axum::middleware::map_response(close_after_unread_body))
        // Every answer: never framed by another site (clickjacking), no
        // address of ours leaked to others. (Not a global nosniff: the
        // frontend's page links a `user.css` that is a plain-text 404
        // everywhere, which nosniff turns into console errors; files get
        // nosniff where ComfyUI sends it.)
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        // A `request` span around each request: method, route (the
        // pattern, so no user's file name or id lands in the log), status
        // and latency. The answer is logged at debug level, a server error
        // at warn.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("(files)", MatchedPath::as_str);
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        route,
                        status = tracing::field::Empty,
                        latency_ms = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|response: &Response, latency: Duration, span: &Span| {
                    span.record("status", response.status().as_u16());
                    span.record("latency_ms", latency.as_millis() as u64);
                    tracing::debug!("answered");
                })
                .on_body_chunk(())
                .on_eos(())
                .on_failure(
                    |failure: ServerErrorsFailureClass, latency: Duration, span: &Span| {
                        span.record("latency_ms", latency.as_millis() as u64);
                        tracing::warn!(%failure, "request failed");
                    },
                ),
        )
        .with_state(state)
}

/// `Connection: close` on answers given before the request's body was read
/// (too large, too slow).
async fn close_after_unread_body(mut response: Response) -> Response {
    use axum::http::{HeaderValue, StatusCode, header};
    if matches!(
        response.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
