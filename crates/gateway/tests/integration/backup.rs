//! Backups against a real S3-compatible server (moto) and a folder: a
//! room's work backed up, wiped and restored byte for byte; damage in the
//! store found; stores that fail, and a full disk, failing loudly;
//! incremental uploads; retention; a backup taken while jobs run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use comfyume::backup::{
    self, BackupError, BackupId, Destination, Options, Retention, Source, Target,
};
use comfyume::config::BackupConfig;
use serde_json::json;

use crate::execution::{cpu_prompt, frames_until_done, participant, submit_ok, txt2img_prompt};
use crate::files::{image_form, upload};
use crate::support::s3::{Broken, Moto, broken_store, s3_config};
use crate::support::{TestApp, within};

fn source_of(app: &TestApp) -> Source {
    Source {
        data_dir: app.data_dir.clone(),
        database_file: app.data_dir.join("comfyume.db"),
        store: app.state.store.clone(),
        disk: app.state.disk.clone(),
    }
}

fn options(keep_last: u32) -> Options {
    Options {
        verify_percent: 100,
        retention: Retention {
            keep_last,
            keep_daily: 0,
            keep_weekly: 0,
        },
        collect_after: std::time::Duration::ZERO,
    }
}

fn folder_target(dir: &Path) -> Target {
    let url = format!("file://{}", dir.display());
    Target::open(&url, &BackupConfig::default()).unwrap()
}

/// What a room produces: two participants' outputs from real jobs, an
/// upload, a saved workflow, and a shared wall item.
async fn a_room_at_work(app: &TestApp) {
    for name in ["alice", "bob"] {
        let mut p = participant(app, name).await;
        let id = submit_ok(app, &p, cpu_prompt(&format!("{name}-out"))).await;
        within("the job's end", frames_until_done(&mut p.ws, &id)).await;
        let r = upload(
            app,
            &p.http,
            image_form(&format!("{name}.png"), name.as_bytes()),
        )
        .await;
        assert_eq!(r.status(), 200);
        let r = p
            .http
            .post(app.at("/api/userdata/workflows%2Fmine.json?overwrite=true"))
            .body(json!({"nodes": [], "by": name}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// Every file a backup holds (participants' files but previews, the
/// wall), by path.
fn files_of(data_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("{rel}/{name}");
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &rel, out);
            } else {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&data_dir.join("users"), "users", &mut out);
    walk(&data_dir.join("wall"), "wall", &mut out);
    out.retain(|path, _| !path.contains("/temp/") && !path.contains("/.staging/"));
    out
}

/// Every row of every table, each value as SQLite quotes it.
async fn rows_of(db: &Path) -> BTreeMap<String, Vec<String>> {
    use sqlx::Row;
    let url = format!("sqlite://{}?mode=ro", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for table in tables {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(&table)
                .fetch_all(&pool)
                .await
                .unwrap();
        let select = columns
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        // Names from the database's own catalogue, quoted.
        let rows: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {select} FROM \"{table}\" ORDER BY rowid"
        )))
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
        out.insert(table, rows);
    }
    pool.close().await;
    out
}

/// GETs `url` with `client`'s session: the body as text.
async fn get_text(client: &reqwest::Client, url: String) -> String {
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.text().await.unwrap()
}

/// GETs `url` with `client`'s session: the body as JSON.
async fn get_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    serde_json::from_str(&get_text(client, url).await).unwrap()
}

/// A logged-in instructor.
async fn instructor(app: &TestApp) -> reqwest::Client {
    app.add_user_with_role("teacher", "teacher-secret-pw", comfyume_domain::Role::Admin)
        .await;
    let c = app.client();
    let r = app.try_login(&c, "teacher", "teacher-secret-pw").await;
    assert_eq!(r.status(), 303);
    c
}

fn destination(dir: &Path) -> Destination {
    Destination {
        data_dir: dir.to_path_buf(),
        database_file: dir.join("comfyume.db"),
    }
}

