//! The instructor's hold on the room: the room's jobs across participants,
//! and every action an instructor takes on them (cancel, move to the front,
//! pause and resume, broadcast, pushing a workflow into everyone's
//! Workflows, the backends' switches, accounts created, disabled, enabled
//! or given a new password).
//! Each action is written to the audit log (who, what, when, on what)
//! once it has taken effect; the admin API and the CLI reach the room only
//! through here.
//!
//! It also tells each participant where they stand (`standing_of`, and
//! `publish_once` on every change to the queue): their name, whether the
//! room is paused, the instructor's banner, and each waiting prompt's
//! place in the room's expected start order with an estimated start.
//! ComfyUME's frontend extension (`web/room.js`) shows it on the canvas.

pub mod dashboard;
pub mod wall;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::{Accounts, generate_password};
use crate::clock::now_ms;
use crate::dispatch::{Admission, Dispatcher, Shared};
use crate::hub::Outbound;
use crate::store::{AuditEntry, RoomJob, StoreError};
use comfyume_domain::{JobId, JobState, Password, Role, UserName};

/// Who took an action, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An instructor, by their session.
    Instructor(UserName),
    /// A caller holding the configured `admin_token` (the CLI, scripts).
    Token,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Instructor(name) => f.write_str(name.as_str()),
            Actor::Token => f.write_str("admin token"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("{0}")]
    NotFound(String),
    /// The target is not in a state the action applies to.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A participant's files could not be written.
    #[error(transparent)]
    Files(crate::workspace::WorkspaceError),
}

pub type RoomResult<T> = Result<T, RoomError>;

/// The longest broadcast message, in characters: a banner, not a letter.
pub const MAX_BROADCAST_CHARS: usize = 500;

/// Where the room's pause is kept across restarts.
const PAUSED_KEY: &str = "paused";

/// Where the backend group the room uses is kept (JSON: a name, or null
/// for every backend), so a restart, or another gateway taking over the
/// dispatching, keeps the instructor's choice.
const GROUP_KEY: &str = "group";

/// Where a backend's admission (enabled, disabled, draining) is kept, for
/// the same reason: `admission:` and the backend's name.
const ADMISSION_KEY: &str = "admission:";

/// Where the instructor's current broadcast is kept (its banner stays on
/// every canvas until cleared, for those who arrive later too).
const BANNER_KEY: &str = "banner";

/// The `type` of the frames that tell a participant where they stand.
pub const NEWS_FRAME: &str = "comfyume.room";

/// The instructor's actions on the room; cheap to share.
pub struct Room {
    dispatcher: Arc<Dispatcher>,
    accounts: Accounts,
    /// One delivery of pushed workflows at a time, so a push and a login
    /// never both give someone the same workflow.
    delivering: tokio::sync::Mutex<()>,
    /// What each connected participant was last told of where they stand,
    /// so only changes are sent.
    told: std::sync::Mutex<std::collections::HashMap<comfyume_domain::UserId, Value>>,
    /// The queue over time, for the dashboard's charts.
    series: std::sync::Mutex<dashboard::Series>,
    /// One place per open dashboard (each holds a stream and looks at the
    /// room on every change).
    dashboards: Arc<tokio::sync::Semaphore>,
    /// Where the wall's images are kept.
    wall: crate::workspace::WallImages,
    /// The disk and the backups, as the console shows them.
    pub storage: Storage,
}

/// What the console shows of the room's storage: the data directory's
/// free space (against what the disk guard keeps) and the backups.
#[derive(Clone)]
pub struct Storage {
    pub disk: crate::disk::DiskGuard,
    /// `None`: backups are not scheduled (`[backup] to` unset).
    pub backups: Option<Arc<crate::backup::Backups>>,
}

