//! A whole room at once: each figure measured against a baseline taken in
//! the same run on the same machine, and printed as a ratio (absolute
//! numbers only compare within one run).
//!
//! - `memory`: the gateway's resident memory (a `comfyume serve` process)
//!   after 20 participants log in one at a time, and 20, 200 and 1,000 at
//!   once, each loading what the frontend loads at start and keeping `/ws`
//!   open; then after the 1,000 ran 2 jobs each. Baseline: the same
//!   process idle.
//! - `throughput`: jobs per second through one simulator slot with the
//!   queue kept full, through the gateway; baseline: the same simulator
//!   fed directly. The difference per job is the dispatch gap.
//! - `history`: `/api/history?max_items=64`, the frontend's page of
//!   `/api/jobs` and the whole list, for a participant with 10,000 past
//!   jobs; baseline: one with 10.
//! - `submit`: `POST /api/prompt` with 10,000 jobs pending across 1,000
//!   participants; baseline: an empty queue. And the scheduler's pick of
//!   the next jobs with those 10,000 pending; baseline: 100 across 10.
//! - `startup`: start to `/ready` with 10,000 accounts and 100,000 past
//!   jobs; baseline: an empty database.
//!
//! - `view`: four `/view` downloads at once of a participant's 256 MiB
//!   output from a `comfyume serve` process: the process's peak resident
//!   memory above idle (baseline: the bytes it sends), and the time they
//!   take (baseline: reading the same file four times at once straight
//!   from the disk).
//!
//! Run: `cargo bench --bench room` (every section) or
//! `cargo bench --bench room -- memory history` (some). BENCHMARKS.md holds
//! the latest figures.

// The allocator `comfyume` ships with (main.rs), so the figures are the
// product's.
#[global_allocator]
static ALLOCATOR: comfyume::allocator::Allocator = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use comfyume::app::AppState;
use comfyume::backend::Backend;
use comfyume::config::{BackendConfig, BackendKind, Config};
use comfyume::store::{Finish, NewJob, Store};
use comfyume_domain::{JobId, JobState, Password, Role, UserId, UserName};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    // `COMFYUME_LOG=comfyume::phase=debug` shows where each job's time went.
    if std::env::var_os("COMFYUME_LOG").is_some() {
        comfyume::telemetry::init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        println!(
            "machine: {} cores",
            std::thread::available_parallelism().map_or(1, usize::from)
        );
        if runs("memory") {
            memory().await;
        }
        if runs("throughput") {
            throughput().await;
        }
        if runs("history") {
            history().await;
        }
        if runs("submit") {
            submit().await;
        }
        if runs("startup") {
            startup().await;
        }
        if runs("dashboard") {
            dashboard().await;
        }
        if runs("view") {
            view().await;
        }
    });
}

// --- shared set-up --------------------------------------------------------

/// A 3-node prompt; `i` changes its colour so no cache answers it.
fn prompt(i: usize) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": i % 0xFFFFFF}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
    })
}

async fn start_sim() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(comfyume_sim::run(listener, std::future::pending()));
    url
}

/// The one file the gateway needs of a frontend (no page is loaded here).
fn stand_in_frontend(dir: &Path) -> PathBuf {
    let frontend = dir.join("frontend");
    std::fs::create_dir_all(&frontend).expect("a folder");
    std::fs::write(frontend.join("index.html"), "<!doctype html>").expect("a file");
    frontend
}

fn config(dir: &Path, backend_url: &str) -> Config {
    let mut config = Config {
        data_dir: dir.join("data"),
        frontend_dir: stand_in_frontend(dir),
        backends: vec![BackendConfig::new(
            "sim",
            BackendKind::Sim,
            backend_url.to_string(),
            1,
        )],
        ..Config::default()
    };
    config.auth.secure_cookies = false;
    config.limits.max_pending_per_user = 1_000_000;
    config
}

