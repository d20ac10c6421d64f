//! Tests of the prompt validator: golden bodies recorded from real ComfyUI
//! servers (`golden`), behaviour beyond the recordings (`behaviour`), and
//! robustness against arbitrary JSON (`props`). The catalogue is the
//! recorded `/object_info` of a stock ComfyUI, read from the repository's
//! `fixtures/` at test time.

mod behaviour;
mod golden;
mod props;

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::PromptError;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A fixture file, parsed (key order preserved).
fn fixture(path: &str) -> Value {
    let path = fixtures_dir().join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The stock node catalogue of ComfyUI 0.3.64 (496 nodes).
fn catalogue() -> &'static Map<String, Value> {
    static CATALOGUE: OnceLock<Map<String, Value>> = OnceLock::new();
    CATALOGUE.get_or_init(|| match fixture("comfyui-0.3.64/object_info.json") {
        Value::Object(m) => m,
        other => panic!("object_info.json is not an object: {other}"),
    })
}

/// The body of a `[status, body]` scenario of the 0.33.0 trace.
fn trace_body(key: &str) -> Value {
    static TRACE: OnceLock<Value> = OnceLock::new();
    let trace = TRACE.get_or_init(|| fixture("comfyui-0.33.0/trace.json"));
    let scenario = &trace[key];
    assert_eq!(scenario[0], 400, "{key} is not a 400 scenario");
    scenario[1].clone()
}

/// Exact equality, key order included (both sides keep insertion order).
#[track_caller]
fn assert_same_json(got: &Value, want: &Value) {
    let got_text = serde_json::to_string_pretty(got).unwrap();
    let want_text = serde_json::to_string_pretty(want).unwrap();
    assert_eq!(got_text, want_text);
}

#[track_caller]
fn assert_body(result: Result<super::Validated, PromptError>, want: &Value) {
    match result {
        Err(e) => assert_same_json(&e.body, want),
        Ok(v) => panic!("expected a 400, got success: {v:?}"),
    }
}
