//! Which nodes run, in what order, and which are already cached: stock's
//! `ExecutionList` and `CacheKeySetInputSignature` (S:comfy_execution/
//! graph.py, caching.py), reproduced rule for rule.
//!
//! **Execution order.** Each output node to execute (in the prompt's
//! order) is added with a depth-first walk over its inputs: a stack seeded
//! with the node; popping a node appends it to the *pending* list and
//! pushes the sources of its linked inputs in input order, so the *last*
//! input is visited first. Sources already cached are not added. Then,
//! until nothing is pending, among the pending nodes whose inputs are all
//! available (in pending order) the executor stages:
//! 1. the first output node;
//! 2. else the first node that directly feeds an output node;
//! 3. else the first node two links upstream of an output node;
//! 4. else the first one.
//!
//! For `1 EmptyImage → 2 ImageInvert → 3 SaveImage` plus `4 PreviewImage(1)`
//! this gives 1, 4, 2, 3: the preview runs as soon as its input exists.
//! Output nodes that are cached themselves are still staged, and replay
//! their UI (`executed`) without running.
//!
//! **Caching.** A node's signature is its class, its `IS_CHANGED` value and
//! its inputs sorted by name, with links replaced by the position of the
//! source in the node's ancestry, followed by the same for every ancestor.
//! Equal signature, equal result: a node is cached if an entry with its
//! signature survives from the previous prompt. Before each prompt, entries
//! whose signature no node of the new prompt has are dropped (stock's
//! classic cache), so the cache holds at most one prompt's worth.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// `[node_id, socket]` when `value` is a link (stock's `is_link`).
pub(crate) fn as_link(value: &Value) -> Option<(&str, usize)> {
    match value.as_array()?.as_slice() {
        [Value::String(id), Value::Number(socket)] => {
            let socket = socket.as_u64().or_else(|| {
                socket
                    .as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })?;
            Some((id.as_str(), usize::try_from(socket).ok()?))
        }
        _ => None,
    }
}

/// A node's `inputs` object (empty if absent).
pub(crate) fn inputs(node: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    node.get("inputs")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

pub(crate) fn class_type(node: &Value) -> &str {
    node.get("class_type").and_then(Value::as_str).unwrap_or("")
}

/// The nodes left to run, and what blocks what.
pub(crate) struct ExecutionList<'a> {
    prompt: &'a Map<String, Value>,
    pending: Vec<String>,
    block_count: HashMap<String, usize>,
    /// For each pending node, the pending nodes waiting on it, in link order.
    blocking: HashMap<String, Vec<String>>,
    is_cached: Box<dyn Fn(&str) -> bool + 'a>,
    is_output: Box<dyn Fn(&str) -> bool + 'a>,
}

impl<'a> ExecutionList<'a> {
    pub fn new(
        prompt: &'a Map<String, Value>,
        is_cached: impl Fn(&str) -> bool + 'a,
        is_output: impl Fn(&str) -> bool + 'a,
    ) -> Self {
        ExecutionList {
            prompt,
            pending: Vec::new(),
            block_count: HashMap::new(),
            blocking: HashMap::new(),
            is_cached: Box::new(is_cached),
            is_output: Box::new(is_output),
        }
    }