/// A gateway in this process; its address and state.
async fn gateway(config: Config) -> (String, AppState) {
    let http = Backend::http_client().expect("an HTTP client");
    let backends = config
        .backends
        .iter()
        .map(|b| Backend::new(b, http.clone()).expect("a backend"))
        .collect();
    let state = AppState::build(config, backends)
        .await
        .expect("the gateway starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(comfyume::server::run(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (url, state)
}

/// Logs in; the session cookie.
async fn login(client: &reqwest::Client, url: &str, user: &str, password: &str) -> String {
    // Generated names and passwords are letters, digits and dashes: no
    // escaping needed.
    let body = format!("username={user}&password={password}");
    let r = client
        .post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("the login answers");
    assert_eq!(r.status(), 303, "login of {user}");
    r.headers()["set-cookie"]
        .to_str()
        .expect("a cookie")
        .split(';')
        .next()
        .expect("a cookie")
        .to_string()
}

fn with_cookie(cookie: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(
            std::iter::once((reqwest::header::COOKIE, cookie.parse().expect("a header"))).collect(),
        )
        .build()
        .expect("a client")
}

async fn open_socket(url: &str, cookie: Option<&str>) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("a socket URL");
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("cookie", c.parse().expect("a header"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the socket opens");
    let _status = ws.next().await;
    ws.send(Message::Text(
        json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}})
            .to_string()
            .into(),
    ))
    .await
    .expect("the socket takes a frame");
    let _flags = ws.next().await;
    ws
}

/// Waits on `ws` until every prompt in `ids` has its final `executing`.
async fn wait_all_done(ws: &mut Socket, mut left: std::collections::HashSet<String>) {
    while !left.is_empty() {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if v["type"] == "executing" && v["data"]["node"].is_null() {
                    if let Some(id) = v["data"]["prompt_id"].as_str() {
                        left.remove(id);
                    }
                }
            }
            Some(Ok(_)) => {}
            _ => panic!("the socket closed with {} prompts left", left.len()),
        }
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A configuration for a `comfyume serve` process in `dir`, on a free
/// port, with `auth` as its `[auth]` section and `sim` as its backend; the
/// file and the URL the process will serve.
fn serve_config(dir: &Path, sim: &str, auth: &str) -> (PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config_file = dir.join("comfyume.toml");
    std::fs::write(
        &config_file,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nfrontend_dir = {:?}\n\n[auth]\n{auth}\n\n[[backends]]\nname = \"sim\"\nkind = \"sim\"\nurl = \"{sim}\"\nslots = 1\n",
            dir.join("data"),
            stand_in_frontend(dir),
        ),
    )
    .expect("the config");
    (config_file, format!("http://127.0.0.1:{port}"))
}