impl Storage {
    /// `{"disk": {...}, "backup": {...} | null}`. Free space is given to
    /// the megabyte, so the dashboard hears of it when it moves, not on
    /// every look.
    pub fn status(&self) -> Value {
        let disk = match self.disk.state() {
            Ok(d) => serde_json::json!({
                "free_bytes": d.free / 1_000_000 * 1_000_000,
                "min_free_bytes": d.min_free,
                "low": d.low(),
            }),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        let backup = self
            .backups
            .as_ref()
            .map(|b| serde_json::to_value(b.status()).expect("plain data"));
        serde_json::json!({"disk": disk, "backup": backup})
    }
}

/// The highest limit an instructor may give one participant.
pub const MAX_CAP: u32 = 1000;

/// How many dashboards may be open at once.
pub const MAX_DASHBOARDS: usize = 16;

/// The longest name of a pushed workflow, in characters.
pub const MAX_WORKFLOW_NAME_CHARS: usize = 100;

/// How many other names (`name (2)` …) a pushed workflow tries when a
/// participant already has a different file by its name.
const OTHER_NAMES: u32 = 100;

/// The room at a glance, as `GET /admin/api/jobs` answers it.
pub struct RoomView {
    pub paused: bool,
    pub jobs: Vec<RoomJob>,
}

impl Room {
    /// The room of `dispatcher`, paused again if it was paused when the
    /// server last stopped.
    pub async fn open(
        dispatcher: Arc<Dispatcher>,
        accounts: Accounts,
        wall: crate::workspace::WallImages,
        storage: Storage,
    ) -> RoomResult<Room> {
        restore_switches(&dispatcher).await?;
        if dispatcher.is_paused() {
            tracing::warn!(
                "the room was paused when the server stopped: it stays paused until an instructor resumes it"
            );
        }
        Ok(Room {
            dispatcher,
            accounts,
            delivering: tokio::sync::Mutex::new(()),
            told: std::sync::Mutex::default(),
            series: std::sync::Mutex::default(),
            dashboards: Arc::new(tokio::sync::Semaphore::new(MAX_DASHBOARDS)),
            wall,
            storage,
        })
    }

    fn shared(&self) -> &Shared {
        self.dispatcher.shared()
    }

    /// Every waiting and running job, oldest first, and whether the room
    /// is paused.
    pub async fn view(&self) -> RoomResult<RoomView> {
        Ok(RoomView {
            paused: self.dispatcher.is_paused(),
            jobs: self.shared().store.room_jobs().await?,
        })
    }

    /// Cancels anyone's job: a waiting one leaves the queue, a running one
    /// is interrupted on its GPU (its owner is told as for their own
    /// cancel).
    pub async fn cancel_job(&self, actor: &Actor, id: &JobId) -> RoomResult<AuditEntry> {
        let job = self.job(id).await?;
        let owner = self.owner_name(&job).await?;
        let was = job.state;
        match job.state {
            JobState::Pending => {
                let done = self
                    .shared()
                    .store
                    .cancel_pending(job.owner, Some(&[*id]), now_ms())
                    .await?;
                if done.is_empty() && !self.dispatcher.cancel_running(id).await {
                    return Err(ended(id));
                }
                self.shared().send_status(job.owner).await;
                self.dispatcher.wake();
            }
            JobState::InProgress => {
                if !self.dispatcher.cancel_running(id).await {
                    return Err(ended(id));
                }
            }
            _ => return Err(ended(id)),
        }
        self.audit(
            actor,
            "job.cancel",
            &id.to_string(),
            json!({"owner": owner.as_str(), "was": was.as_str()}),
        )
        .await
    }

    /// Cancels every waiting and running job of one participant.
    pub async fn cancel_jobs_of(&self, actor: &Actor, name: &UserName) -> RoomResult<AuditEntry> {
        let user = self.account(name).await?;
        let dequeued = self
            .shared()
            .store
            .cancel_pending(user.id, None, now_ms())
            .await?;
        let mut interrupted = Vec::new();
        for job in self.shared().store.active_jobs_of(user.id).await? {
            if job.state == JobState::InProgress && self.dispatcher.cancel_running(&job.id).await {
                interrupted.push(job.id.to_string());
            }
        }
        self.shared().send_status(user.id).await;
        self.dispatcher.wake();
        let dequeued: Vec<String> = dequeued.iter().map(ToString::to_string).collect();
        self.audit(
            actor,
            "user.cancel_jobs",
            name.as_str(),
            json!({"dequeued": dequeued, "interrupted": interrupted}),
        )
        .await
    }

