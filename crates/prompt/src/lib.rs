//! Up-front validation of a submitted prompt (`POST /prompt`) against the
//! node catalogue, before anything is queued: a participant learns of a
//! typo in a second, not when a GPU gets to their job.
//!
//! This crate owns ComfyUI's validation semantics and its exact 400
//! bodies: reading the request ([`PromptRequest::parse`], the one parser of
//! a `POST /prompt` body: `no_prompt`, `invalid_prompt_id`), then [`validate`], a port of ComfyUI's
//! `validate_prompt`/`validate_inputs` (execution.py) and
//! `validate_node_input` (comfy_execution/validation.py). The answer is the
//! outputs to run, or a [`PromptError`] whose `body` is what ComfyUI would
//! have answered, byte for byte where Python's formatting shows through
//! (`int()`/`float()` conversion, `repr()` of lists, `str()` of floats).
//!
//! Nodes' own `VALIDATE_INPUTS` are Python, which a backend runs for the
//! gateway ([`python`], [`validate_with`]). What the gateway cannot know,
//! it leaves to the backend, which validates again: files outside the
//! user's input folder list (subfolders, `[output]`/`[temp]`), the
//! validation functions no backend could answer for, V3 dynamic inputs.
//! Python tracebacks in exception errors are empty lists unless a
//! backend's Python raised.
//!
//! Pure code: no I/O, no HTTP. The caller supplies the catalogue (class →
//! NodeInfo, as served at `/object_info`, with the user's own files in the
//! image pickers) and turns a [`PromptError`] into a 400.

mod errors;
pub mod node_info;
mod py;
pub mod python;
mod types;
mod validate;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use comfyume_domain::JobId;

pub use errors::{
    PromptError, error_body, invalid_prompt_error, invalid_prompt_id_error, no_prompt_error,
};
pub use python::{Signature, Signatures, ValidatorCall, Validators, Verdict};
pub use validate::{
    Checked, MAX_DEPTH, MAX_OUTPUTS_TIMES_NODES, RoomCaps, Validated, validate, validate_in_room,
    validate_with,
};

/// A `POST /prompt` body, read once at the edge: the only parser of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromptRequest {
    /// The API-format graph, as sent.
    pub prompt: Value,
    /// A client-chosen id, canonical.
    pub prompt_id: Option<JobId>,
    /// `partial_execution_targets`: run only these output nodes.
    pub partial_execution_targets: Option<Vec<String>>,
    /// The browser socket that gets the prompt's events, as sent: ComfyUI
    /// keeps any JSON value here, and only a string can name a socket.
    pub client_id: Option<Value>,
    pub extra_data: Map<String, Value>,
    /// The saved workflow the prompt came from
    /// (`extra_data.extra_pnginfo.workflow.id`), which `/api/jobs` filters
    /// by.
    pub workflow_id: Option<String>,
    /// A client-chosen queue position (`float(number)` in ComfyUI).
    pub number: Option<f64>,
    /// Queue in front (ComfyUI's Python truthiness of `front`).
    pub front: bool,
}

impl PromptRequest {
    /// Reads the raw body: JSON that is not an object is `invalid_prompt`
    /// (ComfyUI answers 500 there), then [`from_body`](Self::from_body).
    pub fn parse(body: &[u8]) -> Result<Self, PromptError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            invalid_prompt_error(format!("The request body is not valid JSON: {e}"))
        })?;
        Self::from_body(&value)
    }

    /// Reads a `POST /prompt` body in the order ComfyUI's `post_prompt`
    /// does: `number` (a number, or a string `float()` accepts; anything
    /// else is `invalid_prompt` where ComfyUI answers 500, and so is a
    /// number that is not finite, which ComfyUI would queue at infinity),
    /// then a body without `prompt` is `no_prompt`, then a `prompt_id` that
    /// is present, not null, and not a canonical lowercase hyphenated UUID
    /// is `invalid_prompt_id`.
    ///
    /// `partial_execution_targets` is matched with Python's `in`: a list
    /// selects its string items (ids are strings, so nothing else can
    /// match), a string selects the node ids it contains as substrings, an
    /// object its keys, and `null` selects all outputs. Other values make
    /// ComfyUI fail with a 500; here they are `invalid_prompt`, as is an
    /// `extra_data` that is not an object.
    pub fn from_body(body: &Value) -> Result<Self, PromptError> {
        let Some(fields) = body.as_object() else {
            return Err(invalid_prompt_error(
                "The request body must be a JSON object",
            ));
        };
        let number = match fields.get("number") {
            None | Some(Value::Null) => None,
            Some(n) => Some(
                n.as_f64()
                    .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
                    .filter(|f: &f64| f.is_finite())
                    .ok_or_else(|| invalid_prompt_error("number must be a number"))?,
            ),
        };
        let front = fields.get("front").is_some_and(py::truthy);
        let Some(prompt) = fields.get("prompt") else {
            return Err(no_prompt_error());
        };
        let prompt_id = match fields.get("prompt_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(JobId::parse(s).map_err(|_| invalid_prompt_id_error())?),
            Some(_) => return Err(invalid_prompt_id_error()),
        };
        let partial_execution_targets = match fields.get("partial_execution_targets") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            Some(Value::String(s)) => Some(
                prompt
                    .as_object()
                    .map(|nodes| {
                        nodes
                            .keys()
                            .filter(|id| s.contains(id.as_str()))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Some(Value::Object(o)) => Some(o.keys().cloned().collect()),
            Some(_) => {
                return Err(invalid_prompt_error(
                    "partial_execution_targets must be a list of node ids",
                ));
            }
        };
        let extra_data = match fields.get("extra_data") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(invalid_prompt_error("extra_data must be an object")),
        };
        let workflow_id = extra_data
            .get("extra_pnginfo")
            .and_then(|p| p.get("workflow"))
            .and_then(|w| w.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if workflow_id.as_deref().is_some_and(|id| id.contains('\0')) {
            // Kept as text to filter by, which PostgreSQL's text cannot
            // hold; the frontend's ids are UUIDs.
            return Err(invalid_prompt_error(
                "extra_data.extra_pnginfo.workflow.id must not contain a NUL character",
            ));
        }
        let client_id = fields.get("client_id").filter(|c| !c.is_null()).cloned();
        Ok(PromptRequest {
            workflow_id,
            prompt: prompt.clone(),
            prompt_id,
            partial_execution_targets,
            client_id,
            extra_data,
            number,
            front,
        })
    }

    /// [`validate`] with this request's prompt and targets.
    pub fn validate(&self, catalogue: &Map<String, Value>) -> Result<Validated, PromptError> {
        validate(
            &self.prompt,
            self.partial_execution_targets.as_deref(),
            catalogue,
        )
    }
}
