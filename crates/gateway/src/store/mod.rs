//! The database: the only module that holds SQL.
//!
//! Callers see [`Store`]: operations on accounts, sessions and jobs, never
//! a pool, a row or a dialect. Two engines answer the same operations:
//! SQLite (`sqlite`, the embedded default, one gateway) and PostgreSQL
//! (`postgres`, one database for several gateways), each with its own
//! migrations. The queries that must be atomic say how in their engine (a
//! per-user cap checked under a lock, state changes compare-and-set on the
//! current state); `conformance` holds both to the same tests.

#[cfg(test)]
mod conformance;
mod postgres;
mod sqlite;
#[cfg(test)]
pub(crate) mod testing;

use comfyume_domain::{Job, JobId, JobState, Role, UserId, UserName};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(
        "unsupported database URL (expected sqlite://PATH, sqlite::memory: or postgres://USER:PASSWORD@HOST/DATABASE)"
    )]
    UnsupportedUrl,
    #[error("{0}")]
    Unsupported(String),
    /// The dispatcher's lease is not (or no longer certainly) this
    /// gateway's.
    #[error("the dispatcher's lease: {0}")]
    Lease(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stored account.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub name: UserName,
    pub password_hash: String,
    pub role: Role,
    pub created_at: i64,
    pub disabled: bool,
    /// The instructor's limits for this account, if set.
    pub caps: Caps,
    /// Made by joining with the room's shared password (counted against
    /// `auth.room_max_members`).
    pub room_member: bool,
}

/// One account's limits, in place of the room's; `None`: the room's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// Jobs waiting in the queue at once.
    pub max_pending: Option<u32>,
    /// Jobs running at once.
    pub max_running: Option<u32>,
}

/// What `POST /prompt` stores.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub owner: UserId,
    /// `None`: take the next counter value (negated for `front`).
    pub number: Option<f64>,
    pub front: bool,
    pub prompt: Value,
    pub extra_data: Value,
    pub outputs_to_execute: Vec<String>,
    pub partial_targets: Option<Vec<String>>,
    pub workflow_id: Option<String>,
    pub created_at: i64,
}

/// A pending job as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub id: JobId,
    pub owner: UserId,
    /// In the instructor lane: an instructor's job, or one an instructor
    /// moved to the front.
    pub admin: bool,
    pub number: f64,
    pub seq: i64,
    /// Handed back by a failed backend: it goes first in its owner's queue.
    pub retry: bool,
    /// The backend that failed it, to avoid when another can take it.
    pub avoid_backend: Option<String>,
    /// Its owner's own limit on running jobs, if an instructor set one.
    pub owner_cap: Option<u32>,
}

/// A job just claimed for a slot, with what starting it needs: its owner's
/// name (their folders) and queue counts (their status), read by the
/// claiming statement itself.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    pub owner_name: UserName,
    /// The owner's (pending, in progress) jobs, this one included.
    pub active: (u32, u32),
}

/// Which finished jobs `/history` shows, as ComfyUI's `max_items` and
/// `offset` select them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPage {
    All,
    /// The newest `n` (only `max_items`).
    Newest(u64),
    /// From the `offset`-th oldest on, at most `limit`.
    From {
        offset: u64,
        limit: Option<u64>,
    },
}

/// One page of a user's job list (`/api/jobs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsPage {
    pub states: Vec<JobState>,
    pub workflow_id: Option<String>,
    pub sort: JobsSort,
    /// Largest first; equal keys stay in submission order either way, as
    /// Python's stable sort leaves them.
    pub descending: bool,
    pub offset: u64,
    pub limit: Option<u64>,
}

/// What `/api/jobs` sorts by (its `sort_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobsSort {
    /// `create_time`.
    Creation,
    /// `execution_end_time - execution_start_time` from the job's
    /// messages; 0 for a job without both.
    Duration,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Finish {
    pub state: JobState,
    pub outputs: serde_json::Map<String, Value>,
    pub meta: serde_json::Map<String, Value>,
    pub messages: Vec<Value>,
    pub error: Option<Value>,
    pub finished_at: i64,
}

/// One instructor action, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// An instructor's name, or `admin token`.
    pub actor: String,
    /// What was done, as `subject.verb` (`job.cancel`, `room.pause`).
    pub action: String,
    /// What it was done to: a job id, a user name, a backend, `room`.
    pub target: String,
    /// What the action changed, as JSON.
    pub detail: Value,
}

/// A pending or running job of the room, as the instructor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomJob {
    pub id: JobId,
    pub owner: UserName,
    pub state: JobState,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub backend: Option<String>,
    /// When an instructor moved it to the front, if one did.
    pub bumped_at: Option<i64>,
}

