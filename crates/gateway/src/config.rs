//! Configuration: built-in defaults, then the TOML file, then `COMFYUME_*`
//! environment variables, then command-line flags, each layer overriding the
//! one before. Unknown keys are refused with their name, so a typo never
//! silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use comfyume_protocol::Secret;

/// The commented example printed by `comfyume config example`.
pub const EXAMPLE: &str = include_str!("../../../config/comfyume.example.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Defaults to `sqlite://<data_dir>/comfyume.db`; `postgres://…` for
    /// several gateways sharing one database.
    pub database_url: Option<Secret>,
    /// Connections this gateway keeps to a PostgreSQL database at most
    /// (unused with SQLite).
    pub database_max_connections: u32,
    pub frontend_dir: PathBuf,
    pub templates_dir: Option<PathBuf>,
    /// The official ComfyUI template gallery (comfyui-workflow-templates,
    /// as `scripts/fetch-frontend.sh` lays it out), offered after the
    /// workshop's own templates; `None` offers the workshop's only.
    pub official_templates_dir: Option<PathBuf>,
    /// Node documentation (comfyui-embedded-docs), served at `/docs/`.
    pub node_docs_dir: Option<PathBuf>,
    pub auth: AuthConfig,
    /// A bearer token for the admin API (what `comfyume backends`, `jobs`,
    /// `room` and `audit` use); without one, only logged-in instructors
    /// reach it.
    pub admin_token: Option<Secret>,
    /// A second address serving only `/metrics`, without a login, for a
    /// Prometheus on a private network. On the main address `/metrics`
    /// needs the admin token or an instructor's session.
    pub metrics_listen: Option<SocketAddr>,
    pub limits: Limits,
    pub dispatch: DispatchConfig,
    pub backends: Vec<BackendConfig>,
    pub backup: BackupConfig,
    pub files: FilesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8188)),
            data_dir: PathBuf::from("comfyume-data"),
            database_url: None,
            database_max_connections: crate::store::DEFAULT_MAX_CONNECTIONS,
            frontend_dir: PathBuf::from("frontend/comfyui_frontend_package/static"),
            templates_dir: None,
            official_templates_dir: Some(PathBuf::from("frontend/workflow_templates")),
            node_docs_dir: Some(PathBuf::from("frontend/embedded_docs")),
            auth: AuthConfig::default(),
            admin_token: None,
            metrics_listen: None,
            limits: Limits::default(),
            dispatch: DispatchConfig::default(),
            backends: Vec::new(),
            backup: BackupConfig::default(),
            files: FilesConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Accounts with passwords and a session cookie.
    Password,
    /// No login: everyone is the single user `default`.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub secure_cookies: bool,
    pub session_hours: u32,
    pub login_failures_per_user: u32,
    pub login_failures_per_ip: u32,
    pub login_window_seconds: u64,
    /// Past a limit, the wait before the next attempt: this many seconds,
    /// doubling after each attempt let through, up to the maximum.
    pub login_first_delay_seconds: u64,
    pub login_max_delay_seconds: u64,
    /// Reverse proxies whose `X-Forwarded-For` header names the client (for the per-address login limit); from anyone else the
    /// header is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The header those proxies name the client in.
    pub forwarded_header: ForwardedHeader,
    /// The room's shared password: the first time, a participant without a
    /// card chooses a free user name and a password of their own and
    /// enters this one, which makes their account (`Accounts::join`);
    /// afterwards they log in with their own password, and this one
    /// reaches no account. `None`: off.
    pub room_password: Option<Secret>,
    /// The most accounts the room's password may make.
    pub room_max_members: u32,
}

