//! The body of a `POST /v1/run` answer (`application/vnd.comfyume.stream`):
//! a sequence of frames `[kind: u8][len: u32 big-endian][payload: len bytes]`,
//! and the incremental [`Decoder`] the gateway reads it with.
//!
//! | kind | [`Frame`] | payload |
//! |---|---|---|
//! | 1 | `Progress` | JSON object: the worker's own state (`{"state": "waiting_for_comfyui", "waited_ms": 4000}`, `{"state": "queued", …}`, …) |
//! | 2 | `Text` | a ComfyUI WebSocket text frame of the job, verbatim (UTF-8) |
//! | 3 | `Binary` | a ComfyUI WebSocket binary frame of the job (previews), verbatim |
//! | 4 | `File` | `[hlen: u32 BE][{"filename","subfolder","type"} JSON][file bytes]` |
//! | 5 | `End` | `{"outcome": "success" \| "error" \| "interrupted"}` |
//! | 6 | `Error` | `{"message": "…", "rejected": <ComfyUI's 400 body> \| null}` |
//!
//! `End` and `Error` are terminal: nothing follows them. The full protocol,
//! with when each frame is sent, is in `docs/worker-protocol.md`.
//!
//! The decoder never trusts a length: it buffers only the bytes it was given
//! (a garbage header claiming 4 GiB allocates nothing), refuses frames over
//! its limit, and turns every malformed payload into a [`DecodeError`].

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The media type of the stream.
pub const CONTENT_TYPE: &str = "application/vnd.comfyume.stream";

/// The largest payload the worker sends and [`Decoder::new`] accepts
/// (1 GiB). Output files are sent whole, so this also bounds them.
pub const MAX_FRAME_LEN: usize = 1 << 30;

/// Kind byte + length.
const HEADER_LEN: usize = 5;

/// The kind bytes.
pub mod kind {
    pub const PROGRESS: u8 = 1;
    pub const TEXT: u8 = 2;
    pub const BINARY: u8 = 3;
    pub const FILE: u8 = 4;
    pub const END: u8 = 5;
    pub const ERROR: u8 = 6;
}

pub use crate::history::Outcome;

/// Where an output file lives on the backend, as named in `executed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    pub filename: String,
    pub subfolder: String,
    /// `output` or `temp`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Kind 1: the worker's own state.
    Progress(Map<String, Value>),
    /// Kind 2: a ComfyUI text frame of the job, verbatim.
    Text(String),
    /// Kind 3: a ComfyUI binary frame of the job, verbatim.
    Binary(Bytes),
    /// Kind 4: an output file, sent before the `executed` that names it.
    File { header: FileHeader, data: Bytes },
    /// Kind 5: the job ran to its end.
    End { outcome: Outcome },
    /// Kind 6: the job could not run; `rejected` is ComfyUI's 400 body when
    /// `POST /prompt` refused it.
    Error {
        message: String,
        rejected: Option<Value>,
    },
}

#[derive(Serialize, Deserialize)]
struct EndBody {
    outcome: Outcome,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
    #[serde(default)]
    rejected: Option<Value>,
}

/// A frame too large to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a kind-{kind} frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
pub struct EncodeError {
    pub kind: u8,
    pub len: usize,
}

impl Frame {
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Progress(_) => kind::PROGRESS,
            Frame::Text(_) => kind::TEXT,
            Frame::Binary(_) => kind::BINARY,
            Frame::File { .. } => kind::FILE,
            Frame::End { .. } => kind::END,
            Frame::Error { .. } => kind::ERROR,
        }
    }

    /// `End` and `Error` close the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Frame::End { .. } | Frame::Error { .. })
    }

    /// The frame on the wire, header included.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let kind = self.kind();
        match self {
            Frame::Progress(map) => frame(kind, &[&to_json(map)]),
            Frame::Text(text) => frame(kind, &[text.as_bytes()]),
            Frame::Binary(bytes) => frame(kind, &[bytes]),
            Frame::File { header, data } => {
                let header = to_json(header);
                let hlen = (header.len() as u32).to_be_bytes();
                frame(kind, &[&hlen, &header, data])
            }
            Frame::End { outcome } => frame(kind, &[&to_json(&EndBody { outcome: *outcome })]),
            Frame::Error { message, rejected } => {
                let body = serde_json::json!({"message": message, "rejected": rejected});
                frame(kind, &[&to_json(&body)])
            }
        }
    }
}

