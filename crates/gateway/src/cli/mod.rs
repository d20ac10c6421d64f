//! The `comfyume` command line. Each subcommand parses its arguments into
//! domain types and calls the same library functions the server uses.

mod admin;
mod backup;
mod export;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::auth::{Accounts, LoginLimiter, generate_password, write_credentials_csv};
use crate::backend::Backend;
use crate::config::{BackendConfig, BackendKind, Config, Overrides};
use crate::store::Store;
use comfyume_domain::{Password, Role, UserName};

#[derive(Parser, Debug)]
#[command(
    name = "comfyume",
    version,
    about = "Run hands-on ComfyUI workshops: every participant gets their own real ComfyUI; one fair queue shares the GPUs."
)]
pub struct Cli {
    /// Configuration file (TOML). See `comfyume config example`.
    #[arg(long, global = true, env = "COMFYUME_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the database and participants' files live (the files
    /// elsewhere when `[files] url` names a bucket).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (default: an SQLite file in the data directory;
    /// postgres://… for several gateways sharing one database).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the workshop: participants' ComfyUI, login, and the API.
    Serve(ServeArgs),
    /// Manage accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Run the GPU simulator: a ComfyUI-protocol server for demos and tests.
    SimBackend {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8189")]
        listen: SocketAddr,
        #[command(flatten)]
        options: comfyume_sim::SimOptions,
    },
    /// Run the sidecar for serverless and load-balanced GPUs, next to a
    /// stock ComfyUI: one streaming HTTP request per job.
    Worker(comfyume_worker::WorkerArgs),
    /// See and steer the GPU backends of a running server (admin API).
    Backends(admin::Connection<admin::BackendsCommand>),
    /// The room's waiting and running jobs: list, cancel, move to the
    /// front (admin API of a running server).
    Jobs(admin::Connection<admin::JobsCommand>),
    /// Pause, resume or speak to the whole room (admin API of a running
    /// server).
    Room(admin::Connection<admin::RoomCommand>),
    /// What instructors did, newest first (admin API of a running server).
    Audit(admin::Connection<admin::AuditCommand>),
    /// Back up the room (database and participants' files) to
    /// S3-compatible storage or a folder, verified; `list` and `verify`
    /// the backups there. Exits 1 unless the backup verified.
    Backup(backup::BackupArgs),
    /// Restore a backup onto an empty data directory, every file checked
    /// against its SHA-256 (stop the server first).
    Restore(backup::RestoreArgs),
    /// Write every participant's take-home zip (their workflows and
    /// outputs) into a folder, one `<user>.zip` each.
    Export(export::ExportArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check a setup before a workshop: configuration, data directory and
    /// free disk, the files bucket (if any), frontend, each GPU backend, the templates' nodes on them,
    /// the warm-up prompt on each backend (timed), and whether the slots
    /// carry the room. One line per check; exits 1 if any fails.
    Doctor {
        /// The frontend's static folder (comfyui_frontend_package/static).
        #[arg(long, value_name = "DIR")]
        frontend_dir: Option<PathBuf>,
        /// Folder of workshop workflow templates.
        #[arg(long, value_name = "DIR")]
        templates_dir: Option<PathBuf>,
        /// Participants the capacity estimate is for (default: the
        /// participant accounts in the database).
        #[arg(long, value_name = "N")]
        participants: Option<u32>,
        /// Jobs each participant queues at once.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        jobs_each: u32,
    },
    /// Load-test a running gateway: simulated participants log in, load
    /// the frontend's start-up requests, keep its socket open, queue jobs
    /// and fetch their outputs. Prints latency per step, errors, fairness
    /// and the gateway's memory and CPU; exits 1 if any participant met an
    /// error or a frame meant for someone else.
    Loadtest(LoadtestArgs),
}

#[derive(Args, Debug)]
struct LoadtestArgs {
    /// The gateway, e.g. http://127.0.0.1:8188.
    #[arg(long, value_name = "URL")]
    url: String,
    /// The participants' credential sheet (the CSV `comfyume users import`
    /// writes).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "users",
        conflicts_with = "users"
    )]
    accounts: Option<PathBuf>,
    /// Instead: create N fresh participant accounts for this run through
    /// the admin API (needs --admin-token).
    #[arg(long, value_name = "N", requires = "admin_token", value_parser = clap::value_parser!(u32).range(1..=9999))]
    users: Option<u32>,
    /// The admin token: creates the --users accounts, and reads the
    /// gateway's /metrics once a second for its memory and CPU.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "COMFYUME_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Spread the logins evenly over this many seconds (0: all at once).
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = seconds)]
    ramp: Duration,
    /// Jobs each participant queues, one after another.
    #[arg(long, value_name = "N", default_value_t = 3)]
    jobs_per_user: u32,
    /// Each participant's pause between its jobs (fractions allowed).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = seconds)]
    think: Duration,
    /// Submit nothing after this many seconds (jobs in flight finish).
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    duration: Option<Duration>,
    /// How long one request, or one job from its submit to its end, may
    /// take before it counts as a timeout.
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = positive_seconds)]
    timeout: Duration,
    /// An API-format workflow to queue (default: a 64x64 image, inverted
    /// and saved, no model needed).
    #[arg(long, value_name = "FILE")]
    workflow: Option<PathBuf>,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the report as a self-contained HTML page with charts to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// A number of seconds, fractions allowed.
fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("`{text}` is not a number of seconds"))
}

/// A number of seconds above zero.
fn positive_seconds(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        d if d.is_zero() => Err(format!("`{text}`: must be more than zero seconds")),
        d => Ok(d),
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8188).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The frontend's static folder (comfyui_frontend_package/static).
    #[arg(long, value_name = "DIR")]
    frontend_dir: Option<PathBuf>,
    /// Folder of workshop workflow templates.
    #[arg(long, value_name = "DIR")]
    templates_dir: Option<PathBuf>,
    /// Demo mode: create (or reset) an admin and three participant accounts,
    /// print their passwords, and allow session cookies over plain HTTP.
    #[arg(long)]
    demo: bool,
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Create an account. Prints a generated password unless one is given.
    Add {
        name: String,
        /// Make the account an instructor (admin).
        #[arg(long)]
        admin: bool,
        /// The password (default: a generated memorable one).
        #[arg(long, env = "COMFYUME_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// List accounts.
    List,
    /// Set a new password (ends the user's sessions).
    Passwd {
        name: String,
        #[arg(long, env = "COMFYUME_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Delete an account (its files stay where they are kept).
    Remove { name: String },
    /// Disable an account on the running server: its sessions end and its
    /// open canvases disconnect (admin API).
    Disable {
        name: String,
        #[command(flatten)]
        server: admin::Server,
    },
    /// Let a disabled account log in again (admin API).
    Enable {
        name: String,
        #[command(flatten)]
        server: admin::Server,
    },
    /// Give an account a new generated password on the running server and
    /// print it; its sessions end and its canvases disconnect (admin API).
    ResetPassword {
        name: String,
        #[command(flatten)]
        server: admin::Server,
    },
    /// Set one participant's own limits on the running server, in place of
    /// the room's (admin API).
    Limits {
        name: String,
        /// Jobs waiting at once (omit: the room's limit).
        #[arg(long, value_name = "N")]
        waiting: Option<u32>,
        /// Jobs running at once (omit: the room's limit).
        #[arg(long, value_name = "N")]
        running: Option<u32>,
        #[command(flatten)]
        server: admin::Server,
    },
    /// Create numbered participant accounts with generated passwords and
    /// write a printable credential sheet.
    Import {
        /// How many accounts.
        #[arg(long)]
        count: u32,
        /// Name prefix: `user` gives user001, user002, …
        #[arg(long, default_value = "user")]
        prefix: String,
        /// Where to write the credential sheet (CSV).
        #[arg(long, default_value = "credentials.csv")]
        out: PathBuf,
        /// The address participants open, printed on the sheet (default:
        /// http://<listen>).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print a commented example configuration.
    Example,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
        ..Default::default()
    };
    match cli.command {
        Command::Config(ConfigCommand::Example) => {
            print!("{}", crate::config::EXAMPLE);
            Ok(())
        }
        Command::Doctor {
            frontend_dir,
            templates_dir,
            participants,
            jobs_each,
        } => {
            overrides.frontend_dir = frontend_dir;
            overrides.templates_dir = templates_dir;
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            println!(
                "ok    {:<22} {}",
                "configuration",
                cli.config
                    .as_deref()
                    .map_or("built-in defaults".to_string(), |p| p.display().to_string())
            );
            let http = Backend::http_client()?;
            let backends = config
                .backends
                .iter()
                .map(|b| Backend::new(b, http.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let participants = match participants {
                Some(n) => n,
                None => participant_accounts(&config).await?,
            };
            let room = crate::doctor::Room {
                participants,
                jobs_each,
            };
            let report = crate::doctor::examine(&config, &backends, room).await;
            for line in &report {
                println!("{line}");
            }
            let failed = report
                .iter()
                .filter(|f| f.verdict == crate::doctor::Verdict::Fail)
                .count();
            if failed > 0 {
                anyhow::bail!("{failed} check(s) failed");
            }
            Ok(())
        }
        Command::SimBackend { listen, options } => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "ComfyUME GPU simulator listening on http://{}",
                listener.local_addr()?
            );
            comfyume_sim::run_with(listener, options, shutdown_signal()).await?;
            Ok(())
        }
        Command::Serve(args) => {
            overrides.listen = args.listen;
            overrides.frontend_dir = args.frontend_dir;
            overrides.templates_dir = args.templates_dir;
            let mut config = Config::load(cli.config.as_deref(), &overrides)?;
            if args.demo {
                // The demo is reached over plain HTTP on this machine.
                config.auth.secure_cookies = false;
            }
            serve(config, args.demo).await
        }
        Command::Worker(args) => {
            let listen = args.listen;
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "ComfyUME worker listening on http://{}",
                listener.local_addr()?
            );
            comfyume_worker::run(listener, args, shutdown_signal()).await?;
            Ok(())
        }
        Command::Backends(args) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            admin::backends(&config, args).await
        }
        Command::Jobs(args) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            admin::jobs(&config, args).await
        }
        Command::Room(args) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            admin::room(&config, args).await
        }
        Command::Audit(args) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            admin::audit(&config, args).await
        }
        Command::Users(cmd) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            users(config, cmd).await
        }
        Command::Loadtest(args) => loadtest(args).await,
        Command::Backup(args) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            backup::backup(config, args).await
        }
        Command::Export(args) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            export::export(config, args).await
        }
        Command::Restore(args) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            backup::restore(config, args).await
        }
    }
}

