//! The warm-up prompt: run on a backend that has just come up, so its
//! model is loaded before the first participant's job arrives. It goes
//! through the same session as a job, and nobody hears of its events.

use serde_json::{Value, json};

use crate::backend::{Backend, BackendSession, SessionEvent, Submission};

/// Runs `prompt` on `backend` to its end.
pub async fn run(backend: &Backend, prompt: &Value) -> Result<(), String> {
    let id = uuid::Uuid::new_v4().to_string();
    let client_id = format!("comfyume-warmup-{}", backend.name);
    let mut session = backend.session(&client_id, &id);
    let submission = Submission {
        prompt: prompt.clone(),
        inputs: Vec::new(),
        extra_data: json!({}),
        partial_execution_targets: None,
    };
    session
        .submit(&submission)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match session.next().await.map_err(|e| e.to_string())? {
            SessionEvent::Done { .. } => return Ok(()),
            SessionEvent::Event { kind, data, .. } if kind == "execution_error" => {
                let message = data
                    .get("exception_message")
                    .and_then(Value::as_str)
                    .unwrap_or("execution_error");
                return Err(message.to_string());
            }
            _ => {}
        }
    }
}
