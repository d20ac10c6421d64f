//! Where ComfyUME's backend extension (`comfyui/comfyume_backend`, a
//! custom-node folder) answers on a ComfyUI, and where a worker sidecar
//! relays it: the signatures of nodes' validation functions, and running
//! them for a prompt's nodes. A ComfyUI without the extension answers 404
//! there, and so does a worker in front of one.

/// `GET`: `{"version": 1, "classes": {class: null | {"args": [...],
/// "varkw": bool}}}`.
pub const SIGNATURES: &str = "/comfyume/v1/validators";
/// `POST {"calls": [{"node_id", "class_type", "inputs",
/// "received_types"}]}`: `{"verdicts": [{"errors": [...]} | {"exception":
/// {"type", "message", "traceback"}}]}`, one per call, in order.
pub const VALIDATE_INPUTS: &str = "/comfyume/v1/validate_inputs";

/// The worker's relays of the two, behind its bearer token.
pub const WORKER_SIGNATURES: &str = "/v1/validators";
pub const WORKER_VALIDATE_INPUTS: &str = "/v1/validate_inputs";

/// The largest request the worker relays: a prompt's worth of inputs
/// (the gateway's own bound on a prompt is of the same order).
pub const MAX_VALIDATE_BODY: usize = 32 * 1024 * 1024;
