//! Behaviour beyond the recorded bodies, each expected body written out from
//! ComfyUI's source (execution.py `validate_inputs`/`validate_prompt`).

use serde_json::{Map, Value, json};

use super::super::{PromptRequest, Validated, validate};
use super::{assert_body, assert_same_json, catalogue};
use crate::node_info::personalise;

fn empty_image(width: Value) -> Value {
    json!({"class_type": "EmptyImage", "inputs": {"width": width, "height": 48, "batch_size": 1, "color": 0}})
}

/// 1 EmptyImage → 2 ImageInvert → 3 SaveImage.
fn chain(node1: Value) -> Value {
    json!({
        "1": node1,
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
    })
}

fn ok(prompt: &Value) -> Validated {
    validate(prompt, None, catalogue()).unwrap_or_else(|e| panic!("rejected: {}", e.body))
}

fn err(prompt: &Value) -> Value {
    match validate(prompt, None, catalogue()) {
        Err(e) => e.body,
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

/// The body of a single failing node upstream of output "3".
fn failed(node: &str, class_type: &str, errors: Value) -> Value {
    json!({
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
        "node_errors": {node: {"errors": errors, "dependent_outputs": ["3"], "class_type": class_type}},
    })
}

fn width_config() -> Value {
    json!(["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}])
}

// --- success ---------------------------------------------------------------

#[test]
fn a_valid_graph_returns_its_outputs() {
    let v = ok(&chain(empty_image(json!(64))));
    assert_eq!(v.outputs_to_execute, ["3"]);
    assert!(v.node_errors.is_empty());
}

#[test]
fn meta_hidden_and_undeclared_inputs_are_ignored() {
    let mut prompt = chain(empty_image(json!(64)));
    prompt["3"]["_meta"] = json!({"title": "Save"});
    prompt["3"]["inputs"]["prompt"] = json!(5);
    // Not declared, so not followed: the dangling link is never looked at.
    prompt["3"]["inputs"]["bogus"] = json!(["99", 0]);
    assert_eq!(ok(&prompt).outputs_to_execute, ["3"]);
}

// --- INT / FLOAT / STRING / BOOLEAN conversion ---------------------------------

#[test]
fn int_inputs_convert_like_python_int() {
    for good in [
        json!("512"),
        json!(" 64 "),
        json!("1_000"),
        json!(64.9),
        json!(true),
        json!({"__value__": 32}),
    ] {
        ok(&chain(empty_image(good)));
    }
    let cases = [
        (
            json!("64.0"),
            "64.0",
            "invalid literal for int() with base 10: '64.0'",
        ),
        (
            json!("abc"),
            "abc",
            "invalid literal for int() with base 10: 'abc'",
        ),
        (
            json!(null),
            "None",
            "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'",
        ),
        (
            json!({"a": 1}),
            "{'a': 1}",
            "int() argument must be a string, a bytes-like object or a real number, not 'dict'",
        ),
    ];
    for (value, shown, exception) in cases {
        let want = failed(
            "1",
            "EmptyImage",
            json!([{
                "type": "invalid_input_type",
                "message": "Failed to convert an input value to a INT value",
                "details": format!("width, {shown}, {exception}"),
                "extra_info": {"input_name": "width", "input_config": width_config(), "received_value": value, "exception_message": exception},
            }]),
        );
        assert_same_json(&err(&chain(empty_image(value.clone()))), &want);
    }
}

#[test]
fn a_wrapped_value_is_unwrapped_before_checks() {
    let want = failed(
        "1",
        "EmptyImage",
        json!([{
            "type": "value_smaller_than_min",
            "message": "Value 0 smaller than min of 1",
            "details": "width",
            "extra_info": {"input_name": "width", "input_config": width_config(), "received_value": 0},
        }]),
    );
    assert_same_json(&err(&chain(empty_image(json!({"__value__": "0"})))), &want);
}

#[test]
fn int_max_is_checked_exactly() {
    let want = failed(
        "1",
        "EmptyImage",
        json!([{
            "type": "value_bigger_than_max",
            "message": "Value 16385 bigger than max of 16384",
            "details": "width",
            "extra_info": {"input_name": "width", "input_config": width_config(), "received_value": 16385},
        }]),
    );
    assert_same_json(&err(&chain(empty_image(json!(16385.5)))), &want);
}

fn scale_by(value: Value) -> Value {
    json!({
        "1": empty_image(json!(64)),
        "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "area", "scale_by": value}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
    })
}

#[test]
fn float_inputs_convert_like_python_float() {
    let config = json!(["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}]);
    ok(&scale_by(json!("0.5")));
    ok(&scale_by(json!(2)));
    let want = failed(
        "2",
        "ImageScaleBy",
        json!([{
            "type": "value_bigger_than_max",
            "message": "Value 10.0 bigger than max of 8.0",
            "details": "scale_by",
            "extra_info": {"input_name": "scale_by", "input_config": config, "received_value": 10.0},
        }]),
    );
    assert_same_json(&err(&scale_by(json!(10))), &want);
    let want = failed(
        "2",
        "ImageScaleBy",
        json!([{
            "type": "value_smaller_than_min",
            "message": "Value 1e-05 smaller than min of 0.01",
            "details": "scale_by",
            "extra_info": {"input_name": "scale_by", "input_config": config, "received_value": 1e-05},
        }]),
    );
    assert_same_json(&err(&scale_by(json!("1e-5"))), &want);
    let want = failed(
        "2",
        "ImageScaleBy",
        json!([{
            "type": "invalid_input_type",
            "message": "Failed to convert an input value to a FLOAT value",
            "details": "scale_by, half, could not convert string to float: 'half'",
            "extra_info": {"input_name": "scale_by", "input_config": config, "received_value": "half", "exception_message": "could not convert string to float: 'half'"},
        }]),
    );
    assert_same_json(&err(&scale_by(json!("half"))), &want);
}

#[test]
fn big_numbers_keep_python_formatting() {
    let prompt = |node: Value| {
        json!({
            "1": node,
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        })
    };
    let body = err(&prompt(
        json!({"class_type": "PrimitiveFloat", "inputs": {"value": 1e19}}),
    ));
    assert_eq!(
        body["node_errors"]["1"]["errors"][0]["message"],
        "Value 1e+19 bigger than max of 9223372036854775807"
    );
    let body = err(&prompt(
        json!({"class_type": "PrimitiveInt", "inputs": {"value": "-99999999999999999999999"}}),
    ));
    assert_eq!(
        body["node_errors"]["1"]["errors"][0]["message"],
        "Value -99999999999999999999999 smaller than min of -9223372036854775807"
    );
    // The bounds themselves are in range.
    ok(&prompt(
        json!({"class_type": "PrimitiveInt", "inputs": {"value": 9223372036854775807u64}}),
    ));
}

#[test]
fn strings_and_booleans_always_convert() {
    let prompt = json!({
        "1": {"class_type": "StringConcatenate", "inputs": {"string_a": 5, "string_b": null, "delimiter": {"x": 1}}},
        "2": {"class_type": "PrimitiveBoolean", "inputs": {"value": "false"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    });
    assert_eq!(ok(&prompt).outputs_to_execute, ["3", "4"]);
}

// --- combos ---------------------------------------------------------------

#[test]
fn a_value_not_in_a_short_list_shows_the_list() {
    let mut prompt = scale_by(json!(1.0));
    prompt["2"]["inputs"]["upscale_method"] = json!("cubic");
    let want = failed(
        "2",
        "ImageScaleBy",
        json!([{
            "type": "value_not_in_list",
            "message": "Value not in list",
            "details": "upscale_method: 'cubic' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']",
            "extra_info": {
                "input_name": "upscale_method",
                "input_config": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}],
                "received_value": "cubic",
            },
        }]),
    );
    assert_same_json(&err(&prompt), &want);
}

#[test]
fn a_value_not_in_a_long_list_shows_only_its_length() {
    let prompt = json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "2": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 1, "steps": 20, "cfg": 8, "sampler_name": "eulr", "scheduler": "normal",
            "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0], "denoise": 1,
        }},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["4", 2]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t"}},
    });
    let body = err(&prompt);
    let errors = &body["node_errors"];
    // Checkpoint first: it is reached (and recorded) before the sampler finishes.
    assert_eq!(
        errors.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["4", "2"]
    );
    assert_same_json(
        &errors["4"]["errors"][0],
        &json!({
            "type": "value_not_in_list",
            "message": "Value not in list",
            "details": "ckpt_name: 'm.safetensors' not in []",
            "extra_info": {
                "input_name": "ckpt_name",
                "input_config": [[], {"tooltip": "The name of the checkpoint (model) to load."}],
                "received_value": "m.safetensors",
            },
        }),
    );
    assert_same_json(
        &errors["2"]["errors"][0],
        &json!({
            "type": "value_not_in_list",
            "message": "Value not in list",
            "details": "sampler_name: 'eulr' not in (list of length 42)",
            "extra_info": {"input_name": "sampler_name", "input_config": null, "received_value": "eulr"},
        }),
    );
    assert_eq!(errors["2"]["dependent_outputs"], json!(["3"]));
}

/// A catalogue of made-up nodes for the forms the stock catalogue lacks.
fn synthetic() -> Map<String, Value> {
    let nodes = json!({
        "Pick": {
            "input": {"required": {
                "choice": ["COMBO", {"options": ["a", "b"]}],
                "many": ["COMBO", {"options": ["a", "b", "c"], "multiselect": true}],
                "remote": ["COMBO", {"remote_combo": {"route": "/x"}}],
                "number": [[1, 2.5, "x"], {}],
            }},
            "output": ["STRING"], "output_node": false,
        },
        "Split": {"input": {"required": {}}, "output": ["IMAGE,MASK", ["p", "q"]], "output_node": false},
        "TakeMask": {"input": {"required": {"m": ["MASK"]}, "optional": {"c": ["COMBO", {}], "l": ["LATENT"]}}, "output": [], "output_node": true},
        "Show": {"input": {"required": {"text": ["STRING", {}]}}, "output": [], "output_node": true},
        "Strict": {"input": {"required": {"s": ["STRING", {"min": 1}]}}, "output": [], "output_node": true},
    });
    match nodes {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn new_style_combos_and_multiselect() {
    let prompt = |inputs: Value| {
        json!({
            "1": {"class_type": "Pick", "inputs": inputs},
            "3": {"class_type": "Show", "inputs": {"text": ["1", 0]}},
        })
    };
    let good = json!({"choice": "a", "many": {"__value__": ["a", "c"]}, "remote": "anything", "number": 2.5});
    validate(&prompt(good), None, &synthetic()).unwrap();
    // Python's == makes 1.0 and True equal to 1.
    let equal = json!({"choice": "b", "many": "b", "remote": "x", "number": 1.0});
    validate(&prompt(equal), None, &synthetic()).unwrap();
    let equal = json!({"choice": "b", "many": "b", "remote": "x", "number": true});
    validate(&prompt(equal), None, &synthetic()).unwrap();

    let bad = json!({"choice": "z", "many": {"__value__": ["a", "x", "y's"]}, "remote": 1, "number": "1"});
    let body = validate(&prompt(bad), None, &synthetic()).unwrap_err().body;
    let details: Vec<&str> = body["node_errors"]["1"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "choice: 'z' not in ['a', 'b']",
            "many: 'x', \"y's\" not in ['a', 'b', 'c']",
            "number: '1' not in [1, 2.5, 'x']",
        ]
    );
    assert_eq!(
        body["node_errors"]["1"]["errors"][1]["extra_info"]["received_value"],
        json!(["a", "x", "y's"])
    );
}

#[test]
fn link_types_allow_any_and_comma_separated_sets() {
    let cat = synthetic();
    let prompt = json!({
        "1": {"class_type": "Split", "inputs": {}},
        "3": {"class_type": "TakeMask", "inputs": {"m": ["1", 0], "c": ["1", 1]}},
    });
    validate(&prompt, None, &cat).unwrap();
    let prompt = json!({
        "1": {"class_type": "Split", "inputs": {}},
        "3": {"class_type": "TakeMask", "inputs": {"m": ["1", 0], "l": ["1", 0]}},
    });
    let body = validate(&prompt, None, &cat).unwrap_err().body;
    assert_same_json(
        &body,
        &json!({
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "Return type mismatch between linked nodes: l, received_type(IMAGE,MASK) mismatch input_type(LATENT)",
                "extra_info": {},
            },
            "node_errors": {"3": {
                "errors": [{
                    "type": "return_type_mismatch",
                    "message": "Return type mismatch between linked nodes",
                    "details": "l, received_type(IMAGE,MASK) mismatch input_type(LATENT)",
                    "extra_info": {"input_name": "l", "input_config": ["LATENT", {}], "received_type": "IMAGE,MASK", "linked_node": ["1", 0]},
                }],
                "dependent_outputs": ["3"],
                "class_type": "TakeMask",
            }},
        }),
    );
    // PreviewAny's input is "*": anything links.
    let any = json!({
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    });
    ok(&any);
}

#[test]
fn a_comparison_python_refuses_is_an_exception() {
    let prompt = json!({"3": {"class_type": "Strict", "inputs": {"s": "x"}}});
    let body = validate(&prompt, None, &synthetic()).unwrap_err().body;
    assert_same_json(
        &body,
        &json!({
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "Exception when validating node: '<' not supported between instances of 'str' and 'int'",
                "extra_info": {},
            },
            "node_errors": {"3": {
                "errors": [{
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": "'<' not supported between instances of 'str' and 'int'",
                    "extra_info": {"exception_type": "TypeError", "traceback": []},
                }],
                "dependent_outputs": ["3"],
                "class_type": "Strict",
            }},
        }),
    );
}

// --- links ------------------------------------------------------------------

#[test]
fn a_mismatched_link_is_not_followed() {
    let prompt = json!({
        // Invalid, but never validated: the link to it is rejected first.
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 0, "height": 512, "batch_size": 1}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "t"}},
    });
    let body = err(&prompt);
    assert_eq!(
        body["node_errors"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["3"]
    );
    assert_eq!(
        body["node_errors"]["3"]["errors"][0]["details"],
        "images, received_type(LATENT) mismatch input_type(IMAGE)"
    );
    assert_eq!(
        body["error"]["details"],
        "Return type mismatch between linked nodes: images, received_type(LATENT) mismatch input_type(IMAGE)"
    );
}

