//! `POST /upload/image`'s multipart form: any body is read or refused with
//! a 4xx, never a panic or a 5xx, and what is accepted is parsed.

#![no_main]

use comfyume::fuzzing::upload_form;
use comfyume_domain::SafeRelPath;
use libfuzzer_sys::fuzz_target;

/// Small, so the fuzzer also reaches the too-large refusal.
const LIMIT: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    // The first line is the boundary (as a `Content-Type` would name it),
    // the rest the body.
    let Some(split) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(boundary) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let content_type = format!("multipart/form-data; boundary={boundary}");
    if axum_header_is_invalid(&content_type) {
        return;
    }
    match upload_form(&content_type, data[split + 1..].to_vec(), LIMIT) {
        Ok(upload) => {
            assert!(upload.len as u64 <= LIMIT);
            assert!(!upload.file_name.is_empty());
            assert!(matches!(upload.kind, "input" | "output" | "temp"));
            let sub = SafeRelPath::parse(&upload.subfolder).expect("a parsed subfolder");
            assert_eq!(sub.as_str(), upload.subfolder);
        }
        Err(status) => assert!(status.is_client_error(), "{status} for {data:?}"),
    }
});

/// A header value the HTTP parser would never hand us.
fn axum_header_is_invalid(value: &str) -> bool {
    value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}
