//! Faults against a real ComfyUI v0.33.0 that each test starts itself with
//! `../shared/tools/comfyui-cpu` (named by `scripts/test.sh` in
//! `COMFYUME_COMFYUI_CPU`): killed with `kill -9` in the middle of a job
//! and started again, and restarted between two jobs. Nothing is lost and
//! nothing runs twice: the participant hears one end of each job, and its
//! output lands once.

use std::process::Command;

use serde_json::Value;

use crate::differential::stepped;
use crate::execution::{frames_until_done, participant, submit_ok};
use crate::stock_comfyui::{gateway_before, serialised};
use crate::support::{TestApp, within};

/// A ComfyUI this test owns, on a port of its own, with the test nodes.
struct OwnComfy {
    tool: String,
    port: u16,
    config: tempfile::NamedTempFile,
    pid: Option<String>,
}

impl OwnComfy {
    /// Starts one, or says why the test is skipped.
    async fn start() -> Option<Self> {
        let Ok(tool) = std::env::var("COMFYUME_COMFYUI_CPU") else {
            eprintln!(
                "SKIPPED: no ComfyUI to start (COMFYUME_COMFYUI_CPU is unset; scripts/test.sh \
                 names ../shared/tools/comfyui-cpu there when it is beside the repository)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut config = tempfile::NamedTempFile::new().expect("a temporary file");
        let nodes = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stock/custom_nodes");
        std::io::Write::write_all(
            &mut config,
            format!("comfyume_tests:\n  custom_nodes: {nodes}\n").as_bytes(),
        )
        .expect("the extra-paths file");
        let mut comfy = OwnComfy {
            tool,
            port,
            config,
            pid: None,
        };
        comfy.up().await;
        Some(comfy)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it (again), waiting until it answers.
    async fn up(&mut self) {
        let (tool, port, config) = (
            self.tool.clone(),
            self.port.to_string(),
            self.config.path().to_path_buf(),
        );
        let started = within(
            "ComfyUI to start",
            tokio::task::spawn_blocking(move || {
                Command::new(tool)
                    .arg("start")
                    .arg(port)
                    .arg("--extra-model-paths-config")
                    .arg(config)
                    .output()
            }),
        )
        .await
        .expect("the start command ran")
        .expect("the start command ran");
        assert!(
            started.status.success(),
            "ComfyUI started: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        self.pid = Some(String::from_utf8_lossy(&started.stdout).trim().to_string());
    }

    /// `kill -9`. Starting it again on the same port fails loudly if the
    /// killed one still held it.
    fn kill(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        let killed = Command::new("kill").args(["-9", &pid]).status();
        assert!(killed.is_ok_and(|s| s.success()), "killed ComfyUI {pid}");
    }
}

impl Drop for OwnComfy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The files in a participant's output folder.
fn outputs(app: &TestApp, name: &str) -> Vec<String> {
    let folder = app.user_dir(name).join("output");
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `kill -9` of ComfyUI while it runs a job, then ComfyUI started again:
/// the job, lost with ComfyUI's in-memory queue, runs again once it is
/// back, and ends once, with one output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comfyui_killed_mid_job_and_restarted_loses_and_duplicates_nothing() {
    let _one_at_a_time = serialised().await;
    let Some(mut comfy) = OwnComfy::start().await else {
        return;
    };
    let app = gateway_before(&comfy.url(), false, |_| {}).await;
    let mut alice = participant(&app, "alice").await;
    let id = submit_ok(&app, &alice, stepped(60, 0, 0.05)).await;

    // Its first progress frame: it is running on ComfyUI.
    loop {
        let f = crate::execution::next_frame(&mut alice.ws).await;
        if f["type"] == "progress" && f["data"]["prompt_id"] == id.as_str() {
            break;
        }
    }
    comfy.kill();
    comfy.up().await;

    let frames = frames_until_done(&mut alice.ws, &id).await;
    let ends: Vec<&Value> = frames
        .iter()
        .filter(|f| {
            [
                "execution_success",
                "execution_error",
                "execution_interrupted",
            ]
            .contains(&f["type"].as_str().unwrap_or_default())
        })
        .collect();
    assert!(
        frames.iter().any(|f| f["type"] == "notification"),
        "the participant was told the GPU went away: {frames:?}"
    );
    assert!(
        frames.iter().any(|f| f["type"] == "execution_start"),
        "it ran again from the start: {frames:?}"
    );
    assert_eq!(ends.len(), 1, "one end: {ends:?}");
    assert_eq!(ends[0]["type"], "execution_success", "{frames:?}");

    let history: Value = alice.get_json(&app, &format!("/api/history/{id}")).await;
    assert_eq!(history[&id]["status"]["status_str"], "success");
    assert_eq!(
        history[&id]["outputs"]["3"]["images"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(outputs(&app, "alice").len(), 1, "one output file");
}

/// ComfyUI restarted between two jobs: the socket the gateway kept open
/// to it is gone, and the second job runs on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comfyui_restarted_between_jobs_runs_the_next_one() {
    let _one_at_a_time = serialised().await;
    let Some(mut comfy) = OwnComfy::start().await else {
        return;
    };
    let app = gateway_before(&comfy.url(), false, |_| {}).await;
    let mut alice = participant(&app, "alice").await;
    for round in 0..2 {
        if round == 1 {
            comfy.kill();
            comfy.up().await;
        }
        let id = submit_ok(&app, &alice, stepped(2, 0, 0.0)).await;
        let frames = frames_until_done(&mut alice.ws, &id).await;
        assert!(
            frames.iter().any(|f| f["type"] == "execution_success"),
            "round {round}: {frames:?}"
        );
    }
    assert_eq!(outputs(&app, "alice").len(), 2, "two output files");
}
