//! The gateway's own resource use during a load test: its `/metrics`
//! (Prometheus text, behind the admin token) read once a second for the
//! process's resident memory and CPU time. When they cannot be read the
//! report says why in words; it never shows zeros it did not measure.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

const RSS: &str = "process_resident_memory_bytes";
const CPU: &str = "process_cpu_seconds_total";

/// How often `/metrics` is read.
const PERIOD: Duration = Duration::from_secs(1);
/// The longest one read may take.
const READ_BOUND: Duration = Duration::from_secs(10);
/// Samples kept; past this, every other one is dropped and the rest of the
/// run is sampled half as often, so a long run still fits.
const MAX_SAMPLES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the load test started.
    pub t_s: f64,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// What the report says about the gateway process.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayUsage {
    pub samples: Vec<Sample>,
    pub peak_rss_bytes: Option<u64>,
    /// CPU time over wall time between the first and the last sample, in
    /// percent of one core.
    pub mean_cpu_percent: Option<f64>,
    /// Why there are no samples, or why some reads failed.
    pub reason: Option<String>,
}

impl GatewayUsage {
    pub fn unmeasured(reason: impl Into<String>) -> GatewayUsage {
        GatewayUsage {
            samples: Vec::new(),
            peak_rss_bytes: None,
            mean_cpu_percent: None,
            reason: Some(reason.into()),
        }
    }

    fn from_samples(samples: Vec<Sample>, reason: Option<String>) -> GatewayUsage {
        if samples.is_empty() {
            return GatewayUsage::unmeasured(
                reason.unwrap_or_else(|| "the run ended before the first read".into()),
            );
        }
        let peak_rss_bytes = samples.iter().map(|s| s.rss_bytes).max();
        let mean_cpu_percent = match (samples.first(), samples.last()) {
            (Some(a), Some(b)) if b.t_s > a.t_s => {
                Some((b.cpu_seconds - a.cpu_seconds).max(0.0) / (b.t_s - a.t_s) * 100.0)
            }
            _ => None,
        };
        GatewayUsage {
            samples,
            peak_rss_bytes,
            mean_cpu_percent,
            reason,
        }
    }
}

/// The resident memory (bytes) and CPU time (seconds) of a Prometheus text
/// exposition, from the standard unlabelled `process_*` samples.
pub fn parse_process_samples(text: &str) -> Result<(f64, f64), String> {
    let (mut rss, mut cpu) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c.is_whitespace() || c == '{')
            .unwrap_or(line.len());
        let slot = match &line[..name_end] {
            RSS => &mut rss,
            CPU => &mut cpu,
            _ => continue,
        };
        let mut rest = &line[name_end..];
        if let Some(labels) = rest.strip_prefix('{') {
            rest = labels.rsplit_once('}').map_or("", |(_, after)| after);
        }
        // The value, then an optional timestamp.
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0);
        if let Some(v) = value {
            *slot = Some(v);
        }
    }
    match (rss, cpu) {
        (Some(r), Some(c)) => Ok((r, c)),
        (None, None) => Err(format!("/metrics has no `{RSS}` and no `{CPU}` sample")),
        (None, _) => Err(format!("/metrics has no `{RSS}` sample")),
        (_, None) => Err(format!("/metrics has no `{CPU}` sample")),
    }
}

