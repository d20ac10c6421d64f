//! Every parser of a client-supplied path or name: whatever it accepts
//! stays inside the folder it is joined to, and parsing is idempotent.

#![no_main]

use std::path::{Component, Path};

use comfyume::workspace::{
    parse_upload_file_name, parse_upload_subfolder, parse_userdata_dir, parse_userdata_path,
    parse_v2_path, parse_view_request,
};
use comfyume_domain::{JobId, MAX_PATH_BYTES, MAX_SEGMENT_BYTES, SafeRelPath, UserName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(p) = SafeRelPath::parse(raw) {
        assert_contained(&p);
    }
    if let Ok(p) = SafeRelPath::parse_file_name(raw) {
        assert_contained(&p);
        assert!(!p.is_root() && !p.as_str().contains('/'), "{raw:?} → {p:?}");
    }
    for p in [
        parse_userdata_path(raw),
        parse_userdata_dir(Some(raw)),
        parse_v2_path(Some(raw)),
        parse_upload_subfolder(Some(raw)),
    ]
    .into_iter()
    .flatten()
    {
        assert_contained(&p);
    }
    if let Ok(name) = parse_upload_file_name(raw) {
        assert_eq!(name, raw);
        assert_eq!(SafeRelPath::parse_file_name(&name).unwrap().as_str(), name);
    }

    // `/view`: filename, type and subfolder, split on newlines.
    let mut parts = raw.splitn(3, '\n');
    let (filename, kind, subfolder) = (parts.next(), parts.next(), parts.next());
    if let Ok(view) = parse_view_request(filename, kind, subfolder) {
        assert_contained(&view.subfolder);
        let file = SafeRelPath::parse_file_name(&view.file_name).expect("a plain file name");
        assert_eq!(file.as_str(), view.file_name);
        let root = Path::new("/data/alice/output");
        let path = view.subfolder.under(root).join(&view.file_name);
        assert!(path.starts_with(root) && path != root, "{raw:?} → {path:?}");
        assert!(below(root, &path), "{raw:?} → {path:?}");
    }

    if let Ok(name) = UserName::parse(raw) {
        assert_eq!(UserName::parse(name.as_str()).as_ref(), Ok(&name));
        assert!(!name.as_str().contains(['/', '\\', '\0']) && !name.as_str().starts_with('.'));
    }
    if let Ok(id) = JobId::parse(raw) {
        assert_eq!(JobId::parse(&id.to_string()).ok(), Some(id));
    }
});

/// A parsed path: normalised, bounded, and below any root it is joined to.
fn assert_contained(p: &SafeRelPath) {
    let s = p.as_str();
    assert!(s.len() <= MAX_PATH_BYTES, "{s:?}");
    assert!(!s.contains(['\\', '\0']) && !s.starts_with('/'), "{s:?}");
    for segment in p.segments() {
        assert!(!matches!(segment, "" | "." | ".."), "{s:?}");
        assert!(segment.len() <= MAX_SEGMENT_BYTES, "{s:?}");
    }
    assert_eq!(SafeRelPath::parse(s).as_ref(), Ok(p), "not idempotent");
    let root = Path::new("/data/alice/input");
    let joined = p.under(root);
    assert!(joined.starts_with(root), "{s:?} → {joined:?}");
    assert!(below(root, &joined), "{s:?} → {joined:?}");
}

/// Whether `path` is `root` followed only by plain names.
fn below(root: &Path, path: &Path) -> bool {
    path.starts_with(root)
        && path
            .components()
            .skip(root.components().count())
            .all(|c| matches!(c, Component::Normal(_)))
}
