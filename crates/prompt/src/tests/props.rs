//! Whatever JSON arrives, validation answers (never panics), answers the
//! same twice, and answers in ComfyUI's shapes.

use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

use super::super::{PromptRequest, validate};
use super::catalogue;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..70000).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        "[ -~]{0,6}".prop_map(Value::String),
        prop::sample::select(vec![
            "",
            "0",
            "-1",
            " 7 ",
            "1_0",
            "3.5",
            "nan",
            "inf",
            "1e400",
            "area",
            "example.png",
            "x.png [output]",
            "a/b.png",
            "__value__",
            "*",
            "IMAGE",
            "1",
            "2",
            "3",
        ])
        .prop_map(|s| Value::String(s.into())),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                ("[a-z_]{0,3}|__value__|inputs|class_type|_meta|title", inner),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const CLASSES: &[&str] = &[
    "EmptyImage",
    "ImageInvert",
    "SaveImage",
    "PreviewImage",
    "PreviewAny",
    "LoadImage",
    "LoadImageMask",
    "ImageScaleBy",
    "EmptyLatentImage",
    "KSampler",
    "CheckpointLoaderSimple",
    "PrimitiveFloat",
    "NoSuchNode",
];

const INPUT_NAMES: &[&str] = &[
    "width",
    "height",
    "batch_size",
    "color",
    "image",
    "images",
    "source",
    "filename_prefix",
    "scale_by",
    "upscale_method",
    "channel",
    "model",
    "seed",
    "cfg",
    "sampler_name",
    "value",
    "latent_image",
    "extra",
];

/// Node ids "1" to "6", so links mostly land on real nodes.
fn node_id() -> impl Strategy<Value = String> {
    prop_oneof![9 => (1u8..7).prop_map(|n| n.to_string()), 1 => "[0-9a-z]{0,2}"]
}

fn input_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => scalar(),
        3 => (node_id(), -1i64..4).prop_map(|(id, slot)| json!([id, slot])),
        1 => any_json(),
        1 => scalar().prop_map(|v| json!({"__value__": v})),
    ]
}

fn node() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(CLASSES),
        prop::collection::vec((prop::sample::select(INPUT_NAMES), input_value()), 0..6),
        prop::option::of(any_json()),
        0u8..20,
    )
        .prop_map(|(class, inputs, meta, shape)| {
            let inputs: Map<String, Value> = inputs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let mut node = json!({"class_type": class, "inputs": inputs});
            if let Some(meta) = meta {
                node["_meta"] = meta;
            }
            // Now and then, a malformed node.
            if let Some(fields) = node.as_object_mut() {
                match shape {
                    0 => drop(fields.remove("inputs")),
                    1 => drop(fields.remove("class_type")),
                    _ => {}
                }
            }
            if shape == 2 {
                json!("not a node")
            } else {
                node
            }
        })
}

fn graph() -> impl Strategy<Value = Value> {
    prop::collection::vec((node_id(), node()), 0..8)
        .prop_map(|nodes| Value::Object(nodes.into_iter().collect()))
}

fn targets() -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::of(prop::collection::vec(node_id(), 0..3))
}

/// The answer has ComfyUI's shape, whichever it is.
fn check_shape(prompt: &Value, targets: Option<&[String]>) {
    let first = validate(prompt, targets, catalogue());
    let second = validate(prompt, targets, catalogue());
    assert_eq!(first, second, "validation is deterministic");
    match first {
        Ok(v) => {
            assert!(!v.outputs_to_execute.is_empty());
            for o in &v.outputs_to_execute {
                let class = prompt[o]["class_type"].as_str().unwrap();
                assert_eq!(catalogue()[class]["output_node"], true);
                if let Some(t) = targets {
                    assert!(t.contains(o));
                }
            }
            check_node_errors(&v.node_errors);
        }
        Err(e) => {
            let error = &e.body["error"];
            assert!(
                error["type"].is_string()
                    && error["message"].is_string()
                    && error["details"].is_string()
            );
            assert!(error["extra_info"].is_object());
            check_node_errors(e.body["node_errors"].as_object().unwrap());
        }
    }
}