#[test]
fn a_link_of_the_wrong_length_is_bad() {
    let mut prompt = chain(empty_image(json!(64)));
    prompt["3"]["inputs"]["images"] = json!(["2", 0, 1]);
    let body = err(&prompt);
    assert_same_json(
        &body["node_errors"]["3"]["errors"][0],
        &json!({
            "type": "bad_linked_input",
            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
            "details": "images",
            "extra_info": {"input_name": "images", "input_config": ["IMAGE", {"tooltip": "The images to save."}], "received_value": ["2", 0, 1]},
        }),
    );
    assert_eq!(
        body["error"]["details"],
        "Bad linked input, must be a length-2 list of [node_id, slot_index]: images"
    );
}

#[test]
fn a_broken_link_on_an_output_is_an_exception_there() {
    let cases = [
        (json!(["2", 5]), "IndexError", "tuple index out of range"),
        (
            json!(["2", "0"]),
            "TypeError",
            "tuple indices must be integers or slices, not str",
        ),
        (
            json!(["2", 0.0]),
            "TypeError",
            "tuple indices must be integers or slices, not float",
        ),
        (json!(["9", 0]), "KeyError", "'9'"),
        (json!([2, 0]), "KeyError", "2"),
        (json!([null, 0]), "KeyError", "None"),
        (json!([["2"], 0]), "TypeError", "unhashable type: 'list'"),
        (
            json!(["2", 1u64 << 63]),
            "IndexError",
            "cannot fit 'int' into an index-sized integer",
        ),
    ];
    for (link, kind, message) in cases {
        let mut prompt = chain(empty_image(json!(64)));
        prompt["3"]["inputs"]["images"] = link;
        let want = json!({
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": format!("Exception when validating node: {message}"),
                "extra_info": {},
            },
            "node_errors": {"3": {
                "errors": [{
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": message,
                    "extra_info": {"exception_type": kind, "traceback": []},
                }],
                "dependent_outputs": ["3"],
                "class_type": "SaveImage",
            }},
        });
        assert_same_json(&err(&prompt), &want);
    }
    // Python indexes from the end.
    let mut prompt = chain(empty_image(json!(64)));
    prompt["3"]["inputs"]["images"] = json!(["2", -1]);
    ok(&prompt);
    prompt["3"]["inputs"]["images"] = json!(["2", true]);
    assert_eq!(
        err(&prompt)["node_errors"]["3"]["errors"][0]["details"],
        "tuple index out of range"
    );
}

