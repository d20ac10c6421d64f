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

use std::time::Duration;

use bytes::Bytes;
use comfyume_protocol::client::rejection_summary;
use comfyume_protocol::frames;
use comfyume_protocol::worker::stream::{FileHeader, Frame, Outcome};
use comfyume_protocol::{
    BackendError, ComfyClient, ComfySession, HistoryEntry, Incoming, JobStatus,
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

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
pub(super) async fn run(comfy: &ComfyClient, ready_timeout: Duration, job: Job, sink: Sink) {
    let mut run = Run {
        comfy,
        id: job.id.clone(),
        sink,
        outcome: None,
        submitted: false,
        queued_at: Instant::now(),
    };
    let mut session = None;
    match run.execute(job, ready_timeout, &mut session).await {
        Ok(()) => {}
        Err(Stop::Gone) => {
            tracing::info!(job = %run.id, "the caller went away; cancelling the job");
            if run.submitted {
                run.cancel().await;
                if let Some(session) = session.as_mut() {
                    drain(session).await;
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
    comfy: &'a ComfyClient,
    id: String,
    sink: Sink,
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
        session: &mut Option<ComfySession>,
    ) -> Result<(), Stop> {
        self.wait_ready(ready_timeout).await?;
        for upload in job.uploads {
            self.upload(upload).await?;
        }
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let opened = ComfySession::open(self.comfy.clone(), client_id, self.id.clone())
            .await
            .map_err(|e| failed(format!("could not open ComfyUI's WebSocket: {e}")))?;
        let session = session.insert(opened);
        if self.sink.is_gone() {
            return Err(Stop::Gone);
        }
        let prompt = Value::Object(job.prompt);
        let extra_data = Value::Object(job.extra_data);
        let answer = match session
            .submit(&prompt, &extra_data, job.targets.as_deref())
            .await
        {
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
        self.relay(session).await
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

    /// Relays the prompt's frames until its final `executing`.
    async fn relay(&mut self, session: &mut ComfySession) -> Result<(), Stop> {
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
                next = session.next() => next,
            };
            let lost = match next {
                Ok(Incoming::Event { kind, data, raw }) => {
                    self.on_event(&kind, &data, raw).await?;
                    continue;
                }
                Ok(Incoming::Done { raw }) => {
                    if reconnected || self.outcome.is_none() {
                        // Whatever ran while we were away, and how it
                        // ended if no frame said.
                        if let Some(entry) = self.history_entry(session).await {
                            self.catch_up(session, &entry).await?;
                        }
                    }
                    self.sink.send(&Frame::Text(raw)).await?;
                    return self.end(self.outcome.unwrap_or(Outcome::Error)).await;
                }
                Ok(Incoming::Binary(bytes)) => {
                    self.sink.send(&Frame::Binary(bytes)).await?;
                    continue;
                }
                Err(lost) => format!("ComfyUI's WebSocket failed: {lost}"),
            };
            tracing::warn!(job = %self.id, reason = %lost, reconnected, "lost ComfyUI's socket mid-run");
            if !reconnected {
                reconnected = true;
                // Registered again before asking, so a prompt that ends
                // from now on is seen on the socket, and one that ended
                // before is in the history.
                if session.reopen().await.is_ok() {
                    if let Some(entry) = self.history_entry(session).await {
                        return self.finish_from_history(session, &entry).await;
                    }
                    continue;
                }
            }
            return match self.history_entry(session).await {
                Some(entry) => self.finish_from_history(session, &entry).await,
                None => Err(failed(format!(
                    "lost the connection to ComfyUI mid-run ({lost}) and its history does not show the job finished"
                ))),
            };
        }
    }

    async fn on_event(&mut self, kind: &str, data: &Value, raw: String) -> Result<(), Gone> {
        if let Some(outcome) = Outcome::of_message(kind) {
            self.outcome = Some(outcome);
        }
        if kind == "executed" {
            self.send_outputs(data).await?;
        }
        self.sink.send(&Frame::Text(raw)).await
    }

    /// Sends every file an `executed` frame names, ahead of that frame.
    async fn send_outputs(&mut self, data: &Value) -> Result<(), Gone> {
        let Some(output) = data.get("output") else {
            return Ok(());
        };
        for file in frames::output_files(output) {
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
    async fn history_entry(&self, session: &ComfySession) -> Option<HistoryEntry> {
        match session.status().await {
            Ok(JobStatus::Finished(entry)) => Some(entry),
            Ok(JobStatus::Queued | JobStatus::Unknown) => None,
            Err(e) => {
                tracing::warn!(job = %self.id, error = %e, "could not ask ComfyUI about the job");
                None
            }
        }
    }

    /// Ends the stream from a finished prompt's history: what was missed,
    /// the final `executing`, END.
    async fn finish_from_history(
        &mut self,
        session: &mut ComfySession,
        entry: &HistoryEntry,
    ) -> Result<(), Stop> {
        self.catch_up(session, entry).await?;
        let done = json!({"type": "executing", "data": {"node": null, "prompt_id": self.id}});
        self.sink.send(&Frame::Text(done.to_string())).await?;
        self.end(self.outcome.unwrap_or(Outcome::Error)).await
    }

    /// Relays, rebuilt from the history entry, the frames a socket drop made
    /// us miss (each output's files before its `executed`).
    async fn catch_up(
        &mut self,
        session: &mut ComfySession,
        entry: &HistoryEntry,
    ) -> Result<(), Gone> {
        for missed in session.missed_frames(entry) {
            session.saw(&missed.kind, &missed.data);
            let text = missed.to_text();
            self.on_event(&missed.kind, &missed.data, text).await?;
        }
        if self.outcome.is_none() {
            self.outcome = Some(entry.outcome());
        }
        Ok(())
    }

    /// Takes the job back from ComfyUI.
    async fn cancel(&self) {
        if let Err(e) = comfyume_protocol::session::cancel_prompt(self.comfy, &self.id).await {
            tracing::warn!(job = %self.id, error = %e, "could not take the job back from ComfyUI");
        }
    }
}

/// ComfyUI's own words for why it refused a prompt.
fn rejection_message(body: &Value) -> String {
    format!("ComfyUI refused the prompt: {}", rejection_summary(body))
}

/// After a cancel: waits until ComfyUI no longer holds the job (it was
/// removed while pending, or its run ended), or [`DRAIN_TIMEOUT`].
async fn drain(session: &mut ComfySession) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match session.status().await {
            Ok(JobStatus::Queued) => {}
            Ok(JobStatus::Finished(_) | JobStatus::Unknown) => return,
            Err(e) => {
                tracing::warn!(job = %session.prompt_id(), error = %e, "could not ask ComfyUI about a cancelled job");
                return;
            }
        }
        // The socket says when the run ends; the queue is asked again each
        // poll for the case where it was still pending.
        let until = (Instant::now() + POLL_INTERVAL).min(deadline);
        loop {
            match tokio::time::timeout_at(until, session.next()).await {
                Ok(Ok(Incoming::Done { .. })) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => break,
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(job = %session.prompt_id(), "ComfyUI still holds a cancelled job");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comfyume_protocol::worker::stream::Decoder;

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
        tokio::spawn(comfyume_sim::run_with(
            listener,
            comfyume_sim::SimOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let comfy = ComfyClient::new("sim", &url, None, reqwest::Client::new());
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
        let entry = HistoryEntry::from_answer(&json!({ &id: entry }), &id).expect("an entry");
        let mut session = ComfySession::open(comfy.clone(), "rebuild", id.clone())
            .await
            .expect("socket");
        // The socket had carried the start before it dropped.
        session.saw("execution_start", &json!({"prompt_id": id}));

        let (tx, mut rx) = mpsc::channel(64);
        let mut run = Run {
            comfy: &comfy,
            id: id.clone(),
            sink: Sink::new(tx),
            outcome: None,
            submitted: true,
            queued_at: Instant::now(),
        };
        assert!(run.finish_from_history(&mut session, &entry).await.is_ok());
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
        let entry = entry.as_json();
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
}
