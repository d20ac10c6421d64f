//! The admin API and `comfyume backends`: who may use them, and what
//! enable, disable, drain and groups do to the dispatch of queued work.

use comfyume::config::Secret;
use comfyume::dispatch::BackendState;
use comfyume_domain::{JobId, Role};
use serde_json::Value;

use crate::execution::{cpu_prompt, participant, submit_ok};
use crate::support::{Options, TestApp};

const TOKEN: &str = "test-admin-token-0123456789";

async fn two_sims() -> TestApp {
    TestApp::spawn_full(
        Options {
            manual_dispatch: true,
            second_sim: Some(Default::default()),
            ..Default::default()
        },
        |c| {
            c.admin_token = Some(Secret::new(TOKEN));
            c.backends[0].group = Some("local".into());
            c.backends[1].group = Some("h200".into());
        },
    )
    .await
}

async fn backend_of(app: &TestApp, id: &str) -> String {
    app.state
        .store
        .job(&JobId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap()
        .backend
        .unwrap()
}

fn admin(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, app.at(path))
        .bearer_auth(TOKEN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_instructors_and_the_token_reach_the_admin_api() {
    let app = two_sims().await;
    let anonymous = reqwest::get(app.at("/admin/api/backends")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let alice = app.user("alice").await;
    assert_eq!(
        alice
            .get(app.at("/admin/api/backends"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        alice
            .post(app.at("/admin/api/backends/sim/disable"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let wrong = reqwest::Client::new()
        .get(app.at("/admin/api/backends"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    app.add_user_with_role("teacher", "teacher-pw", Role::Admin)
        .await;
    let teacher = app.client();
    app.try_login(&teacher, "teacher", "teacher-pw").await;
    let list: Value = teacher
        .get(app.at("/admin/api/backends"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["name"], "sim");
    assert_eq!(list[0]["group"], "local");
    let by_token: Value = admin(&app, reqwest::Method::GET, "/admin/api/backends")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_token, list);
    let r = admin(
        &app,
        reqwest::Method::POST,
        "/admin/api/backends/nope/drain",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_disable_enable_and_groups_steer_new_work_without_losing_any() {
    let app = two_sims().await;
    let mut a = participant(&app, "alice").await;

    // Draining the first backend: the next job goes to the second.
    admin(&app, reqwest::Method::POST, "/admin/api/backends/sim/drain")
        .send()
        .await
        .unwrap();
    let id = submit_ok(&app, &a, cpu_prompt("d")).await;
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&id));
    assert_eq!(backend_of(&app, &id).await, "sim-2");
    crate::execution::frames_until_done(&mut a.ws, &id).await;
    let list = app.state.dispatcher.backends();
    assert_eq!(list[0].state, BackendState::Draining);

    // Both out of service: the job waits, safe in the queue.
    admin(
        &app,
        reqwest::Method::POST,
        "/admin/api/backends/sim-2/disable",
    )
    .send()
    .await
    .unwrap();
    let id = submit_ok(&app, &a, cpu_prompt("w")).await;
    assert!(app.dispatch_once().await.is_empty(), "nothing may take it");
    let job: Value = a.get_json(&app, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "pending");

    // Back in service: it runs there.
    admin(
        &app,
        reqwest::Method::POST,
        "/admin/api/backends/sim/enable",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&id));
    assert_eq!(backend_of(&app, &id).await, "sim");
    crate::execution::frames_until_done(&mut a.ws, &id).await;

    // Switching the room to the h200 group: new work goes there only.
    admin(
        &app,
        reqwest::Method::POST,
        "/admin/api/backends/sim-2/enable",
    )
    .send()
    .await
    .unwrap();
    let r = admin(&app, reqwest::Method::POST, "/admin/api/groups/h200/use")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = submit_ok(&app, &a, cpu_prompt("g")).await;
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&id));
    assert_eq!(backend_of(&app, &id).await, "sim-2");
    crate::execution::frames_until_done(&mut a.ws, &id).await;
    let r = admin(&app, reqwest::Method::POST, "/admin/api/groups/b300/use")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no such group");
}

/// A restart (or, with several gateways, another one taking over the
/// dispatching) keeps what the instructor chose for the backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_choices_survive_a_restart() {
    let mut app = two_sims().await;
    for path in [
        "/admin/api/backends/sim/drain",
        "/admin/api/groups/h200/use",
    ] {
        let r = admin(&app, reqwest::Method::POST, path)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    app.restart().await;
    let list = app.state.dispatcher.backends();
    assert_eq!(list[0].state, BackendState::Draining);
    assert_eq!(
        list.iter().map(|b| b.active).collect::<Vec<_>>(),
        [false, true],
        "the h200 group only"
    );
    let mut a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("after")).await;
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&id));
    assert_eq!(backend_of(&app, &id).await, "sim-2");
    crate::execution::frames_until_done(&mut a.ws, &id).await;

    // Back to every backend, enabled: so it stays after the next restart.
    for path in [
        "/admin/api/backends/sim/enable",
        "/admin/api/groups/all/use",
    ] {
        let r = admin(&app, reqwest::Method::POST, path)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    app.restart().await;
    let list = app.state.dispatcher.backends();
    assert!(
        list.iter()
            .all(|b| b.active && b.state != BackendState::Draining),
        "{list:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_talks_to_the_running_server() {
    let app = two_sims().await;
    // The CLI runs on a blocking thread: the server answering it lives on
    // this test's runtime.
    let url = app.url.clone();
    let run = move |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_comfyume"));
        cmd.args(["backends", "--url", &url])
            .args(args)
            .env_remove("COMFYUME_CONFIG");
        if !args.contains(&"--token") {
            cmd.env("COMFYUME_ADMIN_TOKEN", TOKEN);
        } else {
            cmd.env_remove("COMFYUME_ADMIN_TOKEN");
        }
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let out = run(&["drain", "sim"]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["list"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sim ") && text.contains("draining") && text.contains("sim-2"),
        "{text}"
    );
    let out = run(&["use", "h200"]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("local (off)"));
    let out = run(&["disable", "nope"]).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no backend named 'nope'"));
    let out = run(&["--token", "wrong", "list"]).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid admin token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_creates_numbered_accounts_all_or_none() {
    let app = two_sims().await;
    let create = |body: Value| admin(&app, reqwest::Method::POST, "/admin/api/users").json(&body);
    let r = create(serde_json::json!({"prefix": "room-", "count": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let accounts = body["accounts"].as_array().unwrap();
    let names: Vec<&str> = accounts
        .iter()
        .map(|a| a["user"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["room-001", "room-002", "room-003"]);
    for a in accounts {
        let login = app
            .try_login(
                &app.client(),
                a["user"].as_str().unwrap(),
                a["password"].as_str().unwrap(),
            )
            .await;
        assert_eq!(login.status(), 303, "{a}");
    }

    // A taken name: nothing is created, and the answer says which.
    let again = create(serde_json::json!({"prefix": "room-", "count": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert!(again.text().await.unwrap().contains("room-001"));
    let user = comfyume_domain::UserName::parse("room-005").unwrap();
    assert!(app.state.store.user_by_name(&user).await.unwrap().is_none());

    for bad in [
        serde_json::json!({"prefix": "x", "count": 0}),
        serde_json::json!({"prefix": "x", "count": 10000}),
        serde_json::json!({"prefix": "no spaces ", "count": 1}),
    ] {
        let r = create(bad.clone()).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let alice = app.user("alice").await;
    let r = alice
        .post(app.at("/admin/api/users"))
        .json(&serde_json::json!({"prefix": "mine-", "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}
