//! The dispatcher: keeps every backend slot busy while eligible work is
//! queued. A coordinator asks the scheduler which pending jobs go to which
//! free slots, claims each job in the store (compare-and-set, so a job never
//! starts twice), and runs it on its slot in a task of its own; when a run
//! ends the slot is free again and the coordinator looks once more.
//!
//! With `dispatch.queue_ahead`, a slot on a ComfyUI has two places: the
//! job it runs and the next one, chosen as the slot would choose it when
//! the running job ends (`scheduler::plan_ahead`) and waiting in the
//! ComfyUI's own queue, so the GPU goes from one to the next without
//! waiting for the gateway. Each place is a client of its own there (its
//! events reach only its job); the waiting job is sent only once the
//! running one is queued, and its owner hears nothing of it before the
//! end of the job ahead.

mod health;
mod run;
pub(crate) mod warmup;

pub use health::{Admission, BackendState};

use crate::telemetry::phase;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::backend::Backend;
use crate::catalogue::{Catalogue, Requirements, Snapshot};
use crate::clock::now_ms;
use crate::config::DispatchConfig;
use crate::hub::{Hub, Outbound};
use crate::store::{Claimed, PendingRow, Store, StoreError};
use crate::workspace::Workspaces;
use comfyume_domain::{Job, JobId, UserId, UserName};
use comfyume_scheduler::{
    self as scheduler, BackendId, FairShare, OrderKey, PendingJob, RunningCounts, Slot, Usage,
};

/// What runs need from the rest of the server.
pub struct Shared {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub workspaces: Workspaces,
    pub catalogue: Arc<Catalogue>,
    /// Each running job's last `progress` (value, max), for the
    /// instructor's dashboard.
    pub progress: JobProgress,
}

/// The last `progress` frame of each running job.
#[derive(Default)]
pub struct JobProgress(Mutex<HashMap<JobId, (u64, u64)>>);

impl JobProgress {
    pub fn set(&self, job: JobId, value: u64, max: u64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job, (value, max));
    }

    pub fn clear(&self, job: &JobId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(job);
    }

    pub fn of(&self, job: &JobId) -> Option<(u64, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(job)
            .copied()
    }
}

impl Shared {
    /// A ComfyUI `notification` toast on every socket of `user`.
    pub fn notify(&self, user: UserId, text: &str, id: &str) {
        let msg = json!({"type": "notification", "data": {"value": text, "id": id}});
        self.hub.send_to_user(user, Outbound::Text(msg.to_string()));
    }

    /// Sends `user` their own queue status (`queue_remaining` = their
    /// pending plus running jobs) on every socket they have open.
    pub async fn send_status(&self, user: UserId) {
        match self.store.active_counts(user).await {
            Ok(counts) => self.send_counts(user, counts),
            Err(e) => tracing::warn!(error = %e, "could not count a user's jobs for their status"),
        }
    }

    /// [`send_status`](Self::send_status) with the (pending, in progress)
    /// counts already read.
    pub fn send_counts(&self, user: UserId, (pending, running): (u32, u32)) {
        let msg = json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": pending + running}}}});
        self.hub.send_to_user(user, Outbound::Text(msg.to_string()));
    }
}

/// A job on a slot right now: running there, or queued on the backend
/// behind the job that runs there (`dispatch.queue_ahead`).
#[derive(Debug, Clone)]
struct Running {
    owner: UserId,
    backend: usize,
    slot: Slot,
    /// Its place on the backend (see [`Backend::slot_session`]): the slot's
    /// index, or the index plus the slot count for the second place.
    place: u32,
    /// Fired when the owner cancels the job; its run stops it.
    cancel: Arc<Notify>,
    /// Set once the job is in the backend's queue.
    queued: tokio::sync::watch::Sender<bool>,
    since: std::time::Instant,
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    backends: Vec<Backend>,
    cap: u32,
    policy: DispatchConfig,
    /// The prompt each backend runs when it comes up, if configured.
    warmup: Option<serde_json::Value>,
    wake: Notify,
    /// Counts wakes: what participants and instructors see of the queue
    /// may have changed (the room's news loop and each open dashboard
    /// watch it).
    changes: tokio::sync::watch::Sender<u64>,
    state: Mutex<State>,
    /// This gateway dispatches: it alone does (it holds the lease, see
    /// `crate::cluster`), or there is no other.
    leading: std::sync::atomic::AtomicBool,
    /// The other gateways, when there are.
    relay: Option<crate::cluster::Outbox>,
    /// On a gateway that does not dispatch: what the one that does last
    /// said of its backends and runs, and when it arrived.
    heard: Mutex<Option<(LiveView, std::time::Instant)>>,
    /// Every task the dispatcher starts (job runs, warm-ups, clean-ups):
    /// `shutdown` stops and waits for them. `None` once shut down.
    tasks: Mutex<Option<JoinSet<()>>>,
}

#[derive(Default)]
struct State {
    running: HashMap<JobId, Running>,
    share: FairShare,
    /// Per backend, in configuration order.
    health: Vec<health::Health>,
    /// Jobs whose owners were told that every GPU is still starting.
    told_waiting: std::collections::HashSet<JobId>,
    /// The group the room uses (`None`: every backend).
    active_group: Option<String>,
    /// Per backend: the model files of the last job it started, which
    /// ComfyUI keeps loaded.
    loaded: Vec<std::collections::BTreeSet<String>>,
    /// What each pending job needs of a backend (see `requirements_of`).
    requirements: HashMap<JobId, Arc<Requirements>>,
    /// When each slot's last job ended: a job that waited behind it used
    /// the GPU only from then.
    slot_freed: HashMap<Slot, std::time::Instant>,
    /// The instructor paused the room: nothing new starts.
    paused: bool,
}

