//! `comfyume worker`: a sidecar beside a stock ComfyUI in a GPU container,
//! for serverless platforms and load-balanced GPU pools.
//!
//! Behind a load balancer, two requests of one client may reach two
//! different replicas, so a job must never be submitted on one request and
//! polled on another ("prompt accepted but never appeared in history"). The
//! worker makes **one job = one HTTP request**: `POST /v1/run` carries the
//! prompt, its id and its input files; the same response streams back every
//! ComfyUI event of that prompt, then its output files, then how it ended.
//! Nothing survives the request, so no replica can lose a job: if the stream
//! breaks, the gateway knows at once and runs the job elsewhere.
//!
//! The protocol (the exact document is `docs/worker-protocol.md`):
//! - `GET /v1/health`, no auth, for load-balancer probes: always HTTP 200,
//!   `{"status": "ready" | "starting", "comfyui": url, "running": n,
//!   "version": v}`; "starting" while ComfyUI's `/system_stats` does not
//!   answer 200, so a platform does not kill a container that is still
//!   loading.
//! - `POST /v1/run` with `Authorization: Bearer <token>` and a
//!   [`RunRequest`] body. Before streaming: 401 (token), 400 (body), 429
//!   `{"error":"busy"}` (over `--max-jobs`), 409 `{"missing": [names]}` (a
//!   content-addressed input this ComfyUI does not have; resend it with
//!   data). Then 200 with a [`stream`] of frames: the worker's progress
//!   (waiting for a cold ComfyUI, queued), ComfyUI's text and binary frames
//!   of the prompt verbatim, each output file before the `executed` frame
//!   naming it, and a final END or ERROR.
//! - If the caller goes away mid-stream, the worker removes the prompt from
//!   ComfyUI's queue and interrupts it.
//!
//! The map: `server` (routes, auth, admission), `run` (one job against
//! ComfyUI), [`stream`] (the frame codec, used by both sides), [`client`]
//! (the gateway's side: [`WorkerClient`]).

pub mod client;
mod run;
mod server;
pub mod stream;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub use client::{Health, WorkerClient, WorkerError};
pub use stream::{Decoder, Frame, Outcome};

use crate::config::Secret;

/// The flags of `comfyume worker`.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerArgs {
    /// The ComfyUI this worker drives (normally in the same container).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8188", value_parser = comfyui_url)]
    pub comfyui: String,

    /// Address to serve `/v1/run` and `/v1/health` on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9188")]
    pub listen: SocketAddr,

    /// The bearer token callers of `/v1/run` must present.
    #[arg(
        long,
        env = "COMFYUME_WORKER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = token
    )]
    pub token: Secret,

    /// Jobs run at once; one more gets HTTP 429 so the load balancer tries
    /// another replica. ComfyUI runs one prompt at a time, so 1 keeps
    /// a job from waiting in this ComfyUI's own queue.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_jobs: u32,

    /// How long a job waits for a cold ComfyUI to come up before it fails.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub ready_timeout_secs: u64,
}

fn comfyui_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL".into());
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn token(text: &str) -> Result<Secret, String> {
    if text.trim().is_empty() {
        return Err("the token must not be empty".into());
    }
    Ok(Secret::new(text))
}

/// Serves the worker on `listener` (bound by the caller, normally to
/// `args.listen`) until `shutdown` completes. Jobs already streaming are
/// let finish: the platform's grace period bounds them, and a job cut off
/// by it is retried elsewhere by the gateway.
pub async fn run(
    listener: TcpListener,
    args: WorkerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, args, shutdown).await
}

/// The body of `POST /v1/run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The job's id, used as ComfyUI's `prompt_id`: a canonical
    /// (lowercase, hyphenated) UUID, as ComfyUI itself demands.
    #[serde(deserialize_with = "canonical_uuid")]
    pub job_id: uuid::Uuid,
    /// The API-format prompt.
    pub prompt: Map<String, Value>,
    #[serde(default)]
    pub extra_data: Map<String, Value>,
    #[serde(default)]
    pub partial_execution_targets: Option<Vec<String>>,
    /// Files the prompt reads from ComfyUI's input folder.
    #[serde(default)]
    pub inputs: Vec<InputFile>,
}

fn canonical_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<uuid::Uuid, D::Error> {
    let text = String::deserialize(d)?;
    match uuid::Uuid::parse_str(&text) {
        Ok(id) if id.hyphenated().to_string() == text => Ok(id),
        _ => Err(serde::de::Error::custom(
            "job_id must be a UUID in canonical lowercase hyphenated form",
        )),
    }
}

/// An input file of a job, by the name the prompt uses for it (`photo.png`,
/// or `pasted/photo.png` in a subfolder).
///
/// With `data` (base64 in JSON) the worker uploads it; without, the file is
/// content-addressed: the worker uses the copy ComfyUI already has if its
/// SHA-256 matches, and otherwise answers 409 naming it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub name: String,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "base64_data")]
    pub data: Option<Vec<u8>>,
}

impl InputFile {
    /// An input sent with its bytes.
    pub fn with_data(name: impl Into<String>, data: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            sha256: sha256_hex(&data),
            data: Some(data),
        }
    }

    /// The same input by reference only (its name and hash).
    pub fn by_hash(&self) -> Self {
        Self {
            name: self.name.clone(),
            sha256: self.sha256.clone(),
            data: None,
        }
    }
}

// Inputs can be megabytes; a log line needs their name, hash and size.
impl std::fmt::Debug for InputFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputFile")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("data_len", &self.data.as_ref().map(Vec::len))
            .finish()
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `Option<Vec<u8>>` as an optional standard base64 string.
mod base64_data {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match data {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => STANDARD
                .decode(text.as_bytes())
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("data is not base64: {e}"))),
            None => Ok(None),
        }
    }
}
