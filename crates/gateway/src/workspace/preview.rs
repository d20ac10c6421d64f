//! What ComfyUI's `/view` does to an image when asked: `preview=<format>;
//! <quality>` re-encodes it (small thumbnails for the queue panel), and
//! `channel=rgb|a` splits off its colour or its alpha (the mask editor
//! paints on the two). Pure functions over the file's bytes; the caller
//! runs them off the async threads.
//!
//! Previews are lossy at the quality asked for, as Pillow writes them:
//! JPEG with the `image` crate's encoder, WebP with libwebp (the library
//! Pillow uses, built from source into the binary), so thumbnails stay
//! small.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits, RgbaImage};

/// The largest image converted (each side; libwebp's own limit is 16,383),
/// the memory its decode may take, and the largest file read for it: a
/// workshop's outputs are far below all three, and a conversion holds
/// about three copies of the pixels at once.
const MAX_SIDE: u32 = 8192;
const MAX_DECODE_BYTES: u64 = 288 * 1024 * 1024;
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// What the query asked of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    /// `preview=…`: re-encoded as WebP or JPEG.
    Preview { jpeg: bool, quality: u8, rgb: bool },
    /// `channel=rgb`: the colour, as PNG.
    Rgb,
    /// `channel=a`: the alpha as a black image's alpha, as PNG.
    Alpha,
}

impl Conversion {
    /// ComfyUI's reading of `preview` and `channel`; `None` serves the
    /// file as it is (`channel` absent or `rgba`, or anything else).
    pub fn from_query(preview: Option<&str>, channel: Option<&str>) -> Option<Conversion> {
        let channel = channel.unwrap_or("");
        if let Some(preview) = preview {
            let parts: Vec<&str> = preview.split(';').collect();
            let jpeg = parts[0] == "jpeg" && !channel.contains('a');
            let last = parts[parts.len() - 1];
            // Python's isdigit(), then int(): digits only.
            let quality = if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
                last.parse::<u32>().map_or(100, |q| q.min(100)) as u8
            } else {
                90
            };
            return Some(Conversion::Preview {
                jpeg,
                quality,
                rgb: jpeg || channel == "rgb",
            });
        }
        match channel {
            "rgb" => Some(Conversion::Rgb),
            "a" => Some(Conversion::Alpha),
            _ => None,
        }
    }

    /// The converted image's bytes and content type.
    pub fn apply(&self, bytes: &[u8]) -> Result<(Vec<u8>, &'static str), PreviewError> {
        let image = decode(bytes)?;
        let mut out = Cursor::new(Vec::new());
        let content_type = match self {
            Conversion::Preview {
                jpeg: true,
                quality,
                ..
            } => {
                let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
                let encoder =
                    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, (*quality).max(1));
                rgb.write_with_encoder(encoder)
                    .map_err(PreviewError::Encode)?;
                "image/jpeg"
            }
            Conversion::Preview {
                jpeg: false,
                rgb,
                quality,
            } => {
                let (width, height) = (image.width(), image.height());
                let encoded = if *rgb {
                    let pixels = image.to_rgb8();
                    webp::Encoder::from_rgb(&pixels, width, height)
                        .encode_simple(false, f32::from(*quality))
                } else {
                    let pixels = image.to_rgba8();
                    webp::Encoder::from_rgba(&pixels, width, height)
                        .encode_simple(false, f32::from(*quality))
                };
                let encoded = encoded.map_err(|e| PreviewError::WebP(format!("{e:?}")))?;
                out.get_mut().extend_from_slice(&encoded);
                "image/webp"
            }
            Conversion::Rgb => {
                DynamicImage::ImageRgb8(image.to_rgb8())
                    .write_to(&mut out, ImageFormat::Png)
                    .map_err(PreviewError::Encode)?;
                "image/png"
            }
            Conversion::Alpha => {
                let (width, height) = (image.width(), image.height());
                let alpha: Vec<u8> = if image.color().has_alpha() {
                    image.to_rgba8().pixels().map(|p| p.0[3]).collect()
                } else {
                    vec![255; (width as usize) * (height as usize)]
                };
                let mut mask = RgbaImage::new(width, height);
                for (pixel, a) in mask.pixels_mut().zip(alpha) {
                    pixel.0 = [0, 0, 0, a];
                }
                DynamicImage::ImageRgba8(mask)
                    .write_to(&mut out, ImageFormat::Png)
                    .map_err(PreviewError::Encode)?;
                "image/png"
            }
        };
        Ok((out.into_inner(), content_type))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("the file is too large to convert ({size} bytes; at most {MAX_FILE_BYTES})")]
    TooLarge { size: u64 },
    #[error("the file is not an image this server can convert: {0}")]
    Decode(image::ImageError),
    #[error("the image could not be re-encoded: {0}")]
    Encode(image::ImageError),
    #[error("the image could not be encoded as WebP: {0}")]
    WebP(String),
}

