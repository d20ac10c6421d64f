//! The admin API: the room's jobs and the instructor's actions on them
//! (cancel, move to the front, pause, broadcast), the backends' states and
//! switches (enable, disable, drain, the active group), numbered accounts,
//! and the audit log every action writes to. Reached with an instructor's
//! session or the configured `admin_token` as a bearer token; this is what
//! `comfyume jobs|room|backends|audit …` and `comfyume loadtest --users`
//! talk to. The actions themselves live in [`crate::room`].

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::dispatch::{Admission, BackendStatus};
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;
use crate::room::Actor;
use crate::room::dashboard::Look;
use crate::store::{AuditEntry, RoomJob};
use comfyume_domain::{JobId, Role, UserName};

/// An instructor, or a caller holding the admin token: who acts.
pub struct Admin(pub Actor);

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
                    Ok(Admin(Actor::Token))
                }
                _ => Err(ApiError::json_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid admin token",
                )),
            };
        }
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        if user.role == Role::Admin {
            Ok(Admin(Actor::Instructor(user.name)))
        } else {
            Err(ApiError::json_error(
                StatusCode::FORBIDDEN,
                "only instructors may do this",
            ))
        }
    }
}

/// `GET /admin`: the instructor's dashboard (a page and its script; the
/// room arrives over `/admin/api/events`). Anyone else logged in is
/// turned away; nobody logged in goes to the login page first.
pub async fn dashboard_page(
    crate::http::session::PageUser(user): crate::http::session::PageUser,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if user.role != Role::Admin {
        return (
            StatusCode::FORBIDDEN,
            axum::response::Html("<!doctype html><title>ComfyUME</title><p>Only instructors see the room's dashboard. <a href=\"/\">Back to ComfyUI</a></p>"),
        )
            .into_response();
    }
    (
        [(axum::http::header::CACHE_CONTROL, "no-cache")],
        axum::response::Html(DASHBOARD),
    )
        .into_response()
}

const DASHBOARD: &str = include_str!("pages/admin.html");

