//! Properties of one [`plan`] call on random snapshots.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::sim::{backend, job_id};
use crate::{FairShare, OrderKey, PendingJob, RunningCounts, Slot, plan, start_order};
use comfyume_domain::{JobId, UserId};

/// A random snapshot: what the dispatcher would hand to `plan`.
#[derive(Debug, Clone)]
struct Snapshot {
    pending: Vec<PendingJob>,
    running: RunningCounts,
    share: FairShare,
    free: Vec<Slot>,
    cap: u32,
}

const USERS: i64 = 6;
const BACKENDS: usize = 3;

fn order_key(seq: u64) -> impl Strategy<Value = OrderKey> {
    prop_oneof![
        4 => Just(OrderKey::back(seq)),
        1 => Just(OrderKey::front(seq)),
        1 => Just(OrderKey::retry(seq)),
        1 => (-5.0f64..5.0).prop_map(move |n| OrderKey::new(n.round(), seq)),
        1 => Just(OrderKey::new(f64::NAN, seq)),
    ]
}

/// Backends a job may use: mostly any, sometimes a non-empty subset.
fn allowed() -> impl Strategy<Value = Option<BTreeSet<usize>>> {
    prop_oneof![
        3 => Just(None),
        1 => prop::collection::btree_set(0..BACKENDS, 1..=BACKENDS).prop_map(Some),
    ]
}

fn snapshot(restricted: bool) -> impl Strategy<Value = Snapshot> {
    let job = (1..=USERS, prop::bool::weighted(0.2), allowed());
    (
        prop::collection::vec(job, 0..24),
        prop::collection::vec(0u32..3, USERS as usize),
        prop::collection::vec((1..=USERS, 0u64..500), 0..12),
        prop::collection::vec(prop::bool::ANY, USERS as usize),
        prop::collection::vec((0..BACKENDS, 0u32..3), 0..8),
        0u32..4,
    )
        .prop_flat_map(move |(jobs, running, charges, active, free, cap)| {
            let keys: Vec<_> = (0..jobs.len()).map(|n| order_key(n as u64 * 7)).collect();
            (Just((jobs, running, charges, active, free, cap)), keys)
        })
        .prop_map(move |((jobs, running, charges, active, free, cap), keys)| {
            let pending = jobs
                .iter()
                .zip(keys)
                .enumerate()
                .map(|(n, ((owner, admin, allowed), key))| {
                    let job = PendingJob::new(job_id(n), UserId(*owner), *admin, key);
                    match (restricted, allowed) {
                        (true, Some(set)) => job.only_on(set.iter().map(|b| backend(*b))),
                        _ => job,
                    }
                })
                .collect();
            let running = (1..=USERS)
                .flat_map(|u| std::iter::repeat_n(UserId(u), running[u as usize - 1] as usize))
                .collect();
            let mut share = FairShare::new();
            let users = |pick: bool| -> Vec<UserId> {
                (1..=USERS)
                    .filter(|u| active[*u as usize - 1] == pick)
                    .map(UserId)
                    .collect()
            };
            share.sync_active(users(true));
            for (user, ms) in charges {
                share.charge(UserId(user), ms);
            }
            share.sync_active(
                users(true)
                    .into_iter()
                    .chain(users(false).into_iter().take(2)),
            );
            let free = free
                .into_iter()
                .map(|(b, i)| Slot::new(backend(b), i))
                .collect();
            Snapshot {
                pending,
                running,
                share,
                free,
                cap,
            }
        })
}

