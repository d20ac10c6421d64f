//! The simulator's HTTP routes and its `/ws` WebSocket.
//!
//! Like stock ComfyUI, every route exists twice: at its plain path and under
//! `/api` (the frontend and the gateway use the latter, scripts the former).
//! Shapes follow stock v0.33.0; see docs/comfyui-api.md §3.2, §5 and §6.9.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{SimState, stats};

type Shared = Arc<SimState>;

pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .merge(routes())
        .nest("/api", routes())
        .fallback(not_found)
        .with_state(state)
}

fn routes() -> Router<Shared> {
    Router::new()
        .route("/ws", get(ws))
        .route("/object_info", get(object_info))
        .route("/object_info/{node_class}", get(object_info_one))
        .route("/system_stats", get(system_stats))
        .route("/features", get(features))
        .route("/prompt", get(prompt_status))
}

/// aiohttp's plain-text 404, which scripts written against stock may match on.
async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404: Not Found")
}

async fn object_info() -> Json<Map<String, Value>> {
    Json(super::catalogue())
}

/// `{class: info}`, or `{}` with 200 for an unknown class, as stock answers.
async fn object_info_one(Path(node_class): Path<String>) -> Json<Map<String, Value>> {
    let mut all = super::catalogue();
    let mut one = Map::new();
    if let Some(info) = all.remove(&node_class) {
        one.insert(node_class, info);
    }
    Json(one)
}

async fn system_stats(State(state): State<Shared>) -> Json<Value> {
    Json(stats::system_stats(&state.argv).await)
}

async fn features() -> Json<Value> {
    Json(stats::features())
}

async fn prompt_status() -> Json<Value> {
    Json(status())
}

/// The queue status of `GET /prompt` and of `status` frames. The simulator
/// does not execute prompts yet, so nothing is ever queued.
fn status() -> Value {
    json!({"exec_info": {"queue_remaining": 0}})
}

#[derive(Deserialize)]
struct WsParams {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
}

async fn ws(
    upgrade: WebSocketUpgrade,
    Query(params): Query<WsParams>,
    State(state): State<Shared>,
) -> Response {
    // Stock adopts any non-empty clientId as the sid, else a uuid4 in hex.
    let sid = params
        .client_id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    upgrade.on_upgrade(move |socket| serve_socket(socket, sid, state))
}

