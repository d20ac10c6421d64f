//! One prompt's life on a ComfyUI, as its client: open the socket and agree
//! on preview metadata, queue the prompt under our id, follow its frames to
//! the end, ask the server about it when the socket failed us, cancel it.
//!
//! ComfyUI addresses a prompt's events to the socket of the client id it
//! was queued with, so a session keeps one client id for its whole life:
//! a socket re-opened under it gets the rest of the prompt's events.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{BackendError, BackendSocket, ComfyClient};
use crate::frames::{self, Frame, HISTORY_MESSAGES, OutputFile};
use crate::history::HistoryEntry;

/// How long ComfyUI may take to answer our feature flags.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame of our prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A text event of the prompt other than its end; `raw` is the frame
    /// exactly as ComfyUI sent it.
    Event {
        kind: String,
        data: Value,
        raw: String,
    },
    /// A binary frame of the prompt (a preview).
    Binary(Bytes),
    /// The prompt's final `executing` (node null).
    Done { raw: String },
}

/// The socket failed before the prompt's end: what became of the prompt is
/// unknown until the server is asked ([`ComfySession::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Lost(pub String);

/// What the server says of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    /// It ended; its history entry says how.
    Finished(HistoryEntry),
    /// It is running or waiting in the server's queue.
    Queued,
    /// The server has never heard of it, or forgot it.
    Unknown,
}

/// One prompt on one ComfyUI, followed on one client id.
pub struct ComfySession {
    client: ComfyClient,
    client_id: String,
    prompt_id: String,
    socket: BackendSocket,
    /// History-kept message types seen so far (`execution_start`, …).
    seen: HashSet<String>,
    /// Nodes whose `executed` was seen.
    executed: HashSet<String>,
}

