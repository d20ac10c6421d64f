//! Every recorded validation body, reproduced from the prompt that caused
//! it. The requests were not recorded; each prompt is rebuilt from the body
//! and the fixtures' other prompts (EmptyImage → ImageInvert → SaveImage).

use serde_json::{Value, json};

use super::super::{PromptRequest, invalid_prompt_id_error, no_prompt_error, validate};
use super::{assert_body, assert_same_json, catalogue, fixture, trace_body};

fn empty_image(width: Value) -> Value {
    json!({"class_type": "EmptyImage", "inputs": {"width": width, "height": 48, "batch_size": 1, "color": 1193046}})
}

/// The 0.3.64 fixtures' graph: 1 EmptyImage → 2 ImageInvert → 3 SaveImage.
fn peer_graph(node1: Value) -> Value {
    json!({
        "1": node1,
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "peer_e2e"}},
    })
}

#[test]
fn trace_validation_missing_input() {
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    });
    assert_body(
        validate(&prompt, None, catalogue()),
        &trace_body("validation_missing_input"),
    );
}

#[test]
fn trace_validation_unknown_class() {
    let prompt = json!({"1": {"class_type": "NoSuchNode", "inputs": {}}});
    assert_body(
        validate(&prompt, None, catalogue()),
        &trace_body("validation_unknown_class"),
    );
    // The title comes from `_meta.title` when there is one.
    let titled =
        json!({"1": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "NoSuchNode"}}});
    assert_body(
        validate(&titled, None, catalogue()),
        &trace_body("validation_unknown_class"),
    );
}

#[test]
fn trace_validation_no_outputs() {
    let prompt = json!({"1": empty_image(json!(64))});
    assert_body(
        validate(&prompt, None, catalogue()),
        &trace_body("validation_no_outputs"),
    );
}

#[test]
fn trace_validation_no_prompt() {
    let want = trace_body("validation_no_prompt");
    assert_same_json(&no_prompt_error().body, &want);
    let got = PromptRequest::from_body(&json!({"client_id": "clienta"})).unwrap_err();
    assert_same_json(&got.body, &want);
}

#[test]
fn trace_validation_bad_prompt_id() {
    let want = trace_body("validation_bad_prompt_id");
    assert_same_json(&invalid_prompt_id_error().body, &want);
    let prompt = peer_graph(empty_image(json!(64)));
    for bad in [
        json!("not-a-uuid"),
        json!("85204B33-05B2-4FB6-BB94-C91B90A274BD"),
        json!("85204b3305b24fb6bb94c91b90a274bd"),
        json!(5),
    ] {
        let got =
            PromptRequest::from_body(&json!({"prompt": prompt, "prompt_id": bad})).unwrap_err();
        assert_same_json(&got.body, &want);
    }
}

#[test]
fn trace_value_out_of_range() {
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    });
    assert_body(
        validate(&prompt, None, catalogue()),
        &trace_body("value_out_of_range"),
    );
}

#[test]
fn v0364_invalid_value() {
    let prompt = peer_graph(empty_image(json!(-5)));
    let want = fixture("comfyui-0.3.64/post-prompt-400-invalid-value.json");
    assert_body(validate(&prompt, None, catalogue()), &want);
}

#[test]
fn v0364_missing_required_input() {
    let prompt = peer_graph(
        json!({"class_type": "EmptyImage", "inputs": {"width": 64, "batch_size": 1, "color": 0}}),
    );
    let want = fixture("comfyui-0.3.64/post-prompt-400-missing-required-input.json");
    assert_body(validate(&prompt, None, catalogue()), &want);
}

#[test]
fn v0364_no_output_node() {
    let mut prompt = peer_graph(empty_image(json!(64)));
    prompt.as_object_mut().unwrap().shift_remove("3");
    let want = fixture("comfyui-0.3.64/post-prompt-400-no-output-node.json");
    assert_body(validate(&prompt, None, catalogue()), &want);
}

