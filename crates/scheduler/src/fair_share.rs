//! Fair-share accounting: each user's virtual GPU time, as a small state
//! machine the dispatcher owns and feeds (in memory; rebuilt from the
//! store's usage totals on restart).

use std::collections::BTreeMap;

use comfyume_domain::UserId;

/// GPU time a user (or the room) has used, for estimates and the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Milliseconds of GPU time, as charged.
    pub gpu_ms: u64,
    /// Finished jobs (completed, failed or interrupted after starting).
    pub jobs: u64,
}

impl Usage {
    /// The mean job length, if any job finished.
    fn mean_ms(&self) -> Option<u64> {
        self.gpu_ms.checked_div(self.jobs)
    }
}

#[derive(Debug, Clone, Default)]
struct Account {
    vtime: u64,
    usage: Usage,
    active: bool,
}

/// Per-user virtual GPU time, in milliseconds.
///
/// * [`charge`](Self::charge) adds a finished job's GPU time to its owner
///   (at least 1 ms, so even a job that fails at once costs a turn).
/// * [`sync_active`](Self::sync_active) tells it which users have work
///   (pending or running). A user who goes from idle to active starts at
///   `max(own vtime, floor)`, where the floor is the least vtime among
///   active users (never decreasing, like CFS's `min_vruntime`). So idle
///   time banks no credit, and a newcomer is level with the least-served
///   active user: next in line, but not ahead for long.
///
/// Every active user's vtime is at least the floor, at all times.
#[derive(Debug, Clone, Default)]
pub struct FairShare {
    accounts: BTreeMap<UserId, Account>,
    floor: u64,
    room: Usage,
}

impl FairShare {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the accounting after a restart from each user's usage
    /// totals (pass the current workshop's, e.g. since the room opened).
    /// Every user starts inactive at vtime = their GPU time; the first
    /// [`sync_active`](Self::sync_active) then keeps the differences
    /// between users who have work, whatever order they come in.
    pub fn from_usage(usage: impl IntoIterator<Item = (UserId, Usage)>) -> Self {
        let mut share = Self::new();
        for (user, u) in usage {
            let account = share.accounts.entry(user).or_default();
            account.usage.gpu_ms += u.gpu_ms;
            account.usage.jobs += u.jobs;
            account.vtime += u.gpu_ms;
            share.room.gpu_ms += u.gpu_ms;
            share.room.jobs += u.jobs;
        }
        share
    }

    /// Declares the users who have work now (pending or running jobs; a
    /// user may appear several times). Users missing from the set become
    /// idle; users new to it are placed at `max(own vtime, floor)`. The
    /// result does not depend on the order of the set.
    pub fn sync_active(&mut self, with_work: impl IntoIterator<Item = UserId>) {
        let now: std::collections::BTreeSet<UserId> = with_work.into_iter().collect();
        for (user, account) in &mut self.accounts {
            if account.active && !now.contains(user) {
                account.active = false;
            }
        }
        // The floor first rises to the users who stay active, so newcomers
        // are compared with them, not with each other.
        self.refresh_floor();
        for user in now {
            let account = self.accounts.entry(user).or_default();
            if !account.active {
                account.active = true;
                account.vtime = account.vtime.max(self.floor);
            }
        }
        self.refresh_floor();
    }

    /// Charges `user` for one finished job that used `gpu_ms` of GPU time.
    /// Jobs that never started are not charged.
    pub fn charge(&mut self, user: UserId, gpu_ms: u64) {
        let account = self.accounts.entry(user).or_default();
        account.vtime = account.vtime.saturating_add(gpu_ms.max(1));
        account.usage.gpu_ms = account.usage.gpu_ms.saturating_add(gpu_ms);
        account.usage.jobs += 1;
        self.room.gpu_ms = self.room.gpu_ms.saturating_add(gpu_ms);
        self.room.jobs += 1;
        self.refresh_floor();
    }

    /// The user's virtual time: their own if active, otherwise what it
    /// would be on activation (`max(own, floor)`).
    pub fn vtime(&self, user: UserId) -> u64 {
        match self.accounts.get(&user) {
            Some(a) if a.active => a.vtime,
            Some(a) => a.vtime.max(self.floor),
            None => self.floor,
        }
    }