/// Backs up a working room to `target`, restores it into an empty folder,
/// and compares every file and every database row.
async fn round_trip(target: &Target) {
    let app = TestApp::spawn().await;
    a_room_at_work(&app).await;
    let report = backup::take::take(&source_of(&app), target, &options(5))
        .await
        .unwrap();
    assert!(report.files >= 6, "{report:?}");
    // Its scratch folder is gone.
    let staging = app.data_dir.join(".backup-staging");
    assert!(std::fs::read_dir(&staging).unwrap().next().is_none());
    assert_eq!(report.verified_by_size, 0);
    assert!(report.verified_in_full >= 3);
    let before_files = files_of(&app.data_dir);
    assert!(before_files.keys().any(|p| p.contains("/output/alice-out")));
    assert!(before_files.contains_key("users/bob/userdata/workflows/mine.json"));
    let data_dir = app.data_dir.clone();
    let _keep = tempfile::tempdir().unwrap();
    // The room is quiet: the database is what the snapshot saw.
    let before_rows = rows_of(&data_dir.join("comfyume.db")).await;
    app.shutdown().await;

    let fresh = tempfile::tempdir().unwrap();
    let into = fresh.path().join("data");
    let restored = backup::restore::restore(target, None, &destination(&into), false)
        .await
        .unwrap();
    assert_eq!(restored.id, report.id);
    assert_eq!(files_of(&into), before_files);
    let after_rows = rows_of(&into.join("comfyume.db")).await;
    assert_eq!(
        after_rows.keys().collect::<Vec<_>>(),
        before_rows.keys().collect::<Vec<_>>()
    );
    for (table, rows) in &before_rows {
        assert_eq!(&after_rows[table], rows, "table {table}");
    }
    assert!(before_rows["jobs"].len() >= 2);
    assert!(before_rows["users"].len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_backed_up_to_a_folder_restores_byte_for_byte() {
    let store = tempfile::tempdir().unwrap();
    round_trip(&folder_target(store.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_backed_up_to_s3_restores_byte_for_byte() {
    let Some(moto) = Moto::start("a_room_backed_up_to_s3_restores_byte_for_byte") else {
        return;
    };
    moto.bucket("room").await;
    let target = Target::open("s3://room/workshops/2026-12", &s3_config(&moto.endpoint)).unwrap();
    round_trip(&target).await;
    // The objects are under the prefix, in the bucket.
    let listing = reqwest::get(format!(
        "{}/room?list-type=2&prefix=workshops/2026-12/manifests/",
        moto.endpoint
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        listing.contains("<Key>workshops/2026-12/manifests/"),
        "{listing}"
    );
}

/// A moto server with a fresh bucket, and a target in it under a prefix;
/// `None` (the test skipped, and says so) without moto.
async fn moto_target(test: &str) -> Option<(Moto, Target)> {
    let moto = Moto::start(test)?;
    moto.bucket("room").await;
    let target = Target::open("s3://room/backups", &s3_config(&moto.endpoint)).unwrap();
    Some((moto, target))
}

/// Damages the store behind `target` (one object rewritten, one deleted)
/// and checks that `verify` and `restore` name both.
async fn damage_is_found(target: &Target, rewrite: impl AsyncFn(&str, &[u8])) {
    let app = TestApp::spawn().await;
    a_room_at_work(&app).await;
    let report = backup::take::take(&source_of(&app), target, &options(5))
        .await
        .unwrap();
    app.shutdown().await;
    let manifest = backup::read_manifest(target, &report.id).await.unwrap();
    let mut files = manifest
        .files
        .iter()
        .filter(|f| f.path.contains("/output/"));
    let corrupted = files.next().unwrap().clone();
    let deleted = manifest
        .files
        .iter()
        .find(|f| f.sha256 != corrupted.sha256 && f.path.contains("/input/"))
        .unwrap()
        .clone();
    let mut bytes = vec![0u8; corrupted.size as usize];
    bytes[0] = 1;
    rewrite(&corrupted.sha256.object_key(), &bytes).await;
    target.delete(&deleted.sha256.object_key()).await.unwrap();

    let err = backup::restore::verify(target, None, 100)
        .await
        .unwrap_err();
    let BackupError::Damaged { problems, .. } = &err else {
        panic!("verify: {err}");
    };
    let text = problems.join("\n");
    assert!(
        text.contains(&format!("{} is missing", deleted.sha256.object_key())),
        "{text}"
    );
    assert!(
        text.contains(&corrupted.sha256.object_key()) && text.contains("not its name"),
        "{text}"
    );

    let fresh = tempfile::tempdir().unwrap();
    let err = backup::restore::restore(target, None, &destination(fresh.path()), false)
        .await
        .unwrap_err();
    let BackupError::Damaged { problems, .. } = &err else {
        panic!("restore: {err}");
    };
    let text = problems.join("\n");
    assert!(
        text.contains(&deleted.path) && text.contains("missing"),
        "{text}"
    );
    assert!(text.contains(&corrupted.path), "{text}");
    // Nothing damaged was put in place, and no database: no server would
    // start on a half-restored room by mistake.
    assert!(!fresh.path().join(&corrupted.path).exists());
    assert!(!fresh.path().join(&deleted.path).exists());
    assert!(!fresh.path().join("comfyume.db").exists());
    // And no half-downloaded file anywhere.
    fn partials(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(partials(&p));
            } else if p.to_string_lossy().ends_with(".restoring") {
                out.push(p);
            }
        }
        out
    }
    assert!(partials(fresh.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_a_folder_store_is_found_by_verify_and_restore() {
    let store = tempfile::tempdir().unwrap();
    let root = store.path().to_path_buf();
    damage_is_found(
        &folder_target(store.path()),
        async |key: &str, bytes: &[u8]| {
            std::fs::write(root.join(key), bytes).unwrap();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_s3_is_found_by_verify_and_restore() {
    let Some(moto) = Moto::start("damage_in_s3_is_found_by_verify_and_restore") else {
        return;
    };
    moto.bucket("damaged").await;
    let config = s3_config(&moto.endpoint);
    let target = Target::open("s3://damaged/p", &config).unwrap();
    let writer = target.clone();
    damage_is_found(&target, async |key: &str, bytes: &[u8]| {
        writer
            .put(key, bytes::Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_or_refuses_is_a_loud_failure_never_a_success() {
    for (how, expect) in [
        (Broken::ServerError, "500"),
        (Broken::BadCredentials, "InvalidAccessKeyId"),
        (Broken::Silent, "timed out"),
    ] {
        let endpoint = broken_store(how).await;
        let mut config = s3_config(&endpoint);
        config.timeout_seconds = 1;
        config.max_retries = 0;
        let app = TestApp::spawn_with(|c| {
            c.backup = config.clone();
            c.backup.to = Some("s3://room/p".into());
        })
        .await;
        let backups = app.state.backups.clone().expect("backups are scheduled");
        let err = within("the failing backup", backups.run_once())
            .await
            .unwrap_err();
        let reason = err.to_string();
        assert!(
            reason.to_lowercase().contains(&expect.to_lowercase()),
            "{how:?}: {reason}"
        );
        let status = backups.status();
        assert!(status.failing(), "{how:?}");
        assert!(status.last_success.is_none(), "{how:?}");
        // One, or more if the schedule's own first try came meanwhile.
        assert!(status.failures >= 1);
        assert_eq!(status.last_failure.as_ref().unwrap().reason, reason);
        // Shown to the instructor and to Prometheus.
        let admin = instructor(&app).await;
        let metrics = get_text(&admin, app.at("/metrics")).await;
        assert!(metrics.contains("comfyume_backup_failing 1"), "{metrics}");
        assert!(!metrics.contains("comfyume_backup_last_success_timestamp_seconds"));
        let room = get_json(&admin, app.at("/admin/api/room")).await;
        assert_eq!(room["backup"]["last_failure"]["reason"], reason.as_str());
        // And remembered across a restart.
        let mut app = app;
        app.restart().await;
        let status = app.state.backups.as_ref().unwrap().status();
        assert_eq!(status.last_failure.unwrap().reason, reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_destination_disk_is_a_loud_failure() {
    let Ok(small) = std::env::var("TEST_SMALL_DISK_DIR") else {
        eprintln!(
            "SKIPPED a_full_destination_disk_is_a_loud_failure: no small filesystem (scripts/test.sh mounts a 4 MiB tmpfs as root and sets TEST_SMALL_DISK_DIR)"
        );
        return;
    };
    let store = PathBuf::from(small).join(format!("store-{}", uuid::Uuid::new_v4()));
    let target = folder_target(&store);
    let app = TestApp::spawn().await;
    a_room_at_work(&app).await;
    // More than the small disk holds.
    let big: Vec<u8> = (0..6 * 1024 * 1024u64)
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    let out = app.user_dir("alice").join("output");
    std::fs::write(out.join("big.bin"), &big).unwrap();
    let err = backup::take::take(&source_of(&app), &target, &options(5))
        .await
        .unwrap_err();
    let reason = err.to_string();
    assert!(reason.contains("No space left on device"), "{reason}");
    // No manifest: nothing claims to be a backup.
    assert!(backup::restore::list(&target).await.unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_guard_stops_a_backup_before_its_snapshot_fills_the_disk() {
    let store = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(|c| c.limits.min_free_disk_bytes = u64::MAX / 2).await;
    let err = backup::take::take(&source_of(&app), &folder_target(store.path()), &options(5))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Disk(_)), "{err}");
    assert!(err.to_string().contains("nearly full"), "{err}");
    let staging = app.data_dir.join(".backup-staging");
    assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_backup_uploads_only_what_changed_in_a_folder() {
    let store = tempfile::tempdir().unwrap();
    incremental(&folder_target(store.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_backup_uploads_only_what_changed_in_s3() {
    let Some((_moto, target)) =
        moto_target("an_incremental_backup_uploads_only_what_changed_in_s3").await
    else {
        return;
    };
    incremental(&target).await;
}

/// Backs up twice to `target`, with three files changed between.
async fn incremental(target: &Target) {
    let app = TestApp::spawn().await;
    a_room_at_work(&app).await;
    let first = backup::take::take(&source_of(&app), target, &options(5))
        .await
        .unwrap();
    let objects = |t: Target| async move {
        t.list("objects")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let before = objects(target.clone()).await;
    // One file changed, one new, straight on disk (the database untouched).
    let input = app.user_dir("alice").join("input");
    std::fs::write(input.join("alice.png"), b"alice, changed").unwrap();
    std::fs::write(input.join("new.png"), b"a new file").unwrap();
    // The same size and modification time as before, but another file
    // renamed into place (as the gateway writes): read again.
    let bobs = app.user_dir("bob").join("input/bob.png");
    let was = std::fs::metadata(&bobs).unwrap();
    let swap = bobs.with_extension("swap");
    std::fs::write(&swap, b"BOB").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&swap)
        .unwrap()
        .set_modified(was.modified().unwrap())
        .unwrap();
    std::fs::rename(&swap, &bobs).unwrap();
    assert_eq!(std::fs::metadata(&bobs).unwrap().len(), was.len());
    // Sampled verification: what this run uploaded is read back in full,
    // of the rest only a share; the others are checked by size.
    let mut sampled = options(5);
    sampled.verify_percent = 1;
    let second = backup::take::take(&source_of(&app), target, &sampled)
        .await
        .unwrap();
    assert_eq!(second.files, first.files + 1);
    assert!(second.verified_in_full >= second.uploaded_objects);
    assert!(
        second.verified_in_full <= second.uploaded_objects + 1,
        "{second:?}"
    );
    assert!(second.verified_by_size > 0, "{second:?}");
    let added: Vec<String> = objects(target.clone())
        .await
        .difference(&before)
        .cloned()
        .collect();
    let manifest = backup::read_manifest(target, &second.id).await.unwrap();
    let database_key = manifest.database.sha256.object_key();
    let files_added: Vec<&String> = added.iter().filter(|k| **k != database_key).collect();
    let hash_of = |b: &[u8]| {
        use sha2::Digest;
        backup::manifest::Sha256::of_digest(&sha2::Sha256::digest(b)).object_key()
    };
    let mut expected = vec![
        hash_of(b"alice, changed"),
        hash_of(b"a new file"),
        hash_of(b"BOB"),
    ];
    expected.sort();
    let mut got: Vec<String> = files_added.into_iter().cloned().collect();
    got.sort();
    assert_eq!(got, expected);
    let database_uploaded = u64::from(added.contains(&database_key));
    assert_eq!(second.uploaded_objects as u64, 3 + database_uploaded);
    let database_bytes = if database_uploaded == 1 {
        manifest.database.size
    } else {
        0
    };
    assert_eq!(
        second.uploaded_bytes,
        (b"alice, changed".len() + b"a new file".len() + b"BOB".len()) as u64 + database_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_exactly_what_it_promises_in_a_folder() {
    let store = tempfile::tempdir().unwrap();
    retention(&folder_target(store.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_exactly_what_it_promises_in_s3() {
    let Some((_moto, target)) = moto_target("retention_keeps_exactly_what_it_promises_in_s3").await
    else {
        return;
    };
    retention(&target).await;
}

/// Real backups to `target` under keep-last-2, then the lock rule, then
/// the daily and weekly tiers (those in a folder of their own).
async fn retention(target: &Target) {
    // Through real backups: keep the last two; the first's own file is
    // collected with it, shared ones stay.
    let app = TestApp::spawn().await;
    let input = app.user_dir("carol").join("input");
    std::fs::create_dir_all(&input).unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        std::fs::write(input.join(format!("only-in-{i}.png")), format!("file {i}")).unwrap();
        if i > 0 {
            std::fs::remove_file(input.join(format!("only-in-{}.png", i - 1))).unwrap();
        }
        std::fs::write(input.join("shared.png"), b"in every backup").unwrap();
        let r = backup::take::take(&source_of(&app), target, &options(2))
            .await
            .unwrap();
        ids.push(r.id);
    }
    let listed: Vec<BackupId> = backup::restore::list(target)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(listed, ids[1..].to_vec());
    let keys: Vec<String> = target
        .list("objects")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let hash_key = |b: &[u8]| {
        use sha2::Digest;
        backup::manifest::Sha256::of_digest(&sha2::Sha256::digest(b)).object_key()
    };
    assert!(!keys.contains(&hash_key(b"file 0")));
    assert!(keys.contains(&hash_key(b"file 1")) && keys.contains(&hash_key(b"file 2")));
    assert!(keys.contains(&hash_key(b"in every backup")));
    // Every object left is one a kept backup needs.
    let mut needed = std::collections::HashSet::new();
    for id in &listed {
        let m = backup::read_manifest(target, id).await.unwrap();
        needed.extend(m.entries().map(|e| e.sha256.object_key()));
    }
    assert!(keys.iter().all(|k| needed.contains(k)), "{keys:?}");

    // A backup running elsewhere (its lock in the store) stops the
    // collection: it may be about to refer to any object. A lock a killed
    // run left a day ago does not.
    let orphan = hash_key(b"nobody needs this");
    target
        .put(&orphan, bytes::Bytes::from_static(b"nobody needs this"))
        .await
        .unwrap();
    target
        .put("locks/running-elsewhere", bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let rules = Retention {
        keep_last: 2,
        keep_daily: 0,
        keep_weekly: 0,
    };
    let now = chrono::Utc::now();
    let (_, collected) =
        backup::retention::apply(target, &rules, std::time::Duration::ZERO, now, None)
            .await
            .unwrap();
    assert_eq!(collected, 0);
    assert!(target.size_of(&orphan).await.unwrap().is_some());
    let (_, collected) = backup::retention::apply(
        target,
        &rules,
        std::time::Duration::ZERO,
        now + chrono::Duration::hours(25),
        None,
    )
    .await
    .unwrap();
    assert_eq!(collected, 1);
    assert!(target.size_of(&orphan).await.unwrap().is_none());
    assert!(target.list("locks").await.unwrap().is_empty());

    // The daily and weekly tiers, on backups dated over three weeks (the
    // rules are property-tested in backup::retention; this is the store).
    let first = backup::read_manifest(target, &listed[0]).await.unwrap();
    let dated = tempfile::tempdir().unwrap();
    let target = folder_target(dated.path());
    let mut written = Vec::new();
    for at in [
        "2026-11-16T10:00:00Z",
        "2026-11-20T10:00:00Z",
        "2026-11-23T09:00:00Z",
        "2026-11-30T09:00:00Z",
        "2026-11-30T18:00:00Z",
        "2026-12-01T09:00:00Z",
        "2026-12-01T12:00:00Z",
    ] {
        let mut m = first.clone();
        m.id = BackupId::new(at.parse().unwrap());
        m.created_at = at.parse().unwrap();
        target
            .put(&m.id.manifest_key(), serde_json::to_vec(&m).unwrap().into())
            .await
            .unwrap();
        written.push(m.id);
    }
    let rules = Retention {
        keep_last: 1,
        keep_daily: 2,
        keep_weekly: 2,
    };
    // The oldest one plays a backup that finished late (it began before
    // the others were taken): its own run does not prune it.
    let (pruned, _) = backup::retention::apply(
        &target,
        &rules,
        std::time::Duration::ZERO,
        chrono::Utc::now(),
        Some(&written[0]),
    )
    .await
    .unwrap();
    let left: Vec<String> = backup::restore::list(&target)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id.as_str()[..15].to_string())
        .collect();
    // Last: 12-01 12:00. Days: 12-01 (12:00), 11-30 (18:00). Weeks: the
    // week of 11-30 (12-01 12:00) and of 11-23 (11-23 09:00).
    assert_eq!(
        left,
        [
            "20261116T100000",
            "20261123T090000",
            "20261130T180000",
            "20261201T120000"
        ]
    );
    assert_eq!(pruned.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_jobs_run_restores_to_a_room_that_finishes_them_in_a_folder() {
    let store = tempfile::tempdir().unwrap();
    backup_while_jobs_run(&folder_target(store.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_jobs_run_restores_to_a_room_that_finishes_them_in_s3() {
    let Some((_moto, target)) =
        moto_target("a_backup_taken_while_jobs_run_restores_to_a_room_that_finishes_them_in_s3")
            .await
    else {
        return;
    };
    backup_while_jobs_run(&target).await;
}

/// A backup to `target` while jobs run, restored and run to the end.
async fn backup_while_jobs_run(target: &Target) {
    let app = TestApp::spawn().await;
    let mut alice = participant(&app, "alice").await;
    let bob = participant(&app, "bob").await;
    let done = submit_ok(&app, &alice, cpu_prompt("done-before")).await;
    within("the first job", frames_until_done(&mut alice.ws, &done)).await;
    // Slow jobs: running and waiting while the backup is taken.
    let mut queued = Vec::new();
    for seed in 0..2 {
        queued.push((
            "alice",
            submit_ok(&app, &alice, txt2img_prompt(seed, 40)).await,
        ));
        queued.push((
            "bob",
            submit_ok(&app, &bob, txt2img_prompt(seed + 10, 40)).await,
        ));
    }
    // Wait until one is running on the simulator.
    loop {
        let f = within(
            "a job to start",
            crate::execution::next_frame(&mut alice.ws),
        )
        .await;
        if f["type"] == "progress" {
            break;
        }
    }
    let report = backup::take::take(&source_of(&app), target, &options(5))
        .await
        .unwrap();
    app.shutdown().await;
    drop(bob);

    let fresh = tempfile::tempdir().unwrap();
    let into = fresh.path().join("data");
    backup::restore::restore(target, Some(&report.id), &destination(&into), false)
        .await
        .unwrap();
    // A sound database, and every output its finished jobs name is there.
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", into.join("comfyume.db").display()))
            .await
            .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    pool.close().await;
    let restored = TestApp::spawn_with(|c| c.data_dir = into.clone()).await;
    let history: serde_json::Value = {
        let c = restored.client();
        restored.try_login(&c, "alice", "alice-secret-pw").await;
        c.get(restored.at("/api/history"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let outputs = &history[&done]["outputs"];
    let file = outputs["5"]["images"][0]["filename"].as_str().unwrap();
    assert!(into.join("users/alice/output").join(file).exists());
    // The room picks up where the backup left it: every job that was
    // waiting or running then ends, successfully. Each owner's socket (the
    // tab the jobs came from) is open before anything is looked up, so a
    // job not yet in history is heard ending on it.
    for owner in ["alice", "bob"] {
        let mut p = crate::execution::log_in(&restored, owner, &format!("{owner}-secret-pw")).await;
        let mut waiting: std::collections::HashSet<String> = queued
            .iter()
            .filter(|(o, _)| *o == owner)
            .map(|(_, id)| id.clone())
            .collect();
        for id in waiting.clone() {
            let h = p.get_json(&restored, &format!("/api/history/{id}")).await;
            if h.get(&id).is_some() {
                assert_eq!(h[&id]["status"]["status_str"], "success", "{h}");
                waiting.remove(&id);
            }
        }
        while !waiting.is_empty() {
            let f = within(
                "a restored job to end",
                crate::execution::next_frame(&mut p.ws),
            )
            .await;
            assert_ne!(f["type"], "execution_error", "{f}");
            if f["type"] == "executing" && f["data"]["node"].is_null() {
                waiting.remove(f["data"]["prompt_id"].as_str().unwrap());
            }
        }
    }
    restored.shutdown().await;
    let jobs: i64 = {
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", into.join("comfyume.db").display()))
                .await
                .unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    };
    assert_eq!(jobs, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_refuses_a_data_directory_that_is_not_empty() {
    let store = tempfile::tempdir().unwrap();
    let target = folder_target(store.path());
    let app = TestApp::spawn().await;
    a_room_at_work(&app).await;
    backup::take::take(&source_of(&app), &target, &options(5))
        .await
        .unwrap();
    let err = backup::restore::restore(&target, None, &destination(&app.data_dir), false)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::NotEmpty(_)), "{err}");
    assert!(err.to_string().contains("--force"));
    let missing = BackupId::new("2020-01-01T00:00:00Z".parse().unwrap());
    let fresh = tempfile::tempdir().unwrap();
    let err = backup::restore::restore(&target, Some(&missing), &destination(fresh.path()), false)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::NoSuchBackup { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_refuses_uploads_and_fails_jobs_with_the_reason() {
    // The guard keeps more free space than any disk has: every new file
    // is refused, as on a full one.
    let app = TestApp::spawn_with(|c| c.limits.min_free_disk_bytes = u64::MAX / 2).await;
    let mut alice = participant(&app, "alice").await;

    let r = upload(&app, &alice.http, image_form("cat.png", b"png")).await;
    assert_eq!(r.status(), 507);
    let text = r.text().await.unwrap();
    assert!(text.contains("disk is nearly full"), "{text}");

    let id = submit_ok(&app, &alice, cpu_prompt("refused")).await;
    let frames = within("the job's end", frames_until_done(&mut alice.ws, &id)).await;
    let error = frames
        .iter()
        .find(|f| f["type"] == "execution_error")
        .unwrap_or_else(|| panic!("no execution_error in {frames:?}"));
    assert_eq!(error["data"]["exception_type"], "OutOfDiskSpace");
    let message = error["data"]["exception_message"].as_str().unwrap();
    assert!(
        message.contains("was not kept") && message.contains("nearly full"),
        "{message}"
    );
    assert!(!frames.iter().any(|f| f["type"] == "execution_success"));
    let history = alice.get_json(&app, &format!("/api/history/{id}")).await;
    assert_eq!(history[&id]["status"]["status_str"], "error");
    assert!(
        !app.user_dir("alice").join("output").exists()
            || std::fs::read_dir(app.user_dir("alice").join("output"))
                .unwrap()
                .next()
                .is_none()
    );

    // Said where an operator looks.
    let ready: serde_json::Value = reqwest::get(app.at("/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["disk"].as_str().unwrap().starts_with("low:"),
        "{ready}"
    );
    assert_eq!(ready["ready"], true);
    let admin = instructor(&app).await;
    let metrics = get_text(&admin, app.at("/metrics")).await;
    assert!(metrics.contains("comfyume_disk_low 1"), "{metrics}");
    assert!(metrics.contains("comfyume_backup_scheduled 0"), "{metrics}");
    let room = get_json(&admin, app.at("/admin/api/room")).await;
    assert_eq!(room["disk"]["low"], true);
    assert!(room["backup"].is_null());
}

/// `comfyume ARGS` on a data directory of its own: (exit status, stdout, stderr).
fn cli(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comfyume"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("COMFYUME_CONFIG")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_backs_up_lists_verifies_restores_and_exits_1_on_any_failure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outputs = data.join("users/alice/output");
    std::fs::create_dir_all(&outputs).unwrap();
    std::fs::write(outputs.join("a.png"), b"an output").unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let (code, _, err) = cli(
        &data,
        &["users", "add", "alice", "--password", "alice-secret-pw"],
        &[],
    );
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = cli(&data, &["backup", "--to", &store, "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["files"], 1);
    let id = report["id"].as_str().unwrap().to_string();

    let (code, out, err) = cli(&data, &["backup", "list", "--to", &store], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id) && out.contains("1 files"), "{out}");
    let (code, out, err) = cli(
        &data,
        &["backup", "verify", "--to", &store, "--at", &id],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("verified"), "{out}");

    let into = dir.path().join("restored");
    let (code, out, err) = cli(&into, &["restore", "--from", &store], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id), "{out}");
    assert_eq!(
        std::fs::read(into.join("users/alice/output/a.png")).unwrap(),
        b"an output"
    );
    let (code, out, _) = cli(&into, &["users", "list"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("alice"), "{out}");
    // Again onto the same, now full, directory: refused.
    let (code, _, err) = cli(&into, &["restore", "--from", &store], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("is not empty"), "{err}");

    // A damaged store: verify exits 1 naming the object.
    let object = std::fs::read_dir(dir.path().join("store/objects"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap() == b"an output")
        .unwrap();
    std::fs::write(&object, b"bit rot!!").unwrap();
    let (code, _, err) = cli(&data, &["backup", "verify", "--to", &store], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("damaged") && err.contains("not its name"),
        "{err}"
    );

    // A store answering 500: exit 1 with the store's answer, no success line.
    let endpoint = broken_store(Broken::ServerError).await;
    let env = [
        // From the environment only, as an operator of MinIO might.
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("COMFYUME_BACKUP__TIMEOUT_SECONDS", "2"),
        ("COMFYUME_BACKUP__MAX_RETRIES", "0"),
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_REGION", "us-east-1"),
    ];
    let (code, out, err) = cli(&data, &["backup", "--to", "s3://room/p"], &env);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("verified"), "{out}");
    assert!(err.contains("500"), "{err}");
    // No destination at all is an error too, not a no-op.
    let (code, _, err) = cli(&data, &["backup"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no backup destination"), "{err}");
    // Nor a data directory without a database.
    let (code, _, err) = cli(
        &dir.path().join("nothing"),
        &["backup", "--to", &store],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("nothing to back up"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instructor_backs_up_now_from_the_console() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let app = TestApp::spawn_with(|c| {
        c.backup.to = Some(url.clone());
        c.backup.collect_after_seconds = 0;
    })
    .await;
    a_room_at_work(&app).await;
    let backups = app.state.backups.clone().unwrap();
    let mut changes = backups.changes();
    let teacher = instructor(&app).await;
    let r = teacher
        .post(app.at("/admin/api/backup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["audit"]["action"], "backup.request");
    assert_eq!(body["audit"]["actor"], "teacher");
    // The schedule's loop takes it: wait for its outcome.
    within("the backup asked for", async {
        while backups.status().last_success.is_none() && backups.status().last_failure.is_none() {
            changes.changed().await.unwrap();
        }
    })
    .await;
    let status = backups.status();
    assert!(status.last_failure.is_none(), "{status:?}");
    let success = status.last_success.unwrap();
    assert!(success.files >= 6);
    let listed = backup::restore::list(&folder_target(store.path()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id.as_str(), success.id);
    let room = get_json(&teacher, app.at("/admin/api/room")).await;
    assert_eq!(room["backup"]["last_success"]["id"], success.id.as_str());
    let metrics = get_text(&teacher, app.at("/metrics")).await;
    assert!(metrics.contains("comfyume_backup_failing 0"), "{metrics}");
    assert!(
        metrics.contains("comfyume_backup_last_success_timestamp_seconds"),
        "{metrics}"
    );

    // Without a destination there is nothing to ask for.
    let plain = TestApp::spawn().await;
    let teacher = instructor(&plain).await;
    let r = teacher
        .post(plain.at("/admin/api/backup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("[backup] to"));
}