async fn serve_socket(mut socket: WebSocket, sid: String, state: Shared) {
    let mut closing = state.closing.subscribe();
    let hello = json!({"type": "status", "data": {"status": status(), "sid": sid}});
    if send_json(&mut socket, &hello).await.is_err() {
        return;
    }
    // Stock honours `feature_flags` only as the first JSON object a client
    // sends; anything that fails to parse as one does not count as first.
    let mut first = true;
    loop {
        tokio::select! {
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if std::mem::replace(&mut first, false)
                        && msg.get("type") == Some(&json!("feature_flags"))
                    {
                        let reply = json!({"type": "feature_flags", "data": stats::features()});
                        if send_json(&mut socket, &reply).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                // Pings are answered by axum; binary frames mean nothing to stock.
                Some(Ok(_)) => {}
            },
            () = until_closing(&mut closing) => {
                // The client may already be gone; there is nothing left to do either way.
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }
}

/// Resolves once the server is closing.
async fn until_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    // Fails only if the sender is dropped, and the socket holds the state that owns it.
    let _ = closing.wait_for(|closing| *closing).await;
}

async fn send_json(socket: &mut WebSocket, value: &Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(value.to_string().into())).await
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    use super::*;

    /// A simulator on a real socket, stopped through a oneshot.
    struct Running {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<std::io::Result<()>>,
    }

    async fn start() -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::sim::run(listener, async {
            let _ = stopped.await;
        }));
        Running { addr, stop, task }
    }

    impl Running {
        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        async fn shutdown(self) {
            self.stop.send(()).expect("server still running");
            self.task
                .await
                .expect("server task")
                .expect("server result");
        }
    }

    async fn get_json(url: &str) -> Value {
        let response = reqwest::get(url).await.expect("GET");
        assert_eq!(response.status(), 200, "GET {url}");
        response.json().await.expect("JSON body")
    }

    #[tokio::test]
    async fn serves_object_info_at_both_paths() {
        let server = start().await;

        let all = get_json(&server.url("/object_info")).await;
        assert_eq!(all, Value::Object(crate::sim::catalogue()));

        let one = get_json(&server.url("/api/object_info/EmptyImage")).await;
        let keys: Vec<&String> = one.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["EmptyImage"]);
        assert_eq!(one["EmptyImage"], all["EmptyImage"]);

        assert_eq!(get_json(&server.url("/object_info/Nope")).await, json!({}));

        let missing = reqwest::get(server.url("/nope")).await.expect("GET");
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.text().await.expect("body"), "404: Not Found");

        server.shutdown().await;
    }

    #[tokio::test]
    async fn serves_status_routes() {
        let server = start().await;
        for prefix in ["", "/api"] {
            let prompt = get_json(&server.url(&format!("{prefix}/prompt"))).await;
            assert_eq!(prompt, json!({"exec_info": {"queue_remaining": 0}}));
            let features = get_json(&server.url(&format!("{prefix}/features"))).await;
            assert_eq!(features, stats::features());
            let system = get_json(&server.url(&format!("{prefix}/system_stats"))).await;
            assert_eq!(
                system["system"]["comfyui_version"],
                format!("comfyume-sim {}", env!("CARGO_PKG_VERSION"))
            );
        }
        server.shutdown().await;
    }

    type Client = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn connect(server: &Running, path: &str) -> Client {
        let url = format!("ws://{}{path}", server.addr);
        let (client, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        client
    }

    async fn next_json(client: &mut Client) -> Value {
        match client.next().await {
            Some(Ok(WsMessage::Text(text))) => serde_json::from_str(&text).expect("JSON frame"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    async fn send_text(client: &mut Client, value: Value) {
        client
            .send(WsMessage::text(value.to_string()))
            .await
            .expect("send");
    }

    #[tokio::test]
    async fn websocket_greets_and_answers_feature_flags() {
        let server = start().await;
        let mut client = connect(&server, "/ws?clientId=clienta-536044d3").await;

        // The exact frames of the stock recording, with our server flags.
        assert_eq!(
            next_json(&mut client).await,
            json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "clienta-536044d3"}})
        );
        let flags = json!({"supports_preview_metadata": true, "supports_manager_v4_ui": true, "supports_progress_text_metadata": true});
        send_text(&mut client, json!({"type": "feature_flags", "data": flags})).await;
        assert_eq!(
            next_json(&mut client).await,
            json!({"type": "feature_flags", "data": stats::features()})
        );

        server.shutdown().await;
        // Shutdown closes the socket rather than leaving it open.
        match client.next().await {
            Some(Ok(WsMessage::Close(_))) | None => {}
            other => panic!("expected close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn websocket_without_client_id_gets_a_hex_sid() {
        let server = start().await;
        let mut client = connect(&server, "/api/ws").await;
        let hello = next_json(&mut client).await;
        let sid = hello["data"]["sid"].as_str().expect("sid");
        assert_eq!(sid.len(), 32, "{sid}");
        assert!(
            sid.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn websocket_ignores_feature_flags_that_come_late() {
        let server = start().await;
        let mut client = connect(&server, "/ws?clientId=").await;
        let hello = next_json(&mut client).await;
        assert_eq!(hello["data"]["sid"].as_str().map(str::len), Some(32));

        send_text(&mut client, json!({"type": "hello", "data": {}})).await;
        send_text(&mut client, json!({"type": "feature_flags", "data": {}})).await;
        // The server handles frames in order, so its pong to this ping comes
        // after any reply it would have sent to the frames above.
        client
            .send(WsMessage::Ping(b"after".to_vec().into()))
            .await
            .expect("ping");
        match client.next().await {
            Some(Ok(WsMessage::Pong(payload))) => assert_eq!(&payload[..], b"after"),
            other => panic!("expected only a pong, got {other:?}"),
        }
        server.shutdown().await;
    }
}
