//! One prompt's run, as the nodes and the messages see it: the progress
//! registry behind `progress_state`, the per-step `progress` and preview
//! frames, the drop-connection knob, and stock's interrupt flag.
//!
//! A step is reported as stock's sampler callback reports it: the interrupt
//! check first, then `progress_state`, a BIN4 preview (clients that sent
//! `supports_preview_metadata`), `progress`, and a BIN1 preview otherwise
//! (docs/comfyui-api.md §5.3).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::SimState;
use super::files::Dirs;
use super::nodes::{Failure, Host};
use super::pixels::Image;
use super::png::{self, Effort};
use super::queue::QueueItem;
use super::ws::lock;

/// Stock's global "interrupt processing" flag, with a way to sleep on it.
#[derive(Default)]
pub(crate) struct Interrupt {
    flag: Mutex<bool>,
    raised: Condvar,
}

impl Interrupt {
    pub fn raise(&self) {
        *lock(&self.flag) = true;
        self.raised.notify_all();
    }

    pub fn clear(&self) {
        *lock(&self.flag) = false;
    }

    /// Consumes a pending interrupt (stock resets the flag when it throws).
    pub fn take(&self) -> bool {
        std::mem::replace(&mut *lock(&self.flag), false)
    }

    /// Sleeps up to `time`, waking early if an interrupt is raised.
    pub fn wait(&self, time: Duration) {
        let flag = lock(&self.flag);
        // A poisoned wait still returns; the flag is a plain bool.
        let _ = self
            .raised
            .wait_timeout_while(flag, time, |raised| !*raised);
    }
}

/// Everything about the prompt being run that nodes and messages need.
pub(super) struct Run {
    state: Arc<SimState>,
    pub prompt_id: String,
    pub client_id: Option<String>,
    prompt: Arc<Value>,
    extra_pnginfo: Option<Map<String, Value>>,
    /// Per node, in first-seen order: (state, value, max).
    progress: Mutex<Vec<(String, &'static str, Value, Value)>>,
    /// `progress` frames sent, for the drop-connection knob.
    steps: AtomicU32,
    dropped: AtomicBool,
}

impl Run {
    pub fn new(state: Arc<SimState>, item: &QueueItem) -> Run {
        Run {
            state,
            prompt_id: item.prompt_id.clone(),
            client_id: item.client_id().map(str::to_owned),
            prompt: item.prompt.clone(),
            extra_pnginfo: item
                .extra_data
                .get("extra_pnginfo")
                .and_then(Value::as_object)
                .cloned(),
            progress: Mutex::new(Vec::new()),
            steps: AtomicU32::new(0),
            dropped: AtomicBool::new(false),
        }
    }

    pub fn sid(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Sends to the client; nothing if there is none.
    pub fn to_client(&self, kind: &str, data: Value) {
        if let Some(sid) = self.sid() {
            self.state.hub.send(Some(sid), kind, data);
        }
    }

    fn set_progress(
        &self,
        node: &str,
        update: impl FnOnce(&mut (String, &'static str, Value, Value)),
    ) {
        let mut progress = lock(&self.progress);
        let at = match progress.iter().position(|p| p.0 == node) {
            Some(at) => at,
            None => {
                progress.push((node.to_owned(), "pending", json!(0), json!(1)));
                progress.len() - 1
            }
        };
        update(&mut progress[at]);
        // Sent under the lock so snapshots leave in the order they were taken.
        let nodes: Map<String, Value> = progress
            .iter()
            .filter(|p| p.1 != "pending")
            .map(|(id, state, value, max)| {
                let entry = json!({
                    "value": value, "max": max, "state": state, "node_id": id,
                    "prompt_id": self.prompt_id, "display_node_id": id,
                    "parent_node_id": null, "real_node_id": id,
                });
                (id.clone(), entry)
            })
            .collect();
        self.state.hub.send(
            self.sid(),
            "progress_state",
            json!({"prompt_id": self.prompt_id, "nodes": nodes}),
        );
    }

    pub fn start_progress(&self, node: &str) {
        self.set_progress(node, |p| {
            (p.1, p.2, p.3) = ("running", json!(0.0), json!(1.0));
        });
    }

    pub fn finish_progress(&self, node: &str) {
        self.set_progress(node, |p| {
            p.1 = "finished";
            p.2 = p.3.clone();
        });
    }
}

/// A [`Host`] for one node of a run.
pub(super) struct NodeHost {
    pub run: Arc<Run>,
    pub node: String,
}

impl Host for NodeHost {
    fn progress(&self, value: u64, max: u64, preview: Option<&Image>) -> Result<(), Failure> {
        let run = &self.run;
        let state = &run.state;
        if state.interrupt.take() {
            return Err(Failure::Interrupted);
        }
        run.set_progress(&self.node, |p| {
            (p.1, p.2, p.3) = ("running", json!(value), json!(max));
        });
        let with_metadata = state.hub.wants_preview_metadata(run.sid());
        let image = preview.and_then(|img| png::encode_image(img, 0, &[], Effort::Fast).ok());
        if let (Some(image), true) = (&image, with_metadata) {
            let meta = json!({
                "node_id": self.node, "prompt_id": run.prompt_id, "display_node_id": self.node,
                "parent_node_id": null, "real_node_id": self.node, "image_type": "image/png",
            })
            .to_string();
            let mut frame = 4u32.to_be_bytes().to_vec();
            frame.extend((meta.len() as u32).to_be_bytes());
            frame.extend(meta.as_bytes());
            frame.extend(image);
            state.hub.send_binary(run.sid(), frame);
        }
        let data =
            json!({"value": value, "max": max, "prompt_id": run.prompt_id, "node": self.node});
        state.hub.send(run.sid(), "progress", data);
        if let (Some(image), false) = (image, with_metadata) {
            let mut frame = 1u32.to_be_bytes().to_vec();
            // Image type 2 is PNG (1 would be JPEG).
            frame.extend(2u32.to_be_bytes());
            frame.extend(image);
            state.hub.send_binary(run.sid(), frame);
        }
        let steps = run.steps.fetch_add(1, Ordering::Relaxed) + 1;
        if state.options.drop_after_steps == Some(steps)
            && !run.dropped.swap(true, Ordering::Relaxed)
        {
            tracing::info!(prompt_id = %run.prompt_id, steps, "dropping every WebSocket (drop_after_steps)");
            state.hub.drop_all();
        }
        Ok(())
    }

    fn wait(&self, time: Duration) {
        self.run.state.interrupt.wait(time);
    }

    fn step_time(&self) -> Duration {
        self.run.state.options.step_time
    }

    fn dirs(&self) -> &Dirs {
        &self.run.state.dirs
    }

    fn prompt(&self) -> &Value {
        &self.run.prompt
    }

    fn extra_pnginfo(&self) -> Option<&Map<String, Value>> {
        self.run.extra_pnginfo.as_ref()
    }
}
