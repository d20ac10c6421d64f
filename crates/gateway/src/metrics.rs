//! The gateway's own measurements, for `/metrics` (Prometheus text format,
//! version 0.0.4): counters and histograms the rest of the server feeds as
//! things happen (jobs ending, logins, answered requests), and the writer
//! that renders them with the gauges read at scrape time (queue depth,
//! backends, sockets, the process's memory and CPU).
//!
//! Hand-written rather than a metrics crate: a dozen families, fixed label
//! sets known at compile time, and lock-free atomics on the hot paths.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Everything counted since the process started.
pub struct Metrics {
    jobs: [AtomicU64; JobOutcome::ALL.len()],
    logins: [AtomicU64; LoginResult::ALL.len()],
    job_wait: Histogram,
    job_run: Histogram,
    http: [Histogram; RouteGroup::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            jobs: Default::default(),
            logins: Default::default(),
            job_wait: Histogram::new(JOB_BUCKETS),
            job_run: Histogram::new(JOB_BUCKETS),
            http: std::array::from_fn(|_| Histogram::new(HTTP_BUCKETS)),
        }
    }
}

/// Seconds: a job waits and runs from a fraction of a second (a small
/// prompt on a free GPU) to many minutes (video on a busy room).
const JOB_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Seconds: most answers take a millisecond or two; uploads and the node
/// catalogue take longer.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How an attempt at a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Completed,
    Failed,
    Cancelled,
    /// A backend lost it; it went back in the queue for another attempt.
    Retried,
    /// A busy backend turned it away before starting it.
    TurnedAway,
}

impl JobOutcome {
    const ALL: [JobOutcome; 5] = [
        JobOutcome::Completed,
        JobOutcome::Failed,
        JobOutcome::Cancelled,
        JobOutcome::Retried,
        JobOutcome::TurnedAway,
    ];

    fn label(self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Failed => "failed",
            JobOutcome::Cancelled => "cancelled",
            JobOutcome::Retried => "retried",
            JobOutcome::TurnedAway => "turned_away",
        }
    }
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Accepted,
    /// Wrong name or password.
    Refused,
    RateLimited,
}

impl LoginResult {
    const ALL: [LoginResult; 3] = [
        LoginResult::Accepted,
        LoginResult::Refused,
        LoginResult::RateLimited,
    ];

    fn label(self) -> &'static str {
        match self {
            LoginResult::Accepted => "accepted",
            LoginResult::Refused => "refused",
            LoginResult::RateLimited => "rate_limited",
        }
    }
}

/// Routes grouped by what they serve, so latency shows which part of the
/// product is slow without a label per path (or per user's file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteGroup {
    /// `/login`, `/logout`.
    Login,
    /// Submitting prompts (`POST /prompt`).
    Prompt,
    /// The queue, history and jobs views, interrupts.
    Queue,
    /// `/view` and uploads.
    Files,
    /// Userdata, settings, the user list.
    Userdata,
    /// The node catalogue and the other start-up calls of the frontend.
    Catalogue,
    /// The WebSocket upgrade.
    Socket,
    /// The admin API.
    Admin,
    /// `/health`, `/ready`, `/metrics`.
    Probe,
    /// The frontend's static files and templates.
    Static,
}

impl RouteGroup {
    const ALL: [RouteGroup; 10] = [
        RouteGroup::Login,
        RouteGroup::Prompt,
        RouteGroup::Queue,
        RouteGroup::Files,
        RouteGroup::Userdata,
        RouteGroup::Catalogue,
        RouteGroup::Socket,
        RouteGroup::Admin,
        RouteGroup::Probe,
        RouteGroup::Static,
    ];

