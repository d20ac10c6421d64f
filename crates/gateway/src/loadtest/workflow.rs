//! The prompt every simulated participant queues: the built-in model-free
//! graph or an API-format workflow from a file, with one input changed per
//! job. ComfyUI caches the outputs of identical inputs, so an unchanged
//! prompt would be answered from the cache and measure nothing.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

/// What changes from job to job.
#[derive(Debug, Clone, PartialEq)]
enum Knob {
    /// `EmptyImage.color`, an RGB integer.
    Color,
    /// A sampler's `seed` or `noise_seed`.
    Seed,
}

#[derive(Debug, Clone)]
pub struct Workflow {
    prompt: Map<String, Value>,
    knobs: Vec<(String, String, Knob)>,
    /// Added to each job's number, so that two runs against the same
    /// backends do not repeat each other's prompts either.
    offset: u64,
    /// Where it came from, for the report.
    pub source: String,
}

/// The largest seed a browser can hold exactly (JavaScript's safe integers).
const MAX_SEED: u64 = (1 << 53) - 1;
const COLORS: u64 = 0x100_0000;

impl Workflow {
    /// The built-in graph: EmptyImage 64×64 → ImageInvert → SaveImage.
    pub fn built_in() -> Workflow {
        let prompt = json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "loadtest"}},
        });
        let Value::Object(prompt) = prompt else {
            unreachable!("a JSON object literal")
        };
        Self::new(
            prompt,
            "built-in: EmptyImage 64x64 → ImageInvert → SaveImage".into(),
        )
    }

    /// An API-format workflow (`{node_id: {class_type, inputs}}`, also
    /// inside a `{"prompt": …}` wrapper).
    pub fn from_file(path: &Path) -> anyhow::Result<Workflow> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the workflow {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        Self::from_json(value, path.display().to_string())
            .with_context(|| format!("{} is not an API-format workflow", path.display()))
    }

    fn from_json(value: Value, source: String) -> anyhow::Result<Workflow> {
        let value = match value {
            Value::Object(mut o) if o.get("prompt").is_some_and(Value::is_object) => {
                o.remove("prompt").unwrap_or_default()
            }
            v => v,
        };
        let Value::Object(prompt) = value else {
            bail!("expected a JSON object of nodes");
        };
        if prompt.contains_key("nodes") && prompt.contains_key("links") {
            bail!(
                "this is the editor's format; save it with Workflow → Export (API) and use that file"
            );
        }
        if prompt.is_empty() {
            bail!("it has no nodes");
        }
        for (id, node) in &prompt {
            if !node.get("class_type").is_some_and(Value::is_string) {
                bail!("node {id} has no class_type");
            }
            if !node.get("inputs").is_none_or(Value::is_object) {
                bail!("the inputs of node {id} are not an object");
            }
        }
        Ok(Self::new(prompt, source))
    }

    fn new(prompt: Map<String, Value>, source: String) -> Workflow {
        let mut knobs = Vec::new();
        for (id, node) in &prompt {
            let class = node.get("class_type").and_then(Value::as_str);
            let Some(inputs) = node.get("inputs").and_then(Value::as_object) else {
                continue;
            };
            for (name, value) in inputs {
                // Linked inputs (`["node", slot]`) are not numbers: left alone.
                if !value.is_number() {
                    continue;
                }
                let knob = match (class, name.as_str()) {
                    (Some("EmptyImage"), "color") => Knob::Color,
                    (_, "seed" | "noise_seed") => Knob::Seed,
                    _ => continue,
                };
                knobs.push((id.clone(), name.clone(), knob));
            }
        }
        Workflow {
            prompt,
            knobs,
            offset: u64::from(uuid::Uuid::new_v4().as_u128() as u32),
            source,
        }
    }

    /// The inputs changed per job, as `node.input`; empty when the
    /// workflow has none a backend's cache would notice.
    pub fn varied_inputs(&self) -> Vec<String> {
        self.knobs
            .iter()
            .map(|(id, name, _)| format!("{id}.{name}"))
            .collect()
    }

    /// The prompt of the run's job number `job`.
    pub fn for_job(&self, job: u64) -> Value {
        let mut prompt = self.prompt.clone();
        let n = self.offset.wrapping_add(job);
        for (id, name, knob) in &self.knobs {
            let value = match knob {
                Knob::Color => n % COLORS,
                Knob::Seed => n % MAX_SEED,
            };
            if let Some(inputs) = prompt
                .get_mut(id)
                .and_then(|node| node.get_mut("inputs"))
                .and_then(Value::as_object_mut)
            {
                inputs.insert(name.clone(), json!(value));
            }
        }
        Value::Object(prompt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_graph_changes_colour_per_job() {
        let w = Workflow::built_in();
        assert_eq!(w.varied_inputs(), ["1.color"]);
        let (a, b) = (w.for_job(0), w.for_job(1));
        assert_ne!(a["1"]["inputs"]["color"], b["1"]["inputs"]["color"]);
        assert!(a["1"]["inputs"]["color"].as_u64().unwrap() < COLORS);
        assert_eq!(a["3"]["class_type"], "SaveImage");
    }

    #[test]
    fn accepts_the_prompt_wrapper_and_finds_seeds() {
        let w = Workflow::from_json(
            json!({"prompt": {
                "3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0]}},
                "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
            }}),
            "file".into(),
        )
        .unwrap();
        assert_eq!(w.varied_inputs(), ["3.seed"]);
        assert_ne!(
            w.for_job(7)["3"]["inputs"]["seed"],
            w.for_job(8)["3"]["inputs"]["seed"]
        );
        assert_eq!(w.for_job(7)["3"]["inputs"]["model"], json!(["4", 0]));
    }

    #[test]
    fn refuses_what_is_not_an_api_prompt() {
        for bad in [
            json!([1, 2]),
            json!({}),
            json!({"nodes": [], "links": []}),
            json!({"1": {"inputs": {}}}),
            json!({"1": {"class_type": "X", "inputs": [1]}}),
        ] {
            assert!(
                Workflow::from_json(bad.clone(), "t".into()).is_err(),
                "{bad}"
            );
        }
    }
}