    /// Moves a waiting job to the front of the room: it starts before
    /// every job outside the instructor lane (its owner's cap on running
    /// jobs still holds).
    pub async fn bump(&self, actor: &Actor, id: &JobId) -> RoomResult<AuditEntry> {
        let job = self.job(id).await?;
        let owner = self.owner_name(&job).await?;
        if !self.shared().store.bump_job(id, now_ms()).await? {
            return Err(RoomError::Conflict(format!(
                "job {id} is not waiting: only a waiting job can move to the front"
            )));
        }
        self.dispatcher.wake();
        self.audit(
            actor,
            "job.bump",
            &id.to_string(),
            json!({"owner": owner.as_str()}),
        )
        .await
    }

    /// Pauses the room ("eyes on me"): nothing new starts, running jobs
    /// finish, and every participant is told.
    pub async fn pause(&self, actor: &Actor) -> RoomResult<AuditEntry> {
        self.set_paused(actor, true).await
    }

    /// Resumes a paused room: waiting jobs start again.
    pub async fn resume(&self, actor: &Actor) -> RoomResult<AuditEntry> {
        self.set_paused(actor, false).await
    }

    async fn set_paused(&self, actor: &Actor, paused: bool) -> RoomResult<AuditEntry> {
        let was = self.dispatcher.is_paused();
        // Stored first: a restart right after the answer keeps what the
        // instructor saw.
        self.shared()
            .store
            .set_room_value(PAUSED_KEY, if paused { "true" } else { "false" })
            .await?;
        self.dispatcher.set_paused(paused);
        let text = if paused {
            "The instructor paused the room: jobs already running finish, and new ones wait until it resumes."
        } else {
            "The room is running again: waiting jobs start now."
        };
        self.tell_everyone(text, "comfyume-room-pause");
        let action = if paused { "room.pause" } else { "room.resume" };
        self.audit(actor, action, "room", json!({"was_paused": was}))
            .await
    }

    /// Shows `message` on every connected participant's canvas.
    pub async fn broadcast(&self, actor: &Actor, message: &str) -> RoomResult<AuditEntry> {
        let message = message.trim();
        if message.is_empty() {
            return Err(RoomError::Invalid("the message is empty".into()));
        }
        let chars = message.chars().count();
        if chars > MAX_BROADCAST_CHARS {
            return Err(RoomError::Invalid(format!(
                "the message has {chars} characters; at most {MAX_BROADCAST_CHARS} fit on a canvas"
            )));
        }
        let banner = json!({"message": message, "at": now_ms()});
        self.shared()
            .store
            .set_room_value(BANNER_KEY, &banner.to_string())
            .await?;
        self.dispatcher.wake();
        let sockets = self.tell_everyone(message, &format!("comfyume-broadcast-{}", now_ms()));
        self.audit(
            actor,
            "room.broadcast",
            "room",
            json!({"message": message, "sockets": sockets}),
        )
        .await
    }

    /// Takes the broadcast's banner off every canvas.
    pub async fn clear_broadcast(&self, actor: &Actor) -> RoomResult<AuditEntry> {
        let was = self.banner().await?;
        self.shared()
            .store
            .set_room_value(BANNER_KEY, "null")
            .await?;
        self.dispatcher.wake();
        self.audit(
            actor,
            "room.clear_broadcast",
            "room",
            json!({"message": was.and_then(|b| b.get("message").cloned())}),
        )
        .await
    }

    /// The instructor's current broadcast (`{"message", "at"}`), if any.
    async fn banner(&self) -> RoomResult<Option<Value>> {
        let stored = self.shared().store.room_value(BANNER_KEY).await?;
        let Some(text) = stored else { return Ok(None) };
        let banner: Value = serde_json::from_str(&text).map_err(|e| {
            RoomError::Store(StoreError::Corrupt(format!("room_state.banner: {e}")))
        })?;
        Ok((!banner.is_null()).then_some(banner))
    }

    /// Where `user` stands in the room, as their canvas shows it: their
    /// name, whether the room is paused, the instructor's banner, and for
    /// each of their waiting prompts its place in the room's queue (1 =
    /// next), how many wait ahead of it and about when it starts.
    pub async fn standing_of(&self, user: &crate::auth::SessionUser) -> RoomResult<Value> {
        let places = self.dispatcher.queue_places().await?;
        let banner = self.banner().await?;
        let gpus = self.dispatcher.gpus();
        Ok(self.standing(user.id, &user.name, &places, banner.as_ref(), gpus))
    }

