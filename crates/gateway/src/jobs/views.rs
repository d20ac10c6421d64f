//! How jobs look on the wire: ComfyUI's `/api/jobs` entries, history items
//! and queue items, built from stored jobs. Pure functions, following
//! ComfyUI's `comfy_execution/jobs.py` (`normalize_queue_item`,
//! `normalize_history_item`, `get_outputs_summary`, `get_all_jobs`).

use serde_json::{Map, Value, json};

use comfyume_domain::{Job, JobState};

const PREVIEWABLE: [&str; 5] = ["images", "video", "audio", "3d", "text"];
const THREE_D: [&str; 5] = [".obj", ".fbx", ".gltf", ".glb", ".usdz"];
const TEXT_FILES: [&str; 3] = [".txt", ".md", ".json"];

/// `[number, prompt_id, prompt, extra_data, outputs_to_execute]`, as in
/// `/queue` and in a history item's `prompt`.
pub fn queue_item(job: &Job) -> Value {
    json!([
        job.number_json(),
        job.id.to_string(),
        job.prompt,
        job.extra_data,
        job.outputs_to_execute
    ])
}

/// Whether ComfyUI would have a history entry for the job: it finished
/// after starting to run (a job cancelled while still queued never ran).
pub fn has_history(job: &Job) -> bool {
    job.state.is_terminal() && job.started_at.is_some()
}

/// A `/history` item.
pub fn history_item(job: &Job) -> Value {
    let success = job.state == JobState::Completed;
    json!({
        "prompt": queue_item(job),
        "outputs": job.outputs,
        "status": {
            "status_str": if success { "success" } else { "error" },
            "completed": success,
            "messages": job.messages,
        },
        "meta": job.meta,
    })
}

/// An `/api/jobs` entry; with `detail`, the extra fields of
/// `/api/jobs/{id}` (outputs, execution status, the workflow).
pub fn job_entry(job: &Job, detail: bool) -> Value {
    let mut entry = Map::new();
    entry.insert("id".into(), json!(job.id.to_string()));
    entry.insert("status".into(), json!(job.state.as_str()));
    entry.insert("priority".into(), job.number_json());
    if let Some(t) = job.extra_data.get("create_time").filter(|t| !t.is_null()) {
        entry.insert("create_time".into(), t.clone());
    }
    if has_history(job) {
        let (start, end, error) = timeline(job);
        insert_some(&mut entry, "execution_start_time", start);
        insert_some(&mut entry, "execution_end_time", end);
        insert_some(&mut entry, "execution_error", error);
        let (count, preview) = outputs_summary(&job.outputs);
        entry.insert("outputs_count".into(), json!(count));
        entry.insert(
            "previewable_outputs_count".into(),
            json!(count_previewable(&job.outputs)),
        );
        insert_some(&mut entry, "preview_output", preview);
    } else {
        entry.insert("outputs_count".into(), json!(0));
        entry.insert("previewable_outputs_count".into(), json!(0));
    }
    if let Some(w) = &job.workflow_id {
        entry.insert("workflow_id".into(), json!(w));
    }
    if detail {
        if has_history(job) {
            entry.insert("outputs".into(), Value::Object(job.outputs.clone()));
            entry.insert(
                "execution_status".into(),
                history_item(job)["status"].clone(),
            );
        }
        entry.insert(
            "workflow".into(),
            json!({"prompt": job.prompt, "extra_data": job.extra_data}),
        );
    }
    Value::Object(entry)
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value.filter(|v| !v.is_null()) {
        map.insert(key.into(), v);
    }
}

/// Start and end times and the error, from the status messages.
fn timeline(job: &Job) -> (Option<Value>, Option<Value>, Option<Value>) {
    let (mut start, mut end, mut error) = (None, None, None);
    for m in &job.messages {
        let (Some(name), Some(data)) = (m.get(0).and_then(Value::as_str), m.get(1)) else {
            continue;
        };
        if !data.is_object() {
            continue;
        }
        match name {
            "execution_start" => start = data.get("timestamp").cloned(),
            "execution_success" | "execution_interrupted" => end = data.get("timestamp").cloned(),
            "execution_error" => {
                end = data.get("timestamp").cloned();
                error = Some(data.clone());
            }
            _ => {}
        }
    }
    (start, end, error)
}