/// Checks every invariant of one plan against its snapshot.
fn check(s: &Snapshot, got: &[(JobId, Slot)]) -> Result<(), TestCaseError> {
    let jobs: HashMap<JobId, &PendingJob> = s.pending.iter().map(|j| (j.id, j)).collect();
    let mut free: Vec<Slot> = Vec::new();
    for slot in &s.free {
        if !free.contains(slot) {
            free.push(slot.clone());
        }
    }
    let mut waiting: BTreeMap<JobId, &PendingJob> = jobs.iter().map(|(id, j)| (*id, *j)).collect();
    let mut busy: BTreeMap<UserId, u32> = BTreeMap::new();
    let busy_of = |busy: &BTreeMap<UserId, u32>, u: UserId| {
        s.running.get(u) + busy.get(&u).copied().unwrap_or(0)
    };

    for (id, slot) in got {
        let Some(job) = waiting.remove(id) else {
            return Err(TestCaseError::fail(format!("{id:?} not pending, or twice")));
        };
        let Some(pos) = free.iter().position(|f| f == slot) else {
            return Err(TestCaseError::fail(format!("{slot:?} not free, or twice")));
        };
        prop_assert!(job.may_run_on(&slot.backend), "backend not allowed");
        prop_assert!(busy_of(&busy, job.owner) < s.cap, "cap exceeded");
        for other in waiting.values() {
            if other.owner == job.owner && other.may_run_on(&slot.backend) {
                prop_assert!(
                    job.queue_cmp(other).is_lt(),
                    "{:?} overtook {:?} in its owner's queue",
                    job.id,
                    other.id
                );
            }
            if other.admin && !job.admin {
                let eligible = busy_of(&busy, other.owner) < s.cap
                    && free.iter().any(|f| other.may_run_on(&f.backend));
                prop_assert!(!eligible, "participant job before an eligible admin job");
            }
        }
        free.remove(pos);
        *busy.entry(job.owner).or_default() += 1;
    }
    for job in waiting.values() {
        let eligible =
            busy_of(&busy, job.owner) < s.cap && free.iter().any(|f| job.may_run_on(&f.backend));
        prop_assert!(
            !eligible,
            "{:?} left beside a free slot it could use",
            job.id
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// (b) caps, (c) no double booking, allowed backends, (d) FIFO within a
    /// user, (e) instructor lane first, (h) work-conserving; deterministic.
    #[test]
    fn plans_keep_every_invariant(s in snapshot(true)) {
        let got = plan(&s.pending, &s.running, &s.share, &s.free, s.cap);
        check(&s, &got)?;
        prop_assert_eq!(&got, &plan(&s.pending, &s.running, &s.share, &s.free, s.cap));
        let mut reversed = s.pending.clone();
        reversed.reverse();
        prop_assert_eq!(got, plan(&reversed, &s.running, &s.share, &s.free, s.cap));
    }

    /// `front` reorders only the owner's queue: shuffling the OrderKeys among
    /// each user's own jobs changes which of their jobs start, never which
    /// users get which slots.
    #[test]
    fn order_keys_never_change_who_goes_next(
        s in snapshot(false),
        shuffle in prop::collection::vec(any::<u32>(), 24),
    ) {
        let mut shuffled = s.pending.clone();
        let mut by_user: BTreeMap<UserId, Vec<usize>> = BTreeMap::new();
        for (n, job) in shuffled.iter().enumerate() {
            by_user.entry(job.owner).or_default().push(n);
        }
        for idxs in by_user.values() {
            let keys: Vec<OrderKey> = idxs.iter().map(|n| shuffled[*n].order).collect();
            let mut targets = idxs.clone();
            targets.sort_by_key(|n| shuffle[*n]);
            for (n, key) in targets.into_iter().zip(keys) {
                shuffled[n].order = key;
            }
        }
        let owners = |p: &[PendingJob]| {
            let owner: HashMap<JobId, UserId> = p.iter().map(|j| (j.id, j.owner)).collect();
            plan(p, &s.running, &s.share, &s.free, s.cap)
                .into_iter()
                .map(|(id, slot)| (owner[&id], slot))
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(owners(&s.pending), owners(&shuffled));
    }

    /// The expected start order holds every pending job once; each user's
    /// jobs keep their own queue order; the instructor lane comes first;
    /// and the first job in it is one `plan` would start on a free slot
    /// that every job may use, with no cap.
    #[test]
    fn the_start_order_is_the_plans_order(s in snapshot(true)) {
        let order = start_order(&s.pending, &s.running, &s.share);
        let mut ids: Vec<JobId> = s.pending.iter().map(|j| j.id).collect();
        ids.sort();
        ids.dedup();
        let mut got = order.clone();
        got.sort();
        prop_assert_eq!(&got, &ids, "every job once");
        let jobs: HashMap<JobId, &PendingJob> = s.pending.iter().map(|j| (j.id, j)).collect();
        let mut last: HashMap<UserId, &PendingJob> = HashMap::new();
        let mut lane_over = false;
        for id in &order {
            let job = jobs[id];
            if let Some(before) = last.get(&job.owner) {
                prop_assert!(before.queue_cmp(job).is_le(), "{:?} before {:?} in its owner's queue", before.id, job.id);
            }
            last.insert(job.owner, job);
            prop_assert!(!(lane_over && job.admin), "the instructor lane goes first");
            lane_over |= !job.admin;
        }
        prop_assert_eq!(&order, &crate::plan::start_order_by_plan(&s.pending, &s.running, &s.share), "the heap orders as plan does");
        if let Some(first) = order.first() {
            let anywhere: Vec<PendingJob> = s.pending.iter().map(|j| PendingJob { allowed: None, ..j.clone() }).collect();
            let one = [Slot::new(backend(0), 0)];
            let planned = plan(&anywhere, &s.running, &s.share, &one, u32::MAX);
            prop_assert_eq!(planned.first().map(|(id, _)| *id), Some(*first));
        }
    }
}
