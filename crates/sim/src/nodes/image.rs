//! The weight-free image nodes: EmptyImage, ImageInvert, ImageBlur,
//! ImageScale, ImageScaleBy and ImageFlip, with stock's argument handling
//! (S:nodes.py, S:comfy_extras/nodes_post_processing.py, nodes_images.py).

use std::sync::Arc;

use super::{Call, Data, Failure, Output, check_size, error};
use crate::pixels::{Image, Resample};

pub(super) fn empty_image(call: &Call<'_>) -> Result<Output, Failure> {
    let width = call.size("width")?;
    let height = call.size("height")?;
    let batch = call.size("batch_size")?;
    let color = call.int("color")?;
    check_size(batch, height, width)?;
    let channel = |shift: u32| ((color >> shift) & 0xFF) as f32 / 255.0;
    let image = Image::filled(batch, height, width, [channel(16), channel(8), channel(0)]);
    Ok(Output::one(Data::Image(Arc::new(image))))
}

pub(super) fn invert(call: &Call<'_>) -> Result<Output, Failure> {
    let image = call.image("image")?;
    Ok(Output::one(Data::Image(Arc::new(image.inverted()))))
}

pub(super) fn blur(call: &Call<'_>) -> Result<Output, Failure> {
    let image = call.image("image")?;
    let radius = call.size("blur_radius")?;
    let sigma = call.float("sigma")? as f32;
    if radius == 0 {
        return Ok(Output::one(Data::Image(image)));
    }
    Ok(Output::one(Data::Image(Arc::new(
        image.blurred(radius, sigma),
    ))))
}

fn method(call: &Call<'_>) -> Result<Resample, Failure> {
    let name = call.string("upscale_method")?;
    Resample::parse(&name)
        .ok_or_else(|| error("ValueError", format!("unknown upscale_method {name:?}")))
}

/// `ImageScale`: 0 for one side keeps the aspect ratio; 0 for both keeps
/// the image as it is.
pub(super) fn scale(call: &Call<'_>) -> Result<Output, Failure> {
    let image = call.image("image")?;
    let method = method(call)?;
    let mut width = call.size("width")?;
    let mut height = call.size("height")?;
    let center = call.string("crop")? == "center";
    if width == 0 && height == 0 {
        return Ok(Output::one(Data::Image(image)));
    }
    if width == 0 {
        width = py_round(image.width as f64 * height as f64 / image.height.max(1) as f64).max(1);
    } else if height == 0 {
        height = py_round(image.height as f64 * width as f64 / image.width.max(1) as f64).max(1);
    }
    check_size(image.batch, height, width)?;
    Ok(Output::one(Data::Image(Arc::new(
        image.upscaled(width, height, method, center),
    ))))
}

pub(super) fn scale_by(call: &Call<'_>) -> Result<Output, Failure> {
    let image = call.image("image")?;
    let method = method(call)?;
    let factor = call.float("scale_by")?;
    let width = py_round(image.width as f64 * factor);
    let height = py_round(image.height as f64 * factor);
    if width == 0 || height == 0 {
        // torch.nn.functional.interpolate's own complaint.
        return Err(error(
            "RuntimeError",
            format!(
                "Input and output sizes should be greater than 0, but got input (H: {}, W: {}) \
                 output (H: {height}, W: {width})",
                image.height, image.width
            ),
        ));
    }
    check_size(image.batch, height, width)?;
    Ok(Output::one(Data::Image(Arc::new(
        image.upscaled(width, height, method, false),
    ))))
}

pub(super) fn flip(call: &Call<'_>) -> Result<Output, Failure> {
    let image = call.image("image")?;
    let vertically = call.string("flip_method")?.starts_with("x-axis");
    Ok(Output::one(Data::Image(Arc::new(
        image.flipped(vertically),
    ))))
}

/// Python's `round()` to an integer: halves go to the even neighbour.
fn py_round(v: f64) -> usize {
    if v.is_finite() && v > 0.0 {
        v.round_ties_even() as usize
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(3.5), 4);
        assert_eq!(py_round(0.4), 0);
        assert_eq!(py_round(f64::NAN), 0);
    }
}
