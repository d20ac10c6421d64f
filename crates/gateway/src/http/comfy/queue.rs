//! Running prompts: `POST /prompt`, the queue and history routes,
//! `/interrupt`, and the `/api/jobs` family the frontend's queue panel
//! reads, all limited to the caller's own jobs.

use crate::store::HistoryPage;
use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::session::CurrentUser;
use crate::jobs::SubmitError;
use crate::jobs::views::{
    has_history, history_item, job_entry, jobs_page_from, parse_jobs_query, queue_item, store_page,
};
use comfyume_domain::{JobId, JobState};
use comfyume_prompt::PromptRequest;

fn top_level_error(kind: &str, message: &str, details: &str) -> ApiError {
    ApiError::Json(
        StatusCode::BAD_REQUEST,
        comfyume_prompt::error_body(kind, message, details),
    )
}

pub async fn submit(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request =
        PromptRequest::parse(&body).map_err(|e| ApiError::Json(StatusCode::BAD_REQUEST, e.body))?;
    match state.jobs.submit(&user, request).await {
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
            comfyume_prompt::error_body(
                "no_backend",
                "No GPU server is reachable right now; try again in a moment.",
                &reason,
            ),
        )),
        Err(SubmitError::Store(crate::store::StoreError::Conflict(_))) => Err(top_level_error(
            "invalid_prompt_id",
            "prompt_id is already in use",
            "omit prompt_id to let the server generate one",
        )),
        Err(SubmitError::Store(e)) => Err(ApiError::internal(e)),
        Err(SubmitError::Files(e)) => Err(e.into()),
    }
}

pub async fn queue_status(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let remaining = state
        .jobs
        .queue_remaining(&user)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({"exec_info": {"queue_remaining": remaining}})))
}

pub async fn queue(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let jobs = state
        .jobs
        .active_of(&user)
        .await
        .map_err(ApiError::internal)?;
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
    let page = match (int("max_items")?, int("offset")?) {
        (Some(n), None) => HistoryPage::Newest(n as u64),
        (n, Some(offset)) => HistoryPage::From {
            offset: offset as u64,
            limit: n.map(|n| n as u64),
        },
        (None, None) => HistoryPage::All,
    };
    let jobs = state
        .jobs
        .history(&user, page)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        jobs.iter()
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
    let (jobs, total) = state
        .jobs
        .page(&user, &store_page(&query))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(jobs_page_from(&jobs, total, &query)))
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
