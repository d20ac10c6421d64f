//! `POST /prompt`: the body parser and the validator, as the gateway runs
//! them (a stock ComfyUI's node catalogue, personalised with a user's
//! input files, and the default room caps). Any body is accepted or
//! refused in ComfyUI's error shape; never a panic, never a hang.

#![no_main]

use std::sync::LazyLock;

use comfyume::config::Limits;
use comfyume_prompt::node_info::personalise;
use comfyume_prompt::{PromptRequest, RoomCaps, validate_in_room};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// The node catalogue of a stock ComfyUI (fixtures/README.md), as a user
/// with two input images sees it.
static CATALOGUE: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let raw = include_str!("../../fixtures/comfyui-0.3.64/object_info.json");
    let nodes: Map<String, Value> = serde_json::from_str(raw).expect("the recorded catalogue");
    let inputs = ["example.png".to_string(), "sub/photo.jpg".to_string()];
    nodes
        .iter()
        .map(|(class, info)| (class.clone(), personalise(info, &inputs)))
        .collect()
});

static CAPS: LazyLock<RoomCaps> = LazyLock::new(|| RoomCaps::new(Limits::default().prompt_caps));

fuzz_target!(|data: &[u8]| {
    let request = match PromptRequest::parse(data) {
        Ok(request) => request,
        Err(e) => return assert_comfy_error(&e.body),
    };
    match validate_in_room(
        &request.prompt,
        request.partial_execution_targets.as_deref(),
        &CATALOGUE,
        &CAPS,
    ) {
        Ok(validated) => {
            assert!(!validated.outputs_to_execute.is_empty());
            for id in &validated.outputs_to_execute {
                assert!(
                    request.prompt.get(id).is_some(),
                    "output {id} is not a node"
                );
            }
        }
        Err(e) => assert_comfy_error(&e.body),
    }
});

/// ComfyUI's 400 body: `{"error": {type, message, details, extra_info},
/// "node_errors": {...}}`, and it serialises.
fn assert_comfy_error(body: &Value) {
    let error = body
        .get("error")
        .and_then(Value::as_object)
        .expect("an error object");
    for key in ["type", "message", "details"] {
        assert!(
            error.get(key).is_some_and(Value::is_string),
            "{key} in {body}"
        );
    }
    assert!(
        error.get("extra_info").is_some_and(Value::is_object),
        "{body}"
    );
    assert!(
        body.get("node_errors").is_some_and(Value::is_object),
        "{body}"
    );
    serde_json::to_vec(body).expect("the body serialises");
}
