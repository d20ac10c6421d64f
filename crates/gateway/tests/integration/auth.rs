//! Login, logout, rate limiting, and the rule that nothing but the login
//! page, health and static files answers without a session.

use crate::support::{TestApp, ws_connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_session_cookie_and_opens_the_workspace() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "pw-alice-1").await;
    let client = app.client();

    let page = client.get(app.at("/login?next=%2F")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("ComfyUME") && html.contains("name=\"password\""));

    let r = app.try_login(&client, "alice", "pw-alice-1").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "secure cookies are off in this test config"
    );

    let index = client.get(app.at("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(
        index.headers()["cache-control"],
        "no-store, must-revalidate"
    );
    assert_eq!(
        client
            .get(app.at("/api/settings"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookies_by_default() {
    let app = TestApp::spawn_with(|c| c.auth.secure_cookies = true).await;
    app.add_user("alice", "pw").await;
    let r = app.try_login(&app.client(), "alice", "pw").await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-comfyume_session=") && cookie.contains("; Secure"),
        "{cookie}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_look_the_same() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "right").await;
    let client = app.client();
    let wrong = app.try_login(&client, "alice", "wrong").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let wrong_text = wrong.text().await.unwrap();
    assert!(wrong_text.contains("Wrong user name or password."));
    let unknown = app.try_login(&client, "mallory", "whatever").await;
    assert_eq!(unknown.status(), 401);
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password.")
    );
    assert_eq!(
        client
            .get(app.at("/api/settings"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_are_rate_limited_per_user_name() {
    let app = TestApp::spawn_with(|c| c.auth.login_failures_per_user = 3).await;
    app.add_user("alice", "right").await;
    let client = app.client();
    for _ in 0..3 {
        assert_eq!(app.try_login(&client, "alice", "wrong").await.status(), 401);
    }
    let limited = app.try_login(&client, "alice", "right").await;
    assert_eq!(
        limited.status(),
        429,
        "even the right password waits out the lock"
    );
    assert!(limited.headers().contains_key("retry-after"));
    let text = limited.text().await.unwrap();
    assert!(text.contains("Too many failed logins"), "{text}");
    // Another account from the same address is not locked.
    app.add_user("bob", "bobpw").await;
    assert_eq!(app.try_login(&client, "bob", "bobpw").await.status(), 303);
}

/// Parallel guesses are counted as they start: no more than the limit get
/// their password checked, however many arrive at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_reach_the_limit() {
    let app = TestApp::spawn_with(|c| c.auth.login_failures_per_user = 5).await;
    app.add_user("alice", "right").await;
    let tries = (0..40).map(|_| async {
        let client = app.client();
        app.try_login(&client, "alice", "wrong")
            .await
            .status()
            .as_u16()
    });
    let statuses = futures_util::future::join_all(tries).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (5, 35), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_are_rate_limited_per_address() {
    let app = TestApp::spawn_with(|c| c.auth.login_failures_per_ip = 4).await;
    app.add_user("alice", "right").await;
    let client = app.client();
    for i in 0..4 {
        assert_eq!(
            app.try_login(&client, &format!("guess{i}"), "x")
                .await
                .status(),
            401
        );
    }
    assert_eq!(app.try_login(&client, "alice", "right").await.status(), 429);
}

/// Successful logins from one address (a room behind one NAT) do not use
/// up that address's allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_behind_one_address_logs_in() {
    let app = TestApp::spawn_with(|c| c.auth.login_failures_per_ip = 3).await;
    for i in 0..6 {
        let name = format!("user{i}");
        app.add_user(&name, "pw-for-all").await;
        let client = app.client();
        assert_eq!(
            app.try_login(&client, &name, "pw-for-all").await.status(),
            303,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_server_side() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    assert_eq!(
        client
            .get(app.at("/api/settings"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = client.post(app.at("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    assert_eq!(
        client
            .get(app.at("/api/settings"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

/// A page on another site that loads `/logout` (an image, a link) logs
/// nobody out: GET only asks, and a cross-site POST is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_is_a_same_origin_post() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    let settings = |c: &reqwest::Client| c.get(app.at("/api/settings")).send();
    let page = client.get(app.at("/logout")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<form method="post" action="/logout">"#),
        "{html}"
    );
    assert_eq!(
        settings(&client).await.unwrap().status(),
        200,
        "still logged in"
    );
    let cross = client
        .post(app.at("/logout"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert_eq!(
        settings(&client).await.unwrap().status(),
        200,
        "still logged in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_cookie_dies_with_logout() {
    let app = TestApp::spawn().await;
    let cookie = crate::support::session_cookie_of(&app, "alice").await;
    let thief = app.client();
    let get = |c: &reqwest::Client| {
        c.get(app.at("/api/settings"))
            .header("cookie", cookie.clone())
            .send()
    };
    assert_eq!(get(&thief).await.unwrap().status(), 200);
    thief
        .post(app.at("/logout"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(get(&thief).await.unwrap().status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_are_sent_to_the_login_page_and_back() {
    let app = TestApp::spawn().await;
    let r = app
        .client()
        .get(app.at("/?workflow=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/%3Fworkflow%3Dx");

    app.add_user("alice", "pw").await;
    let client = app.client();
    let r = client
        .post(app.at("/login"))
        .form(&[
            ("username", "alice"),
            ("password", "pw"),
            ("next", "/?workflow=x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/?workflow=x");
    let r = client
        .post(app.at("/login"))
        .form(&[
            ("username", "alice"),
            ("password", "pw"),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/", "no open redirect");
}

/// Every ComfyUI route of a workspace, plain and under /api.
pub const WORKSPACE_ROUTES: &[(&str, &str)] = &[
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/settings"),
    ("POST", "/settings"),
    ("GET", "/settings/Comfy.Locale"),
    ("POST", "/settings/Comfy.Locale"),
    ("GET", "/userdata?dir=workflows"),
    ("GET", "/userdata/workflows%2Fa.json"),
    ("POST", "/userdata/workflows%2Fa.json"),
    ("DELETE", "/userdata/workflows%2Fa.json"),
    (
        "POST",
        "/userdata/workflows%2Fa.json/move/workflows%2Fb.json",
    ),
    ("GET", "/v2/userdata?path=workflows"),
    ("POST", "/upload/image"),
    ("POST", "/upload/mask"),
    ("GET", "/view?filename=a.png"),
    ("GET", "/object_info"),
    ("GET", "/object_info/EmptyImage"),
    ("GET", "/extensions"),
    ("GET", "/features"),
    ("GET", "/system_stats"),
    ("GET", "/prompt"),
    ("GET", "/embeddings"),
    ("GET", "/models"),
    ("GET", "/experiment/models"),
    ("GET", "/i18n"),
    ("GET", "/global_subgraphs"),
    ("GET", "/node_replacements"),
    ("GET", "/workflow_templates"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workspace_route_refuses_an_anonymous_request() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let mut paths: Vec<(String, String)> = Vec::new();
    for (method, path) in WORKSPACE_ROUTES {
        paths.push((method.to_string(), path.to_string()));
        paths.push((method.to_string(), format!("/api{path}")));
    }
    for p in [
        "/internal/files/input",
        "/internal/files/output",
        "/templates/index.json",
        "/templates/invert.json",
    ] {
        paths.push(("GET".into(), p.into()));
    }
    for (method, path) in paths {
        let r = client
            .request(method.parse().unwrap(), app.at(&path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} must need a session");
    }
    assert_eq!(ws_connect(&app, "/ws", None).await.err(), Some(401));
    assert_eq!(
        ws_connect(&app, "/api/ws", Some("comfyume_session=forged"))
            .await
            .err(),
        Some(401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_static_assets_need_no_session() {
    let app = TestApp::spawn().await;
    let client = app.client();
    assert_eq!(
        client.get(app.at("/health")).send().await.unwrap().status(),
        200
    );
    let asset = client
        .get(app.at("/assets/index-abc123.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 200);
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let shim = client
        .get(app.at("/extensions/core/groupNode.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(shim.status(), 200);
    assert_eq!(shim.headers()["cache-control"], "no-cache");
    assert_eq!(
        client
            .get(app.at("/assets/nope.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .get(app.at("/index.html"))
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    let r = client
        .post(app.at("/api/settings"))
        .header("origin", "http://evil.example")
        .json(&serde_json::json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(app.at("/api/settings"))
        .header("sec-fetch-site", "cross-site")
        .json(&serde_json::json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(app.at("/api/settings"))
        .header("origin", app.url.clone())
        .json(&serde_json::json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "same-origin posts pass");
    let settings: serde_json::Value = client
        .get(app.at("/api/settings"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        settings,
        serde_json::json!({"a": 1}),
        "the refused posts changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_needs_no_login() {
    let app = TestApp::spawn_local_mode().await;
    let client = app.client();
    assert_eq!(client.get(app.at("/")).send().await.unwrap().status(), 200);
    client
        .post(app.at("/api/settings/Comfy.Locale"))
        .json(&"en")
        .send()
        .await
        .unwrap();
    assert!(
        app.user_file("default", "userdata/comfy.settings.json")
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_refused_and_swept() {
    let app = TestApp::spawn_with(|c| c.auth.session_hours = 0).await;
    app.add_user("alice", "pw").await;
    let client = app.client();
    assert_eq!(app.try_login(&client, "alice", "pw").await.status(), 303);
    assert_eq!(
        client
            .get(app.at("/api/settings"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "a 0-hour session is already over"
    );
    comfyume::server::run_housekeeping_once(&app.state).await;
    assert_eq!(
        app.state.accounts.sweep_expired_sessions().await.unwrap(),
        0,
        "the sweep removed it"
    );
}

/// A flood of logins with made-up, oversized names and passwords: each is
/// answered (never a 5xx), none is hashed for nothing, and a participant
/// still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_with_made_up_names_is_answered_and_harmless() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "right-one").await;
    let long_name = "n".repeat(100 * 1024);
    let long_password = "p".repeat(100 * 1024);
    let app = &app;
    let tries = (0..40).map(|i| {
        let (name, password) = if i % 2 == 0 {
            (format!("{long_name}{i}"), "x".to_string())
        } else {
            (format!("made-up-{i}"), long_password.clone())
        };
        async move {
            let client = app.client();
            app.try_login(&client, &name, &password)
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(tries).await;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        app.try_login(&app.client(), "alice", "right-one")
            .await
            .status(),
        303,
        "the real participant is not locked out"
    );
}

/// Behind a trusted reverse proxy, the per-address limit applies to each
/// participant's machine; the same header from anyone else is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let login = |app: &TestApp, from: &'static str| {
        let client = app.client();
        let url = app.at("/login");
        async move {
            client
                .post(url)
                .header("x-forwarded-for", from)
                .form(&[("username", "nobody"), ("password", "x"), ("next", "/")])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let behind_proxy = TestApp::spawn_with(|c| {
        c.auth.login_failures_per_ip = 2;
        c.auth.login_failures_per_user = 100;
        c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    assert_eq!(login(&behind_proxy, "203.0.113.1").await, 401);
    assert_eq!(login(&behind_proxy, "203.0.113.1").await, 401);
    assert_eq!(
        login(&behind_proxy, "203.0.113.1").await,
        429,
        "that machine is limited"
    );
    assert_eq!(
        login(&behind_proxy, "203.0.113.2").await,
        401,
        "its neighbour is not"
    );

    let no_proxy = TestApp::spawn_with(|c| {
        c.auth.login_failures_per_ip = 2;
        c.auth.login_failures_per_user = 100;
    })
    .await;
    assert_eq!(login(&no_proxy, "203.0.113.1").await, 401);
    assert_eq!(login(&no_proxy, "203.0.113.2").await, 401);
    assert_eq!(
        login(&no_proxy, "203.0.113.3").await,
        429,
        "a forged header does not buy new addresses"
    );
}

/// Every answer carries the headers a public site needs; our own pages a
/// policy that lets them run no script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_security_headers() {
    let app = TestApp::spawn().await;
    let client = app.user("alice").await;
    for path in ["/", "/api/settings", "/login", "/logout"] {
        let r = client.get(app.at(path)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
    }
    let login = app.client().get(app.at("/login")).send().await.unwrap();
    let policy = login.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("script-src"), "no script at all: {policy}");
}

/// Someone guessing a participant's password locks the name for strangers
/// only: the participant's own browser, which logged in before, still gets
/// in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_logs_in_while_their_name_is_under_attack() {
    let app = TestApp::spawn_with(|c| c.auth.login_failures_per_user = 3).await;
    app.add_user("alice", "her-own-pw").await;
    let her_browser = app.client();
    assert_eq!(
        app.try_login(&her_browser, "alice", "her-own-pw")
            .await
            .status(),
        303
    );
    let attacker = app.client();
    for _ in 0..3 {
        assert_eq!(
            app.try_login(&attacker, "alice", "guess").await.status(),
            401
        );
    }
    assert_eq!(
        app.try_login(&attacker, "alice", "her-own-pw")
            .await
            .status(),
        429,
        "the name is locked for strangers"
    );
    assert_eq!(
        app.try_login(&her_browser, "alice", "her-own-pw")
            .await
            .status(),
        303,
        "her browser is not a stranger"
    );
}

/// The start of a workshop: the whole room, behind one address (a NAT,
/// the reverse proxy), logs in at the same moment. Only failures count
/// against an address, so every participant gets in, however many more
/// than the address's failure limit arrive together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_room_logs_in_at_once_from_one_address() {
    let app = TestApp::spawn_with(|c| c.auth.login_failures_per_ip = 5).await;
    let room: Vec<(String, String)> = (0..30)
        .map(|i| (format!("seat{i:02}"), format!("pw-of-seat-{i:02}")))
        .collect();
    for (name, password) in &room {
        app.add_user(name, password).await;
    }
    let app = &app;
    let logins = room.iter().map(|(name, password)| async move {
        app.try_login(&app.client(), name, password)
            .await
            .status()
            .as_u16()
    });
    let statuses = futures_util::future::join_all(logins).await;
    assert!(statuses.iter().all(|s| *s == 303), "{statuses:?}");
}

/// Guesses at many names from one address at once: the address's limit is
/// looked at again as each guess's turn to hash comes, so no more than the
/// limit plus one per hashing slot (a core) get their password checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_at_many_names_reach_the_address_limit() {
    let app = TestApp::spawn_with(|c| c.auth.login_failures_per_ip = 5).await;
    let app = &app;
    let guesses = (0..40).map(|i| async move {
        app.try_login(&app.client(), &format!("someone{i}"), "guess")
            .await
            .status()
            .as_u16()
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let slots = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(checked + refused, 40, "{statuses:?}");
    assert!(
        (5..=5 + slots).contains(&checked),
        "{checked} checked with {slots} hashing slots: {statuses:?}"
    );
}

/// `/ready` (no session needed, for a load balancer): 200 once the
/// database answers and a node catalogue is at hand; 503 naming what is
/// missing when no backend can give one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_whether_the_room_can_be_served() {
    let app = TestApp::spawn().await;
    let r = app.client().get(app.at("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert!(
        body["catalogue"].as_str().unwrap().ends_with(" nodes"),
        "{body}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = TestApp::spawn_with(move |c| {
        c.backends = vec![comfyume::config::BackendConfig::new(
            "gpu-gone",
            comfyume::config::BackendKind::Comfyui,
            dead,
            1,
        )];
    })
    .await;
    let r = app.client().get(app.at("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert!(
        body["catalogue"]
            .as_str()
            .unwrap()
            .contains("no GPU backend could be reached"),
        "{body}"
    );
}
