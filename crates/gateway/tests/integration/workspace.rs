//! The workspace's one suite for both places participants' files can
//! live: each test runs unchanged on disk (`on_disk::…`) and in an
//! S3-compatible bucket (`on_bucket::…`, the suite's moto server). Where
//! the answers are ComfyUI's, the disk's are the reference the bucket
//! must give.

use comfyume::workspace::{
    Bucket, FileInfo, FileSource, MAX_FILES_MOVED, V2Kind, Workspace, WorkspaceError, Workspaces,
};
use comfyume_domain::{FileKind, SafeRelPath, UserName};
use serde_json::json;

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod on_disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Place::disk()).await;
                }
            )*
        }
        mod on_bucket {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(place) = super::Place::bucket(stringify!($test)).await {
                        super::$test(place).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    userdata_lists_reads_and_refuses_like_comfyui,
    moves_and_deletes_keep_comfyuis_answers,
    uploads_take_free_names_and_reuse_same_content,
    view_finds_only_regular_files_in_the_folder_asked,
    settings_updates_from_two_gateways_lose_nothing,
    uploads_from_two_gateways_never_share_a_name,
    the_quota_holds,
    the_export_holds_workflows_and_outputs,
);

/// Where a test's files live; `gateway()` is one gateway's view of them
/// (a second call is a second gateway over the same files).
struct Place {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    bucket: Option<Bucket>,
}

impl Place {
    fn disk() -> Place {
        let dir = tempfile::tempdir().unwrap();
        Place {
            root: dir.path().join("users"),
            _dir: dir,
            bucket: None,
        }
    }

    /// A new bucket on the suite's moto server; `None` (said) without one.
    async fn bucket(test: &str) -> Option<Place> {
        let config = crate::support::s3::files_in_a_new_bucket(test).await?;
        let url = config.url.clone().unwrap();
        let store = comfyume::buckets::files_bucket(&config).unwrap().unwrap();
        comfyume::buckets::check_files_bucket(store.as_ref(), &url)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        Some(Place {
            root: dir.path().join("users"),
            _dir: dir,
            bucket: Some(Bucket::new(store)),
        })
    }

    fn gateway(&self) -> Workspaces {
        let all = Workspaces::new(self.root.clone());
        match &self.bucket {
            Some(bucket) => all.with_bucket(bucket.clone()),
            // Gateways sharing a filesystem take turns through file locks.
            None => all.with_shared_locks(self.root.with_file_name(".locks")),
        }
    }

    fn alice(&self) -> Workspace {
        self.gateway().user(&UserName::parse("alice").unwrap())
    }

    /// Nothing was written to the local disk when the files are in a
    /// bucket.
    fn assert_disk_untouched(&self) {
        if self.bucket.is_some() {
            assert!(!self.root.exists(), "files in a bucket touch no disk");
        }
    }
}

fn p(s: &str) -> SafeRelPath {
    SafeRelPath::parse(s).unwrap()
}

async fn bytes_of(source: &FileSource) -> Vec<u8> {
    source.read_all().await.unwrap()
}

async fn userdata_lists_reads_and_refuses_like_comfyui(place: Place) {
    let ws = place.alice();
    assert!(!ws.has_files().await.unwrap());
    assert!(matches!(
        ws.list(&SafeRelPath::root(), false).await,
        Err(WorkspaceError::NotFound("Directory not found"))
    ));
    assert!(ws.list_v2(&SafeRelPath::root()).await.unwrap().is_empty());
    for (path, body) in [
        ("workflows/b.json", "{\"b\":1}"),
        ("workflows/sub/a.json", "{\"a\":2}"),
        ("workflows/A.json", "{}"),
        ("workflows/.index.json", "[]"),
        ("workflows/.hidden/x.json", "{}"),
    ] {
        let info = ws.write(&p(path), body.into(), false).await.unwrap();
        assert_eq!(info.path, path);
        assert_eq!(info.size, body.len() as u64);
    }
    assert!(ws.has_files().await.unwrap());
    let names = |files: Vec<FileInfo>| files.into_iter().map(|f| f.path).collect::<Vec<_>>();
    assert_eq!(
        names(ws.list(&p("workflows"), false).await.unwrap()),
        ["A.json", "b.json"]
    );
    assert_eq!(
        names(ws.list(&p("workflows"), true).await.unwrap()),
        ["A.json", "b.json", "sub/a.json"]
    );
    // A file "lists" nothing; a missing folder is not found.
    assert!(
        ws.list(&p("workflows/b.json"), true)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        ws.list(&p("nope"), false).await,
        Err(WorkspaceError::NotFound(_))
    ));

    let v2 = ws.list_v2(&p("workflows")).await.unwrap();
    let shown: Vec<(String, V2Kind)> = v2.iter().map(|e| (e.path.clone(), e.kind)).collect();
    assert_eq!(
        shown,
        [
            ("workflows/.hidden".to_string(), V2Kind::Directory),
            ("workflows/sub".into(), V2Kind::Directory),
            // By lower-cased name; equal names in os.walk's order.
            ("workflows/.index.json".into(), V2Kind::File),
            ("workflows/A.json".into(), V2Kind::File),
            ("workflows/sub/a.json".into(), V2Kind::File),
            ("workflows/b.json".into(), V2Kind::File),
            ("workflows/.hidden/x.json".into(), V2Kind::File),
        ]
    );
    assert_eq!(v2[5].size, Some(7));
    assert!(v2[5].modified.is_some_and(|m| m > 1.6e9));
    assert!(matches!(
        ws.list_v2(&p("workflows/b.json")).await,
        Err(WorkspaceError::BadRequest(_))
    ));
    assert!(matches!(
        ws.list_v2(&p("nope")).await,
        Err(WorkspaceError::NotFound(_))
    ));

    let found = ws.read(&p("workflows/sub/a.json")).await.unwrap();
    assert_eq!(found.size, 7);
    assert_eq!(bytes_of(&found.source).await, b"{\"a\":2}");
    let opened = found.source.open().await.unwrap();
    assert_eq!(opened.size, 7);
    assert!(matches!(
        ws.read(&p("workflows/sub")).await,
        Err(WorkspaceError::NotFound(_))
    ));
    assert_eq!(
        ws.read_bytes(&p("workflows/b.json")).await.unwrap(),
        b"{\"b\":1}"
    );

    // Taken names, folders in the way, files in the way.
    assert!(matches!(
        ws.write(&p("workflows/b.json"), b"x".to_vec(), false).await,
        Err(WorkspaceError::Conflict)
    ));
    assert!(matches!(
        ws.write(&p("workflows/sub"), b"x".to_vec(), false).await,
        Err(WorkspaceError::Conflict)
    ));
    assert!(matches!(
        ws.write(&p("workflows/sub"), b"x".to_vec(), true).await,
        Err(WorkspaceError::BadRequest(_))
    ));
    // A file in the way of the folders: ComfyUI's 400 for an OSError.
    assert!(matches!(
        ws.write(&p("workflows/b.json/c.json"), b"x".to_vec(), true)
            .await,
        Err(WorkspaceError::BadRequest(_))
    ));
    ws.write(&p("workflows/b.json"), b"{\"b\":3}".to_vec(), true)
        .await
        .unwrap();
    assert_eq!(
        ws.read_bytes(&p("workflows/b.json")).await.unwrap(),
        b"{\"b\":3}"
    );
    place.assert_disk_untouched();
}

