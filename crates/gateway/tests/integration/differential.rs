//! Differential tests against a stock ComfyUI v0.33.0: the same prompt sent
//! straight to a ComfyUI and through the gateway, and what the client sees
//! compared field by field once ids and times are normalised: the
//! WebSocket sequence (progress, previews, cached nodes, a node that
//! raises, an interrupt), the history item, the `/api/jobs` item and the
//! output's bytes through `/view`.
//!
//! The direct side talks to the plain ComfyUI and the gateway to the one
//! with the extension (both run the same test nodes): each prompt is new
//! to both, so their caches agree. Frames every socket gets about the
//! whole queue (`status`) are left out: the gateway's tell the participant
//! about their own queue, by design.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::execution::{Participant, participant};
use crate::stock_comfyui::{
    gateway_before, post_direct, serialised, stock, stock_with_extension, through_gateway,
};
use crate::support::{TestApp, within};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the frontend 1.48.7 announces on its socket.
fn frontend_flags() -> Message {
    Message::Text(
        json!({"type": "feature_flags", "data": {"supports_preview_metadata": true,
               "supports_manager_v4_ui": true, "supports_progress_text_metadata": true}})
        .to_string()
        .into(),
    )
}

/// A socket straight to the ComfyUI at `url`, as the frontend opens one.
async fn direct_socket(url: &str, client_id: &str) -> Socket {
    let ws_url = format!("{}/ws?clientId={client_id}", url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("the stock ComfyUI's socket");
    assert_eq!(read(&mut ws).await["type"], "status");
    ws.send(frontend_flags()).await.unwrap();
    assert_eq!(read(&mut ws).await["type"], "feature_flags");
    ws
}

/// The next frame: text as JSON; binary as `{"binary": type, "bytes":
/// length}`, with a preview's metadata and its image's bytes as numbers.
async fn read(ws: &mut Socket) -> Value {
    loop {
        let frame = within("a frame", ws.next()).await;
        match frame.expect("socket open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Binary(b) => {
                let kind = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if kind == 4 {
                    let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
                    let metadata: Value = serde_json::from_slice(&b[8..8 + len]).unwrap();
                    return json!({"binary": 4, "metadata": metadata, "image": b[8 + len..].to_vec()});
                }
                return json!({"binary": kind, "payload": b[4..].to_vec()});
            }
            _ => continue,
        }
    }
}

/// The frames of `prompt_id` up to its final `executing` null; `on_first`
/// runs once, when its first `progress` frame arrives.
async fn frames_of(
    ws: &mut Socket,
    prompt_id: &str,
    mut on_first_progress: impl AsyncFnMut(),
) -> Vec<Value> {
    let mut frames = Vec::new();
    let mut progressed = false;
    loop {
        let f = read(ws).await;
        // Queue status, and (through the gateway) where its owner stands
        // in the room: neither is the prompt's own.
        if f["type"] == "status" || f["type"] == "comfyume.room" {
            continue;
        }
        let done = f["type"] == "executing"
            && f["data"]["node"].is_null()
            && f["data"]["prompt_id"] == prompt_id;
        if f["type"] == "progress" && !progressed {
            progressed = true;
            on_first_progress().await;
        }
        frames.push(f);
        if done {
            return frames;
        }
    }
}