/// A job's span: every phase of its run, and whatever it logs, is inside
/// it. `queued_ms` is the wait from submission to its slot.
fn job_span(job: &Job, owner: &UserName, backend: &str) -> tracing::Span {
    let queued_ms = job.started_at.map_or(0, |s| (s - job.created_at).max(0));
    tracing::info_span!("job", job = %job.id, user = %owner, backend, attempt = job.attempts, queued_ms)
}

/// How long a view heard from the dispatching gateway holds (it shares one
/// every ten seconds at least, see `cluster::share_live_view`).
pub const HEARD_FRESH: Duration = Duration::from_secs(30);

/// The backends and the runs as the dispatching gateway sees them live,
/// shared with the other gateways (see `crate::cluster`).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveView {
    pub backends: Vec<BackendStatus>,
    pub running: Vec<LiveRun>,
}

/// One job on a slot, in a [`LiveView`].
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRun {
    pub job: JobId,
    pub owner: UserId,
    pub backend: String,
    /// Since it took its slot, when the view was taken.
    pub elapsed_ms: u64,
    /// Its last `progress` (value, max).
    pub progress: Option<(u64, u64)>,
}

/// A waiting job's place in the room (see [`Dispatcher::queue_places`]).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePlace {
    pub job: JobId,
    pub owner: UserId,
    /// Handed back by a backend that failed it: it waits to run again.
    pub retry: bool,
    /// Expected wait before it starts, if the room has a history to tell.
    pub wait_ms: Option<u64>,
}

/// Where a pending job stands in its owner's own queue.
fn order_key(r: &PendingRow) -> OrderKey {
    let seq = r.seq.max(0) as u64;
    if r.retry {
        OrderKey::retry(seq)
    } else {
        OrderKey::new(r.number, seq)
    }
}

/// How long a running job's backend may stay silent before it is asked
/// about the job.
const SILENCE_CHECK: Duration = Duration::from_secs(60);

/// How often a backend that is not busy is probed.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// One backend as the admin API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub kind: crate::config::BackendKind,
    pub url: String,
    pub slots: u32,
    pub group: Option<String>,
    /// In the active group (or no group is selected).
    pub active: bool,
    /// Slots with a job running.
    pub running: u32,
    /// Jobs waiting on the backend behind a running one
    /// (`dispatch.queue_ahead`).
    pub queued: u32,
    pub state: BackendState,
    pub last_error: Option<String>,
}

impl Dispatcher {
    pub fn new(
        shared: Arc<Shared>,
        backends: Vec<Backend>,
        cap: u32,
        policy: DispatchConfig,
    ) -> Self {
        let health = vec![health::Health::default(); backends.len()];
        let loaded = vec![Default::default(); backends.len()];
        Self {
            shared,
            backends,
            cap: cap.max(1),
            warmup: None,
            policy,
            wake: Notify::new(),
            changes: tokio::sync::watch::Sender::new(0),
            state: Mutex::new(State {
                health,
                loaded,
                ..State::default()
            }),
            leading: std::sync::atomic::AtomicBool::new(true),
            relay: None,
            heard: Mutex::new(None),
            tasks: Mutex::new(Some(JoinSet::new())),
        }
    }

    /// Tells the gateways behind `relay` what changes here, and leaves
    /// dispatching to whichever holds the lease.
    pub fn with_relay(mut self, relay: crate::cluster::Outbox) -> Self {
        self.relay = Some(relay);
        self
    }

    fn relay(&self, signal: impl FnOnce() -> crate::cluster::Signal) {
        if let Some(relay) = &self.relay {
            relay.send(signal());
        }
    }

    /// What this gateway knows live of the backends and the runs, as the
    /// dispatching gateway shares it with the others.
    pub fn live_view(&self) -> LiveView {
        let running = self
            .running_here()
            .into_iter()
            .map(|(job, owner, backend, elapsed)| LiveRun {
                job,
                owner,
                backend,
                elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                progress: self.shared.progress.of(&job),
            })
            .collect();
        LiveView {
            backends: self.backends_here(),
            running,
        }
    }

