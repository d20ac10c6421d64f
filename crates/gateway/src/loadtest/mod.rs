//! `comfyume loadtest`: a room of simulated participants against a running
//! gateway, each behaving like a browser with the ComfyUI frontend (login,
//! page start-up, one socket, jobs queued and followed to their outputs),
//! and a report of what they met: latency per step, errors, fairness,
//! frames that reached the wrong participant, and the gateway's own memory
//! and CPU.
//!
//! - `accounts`: who logs in (a credential sheet, or the admin API).
//! - `workflow`: the prompt queued, changed per job.
//! - `participant`: one simulated browser.
//! - `metrics`: the gateway's `/metrics`, sampled.
//! - [`report`]: the findings, as JSON and as a table.
//! - [`html`]: the findings as a page of charts.
//! - `progress`: the line on stderr while it runs.

mod accounts;
pub mod html;
mod metrics;
mod participant;
mod progress;
pub mod report;
mod workflow;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::oneshot;

pub use metrics::{GatewayUsage, Sample};
pub use progress::Progress;
pub use report::Report;

use accounts::read_credentials;
use workflow::Workflow;

use participant::{Outcome, Plan, Room};
use progress::{Counters, Totals};

/// Who the participants are.
#[derive(Debug, Clone)]
pub enum AccountSource {
    /// The rows of a credential sheet (`comfyume users import`).
    File(PathBuf),
    /// `count` fresh accounts, created through the admin API with the
    /// admin token.
    Create { count: u32 },
}

/// A load test's settings.
#[derive(Clone)]
pub struct Options {
    /// The gateway, e.g. `http://127.0.0.1:8188`.
    pub url: String,
    pub accounts: AccountSource,
    /// Creates accounts (`AccountSource::Create`) and reads `/metrics`.
    pub admin_token: Option<String>,
    /// The logins are spread evenly over this long.
    pub ramp: Duration,
    pub jobs_per_user: u32,
    /// Each participant's pause between its jobs.
    pub think: Duration,
    /// After this long no participant submits again (jobs in flight finish).
    pub duration: Option<Duration>,
    /// The bound of every network wait, and of each job from its submit to
    /// its final frame.
    pub timeout: Duration,
    /// An API-format workflow file (default: the built-in graph).
    pub workflow: Option<PathBuf>,
}

impl Options {
    /// The defaults of the command line for the gateway at `url`.
    pub fn new(url: impl Into<String>, accounts: AccountSource) -> Options {
        Options {
            url: url.into(),
            accounts,
            admin_token: None,
            ramp: Duration::ZERO,
            jobs_per_user: 3,
            think: Duration::from_secs(1),
            duration: None,
            timeout: Duration::from_secs(300),
            workflow: None,
        }
    }
}

/// Where a gateway answers: its HTTP base, its origin, and its socket.
struct Address {
    base: String,
    origin: String,
    ws_url: String,
}

fn address(url: &str) -> anyhow::Result<Address> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    let ws_scheme = match parsed.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => bail!("`{url}`: the gateway is reached over http or https, not {other}"),
    };
    if parsed.host_str().is_none() {
        bail!("`{url}` names no host");
    }
    let base = parsed.as_str().trim_end_matches('/').to_string();
    let origin = parsed.origin().ascii_serialization();
    let ws_url = format!(
        "{ws_scheme}{}/ws",
        base.strip_prefix(parsed.scheme()).unwrap_or(&base)
    );
    Ok(Address {
        base,
        origin,
        ws_url,
    })
}

