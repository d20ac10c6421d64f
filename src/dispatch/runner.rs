//! Running one job on one backend slot, start to finish: push the job's
//! input files to the backend, queue the prompt under the job's own id,
//! follow the backend's socket, copy every output into the owner's files
//! before telling the browser it exists, relay each event to the owner's
//! socket in the backend's order, and record the outcome.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

use super::Shared;
use super::relay::{self, Frame, OutputFile};
use crate::backend::{BackendClient, BackendError, BackendSocket};
use crate::clock::now_ms;
use crate::domain::{FileKind, Job, JobState, SafeRelPath, UserName};
use crate::hub::Outbound;
use crate::store::Finish;

/// Everything the run needs to know about the job's owner.
pub struct Owner {
    pub name: UserName,
}

/// Runs the job and records how it ended; returns that state.
pub async fn run(
    shared: &Shared,
    job: Job,
    owner: Owner,
    backend: &BackendClient,
    client_id: &str,
) -> JobState {
    let mut run = JobRun::new(shared, job, owner);
    let state = match run.execute(backend, client_id).await {
        Ok(state) => state,
        Err(failure) => run.fail(&failure).await,
    };
    run.finish(state).await;
    state
}

/// A reason the run could not complete normally, in words a participant
/// understands.
struct Failure {
    message: String,
    kind: &'static str,
}

impl Failure {
    fn backend(e: BackendError) -> Self {
        let message = match &e {
            BackendError::Rejected { body, .. } => {
                let err = body.get("error");
                let msg = err
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("invalid prompt");
                let details = err
                    .and_then(|e| e.get("details"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                format!(
                    "The GPU server refused this prompt: {msg}{}",
                    if details.is_empty() {
                        String::new()
                    } else {
                        format!(" ({details})")
                    }
                )
            }
            other => format!("The GPU server could not run this prompt: {other}"),
        };
        Failure {
            message,
            kind: "BackendError",
        }
    }
}

struct JobRun<'a> {
    shared: &'a Shared,
    job: Job,
    owner: Owner,
    outputs: Map<String, Value>,
    meta: Map<String, Value>,
    messages: Vec<Value>,
    error: Option<Value>,
    outcome: Option<JobState>,
}

impl<'a> JobRun<'a> {
    fn new(shared: &'a Shared, job: Job, owner: Owner) -> Self {
        Self {
            shared,
            job,
            owner,
            outputs: Map::new(),
            meta: Map::new(),
            messages: Vec::new(),
            error: None,
            outcome: None,
        }
    }

    fn prompt_id(&self) -> String {
        self.job.id.to_string()
    }

    /// The socket the prompt came from, as ComfyUI addresses execution
    /// events: only to the submitting client.
    fn send(&self, frame: Outbound) {
        if let Some(sid) = self.job.extra_data.get("client_id").and_then(Value::as_str) {
            self.shared.hub.send_to_sid(self.job.owner, sid, frame);
        }
    }

    async fn execute(
        &mut self,
        backend: &BackendClient,
        client_id: &str,
    ) -> Result<JobState, Failure> {
        let mut ws = backend
            .connect_ws(client_id)
            .await
            .map_err(Failure::backend)?;
        announce_features(&mut ws).await.map_err(Failure::backend)?;
        let prompt = self.push_inputs(backend).await?;
        let mut body = json!({
            "prompt": prompt,
            "client_id": client_id,
            "prompt_id": self.prompt_id(),
            "extra_data": backend_extra_data(&self.job.extra_data),
        });
        if let Some(targets) = &self.job.partial_targets {
            body["partial_execution_targets"] = json!(targets);
        }
        backend.post_prompt(&body).await.map_err(Failure::backend)?;
        self.follow(&mut ws, backend).await
    }

