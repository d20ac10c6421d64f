//! The nodes that touch files: LoadImage (input/), SaveImage (output/) and
//! PreviewImage (temp/), with stock's naming (`get_save_image_path`) and
//! PNG metadata (S:nodes.py:1659-1760, S:folder_paths.py).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Call, Data, Failure, Output, error};
use crate::files::{Dirs, join_inside};
use crate::pixels::Image;
use crate::png::{self, Effort};

/// A node's `IS_CHANGED` value, part of its cache signature. Only LoadImage
/// has one: the SHA-256 of its file, so replacing the upload re-runs it.
pub(crate) fn is_changed(class_type: &str, inputs: &Map<String, Value>, dirs: &Dirs) -> Value {
    if class_type != "LoadImage" {
        return Value::Bool(false);
    }
    let file = inputs
        .get("image")
        .and_then(Value::as_str)
        .and_then(|name| dirs.resolve_annotated(name));
    match file.map(std::fs::read) {
        Some(Ok(bytes)) => json!(format!("{:x}", Sha256::digest(&bytes))),
        // Stock's IS_CHANGED raises and the node is treated as changed;
        // a value that never repeats does the same.
        _ => json!(uuid::Uuid::new_v4().to_string()),
    }
}

pub(super) fn load_image(call: &Call<'_>) -> Result<Output, Failure> {
    let name = call.string("image")?;
    let Some(path) = call.host.dirs().resolve_annotated(&name) else {
        return Err(error(
            "ValueError",
            format!("Invalid image file: {name} (outside the input folder)"),
        ));
    };
    let bytes = std::fs::read(&path).map_err(|e| {
        error(
            "FileNotFoundError",
            format!("[Errno 2] {e}: '{}'", path.display()),
        )
    })?;
    // Stock's message when PIL cannot open a file, so clients that match
    // on it keep working; the simulator reads PNG only.
    let decoded = png::decode(&bytes).map_err(|_| {
        error(
            "PIL.UnidentifiedImageError",
            format!("cannot identify image file '{}'", path.display()),
        )
    })?;
    let mask = decoded.mask();
    Ok(Output {
        values: vec![
            Data::Image(Arc::new(decoded.image)),
            Data::Mask(Arc::new(mask)),
        ],
        ui: None,
    })
}

pub(super) fn save_image(call: &Call<'_>) -> Result<Output, Failure> {
    let prefix = call.string("filename_prefix")?;
    let images = call.image("images")?;
    let dir = call.host.dirs().output.clone();
    save(call, &images, &prefix, &dir, "output", Effort::Balanced)
}

/// PreviewImage is SaveImage into temp/ with prefix `ComfyUI_temp_xxxxx`
/// and the fastest compression.
pub(super) fn preview_image(call: &Call<'_>) -> Result<Output, Failure> {
    let images = call.image("images")?;
    let prefix = format!("ComfyUI{}", call.temp_suffix);
    let dir = call.host.dirs().temp.clone();
    save(call, &images, &prefix, &dir, "temp", Effort::Fast)
}

/// PreviewImage's random suffix: stock draws five letters from this
/// alphabet (which lacks v and w) once per node object.
pub(crate) fn temp_suffix() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuxyz";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let letters: String = bytes[..5]
        .iter()
        .map(|b| char::from(LETTERS[usize::from(*b) % LETTERS.len()]))
        .collect();
    format!("_temp_{letters}")
}

fn save(
    call: &Call<'_>,
    images: &Image,
    prefix: &str,
    dir: &Path,
    kind: &str,
    effort: Effort,
) -> Result<Output, Failure> {
    let target = save_path(prefix, dir, images.width, images.height)?;
    let text = metadata(call.host.prompt(), call.host.extra_pnginfo());
    let mut results = Vec::new();
    for index in 0..images.batch {
        let counter = target.counter + index as i64;
        let name = target.filename.replace("%batch_num%", &index.to_string());
        let file = format!("{name}_{counter:05}_.png");
        let bytes =
            png::encode_image(images, index, &text, effort).map_err(|e| error("ValueError", e))?;
        std::fs::write(target.folder.join(&file), bytes)
            .map_err(|e| error("OSError", format!("{e}: '{file}'")))?;
        results.push(json!({"filename": file, "subfolder": target.subfolder, "type": kind}));
    }
    Ok(Output {
        values: Vec::new(),
        ui: Some(json!({"images": results})),
    })
}

