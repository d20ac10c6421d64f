//! `comfyume doctor`: before a workshop, checks what the room will need and
//! says, line by line, what is fine, what deserves a look and what will
//! fail: the configuration, the data directory and its free disk, the
//! files bucket (when participants' files are in one), the frontend files and their version, each GPU backend, whether every
//! workshop template's nodes exist on the backends that will run it, the
//! warm-up prompt on each backend (timed cold, then warm), and whether the
//! slots can carry the room.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// Fail past the fail threshold, else warn past the warn one.
fn graded(fails: bool, warns: bool) -> Verdict {
    if fails {
        Verdict::Fail
    } else if warns {
        Verdict::Warn
    } else {
        Verdict::Ok
    }
}

fn finding(verdict: Verdict, what: &str, detail: impl Into<String>) -> Finding {
    Finding {
        verdict,
        what: what.to_string(),
        detail: detail.into(),
    }
}

/// Free disk below which the data directory warns (it fails below
/// `limits.min_free_disk_bytes`, where the disk guard refuses new files).
const DISK_WARN_BYTES: u64 = 10 << 30;

/// The room the capacity estimate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub participants: u32,
    /// Jobs each participant queues at once (everyone presses Run
    /// together: the moment a workshop waits longest).
    pub jobs_each: u32,
}

/// How long the last participant may wait for a round of jobs before the
/// estimate warns, and fails.
const ROUND_WARN: Duration = Duration::from_secs(120);
const ROUND_FAIL: Duration = Duration::from_secs(600);

/// Every check, in order. `backends` are the ones `serve` would use.
pub async fn examine(config: &Config, backends: &[Backend], room: Room) -> Vec<Finding> {
    let mut report = vec![data_dir(
        &config.data_dir,
        config.limits.min_free_disk_bytes,
    )];
    if let Some(bucket) = files_bucket(config).await {
        report.push(bucket);
    }
    report.push(frontend(&config.frontend_dir));
    report.push(folder(
        config.official_templates_dir.as_deref(),
        "official template gallery",
        "index.json",
    ));
    report.push(folder(
        config.node_docs_dir.as_deref(),
        "node documentation",
        "KSampler/en.md",
    ));
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
    let mut reachable = Vec::new();
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
                    reachable.push(backend);
                }
                Err(e) => report.push(finding(Verdict::Fail, &what, e.to_string())),
            },
        }
    }
    report.extend(templates(config, &catalogues));
    if backends.is_empty() {
        return report;
    }
    let timings = warmups(config, &reachable, &mut report).await;
    report.push(capacity(room, &timings));
    report
}

/// One backend's measured pace: its slots, and a warm job's duration.
struct Pace {
    slots: u32,
    per_job: Duration,
}

/// Runs the warm-up prompt twice on each reachable backend: the first run
/// loads the model (what `serve` does when a backend comes up), the second
/// is the time a job takes once warm.
async fn warmups(config: &Config, backends: &[&Backend], report: &mut Vec<Finding>) -> Vec<Pace> {
    let prompt = match crate::app::load_warmup(config.dispatch.warmup_prompt.as_deref()) {
        Err(e) => {
            report.push(finding(Verdict::Fail, "warm-up", e.to_string()));
            return Vec::new();
        }
        Ok(None) => {
            report.push(finding(
                Verdict::Warn,
                "warm-up",
                "no dispatch.warmup_prompt: the first job on each GPU waits for its model \
                 to load, and no job can be timed",
            ));
            return Vec::new();
        }
        Ok(Some(prompt)) => prompt,
    };
    let limit = Duration::from_secs(config.dispatch.job_timeout_seconds);
    let mut paces = Vec::new();
    for backend in backends {
        let what = format!("warm-up {}", backend.name);
        let timed = async {
            let cold = timed_run(backend, &prompt).await?;
            let warm = timed_run(backend, &prompt).await?;
            Ok::<_, String>((cold, warm))
        };
        match tokio::time::timeout(limit * 2, timed).await {
            Err(_) => report.push(finding(
                Verdict::Fail,
                &what,
                format!(
                    "did not finish within 2 × {}s (dispatch.job_timeout_seconds)",
                    limit.as_secs()
                ),
            )),
            Ok(Err(reason)) => report.push(finding(Verdict::Fail, &what, reason)),
            Ok(Ok((cold, warm))) => {
                report.push(finding(
                    Verdict::Ok,
                    &what,
                    format!("ran in {} cold, {} warm", seconds(cold), seconds(warm)),
                ));
                paces.push(Pace {
                    slots: backend.slots,
                    per_job: warm,
                });
            }
        }
    }
    paces
}

async fn timed_run(backend: &Backend, prompt: &Value) -> Result<Duration, String> {
    let started = Instant::now();
    crate::dispatch::warmup::run(backend, prompt).await?;
    Ok(started.elapsed())
}

