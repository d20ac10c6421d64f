//! Running one job on one backend slot, start to finish: push the job's
//! input files to the backend, queue the prompt under the job's own id,
//! follow the backend's socket, copy every output into the owner's files
//! before telling the browser it exists, relay each event to the owner's
//! socket in the backend's order, and record the outcome.
//!
//! When the backend fails (unreachable, an error status, garbage, a dropped
//! socket, a run past the time limit) the run first asks the backend what
//! became of the job: a job that finished meanwhile is collected from the
//! backend's history, one still running is followed again on a new socket.
//! Only a job the backend has lost is handed back to the coordinator, which
//! queues it again for another backend.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

use super::Shared;
use super::relay::{self, Frame, OutputFile};
use crate::backend::{BackendClient, BackendError, BackendSocket};
use crate::clock::now_ms;
use crate::config::BackendKind;
use crate::domain::{FileKind, Job, JobState, SafeRelPath, UserName};
use crate::hub::Outbound;
use crate::store::Finish;
use crate::worker::stream::{Frame as WorkerFrame, Outcome as WorkerOutcome};
use crate::worker::{InputFile, RunRequest, WorkerError};

/// Everything the run needs to know about the job's owner.
pub struct Owner {
    pub name: UserName,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The job reached a terminal state, recorded and told to the owner.
    Finished(JobState),
    /// The backend failed and lost the job; it can run elsewhere. Nothing
    /// was recorded: the coordinator decides.
    BackendFault { reason: String },
    /// The backend turned the job away before starting it (a busy worker):
    /// not the job's fault, and no attempt was used.
    NotStarted { reason: String },
}

/// The limits of one run.
pub struct RunLimits {
    /// The whole run, from dispatch to the last frame.
    pub job_timeout: Duration,
    /// When false, a backend fault fails the job instead of returning
    /// [`Outcome::BackendFault`] (the attempts are used up).
    pub may_retry: bool,
    /// The job was already queued on the backend before the gateway
    /// restarted: pick it up there instead of submitting it again.
    pub resume: bool,
    /// Fired when the owner cancels a job running on a worker.
    pub cancel: std::sync::Arc<tokio::sync::Notify>,
}

pub async fn run(
    shared: &Shared,
    job: Job,
    owner: Owner,
    backend: &BackendClient,
    client_id: &str,
    limits: RunLimits,
) -> Outcome {
    let mut run = JobRun::new(shared, job, owner, limits.job_timeout);
    let result = if backend.kind == BackendKind::Worker {
        // One request per job: nothing to resume after a restart, since the
        // stream (and with it the job on the worker) ended with the gateway.
        run.execute_worker(backend, &limits.cancel).await
    } else if limits.resume {
        run.resume(backend, client_id).await
    } else {
        run.execute(backend, client_id).await
    };
    let state = match result {
        Ok(state) => state,
        Err(failure) if failure.not_started => {
            return Outcome::NotStarted {
                reason: failure.message,
            };
        }
        Err(failure) if failure.retryable && limits.may_retry => {
            return Outcome::BackendFault {
                reason: failure.message,
            };
        }
        Err(failure) => run.fail(&failure).await,
    };
    run.finish(state).await;
    Outcome::Finished(state)
}

/// Records a job as failed after its last attempt was lost, telling the
/// owner why (the coordinator calls this when no retry is left).
pub async fn give_up(shared: &Shared, job: Job, owner: Owner, message: String) {
    let mut run = JobRun::new(shared, job, owner, Duration::ZERO);
    let state = run
        .fail(&Failure {
            message,
            kind: "BackendError",
            retryable: false,
            not_started: false,
        })
        .await;
    run.finish(state).await;
}

/// A reason the run could not complete normally, in words a participant
/// understands.
struct Failure {
    message: String,
    kind: &'static str,
    /// The backend's fault, not the prompt's: another backend may succeed.
    retryable: bool,
    /// Turned away before it started (busy): try again, no attempt used.
    not_started: bool,
}