    fn standing(
        &self,
        user: comfyume_domain::UserId,
        name: &UserName,
        places: &[crate::dispatch::QueuePlace],
        banner: Option<&Value>,
        gpus: &str,
    ) -> Value {
        let waiting: Vec<Value> = places
            .iter()
            .enumerate()
            .filter(|(_, p)| p.owner == user)
            .map(|(ahead, p)| {
                json!({
                    "prompt_id": p.job.to_string(),
                    "position": ahead + 1,
                    "ahead": ahead,
                    "estimated_start_seconds": p.wait_ms.map(|ms| ms.div_ceil(1000)),
                    // A GPU failed it; it runs again on another.
                    "retrying": p.retry,
                })
            })
            .collect();
        json!({
            "user": name.as_str(),
            "paused": self.dispatcher.is_paused(),
            "gpus": gpus,
            "banner": banner,
            "waiting": waiting,
            "room_waiting": places.len(),
        })
    }

    /// Tells every connected participant where they stand, if that
    /// changed since they were last told (a `comfyume.room` frame, which
    /// ComfyUME's frontend extension shows). Returns how many were told.
    pub async fn publish_once(&self) -> RoomResult<usize> {
        let connected = self.shared().hub.connected_users();
        if connected.is_empty() {
            self.told.lock().unwrap_or_else(|e| e.into_inner()).clear();
            return Ok(0);
        }
        let places = self.dispatcher.queue_places().await?;
        let banner = self.banner().await?;
        let connected: std::collections::HashSet<_> = connected.into_iter().collect();
        // One query for every name, however many are connected.
        let names: std::collections::HashMap<_, _> = self
            .shared()
            .store
            .list_users()
            .await?
            .into_iter()
            .filter(|u| connected.contains(&u.id))
            .map(|u| (u.id, u.name))
            .collect();
        let gpus = self.dispatcher.gpus();
        let mut told = self.told.lock().unwrap_or_else(|e| e.into_inner());
        told.retain(|user, _| names.contains_key(user));
        let mut sent = 0;
        for (user, name) in &names {
            let standing = self.standing(*user, name, &places, banner.as_ref(), gpus);
            if told.get(user) == Some(&standing) {
                continue;
            }
            let frame = json!({"type": NEWS_FRAME, "data": standing});
            self.shared()
                .hub
                .send_to_user(*user, Outbound::Text(frame.to_string()));
            told.insert(*user, standing);
            sent += 1;
        }
        Ok(sent)
    }

    /// Records that an instructor looked at a participant's workspace
    /// (`what`: the overview, or one of their files).
    pub async fn looked_at(
        &self,
        actor: &Actor,
        name: &UserName,
        what: Value,
    ) -> RoomResult<AuditEntry> {
        self.account(name).await?;
        self.audit(actor, "participant.look", name.as_str(), what)
            .await
    }

    /// A place for one more open dashboard, unless [`MAX_DASHBOARDS`]
    /// are open.
    pub fn dashboard_place(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.dashboards.clone().try_acquire_owned().ok()
    }

    /// Changes to the queue or the slots (see [`Dispatcher::changes`]).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.dispatcher.changes()
    }

