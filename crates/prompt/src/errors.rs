//! The exact error bodies of ComfyUI's `POST /prompt`: the top-level
//! `{"error": {...}, "node_errors": {...}}` 400 bodies and the per-node
//! error objects inside `node_errors`. Every string here is ComfyUI's own
//! (execution.py `validate_inputs`/`validate_prompt`, server.py
//! `post_prompt`), except `invalid_prompt`, where ComfyUI answers 500.

use serde_json::{Map, Value, json};

use super::py::PyErr;

/// A rejected `POST /prompt`: the gateway answers 400 with [`body`](Self::body).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptError {
    /// `{"error": {"type", "message", "details", "extra_info"}, "node_errors": {...}}`.
    pub body: Value,
}

impl PromptError {
    fn top(
        kind: &str,
        message: &str,
        details: &str,
        extra_info: Value,
        node_errors: Map<String, Value>,
    ) -> Self {
        PromptError {
            body: json!({
                "error": {
                    "type": kind,
                    "message": message,
                    "details": details,
                    "extra_info": extra_info,
                },
                "node_errors": node_errors,
            }),
        }
    }

    /// `error.type`, e.g. `"prompt_outputs_failed_validation"`.
    pub fn error_type(&self) -> &str {
        self.body
            .pointer("/error/type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `node_errors`, empty for prompt-level errors.
    pub fn node_errors(&self) -> Option<&Map<String, Value>> {
        self.body.get("node_errors").and_then(Value::as_object)
    }
}

impl std::fmt::Display for PromptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message = self.body.pointer("/error/message").and_then(Value::as_str);
        let details = self.body.pointer("/error/details").and_then(Value::as_str);
        match (message, details) {
            (Some(m), Some(d)) if !d.is_empty() => write!(f, "{m}: {d}"),
            (Some(m), _) => f.write_str(m),
            _ => f.write_str("invalid prompt"),
        }
    }
}

impl std::error::Error for PromptError {}

/// A top-level `POST /prompt` error body in ComfyUI's shape, with empty
/// `extra_info` and `node_errors`: for refusals of the gateway's own (a
/// full queue, no backend) that the frontend shows like ComfyUI's.
pub fn error_body(kind: &str, message: &str, details: &str) -> Value {
    PromptError::top(kind, message, details, json!({}), Map::new()).body
}

/// The body has no `prompt` key (server.py `post_prompt`).
pub fn no_prompt_error() -> PromptError {
    PromptError::top(
        "no_prompt",
        "No prompt provided",
        "No prompt provided",
        json!({}),
        Map::new(),
    )
}

/// `prompt_id` is present but not a canonical lowercase hyphenated UUID
/// (server.py `post_prompt`, via `validate_job_id`).
pub fn invalid_prompt_id_error() -> PromptError {
    PromptError::top(
        "invalid_prompt_id",
        "prompt_id must be a valid UUID",
        "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to let the server generate one",
        json!({}),
        Map::new(),
    )
}

/// A prompt of the wrong shape (not an object of node objects, and the
/// like). ComfyUI has no answer for these: its handler raises and aiohttp
/// replies `500 Internal Server Error` in plain text. The gateway answers
/// 400 in ComfyUI's error shape instead, with the type ComfyUI itself used
/// for malformed prompts before v0.3.65.
pub fn invalid_prompt_error(details: impl Into<String>) -> PromptError {
    PromptError::top(
        "invalid_prompt",
        "Invalid prompt",
        &details.into(),
        json!({}),
        Map::new(),
    )
}

/// A node without `class_type` (execution.py `validate_prompt`).
pub(crate) fn missing_class_type(
    node_id: &str,
    title: &Value,
    title_text: Option<String>,
) -> PromptError {
    let shown = title_text.unwrap_or_else(|| format!("ID #{node_id}"));
    PromptError::top(
        "missing_node_type",
        &format!(
            "Node '{shown}' has no class_type. The workflow may be corrupted or a custom node is missing."
        ),
        &format!("Node ID '#{node_id}'"),
        json!({"node_id": node_id, "class_type": null, "node_title": title}),
        Map::new(),
    )
}

/// A `class_type` the catalogue does not have (execution.py `validate_prompt`).
pub(crate) fn missing_node_type(
    node_id: &str,
    class_type: &Value,
    title: &Value,
    title_text: &str,
) -> PromptError {
    PromptError::top(
        "missing_node_type",
        &format!("Node '{title_text}' not found. The custom node may not be installed."),
        &format!("Node ID '#{node_id}'"),
        json!({"node_id": node_id, "class_type": class_type, "node_title": title}),
        Map::new(),
    )
}

/// No output node is selected (execution.py `validate_prompt`).
pub(crate) fn prompt_no_outputs() -> PromptError {
    PromptError::top(
        "prompt_no_outputs",
        "Prompt has no outputs",
        "",
        json!({}),
        Map::new(),
    )
}

