//! The simulator's node catalogue: the body of `GET /object_info`.
//!
//! The nodes are a small, useful subset of stock ComfyUI (a txt2img pipeline
//! and the weight-free image nodes), declared here field for field as stock
//! ComfyUI v0.33.0 reports them, so the real frontend draws the same widgets
//! and a workflow built against the simulator runs unchanged on a real GPU.
//! Nothing is copied from a fixture at run time; the tests below compare this
//! catalogue with recorded stock responses.
//!
//! Where v0.33.0 could not be observed (only `EmptyImage` and `ImageBlur` were
//! recorded from it), the definitions follow the recorded 0.3.64 catalogue,
//! dressed in v0.33.0's key set.

use serde_json::{Map, Value, json};

/// The checkpoints `CheckpointLoaderSimple` offers. Named so that nobody
/// mistakes a simulated run for a real model's output.
pub(crate) const CHECKPOINTS: &[&str] = &[
    "sim-dreamshaper-8.safetensors",
    "sim-sd-v1-5.safetensors",
    "sim-sdxl-base-1.0.safetensors",
];

/// `comfy.samplers.KSampler.SAMPLERS`, in stock order.
const SAMPLERS: &[&str] = &[
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
];

/// `comfy.samplers.KSampler.SCHEDULERS`, in stock order.
const SCHEDULERS: &[&str] = &[
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
];

const UPSCALE_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];

/// `nodes.MAX_RESOLUTION`.
const MAX_RESOLUTION: u64 = 16384;

/// The `/object_info` body. `input_files` (the simulator's input folder) are
/// the choices of `LoadImage`, as in stock, where they are listed afresh on
/// every request.
pub(crate) fn object_info(input_files: &[String]) -> Map<String, Value> {
    nodes(input_files)
        .into_iter()
        .map(|node| (node.name.to_owned(), node.info()))
        .collect()
}

