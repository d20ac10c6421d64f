//! ComfyUI's WebSocket frames as seen by a client following one prompt:
//! which frames belong to the prompt, what history keeps, which output
//! files an `executed` names and how to point them elsewhere. Pure
//! functions, so the protocol rules are tested without sockets.

use serde_json::{Map, Value};

/// One text frame from a backend, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Queue status: the backend's, meaningless to a participant (the
    /// gateway sends each user their own).
    Status,
    /// The reply to our feature flags.
    FeatureFlags,
    /// An event of our job, relayed as is (maybe after rewriting).
    Event { kind: String, data: Value },
    /// `executing` with `node: null`: the job's last message.
    Done,
    /// Something about another prompt, or unparseable.
    Ignore,
}

/// Messages ComfyUI keeps in a history item's `status.messages`.
pub const HISTORY_MESSAGES: [&str; 5] = [
    "execution_start",
    "execution_cached",
    "execution_success",
    "execution_error",
    "execution_interrupted",
];

/// Classifies a text frame for job `prompt_id`.
pub fn classify(text: &str, prompt_id: &str) -> Frame {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Frame::Ignore;
    };
    let Some(kind) = v.get("type").and_then(Value::as_str) else {
        return Frame::Ignore;
    };
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    match kind {
        "status" => return Frame::Status,
        "feature_flags" => return Frame::FeatureFlags,
        _ => {}
    }
    match data.get("prompt_id").and_then(Value::as_str) {
        Some(p) if p == prompt_id => {}
        // Frames of another prompt, or the reconnect form of `executing`
        // (which names no prompt), are not ours to relay.
        _ => return Frame::Ignore,
    }
    if kind == "executing" && data.get("node").is_some_and(Value::is_null) {
        return Frame::Done;
    }
    Frame::Event {
        kind: kind.to_string(),
        data,
    }
}

/// The message type of a binary frame (first 4 bytes, big-endian).
pub fn binary_type(bytes: &[u8]) -> Option<u32> {
    bytes
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether a binary frame belongs to `prompt_id`. Type 4 previews carry
/// their prompt in a metadata header. The other types name no prompt (and
/// ComfyUI may send progress text to every socket), so they are taken as
/// the job's only while it is the one executing.
pub fn binary_is_ours(bytes: &[u8], prompt_id: &str, executing: bool) -> bool {
    match binary_type(bytes) {
        Some(4) => {
            let Some(len) = bytes
                .get(4..8)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            else {
                return false;
            };
            let Some(meta) = bytes.get(8..8 + len) else {
                return false;
            };
            serde_json::from_slice::<Value>(meta)
                .ok()
                .and_then(|m| {
                    m.get("prompt_id")
                        .and_then(Value::as_str)
                        .map(|p| p == prompt_id)
                })
                .unwrap_or(false)
        }
        Some(_) => executing,
        None => false,
    }
}

/// A file a backend produced, as named in an `executed` output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutputFile {
    pub filename: String,
    pub subfolder: String,
    /// `output` or `temp`.
    pub kind: String,
}