    /// Takes the dispatching gateway's view as this one's, while it does
    /// not dispatch itself.
    pub fn heard(&self, view: LiveView) {
        if self.is_leading() {
            return;
        }
        for run in &view.running {
            if let Some((value, max)) = run.progress {
                self.shared.progress.set(run.job, value, max);
            }
        }
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, _)) = heard.as_ref() {
            for gone in old
                .running
                .iter()
                .filter(|r| !view.running.iter().any(|n| n.job == r.job))
            {
                self.shared.progress.clear(&gone.job);
            }
        }
        *heard = Some((view, std::time::Instant::now()));
        drop(heard);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The dispatching gateway's view, when this one does not dispatch
    /// and has heard it lately (a view older than [`HEARD_FRESH`] is no
    /// view: nobody may be dispatching).
    fn heard_view(&self) -> Option<(LiveView, Duration)> {
        if self.is_leading() || self.relay.is_none() {
            return None;
        }
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        heard
            .as_ref()
            .filter(|(_, at)| at.elapsed() < HEARD_FRESH)
            .map(|(view, at)| (view.clone(), at.elapsed()))
    }

    /// Forgets what the dispatching gateway said (this one takes over).
    pub fn forget_heard(&self) {
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner()).take();
        for run in heard.iter().flat_map(|(view, _)| &view.running) {
            self.shared.progress.clear(&run.job);
        }
    }

    /// Whether this gateway dispatches (see `crate::cluster::lead`).
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading
            .store(leading, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops every run here and forgets them, as a gateway that lost the
    /// lease must: the jobs stay in progress in the store for the gateway
    /// that takes over. The dispatcher can lead again afterwards.
    pub async fn step_down(&self) {
        let tasks = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            match tasks.as_mut() {
                Some(set) => Some(std::mem::take(set)),
                None => None,
            }
        };
        if let Some(mut set) = tasks {
            set.shutdown().await;
        }
        let mut state = self.lock();
        for id in state.running.keys() {
            self.shared.progress.clear(id);
        }
        state.running.clear();
        state.slot_freed.clear();
        state.told_waiting.clear();
    }

    /// Sets the warm-up prompt (API format) run on each backend that comes up.
    pub fn with_warmup(mut self, prompt: Option<serde_json::Value>) -> Self {
        self.warmup = prompt;
        self
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Prepares the queue after a (re)start. A job that was running when
    /// the gateway stopped is picked up again on its backend (re-attached,
    /// or collected if it finished meanwhile); one whose backend is no
    /// longer configured goes back to the queue in its old place. Fair
    /// shares are rebuilt from the recorded GPU time.
    pub async fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        for job in self.shared.store.in_progress_jobs().await? {
            let place = job
                .backend
                .as_ref()
                .and_then(|name| self.backends.iter().position(|b| &b.name == name));
            match (place, job.slot) {
                (Some(backend), Some(place)) if place < self.max_places(backend) => {
                    let Some(owner) = self.shared.store.user_by_id(job.owner).await? else {
                        continue;
                    };
                    let slots = self.backends[backend].slots;
                    let slot = Slot::new(
                        BackendId::new(self.backends[backend].name.clone()),
                        place % slots,
                    );
                    self.lock().running.insert(
                        job.id,
                        Running {
                            owner: job.owner,
                            backend,
                            slot,
                            place,
                            cancel: Arc::default(),
                            queued: tokio::sync::watch::Sender::new(false),
                            since: std::time::Instant::now(),
                        },
                    );
                    let span = job_span(&job, &owner.name, &self.backends[backend].name);
                    // It may wait behind another job there: the limit
                    // allows for that until it starts.
                    let start = Start::Resume;
                    self.spawn(
                        self.clone()
                            .run_job(job, owner.name, backend, place, start, span),
                    );
                }
                _ => {
                    if self.shared.store.requeue_job(&job.id).await? {
                        tracing::info!(job = %job.id, "re-queued a job whose backend is gone");
                    }
                }
            }
        }
        // Fair shares reflect the current workshop session, not all history:
        // yesterday's heavy user starts today level with everyone.
        let session_start = now_ms() - 12 * 3600 * 1000;
        let usage = self.shared.store.gpu_time_by_user(session_start).await?;
        let share = FairShare::from_usage(usage.into_iter().map(|(u, ms, n)| {
            (
                u,
                Usage {
                    gpu_ms: ms.max(0) as u64,
                    jobs: n.max(0) as u64,
                },
            )
        }));
        self.lock().share = share;
        Ok(())
    }

    /// Something changed (a job arrived, a slot freed): look again, here
    /// and on the other gateways.
    pub fn wake(&self) {
        self.relay(|| crate::cluster::Signal::Wake);
        self.wake_here();
    }

    /// [`wake`](Self::wake) on this gateway only.
    pub fn wake_here(&self) {
        self.wake.notify_one();
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes to the queue or the slots, for whoever shows them: the
    /// receiver sees a new value after each.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every waiting job in the order it is expected to start (see
    /// [`scheduler::start_order`]), with its owner and the GPU time
    /// expected before it can start, spread over the slots that serve the
    /// room: the jobs ahead of it, and half of each running one (on
    /// average, half done). `None` for that time until the room has
    /// finished a job to estimate from.
    pub async fn queue_places(&self) -> Result<Vec<QueuePlace>, StoreError> {
        let rows = self.shared.store.pending_jobs().await?;
        let pending: Vec<PendingJob> = rows
            .iter()
            .map(|r| PendingJob::new(r.id, r.owner, r.admin, order_key(r)))
            .collect();
        let owners: HashMap<JobId, (UserId, bool)> =
            rows.iter().map(|r| (r.id, (r.owner, r.retry))).collect();
        let slots: u32 = {
            let serving = self.serving();
            self.backends
                .iter()
                .filter(|b| serving.contains(&b.name))
                .map(|b| b.slots)
                .sum()
        };
        // A copy of what the order needs, so the lock is not held while
        // it is worked out.
        // On a gateway that does not dispatch, the runs it heard of.
        let running_owners: Vec<UserId> = self
            .running_jobs()
            .into_iter()
            .map(|(_, owner, _, _)| owner)
            .collect();
        let share = self.lock().share.clone();
        let running: RunningCounts = running_owners.iter().copied().collect();
        let order = scheduler::start_order(&pending, &running, &share);
        let known = share.room_mean_ms().is_some();
        let mut ahead_ms: u64 = running_owners
            .iter()
            .map(|owner| share.estimate_ms(*owner) / 2)
            .sum();
        let mut places = Vec::with_capacity(order.len());
        for id in order {
            let Some((owner, retry)) = owners.get(&id).copied() else {
                continue;
            };
            places.push(QueuePlace {
                job: id,
                owner,
                retry,
                wait_ms: (known && slots > 0).then(|| ahead_ms / u64::from(slots)),
            });
            ahead_ms = ahead_ms.saturating_add(share.estimate_ms(owner));
        }
        Ok(places)
    }

    /// Runs the coordinator until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.clone().run_once().await {
                tracing::error!(error = %e, "dispatching failed; retrying");
            }
            // The timeout is a safety net only; every change calls `wake`.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.wake.notified()).await;
        }
    }

    /// One round: starts every pending job the scheduler places on a free
    /// slot. Returns the jobs that started.
    pub async fn run_once(self: Arc<Self>) -> Result<Vec<JobId>, StoreError> {
        if self.relay.is_some() {
            // Cancels asked for on other gateways, should their signal
            // have been lost.
            for job in self.shared.store.cancel_requests().await? {
                self.cancel_here(&job);
            }
        }
        if self.is_paused() {
            return Ok(Vec::new());
        }
        let rows = self.shared.store.pending_jobs().await?;
        if !rows.is_empty() {
            self.probe_stale().await;
            self.tell_if_all_starting(&rows);
        }
        let snapshot = self.shared.catalogue.snapshot().await.ok();
        let requirements = self.requirements_of(&rows).await?;
        let needs: HashMap<JobId, (Arc<Requirements>, PendingJob)> = rows
            .iter()
            .filter_map(|r| {
                let req = requirements.get(&r.id)?.clone();
                let job = self.pending_job(r, &req, snapshot.as_deref());
                Some((r.id, (req, job)))
            })
            .collect();
        let pending: Vec<PendingJob> = rows
            .iter()
            .filter_map(|r| needs.get(&r.id).map(|(_, j)| j.clone()))
            .collect();
        let assignments = {
            let mut state = self.lock();
            let running: RunningCounts = state.running.values().map(|r| r.owner).collect();
            let with_work: Vec<UserId> = pending
                .iter()
                .map(|p| p.owner)
                .chain(state.running.values().map(|r| r.owner))
                .collect();
            state.share.sync_active(with_work);
            let (free, mut busy) = self.openings(&state);
            let mut plan = scheduler::plan(&pending, &running, &state.share, &free, self.cap);
            self.prefer_loaded_models(&state, &mut plan, &free, &needs);
            // Then the place behind each running job, including the ones
            // just planned.
            let mut after = running;
            for (job_id, slot) in &plan {
                let Some((_, job)) = needs.get(job_id) else {
                    continue;
                };
                after.add(job.owner);
                if self.places_of(&slot.backend) > 1 {
                    busy.push((slot.clone(), job.owner));
                }
            }
            if !busy.is_empty() {
                let planned: std::collections::HashSet<JobId> =
                    plan.iter().map(|(id, _)| *id).collect();
                let rest: Vec<PendingJob> = pending
                    .iter()
                    .filter(|p| !planned.contains(&p.id))
                    .cloned()
                    .collect();
                let behind = scheduler::plan_ahead(&rest, &after, &state.share, &busy, self.cap);
                plan.extend(behind);
            }
            plan
        };
        let mut started = Vec::new();
        for (job_id, slot) in assignments {
            let Some(backend) = self
                .backends
                .iter()
                .position(|b| b.name == slot.backend.as_str())
            else {
                continue;
            };
            let Some((place, start)) = self.free_place(backend, &slot) else {
                continue;
            };
            let claim = phase!("claim", job = %job_id, backend = %self.backends[backend].name);
            let claimed = self
                .shared
                .store
                .claim_job(&job_id, &self.backends[backend].name, place, now_ms())
                .instrument(claim)
                .await;
            // Claimed: from here every way out either runs the job or puts
            // it back, so it can never sit "in progress" with nothing
            // running it.
            let Claimed {
                job,
                owner_name,
                active,
            } = match claimed {
                Ok(Some(claimed)) => claimed,
                // Cancelled (or taken) since the round began.
                Ok(None) => continue,
                Err(e @ StoreError::Corrupt(_)) => {
                    tracing::error!(job = %job_id, error = %e, "could not load a claimed job; putting it back in the queue");
                    self.shared.store.requeue_job(&job_id).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            {
                let mut state = self.lock();
                state.running.insert(
                    job_id,
                    Running {
                        owner: job.owner,
                        backend,
                        slot: slot.clone(),
                        place,
                        cancel: Arc::default(),
                        queued: tokio::sync::watch::Sender::new(false),
                        since: std::time::Instant::now(),
                    },
                );
                let models = Requirements::of(&job.prompt).model_files();
                if !models.is_empty() {
                    state.loaded[backend] = models;
                }
            }
            started.push(job_id);
            self.shared.send_counts(job.owner, active);
            let span = job_span(&job, &owner_name, &self.backends[backend].name);
            self.spawn(
                self.clone()
                    .run_job(job, owner_name, backend, place, start, span),
            );
        }
        Ok(started)
    }

    /// The places backend `i` can have jobs at, whatever `queue_ahead`
    /// says now: a job queued ahead before a restart with it turned off
    /// is still followed where it is, never run a second time.
    fn max_places(&self, i: usize) -> u32 {
        self.backends[i].slots * self.backends[i].places_per_slot(true)
    }

    fn places_of(&self, backend: &BackendId) -> u32 {
        self.backends
            .iter()
            .find(|b| b.name == backend.as_str())
            .map_or(1, |b| b.places_per_slot(self.policy.queue_ahead))
    }

    /// A free place on `slot` of backend `i` for a job about to be
    /// claimed, and whether it will wait there behind another job (then
    /// with word of that job reaching the backend's queue). Decided here,
    /// in the round, so each job waits for the one before it and never
    /// for one claimed after it.
    fn free_place(&self, i: usize, slot: &Slot) -> Option<(u32, Start)> {
        let state = self.lock();
        let there: Vec<&Running> = state
            .running
            .values()
            .filter(|r| r.backend == i && r.slot == *slot)
            .collect();
        let slots = self.backends[i].slots;
        let place = (0..self.backends[i].places_per_slot(self.policy.queue_ahead))
            .map(|k| slot.index + k * slots)
            .find(|p| there.iter().all(|r| r.place != *p))?;
        let start = match there.first() {
            None => Start::Now,
            Some(ahead) => Start::Behind(ahead.queued.subscribe()),
        };
        Some((place, start))
    }

    /// What each pending job needs of a backend. Worked out once per job
    /// from its prompt and kept while the job is pending, so a round reads
    /// only the small columns of the queue, not every prompt again.
    async fn requirements_of(
        &self,
        rows: &[PendingRow],
    ) -> Result<HashMap<JobId, Arc<Requirements>>, StoreError> {
        let missing: Vec<JobId> = {
            let state = self.lock();
            rows.iter()
                .map(|r| r.id)
                .filter(|id| !state.requirements.contains_key(id))
                .collect()
        };
        let fresh: Vec<(JobId, Arc<Requirements>)> = if missing.is_empty() {
            Vec::new()
        } else {
            self.shared
                .store
                .prompts_of(&missing)
                .await?
                .into_iter()
                .map(|(id, prompt)| (id, Arc::new(Requirements::of(&prompt))))
                .collect()
        };
        let mut state = self.lock();
        state.requirements.extend(fresh);
        // Only pending jobs are kept: the rest started or left the queue.
        let pending: std::collections::HashSet<JobId> = rows.iter().map(|r| r.id).collect();
        state.requirements.retain(|id, _| pending.contains(id));
        Ok(state.requirements.clone())
    }

    /// The scheduler's view of a pending row. A job a backend failed goes
    /// first in its owner's queue, and elsewhere when another backend exists.
    fn pending_job(
        &self,
        r: &PendingRow,
        needs: &Requirements,
        abilities: Option<&Snapshot>,
    ) -> PendingJob {
        let job = PendingJob::new(r.id, r.owner, r.admin, order_key(r)).owner_capped(r.owner_cap);
        // Only backends that have every node and model the prompt names
        // (when that leaves any: otherwise let a backend say what is wrong).
        let capable: Vec<&Backend> = self
            .backends
            .iter()
            .filter(|b| {
                abilities
                    .and_then(|s| s.abilities.get(&b.name))
                    .is_none_or(|a| a.can_run(needs))
            })
            .collect();
        let mut allowed = if capable.is_empty() {
            self.backends.iter().collect()
        } else {
            capable
        };
        if let Some(bad) = &r.avoid_backend {
            if allowed.iter().any(|b| &b.name != bad) {
                allowed.retain(|b| &b.name != bad);
            }
        }
        if allowed.len() == self.backends.len() {
            job
        } else {
            job.only_on(allowed.into_iter().map(|b| BackendId::new(b.name.clone())))
        }
    }

    /// Moves planned jobs to slots whose backend already has their models
    /// loaded, when a free slot there (or a swap with a job that does not
    /// care) allows it: reloading a checkpoint costs tens of seconds.
    fn prefer_loaded_models(
        &self,
        state: &State,
        plan: &mut [(JobId, Slot)],
        free: &[Slot],
        needs: &HashMap<JobId, (Arc<Requirements>, PendingJob)>,
    ) {
        let backend_of = |slot: &Slot| {
            self.backends
                .iter()
                .position(|b| b.name == slot.backend.as_str())
        };
        let has_loaded = |slot: &Slot, models: &std::collections::BTreeSet<String>| {
            !models.is_empty()
                && backend_of(slot).is_some_and(|i| models.is_subset(&state.loaded[i]))
        };
        let mut unused: Vec<Slot> = free
            .iter()
            .filter(|s| !plan.iter().any(|(_, p)| p == *s))
            .cloned()
            .collect();
        for i in 0..plan.len() {
            let Some((req, job)) = needs.get(&plan[i].0) else {
                continue;
            };
            let models = req.model_files();
            if models.is_empty() || has_loaded(&plan[i].1, &models) {
                continue;
            }
            if let Some(pos) = unused
                .iter()
                .position(|s| job.may_run_on(&s.backend) && has_loaded(s, &models))
            {
                let better = unused.remove(pos);
                unused.push(std::mem::replace(&mut plan[i].1, better));
                continue;
            }
            for k in 0..plan.len() {
                if k == i || !has_loaded(&plan[k].1, &models) {
                    continue;
                }
                let Some((other_req, other_job)) = needs.get(&plan[k].0) else {
                    continue;
                };
                let other_models = other_req.model_files();
                let other_loses = has_loaded(&plan[k].1, &other_models);
                if !other_loses
                    && job.may_run_on(&plan[k].1.backend)
                    && other_job.may_run_on(&plan[i].1.backend)
                {
                    let (a, b) = (plan[i].1.clone(), plan[k].1.clone());
                    plan[i].1 = b;
                    plan[k].1 = a;
                    break;
                }
            }
        }
    }

    /// Runs one job on its slot, then frees the slot: a backend fault puts
    /// the job back in the queue while attempts remain.
    async fn run_job(
        self: Arc<Self>,
        job: Job,
        owner: UserName,
        backend: usize,
        place: u32,
        start: Start,
        span: tracing::Span,
    ) {
        let job_id = job.id;
        let attempt = job.attempts;
        let max_attempts = i64::from(self.policy.max_attempts.max(1));
        let (cancel, queued) = {
            let state = self.lock();
            let this = state.running.get(&job_id);
            (
                this.map(|r| r.cancel.clone()).unwrap_or_default(),
                this.map_or_else(
                    || tokio::sync::watch::Sender::new(false),
                    |r| r.queued.clone(),
                ),
            )
        };
        let limits = run::RunLimits {
            job_timeout: Duration::from_secs(self.policy.job_timeout_seconds.max(1)),
            may_retry: attempt < max_attempts,
            resume: matches!(start, Start::Resume),
            queued,
            after: match start {
                Start::Behind(ahead) => Some(ahead),
                Start::Now | Start::Resume => None,
            },
            recorded: Some({
                let this = self.clone();
                Box::new(move || this.release(&job_id))
            }),
            cancel,
            silence_check: SILENCE_CHECK,
        };
        let retry_copy = job.clone();
        let backend_name = &self.backends[backend].name;
        let session = self.backends[backend].slot_session(place, &job_id.to_string());
        let outcome = run::run(&self.shared, job, owner, session, limits)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        match outcome {
            run::Outcome::Finished(_) => {}
            run::Outcome::NotStarted { reason } => {
                // The backend turned the job away before running it (a busy
                // worker): it goes back unchanged, without using an attempt.
                tracing::info!(%reason, "backend busy; job back in the queue");
                if let Err(e) = self.shared.store.unclaim_job(&job_id, attempt).await {
                    tracing::error!(error = %e, "could not put a job back in the queue");
                }
            }
            run::Outcome::BackendFault { reason } => {
                // Best effort: make sure the backend does not run it too,
                // without holding up the retry if the backend is gone.
                let gone = self.backends[backend].clone();
                let id = job_id.to_string();
                self.spawn(async move { gone.forget(&id).await });
                tracing::warn!(%reason, "backend lost a job; re-queueing it");
                // Take it out of rotation until a probe finds it well again.
                self.record_probe(backend, health::Reachability::Down, Some(reason.clone()))
                    .await;
                // Told before the job goes back in the queue: once it is
                // there, another slot may run it to its end at once, and
                // the owner must not hear of a retry after its result.
                let elsewhere = if self.backends.len() > 1 {
                    " on another GPU"
                } else {
                    ""
                };
                let text = format!(
                    "The GPU running your job went away; retrying{elsewhere} (attempt {} of {max_attempts}).",
                    attempt + 1
                );
                self.shared
                    .notify(retry_copy.owner, &text, &format!("comfyume-retry-{job_id}"));
                match self
                    .shared
                    .store
                    .requeue_for_retry(&job_id, attempt, backend_name)
                    .await
                {
                    Ok(true) => {
                        self.shared.send_status(retry_copy.owner).await;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "could not re-queue a job; failing it");
                        run::give_up(&self.shared, retry_copy, reason).await;
                    }
                }
            }
        }
        // A finished job's slot was freed when its end was recorded.
        self.release(&job_id);
    }

    /// Frees the slot of `job_id` (once; later calls do nothing), charges
    /// its owner the GPU time, and looks for work for the slot.
    fn release(&self, job_id: &JobId) {
        {
            let mut state = self.lock();
            let Some(r) = state.running.remove(job_id) else {
                return;
            };
            // A job that waited behind another used the GPU from the end
            // of that one.
            let now = std::time::Instant::now();
            let from = state
                .slot_freed
                .get(&r.slot)
                .copied()
                .filter(|t| *t > r.since)
                .unwrap_or(r.since);
            state.share.charge(r.owner, (now - from).as_millis() as u64);
            state.slot_freed.insert(r.slot, now);
        }
        self.wake();
    }

    /// Probes every backend whose last probe is old and which is not fully
    /// busy (a busy backend is known to work). Probes run side by side.
    async fn probe_stale(self: &Arc<Self>) {
        let stale: Vec<usize> = {
            let state = self.lock();
            (0..self.backends.len())
                .filter(|&i| {
                    let running = state.running.values().filter(|r| r.backend == i).count() as u32;
                    state.health[i].is_stale(PROBE_EVERY) && running < self.backends[i].slots
                })
                .collect()
        };
        let probes = stale
            .iter()
            .map(|&i| async move { (i, health::probe(&self.backends[i]).await) });
        for (i, (reach, error)) in futures_util::future::join_all(probes).await {
            self.record_probe(i, reach, error).await;
        }
    }

    async fn record_probe(
        self: &Arc<Self>,
        i: usize,
        reach: health::Reachability,
        error: Option<String>,
    ) {
        let came_up = {
            let mut state = self.lock();
            let h = &mut state.health[i];
            let was_up = h.reach == health::Reachability::Up;
            if h.reach != reach {
                tracing::info!(backend = %self.backends[i].name, from = ?h.reach, to = ?reach, "backend state changed");
            }
            h.reach = reach;
            h.probed_at = Some(std::time::Instant::now());
            h.last_error = error;
            let came_up = !was_up && reach == health::Reachability::Up;
            if came_up && self.warmup.is_some() {
                h.warming = true;
            }
            came_up
        };
        if came_up {
            // A backend that (re)appears may bring other nodes or models.
            self.shared.catalogue.invalidate().await;
            if let Some(prompt) = self.warmup.clone() {
                self.spawn(self.clone().warm_up(i, prompt));
            }
        }
    }

    /// Runs the warm-up prompt on a backend that just came up, before any
    /// participant's job, so the first participant does not wait for the
    /// model to load. A failed warm-up is logged; the backend serves anyway.
    async fn warm_up(self: Arc<Self>, i: usize, prompt: serde_json::Value) {
        let backend = &self.backends[i];
        let limit = Duration::from_secs(self.policy.job_timeout_seconds.max(1));
        tracing::info!(backend = %backend.name, "warming up");
        match tokio::time::timeout(limit, warmup::run(backend, &prompt)).await {
            Ok(Ok(())) => tracing::info!(backend = %backend.name, "warm-up done"),
            Ok(Err(e)) => {
                tracing::warn!(backend = %backend.name, error = %e, "warm-up failed; serving anyway")
            }
            Err(_) => tracing::warn!(backend = %backend.name, "warm-up timed out; serving anyway"),
        }
        self.lock().health[i].warming = false;
        self.wake();
    }

    /// While no backend can take work, owners of waiting jobs hear why,
    /// once per job.
    fn tell_if_all_starting(&self, rows: &[PendingRow]) {
        let mut state = self.lock();
        if state.health.iter().any(|h| h.accepts_jobs())
            || state
                .health
                .iter()
                .all(|h| h.reach == health::Reachability::Unknown)
        {
            return;
        }
        let starting = state
            .health
            .iter()
            .any(|h| h.reach == health::Reachability::Starting);
        let text = if starting {
            "The GPUs are still starting up; your job will run as soon as one is ready."
        } else {
            "No GPU is available right now; your job is safe in the queue and will run as soon as one is back."
        };
        for r in rows {
            if state.told_waiting.insert(r.id) {
                self.shared
                    .notify(r.owner, text, &format!("comfyume-waiting-{}", r.id));
            }
        }
    }

    /// What the GPUs serving the room are doing, as a participant waiting
    /// for one would want to know: `ready` (one is up), `warming up` (none
    /// is up yet, some are starting), or `unavailable` (none can take
    /// work).
    pub fn gpus(&self) -> &'static str {
        let serving: Vec<BackendState> = self
            .backends()
            .into_iter()
            .filter(|b| b.active)
            .map(|b| b.state)
            .collect();
        if serving.iter().any(|s| {
            matches!(
                s,
                BackendState::Ready | BackendState::Busy | BackendState::Draining
            )
        }) {
            "ready"
        } else if serving
            .iter()
            .any(|s| matches!(s, BackendState::Starting | BackendState::Unknown))
        {
            "warming up"
        } else {
            "unavailable"
        }
    }

    /// The names of the backends that serve the room now: in the active
    /// group, not disabled, and not known to be unreachable. What the
    /// participants see of the backends (packs' files, model lists) and
    /// who runs nodes' validators for them come from these.
    pub fn serving(&self) -> std::collections::HashSet<String> {
        self.backends()
            .into_iter()
            .filter(|b| {
                b.active && !matches!(b.state, BackendState::Disabled | BackendState::Unreachable)
            })
            .map(|b| b.name)
            .collect()
    }

    /// The jobs on the slots now: id, owner, backend, and how long since
    /// each was started there (its progress is in [`Shared::progress`]).
    pub fn running_jobs(&self) -> Vec<(JobId, UserId, String, Duration)> {
        if let Some((view, age)) = self.heard_view() {
            return view
                .running
                .into_iter()
                .map(|r| {
                    let elapsed = Duration::from_millis(r.elapsed_ms) + age;
                    (r.job, r.owner, r.backend, elapsed)
                })
                .collect();
        }
        self.running_here()
    }

    fn running_here(&self) -> Vec<(JobId, UserId, String, Duration)> {
        let state = self.lock();
        let mut jobs: Vec<_> = state
            .running
            .iter()
            .map(|(id, r)| {
                (
                    *id,
                    r.owner,
                    self.backends[r.backend].name.clone(),
                    r.since.elapsed(),
                )
            })
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.3));
        jobs
    }

    /// Every backend's state, for the admin API.
    pub fn backends(&self) -> Vec<BackendStatus> {
        match self.heard_view() {
            Some((view, _)) => view.backends,
            None => self.backends_here(),
        }
    }

    fn backends_here(&self) -> Vec<BackendStatus> {
        let state = self.lock();
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let jobs = state.running.values().filter(|r| r.backend == i).count() as u32;
                let occupied: std::collections::HashSet<u32> = state
                    .running
                    .values()
                    .filter(|r| r.backend == i)
                    .map(|r| r.slot.index)
                    .collect();
                let running = occupied.len() as u32;
                BackendStatus {
                    name: b.name.clone(),
                    kind: b.kind,
                    url: b.url().to_string(),
                    slots: b.slots,
                    group: b.group.clone(),
                    active: in_group(b, &state.active_group),
                    running,
                    queued: jobs - running,
                    state: state.health[i].state(running, b.slots),
                    last_error: state.health[i].last_error.clone(),
                }
            })
            .collect()
    }

    /// Enables, disables or drains a backend by name; `false` if there is
    /// no such backend. Disabling or draining never touches queued work, and
    /// lets running jobs finish.
    pub fn set_admission(&self, name: &str, admission: Admission) -> bool {
        let known = self.set_admission_here(name, admission);
        if known {
            self.relay(|| crate::cluster::Signal::Admission(name.to_string(), admission));
        }
        known
    }

    /// [`set_admission`](Self::set_admission) on this gateway only.
    pub fn set_admission_here(&self, name: &str, admission: Admission) -> bool {
        let Some(i) = self.backends.iter().position(|b| b.name == name) else {
            return false;
        };
        self.lock().health[i].admission = admission;
        tracing::info!(backend = %name, ?admission, "backend admission changed");
        self.wake_here();
        true
    }

    /// Pauses the room (nothing new starts; running jobs finish) or
    /// resumes it.
    pub fn set_paused(&self, paused: bool) {
        self.relay(|| crate::cluster::Signal::Paused(paused));
        self.set_paused_here(paused);
    }

    /// [`set_paused`](Self::set_paused) on this gateway only.
    pub fn set_paused_here(&self, paused: bool) {
        self.lock().paused = paused;
        tracing::info!(paused, "room pause changed");
        self.wake_here();
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Sends new work only to the backends of `group` (`None`: all).
    /// Running jobs elsewhere finish where they are; queued work just waits
    /// for the new group. `false` if no backend has that group.
    pub fn use_group(&self, group: Option<String>) -> bool {
        let known = self.use_group_here(group.clone());
        if known {
            self.relay(|| crate::cluster::Signal::UseGroup(group));
        }
        known
    }

    /// [`use_group`](Self::use_group) on this gateway only.
    pub fn use_group_here(&self, group: Option<String>) -> bool {
        if let Some(g) = &group {
            if !self
                .backends
                .iter()
                .any(|b| b.group.as_deref() == Some(g.as_str()))
            {
                return false;
            }
        }
        tracing::info!(group = ?group, "active backend group changed");
        self.lock().active_group = group;
        self.wake_here();
        true
    }

    /// The slots that may take work: the free ones, and the busy ones
    /// with a free place behind their job, with that job's owner.
    fn openings(&self, state: &State) -> (Vec<Slot>, Vec<(Slot, UserId)>) {
        let mut free = Vec::new();
        let mut busy = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            if !state.health[i].accepts_jobs() || !in_group(b, &state.active_group) {
                continue;
            }
            let places = b.places_per_slot(self.policy.queue_ahead) as usize;
            for index in 0..b.slots {
                let slot = Slot::new(BackendId::new(b.name.clone()), index);
                let mut there = state
                    .running
                    .values()
                    .filter(|r| r.backend == i && r.slot == slot);
                match there.next() {
                    None => free.push(slot),
                    // The first there ends first: one place behind it.
                    Some(first) if places > 1 && there.next().is_none() => {
                        busy.push((slot, first.owner))
                    }
                    Some(_) => {}
                }
            }
        }
        (free, busy)
    }

    /// Asks the run of `job` to stop it; false if it is not running. On a
    /// gateway that does not dispatch, the one that does is asked: at once
    /// by a signal, and through the store, where it (or whichever gateway
    /// takes over) finds the request even if the signal was lost.
    pub async fn cancel_running(&self, job: &JobId) -> bool {
        if self.cancel_here(job) {
            return true;
        }
        if self.relay.is_none() || self.is_leading() {
            return false;
        }
        let asked = match self.shared.store.request_cancel(job, now_ms()).await {
            Ok(asked) => asked,
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "could not keep a cancel request; the signal alone carries it");
                true
            }
        };
        if asked {
            self.relay(|| crate::cluster::Signal::Cancel(*job));
        }
        asked
    }

    /// [`cancel_running`](Self::cancel_running) for a run on this gateway.
    pub fn cancel_here(&self, job: &JobId) -> bool {
        match self.lock().running.get(job) {
            Some(r) => {
                r.cancel.notify_one();
                true
            }
            None => false,
        }
    }

    /// Starts a task the dispatcher owns. After [`shutdown`](Self::shutdown)
    /// nothing starts: the work stays in the store for the next start.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(set) = tasks.as_mut() else {
            tracing::debug!("shutting down: a dispatcher task was not started");
            return;
        };
        // Reap the finished ones, so the set holds only live tasks.
        while let Some(done) = set.try_join_next() {
            if let Err(e) = done {
                if e.is_panic() {
                    tracing::error!(error = %e, "a dispatcher task panicked");
                }
            }
        }
        set.spawn(task.in_current_span());
    }

    /// Tasks still running (job runs, warm-ups, clean-ups).
    pub fn tasks_left(&self) -> usize {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(set) = tasks.as_mut() else {
            return 0;
        };
        while set.try_join_next().is_some() {}
        set.len()
    }

    /// Stops every task the dispatcher started and waits until they are
    /// gone. A job stopped mid-run stays in progress in the store: the
    /// next start re-attaches to it on its backend, or queues it again.
    pub async fn shutdown(&self) {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut set) = tasks {
            set.shutdown().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a run begins.
#[derive(Debug)]
enum Start {
    /// On a free slot: the backend starts it at once.
    Now,
    /// Queued on the backend behind the slot's running job, once that one
    /// is in the backend's queue (the receiver says when).
    Behind(tokio::sync::watch::Receiver<bool>),
    /// Picked up again after a restart (it may be waiting behind another).
    Resume,
}

fn in_group(backend: &Backend, active: &Option<String>) -> bool {
    active
        .as_ref()
        .is_none_or(|g| backend.group.as_deref() == Some(g.as_str()))
}
