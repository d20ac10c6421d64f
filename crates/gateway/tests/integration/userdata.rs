//! `/userdata`, `/v2/userdata`: ComfyUI's exact semantics, including its
//! `%2F` handling, 404/409/204 answers and the listing variants (compared
//! with the captured trace in fixtures/comfyui-0.33.0).

use serde_json::{Value, json};

use crate::support::TestApp;

async fn setup() -> (TestApp, reqwest::Client) {
    let app = TestApp::spawn().await;
    let c = app.user("alice").await;
    (app, c)
}

fn sorted(v: Value) -> Vec<Value> {
    let mut items = v.as_array().unwrap().clone();
    items.sort_by_key(|x| x.to_string());
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_list_read_move_delete_like_comfyui() {
    let (app, c) = setup().await;
    let api = |p: &str| app.at(&format!("/api{p}"));

    let r = c.get(api("/userdata?dir=workflows")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "Directory not found");
    let r = c.get(api("/userdata")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Directory not provided");

    let r = c
        .post(api(
            "/userdata/workflows%2Fsub%2Fa.json?overwrite=false&full_info=true",
        ))
        .body("{\"x\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["path"], "workflows/sub/a.json");
    assert_eq!(info["size"], 7);
    assert!(info["modified"].is_i64() && info["created"].is_i64());

    let r = c
        .post(api("/userdata/workflows%2Fb.json"))
        .body("{\"x\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!("workflows/b.json"));

    let r = c
        .post(api("/userdata/workflows%2Fb.json?overwrite=false"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // The frontend sometimes sends the literal "undefined": that overwrites.
    let r = c
        .post(api(
            "/userdata/workflows%2Fb.json?overwrite=undefined&full_info=undefined",
        ))
        .body("{\"x\":2}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!("workflows/b.json"));

    let plain: Value = c
        .get(api("/userdata?dir=workflows"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plain, json!(["b.json"]));
    let rec: Value = c
        .get(api("/userdata?dir=workflows&recurse=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sorted(rec), [json!("b.json"), json!("sub/a.json")]);
    let split: Value = c
        .get(api("/userdata?dir=workflows&recurse=true&split=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sorted(split),
        [
            json!(["b.json", "b.json"]),
            json!(["sub/a.json", "sub", "a.json"])
        ]
    );
    let full: Value = c
        .get(api(
            "/userdata?dir=workflows&recurse=true&split=true&full_info=true",
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut paths: Vec<_> = full
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(paths, ["b.json", "sub/a.json"]);
    assert!(
        full[0]["size"].is_u64() && full[0]["modified"].is_i64() && full[0]["created"].is_i64()
    );

    let r = c
        .get(api("/userdata/workflows%2Fb.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.text().await.unwrap(), "{\"x\":2}");
    // A literal slash is a different route: ComfyUI answers 404.
    assert_eq!(
        c.get(api("/userdata/workflows/b.json"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(api("/userdata/workflows%2Fnope.json"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Double-encoded separators are unquoted once more, as ComfyUI does.
    assert_eq!(
        c.get(api("/userdata/workflows%252Fb.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let r = c
        .post(api(
            "/userdata/workflows%2Fb.json/move/workflows%2Fc.json?full_info=true",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let moved: Value = r.json().await.unwrap();
    assert_eq!(moved["path"], "workflows/c.json");
    assert_eq!(moved["size"], 7);
    let r = c
        .post(api("/userdata/workflows%2Fb.json/move/workflows%2Fd.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the source is gone");
    let r = c
        .post(api(
            "/userdata/workflows%2Fc.json/move/workflows%2Fsub%2Fa.json?overwrite=false",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = c
        .post(api(
            "/userdata/workflows%2Fc.json/move/workflows%2Fe.json?overwrite=false",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!("workflows/e.json"));

    let r = c
        .delete(api("/userdata/workflows%2Fe.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    assert_eq!(
        c.delete(api("/userdata/workflows%2Fe.json"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Plain paths behave the same as /api ones.
    let plain: Value = c
        .get(app.at("/userdata?dir=workflows&recurse=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plain, json!(["sub/a.json"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_listing_walks_the_tree() {
    let (app, c) = setup().await;
    c.post(app.at("/api/userdata/workflows%2Fsub%2Fa.json"))
        .body("{\"x\":1}")
        .send()
        .await
        .unwrap();
    let v: Value = c
        .get(app.at("/api/v2/userdata?path=workflows"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v[0],
        json!({"name": "sub", "path": "workflows/sub", "type": "directory"})
    );
    assert_eq!(v[1]["name"], "a.json");
    assert_eq!(v[1]["path"], "workflows/sub/a.json");
    assert_eq!(v[1]["type"], "file");
    assert_eq!(v[1]["size"], 7);
    assert!(v[1]["modified"].is_f64());
    assert_eq!(
        c.get(app.at("/api/v2/userdata?path=nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_escaping_the_user_root_are_forbidden() {
    let (app, c) = setup().await;
    for file in [
        "..%2Fx.json",
        "workflows%2F..%2F..%2Fx.json",
        "%2E%2E%2Fx.json",
        "..%252Fx.json",
    ] {
        let r = c
            .post(app.at(&format!("/api/userdata/{file}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "POST {file}");
        let r = c
            .get(app.at(&format!("/api/userdata/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "GET {file}");
        let r = c
            .delete(app.at(&format!("/api/userdata/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "DELETE {file}");
    }
    let r = c
        .get(app.at("/api/userdata?dir=..%2F.."))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(!app.data_dir.join("users/x.json").exists());
    assert!(!app.data_dir.join("x.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_round_trip() {
    let (app, c) = setup().await;
    let api = |p: &str| app.at(&format!("/api{p}"));
    assert_eq!(
        c.get(api("/settings"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        json!({})
    );
    assert_eq!(
        c.post(api("/settings"))
            .json(&json!({"a": 1, "Comfy.Locale": "en"}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    c.post(api("/settings"))
        .json(&json!({"b": {"c": [1, 2]}}))
        .send()
        .await
        .unwrap();
    let r = c
        .post(api("/settings/Comfy.Locale"))
        .json(&json!("fr"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(api("/settings"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        json!({"a": 1, "Comfy.Locale": "fr", "b": {"c": [1, 2]}})
    );
    assert_eq!(
        c.get(api("/settings/Comfy.Locale"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        json!("fr")
    );
    assert_eq!(
        c.get(api("/settings/Missing.Key"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        Value::Null
    );
    // Stored in ComfyUI's own file, in the user's folder.
    let stored = app
        .user_file("alice", "userdata/comfy.settings.json")
        .await
        .unwrap();
    assert!(String::from_utf8(stored).unwrap().contains("\"fr\""));
    // Bad JSON is a clear 400, never a crash.
    let r = c
        .post(api("/settings"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(api("/settings"))
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Every body is bounded per route, with a 413: settings and other small
/// JSON small, workflows and prompts larger, uploads by their own limit.
/// Refused bodies change nothing, and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_bounded_per_route() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_settings_bytes = 4 * 1024;
        c.limits.max_userdata_bytes = 64 * 1024;
        c.limits.max_prompt_bytes = 64 * 1024;
        c.limits.max_body_bytes = 2 * 1024;
    })
    .await;
    let c = app.user("alice").await;
    let post = |path: &str, body: Vec<u8>| c.post(app.at(path)).body(body).send();
    assert_eq!(
        post("/api/settings/Comfy.Theme", br#""dark""#.to_vec())
            .await
            .unwrap()
            .status(),
        200
    );

    // A participant trying to fill the server's memory: four at once.
    let huge = format!(r#"{{"k": "{}"}}"#, "x".repeat(512 * 1024)).into_bytes();
    let floods = (0..4).map(|_| post("/api/settings", huge.clone()));
    for r in futures_util::future::join_all(floods).await {
        match r {
            Ok(r) => assert_eq!(r.status(), 413),
            // The 413 goes out before the body is read, and the server
            // may close while the client still writes the rest: refused
            // all the same (a loaded machine makes that likelier).
            Err(e) => assert!(connection_cut(&e), "{e:?}"),
        }
    }
    // Each request is small, but the stored file may not grow past it.
    let mut grown = 413;
    for i in 0..8 {
        let value = format!(r#""{}""#, "y".repeat(1000));
        let status = post(&format!("/api/settings/k{i}"), value.into_bytes())
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 200 {
            grown = status;
            break;
        }
    }
    assert_eq!(grown, 413, "the settings file is bounded");
    let settings: Value = c
        .get(app.at("/api/settings"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["Comfy.Theme"], "dark", "nothing lost");

    let workflow = format!(r#"{{"nodes": "{}"}}"#, "w".repeat(32 * 1024)).into_bytes();
    let r = post("/api/userdata/workflows%2Fbig.json", workflow)
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a workflow may be larger than a setting");
    let too_big = vec![b'x'; 128 * 1024];
    let r = post("/api/userdata/workflows%2Fhuge.json", too_big.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = post("/api/prompt", too_big.clone()).await.unwrap();
    assert_eq!(r.status(), 413);
    let r = post("/api/queue", vec![b' '; 4 * 1024]).await.unwrap();
    assert_eq!(r.status(), 413, "any other body is small");
    let r = c.get(app.at("/api/settings")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the server still answers");
}

/// Whether a request failed because the server closed the connection
/// while the client was still sending (a broken pipe or a reset).
fn connection_cut(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
        }
        source = err.source();
    }
    false
}
