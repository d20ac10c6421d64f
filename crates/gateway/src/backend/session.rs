//! One job's conversation with a backend, whatever the link: submit it (or
//! re-attach to it after a gateway restart), read its events, ask the
//! backend about it when the events stop, fetch its outputs, stop it.
//!
//! The runner (`dispatch::run`) is written against [`BackendSession`] only,
//! so it has no per-kind branches and its phases are tested against a
//! scripted session.

use bytes::Bytes;
use comfyume_protocol::{JobStatus, Outcome, OutputFile};
use serde_json::Value;

use super::comfy::ComfyJob;
use super::worker::WorkerJob;

/// What a backend gets of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The API-format prompt, its input files renamed to `inputs`' names.
    pub prompt: Value,
    /// Input files by their content-addressed names, with their bytes.
    pub inputs: Vec<(String, Vec<u8>)>,
    pub extra_data: Value,
    pub partial_execution_targets: Option<Vec<String>>,
}

/// Something the job did, in the backend's order.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A text event of the job (not its end); `raw` is the frame as sent.
    Event {
        kind: String,
        data: Value,
        raw: String,
    },
    /// A binary frame of the job (a preview).
    Binary(Bytes),
    /// An output file's bytes, sent ahead of the `executed` naming it.
    File { file: OutputFile, data: Vec<u8> },
    /// The backend's GPU is starting from cold: the job waits for it.
    ColdStart,
    /// The job's last frame; `outcome` is how the backend says it ended,
    /// when it says so here rather than in an earlier event.
    Done { outcome: Option<Outcome> },
}

impl SessionEvent {
    /// The end of a job stopped where the backend will not say so itself
    /// (taken out of a queue, or its stream dropped): ComfyUI's
    /// `execution_interrupted` for `prompt_id`, then the end.
    pub fn interrupted(prompt_id: &str) -> [SessionEvent; 2] {
        let data = comfyume_protocol::frames::interrupted_data(prompt_id, crate::clock::now_ms());
        let raw = serde_json::json!({"type": "execution_interrupted", "data": data}).to_string();
        [
            SessionEvent::Event {
                kind: "execution_interrupted".into(),
                data,
                raw,
            },
            SessionEvent::Done {
                outcome: Some(Outcome::Interrupted),
            },
        ]
    }
}

/// Why a session could not go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The backend refused the prompt (HTTP 400) with ComfyUI's body.
    #[error(
        "the backend refused the prompt: {}",
        comfyume_protocol::client::rejection_summary(.0)
    )]
    Rejected(Value),
    /// The backend turned the job away before starting it (a busy
    /// worker): not the job's fault, and another try may succeed.
    #[error("{0}")]
    Busy(String),
    /// The job's events stopped coming (socket or stream broken): what
    /// became of it is for [`BackendSession::status`] to say.
    #[error("{0}")]
    Lost(String),
    /// The request itself was malformed: no backend would take it.
    #[error("{0}")]
    Invalid(String),
    /// Anything else the backend did wrong (unreachable, an error status,
    /// an unreadable answer): another backend may do better.
    #[error("{0}")]
    Failed(String),
}

impl From<comfyume_protocol::BackendError> for SessionError {
    fn from(e: comfyume_protocol::BackendError) -> Self {
        match e {
            comfyume_protocol::BackendError::Rejected { body, .. } => SessionError::Rejected(body),
            other => SessionError::Failed(other.to_string()),
        }
    }
}

/// A job on a backend. `next` must be cancel-safe: the runner races it
/// against time limits and cancellation.
#[allow(async_fn_in_trait)] // used through generics only, never boxed
pub trait BackendSession {
    /// Whether a job this gateway submitted before a restart can be
    /// followed again (rather than submitted anew).
    fn can_reattach(&self) -> bool;

    /// Sends the job to the backend and starts listening to it.
    async fn submit(&mut self, job: &Submission) -> Result<(), SessionError>;

    /// Starts listening to a job submitted before a restart.
    async fn reattach(&mut self) -> Result<(), SessionError>;

    /// The job's next event.
    async fn next(&mut self) -> Result<SessionEvent, SessionError>;

    /// Listens again after [`SessionError::Lost`], before asking
    /// [`status`](Self::status), so nothing the job does after the answer
    /// is missed.
    async fn reconnect(&mut self) -> Result<(), SessionError>;

    /// What the backend says of the job now.
    async fn status(&mut self) -> Result<JobStatus, SessionError>;

    /// An output file the job produced, by the name its `executed` gave.
    async fn fetch_output(&mut self, file: &OutputFile) -> Result<Vec<u8>, SessionError>;

    /// Stops the job on the backend. The session's events then tell how
    /// it ended (an `execution_interrupted`, then the end), unless the
    /// backend never started it, which [`status`](Self::status) then shows
    /// as unknown.
    async fn stop(&mut self);
}

/// The session of either link.
pub enum Session {
    Comfy(ComfyJob),
    Worker(WorkerJob),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Session::Comfy($s) => $e,
            Session::Worker($s) => $e,
        }
    };
}

impl BackendSession for Session {
    fn can_reattach(&self) -> bool {
        each!(self, s => s.can_reattach())
    }
    async fn submit(&mut self, job: &Submission) -> Result<(), SessionError> {
        each!(self, s => s.submit(job).await)
    }
    async fn reattach(&mut self) -> Result<(), SessionError> {
        each!(self, s => s.reattach().await)
    }
    async fn next(&mut self) -> Result<SessionEvent, SessionError> {
        each!(self, s => s.next().await)
    }
    async fn reconnect(&mut self) -> Result<(), SessionError> {
        each!(self, s => s.reconnect().await)
    }
    async fn status(&mut self) -> Result<JobStatus, SessionError> {
        each!(self, s => s.status().await)
    }
    async fn fetch_output(&mut self, file: &OutputFile) -> Result<Vec<u8>, SessionError> {
        each!(self, s => s.fetch_output(file).await)
    }
    async fn stop(&mut self) {
        each!(self, s => s.stop().await)
    }
}