fn nodes(input_files: &[String]) -> Vec<Node> {
    vec![
        Node::v1("EmptyImage", "Empty Image", "image")
            .required("width", int(512, 1, MAX_RESOLUTION).with("step", 1))
            .required("height", int(512, 1, MAX_RESOLUTION).with("step", 1))
            .required("batch_size", int(1, 1, 4096))
            .required(
                "color",
                int(0, 0, 0xFF_FFFF).with("step", 1).with("display", "color"),
            )
            .output("IMAGE", None),
        Node::v1("ImageInvert", "Invert Image", "image")
            .required("image", socket("IMAGE"))
            .output("IMAGE", None),
        // A v3-schema node upstream, hence the different key set.
        Node::v3("ImageBlur", "Blur Image", "image/filters")
            .python_module("comfy_extras.nodes_post_processing")
            .required("image", socket("IMAGE"))
            .required("blur_radius", int(1, 1, 31).with("step", 1))
            .required("sigma", float(1.0, 0.1, 10.0, 0.1))
            .output("IMAGE", None),
        Node::v1("ImageScale", "Upscale Image", "image/upscaling")
            .required("image", socket("IMAGE"))
            .required("upscale_method", combo(UPSCALE_METHODS))
            .required("width", int(512, 0, MAX_RESOLUTION).with("step", 1))
            .required("height", int(512, 0, MAX_RESOLUTION).with("step", 1))
            .required("crop", combo(&["disabled", "center"]))
            .output("IMAGE", None),
        Node::v1("ImageScaleBy", "Upscale Image By", "image/upscaling")
            .required("image", socket("IMAGE"))
            .required("upscale_method", combo(UPSCALE_METHODS))
            .required("scale_by", float(1.0, 0.01, 8.0, 0.01))
            .output("IMAGE", None),
        Node::v1("ImageFlip", "ImageFlip", "image/transform")
            .python_module("comfy_extras.nodes_images")
            .required("image", socket("IMAGE"))
            .required(
                "flip_method",
                combo(&["x-axis: vertically", "y-axis: horizontally"]),
            )
            .output("IMAGE", None),
        Node::v1("LoadImage", "Load Image", "image")
            .required("image", combo(input_files).with("image_upload", true))
            .output("IMAGE", None)
            .output("MASK", None),
        Node::v1("SaveImage", "Save Image", "image")
            .description("Saves the input images to your ComfyUI output directory.")
            .required("images", socket("IMAGE").tooltip("The images to save."))
            .required(
                "filename_prefix",
                socket("STRING").with("default", "ComfyUI").tooltip(
                    "The prefix for the file to save. This may include formatting information \
                     such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values \
                     from nodes.",
                ),
            )
            .hidden_png_metadata()
            .output_node(),
        // Stock's PreviewImage subclasses SaveImage and inherits its description.
        Node::v1("PreviewImage", "Preview Image", "image")
            .description("Saves the input images to your ComfyUI output directory.")
            .required("images", socket("IMAGE"))
            .hidden_png_metadata()
            .output_node(),
        Node::v1("CheckpointLoaderSimple", "Load Checkpoint", "loaders")
            .description(
                "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
            )
            .required(
                "ckpt_name",
                combo(CHECKPOINTS).tooltip("The name of the checkpoint (model) to load."),
            )
            .output("MODEL", Some("The model used for denoising latents."))
            .output("CLIP", Some("The CLIP model used for encoding text prompts."))
            .output(
                "VAE",
                Some(
                    "The VAE model used for encoding and decoding images to and from latent space.",
                ),
            ),
        Node::v1("CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning")
            .description(
                "Encodes a text prompt using a CLIP model into an embedding that can be used to \
                 guide the diffusion model towards generating specific images.",
            )
            .required(
                "text",
                socket("STRING")
                    .with("multiline", true)
                    .with("dynamicPrompts", true)
                    .tooltip("The text to be encoded."),
            )
            .required(
                "clip",
                socket("CLIP").tooltip("The CLIP model used for encoding the text."),
            )
            .output(
                "CONDITIONING",
                Some("A conditioning containing the embedded text used to guide the diffusion model."),
            ),
        Node::v1("EmptyLatentImage", "Empty Latent Image", "latent")
            .description("Create a new batch of empty latent images to be denoised via sampling.")
            .required(
                "width",
                int(512, 16, MAX_RESOLUTION)
                    .with("step", 8)
                    .tooltip("The width of the latent images in pixels."),
            )
            .required(
                "height",
                int(512, 16, MAX_RESOLUTION)
                    .with("step", 8)
                    .tooltip("The height of the latent images in pixels."),
            )
            .required(
                "batch_size",
                int(1, 1, 4096).tooltip("The number of latent images in the batch."),
            )
            .output("LATENT", Some("The empty latent image batch.")),
        Node::v1("KSampler", "KSampler", "sampling")
            .description(
                "Uses the provided model, positive and negative conditioning to denoise the \
                 latent image.",
            )
            .required(
                "model",
                socket("MODEL").tooltip("The model used for denoising the input latent."),
            )
            .required(
                "seed",
                int(0, 0, u64::MAX)
                    .with("control_after_generate", true)
                    .tooltip("The random seed used for creating the noise."),
            )
            .required(
                "steps",
                int(20, 1, 10000).tooltip("The number of steps used in the denoising process."),
            )
            .required(
                "cfg",
                float(8.0, 0.0, 100.0, 0.1).with("round", 0.01).tooltip(
                    "The Classifier-Free Guidance scale balances creativity and adherence to the \
                     prompt. Higher values result in images more closely matching the prompt \
                     however too high values will negatively impact quality.",
                ),
            )
            .required(
                "sampler_name",
                combo(SAMPLERS).tooltip(
                    "The algorithm used when sampling, this can affect the quality, speed, and \
                     style of the generated output.",
                ),
            )
            .required(
                "scheduler",
                combo(SCHEDULERS).tooltip(
                    "The scheduler controls how noise is gradually removed to form the image.",
                ),
            )
            .required(
                "positive",
                socket("CONDITIONING").tooltip(
                    "The conditioning describing the attributes you want to include in the image.",
                ),
            )
            .required(
                "negative",
                socket("CONDITIONING").tooltip(
                    "The conditioning describing the attributes you want to exclude from the image.",
                ),
            )
            .required(
                "latent_image",
                socket("LATENT").tooltip("The latent image to denoise."),
            )
            .required(
                "denoise",
                float(1.0, 0.0, 1.0, 0.01).tooltip(
                    "The amount of denoising applied, lower values will maintain the structure of \
                     the initial image allowing for image to image sampling.",
                ),
            )
            .output("LATENT", Some("The denoised latent.")),
        Node::v1("VAEDecode", "VAE Decode", "latent")
            .description("Decodes latent images back into pixel space images.")
            .required(
                "samples",
                socket("LATENT").tooltip("The latent to be decoded."),
            )
            .required(
                "vae",
                socket("VAE").tooltip("The VAE model used for decoding the latent."),
            )
            .output("IMAGE", Some("The decoded image.")),
    ]
}

