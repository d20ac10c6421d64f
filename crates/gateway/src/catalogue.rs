//! The node catalogue served at `/object_info`: the union of every backend's
//! nodes, cached, with each user's own input files substituted into the file
//! pickers (LoadImage and friends), since a participant must only ever see
//! their own uploads.
//!
//! The last good catalogue is also kept on disk, so a gateway restarted while
//! its GPUs are away still gives participants a working editor.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::Mutex;

pub use comfyume_prompt::node_info::personalise;

use comfyume_prompt::{Signatures, ValidatorCall, Verdict};

use crate::backend::{Backend, BackendError};

/// How long a submission waits for a backend to run nodes' validation
/// functions before the backend that runs the job is left to decide.
const VALIDATORS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the backends told us, merged.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// `class_type` → NodeInfo, passed through untouched.
    pub nodes: Map<String, Value>,
    /// The backends' devices, from their `/system_stats`.
    pub devices: Vec<Value>,
    /// What each backend reached had: its nodes and their model choices.
    /// A backend missing here was not reached (its abilities are unknown).
    pub abilities: std::collections::HashMap<String, Abilities>,
    /// The signatures of nodes' validation functions, from the backends
    /// that run ComfyUME's backend extension.
    pub signatures: Signatures,
}

/// One backend's nodes, and the files each model picker offers there.
#[derive(Debug, Default, Clone)]
pub struct Abilities {
    pub nodes: std::collections::HashSet<String>,
    /// Runs ComfyUME's backend extension: can run nodes' validation
    /// functions for the gateway.
    pub runs_validators: bool,
    /// `(class_type, input)` → the choices of that combo input.
    pub choices: std::collections::HashMap<(String, String), std::collections::HashSet<String>>,
}

impl Abilities {
    fn of(nodes: &Map<String, Value>) -> Self {
        let mut a = Abilities {
            nodes: nodes.keys().cloned().collect(),
            ..Default::default()
        };
        for (class, info) in nodes {
            for section in ["required", "optional"] {
                let Some(inputs) = info
                    .get("input")
                    .and_then(|i| i.get(section))
                    .and_then(Value::as_object)
                else {
                    continue;
                };
                for (input, spec) in inputs {
                    if !is_model_input(input) {
                        continue;
                    }
                    if let Some(list) = combo_choices(spec) {
                        a.choices.insert((class.clone(), input.clone()), list);
                    }
                }
            }
        }
        a
    }

    /// Whether this backend has every node of `needs` and every model file
    /// it names.
    pub fn can_run(&self, needs: &Requirements) -> bool {
        needs.nodes.iter().all(|n| self.nodes.contains(n))
            && needs.models.iter().all(|(class, input, file)| {
                self.choices
                    .get(&(class.clone(), input.clone()))
                    .is_none_or(|c| c.contains(file))
            })
    }
}

/// What a prompt needs of a backend.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Requirements {
    pub nodes: std::collections::BTreeSet<String>,
    /// `(class_type, input, file)` of every model picker set in the prompt.
    pub models: std::collections::BTreeSet<(String, String, String)>,
}

impl Requirements {
    pub fn of(prompt: &Value) -> Self {
        let mut r = Requirements::default();
        for node in prompt.as_object().into_iter().flat_map(|m| m.values()) {
            let Some(class) = node.get("class_type").and_then(Value::as_str) else {
                continue;
            };
            r.nodes.insert(class.to_string());
            for (input, value) in node
                .get("inputs")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if let (true, Some(file)) = (is_model_input(input), value.as_str()) {
                    r.models
                        .insert((class.to_string(), input.clone(), file.to_string()));
                }
            }
        }
        r
    }

    /// The model files alone (what "loaded on a GPU" means for affinity).
    pub fn model_files(&self) -> std::collections::BTreeSet<String> {
        self.models.iter().map(|(_, _, f)| f.clone()).collect()
    }
}

/// Model pickers are named `ckpt_name`, `lora_name`, `vae_name`,
/// `unet_name`, `clip_name`, `control_net_name`, …
fn is_model_input(input: &str) -> bool {
    input.ends_with("_name") && input != "filename_prefix"
}

fn combo_choices(spec: &Value) -> Option<std::collections::HashSet<String>> {
    let parts = spec.as_array()?;
    let list = match parts.first()? {
        Value::Array(items) => items,
        Value::String(t) if t == "COMBO" => parts.get(1)?.get("options")?.as_array()?,
        _ => return None,
    };
    Some(
        list.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("no GPU backend could be reached to fetch the node catalogue ({0})")]
    NoBackend(String),
}

pub struct Catalogue {
    backends: Vec<Backend>,
    cache_file: PathBuf,
    current: Mutex<Option<Arc<Snapshot>>>,
}

impl Catalogue {
    pub fn new(backends: Vec<Backend>, cache_file: PathBuf) -> Self {
        Self {
            backends,
            cache_file,
            current: Mutex::new(None),
        }
    }