    fn label(self) -> &'static str {
        match self {
            RouteGroup::Login => "login",
            RouteGroup::Prompt => "prompt",
            RouteGroup::Queue => "queue",
            RouteGroup::Files => "files",
            RouteGroup::Userdata => "userdata",
            RouteGroup::Catalogue => "catalogue",
            RouteGroup::Socket => "socket",
            RouteGroup::Admin => "admin",
            RouteGroup::Probe => "probe",
            RouteGroup::Static => "static",
        }
    }

    /// The group of a matched route pattern (`None`: no route matched, a
    /// static file or a 404).
    pub fn of_route(pattern: Option<&str>) -> RouteGroup {
        let Some(pattern) = pattern else {
            return RouteGroup::Static;
        };
        let path = pattern.strip_prefix("/api").unwrap_or(pattern);
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "login" | "logout" => RouteGroup::Login,
            "prompt" => RouteGroup::Prompt,
            "queue" | "history" | "jobs" | "interrupt" | "free" => RouteGroup::Queue,
            "view" | "upload" | "internal" => RouteGroup::Files,
            "userdata" | "v2" | "users" | "settings" => RouteGroup::Userdata,
            "ws" => RouteGroup::Socket,
            "admin" => RouteGroup::Admin,
            "health" | "ready" | "metrics" => RouteGroup::Probe,
            "" | "index.html" | "templates" => RouteGroup::Static,
            _ => RouteGroup::Catalogue,
        }
    }
}

impl Metrics {
    /// One attempt at a job ended: how, how long it waited in the queue
    /// before it was claimed, and how long the attempt ran.
    pub fn job_ended(&self, outcome: JobOutcome, wait: Duration, run: Duration) {
        self.jobs[index_of(&JobOutcome::ALL, outcome)].fetch_add(1, Ordering::Relaxed);
        self.job_wait.observe(wait);
        self.job_run.observe(run);
    }

