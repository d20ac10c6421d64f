//! `POST /prompt` validation: stock's `validate_prompt` and
//! `validate_inputs` (S:execution.py), driven by the catalogue's own
//! `/object_info` entries, so the simulator rejects exactly the prompts its
//! catalogue says are wrong, with stock's 400 bodies.
//!
//! Checked: class types, output nodes, required inputs, link shape and
//! targets, link types, INT/FLOAT/STRING conversion, min/max, combo choices
//! and LoadImage's "file exists". Where stock would recurse forever on a
//! cycle, the simulator reports `dependency_cycle` on the node.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::files::Dirs;
use super::graph;

/// A failed prompt: the body of the 400 answer.
pub(crate) type Rejection = Value;

/// A prompt that may run: the output nodes to execute (in prompt order)
/// and the errors of outputs that were dropped.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub outputs: Vec<String>,
    pub node_errors: Map<String, Value>,
}

fn rejection(kind: &str, message: &str, details: &str, extra: Value) -> Rejection {
    json!({
        "error": {"type": kind, "message": message, "details": details, "extra_info": extra},
        "node_errors": {},
    })
}

/// ComfyUI's body for a `POST /prompt` without a prompt.
pub(crate) fn no_prompt() -> Rejection {
    comfyume_prompt::no_prompt_error().body
}

/// ComfyUI's body for a `prompt_id` that is not a canonical UUID.
pub(crate) fn invalid_prompt_id() -> Rejection {
    comfyume_prompt::invalid_prompt_id_error().body
}

/// Validates `prompt` against `catalogue` (the `/object_info` body).
/// `targets` restricts the outputs (`partial_execution_targets`).
pub(crate) fn validate(
    prompt: &Value,
    targets: Option<&[String]>,
    catalogue: &Map<String, Value>,
    dirs: &Dirs,
) -> Result<Accepted, Rejection> {
    let Some(nodes) = prompt.as_object() else {
        return Err(rejection(
            "invalid_prompt",
            "Cannot execute because the prompt is not an object of nodes.",
            "",
            json!({}),
        ));
    };
    let mut outputs = Vec::new();
    for (id, node) in nodes {
        let Some(class_type) = node.get("class_type").and_then(Value::as_str) else {
            return Err(rejection(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                &format!("Node ID '#{id}'"),
                json!({}),
            ));
        };
        let Some(info) = catalogue.get(class_type) else {
            let title = node
                .pointer("/_meta/title")
                .and_then(Value::as_str)
                .unwrap_or(class_type);
            return Err(rejection(
                "missing_node_type",
                &format!("Node '{class_type}' not found. The custom node may not be installed."),
                &format!("Node ID '#{id}'"),
                json!({"node_id": id, "class_type": class_type, "node_title": title}),
            ));
        };
        let is_output = info["output_node"] == json!(true);
        if is_output && targets.is_none_or(|t| t.contains(id)) {
            outputs.push(id.clone());
        }
    }
    if outputs.is_empty() {
        return Err(rejection(
            "prompt_no_outputs",
            "Prompt has no outputs",
            "",
            json!({}),
        ));
    }

    let mut checker = Checker {
        nodes,
        catalogue,
        dirs,
        validated: Vec::new(),
        in_progress: HashSet::new(),
    };
    let mut good = Vec::new();
    let mut failures: Vec<Vec<Value>> = Vec::new();
    let mut node_errors = Map::new();
    for output in &outputs {
        let (valid, reasons) = match checker.node(output) {
            Ok(result) => result,
            Err(ex) => {
                let reasons = vec![json!({
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": ex.message,
                    "extra_info": {"exception_type": ex.kind, "traceback": []},
                })];
                checker.record(output, false, reasons.clone());
                (false, reasons)
            }
        };
        if valid {
            good.push(output.clone());
            continue;
        }
        failures.push(reasons);
        // Stock lists every failed node seen so far under each failed output.
        for (id, valid, reasons) in &checker.validated {
            if *valid || reasons.is_empty() {
                continue;
            }
            let entry = node_errors.entry(id.clone()).or_insert_with(|| {
                json!({
                    "errors": reasons,
                    "dependent_outputs": [],
                    "class_type": nodes.get(id).map_or("", graph::class_type),
                })
            });
            if let Some(list) = entry["dependent_outputs"].as_array_mut() {
                list.push(json!(output));
            }
        }
    }
    if good.is_empty() {
        let details: Vec<String> = failures
            .iter()
            .flatten()
            .map(|e| format!("{}: {}", text(&e["message"]), text(&e["details"])))
            .collect();
        return Err(json!({
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details.join("\n"),
                "extra_info": {},
            },
            "node_errors": node_errors,
        }));
    }
    Ok(Accepted {
        outputs: good,
        node_errors,
    })
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// A Python exception raised while validating, as stock reports it.
struct Exception {
    kind: &'static str,
    message: String,
}

