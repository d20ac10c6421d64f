//! Validation that only a backend can do: a node's own `VALIDATE_INPUTS`
//! (`validate_inputs` for V3 nodes) is Python code, run by ComfyUI in the
//! middle of its validation. Its signature decides which of ComfyUI's
//! built-in checks are switched off (the inputs it names, every input with
//! `**kwargs`, link types when it takes `input_types`); its answer adds
//! `custom_validation_failed` errors or raises.
//!
//! The gateway learns signatures from backends that run ComfyUME's backend
//! extension (`comfyui/comfyume_backend`), and asks such a backend for the
//! answers: validation runs once to find the calls ([`ValidatorCall`]), the
//! backend answers them ([`Verdict`]), validation runs again with the
//! answers and gives ComfyUI's own result. Where no backend can say, the
//! checks a validator could switch off are left to the backend that runs
//! the job: never a refusal ComfyUI would not make.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::py::PyErr;

/// The parameters of a validation function, as `inspect.getfullargspec`
/// reads them (`args` includes `cls`/`s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub args: Vec<String>,
    /// A `**kwargs` parameter.
    pub varkw: bool,
}

impl Signature {
    /// ComfyUI skips its range and choice checks of input `x`.
    pub(crate) fn takes(&self, x: &str) -> bool {
        self.varkw || self.args.iter().any(|a| a == x)
    }

    /// ComfyUI skips its type check of linked inputs.
    pub(crate) fn takes_input_types(&self) -> bool {
        self.args.iter().any(|a| a == "input_types")
    }
}

/// Node class → its validation function's signature, or `None` for a
/// class known to have none: what backends described.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signatures {
    by_class: HashMap<String, Option<Signature>>,
}

impl Signatures {
    /// Adds a backend's description; a class already described keeps its
    /// first one, as the catalogue keeps a class's first NodeInfo.
    pub fn merge(&mut self, classes: impl IntoIterator<Item = (String, Option<Signature>)>) {
        for (class, signature) in classes {
            self.by_class.entry(class).or_insert(signature);
        }
    }

    /// [`merge`](Self::merge) with another backend's description.
    pub fn merge_from(&mut self, other: Signatures) {
        self.merge(other.by_class);
    }

    /// What is known of `class`: `None` when no backend described it.
    pub fn get(&self, class: &str) -> Option<Option<&Signature>> {
        self.by_class.get(class).map(Option::as_ref)
    }

    pub fn is_empty(&self) -> bool {
        self.by_class.is_empty()
    }
}

/// One validation function to run on a backend, as ComfyUI's
/// `validate_inputs` would run it for node `node_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorCall {
    pub node_id: String,
    pub class_type: String,
    /// The node's `inputs` after ComfyUI rewrote them (`__value__`
    /// unwrapped, INT/FLOAT/STRING/BOOLEAN converted), links as sent.
    pub inputs: Value,
    /// The type each linked input receives (its `received_types`).
    pub received_types: Map<String, Value>,
}

/// A backend's answer to one [`ValidatorCall`].
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The errors ComfyUI adds for the node (none when it passed).
    Errors(Vec<Value>),
    /// The function raised: ComfyUI's `full_type_name`, `str(ex)` and
    /// `traceback.format_tb`.
    Raised {
        exception_type: String,
        message: String,
        traceback: Vec<String>,
    },
}

impl Verdict {
    pub(crate) fn raised(&self) -> Option<PyErr> {
        match self {
            Verdict::Errors(_) => None,
            Verdict::Raised {
                exception_type,
                message,
                traceback,
            } => Some(PyErr {
                type_name: exception_type.clone().into(),
                message: message.clone(),
                traceback: traceback.clone(),
            }),
        }
    }
}

/// What validation knows of the backends' validation functions: their
/// signatures, and the answers (by node id) to the calls of an earlier run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Validators<'a> {
    pub signatures: Option<&'a Signatures>,
    pub verdicts: Option<&'a HashMap<String, Verdict>>,
}

/// The validation functions of the nodes ComfyUI v0.33.0 ships that the
/// gateway does not run itself (those of the file loaders it does, against
/// the participant's own files): used when no backend describes them, so
/// that their checks are left to the backend even then.
pub(crate) fn built_in_signature(class: &str) -> Option<Signature> {
    let (args, varkw): (&[&str], bool) = match class {
        "ModelAttentionBackend" => (&["s", "attention"], false),
        "SelectModelDevice" | "SelectCLIPDevice" | "SelectVAEDevice" => (&["cls", "device"], false),
        "Load3D" | "Load3DAdvanced" => (&["cls", "model_file"], true),
        "CustomCombo" => (&["cls", "choice", "index"], true),
        "FluxProUltraImageNode" => (&["cls", "aspect_ratio"], false),
        "TripoConversionNode" => (&["cls", "input_types"], false),
        _ => return None,
    };
    Some(Signature {
        args: args.iter().map(|a| a.to_string()).collect(),
        varkw,
    })
}
