//! Which backups to keep, and collecting the objects none of them needs.
//!
//! The rules are restic's: the newest `keep_last` backups; for each of the
//! newest `keep_daily` days that have a backup, that day's newest; the
//! same for `keep_weekly` ISO weeks. A backup kept by several rules is
//! kept once. Days and weeks are UTC.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::manifest::{BackupId, LOCKS, MANIFESTS, OBJECTS, Sha256};
use super::target::Target;
use super::{BackupError, read_manifest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
}

/// The backups among `ids` the rules keep.
pub fn kept(ids: &[BackupId], rules: &Retention) -> BTreeSet<BackupId> {
    let mut newest_first: Vec<&BackupId> = ids.iter().collect();
    newest_first.sort_by(|a, b| b.cmp(a));
    newest_first.dedup();
    let mut keep: BTreeSet<BackupId> = newest_first
        .iter()
        .take(rules.keep_last as usize)
        .map(|id| (*id).clone())
        .collect();
    let mut newest_of = |bucket: &dyn Fn(&BackupId) -> (i32, u32), count: u32| {
        let mut seen = HashSet::new();
        for id in &newest_first {
            if seen.len() >= count as usize {
                break;
            }
            // Newest first: the first of each bucket is its newest.
            if seen.insert(bucket(id)) {
                keep.insert((*id).clone());
            }
        }
    };
    newest_of(&|id| day(id.taken_at()), rules.keep_daily);
    newest_of(
        &|id| {
            let week = id.taken_at().iso_week();
            (week.year(), week.week())
        },
        rules.keep_weekly,
    );
    keep
}

fn day(at: DateTime<Utc>) -> (i32, u32) {
    let date: NaiveDate = at.date_naive();
    (date.year(), date.ordinal())
}

/// Applies the rules to the backups in `target`: removes the manifests
/// they do not keep (never `just_taken`: a backup that finished after a
/// newer one began is not pruned by its own run), then the objects no kept manifest names that are
/// older than `collect_after`. Returns the backups removed and the number
/// of objects collected. Nothing is collected unless every kept manifest
/// was read: an unreadable one might need any object.
pub async fn apply(
    target: &Target,
    rules: &Retention,
    collect_after: Duration,
    now: DateTime<Utc>,
    just_taken: Option<&BackupId>,
) -> Result<(Vec<BackupId>, usize), BackupError> {
    let ids: Vec<BackupId> = target
        .list(MANIFESTS)
        .await?
        .iter()
        .filter_map(|(key, _)| BackupId::from_manifest_key(key))
        .collect();
    let mut keep = kept(&ids, rules);
    keep.extend(just_taken.filter(|id| ids.contains(id)).cloned());
    let mut needed: HashSet<Sha256> = HashSet::new();
    for id in &keep {
        let manifest = read_manifest(target, id).await?;
        needed.extend(manifest.entries().map(|e| e.sha256.clone()));
    }
    let mut pruned: Vec<BackupId> = ids.into_iter().filter(|id| !keep.contains(id)).collect();
    pruned.sort();
    for id in &pruned {
        target.delete(&id.manifest_key()).await?;
        tracing::info!(backup = %id, "backup removed by the retention rules");
    }
    let cutoff = now - chrono::Duration::from_std(collect_after).unwrap_or(chrono::Duration::MAX);
    let mut collected = 0;
    for (i, (key, modified)) in target.list_aged(OBJECTS).await?.into_iter().enumerate() {
        // Looked at first and again every so often: a backup starting
        // meanwhile stops the collection.
        if i % 100 == 0 && another_backup_runs(target, now).await? {
            tracing::info!(
                "another backup is running: unreferenced objects are collected next time"
            );
            break;
        }
        let Some(hash) = Sha256::from_object_key(&key) else {
            continue;
        };
        if !needed.contains(&hash) && modified < cutoff {
            target.delete(&key).await?;
            collected += 1;
        }
    }
    Ok((pruned, collected))
}

/// A lock older than this is a killed run's: no backup takes a day.
const LOCK_STALE: chrono::Duration = chrono::Duration::hours(24);

/// Whether a backup is running now (a lock younger than [`LOCK_STALE`]).
/// Older locks are removed.
async fn another_backup_runs(target: &Target, now: DateTime<Utc>) -> Result<bool, BackupError> {
    let cutoff = now - LOCK_STALE;
    let mut running = false;
    for (key, written) in target.list_aged(LOCKS).await? {
        if written < cutoff {
            tracing::warn!(lock = %key, "removing the lock of a backup that never finished");
            target.delete(&key).await?;
        } else {
            running = true;
        }
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> BackupId {
        BackupId::new(text.parse().unwrap())
    }

    fn rules(keep_last: u32, keep_daily: u32, keep_weekly: u32) -> Retention {
        Retention {
            keep_last,
            keep_daily,
            keep_weekly,
        }
    }

    #[test]
    fn the_last_n_and_the_newest_of_each_day_and_week() {
        // Hourly backups over three days (2026-11-30 is a Monday).
        let mut ids = Vec::new();
        for d in ["2026-11-27", "2026-11-28", "2026-11-30", "2026-12-01"] {
            for h in [9, 12, 18] {
                ids.push(at(&format!("{d}T{h:02}:00:00Z")));
            }
        }
        let keep = kept(&ids, &rules(2, 0, 0));
        let names: Vec<String> = keep.iter().map(|i| i.as_str()[..15].to_string()).collect();
        assert_eq!(names, ["20261201T120000", "20261201T180000"]);

        let keep = kept(&ids, &rules(1, 3, 0));
        let names: Vec<String> = keep.iter().map(|i| i.as_str()[..15].to_string()).collect();
        assert_eq!(
            names,
            ["20261128T180000", "20261130T180000", "20261201T180000"]
        );

        // Two ISO weeks: the week of 11-23 (27th, 28th) and of 11-30.
        let keep = kept(&ids, &rules(1, 0, 5));
        let names: Vec<String> = keep.iter().map(|i| i.as_str()[..15].to_string()).collect();
        assert_eq!(names, ["20261128T180000", "20261201T180000"]);
    }

    proptest! {
        #[test]
        fn the_newest_is_always_kept_and_no_more_than_the_rules_allow(
            hours in proptest::collection::vec(0i64..24 * 60, 1..80),
            last in 1u32..5, daily in 0u32..5, weekly in 0u32..5,
        ) {
            let base: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
            let ids: Vec<BackupId> = hours
                .iter()
                .map(|h| BackupId::new(base + chrono::Duration::hours(*h)))
                .collect();
            let keep = kept(&ids, &rules(last, daily, weekly));
            let newest = ids.iter().max().unwrap();
            prop_assert!(keep.contains(newest));
            prop_assert!(keep.len() <= (last + daily + weekly) as usize);
            prop_assert!(keep.iter().all(|k| ids.contains(k)));
            let distinct: BTreeSet<_> = ids.iter().collect();
            prop_assert!(keep.len() >= (last as usize).min(distinct.len()));
        }
    }
}
