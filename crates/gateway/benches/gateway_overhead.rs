//! Gateway overhead: the same prompt submitted directly to a simulator and
//! through the gateway to that simulator, timed from the submit request to
//! the prompt's final `executing` frame on the submitter's socket (outputs
//! copied included). Prints the median and p99 of both paths and their
//! ratio, measured in one run on this machine.
//!
//! Run: `cargo bench --bench gateway_overhead -- [RUNS]` (default 200):
//! against the built-in simulator, then against a stock ComfyUI v0.33.0 on
//! the CPU, started (and stopped) with `../shared/tools/comfyui-cpu` when
//! that tool is beside the repository; `COMFYUI_URL=http://127.0.0.1:PORT`
//! names a running ComfyUI to use instead.

// The allocator `comfyume` ships with (main.rs), so the figures are the
// product's.
#[global_allocator]
static ALLOCATOR: comfyume::allocator::Allocator = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use comfyume::app::AppState;
use comfyume::backend::Backend;
use comfyume::config::{BackendConfig, BackendKind, Config};
use comfyume_domain::{Password, Role, UserName};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn prompt(i: usize) -> Value {
    // A different colour each run, so the backend's cache never answers.
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": i % 0xFFFFFF}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
    })
}

async fn wait_done(ws: &mut Socket, prompt_id: &str) {
    while let Some(Ok(frame)) = ws.next().await {
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            if v["type"] == "executing"
                && v["data"]["node"].is_null()
                && v["data"]["prompt_id"] == prompt_id
            {
                return;
            }
        }
    }
    panic!("the socket closed before prompt {prompt_id} finished");
}

