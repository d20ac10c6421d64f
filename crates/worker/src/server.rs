//! The worker's HTTP side: `GET /v1/health` and `POST /v1/run`, with
//! everything decided before the stream starts (token, body, capacity,
//! content-addressed inputs), so a caller gets a plain status code for
//! each of those and can act on it (fix, retry elsewhere, resend with data).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::run::{self, Job, PROBE_TIMEOUT, Sink, Upload};
use crate::WorkerArgs;
use comfyume_protocol::extension;
use comfyume_protocol::worker::{
    COMFYUI_RELAY, MAX_RELAYED_BYTES, RunRequest, relays, sha256_hex, stream,
};
use comfyume_protocol::{BackendError, ComfyClient};

/// The largest `POST /v1/run` body: inputs travel inline as base64.
const MAX_BODY: usize = 512 * 1024 * 1024;
/// Frames buffered between a run and a slow caller before the run waits.
const CHANNEL_FRAMES: usize = 32;
/// One request to the local ComfyUI (an output download included).
const COMFY_TIMEOUT: Duration = Duration::from_secs(300);

/// What every request shares.
struct Worker {
    comfy: ComfyClient,
    /// SHA-256 of the token: comparing digests takes the same time
    /// whatever the presented token's length.
    token_digest: [u8; 32],
    /// One permit per job that may run at once.
    permits: Arc<Semaphore>,
    /// Ids of the jobs holding a permit. A gateway retrying a job on the
    /// same replica while its first attempt is still being cancelled must
    /// not queue a second prompt with that id: ComfyUI would hold two, and
    /// interrupting one by id would hit the other.
    jobs: std::sync::Mutex<HashSet<String>>,
    max_jobs: u32,
    ready_timeout: Duration,
}

type Shared = Arc<Worker>;