    /// Adds `root` and its uncached upstream nodes.
    pub fn add_node(&mut self, root: &str) {
        let mut stack = vec![root.to_owned()];
        let mut links = Vec::new();
        while let Some(id) = stack.pop() {
            if self.pending.contains(&id) {
                continue;
            }
            self.pending.push(id.clone());
            self.block_count.insert(id.clone(), 0);
            self.blocking.insert(id.clone(), Vec::new());
            let Some(node) = self.prompt.get(&id) else {
                continue;
            };
            for value in inputs(node).values() {
                if let Some((from, _)) = as_link(value) {
                    if !(self.is_cached)(from) {
                        stack.push(from.to_owned());
                    }
                    links.push((from.to_owned(), id.clone()));
                }
            }
        }
        for (from, to) in links {
            if (self.is_cached)(&from) || !self.prompt.contains_key(&from) {
                continue;
            }
            self.add_node(&from);
            let blocked = self.blocking.entry(from).or_default();
            if !blocked.contains(&to) {
                blocked.push(to.clone());
                *self.block_count.entry(to).or_default() += 1;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next node to run, or `Err` with the stuck nodes on a cycle.
    pub fn stage(&self) -> Result<String, Vec<String>> {
        let ready: Vec<&String> = self
            .pending
            .iter()
            .filter(|id| self.block_count.get(*id) == Some(&0))
            .collect();
        if ready.is_empty() {
            return Err(self.pending.clone());
        }
        let out = |id: &String| (self.is_output)(id);
        let feeds = |id: &String| self.blocking.get(id).into_iter().flatten();
        let pick = ready
            .iter()
            .find(|id| out(id))
            .or_else(|| ready.iter().find(|id| feeds(id).any(out)))
            .or_else(|| ready.iter().find(|id| feeds(id).any(|b| feeds(b).any(out))))
            .unwrap_or(&ready[0]);
        Ok((*pick).clone())
    }

    /// Marks a staged node as done, unblocking its consumers.
    pub fn complete(&mut self, id: &str) {
        self.pending.retain(|p| p != id);
        self.block_count.remove(id);
        for blocked in self.blocking.remove(id).unwrap_or_default() {
            if let Some(count) = self.block_count.get_mut(&blocked) {
                *count = count.saturating_sub(1);
            }
        }
    }
}

/// The outputs to execute, in the order an uncached run reaches them.
///
/// Stock keeps them in a Python set, whose order varies from process to
/// process; ordering them as they would first run keeps the simulator
/// deterministic, makes cached re-runs replay outputs in the order they
/// were produced, and matches the recorded `["4", "3"]` of the fixture.
/// `is_output_class` tells output node classes.
pub(crate) fn output_order(
    prompt: &Map<String, Value>,
    outputs: &[String],
    is_output_class: impl Fn(&str) -> bool,
) -> Vec<String> {
    let is_output = |id: &str| {
        prompt
            .get(id)
            .is_some_and(|n| is_output_class(class_type(n)))
    };
    let mut list = ExecutionList::new(prompt, |_| false, is_output);
    for output in outputs {
        list.add_node(output);
    }
    let mut order = Vec::new();
    while !list.is_empty() {
        let Ok(id) = list.stage() else {
            return outputs.to_vec();
        };
        list.complete(&id);
        if outputs.contains(&id) {
            order.push(id);
        }
    }
    order
}

/// Every node's cache signature, as a canonical JSON string.
/// `is_changed` gives each node's `IS_CHANGED` value.
pub(crate) fn signatures(
    prompt: &Map<String, Value>,
    is_changed: impl Fn(&str, &Value) -> Value,
) -> HashMap<String, String> {
    let changed: HashMap<&String, Value> = prompt
        .iter()
        .map(|(id, node)| (id, is_changed(id, node)))
        .collect();
    prompt
        .keys()
        .map(|id| {
            let mut order: Vec<&str> = Vec::new();
            ancestry(prompt, id, &mut order);
            let index: HashMap<&str, usize> =
                order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            let mut parts = vec![immediate(prompt, id, &changed, &index)];
            parts.extend(order.iter().map(|a| immediate(prompt, a, &changed, &index)));
            (id.clone(), Value::Array(parts).to_string())
        })
        .collect()
}

/// Ancestors in stock's order: inputs sorted by name, depth first.
fn ancestry<'p>(prompt: &'p Map<String, Value>, id: &str, order: &mut Vec<&'p str>) {
    let Some(node) = prompt.get(id) else {
        return;
    };
    let mut names: Vec<&String> = inputs(node).keys().collect();
    names.sort();
    for name in names {
        if let Some((from, _)) = as_link(&inputs(node)[name])
            && let Some((key, _)) = prompt.get_key_value(from)
            && !order.contains(&key.as_str())
        {
            order.push(key.as_str());
            ancestry(prompt, from, order);
        }
    }
}

fn immediate(
    prompt: &Map<String, Value>,
    id: &str,
    changed: &HashMap<&String, Value>,
    index: &HashMap<&str, usize>,
) -> Value {
    let Some(node) = prompt.get(id) else {
        // A missing node can never be cached: no two signatures share this.
        return json!(["missing", uuid::Uuid::new_v4().to_string()]);
    };
    let mut parts = vec![
        json!(class_type(node)),
        changed.get(&id.to_owned()).cloned().unwrap_or(Value::Null),
    ];
    let mut names: Vec<&String> = inputs(node).keys().collect();
    names.sort();
    for name in names {
        let value = &inputs(node)[name];
        match as_link(value) {
            Some((from, socket)) => {
                let at = index.get(from).map_or(Value::Null, |i| json!(i));
                parts.push(json!([name, ["ANCESTOR", at, socket]]));
            }
            None => parts.push(json!([name, value])),
        }
    }
    Value::Array(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    fn order(prompt: &Map<String, Value>, outputs: &[&str], cached: &[&str]) -> Vec<String> {
        let is_output = |id: &str| matches!(class_type(&prompt[id]), "SaveImage" | "PreviewImage");
        let mut list = ExecutionList::new(prompt, |id| cached.contains(&id), is_output);
        for o in outputs {
            list.add_node(o);
        }
        let mut ran = Vec::new();
        while !list.is_empty() {
            let id = list.stage().expect("no cycle");
            list.complete(&id);
            ran.push(id);
        }
        ran
    }

    fn fixture_graph() -> Map<String, Value> {
        prompt(json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "trace"}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }))
    }

