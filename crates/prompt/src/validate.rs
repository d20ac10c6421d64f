//! ComfyUI's `validate_prompt` and `validate_inputs` (execution.py), ported
//! step for step so that the same prompt gets the same answer, down to the
//! order of `node_errors` and the quirks of `dependent_outputs`.
//!
//! `validate_inputs` recurses into each linked node; here the recursion is
//! an explicit stack of [`Frame`]s, so an arbitrarily deep graph cannot
//! overflow the thread's stack. Python exceptions raised while validating a
//! node are [`PyErr`]s: caught by the linking node (as
//! `exception_during_inner_validation`, blamed on the linked node) or, for
//! an output node, by `validate_prompt` (`exception_during_validation`).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::errors::{self, PromptError};
use super::py::{Py, PyErr, PyInt, repr_json, str_json, to_float, to_int};
use super::python::{Signature, ValidatorCall, Validators, built_in_signature};
use super::types::{
    Declared, FileCheck, FileValidator, NodeClass, check_input_file, file_validator, truthy,
    validate_node_input,
};

/// How many links deep validation follows. ComfyUI recurses in Python and
/// meets Python's recursion limit (1000 frames, some taken by the server)
/// at a depth of that order, raising `RecursionError`, which the linking
/// node catches like any exception. The gateway raises the same error at
/// this depth; it also bounds the size of a cycle's error (every node in
/// the cycle carries the whole path).
pub const MAX_DEPTH: usize = 500;

/// The most `output nodes × nodes` a prompt may have. ComfyUI appends every
/// failed output to every failed node's `dependent_outputs`, so the error
/// body grows with this product; real workflows are far below it.
pub const MAX_OUTPUTS_TIMES_NODES: usize = 1_000_000;

/// An accepted prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The output nodes to run: ComfyUI's `outputs_to_execute`, here in
    /// prompt order (ComfyUI's comes from a `set`).
    pub outputs_to_execute: Vec<String>,
    /// Errors of the outputs that failed while others passed; ComfyUI
    /// returns them with the 200 and the frontend marks those nodes.
    pub node_errors: Map<String, Value>,
}

/// Validates `prompt` (the API-format graph: node id → `{class_type,
/// inputs, _meta}`) against `catalogue` (class → NodeInfo, as served at
/// `/object_info`), as ComfyUI's `validate_prompt` does.
///
/// `partial_execution_targets` restricts the outputs to those node ids;
/// targets that are not output nodes are ignored, so a list of only those,
/// or an empty list, leaves no outputs (`prompt_no_outputs`).
///
/// The catalogue should be the one the user sees: with their own input
/// files as the `LoadImage` choices, a file name that is not theirs is
/// rejected as ComfyUI rejects a missing file.
pub fn validate(
    prompt: &Value,
    partial_execution_targets: Option<&[String]>,
    catalogue: &Map<String, Value>,
) -> Result<Validated, PromptError> {
    validate_in_room(
        prompt,
        partial_execution_targets,
        catalogue,
        &RoomCaps::default(),
    )
}

/// [`validate`], with the room's own bounds on numeric inputs on top of
/// the catalogue's (see [`RoomCaps`]), and `filename_prefix` kept inside
/// the output folder: what ComfyUI would only refuse once a GPU ran the
/// job is refused before it is queued, in the shape of ComfyUI's own
/// input errors so the frontend marks the input.
pub fn validate_in_room(
    prompt: &Value,
    partial_execution_targets: Option<&[String]>,
    catalogue: &Map<String, Value>,
    caps: &RoomCaps,
) -> Result<Validated, PromptError> {
    validate_with(
        prompt,
        partial_execution_targets,
        catalogue,
        caps,
        Validators::default(),
    )
    .result
}

/// What [`validate_with`] concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// ComfyUI's answer, taking every call in `unanswered` as passing.
    pub result: Result<Validated, PromptError>,
    /// Validation functions only a backend can run, whose answers were
    /// not among the verdicts: the same calls on every run with the same
    /// prompt and catalogue, so a run with their answers is exact.
    pub unanswered: Vec<ValidatorCall>,
}

/// [`validate_in_room`], knowing what backends said of nodes' own
/// validation functions (see [`crate::python`]).
pub fn validate_with(
    prompt: &Value,
    partial_execution_targets: Option<&[String]>,
    catalogue: &Map<String, Value>,
    caps: &RoomCaps,
    validators: Validators<'_>,
) -> Checked {
    let mut unanswered = Vec::new();
    let result = check(
        prompt,
        partial_execution_targets,
        catalogue,
        caps,
        validators,
        &mut unanswered,
    );
    Checked { result, unanswered }
}

