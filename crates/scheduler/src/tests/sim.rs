//! An event-driven simulation of a room: jobs arrive at given times and run
//! for given durations on the room's slots, with [`plan`] deciding. Time is a
//! number, not a clock. The simulator checks the scheduler's invariants at
//! every dispatch and panics (a test failure) on the first violation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{BackendId, FairShare, OrderKey, PendingJob, RunningCounts, Slot, plan};
use comfyume_domain::{JobId, UserId};

/// A deterministic, canonical job id for job number `n`.
pub fn job_id(n: usize) -> JobId {
    JobId::parse(&format!("00000000-0000-4000-8000-{n:012x}")).unwrap()
}

pub fn backend(b: usize) -> BackendId {
    BackendId::new(format!("gpu{b}"))
}

#[derive(Debug, Clone)]
pub struct SimJob {
    pub user: UserId,
    pub admin: bool,
    pub arrive: u64,
    pub duration: u64,
    pub front: bool,
    /// Indices of the backends the job may use; `None` for any.
    pub allowed: Option<BTreeSet<usize>>,
}

impl SimJob {
    pub fn new(user: i64, arrive: u64, duration: u64) -> Self {
        Self {
            user: UserId(user),
            admin: false,
            arrive,
            duration,
            front: false,
            allowed: None,
        }
    }

    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    pub fn front(mut self) -> Self {
        self.front = true;
        self
    }

    pub fn only_on(mut self, backends: &[usize]) -> Self {
        self.allowed = Some(backends.iter().copied().collect());
        self
    }
}

/// The GPUs: slots per backend, and the per-user running cap.
#[derive(Debug, Clone)]
pub struct Room {
    pub backends: Vec<u32>,
    pub cap: u32,
}

impl Room {
    /// Every slot, ordered index-major so consecutive slots spread across
    /// backends (the order a dispatcher would prefer).
    pub fn slots(&self) -> Vec<Slot> {
        let most = self.backends.iter().copied().max().unwrap_or(0);
        (0..most)
            .flat_map(|i| {
                self.backends
                    .iter()
                    .enumerate()
                    .filter(move |(_, n)| i < **n)
                    .map(move |(b, _)| Slot::new(backend(b), i))
            })
            .collect()
    }
}

/// The job a simulated submission becomes; `seq` is its index.
pub fn pending_job(jobs: &[SimJob], j: usize) -> PendingJob {
    let job = &jobs[j];
    let seq = j as u64;
    let order = if job.front {
        OrderKey::front(seq)
    } else {
        OrderKey::back(seq)
    };
    let pending = PendingJob::new(job_id(j), job.user, job.admin, order);
    match &job.allowed {
        Some(set) => pending.only_on(set.iter().map(|b| backend(*b))),
        None => pending,
    }
}

/// The state after one instant of simulated time.
#[derive(Debug, Clone)]
pub struct Step {
    pub gpu_ms: BTreeMap<UserId, u64>,
    pub pending: BTreeMap<UserId, usize>,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub start: Vec<u64>,
    pub finish: Vec<u64>,
    /// Job indices in dispatch order.
    pub dispatches: Vec<usize>,
    pub steps: Vec<Step>,
    /// Light-user submissions whose wait was checked (property f).
    pub light_checked: Vec<usize>,
}

/// A light user's submission being watched until it starts.
struct Watch {
    job: usize,
    user: UserId,
    /// Other participants active when it was submitted.
    active: BTreeSet<UserId>,
    starts: BTreeMap<UserId, u32>,
}

