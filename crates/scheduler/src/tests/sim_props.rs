//! Properties of the scheduler over simulated rooms: random users (some
//! admins), arrival times, durations, backends and slots. The simulator
//! itself checks (b) caps, (c) no double booking, (d) FIFO within a user,
//! (e) instructor lane first and (h) work conservation at every dispatch,
//! and (a) that every job ran; (f) when asked.

use proptest::prelude::*;

use super::sim::{Room, SimJob, run};
use comfyume_domain::UserId;

fn room() -> impl Strategy<Value = Room> {
    (prop::collection::vec(1u32..=3, 1..=3), 1u32..=3)
        .prop_map(|(backends, cap)| Room { backends, cap })
}

/// A room and its jobs, sorted by arrival. Users 1-6, each an admin with
/// probability 1/4; with `restricted`, some jobs may use only some backends.
fn scenario(restricted: bool) -> impl Strategy<Value = (Room, Vec<SimJob>)> {
    (room(), prop::collection::vec(prop::bool::weighted(0.25), 6))
        .prop_flat_map(move |(room, admins)| {
            let backends = room.backends.len();
            let job = (
                1i64..=6,
                0u64..400,
                1u64..80,
                prop::bool::weighted(0.15),
                prop::collection::btree_set(0..backends, 1..=backends),
                prop::bool::weighted(0.3),
            );
            (Just(room), Just(admins), prop::collection::vec(job, 1..60))
        })
        .prop_map(move |(room, admins, raw)| {
            let mut jobs: Vec<SimJob> = raw
                .into_iter()
                .map(|(user, arrive, duration, front, only, restrict)| {
                    let mut job = SimJob::new(user, arrive, duration);
                    job.admin = admins[user as usize - 1];
                    job.front = front;
                    if restricted && restrict {
                        job.allowed = Some(only);
                    }
                    job
                })
                .collect();
            jobs.sort_by_key(|j| j.arrive);
            (room, jobs)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// (a) every job runs; (b), (c), (d), (e), (h) at every dispatch, with
    /// some jobs restricted to some backends.
    #[test]
    fn rooms_keep_every_invariant((room, jobs) in scenario(true)) {
        run(&room, &jobs, false);
    }

    /// (f) in random rooms: every light submission (owner idle, vtime no
    /// greater than any other active user's) waits behind at most one start
    /// per other participant active at submission, and none of others.
    #[test]
    fn light_users_wait_at_most_one_job_per_active_user((room, jobs) in scenario(false)) {
        run(&room, &jobs, true);
    }

    /// (f) against heavy users: 1-4 users queue many long jobs, others come
    /// and go, then a newcomer submits one job. It waits behind at most one
    /// start per other active participant.
    #[test]
    fn a_newcomer_waits_behind_at_most_one_job_per_heavy_user(
        room in room(),
        heavy in prop::collection::vec((5usize..25, 50u64..300, 0u64..50), 1..=4),
        others in prop::collection::vec((5i64..=7, 0u64..2000, 1u64..100), 0..20),
        admin in prop::collection::vec((0u64..2000, 1u64..100), 0..4),
        arrive in 1u64..2000,
        duration in 1u64..100,
    ) {
        let mut jobs = Vec::new();
        for (user, (count, length, at)) in heavy.into_iter().enumerate() {
            jobs.extend((0..count).map(|_| SimJob::new(user as i64 + 1, at, length)));
        }
        jobs.extend(others.into_iter().map(|(u, at, d)| SimJob::new(u, at, d)));
        jobs.extend(admin.into_iter().map(|(at, d)| SimJob::new(9, at, d).admin()));
        let light = UserId(8);
        jobs.push(SimJob::new(light.0, arrive, duration));
        jobs.sort_by_key(|j| j.arrive);
        let out = run(&room, &jobs, true);
        let j = jobs.iter().position(|j| j.user == light).unwrap();
        prop_assert!(out.light_checked.contains(&j), "the newcomer's wait was not checked");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// (g) two participants who always have work, one with jobs up to 12
    /// times longer: their finished GPU time stays within one long job per
    /// slot a user can hold (`min(cap, slots)`) of each other, so the
    /// short-job user gets about `ratio` times as many jobs.
    #[test]
    fn gpu_time_stays_balanced(
        short in 1u64..=20,
        ratio in 1u64..=12,
        backends in prop::collection::vec(1u32..=3, 1..=2),
        cap in 1u32..=3,
    ) {
        let long = ratio * short;
        let mut jobs = Vec::new();
        // Enough short jobs that user 1 outlasts user 2's 30 long ones.
        for n in 0..30 * (ratio + 1) {
            jobs.push(SimJob::new(1, 0, short));
            if n < 30 {
                jobs.push(SimJob::new(2, 0, long));
            }
        }
        let room = Room { backends, cap };
        let out = run(&room, &jobs, false);
        let holds = u64::from(cap).min(room.slots().len() as u64);
        let bound = holds * long;
        let mut worst = 0;
        let mut measured = 0;
        for step in &out.steps {
            let backlogged = [1, 2].iter().all(|u| step.pending.get(&UserId(*u)).is_some_and(|n| *n > 0));
            if !backlogged {
                break;
            }
            measured += 1;
            let used = |u| step.gpu_ms.get(&UserId(u)).copied().unwrap_or(0);
            worst = worst.max(used(1).abs_diff(used(2)));
        }
        prop_assert!(measured >= 5);
        prop_assert!(worst <= bound, "GPU time apart by {worst} ms (bound {bound}), {room:?}");
    }
}