fn check(
    prompt: &Value,
    partial_execution_targets: Option<&[String]>,
    catalogue: &Map<String, Value>,
    caps: &RoomCaps,
    validators: Validators<'_>,
    unanswered: &mut Vec<ValidatorCall>,
) -> Result<Validated, PromptError> {
    let Value::Object(nodes) = prompt else {
        return Err(errors::invalid_prompt_error(format!(
            "The prompt must be an object of nodes keyed by node id, not {}",
            kind_of(prompt)
        )));
    };

    let mut outputs: Vec<&str> = Vec::new();
    for (id, node) in nodes {
        let Value::Object(node) = node else {
            return Err(errors::invalid_prompt_error(format!(
                "Node '#{id}' must be an object, not {}",
                kind_of(node)
            )));
        };
        let title = |default: &Value| -> Result<Value, PromptError> {
            match node.get("_meta") {
                None => Ok(default.clone()),
                Some(Value::Object(meta)) => Ok(meta.get("title").unwrap_or(default).clone()),
                Some(other) => Err(errors::invalid_prompt_error(format!(
                    "Node '#{id}' has a _meta that is {}, not an object",
                    kind_of(other)
                ))),
            }
        };
        let Some(class_type) = node.get("class_type") else {
            let title = title(&Value::Null)?;
            let shown = truthy(&title).then(|| str_json(&title));
            return Err(errors::missing_class_type(id, &title, shown));
        };
        if class_type.is_array() || class_type.is_object() {
            return Err(errors::invalid_prompt_error(format!(
                "Node '#{id}' has a class_type that is {}, not a string",
                kind_of(class_type)
            )));
        }
        let Some(class) = class_type
            .as_str()
            .and_then(|c| NodeClass::lookup(catalogue, c))
        else {
            let title = title(class_type)?;
            return Err(errors::missing_node_type(
                id,
                class_type,
                &title,
                &str_json(&title),
            ));
        };
        if class.is_output_node()
            && partial_execution_targets.is_none_or(|t| t.iter().any(|x| x == id))
        {
            outputs.push(id);
        }
    }

    if outputs.is_empty() {
        return Err(errors::prompt_no_outputs());
    }
    if outputs.len().saturating_mul(nodes.len()) > MAX_OUTPUTS_TIMES_NODES {
        return Err(errors::invalid_prompt_error(format!(
            "The prompt is too large to validate: {} nodes, {} of them outputs",
            nodes.len(),
            outputs.len()
        )));
    }

    let mut ctx = Ctx {
        prompt: nodes,
        catalogue,
        caps,
        validators,
        unanswered,
        validated: Validations::default(),
    };
    let mut good = Vec::new();
    let mut failed: Vec<Vec<Value>> = Vec::new();
    let mut node_errors = Map::new();
    for &o in &outputs {
        let (valid, reasons) = match ctx.validate_output(o) {
            Ok(entry) => (entry.valid, entry.reasons),
            Err(ex) => {
                let reasons = vec![errors::exception_during_validation(&ex)];
                ctx.validated.insert(o, Entry::failed(reasons.clone()));
                (false, reasons)
            }
        };
        if valid {
            good.push(o.to_string());
            continue;
        }
        failed.push(reasons);
        // Every failed node with reasons gets this output appended, even one
        // found while validating an earlier output and not upstream of this
        // one: ComfyUI walks the whole `validated` dict each time.
        for (node_id, entry) in ctx.validated.iter() {
            if entry.valid || entry.reasons.is_empty() {
                continue;
            }
            let record = node_errors.entry(node_id.to_string()).or_insert_with(|| {
                json!({
                    "errors": entry.reasons,
                    "dependent_outputs": [],
                    "class_type": ctx.class_type_of(node_id),
                })
            });
            if let Some(Value::Array(outputs)) = record.get_mut("dependent_outputs") {
                outputs.push(Value::String(o.to_string()));
            }
        }
    }

    if good.is_empty() {
        let details = failed
            .iter()
            .flatten()
            .map(|r| format!("{}: {}", str_json(&r["message"]), str_json(&r["details"])))
            .collect::<Vec<_>>()
            .join("\n");
        return Err(errors::prompt_outputs_failed_validation(
            &details,
            node_errors,
        ));
    }
    Ok(Validated {
        outputs_to_execute: good,
        node_errors,
    })
}

