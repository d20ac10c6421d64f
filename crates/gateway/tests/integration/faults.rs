//! Fault injection: backends that refuse, break, hang, vanish or start
//! cold. Each test checks that the job completes exactly once with its
//! outputs delivered once (or fails with a clear message when it cannot
//! run anywhere), and that the participant was told what happened.

use std::time::Duration;

use serde_json::{Value, json};

use crate::execution::{
    Participant, cpu_prompt, frames_until_done, next_frame, participant, submit_ok, txt2img_prompt,
};
use crate::support::fake_backend::{Behaviour, FakeBackend};
use crate::support::{Options, TestApp};

/// A gateway whose first backend is `fake`, then a healthy simulator.
async fn behind(fake: &FakeBackend, adjust: impl FnOnce(&mut comfyume::config::Config)) -> TestApp {
    TestApp::spawn_full(
        Options {
            before: vec![("flaky".into(), fake.url.clone())],
            ..Default::default()
        },
        adjust,
    )
    .await
}

fn notifications(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "notification")
        .map(|f| f["data"]["value"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The job finished once, completed, with exactly one output delivered.
async fn completed_once(app: &TestApp, p: &Participant, id: &str, frames: &[Value]) {
    let executed: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "executed" && f["data"]["node"] == "5")
        .collect();
    assert_eq!(executed.len(), 1, "the output was delivered once");
    assert_eq!(
        frames
            .iter()
            .filter(|f| f["type"] == "execution_success")
            .count(),
        1
    );
    let job: Value = p.get_json(app, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["outputs_count"], 1);
    let files: Value = p.get_json(app, "/internal/files/output").await;
    assert_eq!(
        files.as_array().unwrap().len(),
        1,
        "one file in the user's outputs: {files}"
    );
    let all: Value = p.get_json(app, "/api/jobs").await;
    assert_eq!(all["pagination"]["total"], 1, "nothing duplicated");
}

async fn retried_elsewhere(behaviour: Behaviour) {
    let fake = FakeBackend::start(behaviour.clone()).await;
    let app = behind(&fake, |_| {}).await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("r")).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    let told = notifications(&frames);
    assert!(
        told.iter()
            .any(|n| n.contains("retrying on another GPU (attempt 2 of 3)")),
        "{behaviour:?}: the participant was told: {told:?}"
    );
    completed_once(&app, &a, &id, &frames).await;
    assert_eq!(
        fake.prompts(),
        1,
        "{behaviour:?}: the failing backend got the job once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_on_prompt_retries_on_another_backend() {
    retried_elsewhere(Behaviour::ServerError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_retries_on_another_backend() {
    retried_elsewhere(Behaviour::Garbage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_a_lost_job_retry_on_another_backend() {
    retried_elsewhere(Behaviour::GarbleAndForget).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_past_the_time_limit_retries_on_another_backend() {
    let fake = FakeBackend::start(Behaviour::Hang).await;
    let app = behind(&fake, |c| c.dispatch.job_timeout_seconds = 1).await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("h")).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    assert!(
        notifications(&frames)
            .iter()
            .any(|n| n.contains("attempt 2 of 3"))
    );
    completed_once(&app, &a, &id, &frames).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_at_dispatch_fails_the_job_with_the_reason() {
    let fake = FakeBackend::start(Behaviour::Reject).await;
    let app = behind(&fake, |_| {}).await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("x")).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    let error = frames
        .iter()
        .find(|f| f["type"] == "execution_error")
        .expect("an execution_error");
    let message = error["data"]["exception_message"].as_str().unwrap();
    assert!(
        message.contains("refused this prompt")
            && message.contains("ImageBlur (node 2)")
            && message.contains("no such model"),
        "the backend's node and reason: {message}"
    );
    assert_eq!(error["data"]["node_id"], "2", "shown on the node");
    assert_eq!(error["data"]["node_type"], "ImageBlur");
    let job: Value = a.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["execution_error"]["exception_message"], message);
    assert_eq!(
        fake.prompts(),
        1,
        "a refusal is not retried: the prompt is the problem"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_finished_while_the_socket_was_down_is_collected_from_history() {
    let fake = FakeBackend::start(Behaviour::FinishWhileDisconnected).await;
    let app = behind(&fake, |_| {}).await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("x")).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    let executed = frames
        .iter()
        .find(|f| f["type"] == "executed")
        .expect("the output, from history");
    assert_eq!(
        executed["data"]["output"]["images"][0]["filename"],
        "fake_00001_.png"
    );
    assert!(frames.iter().any(|f| f["type"] == "execution_success"));
    let bytes = a
        .http
        .get(app.at("/api/view?filename=fake_00001_.png&type=output"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), b"\x89PNG-fake");
    let job: Value = a.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(fake.prompts(), 1, "not run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_job_hands_it_to_another() {
    let slow = comfyume_sim::SimOptions {
        step_time: Duration::from_millis(100),
        ..Default::default()
    };
    let mut app = TestApp::spawn_full(
        Options {
            sim: slow,
            second_sim: Some(Default::default()),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, txt2img_prompt(3, 40)).await;
    let mut frames = Vec::new();
    loop {
        let f = next_frame(&mut a.ws).await;
        let progress = f["type"] == "progress";
        frames.push(f);
        if progress {
            break;
        }
    }
    app.stop_sim(0);
    frames.extend(frames_until_done(&mut a.ws, &id).await);
    assert!(
        notifications(&frames)
            .iter()
            .any(|n| n.contains("retrying on another GPU (attempt 2 of 3)"))
    );
    let saved: Vec<&Value> = frames.iter().filter(|f| f["type"] == "executed").collect();
    assert_eq!(saved.len(), 1, "one SaveImage output");
    let job: Value = a.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "completed");
    let backends = app.state.dispatcher.backends();
    assert_eq!(
        backends[0].state,
        comfyume::dispatch::BackendState::Unreachable
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_no_backend_can_run_fails_after_the_attempts() {
    let fake = FakeBackend::start(Behaviour::ServerError).await;
    let app = TestApp::spawn_full(
        Options {
            before: vec![("flaky".into(), fake.url.clone())],
            ..Default::default()
        },
        |c| {
            // Only the flaky backend.
            c.backends.truncate(1);
            c.dispatch.max_attempts = 2;
        },
    )
    .await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("x")).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    assert!(
        notifications(&frames)
            .iter()
            .any(|n| n.contains("attempt 2 of 2"))
    );
    let error = frames
        .iter()
        .find(|f| f["type"] == "execution_error")
        .expect("the final failure");
    assert!(
        error["data"]["exception_message"]
            .as_str()
            .unwrap()
            .contains("could not run this prompt")
    );
    let job: Value = a.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(fake.prompts(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_backend_is_waited_for() {
    let cold = comfyume_sim::SimOptions {
        startup_delay: Duration::from_millis(1500),
        ..Default::default()
    };
    let app = TestApp::spawn_full(
        Options {
            sim: cold,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    // The gateway has seen this backend's nodes before (its cache on disk).
    let cache = json!({"nodes": comfyume_sim::catalogue(), "devices": []});
    std::fs::write(app.data_dir.join("catalogue.json"), cache.to_string()).unwrap();
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("c")).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    assert!(
        notifications(&frames)
            .iter()
            .any(|n| n.contains("still starting up")),
        "told that the GPUs are warming up: {:?}",
        notifications(&frames)
    );
    completed_once(&app, &a, &id, &frames).await;
    let job: Value = a.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert!(job.get("execution_error").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_keeps_the_backend_out_and_the_job_runs_elsewhere() {
    // Nothing listens on port 9.
    let app = TestApp::spawn_full(
        Options {
            before: vec![("dead".into(), "http://127.0.0.1:9".into())],
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("x")).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    completed_once(&app, &a, &id, &frames).await;
    let backends = app.state.dispatcher.backends();
    assert_eq!(backends[0].name, "dead");
    assert_eq!(
        backends[0].state,
        comfyume::dispatch::BackendState::Unreachable
    );
    assert!(
        backends[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("unreachable"),
        "{:?}",
        backends[0].last_error
    );
}
