//! Against a stock ComfyUI v0.33.0, the server the gateway drives: the
//! same prompt sent straight to it and through the gateway to it. It runs
//! the test nodes of `tests/stock/custom_nodes` (each `VALIDATE_INPUTS`
//! variant that changes what ComfyUI checks), whose Python the gateway
//! cannot run itself.
//!
//! `scripts/test.sh` starts two with `../shared/tools/comfyui-cpu`: one as
//! it comes (`COMFYUME_STOCK_COMFYUI`), one that also runs ComfyUME's
//! backend extension, `comfyui/comfyume_backend`
//! (`COMFYUME_STOCK_COMFYUI_WITH_EXTENSION`). Without them each test says
//! it was skipped and passes, so a clone without `../shared` still tests
//! itself.

use serde_json::{Value, json};

use crate::execution::{Participant, frames_until_done, participant, submit_ok};
use crate::support::{Options, TestApp};
use crate::workers::{worker_backend, worker_in_front_of};

/// The stock ComfyUI's URL, or `None` (and a word why) to skip.
pub fn stock() -> Option<String> {
    stock_at("COMFYUME_STOCK_COMFYUI")
}

/// The stock ComfyUI that runs the backend extension.
pub fn stock_with_extension() -> Option<String> {
    stock_at("COMFYUME_STOCK_COMFYUI_WITH_EXTENSION")
}

/// Held by each test against the stock ComfyUIs: one at a time, so one
/// test's prompts never evict another's from ComfyUI's cache nor wait in
/// its queue.
pub async fn serialised() -> tokio::sync::MutexGuard<'static, ()> {
    static STOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    STOCK.lock().await
}

fn stock_at(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: no stock ComfyUI to test against ({variable} is unset; \
                 scripts/test.sh starts one when ../shared/tools/comfyui-cpu is there)"
            );
            None
        }
    }
}

/// A gateway whose only enabled backend is the stock ComfyUI at `url`.
pub async fn gateway_before(
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
    post_direct(url, &json!({"prompt": prompt})).await
}

