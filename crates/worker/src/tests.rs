//! The worker end to end: a real worker in front of a real simulator, both
//! on loopback ports, driven through [`WorkerClient`] (and raw HTTP where a
//! status code is the point).
//!
//! Nothing here waits a fixed time: where a test must wait for the
//! simulator's state to change, it polls that state in a bounded loop.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use comfyume_protocol::Secret;
use comfyume_protocol::extension;
use comfyume_protocol::worker::stream::{Frame, Outcome};
use comfyume_protocol::worker::{InputFile, RunRequest, WorkerClient, WorkerError};
use comfyume_sim::SimOptions;

use crate::WorkerArgs;

const TOKEN: &str = "test-token-0123456789";

/// A simulator and a worker in front of it; dropping it stops both.
struct Rig {
    client: WorkerClient,
    worker_url: String,
    sim_url: String,
    http: reqwest::Client,
    /// Starts the worker's graceful shutdown.
    stop_worker: Option<oneshot::Sender<()>>,
    /// The worker's `run`.
    worker: tokio::task::JoinHandle<std::io::Result<()>>,
    _stop_sim: oneshot::Sender<()>,
}

async fn rig(sim: SimOptions, adjust: impl FnOnce(&mut WorkerArgs)) -> Rig {
    // TEST_LOG=1 (or a filter): the worker's and simulator's logs, shown
    // for failing tests.
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let filter = if filter == "1" {
            "info".to_string()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
    let sim_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    let sim_url = format!("http://{}", sim_listener.local_addr().expect("sim addr"));
    let (stop_sim, rx) = oneshot::channel::<()>();
    tokio::spawn(comfyume_sim::run_with(sim_listener, sim, async move {
        let _ = rx.await;
    }));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
    let addr = listener.local_addr().expect("worker addr");
    let mut args = WorkerArgs {
        comfyui: sim_url.clone(),
        listen: addr,
        token: Secret::new(TOKEN),
        max_jobs: 1,
        ready_timeout_secs: 120,
    };
    adjust(&mut args);
    let (stop_worker, rx) = oneshot::channel::<()>();
    let worker = tokio::spawn(crate::run(listener, args, async move {
        let _ = rx.await;
    }));
    let worker_url = format!("http://{addr}");
    let http = WorkerClient::http_client().expect("http client");
    Rig {
        client: WorkerClient::new(worker_url.clone(), Secret::new(TOKEN), http.clone()),
        worker_url,
        sim_url,
        http,
        stop_worker: Some(stop_worker),
        worker,
        _stop_sim: stop_sim,
    }
}

fn job_id() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

fn request(prompt: Value) -> RunRequest {
    let Value::Object(prompt) = prompt else {
        panic!("a prompt is an object")
    };
    RunRequest {
        job_id: job_id(),
        prompt,
        extra_data: Map::new(),
        partial_execution_targets: None,
        inputs: Vec::new(),
    }
}

/// Text to image: a sampler of `steps` steps, then SaveImage.
fn txt2img(steps: u32) -> Value {
    json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sim-dreamshaper-8.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 7, "steps": steps, "cfg": 7.0,
              "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0],
              "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "worker"}},
    })
}

