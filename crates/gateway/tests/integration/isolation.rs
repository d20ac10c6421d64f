//! The isolation matrix: user B, logged in, tries every read, list, write,
//! move, delete and view route on user A's files, by guessing names,
//! subfolders, `..`, encoded separators and absolute paths. Every attempt
//! is refused or lands in B's own workspace, and A's files are unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::files::{image_form, upload};
use crate::support::TestApp;

const SECRET: &str = "alice-secret-content";

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_reach_nothing_of_alices() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;

    // Alice's workspace: a workflow, settings, uploads (also in a subfolder),
    // and results in output/ and temp/.
    alice
        .post(app.at("/api/userdata/workflows%2Fsecret.json"))
        .body(SECRET)
        .send()
        .await
        .unwrap();
    alice
        .post(app.at("/api/settings"))
        .json(&serde_json::json!({"secret": SECRET}))
        .send()
        .await
        .unwrap();
    upload(&app, &alice, image_form("secret.png", SECRET.as_bytes())).await;
    upload(
        &app,
        &alice,
        image_form("secret.png", SECRET.as_bytes()).text("subfolder", "private"),
    )
    .await;
    let a = app.user_dir("alice");
    for kind in ["output", "temp"] {
        std::fs::create_dir_all(a.join(kind)).unwrap();
        std::fs::write(a.join(kind).join("result.png"), SECRET).unwrap();
    }
    let before = snapshot(&a);

    // Ways to name alice's files from bob's workspace.
    let up = [
        "..%2Falice",
        "..%2F..%2Falice",
        "%2E%2E%2Falice",
        "..%252Falice",
        "..%5Calice",
    ];
    let mut attempts: Vec<(&str, String)> = Vec::new();
    for prefix in up {
        for rest in [
            "%2Fuserdata%2Fworkflows%2Fsecret.json",
            "%2Fuserdata%2Fcomfy.settings.json",
        ] {
            let f = format!("{prefix}{rest}");
            attempts.push(("GET", format!("/api/userdata/{f}")));
            attempts.push(("POST", format!("/api/userdata/{f}")));
            attempts.push(("DELETE", format!("/api/userdata/{f}")));
            attempts.push(("POST", format!("/api/userdata/{f}/move/stolen.json")));
            attempts.push(("POST", format!("/api/userdata/stolen.json/move/{f}")));
        }
        attempts.push((
            "GET",
            format!("/api/userdata?dir={prefix}%2Fuserdata%2Fworkflows&recurse=true"),
        ));
        attempts.push(("GET", format!("/api/v2/userdata?path={prefix}")));
        attempts.push((
            "GET",
            format!("/api/view?filename=secret.png&type=input&subfolder={prefix}%2Finput"),
        ));
        attempts.push((
            "GET",
            format!("/api/view?filename=result.png&type=output&subfolder={prefix}%2Foutput"),
        ));
    }
    let abs = a.display().to_string().replace('/', "%2F");
    attempts.extend([
        (
            "GET",
            format!("/api/userdata/{abs}%2Fuserdata%2Fworkflows%2Fsecret.json"),
        ),
        ("GET", format!("/api/userdata?dir={abs}")),
        (
            "GET",
            format!("/api/view?filename={abs}%2Finput%2Fsecret.png&type=input"),
        ),
        (
            "GET",
            format!("/api/view?filename=secret.png&type=input&subfolder={abs}%2Finput"),
        ),
        (
            "GET",
            "/api/view?filename=..%2F..%2Falice%2Finput%2Fsecret.png&type=input".into(),
        ),
        // Same names in bob's own workspace: simply not there.
        ("GET", "/api/userdata/workflows%2Fsecret.json".into()),
        ("GET", "/api/view?filename=secret.png&type=input".into()),
        ("GET", "/api/view?filename=secret.png%20%5Binput%5D".into()),
        (
            "GET",
            "/api/view?filename=secret.png&type=input&subfolder=private".into(),
        ),
        ("GET", "/api/view?filename=result.png&type=output".into()),
        ("GET", "/api/view?filename=result.png&type=temp".into()),
        ("DELETE", "/api/userdata/workflows%2Fsecret.json".into()),
        (
            "POST",
            "/api/userdata/workflows%2Fsecret.json/move/workflows%2Fmine.json".into(),
        ),
        ("GET", "/userdata?dir=workflows".into()),
    ]);

    for (method, path) in &attempts {
        let r = bob
            .request(method.parse().unwrap(), app.at(path))
            .body("bob was here")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            !body.contains(SECRET),
            "{method} {path} leaked alice's data: {status} {body}"
        );
        if *method == "GET" || *method == "DELETE" || path.contains("/move/") {
            assert!(
                matches!(status, 400 | 403 | 404),
                "{method} {path} answered {status}"
            );
        } else {
            // A write either is refused or lands in bob's own workspace.
            assert!(
                matches!(status, 200 | 400 | 403),
                "{method} {path} answered {status}"
            );
        }
    }

    // Uploads aimed at alice's folders.
    for (name, sub) in [
        ("../../alice/input/secret.png", ""),
        ("secret.png", "../../alice/input"),
        ("secret.png", "../alice/input"),
    ] {
        let r = upload(
            &app,
            &bob,
            image_form(name, b"bob was here").text("subfolder", sub.to_string()),
        )
        .await;
        assert!(
            matches!(r.status().as_u16(), 200 | 400 | 403),
            "upload {name} into {sub:?}"
        );
    }

    // Listings show bob only his own.
    for kind in ["input", "output", "temp"] {
        let v: Value = bob
            .get(app.at(&format!("/internal/files/{kind}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            !v.to_string().contains("secret") && !v.to_string().contains("result"),
            "{kind}: {v}"
        );
    }
    let settings: Value = bob
        .get(app.at("/api/settings"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!settings.to_string().contains(SECRET));
    let info: Value = bob
        .get(app.at("/api/object_info/LoadImage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !info.to_string().contains("secret.png"),
        "LoadImage choices leak: {info}"
    );

    assert_eq!(snapshot(&a), before, "alice's files changed");
    // Alice still reads her own.
    let r = alice
        .get(app.at("/api/userdata/workflows%2Fsecret.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), SECRET);
}
