//! The node implementations: what each `class_type` of the catalogue does
//! when it runs, on the CPU.
//!
//! A node gets its inputs (linked values from upstream nodes, or literal
//! widget values from the prompt) through a [`Call`], and returns its output
//! values plus, for output nodes, the UI dict that `executed` carries.
//! Nodes are synchronous; the executor runs them on a blocking thread, and
//! long ones report progress and check for interrupts through [`Host`].

mod image;
mod io;
mod txt2img;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::files::Dirs;
use super::paint::Scene;
use super::pixels::{Image, Mask};

pub(crate) use io::{is_changed, temp_suffix};

/// A value on a link between nodes (one of a node's outputs).
#[derive(Clone, Debug)]
pub(crate) enum Data {
    Image(Arc<Image>),
    Mask(Arc<Mask>),
    /// MODEL, CLIP and VAE stand for the checkpoint they were loaded from.
    Model(Arc<str>),
    Clip(Arc<str>),
    Vae(Arc<str>),
    Conditioning(Arc<Conditioning>),
    Latent(Arc<Latent>),
}

/// CLIPTextEncode's output: the text, and the checkpoint that "encoded" it.
#[derive(Debug)]
pub(crate) struct Conditioning {
    pub text: String,
    pub checkpoint: Arc<str>,
}

/// A batch of latents. `sampled` is set once a KSampler has denoised it,
/// and holds what VAEDecode needs to paint the pictures.
#[derive(Debug)]
pub(crate) struct Latent {
    pub width: usize,
    pub height: usize,
    pub batch: usize,
    pub sampled: Option<Sampled>,
}

#[derive(Clone, Debug)]
pub(crate) struct Sampled {
    pub checkpoint: Arc<str>,
    pub text: String,
    pub seed: u64,
}

impl Sampled {
    /// The scene of the `index`-th picture of the batch: consecutive seeds,
    /// as batches in stock differ image by image.
    pub fn scene(&self, index: usize) -> Scene {
        Scene::new(
            &self.checkpoint,
            &self.text,
            self.seed.wrapping_add(index as u64),
        )
    }
}

impl Data {
    /// How `execution_error.current_inputs` shows a linked value (stock
    /// prints the tensor or object).
    pub fn describe(&self) -> String {
        match self {
            Data::Image(image) => image.describe(),
            Data::Mask(mask) => format!("MASK[{}, {}, {}]", mask.batch, mask.height, mask.width),
            Data::Model(name) => format!("MODEL({name})"),
            Data::Clip(name) => format!("CLIP({name})"),
            Data::Vae(name) => format!("VAE({name})"),
            Data::Conditioning(c) => format!("CONDITIONING({:?}, {})", c.text, c.checkpoint),
            Data::Latent(l) => format!("LATENT[{}, 4, {}, {}]", l.batch, l.height / 8, l.width / 8),
        }
    }
}

/// One input of a node as the executor resolved it.
#[derive(Clone, Debug)]
pub(crate) enum Input {
    Link(Data),
    Value(Value),
}

/// Why a node did not finish.
#[derive(Debug)]
pub(crate) enum Failure {
    Error(NodeError),
    Interrupted,
}

/// A node's exception, reported as stock reports a Python one.
#[derive(Debug)]
pub(crate) struct NodeError {
    /// The exception's qualified type name, e.g. `RuntimeError`.
    pub exception_type: String,
    pub message: String,
}

pub(crate) fn error(exception_type: &str, message: impl Into<String>) -> Failure {
    Failure::Error(NodeError {
        exception_type: exception_type.into(),
        message: message.into(),
    })
}

/// What a node returns: its outputs in `RETURN_TYPES` order, and the UI
/// dict for output nodes.
pub(crate) struct Output {
    pub values: Vec<Data>,
    pub ui: Option<Value>,
}

impl Output {
    fn one(value: Data) -> Output {
        Output {
            values: vec![value],
            ui: None,
        }
    }
}

/// What a running node may ask of the executor.
pub(crate) trait Host: Sync {
    /// Reports `value` of `max` steps with an optional preview; fails with
    /// [`Failure::Interrupted`] if an interrupt is pending (stock checks
    /// there too).
    fn progress(&self, value: u64, max: u64, preview: Option<&Image>) -> Result<(), Failure>;
    /// Waits up to `time`, returning early if an interrupt arrives.
    fn wait(&self, time: Duration);
    /// How long one sampler step takes.
    fn step_time(&self) -> Duration;
    fn dirs(&self) -> &Dirs;
    /// The API prompt (SaveImage's hidden `PROMPT`).
    fn prompt(&self) -> &Value;
    /// `extra_data.extra_pnginfo` (SaveImage's hidden `EXTRA_PNGINFO`).
    fn extra_pnginfo(&self) -> Option<&Map<String, Value>>;
}