impl Failure {
    fn backend(e: BackendError) -> Self {
        match &e {
            BackendError::Rejected { body, .. } => {
                let err = body.get("error");
                let text = |k: &str| {
                    err.and_then(|e| e.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                };
                let details = text("details");
                let msg = if text("message").is_empty() {
                    "invalid prompt"
                } else {
                    text("message")
                };
                let message = if details.is_empty() {
                    format!("The GPU server refused this prompt: {msg}")
                } else {
                    format!("The GPU server refused this prompt: {msg} ({details})")
                };
                Failure {
                    message,
                    kind: "ValidationError",
                    retryable: false,
                    not_started: false,
                }
            }
            other => Failure {
                message: format!("The GPU server could not run this prompt: {other}"),
                kind: "BackendError",
                retryable: true,
                not_started: false,
            },
        }
    }

    fn lost(reason: &str) -> Self {
        Failure {
            message: format!("The GPU server running your job went away ({reason})."),
            kind: "ConnectionError",
            retryable: true,
            not_started: false,
        }
    }
}

struct JobRun<'a> {
    shared: &'a Shared,
    job: Job,
    owner: Owner,
    deadline: Instant,
    /// The configured limit the deadline comes from (for messages).
    limit: Duration,
    /// Between this job's `execution_start` and its end: binary frames
    /// that name no prompt (types 1 and 3) are this job's only then.
    executing: bool,
    /// Outputs delivered to the owner, including by earlier attempts: a
    /// node's outputs are never delivered twice.
    outputs: Map<String, Value>,
    meta: Map<String, Value>,
    messages: Vec<Value>,
    error: Option<Value>,
    outcome: Option<JobState>,
    /// Output files a worker streamed ahead of their `executed` frame.
    received: std::collections::HashMap<OutputFile, Vec<u8>>,
}

impl<'a> JobRun<'a> {
    fn new(shared: &'a Shared, job: Job, owner: Owner, limit: Duration) -> Self {
        let outputs = job.outputs.clone();
        let meta = job.meta.clone();
        // A job picked up again after a restart keeps the messages (its
        // `execution_start`) recorded so far; a fresh attempt has none.
        let messages = job.messages.clone();
        Self {
            shared,
            job,
            owner,
            deadline: Instant::now() + limit,
            limit,
            executing: false,
            outputs,
            meta,
            messages,
            error: None,
            outcome: None,
            received: Default::default(),
        }
    }

    fn prompt_id(&self) -> String {
        self.job.id.to_string()
    }