pub(super) async fn serve(
    listener: TcpListener,
    args: WorkerArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(COMFY_TIMEOUT)
        .user_agent(concat!("comfyume-worker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(std::io::Error::other)?;
    let comfy = ComfyClient::new("comfyui", &args.comfyui, None, http);
    let worker = Arc::new(Worker {
        comfy,
        token_digest: Sha256::digest(args.token.expose().as_bytes()).into(),
        permits: Arc::new(Semaphore::new(args.max_jobs as usize)),
        jobs: Default::default(),
        max_jobs: args.max_jobs,
        ready_timeout: Duration::from_secs(args.ready_timeout_secs),
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, comfyui = %args.comfyui, max_jobs = args.max_jobs, "worker listening");
    }
    axum::serve(listener, router(worker))
        .with_graceful_shutdown(shutdown)
        .await
}

fn router(worker: Shared) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/run", post(run_job))
        .route("/v1/object_info", get(object_info))
        .route(extension::WORKER_SIGNATURES, get(validator_signatures))
        .route(&format!("{COMFYUI_RELAY}/{{*path}}"), get(relay))
        .route(
            extension::WORKER_VALIDATE_INPUTS,
            post(run_validators).layer(DefaultBodyLimit::max(extension::MAX_VALIDATE_BODY)),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(worker)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

impl Worker {
    async fn comfy_ready(&self) -> bool {
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, self.comfy.system_stats()).await,
            Ok(Ok(_))
        )
    }

    fn running(&self) -> u32 {
        self.max_jobs
            .saturating_sub(self.permits.available_permits() as u32)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
        else {
            return false;
        };
        let digest = Sha256::digest(given.as_bytes());
        // No early exit: the time taken does not tell how much matched.
        digest
            .iter()
            .zip(self.token_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// The content-addressed inputs this ComfyUI lacks (or holds with other
    /// content). A ComfyUI still starting cannot be asked, so then all of
    /// them count as missing: the caller resends them with data rather than
    /// waiting here, before any byte is streamed, for a cold start.
    async fn missing_inputs(&self, by_hash: &[ByHash]) -> Vec<String> {
        if by_hash.is_empty() {
            return Vec::new();
        }
        if !self.comfy_ready().await {
            return by_hash.iter().map(|i| i.name.clone()).collect();
        }
        let mut missing = Vec::new();
        for input in by_hash {
            let present = match self
                .comfy
                .download(&input.file_name, &input.subfolder, "input")
                .await
            {
                Ok(bytes) => sha256_hex(&bytes) == input.sha256,
                Err(_) => false,
            };
            if !present {
                missing.push(input.name.clone());
            }
        }
        missing
    }
}

async fn health(State(worker): State<Shared>) -> Json<Value> {
    let status = if worker.comfy_ready().await {
        "ready"
    } else {
        "starting"
    };
    Json(json!({
        "status": status,
        "comfyui": worker.comfy.url(),
        "running": worker.running(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// ComfyUI's node catalogue, for the gateway's up-front validation (the
/// gateway never talks to this ComfyUI directly). Needs the token.
async fn object_info(State(worker): State<Shared>, headers: header::HeaderMap) -> Response {
    if !worker.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    match worker.comfy.object_info().await {
        Ok(nodes) => Json(Value::Object(nodes)).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ComfyUI is not ready: {e}"),
        ),
    }
}

/// The signatures of the nodes' validation functions, from ComfyUME's
/// backend extension in this ComfyUI (404 when it does not run it). Needs
/// the token.
async fn validator_signatures(State(worker): State<Shared>, headers: HeaderMap) -> Response {
    if !worker.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    relayed(worker.comfy.get_json(extension::SIGNATURES).await)
}

/// Runs nodes' validation functions in this ComfyUI, for the gateway's
/// up-front validation. Needs the token.
async fn run_validators(State(worker): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !worker.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    // Read only for a caller with the token.
    let calls: Value = match serde_json::from_slice(&body) {
        Ok(calls) => calls,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            );
        }
    };
    relayed(
        worker
            .comfy
            .post_json(extension::VALIDATE_INPUTS, &calls)
            .await,
    )
}

/// ComfyUI's answer to one of its read-only routes (see
/// `comfyume_protocol::worker::relays`), as it comes. Needs the token.
async fn relay(State(worker): State<Shared>, request: Request) -> Response {
    if !worker.authorized(request.headers()) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let uri = request.uri();
    let path = uri.path().strip_prefix(COMFYUI_RELAY).unwrap_or_default();
    if !relays(path) {
        return error(StatusCode::NOT_FOUND, "not a route the worker relays");
    }
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    match worker.comfy.fetch(&target, MAX_RELAYED_BYTES).await {
        Ok(answer) => {
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() =
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            if let Some(v) = answer
                .content_type
                .and_then(|t| header::HeaderValue::from_str(&t).ok())
            {
                response.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            response
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ComfyUI could not answer: {e}"),
        ),
    }
}

/// The extension's answer, or why there is none: 404 without the
/// extension, 503 while ComfyUI cannot answer.
fn relayed(answer: Result<Value, BackendError>) -> Response {
    match answer {
        Ok(body) => Json(body).into_response(),
        Err(BackendError::Status { status: 404, .. }) => error(
            StatusCode::NOT_FOUND,
            "this ComfyUI does not run ComfyUME's backend extension",
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ComfyUI could not answer: {e}"),
        ),
    }
}

async fn run_job(State(worker): State<Shared>, request: Request) -> Response {
    if !worker.authorized(request.headers()) {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY} bytes"),
        );
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}"),
            );
        }
    };
    let request: RunRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    drop(body);
    let (job, by_hash) = match check(request) {
        Ok(checked) => checked,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Ok(permit) = worker.permits.clone().try_acquire_owned() else {
        return error(StatusCode::TOO_MANY_REQUESTS, "busy");
    };
    let Some(slot) = Slot::take(&worker, &job.id, permit) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "busy: this job is already running here",
        );
    };
    let missing = worker.missing_inputs(&by_hash).await;
    if !missing.is_empty() {
        return (StatusCode::CONFLICT, Json(json!({"missing": missing}))).into_response();
    }
    tracing::info!(job = %job.id, "job accepted");
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_FRAMES);
    let runner = worker.clone();
    tokio::spawn(async move {
        let id = job.id.clone();
        run::run(&runner.comfy, runner.ready_timeout, job, Sink::new(tx)).await;
        tracing::info!(job = %id, "job done");
        // Held until ComfyUI has let go of the job.
        drop(slot);
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, stream::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
            // Proxies that buffer responses (nginx-style) would hold
            // progress back until the job ends.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

/// A job's hold on the worker: its permit and its id among the running
/// ones, both released on drop, however the request or the run ends.
struct Slot {
    worker: Shared,
    id: String,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// `None` if a job with this id already holds a slot.
    fn take(worker: &Shared, id: &str, permit: OwnedSemaphorePermit) -> Option<Slot> {
        let fresh = lock(&worker.jobs).insert(id.to_string());
        fresh.then(|| Slot {
            worker: worker.clone(),
            id: id.to_string(),
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.worker.jobs).remove(&self.id);
    }
}

/// The set stays consistent even if a holder panicked mid-insert.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A content-addressed input: the worker must find it in ComfyUI.
struct ByHash {
    name: String,
    subfolder: String,
    file_name: String,
    sha256: String,
}

/// Checks a request and splits its inputs into uploads and references.
fn check(request: RunRequest) -> Result<(Job, Vec<ByHash>), String> {
    let mut uploads = Vec::new();
    let mut by_hash = Vec::new();
    let mut seen = HashSet::new();
    for input in request.inputs {
        let (subfolder, file_name) = split_input_name(&input.name)
            .ok_or_else(|| format!("input name '{}' is not a plain relative path", input.name))?;
        if !seen.insert(input.name.clone()) {
            return Err(format!("input '{}' is listed twice", input.name));
        }
        let sha256 = input.sha256.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "input '{}': sha256 must be 64 hex digits",
                input.name
            ));
        }
        match input.data {
            Some(data) => {
                if sha256_hex(&data) != sha256 {
                    return Err(format!(
                        "input '{}': data does not match its sha256",
                        input.name
                    ));
                }
                uploads.push(Upload {
                    subfolder,
                    file_name,
                    data,
                });
            }
            None => by_hash.push(ByHash {
                name: input.name,
                subfolder,
                file_name,
                sha256,
            }),
        }
    }
    let job = Job {
        id: request.job_id.hyphenated().to_string(),
        prompt: request.prompt,
        extra_data: request.extra_data,
        targets: request.partial_execution_targets,
        uploads,
    };
    Ok((job, by_hash))
}

