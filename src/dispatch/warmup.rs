//! The warm-up prompt: run on a backend that has just come up, so its
//! model is loaded before the first participant's job arrives.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::relay::{self, Frame};
use crate::backend::BackendClient;
use crate::config::BackendKind;
use crate::worker::RunRequest;
use crate::worker::stream::Frame as WorkerFrame;

/// Runs `prompt` on `backend` to its end.
pub async fn run(backend: &BackendClient, prompt: &Value) -> Result<(), String> {
    let id = uuid::Uuid::new_v4();
    if backend.kind == BackendKind::Worker {
        let request = RunRequest {
            job_id: id,
            prompt: prompt.as_object().cloned().unwrap_or_default(),
            extra_data: Default::default(),
            partial_execution_targets: None,
            inputs: Vec::new(),
        };
        let stream = backend.worker().run(&request);
        futures_util::pin_mut!(stream);
        while let Some(frame) = stream.next().await {
            match frame.map_err(|e| e.to_string())? {
                WorkerFrame::End { .. } => return Ok(()),
                WorkerFrame::Error { message, .. } => return Err(message),
                _ => {}
            }
        }
        return Err("the worker's stream ended early".into());
    }
    let client_id = format!("comfyume-warmup-{}", backend.name);
    let mut ws = backend
        .connect_ws(&client_id)
        .await
        .map_err(|e| e.to_string())?;
    ws.send(Message::Text(
        json!({"type": "feature_flags", "data": {}})
            .to_string()
            .into(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    let body = json!({"prompt": prompt, "client_id": client_id, "prompt_id": id.to_string()});
    backend
        .post_prompt(&body)
        .await
        .map_err(|e| e.to_string())?;
    let id = id.to_string();
    while let Some(frame) = ws.next().await {
        if let Ok(Message::Text(text)) = frame {
            if relay::classify(&text, &id) == Frame::Done {
                return Ok(());
            }
        }
    }
    Err("the backend's socket closed before the warm-up finished".into())
}