pub async fn post_direct(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/prompt"))
        .json(body)
        .send()
        .await
        .expect("the stock ComfyUI answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

/// `POST /api/prompt` through the gateway, as participant `p`.
pub async fn through_gateway(app: &TestApp, p: &Participant, body: &Value) -> (u16, Value) {
    let r = p
        .http
        .post(app.at("/api/prompt"))
        .json(body)
        .send()
        .await
        .expect("the gateway answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

/// A 400 body with its Python tracebacks taken out: they name files on
/// the machine that raised, which differ between the two paths.
fn without_tracebacks(mut body: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if key == "traceback" {
                        *value = json!([]);
                    } else {
                        strip(value);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut body);
    body
}

/// Each body sent straight to ComfyUI and through the gateway gets the
/// same 400 and the same body (tracebacks aside).
async fn same_refusals(url: &str, app: &TestApp, p: &Participant, cases: &[(&str, Value)]) {
    for (case, body) in cases {
        let (status, expected) = post_direct(url, body).await;
        assert_eq!(status, 400, "{case}: ComfyUI refuses it: {expected}");
        let (status, got) = through_gateway(app, p, body).await;
        assert_eq!(status, 400, "{case}: the gateway refuses it: {got}");
        assert_eq!(
            without_tracebacks(got),
            without_tracebacks(expected),
            "{case}: the gateway's body is ComfyUI's"
        );
    }
}

/// What ComfyUI accepts because a node's `VALIDATE_INPUTS` switched its
/// own checks off, the gateway accepts too, and it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_custom_nodes_validate_inputs_allows_runs_through_the_gateway() {
    let _one_at_a_time = serialised().await;
    let Some(url) = stock() else { return };
    allowed_cases_run(&url).await;
}

/// The same, where the gateway asks the backend extension about each
/// validator: the same prompts run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_validator_allows_runs_through_the_gateway_with_the_extension() {
    let _one_at_a_time = serialised().await;
    let Some(url) = stock_with_extension() else {
        return;
    };
    allowed_cases_run(&url).await;
}

async fn allowed_cases_run(url: &str) {
    let app = gateway_before(url, false, |_| {}).await;
    let mut alice = participant(&app, "alice").await;
    let cases = [
        // **kwargs: every range check off.
        through("ComfyumeKwargsValidated", Some(5.0), false),
        // VALIDATE_INPUTS(amount): that input's checks off; 2.0 passes it.
        through("ComfyumeNamedValidated", Some(2.0), false),
        // VALIDATE_INPUTS(input_types): a MASK into IMAGE.
        through("ComfyumeTypesValidated", None, true),
        // A False/refusing validator's values it lets pass.
        through("ComfyumeFalseValidated", Some(0.9), false),
        through("ComfyumeRaisingValidated", Some(0.5), false),
    ];
    for prompt in cases {
        let (status, body) = direct(url, &prompt).await;
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
    let _one_at_a_time = serialised().await;
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
    let _one_at_a_time = serialised().await;
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

/// With the backend extension, a refusal from a node's own Python is
/// ComfyUI's own 400 at submit, through the gateway as straight to
/// ComfyUI: the reason string, `False`, an exception, `**kwargs` (every
/// input named), a node with no validator, and a validator's refusal
/// beside ComfyUI's own errors on the same node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validators_refusal_is_comfyuis_own_400_at_submit_with_the_extension() {
    let Some(url) = stock_with_extension() else {
        return;
    };
    let app = gateway_before(&url, false, |_| {}).await;
    let alice = participant(&app, "alice").await;
    let mut mismatched = through("ComfyumeNamedValidated", Some(0.3), true);
    mismatched["2"]["inputs"]["amount"] = json!("0.3");
    let prompts = [
        (
            "a reason",
            through("ComfyumeNamedValidated", Some(0.3), false),
        ),
        (
            "False",
            through("ComfyumeFalseValidated", Some(0.95), false),
        ),
        (
            "raised",
            through("ComfyumeRaisingValidated", Some(-1.0), false),
        ),
        (
            "**kwargs",
            through("ComfyumeRaisingValidated", Some(0.7), false),
        ),
        ("no validator", through("ComfyumePlain", Some(5.0), false)),
        ("an output's validator raised", {
            let mut prompt = through("ComfyumeKwargsValidated", Some(0.5), false);
            prompt["3"] =
                json!({"class_type": "ComfyumeRaisingOutput", "inputs": {"images": ["2", 0]}});
            prompt
        }),
        ("with ComfyUI's own", mismatched),
    ];
    let cases: Vec<(&str, Value)> = prompts
        .into_iter()
        .map(|(case, prompt)| (case, json!({"prompt": prompt})))
        .collect();
    same_refusals(&url, &app, &alice, &cases).await;
}

/// ComfyUI's refusals of invalid prompts made of its own nodes: every
/// error type they can provoke, the same 400 body through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refusals_of_invalid_prompts_are_comfyuis_own() {
    let _one_at_a_time = serialised().await;
    let Some(url) = stock() else { return };
    let app = gateway_before(&url, false, |_| {}).await;
    let alice = participant(&app, "alice").await;
    let chain = |edit: &dyn Fn(&mut Value)| {
        let mut prompt = json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "diff"}},
        });
        edit(&mut prompt);
        json!({"prompt": prompt})
    };
    let cases = [
        ("no_prompt", json!({"number": 1})),
        (
            "invalid_prompt_id",
            json!({"prompt": {}, "prompt_id": "not-a-uuid"}),
        ),
        (
            "missing_node_type",
            chain(&|p| p["2"]["class_type"] = json!("NoSuchNode")),
        ),
        (
            "missing class_type",
            chain(&|p| {
                p["2"].as_object_mut().unwrap().remove("class_type");
                p["2"]["_meta"] = json!({"title": "Invert"});
            }),
        ),
        (
            "prompt_no_outputs",
            chain(&|p| {
                p.as_object_mut().unwrap().remove("3");
            }),
        ),
        (
            "required_input_missing",
            chain(&|p| {
                p["3"]["inputs"].as_object_mut().unwrap().remove("images");
            }),
        ),
        (
            "bad_linked_input",
            chain(&|p| p["2"]["inputs"]["image"] = json!(["1"])),
        ),
        (
            "return_type_mismatch",
            chain(&|p| {
                p["4"] = json!({"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}});
                p["2"]["inputs"]["image"] = json!(["4", 0]);
            }),
        ),
        (
            "invalid_input_type",
            chain(&|p| p["1"]["inputs"]["width"] = json!("wide")),
        ),
        (
            "value_smaller_than_min",
            chain(&|p| p["1"]["inputs"]["width"] = json!(0)),
        ),
        (
            "value_bigger_than_max",
            chain(&|p| p["1"]["inputs"]["color"] = json!(16_777_216)),
        ),
        (
            "value_not_in_list",
            chain(&|p| {
                p["2"] = json!({"class_type": "ImageBlend", "inputs": {
                    "image1": ["1", 0], "image2": ["1", 0], "blend_factor": 0.5, "blend_mode": "sideways"}});
            }),
        ),
        (
            "dependency_cycle",
            chain(&|p| {
                p["4"] = json!({"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}});
                p["2"]["inputs"]["image"] = json!(["4", 0]);
            }),
        ),
        (
            "a link to a node that is not there",
            chain(&|p| p["2"]["inputs"]["image"] = json!(["9", 0])),
        ),
        (
            "a link to an output that is not there",
            chain(&|p| p["2"]["inputs"]["image"] = json!(["1", 5])),
        ),
        (
            "custom_validation_failed (a file that is not there)",
            chain(&|p| {
                p["1"] =
                    json!({"class_type": "LoadImage", "inputs": {"image": "not-uploaded.png"}});
            }),
        ),
        (
            "errors on two nodes",
            chain(&|p| {
                p["1"]["inputs"]["height"] = json!(-5);
                p["3"]["inputs"]
                    .as_object_mut()
                    .unwrap()
                    .remove("filename_prefix");
            }),
        ),
    ];
    same_refusals(&url, &app, &alice, &cases).await;
}

/// The worker sidecar in front of a real ComfyUI that runs the extension:
/// it relays the validators, so a validator's refusal is ComfyUI's own
/// 400 at submit through it too, and jobs run through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_sidecar_beside_a_real_comfyui_relays_its_validators_and_runs_jobs() {
    let _one_at_a_time = serialised().await;
    let Some(url) = stock_with_extension() else {
        return;
    };
    let worker = worker_in_front_of(&url).await;
    let app = TestApp::spawn_full(Options::default(), |c| {
        c.backends = vec![worker_backend("gpu", &worker, 1)];
    })
    .await;
    let mut alice = participant(&app, "alice").await;
    let cases = [
        (
            "a reason",
            json!({"prompt": through("ComfyumeNamedValidated", Some(0.3), false)}),
        ),
        (
            "raised",
            json!({"prompt": through("ComfyumeRaisingValidated", Some(-2.0), false)}),
        ),
    ];
    same_refusals(&url, &app, &alice, &cases).await;
    // It relays what ComfyUI serves beside the API too.
    let models: Value = alice.get_json(&app, "/api/models/checkpoints").await;
    assert_eq!(models, json!(["comfyume_tiny.safetensors"]));

    let id = submit_ok(
        &app,
        &alice,
        through("ComfyumeKwargsValidated", Some(5.0), false),
    )
    .await;
    let frames = frames_until_done(&mut alice.ws, &id).await;
    assert!(
        frames.iter().any(|f| f["type"] == "execution_success"),
        "ran through the worker: {frames:?}"
    );
}

/// What a ComfyUI serves beside the API, where custom node packs and
/// models live on the backend: the pack's script in the extension list
/// and its bytes (with ComfyUI's cache header), its translations, its
/// example workflow, and the model lists, through the gateway as straight
/// from ComfyUI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_backend_serves_beside_the_api_is_comfyuis_own() {
    let _one_at_a_time = serialised().await;
    let Some(url) = stock() else { return };
    let app = gateway_before(&url, false, |_| {}).await;
    let alice = participant(&app, "alice").await;
    let direct = |path: &str| {
        let url = format!("{url}{path}");
        async move { reqwest::get(url).await.expect("ComfyUI answers") }
    };
    let through = |path: &str| {
        let request = alice.http.get(app.at(path));
        async move { request.send().await.expect("the gateway answers") }
    };
    let packs_of = |list: Value| -> Vec<String> {
        let mut packs: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|p| !p.starts_with("/extensions/core/"))
            .map(str::to_string)
            .collect();
        packs.sort();
        packs
    };
    let script = "/extensions/comfyume_test_nodes/comfyume_test.js";
    let mut listed = packs_of(through("/api/extensions").await.json().await.unwrap());
    assert!(listed.contains(&script.to_string()), "{listed:?}");
    // The backend's packs, and the gateway's own participant panel.
    let own = "/extensions/comfyume-room/room.js";
    assert!(listed.contains(&own.to_string()), "{listed:?}");
    listed.retain(|p| p != own);
    assert_eq!(
        listed,
        packs_of(direct("/extensions").await.json().await.unwrap())
    );

    for path in [
        script,
        "/api/workflow_templates/comfyume_test_nodes/comfyume_steps.json",
    ] {
        let (d, t) = (direct(path).await, through(path).await);
        assert_eq!(t.status(), 200, "{path}");
        assert_eq!(
            t.headers().get("cache-control"),
            d.headers().get("cache-control"),
            "{path}"
        );
        assert_eq!(t.bytes().await.unwrap(), d.bytes().await.unwrap(), "{path}");
    }
    let anonymous = reqwest::get(app.at(script)).await.unwrap();
    assert_eq!(anonymous.status(), 401, "a pack's file is for participants");

    for path in [
        "/i18n",
        "/workflow_templates",
        "/models",
        "/models/checkpoints",
        "/experiment/models",
        "/experiment/models/checkpoints",
        "/embeddings",
        "/view_metadata/checkpoints?filename=comfyume_tiny.safetensors",
    ] {
        let d: Value = direct(path).await.json().await.unwrap();
        let t: Value = through(&format!("/api{path}")).await.json().await.unwrap();
        assert_eq!(t, d, "{path}");
    }
    assert_eq!(
        direct("/models/checkpoints")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!(["comfyume_tiny.safetensors"])
    );
    for path in [
        "/models/nowhere",
        "/view_metadata/checkpoints?filename=missing.safetensors",
    ] {
        assert_eq!(direct(path).await.status(), 404, "{path}");
        assert_eq!(
            through(&format!("/api{path}")).await.status(),
            404,
            "{path}"
        );
    }
}
