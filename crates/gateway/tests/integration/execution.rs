//! Running prompts end to end over real sockets: gateway → simulator →
//! back, outputs in the owner's files, the relayed WebSocket sequence, the
//! queue and history routes, fairness, caps, cancel and interrupt (own jobs
//! only), and durability across a gateway restart.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Options, TestApp, cookie_of, within, ws_connect};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A logged-in participant with an open socket, as the frontend has.
pub struct Participant {
    pub http: reqwest::Client,
    pub ws: Socket,
    pub sid: String,
    pub cookie: String,
}

pub async fn participant(app: &TestApp, name: &str) -> Participant {
    let password = format!("{name}-secret-pw");
    app.add_user(name, &password).await;
    log_in(app, name, &password).await
}

/// An existing account logging in, with its tab's socket open (clientId
/// `<name>-tab`) and past the frontend's start-up frames.
pub async fn log_in(app: &TestApp, name: &str, password: &str) -> Participant {
    let r = app.try_login(&app.client(), name, password).await;
    assert_eq!(r.status(), 303, "{name} logs in");
    let cookie = cookie_of(&r);
    let mut ws = ws_connect(app, &format!("/ws?clientId={name}-tab"), Some(&cookie))
        .await
        .unwrap();
    let hello = next_frame(&mut ws).await;
    assert_eq!(hello["type"], "status");
    ws.send(Message::Text(
        json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "feature_flags");
    // Later requests from this client carry the session cookie too.
    let http = reqwest::Client::builder()
        .default_headers(
            std::iter::once((reqwest::header::COOKIE, cookie.parse().unwrap())).collect(),
        )
        .build()
        .unwrap();
    Participant {
        http,
        ws,
        sid: format!("{name}-tab"),
        cookie,
    }
}

impl Participant {
    /// GETs `path` with this participant's session and reads the JSON.
    pub async fn get_json(&self, app: &TestApp, path: &str) -> Value {
        self.http
            .get(app.at(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The next frame of ComfyUI's protocol: text as JSON, binary as
/// `{"binary": <type>}`. The gateway's own `comfyume.room` frames (where
/// the participant stands in the room, sent whenever that changes) are
/// skipped; `next_frame_any` returns them too.
pub async fn next_frame(ws: &mut Socket) -> Value {
    loop {
        let frame = next_frame_any(ws).await;
        if frame["type"] != "comfyume.room" {
            return frame;
        }
    }
}

/// The next frame, whatever it is.
pub async fn next_frame_any(ws: &mut Socket) -> Value {
    loop {
        let frame = within("a frame from the gateway", ws.next()).await;
        match frame.expect("socket open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Binary(b) => {
                return json!({"binary": u32::from_be_bytes([b[0], b[1], b[2], b[3]])});
            }
            _ => continue,
        }
    }
}

/// Frames up to and including the final `executing{node: null}` of `prompt_id`.
pub async fn frames_until_done(ws: &mut Socket, prompt_id: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = next_frame(ws).await;
        let done = f["type"] == "executing"
            && f["data"]["node"].is_null()
            && f["data"]["prompt_id"] == prompt_id;
        frames.push(f);
        if done {
            return frames;
        }
    }
}

/// ComfyUI's CPU example prompt (comfyui-api.md §9), minus the preview.
pub fn cpu_prompt(prefix: &str) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 256, "height": 256, "batch_size": 1, "color": 16744448}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "ImageScale", "inputs": {"image": ["3", 0], "upscale_method": "bilinear", "width": 128, "height": 128, "crop": "disabled"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": prefix}},
    })
}

/// A text-to-image prompt whose sampler takes `steps` steps.
pub fn txt2img_prompt(seed: u64, steps: u32) -> Value {
    json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sim-dreamshaper-8.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": steps, "cfg": 7.0,
              "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0],
              "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "txt2img"}},
    })
}

pub async fn submit(app: &TestApp, p: &Participant, prompt: Value) -> reqwest::Response {
    p.http
        .post(app.at("/api/prompt"))
        .json(&json!({"prompt": prompt, "client_id": p.sid}))
        .send()
        .await
        .unwrap()
}