/// Without any change, an open dashboard looks again this often (who is
/// online, how long jobs have waited).
const DASHBOARD_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Changes come in bursts (a job ends, the next starts): one look after.
const DASHBOARD_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// `GET /admin/api/events`: the dashboard's stream (server-sent events).
/// The first `delta` event holds the whole room; each later one only the
/// rows that changed (see [`Look::delta_from`]). At most
/// [`crate::room::MAX_DASHBOARDS`] are open at once (503 beyond).
pub async fn events(
    Admin(actor): Admin,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    // An instructor's stream lasts as long as their session: it ends once
    // they log out, are disabled or get a new password.
    let session = match actor {
        Actor::Instructor(_) => {
            crate::http::session::session_token(&headers, crate::http::session::cookie_name(&state))
                .map(str::to_string)
        }
        Actor::Token => None,
    };
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Some(place) = state.room.dashboard_place() else {
        return Err(ApiError::json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} dashboards are open already; close one",
                crate::room::MAX_DASHBOARDS
            ),
        ));
    };
    struct Watching {
        state: AppState,
        session: Option<String>,
        shown: Look,
        changes: tokio::sync::watch::Receiver<u64>,
        closing: tokio::sync::watch::Receiver<bool>,
        first: bool,
        _place: tokio::sync::OwnedSemaphorePermit,
    }
    let watching = Watching {
        changes: state.room.changes(),
        closing: state.closing.subscribe(),
        state,
        session,
        shown: Look::default(),
        first: true,
        _place: place,
    };
    let stream = futures_util::stream::unfold(watching, |mut w| async move {
        loop {
            if !std::mem::take(&mut w.first) {
                tokio::select! {
                    changed = w.changes.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    () = tokio::time::sleep(DASHBOARD_REFRESH) => {}
                    _ = w.closing.wait_for(|closing| *closing) => return None,
                }
                tokio::time::sleep(DASHBOARD_SETTLE).await;
            }
            if let Some(token) = &w.session {
                let still = w.state.accounts.session_user(token).await;
                if !matches!(still, Ok(Some(user)) if user.role == Role::Admin) {
                    return None;
                }
            }
            let event = match w.state.room.look().await {
                Ok(look) => {
                    let delta = look.delta_from(&w.shown);
                    w.shown = look;
                    if delta.as_object().is_some_and(serde_json::Map::is_empty) {
                        continue;
                    }
                    Event::default().event("delta").data(delta.to_string())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the dashboard could not look at the room");
                    Event::default()
                        .event("problem")
                        .data(format!("The room could not be read just now: {e}"))
                }
            };
            return Some((Ok::<_, std::convert::Infallible>(event), w));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
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
    Admin(actor): Admin,
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
    state.room.set_admission(&actor, &name, admission).await?;
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
    Admin(actor): Admin,
    State(state): State<AppState>,
    Json(new): Json<NewAccounts>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rows = state
        .accounts
        .create_numbered(&new.prefix, new.count)
        .await?;
    let names: Vec<&str> = rows.iter().map(|r| r.user.as_str()).collect();
    state
        .room
        .accounts_created(&actor, &names, Role::Participant)
        .await?;
    let accounts: Vec<Value> = rows
        .iter()
        .map(|r| json!({"user": r.user, "password": r.password}))
        .collect();
    Ok((StatusCode::CREATED, Json(json!({"accounts": accounts}))))
}

pub async fn use_group(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let wanted = (group != "all").then_some(group.as_str());
    state.room.use_group(&actor, wanted).await?;
    Ok(Json(
        json!({"active_group": group, "backends": state.dispatcher.backends()}),
    ))
}

/// `GET /admin/api/jobs`: whether the room is paused, and every waiting
/// and running job, oldest first.
pub async fn jobs(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let view = state.room.view().await?;
    let now = crate::clock::now_ms();
    let jobs: Vec<Value> = view.jobs.iter().map(|j| room_job(j, now)).collect();
    Ok(Json(json!({"paused": view.paused, "jobs": jobs})))
}

fn room_job(j: &RoomJob, now: i64) -> Value {
    json!({
        "id": j.id.to_string(),
        "owner": j.owner.as_str(),
        "state": j.state.as_str(),
        "created_at": j.created_at,
        "started_at": j.started_at,
        // How long it waited for a slot (so far, if it still waits).
        "waited_ms": (j.started_at.unwrap_or(now) - j.created_at).max(0),
        "backend": j.backend,
        "bumped": j.bumped_at.is_some(),
    })
}

/// `POST /admin/api/jobs/{id}/{cancel|bump}`.
pub async fn job_action(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = JobId::parse(&id).map_err(|_| {
        ApiError::json_error(StatusCode::BAD_REQUEST, format!("'{id}' is not a job id"))
    })?;
    let entry = match action.as_str() {
        "cancel" => state.room.cancel_job(&actor, &id).await?,
        "bump" => state.room.bump(&actor, &id).await?,
        _ => {
            return Err(ApiError::json_error(
                StatusCode::NOT_FOUND,
                "actions on a job are cancel and bump",
            ));
        }
    };
    Ok(Json(json!({"audit": audit_entry(&entry)})))
}

/// `POST /admin/api/users/{name}/{action}`: `cancel-jobs` (every
/// waiting and running job of theirs), `disable` and `enable` (the
/// account), `reset-password` (answers the new password).
pub async fn user_action(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let name = UserName::parse(&name).map_err(|e| {
        ApiError::json_error(
            StatusCode::BAD_REQUEST,
            format!("'{name}' is not a user name: {e}"),
        )
    })?;
    let entry = match action.as_str() {
        "cancel-jobs" => state.room.cancel_jobs_of(&actor, &name).await?,
        "disable" => state.room.disable_account(&actor, &name).await?,
        "enable" => state.room.enable_account(&actor, &name).await?,
        "reset-password" => {
            let (entry, password) = state.room.reset_password(&actor, &name).await?;
            return Ok(Json(json!({
                "user": name.as_str(),
                "password": password,
                "audit": audit_entry(&entry),
            })));
        }
        _ => {
            return Err(ApiError::json_error(
                StatusCode::NOT_FOUND,
                "actions on an account are cancel-jobs, disable, enable and reset-password",
            ));
        }
    };
    Ok(Json(json!({"audit": audit_entry(&entry)})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsBody {
    max_pending: Option<u32>,
    max_running: Option<u32>,
}

/// `POST /admin/api/users/{name}/caps` `{"max_pending", "max_running"}`:
/// one participant's own limits (`null`: the room's).
pub async fn set_caps(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<CapsBody>,
) -> Result<Json<Value>, ApiError> {
    let name = UserName::parse(&name).map_err(|e| {
        ApiError::json_error(
            StatusCode::BAD_REQUEST,
            format!("'{name}' is not a user name: {e}"),
        )
    })?;
    let caps = crate::store::Caps {
        max_pending: body.max_pending,
        max_running: body.max_running,
    };
    let entry = state.room.set_caps(&actor, &name, caps).await?;
    Ok(Json(json!({"audit": audit_entry(&entry)})))
}

/// `GET /admin/api/room`: the room's switches.
pub async fn room(_: Admin, State(state): State<AppState>) -> Json<Value> {
    let mut body = state.room.storage.status();
    body["paused"] = json!(state.dispatcher.is_paused());
    Json(body)
}

/// `POST /admin/api/backup`: a backup now (202; the room's state shows
/// it running, then its outcome); 409 when backups are not scheduled.
pub async fn back_up_now(
    Admin(actor): Admin,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let entry = state.room.back_up_now(&actor).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"requested": true, "audit": audit_entry(&entry)})),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broadcast {
    message: String,
}

/// `POST /admin/api/room/{pause|resume}`.
pub async fn room_action(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Path(action): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = match action.as_str() {
        "pause" => state.room.pause(&actor).await?,
        "resume" => state.room.resume(&actor).await?,
        _ => {
            return Err(ApiError::json_error(
                StatusCode::NOT_FOUND,
                "actions on the room are pause, resume and broadcast",
            ));
        }
    };
    Ok(Json(json!({
        "paused": state.dispatcher.is_paused(),
        "audit": audit_entry(&entry),
    })))
}

/// `POST /admin/api/room/broadcast` `{"message"}`: a notice on every
/// connected canvas.
pub async fn broadcast(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Json(body): Json<Broadcast>,
) -> Result<Json<Value>, ApiError> {
    let entry = state.room.broadcast(&actor, &body.message).await?;
    Ok(Json(json!({"audit": audit_entry(&entry)})))
}

/// `DELETE /admin/api/room/broadcast`: the banner comes off every canvas.
pub async fn clear_broadcast(
    Admin(actor): Admin,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let entry = state.room.clear_broadcast(&actor).await?;
    Ok(Json(json!({"audit": audit_entry(&entry)})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushedWorkflow {
    /// Its name in Workflows (default: the template's).
    name: Option<String>,
    /// The workflow itself (uploaded)…
    workflow: Option<Value>,
    /// …or one of the workshop's templates, by name.
    template: Option<String>,
}

/// `POST /admin/api/room/workflows` `{"name", "workflow"}` or
/// `{"template"[, "name"]}`: the workflow into every account's Workflows,
/// now and at each later login.
pub async fn push_workflow(
    Admin(actor): Admin,
    State(state): State<AppState>,
    Json(body): Json<PushedWorkflow>,
) -> Result<Json<Value>, ApiError> {
    let bad = |m: &str| ApiError::json_error(StatusCode::BAD_REQUEST, m);
    let (name, workflow) = match (body.workflow, body.template) {
        (Some(workflow), None) => (
            body.name
                .ok_or_else(|| bad("name the workflow: \"name\""))?,
            workflow,
        ),
        (None, Some(template)) => {
            let found = state
                .templates
                .workflows()
                .any(|(name, _)| name == template);
            if !found {
                return Err(ApiError::json_error(
                    StatusCode::NOT_FOUND,
                    format!("no workshop template named '{template}'"),
                ));
            }
            let file = state
                .templates
                .file(&format!("{template}.json"))
                .await
                .map_err(ApiError::internal)?;
            let Some(crate::templates::TemplateFile::Json(workflow)) = file else {
                return Err(ApiError::json_error(
                    StatusCode::NOT_FOUND,
                    format!("no workshop template named '{template}'"),
                ));
            };
            (body.name.unwrap_or(template), workflow)
        }
        _ => {
            return Err(bad(
                "send either \"workflow\" (with \"name\") or \"template\"",
            ));
        }
    };
    let entry = state.room.push_workflow(&actor, &name, &workflow).await?;
    Ok(Json(json!({"audit": audit_entry(&entry)})))
}

/// `GET /admin/api/templates`: the workshop's templates, by name (what the
/// dashboard can push).
pub async fn templates(_: Admin, State(state): State<AppState>) -> Json<Value> {
    let names: Vec<&str> = state.templates.workflows().map(|(name, _)| name).collect();
    Json(json!({"templates": names}))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

/// The most entries one page of the audit log holds.
const AUDIT_PAGE_MAX: u32 = 500;

/// `GET /admin/api/audit?limit=N&before=ID`: the newest entries first;
/// `before` pages back through older ones.
pub async fn audit(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, AUDIT_PAGE_MAX);
    let entries = state.room.audit_log(limit, q.before).await?;
    let entries: Vec<Value> = entries.iter().map(audit_entry).collect();
    Ok(Json(json!({"entries": entries})))
}

fn audit_entry(e: &AuditEntry) -> Value {
    json!({
        "id": e.id,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "detail": e.detail,
    })
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
