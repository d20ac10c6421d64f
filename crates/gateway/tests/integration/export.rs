//! The take-home export: a participant downloads a zip of exactly their
//! workflows and outputs; the instructor's `comfyume export` writes one
//! per account.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::json;

use crate::execution::{cpu_prompt, frames_until_done, participant, submit_ok};
use crate::support::{TestApp, within};

/// A participant's workflows and outputs, named as in the zip.
async fn expected(app: &TestApp, name: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (rel, zipped) in [("userdata/workflows", "workflows"), ("output", "outputs")] {
        for (path, bytes) in app.user_files(name, rel).await {
            out.insert(format!("{zipped}/{path}"), bytes);
        }
    }
    out
}

fn unzip(bytes: Vec<u8>) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).unwrap();
            let mut body = Vec::new();
            f.read_to_end(&mut body).unwrap();
            (f.name().unwrap().to_string(), body)
        })
        .collect()
}

async fn some_work(app: &TestApp, name: &str) {
    let mut p = participant(app, name).await;
    for i in 0..2 {
        let id = submit_ok(app, &p, cpu_prompt(&format!("{name}-{i}"))).await;
        within("the job's end", frames_until_done(&mut p.ws, &id)).await;
    }
    for wf in ["first.json", "sub%2Fsecond.json"] {
        let r = p
            .http
            .post(app.at(&format!("/api/userdata/workflows%2F{wf}?overwrite=true")))
            .body(json!({"nodes": [], "owner": name, "wf": wf}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_downloads_exactly_their_workflows_and_outputs() {
    let app = TestApp::spawn().await;
    some_work(&app, "alice").await;
    some_work(&app, "bob").await;
    let alice = app.client();
    assert_eq!(
        app.try_login(&alice, "alice", "alice-secret-pw")
            .await
            .status(),
        303
    );

    let r = alice
        .get(app.at("/api/comfyume/export.zip"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("comfyume-alice.zip")
    );
    let got = unzip(r.bytes().await.unwrap().to_vec());
    let want = expected(&app, "alice").await;
    assert_eq!(want.len(), 4, "{:?}", want.keys());
    assert_eq!(got, want);
    assert!(got.keys().all(|k| !k.contains("bob")));

    let r = app
        .client()
        .get(app.at("/comfyume/export.zip"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instructor_exports_every_participants_zip() {
    let app = TestApp::spawn().await;
    some_work(&app, "alice").await;
    some_work(&app, "bob").await;
    app.add_user("carol", "carol-secret-pw").await;
    let out = tempfile::tempdir().unwrap();
    let data_dir = app.data_dir.clone();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["export", "--out"])
        .arg(out.path())
        .env_remove("COMFYUME_CONFIG")
        .envs(app.files_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("alice.zip: 2 workflows, 2 outputs"),
        "{stdout}"
    );
    for name in ["alice", "bob"] {
        let got = unzip(std::fs::read(out.path().join(format!("{name}.zip"))).unwrap());
        assert_eq!(got, expected(&app, name).await, "{name}");
    }
    // An account with nothing yet gets an archive that opens, empty.
    assert!(unzip(std::fs::read(out.path().join("carol.zip")).unwrap()).is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