/// Runs the room until every job has finished. `jobs` must be sorted by
/// arrival time; a job's index is its submission sequence. With
/// `check_light`, property (f) is checked on every light submission (only
/// meaningful when jobs may run on any backend).
pub fn run(room: &Room, jobs: &[SimJob], check_light: bool) -> Outcome {
    assert!(
        jobs.is_sorted_by_key(|j| j.arrive),
        "jobs sorted by arrival"
    );
    let cap = room.cap;
    let all_slots = room.slots();
    let index: HashMap<JobId, usize> = (0..jobs.len()).map(|j| (job_id(j), j)).collect();
    let specs: Vec<PendingJob> = (0..jobs.len()).map(|j| pending_job(jobs, j)).collect();
    let may_run = |j: usize, slot: &Slot| specs[j].may_run_on(&slot.backend);

    let mut share = FairShare::new();
    let mut running = RunningCounts::new();
    let mut busy: BTreeSet<Slot> = BTreeSet::new();
    let mut pending: BTreeSet<usize> = BTreeSet::new();
    let mut in_flight: Vec<(u64, usize, Slot)> = Vec::new();
    let mut next_arrival = 0;
    let mut start = vec![None; jobs.len()];
    let mut finish = vec![None; jobs.len()];
    let mut out = Outcome::default();
    let mut watches: Vec<Watch> = Vec::new();
    let mut gpu_ms: BTreeMap<UserId, u64> = BTreeMap::new();

    loop {
        let next_finish = in_flight.iter().map(|(f, ..)| *f).min();
        let next_arrive = jobs.get(next_arrival).map(|j| j.arrive);
        let t = match (next_finish, next_arrive) {
            (None, None) => break,
            (a, b) => a.into_iter().chain(b).min().unwrap(),
        };

        // Jobs ending now free their slots and are charged.
        in_flight.retain(|(f, j, slot)| {
            if *f != t {
                return true;
            }
            let job = &jobs[*j];
            busy.remove(slot);
            running.remove(job.user);
            share.charge(job.user, job.duration);
            *gpu_ms.entry(job.user).or_default() += job.duration;
            finish[*j] = Some(t);
            false
        });

        // Jobs arriving now join the queue.
        let mut arrived = Vec::new();
        while next_arrival < jobs.len() && jobs[next_arrival].arrive == t {
            let j = next_arrival;
            let user = jobs[j].user;
            let idle = running.get(user) == 0 && !pending.iter().any(|p| jobs[*p].user == user);
            pending.insert(j);
            arrived.push((j, idle));
            next_arrival += 1;
        }

        share.sync_active(pending.iter().map(|p| jobs[*p].user).chain(running.users()));

        if check_light {
            for (j, idle) in arrived {
                let user = jobs[j].user;
                if !idle || jobs[j].admin {
                    continue;
                }
                let v = share.vtime(user);
                let others: BTreeSet<UserId> =
                    share.active_users().filter(|u| *u != user).collect();
                if others.iter().all(|u| share.vtime(*u) >= v) {
                    let active = others.into_iter().filter(|u| !is_admin(jobs, *u)).collect();
                    watches.push(Watch {
                        job: j,
                        user,
                        active,
                        starts: BTreeMap::new(),
                    });
                }
            }
        }

        let queue: Vec<PendingJob> = pending.iter().map(|j| specs[*j].clone()).collect();
        let free: Vec<Slot> = all_slots
            .iter()
            .filter(|s| !busy.contains(*s))
            .cloned()
            .collect();
        let assignments = plan(&queue, &running, &share, &free, cap);

        let mut free_left = free;
        for (id, slot) in assignments {
            let j = index[&id];
            let job = &jobs[j];
            let user = job.user;
            // (c) one slot, one job.
            assert!(pending.contains(&j), "job {j} dispatched twice");
            let pos = free_left
                .iter()
                .position(|s| *s == slot)
                .unwrap_or_else(|| panic!("slot {slot:?} double-booked at t={t}"));
            assert!(may_run(j, &slot), "job {j} on a backend it may not use");
            // (b) caps.
            assert!(running.get(user) < cap, "{user:?} over the cap at t={t}");
            // (d) FIFO within the owner's queue.
            for &p in &pending {
                if p != j
                    && jobs[p].user == user
                    && specs[p].queue_cmp(&specs[j]).is_lt()
                    && may_run(p, &slot)
                {
                    panic!("job {j} of {user:?} overtook their earlier job {p} at t={t}");
                }
            }
            // (e) instructor lane first.
            if !job.admin {
                for &p in &pending {
                    if jobs[p].admin
                        && running.get(jobs[p].user) < cap
                        && free_left.iter().any(|s| may_run(p, s))
                    {
                        panic!("participant job {j} started while admin job {p} waited, t={t}");
                    }
                }
            }
            free_left.remove(pos);
            busy.insert(slot.clone());
            pending.remove(&j);
            running.add(user);
            start[j] = Some(t);
            in_flight.push((t + job.duration, j, slot));
            out.dispatches.push(j);

            // (f) light users: at most one start per other active user.
            watches.retain_mut(|w| {
                if user == w.user {
                    if j == w.job {
                        out.light_checked.push(j);
                    }
                    // Closed; or voided, if the owner's own front job went
                    // first.
                    return false;
                }
                if !job.admin {
                    let n = w.starts.entry(user).or_default();
                    *n += 1;
                    assert!(
                        *n <= 1 && w.active.contains(&user),
                        "light job {} of {:?} waited behind {} start(s) of {user:?} (active at \
                         submission: {})",
                        w.job,
                        w.user,
                        n,
                        w.active.contains(&user),
                    );
                }
                true
            });
        }

        // (h) work-conserving: nothing left that a free slot could take.
        for &p in &pending {
            assert!(
                running.get(jobs[p].user) >= cap || !free_left.iter().any(|s| may_run(p, s)),
                "job {p} left waiting beside a free slot at t={t}"
            );
        }

        let mut waiting: BTreeMap<UserId, usize> = BTreeMap::new();
        for &p in &pending {
            *waiting.entry(jobs[p].user).or_default() += 1;
        }
        out.steps.push(Step {
            gpu_ms: gpu_ms.clone(),
            pending: waiting,
        });
    }

    // (a) no starvation: everything ran to the end.
    assert!(pending.is_empty(), "jobs never started: {pending:?}");
    out.start = start.into_iter().map(|s| s.unwrap()).collect();
    out.finish = finish.into_iter().map(|f| f.unwrap()).collect();
    out
}

fn is_admin(jobs: &[SimJob], user: UserId) -> bool {
    jobs.iter().any(|j| j.user == user && j.admin)
}