/// Which header a trusted proxy names the client in. Only one is read: a
/// proxy passes the other through from the client untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx, Caddy, most balancers).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Password,
            secure_cookies: true,
            session_hours: 24,
            login_failures_per_user: 10,
            login_failures_per_ip: 100,
            login_window_seconds: 300,
            login_first_delay_seconds: 1,
            login_max_delay_seconds: 60,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
            room_password: None,
            room_max_members: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// An uploaded file (`/upload/image`, `/upload/mask`).
    pub max_upload_bytes: u64,
    /// A `POST /prompt` body (the prompt and its workflow).
    pub max_prompt_bytes: u64,
    /// A file written under `/userdata` (workflows, subgraphs, …).
    pub max_userdata_bytes: u64,
    /// A participant's settings: each request, and the stored file.
    pub max_settings_bytes: u64,
    /// Any other request body (login, queue and history changes, …).
    pub max_body_bytes: u64,
    /// What one participant's files (uploads, outputs, workflows) may take
    /// on disk together.
    pub max_user_disk_bytes: u64,
    /// Free space the data directory's filesystem keeps: an upload, an
    /// output copy or a backup's staging that would leave less is refused
    /// with a clear reason instead of filling the disk.
    pub min_free_disk_bytes: u64,
    /// Live sockets (browser tabs) one participant may hold at once.
    pub max_sockets_per_user: u32,
    /// Open HTTP connections the server holds at once, from everyone; one
    /// more is answered 503 and closed.
    pub max_connections: u32,
    /// A request's headers must arrive within this; an idle keep-alive
    /// connection closes after it.
    pub header_read_timeout_seconds: u64,
    /// A whole request, body included, is read and answered within this.
    pub request_timeout_seconds: u64,
    pub max_pending_per_user: u32,
    pub max_running_per_user: u32,
    /// The room's upper bounds on numeric node inputs, by input name
    /// (`steps`, `width`, …), on top of each node's own: a prompt over one
    /// is refused before it is queued.
    pub prompt_caps: std::collections::BTreeMap<String, f64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 100 * 1024 * 1024,
            max_prompt_bytes: 32 * 1024 * 1024,
            max_userdata_bytes: 32 * 1024 * 1024,
            max_settings_bytes: 1024 * 1024,
            max_body_bytes: 1024 * 1024,
            max_user_disk_bytes: 2 * 1024 * 1024 * 1024,
            min_free_disk_bytes: 1024 * 1024 * 1024,
            max_sockets_per_user: 16,
            max_connections: 10_000,
            header_read_timeout_seconds: 30,
            request_timeout_seconds: 300,
            max_pending_per_user: 10,
            max_running_per_user: 1,
            prompt_caps: [
                ("steps", 200.0),
                ("width", 4096.0),
                ("height", 4096.0),
                ("batch_size", 16.0),
                ("amount", 16.0),
                ("scale_by", 4.0),
                ("length", 257.0),
                ("video_frames", 64.0),
            ]
            .into_iter()
            .map(|(input, cap)| (input.to_string(), cap))
            .collect(),
        }
    }
}

impl Limits {
    /// A limit in bytes as the HTTP layer takes it.
    pub fn bytes(limit: u64) -> usize {
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Runs a job gets before it fails for good when backends keep losing
    /// it.
    pub max_attempts: u32,
    /// The longest one run may take, from the backend starting it (from
    /// dispatch until it starts) to its last event.
    pub job_timeout_seconds: u64,
    /// Queue each slot's next job on its backend (a ComfyUI or the
    /// simulator; not a worker) while the slot's current job runs, so the
    /// GPU starts it the moment the current one ends instead of idling
    /// for the few milliseconds the gateway takes to record one job and
    /// send the next. Off by default: that gap matters only for jobs of a
    /// few milliseconds, while the price is paid in a workshop's currency,
    /// waiting: a participant arriving meanwhile waits for the queued job
    /// too, and the queued job waits for its slot even if another frees
    /// first. While it waits there it counts as running (ComfyUI would
    /// list it as pending), and cancelling it interrupts it.
    pub queue_ahead: bool,
    /// An API-format prompt (JSON file) each backend runs when it comes
    /// up, before any participant's job, to load the workshop's model.
    pub warmup_prompt: Option<PathBuf>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            job_timeout_seconds: 1800,
            queue_ahead: false,
            warmup_prompt: None,
        }
    }
}

/// Backups of the room's database and participants' files
/// (`comfyume backup`, and on a schedule inside `serve`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where backups go: `s3://BUCKET/PREFIX` or `file:///PATH`. `serve`
    /// backs up on its schedule only when this is set; the CLI's `--to`
    /// overrides it.
    pub to: Option<String>,
    /// How often `serve` backs up, e.g. `30m`, `1h`, `1d`.
    pub every: String,
    /// Retention: the newest `keep_last` backups, plus the newest of each
    /// of the last `keep_daily` days and `keep_weekly` ISO weeks that have
    /// one (UTC). Objects no kept backup refers to are collected.
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    /// After writing, read back this percentage of the backup's objects in
    /// full and check their hashes (100: all of them); the rest are
    /// checked by size. Below 100 suits very large rooms.
    pub verify_percent: u8,
    /// An object the store has not answered within this is an error.
    pub timeout_seconds: u64,
    /// Retries of a failed request to the store (with backoff) before the
    /// backup fails.
    pub max_retries: u32,
    /// Unreferenced objects younger than this are not collected: a backup
    /// running at the same time from another process may be about to
    /// refer to them.
    pub collect_after_seconds: u64,
    pub s3: S3Config,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            to: None,
            every: "1h".into(),
            keep_last: 24,
            keep_daily: 7,
            keep_weekly: 4,
            verify_percent: 100,
            timeout_seconds: 60,
            max_retries: 3,
            collect_after_seconds: 6 * 3600,
            s3: S3Config::default(),
        }
    }
}