/// Reads the whole stream. The bound only keeps a broken test from
/// hanging the suite; nothing is asserted about time.
async fn collect(stream: impl Stream<Item = Result<Frame, WorkerError>>) -> Vec<Frame> {
    let read = async {
        let mut stream = std::pin::pin!(stream);
        let mut frames = Vec::new();
        while let Some(frame) = stream.next().await {
            frames.push(frame.expect("a valid stream"));
        }
        frames
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the stream ended")
}

/// A text frame's `type` and `data`.
fn text_event(frame: &Frame) -> Option<(String, Value)> {
    let Frame::Text(text) = frame else {
        return None;
    };
    let v: Value = serde_json::from_str(text).expect("ComfyUI frames are JSON");
    Some((v["type"].as_str()?.to_string(), v["data"].clone()))
}

fn states(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Progress(p) => p.get("state").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// Checks the stream's invariants: every text frame is of this job and no
/// `status`/`feature_flags`; each file comes before the `executed` naming
/// it; the last two frames are `executing{node:null}` and END. Returns the
/// END outcome.
fn check_stream(frames: &[Frame], job: &str) -> Outcome {
    let mut files_seen = Vec::new();
    for frame in frames {
        match frame {
            Frame::File { header, data } => {
                assert!(!data.is_empty(), "{header:?} has content");
                files_seen.push(header.filename.clone());
            }
            Frame::Text(_) => {
                let (kind, data) = text_event(frame).expect("typed");
                assert!(
                    kind != "status" && kind != "feature_flags",
                    "{kind} relayed"
                );
                assert_eq!(data["prompt_id"], json!(job), "{kind} is of this job");
                if kind == "executed" {
                    for file in comfyume_protocol::frames::output_files(&data["output"]) {
                        assert!(
                            files_seen.contains(&file.filename),
                            "{} arrived before its executed",
                            file.filename
                        );
                    }
                }
            }
            _ => {}
        }
    }
    let n = frames.len();
    assert!(n >= 2, "{frames:?}");
    let (kind, data) = text_event(&frames[n - 2]).expect("the final executing");
    assert_eq!(kind, "executing");
    assert_eq!(data["node"], Value::Null);
    match &frames[n - 1] {
        Frame::End { outcome } => *outcome,
        other => panic!("the stream ended with {other:?}"),
    }
}

fn png_2x2() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 2, 2);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("png header");
        writer
            .write_image_data(&[255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])
            .expect("png data");
    }
    out
}

/// Polls the simulator's history for `id` until `done` accepts it.
async fn wait_for_history(rig: &Rig, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let history: Value = rig
            .http
            .get(format!("{}/history/{id}", rig.sim_url))
            .send()
            .await
            .expect("sim history")
            .json()
            .await
            .expect("history JSON");
        if let Some(entry) = history.get(id).filter(|e| done(e)) {
            return entry.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the simulator's history never showed the expected state for {id}");
}

/// Polls the worker's health until `done` accepts it.
async fn wait_for_health(rig: &Rig, done: impl Fn(&comfyume_protocol::worker::Health) -> bool) {
    for _ in 0..600 {
        if let Ok(health) = rig.client.health().await
            && done(&health)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker's health never reached the expected state");
}

#[tokio::test]
async fn a_job_streams_events_then_files_before_executed_then_end() {
    let rig = rig(
        SimOptions {
            step_time: Duration::from_millis(1),
            ..SimOptions::default()
        },
        |_| {},
    )
    .await;
    let req = request(txt2img(3));
    let id = req.job_id.to_string();
    let frames = collect(rig.client.run(&req)).await;

    assert_eq!(check_stream(&frames, &id), Outcome::Success);
    assert_eq!(states(&frames).first().map(String::as_str), Some("queued"));
    let kinds: Vec<String> = frames
        .iter()
        .filter_map(text_event)
        .map(|(k, _)| k)
        .collect();
    for expected in [
        "execution_start",
        "executing",
        "progress",
        "executed",
        "execution_success",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} in {kinds:?}"
        );
    }
    // The sampler's previews, with metadata naming this job.
    assert!(frames.iter().any(
        |f| matches!(f, Frame::Binary(b) if comfyume_protocol::frames::binary_type(b) == Some(4))
    ));

    // The file is the simulator's own output, byte for byte.
    let (header, data) = frames
        .iter()
        .find_map(|f| match f {
            Frame::File { header, data } => Some((header.clone(), data.clone())),
            _ => None,
        })
        .expect("an output file");
    assert_eq!(header.kind, "output");
    assert!(data.starts_with(b"\x89PNG"));
    let direct = rig
        .http
        .get(format!("{}/view", rig.sim_url))
        .query(&[
            ("filename", header.filename.as_str()),
            ("subfolder", header.subfolder.as_str()),
            ("type", "output"),
        ])
        .send()
        .await
        .expect("sim view")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(data, direct);
}

