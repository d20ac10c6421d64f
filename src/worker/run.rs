//! One job against the local ComfyUI, written as frames into the body of
//! the `POST /v1/run` response that carried it.
//!
//! The steps: wait until ComfyUI answers (reporting the wait), upload the
//! inputs that came with data, open ComfyUI's socket under a fresh client
//! id and announce previews with metadata, queue the prompt under the job's
//! id, then relay that prompt's frames until its final `executing`. Each
//! output file goes out before the `executed` frame that names it, so the
//! gateway has stored it before it tells a browser it exists.
//!
//! Two things can break a run midway:
//! - ComfyUI's socket drops: the worker reconnects once and asks ComfyUI's
//!   history whether the prompt already finished; what the stream missed is
//!   rebuilt from that history. A second drop, or a failed reconnect, ends
//!   in ERROR unless the history shows the prompt finished.
//! - The caller goes away (the response body is dropped): the prompt is
//!   removed from ComfyUI's queue and interrupted, and the run waits for
//!   ComfyUI to let go of it, so the worker's job count stays true.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::stream::{FileHeader, Frame, Outcome};
use crate::backend::{BackendClient, BackendError, BackendSocket};
use crate::dispatch::relay::{self, Frame as Incoming};

/// How often a cold ComfyUI is probed (and the wait reported).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long one readiness probe may take.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// After this long without a frame the worker sends a `running` progress
/// frame, so proxies with idle timeouts keep the stream open through a long
/// silent node.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a cancelled job may take to let go of ComfyUI.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long ComfyUI may take to answer our feature flags.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated job.
pub(super) struct Job {
    /// Canonical UUID: ComfyUI's `prompt_id`.
    pub id: String,
    pub prompt: Map<String, Value>,
    pub extra_data: Map<String, Value>,
    pub targets: Option<Vec<String>>,
    /// Inputs that came with their bytes.
    pub uploads: Vec<Upload>,
}

/// An input file to put into ComfyUI's input folder.
pub(super) struct Upload {
    pub subfolder: String,
    pub file_name: String,
    pub data: Vec<u8>,
}

/// The response body's end of the channel. Its receiver is dropped when
/// the caller disconnects, which is how a run learns of it.
pub(super) struct Sink {
    tx: mpsc::Sender<Bytes>,
    last_sent: Instant,
}

/// The caller is gone.
struct Gone;

impl Sink {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            last_sent: Instant::now(),
        }
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), Gone> {
        match frame.encode() {
            Ok(bytes) => self.send_encoded(bytes).await,
            Err(e) => {
                // Only a ComfyUI frame over 1 GiB could get here (files are
                // checked before they are sent).
                tracing::error!(error = %e, "dropping a frame too large to send");
                Ok(())
            }
        }
    }

    async fn send_encoded(&mut self, bytes: Bytes) -> Result<(), Gone> {
        self.tx.send(bytes).await.map_err(|_| Gone)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    async fn gone(&self) {
        self.tx.closed().await
    }
}

/// Why a run stopped early.
enum Stop {
    Gone,
    Failed {
        message: String,
        rejected: Option<Value>,
    },
}

impl From<Gone> for Stop {
    fn from(_: Gone) -> Self {
        Stop::Gone
    }
}

fn failed(message: String) -> Stop {
    Stop::Failed {
        message,
        rejected: None,
    }
}

/// Runs `job` on `comfy`, writing its frames to `sink`; returns when the
/// stream is complete and ComfyUI no longer holds the job.
pub(super) async fn run(comfy: &BackendClient, ready_timeout: Duration, job: Job, sink: Sink) {
    let mut run = Run {
        comfy,
        id: job.id.clone(),
        sink,
        relayed: HashSet::new(),
        executed: HashSet::new(),
        outcome: None,
        submitted: false,
        queued_at: Instant::now(),
    };
    let mut socket = None;
    match run.execute(job, ready_timeout, &mut socket).await {
        Ok(()) => {}
        Err(Stop::Gone) => {
            tracing::info!(job = %run.id, "the caller went away; cancelling the job");
            if run.submitted {
                run.cancel().await;
                if let Some(ws) = socket.as_mut() {
                    drain(comfy, ws, &run.id).await;
                }
            }
        }
        Err(Stop::Failed { message, rejected }) => {
            tracing::warn!(job = %run.id, %message, "job failed");
            if run.submitted {
                // The gateway retries a failed job elsewhere; a copy left
                // running here would only waste this GPU.
                run.cancel().await;
            }
            // If the caller is gone too, there is no one left to tell.
            let _ = run.sink.send(&Frame::Error { message, rejected }).await;
        }
    }
}

