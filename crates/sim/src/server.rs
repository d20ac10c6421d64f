//! The simulator's HTTP routes.
//!
//! Like stock, every route exists twice: at its plain path and under `/api`
//! (the frontend and the gateway use the latter, scripts the former).
//! Shapes follow stock v0.33.0: docs/comfyui-api.md §3.2, §6.1 to §6.9.
//! Where stock fails with an unhandled exception (a body that is not JSON,
//! a non-integer `max_items`), the simulator answers aiohttp's 500 too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::queue::QueueItem;
use super::{SimState, catalogue, files, graph, models, stats, validate, ws};

type Shared = Arc<SimState>;

/// Stock's default `--max-upload-size`.
const MAX_UPLOAD: usize = 100 * 1024 * 1024;

/// Extra-data keys stock keeps out of queue and history (S:execution.py:157).
const SENSITIVE: &[&str] = &["auth_token_comfy_org", "api_key_comfy_org"];

pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .merge(routes())
        .nest("/api", routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), until_ready))
        .with_state(state)
}

fn routes() -> Router<Shared> {
    Router::new()
        .route("/ws", get(ws::handler))
        .route("/object_info", get(object_info))
        .route("/object_info/{node_class}", get(object_info_one))
        .route("/system_stats", get(system_stats))
        .route("/features", get(features))
        .route("/prompt", get(prompt_status).post(post_prompt))
        .route("/queue", get(get_queue).post(post_queue))
        .route("/history", get(get_history).post(post_history))
        .route("/history/{prompt_id}", get(get_history_item))
        .route("/interrupt", post(interrupt))
        .route("/free", post(free))
        .route("/view", get(files::view))
        .route("/models", get(models::folders))
        .route("/models/{folder}", get(models::folder))
        .route("/experiment/models", get(models::experiment_folders))
        .route(
            "/experiment/models/{folder}",
            get(models::experiment_folder),
        )
        .route("/embeddings", get(models::embeddings))
        .route(
            "/upload/image",
            post(files::upload_image).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
}

/// The slow-start knob: 503 for everything, WebSocket upgrades included,
/// until the configured delay has passed.
async fn until_ready(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if Instant::now() < state.ready_at {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "503: the simulator is still starting",
        )
            .into_response();
    }
    next.run(request).await
}

/// aiohttp's plain-text 404, which scripts written against stock may match on.
async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404: Not Found")
}

/// aiohttp's answer to an unhandled exception in a handler.
fn internal_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 Internal Server Error\n\nServer got itself in trouble",
    )
        .into_response()
}

/// The catalogue, with the input folder's images as LoadImage's choices.
fn current_catalogue(state: &SimState) -> Map<String, Value> {
    catalogue::object_info(&state.dirs.input_images())
}

async fn object_info(State(state): State<Shared>) -> Json<Map<String, Value>> {
    Json(current_catalogue(&state))
}

/// `{class: info}`, or `{}` with 200 for an unknown class, as stock answers.
async fn object_info_one(
    State(state): State<Shared>,
    Path(node_class): Path<String>,
) -> Json<Map<String, Value>> {
    let mut all = current_catalogue(&state);
    let mut one = Map::new();
    if let Some(info) = all.remove(&node_class) {
        one.insert(node_class, info);
    }
    Json(one)
}

async fn system_stats(State(state): State<Shared>) -> Json<Value> {
    Json(stats::system_stats(&state.argv).await)
}

async fn features() -> Json<Value> {
    Json(stats::features())
}

