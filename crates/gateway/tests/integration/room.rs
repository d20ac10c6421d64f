//! The instructor's hold on the room through the admin API and the CLI:
//! cancelling and bumping anyone's job, cancelling all of a participant's,
//! pausing and resuming the room, broadcasting to every canvas, pushing a
//! workflow into everyone's Workflows, disabling
//! an account and resetting its password. Each
//! action takes effect, lands in the audit log with who did it, and is
//! refused to a participant's session and to no session.

use comfyume::config::Secret;
use comfyume_domain::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::execution::{
    Participant, cpu_prompt, frames_until_done, next_frame, participant, submit_ok, txt2img_prompt,
};
use crate::support::{Options, TestApp};

const TOKEN: &str = "room-admin-token-0123456789";

/// A manually dispatched room on one simulator whose sampler steps take
/// 100 ms (a 50-step job runs long enough to be caught running), with an
/// admin token and an instructor account `teacher`.
async fn room() -> TestApp {
    let app = TestApp::spawn_full(
        Options {
            manual_dispatch: true,
            sim: comfyume_sim::SimOptions {
                step_time: std::time::Duration::from_millis(100),
                ..Default::default()
            },
            ..Default::default()
        },
        |c| c.admin_token = Some(Secret::new(TOKEN)),
    )
    .await;
    app.add_user_with_role("teacher", "teacher-pw", Role::Admin)
        .await;
    app
}

fn by_token(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, app.at(path))
        .bearer_auth(TOKEN)
}

async fn teacher(app: &TestApp) -> reqwest::Client {
    let client = app.client();
    let r = app.try_login(&client, "teacher", "teacher-pw").await;
    assert_eq!(r.status(), 303);
    client
}

/// Sends `request`, expects `status`, returns the JSON answer.
async fn expect(request: reqwest::RequestBuilder, status: u16) -> Value {
    let r = request.send().await.unwrap();
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "answer: {text}");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// The audit log, newest first.
async fn audit_log(app: &TestApp) -> Vec<Value> {
    let body = expect(by_token(app, Method::GET, "/admin/api/audit"), 200).await;
    body["entries"].as_array().unwrap().clone()
}

async fn job_status(app: &TestApp, p: &Participant, id: &str) -> String {
    let job = p.get_json(app, &format!("/api/jobs/{id}")).await;
    job["status"].as_str().unwrap().to_string()
}

/// Reads frames until a `notification`, which it returns.
async fn next_notification(p: &mut Participant) -> Value {
    loop {
        let f = next_frame(&mut p.ws).await;
        if f["type"] == "notification" {
            return f;
        }
    }
}

