//! Reading the node catalogue (the `/object_info` body) the way ComfyUI's
//! validation reads `INPUT_TYPES()` and `RETURN_TYPES`: input specs
//! (`["INT", {...}]`, `[[choices...], {...}]`, `["COMBO", {"options": [...]}]`,
//! socket types, `"*"`), link type compatibility, and the built-in nodes
//! whose `VALIDATE_INPUTS` changes what is checked.

use serde_json::{Map, Value};

use super::py::json_eq;

/// `IO.AnyType.io_type`.
const ANY: &str = "*";
/// `IO.MatchType.io_type`: checked by the frontend, not the server.
const MATCH_TYPE: &str = "COMFY_MATCHTYPE_V3";
/// `IO.Combo.io_type`.
pub(crate) const COMBO: &str = "COMBO";

/// One node class of the catalogue.
#[derive(Clone, Copy)]
pub(crate) struct NodeClass<'a> {
    info: &'a Map<String, Value>,
}

impl<'a> NodeClass<'a> {
    /// The class's NodeInfo, if the catalogue has it as an object.
    pub fn lookup(catalogue: &'a Map<String, Value>, class_type: &str) -> Option<Self> {
        catalogue
            .get(class_type)
            .and_then(Value::as_object)
            .map(|info| NodeClass { info })
    }

    /// From a custom node pack (`python_module` `custom_nodes.…`). The
    /// catalogue does not say whether such a node has a `VALIDATE_INPUTS`,
    /// nor which of ComfyUI's own checks that switches off (those of the
    /// inputs it names, of all inputs with `**kwargs`, the link types with
    /// `input_types`): those checks are left to the backend, which runs
    /// the node's Python.
    pub fn is_custom(&self) -> bool {
        self.info
            .get("python_module")
            .and_then(Value::as_str)
            .is_some_and(|m| m == "custom_nodes" || m.starts_with("custom_nodes."))
    }

    /// `OUTPUT_NODE is True`.
    pub fn is_output_node(&self) -> bool {
        self.info.get("output_node") == Some(&Value::Bool(true))
    }

    /// `RETURN_TYPES`.
    pub fn return_types(&self) -> &'a [Value] {
        self.info
            .get("output")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// `required ∪ optional`, each input once (`get_input_info` looks in
    /// `required` first), in catalogue order. ComfyUI iterates a Python
    /// `set` here, so its order is arbitrary; catalogue order is the
    /// deterministic choice. Hidden inputs are never validated.
    pub fn declared_inputs(&self) -> Vec<Declared<'a>> {
        let section = |name: &str| {
            self.info
                .get("input")
                .and_then(|i| i.get(name))
                .and_then(Value::as_object)
        };
        let required = section("required");
        let optional = section("optional");
        let mut out = Vec::new();
        if let Some(required) = required {
            out.extend(required.iter().map(|(n, s)| Declared::new(n, s, true)));
        }
        if let Some(optional) = optional {
            out.extend(
                optional
                    .iter()
                    .filter(|(n, _)| !required.is_some_and(|r| r.contains_key(*n)))
                    .map(|(n, s)| Declared::new(n, s, false)),
            );
        }
        out
    }

    /// Whether `name` is declared in `required`, `optional` or `hidden`
    /// (`get_input_info` returns a category).
    pub fn has_input(&self, name: &str) -> bool {
        ["required", "optional", "hidden"].iter().any(|section| {
            self.info
                .get("input")
                .and_then(|i| i.get(*section))
                .and_then(Value::as_object)
                .is_some_and(|s| s.contains_key(name))
        })
    }
}

/// One declared input: `(input_type, extra_info)` as `get_input_info`
/// returns them.
#[derive(Clone, Copy)]
pub(crate) struct Declared<'a> {
    pub name: &'a str,
    pub required: bool,
    spec: &'a Value,
}

impl<'a> Declared<'a> {
    fn new(name: &'a str, spec: &'a Value, required: bool) -> Self {
        Declared {
            name,
            required,
            spec,
        }
    }