/// Ids and times replaced by placeholders, so two runs compare: the
/// prompt id (as a value or a key), times, the client id, the queue
/// number (a history item's first field, a job's `priority`: each server
/// counts its own prompts), and the
/// order of `current_outputs` (a Python set's, which differs from one
/// ComfyUI process to the next).
fn normalised(mut v: Value, prompt_id: &str) -> Value {
    fn walk(v: &mut Value, prompt_id: &str) {
        match v {
            Value::String(s) if s == prompt_id => *s = "<prompt>".into(),
            Value::Object(map) => {
                if let Some(item) = map.remove(prompt_id) {
                    map.insert("<prompt>".into(), item);
                }
                if let Some(Value::Array(entry)) = map.get_mut("prompt") {
                    if entry.len() >= 5 && entry[0].is_number() {
                        entry[0] = json!("<number>");
                    }
                }
                for (key, value) in map.iter_mut() {
                    match key.as_str() {
                        "timestamp"
                        | "create_time"
                        | "execution_start_time"
                        | "execution_end_time"
                        | "update_time" => *value = json!("<time>"),
                        "client_id" => *value = json!("<client>"),
                        "priority" => *value = json!("<number>"),
                        "current_outputs" => {
                            if let Value::Array(ids) = value {
                                ids.sort_by_key(Value::to_string);
                            }
                        }
                        _ => walk(value, prompt_id),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, prompt_id)),
            _ => {}
        }
    }
    walk(&mut v, prompt_id);
    v
}

/// Where two JSON values differ, as `path: direct ≠ through` lines.
fn differences(through: &Value, direct: &Value) -> Vec<String> {
    fn walk(path: String, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (va, vb) = (x.get(key), y.get(key));
                    match (va, vb) {
                        (Some(va), Some(vb)) => walk(format!("{path}/{key}"), va, vb, out),
                        _ => out.push(format!("{path}/{key}: {va:?} ≠ {vb:?}")),
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                    walk(format!("{path}/{i}"), va, vb, out);
                }
            }
            _ if a != b => {
                let short = |v: &Value| v.to_string().chars().take(300).collect::<String>();
                out.push(format!("{path}: {} ≠ {}", short(b), short(a)));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(String::new(), through, direct, &mut out);
    out
}

/// `through` equals `direct`, or the differences, path by path.
#[track_caller]
fn assert_same(through: &Value, direct: &Value, what: &str) {
    let found = differences(through, direct);
    assert!(
        found.is_empty(),
        "{what}: through the gateway ≠ straight to ComfyUI:\n{}",
        found.join("\n")
    );
}

/// The id `answer` (a `POST /prompt` answer) gives, and its frames on
/// `ws`; `interrupt` is sent at its first progress frame.
async fn run(
    ws: &mut Socket,
    answer: &Value,
    mut interrupt: Option<reqwest::RequestBuilder>,
) -> (String, Vec<Value>) {
    let id = answer["prompt_id"]
        .as_str()
        .unwrap_or_else(|| panic!("queued: {answer}"))
        .to_string();
    let frames = frames_of(ws, &id, async || {
        if let Some(request) = interrupt.take() {
            assert_eq!(request.send().await.unwrap().status(), 200);
        }
    })
    .await;
    (id, frames)
}

/// The two sides of one comparison.
struct Sides {
    url: String,
    direct: Socket,
    app: TestApp,
    alice: Participant,
}

impl Sides {
    async fn new() -> Option<Self> {
        let url = stock()?;
        let extended = stock_with_extension()?;
        let app = gateway_before(&extended, false, |_| {}).await;
        let alice = participant(&app, "alice").await;
        let direct = direct_socket(&url, "differential-direct").await;
        Some(Sides {
            url,
            direct,
            app,
            alice,
        })
    }

    /// Runs `prompt` straight to ComfyUI; its id and frames. An
    /// interrupt, when asked for, goes out at the first progress.
    async fn run_direct(&mut self, prompt: &Value, interrupt: bool) -> (String, Vec<Value>) {
        let body = json!({"prompt": prompt, "client_id": "differential-direct"});
        let (_, answer) = post_direct(&self.url, &body).await;
        let interrupt =
            interrupt.then(|| reqwest::Client::new().post(format!("{}/interrupt", self.url)));
        run(&mut self.direct, &answer, interrupt).await
    }

    /// The same through the gateway, as participant alice.
    async fn run_through(&mut self, prompt: &Value, interrupt: bool) -> (String, Vec<Value>) {
        let body = json!({"prompt": prompt, "client_id": self.alice.sid});
        let (_, answer) = through_gateway(&self.app, &self.alice, &body).await;
        let interrupt = interrupt.then(|| {
            self.alice
                .http
                .post(self.app.at("/api/interrupt"))
                .json(&json!({}))
        });
        run(&mut self.alice.ws, &answer, interrupt).await
    }

    /// Runs `prompt` both ways; the normalised frames of each.
    async fn both(&mut self, prompt: &Value, interrupt: bool) -> (Vec<Value>, Vec<Value>) {
        let (direct, through) = self.both_with_ids(prompt, interrupt).await;
        (direct.1, through.1)
    }

    /// [`both`](Self::both), with each side's prompt id.
    async fn both_with_ids(
        &mut self,
        prompt: &Value,
        interrupt: bool,
    ) -> ((String, Vec<Value>), (String, Vec<Value>)) {
        let (direct_id, direct) = self.run_direct(prompt, interrupt).await;
        let (gateway_id, through) = self.run_through(prompt, interrupt).await;
        let direct = direct
            .into_iter()
            .map(|f| normalised(f, &direct_id))
            .collect();
        let through = through
            .into_iter()
            .map(|f| normalised(f, &gateway_id))
            .collect();
        ((direct_id, direct), (gateway_id, through))
    }

    /// `GET path` straight to ComfyUI and through the gateway, each with
    /// its own prompt id in `{id}`; both normalised.
    async fn get_both(&self, path: &str, direct_id: &str, gateway_id: &str) -> (Value, Value) {
        let direct: Value =
            reqwest::get(format!("{}{}", self.url, path.replace("{id}", direct_id)))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let through = self
            .alice
            .get_json(&self.app, &path.replace("{id}", gateway_id))
            .await;
        (
            normalised(direct, direct_id),
            normalised(through, gateway_id),
        )
    }

    /// The content type and bytes of `/view?{query}`, both ways.
    async fn view_both(&self, query: &str) -> ((String, Vec<u8>), (String, Vec<u8>)) {
        let read = |r: reqwest::Response| async move {
            assert_eq!(r.status(), 200, "{}", r.url());
            let kind = r.headers()["content-type"].to_str().unwrap().to_string();
            (kind, r.bytes().await.unwrap().to_vec())
        };
        let direct = reqwest::get(format!("{}/view?{query}", self.url))
            .await
            .unwrap();
        let through = self
            .alice
            .http
            .get(self.app.at(&format!("/api/view?{query}")))
            .send()
            .await
            .unwrap();
        (read(direct).await, read(through).await)
    }
}

/// 1 EmptyImage → 2 ComfyumeSteps → 3 SaveImage, of a colour and under a
/// prefix of its own: new to both servers (so their caches agree, whatever
/// ran on them before), and numbered from 1 in both output folders.
pub fn stepped(steps: u32, fail_at: u32, pause: f64) -> Value {
    let unique = uuid::Uuid::new_v4();
    let color = u32::from_le_bytes(unique.as_bytes()[..4].try_into().unwrap()) & 0xFF_FF_FF;
    let prefix = format!("differential-{}", unique.simple());
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": color}},
        "2": {"class_type": "ComfyumeSteps", "inputs": {"image": ["1", 0], "steps": steps, "fail_at": fail_at, "pause": pause}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    })
}

fn types(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f["type"].as_str() {
            Some(t) => t.to_string(),
            None => format!("binary {}", f["binary"]),
        })
        .collect()
}