fn is_previewable(media_type: &str, item: &Map<String, Value>) -> bool {
    if PREVIEWABLE.contains(&media_type) {
        return true;
    }
    let format = item.get("format").and_then(Value::as_str).unwrap_or("");
    if format.starts_with("video/") || format.starts_with("audio/") {
        return true;
    }
    let name = item
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_lowercase();
    THREE_D
        .iter()
        .chain(TEXT_FILES.iter())
        .any(|ext| name.ends_with(ext))
}

fn is_text(media_type: &str, item: &Map<String, Value>) -> bool {
    media_type == "text"
        || TEXT_FILES.iter().any(|ext| {
            item.get("filename")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase()
                .ends_with(ext)
        })
}

/// A string output naming a 3D file becomes a file item; other strings are
/// not output items.
fn as_item(item: &Value) -> Option<Map<String, Value>> {
    match item {
        Value::Object(m) => Some(m.clone()),
        Value::String(s) if THREE_D.iter().any(|e| s.to_lowercase().ends_with(e)) => Some(
            json!({"filename": s, "type": "output", "subfolder": "", "mediaType": "3d"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

/// `(outputs_count, preview_output)` as `get_outputs_summary`.
pub fn outputs_summary(outputs: &Map<String, Value>) -> (usize, Option<Value>) {
    let mut count = 0;
    let (mut preview, mut fallback, mut text_file, mut text) = (None, None, None, None);
    for (node_id, node_outputs) in outputs {
        let Some(node_outputs) = node_outputs.as_object() else {
            continue;
        };
        for (media_type, items) in node_outputs {
            let Some(items) = items.as_array().filter(|_| media_type != "animated") else {
                continue;
            };
            for raw in items {
                let Some(item) = as_item(raw) else {
                    if media_type == "text" && preview.is_none() && text.is_none() && !raw.is_null()
                    {
                        let content: String = match raw {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        let mut t = Map::new();
                        if content.chars().count() > 1024 {
                            t.insert(
                                "content".into(),
                                json!(content.chars().take(1024).collect::<String>()),
                            );
                            t.insert("truncated".into(), json!(true));
                        } else {
                            t.insert("content".into(), json!(content));
                        }
                        t.insert("nodeId".into(), json!(node_id));
                        t.insert("mediaType".into(), json!(media_type));
                        text = Some(Value::Object(t));
                    }
                    continue;
                };
                count += 1;
                if preview.is_some() || !is_previewable(media_type, &item) {
                    continue;
                }
                let mut enriched = item.clone();
                enriched.insert("nodeId".into(), json!(node_id));
                enriched
                    .entry("mediaType")
                    .or_insert_with(|| json!(media_type));
                let enriched = Value::Object(enriched);
                if is_text(media_type, &item) {
                    text_file.get_or_insert(enriched);
                } else if item.get("type").and_then(Value::as_str) == Some("output") {
                    preview = Some(enriched);
                } else {
                    fallback.get_or_insert(enriched);
                }
            }
        }
    }
    (count, preview.or(fallback).or(text_file).or(text))
}

fn count_previewable(outputs: &Map<String, Value>) -> usize {
    outputs
        .values()
        .filter_map(Value::as_object)
        .flat_map(|n| n.iter())
        .filter(|(media, items)| *media != "animated" && items.is_array())
        .flat_map(|(media, items)| {
            items
                .as_array()
                .into_iter()
                .flatten()
                .map(move |i| (media, i))
        })
        .filter_map(|(media, i)| as_item(i).map(|item| (media, item)))
        .filter(|(media, item)| is_previewable(media, item))
        .count()
}

/// The query of `GET /api/jobs`, parsed.
#[derive(Debug, Clone)]
pub struct JobsQuery {
    pub statuses: Vec<JobState>,
    pub workflow_id: Option<String>,
    pub by_duration: bool,
    pub descending: bool,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// Parses the query exactly as ComfyUI validates it; `Err` is the message
/// of its 400 body.
pub fn parse_jobs_query(
    q: &std::collections::HashMap<String, String>,
) -> Result<JobsQuery, String> {
    let statuses = match q.get("status").filter(|s| !s.is_empty()) {
        None => JobState::ALL.to_vec(),
        Some(s) => {
            let parts: Vec<&str> = s
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            let invalid: Vec<&str> = parts
                .iter()
                .copied()
                .filter(|p| p.parse::<JobState>().is_err())
                .collect();
            if !invalid.is_empty() {
                return Err(format!(
                    "Invalid status value(s): {}. Valid values: pending, in_progress, completed, failed, cancelled",
                    invalid.join(", ")
                ));
            }
            parts.iter().filter_map(|p| p.parse().ok()).collect()
        }
    };
    let by_duration = match q.get("sort_by").map(String::as_str).unwrap_or("created_at") {
        "created_at" => false,
        "execution_duration" => true,
        _ => return Err("sort_by must be 'created_at' or 'execution_duration'".into()),
    };
    let descending = match q.get("sort_order").map(String::as_str).unwrap_or("desc") {
        "desc" => true,
        "asc" => false,
        _ => return Err("sort_order must be 'asc' or 'desc'".into()),
    };
    let limit = match q.get("limit") {
        None => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => return Err("limit must be a positive integer".into()),
            Err(_) => return Err("limit must be an integer".into()),
        },
    };
    let offset = match q.get("offset") {
        None => 0,
        Some(o) => o
            .parse::<i64>()
            .map_err(|_| "offset must be an integer".to_string())?
            .max(0) as usize,
    };
    let workflow_id = q.get("workflow_id").cloned().filter(|w| !w.is_empty());
    if workflow_id.as_deref().is_some_and(|w| w.contains('\0')) {
        return Err("workflow_id must not contain a NUL character".into());
    }
    Ok(JobsQuery {
        statuses,
        workflow_id,
        by_duration,
        descending,
        limit,
        offset,
    })
}

/// The page of `q` for the store to select.
pub fn store_page(q: &JobsQuery) -> crate::store::JobsPage {
    crate::store::JobsPage {
        states: q.statuses.clone(),
        workflow_id: q.workflow_id.clone(),
        sort: if q.by_duration {
            crate::store::JobsSort::Duration
        } else {
            crate::store::JobsSort::Creation
        },
        descending: q.descending,
        offset: q.offset as u64,
        limit: q.limit.map(|l| l as u64),
    }
}

/// `{"jobs": [...], "pagination": {...}}` from a page the store selected
/// (see [`store_page`]) and the number of jobs that matched.
pub fn jobs_page_from(page: &[Job], total: u64, q: &JobsQuery) -> Value {
    let entries: Vec<Value> = page.iter().map(|j| job_entry(j, false)).collect();
    let has_more = q.offset as u64 + (entries.len() as u64) < total;
    json!({
        "jobs": entries,
        "pagination": {"offset": q.offset, "limit": q.limit, "total": total, "has_more": has_more},
    })
}

/// `{"jobs": [...], "pagination": {...}}` for one user's jobs, paged
/// here: the reference the store's paging is checked against.
#[cfg(test)]
pub fn jobs_page(jobs: &[Job], q: &JobsQuery) -> Value {
    let mut entries: Vec<Value> = jobs
        .iter()
        .filter(|j| q.statuses.contains(&j.state))
        .map(|j| job_entry(j, false))
        .filter(|e| {
            q.workflow_id
                .as_deref()
                .is_none_or(|w| e.get("workflow_id").and_then(Value::as_str) == Some(w))
        })
        .collect();
    let key = |e: &Value| -> i64 {
        if q.by_duration {
            let s = e
                .get("execution_start_time")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let f = e
                .get("execution_end_time")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if s != 0 && f != 0 { f - s } else { 0 }
        } else {
            e.get("create_time").and_then(Value::as_i64).unwrap_or(0)
        }
    };
    // A stable sort, like Python's `sorted`.
    entries.sort_by_key(key);
    if q.descending {
        entries.reverse();
        // `sorted(reverse=True)` keeps equal keys in their original order.
        stable_reverse_ties(&mut entries, key);
    }
    let total = entries.len();
    let page: Vec<Value> = entries
        .into_iter()
        .skip(q.offset)
        .take(q.limit.unwrap_or(usize::MAX))
        .collect();
    let has_more = q.offset + page.len() < total;
    json!({
        "jobs": page,
        "pagination": {"offset": q.offset, "limit": q.limit, "total": total, "has_more": has_more},
    })
}

/// After reversing an ascending stable sort, runs of equal keys are in
/// reverse input order; put each run back in input order.
#[cfg(test)]
fn stable_reverse_ties(entries: &mut [Value], key: impl Fn(&Value) -> i64) {
    let mut start = 0;
    while start < entries.len() {
        let k = key(&entries[start]);
        let mut end = start + 1;
        while end < entries.len() && key(&entries[end]) == k {
            end += 1;
        }
        entries[start..end].reverse();
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comfyume_domain::{JobId, UserId};

    fn job(state: JobState, create: i64) -> Job {
        Job {
            id: JobId::new(),
            seq: create,
            owner: UserId(1),
            state,
            number: create as f64,
            number_is_float: false,
            prompt: json!({"1": {"class_type": "EmptyImage", "inputs": {}}}),
            extra_data: json!({"client_id": "c", "create_time": create}),
            outputs_to_execute: vec!["3".into()],
            partial_targets: None,
            workflow_id: None,
            attempts: 1,
            backend: None,
            slot: None,
            created_at: create,
            started_at: state.is_terminal().then_some(create + 1),
            finished_at: state.is_terminal().then_some(create + 2),
            outputs: Map::new(),
            meta: Map::new(),
            messages: vec![],
            error: None,
        }
    }

    #[test]
    fn pending_entries_are_short() {
        let j = job(JobState::Pending, 10);
        let e = job_entry(&j, false);
        assert_eq!(
            e,
            json!({"id": j.id.to_string(), "status": "pending", "priority": 10, "create_time": 10, "outputs_count": 0, "previewable_outputs_count": 0})
        );
    }

    #[test]
    fn finished_entries_summarise_outputs_like_comfyui() {
        let mut j = job(JobState::Completed, 10);
        j.number_is_float = true;
        j.messages = vec![
            json!(["execution_start", {"prompt_id": "x", "timestamp": 11}]),
            json!(["execution_cached", {"nodes": [], "prompt_id": "x", "timestamp": 11}]),
            json!(["execution_success", {"prompt_id": "x", "timestamp": 15}]),
        ];
        j.outputs = json!({
            "4": {"images": [{"filename": "ComfyUI_temp_a_00001_.png", "subfolder": "", "type": "temp"}]},
            "3": {"images": [{"filename": "trace_00003_.png", "subfolder": "", "type": "output"}]},
        })
        .as_object()
        .cloned()
        .unwrap();
        let e = job_entry(&j, false);
        assert_eq!(e["priority"], json!(10.0));
        assert_eq!(e["execution_start_time"], 11);
        assert_eq!(e["execution_end_time"], 15);
        assert_eq!(e["outputs_count"], 2);
        assert_eq!(e["previewable_outputs_count"], 2);
        assert_eq!(
            e["preview_output"],
            json!({"filename": "trace_00003_.png", "subfolder": "", "type": "output", "nodeId": "3", "mediaType": "images"})
        );
        let d = job_entry(&j, true);
        assert_eq!(d["execution_status"]["status_str"], "success");
        assert_eq!(d["workflow"]["prompt"], j.prompt);
    }

    #[test]
    fn query_validation_matches_comfyui() {
        let q = |pairs: &[(&str, &str)]| {
            parse_jobs_query(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(
            q(&[("status", "foo")]).unwrap_err(),
            "Invalid status value(s): foo. Valid values: pending, in_progress, completed, failed, cancelled"
        );
        assert!(q(&[("limit", "0")]).is_err());
        assert!(q(&[("limit", "x")]).is_err());
        assert!(q(&[("sort_by", "name")]).is_err());
        assert_eq!(q(&[("offset", "-5")]).unwrap().offset, 0);
        // No stored workflow id holds a NUL (see PromptRequest), and
        // PostgreSQL could not compare with one.
        assert!(q(&[("workflow_id", "a\0b")]).is_err());
        assert_eq!(
            q(&[("workflow_id", "w1")]).unwrap().workflow_id.as_deref(),
            Some("w1")
        );
    }

    #[test]
    fn pages_sort_newest_first() {
        let jobs = vec![
            job(JobState::Completed, 1),
            job(JobState::Failed, 2),
            job(JobState::Pending, 3),
        ];
        let q = parse_jobs_query(
            &[("limit".to_string(), "2".to_string())]
                .into_iter()
                .collect(),
        )
        .unwrap();
        let page = jobs_page(&jobs, &q);
        assert_eq!(
            page["pagination"],
            json!({"offset": 0, "limit": 2, "total": 3, "has_more": true})
        );
        assert_eq!(page["jobs"][0]["create_time"], 3);
        assert_eq!(page["jobs"][1]["create_time"], 2);
    }

    /// The store's paging (SQL) answers exactly as the reference paging
    /// over every job does, for every status set, order, offset and limit,
    /// with jobs created in the same millisecond among them.
    #[tokio::test]
    async fn store_pages_match_the_reference_paging() {
        use crate::store::{Finish, NewJob, Store};
        use comfyume_domain::{Role, UserName};

        let store = Store::connect("sqlite::memory:").await.unwrap();
        let owner = store
            .create_user(&UserName::parse("a").unwrap(), "h", Role::Participant, 0)
            .await
            .unwrap()
            .id;
        let other = store
            .create_user(&UserName::parse("b").unwrap(), "h", Role::Participant, 0)
            .await
            .unwrap()
            .id;
        // Creation times with ties; some finished, some failed, some
        // pending; two workflows; another user's jobs in between.
        for (i, created) in [5, 3, 3, 7, 1, 3, 9, 7, 2, 8].into_iter().enumerate() {
            for user in [owner, other] {
                let id = JobId::new();
                store
                    .insert_job(
                        NewJob {
                            id,
                            owner: user,
                            number: None,
                            front: false,
                            prompt: json!({"1": {}}),
                            extra_data: json!({"create_time": created}),
                            outputs_to_execute: vec!["1".into()],
                            partial_targets: None,
                            workflow_id: Some(if i % 3 == 0 { "w1" } else { "w2" }.into()),
                            created_at: created,
                        },
                        u32::MAX,
                    )
                    .await
                    .unwrap();
                if i % 4 == 3 {
                    continue;
                }
                store.claim_job(&id, "gpu", 0, created + 1).await.unwrap();
                let state = if i % 5 == 0 {
                    JobState::Failed
                } else {
                    JobState::Completed
                };
                // Execution times with ties, one end without a timestamp
                // ComfyUI counts (a float), one job without an end.
                let took = [4, 2, 4, 1, 0, 2, 7, 4, 3, 2][i];
                let end_kind = if state == JobState::Failed {
                    "execution_error"
                } else {
                    "execution_success"
                };
                let end_at = if i == 6 {
                    json!(created as f64 + 0.5)
                } else {
                    json!(created + 1 + took)
                };
                let mut messages = vec![json!(["execution_start", {"timestamp": created + 1}])];
                if i != 2 {
                    messages.push(json!([end_kind, {"timestamp": end_at}]));
                }
                let finish = Finish {
                    state,
                    outputs: serde_json::Map::new(),
                    meta: serde_json::Map::new(),
                    messages,
                    error: None,
                    finished_at: created + 2 + i as i64,
                };
                store.finish_job(&id, 1, &finish).await.unwrap();
            }
        }
        let all = store.jobs_of(owner).await.unwrap();
        let mut checked = 0;
        for status in ["", "completed", "pending,failed", "in_progress"] {
            for (sort, order) in [
                ("created_at", "desc"),
                ("created_at", "asc"),
                ("execution_duration", "desc"),
                ("execution_duration", "asc"),
            ] {
                for workflow in ["", "w1"] {
                    for (offset, limit) in [
                        ("0", None),
                        ("2", Some("3")),
                        ("0", Some("1")),
                        ("9", Some("5")),
                    ] {
                        let mut q = std::collections::HashMap::new();
                        q.insert("status".to_string(), status.to_string());
                        q.insert("sort_by".to_string(), sort.to_string());
                        q.insert("sort_order".to_string(), order.to_string());
                        q.insert("workflow_id".to_string(), workflow.to_string());
                        q.insert("offset".to_string(), offset.to_string());
                        if let Some(l) = limit {
                            q.insert("limit".to_string(), l.to_string());
                        }
                        let query = parse_jobs_query(&q).unwrap();
                        let page = store_page(&query);
                        let (jobs, total) = store.jobs_page_of(owner, &page).await.unwrap();
                        assert_eq!(
                            jobs_page_from(&jobs, total, &query),
                            jobs_page(&all, &query),
                            "{q:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 128);
    }
}
