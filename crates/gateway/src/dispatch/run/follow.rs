//! The run's conversation with the backend: submit (or re-attach after a
//! restart), then follow the job's events to its end, within the time
//! limit, answering the owner's cancel, and recovering from a broken or
//! silent connection by asking the backend what became of the job.

use crate::telemetry::phase;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfyume_domain::{JobState, UserName};
use comfyume_protocol::{HistoryEntry, Outcome as BackendOutcome, OutputFile};
use serde_json::Value;
use tokio::sync::Notify;
use tracing::Instrument;

use super::report::Report;
use super::{Failure, RunLimits, files};
use crate::backend::{BackendSession, JobStatus, SessionError, SessionEvent, Submission};
use crate::hub::Outbound;

pub(super) struct JobRun<'a, S> {
    pub report: Report<'a>,
    pub session: S,
    owner: UserName,
    deadline: Instant,
    /// The configured limit the deadline comes from (for messages).
    limit: Duration,
    /// The backend has started the job: the deadline counts from then.
    began: bool,
    cancel: Arc<Notify>,
    silence_check: Duration,
    queued: tokio::sync::watch::Sender<bool>,
    /// The job ahead on the slot (see [`RunLimits::after`]), until its
    /// run is over.
    ahead: Option<tokio::sync::watch::Receiver<bool>>,
    /// The owner asked to stop the job.
    pub cancelled: bool,
    /// Output files a backend streamed ahead of their `executed` frame.
    received: HashMap<OutputFile, Vec<u8>>,
    told_cold: bool,
    /// Time spent copying outputs into the owner's folders.
    pub copy_time: Duration,
    /// Why an output was refused by the server's disk: the job then ends
    /// failed with this reason, not as a success without its result.
    pub disk_full: Option<String>,
}

/// How long after an output is delivered the run saves it, unless the job
/// ended first (its end saves everything): a short job's outputs are
/// written once, with its end, and no frame waits for a write.
const SAVE_WHEN_QUIET: Duration = Duration::from_millis(20);

/// When frames rebuilt from history reach the owner.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Late {
    /// Instead of the live end: they are all the owner gets.
    InPlace,
    /// After the live end came on a reopened socket: only what the browser
    /// can still use (outputs, the outcome) is sent.
    AfterEnd,
}

/// Why following stopped before the job's end.
enum Stopped {
    Lost(String),
    /// No event for [`RunLimits::silence_check`].
    Silent,
    TimedOut,
    Cancelled,
    Failed(SessionError),
}

impl<'a, S: BackendSession> JobRun<'a, S> {
    pub fn new(report: Report<'a>, owner: UserName, session: S, limits: &RunLimits) -> Self {
        // It may wait behind another job on the backend before it starts.
        let may_wait = limits.resume || limits.after.is_some();
        Self {
            report,
            session,
            owner,
            deadline: Instant::now() + limits.job_timeout * if may_wait { 2 } else { 1 },
            limit: limits.job_timeout,
            began: false,
            cancel: limits.cancel.clone(),
            silence_check: limits.silence_check,
            queued: limits.queued.clone(),
            ahead: limits.after.clone(),
            cancelled: false,
            received: HashMap::new(),
            told_cold: false,
            copy_time: Duration::ZERO,
            disk_full: None,
        }
    }

    /// Sends the job to the backend and follows it to its end.
    pub async fn execute(&mut self) -> Result<JobState, Failure> {
        let (prompt, inputs) =
            files::content_addressed_inputs(self.report.shared(), &self.report.job, &self.owner)
                .instrument(phase!("inputs"))
                .await?;
        let submission = Submission {
            prompt,
            inputs,
            extra_data: backend_extra_data(&self.report.job.extra_data),
            partial_execution_targets: self.report.job.partial_targets.clone(),
        };
        if let Some(ahead) = self.ahead.as_mut() {
            // Closed: that run is over, and this job goes first anyway.
            let _ = ahead
                .wait_for(|queued| *queued)
                .instrument(phase!("behind"))
                .await;
        }
        let submitted = self
            .session
            .submit(&submission)
            .instrument(phase!("submit", inputs = submission.inputs.len()))
            .await;
        self.queued.send_replace(true);
        submitted.map_err(Failure::session)?;
        self.follow_to_end().instrument(phase!("follow")).await
    }