    /// A participant's new socket has been told nothing yet.
    pub fn forget_told(&self, user: comfyume_domain::UserId) {
        self.told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user);
    }

    /// Enables, disables or drains a backend.
    pub async fn set_admission(
        &self,
        actor: &Actor,
        backend: &str,
        admission: Admission,
    ) -> RoomResult<AuditEntry> {
        if !self.dispatcher.set_admission(backend, admission) {
            return Err(RoomError::NotFound(format!("no backend named '{backend}'")));
        }
        let stored = serde_json::to_value(admission)
            .map_err(|e| RoomError::Store(StoreError::Corrupt(e.to_string())))?;
        self.shared()
            .store
            .set_room_value(&format!("{ADMISSION_KEY}{backend}"), &stored.to_string())
            .await?;
        let action = match admission {
            Admission::Enabled => "backend.enable",
            Admission::Disabled => "backend.disable",
            Admission::Draining => "backend.drain",
        };
        self.audit(actor, action, backend, json!({})).await
    }

    /// Asks for a backup now (it runs in the schedule's loop, after one
    /// already running); audited.
    pub async fn back_up_now(&self, actor: &Actor) -> RoomResult<AuditEntry> {
        let Some(backups) = &self.storage.backups else {
            return Err(RoomError::Conflict(
                "backups are not scheduled: set [backup] to in the configuration".into(),
            ));
        };
        backups.ask_now();
        self.audit(actor, "backup.request", "room", json!({})).await
    }

    /// Sends new work only to the backends of `group` (`None`: all).
    pub async fn use_group(&self, actor: &Actor, group: Option<&str>) -> RoomResult<AuditEntry> {
        if !self.dispatcher.use_group(group.map(str::to_string)) {
            return Err(RoomError::NotFound(format!(
                "no backend is in group '{}'",
                group.unwrap_or("all")
            )));
        }
        self.shared()
            .store
            .set_room_value(GROUP_KEY, &json!(group).to_string())
            .await?;
        self.audit(actor, "group.use", group.unwrap_or("all"), json!({}))
            .await
    }

    /// Records accounts an instructor created (the accounts service made
    /// them; the passwords are never logged).
    pub async fn accounts_created(
        &self,
        actor: &Actor,
        names: &[&str],
        role: Role,
    ) -> RoomResult<AuditEntry> {
        self.audit(
            actor,
            "accounts.create",
            &format!("{} accounts", names.len()),
            json!({"names": names, "role": role.as_str()}),
        )
        .await
    }

    /// Disables an account: its sessions end and its open canvases
    /// disconnect; it cannot log in until enabled again. Its jobs stay as
    /// they are (`cancel_jobs_of` stops them).
    pub async fn disable_account(&self, actor: &Actor, name: &UserName) -> RoomResult<AuditEntry> {
        if *actor == Actor::Instructor(name.clone()) {
            return Err(RoomError::Conflict(
                "you cannot disable your own account".into(),
            ));
        }
        let user = self.account(name).await?;
        self.shared()
            .store
            .set_disabled(name, Some(now_ms()))
            .await?;
        let sockets = self.shared().hub.disconnect_user(user.id);
        self.audit(
            actor,
            "account.disable",
            name.as_str(),
            json!({"sockets_closed": sockets}),
        )
        .await
    }

    /// Sets one participant's own limits (jobs waiting, jobs running), or
    /// gives them the room's again (`None`).
    pub async fn set_caps(
        &self,
        actor: &Actor,
        name: &UserName,
        caps: crate::store::Caps,
    ) -> RoomResult<AuditEntry> {
        for (what, n) in [("waiting", caps.max_pending), ("running", caps.max_running)] {
            if n.is_some_and(|n| !(1..=MAX_CAP).contains(&n)) {
                return Err(RoomError::Invalid(format!(
                    "jobs {what} at once: from 1 to {MAX_CAP}, or null for the room's limit"
                )));
            }
        }
        let was = self.account(name).await?.caps;
        self.shared().store.set_caps(name, caps).await?;
        // A higher running limit may start a job now.
        self.dispatcher.wake();
        self.audit(
            actor,
            "account.caps",
            name.as_str(),
            json!({
                "max_pending": caps.max_pending, "max_running": caps.max_running,
                "was": {"max_pending": was.max_pending, "max_running": was.max_running},
            }),
        )
        .await
    }

    /// Lets a disabled account log in again.
    pub async fn enable_account(&self, actor: &Actor, name: &UserName) -> RoomResult<AuditEntry> {
        self.account(name).await?;
        self.shared().store.set_disabled(name, None).await?;
        self.audit(actor, "account.enable", name.as_str(), json!({}))
            .await
    }

    /// Gives an account a new generated password, which only the answer
    /// carries (never the log): its sessions end and its open canvases
    /// disconnect.
    pub async fn reset_password(
        &self,
        actor: &Actor,
        name: &UserName,
    ) -> RoomResult<(AuditEntry, String)> {
        let user = self.account(name).await?;
        let password = generate_password();
        self.accounts
            .set_password(name, &Password::new(password.clone()))
            .await
            .map_err(|e| match e {
                crate::auth::AuthError::Store(e) => RoomError::Store(e),
                other => RoomError::Invalid(other.to_string()),
            })?;
        let sockets = self.shared().hub.disconnect_user(user.id);
        let entry = self
            .audit(
                actor,
                "account.reset_password",
                name.as_str(),
                json!({"sockets_closed": sockets}),
            )
            .await?;
        Ok((entry, password))
    }

    async fn account(&self, name: &UserName) -> RoomResult<crate::store::UserRecord> {
        self.shared()
            .store
            .user_by_name(name)
            .await?
            .ok_or_else(|| RoomError::NotFound(format!("no account named '{name}'")))
    }

    /// Puts a workflow (as the frontend saves it) into every account's
    /// Workflows now, and into each account that logs in later. A
    /// participant's own file of the same name is never replaced: the
    /// pushed one takes the name `NAME (2)` (or the next free one).
    pub async fn push_workflow(
        &self,
        actor: &Actor,
        name: &str,
        workflow: &Value,
    ) -> RoomResult<AuditEntry> {
        let name = workflow_name(name)?;
        if !workflow.get("nodes").is_some_and(Value::is_array) {
            return Err(RoomError::Invalid(
                "not a workflow as ComfyUI saves it (it has no \"nodes\" list)".into(),
            ));
        }
        let store = &self.shared().store;
        store
            .add_room_workflow(&name, workflow, now_ms(), &actor.to_string())
            .await?;
        let mut delivered = 0;
        let mut failed = Vec::new();
        for user in store.list_users().await? {
            if user.disabled {
                // They get it when enabled and logged in again.
                continue;
            }
            match self.deliver_workflows(user.id, &user.name).await {
                Ok(n) => delivered += n,
                Err(e) => {
                    tracing::warn!(user = %user.name, error = %e, "a pushed workflow did not reach a participant now; it is tried again at their next login");
                    failed.push(user.name.to_string());
                }
            }
        }
        self.tell_everyone(
            &format!("The instructor shared the workflow \"{name}\": open it from your Workflows."),
            &format!("comfyume-workflow-{}", now_ms()),
        );
        self.audit(
            actor,
            "room.push_workflow",
            &name,
            json!({"delivered": delivered, "not_yet": failed}),
        )
        .await
    }

    /// Writes the pushed workflows `user` has not had into their
    /// Workflows; returns how many. Called for everyone on a push, and for
    /// one participant at each login.
    pub async fn deliver_workflows(
        &self,
        user: comfyume_domain::UserId,
        name: &UserName,
    ) -> RoomResult<usize> {
        let _one_at_a_time = self.delivering.lock().await;
        let store = &self.shared().store;
        let pending = store.undelivered_workflows(user).await?;
        let workspace = self.shared().workspaces.user(name);
        for workflow in &pending {
            let bytes = serde_json::to_vec(&workflow.content)
                .map_err(|e| RoomError::Invalid(format!("the workflow cannot be written: {e}")))?;
            put_workflow(&workspace, &workflow.name, bytes).await?;
            store
                .mark_workflow_delivered(workflow.id, user, now_ms())
                .await?;
        }
        Ok(pending.len())
    }

    /// The newest `limit` audit entries, older than entry `before` if given.
    pub async fn audit_log(&self, limit: u32, before: Option<i64>) -> RoomResult<Vec<AuditEntry>> {
        Ok(self.shared().store.audit_log(limit, before).await?)
    }

    async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: Value,
    ) -> RoomResult<AuditEntry> {
        let actor = actor.to_string();
        tracing::info!(%actor, action, target, %detail, "instructor action");
        Ok(self
            .shared()
            .store
            .record_audit(now_ms(), &actor, action, target, &detail)
            .await?)
    }

    /// A `notification` toast on every open socket; returns how many.
    fn tell_everyone(&self, text: &str, id: &str) -> usize {
        let msg = json!({"type": "notification", "data": {"value": text, "id": id}});
        self.shared()
            .hub
            .send_to_everyone(Outbound::Text(msg.to_string()))
    }

    async fn job(&self, id: &JobId) -> RoomResult<comfyume_domain::Job> {
        self.shared()
            .store
            .job(id)
            .await?
            .ok_or_else(|| RoomError::NotFound(format!("no job {id}")))
    }

    async fn owner_name(&self, job: &comfyume_domain::Job) -> RoomResult<UserName> {
        Ok(self
            .shared()
            .store
            .user_by_id(job.owner)
            .await?
            .ok_or_else(|| RoomError::NotFound(format!("the owner of job {} is gone", job.id)))?
            .name)
    }
}

