//! ComfyUI's own routes, answered for the logged-in user only, with the
//! exact paths, status codes and JSON shapes of ComfyUI v0.33 (see
//! docs/comfyui-protocol.md). Identity always comes from the session,
//! never from the `Comfy-User` header the frontend also sends.

pub(super) mod files;
mod info;
pub(super) mod packs;
mod queue;
mod settings;
mod templates;
mod userdata;
mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::config::Limits;

/// The routes ComfyUI registers both at their plain path and under `/api`.
/// Bodies are bounded per route: small by default (the router's limit),
/// larger where `limits` allows.
pub fn routes(limits: &Limits) -> Router<AppState> {
    let settings = DefaultBodyLimit::max(Limits::bytes(limits.max_settings_bytes));
    let userdata = DefaultBodyLimit::max(Limits::bytes(limits.max_userdata_bytes));
    let prompt = DefaultBodyLimit::max(Limits::bytes(limits.max_prompt_bytes));
    // Multipart framing on top of the largest accepted file.
    let upload =
        DefaultBodyLimit::max(Limits::bytes(limits.max_upload_bytes).saturating_add(64 * 1024));
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/users", get(info::users).post(info::create_user))
        .route(
            "/settings",
            get(settings::all).post(settings::merge).layer(settings),
        )
        .route(
            "/settings/{id}",
            get(settings::one).post(settings::set_one).layer(settings),
        )
        .route("/userdata", get(userdata::list))
        .route("/v2/userdata", get(userdata::list_v2))
        .route(
            "/userdata/{file}",
            get(userdata::read)
                .post(userdata::write)
                .delete(userdata::delete)
                .layer(userdata),
        )
        .route("/userdata/{file}/move/{dest}", post(userdata::rename))
        .route("/upload/image", post(files::upload).layer(upload))
        .route("/upload/mask", post(files::upload).layer(upload))
        .route("/view", get(files::view))
        .route("/object_info", get(info::object_info))
        .route("/object_info/{node_class}", get(info::object_info_one))
        .route("/extensions", get(packs::extensions))
        .route("/features", get(info::features))
        .route("/system_stats", get(info::system_stats))
        .route(
            "/prompt",
            get(queue::queue_status).post(queue::submit).layer(prompt),
        )
        .route("/queue", get(queue::queue).post(queue::queue_update))
        .route("/history", get(queue::history).post(queue::history_update))
        .route("/history/{prompt_id}", get(queue::history_one))
        .route("/interrupt", post(queue::interrupt))
        .route("/free", post(queue::free))
        .route("/embeddings", get(packs::list))
        .route("/models", get(packs::list))
        .route("/models/{folder}", get(packs::folder))
        .route("/experiment/models", get(packs::list))
        .route("/experiment/models/{folder}", get(packs::folder))
        .route("/view_metadata/{folder}", get(packs::file))
        .route("/i18n", get(packs::i18n))
        .route("/global_subgraphs", get(info::empty_object))
        .route("/global_subgraphs/{id}", get(info::null))
        .route("/node_replacements", get(info::empty_object))
        .route("/workflow_templates", get(packs::workflow_templates))
}

/// Routes ComfyUI serves only at their plain path (the jobs API is
/// declared with its `/api` prefix, so it has no plain form).
pub fn unprefixed_routes() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", get(queue::jobs_list))
        .route("/api/jobs/cancel", post(queue::jobs_cancel))
        .route("/api/jobs/{job_id}", get(queue::job_detail))
        .route("/api/jobs/{job_id}/cancel", post(queue::job_cancel))
        .route("/internal/files/{kind}", get(info::internal_files))
        .route("/templates/{*file}", get(templates::file))
        .route("/docs/{*path}", get(templates::docs))
        .route("/api/workflow_templates/{pack}/{*file}", get(packs::file))
}

/// The flags this server announces on `/features` and in the socket's
/// `feature_flags` reply.
pub fn server_features(state: &AppState) -> Value {
    json!({
        "supports_preview_metadata": true,
        "max_upload_size": state.config.limits.max_upload_bytes,
        "node_replacements": false,
        "assets": false,
    })
}

/// A user's file with the headers ComfyUI sends for it: the chosen content
/// type and disposition, `nosniff`, and, when the type depended on
/// `Sec-Fetch-Dest`, `Vary` and `no-store` so no cache replays it elsewhere.
pub(super) async fn serve_file(
    source: &crate::workspace::FileSource,
    serve_as: &crate::workspace::ServeAs,
) -> Result<axum::response::Response, crate::http::error::ApiError> {
    // Found a moment ago: gone since is the workspace's 404.
    let opened = source.open().await?;
    let mut response = with_headers(axum::body::Body::from_stream(opened.bytes), serve_as);
    response.headers_mut().insert(
        axum::http::header::CONTENT_LENGTH,
        axum::http::HeaderValue::from(opened.size),
    );
    Ok(response)
}

/// [`serve_file`]'s answer, for bytes already in hand.
fn serve_bytes(bytes: Vec<u8>, serve_as: &crate::workspace::ServeAs) -> axum::response::Response {
    with_headers(axum::body::Body::from(bytes), serve_as)
}

fn with_headers(
    body: axum::body::Body,
    serve_as: &crate::workspace::ServeAs,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut r = axum::response::Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(serve_as.content_type),
    );
    if let Ok(v) = HeaderValue::from_bytes(serve_as.content_disposition.as_bytes()) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if serve_as.vary_sec_fetch_dest {
        h.insert(header::VARY, HeaderValue::from_static("Sec-Fetch-Dest"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
