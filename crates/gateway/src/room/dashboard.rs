//! The instructor's dashboard: the room as keyed sections (the summary,
//! backends, jobs, participants, the audit log's latest entries, the queue
//! over time and the distribution of waits), and the difference between
//! two looks. An open dashboard gets the first look whole, then only what
//! changed, so 500 participants cost a redraw of the rows that moved.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Room, RoomResult};
use crate::clock::now_ms;

/// A look at the room: per section, rows by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Look {
    sections: BTreeMap<&'static str, BTreeMap<String, Value>>,
}

/// How often the queue is sampled for the charts, and how many samples
/// are kept (an hour).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const SAMPLES_KEPT: usize = 360;

/// How many audit entries the dashboard shows.
const AUDIT_SHOWN: u32 = 20;

/// How many recent starts the wait distribution covers.
const WAITS_COUNTED: u32 = 200;

/// The wait distribution's buckets: upper bounds in seconds, and labels.
const WAIT_BUCKETS: [(i64, &str); 7] = [
    (10, "< 10 s"),
    (30, "10–30 s"),
    (60, "30–60 s"),
    (120, "1–2 min"),
    (300, "2–5 min"),
    (600, "5–10 min"),
    (i64::MAX, "> 10 min"),
];

/// One sample of the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: i64,
    pub waiting: u64,
    pub running: u64,
    /// Jobs ended since the server started.
    pub ended: u64,
}

/// The samples the charts draw, oldest first.
#[derive(Debug, Default)]
pub struct Series {
    samples: VecDeque<Sample>,
    /// Jobs ended when the server started (so `ended` counts this run's).
    ended_before: Option<u64>,
}

impl Series {
    fn push(&mut self, sample: Sample) {
        if self.samples.len() == SAMPLES_KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }
}

impl Look {
    fn section(&mut self, name: &'static str) -> &mut BTreeMap<String, Value> {
        self.sections.entry(name).or_default()
    }

    /// What changed from `before` to `self`, as
    /// `{section: {"upsert": {key: row}, "remove": [key]}}`; sections
    /// without a change are left out (so `{}` means nothing changed).
    pub fn delta_from(&self, before: &Look) -> Value {
        let empty = BTreeMap::new();
        let mut out = Map::new();
        let names: std::collections::BTreeSet<&&str> =
            self.sections.keys().chain(before.sections.keys()).collect();
        for name in names {
            let now = self.sections.get(*name).unwrap_or(&empty);
            let was = before.sections.get(*name).unwrap_or(&empty);
            let upsert: Map<String, Value> = now
                .iter()
                .filter(|(k, v)| was.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let remove: Vec<&String> = was.keys().filter(|k| !now.contains_key(*k)).collect();
            if upsert.is_empty() && remove.is_empty() {
                continue;
            }
            out.insert(
                (*name).to_string(),
                json!({"upsert": upsert, "remove": remove}),
            );
        }
        Value::Object(out)
    }
}

impl Room {
    /// Samples the queue for the charts (the server calls this every
    /// [`SAMPLE_EVERY`]).
    pub async fn sample_once(&self) -> RoomResult<()> {
        let (waiting, running) = self.shared().store.queue_counts().await?;
        let ended: u64 = self
            .shared()
            .store
            .account_activity()
            .await?
            .iter()
            .map(|(_, a)| u64::from(a.completed + a.failed + a.cancelled))
            .sum();
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let before = *series.ended_before.get_or_insert(ended);
        series.push(Sample {
            at: now_ms(),
            waiting,
            running,
            ended: ended.saturating_sub(before),
        });
        Ok(())
    }