/// A pushed workflow's file name: one name (no folders), without
/// `.json`, not hidden.
fn workflow_name(raw: &str) -> RoomResult<String> {
    let name = raw.trim();
    let name = name.strip_suffix(".json").unwrap_or(name).trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_WORKFLOW_NAME_CHARS {
        return Err(RoomError::Invalid(format!(
            "a workflow's name has 1 to {MAX_WORKFLOW_NAME_CHARS} characters"
        )));
    }
    if name.starts_with('.') || name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return Err(RoomError::Invalid(format!(
            "'{name}' cannot be a workflow's name: no folders, no leading dot"
        )));
    }
    Ok(name.to_string())
}

/// Writes `bytes` as `workflows/NAME.json`, or under the next free
/// `NAME (n).json` when the participant has a different file by that
/// name; the same content already there counts as delivered.
async fn put_workflow(
    workspace: &crate::workspace::Workspace,
    name: &str,
    bytes: Vec<u8>,
) -> RoomResult<()> {
    use crate::workspace::WorkspaceError;
    use comfyume_domain::SafeRelPath;
    for n in 1..=OTHER_NAMES {
        let file = if n == 1 {
            format!("workflows/{name}.json")
        } else {
            format!("workflows/{name} ({n}).json")
        };
        let path = SafeRelPath::parse(&file).map_err(|e| {
            RoomError::Invalid(format!("'{name}' cannot be a workflow's name: {e}"))
        })?;
        match workspace.write(&path, bytes.clone(), false).await {
            Ok(_) => return Ok(()),
            Err(WorkspaceError::Conflict) => {
                if workspace.read_bytes(&path).await.ok().as_deref() == Some(&bytes[..]) {
                    return Ok(());
                }
            }
            Err(e) => return Err(RoomError::Files(e)),
        }
    }
    Err(RoomError::Conflict(format!(
        "every name from '{name}' to '{name} ({OTHER_NAMES})' is taken in a participant's Workflows"
    )))
}