#[tokio::test]
async fn run_needs_the_token() {
    let rig = rig(SimOptions::default(), |_| {}).await;
    let body = serde_json::to_value(request(txt2img(1))).expect("json");
    for auth in [None, Some("Bearer wrong"), Some("Basic dGVzdA==")] {
        let mut post = rig.http.post(format!("{}/v1/run", rig.worker_url));
        if let Some(auth) = auth {
            post = post.header("authorization", auth);
        }
        let answer = post.json(&body).send().await.expect("answer");
        assert_eq!(answer.status(), 401, "{auth:?}");
    }
    let wrong = WorkerClient::new(
        rig.worker_url.clone(),
        Secret::new("nope"),
        rig.http.clone(),
    );
    let mut stream = std::pin::pin!(wrong.run(&request(txt2img(1))));
    assert!(matches!(
        stream.next().await,
        Some(Err(WorkerError::Unauthorized))
    ));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn bad_bodies_are_refused_with_400() {
    let rig = rig(SimOptions::default(), |_| {}).await;
    let good = serde_json::to_value(request(txt2img(1))).expect("json");
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let png = png_2x2();
    let input = |name: &str, sha: &str, data: Option<&str>| {
        let mut i = json!({"name": name, "sha256": sha});
        if let Some(d) = data {
            i["data"] = json!(d);
        }
        i
    };
    let right_sha = comfyume_protocol::worker::sha256_hex(&png);
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&png)
    };
    let cases = [
        with("job_id", json!("not-a-uuid")),
        with(
            "job_id",
            json!(uuid::Uuid::new_v4().to_string().to_uppercase()),
        ),
        with("prompt", json!([1, 2])),
        with("inputs", json!([input("../x.png", &right_sha, None)])),
        with("inputs", json!([input("x.png", "abc", None)])),
        with(
            "inputs",
            json!([input("x.png", &"0".repeat(64), Some(&b64))]),
        ),
        with("inputs", json!([input("x.png", &right_sha, Some("%%%"))])),
        with(
            "inputs",
            json!([
                input("x.png", &right_sha, None),
                input("x.png", &right_sha, None)
            ]),
        ),
    ];
    for body in cases {
        let answer = rig
            .http
            .post(format!("{}/v1/run", rig.worker_url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status(), 400, "{body}");
        let message: Value = answer.json().await.expect("json error");
        assert!(message["error"].is_string(), "{message}");
    }
    let answer = rig
        .http
        .post(format!("{}/v1/run", rig.worker_url))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 400);
}

#[tokio::test]
async fn a_missing_content_addressed_input_is_409_then_runs_when_sent() {
    let rig = rig(SimOptions::default(), |_| {}).await;
    let png = png_2x2();
    let name = format!(
        "comfyume-{}.png",
        &comfyume_protocol::worker::sha256_hex(&png)[..16]
    );
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inverted"}},
    });
    let with_data = InputFile::with_data(name.clone(), png.clone());
    let mut req = request(prompt);
    req.inputs = vec![with_data.by_hash()];

    let mut first = std::pin::pin!(rig.client.run(&req));
    match first.next().await {
        Some(Err(WorkerError::MissingInputs(missing))) => assert_eq!(missing, vec![name.clone()]),
        other => panic!("expected 409, got {other:?}"),
    }

    req.inputs = vec![with_data.clone()];
    let frames = collect(rig.client.run(&req)).await;
    assert_eq!(
        check_stream(&frames, &req.job_id.to_string()),
        Outcome::Success
    );
    assert!(frames.iter().any(|f| matches!(f, Frame::File { .. })));

    // Now that this ComfyUI has it, the reference alone is enough.
    req.job_id = job_id();
    req.inputs = vec![with_data.by_hash()];
    let frames = collect(rig.client.run(&req)).await;
    assert_eq!(
        check_stream(&frames, &req.job_id.to_string()),
        Outcome::Success
    );

    // A file of that name with other content does not count.
    let mut other = with_data.by_hash();
    other.sha256 = comfyume_protocol::worker::sha256_hex(b"something else");
    req.job_id = job_id();
    req.inputs = vec![other];
    let mut stream = std::pin::pin!(rig.client.run(&req));
    assert!(matches!(
        stream.next().await,
        Some(Err(WorkerError::MissingInputs(_)))
    ));
}

