//! `/metrics`: every family an operator needs, with figures that follow
//! what happened (a login refused, a job run, a socket open), readable by
//! the admin token and instructors only, or on its own address.

use comfyume::config::Secret;
use comfyume_domain::Role;

use crate::execution::{cpu_prompt, frames_until_done, participant, submit_ok};
use crate::support::TestApp;

const TOKEN: &str = "test-admin-token-0123456789";

/// The value of the sample `series` (name and labels, exactly as written).
fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let r = reqwest::Client::new()
        .get(app.at("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_follows_the_room() {
    let app = TestApp::spawn_with(|c| c.admin_token = Some(Secret::new(TOKEN))).await;
    let wrong = app.try_login(&app.client(), "nobody", "wrong").await;
    assert_eq!(wrong.status(), 401);
    let mut alice = participant(&app, "alice").await;
    let id = submit_ok(&app, &alice, cpu_prompt("metrics")).await;
    frames_until_done(&mut alice.ws, &id).await;

    let text = scrape(&app).await;
    for family in [
        "comfyume_queue_depth",
        "comfyume_jobs_total",
        "comfyume_job_wait_seconds",
        "comfyume_job_run_seconds",
        "comfyume_backend_state",
        "comfyume_backend_slots",
        "comfyume_backend_slots_in_use",
        "comfyume_websockets_connected",
        "comfyume_logins_total",
        "comfyume_http_request_duration_seconds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing from:\n{text}"
        );
    }
    let v = |series: &str| value_of(&text, series).unwrap_or_else(|| panic!("no {series}"));
    assert_eq!(v("comfyume_jobs_total{outcome=\"completed\"}"), 1.0);
    assert_eq!(v("comfyume_job_run_seconds_count"), 1.0);
    assert_eq!(v("comfyume_job_wait_seconds_count"), 1.0);
    assert_eq!(v("comfyume_queue_depth{state=\"pending\"}"), 0.0);
    assert_eq!(v("comfyume_logins_total{result=\"accepted\"}"), 1.0);
    assert_eq!(v("comfyume_logins_total{result=\"refused\"}"), 1.0);
    assert_eq!(v("comfyume_websockets_connected"), 1.0);
    assert_eq!(v("comfyume_backend_slots{backend=\"sim\"}"), 1.0);
    assert_eq!(v("comfyume_backend_slots_in_use{backend=\"sim\"}"), 0.0);
    assert_eq!(
        v("comfyume_http_request_duration_seconds_count{group=\"prompt\"}"),
        1.0
    );
    assert!(v("comfyume_http_request_duration_seconds_count{group=\"login\"}") >= 2.0);
    assert!(v("process_resident_memory_bytes") > 0.0);
    // The backend's state is one of its words, once.
    let states: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("comfyume_backend_state{backend=\"sim\""))
        .collect();
    assert_eq!(states.len(), 1, "{states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_instructors_and_the_token_read_metrics() {
    let app = TestApp::spawn_with(|c| c.admin_token = Some(Secret::new(TOKEN))).await;
    let anonymous = reqwest::get(app.at("/metrics")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let alice = app.user("alice").await;
    for path in ["/metrics", "/api/metrics"] {
        let r = alice.get(app.at(path)).send().await.unwrap();
        assert_ne!(r.status(), 200, "{path} must not answer a participant");
        assert!(!r.text().await.unwrap().contains("comfyume_"));
    }
    let wrong = reqwest::Client::new()
        .get(app.at("/metrics"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    app.add_user_with_role("teacher", "teacher-pw", Role::Admin)
        .await;
    let teacher = app.client();
    assert_eq!(
        app.try_login(&teacher, "teacher", "teacher-pw")
            .await
            .status(),
        303
    );
    let r = teacher.get(app.at("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("comfyume_jobs_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_address_serves_metrics_only() {
    // A free port, then handed to the configuration.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let app = TestApp::spawn_with(|c| c.metrics_listen = Some(addr)).await;
    // The server binds the metrics address before it serves the main one:
    // once the main one answers, the other accepts.
    assert_eq!(reqwest::get(app.at("/health")).await.unwrap().status(), 200);
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("# TYPE comfyume_queue_depth gauge"));
    let other = reqwest::get(format!("http://{addr}/api/queue"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    drop(app);
}
