//! Where jobs run when backends differ: only on a backend that has every
//! node and model of the prompt, and preferably on one that already has
//! the prompt's checkpoint loaded.

use serde_json::Value;

use crate::execution::{cpu_prompt, frames_until_done, participant, submit_ok, txt2img_prompt};
use crate::support::fake_backend::{Behaviour, FakeBackend};
use crate::support::{Options, TestApp};

fn with_checkpoint(ckpt: &str, seed: u64) -> Value {
    let mut p = txt2img_prompt(seed, 2);
    p["1"]["inputs"]["ckpt_name"] = Value::String(ckpt.into());
    p
}

async fn backend_of(app: &TestApp, id: &str) -> String {
    app.state
        .store
        .job(&comfyume_domain::JobId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap()
        .backend
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_only_where_its_nodes_exist() {
    // The first backend lacks KSampler (and would fail anything sent to it).
    let fake = FakeBackend::start_without(Behaviour::ServerError, &["KSampler"]).await;
    let app = TestApp::spawn_full(
        Options {
            before: vec![("no-sampler".into(), fake.url.clone())],
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, txt2img_prompt(1, 2)).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    assert!(frames.iter().any(|f| f["type"] == "execution_success"));
    assert!(
        !frames.iter().any(|f| f["type"] == "notification"),
        "no failed attempt to explain"
    );
    assert_eq!(fake.prompts(), 0, "never sent where KSampler is missing");
    assert_eq!(backend_of(&app, &id).await, "sim");
    // The union of the backends' nodes is what participants see.
    let info: Value = a.get_json(&app, "/api/object_info/KSampler").await;
    assert!(info.get("KSampler").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_prefer_the_backend_with_their_model_loaded() {
    let app = TestApp::spawn_full(
        Options {
            manual_dispatch: true,
            second_sim: Some(Default::default()),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut a = participant(&app, "alice").await;
    let dreamshaper = "sim-dreamshaper-8.safetensors";
    let sdxl = "sim-sdxl-base-1.0.safetensors";

    // dreamshaper on sim (the first free slot).
    let id = submit_ok(&app, &a, with_checkpoint(dreamshaper, 1)).await;
    assert_eq!(app.dispatch_once().await.len(), 1);
    frames_until_done(&mut a.ws, &id).await;
    assert_eq!(backend_of(&app, &id).await, "sim");
    // sdxl on sim-2, while sim is out of service.
    app.state
        .dispatcher
        .set_admission("sim", comfyume::dispatch::Admission::Disabled);
    let id = submit_ok(&app, &a, with_checkpoint(sdxl, 2)).await;
    assert_eq!(app.dispatch_once().await.len(), 1);
    frames_until_done(&mut a.ws, &id).await;
    assert_eq!(backend_of(&app, &id).await, "sim-2");
    app.state
        .dispatcher
        .set_admission("sim", comfyume::dispatch::Admission::Enabled);

    // Both free now: each model goes where it is loaded.
    let id = submit_ok(&app, &a, with_checkpoint(sdxl, 3)).await;
    assert_eq!(app.dispatch_once().await.len(), 1);
    frames_until_done(&mut a.ws, &id).await;
    assert_eq!(
        backend_of(&app, &id).await,
        "sim-2",
        "sdxl is loaded on sim-2"
    );
    let id = submit_ok(&app, &a, with_checkpoint(dreamshaper, 4)).await;
    assert_eq!(app.dispatch_once().await.len(), 1);
    frames_until_done(&mut a.ws, &id).await;
    assert_eq!(
        backend_of(&app, &id).await,
        "sim",
        "dreamshaper is loaded on sim"
    );
    // A prompt without a model takes the first free slot as before.
    let id = submit_ok(&app, &a, cpu_prompt("x")).await;
    assert_eq!(app.dispatch_once().await.len(), 1);
    frames_until_done(&mut a.ws, &id).await;
    assert_eq!(backend_of(&app, &id).await, "sim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_comes_up_runs_the_warm_up_prompt_first() {
    let warmup = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        warmup.path(),
        serde_json::json!({"prompt": with_checkpoint("sim-sdxl-base-1.0.safetensors", 77)})
            .to_string(),
    )
    .unwrap();
    let path = warmup.path().to_path_buf();
    let app = TestApp::spawn_with(move |c| c.dispatch.warmup_prompt = Some(path)).await;
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("after-warmup")).await;
    frames_until_done(&mut a.ws, &id).await;
    let history: Value = reqwest::get(format!("{}/history", app.sim_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runs: Vec<(&String, &Value)> = history.as_object().unwrap().iter().collect();
    assert_eq!(runs.len(), 2, "the warm-up, then the job");
    assert_ne!(runs[0].0, &id);
    assert_eq!(
        runs[0].1["prompt"][2]["1"]["inputs"]["ckpt_name"], "sim-sdxl-base-1.0.safetensors",
        "the warm-up came first"
    );
    assert_eq!(runs[1].0, &id);
}

/// A slot's socket to its ComfyUI outlives the job: the slot's next job
/// queues its prompt on it without connecting again, and a socket the
/// server closed meanwhile is replaced, not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_keeps_its_socket_to_the_backend_between_jobs() {
    let fake = FakeBackend::start(Behaviour::Succeed).await;
    let app = TestApp::spawn_full(
        Options {
            before: vec![("fake".into(), fake.url.clone())],
            ..Default::default()
        },
        |_| {},
    )
    .await;
    app.state
        .dispatcher
        .set_admission("sim", comfyume::dispatch::Admission::Disabled);
    let mut a = participant(&app, "alice").await;
    for seed in 0..3 {
        let id = submit_ok(&app, &a, cpu_prompt(&format!("reuse-{seed}"))).await;
        let frames = frames_until_done(&mut a.ws, &id).await;
        assert!(frames.iter().any(|f| f["type"] == "execution_success"));
        assert_eq!(backend_of(&app, &id).await, "fake");
    }
    assert_eq!(fake.prompts(), 3);
    assert_eq!(fake.sockets_opened(), 1, "three jobs, one socket");

    fake.close_sockets();
    let id = submit_ok(&app, &a, cpu_prompt("after-close")).await;
    let frames = frames_until_done(&mut a.ws, &id).await;
    assert!(frames.iter().any(|f| f["type"] == "execution_success"));
    assert_eq!(fake.sockets_opened(), 2, "a new socket for the closed one");
}