fn decode(bytes: &[u8]) -> Result<DynamicImage, PreviewError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreviewError::Decode(image::ImageError::IoError(e)))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    reader.decode().map_err(PreviewError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    fn rgba_png() -> Vec<u8> {
        let mut img = RgbaImage::new(2, 1);
        img.put_pixel(0, 0, Rgba([255, 0, 0, 128]));
        img.put_pixel(1, 0, Rgba([0, 255, 0, 255]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(img)
            .write_to(&mut out, ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn reads_the_query_as_comfyui_does() {
        let c = Conversion::from_query;
        assert_eq!(c(None, None), None);
        assert_eq!(c(None, Some("rgba")), None);
        assert_eq!(c(None, Some("rgb")), Some(Conversion::Rgb));
        assert_eq!(c(None, Some("a")), Some(Conversion::Alpha));
        assert_eq!(
            c(Some("jpeg;50"), None),
            Some(Conversion::Preview {
                jpeg: true,
                quality: 50,
                rgb: true
            })
        );
        assert_eq!(
            c(Some("webp"), None),
            Some(Conversion::Preview {
                jpeg: false,
                quality: 90,
                rgb: false
            })
        );
        // Another format, or an alpha channel asked for: WebP.
        assert_eq!(
            c(Some("gif;70"), None),
            Some(Conversion::Preview {
                jpeg: false,
                quality: 70,
                rgb: false
            })
        );
        assert_eq!(
            c(Some("jpeg;80"), Some("rgba")),
            Some(Conversion::Preview {
                jpeg: false,
                quality: 80,
                rgb: false
            })
        );
        assert_eq!(
            c(Some("webp;x"), Some("rgb")),
            Some(Conversion::Preview {
                jpeg: false,
                quality: 90,
                rgb: true
            })
        );
    }

    #[test]
    fn splits_colour_and_alpha() {
        let (png, kind) = Conversion::Rgb.apply(&rgba_png()).unwrap();
        assert_eq!(kind, "image/png");
        let rgb = image::load_from_memory(&png).unwrap();
        assert!(!rgb.color().has_alpha());
        assert_eq!(rgb.to_rgb8().get_pixel(0, 0).0, [255, 0, 0]);

        let (png, _) = Conversion::Alpha.apply(&rgba_png()).unwrap();
        let alpha = image::load_from_memory(&png).unwrap().to_rgba8();
        assert_eq!(alpha.get_pixel(0, 0).0, [0, 0, 0, 128]);
        assert_eq!(alpha.get_pixel(1, 0).0, [0, 0, 0, 255]);
    }

    #[test]
    fn previews_are_jpeg_or_webp() {
        let jpeg = Conversion::from_query(Some("jpeg;60"), None).unwrap();
        let (bytes, kind) = jpeg.apply(&rgba_png()).unwrap();
        assert_eq!(kind, "image/jpeg");
        assert_eq!(image::guess_format(&bytes).unwrap(), ImageFormat::Jpeg);
        let webp = Conversion::from_query(Some("webp;90"), None).unwrap();
        let (bytes, kind) = webp.apply(&rgba_png()).unwrap();
        assert_eq!(kind, "image/webp");
        assert_eq!(image::guess_format(&bytes).unwrap(), ImageFormat::WebP);
        // Lossy at the quality asked for: a noisy picture shrinks as the
        // quality drops, below its PNG.
        let mut noisy = RgbaImage::new(256, 256);
        for (i, p) in noisy.pixels_mut().enumerate() {
            let v = (i.wrapping_mul(2_654_435_761) >> 7) as u8;
            *p = Rgba([v, v.wrapping_mul(3), v.wrapping_add(91), 255]);
        }
        let mut png = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(noisy)
            .write_to(&mut png, ImageFormat::Png)
            .unwrap();
        let size = |q: &str| {
            Conversion::from_query(Some(&format!("webp;{q}")), None)
                .unwrap()
                .apply(png.get_ref())
                .unwrap()
                .0
                .len()
        };
        assert!(size("20") < size("95"), "{} vs {}", size("20"), size("95"));
        assert!(size("95") < png.get_ref().len(), "smaller than the PNG");
        assert!(matches!(
            Conversion::Rgb.apply(b"not an image"),
            Err(PreviewError::Decode(_))
        ));
        // Past the size bound: refused, not decoded.
        let mut wide = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(RgbaImage::new(MAX_SIDE + 1, 1))
            .write_to(&mut wide, ImageFormat::Png)
            .unwrap();
        assert!(matches!(
            webp.apply(wide.get_ref()),
            Err(PreviewError::Decode(_))
        ));
    }
}