/// How a value is named in `invalid_prompt` details.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// One node's result: `(valid, reasons)` of ComfyUI's `validated` dict.
#[derive(Debug, Clone)]
struct Entry {
    valid: bool,
    reasons: Vec<Value>,
}

impl Entry {
    fn failed(reasons: Vec<Value>) -> Self {
        Entry {
            valid: false,
            reasons,
        }
    }
}

/// The `validated` dict: insertion-ordered, and re-assigning a key keeps
/// its place, as in Python.
#[derive(Default)]
struct Validations {
    order: Vec<String>,
    entries: HashMap<String, Entry>,
}

impl Validations {
    fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    fn insert(&mut self, id: &str, entry: Entry) {
        if self.entries.insert(id.to_string(), entry).is_none() {
            self.order.push(id.to_string());
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.order.iter().map(|id| (id.as_str(), &self.entries[id]))
    }
}

struct Ctx<'a, 'v> {
    prompt: &'a Map<String, Value>,
    catalogue: &'a Map<String, Value>,
    caps: &'a RoomCaps,
    validators: Validators<'v>,
    unanswered: &'v mut Vec<ValidatorCall>,
    validated: Validations,
}

/// A room's own upper bounds on numeric inputs, by input name, on top of
/// the catalogue's: a workshop's GPUs are shared, and a `steps` of 10,000
/// or a 16384-pixel latent would hold one for the whole session. A cap
/// applies to that input of every node, whether the number is given
/// there or comes through primitive nodes (`PrimitiveInt`, …), and even
/// where a custom node's `VALIDATE_INPUTS` switches ComfyUI's own range
/// checks off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomCaps {
    by_input: std::collections::BTreeMap<String, f64>,
}

impl RoomCaps {
    pub fn new(caps: impl IntoIterator<Item = (String, f64)>) -> Self {
        Self {
            by_input: caps.into_iter().collect(),
        }
    }

    fn cap(&self, input: &str) -> Option<f64> {
        self.by_input.get(input).copied()
    }
}

/// What validating one node produced so far.
enum Step<'a> {
    /// Validate this linked node next, then resume the current one.
    Recurse(&'a str),
    /// The node is finished, or raised.
    Done(Result<Entry, PyErr>),
}

impl<'a> Ctx<'a, '_> {
    /// The class of a node that passed the first loop of `validate`.
    fn class_type_of(&self, id: &str) -> &'a str {
        self.prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `validate_inputs(prompt_id, prompt, output, validated)`, with the
    /// recursion unrolled.
    fn validate_output(&mut self, output: &'a str) -> Result<Entry, PyErr> {
        let mut visiting: Vec<&'a str> = Vec::new();
        let mut stack: Vec<Frame<'a>> = Vec::new();
        match self.enter(output, &visiting) {
            Ok(frame) => stack.push(frame),
            Err(result) => return result,
        }
        let mut incoming = None;
        loop {
            let Some(top) = stack.last_mut() else {
                // The loop returns when the output's own frame finishes.
                return Ok(Entry::failed(Vec::new()));
            };
            if let Some(result) = incoming.take() {
                top.resume(result, &mut self.validated);
            }
            match top.advance(self) {
                Step::Recurse(child) => {
                    visiting.push(top.id);
                    match self.enter(child, &visiting) {
                        Ok(frame) => stack.push(frame),
                        Err(result) => {
                            visiting.pop();
                            incoming = Some(result);
                        }
                    }
                }
                Step::Done(result) => {
                    stack.pop();
                    if stack.is_empty() {
                        return result;
                    }
                    visiting.pop();
                    incoming = Some(result);
                }
            }
        }
    }

    /// The start of `validate_inputs`: an already validated node, a cycle,
    /// or a new frame. `Err` carries a result that needs no frame.
    fn enter(
        &mut self,
        id: &'a str,
        visiting: &[&'a str],
    ) -> Result<Frame<'a>, Result<Entry, PyErr>> {
        if let Some(entry) = self.validated.get(id) {
            return Err(Ok(entry.clone()));
        }
        if let Some(start) = visiting.iter().position(|v| *v == id) {
            let mut path_nodes: Vec<&str> = visiting[start..].to_vec();
            path_nodes.push(id);
            let mut cycle_nodes: Vec<String> = Vec::new();
            for n in &path_nodes {
                if !cycle_nodes.iter().any(|c| c == n) {
                    cycle_nodes.push(n.to_string());
                }
            }
            let path = path_nodes
                .iter()
                .map(|n| format!("{n} ({})", self.class_type_of(n)))
                .collect::<Vec<_>>()
                .join(" -> ");
            for n in &cycle_nodes {
                let error = errors::dependency_cycle(n, &path, &cycle_nodes);
                self.validated.insert(n, Entry::failed(vec![error]));
            }
            return Err(Ok(self
                .validated
                .get(id)
                .cloned()
                .unwrap_or(Entry::failed(Vec::new()))));
        }

        if visiting.len() >= MAX_DEPTH {
            return Err(Err(PyErr::new(
                "RecursionError",
                "maximum recursion depth exceeded",
            )));
        }
        let Some(inputs) = self.prompt.get(id).and_then(|node| node.get("inputs")) else {
            return Err(Err(PyErr::key_error(&Py::Str("inputs".into()))));
        };
        let class_type = self.class_type_of(id);
        let Some(class) = NodeClass::lookup(self.catalogue, class_type) else {
            // `nodes.NODE_CLASS_MAPPINGS[class_type]`; every class was found
            // before validation started, so this does not happen.
            return Err(Err(PyErr::key_error(&Py::Str(class_type.into()))));
        };
        Ok(Frame {
            id,
            class,
            inputs,
            declared: class.declared_inputs(),
            next: 0,
            errors: Vec::new(),
            valid: true,
            pending: None,
            validator: self.validator_of(class_type, class),
            values: HashMap::new(),
            received_types: Map::new(),
        })
    }

    /// Who runs the validation function of `class_type`, if it has one.
    fn validator_of(&self, class_type: &str, class: NodeClass<'_>) -> Validator {
        if let Some(files) = file_validator(class_type) {
            return Validator::Files(files);
        }
        let described = self.validators.signatures.and_then(|s| s.get(class_type));
        match described {
            Some(Some(signature)) => Validator::Python(signature.clone()),
            Some(None) => Validator::None,
            None => match built_in_signature(class_type) {
                Some(signature) => Validator::Python(signature),
                None if class.is_custom() => Validator::Unknown,
                None => Validator::None,
            },
        }
    }
}

