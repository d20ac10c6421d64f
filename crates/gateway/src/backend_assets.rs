//! What the GPU backends serve beside running prompts, merged for the
//! participants, since custom node packs and models live on the backends,
//! not on the gateway: the packs' frontend files (`/extensions/<pack>/…`)
//! and their place in the `/extensions` list, their translations
//! (`/i18n`), their example workflows (`/workflow_templates`), and the
//! model lists (`/models…`, `/experiment/models…`, `/embeddings`,
//! `/view_metadata/…`).
//!
//! Every enabled, reachable backend of the active group is asked (a worker
//! relays the question to its ComfyUI); the answers are merged the way one
//! ComfyUI holding all those packs and models would answer. Each backend's
//! answer is kept for a while, within a bound, so a room loading its pages
//! asks each backend about once a minute; a backend that failed is not
//! asked again for a few seconds, so a hung one does not hold every page
//! load up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use comfyume_protocol::Fetched;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::backend::Backend;

/// How long a backend's answer about lists (extensions, models,
/// translations, templates) is reused.
const LISTS_FOR: Duration = Duration::from_secs(60);
/// How long a pack's file is reused.
const FILES_FOR: Duration = Duration::from_secs(600);
/// The most bytes of answers kept.
const MAX_KEPT_BYTES: usize = 64 * 1024 * 1024;
/// The most answers kept (paths can carry participants' folder names).
const MAX_KEPT: usize = 2048;
/// How long one backend may take to answer before it is left out.
const WAIT: Duration = Duration::from_secs(10);
/// How long a backend that failed to answer is left out.
const FAILED_FOR: Duration = Duration::from_secs(15);

/// A file a backend served: its bytes and type.
#[derive(Debug, Clone)]
pub struct Asset {
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// The backends' files and lists, cached.
pub struct BackendAssets {
    backends: Vec<Backend>,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    answers: HashMap<(usize, String), (Instant, Arc<Fetched>)>,
    bytes: usize,
    /// When each backend last failed to answer.
    failed: HashMap<usize, Instant>,
}

impl Kept {
    fn get(&self, key: &(usize, String), fresh_for: Duration) -> Option<Arc<Fetched>> {
        self.answers
            .get(key)
            .filter(|(at, _)| at.elapsed() < fresh_for)
            .map(|(_, answer)| answer.clone())
    }

    fn insert(&mut self, key: (usize, String), answer: Arc<Fetched>) {
        if answer.body.len() > MAX_KEPT_BYTES / 8 {
            return;
        }
        if let Some((_, old)) = self.answers.remove(&key) {
            self.bytes -= old.body.len();
        }
        while self.answers.len() >= MAX_KEPT || self.bytes + answer.body.len() > MAX_KEPT_BYTES {
            let Some(oldest) = self
                .answers
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((_, old)) = self.answers.remove(&oldest) {
                self.bytes -= old.body.len();
            }
        }
        self.bytes += answer.body.len();
        self.answers.insert(key, (Instant::now(), answer));
    }
}

impl BackendAssets {
    pub fn new(backends: Vec<Backend>) -> Self {
        Self {
            backends,
            kept: Mutex::new(Kept::default()),
        }
    }

    /// Each asked backend's answer to `GET path`, in configuration order;
    /// a backend that failed to answer is left out (and logged).
    async fn gather(
        &self,
        path: &str,
        asked: &(dyn Fn(&Backend) -> bool + Sync),
        fresh_for: Duration,
    ) -> Vec<Arc<Fetched>> {
        let asking = self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| asked(b))
            .map(|(i, backend)| async move {
                let key = (i, path.to_string());
                {
                    let kept = self.kept.lock().await;
                    if let Some(answer) = kept.get(&key, fresh_for) {
                        return Some(answer);
                    }
                    if kept.failed.get(&i).is_some_and(|at| at.elapsed() < FAILED_FOR) {
                        return None;
                    }
                }
                let failure = match tokio::time::timeout(WAIT, backend.fetch(path)).await {
                    Ok(Ok(answer)) if answer.status < 500 => {
                        let answer = Arc::new(answer);
                        self.kept.lock().await.insert(key, answer.clone());
                        return Some(answer);
                    }
                    Ok(Ok(answer)) => format!("HTTP {}", answer.status),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {} s", WAIT.as_secs()),
                };
                tracing::warn!(backend = %backend.name, path, reason = %failure, "a backend could not answer; left out for a few seconds");
                self.kept.lock().await.failed.insert(i, Instant::now());
                None
            });
        futures_util::future::join_all(asking)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The JSON 200 answers to `GET path`.
    async fn json(&self, path: &str, asked: &(dyn Fn(&Backend) -> bool + Sync)) -> Vec<Value> {
        self.gather(path, asked, LISTS_FOR)
            .await
            .iter()
            .filter_map(|a| a.json())
            .collect()
    }