/// Progress, previews (with their metadata and image bytes), the output,
/// then the same prompt again, every node cached: frame for frame what
/// ComfyUI sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompts_frames_are_comfyuis_own_fresh_and_cached() {
    let _one_at_a_time = serialised().await;
    let Some(mut sides) = Sides::new().await else {
        return;
    };
    let prompt = stepped(3, 0, 0.0);
    let (direct, through) = sides.both(&prompt, false).await;
    assert!(
        types(&direct).iter().filter(|t| *t == "binary 4").count() == 3,
        "three previews: {:?}",
        types(&direct)
    );
    assert_eq!(types(&through), types(&direct));
    assert_same(&json!(through), &json!(direct), "the frames");

    let (direct, through) = sides.both(&prompt, false).await;
    assert!(
        types(&direct).contains(&"execution_cached".to_string()),
        "{:?}",
        types(&direct)
    );
    assert_same(&json!(through), &json!(direct), "the cached run's frames");
}

/// After a run: the history item, the `/api/jobs` item and the output's
/// bytes through `/view` are ComfyUI's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_jobs_and_view_are_comfyuis_own() {
    let _one_at_a_time = serialised().await;
    let Some(mut sides) = Sides::new().await else {
        return;
    };
    let prompt = stepped(2, 0, 0.0);
    let ((direct_id, _), (gateway_id, _)) = sides.both_with_ids(&prompt, false).await;

    let (direct, through) = sides
        .get_both("/api/history/{id}", &direct_id, &gateway_id)
        .await;
    assert_same(&through, &direct, "the history item");
    let output = direct["<prompt>"]["outputs"]["3"]["images"][0].clone();
    let (direct, through) = sides
        .get_both("/api/jobs/{id}", &direct_id, &gateway_id)
        .await;
    assert_same(&through, &direct, "the job");
    // The newest job on each side is this one (the direct side's server
    // ran nothing since).
    let (direct, through) = sides
        .get_both("/api/jobs?limit=1", &direct_id, &gateway_id)
        .await;
    assert_same(&through["jobs"][0], &direct["jobs"][0], "the listed job");

    let query = format!(
        "filename={}&subfolder={}&type=output",
        output["filename"].as_str().unwrap(),
        output["subfolder"].as_str().unwrap()
    );
    let (direct, through) = sides.view_both(&query).await;
    assert_eq!(direct.0, "image/png");
    assert!(direct.1.starts_with(b"\x89PNG"), "a PNG");
    assert_eq!(through, direct, "the output's type and bytes");

    // Converted as ComfyUI converts it: the colour and the alpha apart
    // (the same pixels; the encoders' bytes differ), and previews in the
    // format asked for, at the same size.
    for (asked, content_type, same_pixels) in [
        ("channel=rgb", "image/png", true),
        ("channel=a", "image/png", true),
        ("preview=jpeg;50", "image/jpeg", false),
        ("preview=webp;90", "image/webp", false),
    ] {
        let (direct, through) = sides.view_both(&format!("{query}&{asked}")).await;
        assert_eq!(through.0, content_type, "{asked}");
        assert_eq!(direct.0, content_type, "{asked}");
        let decoded = |bytes: &[u8]| image::load_from_memory(bytes).expect("an image").to_rgba8();
        let (d, t) = (decoded(&direct.1), decoded(&through.1));
        assert_eq!(t.dimensions(), d.dimensions(), "{asked}");
        if same_pixels {
            assert_eq!(t.into_raw(), d.into_raw(), "{asked}: the same pixels");
        }
    }
}

