//! End-to-end tests of the simulator over real sockets: a server on an
//! ephemeral port, HTTP through reqwest, WebSockets through
//! tokio-tungstenite. Tests wait on frames and responses, never on the
//! clock; every wait is bounded so a regression fails instead of hanging.

mod images;
mod knobs;
mod protocol;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::SimOptions;

/// How long any single wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A simulator on a real socket, stopped through a oneshot.
pub(super) struct Sim {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
}

/// Options for tests: quick steps, everything else default.
pub(super) fn quick() -> SimOptions {
    SimOptions {
        step_time: Duration::from_millis(1),
        ..SimOptions::default()
    }
}

pub(super) async fn start() -> Sim {
    start_with(quick()).await
}

pub(super) async fn start_with(options: SimOptions) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(super::run_with(listener, options, async {
        let _ = stopped.await;
    }));
    Sim {
        addr,
        stop,
        task,
        http: reqwest::Client::new(),
    }
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn shutdown(self) {
        self.stop.send(()).expect("server still running");
        bounded("shutdown", self.task)
            .await
            .expect("server task")
            .expect("server result");
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        bounded(path, self.http.get(self.url(path)).send())
            .await
            .expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON body")
    }

    /// POSTs JSON; returns the status and the body (JSON, or `null` if empty).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = bounded(path, self.http.post(self.url(path)).json(&body).send())
            .await
            .expect("POST");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// Queues `prompt` for `client_id` and returns its prompt_id.
    pub async fn submit(&self, prompt: Value, client_id: &str) -> String {
        self.submit_body(json!({"prompt": prompt, "client_id": client_id}))
            .await
    }

    pub async fn submit_body(&self, body: Value) -> String {
        let (status, answer) = self.post("/prompt", body).await;
        assert_eq!(status, 200, "POST /prompt: {answer}");
        answer["prompt_id"].as_str().expect("prompt_id").to_owned()
    }

    /// A WebSocket client that has read the greeting; with
    /// `preview_metadata` it announces the frontend's feature flags first.
    pub async fn client(&self, client_id: &str, preview_metadata: bool) -> Client {
        let url = format!("ws://{}/ws?clientId={client_id}", self.addr);
        let (ws, _) = bounded("connect", tokio_tungstenite::connect_async(url))
            .await
            .expect("connect");
        let mut client = Client { ws };
        let hello = client.json().await;
        assert_eq!(hello["type"], "status", "{hello}");
        if preview_metadata {
            let flags = json!({"type": "feature_flags", "data": {
                "supports_preview_metadata": true,
                "supports_manager_v4_ui": true,
                "supports_progress_text_metadata": true,
            }});
            client.send(flags).await;
            assert_eq!(client.json().await["type"], "feature_flags");
        }
        client
    }
}

/// One frame as a test sees it.
#[derive(Debug, Clone)]
pub(super) enum Frame {
    Json(Value),
    Binary(Vec<u8>),
    Closed,
}

impl Frame {
    pub fn kind(&self) -> String {
        match self {
            Frame::Json(v) => v["type"].as_str().unwrap_or("?").to_owned(),
            Frame::Binary(b) => format!("BIN{}", b.get(3).copied().unwrap_or(0)),
            Frame::Closed => "closed".into(),
        }
    }

    pub fn json(&self) -> &Value {
        match self {
            Frame::Json(v) => v,
            other => panic!("expected a JSON frame, got {}", other.kind()),
        }
    }
}

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) struct Client {
    pub ws: Ws,
}

impl Client {
    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send");
    }

    pub async fn next(&mut self) -> Frame {
        loop {
            match bounded("a frame", self.ws.next()).await {
                Some(Ok(Message::Text(text))) => {
                    return Frame::Json(serde_json::from_str(&text).expect("JSON frame"));
                }
                Some(Ok(Message::Binary(bytes))) => return Frame::Binary(bytes.to_vec()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Frame::Closed,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next JSON frame, skipping binary previews.
    pub async fn json(&mut self) -> Value {
        loop {
            match self.next().await {
                Frame::Binary(_) => {}
                frame => return frame.json().clone(),
            }
        }
    }

    /// Frames up to and including `executing{node: null}` for `prompt_id`.
    pub async fn until_done(&mut self, prompt_id: &str) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await;
            let done = matches!(&frame, Frame::Json(v)
                if v["type"] == "executing" && v["data"]["node"].is_null() && v["data"]["prompt_id"] == prompt_id);
            if matches!(frame, Frame::Closed) {
                panic!("socket closed mid-run after {:?}", kinds(&frames));
            }
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Reads until a JSON frame of `kind` arrives, returning it.
    pub async fn until(&mut self, kind: &str) -> Value {
        loop {
            match self.next().await {
                Frame::Json(v) if v["type"] == kind => return v,
                Frame::Closed => panic!("socket closed while waiting for {kind}"),
                _ => {}
            }
        }
    }
}

pub(super) fn kinds(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(Frame::kind).collect()
}

/// The JSON frames only.
pub(super) fn json_frames(frames: &[Frame]) -> Vec<Value> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Json(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

/// A recorded fixture from the repository's `fixtures/`.
pub(super) fn fixture(rel: &str) -> Value {
    let path = format!("{}/../../fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    if rel.ends_with(".jsonl") {
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}")))
            .collect();
        return Value::Array(lines);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(super) fn trace(key: &str) -> Value {
    let trace = fixture("comfyui-0.33.0/trace.json");
    trace
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("trace.json has no {key}"))
}

/// The fixture graph of docs §5.4: `1 EmptyImage → 2 ImageInvert →
/// 3 SaveImage`, with `4 PreviewImage(1)`.
pub(super) fn trace_graph(color: u32) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "trace"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    })
}

/// A small text-to-image graph: 1 checkpoint, 2 text, 3 latent,
/// 4 KSampler, 5 VAEDecode, 6 SaveImage.
pub(super) fn txt2img(seed: u64, steps: u32, text: &str, prefix: &str) -> Value {
    json!({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sim-sd-v1-5.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["2", 0], "negative": ["2", 0],
            "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": prefix}},
    })
}

/// Replaces what legitimately differs between runs (ids, times, the random
/// letters of temp names) so frames and history compare exactly.
pub(super) fn normalize(value: &Value, prompt_id: &str) -> Value {
    match value {
        Value::String(s) if s == prompt_id => json!("<prompt_id>"),
        Value::String(s) if s.starts_with("ComfyUI_temp_") && s.len() > 18 => {
            json!(format!("ComfyUI_temp_?????{}", &s[18..]))
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "timestamp" | "create_time" => json!(0),
                        _ => normalize(v, prompt_id),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| normalize(v, prompt_id)).collect())
        }
        other => other.clone(),
    }
}

/// The type and the sorted data keys of a frame, for shape comparisons.
pub(super) fn shape(frame: &Value) -> (String, Vec<String>) {
    let mut keys: Vec<String> = frame["data"]
        .as_object()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    (frame["type"].as_str().unwrap_or("?").to_owned(), keys)
}

/// Decodes a PNG to (width, height, RGB bytes).
pub(super) fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let decoded = super::png::decode(bytes).expect("a PNG");
    let img = decoded.image;
    (img.width, img.height, img.to_rgb8(0))
}
