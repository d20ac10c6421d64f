//! The running count a person watches while a load test runs: one line on
//! stderr, redrawn in place on a terminal, repeated every few seconds
//! otherwise (a log file should not fill with carriage returns).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Whether to show the progress line. Tests and other library callers keep
/// it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Off,
    Stderr,
}

/// What the participants have done so far, updated as they go.
#[derive(Debug, Default)]
pub struct Counters {
    pub logged_in: AtomicU64,
    pub jobs_finished: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The room's size, for the "of" in each count.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    pub participants: u64,
    pub jobs: u64,
}

/// Draws the line until `stop` fires; `None` when progress is off.
pub fn show(
    progress: Progress,
    counters: Arc<Counters>,
    totals: Totals,
    start: Instant,
    stop: oneshot::Receiver<()>,
) -> Option<tokio::task::JoinHandle<()>> {
    if progress == Progress::Off {
        return None;
    }
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    Some(tokio::spawn(async move {
        let mut stop = stop;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; a log gets its first line after one period.
        ticks.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                _ = &mut stop => true,
            };
            let text = line(&counters, totals, start.elapsed());
            let mut err = std::io::stderr().lock();
            // Progress is a courtesy: a closed stderr must not end the run.
            let _ = if terminal {
                write!(err, "\r{text}\x1b[K")
            } else {
                writeln!(err, "{text}")
            };
            if stopping {
                if terminal {
                    let _ = writeln!(err);
                }
                return;
            }
        }
    }))
}

fn line(counters: &Counters, totals: Totals, elapsed: Duration) -> String {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    format!(
        "loadtest {:>6.1} s: {}/{} logged in, jobs {}/{} done, {} error(s)",
        elapsed.as_secs_f64(),
        get(&counters.logged_in),
        totals.participants,
        get(&counters.jobs_finished),
        totals.jobs,
        get(&counters.errors),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_against_the_totals() {
        let c = Counters::default();
        Counters::add(&c.logged_in);
        Counters::add(&c.jobs_finished);
        let totals = Totals {
            participants: 24,
            jobs: 72,
        };
        assert_eq!(
            line(&c, totals, Duration::from_millis(1500)),
            "loadtest    1.5 s: 1/24 logged in, jobs 1/72 done, 0 error(s)"
        );
    }
}