/// Whether the slots carry the room: how long after everyone presses Run
/// together the last job is done, taking each slot to run jobs one after
/// another at its backend's warm pace.
fn capacity(room: Room, paces: &[Pace]) -> Finding {
    let what = "capacity";
    if paces.is_empty() {
        return finding(
            Verdict::Warn,
            what,
            "unknown: no backend ran a timed warm-up prompt",
        );
    }
    if room.participants == 0 {
        return finding(
            Verdict::Warn,
            what,
            "no participant accounts yet: add them, or pass --participants N",
        );
    }
    let jobs_per_second: f64 = paces
        .iter()
        .map(|p| f64::from(p.slots) / p.per_job.as_secs_f64().max(1e-3))
        .sum();
    let jobs = f64::from(room.participants) * f64::from(room.jobs_each);
    let round = Duration::from_secs_f64(jobs / jobs_per_second);
    let slots: u32 = paces.iter().map(|p| p.slots).sum();
    let verdict = graded(round > ROUND_FAIL, round > ROUND_WARN);
    finding(
        verdict,
        what,
        format!(
            "{} participants × {} job{} on {slots} slot{} ({jobs_per_second:.2} jobs/s warm): \
             the last is done {} after everyone presses Run",
            room.participants,
            room.jobs_each,
            if room.jobs_each == 1 { "" } else { "s" },
            if slots == 1 { "" } else { "s" },
            seconds(round),
        ),
    )
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// `min_free`: what the disk guard keeps free; below it the room could
/// not save a single upload or output.
fn data_dir(dir: &Path, min_free: u64) -> Finding {
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
    match crate::disk::free_bytes(dir) {
        Ok(free) => {
            let verdict = graded(free < min_free, free < DISK_WARN_BYTES.max(min_free));
            finding(
                verdict,
                what,
                format!("{}: {:.1} GB free", dir.display(), free as f64 / 1e9),
            )
        }
        Err(e) => finding(Verdict::Warn, what, e.to_string()),
    }
}

/// Participants' files in a bucket: reachable, and keeping conditional
/// writes (what `serve` also checks before it starts).
async fn files_bucket(config: &Config) -> Option<Finding> {
    let url = config.files.url.as_deref()?;
    const WHAT: &str = "files bucket";
    let store = match crate::buckets::files_bucket(&config.files) {
        Ok(store) => store?,
        Err(e) => return Some(finding(Verdict::Fail, WHAT, e)),
    };
    Some(
        match crate::buckets::check_files_bucket(store.as_ref(), url).await {
            Ok(()) => finding(
                Verdict::Ok,
                WHAT,
                format!("{url}: reachable, writable, keeps conditional writes"),
            ),
            Err(e) => finding(Verdict::Fail, WHAT, e),
        },
    )
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

/// A folder fetched beside the frontend (`marker` is a file it holds):
/// there, switched off (`""`), or missing (a warning: the gateway serves
/// without it).
fn folder(dir: Option<&Path>, what: &str, marker: &str) -> Finding {
    let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty()) else {
        return finding(Verdict::Ok, what, "switched off");
    };
    if dir.join(marker).is_file() {
        finding(Verdict::Ok, what, dir.display().to_string())
    } else {
        finding(
            Verdict::Warn,
            what,
            format!(
                "not at {} (scripts/fetch-frontend.sh fetches it); participants go without it",
                dir.display()
            ),
        )
    }
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
    fn the_data_directory_fails_below_what_the_disk_guard_keeps_free() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(data_dir(dir.path(), u64::MAX).verdict, Verdict::Fail);
        assert_ne!(data_dir(dir.path(), 0).verdict, Verdict::Fail);
    }

    fn pace(slots: u32, ms: u64) -> Pace {
        Pace {
            slots,
            per_job: Duration::from_millis(ms),
        }
    }

    #[test]
    fn capacity_adds_up_every_slot_at_its_own_pace() {
        let room = Room {
            participants: 40,
            jobs_each: 1,
        };
        // 2 jobs/s + 1 job/s: 40 jobs in 13.3 s.
        let f = capacity(room, &[pace(2, 1000), pace(1, 1000)]);
        assert_eq!(f.verdict, Verdict::Ok, "{f}");
        assert!(f.detail.contains("3 slots (3.00 jobs/s warm)"), "{f}");
        assert!(f.detail.contains("done 13.3 s after"), "{f}");

        // 40 × 2 jobs of 10 s on one slot: 800 s.
        let slow = capacity(
            Room {
                jobs_each: 2,
                ..room
            },
            &[pace(1, 10_000)],
        );
        assert_eq!(slow.verdict, Verdict::Fail, "{slow}");
        assert!(slow.detail.contains("13m20s"), "{slow}");
        let tight = capacity(room, &[pace(1, 5_000)]);
        assert_eq!(tight.verdict, Verdict::Warn, "{tight}");

        assert_eq!(capacity(room, &[]).verdict, Verdict::Warn);
        let empty = Room {
            participants: 0,
            ..room
        };
        assert_eq!(capacity(empty, &[pace(1, 10)]).verdict, Verdict::Warn);
    }

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