#[tokio::test]
async fn a_cold_comfyui_is_waited_for_and_reported() {
    let rig = rig(
        SimOptions {
            startup_delay: Duration::from_secs(5),
            step_time: Duration::from_millis(1),
            ..SimOptions::default()
        },
        |_| {},
    )
    .await;
    let health = rig.client.health().await.expect("health");
    assert_eq!(health.status, "starting");
    assert_eq!(health.comfyui, rig.sim_url);
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));

    // Cold: a content-addressed input cannot be checked, so it is "missing".
    let mut req = request(txt2img(2));
    req.inputs = vec![InputFile::with_data("unused.png", png_2x2()).by_hash()];
    let mut refused = std::pin::pin!(rig.client.run(&req));
    assert!(matches!(
        refused.next().await,
        Some(Err(WorkerError::MissingInputs(_)))
    ));

    let req = request(txt2img(2));
    let frames = collect(rig.client.run(&req)).await;
    let states = states(&frames);
    assert_eq!(
        states.first().map(String::as_str),
        Some("waiting_for_comfyui")
    );
    let waits: Vec<&Map<String, Value>> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Progress(p) if p["state"] == "waiting_for_comfyui" => Some(p),
            _ => None,
        })
        .collect();
    assert!(waits.iter().all(|p| p["waited_ms"].is_u64()));
    let queued = states.iter().position(|s| s == "queued").expect("queued");
    assert!(states[..queued].iter().all(|s| s == "waiting_for_comfyui"));
    assert_eq!(
        check_stream(&frames, &req.job_id.to_string()),
        Outcome::Success
    );

    let health = rig.client.health().await.expect("health");
    assert!(health.is_ready());
    assert_eq!(health.running, 0);
}