    #[test]
    fn fixture_order_is_1_4_2_3_whatever_the_output_order() {
        let p = fixture_graph();
        assert_eq!(order(&p, &["3", "4"], &[]), ["1", "4", "2", "3"]);
        assert_eq!(order(&p, &["4", "3"], &[]), ["1", "4", "2", "3"]);
    }

    #[test]
    fn cached_sources_are_skipped_but_outputs_are_staged() {
        let p = fixture_graph();
        assert_eq!(order(&p, &["4", "3"], &["1", "2", "3", "4"]), ["4", "3"]);
        assert_eq!(order(&p, &["3", "4"], &["1"]), ["4", "2", "3"]);
    }

    #[test]
    fn txt2img_order_prefers_what_feeds_outputs() {
        let p = prompt(json!({
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["1", 1]}},
            "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0]}},
            "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
            "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "t"}},
        }));
        assert_eq!(order(&p, &["6"], &[]), ["1", "3", "2", "4", "5", "6"]);
    }

    #[test]
    fn cycles_are_reported() {
        let p = prompt(json!({
            "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
        }));
        let mut list = ExecutionList::new(&p, |_| false, |id| id == "3");
        list.add_node("3");
        assert!(list.stage().is_err());
    }

    #[test]
    fn signatures_follow_content_not_ids() {
        let a = fixture_graph();
        let mut b = fixture_graph();
        let same = signatures(&a, |_, _| json!(false));
        assert_eq!(same, signatures(&b, |_, _| json!(false)));
        b["1"]["inputs"]["color"] = json!(255);
        let changed = signatures(&b, |_, _| json!(false));
        for id in ["1", "2", "3", "4"] {
            assert_ne!(same[id], changed[id], "node {id} depends on the colour");
        }
        // The same subgraph under other ids has the same signatures.
        let renamed = prompt(json!({
            "10": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "20": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
        }));
        let r = signatures(&renamed, |_, _| json!(false));
        assert_eq!(r["20"], same["2"]);
    }

    #[test]
    fn links_are_two_element_lists() {
        assert_eq!(as_link(&json!(["1", 0])), Some(("1", 0)));
        assert_eq!(as_link(&json!(["1", 2.0])), Some(("1", 2)));
        assert_eq!(as_link(&json!([1, 0])), None);
        assert_eq!(as_link(&json!(["1", 0, 2])), None);
        assert_eq!(as_link(&json!("1")), None);
    }
}
