//! The simulated diffusion model: a procedural painter.
//!
//! A [`Scene`] is fixed by the checkpoint name, the positive prompt text and
//! the seed. It paints domain-warped fractal noise (value noise, warped
//! twice, after Inigo Quilez's "warp" technique) through a four-colour
//! palette chosen from a hash of the checkpoint and text, with a few words
//! ("sunset", "forest", "ocean", ...) steering the hue. Coordinates are
//! normalised to the picture's height, so a preview rendered small shows
//! the same picture as the final one. [`Scene::render`] also draws the
//! in-between states a sampler passes through: coarse structure first,
//! finer octaves later, fading out of seeded noise.
//!
//! Nothing here depends on the sampler, scheduler, cfg or negative prompt;
//! the picture is a pure function of (seed, positive text, checkpoint,
//! size).

use sha2::{Digest, Sha256};

/// Octaves of the finished picture; previews use fewer.
const OCTAVES: u32 = 5;

/// Words that steer the base hue (degrees), so prompts look like themselves.
const HUE_WORDS: &[(&str, f32)] = &[
    ("sunset", 22.0),
    ("fire", 12.0),
    ("autumn", 30.0),
    ("desert", 38.0),
    ("gold", 45.0),
    ("forest", 120.0),
    ("jungle", 105.0),
    ("grass", 95.0),
    ("ocean", 200.0),
    ("sea", 195.0),
    ("sky", 210.0),
    ("ice", 190.0),
    ("night", 235.0),
    ("space", 255.0),
    ("lavender", 270.0),
    ("rose", 335.0),
    ("cherry", 345.0),
];

/// Everything that decides a picture except its size.
#[derive(Clone, Debug)]
pub(crate) struct Scene {
    seed: u64,
    palette: [[f32; 3]; 4],
    /// How far the domain warp pushes (2.5 ..= 4.5).
    warp: f32,
    /// Feature size: noise cells across the picture's height.
    frequency: f32,
    /// Where the noise field starts, so equal seeds with other text differ.
    offset: [f32; 2],
    /// A soft light: centre (x, y as fractions) and radius.
    glow: [f32; 3],
}

