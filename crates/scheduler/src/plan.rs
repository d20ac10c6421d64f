//! [`plan`]: which pending jobs start now, and on which free slots.

use std::collections::{BTreeMap, HashSet};

use super::fair_share::FairShare;
use super::input::{PendingJob, RunningCounts, Slot};
use comfyume_domain::{JobId, UserId};

/// Assigns as many pending jobs as possible to the free slots, in the order
/// they should start. Each slot and each job is used at most once, a user
/// never ends up with more than `cap` running jobs (running ones plus those
/// assigned here; their own limit instead, when their jobs carry one), and
/// a job only goes to a backend it may run on.
///
/// One assignment at a time:
/// 1. A user is *eligible* if they are below `cap` and one of their pending
///    jobs may run on a free slot; their *candidate* is the first such job
///    in their own queue order (instructor lane, then [`OrderKey`]).
/// 2. The next slot goes to the eligible user whose candidate is in the
///    instructor lane, then with the least virtual time (their
///    [`FairShare::vtime`] plus [`FairShare::estimate_ms`] for every job
///    they have running or were just assigned), then whose oldest pending
///    job is oldest (submission sequence), then the lower user id.
/// 3. The candidate takes the first free slot it may run on, in the order
///    of `free`: the caller puts preferred slots first (spreading across
///    backends now; backends with the job's model loaded, later).
///
/// It stops when no eligible user is left, so no slot stays free while a
/// job that could use it waits below its owner's cap. Duplicate job ids or
/// slots in the input are used once.
///
/// [`OrderKey`]: super::OrderKey
pub fn plan(
    pending: &[PendingJob],
    running: &RunningCounts,
    share: &FairShare,
    free: &[Slot],
    cap: u32,
) -> Vec<(JobId, Slot)> {
    assign(pending, running, &RunningCounts::new(), share, free, cap)
}

/// [`plan`], where the jobs in `ending` are about to end: they still count
/// in their owners' virtual time (their GPU time is about to be charged)
/// but no longer against the cap.
fn assign(
    pending: &[PendingJob],
    running: &RunningCounts,
    ending: &RunningCounts,
    share: &FairShare,
    free: &[Slot],
    cap: u32,
) -> Vec<(JobId, Slot)> {
    let mut queues = user_queues(pending, running, ending, share);
    let mut slots = distinct(free);
    let mut out = Vec::new();

    loop {
        let mut best: Option<(Pick, usize, usize, usize)> = None;
        for (qi, queue) in queues.iter().enumerate() {
            if queue.busy.saturating_sub(queue.ending) >= queue.own_cap.unwrap_or(cap) {
                continue;
            }
            let Some((ji, si)) = queue.candidate(&slots) else {
                continue;
            };
            let pick = Pick {
                lane: !queue.jobs[ji].admin,
                vtime: queue.vtime(),
                oldest: queue.oldest,
                user: queue.user,
            };
            if best.as_ref().is_none_or(|(b, ..)| pick < *b) {
                best = Some((pick, qi, ji, si));
            }
        }
        let Some((_, qi, ji, si)) = best else {
            break;
        };
        let queue = &mut queues[qi];
        queue.taken[ji] = true;
        queue.busy += 1;
        let slot = slots[si].take().expect("a candidate's slot is free");
        out.push((queue.jobs[ji].id, slot.clone()));
    }
    out
}

/// How one eligible user ranks for the next slot; smaller goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pick {
    /// `false` for the instructor lane, so it sorts first.
    lane: bool,
    vtime: u64,
    /// The submission sequence of the user's oldest pending job.
    oldest: u64,
    user: UserId,
}

/// One user's pending jobs in their own order, and what this plan did.
struct Queue<'a> {
    user: UserId,
    jobs: Vec<&'a PendingJob>,
    taken: Vec<bool>,
    oldest: u64,
    base_vtime: u64,
    estimate: u64,
    /// Running plus assigned in this plan.
    busy: u32,
    /// Of `busy`, the jobs about to end (see [`plan_ahead`]).
    ending: u32,
    /// The user's own limit, in place of the room's `cap`.
    own_cap: Option<u32>,
}

impl Queue<'_> {
    fn vtime(&self) -> u64 {
        self.base_vtime
            .saturating_add(u64::from(self.busy).saturating_mul(self.estimate))
    }

    /// The user's first untaken job that may use a free slot, and that slot.
    fn candidate(&self, slots: &[Option<&Slot>]) -> Option<(usize, usize)> {
        self.jobs
            .iter()
            .enumerate()
            .filter(|(ji, _)| !self.taken[*ji])
            .find_map(|(ji, job)| {
                slots
                    .iter()
                    .position(|s| s.is_some_and(|s| job.may_run_on(&s.backend)))
                    .map(|si| (ji, si))
            })
    }
}