    /// The least vtime among active users (or the last such value when
    /// nobody is active). Never decreases.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn is_active(&self, user: UserId) -> bool {
        self.accounts.get(&user).is_some_and(|a| a.active)
    }

    /// The users currently active, in id order.
    pub fn active_users(&self) -> impl Iterator<Item = UserId> + '_ {
        self.accounts
            .iter()
            .filter(|(_, a)| a.active)
            .map(|(u, _)| *u)
    }

    /// The room's mean job length so far, if any job has been charged.
    pub fn room_mean_ms(&self) -> Option<u64> {
        self.room.mean_ms()
    }

    /// What a job of `user` is expected to cost while it runs: the user's
    /// mean job length, else the room's, else 1 ms. Never zero.
    pub fn estimate_ms(&self, user: UserId) -> u64 {
        self.accounts
            .get(&user)
            .and_then(|a| a.usage.mean_ms())
            .or_else(|| self.room.mean_ms())
            .unwrap_or(1)
            .max(1)
    }

    pub fn usage(&self, user: UserId) -> Usage {
        self.accounts
            .get(&user)
            .map(|a| a.usage)
            .unwrap_or_default()
    }

    /// The whole room's usage.
    pub fn room_usage(&self) -> Usage {
        self.room
    }

    fn refresh_floor(&mut self) {
        if let Some(min) = self
            .accounts
            .values()
            .filter(|a| a.active)
            .map(|a| a.vtime)
            .min()
        {
            self.floor = self.floor.max(min);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: UserId = UserId(1);
    const B: UserId = UserId(2);
    const C: UserId = UserId(3);

    #[test]
    fn an_idle_user_banks_no_credit() {
        let mut share = FairShare::new();
        share.sync_active([A, B]);
        share.charge(A, 100);
        share.charge(B, 300);
        // B leaves; A goes on working.
        share.sync_active([A]);
        share.charge(A, 1000);
        assert_eq!(share.floor(), 1100);
        // B comes back level with A, not 800 ms behind.
        assert_eq!(share.vtime(B), 1100);
        share.sync_active([A, B]);
        assert_eq!(share.vtime(B), 1100);
        assert_eq!(
            share.usage(B),
            Usage {
                gpu_ms: 300,
                jobs: 1
            }
        );
    }

    #[test]
    fn a_newcomer_starts_level_with_the_least_served_active_user() {
        let mut share = FairShare::new();
        share.sync_active([A, B]);
        share.charge(A, 500);
        share.charge(B, 200);
        share.sync_active([A, B, C]);
        assert_eq!(share.vtime(C), 200);
        assert_eq!(share.floor(), 200);
    }

    #[test]
    fn a_heavier_returning_user_keeps_their_own_vtime() {
        let mut share = FairShare::new();
        share.sync_active([A, B]);
        share.charge(A, 5000);
        share.charge(B, 100);
        share.sync_active([B]);
        share.sync_active([A, B]);
        assert_eq!(share.vtime(A), 5000);
    }

    #[test]
    fn activation_does_not_depend_on_order() {
        let usage = [
            (
                A,
                Usage {
                    gpu_ms: 1000,
                    jobs: 2,
                },
            ),
            (B, Usage { gpu_ms: 0, jobs: 0 }),
            (
                C,
                Usage {
                    gpu_ms: 400,
                    jobs: 1,
                },
            ),
        ];
        let mut one = FairShare::from_usage(usage);
        let mut two = FairShare::from_usage(usage.into_iter().rev());
        one.sync_active([A, B, C]);
        two.sync_active([C, B, A]);
        for u in [A, B, C] {
            assert_eq!(one.vtime(u), two.vtime(u));
        }
        assert_eq!(one.vtime(A), 1000);
        assert_eq!(one.vtime(B), 0);
        assert_eq!(one.floor(), 0);
        assert_eq!(one.estimate_ms(A), 500);
        // B has no history: the room's mean job.
        assert_eq!(one.estimate_ms(B), 1400 / 3);
    }

    #[test]
    fn every_job_costs_at_least_a_millisecond() {
        let mut share = FairShare::new();
        share.sync_active([A]);
        share.charge(A, 0);
        assert_eq!(share.vtime(A), 1);
        assert_eq!(share.usage(A), Usage { gpu_ms: 0, jobs: 1 });
        assert_eq!(share.estimate_ms(A), 1);
    }

    #[test]
    fn the_floor_never_decreases() {
        let mut share = FairShare::new();
        share.sync_active([A]);
        share.charge(A, 700);
        assert_eq!(share.floor(), 700);
        // A newcomer with no history cannot pull the floor down.
        share.sync_active([A, B]);
        assert_eq!(share.vtime(B), 700);
        share.sync_active([]);
        assert_eq!(share.floor(), 700);
        assert_eq!(share.vtime(C), 700);
    }
}
