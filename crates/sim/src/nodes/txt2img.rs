//! The text-to-image set: CheckpointLoaderSimple, CLIPTextEncode,
//! EmptyLatentImage, KSampler and VAEDecode, over the procedural painter
//! of `paint` instead of a diffusion model.
//!
//! KSampler takes `step_time` per step and reports each step as stock's
//! sampler callback does (`progress_state`, a preview, `progress`), with a
//! preview that sharpens from noise into the final picture. VAEDecode
//! paints that picture at full size.

use std::sync::Arc;
use std::time::Instant;

use super::{
    Call, Conditioning, Data, Failure, Latent, Output, Sampled, check_size, error, mismatch,
};
use crate::pixels::Image;

/// Previews fit in this many pixels a side: small enough to paint every
/// step, like stock's latent previews, which are 1/8 of the image.
const PREVIEW_SIDE: usize = 128;

pub(super) fn load_checkpoint(call: &Call<'_>) -> Result<Output, Failure> {
    let name: Arc<str> = call.string("ckpt_name")?.into();
    Ok(Output {
        values: vec![
            Data::Model(name.clone()),
            Data::Clip(name.clone()),
            Data::Vae(name),
        ],
        ui: None,
    })
}

pub(super) fn encode_text(call: &Call<'_>) -> Result<Output, Failure> {
    let text = call.string("text")?;
    let checkpoint = match call.link("clip")? {
        Data::Clip(name) => name.clone(),
        other => return Err(mismatch("clip", "CLIP", other)),
    };
    Ok(Output::one(Data::Conditioning(Arc::new(Conditioning {
        text,
        checkpoint,
    }))))
}

pub(super) fn empty_latent(call: &Call<'_>) -> Result<Output, Failure> {
    let latent = Latent {
        width: call.size("width")?,
        height: call.size("height")?,
        batch: call.size("batch_size")?,
        sampled: None,
    };
    Ok(Output::one(Data::Latent(Arc::new(latent))))
}

fn latent<'a>(call: &'a Call<'_>, name: &str) -> Result<&'a Latent, Failure> {
    match call.link(name)? {
        Data::Latent(latent) => Ok(latent),
        other => Err(mismatch(name, "LATENT", other)),
    }
}

fn conditioning<'a>(call: &'a Call<'_>, name: &str) -> Result<&'a Conditioning, Failure> {
    match call.link(name)? {
        Data::Conditioning(c) => Ok(c),
        other => Err(mismatch(name, "CONDITIONING", other)),
    }
}

/// The "sampler": `steps` timed steps, each reported with a preview.
/// `denoise` < 1 starts the previews partly formed, as img2img does.
pub(super) fn sample(call: &Call<'_>) -> Result<Output, Failure> {
    let checkpoint = match call.link("model")? {
        Data::Model(name) => name.clone(),
        other => return Err(mismatch("model", "MODEL", other)),
    };
    let seed = u64::try_from(call.int("seed")?)
        .map_err(|_| error("ValueError", "seed must be between 0 and 2^64 - 1"))?;
    let steps = u64::try_from(call.int("steps")?)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| error("ValueError", "steps must be at least 1"))?;
    let denoise = call.float("denoise")?.clamp(0.0, 1.0) as f32;
    let positive = conditioning(call, "positive")?;
    conditioning(call, "negative")?;
    let input = latent(call, "latent_image")?;

    let sampled = Sampled {
        checkpoint,
        text: positive.text.clone(),
        seed,
    };
    let scene = sampled.scene(0);
    let (width, height) = pixel_size(input);
    let scale = (PREVIEW_SIDE as f32 / width.max(height).max(1) as f32).min(1.0);
    let preview_w = ((width as f32 * scale).round() as usize).max(1);
    let preview_h = ((height as f32 * scale).round() as usize).max(1);
    for step in 1..=steps {
        let started = Instant::now();
        let t = step as f32 / steps as f32;
        let data = scene.render(
            width,
            height,
            preview_w,
            preview_h,
            1.0 - denoise * (1.0 - t),
            step,
        );
        let preview = Image {
            batch: 1,
            height: preview_h,
            width: preview_w,
            data,
        };
        // Painting the preview is part of the step's time.
        call.host
            .wait(call.host.step_time().saturating_sub(started.elapsed()));
        call.host.progress(step, steps, Some(&preview))?;
    }
    Ok(Output::one(Data::Latent(Arc::new(Latent {
        width: input.width,
        height: input.height,
        batch: input.batch,
        sampled: Some(sampled),
    }))))
}

/// A latent is 1/8 of the picture, so a decoded image is a multiple of 8.
fn pixel_size(latent: &Latent) -> (usize, usize) {
    (
        (latent.width / 8 * 8).max(8),
        (latent.height / 8 * 8).max(8),
    )
}

pub(super) fn decode(call: &Call<'_>) -> Result<Output, Failure> {
    let latent = latent(call, "samples")?;
    match call.link("vae")? {
        Data::Vae(_) => {}
        other => return Err(mismatch("vae", "VAE", other)),
    }
    let (width, height) = pixel_size(latent);
    check_size(latent.batch, height, width)?;
    let image = match &latent.sampled {
        Some(sampled) => {
            let mut data = Vec::with_capacity(latent.batch * height * width * 3);
            for index in 0..latent.batch {
                data.extend(
                    sampled
                        .scene(index)
                        .render(width, height, width, height, 1.0, 0),
                );
            }
            Image {
                batch: latent.batch,
                height,
                width,
                data,
            }
        }
        // An unsampled (all-zero) latent decodes to flat grey.
        None => Image::filled(latent.batch, height, width, [0.5; 3]),
    };
    Ok(Output::one(Data::Image(Arc::new(image))))
}