async fn moves_and_deletes_keep_comfyuis_answers(place: Place) {
    let ws = place.alice();
    ws.write(&p("workflows/a.json"), b"a".to_vec(), false)
        .await
        .unwrap();
    ws.write(&p("workflows/b.json"), b"b".to_vec(), false)
        .await
        .unwrap();
    ws.write(&p("workflows/dir/c.json"), b"c".to_vec(), false)
        .await
        .unwrap();

    assert!(matches!(
        ws.rename(&p("workflows/nope.json"), &p("workflows/x.json"), false)
            .await,
        Err(WorkspaceError::NotFound(_))
    ));
    assert!(matches!(
        ws.rename(&p("workflows/a.json"), &p("workflows/b.json"), false)
            .await,
        Err(WorkspaceError::Conflict)
    ));
    assert!(matches!(
        ws.rename(&p("workflows/a.json"), &p("workflows/dir"), true)
            .await,
        Err(WorkspaceError::Conflict)
    ));
    let moved = ws
        .rename(&p("workflows/a.json"), &p("workflows/new/a2.json"), false)
        .await
        .unwrap();
    assert_eq!(moved.path, "workflows/new/a2.json");
    assert_eq!(moved.size, 1);
    assert!(matches!(
        ws.read(&p("workflows/a.json")).await,
        Err(WorkspaceError::NotFound(_))
    ));
    assert_eq!(
        ws.read_bytes(&p("workflows/new/a2.json")).await.unwrap(),
        b"a"
    );
    // Replacing with overwrite.
    ws.rename(&p("workflows/new/a2.json"), &p("workflows/b.json"), true)
        .await
        .unwrap();
    assert_eq!(ws.read_bytes(&p("workflows/b.json")).await.unwrap(), b"a");
    // A whole folder moves.
    ws.rename(&p("workflows/dir"), &p("workflows/moved"), false)
        .await
        .unwrap();
    assert_eq!(
        ws.read_bytes(&p("workflows/moved/c.json")).await.unwrap(),
        b"c"
    );
    assert!(matches!(
        ws.read(&p("workflows/dir/c.json")).await,
        Err(WorkspaceError::NotFound(_))
    ));

    // Moves the disk's rename refuses (ComfyUI: a 500): a folder into
    // itself, a folder onto a file, anything under a file.
    for (from, to) in [
        ("workflows/moved", "workflows/moved/inner"),
        ("workflows/moved", "workflows/b.json"),
        ("workflows/b.json", "workflows/moved/c.json/x.json"),
    ] {
        assert!(
            matches!(
                ws.rename(&p(from), &p(to), true).await,
                Err(WorkspaceError::Io(_))
            ),
            "{from} -> {to}"
        );
    }
    assert_eq!(
        ws.read_bytes(&p("workflows/moved/c.json")).await.unwrap(),
        b"c"
    );
    assert_eq!(ws.read_bytes(&p("workflows/b.json")).await.unwrap(), b"a");
    assert!(matches!(
        ws.delete(&p("workflows/moved")).await,
        Err(WorkspaceError::BadRequest(_))
    ));
    assert!(matches!(
        ws.delete(&p("workflows/nope.json")).await,
        Err(WorkspaceError::NotFound(_))
    ));
    ws.delete(&p("workflows/b.json")).await.unwrap();
    assert!(matches!(
        ws.read(&p("workflows/b.json")).await,
        Err(WorkspaceError::NotFound(_))
    ));
    place.assert_disk_untouched();
}

