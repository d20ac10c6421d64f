//! What a load test found, from what every participant saw: counts,
//! latency percentiles per step, errors, fairness, misdirected frames and
//! the gateway's resource use. One `Report`, serialised as JSON, printed as
//! a table, drawn as HTML (`html`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::metrics::GatewayUsage;
use super::participant::Outcome;

/// Error examples kept per kind, and in all.
const EXAMPLES_PER_KIND: usize = 3;
const MAX_EXAMPLES: usize = 20;
/// Misdirected frames described in the report.
const MAX_MISDIRECTED_EXAMPLES: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub options: OptionsUsed,
    pub participants: usize,
    /// From the first login to the last socket closed.
    pub wall_time_s: f64,
    pub jobs: JobCounts,
    /// Completed jobs over the time from the first submit to the last
    /// completion (absent without a completion).
    pub jobs_per_second: Option<f64>,
    pub steps: Steps,
    pub errors: Errors,
    pub fairness: Fairness,
    pub misdirected_frames: Misdirected,
    pub socket_frames: FrameCounts,
    pub gateway: GatewayUsage,
    /// When each job completed, in seconds since the start, in order.
    pub completions_s: Vec<f64>,
}

/// The options of the run, as the report shows them (no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct OptionsUsed {
    pub url: String,
    /// Where the accounts came from.
    pub accounts: String,
    pub ramp_s: f64,
    pub jobs_per_user: u32,
    pub think_s: f64,
    pub duration_s: Option<f64>,
    pub timeout_s: f64,
    pub workflow: String,
    /// The inputs changed per job so no backend answers from its cache.
    pub varied_inputs: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct JobCounts {
    /// Participants × jobs per user.
    pub planned: u64,
    pub submitted: u64,
    /// Finished, and every output fetched.
    pub completed: u64,
    pub failed: u64,
}

/// Latency of one step, in milliseconds (absent when nothing was measured).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StepStats {
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl StepStats {
    pub fn of(samples: &[Duration]) -> StepStats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let at = |p| percentile(&ms, p).map(round3);
        StepStats {
            count: ms.len(),
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p99_ms: at(99.0),
            max_ms: ms.last().copied().map(round3),
        }
    }
}

/// The nearest-rank percentile `p` (0–100) of ascending `sorted` values:
/// the smallest value with at least p % of the values at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Each step a participant takes, timed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Steps {
    /// `POST /login` to its 303.
    pub login: StepStats,
    /// Every request the frontend makes at page load, one after another.
    pub startup: StepStats,
    /// `POST /api/prompt` to its 200.
    pub submit: StepStats,
    /// The submit's 200 to the job's `execution_start`.
    pub queue_wait: StepStats,
    /// `execution_start` to the final `executing` (completed jobs).
    pub run: StepStats,
    /// The job's history entry and every output image.
    pub output_fetch: StepStats,
}