    /// `input_info[0]`; `None` for a spec that is not a non-empty list,
    /// which no ComfyUI server produces.
    pub fn input_type(&self) -> Option<&'a Value> {
        self.spec.as_array().and_then(|a| a.first())
    }

    /// `input_info[1]` as an object, or `{}`.
    pub fn extra(&self) -> Option<&'a Map<String, Value>> {
        self.spec
            .as_array()
            .and_then(|a| a.get(1))
            .and_then(Value::as_object)
    }

    /// `(input_type, extra_info)`, the `input_config` of error bodies.
    pub fn config(&self) -> Value {
        let extra = self
            .spec
            .as_array()
            .and_then(|a| a.get(1))
            .filter(|e| !e.is_null())
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        Value::Array(vec![
            self.input_type().cloned().unwrap_or(Value::Null),
            extra,
        ])
    }

    /// The combo's options: the list itself in the old form, or
    /// `extra_info["options"]` for `COMBO` (absent means none). `None` when
    /// the input is not a combo, or its options are fetched by the browser
    /// (`remote_combo`), which ComfyUI does not check.
    pub fn combo_options(&self) -> Option<&'a [Value]> {
        match self.input_type()? {
            Value::Array(options) => Some(options),
            Value::String(t) if t == COMBO => {
                let extra = self.extra();
                if extra
                    .and_then(|e| e.get("remote_combo"))
                    .is_some_and(truthy)
                {
                    return None;
                }
                Some(
                    extra
                        .and_then(|e| e.get("options"))
                        .and_then(Value::as_array)
                        .map_or(&[], Vec::as_slice),
                )
            }
            _ => None,
        }
    }

    /// Inputs of the V3 dynamic kinds (autogrow, dynamic combo, ...),
    /// which ComfyUI expands into several prompt inputs before validating.
    pub fn is_dynamic(&self) -> bool {
        self.input_type()
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("COMFY_") && t.ends_with("_V3") && t != MATCH_TYPE)
    }
}

/// Python truthiness of a JSON value.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// comfy_execution/validation.py `validate_node_input(received_type,
/// input_type)` (non-strict): equal, either is `*` or the match type, a
/// list received into `COMBO`, or comma-separated type sets that overlap.
pub(crate) fn validate_node_input(received: &Value, input: &Value) -> bool {
    if json_eq(received, input) {
        return true;
    }
    let is = |v: &Value, t: &str| v.as_str() == Some(t);
    if is(received, ANY) || is(input, ANY) || is(received, MATCH_TYPE) || is(input, MATCH_TYPE) {
        return true;
    }
    if received.is_array() && is(input, COMBO) {
        return true;
    }
    let (Some(received), Some(input)) = (received.as_str(), input.as_str()) else {
        return false;
    };
    let received: Vec<&str> = received.split(',').map(str::trim).collect();
    let input: Vec<&str> = input.split(',').map(str::trim).collect();
    if received.contains(&ANY) || input.contains(&ANY) {
        return true;
    }
    received.iter().any(|t| input.contains(t))
}

/// A built-in node whose `VALIDATE_INPUTS` (V1) or `validate_inputs` (V3)
/// takes one input. ComfyUI then skips the min/max/combo checks of that
/// input and calls the function instead; every one of these checks that the
/// named file exists (`folder_paths.exists_annotated_filepath`).
pub(crate) struct FileValidator {
    /// The input the function takes.
    pub input: &'static str,
    /// The function's `__qualname__`, as quoted when the input is missing.
    pub qualname: &'static str,
    /// `"Invalid {kind} file: {value}"`.
    pub kind: &'static str,
    /// Whether the input's combo choices are the user's own input files
    /// (the gateway substitutes them in every `image_upload` picker), so a
    /// name can be checked against them; otherwise only the backend knows.
    pub choices_are_user_files: bool,
}

/// nodes.py `LoadImage`, `LoadImageMask`, `LoadLatent` and
/// `LoadImageOutput(LoadImage)`; comfy_extras `WebcamCapture(LoadImage)`,
/// `LoadAudio`, `LoadVideo`. Custom nodes' validators are unknown to the
/// gateway: their inputs get the plain checks.
pub(crate) fn file_validator(class_type: &str) -> Option<&'static FileValidator> {
    const fn v(
        input: &'static str,
        qualname: &'static str,
        kind: &'static str,
        user: bool,
    ) -> FileValidator {
        FileValidator {
            input,
            qualname,
            kind,
            choices_are_user_files: user,
        }
    }
    static LOAD_IMAGE: FileValidator = v("image", "LoadImage.VALIDATE_INPUTS", "image", true);
    static LOAD_IMAGE_MASK: FileValidator =
        v("image", "LoadImageMask.VALIDATE_INPUTS", "image", true);
    // Inherits LoadImage's; its picker lists the output folder, fetched
    // by the browser, so there is nothing to check against.
    static LOAD_IMAGE_OUTPUT: FileValidator =
        v("image", "LoadImage.VALIDATE_INPUTS", "image", false);
    static WEBCAM: FileValidator = v("image", "LoadImage.VALIDATE_INPUTS", "image", false);
    static LOAD_LATENT: FileValidator = v("latent", "LoadLatent.VALIDATE_INPUTS", "latent", false);
    static LOAD_AUDIO: FileValidator = v("audio", "LoadAudio.validate_inputs", "audio", false);
    static LOAD_VIDEO: FileValidator = v("file", "LoadVideo.validate_inputs", "video", false);
    match class_type {
        "LoadImage" => Some(&LOAD_IMAGE),
        "LoadImageMask" => Some(&LOAD_IMAGE_MASK),
        "LoadImageOutput" => Some(&LOAD_IMAGE_OUTPUT),
        "WebcamCapture" => Some(&WEBCAM),
        "LoadLatent" => Some(&LOAD_LATENT),
        "LoadAudio" => Some(&LOAD_AUDIO),
        "LoadVideo" => Some(&LOAD_VIDEO),
        _ => None,
    }
}