/// One account's work, as the instructor's dashboard lists it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccountActivity {
    pub pending: u32,
    pub running: u32,
    pub completed: u32,
    pub failed: u32,
    pub cancelled: u32,
    /// GPU milliseconds of the jobs that ran (start to end).
    pub gpu_ms: i64,
    /// When they last submitted or had a job end, if ever.
    pub last_activity: Option<i64>,
}

/// One backend's finished jobs since a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendActivity {
    pub backend: String,
    pub jobs: u32,
    /// Their summed run time (start to end), in milliseconds.
    pub run_ms: i64,
}

/// An output shared on the room wall.
#[derive(Debug, Clone, PartialEq)]
pub struct WallItem {
    pub id: i64,
    pub author: UserName,
    pub file_name: String,
    pub ext: String,
    pub shared_at: i64,
    pub hidden: bool,
}

/// A workflow an instructor pushed to the room.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomWorkflow {
    pub id: i64,
    /// Its file name in Workflows, without `.json`.
    pub name: String,
    pub content: Value,
}

/// What [`Store::insert_job`] did.
#[derive(Debug)]
pub enum Inserted {
    Queued(Box<Job>),
    /// The owner already has the most pending jobs they may have (`limit`:
    /// theirs, or the room's).
    QueueFull {
        limit: u32,
    },
}

/// The kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// One file (or memory), one gateway.
    Sqlite,
    /// A server several gateways share.
    Postgres,
}

impl Dialect {
    fn of(url: &str) -> StoreResult<Dialect> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

/// The handle every part of the server shares; cheap to clone.
#[derive(Clone)]
pub struct Store {
    engine: Engine,
}

/// The database engines the store can run on.
#[derive(Clone)]
enum Engine {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Connections a gateway keeps to PostgreSQL unless configured otherwise
/// (`database_max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// Each operation of [`Store`], answered by its engine.
macro_rules! operations {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match &self.engine {
                        Engine::Sqlite(db) => db.$name($($arg),*).await,
                        Engine::Postgres(db) => db.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its
    /// schema up to date. `sqlite://PATH`, `sqlite::memory:` and
    /// `postgres://…` (or `postgresql://…`) are known.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`Store::connect`], with at most `max_connections` to a PostgreSQL
    /// server (SQLite keeps its own few).
    pub async fn connect_with(url: &str, max_connections: u32) -> StoreResult<Store> {
        let engine = match Dialect::of(url)? {
            Dialect::Sqlite => Engine::Sqlite(sqlite::Sqlite::connect(url).await?),
            Dialect::Postgres => {
                Engine::Postgres(postgres::Postgres::connect(url, max_connections.max(1)).await?)
            }
        };
        Ok(Store { engine })
    }

    /// Closes the connections, flushing what the engine buffers.
    pub async fn close(&self) {
        match &self.engine {
            Engine::Sqlite(db) => db.close().await,
            Engine::Postgres(db) => db.close().await,
        }
    }
}

/// The dispatcher's lease: while a gateway holds it, it alone dispatches
/// (see `crate::cluster`).
pub struct Lease(LeaseOn);

enum LeaseOn {
    /// One gateway has the database to itself.
    Alone,
    Postgres(postgres::Lease),
}

impl Lease {
    /// Errs once the lease is no longer certainly held.
    pub async fn held(&mut self) -> StoreResult<()> {
        match &mut self.0 {
            LeaseOn::Alone => Ok(()),
            LeaseOn::Postgres(lease) => lease.held().await,
        }
    }

    /// Gives the lease up, for another gateway to take.
    pub async fn release(self) {
        match self.0 {
            LeaseOn::Alone => {}
            LeaseOn::Postgres(lease) => lease.release().await,
        }
    }
}

/// Messages from the gateways sharing the database, this one's included.
pub struct Listener(postgres::Listener);

impl Listener {
    /// The next message; `Ok(None)` when the link was lost and made again,
    /// so messages sent meanwhile were missed.
    pub async fn recv(&mut self) -> StoreResult<Option<String>> {
        self.0.recv().await
    }
}

/// Several gateways on one database.
impl Store {
    /// Whether other gateways may share this database (PostgreSQL); an
    /// SQLite file has one.
    pub fn shared(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// The dispatcher's lease, unless another gateway holds it.
    pub async fn try_lease(&self) -> StoreResult<Option<Lease>> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(Some(Lease(LeaseOn::Alone))),
            Engine::Postgres(db) => Ok(db.try_lease().await?.map(|l| Lease(LeaseOn::Postgres(l)))),
        }
    }

    /// Sends `messages`, in order, to every gateway listening (this one
    /// too); nobody listens on SQLite.
    pub async fn broadcast(&self, messages: &[String], now_ms: i64) -> StoreResult<()> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(()),
            Engine::Postgres(db) => db.broadcast(messages, now_ms).await,
        }
    }

