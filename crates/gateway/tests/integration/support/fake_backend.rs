//! A small fake GPU backend speaking just enough of ComfyUI's protocol to
//! misbehave on cue: refuse or garble `POST /prompt`, drop or garble its
//! socket, hang, or finish a job while the socket is down. Real HTTP and
//! WebSocket on a loopback port, like the simulator.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the fake does with a prompt.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// `POST /prompt` answers 400 with ComfyUI's body.
    Reject,
    /// `POST /prompt` answers 500.
    ServerError,
    /// `POST /prompt` answers 200 with a body that is not JSON.
    Garbage,
    /// Accepts, sends malformed frames, then closes the socket; its history
    /// and queue never heard of the prompt.
    GarbleAndForget,
    /// Accepts, closes the socket at once, and reports the job finished in
    /// its history (with one output file).
    FinishWhileDisconnected,
    /// Accepts and never says anything again.
    Hang,
    /// Accepts, and runs the prompt at once: its start and success on every
    /// socket, then its history.
    Succeed,
}

struct Fake {
    behaviour: Behaviour,
    catalogue: serde_json::Map<String, Value>,
    sockets: Mutex<Vec<mpsc::UnboundedSender<Message>>>,
    finished: Mutex<Option<String>>,
    prompts: Mutex<u32>,
    sockets_opened: Mutex<u32>,
}

pub struct FakeBackend {
    pub url: String,
    state: Arc<Fake>,
}

impl FakeBackend {
    pub async fn start(behaviour: Behaviour) -> FakeBackend {
        Self::start_without(behaviour, &[]).await
    }

    /// A fake whose node catalogue lacks `missing`.
    pub async fn start_without(behaviour: Behaviour, missing: &[&str]) -> FakeBackend {
        let mut catalogue = comfyume_sim::catalogue();
        for node in missing {
            catalogue.remove(*node);
        }
        let state = Arc::new(Fake {
            behaviour,
            catalogue,
            sockets: Mutex::default(),
            finished: Mutex::default(),
            prompts: Mutex::new(0),
            sockets_opened: Mutex::new(0),
        });
        let app = Router::new()
            .route(
                "/object_info",
                get(|State(s): State<Arc<Fake>>| async move { axum::Json(s.catalogue.clone()) }),
            )
            .route(
                "/system_stats",
                get(|| async { axum::Json(json!({"system": {}, "devices": []})) }),
            )
            .route("/ws", get(ws))
            .route("/prompt", post(prompt))
            .route("/history/{id}", get(history))
            .route(
                "/queue",
                get(|| async { axum::Json(json!({"queue_running": [], "queue_pending": []})) }),
            )
            .route(
                "/view",
                get(|| async { ([("content-type", "image/png")], b"\x89PNG-fake".to_vec()) }),
            )
            .route("/interrupt", post(|| async { StatusCode::OK }))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeBackend { url, state }
    }

    /// How many prompts it accepted or refused.
    pub fn prompts(&self) -> u32 {
        *self.state.prompts.lock().unwrap()
    }

    /// How many WebSockets were opened to it.
    pub fn sockets_opened(&self) -> u32 {
        *self.state.sockets_opened.lock().unwrap()
    }

    /// Closes every open socket, as a restarting server would.
    pub fn close_sockets(&self) {
        broadcast(&self.state, vec![Message::Close(None)]);
    }
}

async fn ws(State(state): State<Arc<Fake>>, upgrade: WebSocketUpgrade) -> Response {
    *state.sockets_opened.lock().unwrap() += 1;
    upgrade.on_upgrade(move |socket| serve_socket(state, socket))
}

async fn serve_socket(state: Arc<Fake>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let hello = json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "fake"}});
    if sink
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    state.sockets.lock().unwrap().push(tx);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Message::Close(_)) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
                Some(m) => if sink.send(m).await.is_err() { return },
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(t))) if t.contains("feature_flags") => {
                    let reply = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}});
                    if sink.send(Message::Text(reply.to_string().into())).await.is_err() { return }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

fn broadcast(state: &Fake, messages: Vec<Message>) {
    for tx in state.sockets.lock().unwrap().drain(..) {
        for m in &messages {
            let _ = tx.send(m.clone());
        }
    }
}

async fn prompt(State(state): State<Arc<Fake>>, body: axum::body::Bytes) -> Response {
    *state.prompts.lock().unwrap() += 1;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = body["prompt_id"].as_str().unwrap_or("").to_string();
    let accepted =
        axum::Json(json!({"prompt_id": id, "number": 0, "node_errors": {}})).into_response();
    match state.behaviour {
        Behaviour::Reject => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                          "details": "", "extra_info": {}},
                // What a node's own VALIDATE_INPUTS refusing looks like.
                "node_errors": {"2": {
                    "errors": [{"type": "custom_validation_failed", "message": "Failed to validate prompt for output 5",
                                "details": "this GPU server has no such model", "extra_info": {}}],
                    "dependent_outputs": ["5"], "class_type": "ImageBlur",
                }},
            })),
        )
            .into_response(),
        Behaviour::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error").into_response(),
        Behaviour::Garbage => (StatusCode::OK, "<html>not json</html>").into_response(),
        Behaviour::GarbleAndForget => {
            broadcast(
                &state,
                vec![
                    Message::Text("{not json".into()),
                    Message::Binary(vec![0, 0].into()),
                    Message::Text(json!({"type": "progress", "data": "oops"}).to_string().into()),
                    Message::Close(None),
                ],
            );
            accepted
        }
        Behaviour::FinishWhileDisconnected => {
            *state.finished.lock().unwrap() = Some(id);
            broadcast(&state, vec![Message::Close(None)]);
            accepted
        }
        Behaviour::Hang => accepted,
        Behaviour::Succeed => {
            *state.finished.lock().unwrap() = Some(id.clone());
            let frame = |kind: &str, data: Value| {
                Message::Text(json!({"type": kind, "data": data}).to_string().into())
            };
            let frames = [
                frame("execution_start", json!({"prompt_id": id, "timestamp": 1})),
                frame("execution_success", json!({"prompt_id": id, "timestamp": 2})),
                frame("executing", json!({"node": null, "prompt_id": id})),
            ];
            for tx in state.sockets.lock().unwrap().iter() {
                for m in &frames {
                    let _ = tx.send(m.clone());
                }
            }
            accepted
        }
    }
}

async fn history(State(state): State<Arc<Fake>>, Path(id): Path<String>) -> axum::Json<Value> {
    if state.finished.lock().unwrap().as_deref() != Some(id.as_str()) {
        return axum::Json(json!({}));
    }
    axum::Json(json!({ id.clone(): {
        "prompt": [0, id, {}, {}, ["2"]],
        "outputs": {"2": {"images": [{"filename": "fake_00001_.png", "subfolder": "", "type": "output"}]}},
        "status": {"status_str": "success", "completed": true, "messages": [
            ["execution_start", {"prompt_id": id, "timestamp": 1}],
            ["execution_cached", {"nodes": [], "prompt_id": id, "timestamp": 1}],
            ["execution_success", {"prompt_id": id, "timestamp": 2}],
        ]},
        "meta": {},
    }}))
}
