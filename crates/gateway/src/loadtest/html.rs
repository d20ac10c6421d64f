//! The load test's report as one self-contained HTML page: the summary
//! numbers, and charts drawn as inline SVG (latency per step, completions
//! over time, the gateway's memory and CPU, queue wait per participant).
//! Nothing is fetched from anywhere; every text that came from outside is
//! escaped.

use std::fmt::Write as _;

use super::report::{Report, StepStats};

use crate::markup::escape_html as escape;

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1000px;padding:0 1rem;color:#1d2330;background:#fbfbfd}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2.2rem;border-bottom:1px solid #dde;padding-bottom:.3rem}
.sub{color:#5a6275;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:.7rem;margin:1.2rem 0}
.card{background:#fff;border:1px solid #dde;border-radius:8px;padding:.6rem .9rem;min-width:8.5rem}
.card b{display:block;font-size:1.45rem}.card span{color:#5a6275;font-size:.85rem}
.card.bad{border-color:#d33;background:#fff4f4}.card.bad b{color:#b00}
.card.good b{color:#17733a}
.small{display:flex;flex-wrap:wrap;gap:.6rem}
svg{background:#fff;border:1px solid #e4e4ee;border-radius:6px}
svg text{font:11px system-ui,sans-serif;fill:#3a4255}
svg .title{font-size:13px;font-weight:600;fill:#1d2330}
svg .axis{stroke:#9aa1b3;stroke-width:1}svg .grid{stroke:#eceef4;stroke-width:1}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.25rem .7rem;border-bottom:1px solid #e6e6ef;text-align:left;vertical-align:top}
th{color:#5a6275;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#5a6275}.none{color:#17733a}
code{font-size:.9em}
";

const BLUE: &str = "#3b6fd8";
const GREEN: &str = "#2c9a5a";
const ORANGE: &str = "#d9822b";
const PURPLE: &str = "#7b4fc9";
/// p50, p90, p99, max.
const PERCENTILE_COLOURS: [&str; 4] = ["#9db8ef", "#5f8de3", "#2f5fc4", "#1b3674"];

pub fn page(report: &Report) -> String {
    let mut out = String::new();
    let o = &report.options;
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Load test of {url}</title><style>{STYLE}</style></head><body>\n\
         <h1>Load test of {url}</h1>\n<p class=\"sub\">{participants} participants, \
         {jobs} job(s) each, {ramp}, {think} s between jobs, \
         {wall:.1} s in all. Workflow: {workflow}.</p>\n",
        url = escape(&o.url),
        participants = report.participants,
        jobs = o.jobs_per_user,
        ramp = if o.ramp_s > 0.0 {
            format!("logins spread over {} s", o.ramp_s)
        } else {
            "all logging in at once".into()
        },
        think = o.think_s,
        wall = report.wall_time_s,
        workflow = escape(&o.workflow),
    );
    cards(&mut out, report);

    out.push_str("<h2>Latency per step</h2>\n<div class=\"small\">");
    for (name, stats) in report.steps.named() {
        out.push_str(&step_chart(name, stats));
    }
    out.push_str("</div>\n<p class=\"note\">Bars: p50, p90, p99 and max, in milliseconds; each step on its own scale.</p>\n");

    out.push_str("<h2>Jobs completed over time</h2>\n");
    let mut completed = vec![(0.0, 0.0)];
    for (i, t) in report.completions_s.iter().enumerate() {
        completed.push((*t, i as f64));
        completed.push((*t, (i + 1) as f64));
    }
    if report.completions_s.is_empty() {
        out.push_str("<p class=\"note\">No job completed.</p>\n");
    } else {
        let rate = report
            .jobs_per_second
            .map_or(String::new(), |r| format!(" ({r:.2} jobs/s)"));
        out.push_str(&line_chart(
            &format!("Jobs completed: {}{rate}", report.jobs.completed),
            "seconds since start",
            &completed,
            GREEN,
        ));
    }

    gateway(&mut out, report);
    queue_waits(&mut out, report);
    fairness(&mut out, report);
    errors(&mut out, report);
    options(&mut out, report);
    out.push_str("</body></html>\n");
    out
}

fn cards(out: &mut String, r: &Report) {
    let card = |out: &mut String, value: String, label: &str, class: &str| {
        let _ = write!(
            out,
            "<div class=\"card {class}\"><b>{}</b><span>{}</span></div>",
            escape(&value),
            escape(label)
        );
    };
    let verdict = |bad: bool| if bad { "bad" } else { "good" };
    out.push_str("<div class=\"cards\">");
    card(out, r.participants.to_string(), "participants", "");
    card(
        out,
        format!("{}/{}", r.jobs.completed, r.jobs.submitted),
        "jobs completed / submitted",
        verdict(r.jobs.completed < r.jobs.submitted),
    );
    card(
        out,
        r.jobs_per_second.map_or("-".into(), |v| format!("{v:.2}")),
        "jobs per second",
        "",
    );
    card(
        out,
        r.errors.total.to_string(),
        "errors",
        verdict(r.errors.total > 0),
    );
    card(
        out,
        r.misdirected_frames.count.to_string(),
        "misdirected frames",
        verdict(r.misdirected_frames.count > 0),
    );
    card(
        out,
        format!(
            "{}/{}",
            r.fairness.jobs_over_bound, r.fairness.jobs_measured
        ),
        "jobs over the fairness bound",
        "",
    );
    if let Some(q) = r.steps.queue_wait.p50_ms {
        card(out, format!("{q:.0} ms"), "median queue wait", "");
    }
    if let Some(peak) = r.gateway.peak_rss_bytes {
        card(
            out,
            format!("{:.1} MB", peak as f64 / 1e6),
            "gateway peak RSS",
            "",
        );
    }
    if let Some(cpu) = r.gateway.mean_cpu_percent {
        card(out, format!("{cpu:.0} %"), "gateway mean CPU", "");
    }
    out.push_str("</div>\n");
}

fn gateway(out: &mut String, r: &Report) {
    out.push_str("<h2>Gateway</h2>\n");
    let g = &r.gateway;
    if g.samples.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"note\">Memory and CPU {}</p>",
            escape(g.reason.as_deref().unwrap_or("were not measured."))
        );
        return;
    }
    let rss: Vec<(f64, f64)> = g
        .samples
        .iter()
        .map(|s| (s.t_s, s.rss_bytes as f64 / 1e6))
        .collect();
    let cpu: Vec<(f64, f64)> = g
        .samples
        .windows(2)
        .filter(|w| w[1].t_s > w[0].t_s)
        .map(|w| {
            let busy = (w[1].cpu_seconds - w[0].cpu_seconds).max(0.0);
            (w[1].t_s, busy / (w[1].t_s - w[0].t_s) * 100.0)
        })
        .collect();
    out.push_str("<div class=\"small\">");
    out.push_str(&line_chart(
        "Resident memory (MB)",
        "seconds since start",
        &rss,
        BLUE,
    ));
    if cpu.is_empty() {
        out.push_str("<p class=\"note\">One sample only: no CPU rate.</p>");
    } else {
        out.push_str(&line_chart(
            "CPU (% of one core)",
            "seconds since start",
            &cpu,
            ORANGE,
        ));
    }
    out.push_str("</div>\n");
    if let Some(reason) = &g.reason {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(reason));
    }
}

fn queue_waits(out: &mut String, r: &Report) {
    out.push_str("<h2>Queue wait per participant</h2>\n");
    let bars: Vec<(String, f64)> = r
        .fairness
        .per_participant
        .iter()
        .filter_map(|p| Some((p.user.clone(), p.mean_queue_wait_ms?)))
        .collect();
    if bars.is_empty() {
        out.push_str("<p class=\"note\">No job started.</p>\n");
        return;
    }
    let runs: Vec<(String, f64)> = r
        .fairness
        .per_participant
        .iter()
        .map(|p| (p.user.clone(), p.run_ms_total))
        .collect();
    out.push_str(&bar_chart("Mean queue wait (ms)", &bars, PURPLE));
    out.push_str(&bar_chart(
        "Run time of all their jobs (ms): the GPU time the queue shares out",
        &runs,
        GREEN,
    ));
}

fn fairness(out: &mut String, r: &Report) {
    let f = &r.fairness;
    out.push_str("<h2>Fairness</h2>\n");
    let _ = write!(
        out,
        "<p>While a job waited, how many jobs of other participants started ahead of it, \
         against one per other participant with a job in the queue when it was queued: \
         <b>{over}</b> of {measured} job(s) over that bound; worst ratio <b>{worst}</b>",
        over = f.jobs_over_bound,
        measured = f.jobs_measured,
        worst = f.worst_ratio.map_or("-".into(), |w| format!("{w:.2}")),
    );
    if let Some(j) = &f.worst_job {
        let _ = write!(
            out,
            " ({} started ahead of {}'s prompt <code>{}</code>, bound {})",
            j.others_started,
            escape(&j.user),
            escape(&j.prompt_id),
            j.bound
        );
    }
    out.push_str(
        ".</p>\n<p class=\"note\">The queue is fair by GPU time: the bound holds for a \
         participant who has used no more GPU time than anyone active, so one whose jobs ran \
         longer may rightly wait while others catch up. Compare the two charts.</p>\n",
    );
}

fn errors(out: &mut String, r: &Report) {
    out.push_str("<h2>Errors</h2>\n");
    if r.errors.total == 0 {
        out.push_str("<p class=\"none\">None.</p>\n");
    } else {
        out.push_str("<table><tr><th>kind</th><th>count</th></tr>");
        for (kind, n) in &r.errors.by_kind {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"n\">{n}</td></tr>",
                escape(kind)
            );
        }
        out.push_str("</table>\n<table><tr><th>kind</th><th>participant</th><th>message</th></tr>");
        for e in &r.errors.examples {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&e.kind),
                escape(&e.user),
                escape(&e.message)
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("<h2>Misdirected frames</h2>\n");
    if r.misdirected_frames.count == 0 {
        let _ = writeln!(
            out,
            "<p class=\"none\">None: every frame naming a prompt reached its owner only \
             ({} text and {} binary frames read).</p>",
            r.socket_frames.text, r.socket_frames.binary
        );
    } else {
        let _ = write!(
            out,
            "<p><b>{}</b> frame(s) reached a participant whose prompt they were not.</p><ul>",
            r.misdirected_frames.count
        );
        for e in &r.misdirected_frames.examples {
            let _ = write!(out, "<li>{}</li>", escape(e));
        }
        out.push_str("</ul>\n");
    }
}

fn options(out: &mut String, r: &Report) {
    let o = &r.options;
    out.push_str("<h2>Options</h2>\n<table>");
    let mut row = |k: &str, v: String| {
        let _ = write!(out, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    };
    row("gateway", o.url.clone());
    row("accounts", o.accounts.clone());
    row("ramp", format!("{} s", o.ramp_s));
    row("jobs per participant", o.jobs_per_user.to_string());
    row("think time", format!("{} s", o.think_s));
    row(
        "duration cap",
        o.duration_s.map_or("none".into(), |d| format!("{d} s")),
    );
    row("per-job timeout", format!("{} s", o.timeout_s));
    row("workflow", o.workflow.clone());
    row(
        "varied per job",
        if o.varied_inputs.is_empty() {
            "nothing (a backend may answer from its cache)".into()
        } else {
            o.varied_inputs.join(", ")
        },
    );
    out.push_str("</table>\n");
}

/// A scale from zero to a round number at or above `max`, and its ticks.
fn ticks(max: f64) -> (f64, Vec<f64>) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, vec![0.0, 1.0]);
    }
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let top = (max / step).ceil() * step;
    let count = (top / step).round() as usize;
    (top, (0..=count).map(|i| i as f64 * step).collect())
}

/// A number as an axis label: no more digits than it needs.
fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The plotting area inside an SVG of `width` × `height`.
struct Plot {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Plot {
    fn new(width: f64, height: f64) -> Plot {
        Plot {
            width,
            height,
            left: 48.0,
            right: width - 14.0,
            top: 30.0,
            bottom: height - 34.0,
        }
    }

    fn x(&self, v: f64, max: f64) -> f64 {
        self.left + (self.right - self.left) * (v / max)
    }

    fn y(&self, v: f64, max: f64) -> f64 {
        self.bottom - (self.bottom - self.top) * (v / max)
    }

    /// The frame, a title, the y axis with its grid, and the x axis line.
    fn open(&self, out: &mut String, title: &str, y_top: f64, y_ticks: &[f64]) {
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\">\
             <text class=\"title\" x=\"{l}\" y=\"18\">{t}</text>",
            w = self.width,
            h = self.height,
            l = self.left,
            t = escape(title)
        );
        for &v in y_ticks {
            let y = self.y(v, y_top);
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{l}\" x2=\"{r}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
                 <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{}</text>",
                label(v),
                l = self.left,
                r = self.right,
                tx = self.left - 5.0,
                ty = y + 4.0,
            );
        }
        let _ = write!(
            out,
            "<line class=\"axis\" x1=\"{l}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\"/>\
             <line class=\"axis\" x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{b}\"/>",
            l = self.left,
            r = self.right,
            t = self.top,
            b = self.bottom
        );
    }
}

/// One step's percentiles as four bars on their own scale.
fn step_chart(name: &str, s: &StepStats) -> String {
    let plot = Plot::new(230.0, 190.0);
    let values = [
        ("p50", s.p50_ms),
        ("p90", s.p90_ms),
        ("p99", s.p99_ms),
        ("max", s.max_ms),
    ];
    let mut out = String::new();
    let title = format!("{name} (n = {})", s.count);
    let Some(max) = s.max_ms else {
        plot.open(&mut out, &title, 1.0, &[]);
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">not measured</text></svg>",
            (plot.left + plot.right) / 2.0,
            (plot.top + plot.bottom) / 2.0
        );
        return out;
    };
    let (top, y_ticks) = ticks(max);
    plot.open(&mut out, &title, top, &y_ticks);
    let slot = (plot.right - plot.left) / values.len() as f64;
    for (i, ((which, value), colour)) in values.iter().zip(PERCENTILE_COLOURS).enumerate() {
        let v = value.unwrap_or(0.0);
        let x = plot.left + slot * i as f64 + slot * 0.18;
        let y = plot.y(v, top);
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{name} {which}: {v:.1} ms</title></rect>\
             <text x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">{vl}</text>\
             <text x=\"{cx:.1}\" y=\"{by:.1}\" text-anchor=\"middle\">{which}</text>",
            w = slot * 0.64,
            h = plot.bottom - y,
            cx = x + slot * 0.32,
            ly = y - 4.0,
            vl = label(v),
            by = plot.bottom + 15.0,
        );
    }
    out.push_str("</svg>");
    out
}

/// A line through `points` (x ascending), both axes from zero.
fn line_chart(title: &str, x_name: &str, points: &[(f64, f64)], colour: &str) -> String {
    let plot = Plot::new(470.0, 250.0);
    let x_max = points.iter().map(|p| p.0).fold(0.0, f64::max);
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let (x_top, x_ticks) = ticks(x_max);
    let (y_top, y_ticks) = ticks(y_max);
    let mut out = String::new();
    plot.open(&mut out, title, y_top, &y_ticks);
    for &v in &x_ticks {
        let x = plot.x(v, x_top);
        let _ = write!(
            out,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\">{}</text>",
            label(v),
            y = plot.bottom + 15.0
        );
    }
    let _ = write!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\">{}</text>",
        escape(x_name),
        x = (plot.left + plot.right) / 2.0,
        y = plot.bottom + 29.0
    );
    let path: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", plot.x(x, x_top), plot.y(y, y_top)))
        .collect();
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"{}\"/>",
        path.join(" ")
    );
    if points.len() == 1 {
        let (x, y) = points[0];
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
            plot.x(x, x_top),
            plot.y(y, y_top)
        );
    }
    out.push_str("</svg>");
    out
}