/// Starts `comfyume serve` on `config_file` and waits until `url`
/// answers `/ready`.
async fn serve(config_file: &Path, url: &str) -> std::process::Child {
    let server = std::process::Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .arg("--config")
        .arg(config_file)
        .arg("serve")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let probe = reqwest::Client::new();
    while !probe
        .get(format!("{url}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        // Polling a process we do not own: nothing to wait on but its answer.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

/// `VmRSS` or `VmHWM` of a process, in bytes.
fn memory_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("the field")
}

// --- memory -----------------------------------------------------------------

/// How the participants of a memory scenario arrive.
#[derive(Clone, Copy, PartialEq)]
enum Arrival {
    /// Everyone at once: the start of a workshop.
    Storm,
    /// One after another: the plateau of a quiet room.
    OneAtATime,
}

async fn memory() {
    println!("\n## memory: a `comfyume serve` process as a room arrives");
    let sim = start_sim().await;
    // (participants, how they arrive, jobs each runs after arriving)
    let scenarios = [
        (20usize, Arrival::OneAtATime, 0usize),
        (20, Arrival::Storm, 0),
        (200, Arrival::Storm, 0),
        (1000, Arrival::Storm, 2),
    ];
    for (participants, arrival, jobs) in scenarios {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (config_file, url) = serve_config(dir.path(), &sim, "secure_cookies = false");
        let bin = env!("CARGO_BIN_EXE_comfyume");
        let creds = dir.path().join("creds.csv");
        let import = std::process::Command::new(bin)
            .arg("--config")
            .arg(&config_file)
            .args([
                "users",
                "import",
                "--count",
                &participants.to_string(),
                "--prefix",
                "p",
            ])
            .arg("--out")
            .arg(&creds)
            .output()
            .expect("users import runs");
        assert!(
            import.status.success(),
            "{}",
            String::from_utf8_lossy(&import.stderr)
        );
        let accounts: Vec<(String, String)> = std::fs::read_to_string(&creds)
            .expect("the sheet")
            .lines()
            .skip(1)
            .map(|l| {
                let mut f = l.split(',');
                (f.next().unwrap().to_string(), f.next().unwrap().to_string())
            })
            .collect();
        let mut server = serve(&config_file, &url).await;
        let idle = memory_of(server.id(), "VmRSS:");
        let started = Instant::now();
        let mut sockets = Vec::new();
        let mut logins = Vec::new();
        let mut arrived = |(tab, cookie, ws, login_took)| {
            sockets.push((tab, cookie, ws));
            logins.push(login_took);
        };
        match arrival {
            Arrival::Storm => {
                let arrivals = accounts.into_iter().map(|(user, password)| {
                    let url = url.clone();
                    tokio::spawn(async move { arrive(&url, &user, &password).await })
                });
                for participant in futures_util::future::join_all(arrivals).await {
                    arrived(participant.expect("a participant arrives"));
                }
            }
            Arrival::OneAtATime => {
                for (user, password) in accounts {
                    arrived(arrive(&url, &user, &password).await);
                }
            }
        }
        logins.sort();
        let took = started.elapsed();
        let after = memory_of(server.id(), "VmRSS:");
        let peak = memory_of(server.id(), "VmHWM:");
        let how = match arrival {
            Arrival::Storm => "at once",
            Arrival::OneAtATime => "one at a time",
        };
        println!(
            "{participants:>5} participants {how}: in {:.1} s; RSS idle {:.1} MiB, after {:.1} MiB ({:.2}x idle, {:.0} KiB each), peak {:.1} MiB",
            took.as_secs_f64(),
            mib(idle),
            mib(after),
            after as f64 / idle as f64,
            (after.saturating_sub(idle)) as f64 / 1024.0 / participants as f64,
            mib(peak),
        );
        println!(
            "      a login's answer: median {:.0} ms, p90 {:.0} ms, slowest {:.0} ms",
            ms(logins[logins.len() / 2]),
            ms(logins[logins.len() * 9 / 10]),
            ms(logins[logins.len() - 1]),
        );
        if jobs > 0 {
            let runs = sockets.into_iter().map(|(tab, cookie, mut ws)| {
                let url = url.clone();
                tokio::spawn(async move {
                    let http = with_cookie(&cookie);
                    let mut ids = std::collections::HashSet::new();
                    for i in 0..jobs {
                        let r: Value = http
                            .post(format!("{url}/api/prompt"))
                            .json(&json!({"prompt": prompt(i), "client_id": tab}))
                            .send()
                            .await
                            .expect("an answer")
                            .json()
                            .await
                            .expect("json");
                        ids.insert(r["prompt_id"].as_str().expect("queued").to_string());
                    }
                    wait_all_done(&mut ws, ids).await;
                    (tab, cookie, ws)
                })
            });
            let ran = Instant::now();
            sockets = futures_util::future::join_all(runs)
                .await
                .into_iter()
                .map(|r| r.expect("a participant's jobs end"))
                .collect();
            let after_jobs = memory_of(server.id(), "VmRSS:");
            println!(
                "{participants:>5} participants then ran {jobs} jobs each: in {:.1} s; RSS {:.1} MiB ({:.2}x idle), peak {:.1} MiB",
                ran.elapsed().as_secs_f64(),
                mib(after_jobs),
                after_jobs as f64 / idle as f64,
                mib(memory_of(server.id(), "VmHWM:")),
            );
        }
        drop(sockets);
        let _ = server.kill();
        let _ = server.wait();
    }
}

/// A participant arriving: logs in, makes the frontend's start-up calls and
/// keeps `/ws` open. Returns their tab's client id, session cookie and
/// socket, and how long the login itself took.
async fn arrive(url: &str, user: &str, password: &str) -> (String, String, Socket, Duration) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let logging_in = Instant::now();
    let cookie = login(&client, url, user, password).await;
    let login_took = logging_in.elapsed();
    let http = with_cookie(&cookie);
    for path in [
        "/api/users",
        "/api/settings",
        "/api/object_info",
        "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true",
        "/api/extensions",
        "/api/workflow_templates",
    ] {
        let r = http
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("an answer");
        // A new participant has no workflows folder yet: 404, as in ComfyUI.
        let fine = r.status().is_success() || (path.contains("dir=workflows") && r.status() == 404);
        assert!(fine, "{path}: {}", r.status());
        let _ = r.bytes().await;
    }
    let ws_url = format!("{}/ws?clientId={user}-tab", url.replace("http", "ws"));
    let ws = open_socket(&ws_url, Some(&cookie)).await;
    (format!("{user}-tab"), cookie, ws, login_took)
}

// --- throughput -------------------------------------------------------------

async fn throughput() {
    const JOBS: usize = 300;
    println!("\n## throughput: {JOBS} jobs queued at once on one simulator slot");
    let sim = start_sim().await;
    let client = reqwest::Client::new();
    // Direct: the simulator's own rate with its queue full.
    let mut ws = open_socket(
        &format!("{}/ws?clientId=direct", sim.replace("http", "ws")),
        None,
    )
    .await;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut ids = std::collections::HashSet::new();
    for i in 0..JOBS {
        let r: Value = client
            .post(format!("{sim}/prompt"))
            .json(&json!({"prompt": prompt(i), "client_id": "direct"}))
            .send()
            .await
            .expect("the simulator answers")
            .json()
            .await
            .expect("JSON");
        ids.insert(r["prompt_id"].as_str().expect("a prompt id").to_string());
    }
    wait_all_done(&mut ws, ids).await;
    let direct = started.elapsed();
    let direct_cpu = cpu_seconds() - cpu_before;
    // Unread, it would fill with the simulator's queue status and stall it.
    drop(ws);
    let rate = |d: Duration| JOBS as f64 / d.as_secs_f64();
    // The simulator, the gateway and this client share the machine's
    // cores: CPU time per job says how much of the gap is work, not wait.
    let cpu_ms = |s: f64| s * 1000.0 / JOBS as f64;
    println!(
        "direct to the simulator: {:.0} jobs/s ({:.2} ms each, {:.2} ms of CPU each)",
        rate(direct),
        ms(direct) / JOBS as f64,
        cpu_ms(direct_cpu),
    );
    for queue_ahead in [false, true] {
        let cpu_before = cpu_seconds();
        let through = through_gateway(&sim, JOBS, queue_ahead).await;
        let cpu = cpu_seconds() - cpu_before;
        println!(
            "through the gateway, queue_ahead = {queue_ahead}: {:.0} jobs/s ({:.2} ms each, {:.2} ms of CPU each); \
             ratio {:.2}; dispatch gap (the gateway's time per job beyond the backend's): {:.2} ms",
            rate(through),
            ms(through) / JOBS as f64,
            cpu_ms(cpu),
            rate(through) / rate(direct),
            (ms(through) - ms(direct)) / JOBS as f64,
        );
    }
}

/// CPU seconds this process (simulator, gateway and client) has used.
fn cpu_seconds() -> f64 {
    comfyume::metrics::ProcessFigures::read()
        .expect("/proc/self is readable")
        .cpu_seconds
}

/// How long `jobs` jobs queued at once by one participant take through a
/// fresh gateway on the simulator at `sim`.
async fn through_gateway(sim: &str, jobs: usize, queue_ahead: bool) -> Duration {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut config = config(dir.path(), sim);
    config.dispatch.queue_ahead = queue_ahead;
    let (url, state) = gateway(config).await;
    let name = UserName::parse("bench").expect("a name");
    state
        .accounts
        .create_user(&name, &Password::new("bench-password"), Role::Participant)
        .await
        .expect("an account");
    let cookie = login(
        &reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client"),
        &url,
        "bench",
        "bench-password",
    )
    .await;
    let http = with_cookie(&cookie);
    let mut ws = open_socket(
        &format!("{}/ws?clientId=gw", url.replace("http", "ws")),
        Some(&cookie),
    )
    .await;
    // Prompts the simulator has not seen (it caches like ComfyUI).
    let first = if queue_ahead { 20_000 } else { 10_000 };
    let started = Instant::now();
    let mut ids = std::collections::HashSet::new();
    for i in 0..jobs {
        let r: Value = http
            .post(format!("{url}/api/prompt"))
            .json(&json!({"prompt": prompt(first + i), "client_id": "gw"}))
            .send()
            .await
            .expect("the gateway answers")
            .json()
            .await
            .expect("JSON");
        ids.insert(
            r["prompt_id"]
                .as_str()
                .unwrap_or_else(|| panic!("refused: {r}"))
                .to_string(),
        );
    }
    wait_all_done(&mut ws, ids).await;
    started.elapsed()
}

// --- history ------------------------------------------------------------------

/// `n` finished jobs of `owner`, written through the store as runs do.
async fn past_jobs(store: &Store, owner: UserId, n: usize) {
    for i in 0..n {
        let id = JobId::default();
        store
            .insert_job(
                NewJob {
                    id,
                    owner,
                    number: None,
                    front: false,
                    prompt: prompt(i),
                    extra_data: json!({"client_id": "tab", "create_time": 1}),
                    outputs_to_execute: vec!["3".into()],
                    partial_targets: None,
                    workflow_id: None,
                    created_at: 1_700_000_000_000 + i as i64,
                },
                u32::MAX,
            )
            .await
            .expect("a job");
        store
            .claim_job(&id, "sim", 0, 1_700_000_000_000 + i as i64)
            .await
            .expect("claimed");
        let mut outputs = serde_json::Map::new();
        outputs.insert(
            "3".into(),
            json!({"images": [{"filename": format!("bench_{i:05}_.png"), "subfolder": "", "type": "output"}]}),
        );
        store
            .finish_job(
                &id,
                1,
                &Finish {
                    state: JobState::Completed,
                    outputs,
                    meta: serde_json::Map::new(),
                    messages: vec![
                        json!(["execution_start", {"prompt_id": id.to_string(), "timestamp": 1}]),
                        json!(["execution_success", {"prompt_id": id.to_string(), "timestamp": 2}]),
                    ],
                    error: None,
                    finished_at: 1_700_000_000_100 + i as i64,
                },
            )
            .await
            .expect("finished");
    }
}

async fn history() {
    println!("\n## history: a participant's past jobs");
    let sim = start_sim().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (url, state) = gateway(config(dir.path(), &sim)).await;
    let mut clients = Vec::new();
    for (name, jobs) in [("few", 10usize), ("many", 10_000)] {
        let user = state
            .accounts
            .create_user(
                &UserName::parse(name).expect("a name"),
                &Password::new("bench-password"),
                Role::Participant,
            )
            .await
            .expect("an account");
        past_jobs(&state.store, user.id, jobs).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        clients.push((
            jobs,
            with_cookie(&login(&client, &url, name, "bench-password").await),
        ));
    }
    // As the frontend asks: its history sidebar's page, and the whole list.
    for path in [
        "/api/history?max_items=64",
        "/api/jobs?status=completed,failed,cancelled&limit=64&offset=0",
        "/api/jobs?sort_by=execution_duration&limit=64",
        "/api/queue",
        "/api/jobs",
    ] {
        let mut medians = Vec::new();
        for (_, http) in &clients {
            let mut times = Vec::new();
            for _ in 0..20 {
                let started = Instant::now();
                let r = http
                    .get(format!("{url}{path}"))
                    .send()
                    .await
                    .expect("an answer");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.expect("a body");
                times.push(started.elapsed());
            }
            medians.push(median(times));
        }
        println!(
            "{path:<64} 10 past jobs: {:.2} ms; 10,000 past jobs: {:.2} ms; ratio {:.1}",
            ms(medians[0]),
            ms(medians[1]),
            ms(medians[1]) / ms(medians[0]),
        );
    }
}

// --- submit and pick-next ---------------------------------------------------------

async fn submit() {
    use comfyume_scheduler::{BackendId, FairShare, OrderKey, PendingJob, RunningCounts, Slot};
    println!("\n## submit: POST /api/prompt with the queue empty and with 10,000 pending");
    // A backend that never answers: nothing leaves the queue while it is measured.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let nowhere = format!("http://{}", closed.local_addr().expect("an address"));
    drop(closed);
    let mut per_submit = Vec::new();
    for pending in [0usize, 10_000] {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = config(dir.path(), &nowhere);
        // The catalogue the simulator would give, so prompts validate.
        let sim = start_sim().await;
        config
            .backends
            .push(BackendConfig::new("catalogue", BackendKind::Sim, sim, 1));
        config.backends[1].group = Some("off".into());
        config.backends[0].group = Some("on".into());
        let (url, state) = gateway(config).await;
        // Work goes only to the backend that never answers.
        assert!(state.dispatcher.use_group(Some("on".into())));
        for u in 0..pending.div_ceil(10) {
            let user = state
                .store
                .create_user(
                    &UserName::parse(&format!("queued{u}")).expect("a name"),
                    "unused-hash",
                    Role::Participant,
                    0,
                )
                .await
                .expect("an account");
            for j in 0..10 {
                state
                    .store
                    .insert_job(
                        NewJob {
                            id: JobId::default(),
                            owner: user.id,
                            number: None,
                            front: false,
                            prompt: prompt(u * 10 + j),
                            extra_data: json!({}),
                            outputs_to_execute: vec!["3".into()],
                            partial_targets: None,
                            workflow_id: None,
                            created_at: 1,
                        },
                        u32::MAX,
                    )
                    .await
                    .expect("a job");
            }
        }
        state
            .accounts
            .create_user(
                &UserName::parse("bench").expect("a name"),
                &Password::new("bench-password"),
                Role::Participant,
            )
            .await
            .expect("an account");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        let http = with_cookie(&login(&client, &url, "bench", "bench-password").await);
        let mut times = Vec::new();
        for i in 0..100 {
            let started = Instant::now();
            let r = http
                .post(format!("{url}/api/prompt"))
                .json(&json!({"prompt": prompt(50_000 + i), "client_id": "tab"}))
                .send()
                .await
                .expect("an answer");
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await;
            times.push(started.elapsed());
        }
        per_submit.push(median(times));
    }
    println!(
        "submit median: empty queue {:.2} ms; 10,000 pending {:.2} ms; ratio {:.2}",
        ms(per_submit[0]),
        ms(per_submit[1]),
        ms(per_submit[1]) / ms(per_submit[0]),
    );

    // The scheduler alone: which pending jobs go to 4 free slots.
    let slots: Vec<Slot> = (0..4)
        .map(|i| Slot::new(BackendId::new("gpu"), i))
        .collect();
    let mut picks = Vec::new();
    for (jobs, users) in [(100usize, 10i64), (10_000, 1000)] {
        let pending: Vec<PendingJob> = (0..jobs)
            .map(|i| {
                PendingJob::new(
                    JobId::default(),
                    UserId(i as i64 % users),
                    false,
                    OrderKey::new(i as f64, i as u64),
                )
            })
            .collect();
        let share = FairShare::new();
        let running = RunningCounts::new();
        let mut times = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            let plan = comfyume_scheduler::plan(&pending, &running, &share, &slots, 1);
            times.push(started.elapsed());
            assert_eq!(plan.len(), 4);
        }
        picks.push(median(times));
    }
    println!(
        "scheduler pick-next for 4 slots: 100 pending/10 users {:.3} ms; 10,000 pending/1,000 users {:.3} ms; ratio {:.1}",
        ms(picks[0]),
        ms(picks[1]),
        ms(picks[1]) / ms(picks[0]),
    );
}