/// Where participants' files (workflows, settings, uploads, outputs)
/// live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Unset: in `<data_dir>/users`, on this machine's disk or a
    /// filesystem the gateways share. `s3://BUCKET/PREFIX`: in an
    /// S3-compatible bucket, which every gateway reaches.
    pub url: Option<String>,
    /// A request the bucket has not answered within this is an error.
    pub timeout_seconds: u64,
    /// Retries of a failed request to the bucket (with backoff).
    pub max_retries: u32,
    pub s3: S3Config,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout_seconds: 30,
            max_retries: 3,
            s3: S3Config::default(),
        }
    }
}

/// An S3-compatible store. Each key left unset falls back to the usual
/// AWS environment variable (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// e.g. `https://<ACCOUNT_ID>.r2.cloudflarestorage.com` for Cloudflare
    /// R2, `http://minio:9000` for MinIO; unset: AWS.
    pub endpoint: Option<String>,
    /// `auto` for R2.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A stock ComfyUI server.
    Comfyui,
    /// `comfyume sim-backend`, the CPU simulator.
    Sim,
    /// `comfyume worker` in front of a ComfyUI (serverless and
    /// load-balanced GPUs): one streaming request per job.
    Worker,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub kind: BackendKind,
    pub url: String,
    #[serde(default = "one")]
    pub slots: u32,
    /// A label such as `h200` or `local`; `comfyume backends use GROUP`
    /// switches the room to one group at runtime.
    #[serde(default)]
    pub group: Option<String>,
    /// The bearer token of a `worker` backend.
    #[serde(default)]
    pub token: Option<Secret>,
}

impl BackendConfig {
    pub fn new(
        name: impl Into<String>,
        kind: BackendKind,
        url: impl Into<String>,
        slots: u32,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            url: url.into(),
            slots,
            group: None,
            token: None,
        }
    }
}

fn one() -> u32 {
    1
}

/// Flag values that override the file and the environment. `None` leaves
/// the lower layers alone.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontend_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templates_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// `COMFYUME_*` variables that belong to the command line, not to the
/// configuration (lower case, without the prefix).
const NOT_CONFIG_KEYS: [&str; 4] = ["config", "log", "new_password", "worker_token"];

