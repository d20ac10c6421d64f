//! PNG files in and out: SaveImage/PreviewImage files with their text
//! chunks, preview frames, and LoadImage's decoding of uploads.
//!
//! Text chunks hold JSON written the way Python's `json.dumps` writes it
//! (`", "` and `": "` separators, non-ASCII escaped), because that is what
//! stock embeds and what tools that read ComfyUI PNGs expect; it also keeps
//! tEXt chunks within Latin-1 as the format requires.

use std::io::Cursor;

use serde_json::Value;

use super::pixels::{Image, Mask};

/// How hard to compress: stock saves with zlib level 4 and previews with 1.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Effort {
    Fast,
    Balanced,
}

/// Encodes one 8-bit RGB picture, with `text` as tEXt chunks in order.
pub(crate) fn encode_rgb8(
    width: usize,
    height: usize,
    rgb: &[u8],
    text: &[(String, String)],
    effort: Effort,
) -> Result<Vec<u8>, String> {
    let (w, h) = dims(width, height)?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(match effort {
        Effort::Fast => png::Compression::Fast,
        Effort::Balanced => png::Compression::Balanced,
    });
    for (keyword, value) in text {
        encoder
            .add_text_chunk(keyword.clone(), value.clone())
            .map_err(|e| format!("PNG text chunk {keyword:?}: {e}"))?;
    }
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Encodes the `index`-th image of a batch, truncating to 8 bits as stock.
pub(crate) fn encode_image(
    image: &Image,
    index: usize,
    text: &[(String, String)],
    effort: Effort,
) -> Result<Vec<u8>, String> {
    encode_rgb8(
        image.width,
        image.height,
        &image.to_rgb8(index),
        text,
        effort,
    )
}

/// Encodes 8-bit RGBA (for `/view?channel=a`).
pub(crate) fn encode_rgba8(width: usize, height: usize, rgba: &[u8]) -> Result<Vec<u8>, String> {
    let (w, h) = dims(width, height)?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgba).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fn dims(width: usize, height: usize) -> Result<(u32, u32), String> {
    match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(format!("cannot encode a {width}x{height} image as PNG")),
    }
}

/// A decoded file: its pixels, and the alpha channel if it had one.
pub(crate) struct Decoded {
    pub image: Image,
    /// Alpha in [0, 1] per pixel, when the file carries transparency.
    pub alpha: Option<Vec<f32>>,
}

impl Decoded {
    /// LoadImage's MASK: `1 - alpha`, or stock's 64×64 zeros without alpha.
    pub fn mask(&self) -> Mask {
        match &self.alpha {
            Some(alpha) => Mask {
                batch: 1,
                height: self.image.height,
                width: self.image.width,
                data: alpha.iter().map(|a| 1.0 - a).collect(),
            },
            None => Mask::zeros(1, 64, 64),
        }
    }
}

/// Decodes a PNG of any colour type and depth to RGB (+ alpha).
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let size = reader
        .output_buffer_size()
        .ok_or("the PNG is too large to decode")?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let pixels = &buf[..frame.buffer_size()];
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("unexpanded palette".into()),
    };
    // Stock (PIL) takes a mask only from a real alpha channel or a
    // palette's transparency, not from tRNS on grey or RGB files.
    let info = reader.info();
    let has_alpha = match info.color_type {
        png::ColorType::GrayscaleAlpha | png::ColorType::Rgba => true,
        png::ColorType::Indexed => info.trns.is_some(),
        _ => false,
    };
    let row = frame.line_size;
    let mut data = Vec::with_capacity(width * height * 3);
    let mut alpha = has_alpha.then(|| Vec::with_capacity(width * height));
    for y in 0..height {
        for x in 0..width {
            let px = &pixels[y * row + x * channels..][..channels];
            let (rgb, a) = match channels {
                1 => ([px[0]; 3], 255),
                2 => ([px[0]; 3], px[1]),
                3 => ([px[0], px[1], px[2]], 255),
                _ => ([px[0], px[1], px[2]], px[3]),
            };
            data.extend(rgb.iter().map(|v| f32::from(*v) / 255.0));
            if let Some(alpha) = &mut alpha {
                alpha.push(f32::from(a) / 255.0);
            }
        }
    }
    Ok(Decoded {
        image: Image {
            batch: 1,
            height,
            width,
            data,
        },
        alpha,
    })
}

/// The tEXt chunks of a PNG, in file order.
#[cfg(test)]
pub(crate) fn text_chunks(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let decoder = png::Decoder::new(Cursor::new(bytes));
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    // Text after the image data is only seen once the frame is read.
    let size = reader.output_buffer_size().ok_or("the PNG is too large")?;
    let mut buf = vec![0u8; size];
    reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    reader.finish().map_err(|e| e.to_string())?;
    Ok(reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect())
}

/// `json.dumps(value)` as Python writes it.
pub(crate) fn python_json(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serialising a Value into a Vec cannot fail.
    let _ = serde::Serialize::serialize(value, &mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// serde_json's compact output with Python's separators and `ensure_ascii`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn python_json_matches_json_dumps() {
        let value = json!({"a": [1, 2.5, "é😀"], "b": {"c": null, "d": true}});
        assert_eq!(
            python_json(&value),
            r#"{"a": [1, 2.5, "\u00e9\ud83d\ude00"], "b": {"c": null, "d": true}}"#
        );
    }

    #[test]
    fn round_trips_pixels_and_text() {
        let rgb: Vec<u8> = (0..2 * 3 * 3).map(|v| (v * 13) as u8).collect();
        let text = vec![("prompt".to_owned(), "{\"1\": {}}".to_owned())];
        let bytes = encode_rgb8(3, 2, &rgb, &text, Effort::Balanced).expect("encode");
        let decoded = decode(&bytes).expect("decode");
        assert_eq!((decoded.image.width, decoded.image.height), (3, 2));
        assert!(decoded.alpha.is_none());
        assert_eq!(decoded.image.to_rgb8(0), rgb);
        assert_eq!(decoded.mask(), Mask::zeros(1, 64, 64));
        assert_eq!(text_chunks(&bytes).expect("chunks"), text);
    }

    #[test]
    fn alpha_becomes_an_inverted_mask() {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 2, 1);
        encoder.set_color(png::ColorType::Rgba);
        let mut writer = encoder.write_header().expect("header");
        writer
            .write_image_data(&[10, 20, 30, 255, 40, 50, 60, 0])
            .expect("data");
        writer.finish().expect("finish");
        let decoded = decode(&out).expect("decode");
        assert_eq!(decoded.mask().data, [0.0, 1.0]);
        assert_eq!(decoded.image.to_rgb8(0), [10, 20, 30, 40, 50, 60]);
    }

    #[test]
    fn rejects_non_png() {
        assert!(decode(b"GIF89a not a png").is_err());
    }
}