/// What can be known of `folder_paths.exists_annotated_filepath(name)`
/// from the user's file list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileCheck {
    Exists,
    Missing,
    /// Another folder (`[output]`, `[temp]`), a subfolder, or no list to
    /// check against: the backend decides.
    Unknown,
}

/// `name` may carry an annotation (`"x.png [output]"`); without one, or
/// with `[input]`, it names a file in the input folder. A plain name (no
/// folder part) is checked against `choices`; anything else is left to the
/// backend.
pub(crate) fn check_input_file(name: &str, choices: Option<&[Value]>) -> FileCheck {
    let chars: Vec<char> = name.chars().collect();
    let strip = |n: usize| {
        chars[..chars.len().saturating_sub(n)]
            .iter()
            .collect::<String>()
    };
    let plain = if name.ends_with("[output]") || name.ends_with("[temp]") {
        return FileCheck::Unknown;
    } else if name.ends_with("[input]") {
        strip(8)
    } else {
        name.to_string()
    };
    let Some(choices) = choices else {
        return FileCheck::Unknown;
    };
    if plain.is_empty() || plain == "." || plain == ".." || plain.contains(['/', '\\']) {
        return FileCheck::Unknown;
    }
    if choices.iter().any(|c| c.as_str() == Some(plain.as_str())) {
        FileCheck::Exists
    } else {
        FileCheck::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn link_types_follow_validate_node_input() {
        let ok = |a: Value, b: Value| validate_node_input(&a, &b);
        assert!(ok(json!("IMAGE"), json!("IMAGE")));
        assert!(!ok(json!("LATENT"), json!("IMAGE")));
        assert!(ok(json!("LATENT"), json!("*")));
        assert!(ok(json!("*"), json!("MODEL")));
        assert!(ok(json!("IMAGE"), json!("MASK, IMAGE")));
        assert!(ok(json!("IMAGE,MASK"), json!("MASK")));
        assert!(ok(json!("A,*"), json!("B")));
        assert!(!ok(json!("A,B"), json!("C,D")));
        assert!(ok(json!(["a", "b"]), json!("COMBO")));
        assert!(ok(json!(["a", "b"]), json!(["a", "b"])));
        assert!(!ok(json!(["a", "b"]), json!(["a"])));
        assert!(!ok(json!("STRING"), json!(["a"])));
        assert!(ok(json!("COMFY_MATCHTYPE_V3"), json!("IMAGE")));
    }

    #[test]
    fn file_checks_leave_other_folders_to_the_backend() {
        let choices = [json!("a.png"), json!("b c.png")];
        let c = Some(&choices[..]);
        assert_eq!(check_input_file("a.png", c), FileCheck::Exists);
        assert_eq!(check_input_file("b c.png [input]", c), FileCheck::Exists);
        assert_eq!(check_input_file("z.png", c), FileCheck::Missing);
        assert_eq!(check_input_file("z.png [input]", c), FileCheck::Missing);
        assert_eq!(check_input_file("z.png [output]", c), FileCheck::Unknown);
        assert_eq!(check_input_file("z.png [temp]", c), FileCheck::Unknown);
        assert_eq!(check_input_file("pasted/z.png", c), FileCheck::Unknown);
        assert_eq!(check_input_file("", c), FileCheck::Unknown);
        assert_eq!(check_input_file("z.png", None), FileCheck::Unknown);
    }

    #[test]
    fn declared_inputs_are_required_then_optional() {
        let info = json!({"input": {
            "required": {"a": ["INT"], "b": [["x", "y"], {"default": "x"}]},
            "optional": {"a": ["FLOAT"], "c": ["COMBO", {"options": ["p"]}]},
            "hidden": {"h": "PROMPT"},
        }});
        let catalogue: Map<String, Value> = [("N".to_string(), info)].into_iter().collect();
        let node = NodeClass::lookup(&catalogue, "N").unwrap();
        let inputs = node.declared_inputs();
        let names: Vec<_> = inputs.iter().map(|d| (d.name, d.required)).collect();
        assert_eq!(names, [("a", true), ("b", true), ("c", false)]);
        assert_eq!(inputs[0].config(), json!(["INT", {}]));
        assert_eq!(
            inputs[1].combo_options().unwrap(),
            &[json!("x"), json!("y")]
        );
        assert_eq!(inputs[2].combo_options().unwrap(), &[json!("p")]);
        assert!(inputs[0].combo_options().is_none());
        assert!(node.has_input("h"));
    }
}
