//! The protocol of `comfyume worker`, the sidecar beside a stock ComfyUI in
//! a GPU container, for serverless platforms and load-balanced GPU pools.
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
//! - `GET /v1/comfyui/<path>` with the token: ComfyUI's own answer to
//!   `GET /<path>` (status, content type, body), for the read-only routes
//!   of [`relays`]: custom node packs' frontend files, translations,
//!   example workflows, model lists.
//!
//! This module is the protocol both sides share: the request body
//! ([`RunRequest`]), the frame codec ([`stream`]) and the gateway's side
//! ([`client`]: [`WorkerClient`]). The sidecar itself is the
//! `comfyume-worker` crate.

pub mod client;
pub mod stream;

/// Where the worker relays ComfyUI's read-only routes.
pub const COMFYUI_RELAY: &str = "/v1/comfyui";

/// The largest answer the worker relays.
pub const MAX_RELAYED_BYTES: usize = 32 * 1024 * 1024;

/// Whether the worker relays `GET path` (ComfyUI's path, with its leading
/// slash, without a query): only what a gateway serves participants
/// beside the API, nothing that reaches files or jobs. A path with a `..`
/// segment never is.
pub fn relays(path: &str) -> bool {
    const EXACT: [&str; 6] = [
        "/extensions",
        "/i18n",
        "/workflow_templates",
        "/models",
        "/experiment/models",
        "/embeddings",
    ];
    const UNDER: [&str; 5] = [
        "/extensions/",
        "/api/workflow_templates/",
        "/models/",
        "/experiment/models/",
        "/view_metadata/",
    ];
    let lower = path.to_ascii_lowercase();
    let hidden = ["%2e", "%2f", "%5c", "\\"]
        .iter()
        .any(|s| lower.contains(s));
    !hidden
        && !path.split('/').any(|segment| segment == "..")
        && (EXACT.contains(&path) || UNDER.iter().any(|p| path.starts_with(p)))
}

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use client::{Health, WorkerClient, WorkerError};
pub use stream::{Decoder, Frame, Outcome};

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

#[cfg(test)]
mod relay_tests {
    use super::relays;

    #[test]
    fn relays_only_the_read_only_routes() {
        for path in [
            "/extensions",
            "/extensions/pack/web.js",
            "/i18n",
            "/models/checkpoints",
            "/view_metadata/loras",
            "/api/workflow_templates/pack/demo.json",
        ] {
            assert!(relays(path), "{path}");
        }
        for path in [
            "/prompt",
            "/view",
            "/history",
            "/extensions/../view",
            "/extensions/pack/%2e%2e/x",
            "/models/..",
            "/userdata/x",
            "/extensionsx",
        ] {
            assert!(!relays(path), "{path}");
        }
    }
}