/// A link being followed: what the `except` around the recursive call needs.
struct Pending<'a> {
    input: &'a str,
    config: Value,
    link: &'a Value,
    source: &'a str,
}

/// What runs a node's validation function, and so which of ComfyUI's
/// built-in checks it switches off.
enum Validator {
    None,
    /// A file loader's, run here against the participant's own files.
    Files(&'static FileValidator),
    /// Python code, with this signature, that a backend runs.
    Python(Signature),
    /// A custom node's, which no backend described: whatever it could
    /// switch off is left to the backend.
    Unknown,
}

impl Validator {
    /// ComfyUI skips the type check of linked inputs.
    fn skips_link_types(&self) -> bool {
        match self {
            Validator::Python(s) => s.takes_input_types(),
            Validator::Unknown => true,
            Validator::None | Validator::Files(_) => false,
        }
    }

    /// ComfyUI skips its range and choice checks of input `x`.
    fn skips_value_checks(&self, x: &str) -> bool {
        match self {
            Validator::Files(f) => f.input == x,
            Validator::Python(s) => s.takes(x),
            Validator::Unknown => true,
            Validator::None => false,
        }
    }
}

/// One `validate_inputs` call in progress.
struct Frame<'a> {
    id: &'a str,
    class: NodeClass<'a>,
    inputs: &'a Value,
    declared: Vec<Declared<'a>>,
    /// The next declared input to look at.
    next: usize,
    errors: Vec<Value>,
    valid: bool,
    pending: Option<Pending<'a>>,
    validator: Validator,
    /// `inputs[x]` after ComfyUI rewrote it (`__value__` unwrapped,
    /// converted to INT/FLOAT/STRING/BOOLEAN), for the custom validator.
    values: HashMap<&'a str, Py>,
    /// `received_types`: the type each linked input receives.
    received_types: Map<String, Value>,
}

impl<'a> Frame<'a> {
    /// The linked node's result arrived (the code after `await
    /// validate_inputs(...)`, or its `except`).
    fn resume(&mut self, result: Result<Entry, PyErr>, validated: &mut Validations) {
        let Some(p) = self.pending.take() else {
            return;
        };
        match result {
            Ok(entry) => {
                if !entry.valid {
                    self.valid = false;
                }
            }
            Err(ex) => {
                self.valid = false;
                let reason =
                    errors::exception_during_inner_validation(p.input, &p.config, &ex, p.link);
                validated.insert(p.source, Entry::failed(vec![reason]));
            }
        }
    }

