//! The take-home export: one participant's workflows and outputs as a
//! zip, written as it is read (a streaming zip: each entry's sizes and
//! CRC follow its data), so neither the server nor the CLI holds a whole
//! archive, however large, in memory.
//!
//! Inside the zip: `workflows/…` (their saved workflows, as in the
//! Workflows panel) and `outputs/…` (their saved results, subfolders
//! kept). Workflows are compressed; outputs (PNG, WebP, video) are stored
//! as they are: compressing them again gains nothing and costs CPU.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

use super::Workspace;

/// What an export held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    pub workflows: usize,
    pub outputs: usize,
    /// Bytes of the files (before compression).
    pub bytes: u64,
}

impl Workspace {
    /// Writes this user's workflows and outputs as a zip to `out`. Blocking:
    /// call it on a blocking thread.
    pub fn export_zip<W: Write>(&self, out: W) -> io::Result<ExportSummary> {
        if let Some(bucket) = &self.bucket {
            return export_from_bucket(bucket, out);
        }
        let mut files = Vec::new();
        collect(
            &self.userdata_dir().join("workflows"),
            "workflows",
            &mut files,
        )?;
        let workflows = files.len();
        collect(&self.dir().join("output"), "outputs", &mut files)?;
        let mut zip = zip::ZipWriter::new_stream(out);
        let mut summary = ExportSummary {
            workflows,
            outputs: files.len() - workflows,
            bytes: 0,
        };
        for (name, path) in files {
            let mut file = match fs::File::open(&path) {
                Ok(f) => f,
                // Deleted since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let size = file.metadata()?.len();
            zip.start_file(name.as_str(), entry_options(&name, size))
                .map_err(io::Error::other)?;
            summary.bytes += io::copy(&mut file, &mut zip)?;
        }
        zip.finish().map_err(io::Error::other)?;
        Ok(summary)
    }
}

/// The export of a user whose files are in the bucket: the bucket's
/// answers awaited on this (blocking) thread, one piece at a time.
fn export_from_bucket<W: Write>(
    bucket: &super::bucket::UserBucket,
    out: W,
) -> io::Result<ExportSummary> {
    use futures_util::StreamExt;
    let runtime = tokio::runtime::Handle::current();
    let files = runtime
        .block_on(Workspace::bucket_export_files(bucket))
        .map_err(io::Error::other)?;
    let workflows = files
        .iter()
        .filter(|(name, _)| name.starts_with("workflows/"))
        .count();
    let mut summary = ExportSummary {
        workflows,
        outputs: files.len() - workflows,
        bytes: 0,
    };
    let mut zip = zip::ZipWriter::new_stream(out);
    for (name, source) in files {
        let mut opened = match runtime.block_on(source.open()) {
            Ok(opened) => opened,
            // Deleted since it was listed.
            Err(super::WorkspaceError::NotFound(_)) => continue,
            Err(e) => return Err(io::Error::other(e)),
        };
        zip.start_file(name.as_str(), entry_options(&name, opened.size))
            .map_err(io::Error::other)?;
        while let Some(chunk) = runtime.block_on(opened.bytes.next()) {
            let chunk = chunk?;
            zip.write_all(&chunk)?;
            summary.bytes += chunk.len() as u64;
        }
    }
    zip.finish().map_err(io::Error::other)?;
    Ok(summary)
}

/// Workflows are compressed; outputs stored as they are.
fn entry_options(name: &str, size: u64) -> SimpleFileOptions {
    let method = if name.ends_with(".json") {
        CompressionMethod::Deflated
    } else {
        CompressionMethod::Stored
    };
    SimpleFileOptions::default()
        .compression_method(method)
        .large_file(size >= u64::from(u32::MAX))
}

/// Every regular file under `dir`, as (name in the zip, path), in name
/// order; none when `dir` does not exist.
fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    let mut entries = match fs::read_dir(dir) {
        Ok(entries) => entries.collect::<io::Result<Vec<_>>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            // The gateway writes only UTF-8 names; anything else is not
            // a participant's.
            continue;
        };
        let kind = entry.file_type()?;
        let zipped = format!("{prefix}/{name}");
        if kind.is_dir() {
            collect(&entry.path(), &zipped, out)?;
        } else if kind.is_file() {
            out.push((zipped, entry.path()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Workspaces;
    use comfyume_domain::UserName;

    // What an export holds, on disk and in a bucket alike, is the
    // workspace suite's (tests/integration/workspace.rs).

    #[test]
    fn a_participant_without_files_gets_an_empty_archive_that_opens() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspaces::new(dir.path().join("users")).user(&UserName::parse("bob").unwrap());
        let mut zipped = Vec::new();
        assert_eq!(
            ws.export_zip(&mut zipped).unwrap(),
            ExportSummary::default()
        );
        assert_eq!(
            zip::ZipArchive::new(io::Cursor::new(zipped)).unwrap().len(),
            0
        );
    }
}