// --- startup ----------------------------------------------------------------------

async fn startup() {
    println!("\n## startup: to /ready with 10,000 accounts and 100,000 past jobs");
    let sim = start_sim().await;
    let mut times = Vec::new();
    for (accounts, jobs_each) in [(0usize, 0usize), (10_000, 10)] {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = config(dir.path(), &sim);
        {
            std::fs::create_dir_all(&config.data_dir).expect("a folder");
            let store = Store::connect(config.database_url().expose())
                .await
                .expect("a database");
            let hash = password_hash();
            for u in 0..accounts {
                let user = store
                    .create_user(
                        &UserName::parse(&format!("p{u:05}")).expect("a name"),
                        &hash,
                        Role::Participant,
                        0,
                    )
                    .await
                    .expect("an account");
                past_jobs(&store, user.id, jobs_each).await;
            }
            store.close().await;
        }
        let started = Instant::now();
        let (url, _state) = gateway(config).await;
        let probe = reqwest::Client::new();
        loop {
            let r = probe
                .get(format!("{url}/ready"))
                .send()
                .await
                .expect("an answer");
            if r.status() == 200 {
                break;
            }
        }
        times.push(started.elapsed());
    }
    println!(
        "start to ready: empty {:.1} ms; 10,000 accounts and 100,000 jobs {:.1} ms; ratio {:.2}",
        ms(times[0]),
        ms(times[1]),
        ms(times[1]) / ms(times[0]),
    );
}

