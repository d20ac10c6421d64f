//! What a GPU backend sends the gateway about a job: WebSocket text and
//! binary frames, and its `/history` answer. A backend is a process we do
//! not control; nothing it sends may panic the gateway, and every output
//! file it names is either refused or lands inside the user's folder.

#![no_main]

use std::collections::HashSet;

use comfyume_domain::SafeRelPath;
use comfyume_protocol::HistoryEntry;
use comfyume_protocol::frames::{
    self, Frame, binary_is_ours, binary_type, node_meta, output_files, remove_output,
    rewrite_output,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The prompt id of the recorded runs the seeds come from.
const PROMPT_ID: &str = "6abd57a6-6a1e-45c9-b10c-dd1ecbfb3a34";

fuzz_target!(|data: &[u8]| {
    let _ = binary_type(data);
    for executing in [false, true] {
        let _ = binary_is_ours(data, PROMPT_ID, executing);
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    // The job's own id, and the id the frame names (so that a mutated id
    // still reaches the per-prompt branches).
    let named = parsed
        .as_ref()
        .and_then(|v| v.pointer("/data/prompt_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    for prompt_id in [Some(PROMPT_ID.to_owned()), named].into_iter().flatten() {
        match frames::classify(text, &prompt_id) {
            Frame::Event { kind, data } => {
                assert_ne!(kind, "status");
                let _ = node_meta(&data);
                if let Some(output) = data.get("output") {
                    check_outputs(output.clone());
                }
            }
            Frame::Done | Frame::Status | Frame::FeatureFlags | Frame::Ignore => {}
        }
    }

    // The same bytes as a `GET /history/{id}` answer.
    if let Some(answer) = parsed {
        let ids: Vec<String> = answer
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for id in ids.iter().map(String::as_str).chain([PROMPT_ID]) {
            if let Some(entry) = HistoryEntry::from_answer(&answer, id) {
                let _ = entry.outcome();
                let seen: HashSet<String> = ["execution_start".to_owned()].into();
                for missed in entry.missed_frames(id, &seen, &HashSet::new()) {
                    let text = missed.to_text();
                    let again: Value = serde_json::from_str(&text).expect("a frame we wrote");
                    assert_eq!(again["type"], Value::String(missed.kind));
                }
            }
        }
    }
});

/// The files an `executed` output names, as the dispatcher copies them:
/// only a subfolder that parses is ever joined to a user's folder, and
/// renaming or removing one leaves the others alone.
fn check_outputs(mut output: Value) {
    let files = output_files(&output);
    for file in &files {
        assert!(matches!(file.kind.as_str(), "output" | "temp"));
        if let Ok(sub) = SafeRelPath::parse(&file.subfolder) {
            assert!(!sub.segments().any(|s| s == ".."));
        }
    }
    if let Some(first) = files.first() {
        let mut renamed = first.clone();
        renamed.filename = format!("{} (1)", first.filename);
        rewrite_output(&mut output, first, &renamed);
        let after = output_files(&output);
        assert!(
            !after.contains(first) && after.contains(&renamed),
            "{output}"
        );
        remove_output(&mut output, &renamed);
        assert!(!output_files(&output).contains(&renamed));
    }
}