/// Reads frames until the job's first `progress` (it runs on the GPU).
async fn until_running(p: &mut Participant) {
    loop {
        if next_frame(&mut p.ws).await["type"] == "progress" {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_actions_are_refused_to_participants_and_to_no_session() {
    let app = room().await;
    let a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("r")).await;
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/admin/api/jobs".into(), None),
        (Method::POST, format!("/admin/api/jobs/{id}/cancel"), None),
        (Method::POST, format!("/admin/api/jobs/{id}/bump"), None),
        (
            Method::POST,
            "/admin/api/users/alice/cancel-jobs".into(),
            None,
        ),
        (Method::GET, "/admin/api/room".into(), None),
        (Method::POST, "/admin/api/room/pause".into(), None),
        (Method::POST, "/admin/api/room/resume".into(), None),
        (
            Method::POST,
            "/admin/api/room/broadcast".into(),
            Some(json!({"message": "hello"})),
        ),
        (
            Method::POST,
            "/admin/api/room/workflows".into(),
            Some(json!({"name": "intro", "workflow": {"nodes": []}})),
        ),
        (Method::GET, "/admin/api/audit".into(), None),
        (Method::POST, "/admin/api/backup".into(), None),
        (Method::DELETE, "/admin/api/room/broadcast".into(), None),
        (Method::GET, "/admin/api/events".into(), None),
        (Method::GET, "/admin/participants/alice".into(), None),
        (
            Method::GET,
            "/admin/api/users/alice/file?type=output&path=x.png".into(),
            None,
        ),
        (Method::POST, "/admin/api/wall/1/hide".into(), None),
        (
            Method::POST,
            "/admin/api/users/alice/caps".into(),
            Some(json!({"max_pending": 5, "max_running": 2})),
        ),
    ];
    for (method, path, body) in &routes {
        let with_body = |r: reqwest::RequestBuilder| match body {
            Some(b) => r.json(b),
            None => r,
        };
        let none = with_body(reqwest::Client::new().request(method.clone(), app.at(path)));
        assert_eq!(none.send().await.unwrap().status(), 401, "{method} {path}");
        let participant = with_body(a.http.request(method.clone(), app.at(path)));
        assert_eq!(
            participant.send().await.unwrap().status(),
            403,
            "{method} {path}"
        );
        let wrong = with_body(
            reqwest::Client::new()
                .request(method.clone(), app.at(path))
                .bearer_auth("not-the-token"),
        );
        assert_eq!(wrong.send().await.unwrap().status(), 401, "{method} {path}");
    }
    // Nothing happened, and nothing was recorded.
    assert_eq!(job_status(&app, &a, &id).await, "pending");
    assert!(!app.state.dispatcher.is_paused());
    assert_eq!(audit_log(&app).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instructor_cancels_and_bumps_anyones_jobs_and_each_is_audited() {
    let app = room().await;
    let teacher = teacher(&app).await;
    let mut a = participant(&app, "alice").await;
    let mut b = participant(&app, "bob").await;
    let a1 = submit_ok(&app, &a, cpu_prompt("a1")).await;
    let b1 = submit_ok(&app, &b, cpu_prompt("b1")).await;
    let b2 = submit_ok(&app, &b, txt2img_prompt(2, 50)).await;

    // The room's list: every waiting job, oldest first, with its owner.
    let list = expect(by_token(&app, Method::GET, "/admin/api/jobs"), 200).await;
    assert_eq!(list["paused"], false);
    let listed: Vec<(&str, &str, &str)> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap(),
                j["owner"].as_str().unwrap(),
                j["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (a1.as_str(), "alice", "pending"),
            (b1.as_str(), "bob", "pending"),
            (b2.as_str(), "bob", "pending"),
        ]
    );

    // Bumped by the instructor's session: bob's second job goes before
    // alice's older one and bob's own first.
    let done = expect(
        teacher.post(app.at(&format!("/admin/api/jobs/{b2}/bump"))),
        200,
    )
    .await;
    assert_eq!(done["audit"]["action"], "job.bump");
    assert_eq!(done["audit"]["actor"], "teacher");
    assert_eq!(done["audit"]["target"], b2.as_str());
    assert_eq!(done["audit"]["detail"]["owner"], "bob");
    let list = expect(by_token(&app, Method::GET, "/admin/api/jobs"), 200).await;
    assert_eq!(list["jobs"][2]["bumped"], true);
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&b2));
    until_running(&mut b).await;

    // Only a waiting job moves; an unknown one is not found; a bad id is
    // refused with a reason.
    let running = expect(
        by_token(&app, Method::POST, &format!("/admin/api/jobs/{b2}/bump")),
        409,
    )
    .await;
    assert!(
        running["error"].as_str().unwrap().contains("not waiting"),
        "{running}"
    );
    let unknown = "00000000-0000-4000-8000-000000000000";
    expect(
        by_token(
            &app,
            Method::POST,
            &format!("/admin/api/jobs/{unknown}/cancel"),
        ),
        404,
    )
    .await;
    expect(
        by_token(&app, Method::POST, "/admin/api/jobs/nope/cancel"),
        400,
    )
    .await;
    expect(
        by_token(&app, Method::POST, &format!("/admin/api/jobs/{a1}/launch")),
        404,
    )
    .await;

    // Cancelling alice's waiting job: it leaves the queue, and alice's
    // status says so.
    let done = expect(
        by_token(&app, Method::POST, &format!("/admin/api/jobs/{a1}/cancel")),
        200,
    )
    .await;
    assert_eq!(done["audit"]["actor"], "admin token");
    assert_eq!(
        done["audit"]["detail"],
        json!({"owner": "alice", "was": "pending"})
    );
    assert_eq!(job_status(&app, &a, &a1).await, "cancelled");
    loop {
        let f = next_frame(&mut a.ws).await;
        if f["type"] == "status" && f["data"]["status"]["exec_info"]["queue_remaining"] == 0 {
            break;
        }
    }
    expect(
        by_token(&app, Method::POST, &format!("/admin/api/jobs/{a1}/cancel")),
        409,
    )
    .await;

    // Cancelling all of bob's: the waiting one leaves, the running one is
    // interrupted on its GPU and bob's canvas hears it.
    let done = expect(
        by_token(&app, Method::POST, "/admin/api/users/bob/cancel-jobs"),
        200,
    )
    .await;
    assert_eq!(
        done["audit"]["detail"],
        json!({"dequeued": [b1], "interrupted": [b2]})
    );
    let frames = frames_until_done(&mut b.ws, &b2).await;
    assert!(
        frames.iter().any(|f| f["type"] == "execution_interrupted"),
        "{frames:?}"
    );
    assert_eq!(job_status(&app, &b, &b1).await, "cancelled");
    assert_eq!(job_status(&app, &b, &b2).await, "cancelled");
    expect(
        by_token(&app, Method::POST, "/admin/api/users/nobody/cancel-jobs"),
        404,
    )
    .await;

    // The audit log, newest first: exactly the actions that took effect.
    let log = audit_log(&app).await;
    let actions: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("admin token", "user.cancel_jobs", "bob"),
            ("admin token", "job.cancel", a1.as_str()),
            ("teacher", "job.bump", b2.as_str()),
        ]
    );
    assert!(log.iter().all(|e| e["at"].as_i64().unwrap() > 0));
    // Paging back from the newest entry.
    let older = expect(
        by_token(
            &app,
            Method::GET,
            &format!("/admin/api/audit?limit=1&before={}", log[0]["id"]),
        ),
        200,
    )
    .await;
    assert_eq!(older["entries"].as_array().unwrap().len(), 1);
    assert_eq!(older["entries"][0]["action"], "job.cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_room_starts_nothing_until_resumed_even_across_a_restart() {
    let mut app = room().await;
    let mut a = participant(&app, "alice").await;
    let mut b = participant(&app, "bob").await;
    let running = submit_ok(&app, &a, cpu_prompt("before")).await;
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&running));

    let done = expect(by_token(&app, Method::POST, "/admin/api/room/pause"), 200).await;
    assert_eq!(done["paused"], true);
    assert_eq!(done["audit"]["action"], "room.pause");
    // Everyone is told, the one with a job and the one without.
    for p in [&mut a, &mut b] {
        let told = next_notification(p).await;
        assert!(
            told["data"]["value"].as_str().unwrap().contains("paused"),
            "{told}"
        );
    }
    // The job that was running finishes.
    frames_until_done(&mut a.ws, &running).await;
    assert_eq!(job_status(&app, &a, &running).await, "completed");

    // New work waits, safe in the queue.
    let waiting = submit_ok(&app, &b, cpu_prompt("during")).await;
    assert!(app.dispatch_once().await.is_empty(), "the room is paused");
    assert_eq!(job_status(&app, &b, &waiting).await, "pending");

    // A restart keeps the room paused.
    app.restart().await;
    let status = expect(by_token(&app, Method::GET, "/admin/api/room"), 200).await;
    assert_eq!(status["paused"], true);
    assert!(app.dispatch_once().await.is_empty(), "still paused");

    // Resumed: the waiting job starts and runs to its end.
    let mut b = reconnect(&app, b).await;
    let done = expect(by_token(&app, Method::POST, "/admin/api/room/resume"), 200).await;
    assert_eq!(done["paused"], false);
    let told = next_notification(&mut b).await;
    assert!(
        told["data"]["value"]
            .as_str()
            .unwrap()
            .contains("running again"),
        "{told}"
    );
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&waiting));
    frames_until_done(&mut b.ws, &waiting).await;
    assert_eq!(job_status(&app, &b, &waiting).await, "completed");

    let log = audit_log(&app).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["room.resume", "room.pause"]);
    assert_eq!(log[0]["detail"], json!({"was_paused": true}));
}