impl ComfySession {
    /// Opens the server's socket as `client_id` for prompt `prompt_id` and
    /// asks for previews with metadata (binary type 4, which name their
    /// prompt), waiting for the server's reply so every preview of a
    /// prompt queued afterwards carries it.
    pub async fn open(
        client: ComfyClient,
        client_id: impl Into<String>,
        prompt_id: impl Into<String>,
    ) -> Result<Self, BackendError> {
        let client_id = client_id.into();
        let mut socket = client.connect_ws(&client_id).await?;
        let unreachable = |reason: String| BackendError::Unreachable {
            backend: client.name().to_string(),
            reason,
        };
        send_features(&mut socket)
            .await
            .map_err(|e| unreachable(format!("could not send feature flags: {e}")))?;
        let reply = async {
            while let Some(frame) = socket.next().await {
                match frame {
                    Ok(Message::Text(t)) if frames::classify(&t, "") == Frame::FeatureFlags => {
                        return Ok(());
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            Err(unreachable(
                "the WebSocket closed before the handshake finished".into(),
            ))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, reply)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no feature_flags reply on the WebSocket within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ))
            })??;
        Ok(Self {
            client,
            client_id,
            prompt_id: prompt_id.into(),
            socket,
            seen: HashSet::new(),
            executed: HashSet::new(),
        })
    }

    /// Follows prompt `prompt_id` on a socket an earlier session of the
    /// same client id opened, shook hands on and followed to its prompt's
    /// end (see [`into_socket`](Self::into_socket)): no new connection, no
    /// handshake.
    pub fn adopt(
        client: ComfyClient,
        client_id: impl Into<String>,
        prompt_id: impl Into<String>,
        socket: BackendSocket,
    ) -> Self {
        Self {
            client,
            client_id: client_id.into(),
            prompt_id: prompt_id.into(),
            socket,
            seen: HashSet::new(),
            executed: HashSet::new(),
        }
    }

    /// The socket, for the next prompt of the same client id to
    /// [`adopt`](Self::adopt).
    pub fn into_socket(self) -> BackendSocket {
        self.socket
    }

    pub fn client(&self) -> &ComfyClient {
        &self.client
    }

    pub fn prompt_id(&self) -> &str {
        &self.prompt_id
    }

    /// Opens the socket again under the same client id after it failed.
    /// The feature flags are sent but their reply is not awaited: events
    /// of the running prompt may come first and must not be swallowed.
    pub async fn reopen(&mut self) -> Result<(), BackendError> {
        let mut socket = self.client.connect_ws(&self.client_id).await?;
        send_features(&mut socket)
            .await
            .map_err(|e| BackendError::Unreachable {
                backend: self.client.name().to_string(),
                reason: format!("could not send feature flags: {e}"),
            })?;
        self.socket = socket;
        Ok(())
    }

    /// Queues the prompt (`POST /prompt`) under the session's prompt id and
    /// client id; returns the server's answer (`number`, `node_errors`).
    pub async fn submit(
        &mut self,
        prompt: &Value,
        extra_data: &Value,
        partial_execution_targets: Option<&[String]>,
    ) -> Result<Value, BackendError> {
        let mut body = json!({
            "prompt": prompt,
            "client_id": self.client_id,
            "prompt_id": self.prompt_id,
            "extra_data": extra_data,
        });
        if let Some(targets) = partial_execution_targets {
            body["partial_execution_targets"] = json!(targets);
        }
        self.client.post_prompt(&body).await
    }

    /// The prompt's next frame. Frames of other prompts and the server's
    /// queue status are skipped. Cancel-safe: dropping the future between
    /// frames loses none.
    pub async fn next(&mut self) -> Result<Incoming, Lost> {
        loop {
            let frame = match self.socket.next().await {
                None => return Err(Lost("the connection ended".into())),
                Some(Err(e)) => return Err(Lost(e.to_string())),
                Some(Ok(frame)) => frame,
            };
            match frame {
                Message::Text(text) => match frames::classify(&text, &self.prompt_id) {
                    Frame::Event { kind, data } => {
                        self.saw(&kind, &data);
                        return Ok(Incoming::Event {
                            kind,
                            data,
                            raw: text.to_string(),
                        });
                    }
                    Frame::Done => {
                        return Ok(Incoming::Done {
                            raw: text.to_string(),
                        });
                    }
                    Frame::Status | Frame::FeatureFlags | Frame::Ignore => {}
                },
                Message::Binary(bytes)
                    if frames::binary_is_ours(&bytes, &self.prompt_id, self.is_executing()) =>
                {
                    return Ok(Incoming::Binary(bytes));
                }
                Message::Close(_) => return Err(Lost("the connection was closed".into())),
                _ => {}
            }
        }
    }

    /// Notes an event of the prompt that reached the client some other way
    /// (rebuilt from history), so it is not counted as missed again.
    pub fn saw(&mut self, kind: &str, data: &Value) {
        if HISTORY_MESSAGES.contains(&kind) {
            self.seen.insert(kind.to_string());
        }
        if kind == "executed" {
            if let Some(node) = data.get("node").and_then(Value::as_str) {
                self.executed.insert(node.to_string());
            }
        }
    }

    /// Between the prompt's `execution_start` and its end, binary frames
    /// that name no prompt (types 1 and 3) are taken as its own.
    fn is_executing(&self) -> bool {
        self.seen.contains("execution_start")
    }

    /// What the server says of the prompt: its history first (a prompt
    /// leaves the queue before it enters the history, so asking the other
    /// way round could miss it in between), then its queue.
    pub async fn status(&self) -> Result<JobStatus, BackendError> {
        let answer = self.client.history(&self.prompt_id).await?;
        if let Some(entry) = HistoryEntry::from_answer(&answer, &self.prompt_id) {
            return Ok(JobStatus::Finished(entry));
        }
        let queue = self.client.queue().await?;
        Ok(if queue_holds(&queue, &self.prompt_id) {
            JobStatus::Queued
        } else {
            JobStatus::Unknown
        })
    }

    /// The frames of a finished prompt this session never saw.
    pub fn missed_frames(&self, entry: &HistoryEntry) -> Vec<crate::history::MissedFrame> {
        entry.missed_frames(&self.prompt_id, &self.seen, &self.executed)
    }

    /// Takes the prompt back: out of the pending queue first (ComfyUI's
    /// interrupt ignores a prompt that is not running), then interrupted
    /// if it runs. Both are tried; the first error is returned.
    pub async fn cancel(&self) -> Result<(), BackendError> {
        cancel_prompt(&self.client, &self.prompt_id).await
    }

    /// The bytes of an output file the prompt produced (`GET /view`).
    pub async fn download(&self, file: &OutputFile) -> Result<Vec<u8>, BackendError> {
        self.client
            .download(&file.filename, &file.subfolder, &file.kind)
            .await
    }
}

/// Takes `prompt_id` back from `client`'s server: see [`ComfySession::cancel`].
pub async fn cancel_prompt(client: &ComfyClient, prompt_id: &str) -> Result<(), BackendError> {
    let dequeued = client.delete_queued(prompt_id).await;
    let interrupted = client.interrupt(prompt_id).await;
    dequeued.and(interrupted)
}

/// Asks for previews with metadata (binary type 4).
async fn send_features(
    socket: &mut BackendSocket,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let flags = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}});
    socket.send(Message::Text(flags.to_string().into())).await
}

/// Whether a `GET /queue` answer lists `prompt_id` as running or pending.
/// Items are `[number, prompt_id, …]`.
pub fn queue_holds(queue: &Value, prompt_id: &str) -> bool {
    ["queue_running", "queue_pending"].iter().any(|key| {
        queue
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|item| item.get(1).and_then(Value::as_str) == Some(prompt_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_listing() {
        let q = json!({"queue_running": [[0, "a", {}, {}, []]], "queue_pending": [[1, "b", {}, {}, []]]});
        assert!(queue_holds(&q, "a"));
        assert!(queue_holds(&q, "b"));
        assert!(!queue_holds(&q, "c"));
        assert!(!queue_holds(&json!({}), "a"));
    }
}