// --- the instructor's dashboard ------------------------------------------------

/// One look at the room (what each open dashboard computes after a change)
/// and the delta it sends, for a small room and for 500 participants with
/// 20 past jobs each and 50 backends.
async fn dashboard() {
    println!("\n## dashboard: one look at the room, and the delta after one change");
    let sim = start_sim().await;
    let mut looks = Vec::new();
    for (participants, backends) in [(10usize, 1usize), (500, 50)] {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = config(dir.path(), &sim);
        // The other backends are configured but never answer.
        for b in 1..backends {
            config.backends.push(BackendConfig::new(
                format!("gpu-{b:02}"),
                BackendKind::Comfyui,
                "http://127.0.0.1:9".to_string(),
                1,
            ));
        }
        let (_url, state) = gateway(config).await;
        let hash = password_hash();
        for u in 0..participants {
            let user = state
                .store
                .create_user(
                    &UserName::parse(&format!("p{u:03}")).expect("a name"),
                    &hash,
                    Role::Participant,
                    0,
                )
                .await
                .expect("an account");
            past_jobs(&state.store, user.id, 20).await;
        }
        let mut times = Vec::new();
        let mut delta_bytes = 0;
        for _ in 0..20 {
            let before = state.room.look().await.expect("a look");
            let started = Instant::now();
            let after = state.room.look().await.expect("a look");
            times.push(started.elapsed());
            delta_bytes = after.delta_from(&before).to_string().len();
        }
        let first = state
            .room
            .look()
            .await
            .expect("a look")
            .delta_from(&Default::default())
            .to_string()
            .len();
        println!(
            "{participants} participants, {backends} backends, {} past jobs: a look {:.2} ms (median of 20); the first event {} KB, an unchanged room's {} bytes",
            participants * 20,
            ms(median(times.clone())),
            first / 1024,
            delta_bytes
        );
        looks.push(median(times));
    }
    println!(
        "ratio (500 participants and 50 backends / 10 and 1): {:.1}",
        ms(looks[1]) / ms(looks[0])
    );
}