/// Only string-keyed maps, strings and plain structs are serialised here,
/// which serde_json cannot fail on.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// `[kind][len][parts…]`.
fn frame(kind: u8, parts: &[&[u8]]) -> Result<Bytes, EncodeError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_FRAME_LEN {
        return Err(EncodeError { kind, len });
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(&[kind]);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(out.freeze())
}

/// Why a byte stream is not a valid worker stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("a kind-{kind} frame claims {len} bytes, over the {max}-byte limit")]
    TooLong { kind: u8, len: usize, max: usize },
    #[error("a malformed kind-{kind} frame: {reason}")]
    BadPayload { kind: u8, reason: String },
    #[error("data after the stream's final frame")]
    AfterEnd,
    #[error("the stream ended inside a frame ({buffered} bytes of it received)")]
    Truncated { buffered: usize },
    #[error("the stream ended without an END or ERROR frame")]
    NoEnd,
}

/// Turns the stream's bytes, in chunks split anywhere, back into frames.
///
/// ```
/// use comfyume_protocol::worker::stream::{Decoder, Frame, Outcome};
/// let bytes = Frame::End { outcome: Outcome::Success }.encode().unwrap();
/// let mut decoder = Decoder::new();
/// let mut frames = decoder.push(&bytes[..3]).unwrap();
/// frames.extend(decoder.push(&bytes[3..]).unwrap());
/// assert_eq!(frames, vec![Frame::End { outcome: Outcome::Success }]);
/// decoder.finish().unwrap();
/// ```
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_frame_len: usize,
    ended: bool,
    /// Sticky: once the stream is known bad, every later call says so.
    failed: Option<DecodeError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }

    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame_len,
            ended: false,
            failed: None,
        }
    }

    /// Feeds the next bytes; returns the frames they complete.
    ///
    /// When the bytes hold complete frames followed by something invalid,
    /// those frames are returned and the error comes from the next call
    /// (`push` or [`finish`](Self::finish)), so no good frame is lost.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        loop {
            match self.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return Ok(frames),
                Err(e) => {
                    self.failed = Some(e.clone());
                    return if frames.is_empty() {
                        Err(e)
                    } else {
                        Ok(frames)
                    };
                }
            }
        }
    }

    /// Whether a terminal frame (END or ERROR) was decoded.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Call at the end of the byte stream: an error unless it ended cleanly
    /// right after a terminal frame.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.buf.is_empty() {
            return Err(if self.ended {
                DecodeError::AfterEnd
            } else {
                DecodeError::Truncated {
                    buffered: self.buf.len(),
                }
            });
        }
        if !self.ended {
            return Err(DecodeError::NoEnd);
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let Some(&kind) = self.buf.first() else {
            return Ok(None);
        };
        if self.ended {
            return Err(DecodeError::AfterEnd);
        }
        // Refuse a bad kind at once rather than waiting for its "payload".
        if !(kind::PROGRESS..=kind::ERROR).contains(&kind) {
            return Err(DecodeError::UnknownKind(kind));
        }
        let Some(len) = self.buf.get(1..HEADER_LEN).map(be_u32) else {
            return Ok(None);
        };
        if len > self.max_frame_len {
            return Err(DecodeError::TooLong {
                kind,
                len,
                max: self.max_frame_len,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        let frame = parse(kind, payload)?;
        self.ended = frame.is_terminal();
        Ok(Some(frame))
    }
}

/// A big-endian u32 from exactly four bytes, as a length.
fn be_u32(b: &[u8]) -> usize {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[..4]);
    u32::from_be_bytes(word) as usize
}

fn parse(kind: u8, payload: Bytes) -> Result<Frame, DecodeError> {
    let bad = |reason: String| DecodeError::BadPayload { kind, reason };
    let json_err = |e: serde_json::Error| bad(e.to_string());
    Ok(match kind {
        kind::PROGRESS => match serde_json::from_slice::<Value>(&payload).map_err(json_err)? {
            Value::Object(map) => Frame::Progress(map),
            _ => return Err(bad("not a JSON object".into())),
        },
        kind::TEXT => match std::str::from_utf8(&payload) {
            Ok(text) => Frame::Text(text.to_owned()),
            Err(e) => return Err(bad(e.to_string())),
        },
        kind::BINARY => Frame::Binary(payload),
        kind::FILE => {
            let hlen = payload
                .get(..4)
                .map(be_u32)
                .ok_or_else(|| bad("shorter than its header length".into()))?;
            let header = payload
                .get(4..)
                .and_then(|rest| rest.get(..hlen))
                .ok_or_else(|| bad("header longer than the frame".into()))?;
            let header: FileHeader = serde_json::from_slice(header).map_err(json_err)?;
            Frame::File {
                header,
                data: payload.slice(4 + hlen..),
            }
        }
        kind::END => {
            let body: EndBody = serde_json::from_slice(&payload).map_err(json_err)?;
            Frame::End {
                outcome: body.outcome,
            }
        }
        kind::ERROR => {
            let body: ErrorBody = serde_json::from_slice(&payload).map_err(json_err)?;
            Frame::Error {
                message: body.message,
                rejected: body.rejected,
            }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn encode_all(frames: &[Frame]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| f.encode().expect("small frame").to_vec())
            .collect()
    }

    /// Decodes `bytes` fed in pieces cut at `cuts`.
    fn decode_split(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, DecodeError> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut decoder = Decoder::new();
        let mut frames = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            frames.extend(decoder.push(&bytes[start..cut])?);
            start = cut;
        }
        decoder.finish()?;
        Ok(frames)
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-z0-9 _./é{}\":\\[\\]-]{0,40}"
    }

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            text().prop_map(Value::String),
            any::<i64>().prop_map(|n| json!(n)),
            any::<bool>().prop_map(Value::Bool),
            prop::collection::vec(text(), 0..4).prop_map(|v| json!(v)),
        ]
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::Error),
            Just(Outcome::Interrupted)
        ]
    }

    fn middle_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            prop::collection::btree_map(text(), json_value(), 0..5)
                .prop_map(|m| Frame::Progress(m.into_iter().collect())),
            text().prop_map(Frame::Text),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| Frame::Binary(b.into())),
            (
                text(),
                text(),
                text(),
                prop::collection::vec(any::<u8>(), 0..600)
            )
                .prop_map(|(filename, subfolder, kind, data)| Frame::File {
                    header: FileHeader {
                        filename,
                        subfolder,
                        kind
                    },
                    data: data.into(),
                }),
        ]
    }

    fn last_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            outcome().prop_map(|outcome| Frame::End { outcome }),
            (text(), prop::option::of(json_value()))
                .prop_map(|(message, rejected)| { Frame::Error { message, rejected } }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips_whatever_the_chunking(
            middle in prop::collection::vec(middle_frame(), 0..8),
            last in last_frame(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut frames = middle;
            frames.push(last);
            let bytes = encode_all(&frames);
            prop_assert_eq!(decode_split(&bytes, &cuts), Ok(frames));
        }

        #[test]
        fn garbage_never_panics_and_never_passes_as_a_stream(
            garbage in prop::collection::vec(any::<u8>(), 0..400),
            cuts in prop::collection::vec(any::<usize>(), 0..6),
        ) {
            // Whatever the bytes, decoding returns; if it succeeds, the
            // stream really ended on a terminal frame.
            if let Ok(frames) = decode_split(&garbage, &cuts) {
                prop_assert!(frames.last().is_some_and(Frame::is_terminal));
            }
        }

        #[test]
        fn a_bad_kind_byte_is_an_error(
            first in prop_oneof![Just(0u8), 7u8..=255],
            rest in prop::collection::vec(any::<u8>(), 0..64),
            cuts in prop::collection::vec(any::<usize>(), 0..4),
        ) {
            let mut bytes = vec![first];
            bytes.extend(rest);
            prop_assert_eq!(decode_split(&bytes, &cuts), Err(DecodeError::UnknownKind(first)));
        }

        #[test]
        fn a_cut_short_stream_is_an_error(
            middle in prop::collection::vec(middle_frame(), 0..4),
            last in last_frame(),
            keep in any::<usize>(),
        ) {
            let mut frames = middle;
            frames.push(last);
            let bytes = encode_all(&frames);
            let keep = keep % bytes.len();
            prop_assert!(decode_split(&bytes[..keep], &[]).is_err());
        }
    }

    fn raw(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend((payload.len() as u32).to_be_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn malformed_payloads_are_named() {
        let cases: Vec<(Vec<u8>, u8)> = vec![
            (raw(kind::PROGRESS, b"[1]"), kind::PROGRESS),
            (raw(kind::PROGRESS, b"{"), kind::PROGRESS),
            (raw(kind::TEXT, &[0xff, 0xfe]), kind::TEXT),
            (raw(kind::FILE, &[0, 0]), kind::FILE),
            (raw(kind::FILE, &[0, 0, 0, 9, b'{']), kind::FILE),
            (raw(kind::FILE, &[0, 0, 0, 2, b'{', b'}']), kind::FILE),
            (raw(kind::END, br#"{"outcome":"maybe"}"#), kind::END),
            (raw(kind::ERROR, br#"{"rejected":null}"#), kind::ERROR),
        ];
        for (bytes, kind) in cases {
            let mut decoder = Decoder::new();
            match decoder.push(&bytes) {
                Err(DecodeError::BadPayload { kind: k, .. }) => assert_eq!(k, kind),
                other => panic!("kind {kind}: {other:?}"),
            }
            // Sticky.
            assert!(decoder.push(&[]).is_err());
            assert!(decoder.finish().is_err());
        }
    }

    #[test]
    fn lengths_over_the_limit_are_refused_before_buffering() {
        let mut decoder = Decoder::with_max_frame_len(10);
        let header = [kind::BINARY, 0, 0, 0, 11];
        assert_eq!(
            decoder.push(&header),
            Err(DecodeError::TooLong {
                kind: kind::BINARY,
                len: 11,
                max: 10
            })
        );
        let mut decoder = Decoder::new();
        assert_eq!(decoder.push(&[kind::FILE, 0xff, 0xff, 0xff, 0xff]), {
            Err(DecodeError::TooLong {
                kind: kind::FILE,
                len: u32::MAX as usize,
                max: MAX_FRAME_LEN,
            })
        });
    }

    #[test]
    fn frames_before_an_error_are_kept() {
        let mut bytes = encode_all(&[
            Frame::Text("{}".into()),
            Frame::End {
                outcome: Outcome::Success,
            },
        ]);
        bytes.extend(encode_all(&[Frame::Text("late".into())]));
        let mut decoder = Decoder::new();
        let frames = decoder.push(&bytes).expect("the good frames");
        assert_eq!(frames.len(), 2);
        assert!(decoder.is_ended());
        assert_eq!(decoder.finish(), Err(DecodeError::AfterEnd));
    }

    #[test]
    fn a_stream_without_its_end_is_an_error() {
        let bytes = encode_all(&[Frame::Text("{}".into())]);
        assert_eq!(decode_split(&bytes, &[]), Err(DecodeError::NoEnd));
        assert_eq!(
            decode_split(&bytes[..4], &[]),
            Err(DecodeError::Truncated { buffered: 4 })
        );
    }

    #[test]
    fn wire_shapes_are_the_documented_ones() {
        let end = Frame::End {
            outcome: Outcome::Interrupted,
        }
        .encode()
        .expect("small");
        assert_eq!(
            &end[..],
            &raw(kind::END, br#"{"outcome":"interrupted"}"#)[..]
        );
        let file = Frame::File {
            header: FileHeader {
                filename: "a.png".into(),
                subfolder: "".into(),
                kind: "output".into(),
            },
            data: Bytes::from_static(b"PNG"),
        }
        .encode()
        .expect("small");
        let header = br#"{"filename":"a.png","subfolder":"","type":"output"}"#;
        let mut payload = (header.len() as u32).to_be_bytes().to_vec();
        payload.extend(header);
        payload.extend(b"PNG");
        assert_eq!(&file[..], &raw(kind::FILE, &payload)[..]);
        let error = Frame::Error {
            message: "no".into(),
            rejected: None,
        }
        .encode()
        .expect("small");
        assert_eq!(
            &error[..],
            &raw(kind::ERROR, br#"{"message":"no","rejected":null}"#)[..]
        );
    }
}
