//! Running prompts: `POST /prompt`, the queue and history routes,
//! `/interrupt`, and the `/api/jobs` family the frontend's queue panel
//! reads, all limited to the caller's own jobs.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::domain::{JobId, JobState};
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;
use crate::jobs::views::{
    has_history, history_item, job_entry, jobs_page, parse_jobs_query, queue_item,
};
use crate::jobs::{Submission, SubmitError};

fn top_level_error(kind: &str, message: &str, details: &str) -> ApiError {
    ApiError::Json(
        StatusCode::BAD_REQUEST,
        json!({"error": {"type": kind, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}),
    )
}

/// Reads ComfyUI's `POST /prompt` body into a [`Submission`].
fn parse_submission(body: &[u8]) -> Result<Submission, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        top_level_error(
            "invalid_prompt",
            "The request body is not valid JSON",
            &e.to_string(),
        )
    })?;
    let Value::Object(o) = v else {
        return Err(top_level_error(
            "invalid_prompt",
            "The request body must be a JSON object",
            "",
        ));
    };
    let prompt_id = match o.get("prompt_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(JobId::parse(s).map_err(|_| invalid_prompt_id())?),
        Some(_) => return Err(invalid_prompt_id()),
    };
    let Some(prompt) = o.get("prompt").cloned() else {
        return Err(top_level_error(
            "no_prompt",
            "No prompt provided",
            "No prompt provided",
        ));
    };
    let number = match o.get("number") {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.as_f64()
                .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| top_level_error("invalid_prompt", "number must be a number", ""))?,
        ),
    };
    let front = match o.get("front") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    let partial_targets = match o.get("partial_execution_targets") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect(),
        ),
        Some(_) => {
            return Err(top_level_error(
                "invalid_prompt",
                "partial_execution_targets must be a list",
                "",
            ));
        }
    };
    let extra_data = match o.get("extra_data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(top_level_error(
                "invalid_prompt",
                "extra_data must be an object",
                "",
            ));
        }
    };
    let client_id = o
        .get("client_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Submission {
        prompt,
        client_id,
        extra_data,
        partial_targets,
        front,
        number,
        prompt_id,
    })
}

fn invalid_prompt_id() -> ApiError {
    top_level_error(
        "invalid_prompt_id",
        "prompt_id must be a valid UUID",
        "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to let the server generate one",
    )
}

pub async fn submit(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let submission = parse_submission(&body)?;
    match state.jobs.submit(&user, submission).await {
        Ok((job, node_errors)) => Ok(Json(json!({
            "prompt_id": job.id.to_string(),
            "number": job.number_json(),
            "node_errors": node_errors,
        }))),
        Err(SubmitError::Invalid(body)) => Err(ApiError::Json(StatusCode::BAD_REQUEST, body)),
        Err(SubmitError::QueueFull(body)) => {
            Err(ApiError::Json(StatusCode::TOO_MANY_REQUESTS, body))
        }
        Err(SubmitError::NoCatalogue(reason)) => Err(ApiError::Json(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": {"type": "no_backend", "message": "No GPU server is reachable right now; try again in a moment.", "details": reason, "extra_info": {}}, "node_errors": {}}),
        )),
        Err(SubmitError::Store(crate::store::StoreError::Conflict(_))) => Err(top_level_error(
            "invalid_prompt_id",
            "prompt_id is already in use",
            "omit prompt_id to let the server generate one",
        )),
        Err(SubmitError::Store(e)) => Err(ApiError::internal(e)),
    }
}

pub async fn queue_status(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> Json<Value> {
    Json(json!({"exec_info": {"queue_remaining": state.jobs.queue_remaining(&user).await}}))
}

pub async fn queue(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let jobs = state.jobs.of(&user).await.map_err(ApiError::internal)?;
    let of = |s: JobState| {
        jobs.iter()
            .filter(|j| j.state == s)
            .map(queue_item)
            .collect::<Vec<_>>()
    };
    Ok(Json(
        json!({"queue_running": of(JobState::InProgress), "queue_pending": of(JobState::Pending)}),
    ))
}

/// What a `{"clear": bool?, "delete": [id…]?}` body of `POST /queue` or
/// `POST /history` removes: everything (`Some(None)`), the listed ids, or
/// nothing. Ids that are not job ids match nothing.
fn removal(body: &[u8]) -> Option<Option<Vec<JobId>>> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if v.get("clear").and_then(Value::as_bool).unwrap_or(false) {
        return Some(None);
    }
    let ids = v.get("delete").and_then(Value::as_array)?;
    Some(Some(
        ids.iter()
            .filter_map(Value::as_str)
            .filter_map(|s| JobId::parse(s).ok())
            .collect(),
    ))
}