async fn uploads_take_free_names_and_reuse_same_content(place: Place) {
    let ws = place.alice();
    let up = |name: &'static str, body: &'static [u8], overwrite: bool| {
        let ws = ws.clone();
        async move {
            ws.save_upload(
                FileKind::Input,
                &SafeRelPath::root(),
                name,
                body.to_vec(),
                overwrite,
            )
            .await
            .unwrap()
            .name
        }
    };
    assert_eq!(up("cat.png", b"one", false).await, "cat.png");
    assert_eq!(
        up("cat.png", b"one", false).await,
        "cat.png",
        "same bytes, same name"
    );
    assert_eq!(up("cat.png", b"two", false).await, "cat (1).png");
    assert_eq!(up("cat.png", b"three", false).await, "cat (2).png");
    assert_eq!(up("cat.png", b"two", false).await, "cat (1).png");
    assert_eq!(up("cat.png", b"new", true).await, "cat.png");
    assert_eq!(up("notes.txt", b"n", false).await, "notes.txt");
    assert_eq!(up(".hidden.png", b"h", false).await, ".hidden.png");
    // Any name a browser sends: spaces, percent signs, non-ASCII, brackets.
    let odd = "100% ünï [x] #1 + &=?.png";
    assert_eq!(up(odd, b"odd", false).await, odd);
    let found = ws
        .resolve_view(Some(odd), Some("input"), None)
        .await
        .unwrap();
    assert_eq!(bytes_of(&found.source).await, b"odd");
    let sub = ws
        .save_upload(FileKind::Input, &p("masks"), "m.png", b"m".to_vec(), false)
        .await
        .unwrap();
    // A file where a folder must go, a folder where a file must go: what
    // the disk refuses (ComfyUI: a 500).
    assert!(matches!(
        ws.save_upload(
            FileKind::Input,
            &p("cat.png"),
            "x.png",
            b"x".to_vec(),
            false
        )
        .await,
        Err(WorkspaceError::Io(_))
    ));
    assert!(matches!(
        ws.save_upload(
            FileKind::Input,
            &SafeRelPath::root(),
            "masks",
            b"x".to_vec(),
            true
        )
        .await,
        Err(WorkspaceError::Io(_))
    ));
    assert_eq!(
        (sub.name.as_str(), sub.subfolder.as_str()),
        ("m.png", "masks")
    );

    assert_eq!(
        ws.input_images().await.unwrap(),
        [".hidden.png", odd, "cat (1).png", "cat (2).png", "cat.png"]
    );
    let listed = ws.list_files(FileKind::Input).await.unwrap();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "100% ünï [x] #1 + &=?.png [input]",
            "cat (1).png [input]",
            "cat (2).png [input]",
            "cat.png [input]",
            "notes.txt [input]"
        ]
    );
    assert!(ws.list_files(FileKind::Output).await.unwrap().is_empty());
    assert_eq!(ws.read_input(&p("cat.png")).await.unwrap(), b"new");
    assert_eq!(ws.read_input(&p("masks/m.png")).await.unwrap(), b"m");
    assert!(matches!(
        ws.read_input(&p("gone.png")).await,
        Err(WorkspaceError::NotFound(_))
    ));
    place.assert_disk_untouched();
}