/// One input declaration: the `[type, options]` pair of stock `INPUT_TYPES`.
/// The type is a name (`"INT"`, `"IMAGE"`) or, for a combo, the list of choices.
struct Input {
    kind: Value,
    options: Map<String, Value>,
}

impl Input {
    /// Adds an option; the order of calls is the order on the wire.
    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.options.insert(key.to_owned(), value.into());
        self
    }

    fn tooltip(self, text: &str) -> Self {
        self.with("tooltip", text)
    }

    /// Legacy (v1) nodes declare option-less inputs as a bare `("IMAGE",)`,
    /// which serialises to a one-element array; v3 nodes always send options.
    fn to_json(&self, schema: Schema) -> Value {
        if self.options.is_empty() && schema == Schema::V1 {
            json!([self.kind])
        } else {
            json!([self.kind, self.options])
        }
    }
}

/// A link input (`"IMAGE"`, `"MODEL"`, ...) or a widget with hand-set options.
fn socket(kind: &str) -> Input {
    Input {
        kind: kind.into(),
        options: Map::new(),
    }
}

fn int(default: i64, min: i64, max: u64) -> Input {
    socket("INT")
        .with("default", default)
        .with("min", min)
        .with("max", max)
}

fn float(default: f64, min: f64, max: f64, step: f64) -> Input {
    socket("FLOAT")
        .with("default", default)
        .with("min", min)
        .with("max", max)
        .with("step", step)
}

fn combo<S: AsRef<str>>(choices: &[S]) -> Input {
    Input {
        kind: choices.iter().map(|c| c.as_ref()).collect(),
        options: Map::new(),
    }
}

/// Which of stock's two node-definition paths produced a node's info: legacy
/// classes go through `server.node_info()`, `comfy_api` v3 schemas through
/// `GET_NODE_INFO_V1()`. They differ in key set and key order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Schema {
    V1,
    V3,
}

struct Output {
    kind: &'static str,
    tooltip: Option<&'static str>,
}

struct Node {
    schema: Schema,
    name: &'static str,
    display_name: &'static str,
    description: &'static str,
    python_module: &'static str,
    category: &'static str,
    required: Vec<(&'static str, Input)>,
    hidden: Vec<(&'static str, &'static str)>,
    outputs: Vec<Output>,
    output_node: bool,
}

impl Node {
    fn v1(name: &'static str, display_name: &'static str, category: &'static str) -> Self {
        Node {
            schema: Schema::V1,
            name,
            display_name,
            description: "",
            python_module: "nodes",
            category,
            required: Vec::new(),
            hidden: Vec::new(),
            outputs: Vec::new(),
            output_node: false,
        }
    }

    fn v3(name: &'static str, display_name: &'static str, category: &'static str) -> Self {
        Node {
            schema: Schema::V3,
            ..Node::v1(name, display_name, category)
        }
    }

    fn python_module(mut self, module: &'static str) -> Self {
        self.python_module = module;
        self
    }

    fn description(mut self, text: &'static str) -> Self {
        self.description = text;
        self
    }

    fn required(mut self, name: &'static str, input: Input) -> Self {
        self.required.push((name, input));
        self
    }

    /// The hidden inputs through which save nodes receive the prompt and
    /// workflow to embed in their PNGs.
    fn hidden_png_metadata(mut self) -> Self {
        self.hidden = vec![("prompt", "PROMPT"), ("extra_pnginfo", "EXTRA_PNGINFO")];
        self
    }

    /// An output named after its type, as stock does without `RETURN_NAMES`.
    fn output(mut self, kind: &'static str, tooltip: Option<&'static str>) -> Self {
        self.outputs.push(Output { kind, tooltip });
        self
    }

    fn output_node(mut self) -> Self {
        self.output_node = true;
        self
    }

