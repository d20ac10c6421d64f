//! What the owner hears of a run and what the store keeps of it: each
//! event relayed to the socket the prompt came from, the history-kept
//! messages and outputs recorded as they come, and the closing record.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use comfyume_domain::{Job, JobState};
use comfyume_protocol::frames::{self, HISTORY_MESSAGES};
use serde_json::{Map, Value, json};

use super::Failure;
use crate::clock::now_ms;
use crate::dispatch::Shared;
use crate::hub::Outbound;
use crate::store::Finish;

/// The run's account of the job, shared by every phase.
pub(super) struct Report<'a> {
    shared: &'a Shared,
    pub job: Job,
    /// Outputs delivered to the owner, including by earlier attempts: a
    /// node's outputs are never delivered twice.
    outputs: Map<String, Value>,
    meta: Map<String, Value>,
    messages: Vec<Value>,
    error: Option<Value>,
    /// How the backend said the job ended, once it did.
    pub outcome: Option<JobState>,
    /// Since when outputs delivered to the owner are not in the store yet
    /// (see [`executed`](Self::executed)).
    unsaved_since: Option<Instant>,
    /// Called once the outcome is recorded, before the owner hears the
    /// job's last frame (see [`RunLimits::recorded`](super::RunLimits)).
    recorded: Option<Box<dyn FnOnce() + Send>>,
}

impl<'a> Report<'a> {
    pub fn new(shared: &'a Shared, job: Job) -> Self {
        let outputs = job.outputs.clone();
        let meta = job.meta.clone();
        // A job picked up again after a restart keeps the messages (its
        // `execution_start`) recorded so far; a fresh attempt has none.
        let messages = job.messages.clone();
        Self {
            shared,
            job,
            outputs,
            meta,
            messages,
            error: None,
            outcome: None,
            unsaved_since: None,
            recorded: None,
        }
    }

    /// Calls `recorded` once the outcome is in the store, before the last
    /// frame goes out.
    pub fn on_recorded(&mut self, recorded: Box<dyn FnOnce() + Send>) {
        self.recorded = Some(recorded);
    }

