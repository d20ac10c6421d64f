//! Protocol conformance: the simulator's WebSocket sequences and history
//! against the recorded stock traces (docs/comfyui-api.md §5.4).

use serde_json::{Value, json};

use super::*;

/// The fixture's client id, so history compares without rewriting it.
const CLIENT: &str = "clienta-536044d3";

fn run_body(prompt: Value) -> Value {
    json!({
        "prompt": prompt,
        "client_id": CLIENT,
        "extra_data": {"extra_pnginfo": {"workflow": {"id": "wf-1", "nodes": []}}},
    })
}

/// Frames normalised for exact comparison with a normalised fixture.
fn normalized(frames: &[Value], prompt_id: &str) -> Vec<Value> {
    frames.iter().map(|f| normalize(f, prompt_id)).collect()
}

fn stock_run(key: &str) -> Vec<Value> {
    let frames = trace(key).as_array().cloned().expect("frames");
    let prompt_id = frames
        .iter()
        .find_map(|f| f["data"]["prompt_id"].as_str())
        .expect("a prompt id")
        .to_owned();
    normalized(&frames, &prompt_id)
}

fn assert_same_frames(ours: &[Value], stock: &[Value], what: &str) {
    let kinds = |f: &[Value]| f.iter().map(|v| v["type"].clone()).collect::<Vec<_>>();
    assert_eq!(kinds(ours), kinds(stock), "{what}: message types");
    for (i, (a, b)) in ours.iter().zip(stock).enumerate() {
        assert_eq!(a, b, "{what}: frame {i}");
    }
}

/// Normal run, fully cached re-run and a re-run with a changed root input,
/// frame for frame (ids, times and temp-name letters aside), and the
/// history entry of the first run.
#[tokio::test]
async fn normal_cached_and_partial_runs_match_the_trace() {
    let sim = start().await;
    let mut a = sim.client(CLIENT, false).await;
    let mut b = sim.client("passive-b", false).await;

    let id = sim.submit_body(run_body(trace_graph(16_711_680))).await;
    let ours = json_frames(&a.until_done(&id).await);
    assert_same_frames(
        &normalized(&ours, &id),
        &stock_run("A_normal_run"),
        "normal run",
    );

    // A passive client sees the three status broadcasts only.
    let passive: Vec<Value> = vec![b.json().await, b.json().await, b.json().await];
    assert_eq!(
        passive,
        trace("B_during_normal_run")
            .as_array()
            .cloned()
            .expect("frames")
    );

    let history = sim.get_json(&format!("/history/{id}")).await;
    let stock = trace("history_one")[1].clone();
    let stock_id = stock
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("id");
    assert_eq!(
        normalize(&history[&id], &id),
        normalize(&stock[&stock_id], &stock_id),
        "history entry"
    );

    let id = sim.submit_body(run_body(trace_graph(16_711_680))).await;
    let ours = json_frames(&a.until_done(&id).await);
    assert_same_frames(
        &normalized(&ours, &id),
        &stock_run("A_cached_run"),
        "cached run",
    );

    let id = sim.submit_body(run_body(trace_graph(255))).await;
    let ours = json_frames(&a.until_done(&id).await);
    assert_same_frames(
        &normalized(&ours, &id),
        &stock_run("A_partial_cache_run"),
        "partial cache run",
    );
    sim.shutdown().await;
}

/// The same message types, and the same data keys in every frame.
fn assert_same_shapes(ours: &[Value], stock: &[Value], what: &str) {
    let a: Vec<_> = ours.iter().map(shape).collect();
    let b: Vec<_> = stock.iter().map(shape).collect();
    assert_eq!(a, b, "{what}");
}

/// A node raising at run time (the fail_node knob standing in for stock's
/// `TestSyncError`), against `A_error_run`.
#[tokio::test]
async fn runtime_error_matches_the_trace() {
    let sim = start_with(SimOptions {
        fail_node: Some("ImageInvert".into()),
        ..quick()
    })
    .await;
    let mut a = sim.client(CLIENT, false).await;
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    });
    let id = sim.submit(prompt, CLIENT).await;
    let ours = json_frames(&a.until_done(&id).await);
    let stock = trace("A_error_run").as_array().cloned().expect("frames");
    assert_same_shapes(&ours, &stock, "error run");

    let error = &ours
        .iter()
        .find(|f| f["type"] == "execution_error")
        .expect("an error")["data"];
    assert_eq!(error["node_id"], "2");
    assert_eq!(error["node_type"], "ImageInvert");
    assert_eq!(error["executed"], json!(["1"]));
    assert_eq!(error["exception_type"], "RuntimeError");
    assert!(
        error["exception_message"]
            .as_str()
            .is_some_and(|m| m.ends_with('\n'))
    );
    assert!(error["traceback"].as_array().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        error["current_inputs"],
        json!({"image": ["IMAGE[1, 8, 8, 3]"]})
    );
    let mut outputs: Vec<&str> = error["current_outputs"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    outputs.sort();
    assert_eq!(outputs, ["1", "2", "3"]);

    let history = sim.get_json(&format!("/history/{id}")).await;
    let status = &history[&id]["status"];
    assert_eq!(
        (status["status_str"].clone(), status["completed"].clone()),
        (json!("error"), json!(false))
    );
    let last = &status["messages"][2];
    assert_eq!(last[0], "execution_error");
    assert_eq!(last[1], *error);
    sim.shutdown().await;
}