async fn open_socket(url: &str, cookie: Option<&str>) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let _hello = ws.next().await;
    ws.send(Message::Text(
        json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let _flags = ws.next().await;
    ws
}

/// One prompt's times: until the submit is answered, and until its final
/// frame.
struct Timing {
    answered: Duration,
    done: Duration,
}

/// Times `runs` prompts through one path.
async fn measure(
    http: &reqwest::Client,
    ws: &mut Socket,
    submit_url: &str,
    client_id: &str,
    runs: usize,
    offset: usize,
) -> Vec<Timing> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let start = Instant::now();
        let r: Value = http
            .post(submit_url)
            .json(&json!({"prompt": prompt(offset + i), "client_id": client_id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let answered = start.elapsed();
        let id = r["prompt_id"]
            .as_str()
            .unwrap_or_else(|| panic!("submit failed: {r}"))
            .to_string();
        wait_done(ws, &id).await;
        times.push(Timing {
            answered,
            done: start.elapsed(),
        });
    }
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let (median, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "{name:<28} median {:>8.2} ms   p99 {:>8.2} ms   (n = {})",
        ms(median),
        ms(p99),
        times.len()
    );
    (median, p99)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    // `COMFYUME_LOG=comfyume::phase=debug` shows where each job's time went.
    if std::env::var_os("COMFYUME_LOG").is_some() {
        comfyume::telemetry::init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sim_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_addr = sim_listener.local_addr().unwrap();
        tokio::spawn(comfyume_sim::run(sim_listener, std::future::pending()));
        compare(sim_addr.to_string(), BackendKind::Sim, runs).await;

        // Then a stock ComfyUI: the one COMFYUI_URL names, else one started
        // here with the workspace's comfyui-cpu tool, when it is there.
        if let Ok(url) = std::env::var("COMFYUI_URL") {
            let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
            compare(addr, BackendKind::Comfyui, runs).await;
            return;
        }
        match StockComfyUi::start() {
            Ok(Some(comfy)) => compare(comfy.addr.clone(), BackendKind::Comfyui, runs).await,
            Ok(None) => println!(
                "\nstock ComfyUI: skipped ({TOOL} is not here; set COMFYUI_URL to measure against a running one)"
            ),
            Err(why) => println!("\nstock ComfyUI: skipped, it did not start: {why}"),
        }
    });
}

/// The tool that runs a stock ComfyUI v0.33.0 on the CPU, beside the
/// repository (see the README's benchmarks).
const TOOL: &str = "../shared/tools/comfyui-cpu";

/// A stock ComfyUI this benchmark started; stopped when dropped.
struct StockComfyUi {
    tool: std::path::PathBuf,
    pid: String,
    addr: String,
}

impl StockComfyUi {
    /// Starts one on a free port (15-20 s; the tool installs ComfyUI on its
    /// first use, which takes minutes). `None` when the tool is absent.
    fn start() -> Result<Option<Self>, String> {
        let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(TOOL);
        if !tool.exists() {
            return Ok(None);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        println!("\nstarting a stock ComfyUI on port {port} with {TOOL} ...");
        let out = std::process::Command::new(&tool)
            .args(["start", &port.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("{TOOL} could not run: {e}"))?;
        if !out.status.success() {
            return Err(format!("{TOOL} start exited with {}", out.status));
        }
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(Some(Self {
            tool,
            pid,
            addr: format!("127.0.0.1:{port}"),
        }))
    }
}

impl Drop for StockComfyUi {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.tool)
            .args(["stop", &self.pid])
            .status();
    }
}

/// Times the prompt directly against the backend at `backend_addr` and
/// through a gateway in front of it, interleaved, and prints both.
async fn compare(backend_addr: String, kind: BackendKind, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    // The gateway needs a frontend folder to start; the benchmark never
    // loads a page, so a one-file stand-in will do.
    let frontend = dir.path().join("frontend");
    std::fs::create_dir_all(&frontend).unwrap();
    std::fs::write(frontend.join("index.html"), "<!doctype html>").unwrap();

    let backend_name = if kind == BackendKind::Sim {
        "the simulator"
    } else {
        "stock ComfyUI"
    };

    let mut config = Config {
        data_dir: dir.path().join("data"),
        frontend_dir: frontend,
        backends: vec![BackendConfig::new(
            "backend",
            kind,
            format!("http://{backend_addr}"),
            1,
        )],
        ..Config::default()
    };
    config.auth.secure_cookies = false;
    config.limits.max_pending_per_user = 1_000_000;
    let http = Backend::http_client().expect("an HTTP client");
    let backends = config
        .backends
        .iter()
        .map(|b| Backend::new(b, http.clone()).unwrap())
        .collect();
    let state = AppState::build(config, backends).await.unwrap();
    let name = UserName::parse("bench").unwrap();
    state
        .accounts
        .create_user(&name, &Password::new("bench-password"), Role::Participant)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = listener.local_addr().unwrap();
    tokio::spawn(comfyume::server::run(
        listener,
        state,
        std::future::pending(),
    ));

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("http://{gw_addr}/login"))
        .form(&[("username", "bench"), ("password", "bench-password")])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let gw_http = reqwest::Client::builder()
        .default_headers(
            std::iter::once((reqwest::header::COOKIE, cookie.parse().unwrap())).collect(),
        )
        .build()
        .unwrap();

    let mut direct_ws = open_socket(
        &format!("ws://{backend_addr}/ws?clientId=bench-direct"),
        None,
    )
    .await;
    let mut gw_ws = open_socket(
        &format!("ws://{gw_addr}/ws?clientId=bench-gw"),
        Some(&cookie),
    )
    .await;
    let direct_url = format!("http://{backend_addr}/prompt");
    let gw_url = format!("http://{gw_addr}/api/prompt");

    // Warm both paths (connections, caches of the node catalogue).
    measure(&client, &mut direct_ws, &direct_url, "bench-direct", 10, 0).await;
    measure(&gw_http, &mut gw_ws, &gw_url, "bench-gw", 10, 100).await;

    // Interleave the two paths in blocks so drift in machine load hits both.
    let (mut direct, mut gateway) = (Vec::new(), Vec::new());
    let block = 20.min(runs.max(1));
    let mut done = 0;
    while done < runs {
        let n = block.min(runs - done);
        direct.extend(
            measure(
                &client,
                &mut direct_ws,
                &direct_url,
                "bench-direct",
                n,
                10_000 + done,
            )
            .await,
        );
        gateway.extend(measure(&gw_http, &mut gw_ws, &gw_url, "bench-gw", n, 20_000 + done).await);
        done += n;
    }
    println!(
        "\nGateway overhead: a 3-node prompt (64x64 image, one PNG saved), submit to final frame"
    );
    let answered = |t: &[Timing]| t.iter().map(|t| t.answered).collect::<Vec<_>>();
    let done = |t: &[Timing]| t.iter().map(|t| t.done).collect::<Vec<_>>();
    let (da, _) = report("  submit answered, direct", answered(&direct));
    let (ga, _) = report("  submit answered, gateway", answered(&gateway));
    println!("  (the gateway answers {:+.2} ms later)", ms(ga) - ms(da));
    let (dm, dp) = report(&format!("direct to {backend_name}"), done(&direct));
    let (gm, gp) = report("through the gateway", done(&gateway));
    println!(
        "ratio gateway/direct        median {:>8.2}x   p99 {:>8.2}x   (median overhead {:+.2} ms)",
        ms(gm) / ms(dm),
        ms(gp) / ms(dp),
        ms(gm) - ms(dm)
    );
}