#[test]
fn an_exception_upstream_is_blamed_on_the_linked_node() {
    // Node 1 has no "inputs": the KeyError is raised while validating it,
    // caught by node 2 (which links to it), and blamed on node 1.
    let mut prompt = chain(empty_image(json!(64)));
    prompt["1"].as_object_mut().unwrap().remove("inputs");
    let want = failed(
        "1",
        "EmptyImage",
        json!([{
            "type": "exception_during_inner_validation",
            "message": "Exception when validating inner node",
            "details": "'inputs'",
            "extra_info": {
                "input_name": "image",
                "input_config": ["IMAGE", {}],
                "exception_message": "'inputs'",
                "exception_type": "KeyError",
                "traceback": [],
                "linked_node": ["1", 0],
            },
        }]),
    );
    assert_same_json(&err(&prompt), &want);

    // Inputs that are not an object fail as Python's `in` and `[]` do.
    for (inputs, message) in [
        (json!(null), "argument of type 'NoneType' is not iterable"),
        (
            json!(["image"]),
            "list indices must be integers or slices, not str",
        ),
        (json!("image"), "string indices must be integers, not 'str'"),
    ] {
        let mut prompt = chain(empty_image(json!(64)));
        prompt["2"]["inputs"] = inputs;
        let body = err(&prompt);
        assert_eq!(body["node_errors"]["2"]["errors"][0]["details"], message);
    }
    // A list without the name: the input is simply missing.
    let mut prompt = chain(empty_image(json!(64)));
    prompt["2"]["inputs"] = json!([]);
    assert_eq!(
        err(&prompt)["node_errors"]["2"]["errors"][0]["type"],
        "required_input_missing"
    );
}