fn user_queues<'a>(
    pending: &'a [PendingJob],
    running: &RunningCounts,
    ending: &RunningCounts,
    share: &FairShare,
) -> Vec<Queue<'a>> {
    let mut seen = HashSet::new();
    let mut by_user: BTreeMap<UserId, Vec<&PendingJob>> = BTreeMap::new();
    for job in pending.iter().filter(|j| seen.insert(j.id)) {
        by_user.entry(job.owner).or_default().push(job);
    }
    by_user
        .into_iter()
        .map(|(user, mut jobs)| {
            jobs.sort_by(|a, b| a.queue_cmp(b));
            let oldest = jobs.iter().map(|j| j.order.seq()).min().unwrap_or(0);
            let own_cap = jobs.iter().filter_map(|j| j.owner_cap).max();
            Queue {
                user,
                taken: vec![false; jobs.len()],
                jobs,
                oldest,
                base_vtime: share.vtime(user),
                estimate: share.estimate_ms(user),
                busy: running.get(user),
                ending: ending.get(user),
                own_cap,
            }
        })
        .collect()
}

fn distinct(free: &[Slot]) -> Vec<Option<&Slot>> {
    let mut seen = HashSet::new();
    free.iter().map(|s| seen.insert(s).then_some(s)).collect()
}

/// The job each busy slot runs next, queued on its backend behind the job
/// it runs now, so the backend starts it the moment the current one ends
/// (no idle gap while the gateway records one job and sends the next).
///
/// `busy` lists each slot with a free place behind its running job and the
/// owner of that job. The choice is the one [`plan`] would make the moment
/// those jobs end: their owners count one running job fewer against the
/// cap, and their virtual time already holds the ending job's estimated
/// GPU time, as it will once the job is charged; everything else (caps,
/// fairness, backends, queue order) is `plan`'s. `running` includes the
/// jobs just assigned to free slots; `pending` excludes them.
///
/// What it costs: a job queued behind another cannot be given to a slot
/// that frees sooner, and a participant who arrives meanwhile waits for
/// the queued job too (at most one job more per slot than [`plan`]'s
/// bound).
pub fn plan_ahead(
    pending: &[PendingJob],
    running: &RunningCounts,
    share: &FairShare,
    busy: &[(Slot, UserId)],
    cap: u32,
) -> Vec<(JobId, Slot)> {
    let ending: RunningCounts = busy.iter().map(|(_, owner)| *owner).collect();
    let slots: Vec<Slot> = busy.iter().map(|(slot, _)| slot.clone()).collect();
    assign(pending, running, &ending, share, &slots, cap)
}

/// The order the pending jobs are expected to start in, for telling each
/// participant their place in the room's queue.
///
/// It is [`plan`]'s choice made for every job at once, as if there were a
/// slot for each and every backend could run every job: the instructor
/// lane first, then the users in turn by virtual time, each taking their
/// jobs in their own queue order, each start adding the user's estimated
/// GPU time to their virtual time (so a user with many jobs interleaves
/// with the others instead of going first with all of them). It cannot
/// know what the caps and backends will allow when a slot really frees,
/// so it is an estimate; `plan` still decides.
///
/// One heap of users by [`Pick`]: O(jobs × log users), so a room with
/// thousands of waiting jobs is ordered in a millisecond or two.
pub fn start_order(
    pending: &[PendingJob],
    running: &RunningCounts,
    share: &FairShare,
) -> Vec<JobId> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let mut queues = user_queues(pending, running, &RunningCounts::new(), share);
    let pick = |queue: &Queue<'_>, next: usize| Pick {
        lane: !queue.jobs[next].admin,
        vtime: queue.vtime(),
        oldest: queue.oldest,
        user: queue.user,
    };
    let mut next = vec![0usize; queues.len()];
    let mut heap: BinaryHeap<Reverse<(Pick, usize)>> = queues
        .iter()
        .enumerate()
        .filter(|(_, q)| !q.jobs.is_empty())
        .map(|(qi, q)| Reverse((pick(q, 0), qi)))
        .collect();
    let mut order = Vec::with_capacity(pending.len());
    while let Some(Reverse((_, qi))) = heap.pop() {
        let queue = &mut queues[qi];
        order.push(queue.jobs[next[qi]].id);
        next[qi] += 1;
        queue.busy = queue.busy.saturating_add(1);
        if next[qi] < queue.jobs.len() {
            heap.push(Reverse((pick(queue, next[qi]), qi)));
        }
    }
    order
}

/// [`start_order`] as [`plan`] itself computes it, one slot per job (for
/// the tests: slow, quadratic, but plainly `plan`'s choice).
#[cfg(test)]
pub(crate) fn start_order_by_plan(
    pending: &[PendingJob],
    running: &RunningCounts,
    share: &FairShare,
) -> Vec<JobId> {
    let anywhere: Vec<PendingJob> = pending
        .iter()
        .map(|job| PendingJob {
            allowed: None,
            owner_cap: None,
            ..job.clone()
        })
        .collect();
    let backend = super::BackendId::new("anywhere");
    let slots: Vec<Slot> = (0..anywhere.len())
        .map(|i| Slot::new(backend.clone(), u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    assign(
        &anywhere,
        running,
        &RunningCounts::new(),
        share,
        &slots,
        u32::MAX,
    )
    .into_iter()
    .map(|(id, _)| id)
    .collect()
}
