//! `comfyume doctor`: before a workshop, checks what the room will need and
//! says, line by line, what is fine, what deserves a look and what will
//! fail: the configuration, the data directory and its free disk, the
//! frontend files and their version, each GPU backend, and whether every
//! workshop template's nodes exist on the backends that will run it.

use std::fmt;
use std::path::Path;

use serde_json::Value;

use crate::backend::Backend;
use crate::config::Config;
use crate::frontend::{Frontend, PINNED_VERSION};
use crate::templates::Templates;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    pub what: String,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{mark}  {:<22} {}", self.what, self.detail)
    }
}

fn finding(verdict: Verdict, what: &str, detail: impl Into<String>) -> Finding {
    Finding {
        verdict,
        what: what.to_string(),
        detail: detail.into(),
    }
}

/// Free disk below which the data directory fails, and warns.
const DISK_FAIL_BYTES: u64 = 1 << 30;
const DISK_WARN_BYTES: u64 = 10 << 30;

/// Every check, in order. `backends` are the ones `serve` would use.
pub async fn examine(config: &Config, backends: &[Backend]) -> Vec<Finding> {
    let mut report = vec![data_dir(&config.data_dir)];
    report.push(frontend(&config.frontend_dir));
    let mut catalogues = Vec::new();
    if backends.is_empty() {
        report.push(finding(
            Verdict::Ok,
            "GPU backends",
            "none configured: `serve` starts two built-in simulators",
        ));
        catalogues.push((
            "the built-in simulator".to_string(),
            comfyume_sim::catalogue(),
        ));
    }
    for backend in backends {
        let what = format!("backend {}", backend.name);
        match backend.check().await {
            Err(e) => report.push(finding(Verdict::Fail, &what, e.to_string())),
            Ok(()) => match backend.object_info().await {
                Ok(nodes) => {
                    report.push(finding(
                        Verdict::Ok,
                        &what,
                        format!(
                            "{} at {}: {} nodes",
                            backend.kind_name(),
                            backend.url(),
                            nodes.len()
                        ),
                    ));
                    catalogues.push((backend.name.clone(), nodes));
                }
                Err(e) => report.push(finding(Verdict::Fail, &what, e.to_string())),
            },
        }
    }
    report.extend(templates(config, &catalogues));
    report
}

fn data_dir(dir: &Path) -> Finding {
    let what = "data directory";
    if let Err(e) = std::fs::create_dir_all(dir) {
        return finding(Verdict::Fail, what, format!("{}: {e}", dir.display()));
    }
    let probe = dir.join(".comfyume-doctor");
    if let Err(e) = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe)) {
        return finding(
            Verdict::Fail,
            what,
            format!("{} is not writable: {e}", dir.display()),
        );
    }
    match rustix::fs::statvfs(dir) {
        Ok(stats) => {
            let free = stats.f_bavail.saturating_mul(stats.f_frsize);
            let verdict = if free < DISK_FAIL_BYTES {
                Verdict::Fail
            } else if free < DISK_WARN_BYTES {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            finding(
                verdict,
                what,
                format!("{}: {:.1} GB free", dir.display(), free as f64 / 1e9),
            )
        }
        Err(e) => finding(
            Verdict::Warn,
            what,
            format!("{}: free space unknown ({e})", dir.display()),
        ),
    }
}

fn frontend(dir: &Path) -> Finding {
    let what = "frontend";
    match Frontend::open(dir) {
        Err(e) => finding(Verdict::Fail, what, e.to_string()),
        Ok(f) => match f.version.as_deref() {
            Some(PINNED_VERSION) => finding(
                Verdict::Ok,
                what,
                format!("{PINNED_VERSION} at {}", dir.display()),
            ),
            Some(other) => finding(
                Verdict::Warn,
                what,
                format!(
                    "version {other} at {}; ComfyUME is made for {PINNED_VERSION}",
                    dir.display()
                ),
            ),
            None => finding(
                Verdict::Warn,
                what,
                format!(
                    "{}: version unknown (no .dist-info beside it)",
                    dir.display()
                ),
            ),
        },
    }
}

/// Node types a workflow in the frontend's format uses that only the
/// frontend knows (they never reach a backend).
const FRONTEND_ONLY: [&str; 5] = [
    "Note",
    "MarkdownNote",
    "Reroute",
    "PrimitiveNode",
    "GroupNode",
];

/// The node types a workflow (in the frontend's format) asks of a backend:
/// those of its top-level nodes and of the nodes inside its subgraph
/// definitions, but not the subgraphs' own ids (a node whose type is a
/// subgraph id stands for the nodes inside it) nor frontend-only nodes.
fn node_types(workflow: &Value) -> std::collections::BTreeSet<&str> {
    let subgraphs: Vec<&Value> = workflow
        .pointer("/definitions/subgraphs")
        .and_then(Value::as_array)
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    let subgraph_ids: std::collections::HashSet<&str> = subgraphs
        .iter()
        .filter_map(|s| s.get("id").and_then(Value::as_str))
        .collect();
    std::iter::once(workflow)
        .chain(subgraphs.iter().copied())
        .filter_map(|graph| graph.get("nodes").and_then(Value::as_array))
        .flatten()
        .filter_map(|n| n.get("type").and_then(Value::as_str))
        .filter(|t| !FRONTEND_ONLY.contains(t) && !subgraph_ids.contains(t))
        .collect()
}

/// Whether each template's nodes exist on every reachable backend.
fn templates(
    config: &Config,
    catalogues: &[(String, serde_json::Map<String, Value>)],
) -> Vec<Finding> {
    let templates = match Templates::open(config.templates_dir.as_deref()) {
        Ok(t) => t,
        Err(e) => return vec![finding(Verdict::Fail, "templates", e.to_string())],
    };
    if templates.is_empty() {
        return vec![finding(Verdict::Ok, "templates", "none configured")];
    }
    let mut report = Vec::new();
    for (name, path) in templates.workflows() {
        let what = format!("template {name}");
        let workflow: Value = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(w) => w,
            Err(e) => {
                report.push(finding(
                    Verdict::Fail,
                    &what,
                    format!("{}: {e}", path.display()),
                ));
                continue;
            }
        };
        let needs = node_types(&workflow);
        let lacking: Vec<String> = catalogues
            .iter()
            .filter_map(|(backend, nodes)| {
                let missing: Vec<&str> = needs
                    .iter()
                    .copied()
                    .filter(|n| !nodes.contains_key(*n))
                    .collect();
                (!missing.is_empty()).then(|| format!("{backend} lacks {}", missing.join(", ")))
            })
            .collect();
        report.push(if catalogues.is_empty() {
            finding(
                Verdict::Warn,
                &what,
                "no reachable backend to check it against",
            )
        } else if lacking.is_empty() {
            finding(
                Verdict::Ok,
                &what,
                format!("{} node types, on every backend", needs.len()),
            )
        } else {
            finding(Verdict::Warn, &what, lacking.join("; "))
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_templates_node_types_include_its_subgraphs_insides() {
        let workflow = json!({
            "nodes": [
                {"id": 1, "type": "LoadImage"},
                {"id": 2, "type": "5f3c-subgraph"},
                {"id": 3, "type": "Note"},
            ],
            "definitions": {"subgraphs": [
                {"id": "5f3c-subgraph", "nodes": [{"id": 1, "type": "ImageInvert"}, {"id": 2, "type": "Reroute"}]},
            ]},
        });
        let types: Vec<&str> = node_types(&workflow).into_iter().collect();
        assert_eq!(types, ["ImageInvert", "LoadImage"]);
    }
}