/// One bar per named value, in the given order; names under the bars while
/// they fit, and in each bar's tooltip always.
fn bar_chart(title: &str, bars: &[(String, f64)], colour: &str) -> String {
    let width = (bars.len() as f64 * 18.0 + 80.0).clamp(640.0, 980.0);
    let labelled = bars.len() <= 40;
    let mut plot = Plot::new(width, if labelled { 300.0 } else { 240.0 });
    if labelled {
        plot.bottom = plot.height - 90.0;
    }
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let (top, y_ticks) = ticks(max);
    let mut out = String::new();
    plot.open(&mut out, title, top, &y_ticks);
    let slot = (plot.right - plot.left) / bars.len() as f64;
    for (i, (name, v)) in bars.iter().enumerate() {
        let x = plot.left + slot * i as f64 + slot * 0.12;
        let y = plot.y(*v, top);
        let name = escape(name);
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{name}: {v:.1} ms</title></rect>",
            w = (slot * 0.76).max(1.0),
            h = plot.bottom - y,
        );
        if labelled {
            let cx = x + slot * 0.38;
            let ly = plot.bottom + 8.0;
            let _ = write!(
                out,
                "<text x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-60 {cx:.1} {ly:.1})\">{name}</text>"
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(9.0), (10.0, vec![0.0, 2.5, 5.0, 7.5, 10.0]));
        assert_eq!(ticks(130.0), (150.0, vec![0.0, 50.0, 100.0, 150.0]));
        assert_eq!(ticks(0.0), (1.0, vec![0.0, 1.0]));
    }

    #[test]
    fn a_name_cannot_break_out_of_the_page() {
        let bars = vec![("<img src=x onerror=alert(1)>".to_string(), 5.0)];
        let svg = bar_chart("t", &bars, BLUE);
        assert!(!svg.contains("<img"));
        assert!(svg.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }
}
