//! ComfyUI's own routes, answered for the logged-in user only, with the
//! exact paths, status codes and JSON shapes of ComfyUI v0.33 (see
//! ../shared/docs/comfyui-api.md). Identity always comes from the session,
//! never from the `Comfy-User` header the frontend also sends.

mod files;
mod info;
mod settings;
mod templates;
mod userdata;
mod ws;

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::SessionUser;

/// The routes ComfyUI registers both at their plain path and under `/api`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/users", get(info::users).post(info::create_user))
        .route("/settings", get(settings::all).post(settings::merge))
        .route("/settings/{id}", get(settings::one).post(settings::set_one))
        .route("/userdata", get(userdata::list))
        .route("/v2/userdata", get(userdata::list_v2))
        .route(
            "/userdata/{file}",
            get(userdata::read)
                .post(userdata::write)
                .delete(userdata::delete),
        )
        .route("/userdata/{file}/move/{dest}", post(userdata::rename))
        .route("/upload/image", post(files::upload))
        .route("/upload/mask", post(files::upload))
        .route("/view", get(files::view))
        .route("/object_info", get(info::object_info))
        .route("/object_info/{node_class}", get(info::object_info_one))
        .route("/extensions", get(info::extensions))
        .route("/features", get(info::features))
        .route("/system_stats", get(info::system_stats))
        .route("/prompt", get(queue_status))
        .route("/embeddings", get(info::empty_list))
        .route("/models", get(info::empty_list))
        .route("/models/{folder}", get(info::not_found))
        .route("/experiment/models", get(info::empty_list))
        .route("/experiment/models/{folder}", get(info::not_found))
        .route("/i18n", get(info::empty_object))
        .route("/global_subgraphs", get(info::empty_object))
        .route("/global_subgraphs/{id}", get(info::null))
        .route("/node_replacements", get(info::empty_object))
        .route("/workflow_templates", get(info::empty_object))
}

/// Routes ComfyUI serves only at their plain path.
pub fn unprefixed_routes() -> Router<AppState> {
    Router::new()
        .route("/internal/files/{kind}", get(info::internal_files))
        .route("/templates/{file}", get(templates::file))
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

/// How many of this user's prompts are waiting or running. There is no job
/// queue in the gateway yet, so nothing is ever waiting.
pub fn queue_remaining(_state: &AppState, _user: &SessionUser) -> u64 {
    0
}

async fn queue_status(
    crate::http::session::CurrentUser(user): crate::http::session::CurrentUser,
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<Value> {
    axum::Json(json!({"exec_info": {"queue_remaining": queue_remaining(&state, &user)}}))
}