    /// `/extensions`: the gateway's own (`own`, the frontend's), then each
    /// backend's custom node packs' scripts, once each.
    pub async fn extensions(
        &self,
        own: &[String],
        asked: &(dyn Fn(&Backend) -> bool + Sync),
    ) -> Vec<String> {
        merge_extensions(own, &self.json("/extensions", asked).await)
    }

    /// A file one backend has: a pack's (`/extensions/<pack>/…`), a
    /// pack's example workflow (`/api/workflow_templates/<pack>/…`), or a
    /// model's metadata (`/view_metadata/<folder>?filename=…`); the first
    /// backend's that answers 200. Packs' files, which do not change while
    /// a backend runs, are kept longer.
    pub async fn file(
        &self,
        path: &str,
        asked: &(dyn Fn(&Backend) -> bool + Sync),
    ) -> Option<Asset> {
        let fresh_for = if is_static(path) {
            FILES_FOR
        } else {
            LISTS_FOR
        };
        self.gather(path, asked, fresh_for)
            .await
            .into_iter()
            .find(|a| a.status == 200)
            .map(|a| Asset {
                content_type: a.content_type.clone(),
                body: a.body.clone(),
            })
    }

    /// `/i18n`: every backend's translations, merged as ComfyUI merges its
    /// packs'.
    pub async fn translations(&self, asked: &(dyn Fn(&Backend) -> bool + Sync)) -> Value {
        self.json("/i18n", asked)
            .await
            .into_iter()
            .fold(Value::Object(Map::new()), merge_json_recursive)
    }

    /// `/workflow_templates`: each pack's example workflows.
    pub async fn templates(&self, asked: &(dyn Fn(&Backend) -> bool + Sync)) -> Value {
        merge_template_lists(&self.json("/workflow_templates", asked).await)
    }