/// Every file referenced by an `executed` output: list items with a
/// `filename` and a `type` of `output` or `temp`, under any key (`images`,
/// `gifs`, `video`, `audio`, …).
pub fn output_files(output: &Value) -> Vec<OutputFile> {
    let mut files = Vec::new();
    let Some(map) = output.as_object() else {
        return files;
    };
    for items in map.values().filter_map(Value::as_array) {
        for item in items {
            if let Some(f) = as_output_file(item) {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
    }
    files
}

fn as_output_file(item: &Value) -> Option<OutputFile> {
    let o = item.as_object()?;
    let filename = o.get("filename")?.as_str()?.to_string();
    let kind = o
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("output")
        .to_string();
    if kind != "output" && kind != "temp" {
        return None;
    }
    let subfolder = o
        .get("subfolder")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Some(OutputFile {
        filename,
        subfolder,
        kind,
    })
}

/// Points every reference to `from` at `to` (the name the file got in the
/// user's folder).
pub fn rewrite_output(output: &mut Value, from: &OutputFile, to: &OutputFile) {
    let Some(map) = output.as_object_mut() else {
        return;
    };
    for items in map.values_mut().filter_map(Value::as_array_mut) {
        for item in items.iter_mut() {
            if as_output_file(item).as_ref() == Some(from) {
                if let Some(o) = item.as_object_mut() {
                    o.insert("filename".into(), Value::String(to.filename.clone()));
                    o.insert("subfolder".into(), Value::String(to.subfolder.clone()));
                }
            }
        }
    }
}

/// Drops every reference to `file` (an output that could not be copied),
/// so the browser never shows an older file of the same name instead.
pub fn remove_output(output: &mut Value, file: &OutputFile) {
    let Some(map) = output.as_object_mut() else {
        return;
    };
    for items in map.values_mut().filter_map(Value::as_array_mut) {
        items.retain(|item| as_output_file(item).as_ref() != Some(file));
    }
}

/// The data of the `execution_interrupted` ComfyUI sends when `prompt_id`
/// is stopped, for a client that stopped it where ComfyUI cannot say so
/// (the stream to a worker was dropped).
pub fn interrupted_data(prompt_id: &str, timestamp_ms: i64) -> Value {
    serde_json::json!({
        "prompt_id": prompt_id,
        "node_id": "",
        "node_type": "",
        "executed": [],
        "timestamp": timestamp_ms,
    })
}

/// The history `meta` entry of an executed node.
pub fn node_meta(data: &Value) -> Value {
    let node = data.get("node").cloned().unwrap_or(Value::Null);
    let display = data
        .get("display_node")
        .cloned()
        .unwrap_or_else(|| node.clone());
    let mut m = Map::new();
    m.insert("node_id".into(), node.clone());
    m.insert("display_node".into(), display);
    m.insert("parent_node".into(), Value::Null);
    m.insert("real_node_id".into(), node);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &str = "85204b33-05b2-4fb6-bb94-c91b90a274bd";

    #[test]
    fn classifies_frames() {
        assert_eq!(
            classify(r#"{"type":"status","data":{"status":{}}}"#, P),
            Frame::Status
        );
        assert_eq!(
            classify(
                &json!({"type":"executing","data":{"node":null,"prompt_id":P}}).to_string(),
                P
            ),
            Frame::Done
        );
        assert_eq!(
            classify(
                &json!({"type":"executing","data":{"node":"1"}}).to_string(),
                P
            ),
            Frame::Ignore
        );
        assert_eq!(
            classify(
                &json!({"type":"progress","data":{"prompt_id":"other"}}).to_string(),
                P
            ),
            Frame::Ignore
        );
        assert!(matches!(
            classify(
                &json!({"type":"progress","data":{"value":1,"max":2,"prompt_id":P,"node":"3"}})
                    .to_string(),
                P
            ),
            Frame::Event { .. }
        ));
        assert_eq!(classify("not json", P), Frame::Ignore);
    }

    #[test]
    fn finds_and_rewrites_output_files() {
        let mut out = json!({"images": [
            {"filename": "a_00001_.png", "subfolder": "", "type": "output"},
            {"filename": "t.png", "subfolder": "", "type": "temp"},
            {"filename": "in.png", "subfolder": "", "type": "input"},
        ], "text": ["hello"], "animated": [false]});
        let files = output_files(&out);
        assert_eq!(files.len(), 2);
        let to = OutputFile {
            filename: "a_00001_ (1).png".into(),
            subfolder: "".into(),
            kind: "output".into(),
        };
        rewrite_output(&mut out, &files[0], &to);
        assert_eq!(out["images"][0]["filename"], "a_00001_ (1).png");
        assert_eq!(out["images"][1]["filename"], "t.png");
        remove_output(&mut out, &files[1]);
        assert_eq!(
            out["images"].as_array().unwrap().len(),
            2,
            "the temp preview is gone, the input stays"
        );
    }

    #[test]
    fn binary_frames() {
        let meta = json!({"node_id": "3", "prompt_id": P, "image_type": "image/png"}).to_string();
        let mut frame = 4u32.to_be_bytes().to_vec();
        frame.extend((meta.len() as u32).to_be_bytes());
        frame.extend(meta.as_bytes());
        frame.extend(b"png");
        assert!(binary_is_ours(&frame, P, false));
        assert!(!binary_is_ours(&frame, "other", true));
        assert!(binary_is_ours(&[0, 0, 0, 1, 0, 0, 0, 2, 9], P, true));
        assert!(
            !binary_is_ours(&[0, 0, 0, 3, 0, 0, 0, 1, 9], P, false),
            "not while another prompt may run"
        );
        assert!(!binary_is_ours(&[0, 0], P, true));
    }
}
