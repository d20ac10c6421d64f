//! The fair scheduler: which pending job runs next, and on which GPU slot.
//!
//! Pure code: no clock, no I/O, no async. The dispatcher owns the state (the
//! durable queue in the store, a [`FairShare`] in memory). Whenever a job
//! arrives or a slot frees up it calls [`FairShare::sync_active`] with the
//! users who have work, then [`plan`] with a snapshot, and carries out the
//! assignments in the order given. When a job ends it calls
//! [`FairShare::charge`] with the GPU time used.
//!
//! # The policy
//!
//! 1. **Instructor lane first.** Jobs in the admin lane ([`PendingJob::admin`],
//!    every job an admin submits) start before any participant job that could
//!    use the same slot. Among lane jobs, the same fairness applies.
//! 2. **Round-robin, fair by GPU time.** Each user has a *virtual time*: the
//!    GPU milliseconds their finished jobs used, plus, while planning, their
//!    mean job length for each job they have running or were just assigned.
//!    The next slot goes to the eligible user with the least virtual time; on
//!    a tie, to the user whose oldest pending job is oldest. A user whose jobs
//!    are ten times longer gets about a tenth as many jobs, and two free
//!    slots go to two users rather than one.
//! 3. **No banked credit, no newcomer takeover.** A user who goes from idle to
//!    having work starts at `max(own vtime, floor)`, where the floor is the
//!    least vtime among active users (CFS's `min_vruntime`). Being idle earns
//!    nothing; a newcomer is level with the least-served active user: next in
//!    line, then taking turns like everyone else.
//! 4. **FIFO within a user.** A user's own queue runs in instructor-lane
//!    then [`OrderKey`] order (ComfyUI's `number`: `front: true` gives a
//!    negative one; then submission order). Which *user* goes next never
//!    looks at an `OrderKey`, so `front` reorders only the owner's queue.
//!    A retried job takes [`OrderKey::retry`]: the front of its owner's queue.
//! 5. **Caps.** No user ever has more than `cap` jobs running
//!    (`limits.max_running_per_user`, default 1), admins included.
//! 6. **Backends.** Every [`Slot`] names its backend; a job may be limited to
//!    some backends ([`PendingJob::allowed`]: groups, drain, models). It takes
//!    the first free slot it may use, in the caller's order of `free`, which
//!    is where a preference such as model affinity goes. A user whose first
//!    job cannot use any free slot may start a later job that can.
//! 7. **Work-conserving.** [`plan`] stops only when no free slot can take a
//!    job whose owner is below the cap.
//! 8. **Queueing ahead** (optional). [`plan_ahead`] picks the job each busy
//!    slot runs next, to wait on its backend behind the running one: the
//!    pick [`plan`] would make when that job ends (its owner one running
//!    job fewer against the cap, its GPU time already counted). The light
//!    user's bound below then grows by at most one job per slot.
//!
//! # Guarantees
//!
//! Property-tested in `tests`, on random snapshots and on an event-driven
//! simulation of rooms (random users, admins, arrivals, durations, backends
//! and slots):
//!
//! * No slot is booked twice, no job starts twice, no cap is exceeded, no job
//!   runs on a backend it is not allowed on.
//! * Every job eventually runs.
//! * A job never starts on a slot that an earlier job of the same owner
//!   (in that owner's queue order) could have used.
//! * No participant job starts while an instructor-lane job that could use
//!   that slot waits below its owner's cap.
//! * **Light user.** Let a participant L submit a job while having nothing
//!   else pending or running, with a virtual time (after activation) no
//!   greater than any other active user's, e.g. someone who has used little
//!   or no GPU. Then, counting job starts (dispatches) in order from that
//!   submission until L's job starts: each other participant who was active
//!   at the submission starts at most one job, and participants who became
//!   active later start none, however many jobs anyone has queued.
//!   (Instructor-lane jobs are not counted; the bound assumes L's job may
//!   run on any backend and no later `front` job of L's goes first.) Why:
//!   every active user then has vtime ≥ L's; someone can only go before L
//!   with an equal vtime, nothing running and an older job, and once they
//!   have started a job it is running or charged (≥ 1 ms), so they are
//!   strictly behind L from then on.
//! * **GPU time.** Two participants who both always have work stay within
//!   `min(cap, slots)` × (the longer job length) of each other in finished
//!   GPU time, however different their job lengths; with one slot, the
//!   user of 1 s jobs runs ten for every 10 s job of the other.

mod fair_share;
mod input;
mod plan;

#[cfg(test)]
mod tests;

pub use fair_share::{FairShare, Usage};
pub use input::{BackendId, OrderKey, PendingJob, RunningCounts, Slot};
pub use plan::{plan, plan_ahead, start_order};