    pub fn shared(&self) -> &'a Shared {
        self.shared
    }

    pub fn prompt_id(&self) -> String {
        self.job.id.to_string()
    }

    /// To the socket the prompt came from: ComfyUI addresses execution
    /// events only to the submitting client.
    pub fn send(&self, frame: Outbound) {
        if let Some(sid) = self.job.extra_data.get("client_id").and_then(Value::as_str) {
            self.shared.hub.send_to_sid(self.job.owner, sid, frame);
        }
    }

    /// A ComfyUI `notification` toast on every socket of the owner.
    pub fn notify(&self, text: &str, id: &str) {
        self.shared.notify(self.job.owner, text, id);
    }

    /// Whether `node`'s outputs already reached the owner.
    pub fn delivered(&self, node: &str) -> bool {
        self.outputs.contains_key(node)
    }

    /// The history-kept message types the owner already had.
    pub fn seen_messages(&self) -> HashSet<String> {
        self.messages
            .iter()
            .filter_map(|m| m.get(0).and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// Nodes whose `executed` the owner already had.
    pub fn executed_nodes(&self) -> HashSet<String> {
        self.meta
            .keys()
            .chain(self.outputs.keys())
            .cloned()
            .collect()
    }

    /// Keeps what history keeps of an event and learns how the job ended.
    pub fn note(&mut self, kind: &str, data: &Value) {
        if HISTORY_MESSAGES.contains(&kind) {
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
            "progress" => {
                let number = |k: &str| {
                    data.get(k)
                        .and_then(Value::as_f64)
                        .map(|n| n.max(0.0) as u64)
                };
                if let (Some(value), Some(max)) = (number("value"), number("max")) {
                    self.shared.progress.set(self.job.id, value, max);
                }
            }
            _ => {}
        }
    }

    /// Records a start message the owner missed, among the other start
    /// messages at the front of the history, without sending it.
    pub fn note_missed_start(&mut self, kind: &str, data: &Value) {
        let place = self
            .messages
            .iter()
            .take_while(|m| {
                matches!(
                    m.get(0).and_then(Value::as_str),
                    Some("execution_start" | "execution_cached")
                )
            })
            .count();
        self.messages.insert(place, json!([kind, data]));
    }

    /// Tells the owner of a node's outputs (their files already in the
    /// owner's folders), and notes them for the store. No frame waits for
    /// the database: the run saves them once the backend is quiet for a
    /// moment ([`save_due`](Self::save_due)), or with the job's end, which
    /// writes the whole history before the final frame. A crash before the
    /// save re-delivers the node when the job is picked up again.
    pub fn executed(&mut self, node: &str, data: Value) {
        self.send(Outbound::Text(
            json!({"type": "executed", "data": &data}).to_string(),
        ));
        if let Some(output) = data.get("output").filter(|o| !o.is_null()) {
            self.outputs.insert(node.to_string(), output.clone());
        }
        self.meta.insert(node.to_string(), frames::node_meta(&data));
        self.unsaved_since.get_or_insert_with(Instant::now);
    }

    /// When the outputs delivered so far are due in the store: `quiet`
    /// after the first of them that is not saved. `None`: all saved.
    pub fn save_due(&self, quiet: Duration) -> Option<Instant> {
        self.unsaved_since.map(|since| since + quiet)
    }

    /// Saves the outputs and messages so far, so a restart (or a retry
    /// elsewhere) does not deliver them again.
    pub async fn save_progress(&mut self) {
        if self.unsaved_since.take().is_none() {
            return;
        }
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
            tracing::warn!(error = %e, "could not record outputs");
        }
    }

    /// Tells the owner why the job failed, as an `execution_error` the
    /// frontend shows in its error dialog.
    pub fn fail(&mut self, failure: &Failure) -> JobState {
        let now = now_ms();
        let prompt_id = self.prompt_id();
        self.ensure_started(now);
        let (node_id, node_type) = failure.node.clone().unwrap_or_default();
        let error = json!({
            "prompt_id": prompt_id,
            "node_id": node_id,
            "node_type": node_type,
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

    /// Tells the owner their job was stopped, as ComfyUI does, unless the
    /// backend already said so.
    pub fn interrupted(&mut self) -> JobState {
        if self.outcome != Some(JobState::Cancelled) {
            let now = now_ms();
            self.ensure_started(now);
            let data = frames::interrupted_data(&self.prompt_id(), now);
            self.note("execution_interrupted", &data);
            self.send(Outbound::Text(
                json!({"type": "execution_interrupted", "data": data}).to_string(),
            ));
        }
        JobState::Cancelled
    }

    /// Every ending needs a start in history and in the browser.
    fn ensure_started(&mut self, now: i64) {
        if !self.seen_messages().contains("execution_start") {
            let start = json!({"prompt_id": self.prompt_id(), "timestamp": now});
            self.messages.push(json!(["execution_start", start]));
            self.send(Outbound::Text(
                json!({"type": "execution_start", "data": start}).to_string(),
            ));
        }
    }

    /// Records the outcome (so history is readable), then sends the owner's
    /// queue status and the job's final `executing`, in ComfyUI's order.
    pub async fn finish(&mut self, state: JobState) {
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
            Ok(Some(counts)) => self.shared.send_counts(self.job.owner, counts),
            Ok(None) => {
                tracing::warn!("job was no longer in progress when it finished");
                self.shared.send_status(self.job.owner).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not record the job's outcome");
                self.shared.send_status(self.job.owner).await;
            }
        }
        if let Some(recorded) = self.recorded.take() {
            recorded();
        }
        let done =
            json!({"type": "executing", "data": {"node": null, "prompt_id": self.prompt_id()}});
        self.send(Outbound::Text(done.to_string()));
    }
}
