//! Running one job on one backend slot, start to finish, through a
//! [`BackendSession`]: push the job's inputs and queue it (`follow`), relay
//! each event to the owner's socket in the backend's order (`report`), copy
//! every output into the owner's files before telling the browser it exists
//! (`files`), and record the outcome (`report`).
//!
//! When the backend fails (unreachable, an error status, garbage, a dropped
//! socket, a run past the time limit) the run first asks the backend what
//! became of the job: a job that finished meanwhile is collected from the
//! backend's history (`follow`), one still running is followed again. Only
//! a job the backend has lost is handed back to the coordinator, which
//! queues it again for another backend.

mod files;
mod follow;
mod report;
#[cfg(test)]
mod tests;

use crate::telemetry::phase;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfyume_domain::{Job, JobState, UserName};
use futures_util::FutureExt;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::backend::{BackendSession, SessionError};
use crate::dispatch::Shared;
use crate::metrics::JobOutcome;
use follow::JobRun;
use report::Report;

/// How a run ended.
#[derive(Debug, PartialEq)]
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
    /// The whole run, from the backend starting the job to its last
    /// frame.
    pub job_timeout: Duration,
    /// When false, a backend fault fails the job instead of returning
    /// [`Outcome::BackendFault`] (the attempts are used up).
    pub may_retry: bool,
    /// The job was already queued on the backend before the gateway
    /// restarted: pick it up there instead of submitting it again.
    pub resume: bool,
    /// Set once the job is in the backend's queue; dropped when its run
    /// is over.
    pub queued: tokio::sync::watch::Sender<bool>,
    /// The `queued` of the job this one waits behind on its slot
    /// (`dispatch.queue_ahead`). ComfyUI runs prompts in the order they
    /// arrive, so this one is sent only once that one is queued, and its
    /// owner hears it only once that run is over. A job waiting behind
    /// another (or re-attached, which may be) gets one more `job_timeout`
    /// until the backend starts it.
    pub after: Option<tokio::sync::watch::Receiver<bool>>,
    /// Called once a finished job's outcome is recorded, before its owner
    /// hears its last frame: its slot is free from then (so the owner, or
    /// anyone, sees the slot free once they see the job end).
    pub recorded: Option<Box<dyn FnOnce() + Send>>,
    /// Fired when the owner cancels the job.
    pub cancel: Arc<Notify>,
    /// How long the backend may stay silent before it is asked about the
    /// job (a hung ComfyUI keeps its socket open but says nothing); a long
    /// node that is still running just carries on.
    pub silence_check: Duration,
}

/// Runs `job` of `owner` through `session` to its end.
pub async fn run<S: BackendSession>(
    shared: &Shared,
    job: Job,
    owner: UserName,
    session: S,
    mut limits: RunLimits,
) -> Outcome {
    let started = Instant::now();
    // Claimed jobs have a start; the wait is what the queue cost.
    let queue_ms = job.started_at.map_or(0, |s| (s - job.created_at).max(0));
    let mut report = Report::new(shared, job);
    if let Some(recorded) = limits.recorded.take() {
        report.on_recorded(recorded);
    }
    let mut run = JobRun::new(report, owner, session, &limits);
    let result = if limits.resume && run.session.can_reattach() {
        run.resume().await
    } else {
        run.execute().await
    };
    // A cancel that came while the run was not listening for it (during
    // the submit, a reconnect, a question to the backend) still counts.
    if result.is_err() && limits.cancel.notified().now_or_never().is_some() {
        run.cancelled = true;
    }
    let outcome = match result {
        // The success came another way (rebuilt from the backend's
        // history): the refused output still fails the job.
        Ok(JobState::Completed) if run.disk_full.is_some() => {
            let reason = run.disk_full.take().unwrap_or_default();
            Ok(run.report.fail(&Failure::disk_full(reason)))
        }
        Ok(state) => Ok(state),
        // The owner asked for the stop: whatever broke after that, the
        // job ends as they asked, and never runs again.
        Err(_) if run.cancelled => Ok(run.report.interrupted()),
        Err(failure) if failure.not_started => Err(Outcome::NotStarted {
            reason: failure.message,
        }),
        Err(failure) if failure.retryable && limits.may_retry => Err(Outcome::BackendFault {
            reason: failure.message,
        }),
        Err(failure) => Ok(run.report.fail(&failure)),
    };
    let outcome = match outcome {
        Ok(state) => {
            run.report
                .finish(state)
                .instrument(phase!("finish", %state))
                .await;
            Outcome::Finished(state)
        }
        Err(handed_back) => {
            // Another attempt must not deliver these outputs again.
            run.report.save_progress().await;
            handed_back
        }
    };
    shared.progress.clear(&run.report.job.id);
    let run_time = started.elapsed();
    let (run_ms, copy_ms) = (
        run_time.as_millis() as u64,
        run.copy_time.as_millis() as u64,
    );
    let counted = match &outcome {
        Outcome::Finished(state) => {
            tracing::info!(%state, queue_ms, run_ms, copy_ms, "job ended");
            match state {
                JobState::Completed => JobOutcome::Completed,
                JobState::Cancelled => JobOutcome::Cancelled,
                _ => JobOutcome::Failed,
            }
        }
        Outcome::BackendFault { reason } => {
            tracing::info!(%reason, queue_ms, run_ms, copy_ms, "attempt lost by the backend");
            JobOutcome::Retried
        }
        Outcome::NotStarted { reason } => {
            tracing::info!(%reason, queue_ms, run_ms, copy_ms, "attempt turned away");
            JobOutcome::TurnedAway
        }
    };
    let queue_wait = Duration::from_millis(u64::try_from(queue_ms).unwrap_or(0));
    shared.metrics.job_ended(counted, queue_wait, run_time);
    outcome
}