    /// The whole room, as the dashboard shows it.
    pub async fn look(&self) -> RoomResult<Look> {
        let store = &self.shared().store;
        let now = now_ms();
        let mut look = Look::default();

        let users = store.list_users().await?;
        let names: std::collections::HashMap<_, _> =
            users.iter().map(|u| (u.id, u.name.clone())).collect();
        let name_of = |id| {
            names
                .get(&id)
                .map_or("(removed)", |n: &comfyume_domain::UserName| n.as_str())
        };
        let online: std::collections::HashSet<_> =
            self.shared().hub.connected_users().into_iter().collect();
        let activity: std::collections::HashMap<_, _> =
            store.account_activity().await?.into_iter().collect();

        // Jobs, in the order they are expected to start, then the running.
        let places = self.dispatcher.queue_places().await?;
        let position: std::collections::HashMap<_, _> = places
            .iter()
            .enumerate()
            .map(|(i, p)| (p.job, i + 1))
            .collect();
        let jobs = store.room_jobs().await?;
        let oldest_wait = jobs
            .iter()
            .filter(|j| j.started_at.is_none())
            .map(|j| now - j.created_at)
            .max();
        for j in &jobs {
            look.section("jobs").insert(
                j.id.to_string(),
                json!({
                    "id": j.id.to_string(),
                    "owner": j.owner.as_str(),
                    "state": j.state.as_str(),
                    "position": position.get(&j.id),
                    "created_at": j.created_at,
                    "started_at": j.started_at,
                    "backend": j.backend,
                    "bumped": j.bumped_at.is_some(),
                    "progress": self.shared().progress.of(&j.id)
                        .map(|(value, max)| json!({"value": value, "max": max})),
                }),
            );
        }

        // Backends: state, what runs there now, what they did.
        let running = self.dispatcher.running_jobs();
        let all_time = store.backend_activity(0).await?;
        let last_hour = store.backend_activity(now - 3_600_000).await?;
        for b in self.dispatcher.backends() {
            let done = all_time.iter().find(|a| a.backend == b.name);
            let recent = last_hour.iter().find(|a| a.backend == b.name);
            let current: Vec<Value> = running
                .iter()
                .filter(|(_, _, backend, _)| *backend == b.name)
                .map(|(id, owner, _, elapsed)| {
                    let progress = self.shared().progress.of(id);
                    json!({
                        "job": id.to_string(),
                        "owner": name_of(*owner),
                        "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                        "progress": progress.map(|(value, max)| json!({"value": value, "max": max})),
                    })
                })
                .collect();
            let hour_capacity = 3_600_000.0 * f64::from(b.slots.max(1));
            look.section("backends").insert(
                b.name.clone(),
                json!({
                    "name": b.name,
                    "kind": b.kind,
                    "group": b.group,
                    "active": b.active,
                    "state": b.state,
                    "slots": b.slots,
                    "running": b.running,
                    "queued": b.queued,
                    "last_error": b.last_error,
                    "current": current,
                    "jobs_done": done.map_or(0, |d| d.jobs),
                    "mean_run_ms": done.filter(|d| d.jobs > 0).map(|d| d.run_ms / i64::from(d.jobs)),
                    // Of the last hour, the share its slots spent running
                    // jobs that have ended (a long job counts once over).
                    "utilisation": recent.map_or(0.0, |r| (r.run_ms as f64 / hour_capacity).min(1.0)),
                }),
            );
        }

        // Participants (and instructors), with their work and the last
        // image it made.
        let latest: std::collections::HashMap<_, _> =
            store.latest_outputs().await?.into_iter().collect();
        for u in &users {
            let a = activity.get(&u.id).cloned().unwrap_or_default();
            let thumbnail = latest
                .get(&u.id)
                .and_then(last_image)
                .map(|(subfolder, file)| {
                    let path = if subfolder.is_empty() {
                        file
                    } else {
                        format!("{subfolder}/{file}")
                    };
                    format!(
                        "/admin/api/users/{}/file?type=output&path={}",
                        encode(u.name.as_str()),
                        encode(&path)
                    )
                });
            look.section("participants").insert(
                u.name.to_string(),
                json!({
                    "name": u.name.as_str(),
                    "role": u.role.as_str(),
                    "disabled": u.disabled,
                    "online": online.contains(&u.id),
                    "pending": a.pending,
                    "running": a.running,
                    "completed": a.completed,
                    "failed": a.failed,
                    "cancelled": a.cancelled,
                    "gpu_ms": a.gpu_ms,
                    "last_activity": a.last_activity,
                    "max_pending": u.caps.max_pending,
                    "max_running": u.caps.max_running,
                    "last_output": thumbnail,
                }),
            );
        }

        let totals = activity.values().fold([0u64; 3], |mut t, a| {
            t[0] += u64::from(a.completed);
            t[1] += u64::from(a.failed);
            t[2] += u64::from(a.cancelled);
            t
        });
        look.section("summary").insert(
            "room".into(),
            json!({
                "paused": self.dispatcher.is_paused(),
                "banner": self.banner().await?,
                "waiting": jobs.iter().filter(|j| j.started_at.is_none()).count(),
                "running": running.len(),
                "oldest_wait_ms": oldest_wait,
                "completed": totals[0],
                "failed": totals[1],
                "cancelled": totals[2],
                "online": online.len(),
                "sockets": self.shared().hub.connection_count(),
            }),
        );

        look.section("summary")
            .insert("storage".into(), self.storage.status());

        for e in store.audit_log(AUDIT_SHOWN, None).await? {
            look.section("audit").insert(
                format!("{:012}", e.id),
                json!({
                    "id": e.id, "at": e.at, "actor": e.actor, "action": e.action,
                    "target": e.target, "detail": e.detail,
                }),
            );
        }

        {
            let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            for s in &series.samples {
                look.section("series").insert(
                    format!("{:015}", s.at),
                    json!({"at": s.at, "waiting": s.waiting, "running": s.running, "ended": s.ended}),
                );
            }
        }

        let waits = store.recent_waits(WAITS_COUNTED).await?;
        let counts: Vec<Value> = WAIT_BUCKETS
            .iter()
            .enumerate()
            .map(|(i, (upper, label))| {
                let lower = if i == 0 {
                    i64::MIN
                } else {
                    WAIT_BUCKETS[i - 1].0
                };
                let n = waits
                    .iter()
                    .filter(|w| **w / 1000 >= lower && **w / 1000 < *upper)
                    .count();
                json!({"label": label, "jobs": n})
            })
            .collect();
        look.section("waits")
            .insert("histogram".into(), Value::Array(counts));
        Ok(look)
    }
}

/// The last saved image among a job's outputs (`{node: ui output}`):
/// (subfolder, file name).
fn last_image(outputs: &Value) -> Option<(String, String)> {
    let is_image = |name: &str| {
        let lower = name.to_ascii_lowercase();
        [".png", ".jpg", ".jpeg", ".webp", ".gif"]
            .iter()
            .any(|ext| lower.ends_with(ext))
    };
    outputs
        .as_object()?
        .values()
        .flat_map(comfyume_protocol::frames::output_files)
        .rfind(|f| f.kind == "output" && is_image(&f.filename))
        .map(|f| (f.subfolder, f.filename))
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(rows: &[(&'static str, &str, Value)]) -> Look {
        let mut l = Look::default();
        for (section, key, row) in rows {
            l.section(section).insert((*key).to_string(), row.clone());
        }
        l
    }

    #[test]
    fn a_delta_holds_only_what_changed() {
        let before = look(&[
            ("jobs", "a", json!({"state": "pending"})),
            ("jobs", "b", json!({"state": "pending"})),
            ("backends", "gpu", json!({"state": "ready"})),
        ]);
        let after = look(&[
            ("jobs", "a", json!({"state": "in_progress"})),
            ("jobs", "c", json!({"state": "pending"})),
            ("backends", "gpu", json!({"state": "ready"})),
        ]);
        assert_eq!(
            after.delta_from(&before),
            json!({"jobs": {
                "upsert": {"a": {"state": "in_progress"}, "c": {"state": "pending"}},
                "remove": ["b"],
            }})
        );
        assert_eq!(after.delta_from(&after), json!({}));
        // The first look is all upserts.
        let first = after.delta_from(&Look::default());
        assert_eq!(first["backends"]["upsert"]["gpu"]["state"], "ready");
        assert_eq!(first["jobs"]["remove"], json!([]));
    }

    #[test]
    fn the_series_keeps_an_hour() {
        let mut series = Series::default();
        for at in 0..(SAMPLES_KEPT as i64 + 5) {
            series.push(Sample {
                at,
                waiting: 0,
                running: 0,
                ended: 0,
            });
        }
        assert_eq!(series.samples.len(), SAMPLES_KEPT);
        assert_eq!(series.samples.front().unwrap().at, 5);
    }
}