async fn view_finds_only_regular_files_in_the_folder_asked(place: Place) {
    let ws = place.alice();
    ws.save_upload(
        FileKind::Output,
        &p("run/1"),
        "img.png",
        b"png!".to_vec(),
        false,
    )
    .await
    .unwrap();
    ws.save_upload(
        FileKind::Output,
        &SafeRelPath::root(),
        "top.png",
        b"top".to_vec(),
        false,
    )
    .await
    .unwrap();
    let found = ws
        .resolve_view(Some("img.png"), Some("output"), Some("run/1"))
        .await
        .unwrap();
    assert_eq!((found.size, found.file_name.as_str()), (4, "img.png"));
    let mut opened = found.source.open().await.unwrap();
    let mut streamed = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut opened.bytes).await {
        streamed.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(streamed, b"png!");
    let top = ws.resolve_view(Some("top.png"), None, None).await.unwrap();
    assert_eq!(bytes_of(&top.source).await, b"top");
    let annotated = ws
        .resolve_view(Some("top.png [output]"), Some("input"), None)
        .await
        .unwrap();
    assert_eq!(annotated.size, 3);
    for (name, kind, sub) in [
        ("img.png", "output", ""),
        ("img.png", "input", "run/1"),
        ("1", "output", "run"),
        ("run", "output", ""),
    ] {
        assert!(
            matches!(
                ws.resolve_view(Some(name), Some(kind), Some(sub)).await,
                Err(WorkspaceError::NotFound(_))
            ),
            "{kind}/{sub}/{name}"
        );
    }
    assert!(matches!(
        ws.resolve_view(Some("img.png"), Some("output"), Some("../bob"))
            .await,
        Err(WorkspaceError::Forbidden(_))
    ));
    // Another user's files are another user's.
    let bob = place.gateway().user(&UserName::parse("bob").unwrap());
    assert!(matches!(
        bob.resolve_view(Some("top.png"), None, None).await,
        Err(WorkspaceError::NotFound(_))
    ));
    assert!(!bob.has_files().await.unwrap());
    place.assert_disk_untouched();
}

async fn settings_updates_from_two_gateways_lose_nothing(place: Place) {
    let one = place.alice();
    let two = place.alice();
    assert!(one.settings().await.is_empty());
    one.set_setting("first", json!(1), 1 << 20).await.unwrap();
    one.set_setting("second", json!(2), 1 << 20).await.unwrap();
    two.set_setting("third", json!(3), 1 << 20).await.unwrap();
    assert_eq!(one.settings().await.len(), 3);
    let writes = (0..60).map(|i| {
        let ws = if i % 2 == 0 { one.clone() } else { two.clone() };
        tokio::spawn(async move { ws.set_setting(&format!("key.{i}"), json!(i), 1 << 20).await })
    });
    for write in futures_util::future::join_all(writes).await {
        write.unwrap().unwrap();
    }
    // A second gateway: `two` was only another handle in this one.
    let other = place.gateway().user(&UserName::parse("alice").unwrap());
    other
        .merge_settings(
            json!({"key.0": "merged", "z": true})
                .as_object()
                .unwrap()
                .clone(),
            1 << 20,
        )
        .await
        .unwrap();
    let settings = one.settings().await;
    assert_eq!(settings.len(), 64, "no update lost");
    assert_eq!(one.get_setting("key.0").await, json!("merged"));
    assert_eq!(one.get_setting("key.59").await, json!(59));
    assert!(matches!(
        one.set_setting("big", json!("x".repeat(2000)), 1000).await,
        Err(WorkspaceError::TooLarge(_))
    ));
    place.assert_disk_untouched();
}

async fn uploads_from_two_gateways_never_share_a_name(place: Place) {
    let gateways = [place.gateway(), place.gateway()];
    let alice = UserName::parse("alice").unwrap();
    let uploads = (0..12u8).map(|i| {
        let ws = gateways[usize::from(i % 2)].user(&alice);
        tokio::spawn(async move {
            ws.save_upload(
                FileKind::Input,
                &SafeRelPath::root(),
                "photo.png",
                vec![i; 10],
                false,
            )
            .await
            .unwrap()
            .name
        })
    });
    let mut names: Vec<String> = futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        12,
        "every upload kept under its own name: {names:?}"
    );
    let ws = gateways[0].user(&alice);
    let mut seen = Vec::new();
    for name in &names {
        let bytes = ws.read_input(&p(name)).await.unwrap();
        seen.push(bytes[0]);
    }
    seen.sort();
    assert_eq!(seen, (0..12).collect::<Vec<u8>>());
}