async fn loadtest(args: LoadtestArgs) -> anyhow::Result<()> {
    use crate::loadtest::{AccountSource, Options, Progress, html};
    let accounts = match (args.accounts, args.users) {
        (Some(path), _) => AccountSource::File(path),
        (None, Some(count)) => AccountSource::Create { count },
        (None, None) => bail!("name the participants: --accounts FILE or --users N"),
    };
    let options = Options {
        url: args.url,
        accounts,
        admin_token: args.admin_token,
        ramp: args.ramp,
        jobs_per_user: args.jobs_per_user,
        think: args.think,
        duration: args.duration,
        timeout: args.timeout,
        workflow: args.workflow,
    };
    let report = crate::loadtest::run(options, Progress::Stderr).await?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html::page(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("HTML report: {}", path.display());
    }
    if !report.is_clean() {
        bail!(
            "{} error(s) and {} misdirected frame(s)",
            report.errors.total,
            report.misdirected_frames.count
        );
    }
    Ok(())
}

/// The active participant accounts in the room's database (none when it
/// does not exist yet).
async fn participant_accounts(config: &Config) -> anyhow::Result<u32> {
    if !config.data_dir.exists() {
        return Ok(0);
    }
    let store = Store::connect_with(
        config.database_url().expose(),
        config.database_max_connections,
    )
    .await?;
    let users = store.list_users().await?;
    store.close().await;
    let count = users
        .iter()
        .filter(|u| u.role == Role::Participant && !u.disabled)
        .count();
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

/// How many simulators `serve` starts when no backend is configured: two,
/// so the demo shows the queue spreading work over several GPUs.
const BUILT_IN_SIMULATORS: usize = 2;

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    let (stop_sims, sims_stopped) = tokio::sync::watch::channel(false);
    let mut sims = tokio::task::JoinSet::new();
    let http = Backend::http_client()?;
    let backends = if config.backends.is_empty() {
        let mut backends = Vec::new();
        for n in 1..=BUILT_IN_SIMULATORS {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let mut stopped = sims_stopped.clone();
            sims.spawn(async move {
                let stop = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = comfyume_sim::run(listener, stop).await {
                    tracing::error!(error = %e, "a built-in GPU simulator stopped");
                }
            });
            tracing::info!(%addr, "no backends configured: started a built-in GPU simulator");
            let sim = BackendConfig {
                name: format!("sim-{n}"),
                kind: BackendKind::Sim,
                url: format!("http://{addr}"),
                slots: 1,
                group: None,
                token: None,
            };
            backends.push(Backend::new(&sim, http.clone())?);
        }
        backends
    } else {
        config
            .backends
            .iter()
            .map(|b| Backend::new(b, http.clone()))
            .collect::<Result<_, _>>()?
    };

    let listen = config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let state = AppState::build(config, backends).await?;
    let url = format!("http://{}", listener.local_addr()?);
    if demo {
        print_demo_accounts(&state, &url).await?;
    }
    println!("ComfyUME is serving on {url}");
    let served = crate::server::run(listener, state.clone(), shutdown_signal()).await;
    let _ = stop_sims.send(true);
    while sims.join_next().await.is_some() {}
    state.store.close().await;
    served?;
    Ok(())
}