    /// A model list every backend answers: their union, in first-seen
    /// order (`/models…` and `/embeddings` by value, `/experiment/models…`
    /// by each item's `name`). `None` when no backend answered 200 (a
    /// folder nobody has: ComfyUI's 404).
    pub async fn model_list(
        &self,
        path: &str,
        asked: &(dyn Fn(&Backend) -> bool + Sync),
    ) -> Option<Value> {
        let lists = self.json(path, asked).await;
        if lists.is_empty() {
            return None;
        }
        Some(if path.starts_with("/experiment/") {
            union_of_lists(&lists, |v| v.get("name").cloned().unwrap_or(Value::Null))
        } else {
            union_of_lists(&lists, |v| v.clone())
        })
    }
}

/// Files ComfyUI serves as they are (packs' files and example workflows):
/// a query changes nothing there.
pub fn is_static(path: &str) -> bool {
    path.starts_with("/extensions/") || path.starts_with("/api/workflow_templates/")
}

/// The frontend's own extensions, then each backend's packs' scripts
/// (`/extensions/<pack>/…`; never its copy of the frontend's own, which
/// the gateway serves from its web root), once each.
pub fn merge_extensions(own: &[String], answers: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = own.to_vec();
    let mut seen: std::collections::HashSet<String> = own.iter().cloned().collect();
    for answer in answers {
        for entry in answer.as_array().into_iter().flatten() {
            let Some(path) = entry.as_str() else { continue };
            if is_pack_file(path) && seen.insert(path.to_string()) {
                out.push(path.to_string());
            }
        }
    }
    out
}

/// `/extensions/<pack>/<file>` of a custom node pack: not the frontend's
/// own `/extensions/core/…`.
pub fn is_pack_file(path: &str) -> bool {
    path.strip_prefix("/extensions/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(pack, file)| !pack.is_empty() && pack != "core" && !file.is_empty())
}

/// `utils/json_util.py` `merge_json_recursive`: objects merged key by key,
/// lists concatenated, anything else replaced by the update.
pub fn merge_json_recursive(base: Value, update: Value) -> Value {
    match (base, update) {
        (Value::Object(mut base), Value::Object(update)) => {
            for (key, value) in update {
                let merged = match base.remove(&key) {
                    Some(old) => merge_json_recursive(old, value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Value::Object(base)
        }
        (Value::Array(mut base), Value::Array(update)) => {
            base.extend(update);
            Value::Array(base)
        }
        (_, update) => update,
    }
}

/// Pack → its example workflows' names, over every backend, each name once.
pub fn merge_template_lists(answers: &[Value]) -> Value {
    let mut out = Map::new();
    for answer in answers {
        for (pack, names) in answer.as_object().into_iter().flatten() {
            let list = out
                .entry(pack.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let (Value::Array(list), Some(names)) = (list, names.as_array()) {
                for name in names {
                    if !list.contains(name) {
                        list.push(name.clone());
                    }
                }
            }
        }
    }
    Value::Object(out)
}

/// The items of every list, first seen first, one per `key`.
fn union_of_lists(lists: &[Value], key: impl Fn(&Value) -> Value) -> Value {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for item in lists.iter().filter_map(Value::as_array).flatten() {
        if seen.insert(key(item).to_string()) {
            out.push(item.clone());
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A backend that does not answer is left out, and remembered as
    /// failed, so the next page load does not wait for it again.
    #[tokio::test]
    async fn a_backend_that_fails_is_left_out_for_a_while() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = crate::config::BackendConfig::new(
            "gone",
            crate::config::BackendKind::Comfyui,
            format!("http://{closed}"),
            1,
        );
        let backend = Backend::new(&config, Backend::http_client().unwrap()).unwrap();
        let assets = BackendAssets::new(vec![backend]);
        let everyone = |_: &Backend| true;
        assert!(assets.json("/models", &everyone).await.is_empty());
        assert!(assets.kept.lock().await.failed.contains_key(&0));
    }

    #[test]
    fn extensions_add_the_backends_packs_once() {
        let own = vec!["/extensions/core/a.js".to_string()];
        let answers = [
            json!([
                "/extensions/core/a.js",
                "/extensions/core/b.js",
                "/extensions/pack/web.js"
            ]),
            json!(["/extensions/pack/web.js", "/extensions/other/x/y.js"]),
        ];
        assert_eq!(
            merge_extensions(&own, &answers),
            [
                "/extensions/core/a.js",
                "/extensions/pack/web.js",
                "/extensions/other/x/y.js"
            ]
        );
        assert!(!is_pack_file("/extensions/pack/"));
        assert!(!is_pack_file("/extensions/core/x.js"));
        assert!(!is_pack_file("/scripts/app.js"));
    }

    #[test]
    fn translations_merge_as_comfyui_merges_them() {
        let merged = [
            json!({"en": {"nodeDefs": {"A": {"display_name": "A"}}, "list": [1]}}),
            json!({"en": {"nodeDefs": {"B": {"display_name": "B"}}, "list": [2]}, "fr": {"x": 1}}),
        ]
        .into_iter()
        .fold(json!({}), merge_json_recursive);
        assert_eq!(
            merged,
            json!({"en": {"nodeDefs": {"A": {"display_name": "A"}, "B": {"display_name": "B"}}, "list": [1, 2]}, "fr": {"x": 1}})
        );
    }

    #[test]
    fn lists_are_unions() {
        assert_eq!(
            merge_template_lists(&[
                json!({"p": ["a", "b"]}),
                json!({"p": ["b", "c"], "q": ["d"]})
            ]),
            json!({"p": ["a", "b", "c"], "q": ["d"]})
        );
        assert_eq!(
            union_of_lists(&[json!(["a.safetensors", "b"]), json!(["b", "c"])], |v| v
                .clone()),
            json!(["a.safetensors", "b", "c"])
        );
        assert_eq!(
            union_of_lists(
                &[
                    json!([{"name": "x", "pathIndex": 0}]),
                    json!([{"name": "x", "pathIndex": 1}, {"name": "y"}])
                ],
                |v| v["name"].clone()
            ),
            json!([{"name": "x", "pathIndex": 0}, {"name": "y"}])
        );
    }
}
