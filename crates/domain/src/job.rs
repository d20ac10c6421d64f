//! Jobs: one accepted prompt each. The id is a canonical UUID used as the
//! `prompt_id` both at the gateway and at the backend that runs it.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A job's id: a UUID in canonical lowercase hyphenated form, exactly what
/// ComfyUI's `validate_job_id` accepts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Uuid);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a canonical lowercase hyphenated UUID")]
pub struct JobIdError;

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// Accepts only the canonical form (`8-4-4-4-12` lowercase hex), so the
    /// same job never has two spellings.
    pub fn parse(s: &str) -> Result<Self, JobIdError> {
        let uuid = Uuid::try_parse(s).map_err(|_| JobIdError)?;
        if uuid.hyphenated().to_string() != s {
            return Err(JobIdError);
        }
        Ok(Self(uuid))
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for JobId {
    type Err = JobIdError;
    fn from_str(s: &str) -> Result<Self, JobIdError> {
        Self::parse(s)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0.hyphenated())
    }
}

/// Where a job is in its life, named as ComfyUI's `/api/jobs` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::InProgress,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::InProgress => "in_progress",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Finished one way or another: nothing more will happen to it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

impl FromStr for JobState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(())
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_ids() {
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()), Ok(id));
        assert!(JobId::parse("85204b33-05b2-4fb6-bb94-c91b90a274bd").is_ok());
        assert!(JobId::parse("85204B33-05B2-4FB6-BB94-C91B90A274BD").is_err());
        assert!(JobId::parse("85204b3305b24fb6bb94c91b90a274bd").is_err());
        assert!(JobId::parse("{85204b33-05b2-4fb6-bb94-c91b90a274bd}").is_err());
        assert!(JobId::parse("nope").is_err());
    }

    #[test]
    fn states_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        assert!("queued".parse::<JobState>().is_err());
    }
}

/// A job as stored: the prompt, its owner, its state, and what execution has
/// produced so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub seq: i64,
    pub owner: crate::UserId,
    pub state: JobState,
    /// ComfyUI's queue `number` (also the job's `priority` in `/api/jobs`).
    pub number: f64,
    /// Whether the client sent `number` (then it is echoed as a float).
    pub number_is_float: bool,
    pub prompt: serde_json::Value,
    pub extra_data: serde_json::Value,
    pub outputs_to_execute: Vec<String>,
    pub partial_targets: Option<Vec<String>>,
    pub workflow_id: Option<String>,
    pub attempts: i64,
    pub backend: Option<String>,
    /// The backend slot it runs on, while it runs.
    pub slot: Option<u32>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// `{node_id: ui}` of every `executed` so far.
    pub outputs: serde_json::Map<String, serde_json::Value>,
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// `[[type, data], …]`: the status messages ComfyUI keeps in history.
    pub messages: Vec<serde_json::Value>,
    /// The `execution_error` or `execution_interrupted` payload.
    pub error: Option<serde_json::Value>,
}

impl Job {
    /// The `number` as ComfyUI echoes it: `5.0` when the client sent it,
    /// `5` otherwise.
    pub fn number_json(&self) -> serde_json::Value {
        if self.number_is_float {
            serde_json::json!(self.number)
        } else {
            serde_json::json!(self.number as i64)
        }
    }
}