    /// Picks up a job this gateway submitted before it restarted: finished
    /// meanwhile → collected from history; still queued or running there →
    /// followed again (ComfyUI sends its events to the same client id);
    /// unknown → lost.
    pub async fn resume(&mut self) -> Result<JobState, Failure> {
        self.queued.send_replace(true);
        self.session.reattach().await.map_err(Failure::session)?;
        match self.session.status().await.map_err(Failure::session)? {
            JobStatus::Finished(entry) => Ok(self.finish_from_history(&entry).await),
            JobStatus::Queued => {
                tracing::info!("re-attached to a job after a restart");
                self.follow_to_end().instrument(phase!("follow")).await
            }
            JobStatus::Unknown => Err(Failure::lost(
                "the gateway restarted and the GPU server no longer has the job",
            )),
        }
    }

    /// Follows the job to its end, recovering from a dropped connection or
    /// a silent backend through the backend's own account of the job.
    async fn follow_to_end(&mut self) -> Result<JobState, Failure> {
        let mut reconnected = false;
        loop {
            let stopped = match self.follow().await {
                Ok(said) => {
                    // Frames sent while the socket was down are only in
                    // history; so is the outcome of a job whose end came
                    // without one.
                    if reconnected || (self.report.outcome.is_none() && said.is_none()) {
                        match self.session.status().await {
                            Ok(JobStatus::Finished(entry)) => {
                                self.catch_up(&entry, Late::AfterEnd).await
                            }
                            Ok(JobStatus::Queued | JobStatus::Unknown) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "could not ask the backend what the job did while its socket was down");
                                self.report.notify(
                                    "Some of your job's results may be missing: the GPU server's connection dropped while it ran.",
                                    &format!("comfyume-missed-{}", self.report.job.id),
                                );
                            }
                        }
                    }
                    return self.ending(said);
                }
                Err(stopped) => stopped,
            };
            let lost_reason = match stopped {
                Stopped::Failed(e) => return Err(Failure::session(e)),
                Stopped::TimedOut => {
                    self.session.stop().await;
                    return Err(Failure::timed_out(self.limit));
                }
                Stopped::Cancelled => {
                    // The session's events now tell how the job ended.
                    self.session.stop().await;
                    continue;
                }
                Stopped::Silent => {
                    // The connection itself is fine: ask about the job and
                    // keep listening on it. (Reconnecting with the same
                    // client id while it is open would make ComfyUI drop
                    // the new socket when it closes the old one.)
                    format!("no event for {} s", self.silence_check.as_secs())
                }
                Stopped::Lost(reason) => {
                    tracing::warn!(%reason, "backend connection lost mid-job");
                    // Listen again before asking about the job, so nothing
                    // it does after the answer is missed.
                    if self.session.reconnect().await.is_err() {
                        return Err(Failure::lost(&reason));
                    }
                    reconnected = true;
                    reason
                }
            };
            match self.session.status().await {
                Ok(JobStatus::Finished(entry)) => {
                    return Ok(self.finish_from_history(&entry).await);
                }
                Ok(JobStatus::Queued) => continue,
                Ok(JobStatus::Unknown) if self.cancelled => return Ok(self.report.interrupted()),
                Ok(JobStatus::Unknown) => return Err(Failure::lost(&lost_reason)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not ask the backend about the job");
                    return Err(Failure::lost(&lost_reason));
                }
            }
        }
    }

    /// How the job ended: as its events said, else as the backend's last
    /// word said; an end nobody explained is a failure with a reason.
    fn ending(&self, said: Option<BackendOutcome>) -> Result<JobState, Failure> {
        if let Some(state) = self.report.outcome {
            return Ok(state);
        }
        match said {
            Some(BackendOutcome::Success) => Ok(JobState::Completed),
            Some(BackendOutcome::Interrupted) => Ok(JobState::Cancelled),
            Some(BackendOutcome::Error) => Err(Failure::unexplained(
                "The GPU server reported an error it did not describe.",
            )),
            None => Err(Failure::unexplained(
                "The GPU server ended the job without saying how it went.",
            )),
        }
    }

    /// Relays the job's events until its end; returns how the backend's
    /// last frame said it ended, if it said.
    async fn follow(&mut self) -> Result<Option<BackendOutcome>, Stopped> {
        loop {
            let quiet_until = (Instant::now() + self.silence_check).min(self.deadline);
            let save_due = self.report.save_due(SAVE_WHEN_QUIET);
            let next = tokio::select! {
                next = tokio::time::timeout_at(quiet_until.into(), self.session.next()) => next,
                () = self.cancel.notified(), if !self.cancelled => {
                    self.cancelled = true;
                    return Err(Stopped::Cancelled);
                }
                () = tokio::time::sleep_until(save_due.unwrap_or(quiet_until).into()), if save_due.is_some() => {
                    self.report.save_progress().await;
                    continue;
                }
            };
            if matches!(next, Ok(Ok(_))) {
                self.after_the_job_ahead().await;
            }
            let event = match next {
                Err(_) if Instant::now() >= self.deadline => return Err(Stopped::TimedOut),
                Err(_) => return Err(Stopped::Silent),
                Ok(Err(SessionError::Lost(reason))) => return Err(Stopped::Lost(reason)),
                Ok(Err(e)) => return Err(Stopped::Failed(e)),
                Ok(Ok(event)) => event,
            };
            match event {
                SessionEvent::Event { kind, data, raw } => self.on_event(&kind, data, raw).await,
                SessionEvent::Binary(bytes) => self.report.send(Outbound::Binary(bytes.to_vec())),
                SessionEvent::File { file, data } => {
                    self.received.insert(file, data);
                }
                SessionEvent::ColdStart => {
                    if !std::mem::replace(&mut self.told_cold, true) {
                        self.report.notify(
                            "The GPU is starting up (cold start); your job runs as soon as it is ready.",
                            &format!("comfyume-cold-{}", self.report.job.id),
                        );
                    }
                }
                SessionEvent::Done { outcome } => return Ok(outcome),
            }
        }
    }

    /// Waits, before the job's first frame reaches its owner, until the
    /// run of the job it was queued behind is over (its last frames may
    /// still be on their way while the backend has moved on to this one).
    /// That run ends within its own limits; a cancel meanwhile is kept by
    /// its `Notify` for the next wait.
    async fn after_the_job_ahead(&mut self) {
        let Some(mut ahead) = self.ahead.take() else {
            return;
        };
        // Closed when that run is over; a change is only its submission.
        async { while ahead.changed().await.is_ok() {} }
            .instrument(phase!("after_ahead"))
            .await;
    }

    /// One event of the job: recorded, its outputs copied, then relayed.
    async fn on_event(&mut self, kind: &str, mut data: Value, raw: String) {
        if kind == "execution_start" && !std::mem::replace(&mut self.began, true) {
            self.deadline = Instant::now() + self.limit;
        }
        if kind == "execution_success"
            && let Some(reason) = self.disk_full.clone()
        {
            // In success's place, as ComfyUI ends a failed prompt.
            self.report.fail(&super::Failure::disk_full(reason));
            self.report.outcome = Some(JobState::Failed);
            return;
        }
        self.report.note(kind, &data);
        if kind != "executed" {
            self.report.send(Outbound::Text(raw));
            return;
        }
        let Some(node) = data.get("node").and_then(Value::as_str).map(str::to_string) else {
            // Not ComfyUI's shape: nothing to record or copy.
            tracing::warn!("an executed event named no node");
            self.report.send(Outbound::Text(raw));
            return;
        };
        if self.report.delivered(&node) {
            // An earlier attempt delivered this node's outputs.
            return;
        }
        if let Some(output) = data.get_mut("output") {
            let copying = Instant::now();
            let collected = files::collect_outputs(
                self.report.shared(),
                &self.owner,
                &mut self.session,
                &mut self.received,
                output,
            )
            .instrument(phase!("output", %node))
            .await;
            self.copy_time += copying.elapsed();
            for problem in collected.tell_owner {
                self.report
                    .notify(&problem, &format!("comfyume-quota-{}", self.report.job.id));
            }
            if let Some(reason) = collected.disk_full {
                // Not recorded as delivered: an attempt after this one
                // (another backend, or after a restart) copies the node's
                // outputs again, or fails the same way.
                self.disk_full.get_or_insert(reason);
                return;
            }
        }
        self.report.executed(&node, data);
    }

    /// Ends the run from the backend's history: every frame the owner
    /// missed, then the outcome it records.
    async fn finish_from_history(&mut self, entry: &HistoryEntry) -> JobState {
        self.catch_up(entry, Late::InPlace).await;
        self.report.outcome.unwrap_or(match entry.outcome() {
            BackendOutcome::Success => JobState::Completed,
            BackendOutcome::Interrupted => JobState::Cancelled,
            BackendOutcome::Error => JobState::Failed,
        })
    }

    /// Relays, rebuilt from history, what the owner has not had yet:
    /// start messages, outputs (copied first), how the job ended.
    async fn catch_up(&mut self, entry: &HistoryEntry, late: Late) {
        let missed = entry.missed_frames(
            &self.report.prompt_id(),
            &self.report.seen_messages(),
            &self.report.executed_nodes(),
        );
        for frame in missed {
            let is_start = matches!(frame.kind.as_str(), "execution_start" | "execution_cached");
            if is_start && late == Late::AfterEnd {
                // The browser has seen the run go by; a start now would
                // begin it again there. History still gets it, in place.
                self.report.note_missed_start(&frame.kind, &frame.data);
                continue;
            }
            let raw = frame.to_text();
            self.on_event(&frame.kind, frame.data, raw).await;
        }
    }
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