pub async fn queue_update(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if let Some(ids) = removal(&body) {
        state
            .jobs
            .delete_pending(&user, ids.as_deref())
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(StatusCode::OK)
}

pub async fn history(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let int = |k: &str| -> Result<Option<usize>, ApiError> {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map(|n| n.max(0) as usize)
                    .map_err(|_| ApiError::bad_request(format!("{k} must be an integer")))
            })
            .transpose()
    };
    let (max_items, offset) = (int("max_items")?, int("offset")?);
    let jobs = state.jobs.of(&user).await.map_err(ApiError::internal)?;
    let done: Vec<_> = jobs.iter().filter(|j| has_history(j)).collect();
    let selected: Vec<_> = match (max_items, offset) {
        (Some(n), None) => done.iter().skip(done.len().saturating_sub(n)).collect(),
        (n, Some(off)) => done
            .iter()
            .skip(off)
            .take(n.unwrap_or(usize::MAX))
            .collect(),
        (None, None) => done.iter().collect(),
    };
    Ok(Json(
        selected
            .into_iter()
            .map(|j| (j.id.to_string(), history_item(j)))
            .collect(),
    ))
}

pub async fn history_one(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let mut out = Map::new();
    if let Ok(id) = JobId::parse(&id) {
        if let Some(job) = state
            .jobs
            .get(&user, &id)
            .await
            .map_err(ApiError::internal)?
            .filter(has_history)
        {
            out.insert(job.id.to_string(), history_item(&job));
        }
    }
    Ok(Json(out))
}

pub async fn history_update(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if let Some(ids) = removal(&body) {
        state
            .jobs
            .delete_history(&user, ids.as_deref())
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(StatusCode::OK)
}

pub async fn interrupt(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match v.get("prompt_id").and_then(Value::as_str) {
        // A named prompt: only if it is one of the caller's running jobs.
        Some(id) => {
            if let Ok(id) = JobId::parse(id) {
                state
                    .jobs
                    .interrupt(&user, Some(&id))
                    .await
                    .map_err(ApiError::internal)?;
            }
        }
        // No name: whatever the caller has running, never anyone else's.
        None => state
            .jobs
            .interrupt(&user, None)
            .await
            .map_err(ApiError::internal)?,
    }
    Ok(StatusCode::OK)
}

/// `POST /free` asks ComfyUI to unload models. The GPUs are shared by the
/// whole room, so one participant's request must not evict everyone's
/// models; it is accepted and has no effect.
pub async fn free(CurrentUser(_): CurrentUser) -> StatusCode {
    StatusCode::OK
}

pub async fn jobs_list(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let query =
        parse_jobs_query(&q).map_err(|m| ApiError::json_error(StatusCode::BAD_REQUEST, m))?;
    let jobs = state.jobs.of(&user).await.map_err(ApiError::internal)?;
    Ok(Json(jobs_page(&jobs, &query)))
}

pub async fn job_detail(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::json_error(StatusCode::NOT_FOUND, "Job not found");
    let id = JobId::parse(&id).map_err(|_| not_found())?;
    let job = state
        .jobs
        .get(&user, &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    Ok(Json(job_entry(&job, true)))
}

pub async fn job_cancel(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cancelled = match JobId::parse(&id) {
        Ok(id) => state
            .jobs
            .cancel(&user, &id)
            .await
            .map_err(ApiError::internal)?,
        Err(_) => false,
    };
    Ok(Json(json!({"cancelled": cancelled})))
}

pub async fn jobs_cancel(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(ids) = v.get("job_ids").and_then(Value::as_array) else {
        return Err(ApiError::json_error(
            StatusCode::BAD_REQUEST,
            "job_ids must be a list",
        ));
    };
    let invalid: Vec<Value> = ids
        .iter()
        .filter(|i| i.as_str().and_then(|s| JobId::parse(s).ok()).is_none())
        .cloned()
        .collect();
    if !invalid.is_empty() {
        return Err(ApiError::Json(
            StatusCode::BAD_REQUEST,
            json!({"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}),
        ));
    }
    let mut any = false;
    for id in ids
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|s| JobId::parse(s).ok())
    {
        any |= state
            .jobs
            .cancel(&user, &id)
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(Json(json!({"cancelled": any})))
}