fn ended(id: &JobId) -> RoomError {
    RoomError::Conflict(format!("job {id} has already ended"))
}

/// Applies the room's switches as the store keeps them (the pause, the
/// backend group, each backend's admission) to `dispatcher`: at the start,
/// and when a gateway takes the dispatching over (what it heard from the
/// others meanwhile may have missed a change). A choice about a backend or
/// group no longer configured is said and left.
pub async fn restore_switches(dispatcher: &Dispatcher) -> RoomResult<()> {
    let store = &dispatcher.shared().store;
    let paused = store.room_value(PAUSED_KEY).await?;
    let paused = paused.as_deref() == Some("true");
    if dispatcher.is_paused() != paused {
        dispatcher.set_paused_here(paused);
    }
    let group: Option<String> = match store.room_value(GROUP_KEY).await? {
        Some(stored) => serde_json::from_str(&stored)
            .map_err(|e| RoomError::Store(StoreError::Corrupt(format!("room_state.group: {e}"))))?,
        None => None,
    };
    if !dispatcher.use_group_here(group.clone()) {
        tracing::warn!(
            ?group,
            "an instructor chose a backend group that no backend has now: every backend is used"
        );
        dispatcher.use_group_here(None);
    } else if group.is_some() {
        tracing::info!(
            ?group,
            "the room uses the backend group an instructor chose"
        );
    }
    for backend in dispatcher.backends() {
        let Some(stored) = store
            .room_value(&format!("{ADMISSION_KEY}{}", backend.name))
            .await?
        else {
            continue;
        };
        let admission: Admission = serde_json::from_str(&stored).map_err(|e| {
            RoomError::Store(StoreError::Corrupt(format!(
                "room_state.{ADMISSION_KEY}{}: {e}",
                backend.name
            )))
        })?;
        if admission != Admission::Enabled {
            tracing::info!(backend = %backend.name, ?admission, "a backend is as an instructor left it");
        }
        dispatcher.set_admission_here(&backend.name, admission);
    }
    Ok(())
}