/// `a/b/c.png` → (`a/b`, `c.png`): a name the prompt can use as is, with
/// no way out of ComfyUI's input folder (no `..`, `.`, empty segment,
/// leading `/`, backslash or NUL).
fn split_input_name(name: &str) -> Option<(String, String)> {
    if name.contains(['\\', '\0']) {
        return None;
    }
    let segments: Vec<&str> = name.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return None;
    }
    let (file_name, folders) = segments.split_last()?;
    Some((folders.join("/"), (*file_name).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_names() {
        assert_eq!(
            split_input_name("photo.png"),
            Some(("".into(), "photo.png".into()))
        );
        assert_eq!(
            split_input_name("pasted/a/photo.png"),
            Some(("pasted/a".into(), "photo.png".into()))
        );
        for bad in [
            "",
            "/x.png",
            "../x.png",
            "a/../x.png",
            "a//x.png",
            "./x.png",
            "a\\x.png",
            "x/",
            "x\0.png",
        ] {
            assert_eq!(split_input_name(bad), None, "{bad:?}");
        }
    }

    fn worker(token: &str) -> Worker {
        let http = reqwest::Client::new();
        Worker {
            comfy: ComfyClient::new("comfyui", "http://127.0.0.1:9", None, http),
            token_digest: Sha256::digest(token.as_bytes()).into(),
            permits: Arc::new(Semaphore::new(1)),
            jobs: Default::default(),
            max_jobs: 1,
            ready_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn bearer_tokens() {
        let w = worker("s3cret");
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().expect("header"));
            h
        };
        assert!(w.authorized(&with("Bearer s3cret")));
        assert!(w.authorized(&with("bearer s3cret")));
        assert!(!w.authorized(&with("Bearer s3cre")));
        assert!(!w.authorized(&with("Bearer s3cret2")));
        assert!(!w.authorized(&with("Basic s3cret")));
        assert!(!w.authorized(&with("s3cret")));
        assert!(!w.authorized(&HeaderMap::new()));
    }
}
