//! Sampler previews and the test knobs: preview frame formats, a dropped
//! connection mid-run, slow start, and what a run without a client sends.

use serde_json::json;

use super::*;

/// Splits a BIN4 frame into its metadata and image.
fn bin4(frame: &[u8]) -> (Value, &[u8]) {
    assert_eq!(&frame[..4], &4u32.to_be_bytes());
    let len = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]) as usize;
    let meta = serde_json::from_slice(&frame[8..8 + len]).expect("metadata JSON");
    (meta, &frame[8 + len..])
}

/// With `supports_preview_metadata`, each step is `progress_state`, BIN4
/// (metadata + PNG), `progress`; previews show the picture forming.
#[tokio::test]
async fn previews_carry_metadata_when_asked() {
    let sim = start().await;
    let mut client = sim.client("meta", true).await;
    let id = sim
        .submit(txt2img(5, 4, "a red balloon", "meta"), "meta")
        .await;
    let frames = client.until_done(&id).await;
    let kinds = kinds(&frames);
    let first = kinds.iter().position(|k| k == "BIN4").expect("a preview");
    assert_eq!(kinds[first - 1], "progress_state");
    assert_eq!(kinds[first + 1], "progress");
    assert_eq!(kinds.iter().filter(|k| *k == "BIN4").count(), 4);
    assert!(!kinds.iter().any(|k| k == "BIN1"));

    let Frame::Binary(bytes) = &frames[first] else {
        panic!("not binary");
    };
    let (meta, image) = bin4(bytes);
    assert_eq!(
        meta,
        json!({"node_id": "4", "prompt_id": id, "display_node_id": "4",
               "parent_node_id": null, "real_node_id": "4", "image_type": "image/png"})
    );
    let (w, h, _) = decode_png(image);
    assert_eq!((w, h), (64, 48));

    let progress: Vec<Value> = json_frames(&frames)
        .into_iter()
        .filter(|f| f["type"] == "progress")
        .map(|f| f["data"].clone())
        .collect();
    assert_eq!(
        progress[0],
        json!({"value": 1, "max": 4, "prompt_id": id, "node": "4"})
    );
    assert_eq!(progress[3]["value"], 4);
    let state = frames[first - 1].json();
    assert_eq!(state["data"]["nodes"]["4"]["state"], "running");
    assert_eq!(state["data"]["nodes"]["4"]["value"], 1);
    sim.shutdown().await;
}

/// Without the flag, each step is `progress_state`, `progress`, BIN1
/// (PNG, image type 2).
#[tokio::test]
async fn previews_are_legacy_frames_otherwise() {
    let sim = start().await;
    let mut client = sim.client("legacy", false).await;
    let id = sim
        .submit(txt2img(5, 3, "a red balloon", "legacy"), "legacy")
        .await;
    let frames = client.until_done(&id).await;
    let kinds = kinds(&frames);
    let first = kinds.iter().position(|k| k == "BIN1").expect("a preview");
    assert_eq!(&kinds[first - 2..first], ["progress_state", "progress"]);
    assert_eq!(kinds.iter().filter(|k| *k == "BIN1").count(), 3);
    let Frame::Binary(bytes) = &frames[first] else {
        panic!("not binary");
    };
    assert_eq!(&bytes[..8], &[0, 0, 0, 1, 0, 0, 0, 2]);
    assert_eq!(&bytes[8..16], b"\x89PNG\r\n\x1a\n");
    sim.shutdown().await;
}

/// drop_after_steps closes every socket mid-run; the prompt goes on, and
/// a client reconnecting with its id is told the running node, then gets
/// the rest of the run. (The run is interrupted at the end rather than left
/// to finish, so the test never races it.)
#[tokio::test]
async fn dropped_connection_can_reconnect() {
    let sim = start_with(SimOptions {
        drop_after_steps: Some(2),
        step_time: std::time::Duration::from_millis(5),
        ..quick()
    })
    .await;
    let mut client = sim.client("flaky", false).await;
    let mut bystander = sim.client("bystander", false).await;
    let id = sim
        .submit(txt2img(9, 10_000, "flaky", "flaky"), "flaky")
        .await;

    let mut steps = 0;
    loop {
        match client.next().await {
            Frame::Json(v) if v["type"] == "progress" => steps += 1,
            Frame::Closed => break,
            _ => {}
        }
    }
    assert_eq!(steps, 2, "the socket closes right after the second step");
    while !matches!(bystander.next().await, Frame::Closed) {}

    let url = format!("ws://{}/ws?clientId=flaky", sim.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("reconnect");
    let mut again = Client { ws };
    assert_eq!(again.json().await["type"], "status");
    assert_eq!(
        again.json().await,
        json!({"type": "executing", "data": {"node": "4"}})
    );
    again.until("progress").await;
    assert_eq!(
        sim.post("/interrupt", json!({"prompt_id": id})).await.0,
        200
    );
    let rest = json_frames(&again.until_done(&id).await);
    assert!(rest.iter().any(|f| f["type"] == "execution_interrupted"));
    sim.shutdown().await;
}

/// A slow start answers 503 to HTTP and refuses WebSocket upgrades.
#[tokio::test]
async fn slow_start_refuses_until_ready() {
    let sim = start_with(SimOptions {
        startup_delay: std::time::Duration::from_secs(3600),
        ..quick()
    })
    .await;
    let response = sim.get("/api/system_stats").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        sim.post("/prompt", json!({"prompt": trace_graph(0)}))
            .await
            .0,
        503
    );
    let url = format!("ws://{}/ws?clientId=early", sim.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    sim.shutdown().await;

    // Without a delay it is ready at once.
    let sim = start().await;
    assert_eq!(sim.get("/api/system_stats").await.status(), 200);
    sim.shutdown().await;
}

/// A failing KSampler reports its inputs; a run without a client id sends
/// only what stock broadcasts.
#[tokio::test]
async fn failures_and_anonymous_runs() {
    let sim = start_with(SimOptions {
        fail_node: Some("KSampler".into()),
        ..quick()
    })
    .await;
    let mut client = sim.client("f", false).await;
    let id = sim.submit(txt2img(3, 2, "x", "f"), "f").await;
    let frames = json_frames(&client.until_done(&id).await);
    let error = frames
        .iter()
        .find(|f| f["type"] == "execution_error")
        .expect("error");
    let inputs = &error["data"]["current_inputs"];
    assert_eq!(inputs["seed"], json!([3]));
    assert_eq!(inputs["model"], json!(["MODEL(sim-sd-v1-5.safetensors)"]));
    assert_eq!(error["data"]["executed"], json!(["1", "3", "2"]));

    // No client_id: progress_state and status reach everyone, nothing else.
    let (status, answer) = sim.post("/prompt", json!({"prompt": trace_graph(7)})).await;
    assert_eq!(status, 200);
    let id = answer["prompt_id"].as_str().expect("id");
    let mut seen = Vec::new();
    loop {
        let frame = client.json().await;
        let done = frame["type"] == "status"
            && frame["data"]["status"]["exec_info"]["queue_remaining"] == 0;
        seen.push(frame["type"].as_str().unwrap_or_default().to_owned());
        if done {
            break;
        }
    }
    assert!(
        seen.iter().all(|k| k == "status" || k == "progress_state"),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|k| *k == "progress_state").count(), 8);
    let history = sim.get_json(&format!("/history/{id}")).await;
    assert_eq!(history[id]["status"]["status_str"], "success");
    sim.shutdown().await;
}