    /// Runs the input loop until a link must be followed or the node is done.
    fn advance(&mut self, ctx: &mut Ctx<'a, '_>) -> Step<'a> {
        while let Some(d) = self.declared.get(self.next).copied() {
            self.next += 1;
            match self.check_input(d, ctx) {
                Ok(None) => {}
                Ok(Some(child)) => return Step::Recurse(child),
                Err(ex) => return Step::Done(Err(ex)),
            }
        }
        let validated = match self.validator {
            Validator::Files(files) => self.file_validation(files),
            Validator::Python(_) => self.python_validation(ctx),
            Validator::None | Validator::Unknown => Ok(()),
        };
        if let Err(ex) = validated {
            return Step::Done(Err(ex));
        }
        let prior = ctx.validated.get(self.id).cloned().unwrap_or(Entry {
            valid: true,
            reasons: Vec::new(),
        });
        let mut reasons = prior.reasons.clone();
        reasons.extend(
            self.errors
                .iter()
                .filter(|e| !prior.reasons.contains(e))
                .cloned(),
        );
        let entry = Entry {
            valid: prior.valid && self.valid && self.errors.is_empty(),
            reasons,
        };
        ctx.validated.insert(self.id, entry.clone());
        Step::Done(Ok(entry))
    }

    /// One turn of `for x in valid_inputs`. `Ok(Some(id))` asks for the
    /// linked node `id` to be validated.
    fn check_input(
        &mut self,
        d: Declared<'a>,
        ctx: &Ctx<'a, '_>,
    ) -> Result<Option<&'a str>, PyErr> {
        let x = d.name;
        let Some(input_type) = d.input_type() else {
            return Ok(None);
        };
        if d.is_dynamic() {
            // Expanded by ComfyUI into inputs the catalogue does not list.
            return Ok(None);
        }
        let Some(val) = get_input(self.inputs, x)? else {
            if d.required {
                self.errors.push(errors::required_input_missing(x));
            }
            return Ok(None);
        };
        let config = d.config();

        if let Value::Array(link) = val {
            if link.len() != 2 {
                self.errors.push(errors::bad_linked_input(x, &config, val));
                return Ok(None);
            }
            let source = lookup_node(ctx.prompt, &link[0])?;
            let source_class = NodeClass::lookup(ctx.catalogue, ctx.class_type_of(source));
            let return_types = source_class.map_or(&[][..], |c| c.return_types());
            let received = index_tuple(return_types, &link[1])?;
            self.received_types.insert(x.to_string(), received.clone());
            // `VALIDATE_INPUTS(input_types)` may accept any type.
            if !self.validator.skips_link_types() && !validate_node_input(received, input_type) {
                self.errors.push(errors::return_type_mismatch(
                    x,
                    &config,
                    received,
                    &str_json(input_type),
                    &str_json(received),
                    val,
                ));
                return Ok(None);
            }
            if ctx.caps.cap(x).is_some() {
                if let Some(constant) = primitive_value(ctx.prompt, source) {
                    if let Some(error) = over_cap(x, &config, &Py::from(constant), ctx.caps)? {
                        self.errors.push(error);
                        return Ok(None);
                    }
                }
            }
            self.pending = Some(Pending {
                input: x,
                config,
                link: val,
                source,
            });
            return Ok(Some(source));
        }

        let mut value = Py::from(val);
        if let Py::Dict(entries) = &value {
            if let Some((_, inner)) = entries.iter().find(|(k, _)| k == "__value__") {
                value = inner.clone();
            }
        }
        let converted = match input_type.as_str() {
            Some("INT") => to_int(&value).map(Py::Int),
            Some("FLOAT") => to_float(&value).map(Py::Float),
            Some("STRING") => Ok(Py::Str(value.str())),
            Some("BOOLEAN") => Ok(Py::Bool(py_truthy(&value))),
            _ => Ok(value.clone()),
        };
        self.values
            .insert(x, converted.clone().unwrap_or_else(|_| value.clone()));
        let value = match converted {
            Ok(v) => v,
            Err(ex) => {
                self.errors.push(errors::invalid_input_type(
                    x,
                    input_type.as_str().unwrap_or_default(),
                    &config,
                    &value.to_json(),
                    &value.str(),
                    &ex,
                ));
                return Ok(None);
            }
        };

        if self.validator.skips_value_checks(x) {
            // VALIDATE_INPUTS takes this input (or, for a custom node no
            // backend described, may take it): ComfyUI skips the checks
            // below, and the validator makes any it makes. The room's own
            // are ours, and still apply.
            if let Some(error) = room_check(x, &config, &value, ctx.caps)? {
                self.errors.push(error);
            }
            return Ok(None);
        }
        let extra = d.extra();
        if let Some(min) = extra.and_then(|e| e.get("min")) {
            let min = Py::from(min);
            if value.compare("<", &min)? {
                self.errors.push(errors::value_smaller_than_min(
                    x,
                    &config,
                    &value.to_json(),
                    &value.str(),
                    &min.str(),
                ));
                return Ok(None);
            }
        }
        if let Some(max) = extra.and_then(|e| e.get("max")) {
            let max = Py::from(max);
            if value.compare(">", &max)? {
                self.errors.push(errors::value_bigger_than_max(
                    x,
                    &config,
                    &value.to_json(),
                    &value.str(),
                    &max.str(),
                ));
                return Ok(None);
            }
        }
        if let Some(error) = room_check(x, &config, &value, ctx.caps)? {
            self.errors.push(error);
            return Ok(None);
        }
        if let Some(options) = d.combo_options() {
            let choices: Vec<Py> = options.iter().map(Py::from).collect();
            let multiselect = extra.and_then(|e| e.get("multiselect")).is_some_and(truthy);
            let invalid: Vec<&Py> = match &value {
                Py::List(items) if multiselect => {
                    items.iter().filter(|v| !v.in_list(&choices)).collect()
                }
                v if !v.in_list(&choices) => vec![v],
                _ => Vec::new(),
            };
            if !invalid.is_empty() {
                // ComfyUI does not send back gigantic lists.
                let (config, list) = if options.len() > 20 {
                    (None, format!("(list of length {})", options.len()))
                } else {
                    (Some(&config), repr_json(&Value::Array(options.to_vec())))
                };
                let invalid = invalid
                    .iter()
                    .map(|v| v.repr())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.errors.push(errors::value_not_in_list(
                    x,
                    config,
                    &value.to_json(),
                    &invalid,
                    &list,
                ));
            }
        }
        Ok(None)
    }

    /// A validation function only a backend can run: its answer if the
    /// verdicts have it, else the call, to be asked (and taken as passing
    /// meanwhile: the backend that runs the job decides).
    ///
    /// Some calls are never asked, and left to the backend that runs the
    /// job: those given a file picker's value (a participant's files reach
    /// a backend only with their job, so a check that the file exists
    /// would fail there now), and those given a number JSON cannot carry
    /// as Python holds it (NaN, infinities, integers past 64 bits).
    fn python_validation(&mut self, ctx: &mut Ctx<'a, '_>) -> Result<(), PyErr> {
        if let Some(verdict) = ctx.validators.verdicts.and_then(|v| v.get(self.id)) {
            if let Some(raised) = verdict.raised() {
                return Err(raised);
            }
            if let super::python::Verdict::Errors(errors) = verdict {
                self.errors.extend(errors.iter().cloned());
            }
            return Ok(());
        }
        let Validator::Python(signature) = &self.validator else {
            return Ok(());
        };
        let takes_a_file = self.declared.iter().any(|d| {
            signature.takes(d.name)
                && d.extra().is_some_and(|extra| {
                    FILE_PICKERS
                        .iter()
                        .any(|k| extra.get(*k).is_some_and(truthy))
                })
        });
        let unsendable = self
            .values
            .iter()
            .any(|(name, v)| signature.takes(name) && !survives_json(v));
        if takes_a_file || unsendable {
            return Ok(());
        }
        let inputs = match self.inputs {
            Value::Object(inputs) => Value::Object(
                inputs
                    .iter()
                    .map(|(name, raw)| {
                        let value = self
                            .values
                            .get(name.as_str())
                            .map_or_else(|| raw.clone(), Py::to_json);
                        (name.clone(), value)
                    })
                    .collect(),
            ),
            other => other.clone(),
        };
        ctx.unanswered.push(ValidatorCall {
            node_id: self.id.to_string(),
            class_type: ctx.class_type_of(self.id).to_string(),
            inputs,
            received_types: self.received_types.clone(),
        });
        Ok(())
    }

    /// The built-in `VALIDATE_INPUTS` of the file loaders: the value must
    /// name an existing file (`folder_paths.exists_annotated_filepath`).
    fn file_validation(&mut self, validator: &'static FileValidator) -> Result<(), PyErr> {
        let x = validator.input;
        let missing = || {
            PyErr::new(
                "TypeError",
                format!(
                    "{}() missing 1 required positional argument: '{x}'",
                    validator.qualname
                ),
            )
        };
        // get_input_data(): declared inputs present in the prompt, links as None.
        let raw = match self.inputs {
            Value::Object(inputs) => inputs.get(x).filter(|_| self.class.has_input(x)),
            Value::Array(a) if a.is_empty() => None,
            Value::String(s) if s.is_empty() => None,
            Value::Array(_) => {
                return Err(PyErr::new(
                    "TypeError",
                    "list indices must be integers or slices, not str",
                ));
            }
            Value::String(_) => {
                return Err(PyErr::new(
                    "TypeError",
                    "string indices must be integers, not 'str'",
                ));
            }
            other => {
                return Err(PyErr::new(
                    "TypeError",
                    format!("'{}' object is not iterable", Py::from(other).type_name()),
                ));
            }
        };
        let Some(raw) = raw else {
            return Err(missing());
        };
        let value = if is_link(raw) {
            Py::None
        } else {
            self.values.get(x).cloned().unwrap_or_else(|| Py::from(raw))
        };
        let Py::Str(name) = &value else {
            return Err(PyErr::new(
                "AttributeError",
                format!("'{}' object has no attribute 'endswith'", value.type_name()),
            ));
        };
        let choices = if validator.choices_are_user_files {
            self.declared
                .iter()
                .find(|d| d.name == x)
                .and_then(|d| d.combo_options())
        } else {
            None
        };
        if check_input_file(name, choices) == FileCheck::Missing {
            let reason = format!("Invalid {} file: {name}", validator.kind);
            self.errors
                .push(errors::custom_validation_failed(x, &reason));
        }
        Ok(())
    }
}