#[test]
fn v0364_no_prompt_key() {
    let want = fixture("comfyui-0.3.64/post-prompt-400-no-prompt-key.json");
    let got = PromptRequest::from_body(&json!({"client_id": "a51beb3e"})).unwrap_err();
    assert_same_json(&got.body, &want);
}

#[test]
fn v0364_loadimage_missing() {
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "does_not_exist_peer.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "peer_rt"}},
    });
    let want = fixture("comfyui-0.3.64/post-prompt-400-loadimage-missing-post.json");
    assert_body(validate(&prompt, None, catalogue()), &want);
}

/// ComfyUI lists the Python traceback of the `KeyError`; the gateway has
/// none to give, so `traceback` is `[]`. Everything else is identical.
#[test]
fn v0364_invalid_link() {
    let mut prompt = peer_graph(empty_image(json!(64)));
    prompt["2"]["inputs"]["image"] = json!(["9", 0]);
    let mut want = fixture("comfyui-0.3.64/post-prompt-400-invalid-link.json");
    let traceback = &mut want["node_errors"]["2"]["errors"][0]["extra_info"]["traceback"];
    assert!(
        traceback
            .as_array()
            .is_some_and(|t| !t.is_empty() && t.iter().all(Value::is_string))
    );
    *traceback = json!([]);
    assert_body(validate(&prompt, None, catalogue()), &want);
}

/// ComfyUI 0.3.64 answered an unknown class with `invalid_prompt`
/// ("Cannot execute because node NoSuchNode does not exist."); v0.33.0,
/// which the gateway follows, answers `missing_node_type` (see the trace).
/// The details, and the empty node_errors, are the same in both.
#[test]
fn v0364_unknown_node_is_answered_as_v0_33() {
    let prompt = json!({"1": {"class_type": "NoSuchNode", "inputs": {}}});
    let old = fixture("comfyui-0.3.64/post-prompt-400-unknown-node.json");
    let got = validate(&prompt, None, catalogue()).unwrap_err();
    assert_same_json(&got.body, &trace_body("validation_unknown_class"));
    assert_eq!(got.body["error"]["details"], old["error"]["details"]);
    assert_eq!(got.body["node_errors"], old["node_errors"]);
    assert_eq!(old["error"]["type"], "invalid_prompt");
}

/// The prompts the fixtures record as accepted are accepted, with the
/// same `node_errors` (`{}`) as the 200 bodies.
#[test]
fn recorded_successes() {
    let ok = fixture("comfyui-0.3.64/post-prompt-200.json");
    let history = fixture("comfyui-0.3.64/history-success.json");
    let (_, item) = history.as_object().unwrap().iter().next().unwrap();
    let v = validate(&item["prompt"][2], None, catalogue()).unwrap();
    assert_eq!(v.outputs_to_execute, ["3"]);
    assert_same_json(&Value::Object(v.node_errors), &ok["node_errors"]);

    let trace = fixture("comfyui-0.33.0/trace.json");
    let (_, item) = trace["history_one"][1]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let v = validate(&item["prompt"][2], None, catalogue()).unwrap();
    // ComfyUI recorded ["4", "3"] (a set's order); the gateway keeps prompt order.
    assert_eq!(v.outputs_to_execute, ["3", "4"]);
    assert!(v.node_errors.is_empty());
}

/// A canonical client-chosen `prompt_id` is accepted and kept (the trace's
/// 200 echoes it back).
#[test]
fn trace_client_prompt_id() {
    let trace = fixture("comfyui-0.33.0/trace.json");
    let answer = &trace["client_prompt_id"];
    assert_eq!(answer[0], 200);
    let id = answer[1]["prompt_id"].as_str().unwrap();
    let body = json!({"prompt": peer_graph(empty_image(json!(64))), "prompt_id": id, "number": 5});
    let req = PromptRequest::from_body(&body).unwrap();
    assert_eq!(req.prompt_id.map(|j| j.to_string()).as_deref(), Some(id));
    let v = req.validate(catalogue()).unwrap();
    assert_same_json(&Value::Object(v.node_errors), &answer[1]["node_errors"]);
}
