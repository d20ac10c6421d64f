//! A run's files: the owner's input files pushed to the backend under
//! content-addressed names (so two users' `photo.png` never collide there),
//! and each output copied into the owner's folders before the browser
//! hears it exists.

use std::collections::HashMap;

use comfyume_domain::{FileKind, Job, SafeRelPath, UserName};
use comfyume_prompt::node_info::is_image_picker;
use comfyume_protocol::frames::{self, OutputFile};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Failure;
use crate::backend::BackendSession;
use crate::dispatch::Shared;
use crate::telemetry::phase;
use tracing::Instrument;

/// The job's prompt with each input file (image pickers) renamed to its
/// content-addressed name, and those files' bytes.
pub(super) async fn content_addressed_inputs(
    shared: &Shared,
    job: &Job,
    owner: &UserName,
) -> Result<(Value, Vec<(String, Vec<u8>)>), Failure> {
    let mut prompt = job.prompt.clone();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let catalogue = shared.catalogue.snapshot().await.map_err(|e| {
        Failure::backend_side(format!(
            "The node catalogue is unavailable, so your input files cannot be found: {e}"
        ))
    })?;
    let workspace = shared.workspaces.user(owner);
    let Some(nodes) = prompt.as_object_mut() else {
        // Validated at submission: a prompt is an object of nodes.
        return Err(Failure::invalid("The prompt is not a JSON object."));
    };
    for node in nodes.values_mut() {
        let class = node
            .get("class_type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some(info) = catalogue.nodes.get(&class) else {
            continue;
        };
        let Some(inputs) = node.get_mut("inputs").and_then(Value::as_object_mut) else {
            continue;
        };
        for (name, value) in inputs.iter_mut() {
            let Some(file) = value.as_str() else { continue };
            if !is_image_picker(info, name) {
                continue;
            }
            // Names that are no path of the owner's (`x.png [output]`) are
            // the backend's to resolve; validation already vetted them.
            let Ok(rel) = SafeRelPath::parse(file) else {
                continue;
            };
            let bytes = workspace.read_input(&rel).await.map_err(|e| Failure {
                message: format!("Your input file '{file}' could not be read: {e}"),
                kind: "FileNotFoundError",
                retryable: false,
                not_started: false,
                node: None,
            })?;
            let stored = content_name(&rel, &bytes);
            *value = Value::String(stored.clone());
            if !files.iter().any(|(n, _)| *n == stored) {
                files.push((stored, bytes));
            }
        }
    }
    Ok((prompt, files))
}

/// `comfyume-<first 24 hex digits of the SHA-256>.<ext>`.
pub(super) fn content_name(rel: &SafeRelPath, bytes: &[u8]) -> String {
    let ext = rel
        .file_name()
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_else(|| "png".into());
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("comfyume-{hex}.{ext}")
}

/// Copies each file an `executed` output names into the owner's folders
/// and points the output at the copy's name (which differs when the user
/// already has a different file by that name). A file that cannot be
/// fetched or stored is dropped from the output, so the browser never
/// shows an older file of the same name instead. Returns what the owner
/// must hear of (a full quota), and whether the server's disk refused one
/// (which fails the job: see [`Collected::disk_full`]).
pub(super) async fn collect_outputs<S: BackendSession>(
    shared: &Shared,
    owner: &UserName,
    session: &mut S,
    received: &mut HashMap<OutputFile, Vec<u8>>,
    output: &mut Value,
) -> Collected {
    let mut collected = Collected::default();
    let workspace = shared.workspaces.user(owner);
    for file in frames::output_files(output) {
        let fetched = match received.remove(&file) {
            Some(bytes) => Ok(bytes),
            None => {
                session
                    .fetch_output(&file)
                    .instrument(phase!("download"))
                    .await
            }
        };
        let bytes = match fetched {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(file = %file.filename, error = %e, "could not copy an output from the backend");
                frames::remove_output(output, &file);
                continue;
            }
        };
        let kind = if file.kind == "temp" {
            FileKind::Temp
        } else {
            FileKind::Output
        };
        let subfolder = match SafeRelPath::parse(&file.subfolder) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(file = %file.filename, subfolder = %file.subfolder, error = %e, "a backend named an output outside its folders");
                frames::remove_output(output, &file);
                continue;
            }
        };
        match workspace
            .save_upload(kind, &subfolder, &file.filename, bytes, false)
            .instrument(phase!("store"))
            .await
        {
            Ok(saved) => {
                let to = OutputFile {
                    filename: saved.name.clone(),
                    subfolder: subfolder.to_string(),
                    kind: file.kind.clone(),
                };
                if to != file {
                    frames::rewrite_output(output, &file, &to);
                }
            }
            Err(crate::workspace::WorkspaceError::QuotaExceeded(why)) => {
                tracing::warn!(file = %file.filename, "an output does not fit in its owner's quota");
                frames::remove_output(output, &file);
                collected
                    .tell_owner
                    .push(format!("Your output {} was not kept. {why}", file.filename));
            }
            Err(crate::workspace::WorkspaceError::DiskFull(why)) => {
                tracing::error!(file = %file.filename, reason = %why, "an output refused by the disk guard");
                frames::remove_output(output, &file);
                collected.disk_full =
                    Some(format!("Your output {} was not kept: {why}", file.filename));
            }
            Err(e) => {
                tracing::error!(file = %file.filename, error = %e, "could not store an output");
                frames::remove_output(output, &file);
                collected.tell_owner.push(format!(
                    "Your output {} could not be kept: {e}",
                    file.filename
                ));
            }
        }
    }
    collected
}

/// What copying a node's outputs left to say.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// Notices for the owner (an output over their quota, one that could
    /// not be stored).
    pub tell_owner: Vec<String>,
    /// The server's disk refused an output: the job fails with this
    /// reason instead of succeeding without its result.
    pub disk_full: Option<String>,
}