/// `x in inputs` then `inputs[x]`, for whatever `inputs` is.
fn get_input<'v>(inputs: &'v Value, name: &str) -> Result<Option<&'v Value>, PyErr> {
    match inputs {
        Value::Object(m) => Ok(m.get(name)),
        Value::Array(a) => {
            if a.iter().any(|e| e.as_str() == Some(name)) {
                Err(PyErr::new(
                    "TypeError",
                    "list indices must be integers or slices, not str",
                ))
            } else {
                Ok(None)
            }
        }
        Value::String(s) => {
            if s.contains(name) {
                Err(PyErr::new(
                    "TypeError",
                    "string indices must be integers, not 'str'",
                ))
            } else {
                Ok(None)
            }
        }
        other => Err(PyErr::new(
            "TypeError",
            format!(
                "argument of type '{}' is not iterable",
                Py::from(other).type_name()
            ),
        )),
    }
}

/// `prompt[o_id]`: the node id a link names.
fn lookup_node<'p>(prompt: &'p Map<String, Value>, key: &Value) -> Result<&'p str, PyErr> {
    match key {
        Value::String(s) => match prompt.get_key_value(s) {
            Some((id, _)) => Ok(id.as_str()),
            None => Err(PyErr::key_error(&Py::Str(s.clone()))),
        },
        Value::Array(_) | Value::Object(_) => Err(PyErr::new(
            "TypeError",
            format!("unhashable type: '{}'", Py::from(key).type_name()),
        )),
        // Keys are strings; no number, bool or None equals one.
        other => Err(PyErr::key_error(&Py::from(other))),
    }
}