/// Records a job as failed after its last attempt was lost, telling the
/// owner why (the coordinator calls this when no retry is left).
pub async fn give_up(shared: &Shared, job: Job, message: String) {
    shared.metrics.job_given_up();
    let mut report = Report::new(shared, job);
    let state = report.fail(&Failure {
        message,
        kind: "BackendError",
        retryable: false,
        not_started: false,
        node: None,
    });
    report.finish(state).await;
}

/// A reason the run could not complete normally, in words a participant
/// understands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    message: String,
    /// The `exception_type` the browser shows.
    kind: &'static str,
    /// The backend's fault, not the prompt's: another backend may succeed.
    retryable: bool,
    /// Turned away before it started (busy): try again, no attempt used.
    not_started: bool,
    /// The node the backend named (id, class), shown on the canvas.
    node: Option<(String, String)>,
}

impl Failure {
    /// The server's disk refused an output (the disk guard): the prompt
    /// is fine, so no other backend is tried.
    pub(super) fn disk_full(reason: String) -> Self {
        Failure {
            message: reason,
            kind: "OutOfDiskSpace",
            retryable: false,
            not_started: false,
            node: None,
        }
    }

    fn session(e: SessionError) -> Self {
        match e {
            SessionError::Rejected(body) => Failure {
                message: format!(
                    "The GPU server refused this prompt: {}",
                    comfyume_protocol::client::rejection_summary(&body)
                ),
                kind: "ValidationError",
                retryable: false,
                not_started: false,
                node: comfyume_protocol::client::rejected_node(&body),
            },
            SessionError::Busy(reason) => Failure {
                message: reason,
                kind: "BackendError",
                retryable: true,
                not_started: true,
                node: None,
            },
            SessionError::Lost(reason) => Failure::lost(&reason),
            SessionError::Invalid(reason) => Failure::invalid(&reason),
            SessionError::Failed(reason) => Failure::backend_side(format!(
                "The GPU server could not run this prompt: {reason}"
            )),
        }
    }

    /// The backend's fault: another backend may do better.
    fn backend_side(message: String) -> Self {
        Failure {
            message,
            kind: "BackendError",
            retryable: true,
            not_started: false,
            node: None,
        }
    }

    /// The job itself cannot run anywhere.
    fn invalid(reason: &str) -> Self {
        Failure {
            message: reason.to_string(),
            kind: "BackendError",
            retryable: false,
            not_started: false,
            node: None,
        }
    }

    /// The job ended on the backend, but nothing says how: not to be run
    /// again.
    fn unexplained(message: &str) -> Self {
        Failure {
            message: message.to_string(),
            kind: "BackendError",
            retryable: false,
            not_started: false,
            node: None,
        }
    }

    fn lost(reason: &str) -> Self {
        Failure {
            message: format!("The GPU server running your job went away ({reason})."),
            kind: "ConnectionError",
            retryable: true,
            not_started: false,
            node: None,
        }
    }

    fn timed_out(limit: Duration) -> Self {
        Failure {
            message: format!(
                "Your job ran past the {}-minute limit and was stopped.",
                (limit.as_secs() / 60).max(1)
            ),
            kind: "TimeoutError",
            retryable: true,
            not_started: false,
            node: None,
        }
    }
}
