//! `AppState`: everything a request handler or background task needs, built
//! once from the configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Accounts, LoginLimiter, SessionUser, Slowdown};
use crate::backend::Backend;
use crate::catalogue::Catalogue;
use crate::config::{AuthMode, Config};
use crate::dispatch::{Dispatcher, Shared};
use crate::frontend::{Frontend, FrontendError};
use crate::hub::Hub;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::templates::Templates;
use crate::workspace::Workspaces;
use comfyume_domain::{Password, Role, UserName};

/// Cheap to clone; handlers take it as axum state.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

pub struct App {
    pub config: Config,
    pub store: Store,
    pub accounts: Accounts,
    pub workspaces: Workspaces,
    pub catalogue: Arc<Catalogue>,
    /// What the backends serve beside running prompts.
    pub assets: crate::backend_assets::BackendAssets,
    pub hub: Arc<Hub>,
    /// Its place among the gateways sharing its database (PostgreSQL);
    /// `None`: it is the only one (SQLite).
    pub cluster: Option<crate::cluster::Membership>,
    pub metrics: Arc<Metrics>,
    pub dispatcher: Arc<Dispatcher>,
    pub jobs: Jobs,
    /// The instructor's actions on the room.
    pub room: crate::room::Room,
    /// Scheduled backups and their status (`None`: `[backup] to` unset).
    pub backups: Option<Arc<crate::backup::Backups>>,
    /// The data directory's free space, checked before large writes.
    pub disk: crate::disk::DiskGuard,
    /// Places for take-home exports being written at once.
    pub exports: Arc<tokio::sync::Semaphore>,
    pub frontend: Frontend,
    pub templates: Templates,
    /// The node documentation folder, when it is there.
    pub node_docs: Option<std::path::PathBuf>,
    /// In `auth = "none"` mode, the one user everybody is.
    pub local_user: Option<SessionUser>,
    /// Flips to true when the server starts shutting down, so long-lived
    /// sockets close instead of holding the graceful shutdown open.
    pub closing: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up the local user: {0}")]
    LocalUser(String),
    #[error("workshop templates: {0}")]
    Templates(String),
    #[error("cannot read the room's state: {0}")]
    Room(String),
    #[error("warm-up prompt {path}: {reason}")]
    Warmup { path: String, reason: String },
    #[error("backups: {0}")]
    Backup(#[from] crate::backup::BackupError),
    #[error("participants' files: {0}")]
    Files(String),
}

impl AppState {
    /// Opens the store, checks the frontend and wires the services.
    /// `backends` are the ones to use (the configured ones, or the
    /// built-in simulators). Nothing starts running here: `server::run`
    /// starts the background work.
    pub async fn build(config: Config, backends: Vec<Backend>) -> Result<AppState, StartError> {
        let frontend = Frontend::open(&config.frontend_dir)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = Store::connect_with(
            config.database_url().expose(),
            config.database_max_connections,
        )
        .await?;
        let disk = crate::disk::DiskGuard::new(&config.data_dir, config.limits.min_free_disk_bytes);
        let backups = scheduled_backups(&config, &store, &disk).await?;
        let cluster = store.shared().then(crate::cluster::Membership::new);
        let limiter = LoginLimiter::new(
            config.auth.login_failures_per_user,
            config.auth.login_failures_per_ip,
            Duration::from_secs(config.auth.login_window_seconds),
            Slowdown {
                first: Duration::from_secs(config.auth.login_first_delay_seconds),
                max: Duration::from_secs(config.auth.login_max_delay_seconds),
            },
        );
        let limiter = match &cluster {
            Some(cluster) => limiter.with_relay(cluster.outbox.clone()),
            None => limiter,
        };
        let accounts = Accounts::new(
            store.clone(),
            limiter,
            Duration::from_secs(u64::from(config.auth.session_hours) * 3600),
        )
        .with_room_password(
            config.auth.room_password.clone(),
            config.auth.room_max_members,
        );
        let local_user = match config.auth.mode {
            AuthMode::Password => None,
            AuthMode::None => Some(ensure_local_user(&accounts).await?),
        };
        let mut templates = Templates::open(config.templates_dir.as_deref())
            .map_err(|e| StartError::Templates(e.to_string()))?;
        if let Some(dir) = present(
            config.official_templates_dir.as_deref(),
            "the official template gallery",
        ) {
            templates = templates
                .with_official(dir)
                .map_err(|e| StartError::Templates(e.to_string()))?;
        }
        let node_docs = present(config.node_docs_dir.as_deref(), "the node documentation")
            .map(Path::to_path_buf);
        let catalogue = Arc::new(Catalogue::new(
            backends.clone(),
            config.data_dir.join("catalogue.json"),
        ));
        let assets = crate::backend_assets::BackendAssets::new(backends.clone());
        let mut workspaces = Workspaces::new(config.data_dir.join("users"))
            .with_quota(config.limits.max_user_disk_bytes)
            .with_disk_guard(disk.clone());
        let files_bucket =
            crate::buckets::files_bucket(&config.files).map_err(StartError::Files)?;
        if let Some(store) = files_bucket {
            let url = config.files.url.as_deref().unwrap_or_default();
            crate::buckets::check_files_bucket(store.as_ref(), url)
                .await
                .map_err(StartError::Files)?;
            workspaces = workspaces.with_bucket(crate::workspace::Bucket::new(store));
            if config.backup.to.is_some() {
                tracing::warn!(
                    bucket = url,
                    "participants' files are in a bucket, which backups do not copy; keep them with the bucket's own versioning or replication"
                );
            }
        } else if cluster.is_some() {
            // Other gateways write to the same files (a shared data_dir).
            workspaces = workspaces.with_shared_locks(config.data_dir.join(".locks"));
        }
        let hub = Arc::new(match &cluster {
            Some(cluster) => Hub::relaying(cluster.outbox.clone()),
            None => Hub::default(),
        });
        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(Shared {
            store: store.clone(),
            hub: hub.clone(),
            metrics: metrics.clone(),
            workspaces: workspaces.clone(),
            catalogue: catalogue.clone(),
            progress: Default::default(),
        });
        let warmup = load_warmup(config.dispatch.warmup_prompt.as_deref())?;
        let mut dispatcher = Dispatcher::new(
            shared,
            backends,
            config.limits.max_running_per_user,
            config.dispatch.clone(),
        )
        .with_warmup(warmup);
        if let Some(cluster) = &cluster {
            // It dispatches once it holds the lease (`cluster::lead`).
            dispatcher = dispatcher.with_relay(cluster.outbox.clone());
            dispatcher.set_leading(false);
        }
        let dispatcher = Arc::new(dispatcher);
        let jobs = Jobs::new(dispatcher.clone(), config.limits.clone());
        let room = crate::room::Room::open(
            dispatcher.clone(),
            accounts.clone(),
            crate::workspace::WallImages::new(config.data_dir.join("wall"), workspaces.bucket()),
            crate::room::Storage {
                disk: disk.clone(),
                backups: backups.clone(),
            },
        )
        .await
        .map_err(|e| StartError::Room(e.to_string()))?;
        Ok(AppState(Arc::new(App {
            config,
            store,
            accounts,
            workspaces,
            catalogue,
            assets,
            hub,
            cluster,
            metrics,
            dispatcher,
            jobs,
            room,
            backups,
            disk,
            exports: Arc::new(tokio::sync::Semaphore::new(crate::http::MAX_EXPORTS)),
            frontend,
            templates,
            node_docs,
            local_user,
            closing: tokio::sync::watch::Sender::new(false),
        })))
    }
}

/// The scheduled backups, when `[backup] to` names a destination (opened
/// now, so a wrong URL stops the start rather than the first backup).
async fn scheduled_backups(
    config: &Config,
    store: &Store,
    disk: &crate::disk::DiskGuard,
) -> Result<Option<Arc<crate::backup::Backups>>, StartError> {
    use crate::backup::{Backups, Options, Source, Target, database_file};
    let Some(url) = &config.backup.to else {
        return Ok(None);
    };
    let target = Target::open(url, &config.backup)?;
    let every = crate::config::parse_every(&config.backup.every)
        .map_err(|e| crate::backup::BackupError::Internal(format!("backup.every: {e}")))?;
    let source = Source {
        data_dir: config.data_dir.clone(),
        database_file: database_file(config)?,
        store: store.clone(),
        disk: disk.clone(),
    };
    let backups = Backups::open(
        source,
        Some(target),
        Options::from_config(&config.backup),
        every,
    )
    .await?;
    Ok(Some(Arc::new(backups)))
}

/// The `default` account of local mode, created on first start. Its password
/// is random and never shown: in this mode nobody logs in.
async fn ensure_local_user(accounts: &Accounts) -> Result<SessionUser, StartError> {
    let name = UserName::parse("default").expect("a valid literal");
    if let Some(u) = accounts.store().user_by_name(&name).await? {
        return Ok(u.into());
    }
    accounts
        .create_user(
            &name,
            &Password::new(crate::auth::generate_password()),
            Role::Admin,
        )
        .await
        .map_err(|e| StartError::LocalUser(e.to_string()))
}

/// Reads the configured warm-up prompt (an API-format prompt, or a
/// `{"prompt": …}` body as ComfyUI's "Save (API)" writes it).
pub(crate) fn load_warmup(
    path: Option<&std::path::Path>,
) -> Result<Option<serde_json::Value>, StartError> {
    let Some(path) = path else { return Ok(None) };
    let err = |reason: String| StartError::Warmup {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let prompt = value.get("prompt").cloned().unwrap_or(value);
    if !prompt.is_object() {
        return Err(err(
            "not an API-format prompt (a JSON object of nodes)".into()
        ));
    }
    Ok(Some(prompt))
}

/// A configured folder of `what`, if it is there. Missing, it is left out
/// with a warning: a gateway still serves the frontend without it, and
/// `scripts/fetch-frontend.sh` fetches it. `""` leaves it out by choice.
fn present<'a>(dir: Option<&'a Path>, what: &str) -> Option<&'a Path> {
    let dir = dir.filter(|d| !d.as_os_str().is_empty())?;
    if dir.is_dir() {
        return Some(dir);
    }
    tracing::warn!(
        folder = %dir.display(),
        "{what} is not there (scripts/fetch-frontend.sh fetches it); serving without it"
    );
    None
}