/// Every selected output failed (execution.py `validate_prompt`); `details`
/// lists the outputs' own errors, one `"message: details"` a line.
pub(crate) fn prompt_outputs_failed_validation(
    details: &str,
    node_errors: Map<String, Value>,
) -> PromptError {
    PromptError::top(
        "prompt_outputs_failed_validation",
        "Prompt outputs failed validation",
        details,
        json!({}),
        node_errors,
    )
}

// ---------------------------------------------------------------------------
// Per-node errors, in the order execution.py `validate_inputs` raises them.
// ---------------------------------------------------------------------------

pub(crate) fn required_input_missing(input: &str) -> Value {
    json!({
        "type": "required_input_missing",
        "message": "Required input is missing",
        "details": input,
        "extra_info": {"input_name": input},
    })
}

pub(crate) fn bad_linked_input(input: &str, config: &Value, received: &Value) -> Value {
    json!({
        "type": "bad_linked_input",
        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
        "details": input,
        "extra_info": {"input_name": input, "input_config": config, "received_value": received},
    })
}

pub(crate) fn return_type_mismatch(
    input: &str,
    config: &Value,
    received_type: &Value,
    input_type_text: &str,
    received_type_text: &str,
    link: &Value,
) -> Value {
    json!({
        "type": "return_type_mismatch",
        "message": "Return type mismatch between linked nodes",
        "details": format!("{input}, received_type({received_type_text}) mismatch input_type({input_type_text})"),
        "extra_info": {
            "input_name": input,
            "input_config": config,
            "received_type": received_type,
            "linked_node": link,
        },
    })
}

// `traceback` is what `traceback.format_tb` gives in ComfyUI: a backend's
// when its Python raised, else empty (the gateway has no Python stack).

pub(crate) fn exception_during_inner_validation(
    input: &str,
    config: &Value,
    ex: &PyErr,
    link: &Value,
) -> Value {
    json!({
        "type": "exception_during_inner_validation",
        "message": "Exception when validating inner node",
        "details": ex.message,
        "extra_info": {
            "input_name": input,
            "input_config": config,
            "exception_message": ex.message,
            "exception_type": ex.type_name,
            "traceback": ex.traceback,
            "linked_node": link,
        },
    })
}

pub(crate) fn exception_during_validation(ex: &PyErr) -> Value {
    json!({
        "type": "exception_during_validation",
        "message": "Exception when validating node",
        "details": ex.message,
        "extra_info": {"exception_type": ex.type_name, "traceback": ex.traceback},
    })
}

pub(crate) fn invalid_input_type(
    input: &str,
    input_type: &str,
    config: &Value,
    received: &Value,
    received_text: &str,
    ex: &PyErr,
) -> Value {
    json!({
        "type": "invalid_input_type",
        "message": format!("Failed to convert an input value to a {input_type} value"),
        "details": format!("{input}, {received_text}, {}", ex.message),
        "extra_info": {
            "input_name": input,
            "input_config": config,
            "received_value": received,
            "exception_message": ex.message,
        },
    })
}

pub(crate) fn value_smaller_than_min(
    input: &str,
    config: &Value,
    received: &Value,
    value_text: &str,
    min_text: &str,
) -> Value {
    json!({
        "type": "value_smaller_than_min",
        "message": format!("Value {value_text} smaller than min of {min_text}"),
        "details": input,
        "extra_info": {"input_name": input, "input_config": config, "received_value": received},
    })
}

pub(crate) fn value_bigger_than_max(
    input: &str,
    config: &Value,
    received: &Value,
    value_text: &str,
    max_text: &str,
) -> Value {
    json!({
        "type": "value_bigger_than_max",
        "message": format!("Value {value_text} bigger than max of {max_text}"),
        "details": input,
        "extra_info": {"input_name": input, "input_config": config, "received_value": received},
    })
}

/// `config` is `None` (JSON `null`) when the list has more than 20 options.
pub(crate) fn value_not_in_list(
    input: &str,
    config: Option<&Value>,
    received: &Value,
    invalid_text: &str,
    list_text: &str,
) -> Value {
    json!({
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": format!("{input}: {invalid_text} not in {list_text}"),
        "extra_info": {"input_name": input, "input_config": config, "received_value": received},
    })
}

pub(crate) fn custom_validation_failed(input: &str, reason: &str) -> Value {
    json!({
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": format!("{input} - {reason}"),
        "extra_info": {"input_name": input},
    })
}

pub(crate) fn dependency_cycle(node_id: &str, path: &str, cycle_nodes: &[String]) -> Value {
    json!({
        "type": "dependency_cycle",
        "message": "Dependency cycle detected",
        "details": path,
        "extra_info": {"node_id": node_id, "cycle_nodes": cycle_nodes},
    })
}