    /// Listens to what the gateways broadcast; `None` on SQLite, where
    /// there are no others.
    pub async fn listen(&self) -> StoreResult<Option<Listener>> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(None),
            Engine::Postgres(db) => Ok(Some(Listener(db.listen().await?))),
        }
    }
}

operations! {
    /// Answers once the database does (for `/ready`).
    fn ping(&self) -> StoreResult<()>;
    /// Writes a consistent copy of the whole database to `path` (which
    /// must not exist) while the server keeps running: one read
    /// transaction's view, for backups.
    fn snapshot_into(&self, path: &std::path::Path) -> StoreResult<()>;
    fn create_user(&self, name: &UserName, password_hash: &str, role: Role, now_ms: i64) -> StoreResult<UserRecord>;
    /// Creates every account of `users` (name, password hash), or none:
    /// `Conflict(name)` names the first that exists.
    fn create_users(&self, users: &[(UserName, String)], role: Role, now_ms: i64) -> StoreResult<()>;
    fn user_by_name(&self, name: &UserName) -> StoreResult<Option<UserRecord>>;
    fn user_by_id(&self, id: UserId) -> StoreResult<Option<UserRecord>>;
    /// Every account, by name.
    fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Replaces a password and ends every session of that user.
    fn set_password(&self, name: &UserName, password_hash: &str) -> StoreResult<()>;
    /// A participant account made by joining with the room's password
    /// (with the password they chose); `None` when `max_members` such
    /// accounts exist already.
    fn create_room_member(&self, name: &UserName, password_hash: &str, now_ms: i64, max_members: u32) -> StoreResult<Option<UserRecord>>;
    /// Sets an account's own limits (`None` in a field: the room's).
    fn set_caps(&self, name: &UserName, caps: Caps) -> StoreResult<()>;
    /// Disables an account (`Some(when)`), ending its sessions, or enables
    /// it again (`None`).
    fn set_disabled(&self, name: &UserName, disabled_at: Option<i64>) -> StoreResult<()>;
    /// Removes an account and its sessions (its files are the workspace's
    /// business).
    fn remove_user(&self, name: &UserName) -> StoreResult<()>;
    fn create_session(&self, token_hash: &str, user: UserId, now_ms: i64, expires_at_ms: i64) -> StoreResult<()>;
    /// The active, enabled user owning an unexpired session.
    fn session_user(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<UserRecord>>;
    fn delete_session(&self, token_hash: &str) -> StoreResult<()>;
    /// Deletes expired sessions; returns how many went.
    fn sweep_sessions(&self, now_ms: i64) -> StoreResult<u64>;

    /// Queues a job unless its owner already has `max_pending` waiting,
    /// atomically: parallel submissions never exceed the cap.
    fn insert_job(&self, new: NewJob, max_pending: u32) -> StoreResult<Inserted>;
    fn job(&self, id: &JobId) -> StoreResult<Option<Job>>;
    /// Every job of one user, oldest first.
    fn jobs_of(&self, owner: UserId) -> StoreResult<Vec<Job>>;
    /// The pending and running jobs of one user, oldest first.
    fn active_jobs_of(&self, owner: UserId) -> StoreResult<Vec<Job>>;
    /// The finished jobs of one user that `/history` shows, oldest first.
    fn history_of(&self, owner: UserId, page: HistoryPage) -> StoreResult<Vec<Job>>;
    /// One page of a user's jobs, and how many match in all.
    fn jobs_page_of(&self, owner: UserId, page: &JobsPage) -> StoreResult<(Vec<Job>, u64)>;
    /// (pending, in progress) counts of one user.
    fn active_counts(&self, owner: UserId) -> StoreResult<(u32, u32)>;
    /// (pending, in progress) counts of the whole room.
    fn queue_counts(&self) -> StoreResult<(u64, u64)>;
    /// Every pending job, in submission order, with its owner's role.
    fn pending_jobs(&self) -> StoreResult<Vec<PendingRow>>;
    /// The prompts of the jobs among `ids` that exist.
    fn prompts_of(&self, ids: &[JobId]) -> StoreResult<Vec<(JobId, Value)>>;
    /// Jobs in progress (after a crash: the ones to re-queue or re-attach).
    fn in_progress_jobs(&self) -> StoreResult<Vec<Job>>;
    /// pending → in_progress on `backend`'s `slot`; `None` if the job was
    /// no longer pending (cancelled meanwhile).
    fn claim_job(&self, id: &JobId, backend: &str, slot: u32, now: i64) -> StoreResult<Option<Claimed>>;
    /// in_progress → pending, keeping its place and its delivered outputs.
    fn requeue_job(&self, id: &JobId) -> StoreResult<bool>;
    /// in_progress → pending as if never claimed (its attempt handed back).
    fn unclaim_job(&self, id: &JobId, attempt: i64) -> StoreResult<bool>;
    /// in_progress → pending at the front of its owner's queue, after
    /// `backend` failed the run holding `attempt`.
    fn requeue_for_retry(&self, id: &JobId, attempt: i64, backend: &str) -> StoreResult<bool>;
    /// Records a running job's outputs and messages so far; only the run
    /// holding `attempt` may write.
    fn record_progress(&self, id: &JobId, attempt: i64, outputs: &serde_json::Map<String, Value>, meta: &serde_json::Map<String, Value>, messages: &[Value]) -> StoreResult<()>;
    /// in_progress → a terminal state, by the run holding `attempt`.
    /// Returns the owner's (pending, in progress) counts after it; `None`
    /// if the job was not in progress under `attempt`.
    fn finish_job(&self, id: &JobId, attempt: i64, f: &Finish) -> StoreResult<Option<(u32, u32)>>;
    /// Asks whichever gateway dispatches to stop a running job; false if
    /// it is not running.
    fn request_cancel(&self, id: &JobId, now: i64) -> StoreResult<bool>;
    /// The running jobs someone asked to stop.
    fn cancel_requests(&self) -> StoreResult<Vec<JobId>>;
    /// pending → cancelled for the owner's jobs among `ids` (all when
    /// `None`); returns the ids that changed.
    fn cancel_pending(&self, owner: UserId, ids: Option<&[JobId]>, now: i64) -> StoreResult<Vec<JobId>>;
    /// Deletes the owner's finished jobs among `ids` (all when `None`).
    fn delete_history(&self, owner: UserId, ids: Option<&[JobId]>) -> StoreResult<u64>;
    /// Every pending and running job of the room, oldest first, with its
    /// owner's name.
    fn room_jobs(&self) -> StoreResult<Vec<RoomJob>>;
    /// Puts a pending job in the instructor lane (it starts before every
    /// job outside it); false if it is not pending.
    fn bump_job(&self, id: &JobId, now: i64) -> StoreResult<bool>;
    /// Appends one entry to the audit log and returns it.
    fn record_audit(&self, at: i64, actor: &str, action: &str, target: &str, detail: &Value) -> StoreResult<AuditEntry>;
    /// The newest `limit` entries of the audit log, newest first, older
    /// than entry `before` when given.
    fn audit_log(&self, limit: u32, before: Option<i64>) -> StoreResult<Vec<AuditEntry>>;
    /// Every account's work, by user id.
    fn account_activity(&self) -> StoreResult<Vec<(UserId, AccountActivity)>>;
    /// Each backend's jobs that ended since `since_ms`.
    fn backend_activity(&self, since_ms: i64) -> StoreResult<Vec<BackendActivity>>;
    /// Each account's latest completed job with outputs: its outputs
    /// (`{node: ui output}`), by user id.
    fn latest_outputs(&self) -> StoreResult<Vec<(UserId, Value)>>;
    /// How long each of the last `limit` started jobs waited for its slot
    /// (milliseconds), newest first.
    fn recent_waits(&self, limit: u32) -> StoreResult<Vec<i64>>;
    /// Puts an output on the wall (its copy is the caller's business);
    /// `None` when the author already has `max_shown` items shown.
    fn add_wall_item(&self, user: UserId, file_name: &str, ext: &str, at: i64, max_shown: u32) -> StoreResult<Option<i64>>;
    /// The wall, newest first: the `limit` newest items still shown (all,
    /// hidden ones too, with `with_hidden`).
    fn wall_items(&self, limit: u32, with_hidden: bool) -> StoreResult<Vec<WallItem>>;
    fn wall_item(&self, id: i64) -> StoreResult<Option<WallItem>>;
    /// How many of `user`'s items the wall shows.
    fn wall_shown_by(&self, user: UserId) -> StoreResult<u32>;
    /// Takes an item off the wall (or puts it back); false if no such item.
    fn set_wall_hidden(&self, id: i64, hidden_by: Option<&str>, at: i64) -> StoreResult<bool>;
    /// Keeps a workflow pushed to the room; returns its id.
    fn add_room_workflow(&self, name: &str, content: &Value, at: i64, by: &str) -> StoreResult<i64>;
    /// The pushed workflows `user` has not had yet, oldest first.
    fn undelivered_workflows(&self, user: UserId) -> StoreResult<Vec<RoomWorkflow>>;
    fn mark_workflow_delivered(&self, id: i64, user: UserId, at: i64) -> StoreResult<()>;
    /// A room switch that outlives a restart (`None`: never set).
    fn room_value(&self, key: &str) -> StoreResult<Option<String>>;
    fn set_room_value(&self, key: &str, value: &str) -> StoreResult<()>;
    /// GPU milliseconds and runs per user of the jobs finished since
    /// `since_ms`.
    fn gpu_time_by_user(&self, since_ms: i64) -> StoreResult<Vec<(UserId, i64, i64)>>;
}
