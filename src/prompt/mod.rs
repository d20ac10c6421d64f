//! Up-front validation of a submitted prompt (`POST /prompt`) against the
//! node catalogue, before anything is queued: a participant learns of a
//! typo in a second, not when a GPU gets to their job.
//!
//! This module owns ComfyUI's validation semantics and its exact 400
//! bodies: reading the request ([`PromptRequest::from_body`]: `no_prompt`,
//! `invalid_prompt_id`), then [`validate`], a port of ComfyUI's
//! `validate_prompt`/`validate_inputs` (execution.py) and
//! `validate_node_input` (comfy_execution/validation.py). The answer is the
//! outputs to run, or a [`PromptError`] whose `body` is what ComfyUI would
//! have answered, byte for byte where Python's formatting shows through
//! (`int()`/`float()` conversion, `repr()` of lists, `str()` of floats).
//!
//! What the gateway cannot know, it leaves to the backend, which validates
//! again: files outside the user's input folder list (subfolders,
//! `[output]`/`[temp]`), custom nodes' own `VALIDATE_INPUTS`, V3 dynamic
//! inputs. Python tracebacks in exception errors are empty lists.
//!
//! Pure code: no I/O, no HTTP. The caller supplies the catalogue (class →
//! NodeInfo, as served at `/object_info`, with the user's own files in the
//! image pickers) and turns a [`PromptError`] into a 400.

mod errors;
mod py;
mod types;
mod validate;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use crate::domain::JobId;

pub use errors::{PromptError, invalid_prompt_error, invalid_prompt_id_error, no_prompt_error};
pub use validate::{MAX_DEPTH, MAX_OUTPUTS_TIMES_NODES, Validated, validate};

/// The parts of a `POST /prompt` body that validation reads. The rest
/// (`client_id`, `extra_data`, `number`, `front`) belong to the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRequest {
    /// The API-format graph, as sent.
    pub prompt: Value,
    /// A client-chosen id, already checked to be canonical.
    pub prompt_id: Option<JobId>,
    /// `partial_execution_targets`: run only these output nodes.
    pub partial_execution_targets: Option<Vec<String>>,
}

impl PromptRequest {
    /// Reads a `POST /prompt` body as ComfyUI's `post_prompt` does: a body
    /// without `prompt` is `no_prompt`; a `prompt_id` that is present, not
    /// null, and not a canonical lowercase hyphenated UUID is
    /// `invalid_prompt_id`.
    ///
    /// `partial_execution_targets` is matched with Python's `in`: a list
    /// selects its string items (ids are strings, so nothing else can
    /// match), a string selects the node ids it contains as substrings, an
    /// object its keys, and `null` selects all outputs. Other values make
    /// ComfyUI fail with a 500; here they are `invalid_prompt`.
    pub fn from_body(body: &Value) -> Result<Self, PromptError> {
        let Some(prompt) = body.as_object().and_then(|b| b.get("prompt")) else {
            return Err(no_prompt_error());
        };
        let prompt_id = match body.get("prompt_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(JobId::parse(s).map_err(|_| invalid_prompt_id_error())?),
            Some(_) => return Err(invalid_prompt_id_error()),
        };
        let partial_execution_targets = match body.get("partial_execution_targets") {
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
        Ok(PromptRequest {
            prompt: prompt.clone(),
            prompt_id,
            partial_execution_targets,
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
