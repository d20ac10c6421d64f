//! The `/ws` WebSocket and the [`Hub`] that routes frames to sockets
//! (docs/comfyui-api.md §5).
//!
//! Every socket has an unbounded queue that only its own task drains, so
//! whoever sends (an HTTP handler broadcasting `status`, the executor) never
//! waits on a slow client, and each client sees frames in the order they
//! were sent. Sockets are keyed by sid (`clientId`); a new socket with a
//! known sid replaces the old one. Unlike stock, an old socket closing late
//! does not unregister its replacement.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{SimState, stats};

/// What a socket's task is told to do.
#[derive(Debug)]
pub(crate) enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// Close the connection (the drop-connection knob). A socket whose
    /// queue is dropped (replaced by a newer one) closes too.
    Close,
}

struct Client {
    id: u64,
    tx: mpsc::UnboundedSender<Frame>,
    /// The client's first frame announced `supports_preview_metadata`.
    preview_metadata: bool,
}

/// The running prompt's client and the node it last started, for the
/// `executing` frame a reconnecting client gets (S:server.py:288-290).
#[derive(Default)]
struct Current {
    client_id: Option<String>,
    last_node: Option<String>,
}

#[derive(Default)]
pub(crate) struct Hub {
    clients: Mutex<HashMap<String, Client>>,
    current: Mutex<Current>,
    next_id: AtomicU64,
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn message(kind: &str, data: Value) -> String {
    json!({"type": kind, "data": data}).to_string()
}

impl Hub {
    /// Sends `{"type": kind, "data": data}` to `sid`, or to everyone if `None`.
    pub fn send(&self, sid: Option<&str>, kind: &str, data: Value) {
        self.deliver(sid, || Frame::Text(message(kind, data.clone())));
    }

    pub fn send_binary(&self, sid: Option<&str>, bytes: Vec<u8>) {
        self.deliver(sid, || Frame::Binary(bytes.clone()));
    }

    fn deliver(&self, sid: Option<&str>, frame: impl Fn() -> Frame) {
        let clients = lock(&self.clients);
        match sid {
            // A closed socket's receiver is gone; its frames are dropped, as stock's are.
            Some(sid) => {
                if let Some(client) = clients.get(sid) {
                    let _ = client.tx.send(frame());
                }
            }
            None => {
                for client in clients.values() {
                    let _ = client.tx.send(frame());
                }
            }
        }
    }

    /// Whether `sid` asked for previews with metadata (never for `None`).
    pub fn wants_preview_metadata(&self, sid: Option<&str>) -> bool {
        sid.is_some_and(|sid| {
            lock(&self.clients)
                .get(sid)
                .is_some_and(|c| c.preview_metadata)
        })
    }

    /// Closes every socket (the `drop_after_steps` knob).
    pub fn drop_all(&self) {
        for (_, client) in lock(&self.clients).drain() {
            let _ = client.tx.send(Frame::Close);
        }
    }

    pub fn set_current(&self, client_id: Option<&str>) {
        *lock(&self.current) = Current {
            client_id: client_id.map(str::to_owned),
            last_node: None,
        };
    }

    pub fn set_last_node(&self, node: &str) {
        lock(&self.current).last_node = Some(node.to_owned());
    }

    /// Registers a socket for `sid` with its first frames already queued,
    /// so nothing sent meanwhile can overtake them.
    fn connect(&self, sid: &str, queue_remaining: usize) -> (u64, mpsc::UnboundedReceiver<Frame>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hello =
            json!({"status": {"exec_info": {"queue_remaining": queue_remaining}}, "sid": sid});
        let _ = tx.send(Frame::Text(message("status", hello)));
        let current = lock(&self.current);
        if let (Some(client), Some(node)) = (&current.client_id, &current.last_node)
            && client == sid
        {
            // Stock's reconnect frame has no prompt_id and no display_node.
            let _ = tx.send(Frame::Text(message("executing", json!({"node": node}))));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Dropping a replaced client's sender ends its socket: stock leaves
        // that socket open but silent, which no client can tell apart.
        lock(&self.clients).insert(
            sid.to_owned(),
            Client {
                id,
                tx,
                preview_metadata: false,
            },
        );
        drop(current);
        (id, rx)
    }

    fn disconnect(&self, sid: &str, id: u64) {
        let mut clients = lock(&self.clients);
        if clients.get(sid).is_some_and(|c| c.id == id) {
            clients.remove(sid);
        }
    }

    fn set_preview_metadata(&self, sid: &str, id: u64, on: bool) {
        if let Some(client) = lock(&self.clients).get_mut(sid).filter(|c| c.id == id) {
            client.preview_metadata = on;
        }
    }
}

#[derive(Deserialize)]
pub(super) struct WsParams {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
}

pub(super) async fn handler(
    upgrade: WebSocketUpgrade,
    Query(params): Query<WsParams>,
    State(state): State<Arc<SimState>>,
) -> Response {
    // Stock adopts any non-empty clientId as the sid, else a uuid4 in hex.
    let sid = params
        .client_id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    upgrade.on_upgrade(move |socket| serve(socket, sid, state))
}

async fn serve(mut socket: WebSocket, sid: String, state: Arc<SimState>) {
    let mut closing = state.closing.subscribe();
    let (id, mut frames) = state.hub.connect(&sid, state.queue.remaining());
    // Stock honours `feature_flags` only as the first JSON object a client
    // sends; anything that fails to parse as one does not count as first.
    let mut first = true;
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let sent = match frame {
                    Some(Frame::Text(text)) => socket.send(Message::Text(text.into())).await,
                    Some(Frame::Binary(bytes)) => socket.send(Message::Binary(bytes.into())).await,
                    Some(Frame::Close) | None => {
                        // The client may already be gone; either way we are done.
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if std::mem::replace(&mut first, false)
                        && msg.get("type") == Some(&json!("feature_flags"))
                    {
                        let on = msg.get("data").and_then(|d| d.get("supports_preview_metadata"))
                            == Some(&json!(true));
                        state.hub.set_preview_metadata(&sid, id, on);
                        let reply = message("feature_flags", stats::features());
                        if socket.send(Message::Text(reply.into())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                // Pings are answered by axum; binary frames mean nothing to stock.
                Some(Ok(_)) => {}
            },
            () = super::until_closing(&mut closing) => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
    }
    state.hub.disconnect(&sid, id);
}