#[tokio::test]
async fn a_comfyui_that_never_comes_up_is_an_error_frame() {
    let rig = rig(
        SimOptions {
            startup_delay: Duration::from_secs(3600),
            ..SimOptions::default()
        },
        |args| args.ready_timeout_secs = 1,
    )
    .await;
    let frames = collect(rig.client.run(&request(txt2img(1)))).await;
    match frames.last() {
        Some(Frame::Error { message, rejected }) => {
            assert!(message.contains("did not become ready"), "{message}");
            assert_eq!(rejected, &None);
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
    assert!(
        states(&frames[..frames.len() - 1])
            .iter()
            .all(|s| s == "waiting_for_comfyui")
    );
}

#[tokio::test]
async fn a_node_failure_is_relayed_then_end_error() {
    let rig = rig(
        SimOptions {
            fail_node: Some("KSampler".into()),
            ..SimOptions::default()
        },
        |_| {},
    )
    .await;
    let req = request(txt2img(2));
    let frames = collect(rig.client.run(&req)).await;
    assert_eq!(
        check_stream(&frames, &req.job_id.to_string()),
        Outcome::Error
    );
    let (_, error) = frames
        .iter()
        .filter_map(text_event)
        .find(|(k, _)| k == "execution_error")
        .expect("execution_error relayed");
    assert_eq!(error["node_type"], "KSampler");
    assert!(error["traceback"].is_array());
}

#[tokio::test]
async fn a_refused_prompt_is_an_error_frame_with_comfyuis_body() {
    let rig = rig(SimOptions::default(), |_| {}).await;
    let req = request(json!({"1": {"class_type": "NoSuchNode", "inputs": {}}}));
    let frames = collect(rig.client.run(&req)).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    match &frames[0] {
        Frame::Error { message, rejected } => {
            assert!(message.contains("refused"), "{message}");
            let rejected = rejected.as_ref().expect("ComfyUI's 400 body");
            assert_eq!(rejected["error"]["type"], "missing_node_type");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert_eq!(rig.client.health().await.expect("health").running, 0);
}

#[tokio::test]
async fn a_caller_that_disconnects_gets_its_job_interrupted() {
    let rig = rig(
        SimOptions {
            step_time: Duration::from_millis(100),
            ..SimOptions::default()
        },
        |_| {},
    )
    .await;
    let req = request(txt2img(50));
    let id = req.job_id.to_string();
    {
        let mut stream = std::pin::pin!(rig.client.run(&req));
        loop {
            let frame = stream
                .next()
                .await
                .expect("frames until progress")
                .expect("valid");
            if text_event(&frame).is_some_and(|(k, _)| k == "progress") {
                break;
            }
        }
        // Dropping the stream closes the connection mid-job.
    }
    let entry = wait_for_history(&rig, &id, |_| true).await;
    let messages = entry["status"]["messages"].as_array().expect("messages");
    assert!(
        messages.iter().any(|m| m[0] == "execution_interrupted"),
        "{entry}"
    );
    assert_eq!(entry["status"]["completed"], false);
    // The slot is free again once ComfyUI let go of the job.
    wait_for_health(&rig, |h| h.running == 0).await;
    let frames = collect(rig.client.run(&request(txt2img(1)))).await;
    assert!(matches!(
        frames.last(),
        Some(Frame::End {
            outcome: Outcome::Success
        })
    ));
}

#[tokio::test]
async fn a_departed_callers_pending_job_leaves_comfyuis_queue() {
    let rig = rig(
        SimOptions {
            step_time: Duration::from_millis(100),
            ..SimOptions::default()
        },
        |args| args.max_jobs = 2,
    )
    .await;
    let running = request(txt2img(50));
    // Boxed, so that dropping it below really closes the connection.
    let mut first = Box::pin(rig.client.run(&running));
    loop {
        let frame = first.next().await.expect("frames").expect("valid");
        if text_event(&frame).is_some_and(|(k, _)| k == "progress") {
            break;
        }
    }
    // The simulator runs one prompt at a time: this one waits in its queue.
    let pending = request(txt2img(2));
    let pending_id = pending.job_id.to_string();
    {
        let mut second = std::pin::pin!(rig.client.run(&pending));
        loop {
            let frame = second.next().await.expect("frames").expect("valid");
            if matches!(&frame, Frame::Progress(p) if p["state"] == "queued") {
                break;
            }
        }
    }
    // The worker takes it out of the queue and frees its slot, while the
    // first job runs on.
    wait_for_health(&rig, |h| h.running == 1).await;
    let queue: Value = rig
        .http
        .get(format!("{}/queue", rig.sim_url))
        .send()
        .await
        .expect("sim queue")
        .json()
        .await
        .expect("queue JSON");
    assert!(!queue.to_string().contains(&pending_id), "{queue}");
    assert_eq!(
        queue["queue_running"][0][1],
        json!(running.job_id.to_string())
    );

    drop(first);
    let entry = wait_for_history(&rig, &running.job_id.to_string(), |_| true).await;
    assert_eq!(
        entry["status"]["status_str"], "error",
        "interrupted: {entry}"
    );
    wait_for_health(&rig, |h| h.running == 0).await;
    let history: Value = rig
        .http
        .get(format!("{}/history/{pending_id}", rig.sim_url))
        .send()
        .await
        .expect("sim history")
        .json()
        .await
        .expect("history JSON");
    assert_eq!(history, json!({}), "the pending job never ran");
}

#[tokio::test]
async fn a_busy_worker_answers_429() {
    let rig = rig(
        SimOptions {
            step_time: Duration::from_millis(100),
            ..SimOptions::default()
        },
        |_| {},
    )
    .await;
    let long = request(txt2img(50));
    let mut first = Box::pin(rig.client.run(&long));
    // The first frame means the response started, so the slot is taken.
    first.next().await.expect("a frame").expect("valid");
    assert_eq!(rig.client.health().await.expect("health").running, 1);

    let mut second = std::pin::pin!(rig.client.run(&request(txt2img(1))));
    assert!(matches!(second.next().await, Some(Err(WorkerError::Busy))));
    let answer = rig
        .http
        .post(format!("{}/v1/run", rig.worker_url))
        .bearer_auth(TOKEN)
        .json(&request(txt2img(1)))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 429);
    assert_eq!(
        answer.json::<Value>().await.expect("json"),
        json!({"error": "busy"})
    );
    // Leave nothing running behind (the simulator's sampler would hold
    // the test's runtime until it finished).
    drop(first);
    wait_for_health(&rig, |h| h.running == 0).await;
}

#[tokio::test]
async fn the_same_job_twice_at_once_is_refused() {
    let rig = rig(
        SimOptions {
            step_time: Duration::from_millis(100),
            ..SimOptions::default()
        },
        |args| args.max_jobs = 2,
    )
    .await;
    let long = request(txt2img(50));
    let mut first = Box::pin(rig.client.run(&long));
    first.next().await.expect("a frame").expect("valid");
    let mut again = std::pin::pin!(rig.client.run(&long));
    assert!(matches!(again.next().await, Some(Err(WorkerError::Busy))));
    // Another job still fits.
    let mut other = Box::pin(rig.client.run(&request(txt2img(1))));
    assert!(matches!(other.next().await, Some(Ok(_))));
    drop((first, other));
    wait_for_health(&rig, |h| h.running == 0).await;
}

#[tokio::test]
async fn a_dropped_comfyui_socket_is_reconnected_and_the_job_completes() {
    let rig = rig(
        SimOptions {
            step_time: Duration::from_millis(5),
            drop_after_steps: Some(2),
            ..SimOptions::default()
        },
        |_| {},
    )
    .await;
    let req = request(txt2img(6));
    let frames = collect(rig.client.run(&req)).await;
    assert_eq!(
        check_stream(&frames, &req.job_id.to_string()),
        Outcome::Success
    );
    // The output reached the caller, from the socket or rebuilt from history.
    assert!(frames.iter().any(|f| matches!(f, Frame::File { .. })));
    let executed = frames
        .iter()
        .filter_map(text_event)
        .filter(|(k, d)| k == "executed" && d["node"] == "7")
        .count();
    assert_eq!(executed, 1);
}

#[tokio::test]
async fn shutting_down_lets_the_running_job_finish() {
    let mut rig = rig(
        SimOptions {
            step_time: Duration::from_millis(20),
            ..SimOptions::default()
        },
        |_| {},
    )
    .await;
    let req = request(txt2img(10));
    let mut stream = Box::pin(rig.client.run(&req));
    let first = stream.next().await.expect("a frame").expect("valid");
    // What a platform's SIGTERM does to `comfyume worker`.
    if let Some(stop) = rig.stop_worker.take() {
        let _ = stop.send(());
    }
    let mut frames = vec![first];
    frames.extend(collect(stream).await);
    assert_eq!(
        check_stream(&frames, &req.job_id.to_string()),
        Outcome::Success
    );
    let served = tokio::time::timeout(Duration::from_secs(60), &mut rig.worker)
        .await
        .expect("the worker stops once its job is done");
    assert!(matches!(served, Ok(Ok(()))), "{served:?}");
    assert!(rig.client.health().await.is_err(), "no longer listening");
}

impl Rig {
    /// `GET path` on the worker (`POST` with `body`), with the token or
    /// without.
    async fn call(&self, path: &str, token: bool, body: Option<Value>) -> reqwest::Response {
        let url = format!("{}{path}", self.worker_url);
        let mut request = match body {
            Some(body) => self.http.post(url).json(&body),
            None => self.http.get(url),
        };
        if token {
            request = request.bearer_auth(TOKEN);
        }
        request.send().await.expect("answer")
    }
}

/// The relays of ComfyUME's backend extension need the token; in front of
/// a ComfyUI without the extension (the simulator) they say so with 404.
#[tokio::test]
async fn the_extensions_relays_need_the_token_and_say_when_it_is_missing() {
    let rig = rig(SimOptions::default(), |_| {}).await;
    let calls = || Some(json!({"calls": []}));
    for (path, body) in [
        (extension::WORKER_SIGNATURES, None),
        (extension::WORKER_VALIDATE_INPUTS, calls()),
    ] {
        let anonymous = rig.call(path, false, body.clone()).await;
        assert_eq!(anonymous.status(), 401, "{path}");
        let missing = rig.call(path, true, body).await;
        assert_eq!(missing.status(), 404, "{path}");
        let answer: Value = missing.json().await.expect("json");
        assert!(
            answer["error"].as_str().unwrap().contains("extension"),
            "{path}: {answer}"
        );
    }
}

/// ComfyUI's read-only routes are relayed behind the token, and nothing
/// else is: not the queue, not files, not a path that climbs out.
#[tokio::test]
async fn only_comfyuis_read_only_routes_are_relayed() {
    let rig = rig(SimOptions::default(), |_| {}).await;
    let get = |path: &'static str, token: bool| rig.call(path, token, None);
    assert_eq!(get("/v1/comfyui/models", false).await.status(), 401);
    // ComfyUI's answer as it comes: the simulator's checkpoints, and its
    // own 404 for a route it does not have.
    let relayed = get("/v1/comfyui/models/checkpoints", true).await;
    assert_eq!(relayed.status(), 200);
    let own: Value = rig
        .http
        .get(format!("{}/models/checkpoints", rig.sim_url))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(relayed.json::<Value>().await.expect("json"), own);
    assert_eq!(get("/v1/comfyui/extensions", true).await.status(), 404);
    for refused in [
        "/v1/comfyui/prompt",
        "/v1/comfyui/view?filename=x.png",
        "/v1/comfyui/extensions/pack/%2e%2e/%2e%2e/prompt",
    ] {
        let answer = get(refused, true).await;
        assert_eq!(answer.status(), 404, "{refused}");
        let body: Value = answer.json().await.expect("json");
        assert_eq!(body["error"], "not a route the worker relays", "{refused}");
    }
}

#[tokio::test]
async fn health_is_open_and_reports_ready() {
    let rig = rig(SimOptions::default(), |args| args.max_jobs = 3).await;
    let answer = rig
        .http
        .get(format!("{}/v1/health", rig.worker_url))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(
        body,
        json!({"status": "ready", "comfyui": rig.sim_url, "running": 0, "version": env!("CARGO_PKG_VERSION")})
    );
}

#[test]
fn the_flags_parse_with_their_defaults() {
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }
    let cli = Cli::try_parse_from(["worker", "--token", "t"]).expect("defaults");
    assert_eq!(cli.worker.comfyui, "http://127.0.0.1:8188");
    assert_eq!(cli.worker.listen.to_string(), "0.0.0.0:9188");
    assert_eq!(cli.worker.token.expose(), "t");
    assert_eq!(cli.worker.max_jobs, 1);
    assert_eq!(cli.worker.ready_timeout_secs, 600);
    assert!(!format!("{:?}", cli.worker).contains("\"t\""));

    let cli = Cli::try_parse_from([
        "worker",
        "--token",
        "t",
        "--comfyui",
        "http://10.0.0.5:8188/",
        "--listen",
        "127.0.0.1:9999",
        "--max-jobs",
        "4",
        "--ready-timeout-secs",
        "30",
    ])
    .expect("all flags");
    assert_eq!(cli.worker.comfyui, "http://10.0.0.5:8188");
    assert_eq!(cli.worker.max_jobs, 4);
    assert_eq!(cli.worker.ready_timeout_secs, 30);

    for bad in [
        vec!["worker", "--token", "t", "--max-jobs", "0"],
        vec!["worker", "--token", "t", "--comfyui", "ftp://x"],
        vec!["worker", "--token", " "],
    ] {
        assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
    }
    // Without the environment variable, the token is required.
    if std::env::var_os("COMFYUME_WORKER_TOKEN").is_none() {
        assert!(Cli::try_parse_from(["worker"]).is_err());
    }
}

#[test]
fn requests_serialise_inputs_as_base64_and_refuse_odd_ids() {
    let mut req = request(json!({"1": {}}));
    req.inputs = vec![
        InputFile::with_data("a.png", b"abc".to_vec()),
        InputFile::with_data("b.png", b"x".to_vec()).by_hash(),
    ];
    let v = serde_json::to_value(&req).expect("json");
    assert_eq!(v["inputs"][0]["data"], "YWJj");
    assert_eq!(
        v["inputs"][0]["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(v["inputs"][1].get("data").is_none());
    assert_eq!(v["job_id"], json!(req.job_id.to_string()));
    let back: RunRequest = serde_json::from_value(v.clone()).expect("round trip");
    assert_eq!(back, req);
    assert!(!format!("{:?}", req.inputs[0]).contains("97, 98"));

    let mut odd = v;
    odd["job_id"] = json!(req.job_id.simple().to_string());
    assert!(serde_json::from_value::<RunRequest>(odd).is_err());
}