struct Run<'a> {
    comfy: &'a BackendClient,
    id: String,
    sink: Sink,
    /// History-kept message types (`execution_start`, …) already relayed.
    relayed: HashSet<String>,
    /// Nodes whose `executed` was already relayed.
    executed: HashSet<String>,
    outcome: Option<Outcome>,
    /// `POST /prompt` was sent (ComfyUI may hold the job).
    submitted: bool,
    queued_at: Instant,
}

impl Run<'_> {
    async fn execute(
        &mut self,
        job: Job,
        ready_timeout: Duration,
        socket: &mut Option<BackendSocket>,
    ) -> Result<(), Stop> {
        self.wait_ready(ready_timeout).await?;
        for upload in job.uploads {
            self.upload(upload).await?;
        }
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let ws = socket.insert(self.open_socket(&client_id).await?);
        if self.sink.is_gone() {
            return Err(Stop::Gone);
        }
        let mut body = json!({
            "prompt": job.prompt,
            "client_id": client_id,
            "prompt_id": self.id,
            "extra_data": job.extra_data,
        });
        if let Some(targets) = job.targets {
            body["partial_execution_targets"] = json!(targets);
        }
        let answer = match self.comfy.post_prompt(&body).await {
            Ok(answer) => answer,
            Err(BackendError::Rejected { body, .. }) => {
                return Err(Stop::Failed {
                    message: rejection_message(&body),
                    rejected: Some(body),
                });
            }
            Err(e) => {
                // The request may have reached ComfyUI before it failed.
                self.submitted = true;
                return Err(failed(format!("ComfyUI did not take the prompt: {e}")));
            }
        };
        self.submitted = true;
        self.queued_at = Instant::now();
        let mut queued = Map::new();
        queued.insert("state".into(), json!("queued"));
        for key in ["number", "node_errors"] {
            if let Some(v) = answer.get(key) {
                queued.insert(key.into(), v.clone());
            }
        }
        self.progress(queued).await?;
        self.relay(ws, &client_id).await
    }

    async fn progress(&mut self, state: Map<String, Value>) -> Result<(), Gone> {
        self.sink.send(&Frame::Progress(state)).await
    }

    /// Probes `/system_stats` until it answers, reporting each miss.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), Stop> {
        let start = Instant::now();
        loop {
            let probe = tokio::time::timeout(PROBE_TIMEOUT, self.comfy.system_stats());
            let ready = tokio::select! {
                answer = probe => matches!(answer, Ok(Ok(_))),
                () = self.sink.gone() => return Err(Stop::Gone),
            };
            if ready {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(failed(format!(
                    "ComfyUI at {} did not become ready within {} s",
                    self.comfy.url(),
                    timeout.as_secs()
                )));
            }
            let mut state = Map::new();
            state.insert("state".into(), json!("waiting_for_comfyui"));
            state.insert("waited_ms".into(), json!(waited.as_millis() as u64));
            self.progress(state).await?;
            tokio::select! {
                () = tokio::time::sleep(POLL_INTERVAL.min(timeout - waited)) => {}
                () = self.sink.gone() => return Err(Stop::Gone),
            }
        }
    }

    async fn upload(&mut self, upload: Upload) -> Result<(), Stop> {
        let name = if upload.subfolder.is_empty() {
            upload.file_name.clone()
        } else {
            format!("{}/{}", upload.subfolder, upload.file_name)
        };
        let stored = self
            .comfy
            .upload_input_to(&upload.subfolder, &upload.file_name, upload.data)
            .await
            .map_err(|e| failed(format!("could not upload input '{name}' to ComfyUI: {e}")))?;
        // With overwrite on, ComfyUI keeps the name; anything else would
        // leave the prompt pointing at a different file.
        if stored != upload.file_name {
            return Err(failed(format!(
                "ComfyUI stored input '{name}' as '{stored}'"
            )));
        }
        Ok(())
    }

    async fn open_socket(&self, client_id: &str) -> Result<BackendSocket, Stop> {
        let mut ws = self
            .comfy
            .connect_ws(client_id)
            .await
            .map_err(|e| failed(format!("could not open ComfyUI's WebSocket: {e}")))?;
        send_features(&mut ws).await?;
        wait_features_reply(&mut ws).await?;
        Ok(ws)
    }

    /// Relays the prompt's frames until its final `executing`.
    async fn relay(&mut self, ws: &mut BackendSocket, client_id: &str) -> Result<(), Stop> {
        let mut reconnected = false;
        loop {
            let heartbeat_at = self.sink.last_sent + HEARTBEAT;
            let next = tokio::select! {
                () = self.sink.gone() => return Err(Stop::Gone),
                () = tokio::time::sleep_until(heartbeat_at) => {
                    let mut state = Map::new();
                    state.insert("state".into(), json!("running"));
                    state.insert("elapsed_ms".into(), json!(self.queued_at.elapsed().as_millis() as u64));
                    self.progress(state).await?;
                    continue;
                }
                next = ws.next() => next,
            };
            let lost = match next {
                Some(Ok(Message::Text(text))) => {
                    match relay::classify(&text, &self.id) {
                        Incoming::Event { kind, data } => {
                            self.on_event(&kind, &data, text.as_str()).await?;
                        }
                        Incoming::Done => {
                            if reconnected {
                                // Whatever ran while we were away.
                                if let Some(entry) = self.history_entry().await {
                                    self.catch_up(&entry).await?;
                                }
                            }
                            self.sink.send(&Frame::Text(text.to_string())).await?;
                            return self.end(self.outcome.unwrap_or(Outcome::Error)).await;
                        }
                        Incoming::Status | Incoming::FeatureFlags | Incoming::Ignore => {}
                    }
                    continue;
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if relay::binary_is_ours(
                        &bytes,
                        &self.id,
                        self.relayed.contains("execution_start"),
                    ) {
                        self.sink.send(&Frame::Binary(bytes)).await?;
                    }
                    continue;
                }
                Some(Ok(Message::Close(_))) => "ComfyUI closed its WebSocket".to_string(),
                Some(Ok(_)) => continue,
                Some(Err(e)) => format!("ComfyUI's WebSocket failed: {e}"),
                None => "ComfyUI's WebSocket ended".to_string(),
            };
            tracing::warn!(job = %self.id, reason = %lost, reconnected, "lost ComfyUI's socket mid-run");
            if !reconnected {
                reconnected = true;
                // Same client id: ComfyUI addresses the prompt's events to it.
                if let Ok(mut fresh) = self.comfy.connect_ws(client_id).await {
                    // Not waiting for the reply: events of the running
                    // prompt may come first, and must not be swallowed.
                    if send_features(&mut fresh).await.is_ok() {
                        *ws = fresh;
                        // Registered again before asking, so a prompt that
                        // ends from now on is seen on the socket, and one
                        // that ended before is in the history.
                        if let Some(entry) = self.history_entry().await {
                            return self.finish_from_history(&entry).await;
                        }
                        continue;
                    }
                }
            }
            return match self.history_entry().await {
                Some(entry) => self.finish_from_history(&entry).await,
                None => Err(failed(format!(
                    "lost the connection to ComfyUI mid-run ({lost}) and its history does not show the job finished"
                ))),
            };
        }
    }

    async fn on_event(&mut self, kind: &str, data: &Value, raw: &str) -> Result<(), Gone> {
        match kind {
            "execution_success" => self.outcome = Some(Outcome::Success),
            "execution_error" => self.outcome = Some(Outcome::Error),
            "execution_interrupted" => self.outcome = Some(Outcome::Interrupted),
            "executed" => {
                self.send_outputs(data).await?;
                if let Some(node) = data.get("node").and_then(Value::as_str) {
                    self.executed.insert(node.to_string());
                }
            }
            _ => {}
        }
        if relay::HISTORY_MESSAGES.contains(&kind) {
            self.relayed.insert(kind.to_string());
        }
        self.sink.send(&Frame::Text(raw.to_string())).await
    }

    /// Sends every file an `executed` frame names, ahead of that frame.
    async fn send_outputs(&mut self, data: &Value) -> Result<(), Gone> {
        let Some(output) = data.get("output") else {
            return Ok(());
        };
        for file in relay::output_files(output) {
            let header = FileHeader {
                filename: file.filename.clone(),
                subfolder: file.subfolder.clone(),
                kind: file.kind.clone(),
            };
            let problem = match self
                .comfy
                .download(&file.filename, &file.subfolder, &file.kind)
                .await
            {
                Ok(bytes) => {
                    let frame = Frame::File {
                        header: header.clone(),
                        data: Bytes::from(bytes),
                    };
                    match frame.encode() {
                        Ok(encoded) => {
                            self.sink.send_encoded(encoded).await?;
                            continue;
                        }
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            tracing::error!(job = %self.id, file = %file.filename, reason = %problem, "an output file cannot be sent");
            let mut state = Map::new();
            state.insert("state".into(), json!("output_unavailable"));
            state.insert("filename".into(), json!(header.filename));
            state.insert("subfolder".into(), json!(header.subfolder));
            state.insert("type".into(), json!(header.kind));
            state.insert("reason".into(), json!(problem));
            self.progress(state).await?;
        }
        Ok(())
    }

    async fn end(&mut self, outcome: Outcome) -> Result<(), Stop> {
        self.sink.send(&Frame::End { outcome }).await?;
        Ok(())
    }

    /// The prompt's history entry, if ComfyUI has finished it.
    async fn history_entry(&self) -> Option<Value> {
        match self.comfy.history(&self.id).await {
            Ok(history) => history.get(&self.id).filter(|e| e.is_object()).cloned(),
            Err(e) => {
                tracing::warn!(job = %self.id, error = %e, "could not read ComfyUI's history");
                None
            }
        }
    }

    /// Ends the stream from a finished prompt's history: what was missed,
    /// the final `executing`, END.
    async fn finish_from_history(&mut self, entry: &Value) -> Result<(), Stop> {
        self.catch_up(entry).await?;
        let done = json!({"type": "executing", "data": {"node": null, "prompt_id": self.id}});
        self.sink.send(&Frame::Text(done.to_string())).await?;
        self.end(self.outcome.unwrap_or(Outcome::Error)).await
    }

    /// Relays, rebuilt from the history entry, the frames a socket drop made
    /// us miss: the start messages, the `executed` of each output node (with
    /// its files first), and how the prompt ended. These frames are
    /// ComfyUI's shapes but not its bytes.
    async fn catch_up(&mut self, entry: &Value) -> Result<(), Gone> {
        let messages: Vec<(String, Value)> = entry
            .pointer("/status/messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m.get(0)?.as_str()?.to_string(), m.get(1)?.clone())))
            .collect();
        let (starts, ends): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .filter(|(kind, _)| relay::HISTORY_MESSAGES.contains(&kind.as_str()))
            .partition(|(kind, _)| kind == "execution_start" || kind == "execution_cached");
        for (kind, data) in starts {
            self.relay_missed(&kind, data).await?;
        }
        let outputs = entry
            .get("outputs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (node, output) in outputs {
            if self.executed.contains(&node) {
                continue;
            }
            let display = entry
                .pointer(&format!("/meta/{}/display_node", pointer_escape(&node)))
                .cloned()
                .unwrap_or_else(|| json!(node));
            let data = json!({"node": node, "display_node": display, "output": output, "prompt_id": self.id});
            self.relay_missed("executed", data).await?;
        }
        for (kind, data) in ends {
            self.relay_missed(&kind, data).await?;
        }
        if self.outcome.is_none() {
            self.outcome = Some(history_outcome(entry));
        }
        Ok(())
    }

    async fn relay_missed(&mut self, kind: &str, data: Value) -> Result<(), Gone> {
        let already = if kind == "executed" {
            data.get("node")
                .and_then(Value::as_str)
                .is_some_and(|n| self.executed.contains(n))
        } else {
            self.relayed.contains(kind)
        };
        if already {
            return Ok(());
        }
        let text = json!({"type": kind, "data": data}).to_string();
        self.on_event(kind, &data, &text).await
    }

    /// Takes the job back from ComfyUI: out of the pending queue first
    /// (an interrupt ignores a prompt that is not running), then interrupts
    /// it if it runs.
    async fn cancel(&self) {
        if let Err(e) = self.comfy.delete_queued(&self.id).await {
            tracing::warn!(job = %self.id, error = %e, "could not remove the job from ComfyUI's queue");
        }
        if let Err(e) = self.comfy.interrupt(&self.id).await {
            tracing::warn!(job = %self.id, error = %e, "could not interrupt the job on ComfyUI");
        }
    }
}

/// How a finished prompt ended, from its history entry.
fn history_outcome(entry: &Value) -> Outcome {
    let messages = entry.pointer("/status/messages").and_then(Value::as_array);
    let has = |kind: &str| {
        messages
            .into_iter()
            .flatten()
            .any(|m| m.get(0).and_then(Value::as_str) == Some(kind))
    };
    if has("execution_interrupted") {
        Outcome::Interrupted
    } else if entry.pointer("/status/status_str").and_then(Value::as_str) == Some("success") {
        Outcome::Success
    } else {
        Outcome::Error
    }
}

/// A JSON-pointer segment for `s` (`~` and `/` escaped).
fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// ComfyUI's own words for why it refused a prompt.
fn rejection_message(body: &Value) -> String {
    let error = body.get("error");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("invalid prompt");
    match error.and_then(|e| e.get("details")).and_then(Value::as_str) {
        Some(details) if !details.is_empty() => {
            format!("ComfyUI refused the prompt: {message} ({details})")
        }
        _ => format!("ComfyUI refused the prompt: {message}"),
    }
}

/// Asks for previews with metadata (binary type 4), which name their
/// prompt, so they can be told apart from other prompts' previews.
async fn send_features(ws: &mut BackendSocket) -> Result<(), Stop> {
    let flags = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}});
    ws.send(Message::Text(flags.to_string().into()))
        .await
        .map_err(|e| failed(format!("could not talk on ComfyUI's WebSocket: {e}")))
}