impl Steps {
    pub fn named(&self) -> [(&'static str, &StepStats); 6] {
        [
            ("login", &self.login),
            ("startup", &self.startup),
            ("submit", &self.submit),
            ("queue_wait", &self.queue_wait),
            ("run", &self.run),
            ("output_fetch", &self.output_fetch),
        ]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub examples: Vec<ErrorExample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorExample {
    pub kind: String,
    pub user: String,
    pub message: String,
}

/// Frames on a participant's socket about a prompt that is not theirs (or
/// not theirs yet). Must be zero.
#[derive(Debug, Clone, Serialize)]
pub struct Misdirected {
    pub count: u64,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct FrameCounts {
    pub text: u64,
    /// Previews; counted, not read.
    pub binary: u64,
}

/// Fairness as a waiting participant feels it: while my job waits, how many
/// jobs of other participants start ahead of it?
///
/// A job's wait runs from the answer to its submit (it is queued by then)
/// to its `execution_start`. `others_started` counts the jobs of other
/// participants whose `execution_start` falls strictly inside that wait.
/// The bound is the number of other participants active when the wait
/// began: those with a job submitted (answered) and not yet ended. A fair
/// queue lets each of them start at most one job ahead of mine, so a job is
/// over the bound when `others_started > bound`. Its ratio is
/// `others_started / bound`, a bound of zero counting as one. Only jobs that
/// started are measured; all times are the load test's own clock, which
/// sees every participant.
///
/// Over the bound is not unfair by itself: the gateway's queue is fair by
/// GPU time, and the bound is its guarantee only for a participant who has
/// used no more GPU time than anyone active. One whose earlier jobs ran
/// longer (a simulator's run times vary with the machine's load) rightly
/// waits while others catch up; `per_participant` shows each one's run time
/// beside their wait, so a reader can tell the two apart.
#[derive(Debug, Clone, Serialize)]
pub struct Fairness {
    pub jobs_measured: usize,
    pub jobs_over_bound: usize,
    pub worst_ratio: Option<f64>,
    pub worst_job: Option<WaitedJob>,
    /// Each participant's mean queue wait: an unfair queue shows here as a
    /// few participants waiting much longer than the rest.
    pub per_participant: Vec<ParticipantWait>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaitedJob {
    pub user: String,
    pub prompt_id: String,
    pub others_started: usize,
    pub bound: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantWait {
    pub user: String,
    pub jobs_started: usize,
    pub mean_queue_wait_ms: Option<f64>,
    /// From each started job's `execution_start` to its end: the GPU time
    /// the queue charges them, as the participant saw it.
    pub run_ms_total: f64,
}

/// One accepted job on the load test's clock (seconds since the start), as
/// fairness sees it.
#[derive(Debug, Clone)]
pub struct Span {
    pub participant: usize,
    pub prompt_id: String,
    pub accepted: f64,
    pub started: Option<f64>,
    pub ended: f64,
}

pub fn fairness(spans: &[Span], users: &[String]) -> Fairness {
    let mut starts: Vec<(f64, usize)> = spans
        .iter()
        .filter_map(|s| s.started.map(|t| (t, s.participant)))
        .collect();
    starts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut measured, mut over) = (0, 0);
    let mut worst: Option<(f64, WaitedJob)> = None;
    for job in spans {
        let Some(started) = job.started else { continue };
        measured += 1;
        // Starts strictly between the job's acceptance and its own start.
        let from = starts.partition_point(|&(t, _)| t <= job.accepted);
        let to = starts.partition_point(|&(t, _)| t < started);
        let others_started = starts[from..to.max(from)]
            .iter()
            .filter(|&&(_, p)| p != job.participant)
            .count();
        let mut active: Vec<usize> = spans
            .iter()
            .filter(|o| o.participant != job.participant)
            .filter(|o| o.accepted <= job.accepted && o.ended > job.accepted)
            .map(|o| o.participant)
            .collect();
        active.sort_unstable();
        active.dedup();
        let bound = active.len();
        if others_started > bound {
            over += 1;
        }
        let ratio = others_started as f64 / bound.max(1) as f64;
        if worst.as_ref().is_none_or(|(r, _)| ratio > *r) {
            let user = users.get(job.participant).cloned().unwrap_or_default();
            worst = Some((
                ratio,
                WaitedJob {
                    user,
                    prompt_id: job.prompt_id.clone(),
                    others_started,
                    bound,
                },
            ));
        }
    }
    let per_participant = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let started: Vec<(&Span, f64)> = spans
                .iter()
                .filter(|s| s.participant == i)
                .filter_map(|s| Some((s, s.started?)))
                .collect();
            let ms = |x: f64| x.max(0.0) * 1000.0;
            let waits: f64 = started.iter().map(|(s, t)| ms(t - s.accepted)).sum();
            let runs: f64 = started.iter().map(|(s, t)| ms(s.ended - t)).sum();
            ParticipantWait {
                user: user.clone(),
                jobs_started: started.len(),
                mean_queue_wait_ms: (!started.is_empty())
                    .then(|| round3(waits / started.len() as f64)),
                run_ms_total: round3(runs),
            }
        })
        .collect();
    Fairness {
        jobs_measured: measured,
        jobs_over_bound: over,
        worst_ratio: worst.as_ref().map(|(r, _)| round3(*r)),
        worst_job: worst.map(|(_, j)| j),
        per_participant,
    }
}

impl Report {
    /// The report of a run that started at `start` and took `wall`.
    pub fn build(
        options: OptionsUsed,
        outcomes: &[Outcome],
        start: Instant,
        wall: Duration,
        gateway: GatewayUsage,
    ) -> Report {
        let secs = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
        let jobs = || outcomes.iter().flat_map(|o| o.jobs.iter());
        let submitted = jobs().count() as u64;
        let completed = jobs().filter(|j| j.completed).count() as u64;

        let first_submit = jobs().map(|j| j.sent).min();
        let last_completion = jobs().filter(|j| j.completed).map(|j| j.ended).max();
        let jobs_per_second = match (first_submit, last_completion) {
            (Some(a), Some(b)) if b > a => Some(round3(completed as f64 / (b - a).as_secs_f64())),
            _ => None,
        };

        let durations = |f: &dyn Fn(&super::participant::JobRecord) -> Option<Duration>| {
            jobs().filter_map(f).collect::<Vec<_>>()
        };
        let steps = Steps {
            login: StepStats::of(&outcomes.iter().filter_map(|o| o.login).collect::<Vec<_>>()),
            startup: StepStats::of(
                &outcomes
                    .iter()
                    .filter_map(|o| o.startup)
                    .collect::<Vec<_>>(),
            ),
            submit: StepStats::of(&durations(&|j| j.accepted.map(|a| a - j.sent))),
            queue_wait: StepStats::of(&durations(&|j| {
                Some(j.started?.saturating_duration_since(j.accepted?))
            })),
            run: StepStats::of(&durations(&|j| {
                j.completed
                    .then_some(j.started)
                    .flatten()
                    .map(|s| j.ended.saturating_duration_since(s))
            })),
            output_fetch: StepStats::of(&durations(&|j| j.output_fetch)),
        };

        let mut by_kind = BTreeMap::new();
        let mut examples = Vec::new();
        for o in outcomes {
            for (kind, n) in &o.error_counts {
                *by_kind.entry(kind.clone()).or_insert(0) += n;
            }
            for f in &o.failures {
                let same_kind = examples
                    .iter()
                    .filter(|e: &&ErrorExample| e.kind == f.kind)
                    .count();
                if same_kind < EXAMPLES_PER_KIND && examples.len() < MAX_EXAMPLES {
                    examples.push(ErrorExample {
                        kind: f.kind.clone(),
                        user: o.user.clone(),
                        message: f.message.clone(),
                    });
                }
            }
        }

        let spans: Vec<Span> = outcomes
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                o.jobs.iter().filter_map(move |j| {
                    Some(Span {
                        participant: i,
                        prompt_id: j.prompt_id.clone()?,
                        accepted: secs(j.accepted?),
                        started: j.started.map(secs),
                        ended: secs(j.ended),
                    })
                })
            })
            .collect();
        let users: Vec<String> = outcomes.iter().map(|o| o.user.clone()).collect();

        let mut completions_s: Vec<f64> = jobs()
            .filter(|j| j.completed)
            .map(|j| round3(secs(j.ended)))
            .collect();
        completions_s.sort_by(f64::total_cmp);

        Report {
            participants: outcomes.len(),
            wall_time_s: round3(wall.as_secs_f64()),
            jobs: JobCounts {
                planned: outcomes.len() as u64 * u64::from(options.jobs_per_user),
                submitted,
                completed,
                failed: submitted - completed,
            },
            jobs_per_second,
            steps,
            errors: Errors {
                total: by_kind.values().sum(),
                by_kind,
                examples,
            },
            fairness: fairness(&spans, &users),
            misdirected_frames: Misdirected {
                count: outcomes.iter().map(|o| o.misdirected).sum(),
                examples: outcomes
                    .iter()
                    .flat_map(|o| {
                        o.misdirected_examples
                            .iter()
                            .map(move |e| format!("{}: {e}", o.user))
                    })
                    .take(MAX_MISDIRECTED_EXAMPLES)
                    .collect(),
            },
            socket_frames: FrameCounts {
                text: outcomes.iter().map(|o| o.text_frames).sum(),
                binary: outcomes.iter().map(|o| o.binary_frames).sum(),
            },
            gateway,
            completions_s,
            options,
        }
    }

    /// Whether the run found anything wrong: errors or misdirected frames.
    pub fn is_clean(&self) -> bool {
        self.errors.total == 0 && self.misdirected_frames.count == 0
    }

    /// The report as a person reads it in a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let _ = writeln!(
            out,
            "Load test of {}: {} participants, {} job(s) each, {:.1} s",
            o.url, self.participants, o.jobs_per_user, self.wall_time_s
        );
        let rate = self
            .jobs_per_second
            .map_or("-".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "jobs: {} planned, {} submitted, {} completed, {} failed; {rate} jobs/s\n",
            self.jobs.planned, self.jobs.submitted, self.jobs.completed, self.jobs.failed
        );
        let _ = writeln!(
            out,
            "{:<14} {:>6} {:>10} {:>10} {:>10} {:>10}",
            "step", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        for (name, s) in self.steps.named() {
            let _ = writeln!(
                out,
                "{name:<14} {:>6} {:>10} {:>10} {:>10} {:>10}",
                s.count,
                cell(s.p50_ms),
                cell(s.p90_ms),
                cell(s.p99_ms),
                cell(s.max_ms)
            );
        }
        out.push('\n');
        if self.errors.total == 0 {
            out.push_str("errors: none\n");
        } else {
            let _ = writeln!(out, "errors: {}", self.errors.total);
            for (kind, n) in &self.errors.by_kind {
                let _ = writeln!(out, "  {kind:<32} {n}");
            }
            for e in &self.errors.examples {
                let _ = writeln!(out, "  e.g. [{}] {}: {}", e.kind, e.user, e.message);
            }
        }
        let _ = writeln!(out, "misdirected frames: {}", self.misdirected_frames.count);
        for e in &self.misdirected_frames.examples {
            let _ = writeln!(out, "  e.g. {e}");
        }
        let f = &self.fairness;
        let _ = writeln!(
            out,
            "fairness: {} job(s) measured, {} over the bound (one job per other participant active at its submit), worst ratio {}",
            f.jobs_measured,
            f.jobs_over_bound,
            f.worst_ratio.map_or("-".to_string(), |r| format!("{r:.2}")),
        );
        let mut waits: Vec<(&str, f64)> = f
            .per_participant
            .iter()
            .filter_map(|p| Some((p.user.as_str(), p.mean_queue_wait_ms?)))
            .collect();
        waits.sort_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some(low), Some(high)) = (waits.first(), waits.last()) {
            let _ = writeln!(
                out,
                "  mean queue wait per participant: shortest {:.1} ms ({}), longest {:.1} ms ({})",
                low.1, low.0, high.1, high.0
            );
        }
        let g = &self.gateway;
        match (g.peak_rss_bytes, &g.reason) {
            (Some(peak), reason) => {
                let cpu = g
                    .mean_cpu_percent
                    .map_or("-".to_string(), |c| format!("{c:.1} %"));
                let _ = writeln!(
                    out,
                    "gateway: peak RSS {:.1} MB, mean CPU {cpu} ({} samples)",
                    peak as f64 / 1e6,
                    g.samples.len()
                );
                if let Some(r) = reason {
                    let _ = writeln!(out, "  {r}");
                }
            }
            (None, reason) => {
                let _ = writeln!(
                    out,
                    "gateway: {}",
                    reason.as_deref().unwrap_or("not measured")
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&v, 90.0), Some(9.0));
        assert_eq!(percentile(&v, 99.0), Some(10.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
    }

    #[test]
    fn step_stats_in_milliseconds() {
        let s = StepStats::of(&[
            Duration::from_millis(3),
            Duration::from_millis(1),
            Duration::from_millis(2),
        ]);
        assert_eq!(s.count, 3);
        assert_eq!((s.p50_ms, s.max_ms), (Some(2.0), Some(3.0)));
        let none = StepStats::of(&[]);
        assert_eq!((none.count, none.p50_ms), (0, None));
    }

    fn span(participant: usize, id: &str, accepted: f64, started: f64, ended: f64) -> Span {
        Span {
            participant,
            prompt_id: id.into(),
            accepted,
            started: Some(started),
            ended,
        }
    }

    #[test]
    fn fairness_counts_other_starts_against_active_participants() {
        let users: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // One GPU. a, b and c each queue at t=0..0.2; then b queues twice
        // more, and b's second job jumps ahead of c's first.
        let spans = vec![
            span(0, "a1", 0.0, 0.0, 1.0),
            span(1, "b1", 0.1, 1.0, 2.0),
            span(2, "c1", 0.2, 4.0, 5.0),
            span(1, "b2", 2.0, 2.0, 3.0),
            span(1, "b3", 3.0, 3.0, 4.0),
        ];
        let f = fairness(&spans, &users);
        assert_eq!(f.jobs_measured, 5);
        // c1 waited while b1, b2 and b3 started; active then were a and b.
        let worst = f.worst_job.as_ref().unwrap();
        assert_eq!(worst.prompt_id, "c1");
        assert_eq!((worst.others_started, worst.bound), (3, 2));
        assert_eq!(f.worst_ratio, Some(1.5));
        assert_eq!(f.jobs_over_bound, 1);
        // a1 started before b1 was queued: not ahead of it.
        let b_wait = f.per_participant[1].mean_queue_wait_ms.unwrap();
        assert_eq!(b_wait, round3((900.0 + 0.0 + 0.0) / 3.0));
        assert_eq!(f.per_participant[2].mean_queue_wait_ms, Some(3800.0));
        assert_eq!(f.per_participant[1].run_ms_total, 3000.0);
    }

    #[test]
    fn a_job_alone_is_within_the_bound() {
        let f = fairness(&[span(0, "a1", 0.0, 0.5, 1.0)], &["a".into()]);
        assert_eq!((f.jobs_over_bound, f.worst_ratio), (0, Some(0.0)));
        let unstarted = Span {
            started: None,
            ..span(0, "a2", 0.0, 0.0, 1.0)
        };
        let f = fairness(&[unstarted], &["a".into()]);
        assert_eq!(f.jobs_measured, 0);
        assert_eq!(f.per_participant[0].mean_queue_wait_ms, None);
    }
}