async fn print_demo_accounts(state: &AppState, url: &str) -> anyhow::Result<()> {
    let accounts = [
        ("admin", Role::Admin),
        ("alice", Role::Participant),
        ("bob", Role::Participant),
        ("carol", Role::Participant),
    ];
    println!("\nDemo accounts (passwords are new on every demo start):");
    for (name, role) in accounts {
        let name = UserName::parse(name).expect("valid literal");
        let password = Password::new(generate_password());
        match state.store.user_by_name(&name).await? {
            Some(_) => state.accounts.set_password(&name, &password).await?,
            None => {
                state.accounts.create_user(&name, &password, role).await?;
            }
        }
        println!("  {:<8} {:<28} ({role})", name.as_str(), password.expose());
    }
    println!("Open {url} and log in with one of them.\n");
    Ok(())
}

/// `comfyume users …`: the commands on a running server go through its
/// admin API; the others work on the database directly.
async fn users(config: Config, cmd: UsersCommand) -> anyhow::Result<()> {
    match &cmd {
        UsersCommand::Disable { name, server } => {
            return admin::user_action(&config, server, name, "disable").await;
        }
        UsersCommand::Enable { name, server } => {
            return admin::user_action(&config, server, name, "enable").await;
        }
        UsersCommand::ResetPassword { name, server } => {
            return admin::user_action(&config, server, name, "reset-password").await;
        }
        UsersCommand::Limits {
            name,
            waiting,
            running,
            server,
        } => return admin::limits(&config, server, name, *waiting, *running).await,
        _ => {}
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = Store::connect_with(
        config.database_url().expose(),
        config.database_max_connections,
    )
    .await?;
    let accounts = Accounts::new(
        store.clone(),
        LoginLimiter::new(1, 1, std::time::Duration::ZERO, Default::default()),
        std::time::Duration::ZERO,
    );
    let result = users_command(&config, &accounts, cmd).await;
    store.close().await;
    result
}

async fn users_command(
    config: &Config,
    accounts: &Accounts,
    cmd: UsersCommand,
) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Add {
            name,
            admin,
            password,
        } => {
            let name = UserName::parse(&name)?;
            let (password, generated) = match password {
                Some(p) => (Password::new(p), false),
                None => (Password::new(generate_password()), true),
            };
            let role = if admin {
                Role::Admin
            } else {
                Role::Participant
            };
            accounts.create_user(&name, &password, role).await?;
            if generated {
                println!(
                    "created {role} '{name}' with password: {}",
                    password.expose()
                );
            } else {
                println!("created {role} '{name}'");
            }
        }
        UsersCommand::List => {
            let users = accounts.store().list_users().await?;
            println!("{:<24} {:<12} {:<8}", "NAME", "ROLE", "STATUS");
            for u in users {
                println!(
                    "{:<24} {:<12} {:<8}",
                    u.name.as_str(),
                    u.role.as_str(),
                    if u.disabled { "disabled" } else { "active" }
                );
            }
        }
        UsersCommand::Passwd { name, password } => {
            let name = UserName::parse(&name)?;
            let (password, generated) = match password {
                Some(p) => (Password::new(p), false),
                None => (Password::new(generate_password()), true),
            };
            accounts.set_password(&name, &password).await?;
            if generated {
                println!("new password for '{name}': {}", password.expose());
            } else {
                println!("password of '{name}' changed");
            }
        }
        UsersCommand::Remove { name } => {
            let name = UserName::parse(&name)?;
            accounts.store().remove_user(&name).await?;
            println!(
                "removed '{name}' (their files stay in {})",
                config.data_dir.join("users").display()
            );
        }
        UsersCommand::Disable { .. }
        | UsersCommand::Enable { .. }
        | UsersCommand::ResetPassword { .. }
        | UsersCommand::Limits { .. } => {
            bail!("this command talks to the running server (`users` sends it there)")
        }
        UsersCommand::Import {
            count,
            prefix,
            out,
            url,
        } => {
            import(config, accounts, count, &prefix, &out, url).await?;
        }
    }
    Ok(())
}

