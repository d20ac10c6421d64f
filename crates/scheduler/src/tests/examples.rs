//! Readable examples of the policy, most of them simulated.

use super::sim::{Room, SimJob, backend, job_id, run};
use crate::{
    FairShare, OrderKey, PendingJob, RunningCounts, Slot, Usage, plan, plan_ahead, start_order,
};
use comfyume_domain::UserId;

const A: i64 = 1;
const B: i64 = 2;
const C: i64 = 3;
const T: i64 = 9; // the teacher

fn one_slot() -> Room {
    Room {
        backends: vec![1],
        cap: 1,
    }
}

fn slot(b: usize, i: u32) -> Slot {
    Slot::new(backend(b), i)
}

/// The acceptance test.
#[test]
fn a_queues_ten_then_b_queues_one_b_finishes_before_as_third() {
    let mut jobs: Vec<SimJob> = (0..10).map(|_| SimJob::new(A, 0, 10)).collect();
    jobs.push(SimJob::new(B, 1, 10));
    let out = run(&one_slot(), &jobs, true);
    let b = 10;
    assert!(out.finish[b] <= out.start[2], "{:?}", out.dispatches);
    // In fact B goes right after A's first job.
    assert_eq!(out.dispatches[..3], [0, b, 1]);
    assert!(out.light_checked.contains(&b));
}

#[test]
fn a_light_user_waits_behind_at_most_one_job_per_heavy_user() {
    // Three heavy users queue 20 long jobs each on two single-slot GPUs;
    // a newcomer submits one job in the middle of it.
    let mut jobs = Vec::new();
    for user in [A, B, C] {
        jobs.extend((0..20).map(|_| SimJob::new(user, 0, 100)));
    }
    jobs.push(SimJob::new(4, 250, 5));
    let room = Room {
        backends: vec![1, 1],
        cap: 1,
    };
    let out = run(&room, &jobs, true);
    let light = jobs.len() - 1;
    // Job starts, in order, from the submission to the light job's start.
    let between: Vec<usize> = out
        .dispatches
        .iter()
        .copied()
        .filter(|j| out.start[*j] >= 250)
        .take_while(|j| *j != light)
        .collect();
    assert!(between.len() <= 3, "heavy starts first: {between:?}");
    assert!(
        out.start[light] - 250 <= 100,
        "waits at most one job length"
    );
    assert!(out.light_checked.contains(&light));
}

#[test]
fn the_instructor_goes_first() {
    let mut jobs: Vec<SimJob> = (0..3)
        .flat_map(|_| [SimJob::new(A, 0, 10), SimJob::new(B, 0, 10)])
        .collect();
    jobs.push(SimJob::new(T, 5, 10).admin());
    jobs.push(SimJob::new(T, 5, 10).admin());
    let out = run(&one_slot(), &jobs, false);
    // A's first job is running when the teacher submits; the teacher's two
    // jobs follow it (cap 1: one at a time, nobody in between).
    assert_eq!(out.dispatches[..3], [0, 6, 7]);
}

#[test]
fn two_free_slots_go_to_two_users() {
    let pending: Vec<PendingJob> = (0..4)
        .map(|n| {
            let owner = if n < 3 { A } else { B };
            PendingJob::new(job_id(n), UserId(owner), false, OrderKey::back(n as u64))
        })
        .collect();
    let free = [slot(0, 0), slot(0, 1)];
    let got = plan(&pending, &RunningCounts::new(), &FairShare::new(), &free, 2);
    assert_eq!(got, [(job_id(0), slot(0, 0)), (job_id(3), slot(0, 1))]);
}

#[test]
fn caps_hold_even_with_slots_to_spare() {
    let pending: Vec<PendingJob> = (0..5)
        .map(|n| PendingJob::new(job_id(n), UserId(A), false, OrderKey::back(n as u64)))
        .collect();
    let free: Vec<Slot> = (0..4).map(|i| slot(0, i)).collect();
    let running: RunningCounts = [UserId(A)].into_iter().collect();
    let got = plan(&pending, &running, &FairShare::new(), &free, 2);
    assert_eq!(got, [(job_id(0), slot(0, 0))]);
    assert!(plan(&pending, &running, &FairShare::new(), &free, 1).is_empty());
}