    /// Relays the backend's frames until the job's final `executing`.
    async fn follow(
        &mut self,
        ws: &mut BackendSocket,
        backend: &BackendClient,
    ) -> Result<JobState, Failure> {
        let prompt_id = self.prompt_id();
        while let Some(frame) = ws.next().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => return Err(self.lost(backend, &e.to_string())),
            };
            match frame {
                Message::Text(text) => match relay::classify(&text, &prompt_id) {
                    Frame::Event { kind, data } => {
                        self.on_event(backend, &kind, data, text.as_str()).await
                    }
                    Frame::Done => return Ok(self.outcome.unwrap_or(JobState::Failed)),
                    Frame::Status | Frame::FeatureFlags | Frame::Ignore => {}
                },
                Message::Binary(bytes) if relay::binary_is_ours(&bytes, &prompt_id) => {
                    self.send(Outbound::Binary(bytes.to_vec()));
                }
                Message::Close(_) => return Err(self.lost(backend, "the connection was closed")),
                _ => {}
            }
        }
        Err(self.lost(backend, "the connection ended"))
    }

    async fn on_event(&mut self, backend: &BackendClient, kind: &str, mut data: Value, raw: &str) {
        if relay::HISTORY_MESSAGES.contains(&kind) {
            self.messages.push(json!([kind, data]));
        }
        match kind {
            "execution_success" => self.outcome = Some(JobState::Completed),
            "execution_error" => {
                self.outcome = Some(JobState::Failed);
                self.error = Some(data.clone());
            }
            "execution_interrupted" => {
                self.outcome = Some(JobState::Cancelled);
                self.error = Some(data.clone());
            }
            "executed" => {
                let node = data
                    .get("node")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Some(output) = data.get_mut("output") {
                    self.collect_outputs(backend, output).await;
                    if !output.is_null() {
                        self.outputs.insert(node.clone(), output.clone());
                    }
                }
                self.meta.insert(node, relay::node_meta(&data));
                if let Err(e) = self
                    .shared
                    .store
                    .record_progress(
                        &self.job.id,
                        self.job.attempts,
                        &self.outputs,
                        &self.meta,
                        &self.messages,
                    )
                    .await
                {
                    tracing::warn!(job = %self.job.id, error = %e, "could not record outputs");
                }
                self.send(Outbound::Text(
                    json!({"type": "executed", "data": data}).to_string(),
                ));
                return;
            }
            _ => {}
        }
        self.send(Outbound::Text(raw.to_string()));
    }

    /// Copies each output file into the owner's folders and points the
    /// output at the copy's name (which differs when the user already has a
    /// different file by that name).
    async fn collect_outputs(&self, backend: &BackendClient, output: &mut Value) {
        let workspace = self.shared.workspaces.user(&self.owner.name);
        for file in relay::output_files(output) {
            let bytes = match backend
                .download(&file.filename, &file.subfolder, &file.kind)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(job = %self.job.id, file = %file.filename, error = %e, "could not copy an output from the backend");
                    continue;
                }
            };
            let kind = if file.kind == "temp" {
                FileKind::Temp
            } else {
                FileKind::Output
            };
            let subfolder = SafeRelPath::parse(&file.subfolder).unwrap_or_default();
            match workspace
                .save_upload(kind, &subfolder, &file.filename, bytes, false)
                .await
            {
                Ok(saved) => {
                    let to = OutputFile {
                        filename: saved.name.clone(),
                        subfolder: subfolder.to_string(),
                        kind: file.kind.clone(),
                    };
                    if to != file {
                        relay::rewrite_output(output, &file, &to);
                    }
                }
                Err(e) => {
                    tracing::error!(job = %self.job.id, file = %file.filename, error = %e, "could not store an output")
                }
            }
        }
    }

    /// Uploads every input file the prompt names (image pickers) to the
    /// backend under a content-addressed name, and rewrites the prompt to
    /// use it, so two users' `photo.png` never collide there.
    async fn push_inputs(&self, backend: &BackendClient) -> Result<Value, Failure> {
        let mut prompt = self.job.prompt.clone();
        let Ok(catalogue) = self.shared.catalogue.snapshot().await else {
            return Ok(prompt);
        };
        let workspace = self.shared.workspaces.user(&self.owner.name);
        let Some(nodes) = prompt.as_object_mut() else {
            return Ok(prompt);
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
                let Ok(rel) = SafeRelPath::parse(file) else {
                    continue;
                };
                let path = rel.under(&workspace.kind_dir(FileKind::Input));
                let bytes = tokio::fs::read(&path).await.map_err(|e| Failure {
                    message: format!("Your input file '{file}' could not be read: {e}"),
                    kind: "FileNotFoundError",
                })?;
                let ext = rel
                    .file_name()
                    .rsplit_once('.')
                    .map(|(_, e)| e.to_ascii_lowercase())
                    .unwrap_or_else(|| "png".into());
                let digest = Sha256::digest(&bytes);
                let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
                let stored = backend
                    .upload_input(&format!("comfyume-{hex}.{ext}"), bytes)
                    .await
                    .map_err(Failure::backend)?;
                *value = Value::String(stored);
            }
        }
        Ok(prompt)
    }

    /// The backend went away mid-run. Its history may still say how the job
    /// ended (the connection dropped after the work was done); otherwise the
    /// job failed.
    fn lost(&self, backend: &BackendClient, reason: &str) -> Failure {
        tracing::warn!(job = %self.job.id, backend = %backend.name, reason, "lost the backend connection mid-job");
        Failure {
            message: format!(
                "The connection to the GPU server was lost while your job ran ({reason})."
            ),
            kind: "ConnectionError",
        }
    }

    /// Tells the user why the job failed, as an `execution_error` the
    /// frontend shows in its error dialog.
    async fn fail(&mut self, failure: &Failure) -> JobState {
        let now = now_ms();
        let prompt_id = self.prompt_id();
        if !self
            .messages
            .iter()
            .any(|m| m.get(0) == Some(&json!("execution_start")))
        {
            let start = json!({"prompt_id": prompt_id, "timestamp": now});
            self.messages.push(json!(["execution_start", start]));
            self.send(Outbound::Text(
                json!({"type": "execution_start", "data": start}).to_string(),
            ));
        }
        let error = json!({
            "prompt_id": prompt_id,
            "node_id": "",
            "node_type": "",
            "executed": [],
            "exception_message": failure.message,
            "exception_type": failure.kind,
            "traceback": [],
            "current_inputs": {},
            "current_outputs": [],
            "timestamp": now,
        });
        self.messages.push(json!(["execution_error", error]));
        self.send(Outbound::Text(
            json!({"type": "execution_error", "data": error}).to_string(),
        ));
        self.error = Some(error);
        JobState::Failed
    }

    /// Records the outcome (so history is readable), then sends the owner's
    /// queue status and the job's final `executing`, in ComfyUI's order.
    async fn finish(&mut self, state: JobState) {
        let finish = Finish {
            state,
            outputs: std::mem::take(&mut self.outputs),
            meta: std::mem::take(&mut self.meta),
            messages: std::mem::take(&mut self.messages),
            error: self.error.take(),
            finished_at: now_ms(),
        };
        match self
            .shared
            .store
            .finish_job(&self.job.id, self.job.attempts, &finish)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job = %self.job.id, "job was no longer in progress when it finished")
            }
            Err(e) => {
                tracing::error!(job = %self.job.id, error = %e, "could not record the job's outcome")
            }
        }
        self.shared.send_status(self.job.owner).await;
        let done =
            json!({"type": "executing", "data": {"node": null, "prompt_id": self.prompt_id()}});
        self.send(Outbound::Text(done.to_string()));
    }
}

/// Sends our feature flags and waits for the backend's reply, so previews
/// arrive with metadata (type 4) from the first step.
async fn announce_features(ws: &mut BackendSocket) -> Result<(), BackendError> {
    let flags = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}});
    let unreachable = |reason: String| BackendError::Unreachable {
        backend: "websocket".into(),
        reason,
    };
    ws.send(Message::Text(flags.to_string().into()))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let wait = async {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Text(t)) if matches!(relay::classify(&t, ""), Frame::FeatureFlags) => {
                    return Ok(());
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Err(unreachable(
            "the socket closed before the handshake finished".into(),
        ))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .map_err(|_| unreachable("no feature_flags reply within 10 s".into()))?
}

/// What the backend gets of the job's extra data: everything but the
/// gateway's bookkeeping of the browser's socket.
fn backend_extra_data(extra: &Value) -> Value {
    let mut extra = extra.clone();
    if let Some(o) = extra.as_object_mut() {
        o.remove("client_id");
        o.remove("create_time");
    }
    extra
}

fn is_image_picker(info: &Value, input: &str) -> bool {
    ["required", "optional"].iter().any(|section| {
        info.pointer(&format!("/input/{section}/{input}/1/image_upload"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    })
}