/// The participant's socket again, on a restarted gateway (the session
/// survives a restart).
async fn reconnect(app: &TestApp, p: Participant) -> Participant {
    let mut ws =
        crate::support::ws_connect(app, &format!("/ws?clientId={}", p.sid), Some(&p.cookie))
            .await
            .unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "status");
    Participant { ws, ..p }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_connected_participant() {
    let app = room().await;
    let teacher = teacher(&app).await;
    let mut a = participant(&app, "alice").await;
    let mut b = participant(&app, "bob").await;
    let message = "Break until 11:15 — leave your jobs queued.";
    let done = expect(
        teacher
            .post(app.at("/admin/api/room/broadcast"))
            .json(&json!({"message": message})),
        200,
    )
    .await;
    assert_eq!(done["audit"]["action"], "room.broadcast");
    assert_eq!(done["audit"]["detail"]["message"], message);
    assert_eq!(done["audit"]["detail"]["sockets"], 2);
    for p in [&mut a, &mut b] {
        let told = next_notification(p).await;
        assert_eq!(told["data"]["value"], message);
    }

    // An empty or overlong message is refused with the reason.
    let empty = expect(
        teacher
            .post(app.at("/admin/api/room/broadcast"))
            .json(&json!({"message": "   "})),
        400,
    )
    .await;
    assert!(
        empty["error"].as_str().unwrap().contains("empty"),
        "{empty}"
    );
    let long = "x".repeat(comfyume::room::MAX_BROADCAST_CHARS + 1);
    let refused = expect(
        teacher
            .post(app.at("/admin/api/room/broadcast"))
            .json(&json!({"message": long})),
        400,
    )
    .await;
    assert!(
        refused["error"].as_str().unwrap().contains("at most"),
        "{refused}"
    );
    assert_eq!(audit_log(&app).await.len(), 1, "refusals are not actions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_steers_the_room() {
    let app = room().await;
    let a = participant(&app, "alice").await;
    let id = submit_ok(&app, &a, cpu_prompt("cli")).await;
    let url = app.url.clone();
    // The CLI runs on a blocking thread: the server answering it lives on
    // this test's runtime.
    let run = move |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_comfyume"));
        cmd.args(args)
            .args(["--url", &url])
            .env_remove("COMFYUME_CONFIG")
            .env("COMFYUME_ADMIN_TOKEN", TOKEN);
        tokio::task::spawn_blocking(move || {
            let out = cmd.output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (ok, out, err) = run(&["room", "pause"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("room: paused"), "{out}");
    let (ok, out, _) = run(&["jobs", "list"]).await.unwrap();
    assert!(ok);
    assert!(out.contains("PAUSED"), "{out}");
    assert!(out.contains(&id) && out.contains("alice"), "{out}");
    let (ok, out, err) = run(&["jobs", "bump", &id]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("job.bump"), "{out}");
    let (ok, _, err) = run(&["jobs", "cancel", "nope"]).await.unwrap();
    assert!(!ok);
    assert!(err.contains("not a job id"), "{err}");
    let (ok, out, err) = run(&["room", "resume"]).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("room: running"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warm-up.json");
    std::fs::write(&file, r#"{"nodes": [], "links": []}"#).unwrap();
    let (ok, out, err) = run(&["room", "push-workflow", file.to_str().unwrap()])
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("room.push_workflow warm-up"), "{out}");
    // Accounts on the running server.
    let (ok, out, err) = run(&["users", "limits", "alice", "--running", "2"])
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("account.caps alice"), "{out}");
    let (ok, out, err) = run(&["users", "reset-password", "alice"]).await.unwrap();
    assert!(ok, "{err}");
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("new password for alice: "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert_eq!(
        app.try_login(&app.client(), "alice", &password)
            .await
            .status(),
        303
    );
    let (ok, _, err) = run(&["users", "disable", "alice"]).await.unwrap();
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["users", "enable", "alice"]).await.unwrap();
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["users", "disable", "nobody"]).await.unwrap();
    assert!(!ok);
    assert!(err.contains("no account named 'nobody'"), "{err}");

    let (ok, out, _) = run(&["audit", "list"]).await.unwrap();
    assert!(ok);
    // Newest first, each by the token.
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), 8, "{out}");
    for (line, action) in lines.iter().zip([
        "account.enable",
        "account.disable",
        "account.reset_password",
        "account.caps",
        "room.push_workflow",
        "room.resume",
        "job.bump",
        "room.pause",
    ]) {
        assert!(
            line.contains(action) && line.contains("admin token"),
            "{out}"
        );
    }
}

/// Reads frames until the gateway closes the socket.
async fn until_closed(p: &mut Participant) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match crate::support::within("the socket to close", p.ws.next()).await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instructor_disables_an_account_and_resets_its_password() {
    let app = room().await;
    let teacher = teacher(&app).await;
    let mut a = participant(&app, "alice").await;
    let old_password = "alice-secret-pw";

    // Disabled: the open canvas disconnects, the session is gone, and the
    // password no longer logs in.
    let done = expect(teacher.post(app.at("/admin/api/users/alice/disable")), 200).await;
    assert_eq!(done["audit"]["action"], "account.disable");
    assert_eq!(done["audit"]["detail"], json!({"sockets_closed": 1}));
    until_closed(&mut a).await;
    assert_eq!(
        a.http
            .get(app.at("/api/queue"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let login = app.try_login(&app.client(), "alice", old_password).await;
    assert_ne!(login.status(), 303, "a disabled account cannot log in");
    // An instructor cannot lock themselves out.
    let own = expect(
        teacher.post(app.at("/admin/api/users/teacher/disable")),
        409,
    )
    .await;
    assert!(own["error"].as_str().unwrap().contains("your own"), "{own}");

    // Enabled again: the same password works.
    expect(teacher.post(app.at("/admin/api/users/alice/enable")), 200).await;
    let mut a = crate::execution::log_in(&app, "alice", old_password).await;

    // A new password: only the answer carries it; the old one stops
    // working and the open canvas disconnects.
    let done = expect(
        by_token(&app, Method::POST, "/admin/api/users/alice/reset-password"),
        200,
    )
    .await;
    let new_password = done["password"].as_str().unwrap().to_string();
    assert_eq!(done["user"], "alice");
    until_closed(&mut a).await;
    let old = app.try_login(&app.client(), "alice", old_password).await;
    assert_ne!(old.status(), 303);
    let new = app.try_login(&app.client(), "alice", &new_password).await;
    assert_eq!(new.status(), 303);

    expect(
        by_token(&app, Method::POST, "/admin/api/users/nobody/disable"),
        404,
    )
    .await;
    expect(
        by_token(&app, Method::POST, "/admin/api/users/alice/promote"),
        404,
    )
    .await;

    let log = audit_log(&app).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "account.reset_password",
            "account.enable",
            "account.disable"
        ]
    );
    assert!(
        !serde_json::to_string(&log).unwrap().contains(&new_password),
        "the audit log never holds a password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_workflow_reaches_everyone_now_and_later_and_replaces_nothing() {
    let app = room().await;
    let teacher = teacher(&app).await;
    let mut a = participant(&app, "alice").await;
    let b = participant(&app, "bob").await;
    // Bob already has a workflow of his own by that name.
    let his = json!({"nodes": [{"id": 1, "type": "EmptyImage"}], "links": []});
    let r = b
        .http
        .post(app.at("/api/userdata/workflows%2Fintro.json"))
        .json(&his)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let pushed = json!({"nodes": [], "links": [], "version": 0.4, "extra": {"by": "teacher"}});
    let done = expect(
        teacher
            .post(app.at("/admin/api/room/workflows"))
            .json(&json!({"name": "intro.json", "workflow": pushed})),
        200,
    )
    .await;
    assert_eq!(done["audit"]["action"], "room.push_workflow");
    assert_eq!(done["audit"]["target"], "intro");
    // teacher, alice and bob.
    assert_eq!(
        done["audit"]["detail"],
        json!({"delivered": 3, "not_yet": []})
    );
    let told = next_notification(&mut a).await;
    assert!(
        told["data"]["value"].as_str().unwrap().contains("intro"),
        "{told}"
    );

    let listing = |p: &Participant| {
        let (http, url) = (p.http.clone(), app.at("/api/userdata?dir=workflows"));
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let read = |p: &Participant, file: &str| {
        let (http, url) = (
            p.http.clone(),
            app.at(&format!("/api/userdata/workflows%2F{file}")),
        );
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(listing(&a).await, json!(["intro.json"]));
    assert_eq!(read(&a, "intro.json").await, pushed);
    // Bob keeps his; the pushed one takes the next name.
    assert_eq!(listing(&b).await, json!(["intro (2).json", "intro.json"]));
    assert_eq!(read(&b, "intro.json").await, his);
    assert_eq!(read(&b, "intro%20(2).json").await, pushed);

    // Someone who logs in later gets it at login, once.
    let c = participant(&app, "carol").await;
    assert_eq!(listing(&c).await, json!(["intro.json"]));
    let again = crate::execution::log_in(&app, "alice", "alice-secret-pw").await;
    assert_eq!(listing(&again).await, json!(["intro.json"]));

    // One of the workshop's templates, by name.
    let templates = expect(by_token(&app, Method::GET, "/admin/api/templates"), 200).await;
    assert_eq!(templates, json!({"templates": ["invert"]}));
    let done = expect(
        by_token(&app, Method::POST, "/admin/api/room/workflows")
            .json(&json!({"template": "invert"})),
        200,
    )
    .await;
    assert_eq!(done["audit"]["target"], "invert");
    let listed = listing(&c).await;
    assert_eq!(listed, json!(["intro.json", "invert.json"]));
    let template: Value = serde_json::from_str(include_str!(
        "../../../../demo/templates/invert-an-image.json"
    ))
    .unwrap();
    assert_eq!(read(&c, "invert.json").await, template);
    expect(
        by_token(&app, Method::POST, "/admin/api/room/workflows")
            .json(&json!({"template": "nope"})),
        404,
    )
    .await;
    expect(
        by_token(&app, Method::POST, "/admin/api/room/workflows")
            .json(&json!({"template": "invert", "workflow": {"nodes": []}})),
        400,
    )
    .await;

    // What cannot be a workflow, or a name, is refused with the reason.
    let bad_name = expect(
        teacher
            .post(app.at("/admin/api/room/workflows"))
            .json(&json!({"name": "../escape", "workflow": pushed})),
        400,
    )
    .await;
    assert!(
        bad_name["error"].as_str().unwrap().contains("no folders"),
        "{bad_name}"
    );
    let not_a_workflow = expect(
        teacher
            .post(app.at("/admin/api/room/workflows"))
            .json(&json!({"name": "x", "workflow": {"1": {"class_type": "SaveImage"}}})),
        400,
    )
    .await;
    assert!(
        not_a_workflow["error"].as_str().unwrap().contains("nodes"),
        "{not_a_workflow}"
    );
    assert_eq!(audit_log(&app).await.len(), 2);
}

/// Reads frames until the next `comfyume.room` one, and returns its data.
async fn next_standing(p: &mut Participant) -> Value {
    loop {
        let f = crate::execution::next_frame_any(&mut p.ws).await;
        if f["type"] == "comfyume.room" {
            return f["data"].clone();
        }
    }
}

async fn standing(app: &TestApp, p: &Participant) -> Value {
    p.get_json(app, "/api/comfyume/room").await
}

/// The (position, ahead) of each waiting prompt in a standing.
fn places(standing: &Value) -> Vec<(u64, u64)> {
    standing["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["position"].as_u64().unwrap(),
                w["ahead"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_participant_sees_their_place_in_the_room_and_it_moves_as_jobs_end() {
    let app = room().await;
    let mut d = participant(&app, "dora").await;
    let long = submit_ok(&app, &d, txt2img_prompt(3, 50)).await;
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&long));
    until_running(&mut d).await;
    // The dashboard sees whose job runs where, and how far it got.
    let look = app.state.room.look().await.unwrap();
    let first = look.delta_from(&Default::default());
    let current = &first["backends"]["upsert"]["sim"]["current"][0];
    assert_eq!(current["owner"], "dora", "{first}");
    assert_eq!(current["progress"]["max"], 50, "{current}");
    assert_eq!(
        first["jobs"]["upsert"][&long]["progress"]["max"], 50,
        "{first}"
    );
    // Three participants queue behind dora's running job, in this order.
    let mut queued = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let p = participant(&app, name).await;
        let id = submit_ok(&app, &p, cpu_prompt(name)).await;
        queued.push((p, id));
    }
    for (n, (p, id)) in queued.iter().enumerate() {
        let s = standing(&app, p).await;
        assert_eq!(s["waiting"][0]["prompt_id"], id.as_str(), "{s}");
        assert_eq!(places(&s), [(n as u64 + 1, n as u64)], "{s}");
        assert_eq!(s["paused"], false);
        assert_eq!(s["gpus"], "ready");
        assert_eq!(s["waiting"][0]["retrying"], false);
        assert_eq!(s["room_waiting"], 3);
        // Nothing has finished yet: no history to estimate a start from.
        assert_eq!(s["waiting"][0]["estimated_start_seconds"], Value::Null);
    }
    assert_eq!(standing(&app, &d).await["waiting"], json!([]));

    // Each socket hears it too, once: a second look with no change tells
    // nobody.
    assert_eq!(app.state.room.publish_once().await.unwrap(), 4);
    for (n, (p, _)) in queued.iter_mut().enumerate() {
        let s = next_standing(p).await;
        assert_eq!(places(&s), [(n as u64 + 1, n as u64)], "{s}");
        assert_eq!(s["user"], ["alice", "bob", "carol"][n]);
    }
    assert_eq!(app.state.room.publish_once().await.unwrap(), 0);

    // Dora's job ends; alice's starts: bob and carol move up, and hear it.
    expect(
        by_token(
            &app,
            Method::POST,
            &format!("/admin/api/jobs/{long}/cancel"),
        ),
        200,
    )
    .await;
    frames_until_done(&mut d.ws, &long).await;
    assert_eq!(
        app.dispatch_once().await,
        std::slice::from_ref(&queued[0].1)
    );
    assert_eq!(standing(&app, &queued[0].0).await["waiting"], json!([]));
    assert!(app.state.room.publish_once().await.unwrap() >= 3);
    for (n, (p, _)) in queued.iter_mut().enumerate().skip(1) {
        let s = next_standing(p).await;
        assert_eq!(places(&s), [(n as u64, n as u64 - 1)], "{s}");
        assert_eq!(standing(&app, p).await["waiting"], s["waiting"]);
    }

    // With no GPU able to take work, those waiting are told so.
    expect(
        by_token(&app, Method::POST, "/admin/api/backends/sim/disable"),
        200,
    )
    .await;
    assert_eq!(standing(&app, &queued[1].0).await["gpus"], "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_participant_panel_is_an_extension_and_shows_the_banner_until_cleared() {
    let app = room().await;
    let a = participant(&app, "alice").await;
    let listed = a.get_json(&app, "/api/extensions").await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .contains(&json!("/extensions/comfyume-room/room.js")),
        "{listed}"
    );
    let script = a
        .http
        .get(app.at("/extensions/comfyume-room/room.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.text().await.unwrap().contains("registerExtension"));
    let anonymous = reqwest::get(app.at("/extensions/comfyume-room/room.js"))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        reqwest::get(app.at("/api/comfyume/room"))
            .await
            .unwrap()
            .status(),
        401
    );

    assert_eq!(standing(&app, &a).await["banner"], Value::Null);
    expect(
        by_token(&app, Method::POST, "/admin/api/room/broadcast")
            .json(&json!({"message": "Look at the projector"})),
        200,
    )
    .await;
    let s = standing(&app, &a).await;
    assert_eq!(s["banner"]["message"], "Look at the projector");
    assert_eq!(s["user"], "alice");
    let done = expect(
        by_token(&app, Method::DELETE, "/admin/api/room/broadcast"),
        200,
    )
    .await;
    assert_eq!(done["audit"]["action"], "room.clear_broadcast");
    assert_eq!(
        done["audit"]["detail"],
        json!({"message": "Look at the projector"})
    );
    assert_eq!(standing(&app, &a).await["banner"], Value::Null);
}

/// Reads server-sent events from `response` until one named `event`;
/// returns its data as JSON.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String, event: &str) -> Value {
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = if n == event { event } else { "other" };
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if name == event {
                return serde_json::from_str(&data).unwrap();
            }
        }
        let chunk = crate::support::within("an event from the dashboard", response.chunk())
            .await
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_the_instructors_and_follows_the_room_by_deltas() {
    let app = TestApp::spawn_with(|c| c.admin_token = Some(Secret::new(TOKEN))).await;
    app.add_user_with_role("teacher", "teacher-pw", Role::Admin)
        .await;

    // The page: instructors only; nobody logged in goes to log in first.
    let anonymous = app.client().get(app.at("/admin")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()["location"], "/login?next=/admin");
    let mut a = participant(&app, "alice").await;
    assert_eq!(
        a.http.get(app.at("/admin")).send().await.unwrap().status(),
        403
    );
    assert_eq!(
        a.http
            .get(app.at("/admin/api/events"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let teacher = teacher(&app).await;
    let page = teacher.get(app.at("/admin")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("EventSource(\"/admin/api/events\")"),
        "the page follows the stream"
    );

    // The stream: the whole room first.
    let mut events = teacher
        .get(app.at("/admin/api/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut buffer = String::new();
    let first = next_event(&mut events, &mut buffer, "delta").await;
    assert_eq!(first["summary"]["upsert"]["room"]["paused"], false);
    assert_eq!(first["backends"]["upsert"]["sim"]["slots"], 1);
    assert_eq!(first["participants"]["upsert"]["alice"]["online"], true);
    assert_eq!(first["participants"]["upsert"]["teacher"]["role"], "admin");
    assert!(first.get("jobs").is_none(), "no job yet: {first}");

    // Alice's job: it appears, runs and leaves the queue; only the rows
    // that changed come each time.
    let id = submit_ok(&app, &a, cpu_prompt("dash")).await;
    frames_until_done(&mut a.ws, &id).await;
    loop {
        let delta = next_event(&mut events, &mut buffer, "delta").await;
        if delta["participants"]["upsert"]["alice"]["completed"] == 1 {
            // With her latest image, which the instructor may look at.
            let thumbnail = delta["participants"]["upsert"]["alice"]["last_output"]
                .as_str()
                .unwrap_or_else(|| panic!("{delta}"))
                .to_string();
            let image = teacher.get(app.at(&thumbnail)).send().await.unwrap();
            assert_eq!(image.status(), 200);
            assert_eq!(image.headers()["content-type"], "image/png");
            // Only the rows that changed: the teacher's did not.
            assert!(
                delta["participants"]["upsert"].get("teacher").is_none(),
                "{delta}"
            );
            break;
        }
    }
    // Ended: the queue no longer lists it.
    let now = app.state.room.look().await.unwrap();
    assert_eq!(now.delta_from(&now), json!({}));
    let jobs = expect(by_token(&app, Method::GET, "/admin/api/jobs"), 200).await;
    assert_eq!(jobs["jobs"], json!([]));

    // Bounded: past the limit, a clear refusal.
    let mut open = Vec::new();
    for _ in 1..comfyume::room::MAX_DASHBOARDS {
        let r = by_token(&app, Method::GET, "/admin/api/events")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let refused = by_token(&app, Method::GET, "/admin/api/events")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    drop(open);

    // The teacher's stream lasts as long as their session.
    expect(
        by_token(
            &app,
            Method::POST,
            "/admin/api/users/teacher/reset-password",
        ),
        200,
    )
    .await;
    crate::support::within("the teacher's stream to end", async {
        while events.chunk().await.ok().flatten().is_some() {}
    })
    .await;
}

/// The text of each `<dd class=NAME>` in a page, in order.
fn cells(html: &str, class: &str) -> Vec<String> {
    let open = format!("<dd class={class}>");
    html.split(&open)
        .skip(1)
        .map(|rest| rest.split("</dd>").next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_sheet_prints_one_card_per_account_whose_password_logs_in() {
    let app = room().await;
    let teacher = teacher(&app).await;
    let form = [
        ("prefix", "ws-"),
        ("count", "3"),
        ("url", "https://workshop.example.org"),
        ("paper", "letter"),
    ];
    let a = participant(&app, "alice").await;
    assert_eq!(
        a.http
            .post(app.at("/admin/accounts"))
            .form(&form)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        reqwest::Client::new()
            .post(app.at("/admin/accounts"))
            .form(&form)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let r = teacher
        .post(app.at("/admin/accounts"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("size: letter"), "printed on Letter");
    let users = cells(&html, "user");
    let passwords = cells(&html, "password");
    assert_eq!(users, ["ws-001", "ws-002", "ws-003"]);
    assert_eq!(cells(&html, "url"), vec!["https://workshop.example.org"; 3]);
    for (user, password) in users.iter().zip(&passwords) {
        let login = app.try_login(&app.client(), user, password).await;
        assert_eq!(
            login.status(),
            303,
            "{user} logs in with the sheet's password"
        );
    }
    let log = audit_log(&app).await;
    assert_eq!(log[0]["action"], "accounts.create");
    assert_eq!(log[0]["actor"], "teacher");
    assert_eq!(
        log[0]["detail"]["names"],
        json!(["ws-001", "ws-002", "ws-003"])
    );
    assert!(!serde_json::to_string(&log).unwrap().contains(&passwords[0]));

    // A sheet without a usable address is refused, and nothing created.
    let bad = teacher
        .post(app.at("/admin/accounts"))
        .form(&[("prefix", "x-"), ("count", "2"), ("url", "workshop")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let x = comfyume_domain::UserName::parse("x-001").unwrap();
    assert!(app.state.store.user_by_name(&x).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instructor_looks_over_a_shoulder_and_cannot_change_anything() {
    let app = room().await;
    let teacher = teacher(&app).await;
    let mut a = participant(&app, "alice").await;
    let b = participant(&app, "bob").await;
    let workflow = json!({"nodes": [{"id": 7, "type": "SaveImage"}], "links": []});
    let saved = a
        .http
        .post(app.at("/api/userdata/workflows%2Fmine.json"))
        .json(&workflow)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let id = submit_ok(&app, &a, cpu_prompt("look")).await;
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&id));
    frames_until_done(&mut a.ws, &id).await;
    let history = a.get_json(&app, &format!("/api/history/{id}")).await;
    let output = history[&id]["outputs"]["5"]["images"][0]["filename"]
        .as_str()
        .unwrap()
        .to_string();

    // The page lists her workflow and her output, with their links.
    let page = teacher
        .get(app.at("/admin/participants/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("mine.json") && html.contains(&output),
        "{html}"
    );
    assert!(html.contains("read-only"));

    let file = |kind: &str, path: &str| {
        format!(
            "/admin/api/users/alice/file?type={kind}&path={}",
            path.replace('/', "%2F")
        )
    };
    let opened = teacher
        .get(app.at(&file("userdata", "workflows/mine.json")))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    assert!(
        opened.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(opened.json::<Value>().await.unwrap(), workflow);
    let image = teacher
        .get(app.at(&file("output", &output)))
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");

    // No route of the view writes: every other method is refused, and her
    // files are as they were.
    let before = (
        a.get_json(&app, "/api/userdata?dir=workflows").await,
        a.get_json(&app, "/internal/files/output").await,
    );
    for path in [
        "/admin/participants/alice".to_string(),
        file("userdata", "workflows/mine.json"),
        file("output", &output),
    ] {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let r = teacher
                .request(method.clone(), app.at(&path))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 405, "{method} {path}");
        }
    }
    let after = (
        a.get_json(&app, "/api/userdata?dir=workflows").await,
        a.get_json(&app, "/internal/files/output").await,
    );
    assert_eq!(before, after);
    let again: Value = a
        .http
        .get(app.at("/api/userdata/workflows%2Fmine.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, workflow);

    // Only instructors look; a path out of her folders is refused.
    for who in [&a.http, &b.http] {
        for path in [
            "/admin/participants/alice".to_string(),
            file("output", &output),
        ] {
            assert_eq!(
                who.get(app.at(&path)).send().await.unwrap().status(),
                403,
                "{path}"
            );
        }
    }
    let escape = teacher
        .get(app.at(&file("userdata", "../bob/workflows/x.json")))
        .send()
        .await
        .unwrap();
    assert!(
        escape.status() == 400 || escape.status() == 404,
        "{}",
        escape.status()
    );

    // Opening the view and her workflow are in the audit log.
    let log = audit_log(&app).await;
    let looks: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "participant.look")
        .map(|e| &e["detail"]["opened"])
        .collect();
    assert_eq!(looks, [&json!("workflows/mine.json"), &json!("workspace")]);
    assert!(
        log.iter()
            .all(|e| e["target"] == "alice" && e["actor"] == "teacher")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_shared_to_the_wall_is_seen_by_the_room_until_hidden() {
    let app = room().await;
    let teacher = teacher(&app).await;
    let mut a = participant(&app, "alice").await;
    let b = participant(&app, "bob").await;
    let id = submit_ok(&app, &a, cpu_prompt("wall")).await;
    assert_eq!(app.dispatch_once().await, std::slice::from_ref(&id));
    frames_until_done(&mut a.ws, &id).await;
    let history = a.get_json(&app, &format!("/api/history/{id}")).await;
    let output = history[&id]["outputs"]["5"]["images"][0]["filename"]
        .as_str()
        .unwrap()
        .to_string();
    let own_bytes = a
        .http
        .get(app.at(&format!("/api/view?filename={output}&type=output")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    let shared = expect(
        a.http
            .post(app.at("/api/comfyume/wall"))
            .json(&json!({"filename": output, "type": "output", "subfolder": ""})),
        201,
    )
    .await;
    assert_eq!(shared["author"], "alice");
    let url = shared["url"].as_str().unwrap().to_string();

    // Everyone logged in sees it, with the same bytes; nobody else.
    let wall = b.get_json(&app, "/api/comfyume/wall").await;
    assert_eq!(wall["items"][0]["id"], shared["id"]);
    assert_eq!(wall["can_hide"], false);
    let seen = b.http.get(app.at(&url)).send().await.unwrap();
    assert_eq!(seen.status(), 200);
    assert_eq!(seen.headers()["content-type"], "image/png");
    assert_eq!(seen.bytes().await.unwrap(), own_bytes);
    for path in ["/api/comfyume/wall", url.as_str()] {
        assert_eq!(
            reqwest::get(app.at(path)).await.unwrap().status(),
            401,
            "{path}"
        );
    }
    let page = app.client().get(app.at("/wall")).send().await.unwrap();
    assert_eq!(page.status(), 303, "the wall page asks for a login");
    assert_eq!(
        b.http.get(app.at("/wall")).send().await.unwrap().status(),
        200
    );

    // Only one's own files can be shared: bob cannot name alice's.
    let not_his = b
        .http
        .post(app.at("/api/comfyume/wall"))
        .json(&json!({"filename": output}))
        .send()
        .await
        .unwrap();
    assert_eq!(not_his.status(), 404);

    // A participant cannot hide; an instructor can, and it is audited.
    let path = format!("/admin/api/wall/{}/hide", shared["id"]);
    assert_eq!(
        a.http.post(app.at(&path)).send().await.unwrap().status(),
        403
    );
    expect(teacher.post(app.at(&path)), 200).await;
    assert_eq!(
        b.get_json(&app, "/api/comfyume/wall").await["items"],
        json!([])
    );
    assert_eq!(b.http.get(app.at(&url)).send().await.unwrap().status(), 404);
    let for_teacher: Value = teacher
        .get(app.at("/api/comfyume/wall"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(for_teacher["items"][0]["hidden"], true);
    assert_eq!(for_teacher["can_hide"], true);
    assert_eq!(audit_log(&app).await[0]["action"], "wall.hide");

    // Each participant has a bounded number of items shown.
    for _ in 0..comfyume::room::wall::MAX_SHOWN_PER_AUTHOR {
        expect(
            a.http
                .post(app.at("/api/comfyume/wall"))
                .json(&json!({"filename": output})),
            201,
        )
        .await;
    }
    let full = expect(
        a.http
            .post(app.at("/api/comfyume/wall"))
            .json(&json!({"filename": output})),
        409,
    )
    .await;
    assert!(
        full["error"].as_str().unwrap().contains("already"),
        "{full}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_own_limits_replace_the_rooms() {
    let app = TestApp::spawn_full(
        Options {
            manual_dispatch: true,
            second_sim: Some(Default::default()),
            ..Default::default()
        },
        |c| {
            c.admin_token = Some(Secret::new(TOKEN));
            c.limits.max_running_per_user = 1;
            c.limits.max_pending_per_user = 10;
        },
    )
    .await;
    let mut a = participant(&app, "alice").await;
    let ids = [
        submit_ok(&app, &a, cpu_prompt("c1")).await,
        submit_ok(&app, &a, cpu_prompt("c2")).await,
        submit_ok(&app, &a, cpu_prompt("c3")).await,
    ];
    // The room's limit: one running at a time, though two slots are free.
    assert_eq!(app.dispatch_once().await, [ids[0].clone()]);
    frames_until_done(&mut a.ws, &ids[0]).await;

    // Her own: two at once, and one waiting at most.
    let done = expect(
        by_token(&app, Method::POST, "/admin/api/users/alice/caps")
            .json(&json!({"max_pending": 1, "max_running": 2})),
        200,
    )
    .await;
    assert_eq!(done["audit"]["action"], "account.caps");
    assert_eq!(
        done["audit"]["detail"],
        json!({"max_pending": 1, "max_running": 2, "was": {"max_pending": null, "max_running": null}})
    );
    let started = app.dispatch_once().await;
    assert_eq!(started.len(), 2, "{started:?}");
    for id in &ids[1..] {
        frames_until_done(&mut a.ws, id).await;
    }
    submit_ok(&app, &a, cpu_prompt("c4")).await;
    let refused = crate::execution::submit(&app, &a, cpu_prompt("c5")).await;
    assert_ne!(refused.status(), 200);
    let body = refused.text().await.unwrap();
    assert!(body.contains("1 prompts waiting"), "{body}");

    // Limits are counts from 1; null gives back the room's.
    expect(
        by_token(&app, Method::POST, "/admin/api/users/alice/caps")
            .json(&json!({"max_pending": 0, "max_running": 2})),
        400,
    )
    .await;
    expect(
        by_token(&app, Method::POST, "/admin/api/users/alice/caps")
            .json(&json!({"max_pending": null, "max_running": null})),
        200,
    )
    .await;
    submit_ok(&app, &a, cpu_prompt("c6")).await;
}

/// A first time in a room with a shared password: the login form with
/// the room's password filled in.
async fn join(
    app: &TestApp,
    client: &reqwest::Client,
    name: &str,
    own: &str,
    room: &str,
) -> reqwest::Response {
    client
        .post(app.at("/login"))
        .form(&[
            ("username", name),
            ("password", own),
            ("room_password", room),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_rooms_password_a_participant_joins_then_logs_in_with_their_own() {
    const ROOM: &str = "open-sesame-42";
    let app = TestApp::spawn_with(|c| {
        c.admin_token = Some(Secret::new(TOKEN));
        c.auth.room_password = Some(Secret::new(ROOM));
        c.auth.room_max_members = 2;
    })
    .await;
    app.add_user_with_role("teacher", "teacher-pw", Role::Admin)
        .await;
    app.add_user("carded", "carded-own-pw").await;
    let page = app.client().get(app.at("/login")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("name=\"room_password\""), "{html}");

    // The first time: a free name, a password of her own, the room's.
    let zoe = app.client();
    assert_eq!(
        join(&app, &zoe, "zoe", "zoe-own-pw", ROOM).await.status(),
        303
    );
    let record = app
        .state
        .store
        .user_by_name(&comfyume_domain::UserName::parse("zoe").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.role, Role::Participant);
    assert!(record.room_member);
    let saved = zoe
        .post(app.at("/api/userdata/workflows%2Fmine.json"))
        .json(&json!({"nodes": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);

    // Next time, her own password, like anyone's, brings her back.
    let again = app.client();
    assert_eq!(
        app.try_login(&again, "zoe", "zoe-own-pw").await.status(),
        303
    );
    let listed: Value = again
        .get(app.at("/api/userdata?dir=workflows"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!(["mine.json"]));

    // The room's password reaches nobody's account: not hers, not a
    // card's, not an instructor's.
    assert_eq!(
        app.try_login(&app.client(), "zoe", ROOM).await.status(),
        401
    );
    for taken in ["zoe", "carded", "teacher"] {
        let r = join(&app, &app.client(), taken, "someone-else-pw", ROOM).await;
        assert_eq!(r.status(), 401, "{taken}");
        assert!(
            r.text().await.unwrap().contains("That name is taken"),
            "{taken}"
        );
    }
    // Nor the files a removed account left behind.
    app.add_user("gone", "gone-own-pw").await;
    app.put_user_file("gone", "output/kept.png", b"png").await;
    app.state
        .store
        .remove_user(&comfyume_domain::UserName::parse("gone").unwrap())
        .await
        .unwrap();
    let r = join(&app, &app.client(), "gone", "new-owner-pw", ROOM).await;
    assert!(r.text().await.unwrap().contains("That name is taken"));

    // The wrong room password, or too short a password of one's own,
    // makes nothing, with the reason.
    let wrong = join(&app, &app.client(), "yves", "yves-own-pw", "not-the-room").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("That is not the room"));
    let short = join(&app, &app.client(), "yves", "short", ROOM).await;
    assert!(
        short
            .text()
            .await
            .unwrap()
            .contains("at least 8 characters")
    );
    let yves = comfyume_domain::UserName::parse("yves").unwrap();
    assert!(app.state.store.user_by_name(&yves).await.unwrap().is_none());

    // A bounded number of accounts join this way.
    assert_eq!(
        join(&app, &app.client(), "xena", "xena-own-pw", ROOM)
            .await
            .status(),
        303
    );
    let full = join(&app, &app.client(), "walt", "walt-own-pw", ROOM).await;
    assert!(full.text().await.unwrap().contains("The room is full"));

    // The instructor's tools work on such an account as on any.
    let reset = expect(
        by_token(&app, Method::POST, "/admin/api/users/zoe/reset-password"),
        200,
    )
    .await;
    let new_password = reset["password"].as_str().unwrap();
    assert_eq!(
        app.try_login(&app.client(), "zoe", "zoe-own-pw")
            .await
            .status(),
        401
    );
    assert_eq!(
        app.try_login(&app.client(), "zoe", new_password)
            .await
            .status(),
        303
    );
    expect(
        by_token(&app, Method::POST, "/admin/api/users/zoe/disable"),
        200,
    )
    .await;
    assert_eq!(
        app.try_login(&app.client(), "zoe", new_password)
            .await
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_rooms_password_a_new_name_logs_nobody_in() {
    let app = TestApp::spawn().await;
    let r = app.try_login(&app.client(), "zoe", "open-sesame-42").await;
    assert_eq!(r.status(), 401);
    let zoe = comfyume_domain::UserName::parse("zoe").unwrap();
    assert!(app.state.store.user_by_name(&zoe).await.unwrap().is_none());
}