#[test]
fn front_reorders_only_the_owners_queue() {
    // A queues three; B queues one; then A submits one with front: true.
    let jobs = vec![
        SimJob::new(A, 0, 10),
        SimJob::new(A, 0, 10),
        SimJob::new(A, 0, 10),
        SimJob::new(B, 1, 10),
        SimJob::new(A, 2, 10).front(),
    ];
    let out = run(&one_slot(), &jobs, false);
    // B still goes second; A's front job comes before A's other ones.
    assert_eq!(out.dispatches, [0, 3, 4, 1, 2]);
}

#[test]
fn a_retried_job_goes_to_the_front_of_its_owners_queue() {
    let mut pending: Vec<PendingJob> = (1..4)
        .map(|n| PendingJob::new(job_id(n), UserId(A), false, OrderKey::back(n as u64)))
        .collect();
    // Job 0 ran, its backend died, and it is back in the queue.
    pending.push(PendingJob::new(
        job_id(0),
        UserId(A),
        false,
        OrderKey::retry(0),
    ));
    pending.push(PendingJob::new(
        job_id(9),
        UserId(A),
        false,
        OrderKey::front(9),
    ));
    let got = plan(
        &pending,
        &RunningCounts::new(),
        &FairShare::new(),
        &[slot(0, 0)],
        1,
    );
    assert_eq!(got, [(job_id(0), slot(0, 0))]);
}

#[test]
fn jobs_only_go_where_they_are_allowed() {
    // A's first job needs gpu1, which is busy; B's takes gpu0, and A's later
    // job may use it too once B's is done.
    let jobs = vec![
        SimJob::new(A, 0, 10).only_on(&[1]),
        SimJob::new(C, 0, 100).only_on(&[1]),
        SimJob::new(B, 1, 10),
        SimJob::new(A, 1, 10),
    ];
    let room = Room {
        backends: vec![1, 1],
        cap: 1,
    };
    let out = run(&room, &jobs, false);
    // t=0: A's job 0 on gpu1, C's job 1 waits for gpu1. t=1: B on gpu0.
    assert_eq!(out.start[0], 0);
    assert_eq!(out.start[2], 1);
    // t=10: A's job 0 ends; gpu1 goes to C; A's job 3 to gpu0 at t=11.
    assert_eq!(out.start[1], 10);
    assert_eq!(out.start[3], 11);
}

#[test]
fn long_jobs_get_fewer_turns() {
    // A's jobs take 10 ms, B's 100 ms; both always have work.
    let mut jobs = Vec::new();
    for _ in 0..200 {
        jobs.push(SimJob::new(A, 0, 10));
        jobs.push(SimJob::new(B, 0, 100));
    }
    let out = run(&one_slot(), &jobs, false);
    let horizon = 2000;
    let done = |user: i64| {
        (0..jobs.len())
            .filter(|j| jobs[*j].user == UserId(user) && out.finish[*j] <= horizon)
            .count()
    };
    let (a, b) = (done(A), done(B));
    assert!(
        (95..=105).contains(&a) && (9..=11).contains(&b),
        "A {a}, B {b}"
    );
}

#[test]
fn after_a_restart_usage_totals_carry_over() {
    // Before the restart B had used a minute more than A.
    let share = FairShare::from_usage([
        (UserId(A), Usage { gpu_ms: 0, jobs: 0 }),
        (
            UserId(B),
            Usage {
                gpu_ms: 60_000,
                jobs: 6,
            },
        ),
    ]);
    let pending = vec![
        PendingJob::new(job_id(0), UserId(B), false, OrderKey::back(0)),
        PendingJob::new(job_id(1), UserId(A), false, OrderKey::back(1)),
    ];
    let mut share = share;
    share.sync_active([UserId(B), UserId(A)]);
    let got = plan(&pending, &RunningCounts::new(), &share, &[slot(0, 0)], 1);
    assert_eq!(got, [(job_id(1), slot(0, 0))]);
}

#[test]
fn duplicate_jobs_and_slots_are_used_once() {
    let job = PendingJob::new(job_id(0), UserId(A), false, OrderKey::back(0));
    let other = PendingJob::new(job_id(1), UserId(B), false, OrderKey::back(1));
    let pending = vec![job.clone(), job, other];
    let free = [slot(0, 0), slot(0, 0)];
    let got = plan(&pending, &RunningCounts::new(), &FairShare::new(), &free, 5);
    assert_eq!(got, [(job_id(0), slot(0, 0))]);
}