    fn info(&self) -> Value {
        let mut input = Map::new();
        let mut input_order = Map::new();
        let required: Map<String, Value> = self
            .required
            .iter()
            .map(|(name, input)| ((*name).to_owned(), input.to_json(self.schema)))
            .collect();
        input_order.insert("required".into(), json!(self.required_names()));
        input.insert("required".into(), Value::Object(required));
        if !self.hidden.is_empty() {
            let hidden: Map<String, Value> = self
                .hidden
                .iter()
                .map(|(name, kind)| ((*name).to_owned(), json!(kind)))
                .collect();
            let order: Vec<&str> = self.hidden.iter().map(|(name, _)| *name).collect();
            input.insert("hidden".into(), Value::Object(hidden));
            input_order.insert("hidden".into(), json!(order));
        }

        let kinds: Vec<&str> = self.outputs.iter().map(|o| o.kind).collect();
        let tooltips: Vec<Option<&str>> = self.outputs.iter().map(|o| o.tooltip).collect();
        let mut info = Map::new();
        info.insert("input".into(), Value::Object(input));
        info.insert("input_order".into(), Value::Object(input_order));
        info.insert("is_input_list".into(), json!(false));
        info.insert("output".into(), json!(kinds));
        info.insert("output_is_list".into(), json!(vec![false; kinds.len()]));
        info.insert("output_name".into(), json!(kinds));
        if self.schema == Schema::V3 {
            info.insert("output_tooltips".into(), json!(tooltips));
            info.insert("output_matchtypes".into(), Value::Null);
        }
        info.insert("name".into(), json!(self.name));
        info.insert("display_name".into(), json!(self.display_name));
        info.insert("description".into(), json!(self.description));
        info.insert("python_module".into(), json!(self.python_module));
        info.insert("category".into(), json!(self.category));
        info.insert("output_node".into(), json!(self.output_node));
        match self.schema {
            Schema::V1 => {
                info.insert("has_intermediate_output".into(), json!(false));
                // Legacy nodes send `output_tooltips` only when they declare some.
                if tooltips.iter().any(Option::is_some) {
                    info.insert("output_tooltips".into(), json!(tooltips));
                }
                info.insert("search_aliases".into(), json!([]));
            }
            Schema::V3 => {
                for flag in ["deprecated", "experimental", "dev_only", "api_node"] {
                    info.insert(flag.into(), json!(false));
                }
                for absent in ["price_badge", "search_aliases", "essentials_category"] {
                    info.insert(absent.into(), Value::Null);
                }
                info.insert("has_intermediate_output".into(), json!(false));
            }
        }
        Value::Object(info)
    }

    fn required_names(&self) -> Vec<&'static str> {
        self.required.iter().map(|(name, _)| *name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &[&str] = &[
        "EmptyImage",
        "ImageInvert",
        "ImageBlur",
        "ImageScale",
        "ImageScaleBy",
        "ImageFlip",
        "LoadImage",
        "SaveImage",
        "PreviewImage",
        "CheckpointLoaderSimple",
        "CLIPTextEncode",
        "EmptyLatentImage",
        "KSampler",
        "VAEDecode",
    ];

    /// Combo inputs whose choices are the server's own files, so they differ
    /// from the recording by design.
    const FILE_CHOICES: &[&str] = &["ckpt_name", "image"];

    /// Fields that changed upstream between the 0.3.64 recording and v0.33.0,
    /// which we follow. `matches_v0_33_0_recordings` pins our value.
    const DRIFT: &[(&str, &str)] = &[("ImageBlur", "category")];

    fn fixture(rel: &str) -> Value {
        let path = format!("{}/../../fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading fixture {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing fixture {path}: {e}"))
    }

    #[test]
    fn has_exactly_the_promised_nodes() {
        let ours = object_info(&[]);
        let names: Vec<&str> = ours.keys().map(String::as_str).collect();
        assert_eq!(names, NODES);
        for (name, info) in &ours {
            assert_eq!(info["name"], json!(name));
        }
    }

