//! The sidecar is its own program: it builds in a copy of the workspace
//! from which the gateway's crate is gone, and depends on no crate only
//! the gateway uses. A GPU image builds it without the gateway's sources,
//! migrations or assets.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates a GPU image needs, and the ones it must never pull in.
const GATEWAY_ONLY: [&str; 5] = [
    "comfyume ",
    "comfyume-domain ",
    "comfyume-prompt ",
    "comfyume-scheduler ",
    "sqlx",
];

#[test]
fn the_worker_builds_without_the_gateway() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let copy = tempfile::tempdir().unwrap();
    for file in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), copy.path().join(file)).unwrap();
    }
    // Every crate but the gateway's.
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "gateway" {
            copy_dir(
                &entry.path(),
                &copy.path().join("crates").join(entry.file_name()),
            );
        }
    }

    let tree = cargo(copy.path())
        // Not --locked: the lock file loses the gateway's entries (and only
        // those; --offline keeps every other version as locked).
        .args(["tree", "--offline", "-p", "comfyume-worker"])
        .args(["-e", "normal", "--prefix", "none"])
        .output()
        .unwrap();
    assert!(
        tree.status.success(),
        "{}",
        String::from_utf8_lossy(&tree.stderr)
    );
    let tree = String::from_utf8(tree.stdout).unwrap();
    assert!(tree.contains("comfyume-protocol "), "{tree}");
    for gateway in GATEWAY_ONLY {
        assert!(
            !tree.lines().any(|l| l.starts_with(gateway)),
            "the worker depends on {gateway}:\n{tree}"
        );
    }

    // A target directory of its own, kept between runs, so the nested
    // build neither waits on nor disturbs the one running this test.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("worker-alone");
    let build = cargo(copy.path())
        .args(["build", "--offline", "-p", "comfyume-worker"])
        .args(["--bin", "comfyume-worker"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    assert!(target.join("debug/comfyume-worker").exists());
}

fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir);
    // Not the outer build's settings (its target directory among them).
    cmd.env_remove("CARGO_TARGET_DIR");
    cmd
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}
