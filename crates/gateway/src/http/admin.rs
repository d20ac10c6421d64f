//! The admin API: the backends' states, the instructor's switches
//! (enable, disable, drain, the active group) and numbered accounts.
//! Reached with an instructor's session or the configured `admin_token` as
//! a bearer token; this is what `comfyume backends …` and `comfyume
//! loadtest --users` talk to.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::dispatch::{Admission, BackendStatus};
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;
use comfyume_domain::Role;

/// An instructor, or a caller holding the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(given) = bearer {
            return match &state.config.admin_token {
                Some(token) if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) => {
                    Ok(Admin)
                }
                _ => Err(ApiError::json_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid admin token",
                )),
            };
        }
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        if user.role == Role::Admin {
            Ok(Admin)
        } else {
            Err(ApiError::json_error(
                StatusCode::FORBIDDEN,
                "only instructors may do this",
            ))
        }
    }
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn backends(_: Admin, State(state): State<AppState>) -> Json<Vec<BackendStatus>> {
    Json(state.dispatcher.backends())
}

pub async fn set_backend(
    _: Admin,
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<Vec<BackendStatus>>, ApiError> {
    let admission = match action.as_str() {
        "enable" => Admission::Enabled,
        "disable" => Admission::Disabled,
        "drain" => Admission::Draining,
        _ => {
            return Err(ApiError::json_error(
                StatusCode::NOT_FOUND,
                "actions are enable, disable and drain",
            ));
        }
    };
    if !state.dispatcher.set_admission(&name, admission) {
        return Err(ApiError::json_error(
            StatusCode::NOT_FOUND,
            format!("no backend named '{name}'"),
        ));
    }
    Ok(Json(state.dispatcher.backends()))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccounts {
    prefix: String,
    count: u32,
}

/// `POST /admin/api/users` `{"prefix", "count"}`: numbered participant
/// accounts with generated passwords (what `comfyume loadtest --users`
/// and a room's set-up use); 201 with their credentials, 409 when a name
/// is taken (nothing created).
pub async fn create_accounts(
    _: Admin,
    State(state): State<AppState>,
    Json(new): Json<NewAccounts>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rows = state
        .accounts
        .create_numbered(&new.prefix, new.count)
        .await?;
    tracing::info!(count = rows.len(), prefix = %new.prefix, "accounts created through the admin API");
    let accounts: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({"user": r.user, "password": r.password}))
        .collect();
    Ok((StatusCode::CREATED, Json(json!({"accounts": accounts}))))
}

pub async fn use_group(
    _: Admin,
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let wanted = if group == "all" {
        None
    } else {
        Some(group.clone())
    };
    if !state.dispatcher.use_group(wanted) {
        return Err(ApiError::json_error(
            StatusCode::NOT_FOUND,
            format!("no backend is in group '{group}'"),
        ));
    }
    Ok(Json(
        json!({"active_group": group, "backends": state.dispatcher.backends()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