/// `RETURN_TYPES[slot]`, with Python's indexing rules for a tuple.
fn index_tuple<'t>(items: &'t [Value], slot: &Value) -> Result<&'t Value, PyErr> {
    let n = match Py::from(slot) {
        Py::Bool(b) => i128::from(b),
        Py::Int(PyInt::Small(n)) => n,
        Py::Int(PyInt::Big { .. }) => i128::MAX,
        other => {
            return Err(PyErr::new(
                "TypeError",
                format!(
                    "tuple indices must be integers or slices, not {}",
                    other.type_name()
                ),
            ));
        }
    };
    if n < i128::from(i64::MIN) || n > i128::from(i64::MAX) {
        return Err(PyErr::new(
            "IndexError",
            "cannot fit 'int' into an index-sized integer",
        ));
    }
    let len = items.len() as i128;
    let i = if n < 0 { n + len } else { n };
    if i < 0 || i >= len {
        return Err(PyErr::new("IndexError", "tuple index out of range"));
    }
    Ok(&items[i as usize])
}

/// The room's own checks of input `x` holding `value`: its cap, and a
/// `filename_prefix` that would leave the output folder (refused as
/// ComfyUI's SaveImage would refuse it, but before a GPU is taken).
fn room_check(
    x: &str,
    config: &Value,
    value: &Py,
    caps: &RoomCaps,
) -> Result<Option<Value>, PyErr> {
    if let Some(error) = over_cap(x, config, value, caps)? {
        return Ok(Some(error));
    }
    let (true, Py::Str(prefix)) = (x == "filename_prefix", value) else {
        return Ok(None);
    };
    use comfyume_domain::PathError;
    let refused = match comfyume_domain::SafeRelPath::parse(prefix) {
        Ok(_) => return Ok(None),
        // ComfyUI's words when SaveImage refuses it at run time.
        Err(PathError::Absolute | PathError::Escapes) => {
            "Saving image outside the output folder is not allowed."
        }
        Err(PathError::TooLong) => "The file name prefix is too long.",
        Err(PathError::BadCharacter) => "The file name prefix holds a character no file name can.",
    };
    Ok(Some(errors::custom_validation_failed(x, refused)))
}