/// One execution of one node.
pub(crate) struct Call<'a> {
    pub class_type: &'a str,
    pub inputs: &'a [(String, Input)],
    pub host: &'a dyn Host,
    /// PreviewImage's `_temp_xxxxx` suffix, fixed per node object as in stock.
    pub temp_suffix: &'a str,
}

/// Runs a node of the catalogue.
pub(crate) fn run(call: &Call<'_>) -> Result<Output, Failure> {
    match call.class_type {
        "EmptyImage" => image::empty_image(call),
        "ImageInvert" => image::invert(call),
        "ImageBlur" => image::blur(call),
        "ImageScale" => image::scale(call),
        "ImageScaleBy" => image::scale_by(call),
        "ImageFlip" => image::flip(call),
        "LoadImage" => io::load_image(call),
        "SaveImage" => io::save_image(call),
        "PreviewImage" => io::preview_image(call),
        "CheckpointLoaderSimple" => txt2img::load_checkpoint(call),
        "CLIPTextEncode" => txt2img::encode_text(call),
        "EmptyLatentImage" => txt2img::empty_latent(call),
        "KSampler" => txt2img::sample(call),
        "VAEDecode" => txt2img::decode(call),
        other => Err(error(
            "KeyError",
            format!("'{other}' is not a node of the simulator"),
        )),
    }
}

/// The most f32 values one image batch may hold (256 MiB): stock would try
/// and exhaust memory; a shared simulator refuses instead.
const MAX_VALUES: usize = 64 * 1024 * 1024;

/// Fails like torch's allocator when a batch would be too large.
pub(crate) fn check_size(batch: usize, height: usize, width: usize) -> Result<(), Failure> {
    let values = batch
        .checked_mul(height)
        .and_then(|v| v.checked_mul(width))
        .and_then(|v| v.checked_mul(3));
    match values {
        Some(n) if n <= MAX_VALUES => Ok(()),
        _ => Err(error(
            "RuntimeError",
            format!(
                "not enough memory: the simulator refuses to allocate a {batch}x{height}x{width}x3 \
                 image (its limit is {MAX_VALUES} values)"
            ),
        )),
    }
}

impl Call<'_> {
    fn input(&self, name: &str) -> Result<&Input, Failure> {
        self.inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, input)| input)
            .ok_or_else(|| {
                error(
                    "TypeError",
                    format!("{}() missing required argument: '{name}'", self.class_type),
                )
            })
    }

    fn link(&self, name: &str) -> Result<&Data, Failure> {
        match self.input(name)? {
            Input::Link(data) => Ok(data),
            Input::Value(v) => Err(error(
                "TypeError",
                format!("input '{name}' must be linked to a node, got {v}"),
            )),
        }
    }

    fn value(&self, name: &str) -> Result<&Value, Failure> {
        match self.input(name)? {
            Input::Value(v) => Ok(v),
            Input::Link(data) => Err(error(
                "TypeError",
                format!("input '{name}' must be a value, got {}", data.describe()),
            )),
        }
    }

    /// An INT widget, converted as stock's validation does (`int(val)`).
    fn int(&self, name: &str) -> Result<i128, Failure> {
        let v = self.value(name)?;
        let parsed = match v {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.is_finite())
                        .map(|f| f.trunc() as i128)
                }),
            Value::Bool(b) => Some(i128::from(*b)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        parsed.ok_or_else(|| error("ValueError", format!("invalid INT for '{name}': {v}")))
    }

    /// An INT that must fit `usize` (sizes, counts).
    fn size(&self, name: &str) -> Result<usize, Failure> {
        let v = self.int(name)?;
        usize::try_from(v).map_err(|_| {
            error(
                "ValueError",
                format!("'{name}' must not be negative, got {v}"),
            )
        })
    }

    fn float(&self, name: &str) -> Result<f64, Failure> {
        let v = self.value(name)?;
        let parsed = match v {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        parsed.ok_or_else(|| error("ValueError", format!("invalid FLOAT for '{name}': {v}")))
    }

    /// A STRING or COMBO widget (`str(val)`).
    fn string(&self, name: &str) -> Result<String, Failure> {
        Ok(match self.value(name)? {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    fn image(&self, name: &str) -> Result<Arc<Image>, Failure> {
        match self.link(name)? {
            Data::Image(image) => Ok(image.clone()),
            other => Err(mismatch(name, "IMAGE", other)),
        }
    }
}

fn mismatch(name: &str, expected: &str, got: &Data) -> Failure {
    error(
        "TypeError",
        format!("input '{name}' expects {expected}, got {}", got.describe()),
    )
}
