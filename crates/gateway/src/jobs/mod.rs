//! Jobs as a participant sees them: submitting a prompt (checked up front
//! against the node catalogue, capped per user, stored durably), and the
//! queue, history, cancel and interrupt operations on the caller's own jobs.
//! Nothing here can see or touch another user's job: every query is by
//! owner.

pub mod views;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::SessionUser;
use comfyume_prompt::{PromptRequest, RoomCaps, Validators};

use crate::catalogue::personalise;
use crate::clock::now_ms;
use crate::config::Limits;
use crate::dispatch::Dispatcher;
use crate::store::{Inserted, NewJob, StoreError};
use comfyume_domain::{Job, JobId, JobState};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// ComfyUI's 400 body.
    #[error("invalid prompt")]
    Invalid(Value),
    #[error("queue full")]
    QueueFull(Value),
    #[error("the node catalogue is unavailable: {0}")]
    NoCatalogue(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The owner's input folder could not be listed, so their image
    /// pickers cannot be checked.
    #[error(transparent)]
    Files(#[from] crate::workspace::WorkspaceError),
}

/// ComfyUI keeps these out of the queue and history (API-node credentials);
/// the gateway serves no API nodes, so it does not keep them at all.
const SENSITIVE: [&str; 2] = ["auth_token_comfy_org", "api_key_comfy_org"];

pub struct Jobs {
    dispatcher: Arc<Dispatcher>,
    limits: Limits,
    room_caps: RoomCaps,
}

impl Jobs {
    pub fn new(dispatcher: Arc<Dispatcher>, limits: Limits) -> Self {
        let room_caps = RoomCaps::new(limits.prompt_caps.clone());
        Self {
            dispatcher,
            limits,
            room_caps,
        }
    }

    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// Checks and queues a prompt. On success: the stored job and the
    /// validation's `node_errors` (non-empty when some outputs were dropped).
    pub async fn submit(
        &self,
        user: &SessionUser,
        sub: PromptRequest,
    ) -> Result<(Job, Value), SubmitError> {
        let shared = self.dispatcher.shared();
        let snapshot = shared
            .catalogue
            .snapshot()
            .await
            .map_err(|e| SubmitError::NoCatalogue(e.to_string()))?;
        let inputs = shared.workspaces.user(&user.name).input_images().await?;
        // Only the classes the prompt names: the validator looks at nothing
        // else, and a stock ComfyUI's whole catalogue (hundreds of classes)
        // copied per submission cost tens of milliseconds.
        let named: std::collections::BTreeSet<&str> = sub
            .prompt
            .as_object()
            .into_iter()
            .flat_map(|nodes| nodes.values())
            .filter_map(|node| node.get("class_type").and_then(Value::as_str))
            .collect();
        let catalogue: serde_json::Map<String, Value> = named
            .into_iter()
            .filter_map(|class| {
                let info = snapshot.nodes.get(class)?;
                Some((class.to_string(), personalise(info, &inputs)))
            })
            .collect();
        let validate = |verdicts| {
            comfyume_prompt::validate_with(
                &sub.prompt,
                sub.partial_execution_targets.as_deref(),
                &catalogue,
                &self.room_caps,
                Validators {
                    signatures: Some(&snapshot.signatures),
                    verdicts,
                },
            )
        };
        let mut checked = validate(None);
        if !checked.unanswered.is_empty() {
            // Nodes' own Python validators: a backend runs them, and the
            // prompt is validated again with their answers. Without an
            // answer, the backend that runs the job decides.
            match shared
                .catalogue
                .run_validators(&snapshot, &checked.unanswered, &self.dispatcher.serving())
                .await
            {
                Ok(verdicts) => checked = validate(Some(&verdicts)),
                Err(reason) => tracing::warn!(
                    user = %user.name,
                    %reason,
                    "nodes' validators could not be run: the backend that runs the job will"
                ),
            }
        }
        let validated = checked.result.map_err(|e| SubmitError::Invalid(e.body))?;

        let now = now_ms();
        let mut extra = sub.extra_data;
        for key in SENSITIVE {
            extra.remove(key);
        }
        let workflow_id = sub.workflow_id;
        if let Some(c) = sub.client_id {
            extra.insert("client_id".into(), c);
        }
        extra.insert("create_time".into(), json!(now));
        let inserted = shared
            .store
            .insert_job(
                NewJob {
                    id: sub.prompt_id.unwrap_or_default(),
                    owner: user.id,
                    number: sub.number,
                    front: sub.front,
                    prompt: sub.prompt,
                    extra_data: Value::Object(extra),
                    outputs_to_execute: validated.outputs_to_execute,
                    partial_targets: sub.partial_execution_targets,
                    workflow_id,
                    created_at: now,
                },
                self.limits.max_pending_per_user,
            )
            .await?;
        let job = match inserted {
            Inserted::Queued(job) => *job,
            Inserted::QueueFull { limit } => {
                return Err(SubmitError::QueueFull(queue_full_body(limit)));
            }
        };
        shared.send_status(user.id).await;
        self.dispatcher.wake();
        Ok((job, Value::Object(validated.node_errors)))
    }

    /// The caller's finished jobs that `/history` shows, oldest first.
    pub async fn history(
        &self,
        user: &SessionUser,
        page: crate::store::HistoryPage,
    ) -> Result<Vec<Job>, StoreError> {
        self.dispatcher
            .shared()
            .store
            .history_of(user.id, page)
            .await
    }

    /// One page of the caller's jobs, and how many matched.
    pub async fn page(
        &self,
        user: &SessionUser,
        page: &crate::store::JobsPage,
    ) -> Result<(Vec<Job>, u64), StoreError> {
        self.dispatcher
            .shared()
            .store
            .jobs_page_of(user.id, page)
            .await
    }

    /// The caller's pending and running jobs, oldest first.
    pub async fn active_of(&self, user: &SessionUser) -> Result<Vec<Job>, StoreError> {
        self.dispatcher.shared().store.active_jobs_of(user.id).await
    }

    /// One of the caller's jobs; someone else's is `None`, exactly like a
    /// job that does not exist.
    pub async fn get(&self, user: &SessionUser, id: &JobId) -> Result<Option<Job>, StoreError> {
        Ok(self
            .dispatcher
            .shared()
            .store
            .job(id)
            .await?
            .filter(|j| j.owner == user.id))
    }

    /// Cancels one of the caller's jobs: dequeues it if pending, interrupts
    /// it if running. True if something was cancelled.
    pub async fn cancel(&self, user: &SessionUser, id: &JobId) -> Result<bool, StoreError> {
        let Some(job) = self.get(user, id).await? else {
            return Ok(false);
        };
        match job.state {
            JobState::Pending => {
                let done = self
                    .dispatcher
                    .shared()
                    .store
                    .cancel_pending(user.id, Some(&[*id]), now_ms())
                    .await?;
                if !done.is_empty() {
                    self.dispatcher.shared().send_status(user.id).await;
                    // Everyone behind it moves up.
                    self.dispatcher.wake();
                    return Ok(true);
                }
                // It started meanwhile: interrupt it instead.
                Ok(self.interrupt_job(id).await)
            }
            JobState::InProgress => Ok(self.interrupt_job(id).await),
            _ => Ok(false),
        }
    }

    /// `POST /queue`: removes the caller's pending jobs (all, or those
    /// listed); running ones are untouched, as in ComfyUI.
    pub async fn delete_pending(
        &self,
        user: &SessionUser,
        ids: Option<&[JobId]>,
    ) -> Result<(), StoreError> {
        let done = self
            .dispatcher
            .shared()
            .store
            .cancel_pending(user.id, ids, now_ms())
            .await?;
        if !done.is_empty() {
            self.dispatcher.shared().send_status(user.id).await;
            self.dispatcher.wake();
        }
        Ok(())
    }

    /// `POST /history`: deletes the caller's finished jobs (all, or those
    /// listed).
    pub async fn delete_history(
        &self,
        user: &SessionUser,
        ids: Option<&[JobId]>,
    ) -> Result<(), StoreError> {
        self.dispatcher
            .shared()
            .store
            .delete_history(user.id, ids)
            .await?;
        Ok(())
    }

    /// `POST /interrupt`: the caller's running job (the one named, or any
    /// of theirs without a name). Never anyone else's.
    pub async fn interrupt(
        &self,
        user: &SessionUser,
        id: Option<&JobId>,
    ) -> Result<(), StoreError> {
        let jobs = self.active_of(user).await?;
        for job in jobs.iter().filter(|j| j.state == JobState::InProgress) {
            if id.is_none_or(|wanted| *wanted == job.id) {
                self.interrupt_job(&job.id).await;
            }
        }
        Ok(())
    }

    /// Asks the job's run to stop it on its backend; the run tells the
    /// owner how it ended.
    async fn interrupt_job(&self, id: &JobId) -> bool {
        self.dispatcher.cancel_running(id).await
    }

    /// How many of the caller's jobs are waiting or running.
    pub async fn queue_remaining(&self, user: &SessionUser) -> Result<u32, StoreError> {
        let (pending, running) = self
            .dispatcher
            .shared()
            .store
            .active_counts(user.id)
            .await?;
        Ok(pending + running)
    }
}

fn queue_full_body(limit: u32) -> Value {
    comfyume_prompt::error_body(
        "queue_full",
        &format!(
            "You already have {limit} prompts waiting. Wait for one of them to start before queueing another."
        ),
        &format!("Each participant may have at most {limit} prompts waiting in the shared queue."),
    )
}