    /// The cached catalogue, fetched on first use. The lock is held while
    /// fetching so a room loading at once makes one round of requests.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, CatalogueError> {
        let mut current = self.current.lock().await;
        if let Some(s) = current.as_ref() {
            return Ok(s.clone());
        }
        match self.fetch().await {
            Ok(s) => {
                let s = Arc::new(s);
                self.save(&s).await;
                *current = Some(s.clone());
                Ok(s)
            }
            Err(e) => match self.load().await {
                Some(stale) => {
                    tracing::warn!(error = %e, "serving the last saved node catalogue");
                    // Not cached: the next request tries the backends again.
                    Ok(Arc::new(stale))
                }
                None => Err(e),
            },
        }
    }

    /// Runs nodes' validation functions (`calls`) on one of the `serving`
    /// backends that runs ComfyUME's extension and has every class they
    /// name, trying them in order within [`VALIDATORS_WAIT`] in all; the
    /// answers by node id. `Err` says why no backend answered.
    pub async fn run_validators(
        &self,
        snapshot: &Snapshot,
        calls: &[ValidatorCall],
        serving: &std::collections::HashSet<String>,
    ) -> Result<std::collections::HashMap<String, Verdict>, String> {
        let deadline = tokio::time::Instant::now() + VALIDATORS_WAIT;
        let mut reasons = Vec::new();
        for backend in self.backends.iter().filter(|b| serving.contains(&b.name)) {
            let Some(abilities) = snapshot.abilities.get(&backend.name) else {
                continue;
            };
            if !abilities.runs_validators
                || !calls
                    .iter()
                    .all(|c| abilities.nodes.contains(&c.class_type))
            {
                continue;
            }
            match tokio::time::timeout_at(deadline, backend.run_validators(calls)).await {
                Ok(Ok(verdicts)) => {
                    return Ok(calls
                        .iter()
                        .map(|c| c.node_id.clone())
                        .zip(verdicts)
                        .collect());
                }
                Ok(Err(e)) => reasons.push(e.to_string()),
                Err(_) => {
                    reasons.push(format!(
                        "no backend answered within {} s (the last asked: '{}')",
                        VALIDATORS_WAIT.as_secs(),
                        backend.name
                    ));
                    break;
                }
            }
        }
        if reasons.is_empty() {
            reasons.push("no backend runs ComfyUME's backend extension with these nodes".into());
        }
        Err(reasons.join("; "))
    }

    /// Forgets the cache; the next request fetches again.
    pub async fn invalidate(&self) {
        *self.current.lock().await = None;
    }

    async fn fetch(&self) -> Result<Snapshot, CatalogueError> {
        let mut snapshot = Snapshot::default();
        let mut errors = Vec::new();
        let mut reached = 0;
        for backend in &self.backends {
            match backend.object_info().await {
                Ok(nodes) => {
                    reached += 1;
                    let mut abilities = Abilities::of(&nodes);
                    match backend.validator_signatures().await {
                        Ok(Some(signatures)) => {
                            abilities.runs_validators = true;
                            snapshot.signatures.merge_from(signatures);
                        }
                        Ok(None) => {}
                        // Without them, the checks they decide are left to
                        // the backend that runs each job.
                        Err(e) => {
                            tracing::warn!(backend = %backend.name, error = %e, "could not read the signatures of the nodes' validators")
                        }
                    }
                    snapshot.abilities.insert(backend.name.clone(), abilities);
                    for (class, info) in nodes {
                        snapshot.nodes.entry(class).or_insert(info);
                    }
                }
                Err(e) => {
                    tracing::warn!(backend = %backend.name, error = %e, "node catalogue fetch failed");
                    errors.push(e);
                    continue;
                }
            }
            match backend.devices().await {
                Ok(Some(devices)) => {
                    snapshot.devices.extend(devices.into_iter().map(|mut d| {
                        if let Some(o) = d.as_object_mut() {
                            o.insert("backend".into(), Value::String(backend.name.clone()));
                        }
                        d
                    }));
                }
                Ok(None) => {}
                // The catalogue is what matters; the devices only inform
                // `/system_stats`.
                Err(e) => {
                    tracing::warn!(backend = %backend.name, error = %e, "could not read the backend's devices")
                }
            }
        }
        if reached == 0 {
            let reason = if errors.is_empty() {
                "no backends are configured".to_string()
            } else {
                errors
                    .iter()
                    .map(BackendError::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return Err(CatalogueError::NoBackend(reason));
        }
        Ok(snapshot)
    }

    async fn save(&self, s: &Snapshot) {
        let body = serde_json::json!({"nodes": s.nodes, "devices": s.devices});
        let tmp = self.cache_file.with_extension("json.tmp");
        let result = async {
            tokio::fs::write(&tmp, serde_json::to_vec(&body)?).await?;
            tokio::fs::rename(&tmp, &self.cache_file).await
        };
        if let Err(e) = result.await {
            tracing::warn!(error = %e, file = %self.cache_file.display(), "could not save the node catalogue");
        }
    }

    /// The saved catalogue; `None` (with the reason logged, unless there is
    /// simply none yet) when it cannot be used.
    async fn load(&self) -> Option<Snapshot> {
        let file = self.cache_file.display();
        let bytes = match tokio::fs::read(&self.cache_file).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(%file, error = %e, "the saved node catalogue cannot be read");
                return None;
            }
        };
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(%file, error = %e, "the saved node catalogue is corrupt");
                return None;
            }
        };
        Some(Snapshot {
            abilities: Default::default(),
            signatures: Signatures::default(),
            nodes: v.get("nodes")?.as_object()?.clone(),
            devices: v
                .get("devices")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn abilities_decide_where_a_prompt_can_run() {
        let nodes = json!({
            "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["a.safetensors"], {}]}}},
            "SaveImage": {"input": {"required": {"filename_prefix": ["STRING", {}]}}},
        });
        let here = Abilities::of(nodes.as_object().unwrap());
        let ok = json!({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
                        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}});
        let other_model = json!({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.safetensors"}}});
        let other_node = json!({"1": {"class_type": "KSampler", "inputs": {}}});
        assert!(here.can_run(&Requirements::of(&ok)));
        assert!(!here.can_run(&Requirements::of(&other_model)));
        assert!(!here.can_run(&Requirements::of(&other_node)));
        assert_eq!(
            Requirements::of(&ok)
                .model_files()
                .into_iter()
                .collect::<Vec<_>>(),
            ["a.safetensors"]
        );
    }
}
