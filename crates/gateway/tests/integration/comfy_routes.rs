//! The descriptive ComfyUI routes (users, object_info, features,
//! system_stats, extensions, the model lists from the backend, templates) and the
//! socket's opening frames, against the shapes in comfyui-api.md.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestApp, session_cookie_of, ws_connect};

async fn get_json(c: &reqwest::Client, url: String) -> Value {
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_is_single_user_form() {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;
    assert_eq!(
        get_json(&c, app.at("/api/users")).await,
        json!({"storage": "server", "migrated": true})
    );
    let r = c
        .post(app.at("/api/users"))
        .json(&json!({"username": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_info_comes_from_the_backend() {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;
    let all = get_json(&c, app.at("/api/object_info")).await;
    for node in [
        "EmptyImage",
        "ImageInvert",
        "SaveImage",
        "LoadImage",
        "KSampler",
        "CheckpointLoaderSimple",
    ] {
        assert!(all.get(node).is_some(), "{node} missing");
    }
    let sim: Value = reqwest::get(format!("{}/object_info", app.sim_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all["EmptyImage"], sim["EmptyImage"],
        "node info passes through untouched"
    );
    let one = get_json(&c, app.at("/object_info/EmptyImage")).await;
    assert_eq!(one, json!({"EmptyImage": sim["EmptyImage"]}));
    assert_eq!(
        get_json(&c, app.at("/api/object_info/NoSuchNode")).await,
        json!({})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_survives_a_backend_outage() {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;
    get_json(&c, app.at("/api/object_info")).await;
    // A second gateway on the same data directory whose backend is gone
    // still serves the last catalogue it saw.
    let data_dir = app.data_dir.clone();
    let stale = TestApp::spawn_with(move |cfg| {
        cfg.data_dir = data_dir.clone();
        cfg.database_url = Some(comfyume::config::Secret::new(format!(
            "sqlite://{}",
            data_dir.join("second.db").display()
        )));
        cfg.backends[0].url = "http://127.0.0.1:9".into();
    })
    .await;
    let c2 = stale.user("bob").await;
    assert!(
        get_json(&c2, stale.at("/api/object_info"))
            .await
            .get("EmptyImage")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_backend_is_a_clear_503() {
    let app = TestApp::spawn_with(|cfg| cfg.backends[0].url = "http://127.0.0.1:9".into()).await;
    let c = app.user("alice").await;
    let r = c.get(app.at("/api/object_info")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no GPU backend could be reached")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_stats_extensions_and_empty_catalogues() {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;
    let f = get_json(&c, app.at("/api/features")).await;
    assert_eq!(f["assets"], false);
    assert_eq!(f["supports_preview_metadata"], true);
    assert_eq!(f["max_upload_size"], 100 * 1024 * 1024);

    let s = get_json(&c, app.at("/api/system_stats")).await;
    for key in [
        "os",
        "python_version",
        "embedded_python",
        "comfyui_version",
        "pytorch_version",
        "argv",
        "ram_total",
        "ram_free",
    ] {
        assert!(s["system"].get(key).is_some(), "system.{key} missing");
    }
    assert_eq!(s["system"]["required_frontend_version"], "1.48.7");
    assert_eq!(
        s["system"]["comfy_package_versions"][0]["installed"],
        "1.48.7"
    );
    let devices = s["devices"].as_array().unwrap();
    assert!(!devices.is_empty(), "the simulator's device is reported");
    assert_eq!(devices[0]["backend"], "sim");

    assert_eq!(
        get_json(&c, app.at("/api/extensions")).await,
        json!([
            "/extensions/core/groupNode.js",
            "/extensions/comfyume-room/room.js"
        ])
    );
    assert_eq!(
        get_json(&c, app.at("/api/prompt")).await,
        json!({"exec_info": {"queue_remaining": 0}})
    );
    for (path, expected) in [
        ("/api/embeddings", json!([])),
        ("/api/i18n", json!({})),
        ("/api/global_subgraphs", json!({})),
        ("/api/global_subgraphs/abc", Value::Null),
        ("/api/node_replacements", json!({})),
        ("/api/workflow_templates", json!({})),
        ("/embeddings", json!([])),
    ] {
        assert_eq!(get_json(&c, app.at(path)).await, expected, "{path}");
    }
    // The model lists are the backend's (here the simulator's).
    let folders = get_json(&c, app.at("/api/models")).await;
    assert_eq!(folders[0], "checkpoints");
    assert_eq!(
        get_json(&c, app.at("/api/models/checkpoints")).await,
        json!([
            "sim-dreamshaper-8.safetensors",
            "sim-sd-v1-5.safetensors",
            "sim-sdxl-base-1.0.safetensors"
        ])
    );
    assert_eq!(
        get_json(&c, app.at("/api/experiment/models/loras")).await,
        json!([])
    );
    for missing in ["/api/models/nowhere", "/api/experiment/models/nowhere"] {
        assert_eq!(
            c.get(app.at(missing)).send().await.unwrap().status(),
            404,
            "{missing}"
        );
    }
    // Jobs live only under /api, and /api/api duplicates are ComfyUI's quirk,
    // not a route of ours: unknown paths are 404.
    assert_eq!(
        c.get(app.at("/api/no-such-route"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// The official gallery after the workshop's templates, its files (in
/// subfolders too) with ComfyUI's cache header for pictures, and the node
/// documentation, for logged-in users only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_gallery_and_the_node_docs() {
    let extra = tempfile::tempdir().unwrap();
    let gallery = extra.path().join("gallery");
    let docs = extra.path().join("docs");
    std::fs::create_dir_all(gallery.join("logo")).unwrap();
    std::fs::create_dir_all(docs.join("KSampler")).unwrap();
    std::fs::write(
        gallery.join("index.json"),
        json!([{"moduleName": "default", "title": "Image", "type": "image",
                "templates": [{"name": "t2i", "mediaType": "image", "mediaSubtype": "webp"}]}])
        .to_string(),
    )
    .unwrap();
    std::fs::write(gallery.join("t2i-1.webp"), b"RIFF....WEBP").unwrap();
    std::fs::write(gallery.join("logo/a.png"), b"\x89PNG").unwrap();
    std::fs::write(docs.join("KSampler/en.md"), "# KSampler\n").unwrap();
    let app = TestApp::spawn_with(|c| {
        c.official_templates_dir = Some(gallery.clone());
        c.node_docs_dir = Some(docs.clone());
    })
    .await;
    let c = app.user("alice").await;
    let index = get_json(&c, app.at("/templates/index.json")).await;
    let titles: Vec<&str> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Getting Started", "Image"], "the workshop's first");
    for (path, content_type) in [
        ("/templates/t2i-1.webp", "image/webp"),
        ("/templates/logo/a.png", "image/png"),
    ] {
        let r = c.get(app.at(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type);
        assert_eq!(r.headers()["cache-control"], "public, max-age=86400");
    }
    let doc = c.get(app.at("/docs/KSampler/en.md")).send().await.unwrap();
    assert_eq!(doc.status(), 200);
    assert_eq!(doc.text().await.unwrap(), "# KSampler\n");
    for missing in [
        "/docs/KSampler/xx.md",
        "/docs/../gallery/index.json",
        "/templates/logo%2F..%2F..%2Fdocs%2FKSampler%2Fen.md",
        "/docs/..%2F..%2Fgallery%2Findex.json",
    ] {
        assert_eq!(
            c.get(app.at(missing)).send().await.unwrap().status(),
            404,
            "{missing}"
        );
    }
    let anonymous = reqwest::get(app.at("/docs/KSampler/en.md")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workshop_templates_in_the_frontend_format() {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;
    let r = c.get(app.at("/templates/index.json")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("application/json")
    );
    let index: Value = r.json().await.unwrap();
    assert_eq!(index[0]["moduleName"], "default");
    let t = &index[0]["templates"][0];
    assert_eq!(t["name"], "invert");
    assert_eq!(t["mediaType"], "image");
    let wf = get_json(&c, app.at("/templates/invert.json")).await;
    assert!(
        wf["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "ImageInvert")
    );
    let thumb = c
        .get(app.at(&format!(
            "/templates/invert-1.{}",
            t["mediaSubtype"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.status(), 200);
    assert_eq!(
        c.get(app.at("/templates/nope.json"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(app.at("/templates/..%2F..%2Fetc%2Fpasswd"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comfy_user_header_is_ignored() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    alice
        .post(app.at("/api/settings/k"))
        .json(&"alice's")
        .send()
        .await
        .unwrap();
    let seen: Value = bob
        .get(app.at("/api/settings/k"))
        .header("comfy-user", "alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen, Value::Null);
}

async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = crate::support::within("a frame from the gateway", ws.next()).await;
        match frame.expect("socket open").expect("frame") {
            Message::Text(t) => {
                let frame: Value = serde_json::from_str(&t).unwrap();
                // The gateway's own news of the room is not ComfyUI's.
                if frame["type"] != "comfyume.room" {
                    return frame;
                }
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_greets_like_comfyui() {
    let app = TestApp::spawn().await;
    let cookie = session_cookie_of(&app, "alice").await;

    let mut ws = ws_connect(&app, "/ws", Some(&cookie)).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "status");
    assert_eq!(
        hello["data"]["status"],
        json!({"exec_info": {"queue_remaining": 0}})
    );
    let sid = hello["data"]["sid"].as_str().unwrap();
    assert_eq!(sid.len(), 32);
    assert!(sid.chars().all(|c| c.is_ascii_hexdigit()));

    let flags = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}});
    ws.send(Message::Text(flags.to_string().into()))
        .await
        .unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "feature_flags");
    assert_eq!(reply["data"]["supports_preview_metadata"], true);

    let mut ws = ws_connect(&app, "/api/ws?clientId=my-client-1", Some(&cookie))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["data"]["sid"], "my-client-1");
    let mut ws = ws_connect(&app, "/ws?clientId=%3Cscript%3E", Some(&cookie))
        .await
        .unwrap();
    assert_ne!(
        next_json(&mut ws).await["data"]["sid"],
        "<script>",
        "odd client ids are replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_socket_upgrades_are_refused() {
    let app = TestApp::spawn().await;
    let cookie = session_cookie_of(&app, "alice").await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = app.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
}

/// One participant cannot hold thousands of sockets: past the limit the
/// upgrade is refused with a reason, a closed socket frees its place, and
/// other participants are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_per_participant_are_bounded() {
    let app = TestApp::spawn_with(|c| c.limits.max_sockets_per_user = 3).await;
    let alice = session_cookie_of(&app, "alice").await;
    let bob = session_cookie_of(&app, "bob").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut ws = ws_connect(&app, "/ws", Some(&alice)).await.unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "status");
        open.push(ws);
    }
    assert_eq!(
        ws_connect(&app, "/ws", Some(&alice)).await.err(),
        Some(429),
        "one more is refused"
    );
    let mut other = ws_connect(&app, "/ws", Some(&bob)).await.unwrap();
    assert_eq!(
        next_json(&mut other).await["type"],
        "status",
        "bob is unaffected"
    );

    let mut closed = open.pop().unwrap();
    closed.close(None).await.unwrap();
    // The place frees once the server has seen the close: wait for it.
    crate::support::within("the closed socket's place to free", async {
        loop {
            match ws_connect(&app, "/ws", Some(&alice)).await {
                Ok(ws) => return ws,
                Err(429) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                Err(other) => panic!("unexpected refusal {other}"),
            }
        }
    })
    .await;
}

/// A browser sends a few hundred bytes over its socket; a message of
/// megabytes is refused by closing that socket, and the server (and the
/// participant's next socket) go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_socket_message_closes_only_that_socket() {
    let app = TestApp::spawn().await;
    let alice = session_cookie_of(&app, "alice").await;
    let mut ws = ws_connect(&app, "/ws", Some(&alice)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "status");
    let huge = "x".repeat(2 * 1024 * 1024);
    // The send itself may already fail once the server hangs up.
    let _ = ws.send(Message::Text(huge.into())).await;
    crate::support::within("the server to close the socket", async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let mut again = ws_connect(&app, "/ws", Some(&alice)).await.unwrap();
    assert_eq!(next_json(&mut again).await["type"], "status");
}