impl Config {
    /// Loads the layered configuration: built-in defaults, then `file`
    /// (optional; when given it must exist), then `COMFYUME_*` variables
    /// (`__` separates nesting), then the flags in `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            // Variables of the command line, not configuration keys: the
            // file itself, the log filter, a new account's password, the
            // worker's token.
            .merge(
                Env::prefixed("COMFYUME_")
                    .ignore(&NOT_CONFIG_KEYS)
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "auth.login_failures_per_user",
                u64::from(self.auth.login_failures_per_user),
            ),
            (
                "auth.login_failures_per_ip",
                u64::from(self.auth.login_failures_per_ip),
            ),
            ("auth.login_window_seconds", self.auth.login_window_seconds),
            (
                "auth.login_first_delay_seconds",
                self.auth.login_first_delay_seconds,
            ),
            (
                "auth.login_max_delay_seconds",
                self.auth.login_max_delay_seconds,
            ),
            (
                "limits.header_read_timeout_seconds",
                self.limits.header_read_timeout_seconds,
            ),
            (
                "limits.request_timeout_seconds",
                self.limits.request_timeout_seconds,
            ),
            (
                "limits.max_sockets_per_user",
                u64::from(self.limits.max_sockets_per_user),
            ),
            (
                "limits.max_connections",
                u64::from(self.limits.max_connections),
            ),
            (
                "database_max_connections",
                u64::from(self.database_max_connections),
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
        }
        if self
            .auth
            .room_password
            .as_ref()
            .is_some_and(|p| p.expose().chars().count() < 8)
        {
            return Err(ConfigError::Invalid(
                "auth.room_password must be at least 8 characters: it is all that stands between the room and anyone who reaches the address".into(),
            ));
        }
        if self.backup.keep_last == 0 {
            return Err(ConfigError::Invalid(
                "backup.keep_last must be at least 1 (the backup just taken)".into(),
            ));
        }
        if !(1..=100).contains(&self.backup.verify_percent) {
            return Err(ConfigError::Invalid(
                "backup.verify_percent must be between 1 and 100".into(),
            ));
        }
        if self.backup.timeout_seconds == 0 {
            return Err(ConfigError::Invalid(
                "backup.timeout_seconds must be at least 1".into(),
            ));
        }
        if let Err(e) = parse_every(&self.backup.every) {
            return Err(ConfigError::Invalid(format!("backup.every: {e}")));
        }
        if let Some(files) = &self.files.url {
            if !files.starts_with("s3://") {
                return Err(ConfigError::Invalid(format!(
                    "files.url = {files:?}: expected s3://BUCKET/PREFIX (or no url, for files on disk)"
                )));
            }
            if self.files.timeout_seconds == 0 {
                return Err(ConfigError::Invalid(
                    "files.timeout_seconds must be at least 1".into(),
                ));
            }
            // A backup's retention deletes what it does not know under
            // its prefix: participants' files must never be there.
            if let Some(backups) = &self.backup.to {
                let within = |a: &str, b: &str| {
                    let (a, b) = (a.trim_end_matches('/'), b.trim_end_matches('/'));
                    a == b || a.starts_with(&format!("{b}/"))
                };
                if within(files, backups) || within(backups, files) {
                    return Err(ConfigError::Invalid(format!(
                        "files.url ({files}) and backup.to ({backups}) overlap: give backups a place of their own"
                    )));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for b in &self.backends {
            if !names.insert(b.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "two backends are named '{}'",
                    b.name
                )));
            }
            if b.slots == 0 {
                return Err(ConfigError::Invalid(format!(
                    "backend '{}' has 0 slots",
                    b.name
                )));
            }
            if b.kind == BackendKind::Worker && b.token.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "backend '{}' is a worker and needs a token",
                    b.name
                )));
            }
            if !(b.url.starts_with("http://") || b.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "backend '{}': url must start with http:// or https://",
                    b.name
                )));
            }
        }
        Ok(())
    }

    /// The database URL, defaulting to an SQLite file in the data directory.
    pub fn database_url(&self) -> Secret {
        self.database_url.clone().unwrap_or_else(|| {
            Secret::new(format!(
                "sqlite://{}",
                self.data_dir.join("comfyume.db").display()
            ))
        })
    }
}

/// A period such as `90s`, `30m`, `1h` or `1d` (at least a minute).
pub fn parse_every(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a period such as 30m, 1h or 1d"))?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    let seconds = n
        .checked_mul(unit_seconds)
        .ok_or_else(|| format!("`{text}` is too long"))?;
    if seconds < 60 {
        return Err(format!("`{text}`: at least one minute"));
    }
    Ok(std::time::Duration::from_secs(seconds))
}

fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        Config::load(Some(f.path()), &Overrides::default())
    }

    #[test]
    fn the_example_parses_to_the_defaults() {
        let c = load_str(EXAMPLE).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.auth.mode, AuthMode::Password);
        assert_eq!(c.limits.max_pending_per_user, 10);
        assert!(c.backends.is_empty());
    }

    /// deploy/compose's configuration, with what its image and compose
    /// files add from the environment.
    #[test]
    fn the_compose_example_parses() {
        let c = load_str(include_str!("../../../deploy/compose/comfyume.toml")).unwrap();
        assert!(!c.auth.secure_cookies);
        assert_eq!(c.backends.len(), 1);
        assert_eq!(c.backends[0].kind, BackendKind::Sim);
        assert_eq!(c.backends[0].url, "http://gpu-sim:8189");
        let compose = include_str!("../../../deploy/compose/compose.yaml");
        assert!(compose.contains("sim-backend\", \"--listen\", \"0.0.0.0:8189\""));
    }

    #[test]
    fn the_default_frontend_is_where_the_fetch_script_puts_it() {
        let script = include_str!("../../../scripts/fetch-frontend.sh");
        assert!(
            script.contains("DEST=${2:-frontend}")
                && script.contains("$DEST/comfyui_frontend_package/static/index.html")
                && script
                    .contains("mv frontend/workflow_templates.partial frontend/workflow_templates")
                && script.contains("frontend/embedded_docs.partial frontend/embedded_docs")
        );
        let c = Config::default();
        assert_eq!(
            c.frontend_dir,
            PathBuf::from("frontend/comfyui_frontend_package/static")
        );
        assert_eq!(
            c.official_templates_dir,
            Some(PathBuf::from("frontend/workflow_templates"))
        );
        assert_eq!(
            c.node_docs_dir,
            Some(PathBuf::from("frontend/embedded_docs"))
        );
    }

    #[test]
    fn limits_that_would_break_every_request_are_refused() {
        for bad in [
            "[limits]\nheader_read_timeout_seconds = 0",
            "[limits]\nrequest_timeout_seconds = 0",
            "[auth]\nlogin_failures_per_user = 0",
        ] {
            let err = load_str(bad).unwrap_err().to_string();
            assert!(err.contains("must be at least 1"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_rooms_password_is_long_enough_to_keep_anyone_out() {
        let err = load_str("[auth]\nroom_password = \"short\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 8 characters"), "{err}");
        let c = load_str("[auth]\nroom_password = \"open-sesame-42\"").unwrap();
        assert_eq!(
            c.auth
                .room_password
                .as_ref()
                .map(|p| p.expose().to_string()),
            Some("open-sesame-42".into())
        );
        assert_eq!(c.auth.room_max_members, 500);
    }

    #[test]
    fn backup_periods_and_bounds() {
        assert_eq!(parse_every("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_every("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_every("2d").unwrap().as_secs(), 172_800);
        assert!(parse_every("10s").unwrap_err().contains("one minute"));
        assert!(parse_every("1w").unwrap_err().contains("unit"));
        assert!(parse_every("hourly").is_err());
        let err = load_str("[backup]\nevery = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("backup.every"), "{err}");
        let err = load_str("[backup]\nkeep_last = 0").unwrap_err();
        assert!(err.to_string().contains("keep_last"), "{err}");
        let c = load_str("[backup]\nto = \"s3://b/p\"\n[backup.s3]\nregion = \"auto\"").unwrap();
        let files = |url: &str, backups: &str| {
            load_str(&format!(
                "[files]\nurl = {url:?}\n[backup]\nto = {backups:?}\n"
            ))
        };
        assert!(files("s3://room/files", "s3://room/backups").is_ok());
        for (url, backups) in [
            ("s3://room", "s3://room/backups"),
            ("s3://room/files/", "s3://room/files"),
            ("s3://room/files/sub", "s3://room/files"),
        ] {
            let e = files(url, backups).unwrap_err().to_string();
            assert!(e.contains("overlap"), "{url} {backups}: {e}");
        }
        assert!(
            load_str("[files]\nurl = \"file:///srv/files\"\n")
                .unwrap_err()
                .to_string()
                .contains("s3://")
        );
        assert_eq!(c.backup.to.as_deref(), Some("s3://b/p"));
        assert_eq!(c.backup.s3.region.as_deref(), Some("auto"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load_str("listne = \"0.0.0.0:1\"").unwrap_err().to_string();
        assert!(err.contains("listne"), "{err}");
        let err = load_str("[auth]\nmood = \"none\"").unwrap_err().to_string();
        assert!(err.contains("mood"), "{err}");
    }

    #[test]
    fn backends_and_flags() {
        let c = load_str(
            "[[backends]]\nname='a'\nkind='comfyui'\nurl='http://127.0.0.1:1'\n[[backends]]\nname='b'\nkind='sim'\nurl='http://127.0.0.1:2'\nslots=2",
        )
        .unwrap();
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.backends[0].slots, 1);
        assert_eq!(c.backends[1].slots, 2);
        let err = load_str("[[backends]]\nname='a'\nkind='comfyui'\nurl='ftp://x'").unwrap_err();
        assert!(err.to_string().contains("http://"));
    }

    #[test]
    fn flags_override_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"listen = \"127.0.0.1:9000\"").unwrap();
        let o = Overrides {
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            Config::load(Some(f.path()), &o).unwrap().listen.port(),
            9001
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Config {
            database_url: Some(Secret::new("postgres://u:hunter2@h/db")),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