    /// A job that failed without running (its last attempt lost).
    pub fn job_given_up(&self) {
        self.jobs[index_of(&JobOutcome::ALL, JobOutcome::Failed)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn login(&self, result: LoginResult) {
        self.logins[index_of(&LoginResult::ALL, result)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_answered(&self, group: RouteGroup, latency: Duration) {
        self.http[index_of(&RouteGroup::ALL, group)].observe(latency);
    }

    /// The whole exposition: these counters and `now`'s gauges.
    pub fn render(&self, now: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        family(
            &mut out,
            "comfyume_queue_depth",
            "gauge",
            "Jobs by state: waiting in the queue or running on a backend.",
        );
        sample(
            &mut out,
            "comfyume_queue_depth",
            &[("state", "pending")],
            now.pending as f64,
        );
        sample(
            &mut out,
            "comfyume_queue_depth",
            &[("state", "running")],
            now.running as f64,
        );

        family(
            &mut out,
            "comfyume_jobs_total",
            "counter",
            "Job attempts ended, by outcome.",
        );
        for outcome in JobOutcome::ALL {
            let n = self.jobs[index_of(&JobOutcome::ALL, outcome)].load(Ordering::Relaxed);
            sample(
                &mut out,
                "comfyume_jobs_total",
                &[("outcome", outcome.label())],
                n as f64,
            );
        }
        family(
            &mut out,
            "comfyume_job_wait_seconds",
            "histogram",
            "Time from submission to a backend slot, per attempt.",
        );
        self.job_wait
            .render(&mut out, "comfyume_job_wait_seconds", &[]);
        family(
            &mut out,
            "comfyume_job_run_seconds",
            "histogram",
            "Time on the backend slot, per attempt, outputs copied included.",
        );
        self.job_run
            .render(&mut out, "comfyume_job_run_seconds", &[]);

        family(
            &mut out,
            "comfyume_backend_state",
            "gauge",
            "1 for each backend's current state (ready, busy, starting, unreachable, disabled, draining).",
        );
        for b in &now.backends {
            sample(
                &mut out,
                "comfyume_backend_state",
                &[("backend", &b.name), ("state", &b.state)],
                1.0,
            );
        }
        family(
            &mut out,
            "comfyume_backend_slots",
            "gauge",
            "Job slots of each backend.",
        );
        for b in &now.backends {
            sample(
                &mut out,
                "comfyume_backend_slots",
                &[("backend", &b.name)],
                f64::from(b.slots),
            );
        }
        family(
            &mut out,
            "comfyume_backend_slots_in_use",
            "gauge",
            "Slots of each backend running a job now.",
        );
        for b in &now.backends {
            sample(
                &mut out,
                "comfyume_backend_slots_in_use",
                &[("backend", &b.name)],
                f64::from(b.running),
            );
        }

        family(
            &mut out,
            "comfyume_websockets_connected",
            "gauge",
            "Browser sockets open now.",
        );
        sample(
            &mut out,
            "comfyume_websockets_connected",
            &[],
            now.sockets as f64,
        );

        family(
            &mut out,
            "comfyume_dispatching",
            "gauge",
            "1 on the gateway that dispatches (with several sharing a database, exactly one).",
        );
        sample(
            &mut out,
            "comfyume_dispatching",
            &[],
            f64::from(u8::from(now.dispatching)),
        );
        if let Some(dropped) = now.relay_dropped {
            family(
                &mut out,
                "comfyume_relay_dropped_total",
                "counter",
                "Signals to the other gateways dropped because they were not going out fast enough.",
            );
            sample(
                &mut out,
                "comfyume_relay_dropped_total",
                &[],
                dropped as f64,
            );
        }

        family(
            &mut out,
            "comfyume_logins_total",
            "counter",
            "Login attempts, by result.",
        );
        for result in LoginResult::ALL {
            let n = self.logins[index_of(&LoginResult::ALL, result)].load(Ordering::Relaxed);
            sample(
                &mut out,
                "comfyume_logins_total",
                &[("result", result.label())],
                n as f64,
            );
        }

        family(
            &mut out,
            "comfyume_http_request_duration_seconds",
            "histogram",
            "Time to answer a request, by route group (a socket: to its upgrade).",
        );
        for group in RouteGroup::ALL {
            self.http[index_of(&RouteGroup::ALL, group)].render(
                &mut out,
                "comfyume_http_request_duration_seconds",
                &[("group", group.label())],
            );
        }

        match &now.disk {
            Ok(disk) => {
                family(
                    &mut out,
                    "comfyume_disk_free_bytes",
                    "gauge",
                    "Free space on the data directory's filesystem.",
                );
                sample(&mut out, "comfyume_disk_free_bytes", &[], disk.free as f64);
                family(
                    &mut out,
                    "comfyume_disk_min_free_bytes",
                    "gauge",
                    "The free space kept: below it, uploads, outputs and backups are refused.",
                );
                sample(
                    &mut out,
                    "comfyume_disk_min_free_bytes",
                    &[],
                    disk.min_free as f64,
                );
                family(
                    &mut out,
                    "comfyume_disk_low",
                    "gauge",
                    "1 while free space is below the threshold.",
                );
                sample(
                    &mut out,
                    "comfyume_disk_low",
                    &[],
                    f64::from(u8::from(disk.low())),
                );
            }
            Err(reason) => {
                let _ = writeln!(out, "# disk figures unavailable: {reason}");
            }
        }
        render_backup(&mut out, now.backup.as_ref());

        match &now.process {
            Ok(p) => {
                family(
                    &mut out,
                    "process_resident_memory_bytes",
                    "gauge",
                    "Resident memory size in bytes.",
                );
                sample(
                    &mut out,
                    "process_resident_memory_bytes",
                    &[],
                    p.resident_bytes as f64,
                );
                family(
                    &mut out,
                    "process_cpu_seconds_total",
                    "counter",
                    "Total user and system CPU time spent in seconds.",
                );
                sample(&mut out, "process_cpu_seconds_total", &[], p.cpu_seconds);
                family(
                    &mut out,
                    "process_open_fds",
                    "gauge",
                    "Number of open file descriptors.",
                );
                sample(&mut out, "process_open_fds", &[], p.open_fds as f64);
            }
            // Said in the exposition itself, so a missing series has a
            // reason next to it rather than a silent zero.
            Err(reason) => {
                let _ = writeln!(out, "# process figures unavailable: {reason}");
            }
        }
        out
    }
}

fn render_backup(out: &mut String, status: Option<&crate::backup::BackupStatus>) {
    family(
        out,
        "comfyume_backup_scheduled",
        "gauge",
        "1 when backups run on a schedule ([backup] to is set).",
    );
    sample(
        out,
        "comfyume_backup_scheduled",
        &[],
        f64::from(u8::from(status.is_some())),
    );
    let Some(status) = status else { return };
    family(
        out,
        "comfyume_backup_failing",
        "gauge",
        "1 while the latest backup attempt failed.",
    );
    sample(
        out,
        "comfyume_backup_failing",
        &[],
        f64::from(u8::from(status.failing())),
    );
    family(
        out,
        "comfyume_backup_failures_total",
        "counter",
        "Backups that failed since the server started.",
    );
    sample(
        out,
        "comfyume_backup_failures_total",
        &[],
        status.failures as f64,
    );
    if let Some(s) = &status.last_success {
        family(
            out,
            "comfyume_backup_last_success_timestamp_seconds",
            "gauge",
            "When the last verified backup finished.",
        );
        sample(
            out,
            "comfyume_backup_last_success_timestamp_seconds",
            &[],
            s.at_ms as f64 / 1000.0,
        );
        family(
            out,
            "comfyume_backup_last_size_bytes",
            "gauge",
            "What the last verified backup restores to.",
        );
        sample(
            out,
            "comfyume_backup_last_size_bytes",
            &[],
            s.total_bytes as f64,
        );
        family(
            out,
            "comfyume_backup_last_duration_seconds",
            "gauge",
            "How long the last verified backup took.",
        );
        sample(
            out,
            "comfyume_backup_last_duration_seconds",
            &[],
            s.duration_ms as f64 / 1000.0,
        );
    }
    if let Some(f) = &status.last_failure {
        family(
            out,
            "comfyume_backup_last_failure_timestamp_seconds",
            "gauge",
            "When the last failed backup ended.",
        );
        sample(
            out,
            "comfyume_backup_last_failure_timestamp_seconds",
            &[],
            f.at_ms as f64 / 1000.0,
        );
    }
}

fn index_of<T: PartialEq>(all: &[T], item: T) -> usize {
    all.iter()
        .position(|x| *x == item)
        .expect("every variant is listed in ALL")
}

/// What is read at scrape time rather than counted.
pub struct Gauges {
    pub pending: u64,
    pub running: u64,
    pub backends: Vec<BackendGauge>,
    pub sockets: usize,
    /// This gateway dispatches.
    pub dispatching: bool,
    /// Signals to the other gateways dropped so far; `None`: there are
    /// none (SQLite).
    pub relay_dropped: Option<u64>,
    pub process: Result<ProcessFigures, String>,
    /// The data directory's free space.
    pub disk: Result<crate::disk::DiskState, String>,
    /// `None`: backups are not scheduled.
    pub backup: Option<crate::backup::BackupStatus>,
}

pub struct BackendGauge {
    pub name: String,
    /// Its state's word, as the admin API shows it.
    pub state: String,
    pub slots: u32,
    pub running: u32,
}

/// This process's memory and CPU, as the kernel reports them.
#[derive(Debug, Clone, Copy)]
pub struct ProcessFigures {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: usize,
}

impl ProcessFigures {
    /// Reads `/proc/self` (Linux, where the gateway runs).
    pub fn read() -> Result<ProcessFigures, String> {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
        let resident_bytes = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or("no VmRSS line in /proc/self/status")?;
        let stat = std::fs::read_to_string("/proc/self/stat")
            .map_err(|e| format!("cannot read /proc/self/stat: {e}"))?;
        let cpu_seconds = cpu_seconds_from_stat(&stat, clock_ticks_per_second())
            .ok_or("/proc/self/stat has no CPU times")?;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map_err(|e| format!("cannot list /proc/self/fd: {e}"))?
            .count();
        Ok(ProcessFigures {
            resident_bytes,
            cpu_seconds,
            open_fds,
        })
    }
}

fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// User plus system time from a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from
/// its last `)`: utime and stime are fields 14 and 15.
fn cpu_seconds_from_stat(stat: &str, ticks_per_second: u64) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second.max(1) as f64)
}

/// A fixed-bucket histogram: counts per upper bound, the sum in
/// microseconds, and the count.
struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // Only the first bucket that holds it: cumulated when rendered.
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += n.load(Ordering::Relaxed);
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            sample(out, &bucket, &with_le, cumulative as f64);
        }
        let count = self.count.load(Ordering::Relaxed);
        let mut with_inf = labels.to_vec();
        with_inf.push(("le", "+Inf"));
        sample(out, &bucket, &with_inf, count as f64);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        sample(out, &format!("{name}_sum"), labels, sum);
        sample(out, &format!("{name}_count"), labels, count as f64);
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the text format wants it: backslash, quote and
/// newline escaped (backend names come from the configuration).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges {
            pending: 3,
            running: 1,
            backends: vec![BackendGauge {
                name: "gpu \"one\"".into(),
                state: "busy".into(),
                slots: 2,
                running: 1,
            }],
            sockets: 7,
            dispatching: true,
            relay_dropped: Some(2),
            process: Ok(ProcessFigures {
                resident_bytes: 1024,
                cpu_seconds: 1.5,
                open_fds: 12,
            }),
            disk: Ok(crate::disk::DiskState {
                free: 5_000_000_000,
                min_free: 1_000_000_000,
            }),
            backup: None,
        }
    }

    #[test]
    fn histograms_are_cumulative_and_end_at_the_count() {
        let m = Metrics::default();
        m.job_ended(
            JobOutcome::Completed,
            Duration::from_millis(70),
            Duration::from_secs(3),
        );
        m.job_ended(
            JobOutcome::Failed,
            Duration::from_millis(400),
            Duration::from_secs(4000),
        );
        let text = m.render(&gauges());
        assert!(text.contains("comfyume_job_wait_seconds_bucket{le=\"0.05\"} 0\n"));
        assert!(text.contains("comfyume_job_wait_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("comfyume_job_wait_seconds_bucket{le=\"0.5\"} 2\n"));
        // Past the last bound: only in +Inf.
        assert!(text.contains("comfyume_job_run_seconds_bucket{le=\"1800\"} 1\n"));
        assert!(text.contains("comfyume_job_run_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("comfyume_job_run_seconds_count 2\n"));
        assert!(text.contains("comfyume_job_wait_seconds_sum 0.47\n"));
        assert!(text.contains("comfyume_jobs_total{outcome=\"completed\"} 1\n"));
        assert!(text.contains("comfyume_jobs_total{outcome=\"failed\"} 1\n"));
    }

    #[test]
    fn every_line_is_a_comment_or_a_sample() {
        let m = Metrics::default();
        m.login(LoginResult::RateLimited);
        m.request_answered(RouteGroup::Prompt, Duration::from_micros(800));
        let text = m.render(&gauges());
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(
                series
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic()),
                "{line}"
            );
        }
        assert!(
            text.contains("comfyume_backend_state{backend=\"gpu \\\"one\\\"\",state=\"busy\"} 1\n")
        );
        assert!(text.contains("comfyume_logins_total{result=\"rate_limited\"} 1\n"));
        assert!(text.contains(
            "comfyume_http_request_duration_seconds_bucket{group=\"prompt\",le=\"0.001\"} 1\n"
        ));
        assert!(text.contains("process_resident_memory_bytes 1024\n"));
        assert!(text.contains("comfyume_dispatching 1\n"));
        assert!(text.contains("comfyume_relay_dropped_total 2\n"));
    }

    #[test]
    fn missing_process_figures_say_why() {
        let mut now = gauges();
        now.process = Err("no /proc here".into());
        let text = Metrics::default().render(&now);
        assert!(!text.contains("process_resident_memory_bytes"));
        assert!(text.contains("# process figures unavailable: no /proc here"));
    }

    #[test]
    fn routes_fall_into_groups() {
        let g = |p| RouteGroup::of_route(Some(p));
        assert_eq!(g("/api/prompt"), RouteGroup::Prompt);
        assert_eq!(g("/prompt"), RouteGroup::Prompt);
        assert_eq!(g("/api/history/{prompt_id}"), RouteGroup::Queue);
        assert_eq!(g("/api/jobs/{job_id}/cancel"), RouteGroup::Queue);
        assert_eq!(g("/api/userdata/{file}"), RouteGroup::Userdata);
        assert_eq!(g("/upload/image"), RouteGroup::Files);
        assert_eq!(g("/ws"), RouteGroup::Socket);
        assert_eq!(g("/admin/api/backends"), RouteGroup::Admin);
        assert_eq!(g("/object_info"), RouteGroup::Catalogue);
        assert_eq!(g("/metrics"), RouteGroup::Probe);
        assert_eq!(g("/"), RouteGroup::Static);
        assert_eq!(RouteGroup::of_route(None), RouteGroup::Static);
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as a process may
        // name itself.
        let stat =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 0 0";
        assert_eq!(cpu_seconds_from_stat(stat, 100), Some(3.0));
        assert_eq!(cpu_seconds_from_stat("garbage", 100), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let p = ProcessFigures::read().expect("Linux /proc");
        assert!(p.resident_bytes > 0);
        assert!(p.open_fds > 0);
    }
}