    #[test]
    fn conforms_to_stock_0_3_64() {
        let stock = fixture("comfyui-0.3.64/object_info.json");
        let ours = object_info(&[]);
        let mut problems = Vec::new();
        let mut compared = 0;
        for (name, info) in &ours {
            let Some(stock_info) = stock.get(name) else {
                continue;
            };
            compared += 1;
            compare_node(name, info, stock_info, &mut problems);
        }
        assert_eq!(
            compared,
            NODES.len(),
            "every node should be in the recording"
        );
        assert!(
            problems.is_empty(),
            "{} mismatch(es) with stock 0.3.64:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }

    /// A drift entry must still differ from the recording, or it hides nothing
    /// and should go.
    #[test]
    fn drift_entries_are_real() {
        let stock = fixture("comfyui-0.3.64/object_info.json");
        let ours = object_info(&[]);
        for (node, field) in DRIFT {
            assert_ne!(ours[*node][*field], stock[*node][*field], "{node}.{field}");
        }
    }

    fn compare_node(name: &str, ours: &Value, stock: &Value, problems: &mut Vec<String>) {
        for field in [
            "name",
            "category",
            "output",
            "output_name",
            "output_is_list",
            "output_node",
            "input_order",
        ] {
            if DRIFT.contains(&(name, field)) {
                continue;
            }
            if ours.get(field) != stock.get(field) {
                problems.push(format!(
                    "{name}.{field}: ours {} / stock {}",
                    show(ours.get(field)),
                    show(stock.get(field))
                ));
            }
        }
        for section in ["required", "optional"] {
            let empty = Map::new();
            let ours_inputs = ours["input"][section].as_object().unwrap_or(&empty);
            let stock_inputs = stock["input"][section].as_object().unwrap_or(&empty);
            let ours_names: Vec<&String> = ours_inputs.keys().collect();
            let stock_names: Vec<&String> = stock_inputs.keys().collect();
            let (mut a, mut b) = (ours_names.clone(), stock_names.clone());
            a.sort();
            b.sort();
            if a != b {
                problems.push(format!(
                    "{name}.input.{section}: ours {ours_names:?} / stock {stock_names:?}"
                ));
            }
            for (input, spec) in ours_inputs {
                if let Some(stock_spec) = stock_inputs.get(input) {
                    let at = format!("{name}.input.{section}.{input}");
                    compare_input(&at, input, spec, stock_spec, problems);
                }
            }
        }
    }

    fn compare_input(
        at: &str,
        input: &str,
        ours: &Value,
        stock: &Value,
        problems: &mut Vec<String>,
    ) {
        match (&ours[0], &stock[0]) {
            (Value::Array(_), Value::Array(_)) if FILE_CHOICES.contains(&input) => {}
            (a @ Value::Array(_), b @ Value::Array(_)) => {
                if a != b {
                    problems.push(format!("{at}: choices ours {a} / stock {b}"));
                }
            }
            (Value::String(a), Value::String(b)) => {
                if a != b {
                    problems.push(format!("{at}: type ours {a} / stock {b}"));
                }
                if a == "INT" || a == "FLOAT" {
                    for key in ["default", "min", "max"] {
                        if ours[1].get(key) != stock[1].get(key) {
                            problems.push(format!(
                                "{at}.{key}: ours {} / stock {}",
                                show(ours[1].get(key)),
                                show(stock[1].get(key))
                            ));
                        }
                    }
                }
            }
            (a, b) => problems.push(format!("{at}: type ours {a} / stock {b}")),
        }
    }

    fn show(v: Option<&Value>) -> String {
        v.map_or_else(|| "(absent)".to_owned(), Value::to_string)
    }

    /// The two nodes recorded from v0.33.0 must match byte for byte,
    /// including key order, which the v1 and v3 paths each fix.
    #[test]
    fn matches_v0_33_0_recordings() {
        let trace = fixture("comfyui-0.33.0/trace.json");
        let ours = object_info(&[]);
        for key in ["object_info_one", "object_info_v3"] {
            let body = &trace[key][1];
            let Some((name, stock_info)) = body.as_object().and_then(|m| m.iter().next()) else {
                panic!("trace.{key} holds no node");
            };
            assert_eq!(
                serde_json::to_string(&ours[name]).ok(),
                serde_json::to_string(stock_info).ok(),
                "{name} (trace.{key})"
            );
        }
    }

    #[test]
    fn load_image_offers_the_input_folder() {
        let files = vec!["a.png".to_owned(), "sub/b.webp".to_owned()];
        let ours = object_info(&files);
        assert_eq!(
            ours["LoadImage"]["input"]["required"]["image"],
            json!([["a.png", "sub/b.webp"], {"image_upload": true}])
        );
        assert_eq!(
            object_info(&[])["LoadImage"]["input"]["required"]["image"],
            json!([[], {"image_upload": true}])
        );
    }

    #[test]
    fn checkpoints_are_visibly_simulated() {
        let ours = object_info(&[]);
        let choices = &ours["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0];
        assert_eq!(choices, &json!(CHECKPOINTS));
        assert!(CHECKPOINTS.iter().all(|c| c.starts_with("sim-")));
    }
}