fn check_node_errors(node_errors: &Map<String, Value>) {
    for record in node_errors.values() {
        assert!(!record["errors"].as_array().unwrap().is_empty());
        assert!(!record["dependent_outputs"].as_array().unwrap().is_empty());
        assert!(record["class_type"].is_string());
        for error in record["errors"].as_array().unwrap() {
            assert!(
                error["type"].is_string()
                    && error["message"].is_string()
                    && error["details"].is_string()
            );
            assert!(error["extra_info"].is_object());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_json_prompt_gets_an_answer(prompt in any_json(), targets in targets()) {
        check_shape(&prompt, targets.as_deref());
    }

    #[test]
    fn any_graph_gets_an_answer(prompt in graph(), targets in targets()) {
        check_shape(&prompt, targets.as_deref());
    }

    #[test]
    fn any_request_body_is_read(body in any_json(), prompt in graph()) {
        let _ = PromptRequest::from_body(&body);
        let mut body = body;
        if let Some(b) = body.as_object_mut() {
            b.insert("prompt".into(), prompt);
        }
        if let Ok(req) = PromptRequest::from_body(&body) {
            check_shape(&req.prompt, req.partial_execution_targets.as_deref());
        }
    }
}

/// The recursion is a heap stack, not the thread's, and stops where
/// Python's would: a very long chain gets a `RecursionError` where the
/// depth runs out, blamed on the node that could not be validated.
#[test]
fn a_very_deep_graph_stops_at_the_depth_limit() {
    use super::super::validate::MAX_DEPTH;
    let chain = |n: usize, first: Value| {
        let mut nodes = Map::new();
        nodes.insert("0".into(), first);
        for i in 1..n {
            nodes.insert(
                i.to_string(),
                json!({"class_type": "ImageInvert", "inputs": {"image": [(i - 1).to_string(), 0]}}),
            );
        }
        nodes.insert("out".into(), json!({"class_type": "SaveImage", "inputs": {"images": [(n - 1).to_string(), 0], "filename_prefix": "t"}}));
        Value::Object(nodes)
    };
    let bad_source = json!({"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}});

    // Within the limit, the error at the far end is found.
    let body = validate(&chain(MAX_DEPTH - 1, bad_source.clone()), None, catalogue())
        .unwrap_err()
        .body;
    assert_eq!(
        body["node_errors"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["0"]
    );

    let n = 20_000;
    let body = validate(&chain(n, bad_source), None, catalogue())
        .unwrap_err()
        .body;
    let errors = body["node_errors"].as_object().unwrap();
    let blamed = (n - MAX_DEPTH).to_string();
    assert_eq!(errors.keys().collect::<Vec<_>>(), [&blamed]);
    let error = &errors[&blamed]["errors"][0];
    assert_eq!(error["type"], "exception_during_inner_validation");
    assert_eq!(error["details"], "maximum recursion depth exceeded");
    assert_eq!(error["extra_info"]["exception_type"], "RecursionError");

    // A long cycle: every node in it is reported.
    let cycle = MAX_DEPTH - 2;
    let first =
        json!({"class_type": "ImageInvert", "inputs": {"image": [(cycle - 1).to_string(), 0]}});
    let body = validate(&chain(cycle, first), None, catalogue())
        .unwrap_err()
        .body;
    assert_eq!(body["node_errors"].as_object().unwrap().len(), cycle);
    assert_eq!(
        body["node_errors"]["0"]["errors"][0]["type"],
        "dependency_cycle"
    );
}

#[test]
fn an_absurdly_wide_prompt_is_refused() {
    let nodes: Map<String, Value> = (0..1001)
        .map(|i| {
            (
                i.to_string(),
                json!({"class_type": "PreviewImage", "inputs": {}}),
            )
        })
        .collect();
    let e = validate(&Value::Object(nodes), None, catalogue()).unwrap_err();
    assert_eq!(e.error_type(), "invalid_prompt");
}
