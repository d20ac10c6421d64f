//! HTTP: the route table and everything that knows axum. Handlers are thin:
//! they parse the request into domain types, call one service, and shape
//! the answer the way ComfyUI does.

mod admin;
mod client_addr;
mod comfy;
mod error;
mod export;
pub use export::MAX_EXPORTS;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod guard;
mod login;
mod probes;
mod room;
mod serve;
mod session;
mod sheet;
mod shoulder;
mod static_files;
mod wall;

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
use crate::metrics::RouteGroup;

pub fn router(state: AppState) -> Router {
    let limits = &state.config.limits;
    let comfy = comfy::routes(limits);
    Router::new()
        .route("/", get(static_files::index))
        .route("/index.html", get(static_files::index))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", get(login::logout_page).post(login::logout))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(probes::ready))
        .route("/metrics", get(probes::metrics))
        .route("/admin/api/backends", get(admin::backends))
        .route(
            "/admin/api/backends/{name}/{action}",
            axum::routing::post(admin::set_backend),
        )
        .route(
            "/admin/api/users",
            axum::routing::post(admin::create_accounts),
        )
        .route(
            "/admin/api/groups/{group}/use",
            axum::routing::post(admin::use_group),
        )
        .route("/wall", get(wall::page))
        .route("/wall/images/{id}", get(wall::image))
        .route("/api/comfyume/wall", get(wall::items).post(wall::share))
        .route(
            "/admin/api/wall/{id}/{action}",
            axum::routing::post(wall::hide),
        )
        .route("/comfyume/export.zip", get(export::download))
        .route("/api/comfyume/export.zip", get(export::download))
        .route("/comfyume/room", get(room::standing))
        .route("/api/comfyume/room", get(room::standing))
        .route(room::EXTENSION_PATH, get(room::extension))
        .route("/admin", get(admin::dashboard_page))
        .route("/admin/api/events", get(admin::events))
        .route("/admin/accounts", axum::routing::post(sheet::create))
        .route("/admin/participants/{name}", get(shoulder::page))
        .route("/admin/api/users/{name}/file", get(shoulder::file))
        .route("/admin/api/jobs", get(admin::jobs))
        .route(
            "/admin/api/jobs/{id}/{action}",
            axum::routing::post(admin::job_action),
        )
        .route(
            "/admin/api/users/{name}/caps",
            axum::routing::post(admin::set_caps),
        )
        .route(
            "/admin/api/users/{name}/{action}",
            axum::routing::post(admin::user_action),
        )
        .route("/admin/api/room", get(admin::room))
        .route("/admin/api/backup", axum::routing::post(admin::back_up_now))
        .route(
            "/admin/api/room/broadcast",
            axum::routing::post(admin::broadcast).delete(admin::clear_broadcast),
        )
        .route(
            "/admin/api/room/workflows",
            axum::routing::post(admin::push_workflow),
        )
        .route(
            "/admin/api/room/{action}",
            axum::routing::post(admin::room_action),
        )
        .route("/admin/api/audit", get(admin::audit))
        .route("/admin/api/templates", get(admin::templates))
        // ComfyUI registers each of its routes twice: plain and under /api.
        .merge(comfy.clone())
        .nest("/api", comfy)
        .merge(comfy::unprefixed_routes())
        .fallback(static_files::file)
        .layer(axum::middleware::from_fn(guard::same_origin))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            time_request,
        ))
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

/// Feeds `/metrics` the time each request took to answer, by route group
/// (the matched pattern's group: never a user's path).
async fn time_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let group = RouteGroup::of_route(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.request_answered(group, started.elapsed());
    response
}

/// Serves the separate `metrics_listen` address: `/metrics` only, without
/// a login (whoever can reach that address may read it), until the main
/// address starts closing.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(probes::exposition))
        .with_state(state.clone());
    let mut closing = state.closing.subscribe();
    let shutdown = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    serve::serve_router(listener, router, state, shutdown).await
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