struct Checker<'a> {
    nodes: &'a Map<String, Value>,
    catalogue: &'a Map<String, Value>,
    dirs: &'a Dirs,
    /// Results in the order they were recorded, like stock's dict.
    validated: Vec<(String, bool, Vec<Value>)>,
    in_progress: HashSet<String>,
}

impl Checker<'_> {
    fn record(&mut self, id: &str, valid: bool, reasons: Vec<Value>) {
        if let Some(slot) = self.validated.iter_mut().find(|(v, _, _)| v == id) {
            *slot = (id.to_owned(), valid, reasons);
        } else {
            self.validated.push((id.to_owned(), valid, reasons));
        }
    }

    fn node(&mut self, id: &str) -> Result<(bool, Vec<Value>), Exception> {
        if let Some((_, valid, reasons)) = self.validated.iter().find(|(v, _, _)| v == id) {
            return Ok((*valid, reasons.clone()));
        }
        if !self.in_progress.insert(id.to_owned()) {
            let reasons = vec![json!({
                "type": "dependency_cycle",
                "message": "Dependency cycle detected",
                "details": format!("Node ID '#{id}'"),
                "extra_info": {"node_id": id},
            })];
            self.record(id, false, reasons.clone());
            return Ok((false, reasons));
        }
        let result = self.check(id);
        self.in_progress.remove(id);
        let (mut valid, mut errors) = result?;
        // A cycle back to this node was recorded while checking it.
        if let Some((_, _, found)) = self.validated.iter().find(|(v, _, _)| v == id) {
            errors.splice(0..0, found.iter().cloned());
            valid = false;
        }
        self.record(id, valid, errors.clone());
        Ok((valid, errors))
    }

    fn check(&mut self, id: &str) -> Result<(bool, Vec<Value>), Exception> {
        // Every node was checked to exist with a known class before this.
        let node = self.nodes.get(id).unwrap_or(&Value::Null);
        let inputs = graph::inputs(node);
        let class_type = graph::class_type(node);
        let info = self.catalogue.get(class_type).unwrap_or(&Value::Null);
        // LoadImage validates `image` itself (stock's VALIDATE_INPUTS),
        // which also switches off the combo check for it.
        let custom: &[&str] = if class_type == "LoadImage" {
            &["image"]
        } else {
            &[]
        };
        let mut errors = Vec::new();
        let mut valid = true;
        let empty = Map::new();
        let required = info["input"]["required"].as_object().unwrap_or(&empty);
        for (name, spec) in required {
            let kind = spec.get(0).cloned().unwrap_or(Value::Null);
            let options = spec.get(1).cloned().unwrap_or_else(|| json!({}));
            let config = json!([kind, options]);
            let Some(value) = inputs.get(name) else {
                errors.push(json!({
                    "type": "required_input_missing",
                    "message": "Required input is missing",
                    "details": name,
                    "extra_info": {"input_name": name},
                }));
                continue;
            };
            if let Value::Array(link) = value {
                if link.len() != 2 {
                    errors.push(json!({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": name,
                        "extra_info": {"input_name": name, "input_config": config, "received_value": value},
                    }));
                    continue;
                }
                // Raised here, these propagate to whoever validates this node.
                let received = self.linked_type(&link[0], &link[1])?;
                if !types_match(&received, &kind) {
                    errors.push(json!({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": format!("{name}, received_type({}) mismatch input_type({})", text(&received), text(&kind)),
                        "extra_info": {"input_name": name, "input_config": config, "received_type": received, "linked_node": value},
                    }));
                    continue;
                }
                let from = link[0].as_str().unwrap_or_default().to_owned();
                match self.node(&from) {
                    Ok((true, _)) => {}
                    Ok((false, _)) => valid = false,
                    Err(ex) => {
                        valid = false;
                        self.record(
                            &from,
                            false,
                            vec![json!({
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": ex.message,
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": config,
                                    "exception_message": ex.message,
                                    "exception_type": ex.kind,
                                    "traceback": [],
                                    "linked_node": value,
                                },
                            })],
                        );
                    }
                }
                continue;
            }
            if let Some(error) = check_value(
                name,
                value,
                &kind,
                &options,
                &config,
                custom.contains(&name.as_str()),
            ) {
                errors.push(error);
            }
        }
        for name in custom {
            let Some(value) = inputs.get(*name).and_then(Value::as_str) else {
                continue;
            };
            let exists = self
                .dirs
                .resolve_annotated(value)
                .is_some_and(|p| p.is_file());
            if !exists {
                errors.push(json!({
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": format!("{name} - Invalid image file: {value}"),
                    "extra_info": {"input_name": name},
                }));
            }
        }
        Ok((errors.is_empty() && valid, errors))
    }

    /// The type of output `socket` of node `from`, raising like stock's
    /// `prompt[o_id]` and `RETURN_TYPES[socket]` lookups.
    fn linked_type(&self, from: &Value, socket: &Value) -> Result<Value, Exception> {
        let key_error = || Exception {
            kind: "KeyError",
            message: match from {
                Value::String(s) => format!("'{s}'"),
                other => other.to_string(),
            },
        };
        let node = from
            .as_str()
            .and_then(|id| self.nodes.get(id))
            .ok_or_else(key_error)?;
        let outputs = self
            .catalogue
            .get(graph::class_type(node))
            .map_or(&Value::Null, |info| &info["output"]);
        let index = match socket {
            Value::Number(n) if n.is_i64() || n.is_u64() => n.as_u64(),
            Value::Number(_) => {
                return Err(Exception {
                    kind: "TypeError",
                    message: "tuple indices must be integers or slices, not float".into(),
                });
            }
            other => {
                return Err(Exception {
                    kind: "TypeError",
                    message: format!(
                        "tuple indices must be integers or slices, not {}",
                        py_type(other)
                    ),
                });
            }
        };
        index
            .and_then(|i| outputs.get(usize::try_from(i).ok()?))
            .cloned()
            .ok_or(Exception {
                kind: "IndexError",
                message: "tuple index out of range".into(),
            })
    }
}

