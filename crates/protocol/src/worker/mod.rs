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
//!
//! This module is the protocol both sides share: the request body
//! ([`RunRequest`]), the frame codec ([`stream`]) and the gateway's side
//! ([`client`]: [`WorkerClient`]). The sidecar itself is the
//! `comfyume-worker` crate.

pub mod client;
pub mod stream;

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