pub async fn submit_ok(app: &TestApp, p: &Participant, prompt: Value) -> String {
    let r = submit(app, p, prompt).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["node_errors"], json!({}));
    body["prompt_id"].as_str().unwrap().to_string()
}

fn types(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            f["type"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("binary{}", f["binary"]))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_runs_and_only_its_owner_sees_it() {
    let app = TestApp::spawn().await;
    let mut alice = participant(&app, "alice").await;
    let mut bob = participant(&app, "bob").await;

    let id = submit_ok(&app, &alice, cpu_prompt("cpu_e2e")).await;
    let frames = frames_until_done(&mut alice.ws, &id).await;
    let t = types(&frames);
    assert_eq!(t.first().map(String::as_str), Some("status"));
    let success = t
        .iter()
        .position(|x| x == "execution_success")
        .expect("execution_success relayed");
    assert_eq!(
        &t[success..],
        ["execution_success", "status", "executing"],
        "ComfyUI's closing order"
    );
    assert_eq!(
        frames[success + 1]["data"]["status"]["exec_info"]["queue_remaining"],
        0
    );
    let saved = frames
        .iter()
        .find(|f| f["type"] == "executed" && f["data"]["node"] == "5")
        .expect("SaveImage executed");
    let image = &saved["data"]["output"]["images"][0];
    assert_eq!(image["type"], "output");
    let filename = image["filename"].as_str().unwrap();
    assert!(filename.starts_with("cpu_e2e_"), "{filename}");

    // The output is already in alice's files when the browser hears of it.
    let view = format!("/api/view?filename={filename}&type=output&subfolder=");
    let r = alice.http.get(app.at(&view)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        bob.http.get(app.at(&view)).send().await.unwrap().status(),
        404
    );

    // History and the jobs API, for alice only.
    let jobs: Value = alice.get_json(&app, "/api/jobs?limit=10").await;
    assert_eq!(jobs["jobs"][0]["id"], id);
    assert_eq!(jobs["jobs"][0]["status"], "completed");
    assert_eq!(jobs["jobs"][0]["preview_output"]["filename"], filename);
    let detail: Value = alice.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert_eq!(
        detail["workflow"]["prompt"]["5"]["inputs"]["filename_prefix"],
        "cpu_e2e"
    );
    let hist: Value = alice.get_json(&app, &format!("/history/{id}")).await;
    assert_eq!(hist[&id]["status"]["status_str"], "success");
    assert_eq!(hist[&id]["outputs"]["5"]["images"][0]["filename"], filename);

    let bob_jobs: Value = bob.get_json(&app, "/api/jobs").await;
    assert_eq!(bob_jobs["jobs"], json!([]));
    assert_eq!(
        bob.http
            .get(app.at(&format!("/api/jobs/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let bob_hist: Value = bob.get_json(&app, &format!("/api/history/{id}")).await;
    assert_eq!(bob_hist, json!({}));

    // Bob's socket heard nothing of alice's run: the first frame after his
    // greeting is the status of his own prompt.
    let bob_id = submit_ok(&app, &bob, cpu_prompt("bob")).await;
    let first = next_frame(&mut bob.ws).await;
    assert_eq!(first["type"], "status");
    assert_eq!(first["data"]["status"]["exec_info"]["queue_remaining"], 1);
    let bob_frames = frames_until_done(&mut bob.ws, &bob_id).await;
    assert!(
        bob_frames
            .iter()
            .all(|f| f["data"]["prompt_id"].as_str().is_none_or(|p| p == bob_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relayed_sequence_matches_stock_comfyui() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/comfyui-0.33.0/trace.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let expected: Vec<String> = types(fixture["A_normal_run"].as_array().unwrap());
    let request = fixture["post_prompt_normal"].clone();
    // The fixture's graph: 1 EmptyImage → 2 ImageInvert → 3 SaveImage, 4 PreviewImage(1).
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16711680}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "trace"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    });
    assert_eq!(request["status"], 200);

    let app = TestApp::spawn().await;
    let mut alice = participant(&app, "alice").await;
    let id = submit_ok(&app, &alice, prompt).await;
    let frames = frames_until_done(&mut alice.ws, &id).await;
    assert_eq!(
        types(&frames),
        expected,
        "the relayed frames follow stock ComfyUI's order"
    );
    for (got, want) in frames
        .iter()
        .zip(fixture["A_normal_run"].as_array().unwrap())
    {
        let keys = |v: &Value| {
            v["data"]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
        };
        assert_eq!(keys(got), keys(want), "fields of {}", got["type"]);
    }
    // And the same graph submitted straight to the simulator, as its own
    // client, yields the same sequence: the gateway relays what the backend
    // sends, adding nothing and dropping nothing but the backend's status.
    let mut direct = tokio_tungstenite::connect_async(format!(
        "{}/ws?clientId=direct",
        app.sim_url.replace("http://", "ws://")
    ))
    .await
    .unwrap()
    .0;
    next_frame(&mut direct).await;
    direct
        .send(Message::Text(
            json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    next_frame(&mut direct).await;
    let direct_prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 255}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "trace"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    });
    let r: Value = reqwest::Client::new()
        .post(format!("{}/prompt", app.sim_url))
        .json(&json!({"prompt": direct_prompt, "client_id": "direct"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let direct_frames = frames_until_done(&mut direct, r["prompt_id"].as_str().unwrap()).await;
    assert_eq!(
        types(&frames),
        types(&direct_frames),
        "relayed = sent by the backend"
    );

    // The temp preview was copied too, and the reference points at the copy.
    let preview = frames
        .iter()
        .find(|f| f["type"] == "executed" && f["data"]["node"] == "4")
        .unwrap();
    let temp = &preview["data"]["output"]["images"][0];
    assert_eq!(temp["type"], "temp");
    let r = alice
        .http
        .get(app.at(&format!(
            "/api/view?filename={}&type=temp",
            temp["filename"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_previews_are_relayed() {
    let app = TestApp::spawn().await;
    let mut alice = participant(&app, "alice").await;
    let id = submit_ok(&app, &alice, txt2img_prompt(7, 3)).await;
    let frames = frames_until_done(&mut alice.ws, &id).await;
    let progress: Vec<&Value> = frames.iter().filter(|f| f["type"] == "progress").collect();
    assert_eq!(progress.len(), 3);
    assert_eq!(progress[2]["data"]["value"], 3);
    assert_eq!(progress[2]["data"]["max"], 3);
    assert_eq!(
        frames.iter().filter(|f| f["binary"] == 4).count(),
        3,
        "one preview (with metadata) per step"
    );
    assert!(frames.iter().any(|f| f["type"] == "execution_success"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_user_goes_before_a_heavy_users_backlog() {
    let app = TestApp::spawn_full(
        Options {
            manual_dispatch: true,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut a = participant(&app, "alice").await;
    let mut b = participant(&app, "bob").await;
    let mut a_ids = Vec::new();
    for i in 0..10 {
        a_ids.push(submit_ok(&app, &a, cpu_prompt(&format!("a{i}"))).await);
    }
    let b_id = submit_ok(&app, &b, cpu_prompt("b")).await;

    // One slot: run jobs one at a time and note the order they finish in.
    let mut finished = Vec::new();
    while finished.len() < 3 || !finished.contains(&b_id) {
        let started = app.dispatch_once().await;
        assert_eq!(started.len(), 1, "the free slot takes one job");
        let running = started[0].clone();
        if running == b_id {
            frames_until_done(&mut b.ws, &b_id).await;
        } else {
            frames_until_done(&mut a.ws, &running).await;
        }
        finished.push(running);
    }
    let b_pos = finished.iter().position(|j| *j == b_id).unwrap();
    let a_third = finished.iter().position(|j| *j == a_ids[2]);
    assert!(
        a_third.is_none_or(|p| b_pos < p),
        "bob's job finished before alice's third: {finished:?}"
    );
    assert_eq!(
        &finished[..b_pos],
        &a_ids[..b_pos],
        "alice's jobs ran in her order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_pending_prompt_is_refused_clearly() {
    let app = TestApp::spawn_full(
        Options {
            manual_dispatch: true,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let a = participant(&app, "alice").await;
    for i in 0..10 {
        submit_ok(&app, &a, cpu_prompt(&format!("a{i}"))).await;
    }
    let r = submit(&app, &a, cpu_prompt("one-too-many")).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "queue_full");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10 prompts waiting"),
        "{body}"
    );
    assert_eq!(body["node_errors"], json!({}));
    // Someone else is not affected by alice's backlog.
    let b = participant(&app, "bob").await;
    submit_ok(&app, &b, cpu_prompt("b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prompts_get_comfyuis_400_bodies() {
    let app = TestApp::spawn().await;
    let a = participant(&app, "alice").await;
    let r = submit(
        &app,
        &a,
        json!({"1": {"class_type": "NoSuchNode", "inputs": {}}}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "missing_node_type");
    assert_eq!(body["node_errors"], json!({}));

    let r = a
        .http
        .post(app.at("/api/prompt"))
        .json(&json!({"client_id": a.sid}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "no_prompt");

    let r = a
        .http
        .post(app.at("/prompt"))
        .json(&json!({"prompt": cpu_prompt("x"), "prompt_id": "NOT-A-UUID"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_prompt_id"
    );

    let mut p = cpu_prompt("x");
    p["1"]["inputs"]["width"] = json!(0);
    let body: Value = submit(&app, &a, p).await.json().await.unwrap();
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(
        body["node_errors"]["1"]["errors"][0]["type"],
        "value_smaller_than_min"
    );

    // LoadImage only accepts the user's own uploads.
    let other = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "someone-elses.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    });
    let body: Value = submit(&app, &a, other).await.json().await.unwrap();
    // ComfyUI's LoadImage reports a file it cannot find this way.
    let error = &body["node_errors"]["1"]["errors"][0];
    assert_eq!(error["type"], "custom_validation_failed");
    assert!(
        error["details"]
            .as_str()
            .unwrap()
            .contains("Invalid image file"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_chosen_prompt_id_is_kept_end_to_end() {
    let app = TestApp::spawn().await;
    let mut a = participant(&app, "alice").await;
    let id = "5c338b85-d309-4661-9bff-ac8db318bbbe";
    let r = a
        .http
        .post(app.at("/api/prompt"))
        .json(&json!({"prompt": cpu_prompt("x"), "client_id": a.sid, "prompt_id": id, "number": 5}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"prompt_id": id, "number": 5.0, "node_errors": {}})
    );
    let frames = frames_until_done(&mut a.ws, id).await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "execution_start" && f["data"]["prompt_id"] == id)
    );
    let again = a
        .http
        .post(app.at("/api/prompt"))
        .json(&json!({"prompt": cpu_prompt("x"), "prompt_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400, "an id is used once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_delete_and_interrupt_touch_only_the_callers_jobs() {
    let app = TestApp::spawn_full(
        Options {
            manual_dispatch: true,
            sim: comfyume_sim::SimOptions {
                step_time: std::time::Duration::from_millis(100),
                ..Default::default()
            },
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut a = participant(&app, "alice").await;
    let b = participant(&app, "bob").await;
    let running = submit_ok(&app, &a, txt2img_prompt(1, 50)).await;
    let pending = submit_ok(&app, &a, cpu_prompt("p")).await;
    let to_delete = submit_ok(&app, &a, cpu_prompt("d")).await;
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&running));
    // Wait until alice's long job is really running on the backend.
    loop {
        let f = next_frame(&mut a.ws).await;
        if f["type"] == "progress" {
            break;
        }
    }

    // Bob, with alice's ids: nothing happens.
    let r: Value = b
        .http
        .post(app.at(&format!("/api/jobs/{pending}/cancel")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"cancelled": false}));
    let r: Value = b
        .http
        .post(app.at("/api/jobs/cancel"))
        .json(&json!({"job_ids": [pending, running]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"cancelled": false}));
    assert_eq!(
        b.http
            .post(app.at("/api/queue"))
            .json(&json!({"delete": [to_delete]}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    b.http
        .post(app.at("/api/queue"))
        .json(&json!({"clear": true}))
        .send()
        .await
        .unwrap();
    b.http
        .post(app.at("/api/interrupt"))
        .json(&json!({"prompt_id": running}))
        .send()
        .await
        .unwrap();
    b.http.post(app.at("/api/interrupt")).send().await.unwrap();
    let r = b
        .http
        .post(app.at("/api/jobs/cancel"))
        .json(&json!({"job_ids": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "job_ids contains invalid id(s)", "invalid_ids": ["nope"]})
    );
    let queue: Value = a.get_json(&app, "/api/queue").await;
    assert_eq!(queue["queue_running"][0][1], running);
    assert_eq!(
        queue["queue_pending"].as_array().unwrap().len(),
        2,
        "bob removed nothing of alice's"
    );

    // Alice's own requests work.
    let r: Value = a
        .http
        .post(app.at(&format!("/api/jobs/{pending}/cancel")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"cancelled": true}));
    a.http
        .post(app.at("/api/queue"))
        .json(&json!({"delete": [to_delete]}))
        .send()
        .await
        .unwrap();
    let queue: Value = a.get_json(&app, "/queue").await;
    assert_eq!(queue["queue_pending"], json!([]));
    a.http
        .post(app.at("/api/interrupt"))
        .json(&json!({"prompt_id": running}))
        .send()
        .await
        .unwrap();
    let frames = frames_until_done(&mut a.ws, &running).await;
    assert!(
        frames.iter().any(|f| f["type"] == "execution_interrupted"),
        "{:?}",
        types(&frames)
    );
    let job: Value = a.get_json(&app, &format!("/api/jobs/{running}")).await;
    assert_eq!(job["status"], "cancelled");

    // History: bob cannot delete alice's, alice can.
    b.http
        .post(app.at("/api/history"))
        .json(&json!({"delete": [running]}))
        .send()
        .await
        .unwrap();
    b.http
        .post(app.at("/api/history"))
        .json(&json!({"clear": true}))
        .send()
        .await
        .unwrap();
    let hist: Value = a.get_json(&app, "/api/history").await;
    assert!(hist.get(&running).is_some());
    a.http
        .post(app.at("/api/history"))
        .json(&json!({"delete": [running]}))
        .send()
        .await
        .unwrap();
    let hist: Value = a.get_json(&app, "/api/history").await;
    assert!(hist.get(&running).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_jobs_survive_a_gateway_restart_and_run_once() {
    let mut app = TestApp::spawn_full(
        Options {
            manual_dispatch: true,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let a = participant(&app, "alice").await;
    let ids: Vec<String> = [
        submit_ok(&app, &a, cpu_prompt("r0")).await,
        submit_ok(&app, &a, cpu_prompt("r1")).await,
    ]
    .to_vec();

    app.restart().await;
    // Same session cookie, new server: reconnect like the frontend does.
    let r = a.http.get(app.at("/api/users")).send().await.unwrap();
    assert_eq!(r.status(), 200, "sessions survive the restart");
    let (mut a, early) = participant_again(&app, a).await;
    assert_eq!(early, Vec::<Value>::new(), "nothing runs before dispatch");
    let queue: Value = a.get_json(&app, "/api/queue").await;
    let pending: Vec<&str> = queue["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[1].as_str().unwrap())
        .collect();
    assert_eq!(
        pending,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "in their order"
    );

    for id in &ids {
        assert_eq!(app.dispatch_once().await, std::slice::from_ref(id));
        frames_until_done(&mut a.ws, id).await;
    }
    assert!(app.dispatch_once().await.is_empty(), "nothing left to run");
    let jobs: Value = a.get_json(&app, "/api/jobs").await;
    let all = jobs["jobs"].as_array().unwrap();
    assert_eq!(all.len(), 2, "nothing duplicated");
    assert!(
        all.iter()
            .all(|j| j["status"] == "completed" && j["outputs_count"] == 1)
    );
    let files: Value = a.get_json(&app, "/internal/files/output").await;
    assert_eq!(
        files.as_array().unwrap().len(),
        2,
        "one output each: {files}"
    );
}

/// Reconnects a participant's socket to a restarted gateway. Frames of a
/// job already running may arrive before the reply to the client's
/// feature flags (the server answers those as it reads them): they are
/// returned, in order.
async fn participant_again(app: &TestApp, p: Participant) -> (Participant, Vec<Value>) {
    let mut ws = ws_connect(app, &format!("/ws?clientId={}", p.sid), Some(&p.cookie))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "status");
    ws.send(Message::Text(
        json!({"type": "feature_flags", "data": {}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut early = Vec::new();
    loop {
        let frame = next_frame(&mut ws).await;
        if frame["type"] == "feature_flags" {
            break;
        }
        early.push(frame);
    }
    let p = Participant {
        http: p.http,
        ws,
        sid: p.sid,
        cookie: p.cookie,
    };
    (p, early)
}

fn solid_png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    let data: Vec<u8> = (0..w * h).flat_map(|_| rgb).collect();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

fn first_pixel(png_bytes: &[u8]) -> [u8; 3] {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    [buf[0], buf[1], buf[2]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_users_upload_reaches_the_backend_as_their_own() {
    let app = TestApp::spawn().await;
    let mut alice = participant(&app, "alice").await;
    let mut bob = participant(&app, "bob").await;
    // Same file name, different pictures.
    for (p, rgb) in [(&alice, [255, 0, 0]), (&bob, [0, 0, 255])] {
        let part = reqwest::multipart::Part::bytes(solid_png(8, 8, rgb)).file_name("photo.png");
        let r = p
            .http
            .post(app.at("/api/upload/image"))
            .multipart(reqwest::multipart::Form::new().part("image", part))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inverted"}},
    });
    let a_id = submit_ok(&app, &alice, prompt.clone()).await;
    let b_id = submit_ok(&app, &bob, prompt).await;
    for (p, id, expected) in [
        (&mut alice, a_id, [0, 255, 255]),
        (&mut bob, b_id, [255, 255, 0]),
    ] {
        let frames = frames_until_done(&mut p.ws, &id).await;
        let saved = frames
            .iter()
            .find(|f| f["type"] == "executed" && f["data"]["node"] == "3")
            .expect("saved");
        let name = saved["data"]["output"]["images"][0]["filename"]
            .as_str()
            .unwrap();
        let bytes = p
            .http
            .get(app.at(&format!("/api/view?filename={name}&type=output")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            first_pixel(&bytes),
            expected,
            "the inverse of this user's own photo"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_preview_metadata_gets_plain_previews() {
    let app = TestApp::spawn().await;
    app.add_user("script", "script-pw").await;
    let http = app.client();
    let r = app.try_login(&http, "script", "script-pw").await;
    let cookie = cookie_of(&r);
    let mut ws = ws_connect(&app, "/ws?clientId=script-tab", Some(&cookie))
        .await
        .unwrap();
    next_frame(&mut ws).await;
    // An old client: no feature flags at all.
    let r: Value = http
        .post(app.at("/api/prompt"))
        .json(&json!({"prompt": txt2img_prompt(8, 2), "client_id": "script-tab"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let frames = frames_until_done(&mut ws, r["prompt_id"].as_str().unwrap()).await;
    assert_eq!(
        frames.iter().filter(|f| f["binary"] == 1).count(),
        2,
        "type-1 previews, as stock ComfyUI sends them"
    );
    assert!(!frames.iter().any(|f| f["binary"] == 4));
}

/// A gateway stopped mid-job stops every task it started (the restart
/// checks it), and leaves the job in progress: the next gateway picks it
/// up on its backend and finishes it once, without running it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_leaves_no_task_behind_and_the_next_finishes_its_job() {
    let slow = comfyume_sim::SimOptions {
        step_time: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let mut app = TestApp::spawn_full(
        Options {
            sim: slow,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, txt2img_prompt(7, 60)).await;
    let mut a = a;
    loop {
        if next_frame(&mut a.ws).await["type"] == "progress" {
            break;
        }
    }
    app.restart().await;
    let stored = app
        .state
        .store
        .job(&comfyume_domain::JobId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.attempts, 1, "not submitted again");
    let (mut a, mut frames) = participant_again(&app, a).await;
    let done = |f: &Value| {
        f["type"] == "executing" && f["data"]["node"].is_null() && f["data"]["prompt_id"] == id
    };
    if !frames.iter().any(done) {
        frames.extend(frames_until_done(&mut a.ws, &id).await);
    }
    assert!(frames.iter().any(|f| f["type"] == "executed"));
    let job: Value = a.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "completed");
    let stored = app
        .state
        .store
        .job(&comfyume_domain::JobId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.attempts, 1, "ran once");
    app.shutdown().await;
}

/// What would hold a shared GPU for the whole session, or write outside the
/// participant's folder, is refused before it is queued, on the input that
/// is wrong, and nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_over_the_rooms_bounds_are_refused_before_queueing() {
    let app = TestApp::spawn_with(|c| {
        c.limits.prompt_caps.insert("steps".into(), 50.0);
    })
    .await;
    let a = participant(&app, "alice").await;
    let r = submit(&app, &a, txt2img_prompt(1, 10_000)).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let error = &body["node_errors"]["5"]["errors"][0];
    assert_eq!(error["type"], "value_bigger_than_max");
    assert_eq!(error["message"], "Value 10000 bigger than max of 50");

    let mut huge = txt2img_prompt(1, 20);
    huge["4"]["inputs"]["width"] = json!(16384);
    huge["4"]["inputs"]["batch_size"] = json!(4096);
    let r = submit(&app, &a, huge).await;
    assert_eq!(r.status(), 400, "the room's default caps");

    let mut outside = txt2img_prompt(1, 20);
    outside["7"]["inputs"]["filename_prefix"] = json!("../../tmp/x");
    let r = submit(&app, &a, outside).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["node_errors"]["7"]["errors"][0]["details"],
        "filename_prefix - Saving image outside the output folder is not allowed."
    );
    let queue: Value = a.get_json(&app, "/api/queue").await;
    assert_eq!(queue["queue_pending"], json!([]), "nothing queued");
    assert_eq!(queue["queue_running"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_as_comfyui_does() {
    let app = TestApp::spawn().await;
    let mut alice = participant(&app, "alice").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = submit_ok(&app, &alice, cpu_prompt(&format!("page{i}"))).await;
        frames_until_done(&mut alice.ws, &id).await;
        ids.push(id);
    }
    let keys = |v: Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    // Which jobs each page selects, compared as sets.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let all = keys(alice.get_json(&app, "/api/history").await);
    assert_eq!(sorted(all), sorted(ids.clone()));
    let newest = keys(alice.get_json(&app, "/api/history?max_items=2").await);
    assert_eq!(sorted(newest), sorted(ids[2..].to_vec()));
    let middle = keys(
        alice
            .get_json(&app, "/api/history?offset=1&max_items=2")
            .await,
    );
    assert_eq!(sorted(middle), sorted(ids[1..3].to_vec()));
    let from = keys(alice.get_json(&app, "/api/history?offset=3").await);
    assert_eq!(from, ids[3..].to_vec());
    let past_end = keys(alice.get_json(&app, "/api/history?offset=9").await);
    assert!(past_end.is_empty());
    // Another participant's history is their own.
    let bob = participant(&app, "bob").await;
    assert!(keys(bob.get_json(&app, "/api/history?max_items=64").await).is_empty());
}
