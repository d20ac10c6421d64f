//! The instructor's commands against a running server: `comfyume backends`,
//! `jobs`, `room` and `audit`. Each is one call to the admin API (the
//! server does the work and writes the audit log), printed as a table.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::backend::Backend;
use crate::config::Config;

/// Where the server is and the token that lets a command in.
#[derive(Args, Debug, Clone)]
pub struct Server {
    /// The server (default: http://<listen> from the configuration).
    #[arg(long)]
    url: Option<String>,
    /// The admin token (default: `admin_token` from the configuration).
    #[arg(long, env = "COMFYUME_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `comfyume users disable|enable|reset-password NAME`.
pub async fn user_action(
    config: &Config,
    server: &Server,
    name: &str,
    action: &str,
) -> anyhow::Result<()> {
    let api = AdminApi::at(config, server.url.clone(), server.token.clone())?;
    let path = format!("/admin/api/users/{}/{action}", segment(name));
    let done = api.post(&path, None).await?;
    print_done(&done);
    if let Some(password) = done.get("password").and_then(Value::as_str) {
        println!("new password for {name}: {password}");
    }
    Ok(())
}

/// `comfyume users limits NAME [--waiting N] [--running N]`.
pub async fn limits(
    config: &Config,
    server: &Server,
    name: &str,
    waiting: Option<u32>,
    running: Option<u32>,
) -> anyhow::Result<()> {
    let api = AdminApi::at(config, server.url.clone(), server.token.clone())?;
    let path = format!("/admin/api/users/{}/caps", segment(name));
    let done = api
        .post(
            &path,
            Some(json!({"max_pending": waiting, "max_running": running})),
        )
        .await?;
    print_done(&done);
    Ok(())
}

/// Where the server is and the token that lets the command in, then what
/// to do.
#[derive(Args, Debug)]
pub struct Connection<C: Subcommand> {
    /// The server (default: http://<listen> from the configuration).
    #[arg(long, global = true)]
    url: Option<String>,
    /// The admin token (default: `admin_token` from the configuration).
    #[arg(
        long,
        global = true,
        env = "COMFYUME_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: C,
}

#[derive(Subcommand, Debug)]
pub enum BackendsCommand {
    /// Every backend with its state (ready, busy, starting, unreachable,
    /// disabled, draining) and running jobs.
    List,
    /// Put a backend back in service.
    Enable { name: String },
    /// Take a backend out of service (its running jobs finish).
    Disable { name: String },
    /// Let a backend finish its running jobs and take no new ones.
    Drain { name: String },
    /// Send new work only to the backends of GROUP (`all`: every backend).
    Use { group: String },
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Every waiting and running job of the room, oldest first.
    List,
    /// Cancel a job: a waiting one leaves the queue, a running one stops.
    Cancel { id: String },
    /// Cancel every waiting and running job of one participant.
    CancelUser { name: String },
    /// Move a waiting job to the front of the room's queue.
    Bump { id: String },
}

#[derive(Subcommand, Debug)]
pub enum RoomCommand {
    /// Whether the room is paused.
    Status,
    /// "Eyes on me": nothing new starts, running jobs finish, and every
    /// participant is told.
    Pause,
    /// Let waiting jobs start again.
    Resume,
    /// Show MESSAGE on every participant's canvas (a banner that stays
    /// until cleared, and a notice on the canvases open now).
    Broadcast { message: String },
    /// Take the broadcast's banner off every canvas.
    ClearBroadcast,
    /// Put a workflow (a .json saved from ComfyUI) into every account's
    /// Workflows, now and at each later login.
    PushWorkflow {
        file: std::path::PathBuf,
        /// Its name in Workflows (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// The newest entries: when, who, what, on what.
    List {
        /// How many entries (at most 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// One admin API call's answer, or the server's reason for refusing it.
struct AdminApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminApi {
    fn new<C: Subcommand>(config: &Config, args: &Connection<C>) -> anyhow::Result<Self> {
        Self::at(config, args.url.clone(), args.token.clone())
    }

    fn at(config: &Config, url: Option<String>, token: Option<String>) -> anyhow::Result<Self> {
        let base = url
            .unwrap_or_else(|| format!("http://{}", config.listen))
            .trim_end_matches('/')
            .to_string();
        let token = token
            .or_else(|| config.admin_token.as_ref().map(|t| t.expose().to_string()))
            .context("no admin token: pass --token, set COMFYUME_ADMIN_TOKEN, or set admin_token in the configuration")?;
        Ok(Self {
            http: Backend::http_client()?,
            base,
            token,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("the server's answer ({status}) is not JSON"))?;
        if !status.is_success() {
            bail!(
                "{}",
                body.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the server refused")
            );
        }
        Ok(body)
    }
}

/// A path segment as the URL carries it.
fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub async fn backends(config: &Config, args: Connection<BackendsCommand>) -> anyhow::Result<()> {
    let api = AdminApi::new(config, &args)?;
    let body = match &args.command {
        BackendsCommand::List => api.get("/admin/api/backends").await?,
        BackendsCommand::Enable { name } => {
            let path = format!("/admin/api/backends/{}/enable", segment(name));
            api.post(&path, None).await?
        }
        BackendsCommand::Disable { name } => {
            let path = format!("/admin/api/backends/{}/disable", segment(name));
            api.post(&path, None).await?
        }
        BackendsCommand::Drain { name } => {
            let path = format!("/admin/api/backends/{}/drain", segment(name));
            api.post(&path, None).await?
        }
        BackendsCommand::Use { group } => {
            let path = format!("/admin/api/groups/{}/use", segment(group));
            api.post(&path, None).await?
        }
    };
    let list = body.get("backends").unwrap_or(&body);
    println!(
        "{:<16} {:<8} {:<10} {:<12} {:>7} {:>6} {:<32}",
        "NAME", "KIND", "GROUP", "STATE", "RUNNING", "QUEUED", "URL"
    );
    for b in list.as_array().into_iter().flatten() {
        let group = if b.get("active").and_then(Value::as_bool).unwrap_or(true) {
            text(b, "group")
        } else {
            format!("{} (off)", text(b, "group"))
        };
        println!(
            "{:<16} {:<8} {:<10} {:<12} {:>3}/{:<3} {:>6} {:<32}",
            text(b, "name"),
            text(b, "kind"),
            group,
            text(b, "state"),
            number(b, "running"),
            number(b, "slots"),
            number(b, "queued"),
            text(b, "url")
        );
    }
    Ok(())
}

pub async fn jobs(config: &Config, args: Connection<JobsCommand>) -> anyhow::Result<()> {
    let api = AdminApi::new(config, &args)?;
    let done = match &args.command {
        JobsCommand::List => {
            let body = api.get("/admin/api/jobs").await?;
            print_jobs(&body);
            return Ok(());
        }
        JobsCommand::Cancel { id } => {
            let path = format!("/admin/api/jobs/{}/cancel", segment(id));
            api.post(&path, None).await?
        }
        JobsCommand::Bump { id } => {
            let path = format!("/admin/api/jobs/{}/bump", segment(id));
            api.post(&path, None).await?
        }
        JobsCommand::CancelUser { name } => {
            let path = format!("/admin/api/users/{}/cancel-jobs", segment(name));
            api.post(&path, None).await?
        }
    };
    print_done(&done);
    Ok(())
}

fn print_jobs(body: &Value) {
    let paused = body.get("paused").and_then(Value::as_bool).unwrap_or(false);
    println!(
        "room: {}",
        if paused {
            "PAUSED (nothing new starts)"
        } else {
            "running"
        }
    );
    println!(
        "{:<36} {:<16} {:<11} {:>9} {:<16} FRONT",
        "ID", "OWNER", "STATE", "WAITED", "BACKEND"
    );
    for j in body
        .get("jobs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let waited_s = j.get("waited_ms").and_then(Value::as_i64).unwrap_or(0) as f64 / 1000.0;
        println!(
            "{:<36} {:<16} {:<11} {:>8.1}s {:<16} {}",
            text(j, "id"),
            text(j, "owner"),
            text(j, "state"),
            waited_s,
            text(j, "backend"),
            if j.get("bumped").and_then(Value::as_bool) == Some(true) {
                "yes"
            } else {
                ""
            }
        );
    }
}

pub async fn room(config: &Config, args: Connection<RoomCommand>) -> anyhow::Result<()> {
    let api = AdminApi::new(config, &args)?;
    let body = match &args.command {
        RoomCommand::Status => api.get("/admin/api/room").await?,
        RoomCommand::Pause => api.post("/admin/api/room/pause", None).await?,
        RoomCommand::Resume => api.post("/admin/api/room/resume", None).await?,
        RoomCommand::Broadcast { message } => {
            let done = api
                .post(
                    "/admin/api/room/broadcast",
                    Some(json!({"message": message})),
                )
                .await?;
            print_done(&done);
            return Ok(());
        }
        RoomCommand::ClearBroadcast => {
            let done = api
                .call(reqwest::Method::DELETE, "/admin/api/room/broadcast", None)
                .await?;
            print_done(&done);
            return Ok(());
        }
        RoomCommand::PushWorkflow { file, name } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let workflow: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let name = match name {
                Some(n) => n.clone(),
                None => file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .context("the file has no name; pass --name")?,
            };
            let done = api
                .post(
                    "/admin/api/room/workflows",
                    Some(json!({"name": name, "workflow": workflow})),
                )
                .await?;
            print_done(&done);
            return Ok(());
        }
    };
    let paused = body.get("paused").and_then(Value::as_bool).unwrap_or(false);
    println!("room: {}", if paused { "paused" } else { "running" });
    Ok(())
}

pub async fn audit(config: &Config, args: Connection<AuditCommand>) -> anyhow::Result<()> {
    let api = AdminApi::new(config, &args)?;
    let AuditCommand::List { limit } = &args.command;
    let body = api.get(&format!("/admin/api/audit?limit={limit}")).await?;
    println!(
        "{:<20} {:<16} {:<18} {:<36} DETAIL",
        "WHEN (UTC)", "WHO", "ACTION", "TARGET"
    );
    for e in body
        .get("entries")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "{:<20} {:<16} {:<18} {:<36} {}",
            when(e.get("at").and_then(Value::as_i64).unwrap_or(0)),
            text(e, "actor"),
            text(e, "action"),
            text(e, "target"),
            e.get("detail").map(Value::to_string).unwrap_or_default()
        );
    }
    Ok(())
}

/// What an action did, from its audit entry.
fn print_done(body: &Value) {
    let entry = body.get("audit").unwrap_or(body);
    println!(
        "done: {} {} {}",
        text(entry, "action"),
        text(entry, "target"),
        entry
            .get("detail")
            .map(Value::to_string)
            .unwrap_or_default()
    );
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string()
}

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day
/// count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::when;

    #[test]
    fn prints_utc_times() {
        assert_eq!(when(0), "1970-01-01 00:00:00");
        assert_eq!(when(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(when(1_796_418_727_298), "2026-12-04 21:12:07");
    }
}