async fn import(
    config: &Config,
    accounts: &Accounts,
    count: u32,
    prefix: &str,
    out: &Path,
    url: Option<String>,
) -> anyhow::Result<()> {
    let rows = accounts.create_numbered(prefix, count).await?;
    let url = url.unwrap_or_else(|| format!("http://{}", config.listen));
    write_credentials_csv(out, &rows, &url)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "created {} accounts; credential sheet written to {}",
        rows.len(),
        out.display()
    );
    Ok(())
}

/// SIGINT or SIGTERM (how a terminal or a service manager stops us).
pub use comfyume_worker::shutdown_signal;

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn loadtest_help_parses() {
        use clap::Parser;
        let help = super::Cli::try_parse_from(["comfyume", "loadtest", "--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("--jobs-per-user"));
    }

    #[test]
    fn loadtest_flags_become_options() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "comfyume",
            "loadtest",
            "--url",
            "http://127.0.0.1:8188",
            "--accounts",
            "room.csv",
            "--ramp",
            "2.5",
            "--think",
            "0",
            "--duration",
            "60",
        ])
        .unwrap();
        let super::Command::Loadtest(args) = cli.command else {
            panic!("not the loadtest command");
        };
        assert_eq!(args.ramp, std::time::Duration::from_millis(2500));
        assert_eq!(args.think, std::time::Duration::ZERO);
        assert_eq!(args.duration, Some(std::time::Duration::from_secs(60)));
        assert_eq!(args.jobs_per_user, 3);
        assert_eq!(args.timeout, std::time::Duration::from_secs(300));
        // One source of participants, never both.
        for bad in [
            &["comfyume", "loadtest", "--url", "http://x"][..],
            &[
                "comfyume",
                "loadtest",
                "--url",
                "http://x",
                "--accounts",
                "a.csv",
                "--users",
                "3",
                "--admin-token",
                "t",
            ],
            &[
                "comfyume",
                "loadtest",
                "--url",
                "http://x",
                "--accounts",
                "a.csv",
                "--think",
                "-1",
            ],
            &[
                "comfyume",
                "loadtest",
                "--url",
                "http://x",
                "--accounts",
                "a.csv",
                "--timeout",
                "0",
            ],
        ] {
            assert!(super::Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