/// A node that raises: the error frame, its traceback included, and the
/// frames before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_raises_is_reported_as_comfyui_reports_it() {
    let _one_at_a_time = serialised().await;
    let Some(mut sides) = Sides::new().await else {
        return;
    };
    let (direct, through) = sides.both(&stepped(3, 2, 0.0), false).await;
    let error = direct
        .iter()
        .find(|f| f["type"] == "execution_error")
        .unwrap_or_else(|| panic!("an error: {:?}", types(&direct)));
    assert_eq!(error["data"]["node_type"], "ComfyumeSteps");
    assert_eq!(types(&through), types(&direct));
    assert_same(&json!(through), &json!(direct), "the frames");
}

/// An interrupt while a node runs: where the node stops depends on when
/// the interrupt lands, so the progress frames are left out; every other
/// frame (the interrupted one included) is ComfyUI's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_is_reported_as_comfyui_reports_it() {
    let _one_at_a_time = serialised().await;
    let Some(mut sides) = Sides::new().await else {
        return;
    };
    let (direct, through) = sides.both(&stepped(200, 0, 0.05), true).await;
    let steady = |frames: Vec<Value>| -> Vec<Value> {
        frames
            .into_iter()
            .filter(|f| {
                !(f["type"] == "progress"
                    || f["type"] == "progress_state"
                    || f.get("binary").is_some())
            })
            .collect()
    };
    let (direct, through) = (steady(direct), steady(through));
    assert!(
        direct.iter().any(|f| f["type"] == "execution_interrupted"),
        "{:?}",
        types(&direct)
    );
    assert_same(&json!(through), &json!(direct), "the frames");
}