impl Scene {
    pub fn new(checkpoint: &str, text: &str, seed: u64) -> Scene {
        let mut hasher = Sha256::new();
        hasher.update(checkpoint.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let unit = |i: usize| f32::from(digest[i]) / 255.0;

        let lower = text.to_lowercase();
        let word_hue = HUE_WORDS
            .iter()
            .find(|(word, _)| lower.contains(word))
            .map(|(_, hue)| hue + (unit(0) - 0.5) * 20.0);
        let hue = word_hue.unwrap_or(unit(0) * 360.0);
        // The picture stays in the base hue's family (dark, mid, light);
        // the harmony's accent (analogous, split-complementary, triadic or
        // complementary) only tints the swirls, so colours never mix to grey.
        let spread = [35.0, 150.0, 120.0, 180.0][usize::from(digest[1] % 4)];
        let side = if digest[2] % 2 == 0 { 1.0 } else { -1.0 };
        let palette = [
            hsv(
                hue + 8.0 * (unit(3) - 0.5),
                0.75 + 0.2 * unit(4),
                0.12 + 0.1 * unit(5),
            ),
            hsv(hue, 0.65 + 0.25 * unit(6), 0.5 + 0.2 * unit(7)),
            hsv(
                hue + side * (20.0 + 20.0 * unit(8)),
                0.3 + 0.25 * unit(9),
                0.92 + 0.08 * unit(10),
            ),
            hsv(
                hue + side * spread,
                0.6 + 0.3 * unit(15),
                0.8 + 0.2 * unit(16),
            ),
        ];
        Scene {
            seed,
            palette,
            warp: 2.5 + 2.0 * unit(11),
            frequency: 1.6 + 1.6 * unit(12),
            offset: [unit(13) * 97.0, unit(14) * 89.0],
            glow: [
                0.2 + 0.6 * unit(17),
                0.15 + 0.5 * unit(18),
                0.25 + 0.3 * unit(19),
            ],
        }
    }

    /// Paints `out_width` × `out_height` pixels (H × W × 3, values in [0, 1])
    /// of a `width` × `height` picture, `progress` of the way (0 ..= 1) from
    /// noise to the finished image; `step` varies the noise between steps.
    pub fn render(
        &self,
        width: usize,
        height: usize,
        out_width: usize,
        out_height: usize,
        progress: f32,
        step: u64,
    ) -> Vec<f32> {
        let progress = progress.clamp(0.0, 1.0);
        let octaves = 1 + (progress * (OCTAVES - 1) as f32).round() as u32;
        let clarity = progress.powf(0.8);
        let aspect = width.max(1) as f32 / height.max(1) as f32;
        let noise_seed = self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut out = Vec::with_capacity(out_width * out_height * 3);
        for y in 0..out_height {
            for x in 0..out_width {
                let u = (x as f32 + 0.5) / out_width as f32;
                let v = (y as f32 + 0.5) / out_height as f32;
                let colour = self.shade(u * aspect, v, octaves, aspect);
                for (c, value) in colour.iter().enumerate() {
                    if clarity >= 1.0 {
                        out.push(*value);
                        continue;
                    }
                    let grain = hash01(x as i64, y as i64, noise_seed.wrapping_add(c as u64));
                    out.push(grain + (value - grain) * clarity);
                }
            }
        }
        out
    }

    /// The colour at picture coordinates (`x` across 0..aspect, `y` down 0..1).
    fn shade(&self, x: f32, y: f32, octaves: u32, aspect: f32) -> [f32; 3] {
        let p = [
            x * self.frequency + self.offset[0],
            y * self.frequency + self.offset[1],
        ];
        let fbm = |q: [f32; 2]| fbm(q, octaves, self.seed);
        let q = [fbm(p), fbm([p[0] + 5.2, p[1] + 1.3])];
        let w = self.warp;
        let r = [
            fbm([p[0] + w * q[0] + 1.7, p[1] + w * q[1] + 9.2]),
            fbm([p[0] + w * q[0] + 8.3, p[1] + w * q[1] + 2.8]),
        ];
        let f = fbm([p[0] + w * r[0], p[1] + w * r[1]]);

        let [dark, mid, light, accent] = self.palette;
        // A dark-to-light ramp along the warped field, stretched for contrast.
        let t = smoothstep(0.25, 0.75, f);
        let mut colour = if t < 0.5 {
            mix(dark, mid, t * 2.0)
        } else {
            mix(mid, light, t * 2.0 - 1.0)
        };
        let swirl = (q[0] * q[0] + q[1] * q[1]).sqrt();
        colour = mix(
            colour,
            accent,
            smoothstep(0.55, 0.95, swirl) * 0.45 * (1.0 - t * 0.5),
        );
        // Relief from the second warp, a soft glow and a vignette.
        let relief = 0.8 + 0.4 * r[1];
        let gx = x / aspect - self.glow[0];
        let gy = y - self.glow[1];
        let glow = (-(gx * gx + gy * gy) / (self.glow[2] * self.glow[2])).exp() * 0.35;
        let dx = x / aspect - 0.5;
        let dy = y - 0.5;
        let vignette = 1.0 - 0.6 * (dx * dx + dy * dy);
        let lit = colour.map(|c| c * relief * vignette);
        let lit = mix(lit, light, glow);
        // A touch more saturation, as diffusion outputs tend to have.
        let luma = 0.299 * lit[0] + 0.587 * lit[1] + 0.114 * lit[2];
        lit.map(|c| (luma + (c - luma) * 1.2).clamp(0.0, 1.0))
    }
}

fn smoothstep(edge0: f32, edge1: f32, x: f32) -> f32 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Fractal sum of value noise, rotating each octave to hide the grid.
fn fbm(mut p: [f32; 2], octaves: u32, seed: u64) -> f32 {
    const ROTATE: [f32; 2] = [0.8, 0.6];
    let (mut sum, mut amplitude, mut norm) = (0.0, 0.5, 0.0);
    for octave in 0..octaves {
        sum += amplitude * value_noise(p, seed.wrapping_add(u64::from(octave)));
        norm += amplitude;
        amplitude *= 0.5;
        p = [
            2.02 * (ROTATE[0] * p[0] - ROTATE[1] * p[1]),
            2.02 * (ROTATE[1] * p[0] + ROTATE[0] * p[1]),
        ];
    }
    sum / norm
}

/// Smoothly interpolated lattice noise in [0, 1].
fn value_noise(p: [f32; 2], seed: u64) -> f32 {
    let (ix, iy) = (p[0].floor(), p[1].floor());
    let (fx, fy) = (p[0] - ix, p[1] - iy);
    let (ix, iy) = (ix as i64, iy as i64);
    let fade = |t: f32| t * t * t * (t * (t * 6.0 - 15.0) + 10.0);
    let (sx, sy) = (fade(fx), fade(fy));
    let a = hash01(ix, iy, seed);
    let b = hash01(ix + 1, iy, seed);
    let c = hash01(ix, iy + 1, seed);
    let d = hash01(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// A well-mixed hash of a lattice point, in [0, 1).
fn hash01(x: i64, y: i64, seed: u64) -> f32 {
    let mut h = seed ^ (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    // splitmix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    (h >> 40) as f32 / (1u64 << 24) as f32
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// HSV (hue in degrees, any range) to RGB.
fn hsv(hue: f32, saturation: f32, value: f32) -> [f32; 3] {
    let h = hue.rem_euclid(360.0) / 60.0;
    let c = value * saturation.clamp(0.0, 1.0);
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let m = value - c;
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r + m, g + m, b + m]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(checkpoint: &str, text: &str, seed: u64) -> Vec<f32> {
        Scene::new(checkpoint, text, seed).render(48, 32, 48, 32, 1.0, 0)
    }

    #[test]
    fn is_deterministic_and_depends_on_every_input() {
        let base = picture("a.safetensors", "a red fox", 7);
        assert_eq!(base, picture("a.safetensors", "a red fox", 7));
        assert_ne!(base, picture("a.safetensors", "a red fox", 8));
        assert_ne!(base, picture("a.safetensors", "a blue fox", 7));
        assert_ne!(base, picture("b.safetensors", "a red fox", 7));
    }

    #[test]
    fn has_structure_not_flat_colour_or_noise() {
        let px = picture("sim.safetensors", "sunset over the ocean", 1);
        let lum: Vec<f32> = px.chunks(3).map(|c| (c[0] + c[1] + c[2]) / 3.0).collect();
        let mean = lum.iter().sum::<f32>() / lum.len() as f32;
        let var = lum.iter().map(|l| (l - mean).powi(2)).sum::<f32>() / lum.len() as f32;
        assert!(var > 0.0005, "too flat: {var}");
        // Neighbours are much closer than random pairs: smooth, not noise.
        let step: f32 = lum.windows(2).map(|w| (w[0] - w[1]).abs()).sum::<f32>() / lum.len() as f32;
        assert!(
            step < var.sqrt(),
            "too noisy: step {step}, sd {}",
            var.sqrt()
        );
        assert!(px.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn previews_converge_on_the_final_picture() {
        let scene = Scene::new("sim.safetensors", "forest", 3);
        let last = scene.render(64, 64, 16, 16, 1.0, 9);
        let distance = |p: f32| {
            let img = scene.render(64, 64, 16, 16, p, 1);
            img.iter()
                .zip(&last)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
        };
        let (early, middle, late) = (distance(0.1), distance(0.5), distance(1.0));
        assert!(early > middle && middle > late, "{early} {middle} {late}");
        assert_eq!(late, 0.0);
    }

    #[test]
    fn keywords_steer_the_hue() {
        let green = Scene::new("sim", "a quiet forest", 1).palette[1];
        assert!(green[1] > green[0] && green[1] > green[2], "{green:?}");
        let blue = Scene::new("sim", "deep ocean", 1).palette[1];
        assert!(blue[2] > blue[0], "{blue:?}");
    }
}