/// stock's `validate_node_input` without strict mode: equal, or sharing one
/// of their comma-separated names.
fn types_match(received: &Value, wanted: &Value) -> bool {
    if received == wanted {
        return true;
    }
    let (Some(a), Some(b)) = (received.as_str(), wanted.as_str()) else {
        return false;
    };
    let left: HashSet<&str> = a.split(',').map(str::trim).collect();
    b.split(',').map(str::trim).any(|t| left.contains(t))
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Checks a widget value: conversion, then range or choices.
fn check_value(
    name: &str,
    value: &Value,
    kind: &Value,
    options: &Value,
    config: &Value,
    custom: bool,
) -> Option<Value> {
    let value = match value {
        Value::Object(o) if o.contains_key("__value__") => &o["__value__"],
        other => other,
    };
    let converted = match kind.as_str() {
        Some("INT") => to_int(value),
        Some("FLOAT") => to_float(value),
        _ => Ok(value.clone()),
    };
    let val = match converted {
        Ok(val) => val,
        Err(message) => {
            return Some(json!({
                "type": "invalid_input_type",
                "message": format!("Failed to convert an input value to a {} value", text(kind)),
                "details": format!("{name}, {}, {message}", py_str(value)),
                "extra_info": {"input_name": name, "input_config": config, "received_value": value, "exception_message": message},
            }));
        }
    };
    if custom {
        return None;
    }
    let number = val.as_f64();
    for (bound, smaller) in [("min", true), ("max", false)] {
        let (Some(limit), Some(v)) = (options.get(bound).and_then(Value::as_f64), number) else {
            continue;
        };
        if (smaller && v < limit) || (!smaller && v > limit) {
            let (kind, word) = if smaller {
                ("value_smaller_than_min", "smaller than min of")
            } else {
                ("value_bigger_than_max", "bigger than max of")
            };
            return Some(json!({
                "type": kind,
                "message": format!("Value {} {word} {}", py_str(&val), py_str(&options[bound])),
                "details": name,
                "extra_info": {"input_name": name, "input_config": config, "received_value": val},
            }));
        }
    }
    if let Value::Array(choices) = kind
        && !choices.contains(&val)
    {
        let (list, config) = if choices.len() > 20 {
            (format!("(list of length {})", choices.len()), Value::Null)
        } else {
            let items: Vec<String> = choices.iter().map(py_repr).collect();
            (format!("[{}]", items.join(", ")), config.clone())
        };
        return Some(json!({
            "type": "value_not_in_list",
            "message": "Value not in list",
            "details": format!("{name}: '{}' not in {list}", py_str(&val)),
            "extra_info": {"input_name": name, "input_config": config, "received_value": val},
        }));
    }
    None
}

/// Python's `int(value)`.
fn to_int(value: &Value) -> Result<Value, String> {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.is_finite() {
                Ok(json!(f.trunc() as i64))
            } else {
                Err("cannot convert float infinity to integer".into())
            }
        }
        Value::Bool(b) => Ok(json!(i64::from(*b))),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(|i| json!(i))
            .map_err(|_| format!("invalid literal for int() with base 10: {}", py_repr(value))),
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            py_type(other)
        )),
    }
}