async fn prompt_status(State(state): State<Shared>) -> Json<Value> {
    Json(json!({"exec_info": {"queue_remaining": state.queue.remaining()}}))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// stock's `validate_job_id`: a UUID in canonical lowercase hyphenated form.
fn canonical_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

/// `POST /prompt` (S:server.py:1072-1144).
async fn post_prompt(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(&body) else {
        return internal_error();
    };
    let number = match request.get("number") {
        Some(given) => {
            // Python's float(number).
            let parsed = match given {
                Value::Number(n) => n.as_f64(),
                Value::Bool(b) => Some(f64::from(u8::from(*b))),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            match parsed {
                Some(f) => json!(f),
                None => return internal_error(),
            }
        }
        None => {
            let n = state.queue.next_number();
            let front = request.get("front").is_some_and(truthy);
            json!(if front { -n } else { n })
        }
    };
    let Some(prompt) = request.remove("prompt") else {
        return (StatusCode::BAD_REQUEST, Json(validate::no_prompt())).into_response();
    };
    let prompt_id = match request.get("prompt_id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(id)) if canonical_uuid(id) => id.clone(),
        Some(_) => {
            return (StatusCode::BAD_REQUEST, Json(validate::invalid_prompt_id())).into_response();
        }
    };
    let targets: Option<Vec<String>> = request
        .get("partial_execution_targets")
        .filter(|t| !t.is_null())
        .map(|t| {
            t.as_array()
                .into_iter()
                .flatten()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        });
    let mut extra = match request.remove("extra_data") {
        Some(Value::Object(extra)) => extra,
        _ => Map::new(),
    };
    if let Some(client_id) = request.get("client_id") {
        extra.insert("client_id".into(), client_id.clone());
    }

    // Validation looks at the input folder (LoadImage).
    let checking = state.clone();
    let prompt = Arc::new(prompt);
    let checked = prompt.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        validate::validate(
            &checked,
            targets.as_deref(),
            &checking.catalogue,
            &checking.dirs,
        )
    })
    .await;
    let accepted = match verdict {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(rejection)) => return (StatusCode::BAD_REQUEST, Json(rejection)).into_response(),
        Err(_) => return internal_error(),
    };

    for key in SENSITIVE {
        extra.shift_remove(*key);
    }
    if !extra.contains_key("comfy_usage_source")
        && let Some(source) = headers
            .get("comfy-usage-source")
            .and_then(|v| v.to_str().ok())
    {
        extra.insert("comfy_usage_source".into(), json!(source));
    }
    extra.insert("create_time".into(), json!(now_ms()));
    let outputs = {
        let nodes = prompt.as_object().cloned().unwrap_or_default();
        graph::output_order(&nodes, &accepted.outputs, |class| {
            state
                .catalogue
                .get(class)
                .is_some_and(|i| i["output_node"] == json!(true))
        })
    };
    state.queue.put(QueueItem {
        number: number.clone(),
        prompt_id: prompt_id.clone(),
        prompt,
        extra_data: extra,
        outputs,
    });
    Json(json!({"prompt_id": prompt_id, "number": number, "node_errors": accepted.node_errors}))
        .into_response()
}

async fn get_queue(State(state): State<Shared>) -> Json<Value> {
    Json(state.queue.snapshot())
}

/// The ids of a `{"delete": [...]}` body.
fn ids(body: &Map<String, Value>) -> Vec<String> {
    body.get("delete")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect()
}

/// `POST /queue {"clear": true}` and/or `{"delete": [ids]}`: pending only.
async fn post_queue(State(state): State<Shared>, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return internal_error();
    };
    if body.get("clear").is_some_and(truthy) {
        state.queue.wipe();
    }
    for id in ids(&body) {
        state.queue.delete(&id);
    }
    StatusCode::OK.into_response()
}

async fn get_history(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let parse = |key: &str| query.get(key).map(|v| v.trim().parse::<i64>());
    let (max_items, offset) = match (parse("max_items"), parse("offset")) {
        (Some(Err(_)), _) | (_, Some(Err(_))) => return internal_error(),
        (max, offset) => (max.and_then(Result::ok), offset.and_then(Result::ok)),
    };
    Json(state.queue.history(max_items, offset)).into_response()
}

async fn get_history_item(
    State(state): State<Shared>,
    Path(prompt_id): Path<String>,
) -> Json<Value> {
    Json(state.queue.history_item(&prompt_id))
}

async fn post_history(State(state): State<Shared>, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return internal_error();
    };
    if body.get("clear").is_some_and(truthy) {
        state.queue.wipe_history();
    }
    for id in ids(&body) {
        state.queue.delete_history(&id);
    }
    StatusCode::OK.into_response()
}

/// `POST /interrupt`: with a `prompt_id`, only if that prompt is running;
/// otherwise (no body, bad JSON, no id) whatever is running.
async fn interrupt(State(state): State<Shared>, body: Bytes) -> StatusCode {
    let target = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("prompt_id").filter(|id| truthy(id)).cloned());
    match target {
        Some(id) => {
            if state
                .queue
                .running_id()
                .is_some_and(|running| json!(running) == id)
            {
                state.interrupt.raise();
            } else {
                tracing::info!(prompt_id = %id, "not running: nothing to interrupt");
            }
        }
        None => state.interrupt.raise(),
    }
    StatusCode::OK
}

/// `POST /free`: `free_memory` drops the worker's cache before the next
/// prompt; there are no models to unload.
async fn free(State(state): State<Shared>, body: Bytes) -> StatusCode {
    let body = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    if body.get("free_memory").is_some_and(truthy) {
        state.free_memory.store(true, Ordering::Relaxed);
    }
    StatusCode::OK
}
