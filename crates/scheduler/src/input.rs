//! What [`plan`](super::plan) is given: pending jobs, running counts and free
//! slots. Plain values, built by the dispatcher from its snapshot of the
//! queue and the backends.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use comfyume_domain::{JobId, UserId};

/// A GPU backend, by its configured name (`[[backends]] name`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(String);

impl BackendId {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackendId({})", self.0)
    }
}

/// One place a job can run: slot `index` of `backend`. A backend with N
/// slots runs up to N jobs at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub backend: BackendId,
    pub index: u32,
}

impl Slot {
    pub fn new(backend: BackendId, index: u32) -> Self {
        Self { backend, index }
    }
}

/// Where a job stands in its owner's own queue, with ComfyUI's semantics:
/// the prompt's `number` first (ComfyUI gives each prompt the next counter
/// value, or its negation for `front: true`, or the client's own `number`),
/// then the submission sequence.
///
/// The key only orders one user's jobs among themselves; the choice of
/// *which user* goes next never looks at it, so `front: true` cannot jump
/// over other people.
///
/// Numbers compare by [`f64::total_cmp`]; a NaN is read as `+∞` (last).
#[derive(Debug, Clone, Copy)]
pub struct OrderKey {
    number: f64,
    seq: u64,
}

impl OrderKey {
    /// A key from an explicit `number` (as a client may send) and the
    /// submission sequence `seq` (unique, increasing with submission time).
    pub fn new(number: f64, seq: u64) -> Self {
        let number = if number.is_nan() {
            f64::INFINITY
        } else {
            number
        };
        Self { number, seq }
    }

    /// A normal submission: to the back of the owner's queue.
    pub fn back(seq: u64) -> Self {
        Self::new(seq as f64, seq)
    }

    /// `front: true`: before every job the owner already has queued
    /// (ComfyUI's `-number`, so the latest front job goes first).
    pub fn front(seq: u64) -> Self {
        Self::new(-(seq as f64), seq)
    }

    /// A job put back in the queue after its backend failed: before
    /// everything else of its owner's, in original submission order.
    pub fn retry(seq: u64) -> Self {
        Self::new(f64::NEG_INFINITY, seq)
    }

    pub fn number(&self) -> f64 {
        self.number
    }

    /// The submission sequence.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.number
            .total_cmp(&other.number)
            .then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for OrderKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OrderKey {}

/// A job waiting to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    pub id: JobId,
    pub owner: UserId,
    /// In the instructor lane: every job an admin submits (and, later, a
    /// participant's job an admin bumps). Lane jobs start before any other
    /// job that could use the same slot, and come first in their owner's
    /// own queue.
    pub admin: bool,
    pub order: OrderKey,
    /// The backends this job may run on; `None` means any. (Backend
    /// groups, drained backends and jobs needing a model only some backends
    /// have all narrow this set.)
    pub allowed: Option<BTreeSet<BackendId>>,
    /// Its owner's own limit on running jobs, when an instructor set one
    /// (in place of the room's `cap`).
    pub owner_cap: Option<u32>,
}

impl PendingJob {
    /// A job that may run on any backend.
    pub fn new(id: JobId, owner: UserId, admin: bool, order: OrderKey) -> Self {
        Self {
            id,
            owner,
            admin,
            order,
            allowed: None,
            owner_cap: None,
        }
    }

    /// The same job, its owner limited to `cap` running jobs.
    pub fn owner_capped(mut self, cap: Option<u32>) -> Self {
        self.owner_cap = cap;
        self
    }

    /// The same job, restricted to `backends`.
    pub fn only_on(mut self, backends: impl IntoIterator<Item = BackendId>) -> Self {
        self.allowed = Some(backends.into_iter().collect());
        self
    }

    pub fn may_run_on(&self, backend: &BackendId) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|set| set.contains(backend))
    }

    /// The order of a user's own queue: instructor lane first, then
    /// [`OrderKey`].
    pub(crate) fn queue_cmp(&self, other: &Self) -> Ordering {
        other
            .admin
            .cmp(&self.admin)
            .then(self.order.cmp(&other.order))
    }
}

/// How many jobs each user has running now (dispatched and not finished).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningCounts(BTreeMap<UserId, u32>);

impl RunningCounts {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, user: UserId) -> u32 {
        self.0.get(&user).copied().unwrap_or(0)
    }

    /// One more running job for `user`.
    pub fn add(&mut self, user: UserId) {
        *self.0.entry(user).or_insert(0) += 1;
    }

    /// One fewer running job for `user` (no-op at zero).
    pub fn remove(&mut self, user: UserId) {
        if let Some(n) = self.0.get_mut(&user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.0.remove(&user);
            }
        }
    }

    /// The users with at least one running job.
    pub fn users(&self) -> impl Iterator<Item = UserId> + '_ {
        self.0.keys().copied()
    }

    pub fn total(&self) -> u32 {
        self.0.values().sum()
    }
}

/// One entry per running job.
impl FromIterator<UserId> for RunningCounts {
    fn from_iter<I: IntoIterator<Item = UserId>>(iter: I) -> Self {
        let mut counts = Self::new();
        for user in iter {
            counts.add(user);
        }
        counts
    }
}