/// Python's `float(value)`.
fn to_float(value: &Value) -> Result<Value, String> {
    match value {
        Value::Number(n) => Ok(json!(n.as_f64().unwrap_or(0.0))),
        Value::Bool(b) => Ok(json!(f64::from(u8::from(*b)))),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map(|f| json!(f))
            .map_err(|_| format!("could not convert string to float: {}", py_repr(value))),
        other => Err(format!(
            "float() argument must be a string or a real number, not '{}'",
            py_type(other)
        )),
    }
}

/// Python's `str()` of a JSON value, for messages.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => py_float(n.as_f64().unwrap_or(f64::NAN)),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// Python's `repr()` for combo choices and literals in messages.
fn py_repr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => py_str(other),
    }
}

/// Python's float repr: `1.0`, `0.05`, `1e+20`.
fn py_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "nan".into()
        } else if f > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let magnitude = f.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let s = format!("{f:e}");
        return match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
            None => s,
        };
    }
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(prompt: Value) -> Result<Accepted, Rejection> {
        let dirs = Dirs::create(None).expect("dirs");
        validate(&prompt, None, &crate::catalogue::object_info(&[]), &dirs)
    }

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../../fixtures/comfyui-0.3.64/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn value_out_of_range_matches_stock() {
        let body = check(json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": -5, "height": 48, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        }))
        .expect_err("invalid");
        assert_eq!(body, fixture("post-prompt-400-invalid-value.json"));
    }

    #[test]
    fn missing_input_matches_stock() {
        let body = check(json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        }))
        .expect_err("invalid");
        assert_eq!(body, fixture("post-prompt-400-missing-required-input.json"));
    }

    #[test]
    fn missing_upload_matches_stock() {
        let body = check(json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": "does_not_exist_peer.png"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        }))
        .expect_err("invalid");
        assert_eq!(body, fixture("post-prompt-400-loadimage-missing-post.json"));
    }

    #[test]
    fn link_to_a_missing_node_blames_the_linked_node() {
        let body = check(json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["9", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        }))
        .expect_err("invalid");
        let mut stock = fixture("post-prompt-400-invalid-link.json");
        // Python tracebacks are not reproduced.
        stock["node_errors"]["2"]["errors"][0]["extra_info"]["traceback"] = json!([]);
        assert_eq!(body, stock);
    }

    #[test]
    fn unknown_class_and_no_outputs() {
        let body =
            check(json!({"1": {"class_type": "NoSuchNode", "inputs": {}}})).expect_err("unknown");
        assert_eq!(body["error"]["type"], "missing_node_type");
        assert_eq!(body["error"]["extra_info"]["node_title"], "NoSuchNode");
        let body = check(json!({"1": {"class_type": "EmptyImage", "inputs": {}}}))
            .expect_err("no outputs");
        assert_eq!(body["error"]["type"], "prompt_no_outputs");
    }

    #[test]
    fn types_choices_and_cycles() {
        let body = check(json!({
            "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "cubic", "width": 8, "height": 8, "crop": "disabled"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        }))
        .expect_err("invalid");
        let errors = &body["node_errors"]["2"]["errors"];
        assert_eq!(errors[0]["type"], "return_type_mismatch");
        assert_eq!(errors[1]["type"], "value_not_in_list");
        assert_eq!(
            errors[1]["details"],
            "upscale_method: 'cubic' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']"
        );

        let body = check(json!({
            "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        }))
        .expect_err("cycle");
        assert_eq!(
            body["node_errors"]["2"]["errors"][0]["type"],
            "dependency_cycle"
        );
    }

    #[test]
    fn partly_valid_prompts_run_the_good_outputs() {
        let ok = check(json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": "12"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
        }))
        .expect("one good output");
        assert_eq!(ok.outputs, ["2"]);
        assert_eq!(
            ok.node_errors["3"]["errors"][0]["type"],
            "exception_during_validation"
        );
    }

    #[test]
    fn python_number_formatting() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.05), "0.05");
        assert_eq!(py_float(1e20), "1e+20");
        assert_eq!(py_float(1.5e-7), "1.5e-07");
        assert_eq!(
            to_int(&json!("1.5")).expect_err("not an int"),
            "invalid literal for int() with base 10: '1.5'"
        );
    }
}
