//! `/ws`: the browser's live channel, per ComfyUI's protocol (§5 of
//! comfyui-api.md): a `status` frame carrying the socket's `sid` first, the
//! server's feature flags in reply to the client's, then whatever the hub
//! routes to this user.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::SessionUser;
use crate::http::comfy::server_features;
use crate::http::session::CurrentUser;
use crate::hub::Outbound;

#[derive(Deserialize)]
pub struct WsQuery {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
}

pub async fn upgrade(
    CurrentUser(user): CurrentUser,
    State(state): State<AppState>,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let sid = q
        .client_id
        .filter(|s| is_valid_sid(s))
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let max = state.config.limits.max_sockets_per_user;
    let Some(permit) = state.hub.admit(user.id, max) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!("This account already has {max} ComfyUI tabs open; close one and reload."),
        )
            .into_response();
    };
    // Sized for ComfyUI's traffic, not the library's defaults (a 128 KiB
    // read buffer per socket, 64 MiB messages): a browser sends only its
    // feature flags, so a small read buffer and a bound on what it may
    // send; what we send is written out frame by frame.
    ws.read_buffer_size(SOCKET_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_INCOMING_MESSAGE)
        .max_frame_size(MAX_INCOMING_MESSAGE)
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            serve_socket(state, user, sid, socket).await
        })
}

/// Bytes read from a socket at a time.
const SOCKET_READ_BUFFER: usize = 4 * 1024;
/// The largest message a browser may send (ComfyUI's own limit is 4 MiB; a
/// browser sends a few hundred bytes).
const MAX_INCOMING_MESSAGE: usize = 1024 * 1024;

/// The frontend stores the sid in `window.name`; anything else a client
/// sends is replaced by a fresh one rather than echoed back.
fn is_valid_sid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The longest one frame may wait for the browser to take it.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn serve_socket(state: AppState, user: SessionUser, sid: String, socket: WebSocket) {
    let (registration, mut outbound) = state.hub.register(user.id, &sid);
    // Its canvas asks where it stands when it loads; from here on it hears
    // each change.
    state.room.forget_told(user.id);
    let (mut sink, mut stream) = socket.split();
    let mut closing = state.closing.subscribe();

    let remaining = match state.jobs.queue_remaining(&user).await {
        Ok(n) => n,
        Err(e) => {
            // No status is better than a wrong one: the socket closes and
            // the frontend reconnects.
            tracing::error!(error = %e, "could not count a user's jobs for a new socket");
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
    };
    let hello = json!({
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid},
    });
    if sink
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut first_frame = true;
    loop {
        tokio::select! {
            msg = outbound.recv() => {
                let Some(msg) = msg else { break };
                let frame = match msg {
                    Outbound::Text(t) => Message::Text(t.into()),
                    Outbound::Binary(b) => Message::Binary(b.into()),
                };
                // A browser that takes no bytes for this long is gone
                // (or frozen); it reconnects and catches up from history.
                match tokio::time::timeout(SEND_TIMEOUT, sink.send(frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::info!(%sid, "a socket took no frame for {SEND_TIMEOUT:?}: closing it");
                        break;
                    }
                }
            }
            incoming = stream.next() => {
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        // Only the client's first frame means anything: its
                        // feature flags, answered with ours.
                        let flags = if std::mem::take(&mut first_frame) { feature_flags(&text) } else { None };
                        if let Some(flags) = flags {
                            let previews = flags.get("supports_preview_metadata").and_then(Value::as_bool) == Some(true);
                            registration.set_preview_metadata(previews);
                            let reply = json!({"type": "feature_flags", "data": server_features(&state)});
                            if sink.send(Message::Text(reply.to_string().into())).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => first_frame = false,
                }
            }
            _ = server_closing(&mut closing) => {
                let _ = sink.send(Message::Close(None)).await;
                break;
            }
        }
    }
}

async fn server_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// The `data` of a `feature_flags` frame.
fn feature_flags(text: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("type").and_then(Value::as_str) != Some("feature_flags") {
        return None;
    }
    Some(v.get("data").cloned().unwrap_or(Value::Null))
}