/// The room cap's error for input `x` holding `value`, if it is a number
/// over the cap (in ComfyUI's shape for its own maximums).
fn over_cap(x: &str, config: &Value, value: &Py, caps: &RoomCaps) -> Result<Option<Value>, PyErr> {
    let Some(cap) = caps
        .cap(x)
        .filter(|_| matches!(value, Py::Int(_) | Py::Float(_)))
    else {
        return Ok(None);
    };
    // Shown as ComfyUI shows its own limits: 150, not 150.0.
    let cap = if cap.fract() == 0.0 && cap.abs() < 9.0e15 {
        Value::from(cap as i64)
    } else {
        Value::from(cap)
    };
    let cap = Py::from(&cap);
    Ok(value.compare(">", &cap)?.then(|| {
        errors::value_bigger_than_max(x, config, &value.to_json(), &value.str(), &cap.str())
    }))
}

/// Nodes whose output is their `value` input, unchanged: the frontend's
/// widget-to-input conversions and ComfyUI's primitive nodes. A room cap
/// follows a link through them to the number behind it.
const PRIMITIVES: [&str; 2] = ["PrimitiveInt", "PrimitiveFloat"];

/// The number a chain of primitive nodes starting at `id` outputs, if it
/// ends in one (a value computed by any other node is not known before it
/// runs).
fn primitive_value<'a>(prompt: &'a Map<String, Value>, mut id: &'a str) -> Option<&'a Value> {
    for _ in 0..MAX_DEPTH {
        let node = prompt.get(id)?;
        let class = node.get("class_type")?.as_str()?;
        if !PRIMITIVES.contains(&class) {
            return None;
        }
        match node.get("inputs")?.get("value")? {
            number @ Value::Number(_) => return Some(number),
            Value::Array(link) if link.len() == 2 => id = link[0].as_str()?,
            _ => return None,
        }
    }
    None
}

/// The options that make a combo input a picker of the user's files.
const FILE_PICKERS: [&str; 4] = ["image_upload", "video_upload", "audio_upload", "upload"];

/// Whether `v` reaches Python as itself through JSON.
fn survives_json(v: &Py) -> bool {
    match v {
        Py::Float(f) => f.is_finite(),
        Py::Int(PyInt::Small(n)) => i64::try_from(*n).is_ok() || u64::try_from(*n).is_ok(),
        Py::Int(PyInt::Big { .. }) => false,
        Py::List(items) => items.iter().all(survives_json),
        Py::Dict(entries) => entries.iter().all(|(_, v)| survives_json(v)),
        Py::None | Py::Bool(_) | Py::Str(_) => true,
    }
}

/// comfy_execution/graph_utils.py `is_link`.
fn is_link(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.len() == 2 && a[0].is_string() && (a[1].is_number() || a[1].is_boolean()))
}

/// `bool(x)`.
fn py_truthy(v: &Py) -> bool {
    match v {
        Py::None => false,
        Py::Bool(b) => *b,
        Py::Int(i) => *i != PyInt::Small(0),
        Py::Float(f) => *f != 0.0,
        Py::Str(s) => !s.is_empty(),
        Py::List(l) => !l.is_empty(),
        Py::Dict(d) => !d.is_empty(),
    }
}
