//! What the dispatcher knows of each backend: whether it answers (probed
//! through `GET /system_stats`), and what the instructor decided (enabled,
//! disabled, draining). Only a ready, enabled backend gets new jobs.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::{Backend, BackendError};

/// A backend's state, as the rest of the system (and the admin API) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Not probed yet.
    Unknown,
    /// Answers, but is still loading (HTTP 503): a cold serverless replica
    /// or a ComfyUI starting up.
    Starting,
    /// Answers and has a free slot.
    Ready,
    /// Answers; every slot runs a job.
    Busy,
    /// Does not answer.
    Unreachable,
    /// Taken out of service by the instructor.
    Disabled,
    /// Finishing its current jobs; takes no new ones.
    Draining,
}

impl BackendState {
    /// The state's word, as the admin API and `/metrics` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Unknown => "unknown",
            BackendState::Starting => "starting",
            BackendState::Ready => "ready",
            BackendState::Busy => "busy",
            BackendState::Unreachable => "unreachable",
            BackendState::Disabled => "disabled",
            BackendState::Draining => "draining",
        }
    }
}

/// The instructor's decision about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    Enabled,
    Disabled,
    Draining,
}

/// The probe's finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    Unknown,
    Starting,
    Up,
    Down,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub reach: Reachability,
    /// Running the warm-up prompt: up, but not taking jobs yet.
    pub warming: bool,
    pub admission: Admission,
    pub probed_at: Option<Instant>,
    pub last_error: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            reach: Reachability::Unknown,
            warming: false,
            admission: Admission::Enabled,
            probed_at: None,
            last_error: None,
        }
    }
}

impl Health {
    /// The combined state, given how many of its slots run jobs.
    pub fn state(&self, running: u32, slots: u32) -> BackendState {
        match self.admission {
            Admission::Disabled => return BackendState::Disabled,
            Admission::Draining => return BackendState::Draining,
            Admission::Enabled => {}
        }
        match self.reach {
            Reachability::Unknown => BackendState::Unknown,
            Reachability::Starting => BackendState::Starting,
            Reachability::Up if self.warming => BackendState::Starting,
            Reachability::Down => BackendState::Unreachable,
            Reachability::Up if running >= slots => BackendState::Busy,
            Reachability::Up => BackendState::Ready,
        }
    }

    /// Whether new jobs may go there. A backend not yet probed counts: the
    /// first dispatch round probes before it plans.
    pub fn accepts_jobs(&self) -> bool {
        self.admission == Admission::Enabled && self.reach == Reachability::Up && !self.warming
    }

    pub fn is_stale(&self, every: Duration) -> bool {
        self.probed_at.is_none_or(|t| t.elapsed() >= every)
    }
}

/// Probes one backend.
pub async fn probe(backend: &Backend) -> (Reachability, Option<String>) {
    match backend.check().await {
        Ok(()) => (Reachability::Up, None),
        Err(BackendError::Status { status: 503, .. }) => (
            Reachability::Starting,
            Some("starting up (HTTP 503)".into()),
        ),
        Err(e) => (Reachability::Down, Some(e.to_string())),
    }
}