/// LoadImage of a file that is not a PNG fails like stock's PIL error
/// (the 0.3.64 recording `ws-run-execution-error.jsonl`).
#[tokio::test]
async fn load_image_of_a_non_image_fails_like_stock() {
    let sim = start().await;
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(b"not an image".to_vec())
            .file_name("peer_not_an_image.png"),
    );
    let response = reqwest::Client::new()
        .post(sim.url("/upload/image"))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);

    let mut a = sim.client(CLIENT, false).await;
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "peer_not_an_image.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "peer_rt"}},
    });
    let id = sim.submit(prompt, CLIENT).await;
    let ours = json_frames(&a.until_done(&id).await);
    let stock = fixture("comfyui-0.3.64/ws-run-execution-error.jsonl");
    assert_same_shapes(
        &ours,
        stock.as_array().expect("frames"),
        "LoadImage error run",
    );

    let error = &ours[6]["data"];
    let theirs = &stock[6]["data"];
    for key in [
        "node_id",
        "node_type",
        "executed",
        "exception_type",
        "current_inputs",
        "current_outputs",
    ] {
        assert_eq!(error[key], theirs[key], "{key}");
    }
    let message = error["exception_message"].as_str().expect("message");
    assert!(
        message.starts_with("cannot identify image file '")
            && message.ends_with("peer_not_an_image.png'\n"),
        "{message}"
    );
    sim.shutdown().await;
}

/// Collapses a run's message types into a pattern: each node that runs
/// without progress is `node`, each sampler step `step`, repeats once.
/// (`progress_state executing` followed by steps is a node with progress.)
fn pattern(kinds: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    let at = |i: usize| kinds.get(i).map_or("", String::as_str);
    while i < kinds.len() {
        let node =
            at(i) == "progress_state" && at(i + 1) == "executing" && at(i + 2) == "progress_state";
        let token = if node && at(i + 3) != "progress" {
            i += 3;
            "node"
        } else if at(i) == "progress_state" && at(i + 1) == "progress" {
            i += 2;
            "step"
        } else {
            i += 1;
            at(i - 1)
        };
        if out.last().map(String::as_str) != Some(token) || !matches!(token, "node" | "step") {
            out.push(token.to_owned());
        }
    }
    out
}

/// An interrupt during KSampler, against stock's interrupted `TestSleep`.
#[tokio::test]
async fn interrupt_during_sampling_matches_the_trace() {
    let sim = start_with(SimOptions {
        step_time: std::time::Duration::from_millis(20),
        ..quick()
    })
    .await;
    let mut a = sim.client(CLIENT, false).await;
    let id = sim
        .submit(txt2img(1, 10_000, "a slow one", "slow"), CLIENT)
        .await;
    let mut frames = Vec::new();
    loop {
        let frame = a.next().await;
        let first_step = matches!(&frame, Frame::Json(v) if v["type"] == "progress");
        frames.push(frame);
        if first_step {
            break;
        }
    }
    let (status, _) = sim.post("/interrupt", json!({"prompt_id": id})).await;
    assert_eq!(status, 200);
    frames.extend(a.until_done(&id).await);

    // Previews are binary frames, which the trace's list leaves out.
    let ours: Vec<String> = kinds(&frames)
        .into_iter()
        .filter(|k| !k.starts_with("BIN"))
        .collect();
    let stock: Vec<String> = trace("A_interrupt_run_types")
        .as_array()
        .expect("types")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    assert_eq!(pattern(&ours), pattern(&stock));

    let json = json_frames(&frames);
    let interrupted = json
        .iter()
        .find(|f| f["type"] == "execution_interrupted")
        .expect("interrupted");
    let stock = trace("A_interrupt_run_nonprogress");
    let stock_frame = stock
        .as_array()
        .and_then(|f| f.iter().find(|f| f["type"] == "execution_interrupted"))
        .expect("stock frame");
    assert_eq!(shape(interrupted), shape(stock_frame));
    assert_eq!(interrupted["data"]["node_id"], "4");
    assert_eq!(interrupted["data"]["node_type"], "KSampler");
    assert_eq!(interrupted["data"]["executed"], json!(["1", "3", "2"]));

    let history = sim.get_json(&format!("/history/{id}")).await;
    assert_eq!(history[&id]["status"]["status_str"], "error");
    assert_eq!(
        history[&id]["status"]["messages"][2][0],
        "execution_interrupted"
    );
    assert_eq!(history[&id]["outputs"], json!({}));
    sim.shutdown().await;
}

/// The 0.3.64 recordings: a plain run, then the cached re-run.
#[tokio::test]
async fn older_recordings_match_too() {
    let sim = start().await;
    let mut a = sim.client("peer", false).await;
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 1_193_046}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "peer_e2e"}},
    });
    for file in ["ws-run-success.jsonl", "ws-run-cached.jsonl"] {
        let id = sim.submit(prompt.clone(), "peer").await;
        let ours = json_frames(&a.until_done(&id).await);
        let stock = fixture(&format!("comfyui-0.3.64/{file}"));
        let stock = stock.as_array().expect("frames");
        let stock_id = stock[2]["data"]["prompt_id"].as_str().expect("id");
        assert_same_frames(&normalized(&ours, &id), &normalized(stock, stock_id), file);
    }
    sim.shutdown().await;
}

#[test]
fn patterns_collapse_repeats() {
    let kinds: Vec<String> = [
        "status",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "progress_state",
        "progress",
        "progress_state",
        "progress",
        "execution_interrupted",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(
        pattern(&kinds),
        [
            "status",
            "node",
            "progress_state",
            "executing",
            "step",
            "execution_interrupted"
        ]
    );
}