/// A participant alone in the room: their next job waits on the backend
/// behind the one it runs, though the cap allows one running job.
#[test]
fn the_next_job_waits_behind_the_running_one_of_the_same_owner() {
    let pending: Vec<PendingJob> = (1..4)
        .map(|n| PendingJob::new(job_id(n), UserId(A), false, OrderKey::back(n as u64)))
        .collect();
    let running: RunningCounts = [UserId(A)].into_iter().collect();
    let mut share = FairShare::new();
    share.sync_active([UserId(A)]);
    let busy = [(slot(0, 0), UserId(A))];
    assert!(
        plan(&pending, &running, &share, &[slot(0, 0)], 1).is_empty(),
        "the cap holds for free slots"
    );
    let got = plan_ahead(&pending, &running, &share, &busy, 1);
    assert_eq!(got, [(job_id(1), slot(0, 0))]);
}

/// The place behind A's running job goes to B, as the slot itself would
/// once A's job ends and is charged.
#[test]
fn the_place_behind_a_running_job_goes_to_whoever_would_be_next() {
    let pending = vec![
        PendingJob::new(job_id(1), UserId(A), false, OrderKey::back(1)),
        PendingJob::new(job_id(2), UserId(B), false, OrderKey::back(2)),
    ];
    let running: RunningCounts = [UserId(A)].into_iter().collect();
    let mut share = FairShare::new();
    share.sync_active([UserId(A), UserId(B)]);
    let busy = [(slot(0, 0), UserId(A))];
    let got = plan_ahead(&pending, &running, &share, &busy, 1);
    assert_eq!(got, [(job_id(2), slot(0, 0))]);
}

/// A user with a job running elsewhere stays within the cap: only the job
/// that is about to end frees a place.
#[test]
fn queueing_ahead_keeps_the_cap_for_jobs_running_elsewhere() {
    let pending = vec![PendingJob::new(
        job_id(1),
        UserId(A),
        false,
        OrderKey::back(1),
    )];
    // A runs on slot 1 and on slot 0 (cap 2); B runs on slot 2.
    let running: RunningCounts = [UserId(A), UserId(A), UserId(B)].into_iter().collect();
    let share = FairShare::new();
    let behind_b = [(slot(0, 2), UserId(B))];
    assert!(plan_ahead(&pending, &running, &share, &behind_b, 2).is_empty());
    let behind_a = [(slot(0, 0), UserId(A))];
    assert_eq!(
        plan_ahead(&pending, &running, &share, &behind_a, 2),
        [(job_id(1), slot(0, 0))]
    );
}

/// What each participant is told of their place: A queued three jobs, then
/// B and C one each, while T's job runs; B and C come between A's jobs, and
/// a job an instructor bumped (in the lane) goes before everyone's.
#[test]
fn the_expected_start_order_takes_turns() {
    let job = |n: usize, user: i64, lane: bool| {
        PendingJob::new(job_id(n), UserId(user), lane, OrderKey::back(n as u64))
    };
    let pending = vec![
        job(0, A, false),
        job(1, A, false),
        job(2, A, false),
        job(3, B, false),
        job(4, C, false),
    ];
    let running: RunningCounts = [UserId(T)].into_iter().collect();
    let mut share = FairShare::new();
    share.sync_active([A, B, C, T].map(UserId));
    let order = start_order(&pending, &running, &share);
    assert_eq!(order, [0, 3, 4, 1, 2].map(job_id));

    let mut bumped = pending.clone();
    bumped[2].admin = true;
    let order = start_order(&bumped, &running, &share);
    assert_eq!(order[0], job_id(2));
}

/// An instructor let A run two jobs at once: with two free slots A takes
/// both, while B, at the room's cap of one, has one running already.
#[test]
fn a_participants_own_cap_replaces_the_rooms() {
    let job = |n: usize, user: i64| {
        PendingJob::new(job_id(n), UserId(user), false, OrderKey::back(n as u64))
    };
    let pending = vec![
        job(0, A).owner_capped(Some(2)),
        job(1, A).owner_capped(Some(2)),
        job(2, B),
    ];
    let running: RunningCounts = [UserId(B)].into_iter().collect();
    let mut share = FairShare::new();
    share.sync_active([A, B].map(UserId));
    let free = [slot(0, 0), slot(1, 0)];
    let got: Vec<_> = plan(&pending, &running, &share, &free, 1)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, [job_id(0), job_id(1)]);
    // Without it, A gets one and the other slot stays free (B is at cap).
    let plain: Vec<PendingJob> = pending
        .iter()
        .map(|j| j.clone().owner_capped(None))
        .collect();
    assert_eq!(plan(&plain, &running, &share, &free, 1).len(), 1);
}