#[test]
fn optional_inputs_are_checked_when_present() {
    let composite = |mask: Option<Value>| {
        let mut inputs = json!({"destination": ["1", 0], "source": ["1", 0], "x": 0, "y": 0, "resize_source": false});
        if let Some(mask) = mask {
            inputs["mask"] = mask;
        }
        json!({
            "1": empty_image(json!(64)),
            "2": {"class_type": "ImageCompositeMasked", "inputs": inputs},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
        })
    };
    ok(&composite(None));
    let body = err(&composite(Some(json!(["1", 0]))));
    assert_eq!(
        body["node_errors"]["2"]["errors"][0]["details"],
        "mask, received_type(IMAGE) mismatch input_type(MASK)"
    );
}

// --- cycles -------------------------------------------------------------------

#[test]
fn a_cycle_is_reported_on_every_node_in_it() {
    let prompt = json!({
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["4", 0]}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
    });
    let cycle = |node: &str| {
        json!({
            "errors": [{
                "type": "dependency_cycle",
                "message": "Dependency cycle detected",
                "details": "2 (ImageInvert) -> 4 (ImageInvert) -> 2 (ImageInvert)",
                "extra_info": {"node_id": node, "cycle_nodes": ["2", "4"]},
            }],
            "dependent_outputs": ["3"],
            "class_type": "ImageInvert",
        })
    };
    let want = json!({
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
        "node_errors": {"2": cycle("2"), "4": cycle("4")},
    });
    assert_same_json(&err(&prompt), &want);

    let self_loop = json!({
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
    });
    let body = err(&self_loop);
    assert_eq!(
        body["node_errors"]["2"]["errors"][0]["details"],
        "2 (ImageInvert) -> 2 (ImageInvert)"
    );
    assert_eq!(
        body["node_errors"]["2"]["errors"].as_array().unwrap().len(),
        1
    );
}

// --- outputs --------------------------------------------------------------------

