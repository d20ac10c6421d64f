//! Against a stock ComfyUI v0.33.0, the server the gateway drives: the
//! same prompt sent straight to it and through the gateway to it. It runs
//! the test nodes of `tests/stock/custom_nodes` (each `VALIDATE_INPUTS`
//! variant that changes what ComfyUI checks), whose Python the gateway
//! cannot run.
//!
//! `scripts/test.sh` starts that ComfyUI with `../shared/tools/comfyui-cpu`
//! and names it in `COMFYUME_STOCK_COMFYUI`; without it each test says it
//! was skipped and passes, so a clone without `../shared` still tests
//! itself.

use serde_json::{Value, json};

use crate::execution::{frames_until_done, participant, submit_ok};
use crate::support::{Options, TestApp};

/// The stock ComfyUI's URL, or `None` (and a word why) to skip.
fn stock() -> Option<String> {
    match std::env::var("COMFYUME_STOCK_COMFYUI") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: no stock ComfyUI to test against (COMFYUME_STOCK_COMFYUI is unset; \
                 scripts/test.sh starts one when ../shared/tools/comfyui-cpu is there)"
            );
            None
        }
    }
}

/// A gateway whose only enabled backend is the stock ComfyUI at `url`.
async fn gateway_before(
    url: &str,
    manual_dispatch: bool,
    adjust: impl FnOnce(&mut comfyume::config::Config),
) -> TestApp {
    let app = TestApp::spawn_full(
        Options {
            before: vec![("stock".into(), url.to_string())],
            manual_dispatch,
            ..Default::default()
        },
        adjust,
    )
    .await;
    app.state
        .dispatcher
        .set_admission("sim", comfyume::dispatch::Admission::Disabled);
    app
}

/// 1 EmptyImage → 2 `class` → 3 SaveImage; with `amount` when the node
/// takes one, and a MASK (4 SolidMask) into `image` when `from_mask`.
fn through(class: &str, amount: Option<f64>, from_mask: bool) -> Value {
    let mut node = json!({"class_type": class, "inputs": {"image": ["1", 0]}});
    if let Some(amount) = amount {
        node["inputs"]["amount"] = json!(amount);
    }
    if from_mask {
        node["inputs"]["image"] = json!(["4", 0]);
    }
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": node,
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "stock"}},
        "4": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
    })
}

/// `POST /prompt` straight to the stock ComfyUI: its status and body.
async fn direct(url: &str, prompt: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/prompt"))
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .expect("the stock ComfyUI answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

/// What ComfyUI accepts because a node's `VALIDATE_INPUTS` switched its
/// own checks off, the gateway accepts too, and it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_custom_nodes_validate_inputs_allows_runs_through_the_gateway() {
    let Some(url) = stock() else { return };
    let app = gateway_before(&url, false, |_| {}).await;
    let mut alice = participant(&app, "alice").await;
    let cases = [
        // **kwargs: every range check off.
        through("ComfyumeKwargsValidated", Some(5.0), false),
        // VALIDATE_INPUTS(amount): that input's checks off; 2.0 passes it.
        through("ComfyumeNamedValidated", Some(2.0), false),
        // VALIDATE_INPUTS(input_types): a MASK into IMAGE.
        through("ComfyumeTypesValidated", None, true),
    ];
    for prompt in cases {
        let (status, body) = direct(&url, &prompt).await;
        assert_eq!(status, 200, "ComfyUI accepts it: {body}");
        let id = submit_ok(&app, &alice, prompt.clone()).await;
        let frames = frames_until_done(&mut alice.ws, &id).await;
        assert!(
            frames.iter().any(|f| f["type"] == "execution_success"),
            "ran through the gateway: {frames:?}"
        );
    }
}

/// A refusal from a node's own `VALIDATE_INPUTS`: ComfyUI answers 400
/// naming the node and the reason; through the gateway the participant
/// reads the same node and reason (the gateway cannot run that check up
/// front, so it comes when the job is sent to the GPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_nodes_refusal_reaches_the_participant_with_its_node_and_reason() {
    let Some(url) = stock() else { return };
    let prompt = through("ComfyumeNamedValidated", Some(0.3), false);
    let (status, body) = direct(&url, &prompt).await;
    assert_eq!(status, 400, "{body}");
    let reason = body["node_errors"]["2"]["errors"][0]["details"]
        .as_str()
        .expect("ComfyUI names the reason")
        .to_string();
    assert!(reason.contains("multiple of 0.25"), "{body}");

    let app = gateway_before(&url, false, |_| {}).await;
    let mut alice = participant(&app, "alice").await;
    let id = submit_ok(&app, &alice, prompt).await;
    let frames = frames_until_done(&mut alice.ws, &id).await;
    let error = frames
        .iter()
        .find(|f| f["type"] == "execution_error")
        .unwrap_or_else(|| panic!("an execution_error: {frames:?}"));
    assert_eq!(error["data"]["node_id"], "2", "{error}");
    assert_eq!(error["data"]["node_type"], "ComfyumeNamedValidated");
    let message = error["data"]["exception_message"].as_str().unwrap();
    assert!(message.contains(&reason), "{message}");
}

/// `dispatch.queue_ahead` on the real server: the second job waits in
/// ComfyUI's own queue under a client id of its own, and each job's
/// frames reach its owner, in order, one job after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queueing_ahead_on_a_stock_comfyui_keeps_each_jobs_frames_apart() {
    let Some(url) = stock() else { return };
    let app = gateway_before(&url, true, |c| c.dispatch.queue_ahead = true).await;
    let mut alice = participant(&app, "alice").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let prompt = through("ComfyumeKwargsValidated", Some(0.1 * f64::from(i)), false);
        ids.push(submit_ok(&app, &alice, prompt).await);
    }
    for pair in ids.chunks(2) {
        // One slot: the job it runs, and the next waiting behind it.
        assert_eq!(app.dispatch_once().await, pair);
        for id in pair {
            let frames = frames_until_done(&mut alice.ws, id).await;
            assert!(
                frames.iter().any(
                    |f| f["type"] == "execution_start" && f["data"]["prompt_id"] == id.as_str()
                ),
                "{id} started in its own window: {frames:?}"
            );
            assert!(
                frames.iter().any(|f| f["type"] == "execution_success"),
                "{id}: {frames:?}"
            );
        }
    }
}
