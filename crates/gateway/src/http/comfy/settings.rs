//! `/settings` and `/settings/{id}`: the user's ComfyUI settings.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;

pub async fn all(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> Json<Map<String, Value>> {
    Json(state.workspaces.user(&user.name).settings().await)
}

pub async fn one(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Json<Value> {
    Json(state.workspaces.user(&user.name).get_setting(&id).await)
}

pub async fn merge(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let Value::Object(values) = parse_json(&body)? else {
        return Err(ApiError::bad_request("Settings must be a JSON object"));
    };
    state
        .workspaces
        .user(&user.name)
        .merge_settings(values, state.config.limits.max_settings_bytes)
        .await?;
    Ok(StatusCode::OK)
}

pub async fn set_one(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let value = parse_json(&body)?;
    state
        .workspaces
        .user(&user.name)
        .set_setting(&id, value, state.config.limits.max_settings_bytes)
        .await?;
    Ok(StatusCode::OK)
}

/// The body as JSON whatever its Content-Type, as aiohttp's
/// `request.json()` reads it; invalid JSON is a clear 400 here, where
/// ComfyUI would crash with a 500.
fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))
}