    /// To the socket the prompt came from: ComfyUI addresses execution
    /// events only to the submitting client.
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
        let ws = open_socket(backend, client_id)
            .await
            .map_err(Failure::backend)?;
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
        self.follow_until_done(ws, backend, client_id).await
    }

    /// Picks up a job this gateway submitted before it restarted: finished
    /// meanwhile → collected from history; still queued or running there →
    /// followed again (ComfyUI sends its events to the same client id);
    /// unknown → lost.
    async fn resume(
        &mut self,
        backend: &BackendClient,
        client_id: &str,
    ) -> Result<JobState, Failure> {
        let ws = open_socket(backend, client_id)
            .await
            .map_err(Failure::backend)?;
        match self.reconcile(backend).await {
            Reconciled::Finished(state) => Ok(state),
            Reconciled::StillThere => {
                tracing::info!(job = %self.job.id, backend = %backend.name, "re-attached to a job after a restart");
                self.follow_until_done(ws, backend, client_id).await
            }
            Reconciled::Unknown => Err(Failure::lost(
                "the gateway restarted and the GPU server no longer has the job",
            )),
        }
    }

    /// Follows the job on the backend's socket to its end, recovering from
    /// a dropped socket through the backend's history.
    async fn follow_until_done(
        &mut self,
        mut ws: BackendSocket,
        backend: &BackendClient,
        client_id: &str,
    ) -> Result<JobState, Failure> {
        let mut reconnected = false;
        loop {
            match self.follow(&mut ws, backend).await {
                Ok(state) => {
                    if reconnected {
                        // Frames sent while the socket was down are gone;
                        // history has every output.
                        self.collect_from_history(backend).await;
                    }
                    return Ok(state);
                }
                Err(Lost::TimedOut) => {
                    let _ = backend.delete_queued(&self.prompt_id()).await;
                    let _ = backend.interrupt(&self.prompt_id()).await;
                    return Err(Failure {
                        message: format!(
                            "Your job ran past the {}-minute limit and was stopped.",
                            self.job_limit_minutes()
                        ),
                        kind: "TimeoutError",
                        retryable: true,
                        not_started: false,
                    });
                }
                Err(Lost::Silent) => {
                    // The socket itself is fine: ask about the job over HTTP
                    // and keep listening on it. (Reconnecting with the same
                    // client id while it is open would make ComfyUI drop the
                    // new socket when it closes the old one.)
                    match self.reconcile(backend).await {
                        Reconciled::Finished(state) => return Ok(state),
                        Reconciled::StillThere => continue,
                        Reconciled::Unknown => {
                            return Err(Failure::lost(&format!(
                                "no event for {} s",
                                SILENCE_CHECK.as_secs()
                            )));
                        }
                    }
                }
                Err(Lost::Socket(reason)) => {
                    tracing::warn!(job = %self.job.id, backend = %backend.name, %reason, "backend socket lost mid-job");
                    // Listen again before asking about the job, so nothing
                    // it does after the answer is missed.
                    ws = match open_socket(backend, client_id).await {
                        Ok(ws) => ws,
                        Err(_) => return Err(Failure::lost(&reason)),
                    };
                    reconnected = true;
                    match self.reconcile(backend).await {
                        Reconciled::Finished(state) => return Ok(state),
                        Reconciled::StillThere => continue,
                        Reconciled::Unknown => return Err(Failure::lost(&reason)),
                    }
                }
            }
        }
    }

    fn job_limit_minutes(&self) -> u64 {
        (self.limit.as_secs() / 60).max(1)
    }

    /// Relays the backend's frames until the job's final `executing`.
    async fn follow(
        &mut self,
        ws: &mut BackendSocket,
        backend: &BackendClient,
    ) -> Result<JobState, Lost> {
        let prompt_id = self.prompt_id();
        loop {
            // A backend that goes quiet for a minute is asked about the
            // job (a hung ComfyUI keeps its socket open but says nothing);
            // a long node that is still running just carries on.
            let quiet_until = (Instant::now() + SILENCE_CHECK).min(self.deadline);
            let frame = match tokio::time::timeout_at(quiet_until.into(), ws.next()).await {
                Err(_) if Instant::now() >= self.deadline => return Err(Lost::TimedOut),
                Err(_) => {
                    return Err(Lost::Silent);
                }
                Ok(None) => return Err(Lost::Socket("the connection ended".into())),
                Ok(Some(Err(e))) => return Err(Lost::Socket(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                Message::Text(text) => match relay::classify(&text, &prompt_id) {
                    Frame::Event { kind, data } => {
                        self.on_event(backend, &kind, data, text.as_str()).await
                    }
                    Frame::Done => return Ok(self.outcome.unwrap_or(JobState::Failed)),
                    Frame::Status | Frame::FeatureFlags | Frame::Ignore => {}
                },
                Message::Binary(bytes)
                    if relay::binary_is_ours(&bytes, &prompt_id, self.executing) =>
                {
                    self.send(Outbound::Binary(bytes.to_vec()));
                }
                Message::Close(_) => return Err(Lost::Socket("the connection was closed".into())),
                _ => {}
            }
        }
    }

    async fn on_event(&mut self, backend: &BackendClient, kind: &str, mut data: Value, raw: &str) {
        if relay::HISTORY_MESSAGES.contains(&kind) {
            self.messages.push(json!([kind, data]));
        }
        match kind {
            "execution_start" => self.executing = true,
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
                if self.job.outputs.contains_key(&node) {
                    // An earlier attempt delivered this node's outputs.
                    return;
                }
                if let Some(output) = data.get_mut("output") {
                    self.deliver(backend, &node, output).await;
                }
                self.meta.insert(node, relay::node_meta(&data));
                self.record_progress().await;
                self.send(Outbound::Text(
                    json!({"type": "executed", "data": data}).to_string(),
                ));
                return;
            }
            _ => {}
        }
        self.send(Outbound::Text(raw.to_string()));
    }

    async fn deliver(&mut self, backend: &BackendClient, node: &str, output: &mut Value) {
        self.collect_outputs(backend, output).await;
        if !output.is_null() {
            self.outputs.insert(node.to_string(), output.clone());
        }
    }

    async fn record_progress(&self) {
        let store = &self.shared.store;
        if let Err(e) = store
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
    }

    /// Asks the backend what became of the job after losing its socket.
    async fn reconcile(&mut self, backend: &BackendClient) -> Reconciled {
        let Ok(history) = backend.history(&self.prompt_id()).await else {
            return Reconciled::Unknown;
        };
        if let Some(item) = history.get(self.prompt_id()) {
            return Reconciled::Finished(self.finish_from_history(backend, item).await);
        }
        match backend.queue().await {
            Ok(queue) if queue_holds(&queue, &self.prompt_id()) => Reconciled::StillThere,
            _ => Reconciled::Unknown,
        }
    }

    /// Delivers the outputs and outcome recorded in the backend's history
    /// that the owner has not had yet.
    async fn finish_from_history(&mut self, backend: &BackendClient, item: &Value) -> JobState {
        self.collect_history_outputs(backend, item).await;
        let status = item.get("status");
        let messages = status
            .and_then(|s| s.get("messages"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let seen: Vec<String> = self
            .messages
            .iter()
            .filter_map(|m| m.get(0).and_then(Value::as_str).map(str::to_string))
            .collect();
        for m in messages {
            let (Some(kind), Some(data)) = (m.get(0).and_then(Value::as_str), m.get(1)) else {
                continue;
            };
            if seen.iter().any(|s| s == kind) {
                continue;
            }
            self.on_event(
                backend,
                kind,
                data.clone(),
                &json!({"type": kind, "data": data}).to_string(),
            )
            .await;
        }
        let success = status
            .and_then(|s| s.get("status_str"))
            .and_then(Value::as_str)
            == Some("success");
        self.outcome.unwrap_or(if success {
            JobState::Completed
        } else {
            JobState::Failed
        })
    }

    /// Outputs in the backend's history that were never delivered (their
    /// `executed` frame was lost with the socket).
    async fn collect_history_outputs(&mut self, backend: &BackendClient, item: &Value) {
        let Some(outputs) = item.get("outputs").and_then(Value::as_object) else {
            return;
        };
        for (node, output) in outputs.clone() {
            if self.outputs.contains_key(&node) {
                continue;
            }
            let mut output = output;
            self.deliver(backend, &node, &mut output).await;
            let data = json!({"node": node, "display_node": node, "output": output, "prompt_id": self.prompt_id()});
            self.meta.insert(node.clone(), relay::node_meta(&data));
            self.send(Outbound::Text(
                json!({"type": "executed", "data": data}).to_string(),
            ));
        }
        self.record_progress().await;
    }

    async fn collect_from_history(&mut self, backend: &BackendClient) {
        if let Ok(history) = backend.history(&self.prompt_id()).await {
            if let Some(item) = history.get(self.prompt_id()).cloned() {
                self.collect_history_outputs(backend, &item).await;
            }
        }
    }

    /// Copies each output file into the owner's folders and points the
    /// output at the copy's name (which differs when the user already has a
    /// different file by that name).
    async fn collect_outputs(&self, backend: &BackendClient, output: &mut Value) {
        let workspace = self.shared.workspaces.user(&self.owner.name);
        for file in relay::output_files(output) {
            let fetched = match self.received.get(&file) {
                Some(bytes) => Ok(bytes.clone()),
                None => {
                    backend
                        .download(&file.filename, &file.subfolder, &file.kind)
                        .await
                }
            };
            let bytes = match fetched {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(job = %self.job.id, file = %file.filename, error = %e, "could not copy an output from the backend");
                    relay::remove_output(output, &file);
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
                    tracing::error!(job = %self.job.id, file = %file.filename, error = %e, "could not store an output");
                    relay::remove_output(output, &file);
                }
            }
        }
    }

    /// Uploads every input file the prompt names (image pickers) to the
    /// backend under a content-addressed name, and rewrites the prompt to
    /// use it, so two users' `photo.png` never collide there.
    async fn push_inputs(&self, backend: &BackendClient) -> Result<Value, Failure> {
        let (prompt, files) = self.content_addressed_inputs().await?;
        for (name, bytes) in files {
            backend
                .upload_input(&name, bytes)
                .await
                .map_err(Failure::backend)?;
        }
        Ok(prompt)
    }

    /// The prompt with each input file (image pickers) renamed to a
    /// content-addressed name, and those files' bytes.
    async fn content_addressed_inputs(&self) -> Result<(Value, Vec<(String, Vec<u8>)>), Failure> {
        let mut prompt = self.job.prompt.clone();
        let mut files = Vec::new();
        let Ok(catalogue) = self.shared.catalogue.snapshot().await else {
            return Ok((prompt, files));
        };
        let workspace = self.shared.workspaces.user(&self.owner.name);
        let Some(nodes) = prompt.as_object_mut() else {
            return Ok((prompt, files));
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
                    retryable: false,
                    not_started: false,
                })?;
                let stored = content_name(&rel, &bytes);
                *value = Value::String(stored.clone());
                if !files.iter().any(|(n, _): &(String, Vec<u8>)| *n == stored) {
                    files.push((stored, bytes));
                }
            }
        }
        Ok((prompt, files))
    }

    /// Runs the job through a `comfyume worker`: one streaming request
    /// carries the prompt and its inputs and brings back every event and
    /// output file. Dropping the stream (on a time-out) makes the worker
    /// cancel the job.
    async fn execute_worker(
        &mut self,
        backend: &BackendClient,
        cancel: &tokio::sync::Notify,
    ) -> Result<JobState, Failure> {
        let (prompt, files) = self.content_addressed_inputs().await?;
        let request = RunRequest {
            job_id: *self.job.id.as_uuid(),
            prompt: prompt.as_object().cloned().unwrap_or_default(),
            extra_data: backend_extra_data(&self.job.extra_data)
                .as_object()
                .cloned()
                .unwrap_or_default(),
            partial_execution_targets: self.job.partial_targets.clone(),
            inputs: files
                .into_iter()
                .map(|(name, bytes)| InputFile::with_data(name, bytes))
                .collect(),
        };
        let stream = backend.worker().run(&request);
        futures_util::pin_mut!(stream);
        let prompt_id = self.prompt_id();
        let mut told_cold = false;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout_at(self.deadline.into(), stream.next()) => next,
                _ = cancel.notified() => {
                    // Dropping the stream makes the worker interrupt the
                    // prompt; the owner hears it as ComfyUI would say it.
                    let data = json!({
                        "prompt_id": prompt_id,
                        "node_id": "",
                        "node_type": "",
                        "executed": [],
                        "timestamp": now_ms(),
                    });
                    let raw = json!({"type": "execution_interrupted", "data": data}).to_string();
                    self.on_event(backend, "execution_interrupted", data, &raw).await;
                    return Ok(JobState::Cancelled);
                }
            };
            let next = match next {
                Err(_) => {
                    return Err(Failure {
                        message: format!(
                            "Your job ran past the {}-minute limit and was stopped.",
                            self.job_limit_minutes()
                        ),
                        kind: "TimeoutError",
                        retryable: true,
                        not_started: false,
                    });
                }
                Ok(None) => {
                    return Err(Failure::lost(
                        "the worker's stream ended before the job did",
                    ));
                }
                Ok(Some(Err(e))) => return Err(worker_failure(e)),
                Ok(Some(Ok(frame))) => frame,
            };
            match next {
                WorkerFrame::Progress(p) => {
                    let cold =
                        p.get("state").and_then(Value::as_str) == Some("waiting_for_comfyui");
                    if cold && !std::mem::replace(&mut told_cold, true) {
                        self.shared.notify(
                            self.job.owner,
                            "The GPU is starting up (cold start); your job runs as soon as it is ready.",
                            &format!("comfyume-cold-{}", self.job.id),
                        );
                    }
                }
                WorkerFrame::Text(text) => {
                    if let Frame::Event { kind, data } = relay::classify(&text, &prompt_id) {
                        self.on_event(backend, &kind, data, &text).await;
                    }
                }
                WorkerFrame::Binary(bytes) => {
                    if relay::binary_is_ours(&bytes, &prompt_id, self.executing) {
                        self.send(Outbound::Binary(bytes.to_vec()));
                    }
                }
                WorkerFrame::File { header, data } => {
                    let file = OutputFile {
                        filename: header.filename,
                        subfolder: header.subfolder,
                        kind: header.kind,
                    };
                    self.received.insert(file, data.to_vec());
                }
                WorkerFrame::End { outcome } => {
                    return Ok(self.outcome.unwrap_or(match outcome {
                        WorkerOutcome::Success => JobState::Completed,
                        WorkerOutcome::Error => JobState::Failed,
                        WorkerOutcome::Interrupted => JobState::Cancelled,
                    }));
                }
                WorkerFrame::Error { message, rejected } => {
                    return Err(match rejected {
                        Some(body) => Failure::backend(BackendError::Rejected {
                            backend: backend.name.clone(),
                            body,
                        }),
                        None => Failure {
                            message: format!("The GPU worker could not run this prompt: {message}"),
                            kind: "BackendError",
                            retryable: true,
                            not_started: false,
                        },
                    });
                }
            }
        }
    }

    /// Tells the owner why the job failed, as an `execution_error` the
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