/// One real hash, shared by the bulk accounts (only its shape matters).
fn password_hash() -> String {
    password_auth::generate_hash("bench-password")
}

// --- view -------------------------------------------------------------------

/// Four downloads at once of a 256 MiB output through `/view`: streamed,
/// the gateway holds a few chunks of each, not the file.
async fn view() {
    println!("\n## view: four downloads at once of a 256 MiB output");
    const SIZE: usize = 256 * 1024 * 1024;
    const DOWNLOADS: usize = 4;
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = dir.path().join("data/users/default/output");
    std::fs::create_dir_all(&output).expect("a folder");
    // Not compressible, not all one page: what a video output is like.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let file = output.join("big.mp4");
    std::fs::write(&file, &bytes).expect("the output");
    std::fs::write(output.join("small.png"), b"png").expect("a small output");
    drop(bytes);
    let sim = start_sim().await;
    let (config_file, url) = serve_config(dir.path(), &sim, "mode = \"none\"");
    let mut server = serve(&config_file, &url).await;
    let http = reqwest::Client::new();
    let small = http
        .get(format!("{url}/api/view?filename=small.png&type=output"))
        .send()
        .await
        .expect("a small view");
    assert_eq!(small.status(), 200);
    let idle = memory_of(server.id(), "VmRSS:");

    let started = Instant::now();
    let downloads = (0..DOWNLOADS).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let mut r = http
                .get(format!("{url}/api/view?filename=big.mp4&type=output"))
                .send()
                .await
                .expect("a view");
            assert_eq!(r.status(), 200);
            let mut got = 0usize;
            while let Some(chunk) = r.chunk().await.expect("the body") {
                got += chunk.len();
            }
            got
        })
    });
    for got in futures_util::future::join_all(downloads).await {
        assert_eq!(got.expect("a download"), SIZE, "every byte came");
    }
    let through_gateway = started.elapsed();
    let peak = memory_of(server.id(), "VmHWM:");
    let _ = server.kill();
    let _ = server.wait();

    let started = Instant::now();
    let reads = (0..DOWNLOADS).map(|_| {
        let file = file.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut f = tokio::fs::File::open(&file).await.expect("the file");
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0usize;
            loop {
                let n = f.read(&mut buf).await.expect("a read");
                if n == 0 {
                    break got;
                }
                got += n;
            }
        })
    });
    for got in futures_util::future::join_all(reads).await {
        assert_eq!(got.expect("a read"), SIZE);
    }
    let straight = started.elapsed();

    let sent = (SIZE * DOWNLOADS) as u64;
    let growth = peak.saturating_sub(idle);
    println!(
        "peak memory above idle: {:.1} MiB while sending {:.0} MiB = {:.4}× the bytes sent (idle {:.1} MiB)",
        mib(growth),
        mib(sent),
        growth as f64 / sent as f64,
        mib(idle)
    );
    println!(
        "time: {:.0} ms through /view, {:.0} ms reading the file straight = {:.2}×",
        ms(through_gateway),
        ms(straight),
        through_gateway.as_secs_f64() / straight.as_secs_f64()
    );
}
