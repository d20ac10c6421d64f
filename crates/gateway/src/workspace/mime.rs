//! Content types: guessing them from names, and ComfyUI's rules for serving
//! user-controlled files without letting them run as script in our origin
//! (folder_paths.py: `is_dangerous_content_type`, `renders_safely_as_image`,
//! `filter_files_content_types`).

/// How to serve a user file: the `Content-Type`, the `Content-Disposition`,
/// and whether the answer depends on `Sec-Fetch-Dest`. Every such response
/// also carries `X-Content-Type-Options: nosniff` (ComfyUI always sends it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeAs {
    pub content_type: &'static str,
    /// The full header value, e.g. `attachment` or `filename="a.png"`. File
    /// names are quoted and stripped of control characters; non-ASCII names
    /// stay UTF-8, so build the header with `HeaderValue::from_bytes`.
    pub content_disposition: String,
    /// When true, also send `Vary: Sec-Fetch-Dest` and
    /// `Cache-Control: no-store`: the type was chosen from that request
    /// header, so a cache must not replay it to another destination.
    pub vary_sec_fetch_dest: bool,
}

pub(crate) const OCTET_STREAM: &str = "application/octet-stream";

/// Types a browser may execute or render inline (ComfyUI's
/// `DANGEROUS_CONTENT_TYPES`; both spellings of each, since guessers differ).
const DANGEROUS: &[&str] = &[
    "text/html",
    "text/html-sandboxed",
    "application/xhtml+xml",
    "text/javascript",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "text/css",
    "image/svg+xml",
    "application/xml",
    "text/xml",
    "message/rfc822",
];

/// The guessed type of a file name, like Python's `mimetypes.guess_type`.
pub(crate) fn guess(name: &str) -> Option<&'static str> {
    mime_guess::from_path(name).first_raw()
}

/// ComfyUI's `is_dangerous_content_type`: parameters and case are ignored,
/// and every XML dialect counts (XML can carry script).
pub fn is_dangerous_content_type(content_type: &str) -> bool {
    let normalized = essence(content_type);
    DANGEROUS.contains(&normalized.as_str())
        || normalized.ends_with("+xml")
        || normalized.ends_with("/xml")
}

/// ComfyUI's `renders_safely_as_image`: an SVG fetched for an `<img>` runs
/// no script, and browsers set `Sec-Fetch-Dest` themselves (page script
/// cannot forge it), so that one case may stay inline. A missing header
/// fails closed.
pub(crate) fn renders_safely_as_image(content_type: &str, sec_fetch_dest: Option<&str>) -> bool {
    sec_fetch_dest == Some("image") && essence(content_type) == "image/svg+xml"
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The major type (`image`, `video`, ...) ComfyUI's
/// `filter_files_content_types` assigns to a file name. Its cache is seeded
/// with `webp → image` and `fbx → model` and keyed by the text after the
/// last dot (the whole name when there is none), which we reproduce.
pub(crate) fn content_class(name: &str) -> Option<&'static str> {
    let ext = name.rsplit('.').next().unwrap_or(name);
    match ext {
        "webp" => Some("image"),
        "fbx" => Some("model"),
        _ => guess(name).and_then(|m| m.split('/').next()),
    }
}

/// `filename="<name>"` with ComfyUI's RFC 6266 escaping (backslash and
/// quote). Control characters, which no header may hold, become `_`.
pub(crate) fn quoted_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 12);
    out.push_str("filename=\"");
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push('_'),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_types() {
        for t in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/rss+xml",
            "text/xml",
            "application/xml",
            "text/javascript",
            "application/javascript",
            "text/css",
            "message/rfc822",
        ] {
            assert!(is_dangerous_content_type(t), "{t}");
        }
        for t in [
            "image/png",
            "application/json",
            "text/plain",
            "image/webp",
            "",
        ] {
            assert!(!is_dangerous_content_type(t), "{t}");
        }
    }

    #[test]
    fn svg_only_inline_for_images() {
        assert!(renders_safely_as_image("image/svg+xml", Some("image")));
        assert!(!renders_safely_as_image("image/svg+xml", Some("document")));
        assert!(!renders_safely_as_image("image/svg+xml", None));
        assert!(!renders_safely_as_image("text/html", Some("image")));
    }

    #[test]
    fn guesses_like_mimetypes() {
        assert_eq!(guess("a.png"), Some("image/png"));
        assert_eq!(guess("a.JSON"), Some("application/json"));
        assert_eq!(guess("Makefile"), None);
        assert_eq!(guess(".bashrc"), None);
    }

    #[test]
    fn content_classes() {
        assert_eq!(content_class("a.png"), Some("image"));
        assert_eq!(content_class("a.JPG"), Some("image"));
        assert_eq!(content_class("a.webp"), Some("image"));
        assert_eq!(content_class("a.fbx"), Some("model"));
        assert_eq!(content_class("a.mp4"), Some("video"));
        assert_eq!(content_class("a.json"), Some("application"));
        assert_eq!(content_class("noext"), None);
        // The seeded cache is keyed by "text after the last dot", so a bare
        // `webp` counts as an image in ComfyUI too.
        assert_eq!(content_class("webp"), Some("image"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted_file_name("a.png"), "filename=\"a.png\"");
        assert_eq!(
            quoted_file_name("a\"b\\c.png"),
            "filename=\"a\\\"b\\\\c.png\""
        );
        assert_eq!(quoted_file_name("a\r\nb"), "filename=\"a__b\"");
        assert_eq!(quoted_file_name("é.png"), "filename=\"é.png\"");
    }
}