/// How long a running job's backend may stay silent before the gateway
/// asks it about the job.
const SILENCE_CHECK: Duration = Duration::from_secs(60);

/// Why following the socket stopped early.
enum Lost {
    Socket(String),
    /// No frame for [`SILENCE_CHECK`].
    Silent,
    TimedOut,
}

enum Reconciled {
    Finished(JobState),
    StillThere,
    Unknown,
}

/// Whether a backend's `GET /queue` answer lists `prompt_id` as running or
/// pending.
fn queue_holds(queue: &Value, prompt_id: &str) -> bool {
    ["queue_running", "queue_pending"].iter().any(|k| {
        queue
            .get(*k)
            .and_then(Value::as_array)
            .is_some_and(|items| {
                items
                    .iter()
                    .any(|i| i.get(1).and_then(Value::as_str) == Some(prompt_id))
            })
    })
}

/// `comfyume-<first 24 hex digits of the SHA-256>.<ext>`.
fn content_name(rel: &SafeRelPath, bytes: &[u8]) -> String {
    let ext = rel
        .file_name()
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_else(|| "png".into());
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("comfyume-{hex}.{ext}")
}

/// Opens the backend's socket as `client_id` and announces our features.
async fn open_socket(
    backend: &BackendClient,
    client_id: &str,
) -> Result<BackendSocket, BackendError> {
    let mut ws = backend.connect_ws(client_id).await?;
    announce_features(&mut ws).await?;
    Ok(ws)
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
    tokio::time::timeout(Duration::from_secs(10), wait)
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
        let spec = info
            .get("input")
            .and_then(|i| i.get(*section))
            .and_then(|s| s.get(input));
        spec.and_then(|s| s.get(1))
            .and_then(|o| o.get("image_upload"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    })
}

/// A worker's refusal or breakage as a failure: only a malformed request is
/// the job's fault; anything else may go better on another worker.
fn worker_failure(e: WorkerError) -> Failure {
    let retryable = !matches!(e, WorkerError::BadRequest(_));
    if matches!(e, WorkerError::Busy) {
        return Failure {
            message: e.to_string(),
            kind: "BackendError",
            retryable: true,
            not_started: true,
        };
    }
    Failure {
        message: format!("The GPU worker could not run this prompt: {e}"),
        kind: "BackendError",
        retryable,
        not_started: false,
    }
}