/// Reads `/metrics` once a second from `start` until `stop` fires (and once
/// more then). A first read that fails ends the sampling: the endpoint is
/// missing or refuses the token, and will not change its mind.
pub async fn sample(
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    start: Instant,
    mut stop: oneshot::Receiver<()>,
) -> GatewayUsage {
    let Some(token) = token else {
        return GatewayUsage::unmeasured(
            "not measured: no --admin-token was given, and the gateway's /metrics needs it",
        );
    };
    let url = format!("{base}/metrics");
    let read = |at: Instant| {
        let (http, url, token) = (&http, &url, &token);
        async move {
            let response = http
                .get(url)
                .bearer_auth(token)
                .timeout(READ_BOUND)
                .send()
                .await
                .map_err(|e| format!("GET /metrics failed: {e}"))?;
            let status = response.status();
            if status != reqwest::StatusCode::OK {
                return Err(format!("GET /metrics answered {status}"));
            }
            let text = response
                .text()
                .await
                .map_err(|e| format!("GET /metrics broke off: {e}"))?;
            let (rss, cpu) = parse_process_samples(&text)?;
            Ok(Sample {
                t_s: at.saturating_duration_since(start).as_secs_f64(),
                rss_bytes: rss as u64,
                cpu_seconds: cpu,
            })
        }
    };
    let mut samples: Vec<Sample> = Vec::new();
    let (mut reads, mut failures, mut first_failure) = (0u64, 0u64, None::<String>);
    let mut stride = 1u64;
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => stopping = true,
        }
        reads += 1;
        if !stopping && reads % stride != 0 {
            continue;
        }
        match read(Instant::now()).await {
            Ok(s) => {
                samples.push(s);
                if samples.len() >= MAX_SAMPLES {
                    samples = samples.into_iter().step_by(2).collect();
                    stride *= 2;
                }
            }
            Err(e) if reads == 1 => {
                return GatewayUsage::unmeasured(format!("not measured: {e}"));
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert(e);
            }
        }
    }
    let reason = first_failure.map(|e| format!("{failures} read(s) failed; the first: {e}"));
    GatewayUsage::from_samples(samples, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_standard_process_samples() {
        let text = "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 4.5056e+07\n\
                    process_resident_memory_bytes_max 1\n\
                    # TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total{} 12.25 1700000000000\n\
                    comfyume_jobs_total{state=\"done\"} 3\n";
        assert_eq!(parse_process_samples(text), Ok((45_056_000.0, 12.25)));
    }

    #[test]
    fn says_which_sample_is_missing() {
        let only_rss = "process_resident_memory_bytes 100\n";
        assert!(
            parse_process_samples(only_rss)
                .unwrap_err()
                .contains("process_cpu_seconds_total")
        );
        assert!(parse_process_samples("").unwrap_err().contains("no `"));
        assert!(
            parse_process_samples("process_resident_memory_bytes NaN\nprocess_cpu_seconds_total 1")
                .is_err()
        );
    }

    /// A `/metrics` that reports each read it answers (and refuses a
    /// wrong token).
    async fn metrics_endpoint() -> (String, tokio::sync::mpsc::Receiver<()>) {
        use axum::http::{HeaderMap, StatusCode};
        let (read, reads) = tokio::sync::mpsc::channel(16);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |headers: HeaderMap| {
                let read = read.clone();
                async move {
                    if headers
                        .get("authorization")
                        .is_none_or(|v| v != "Bearer right")
                    {
                        return (StatusCode::UNAUTHORIZED, String::new());
                    }
                    let _ = read.try_send(());
                    let text =
                        "process_resident_memory_bytes 1000\nprocess_cpu_seconds_total 2.5\n";
                    (StatusCode::OK, text.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, reads)
    }

    #[tokio::test]
    async fn samples_until_stopped_and_once_more() {
        let (url, mut reads) = metrics_endpoint().await;
        let (stop, stopped) = oneshot::channel();
        let sampler = tokio::spawn(sample(
            reqwest::Client::new(),
            url,
            Some("right".into()),
            Instant::now(),
            stopped,
        ));
        // Two reads a period apart, then the one at the stop.
        reads.recv().await.unwrap();
        reads.recv().await.unwrap();
        stop.send(()).unwrap();
        let usage = sampler.await.unwrap();
        assert!(usage.samples.len() >= 3, "{usage:?}");
        assert_eq!(usage.peak_rss_bytes, Some(1000));
        assert_eq!(usage.mean_cpu_percent, Some(0.0));
        assert_eq!(usage.reason, None);
        assert!(usage.samples.windows(2).all(|w| w[0].t_s < w[1].t_s));
    }

    #[tokio::test]
    async fn a_refused_first_read_is_a_reason_not_zeros() {
        let (url, _reads) = metrics_endpoint().await;
        let (_stop, stopped) = oneshot::channel();
        let usage = sample(
            reqwest::Client::new(),
            url.clone(),
            Some("wrong".into()),
            Instant::now(),
            stopped,
        )
        .await;
        assert!(usage.samples.is_empty() && usage.peak_rss_bytes.is_none());
        assert!(usage.reason.unwrap().contains("401"));
        let (_stop, stopped) = oneshot::channel();
        let usage = sample(reqwest::Client::new(), url, None, Instant::now(), stopped).await;
        assert!(usage.reason.unwrap().contains("--admin-token"));
    }

    #[test]
    fn usage_is_derived_from_the_samples() {
        let s = |t_s, rss_bytes, cpu_seconds| Sample {
            t_s,
            rss_bytes,
            cpu_seconds,
        };
        let usage = GatewayUsage::from_samples(
            vec![s(0.0, 10, 1.0), s(1.0, 30, 1.5), s(2.0, 20, 2.0)],
            None,
        );
        assert_eq!(usage.peak_rss_bytes, Some(30));
        assert_eq!(usage.mean_cpu_percent, Some(50.0));
        let none = GatewayUsage::from_samples(Vec::new(), None);
        assert!(none.reason.is_some() && none.peak_rss_bytes.is_none());
    }
}