async fn the_quota_holds(place: Place) {
    let ws = place
        .gateway()
        .with_quota(10_000)
        .user(&UserName::parse("alice").unwrap());
    ws.write(&p("x"), vec![0; 4000], false).await.unwrap();
    assert!(matches!(
        ws.write(&p("big"), vec![0; 7000], false).await,
        Err(WorkspaceError::QuotaExceeded(_))
    ));
    assert!(matches!(
        ws.save_upload(
            FileKind::Input,
            &SafeRelPath::root(),
            "big.png",
            vec![1; 7000],
            false
        )
        .await,
        Err(WorkspaceError::QuotaExceeded(_))
    ));
    ws.write(&p("z"), vec![0; 5000], false)
        .await
        .expect("9,000 bytes fit in 10,000");
    ws.write(&p("z"), vec![0; 6000], true)
        .await
        .expect("replacing a file frees its bytes");
    ws.delete(&p("x")).await.unwrap();
    ws.write(&p("w"), vec![0; 3500], false)
        .await
        .expect("the deleted file's room is free again");
}

async fn the_export_holds_workflows_and_outputs(place: Place) {
    use std::io::Read;
    let ws = place.alice();
    ws.write(&p("workflows/a.json"), b"{\"a\": 1}".to_vec(), false)
        .await
        .unwrap();
    ws.write(&p("workflows/sub/b.json"), b"{}".to_vec(), false)
        .await
        .unwrap();
    ws.set_setting("x", json!(1), 1 << 20).await.unwrap();
    for (kind, sub, name) in [
        (FileKind::Output, "", "img_00001_.png"),
        (FileKind::Output, "video", "v.mp4"),
        (FileKind::Input, "", "upload.png"),
        (FileKind::Temp, "", "preview.png"),
    ] {
        let sub = if sub.is_empty() {
            SafeRelPath::root()
        } else {
            p(sub)
        };
        ws.save_upload(kind, &sub, name, name.as_bytes().to_vec(), false)
            .await
            .unwrap();
    }
    let summary = tokio::task::spawn_blocking(move || {
        let mut zipped = Vec::new();
        let summary = ws.export_zip(&mut zipped).unwrap();
        (summary, zipped)
    })
    .await
    .unwrap();
    let (summary, zipped) = summary;
    assert_eq!((summary.workflows, summary.outputs), (2, 2));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    let mut names: Vec<String> = archive
        .file_names()
        .map(|n| n.unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "outputs/img_00001_.png",
            "outputs/video/v.mp4",
            "workflows/a.json",
            "workflows/sub/b.json"
        ]
    );
    for (name, want) in [
        ("outputs/video/v.mp4", "v.mp4"),
        ("workflows/a.json", "{\"a\": 1}"),
    ] {
        let mut body = String::new();
        archive
            .by_name(name)
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        assert_eq!(body, want, "{name}");
    }
    place.assert_disk_untouched();
}

/// In a bucket a folder moves file by file, while the owner's other
/// writes wait: past its bound the move is refused whole, before anything
/// is copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_refuses_a_folder_move_past_its_bound() {
    use futures_util::StreamExt;
    use object_store::ObjectStoreExt;
    let test = "a bucket refuses a folder move past its bound";
    let Some(config) = crate::support::s3::files_in_a_new_bucket(test).await else {
        return;
    };
    let store = comfyume::buckets::files_bucket(&config).unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspaces::new(dir.path().join("users"))
        .with_bucket(Bucket::new(store.clone()))
        .user(&UserName::parse("alice").unwrap());
    let puts: Vec<_> = futures_util::stream::iter(0..=MAX_FILES_MOVED)
        .map(|i| {
            let store = store.clone();
            async move {
                let key = format!("users/alice/userdata/workflows/big/{i}.json");
                store.put(&key.into(), "{}".into()).await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(puts.iter().all(Result::is_ok));
    assert!(matches!(
        ws.rename(&p("workflows/big"), &p("workflows/moved"), false)
            .await,
        Err(WorkspaceError::TooLarge(_))
    ));
    assert!(matches!(
        ws.list(&p("workflows/moved"), true).await,
        Err(WorkspaceError::NotFound(_))
    ));
    assert_eq!(
        ws.list(&p("workflows/big"), false).await.unwrap().len(),
        MAX_FILES_MOVED + 1
    );
}