fn two_outputs(width: Value) -> Value {
    let mut prompt = chain(empty_image(json!(64)));
    let nodes = prompt.as_object_mut().unwrap();
    nodes.insert("5".into(), empty_image(width));
    nodes.insert(
        "4".into(),
        json!({"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}),
    );
    prompt
}

#[test]
fn partial_success_keeps_the_good_outputs_and_reports_the_rest() {
    let v = ok(&two_outputs(json!(0)));
    assert_eq!(v.outputs_to_execute, ["3"]);
    assert_same_json(
        &Value::Object(v.node_errors),
        &json!({"5": {
            "errors": [{
                "type": "value_smaller_than_min",
                "message": "Value 0 smaller than min of 1",
                "details": "width",
                "extra_info": {"input_name": "width", "input_config": width_config(), "received_value": 0},
            }],
            "dependent_outputs": ["4"],
            "class_type": "EmptyImage",
        }}),
    );
}

/// ComfyUI appends each failed output to every failed node seen so far,
/// related or not.
#[test]
fn dependent_outputs_accumulate_as_in_comfyui() {
    let prompt = json!({
        "1": empty_image(json!(0)),
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
        "4": {"class_type": "PreviewImage", "inputs": {}},
    });
    let body = err(&prompt);
    assert_eq!(
        body["error"]["details"],
        "Required input is missing: images"
    );
    assert_eq!(
        body["node_errors"]["1"]["dependent_outputs"],
        json!(["3", "4"])
    );
    assert_eq!(body["node_errors"]["4"]["dependent_outputs"], json!(["4"]));
    assert_eq!(
        body["node_errors"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["1", "4"]
    );
}

#[test]
fn partial_execution_targets_select_outputs() {
    let prompt = two_outputs(json!(0));
    let run = |targets: &[&str]| {
        let targets: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
        validate(&prompt, Some(&targets), catalogue())
    };
    // Only "3": the broken output "4" is not validated at all.
    let v = run(&["3"]).unwrap();
    assert_eq!(v.outputs_to_execute, ["3"]);
    assert!(v.node_errors.is_empty());
    assert_eq!(
        run(&["4"]).unwrap_err().error_type(),
        "prompt_outputs_failed_validation"
    );
    // Non-output targets, unknown ids, nothing: no outputs.
    for targets in [&["2"][..], &["99"], &[]] {
        let e = run(targets).unwrap_err();
        assert_same_json(
            &e.body,
            &json!({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, "node_errors": {}}),
        );
    }
}

// --- prompt-level errors ------------------------------------------------------------

#[test]
fn nodes_without_a_known_class() {
    let body = err(&json!({"1": {"inputs": {}}}));
    assert_same_json(
        &body,
        &json!({
            "error": {
                "type": "missing_node_type",
                "message": "Node 'ID #1' has no class_type. The workflow may be corrupted or a custom node is missing.",
                "details": "Node ID '#1'",
                "extra_info": {"node_id": "1", "class_type": null, "node_title": null},
            },
            "node_errors": {},
        }),
    );
    let body = err(&json!({"7": {"inputs": {}, "_meta": {"title": "My Loader"}}}));
    assert_eq!(
        body["error"]["message"],
        "Node 'My Loader' has no class_type. The workflow may be corrupted or a custom node is missing."
    );
    assert_eq!(body["error"]["extra_info"]["node_title"], "My Loader");

    let body = err(
        &json!({"2": {"class_type": "Fancy", "inputs": {}, "_meta": {"title": "Fancy Upscaler"}}}),
    );
    assert_same_json(
        &body,
        &json!({
            "error": {
                "type": "missing_node_type",
                "message": "Node 'Fancy Upscaler' not found. The custom node may not be installed.",
                "details": "Node ID '#2'",
                "extra_info": {"node_id": "2", "class_type": "Fancy", "node_title": "Fancy Upscaler"},
            },
            "node_errors": {},
        }),
    );
    let body = err(&json!({"2": {"class_type": 5, "inputs": {}}}));
    assert_eq!(
        body["error"]["message"],
        "Node '5' not found. The custom node may not be installed."
    );
    assert_eq!(body["error"]["extra_info"]["class_type"], 5);
    // The first bad node in prompt order is reported.
    let body = err(
        &json!({"1": empty_image(json!(0)), "2": {"class_type": "A"}, "3": {"class_type": "B"}}),
    );
    assert_eq!(body["error"]["extra_info"]["node_id"], "2");
}

#[test]
fn malformed_prompts_are_invalid_prompt() {
    for prompt in [
        json!([]),
        json!("x"),
        json!(null),
        json!({"1": "EmptyImage"}),
        json!({"1": {"class_type": ["EmptyImage"]}}),
        json!({"1": {"class_type": "Nope", "_meta": "title"}}),
    ] {
        let e = validate(&prompt, None, catalogue()).unwrap_err();
        assert_eq!(e.error_type(), "invalid_prompt", "{prompt}");
        assert_eq!(e.body["error"]["message"], "Invalid prompt");
        assert_eq!(e.body["node_errors"], json!({}));
    }
    assert_body(
        validate(&json!({}), None, catalogue()),
        &json!({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, "node_errors": {}}),
    );
}

// --- LoadImage and the user's own files ---------------------------------------------------

fn users_catalogue(files: &[&str]) -> Map<String, Value> {
    let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    let mut cat = catalogue().clone();
    for class in ["LoadImage", "LoadImageMask"] {
        let info = personalise(&cat[class], &files);
        cat.insert(class.into(), info);
    }
    cat
}

fn load(image: Option<Value>) -> Value {
    let mut inputs = json!({});
    if let Some(image) = image {
        inputs["image"] = image;
    }
    json!({
        "1": {"class_type": "LoadImage", "inputs": inputs},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    })
}

#[test]
fn load_image_accepts_the_users_files_and_what_only_the_backend_can_check() {
    let cat = users_catalogue(&["mine.png", "other mine.webp"]);
    for image in [
        "mine.png",
        "other mine.webp",
        "mine.png [input]",
        "pasted/x.png",
        "x.png [output]",
        "x.png [temp]",
    ] {
        validate(&load(Some(json!(image))), None, &cat)
            .unwrap_or_else(|e| panic!("{image}: {}", e.body));
    }
    // A typo, or another participant's file.
    let body = validate(&load(Some(json!("theirs.png"))), None, &cat)
        .unwrap_err()
        .body;
    assert_same_json(
        &body,
        &failed(
            "1",
            "LoadImage",
            json!([{
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": "image - Invalid image file: theirs.png",
                "extra_info": {"input_name": "image"},
            }]),
        ),
    );
    // The combo check is skipped for `image`, but not for LoadImageMask's channel.
    let mask = json!({
        "1": {"class_type": "LoadImageMask", "inputs": {"image": "mine.png", "channel": "purple"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    });
    let body = validate(&mask, None, &cat).unwrap_err().body;
    assert_eq!(
        body["node_errors"]["1"]["errors"][0]["details"],
        "channel: 'purple' not in ['alpha', 'red', 'green', 'blue']"
    );
}

#[test]
fn load_image_without_a_file_name_fails_as_python_does() {
    let cat = users_catalogue(&["mine.png"]);
    // VALIDATE_INPUTS() is called without its argument and raises; the
    // "Required input is missing" error is lost with the exception.
    let body = validate(&load(None), None, &cat).unwrap_err().body;
    let error = &body["node_errors"]["1"]["errors"][0];
    assert_eq!(
        body["node_errors"]["1"]["errors"].as_array().unwrap().len(),
        1
    );
    assert_eq!(error["type"], "exception_during_inner_validation");
    assert_eq!(
        error["details"],
        "LoadImage.VALIDATE_INPUTS() missing 1 required positional argument: 'image'"
    );
    assert_eq!(error["extra_info"]["exception_type"], "TypeError");
    // A link is passed to VALIDATE_INPUTS as None (its value is not known
    // yet); the type mismatch found first is lost with the exception.
    for (image, kind) in [
        (json!(5), "int"),
        (json!(["2", 0]), "NoneType"),
        (json!({"__value__": null}), "NoneType"),
    ] {
        let mut prompt = load(Some(image));
        prompt["2"] = empty_image(json!(64));
        let body = validate(&prompt, None, &cat).unwrap_err().body;
        assert_eq!(
            body["node_errors"]["1"]["errors"][0]["details"],
            format!("'{kind}' object has no attribute 'endswith'")
        );
    }
}

#[test]
fn other_file_loaders_are_left_to_the_backend() {
    let prompt = json!({
        "1": {"class_type": "LoadImageOutput", "inputs": {"image": "ComfyUI_00001_.png [output]"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
        "4": {"class_type": "LoadAudio", "inputs": {"audio": "song.mp3"}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    });
    assert_eq!(ok(&prompt).outputs_to_execute, ["3", "5"]);
}

// --- the request ----------------------------------------------------------------------

#[test]
fn the_request_body_is_read_as_post_prompt_does() {
    let prompt = chain(empty_image(json!(64)));
    let req = PromptRequest::from_body(&json!({"prompt": prompt, "prompt_id": null})).unwrap();
    assert_eq!(req.prompt_id, None);
    assert_eq!(req.partial_execution_targets, None);
    assert_eq!(req.validate(catalogue()).unwrap().outputs_to_execute, ["3"]);

    let id = "85204b33-05b2-4fb6-bb94-c91b90a274bd";
    let req = PromptRequest::from_body(&json!({"prompt": prompt, "prompt_id": id})).unwrap();
    assert_eq!(req.prompt_id.unwrap().to_string(), id);

    let targets = |t: Value| {
        PromptRequest::from_body(&json!({"prompt": prompt, "partial_execution_targets": t}))
            .map(|r| r.partial_execution_targets)
    };
    assert_eq!(
        targets(json!(["3", 3, null])).unwrap(),
        Some(vec!["3".to_string()])
    );
    // Python's `in` on a string is a substring test.
    assert_eq!(
        targets(json!("13")).unwrap(),
        Some(vec!["1".to_string(), "3".to_string()])
    );
    assert_eq!(
        targets(json!({"3": true})).unwrap(),
        Some(vec!["3".to_string()])
    );
    assert_eq!(
        targets(json!(3)).unwrap_err().error_type(),
        "invalid_prompt"
    );
    // A prompt of null is present, so it is validated (and malformed).
    let req = PromptRequest::from_body(&json!({"prompt": null})).unwrap();
    assert_eq!(
        req.validate(catalogue()).unwrap_err().error_type(),
        "invalid_prompt"
    );
}

#[test]
fn the_workflow_id_is_read_from_the_saved_workflow_and_never_holds_nul() {
    let prompt = chain(empty_image(json!(64)));
    let with_id = |id: Value| {
        PromptRequest::from_body(&json!({
            "prompt": prompt,
            "extra_data": {"extra_pnginfo": {"workflow": {"id": id, "nodes": []}}}
        }))
    };
    let req = with_id(json!("5b0a2f1e-7d9c-4b1e-9a0e-2f3c4d5e6f70")).unwrap();
    assert_eq!(
        req.workflow_id.as_deref(),
        Some("5b0a2f1e-7d9c-4b1e-9a0e-2f3c4d5e6f70")
    );
    assert_eq!(with_id(json!(7)).unwrap().workflow_id, None);
    let refused = with_id(json!("a\u{0}b")).unwrap_err();
    assert_eq!(refused.error_type(), "invalid_prompt");
    assert!(refused.body.to_string().contains("NUL"), "{}", refused.body);
    let plain = PromptRequest::from_body(&json!({"prompt": prompt})).unwrap();
    assert_eq!(plain.workflow_id, None);
}

#[test]
fn the_rest_of_the_request_is_read_once() {
    let prompt = chain(empty_image(json!(64)));
    let req = PromptRequest::parse(
        json!({
            "prompt": prompt,
            "client_id": "abc",
            "extra_data": {"extra_pnginfo": {"workflow": {"id": "w"}}},
            "number": "5",
            "front": [],
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(req.client_id, Some(json!("abc")));
    assert_eq!(req.extra_data["extra_pnginfo"]["workflow"]["id"], "w");
    assert_eq!(req.number, Some(5.0));
    assert!(!req.front, "an empty list is falsy in Python");
    let front = |v: Value| {
        PromptRequest::from_body(&json!({"prompt": prompt, "front": v}))
            .unwrap()
            .front
    };
    assert!(front(json!(true)) && front(json!(1)) && front(json!("x")) && front(json!([0])));
    assert!(!front(json!(false)) && !front(json!(0)) && !front(json!("")) && !front(json!(null)));

    let refused = |body: Value| PromptRequest::from_body(&body).unwrap_err();
    for bad in [
        json!({"prompt": prompt, "number": "many"}),
        json!({"prompt": prompt, "number": [1]}),
        json!({"prompt": prompt, "extra_data": []}),
        json!([prompt]),
    ] {
        assert_eq!(refused(bad.clone()).error_type(), "invalid_prompt", "{bad}");
    }
    // Kept as sent, as ComfyUI does (it names no socket).
    let odd = PromptRequest::from_body(&json!({"prompt": prompt, "client_id": 7})).unwrap();
    assert_eq!(odd.client_id, Some(json!(7)));
    // ComfyUI looks for the prompt before it looks at its id.
    assert_eq!(
        refused(json!({"prompt_id": "not-a-uuid"})).error_type(),
        "no_prompt"
    );
    assert_eq!(
        refused(json!({"prompt": prompt, "prompt_id": 12})).error_type(),
        "invalid_prompt_id"
    );
    assert_eq!(
        refused(json!({"prompt": prompt, "prompt_id": "85204B33-05B2-4FB6-BB94-C91B90A274BD"}))
            .error_type(),
        "invalid_prompt_id",
        "upper case is not canonical"
    );
    let not_json = PromptRequest::parse(b"{\"prompt\":").unwrap_err();
    assert_eq!(not_json.error_type(), "invalid_prompt");
    assert!(
        not_json.to_string().contains("not valid JSON"),
        "{not_json}"
    );
}

// --- the room's own bounds ------------------------------------------------------

#[test]
fn room_caps_tighten_numeric_inputs_in_comfyuis_shape() {
    let caps = super::super::RoomCaps::new([("width".to_string(), 1024.0)]);
    let prompt = chain(empty_image(json!(16384)));
    let body = super::super::validate_in_room(&prompt, None, catalogue(), &caps)
        .unwrap_err()
        .body;
    let error = &body["node_errors"]["1"]["errors"][0];
    assert_eq!(error["type"], "value_bigger_than_max");
    assert_eq!(error["message"], "Value 16384 bigger than max of 1024");
    assert_eq!(error["details"], "width");
    assert_eq!(body["node_errors"]["1"]["dependent_outputs"], json!(["3"]));
    // Within the cap, and without caps, the same prompt passes.
    let fine = chain(empty_image(json!(512)));
    assert!(super::super::validate_in_room(&fine, None, catalogue(), &caps).is_ok());
    assert!(validate(&prompt, None, catalogue()).is_ok());
}

/// A capped input fed by primitive nodes (the frontend's "convert to
/// input", a chain of them) is capped on the number behind them; a value
/// computed by any other node is not known before it runs.
#[test]
fn room_caps_follow_links_through_primitive_nodes() {
    let caps = super::super::RoomCaps::new([("width".to_string(), 1024.0)]);
    let with_width_from = |value: Value| {
        let mut prompt = chain(empty_image(json!(["10", 0])));
        prompt["10"] = json!({"class_type": "PrimitiveInt", "inputs": {"value": ["11", 0]}});
        prompt["11"] = json!({"class_type": "PrimitiveInt", "inputs": {"value": value}});
        prompt
    };
    let body =
        super::super::validate_in_room(&with_width_from(json!(16384)), None, catalogue(), &caps)
            .unwrap_err()
            .body;
    let error = &body["node_errors"]["1"]["errors"][0];
    assert_eq!(error["type"], "value_bigger_than_max", "{body}");
    assert_eq!(error["message"], "Value 16384 bigger than max of 1024");
    assert_eq!(error["details"], "width");
    assert!(
        super::super::validate_in_room(&with_width_from(json!(512)), None, catalogue(), &caps)
            .is_ok()
    );
    assert!(validate(&with_width_from(json!(16384)), None, catalogue()).is_ok());
}

#[test]
fn a_filename_prefix_outside_the_output_folder_is_refused_up_front() {
    for bad in ["../../tmp/x", "/etc/x", "a/../../x"] {
        let mut prompt = chain(empty_image(json!(64)));
        prompt["3"]["inputs"]["filename_prefix"] = json!(bad);
        let body = err(&prompt);
        let error = &body["node_errors"]["3"]["errors"][0];
        assert_eq!(error["type"], "custom_validation_failed", "{bad}");
        assert_eq!(
            error["details"],
            "filename_prefix - Saving image outside the output folder is not allowed."
        );
    }
    let mut prompt = chain(empty_image(json!(64)));
    prompt["3"]["inputs"]["filename_prefix"] = json!("portraits/alice/try");
    ok(&prompt);
}

// --- custom nodes ------------------------------------------------------------

/// The stock catalogue plus `Strength`, a custom node (as a pack adds it)
/// with a FLOAT input of at most 1.0 and an IMAGE input, and whatever
/// `VALIDATE_INPUTS` its Python may have.
fn with_custom_node(module: &str) -> Map<String, Value> {
    let mut catalogue = catalogue().clone();
    let mut node = catalogue["ImageInvert"].clone();
    node["input"] = json!({"required": {
        "image": ["IMAGE"],
        "amount": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}],
    }});
    node["name"] = json!("Strength");
    node["python_module"] = json!(module);
    catalogue.insert("Strength".into(), node);
    catalogue
}

/// 1 EmptyImage → 2 Strength(amount) → 3 SaveImage, or with `image` fed
/// from a MASK-typed output when `mismatched`.
fn through_strength(amount: f64, mismatched: bool) -> Value {
    let image = if mismatched {
        json!(["4", 0])
    } else {
        json!(["1", 0])
    };
    json!({
        "1": empty_image(json!(64)),
        "2": {"class_type": "Strength", "inputs": {"image": image, "amount": amount}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
        "4": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
    })
}

/// A custom node's `VALIDATE_INPUTS` may switch off ComfyUI's range and
/// type checks for its inputs; only the backend, which runs it, can say.
/// So they are left to the backend: never a refusal ComfyUI would not make.
#[test]
fn a_custom_nodes_own_checks_are_left_to_the_backend() {
    let custom = with_custom_node("custom_nodes.strength_pack");
    validate(&through_strength(5.0, false), None, &custom).expect("over max: the backend decides");
    validate(&through_strength(0.5, true), None, &custom)
        .expect("a MASK into IMAGE: the backend decides");
    // Required inputs and conversions are checked before VALIDATE_INPUTS
    // can say anything: still refused here.
    let mut missing = through_strength(0.5, false);
    missing["2"]["inputs"]
        .as_object_mut()
        .unwrap()
        .remove("amount");
    let body = validate(&missing, None, &custom).unwrap_err().body;
    assert_eq!(
        body["node_errors"]["2"]["errors"][0]["type"],
        "required_input_missing"
    );
}

/// The same node shipped with ComfyUI (no `VALIDATE_INPUTS` in the
/// table of built-in ones) is checked as ComfyUI checks it.
#[test]
fn a_built_in_nodes_checks_stay() {
    let core = with_custom_node("comfy_extras.nodes_strength");
    let body = validate(&through_strength(5.0, false), None, &core)
        .unwrap_err()
        .body;
    assert_eq!(
        body["node_errors"]["2"]["errors"][0]["type"],
        "value_bigger_than_max"
    );
    let body = validate(&through_strength(0.5, true), None, &core)
        .unwrap_err()
        .body;
    assert_eq!(
        body["node_errors"]["2"]["errors"][0]["type"],
        "return_type_mismatch"
    );
}

// --- validation functions a backend runs -------------------------------------

use crate::{RoomCaps, Signature, Signatures, ValidatorCall, Validators, Verdict, validate_with};

fn signatures(class: &str, signature: Option<Signature>) -> Signatures {
    let mut s = Signatures::default();
    s.merge([(class.to_string(), signature)]);
    s
}

fn takes(args: &[&str], varkw: bool) -> Option<Signature> {
    Some(Signature {
        args: args.iter().map(|a| a.to_string()).collect(),
        varkw,
    })
}

fn check_with(
    prompt: &Value,
    catalogue: &Map<String, Value>,
    signatures: &Signatures,
    verdicts: Option<&std::collections::HashMap<String, Verdict>>,
) -> crate::Checked {
    validate_with(
        prompt,
        None,
        catalogue,
        &RoomCaps::default(),
        Validators {
            signatures: Some(signatures),
            verdicts,
        },
    )
}

/// `VALIDATE_INPUTS(cls, amount)` switches off the range check of
/// `amount` only: the call goes to the backend with the converted value,
/// and the answer's errors join ComfyUI's own, after them.
#[test]
fn a_named_validator_is_asked_with_the_converted_inputs() {
    let custom = with_custom_node("custom_nodes.strength_pack");
    let named = signatures("Strength", takes(&["cls", "amount"], false));
    let mut prompt = through_strength(5.0, false);
    prompt["2"]["inputs"]["amount"] = json!("5");
    let first = check_with(&prompt, &custom, &named, None);
    first
        .result
        .expect("taken as passing until the backend answers");
    assert_eq!(
        first.unanswered,
        [ValidatorCall {
            node_id: "2".into(),
            class_type: "Strength".into(),
            inputs: json!({"image": ["1", 0], "amount": 5.0}),
            received_types: json!({"image": "IMAGE"}).as_object().unwrap().clone(),
        }]
    );

    let refusal = json!({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                         "details": "amount - too strong", "extra_info": {"input_name": "amount"}});
    let verdicts = [("2".to_string(), Verdict::Errors(vec![refusal.clone()]))].into();
    let again = check_with(&prompt, &custom, &named, Some(&verdicts));
    assert!(again.unanswered.is_empty());
    let body = again.result.unwrap_err().body;
    assert_eq!(body["node_errors"]["2"]["errors"], json!([refusal]));
    // Only the output's own reasons are listed there.
    assert_eq!(body["error"]["details"], "");

    // The answer for a passing node is no errors.
    let verdicts = [("2".to_string(), Verdict::Errors(vec![]))].into();
    check_with(&prompt, &custom, &named, Some(&verdicts))
        .result
        .expect("the backend's validator passed it");
}

/// A validator that takes neither `input_types` nor `image` leaves
/// ComfyUI's type check of the link and its range check of other inputs
/// on; one that takes `input_types` switches the type check off.
#[test]
fn a_signature_switches_off_exactly_its_checks() {
    let custom = with_custom_node("custom_nodes.strength_pack");
    let named = signatures("Strength", takes(&["cls", "amount"], false));
    let body = check_with(&through_strength(0.5, true), &custom, &named, None)
        .result
        .unwrap_err()
        .body;
    assert_eq!(
        body["node_errors"]["2"]["errors"][0]["type"],
        "return_type_mismatch"
    );

    let types = signatures("Strength", takes(&["cls", "input_types"], false));
    let checked = check_with(&through_strength(0.5, true), &custom, &types, None);
    checked.result.expect("input_types: the validator decides");
    assert_eq!(checked.unanswered[0].received_types["image"], "MASK");
    let body = check_with(&through_strength(5.0, false), &custom, &types, None)
        .result
        .unwrap_err()
        .body;
    assert_eq!(
        body["node_errors"]["2"]["errors"][0]["type"],
        "value_bigger_than_max"
    );

    let kwargs = signatures("Strength", takes(&["cls"], true));
    check_with(&through_strength(5.0, false), &custom, &kwargs, None)
        .result
        .expect("**kwargs: every range check is the validator's");
}

/// A custom node a backend described as having no validation function is
/// checked as ComfyUI checks any node, and nothing is asked.
#[test]
fn a_custom_node_without_a_validator_gets_every_check() {
    let custom = with_custom_node("custom_nodes.strength_pack");
    let none = signatures("Strength", None);
    let checked = check_with(&through_strength(5.0, false), &custom, &none, None);
    assert!(checked.unanswered.is_empty());
    assert_eq!(
        checked.result.unwrap_err().body["node_errors"]["2"]["errors"][0]["type"],
        "value_bigger_than_max"
    );
}

/// A validator that raises: the linking node blames it, with the
/// backend's exception and traceback, as ComfyUI does.
#[test]
fn a_validator_that_raises_is_blamed_by_the_linking_node() {
    let custom = with_custom_node("custom_nodes.strength_pack");
    let named = signatures("Strength", takes(&["cls", "amount"], false));
    let verdicts = [(
        "2".to_string(),
        Verdict::Raised {
            exception_type: "ValueError".into(),
            message: "no".into(),
            traceback: vec!["  File \"x.py\", line 1, in VALIDATE_INPUTS\n".into()],
        },
    )]
    .into();
    let body = check_with(
        &through_strength(0.5, false),
        &custom,
        &named,
        Some(&verdicts),
    )
    .result
    .unwrap_err()
    .body;
    let error = &body["node_errors"]["2"]["errors"][0];
    assert_eq!(error["type"], "exception_during_inner_validation");
    assert_eq!(error["extra_info"]["exception_type"], "ValueError");
    assert_eq!(
        error["extra_info"]["traceback"],
        json!(["  File \"x.py\", line 1, in VALIDATE_INPUTS\n"])
    );
}

/// A node ComfyUI ships with a validation function the gateway does not
/// run (`CustomCombo(**kwargs)`): its checks are left to the backend even
/// when no backend described it.
#[test]
fn a_built_in_validator_is_known_without_a_backend() {
    let mut catalogue = with_custom_node("comfy_extras.nodes_strength");
    let mut node = catalogue["Strength"].clone();
    node["name"] = json!("CustomCombo");
    catalogue.insert("CustomCombo".into(), node);
    let mut prompt = through_strength(5.0, false);
    prompt["2"]["class_type"] = json!("CustomCombo");
    let checked = validate_with(
        &prompt,
        None,
        &catalogue,
        &RoomCaps::default(),
        Validators::default(),
    );
    checked.result.expect("CustomCombo takes **kwargs");
    assert_eq!(checked.unanswered.len(), 1);
}

/// Calls a backend could not answer as ComfyUI would are never asked: a
/// validator given a file picker's value (the participant's file is not on
/// the backend before the job), or a number JSON cannot carry.
#[test]
fn calls_a_backend_cannot_answer_truly_are_left_to_the_job() {
    let mut custom = with_custom_node("custom_nodes.strength_pack");
    custom["Strength"]["input"]["required"]["photo"] = json!([["a.png"], {"image_upload": true}]);
    let mut prompt = through_strength(0.5, false);
    prompt["2"]["inputs"]["photo"] = json!("a.png");
    let named = signatures("Strength", takes(&["cls", "photo"], false));
    let checked = check_with(&prompt, &custom, &named, None);
    checked.result.expect("left to the backend");
    assert!(
        checked.unanswered.is_empty(),
        "a file picker's check is not asked"
    );

    let amount = signatures("Strength", takes(&["cls", "amount"], false));
    let checked = check_with(&prompt, &custom, &amount, None);
    assert_eq!(checked.unanswered.len(), 1, "other inputs' checks are");

    let mut not_a_number = through_strength(0.5, false);
    not_a_number["2"]["inputs"]["amount"] = json!("nan");
    let plain = with_custom_node("custom_nodes.strength_pack");
    let checked = check_with(&not_a_number, &plain, &amount, None);
    checked
        .result
        .expect("NaN passes ComfyUI's range checks, which the validator switched off");
    assert!(checked.unanswered.is_empty(), "NaN cannot travel as JSON");
}
