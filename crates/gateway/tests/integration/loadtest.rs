//! `comfyume loadtest` against a real gateway with two simulated GPUs: a
//! room of participants from a credential sheet logs in and queues its
//! jobs; every job comes back, with no error and no frame on anyone else's
//! socket, and the report carries every field.

use std::time::Duration;

use comfyume::auth::{CredentialRow, write_credentials_csv};
use comfyume::loadtest::{AccountSource, Options, Progress, html};
use comfyume_domain::{Password, Role, UserName};
use serde_json::Value;

use crate::support::{Options as AppOptions, TestApp, WAIT_BOUND, within};

const PARTICIPANTS: usize = 24;
const JOBS_EACH: u32 = 3;

/// Runs a load test without pauses, its waits inside the test's own bound
/// (a stuck job is reported, not hung on).
async fn run(mut options: Options) -> comfyume::loadtest::Report {
    options.think = Duration::ZERO;
    options.timeout = WAIT_BOUND / 2;
    within(
        "the load test",
        comfyume::loadtest::run(options, Progress::Off),
    )
    .await
    .expect("the load test runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_of_a_room_gets_every_job_back_to_its_owner() {
    let app = TestApp::spawn_full(
        AppOptions {
            second_sim: Some(Default::default()),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut rows = Vec::new();
    for i in 1..=PARTICIPANTS {
        let user = format!("seat{i:03}");
        // Some passwords only survive the sheet if it is quoted right.
        let password = match i % 3 {
            0 => format!("comma,{i}"),
            1 => format!("quote \"{i}\""),
            _ => format!("plain-{i}"),
        };
        app.state
            .accounts
            .create_user(
                &UserName::parse(&user).unwrap(),
                &Password::new(password.clone()),
                Role::Participant,
            )
            .await
            .unwrap();
        rows.push(CredentialRow {
            user,
            password,
            role: "participant".into(),
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let sheet = dir.path().join("room.csv");
    write_credentials_csv(&sheet, &rows, &app.url).unwrap();

    let mut options = Options::new(app.url.clone(), AccountSource::File(sheet));
    options.jobs_per_user = JOBS_EACH;
    let report = run(options).await;

    let planned = PARTICIPANTS as u64 * u64::from(JOBS_EACH);
    assert_eq!(report.errors.total, 0, "{}", report.table());
    assert_eq!(report.misdirected_frames.count, 0, "{}", report.table());
    assert_eq!(report.participants, PARTICIPANTS);
    assert_eq!(
        (
            report.jobs.planned,
            report.jobs.submitted,
            report.jobs.completed,
            report.jobs.failed
        ),
        (planned, planned, planned, 0),
        "{}",
        report.table()
    );
    let steps = &report.steps;
    for (step, expected) in [
        (&steps.login, PARTICIPANTS),
        (&steps.startup, PARTICIPANTS),
        (&steps.submit, planned as usize),
        (&steps.queue_wait, planned as usize),
        (&steps.run, planned as usize),
        (&steps.output_fetch, planned as usize),
    ] {
        assert_eq!(step.count, expected);
    }
    assert_eq!(report.fairness.jobs_measured, planned as usize);
    assert_eq!(report.fairness.per_participant.len(), PARTICIPANTS);
    assert_eq!(report.completions_s.len(), planned as usize);
    // No admin token: the gateway's memory and CPU are missing, and why.
    assert!(report.gateway.samples.is_empty());
    assert!(report.gateway.reason.as_deref().unwrap().contains("token"));

    // Each participant's images landed in their own files, and only there.
    for row in &rows {
        let outputs = app.user_files(&row.user, "output").await.len();
        assert_eq!(outputs, JOBS_EACH as usize, "{}", row.user);
    }

    // The JSON has every section, and every step its percentiles.
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "options",
        "participants",
        "wall_time_s",
        "jobs",
        "jobs_per_second",
        "steps",
        "errors",
        "fairness",
        "misdirected_frames",
        "socket_frames",
        "gateway",
        "completions_s",
    ] {
        assert!(json.get(field).is_some(), "the report has no `{field}`");
    }
    assert!(json["jobs_per_second"].as_f64().is_some_and(|r| r > 0.0));
    for step in [
        "login",
        "startup",
        "submit",
        "queue_wait",
        "run",
        "output_fetch",
    ] {
        let stats = &json["steps"][step];
        for key in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            assert!(stats[key].is_number(), "steps.{step}.{key}: {stats}");
        }
        assert!(stats["count"].as_u64().is_some_and(|n| n > 0));
        let ordered: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "max_ms"]
            .iter()
            .map(|k| stats[*k].as_f64().unwrap())
            .collect();
        assert!(ordered.windows(2).all(|w| w[0] <= w[1]), "{step}: {stats}");
    }
    for field in ["total", "by_kind", "examples"] {
        assert!(json["errors"].get(field).is_some());
    }
    for field in [
        "jobs_measured",
        "jobs_over_bound",
        "worst_ratio",
        "per_participant",
    ] {
        assert!(json["fairness"].get(field).is_some());
    }
    for field in ["samples", "peak_rss_bytes", "mean_cpu_percent", "reason"] {
        assert!(json["gateway"].get(field).is_some());
    }
    assert_eq!(
        json["options"]["varied_inputs"],
        Value::from(vec!["1.color"])
    );

    // The page is self-contained: charts inline, nothing to fetch.
    let page = html::page(&report);
    assert!(page.matches("<svg").count() >= 9);
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
}

/// What goes wrong is counted by kind and the run still ends: a wrong
/// password, a prompt the gateway refuses, and a node that fails on the GPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_counts_what_goes_wrong_by_kind() {
    let app = TestApp::spawn_full(
        AppOptions {
            sim: comfyume_sim::SimOptions {
                fail_node: Some("ImageInvert".into()),
                ..Default::default()
            },
            ..Default::default()
        },
        |_| {},
    )
    .await;
    app.add_user("good1", "good1-secret-pw").await;
    app.add_user("good2", "good2-secret-pw").await;
    app.add_user("forgetful", "the-real-pw").await;
    let rows = [
        ("good1", "good1-secret-pw"),
        ("good2", "good2-secret-pw"),
        ("forgetful", "not-the-pw"),
    ]
    .map(|(user, password)| CredentialRow {
        user: user.into(),
        password: password.into(),
        role: "participant".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let sheet = dir.path().join("room.csv");
    write_credentials_csv(&sheet, &rows, &app.url).unwrap();

    let mut options = Options::new(app.url.clone(), AccountSource::File(sheet.clone()));
    options.jobs_per_user = 2;
    let report = run(options.clone()).await;
    let kinds = &report.errors.by_kind;
    assert_eq!(kinds.get("login_refused"), Some(&1), "{}", report.table());
    assert_eq!(kinds.get("execution_error"), Some(&4), "{}", report.table());
    assert_eq!(report.errors.total, 5);
    assert_eq!(
        (
            report.jobs.submitted,
            report.jobs.completed,
            report.jobs.failed
        ),
        (4, 0, 4)
    );
    assert_eq!(report.misdirected_frames.count, 0);
    assert!(!report.is_clean());
    assert!(
        report
            .errors
            .examples
            .iter()
            .any(|e| e.kind == "execution_error" && e.message.contains("ImageInvert"))
    );

    // A prompt that fails validation is refused with ComfyUI's error type.
    let workflow = dir.path().join("zero-width.json");
    let prompt = serde_json::json!({"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }});
    std::fs::write(&workflow, prompt.to_string()).unwrap();
    options.workflow = Some(workflow);
    options.jobs_per_user = 1;
    let report = run(options).await;
    assert_eq!(
        report
            .errors
            .by_kind
            .get("prompt_outputs_failed_validation"),
        Some(&2),
        "{}",
        report.table()
    );
    assert_eq!(report.steps.queue_wait.count, 0);
    assert!(report.steps.queue_wait.p50_ms.is_none());
}

/// With the admin token the load test makes its own accounts through the
/// admin API and follows the gateway's memory and CPU through `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_creates_its_room_and_reads_the_gateways_metrics() {
    const TOKEN: &str = "loadtest-admin-token-0123456789";
    let app = TestApp::spawn_with(|c| {
        c.admin_token = Some(comfyume::config::Secret::new(TOKEN));
    })
    .await;
    let mut options = Options::new(app.url.clone(), AccountSource::Create { count: 6 });
    options.admin_token = Some(TOKEN.into());
    options.jobs_per_user = 2;
    let report = run(options).await;
    assert_eq!(report.errors.total, 0, "{}", report.table());
    assert_eq!(report.misdirected_frames.count, 0, "{}", report.table());
    assert_eq!(report.jobs.completed, 12, "{}", report.table());
    assert_eq!(report.gateway.reason, None, "{}", report.table());
    assert!(report.gateway.samples.len() >= 2);
    assert!(report.gateway.peak_rss_bytes.is_some_and(|b| b > 0));
    // The accounts are real ones on the gateway.
    let users = app.state.store.list_users().await.unwrap();
    assert_eq!(users.len(), 6);
}
