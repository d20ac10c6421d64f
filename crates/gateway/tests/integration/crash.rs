//! The gateway killed with `kill -9` while a job runs and others wait:
//! after a restart every job completes exactly once. Real processes: the
//! `comfyume` binary for both the gateway and the simulator.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::execution::{cpu_prompt, frames_until_done, next_frame, txt2img_prompt};

pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `comfyume ARGS` and returns it with the URL it prints on the line
/// containing `marker` (on stdout or stderr).
pub fn start(args: &[&str], marker: &str, on_stderr: bool) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .args(args)
        .env_remove("COMFYUME_CONFIG")
        .env("NO_COLOR", "1")
        .stdout(if on_stderr {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stderr(if on_stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("comfyume starts");
    let pipe: Box<dyn std::io::Read + Send> = if on_stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let mut lines = BufReader::new(pipe).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the process printed its address")
            .unwrap();
        if let Some(i) = line.find(marker) {
            break line[i + marker.len()..].trim().to_string();
        }
    };
    // Keep draining the pipe so the process never blocks on a full one.
    std::thread::spawn(move || for _ in lines {});
    (Proc { child }, url)
}

pub fn serve(config: &Path) -> (Proc, String) {
    start(
        &[
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
        "ComfyUME is serving on ",
        false,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_jobs_running_and_pending_then_every_job_completes_once() {
    tokio::time::timeout(Duration::from_secs(120), scenario(false))
        .await
        .expect("the scenario finishes");
}

/// The same with `dispatch.queue_ahead`: the second job is waiting in the
/// simulator's queue behind the first when the gateway dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_job_queued_ahead_on_the_backend_then_every_job_completes_once() {
    tokio::time::timeout(Duration::from_secs(120), scenario(true))
        .await
        .expect("the scenario finishes");
}

async fn scenario(queue_ahead: bool) {
    let dir = tempfile::tempdir().unwrap();
    let sim_files = dir.path().join("sim-files");
    let (_sim, sim_url) = start(
        &[
            "sim-backend",
            "--listen",
            "127.0.0.1:0",
            "--step-ms",
            "100",
            "--files-dir",
            sim_files.to_str().unwrap(),
        ],
        "listening on ",
        true,
    );
    let frontend = dir.path().join("frontend");
    std::fs::create_dir_all(&frontend).unwrap();
    std::fs::write(frontend.join("index.html"), "<!doctype html>").unwrap();
    let config = dir.path().join("comfyume.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nfrontend_dir = {:?}\n[auth]\nsecure_cookies = false\n[dispatch]\nqueue_ahead = {queue_ahead}\n[[backends]]\nname = \"sim\"\nkind = \"sim\"\nurl = {:?}\n",
            dir.path().join("data"),
            frontend,
            sim_url
        ),
    )
    .unwrap();
    let add = Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "users",
            "add",
            "alice",
            "--password",
            "pw",
        ])
        .env_remove("COMFYUME_CONFIG")
        .output()
        .unwrap();
    assert!(add.status.success());

    let (gateway, url) = serve(&config);
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{url}/login"))
        .form(&[("username", "alice"), ("password", "pw")])
        .send()
        .await
        .unwrap();
    let cookie = crate::support::cookie_of(&login);
    let http = reqwest::Client::builder()
        .default_headers(
            std::iter::once((reqwest::header::COOKIE, cookie.parse().unwrap())).collect(),
        )
        .build()
        .unwrap();
    let mut ws = connect(&url, &cookie).await;

    let mut ids = Vec::new();
    for prompt in [txt2img_prompt(11, 60), cpu_prompt("p1"), cpu_prompt("p2")] {
        let r: Value = http
            .post(format!("{url}/api/prompt"))
            .json(&json!({"prompt": prompt, "client_id": "tab"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["prompt_id"].as_str().unwrap().to_string());
    }
    // The long job is running on the simulator (and, queueing ahead, the
    // next one waits in its queue).
    loop {
        let f = next_frame(&mut ws).await;
        if f["type"] == "progress" && f["data"]["prompt_id"] == ids[0] {
            break;
        }
    }
    if queue_ahead {
        crate::queue_ahead::until_backend_holds(&sim_url, 2).await;
        let queue: Value = reqwest::get(format!("{sim_url}/queue"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(queue["queue_pending"][0][1], ids[1], "{queue}");
    }
    let mut gateway = gateway;
    gateway.child.kill().unwrap(); // SIGKILL: no shutdown of any kind
    gateway.child.wait().unwrap();
    drop(gateway);

    let (_gateway, url) = serve(&config);
    let mut ws = connect(&url, &cookie).await;
    // The pending jobs run after the re-attached one; the last one's end
    // is the end of the scenario.
    frames_until_done(&mut ws, &ids[2]).await;

    let jobs: Value = http
        .get(format!("{url}/api/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["pagination"]["total"], 3, "nothing duplicated: {jobs}");
    for id in &ids {
        let job: Value = http
            .get(format!("{url}/api/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["outputs_count"], 1);
    }
    let files: Value = http
        .get(format!("{url}/internal/files/output"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        files.as_array().unwrap().len(),
        3,
        "one output per job: {files}"
    );
    let ran = std::fs::read_dir(sim_files.join("output")).unwrap().count();
    assert_eq!(ran, 3, "the simulator saved one image per job");
    // Each job was dispatched once: the running one was re-attached, not
    // submitted again.
    let db = format!("sqlite://{}", dir.path().join("data/comfyume.db").display());
    let store = comfyume::store::Store::connect(&db).await.unwrap();
    for id in &ids {
        let job = store
            .job(&comfyume_domain::JobId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.attempts, 1, "job {id} was dispatched once");
    }
}

pub async fn connect(
    url: &str,
    cookie: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("{}/ws?clientId=tab", url.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    next_frame(&mut ws).await;
    ws.send(Message::Text(
        json!({"type": "feature_flags", "data": {}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    next_frame(&mut ws).await;
    ws
}
