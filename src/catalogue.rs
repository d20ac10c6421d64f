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

use crate::backend::{BackendClient, BackendError};

/// What the backends told us, merged.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// `class_type` → NodeInfo, passed through untouched.
    pub nodes: Map<String, Value>,
    /// The backends' devices, from their `/system_stats`.
    pub devices: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("no GPU backend could be reached to fetch the node catalogue ({0})")]
    NoBackend(String),
}

pub struct Catalogue {
    backends: Vec<BackendClient>,
    cache_file: PathBuf,
    current: Mutex<Option<Arc<Snapshot>>>,
}

impl Catalogue {
    pub fn new(backends: Vec<BackendClient>, cache_file: PathBuf) -> Self {
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
            if let Ok(stats) = backend.system_stats().await {
                if let Some(devices) = stats.get("devices").and_then(Value::as_array) {
                    snapshot
                        .devices
                        .extend(devices.iter().cloned().map(|mut d| {
                            if let Some(o) = d.as_object_mut() {
                                o.insert("backend".into(), Value::String(backend.name.clone()));
                            }
                            d
                        }));
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

    async fn load(&self) -> Option<Snapshot> {
        let bytes = tokio::fs::read(&self.cache_file).await.ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        Some(Snapshot {
            nodes: v.get("nodes")?.as_object()?.clone(),
            devices: v
                .get("devices")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// One node's info with the user's input images substituted into every
/// image-upload picker. Stock ComfyUI marks those inputs with
/// `image_upload: true`; the choices are either the first element of the
/// spec (`[[choices…], {…}]`) or, in the newer form, `["COMBO", {"options": […]}]`.
pub fn personalise(info: &Value, input_images: &[String]) -> Value {
    let mut info = info.clone();
    for section in ["required", "optional"] {
        let Some(inputs) = info
            .pointer_mut(&format!("/input/{section}"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for spec in inputs.values_mut() {
            let Some(parts) = spec.as_array_mut() else {
                continue;
            };
            let is_image_picker = parts
                .get(1)
                .and_then(|o| o.get("image_upload"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !is_image_picker {
                continue;
            }
            let choices = Value::Array(input_images.iter().cloned().map(Value::String).collect());
            if parts.first().is_some_and(Value::is_array) {
                parts[0] = choices;
            } else if let Some(opts) = parts.get_mut(1).and_then(Value::as_object_mut) {
                if opts.contains_key("options") {
                    opts.insert("options".into(), choices);
                }
            }
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn substitutes_both_combo_forms() {
        let old = json!({"input": {"required": {"image": [["other_users.png"], {"image_upload": true}]}}});
        let out = personalise(&old, &["mine.png".into()]);
        assert_eq!(out["input"]["required"]["image"][0], json!(["mine.png"]));

        let new = json!({"input": {"required": {"image": ["COMBO", {"image_upload": true, "options": ["x.png"]}]}}});
        let out = personalise(&new, &[]);
        assert_eq!(out["input"]["required"]["image"][1]["options"], json!([]));
    }

    #[test]
    fn leaves_other_combos_alone() {
        let info = json!({"input": {"required": {"ckpt_name": [["a.safetensors"], {}]}}});
        assert_eq!(personalise(&info, &["mine.png".into()]), info);
    }
}
