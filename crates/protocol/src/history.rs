//! A finished prompt's entry in ComfyUI's `GET /history/{prompt_id}`: how it
//! ended, and the frames a client that lost its socket mid-run never saw.
//!
//! A client that reconnects after the prompt ended learns of it only here.
//! [`HistoryEntry::missed_frames`] rebuilds what it missed in ComfyUI's own
//! order (start messages, each output node's `executed`, then how it
//! ended), so the gateway and the worker sidecar recover the same way.
//! The rebuilt frames have ComfyUI's shapes, not its bytes.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::frames::HISTORY_MESSAGES;

/// How a prompt ended, as ComfyUI reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Error,
    Interrupted,
}

impl Outcome {
    /// The outcome a history-kept message announces, if it ends a run.
    pub fn of_message(kind: &str) -> Option<Self> {
        match kind {
            "execution_success" => Some(Outcome::Success),
            "execution_error" => Some(Outcome::Error),
            "execution_interrupted" => Some(Outcome::Interrupted),
            _ => None,
        }
    }
}

/// One prompt's history item (the value under its id).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry(Value);

/// A frame rebuilt from history: its `type` and `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct MissedFrame {
    pub kind: String,
    pub data: Value,
}

impl MissedFrame {
    /// The frame as ComfyUI would have sent it.
    pub fn to_text(&self) -> String {
        json!({"type": self.kind, "data": self.data}).to_string()
    }
}

impl HistoryEntry {
    /// The entry for `prompt_id` in a `GET /history/{prompt_id}` answer;
    /// `None` while ComfyUI has not finished it (the answer is `{}`).
    pub fn from_answer(answer: &Value, prompt_id: &str) -> Option<Self> {
        answer
            .get(prompt_id)
            .filter(|e| e.is_object())
            .cloned()
            .map(HistoryEntry)
    }

    pub fn as_json(&self) -> &Value {
        &self.0
    }

    /// How the prompt ended: interrupted if it says so, else success only
    /// if its status says success.
    pub fn outcome(&self) -> Outcome {
        if self
            .messages()
            .any(|(kind, _)| kind == "execution_interrupted")
        {
            Outcome::Interrupted
        } else if self.0.pointer("/status/status_str").and_then(Value::as_str) == Some("success") {
            Outcome::Success
        } else {
            Outcome::Error
        }
    }

    /// The frames a client missed, given the history-kept message types it
    /// already saw and the nodes whose `executed` it already had. Output
    /// files are named in the `executed` frames; fetching them is the
    /// caller's business.
    pub fn missed_frames(
        &self,
        prompt_id: &str,
        seen_messages: &HashSet<String>,
        executed_nodes: &HashSet<String>,
    ) -> Vec<MissedFrame> {
        let (starts, ends): (Vec<_>, Vec<_>) = self
            .messages()
            .filter(|(kind, _)| HISTORY_MESSAGES.contains(kind) && !seen_messages.contains(*kind))
            .partition(|(kind, _)| *kind == "execution_start" || *kind == "execution_cached");
        let mut missed: Vec<MissedFrame> = starts
            .into_iter()
            .map(|(kind, data)| MissedFrame {
                kind: kind.to_string(),
                data: data.clone(),
            })
            .collect();
        if let Some(outputs) = self.0.get("outputs").and_then(Value::as_object) {
            for (node, output) in outputs {
                if executed_nodes.contains(node) {
                    continue;
                }
                let display = self
                    .0
                    .get("meta")
                    .and_then(|m| m.get(node))
                    .and_then(|m| m.get("display_node"))
                    .cloned()
                    .unwrap_or_else(|| json!(node));
                missed.push(MissedFrame {
                    kind: "executed".into(),
                    data: json!({"node": node, "display_node": display, "output": output, "prompt_id": prompt_id}),
                });
            }
        }
        missed.extend(ends.into_iter().map(|(kind, data)| MissedFrame {
            kind: kind.to_string(),
            data: data.clone(),
        }));
        missed
    }

    /// `status.messages` as `(type, data)` pairs.
    fn messages(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0
            .pointer("/status/messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m.get(0)?.as_str()?, m.get(1)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "85204b33-05b2-4fb6-bb94-c91b90a274bd";

    fn entry(v: Value) -> HistoryEntry {
        HistoryEntry::from_answer(&json!({ P: v }), P).expect("an entry")
    }

    #[test]
    fn outcome_from_history() {
        let success = entry(
            json!({"status": {"status_str": "success", "completed": true, "messages": [["execution_success", {}]]}}),
        );
        assert_eq!(success.outcome(), Outcome::Success);
        let interrupted = entry(
            json!({"status": {"status_str": "error", "completed": false, "messages": [["execution_interrupted", {}]]}}),
        );
        assert_eq!(interrupted.outcome(), Outcome::Interrupted);
        let error = entry(
            json!({"status": {"status_str": "error", "completed": false, "messages": [["execution_error", {}]]}}),
        );
        assert_eq!(error.outcome(), Outcome::Error);
        assert_eq!(entry(json!({})).outcome(), Outcome::Error);
        assert_eq!(HistoryEntry::from_answer(&json!({}), P), None);
    }

    /// The golden history of a stock ComfyUI run: what a client that saw
    /// nothing missed, in ComfyUI's order; what one that saw the start and
    /// the output missed.
    #[test]
    fn missed_frames_in_comfyui_order() {
        let answer: Value = serde_json::from_str(include_str!(
            "../../../fixtures/comfyui-0.3.64/history-success.json"
        ))
        .expect("fixture");
        let id = answer
            .as_object()
            .and_then(|o| o.keys().next())
            .cloned()
            .expect("one prompt");
        let entry = HistoryEntry::from_answer(&answer, &id).expect("entry");
        assert_eq!(entry.outcome(), Outcome::Success);
        let all = entry.missed_frames(&id, &HashSet::new(), &HashSet::new());
        let kinds: Vec<&str> = all.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "execution_start",
                "execution_cached",
                "executed",
                "execution_success"
            ]
        );
        assert_eq!(all[2].data["prompt_id"], json!(id));
        assert_eq!(all[2].data["output"], answer[&id]["outputs"]["3"]);

        let seen = HashSet::from([
            "execution_start".to_string(),
            "execution_cached".to_string(),
        ]);
        let executed = HashSet::from(["3".to_string()]);
        let rest = entry.missed_frames(&id, &seen, &executed);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].kind, "execution_success");
        assert!(
            rest[0]
                .to_text()
                .starts_with(r#"{"type":"execution_success""#)
        );
    }
}