/// Waits for ComfyUI's feature-flags reply: once it came, the flags apply to
/// every preview of the prompt we are about to queue.
async fn wait_features_reply(ws: &mut BackendSocket) -> Result<(), Stop> {
    let wait = async {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Text(text))
                    if matches!(relay::classify(&text, ""), Incoming::FeatureFlags) =>
                {
                    return Ok(());
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Err(failed(
            "ComfyUI's WebSocket closed during the handshake".into(),
        ))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, wait)
        .await
        .map_err(|_| {
            failed(format!(
                "ComfyUI did not answer the WebSocket handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        })?
}

/// After a cancel: waits until ComfyUI no longer holds the job (it was
/// removed while pending, or its run ended), or [`DRAIN_TIMEOUT`].
async fn drain(comfy: &BackendClient, ws: &mut BackendSocket, id: &str) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match comfy.queue().await {
            Ok(queue) if !queue_holds(&queue, id) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not read ComfyUI's queue after a cancel");
                return;
            }
        }
        // The socket says when the run ends; the queue is asked again each
        // poll for the case where it was still pending.
        let until = (Instant::now() + POLL_INTERVAL).min(deadline);
        loop {
            tokio::select! {
                next = ws.next() => match next {
                    Some(Ok(Message::Text(text))) => {
                        if relay::classify(&text, id) == Incoming::Done {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
                () = tokio::time::sleep_until(until) => break,
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(job = %id, "ComfyUI still holds a cancelled job");
            return;
        }
    }
}

/// Whether `GET /queue` lists `id` as running or pending. Items are
/// `[number, prompt_id, …]`.
fn queue_holds(queue: &Value, id: &str) -> bool {
    ["queue_running", "queue_pending"].iter().any(|key| {
        queue
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|item| item.get(1).and_then(Value::as_str) == Some(id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, BackendKind};
    use crate::worker::stream::Decoder;

    /// The path taken when ComfyUI's socket dropped and the prompt finished
    /// meanwhile: everything not yet relayed comes from its history entry,
    /// files before their `executed`, then the final frames.
    #[tokio::test]
    async fn a_finished_prompt_is_rebuilt_from_its_history() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::sim::run_with(
            listener,
            crate::sim::SimOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let comfy = BackendClient::new(
            &BackendConfig {
                name: "sim".into(),
                kind: BackendKind::Sim,
                url,
                slots: 1,
                group: None,
                token: None,
            },
            reqwest::Client::new(),
        );
        let id = uuid::Uuid::new_v4().to_string();
        let prompt = json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 255}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "rebuilt"}},
        });
        comfy
            .post_prompt(&json!({"prompt": prompt, "prompt_id": id}))
            .await
            .expect("queued");
        let mut entry = None;
        for _ in 0..600 {
            let history = comfy.history(&id).await.expect("history");
            if let Some(e) = history.get(&id) {
                entry = Some(e.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let entry = entry.expect("the prompt finished");

        let (tx, mut rx) = mpsc::channel(64);
        let mut run = Run {
            comfy: &comfy,
            id: id.clone(),
            sink: Sink::new(tx),
            // The socket had carried the start before it dropped.
            relayed: HashSet::from(["execution_start".to_string()]),
            executed: HashSet::new(),
            outcome: None,
            submitted: true,
            queued_at: Instant::now(),
        };
        assert!(run.finish_from_history(&entry).await.is_ok());
        drop(run);
        let mut decoder = Decoder::new();
        let mut frames = Vec::new();
        while let Some(bytes) = rx.recv().await {
            frames.extend(decoder.push(&bytes).expect("valid frames"));
        }
        decoder.finish().expect("a complete stream");

        let kinds: Vec<String> = frames
            .iter()
            .map(|f| match f {
                Frame::Text(t) => {
                    let v: Value = serde_json::from_str(t).expect("json");
                    format!("{}:{}", v["type"].as_str().unwrap_or(""), v["data"]["node"])
                }
                Frame::File { header, .. } => format!("file:{}", header.filename),
                other => format!("{other:?}"),
            })
            .collect();
        let file = entry["outputs"]["3"]["images"][0]["filename"]
            .as_str()
            .expect("an output file");
        assert_eq!(
            kinds,
            vec![
                "execution_cached:null".to_string(),
                format!("file:{file}"),
                "executed:\"3\"".into(),
                "execution_success:null".into(),
                "executing:null".into(),
                "End { outcome: Success }".into(),
            ]
        );
        let Frame::Text(executed) = &frames[2] else {
            panic!("executed is text")
        };
        let executed: Value = serde_json::from_str(executed).expect("json");
        assert_eq!(executed["data"]["prompt_id"], json!(id));
        assert_eq!(executed["data"]["output"], entry["outputs"]["3"]);
    }

    #[test]
    fn outcome_from_history() {
        let success = json!({"status": {"status_str": "success", "completed": true, "messages": [["execution_success", {}]]}});
        assert_eq!(history_outcome(&success), Outcome::Success);
        let interrupted = json!({"status": {"status_str": "error", "completed": false, "messages": [["execution_interrupted", {}]]}});
        assert_eq!(history_outcome(&interrupted), Outcome::Interrupted);
        let error = json!({"status": {"status_str": "error", "completed": false, "messages": [["execution_error", {}]]}});
        assert_eq!(history_outcome(&error), Outcome::Error);
        assert_eq!(history_outcome(&json!({})), Outcome::Error);
    }

    #[test]
    fn queue_listing() {
        let q = json!({"queue_running": [[0, "a", {}, {}, []]], "queue_pending": [[1, "b", {}, {}, []]]});
        assert!(queue_holds(&q, "a"));
        assert!(queue_holds(&q, "b"));
        assert!(!queue_holds(&q, "c"));
        assert!(!queue_holds(&json!({}), "a"));
    }

    #[test]
    fn rejection_messages_quote_comfyui() {
        let body = json!({"error": {"type": "missing_node_type", "message": "Node 'X' not found.", "details": "Node ID '#1'"}});
        assert_eq!(
            rejection_message(&body),
            "ComfyUI refused the prompt: Node 'X' not found. (Node ID '#1')"
        );
        assert_eq!(
            rejection_message(&json!(null)),
            "ComfyUI refused the prompt: invalid prompt"
        );
    }
}
