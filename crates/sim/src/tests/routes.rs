//! Route shapes: catalogue and status routes, the WebSocket greeting,
//! `POST /prompt` answers, queue/history/interrupt, uploads and `/view`.

use serde_json::{Value, json};

use super::*;
use crate::stats;

#[tokio::test]
async fn serves_object_info_at_both_paths() {
    let sim = start().await;
    let all = sim.get_json("/object_info").await;
    assert_eq!(all, Value::Object(crate::catalogue()));

    let one = sim.get_json("/api/object_info/EmptyImage").await;
    let keys: Vec<&String> = one.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["EmptyImage"]);
    assert_eq!(one["EmptyImage"], all["EmptyImage"]);
    assert_eq!(sim.get_json("/object_info/Nope").await, json!({}));

    let missing = sim.get("/nope").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.expect("body"), "404: Not Found");
    sim.shutdown().await;
}

#[tokio::test]
async fn serves_status_routes() {
    let sim = start().await;
    for prefix in ["", "/api"] {
        let prompt = sim.get_json(&format!("{prefix}/prompt")).await;
        assert_eq!(prompt, trace("get_prompt")[1]);
        let queue = sim.get_json(&format!("{prefix}/queue")).await;
        assert_eq!(queue, trace("queue")[1]);
        assert_eq!(sim.get_json(&format!("{prefix}/history")).await, json!({}));
        let features = sim.get_json(&format!("{prefix}/features")).await;
        assert_eq!(features, stats::features());
        let system = sim.get_json(&format!("{prefix}/system_stats")).await;
        assert_eq!(
            system["system"]["comfyui_version"],
            format!("comfyume-sim {}", env!("CARGO_PKG_VERSION"))
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn websocket_greets_and_answers_feature_flags() {
    let sim = start().await;
    let url = format!("ws://{}/ws?clientId=clienta-536044d3", sim.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let mut client = Client { ws };
    // The exact frames of the stock recording, with our server flags.
    assert_eq!(client.json().await, trace("A_connect")[0]);
    let flags = json!({"supports_preview_metadata": true, "supports_manager_v4_ui": true, "supports_progress_text_metadata": true});
    client
        .send(json!({"type": "feature_flags", "data": flags}))
        .await;
    assert_eq!(
        client.json().await,
        json!({"type": "feature_flags", "data": stats::features()})
    );
    sim.shutdown().await;
    // Shutdown closes the socket rather than leaving it open.
    assert!(matches!(client.next().await, Frame::Closed));
}

#[tokio::test]
async fn websocket_without_client_id_gets_a_hex_sid() {
    let sim = start().await;
    let url = format!("ws://{}/api/ws", sim.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let mut client = Client { ws };
    let hello = client.json().await;
    let sid = hello["data"]["sid"].as_str().expect("sid");
    assert_eq!(sid.len(), 32, "{sid}");
    assert!(
        sid.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn websocket_ignores_feature_flags_that_come_late() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let sim = start().await;
    let mut client = sim.client("late", false).await;
    client.send(json!({"type": "hello", "data": {}})).await;
    client
        .send(json!({"type": "feature_flags", "data": {}}))
        .await;
    // The server handles frames in order, so its pong to this ping comes
    // after any reply it would have sent to the frames above.
    client
        .ws
        .send(Message::Ping(b"after".to_vec().into()))
        .await
        .expect("ping");
    match client.ws.next().await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"after"),
        other => panic!("expected only a pong, got {other:?}"),
    }
    sim.shutdown().await;
}

/// `POST /prompt` errors, byte for byte as recorded, and a client-chosen
/// id and number.
#[tokio::test]
async fn prompt_answers_match_the_trace() {
    let sim = start().await;
    let cases = [
        (json!({}), "validation_no_prompt"),
        (
            json!({"prompt": trace_graph(0), "prompt_id": "NOT-A-UUID"}),
            "validation_bad_prompt_id",
        ),
        (
            json!({"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}),
            "validation_unknown_class",
        ),
        (
            json!({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}}),
            "validation_no_outputs",
        ),
        (
            json!({"prompt": {
                "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
            }}),
            "validation_missing_input",
        ),
        (
            json!({"prompt": {
                "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
            }}),
            "value_out_of_range",
        ),
    ];
    for (body, key) in cases {
        let (status, answer) = sim.post("/api/prompt", body).await;
        assert_eq!(json!([status, answer]), trace(key), "{key}");
    }
    let chosen = "5c338b85-d309-4661-9bff-ac8db318bbbe";
    let (status, answer) = sim
        .post(
            "/prompt",
            json!({"prompt": trace_graph(1), "prompt_id": chosen, "number": 5}),
        )
        .await;
    assert_eq!(json!([status, answer]), trace("client_prompt_id"));
    sim.shutdown().await;
}

/// Reads frames until a `progress` (the prompt keeps going) or an
/// `execution_interrupted` (it stopped).
async fn next_step_or_stop(client: &mut Client) -> String {
    loop {
        let frame = client.json().await;
        if frame["type"] == "progress" || frame["type"] == "execution_interrupted" {
            return frame["type"].as_str().unwrap_or_default().to_owned();
        }
    }
}

/// Queue numbers, `front`, deleting and clearing pending prompts,
/// targeted and global interrupts, and history paging and deletion.
#[tokio::test]
async fn queue_interrupt_and_history_routes() {
    let sim = start_with(SimOptions {
        step_time: std::time::Duration::from_millis(20),
        ..quick()
    })
    .await;
    let mut client = sim.client("q", false).await;
    let slow = sim.submit(txt2img(7, 10_000, "slow", "slow"), "q").await;
    assert_eq!(next_step_or_stop(&mut client).await, "progress");

    let back = sim.submit(trace_graph(1), "q").await;
    let (_, front) = sim
        .post(
            "/prompt",
            json!({"prompt": trace_graph(2), "client_id": "q", "front": true}),
        )
        .await;
    let (_, numbered) = sim
        .post(
            "/prompt",
            json!({"prompt": trace_graph(3), "client_id": "q", "number": 9}),
        )
        .await;
    assert_eq!(front["number"], -2);
    assert_eq!(numbered["number"], 9.0);
    let front = front["prompt_id"].as_str().expect("id").to_owned();
    let numbered = numbered["prompt_id"].as_str().expect("id").to_owned();

    let queue = sim.get_json("/api/queue").await;
    let running = &queue["queue_running"][0];
    assert_eq!(running[0], 0);
    assert_eq!(running[1], slow.as_str());
    assert_eq!(running[2]["4"]["class_type"], "KSampler");
    assert_eq!(running[3]["client_id"], "q");
    assert!(running[3]["create_time"].is_u64());
    assert_eq!(running[4], json!(["6"]));
    let pending: Vec<&str> = queue["queue_pending"]
        .as_array()
        .expect("pending")
        .iter()
        .filter_map(|item| item[1].as_str())
        .collect();
    assert_eq!(pending.len(), 3);
    assert_eq!(pending[0], front, "the heap's root is the front prompt");
    assert_eq!(
        sim.get_json("/prompt").await,
        json!({"exec_info": {"queue_remaining": 4}})
    );

    assert_eq!(
        sim.post("/queue", json!({"delete": [numbered, slow]}))
            .await,
        (200, Value::Null)
    );
    assert_eq!(
        sim.get_json("/prompt").await["exec_info"]["queue_remaining"],
        3
    );

    // Interrupting a prompt that is not running does nothing.
    assert_eq!(
        sim.post("/interrupt", json!({"prompt_id": back})).await.0,
        200
    );
    assert_eq!(next_step_or_stop(&mut client).await, "progress");
    // Without a prompt id, whatever runs stops.
    assert_eq!(sim.post("/api/interrupt", json!({})).await.0, 200);
    assert_eq!(
        next_step_or_stop(&mut client).await,
        "execution_interrupted"
    );
    client.until_done(&slow).await;

    // The front prompt runs before the one queued earlier.
    assert_eq!(
        client.until("execution_start").await["data"]["prompt_id"],
        front.as_str()
    );
    client.until_done(&front).await;
    assert_eq!(
        client.until("execution_start").await["data"]["prompt_id"],
        back.as_str()
    );
    client.until_done(&back).await;

    let history = sim.get_json("/history").await;
    let keys: Vec<&String> = history.as_object().expect("object").keys().collect();
    assert_eq!(keys, [&slow, &front, &back]);
    assert_eq!(history[&slow]["status"]["status_str"], "error");
    assert_eq!(history[&front]["status"]["status_str"], "success");
    let last = sim.get_json("/history?max_items=1").await;
    assert_eq!(
        last.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec![back.clone()])
    );
    assert_eq!(sim.get("/history?max_items=x").await.status(), 500);
    assert_eq!(
        sim.get_json(&format!("/history/{}", uuid::Uuid::new_v4()))
            .await,
        json!({})
    );

    assert_eq!(sim.post("/history", json!({"delete": [slow]})).await.0, 200);
    assert_eq!(
        sim.get_json(&format!("/api/history/{slow}")).await,
        trace("history_after_delete")
    );
    assert_eq!(
        sim.post("/api/history", json!({"clear": true})).await.0,
        200
    );
    assert_eq!(sim.get_json("/history").await, json!({}));
    assert_eq!(sim.post("/queue", json!({"clear": true})).await.0, 200);
    assert_eq!(
        client.json().await["data"]["status"]["exec_info"]["queue_remaining"],
        0
    );
    sim.shutdown().await;
}

async fn upload(sim: &Sim, name: &str, bytes: &[u8], fields: &[(&str, &str)]) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned()),
    );
    for (k, v) in fields {
        form = form.text((*k).to_owned(), (*v).to_owned());
    }
    let response = reqwest::Client::new()
        .post(sim.url("/upload/image"))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Upload naming as recorded, then `/view`'s folders, annotations and
/// refusals.
#[tokio::test]
async fn uploads_and_view_follow_stock() {
    let sim = start().await;
    let first = crate::png::encode_rgba8(1, 1, &[1, 2, 3, 4]).expect("png");
    let second = crate::png::encode_rgba8(1, 1, &[9, 9, 9, 9]).expect("png");
    let expect = |key: &str| {
        let recorded = trace(key);
        (
            recorded[0].as_u64().unwrap_or(0) as u16,
            recorded[1].clone(),
        )
    };
    assert_eq!(
        upload(&sim, "g.png", &first, &[]).await,
        expect("upload_image")
    );
    assert_eq!(
        upload(&sim, "g.png", &first, &[]).await,
        expect("upload_image_dup")
    );
    assert_eq!(
        upload(&sim, "g.png", &second, &[]).await,
        expect("upload_image_rename")
    );
    assert_eq!(
        upload(
            &sim,
            "g.png",
            &second,
            &[("subfolder", "pasted"), ("overwrite", "true")]
        )
        .await,
        expect("upload_image_sub_overwrite")
    );
    assert_eq!(upload(&sim, "../g.png", &first, &[]).await.0, 400);
    assert_eq!(
        upload(&sim, "g.png", &first, &[("subfolder", "../..")])
            .await
            .0,
        400
    );
    assert_eq!(
        upload(&sim, "g.png", &first, &[("type", "bogus")]).await.0,
        500
    );

    let info = sim.get_json("/object_info/LoadImage").await;
    assert_eq!(
        info["LoadImage"]["input"]["required"]["image"][0],
        json!(["g (1).png", "g.png"])
    );

    let server = &sim;
    let status = |path: &'static str| async move { server.get(path).await.status().as_u16() };
    assert_eq!(status("/view?filename=g.png&type=input").await, 200);
    assert_eq!(
        status("/view?filename=g.png%20%5Binput%5D").await,
        trace("view_annotated")
    );
    assert_eq!(
        status("/view?filename=g.png&type=input&subfolder=pasted").await,
        200
    );
    assert_eq!(
        status("/view?filename=missing.png").await,
        trace("view_404")
    );
    assert_eq!(
        status("/view?filename=../secret").await,
        trace("view_traversal")
    );
    assert_eq!(status("/view?filename=g.png&type=bogus").await, 400);
    assert_eq!(
        status("/view?filename=g.png&type=input&subfolder=../..").await,
        403
    );
    assert_eq!(status("/view").await, 404);

    let alpha = sim
        .get("/api/view?filename=g.png&type=input&channel=a")
        .await;
    assert_eq!(alpha.headers()["content-type"], "image/png");
    let decoded = crate::png::decode(&alpha.bytes().await.expect("bytes")).expect("png");
    assert_eq!(decoded.alpha, Some(vec![4.0 / 255.0]));
    assert_eq!(decoded.image.to_rgb8(0), [0, 0, 0]);
    let rgb = sim.get("/view?filename=g.png&type=input&channel=rgb").await;
    let (_, _, pixels) = decode_png(&rgb.bytes().await.expect("bytes"));
    assert_eq!(pixels, [1, 2, 3]);
    sim.shutdown().await;
}

/// `POST /free {"free_memory": true}` empties the cache before the next prompt.
#[tokio::test]
async fn free_memory_drops_the_cache() {
    let sim = start().await;
    let mut client = sim.client("free", false).await;
    let mut cached = Vec::new();
    for free_first in [false, false, true] {
        if free_first {
            assert_eq!(
                sim.post("/api/free", json!({"free_memory": true})).await.0,
                200
            );
        }
        let id = sim.submit(trace_graph(5), "free").await;
        let frames = json_frames(&client.until_done(&id).await);
        let nodes = frames
            .iter()
            .find(|f| f["type"] == "execution_cached")
            .map(|f| f["data"]["nodes"].clone())
            .expect("execution_cached");
        cached.push(nodes);
    }
    assert_eq!(cached, [json!([]), json!(["1", "2", "3", "4"]), json!([])]);
    sim.shutdown().await;
}