/// The tEXt chunks stock writes: `prompt`, then each `extra_pnginfo` key.
fn metadata(prompt: &Value, extra: Option<&Map<String, Value>>) -> Vec<(String, String)> {
    let mut text = vec![("prompt".to_owned(), png::python_json(prompt))];
    for (key, value) in extra.into_iter().flatten() {
        text.push((key.clone(), png::python_json(value)));
    }
    text
}

/// Where a save goes: stock's `get_save_image_path`.
#[derive(Debug, PartialEq)]
struct SaveTarget {
    folder: PathBuf,
    filename: String,
    counter: i64,
    subfolder: String,
}

fn save_path(
    prefix: &str,
    output: &Path,
    width: usize,
    height: usize,
) -> Result<SaveTarget, Failure> {
    let prefix = if prefix.contains('%') {
        expand_vars(prefix, width, height)
    } else {
        prefix.to_owned()
    };
    let outside = || {
        error(
            "Exception",
            format!(
                "**** ERROR: Saving image outside the output folder is not allowed.\n \
                 filename_prefix: {prefix}"
            ),
        )
    };
    // os.path.normpath, then dirname/basename.
    let mut parts: Vec<&str> = Vec::new();
    for part in prefix.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if prefix.starts_with('/') || parts.contains(&"..") {
        return Err(outside());
    }
    let filename = parts.pop().unwrap_or(".").to_owned();
    let subfolder = parts.join("/");
    let folder = join_inside(output, &subfolder).ok_or_else(outside)?;
    std::fs::create_dir_all(&folder).map_err(|e| error("OSError", e.to_string()))?;

    // The counter continues from the highest `<filename>_<digits>...` there.
    let prefix_len = prefix.rsplit('/').next().unwrap_or("").chars().count();
    let mut highest: Option<i64> = None;
    for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let head: String = name.chars().take(prefix_len + 1).collect();
        let Some(stem) = head.strip_suffix('_') else {
            continue;
        };
        if stem != filename {
            continue;
        }
        let tail: String = name.chars().skip(prefix_len + 1).collect();
        let digits = tail
            .split('_')
            .next()
            .and_then(|d| d.trim().parse::<i64>().ok())
            .unwrap_or(0);
        highest = Some(highest.map_or(digits, |h| h.max(digits)));
    }
    Ok(SaveTarget {
        folder,
        filename,
        counter: highest.map_or(1, |h| h + 1),
        subfolder,
    })
}

/// Stock's `%width%`, `%height%` and `%year%`...`%second%`. The simulator
/// has no timezone database, so the date and time are UTC.
fn expand_vars(prefix: &str, width: usize, height: usize) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    prefix
        .replace("%width%", &width.to_string())
        .replace("%height%", &height.to_string())
        .replace("%year%", &year.to_string())
        .replace("%month%", &format!("{month:02}"))
        .replace("%day%", &format!("{day:02}"))
        .replace("%hour%", &format!("{:02}", of_day / 3600))
        .replace("%minute%", &format!("{:02}", of_day / 60 % 60))
        .replace("%second%", &format!("{:02}", of_day % 60))
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sim-io-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn counter_continues_after_the_highest_file() {
        let out = scratch();
        let first = save_path("trace", &out, 8, 8).expect("path");
        assert_eq!(
            (
                first.filename.as_str(),
                first.counter,
                first.subfolder.as_str()
            ),
            ("trace", 1, "")
        );
        for name in [
            "trace_00001_.png",
            "trace_00007_.png",
            "tracer_00009_.png",
            "other_00042_.png",
        ] {
            std::fs::write(out.join(name), b"x").expect("write");
        }
        assert_eq!(save_path("trace", &out, 8, 8).expect("path").counter, 8);

        let nested = save_path("a/b/../c/pic", &out, 8, 8).expect("nested");
        assert_eq!(
            (nested.subfolder.as_str(), nested.filename.as_str()),
            ("a/c", "pic")
        );
        assert!(out.join("a/c").is_dir());

        assert!(save_path("../escape", &out, 8, 8).is_err());
        assert!(save_path("/abs/x", &out, 8, 8).is_err());
        assert_eq!(
            save_path("w%width%h%height%", &out, 3, 4)
                .expect("vars")
                .filename,
            "w3h4"
        );
        std::fs::remove_dir_all(&out).expect("cleanup");
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn temp_suffix_uses_stocks_alphabet() {
        let suffix = temp_suffix();
        let letters = suffix.strip_prefix("_temp_").expect("prefix");
        assert_eq!(letters.len(), 5);
        assert!(
            letters
                .bytes()
                .all(|b| b.is_ascii_lowercase() && b != b'v' && b != b'w')
        );
    }
}