/// Runs the load test and reports. Fails only when it cannot start (a bad
/// URL, accounts or workflow); whatever goes wrong once participants run
/// is in the report.
pub async fn run(options: Options, progress: Progress) -> anyhow::Result<Report> {
    let address = address(&options.url)?;
    let workflow = match &options.workflow {
        Some(path) => Workflow::from_file(path)?,
        None => Workflow::built_in(),
    };
    let admin_http = reqwest::Client::builder()
        .timeout(options.timeout)
        .build()
        .context("cannot set up an HTTP client")?;
    let (accounts, accounts_used) = match &options.accounts {
        AccountSource::File(path) => {
            let accounts = read_credentials(path)?;
            let used = format!("{} (the credential sheet)", path.display());
            (accounts, used)
        }
        AccountSource::Create { count } => {
            let token = options
                .admin_token
                .as_deref()
                .context("creating accounts needs the admin token (--admin-token)")?;
            let prefix = accounts::fresh_prefix();
            let accounts = accounts::create_accounts(
                &admin_http,
                &address.base,
                token,
                &prefix,
                *count,
                options.timeout,
            )
            .await?;
            (
                accounts,
                format!("{count} accounts created for this run ({prefix}001…)"),
            )
        }
    };
    if accounts.is_empty() {
        bail!("there are no participant accounts to log in with");
    }

    let used = report::OptionsUsed {
        url: address.base.clone(),
        accounts: accounts_used,
        ramp_s: options.ramp.as_secs_f64(),
        jobs_per_user: options.jobs_per_user,
        think_s: options.think.as_secs_f64(),
        duration_s: options.duration.map(|d| d.as_secs_f64()),
        timeout_s: options.timeout.as_secs_f64(),
        workflow: workflow.source.clone(),
        varied_inputs: workflow.varied_inputs(),
    };
    let participants = accounts.len();
    let start = Instant::now();
    let plan = Arc::new(Plan {
        base: address.base.clone(),
        origin: address.origin,
        ws_url: address.ws_url,
        jobs_per_user: options.jobs_per_user,
        think: options.think,
        stop_submitting_at: options.duration.map(|d| start + d),
        timeout: options.timeout,
        workflow,
    });

    let counters = Arc::new(Counters::default());
    let (stop_progress, progress_stopped) = oneshot::channel();
    let progress_line = progress::show(
        progress,
        counters.clone(),
        Totals {
            participants: participants as u64,
            jobs: participants as u64 * u64::from(options.jobs_per_user),
        },
        start,
        progress_stopped,
    );
    let (stop_sampling, sampling_stopped) = oneshot::channel();
    let sampler = tokio::spawn(metrics::sample(
        admin_http,
        address.base,
        options.admin_token.clone(),
        start,
        sampling_stopped,
    ));

    let room = Room::new(participants);
    let users: Vec<String> = accounts.iter().map(|a| a.user.clone()).collect();
    let tasks: Vec<_> = accounts
        .into_iter()
        .enumerate()
        .map(|(i, account)| {
            // Evenly over the ramp: the first at once, the last at its end.
            let delay = if participants > 1 {
                options.ramp.mul_f64(i as f64 / (participants - 1) as f64)
            } else {
                Duration::ZERO
            };
            tokio::spawn(participant::run(
                i,
                account,
                plan.clone(),
                start + delay,
                counters.clone(),
                room.clone(),
            ))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(participants);
    for (task, user) in tasks.into_iter().zip(users) {
        outcomes.push(match task.await {
            Ok(outcome) => outcome,
            Err(e) => {
                let mut outcome = Outcome::new(&user);
                outcome.error_counts.insert("internal".into(), 1);
                outcome.failures.push(participant::Failure::new(
                    "internal",
                    format!("the participant's task ended abnormally: {e}"),
                ));
                outcome
            }
        });
    }
    let wall = start.elapsed();

    let _ = stop_sampling.send(());
    let gateway = sampler.await.unwrap_or_else(|e| {
        GatewayUsage::unmeasured(format!("not measured: the sampler ended abnormally: {e}"))
    });
    let _ = stop_progress.send(());
    if let Some(line) = progress_line {
        let _ = line.await;
    }
    Ok(Report::build(used, &outcomes, start, wall, gateway))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_found_from_the_url() {
        let a = address("http://127.0.0.1:8188/").unwrap();
        assert_eq!(a.base, "http://127.0.0.1:8188");
        assert_eq!(a.origin, "http://127.0.0.1:8188");
        assert_eq!(a.ws_url, "ws://127.0.0.1:8188/ws");
        let b = address("https://room.example/comfy").unwrap();
        assert_eq!(b.origin, "https://room.example");
        assert_eq!(b.ws_url, "wss://room.example/comfy/ws");
        assert!(address("ftp://x").is_err());
        assert!(address("not a url").is_err());
    }
}
