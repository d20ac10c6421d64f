//! The read-only ComfyUI routes that describe the server: node catalogue,
//! features, system stats, and the catalogues a workshop gateway has
//! nothing to put in (subgraphs, node replacements), which answer empty
//! but valid. What the backends serve is in `packs`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::catalogue::{CatalogueError, personalise};
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;
use comfyume_domain::FileKind;

/// Single-user form: the frontend then never shows its user picker, and
/// identity comes from the session cookie.
pub async fn users(CurrentUser(_): CurrentUser) -> Json<Value> {
    Json(json!({"storage": "server", "migrated": true}))
}

pub async fn create_user(CurrentUser(_): CurrentUser) -> ApiError {
    ApiError::json_error(
        StatusCode::BAD_REQUEST,
        "Accounts are created by the workshop's instructor.",
    )
}

pub async fn object_info(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let snapshot = state.catalogue.snapshot().await.map_err(catalogue_error)?;
    let inputs = state.workspaces.user(&user.name).input_images().await?;
    let nodes = snapshot
        .nodes
        .iter()
        .map(|(class, info)| (class.clone(), personalise(info, &inputs)))
        .collect();
    Ok(Json(nodes))
}

pub async fn object_info_one(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(class): Path<String>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let snapshot = state.catalogue.snapshot().await.map_err(catalogue_error)?;
    let mut out = Map::new();
    if let Some(info) = snapshot.nodes.get(&class) {
        let inputs = state.workspaces.user(&user.name).input_images().await?;
        out.insert(class, personalise(info, &inputs));
    }
    Ok(Json(out))
}

fn catalogue_error(e: CatalogueError) -> ApiError {
    ApiError::json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

pub async fn features(CurrentUser(_): CurrentUser, State(state): State<AppState>) -> Json<Value> {
    Json(super::server_features(&state))
}

/// Honest figures: this gateway's version and host, the frontend it serves,
/// and the GPU backends' devices as they reported them.
pub async fn system_stats(
    CurrentUser(_): CurrentUser,
    State(state): State<AppState>,
) -> Json<Value> {
    let devices = match state.catalogue.snapshot().await {
        Ok(s) => s.devices.clone(),
        Err(_) => Vec::new(),
    };
    let (ram_total, ram_free) = memory();
    let frontend_version = state
        .frontend
        .version
        .clone()
        .unwrap_or_else(|| "unknown".into());
    Json(json!({
        "system": {
            "os": std::env::consts::OS,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": concat!("comfyume-", env!("CARGO_PKG_VERSION")),
            "required_frontend_version": crate::frontend::PINNED_VERSION,
            "comfy_package_versions": [{
                "name": "comfyui-frontend-package",
                "installed": frontend_version,
                "required": crate::frontend::PINNED_VERSION,
            }],
            "python_version": "n/a (ComfyUME gateway)",
            "pytorch_version": "n/a (ComfyUME gateway)",
            "embedded_python": false,
            "deploy_environment": "comfyume",
            // True: the gateway serves no Comfy API (partner) nodes. The
            // frontend also skips its release check against api.comfy.org
            // on seeing it, which a closed workshop network cannot reach.
            "argv": ["comfyume", "serve", "--disable-api-nodes"],
        },
        "devices": devices,
    }))
}

/// Total and available memory in bytes, from /proc/meminfo (0 where that
/// does not exist).
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

pub async fn empty_object(CurrentUser(_): CurrentUser) -> Json<Value> {
    Json(json!({}))
}

pub async fn null(CurrentUser(_): CurrentUser) -> Json<Value> {
    Json(Value::Null)
}

/// `/internal/files/{input|output|temp}`: the user's files, newest first.
pub async fn internal_files(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(kind): Path<String>,
) -> Result<Json<Vec<String>>, ApiError> {
    let kind: FileKind = kind
        .parse()
        .map_err(|_| ApiError::json_error(StatusCode::BAD_REQUEST, "Invalid directory type"))?;
    Ok(Json(
        state.workspaces.user(&user.name).list_files(kind).await?,
    ))
}
