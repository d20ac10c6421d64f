//! The worker sidecar's stream as the gateway decodes it: any bytes, cut
//! anywhere, decode to the same frames or the same refusal; every frame
//! decoded encodes back to bytes that decode to itself.

#![no_main]

use comfyume_protocol::worker::stream::{Decoder, Frame};
use libfuzzer_sys::fuzz_target;

/// Small, so the fuzzer reaches the over-limit refusal.
const MAX_FRAME_LEN: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = decode(bytes, bytes.len().max(1));
    let chunked = decode(bytes, usize::from(cut).max(1));
    assert_eq!(
        whole, chunked,
        "cutting the stream changed what it decodes to"
    );

    for frame in whole.0 {
        let encoded = frame.encode().expect("a decoded frame fits");
        let (again, end) = decode(&encoded, encoded.len());
        assert_eq!(again, vec![frame.clone()]);
        if frame.is_terminal() {
            assert_eq!(end, Ok(()));
        }
    }
});

/// The frames `bytes` decode to when fed `chunk` bytes at a time, and how
/// the stream ended.
fn decode(bytes: &[u8], chunk: usize) -> (Vec<Frame>, Result<(), String>) {
    let mut decoder = Decoder::with_max_frame_len(MAX_FRAME_LEN);
    let mut frames = Vec::new();
    for piece in bytes.chunks(chunk) {
        match decoder.push(piece) {
            Ok(decoded) => frames.extend(decoded),
            Err(e) => return (frames, Err(e.to_string())),
        }
    }
    (frames, decoder.finish().map_err(|e| e.to_string()))
}
