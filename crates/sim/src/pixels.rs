//! Images as ComfyUI holds them, and the pixel operations of the image nodes.
//!
//! An [`Image`] is a batch of RGB pictures of f32 in [0, 1], laid out
//! batch × height × width × 3 like ComfyUI's `IMAGE` tensors; a [`Mask`] is
//! batch × height × width. The operations follow the stock implementations
//! (torch's `interpolate`, ComfyUI's gaussian kernel), so the same prompt
//! gives the same pixels within rounding.

/// A batch of RGB images, values nominally in [0, 1] (resampling may
/// overshoot slightly, as torch's does; saving clips).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Image {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

/// A batch of single-channel masks.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mask {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Mask {
    pub fn zeros(batch: usize, height: usize, width: usize) -> Mask {
        Mask {
            batch,
            height,
            width,
            data: vec![0.0; batch * height * width],
        }
    }
}

/// How `ImageScale` and `ImageScaleBy` resample (their `upscale_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resample {
    /// torch `nearest-exact`.
    NearestExact,
    /// torch `bilinear`, `align_corners=False`, no antialiasing.
    Bilinear,
    /// torch `area` (adaptive average pooling).
    Area,
    /// torch `bicubic` (cubic convolution, A = -0.75, `align_corners=False`).
    Bicubic,
    /// Approximates stock, which round-trips through PIL's `LANCZOS`: the
    /// same 3-lobe kernel, widened when shrinking, but computed in f32
    /// without PIL's 8-bit rounding between the two passes; the result is
    /// then quantised to 8 bits as stock's is.
    Lanczos,
}

impl Resample {
    pub fn parse(name: &str) -> Option<Resample> {
        Some(match name {
            "nearest-exact" => Resample::NearestExact,
            "bilinear" => Resample::Bilinear,
            "area" => Resample::Area,
            "bicubic" => Resample::Bicubic,
            "lanczos" => Resample::Lanczos,
            _ => return None,
        })
    }
}

impl Image {
    /// `batch` images of one colour.
    pub fn filled(batch: usize, height: usize, width: usize, rgb: [f32; 3]) -> Image {
        let mut data = Vec::with_capacity(batch * height * width * 3);
        for _ in 0..batch * height * width {
            data.extend_from_slice(&rgb);
        }
        Image {
            batch,
            height,
            width,
            data,
        }
    }

    /// One image of the batch, as a slice of H × W × 3 values.
    pub fn frame(&self, index: usize) -> &[f32] {
        let size = self.height * self.width * 3;
        &self.data[index * size..(index + 1) * size]
    }

    pub fn pixel(&self, index: usize, y: usize, x: usize) -> [f32; 3] {
        let at = ((index * self.height + y) * self.width + x) * 3;
        [self.data[at], self.data[at + 1], self.data[at + 2]]
    }

    /// A short description for error reports (stock prints the tensor).
    pub fn describe(&self) -> String {
        format!("IMAGE[{}, {}, {}, 3]", self.batch, self.height, self.width)
    }

    /// `1 - x`, as `ImageInvert`.
    pub fn inverted(&self) -> Image {
        Image {
            data: self.data.iter().map(|v| 1.0 - v).collect(),
            ..*self
        }
    }

    /// `ImageFlip`: `vertically` mirrors top to bottom (torch dim 1),
    /// otherwise left to right (dim 2).
    pub fn flipped(&self, vertically: bool) -> Image {
        let (h, w) = (self.height, self.width);
        let mut data = Vec::with_capacity(self.data.len());
        for b in 0..self.batch {
            for y in 0..h {
                for x in 0..w {
                    let (sy, sx) = if vertically {
                        (h - 1 - y, x)
                    } else {
                        (y, w - 1 - x)
                    };
                    data.extend_from_slice(&self.pixel(b, sy, sx));
                }
            }
        }
        Image { data, ..*self }
    }

    /// `ImageBlur`: a (2r+1)² gaussian over reflect-padded edges. Stock
    /// samples the gaussian on `linspace(-1, 1, 2r+1)`, so `sigma` is in
    /// units of the radius; the kernel is separable, so it runs as two
    /// passes with the identical result.
    pub fn blurred(&self, radius: usize, sigma: f32) -> Image {
        if radius == 0 {
            return self.clone();
        }
        let kernel = gaussian_kernel(radius, sigma);
        let horizontal = self.convolve(&kernel, true);
        horizontal.convolve(&kernel, false)
    }

    fn convolve(&self, kernel: &[f32], along_x: bool) -> Image {
        let radius = (kernel.len() / 2) as isize;
        let (h, w) = (self.height, self.width);
        let mut data = vec![0.0; self.data.len()];
        for b in 0..self.batch {
            for y in 0..h {
                for x in 0..w {
                    let mut sum = [0.0f32; 3];
                    for (k, weight) in kernel.iter().enumerate() {
                        let d = k as isize - radius;
                        let (sy, sx) = if along_x {
                            (y, reflect(x as isize + d, w))
                        } else {
                            (reflect(y as isize + d, h), x)
                        };
                        let p = self.pixel(b, sy, sx);
                        for c in 0..3 {
                            sum[c] += weight * p[c];
                        }
                    }
                    let at = ((b * h + y) * w + x) * 3;
                    data[at..at + 3].copy_from_slice(&sum);
                }
            }
        }
        Image { data, ..*self }
    }

    /// Resamples every image to `width` × `height`.
    pub fn resized(&self, width: usize, height: usize, method: Resample) -> Image {
        let mut data = Vec::with_capacity(self.batch * height * width * 3);
        for b in 0..self.batch {
            let plane = Plane {
                data: self.frame(b),
                width: self.width,
                height: self.height,
            };
            data.extend(resize_plane(&plane, width, height, method));
        }
        let mut out = Image {
            batch: self.batch,
            height,
            width,
            data,
        };
        if method == Resample::Lanczos {
            // Stock's LANCZOS result comes back from 8-bit PIL images.
            for v in &mut out.data {
                *v = (v.clamp(0.0, 1.0) * 255.0).round() / 255.0;
            }
        }
        out
    }

    /// Crops to the rows `y..y+height` and columns `x..x+width`.
    pub fn cropped(&self, x: usize, y: usize, width: usize, height: usize) -> Image {
        let mut data = Vec::with_capacity(self.batch * height * width * 3);
        for b in 0..self.batch {
            for row in y..y + height {
                let start = ((b * self.height + row) * self.width + x) * 3;
                data.extend_from_slice(&self.data[start..start + width * 3]);
            }
        }
        Image {
            batch: self.batch,
            height,
            width,
            data,
        }
    }

    /// `comfy.utils.common_upscale`: optionally centre-crop to the target
    /// aspect ratio, then resample.
    pub fn upscaled(&self, width: usize, height: usize, method: Resample, center: bool) -> Image {
        if !center || width == 0 || height == 0 || self.width == 0 || self.height == 0 {
            return self.resized(width, height, method);
        }
        let (old_w, old_h) = (self.width as f64, self.height as f64);
        let old_aspect = old_w / old_h;
        let new_aspect = width as f64 / height as f64;
        let (mut x, mut y) = (0usize, 0usize);
        if old_aspect > new_aspect {
            x = ((old_w - old_w * (new_aspect / old_aspect)) / 2.0).round_ties_even() as usize;
        } else if old_aspect < new_aspect {
            y = ((old_h - old_h * (old_aspect / new_aspect)) / 2.0).round_ties_even() as usize;
        }
        let crop_w = self.width.saturating_sub(2 * x).max(1);
        let crop_h = self.height.saturating_sub(2 * y).max(1);
        self.cropped(x, y, crop_w, crop_h)
            .resized(width, height, method)
    }

    /// The image at `index` as 8-bit RGB the way stock saves it:
    /// `clip(255 * x, 0, 255).astype(uint8)`, which truncates.
    pub fn to_rgb8(&self, index: usize) -> Vec<u8> {
        self.frame(index).iter().map(|v| to_u8(*v)).collect()
    }
}

/// `np.clip(255. * x, 0, 255).astype(np.uint8)`: NaN becomes 0.
pub(crate) fn to_u8(v: f32) -> u8 {
    (255.0 * v).clamp(0.0, 255.0) as u8
}

/// torch's `reflect` padding index (no edge repeat), folded until it lands
/// inside, so even radii larger than the image stay defined.
fn reflect(i: isize, len: usize) -> usize {
    let len = len as isize;
    if len == 1 {
        return 0;
    }
    let period = 2 * (len - 1);
    let mut i = i.rem_euclid(period);
    if i >= len {
        i = period - i;
    }
    i as usize
}

/// The 1-D factor of stock's `gaussian_kernel(2r+1, sigma)`, normalised.
fn gaussian_kernel(radius: usize, sigma: f32) -> Vec<f32> {
    let size = 2 * radius + 1;
    let raw: Vec<f32> = (0..size)
        .map(|i| {
            let x = -1.0 + 2.0 * i as f32 / (size - 1) as f32;
            (-(x * x) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = raw.iter().sum();
    raw.iter().map(|v| v / total).collect()
}

/// One H × W × 3 image, borrowed.
struct Plane<'a> {
    data: &'a [f32],
    width: usize,
    height: usize,
}

impl Plane<'_> {
    fn at(&self, y: usize, x: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * 3 + c]
    }
}

/// For each output index along one axis, the source indices and weights
/// that make it. Resampling is separable for every method here.
type Taps = Vec<Vec<(usize, f32)>>;

fn resize_plane(src: &Plane<'_>, width: usize, height: usize, method: Resample) -> Vec<f32> {
    let xs = taps(src.width, width, method);
    let ys = taps(src.height, height, method);
    // Rows first (horizontal pass), then columns.
    let mut rows = vec![0.0f32; src.height * width * 3];
    for y in 0..src.height {
        for (x, tap) in xs.iter().enumerate() {
            for c in 0..3 {
                rows[(y * width + x) * 3 + c] = tap.iter().map(|(i, w)| w * src.at(y, *i, c)).sum();
            }
        }
    }
    let mut out = vec![0.0f32; height * width * 3];
    for (y, tap) in ys.iter().enumerate() {
        for x in 0..width {
            for c in 0..3 {
                out[(y * width + x) * 3 + c] = tap
                    .iter()
                    .map(|(i, w)| w * rows[(i * width + x) * 3 + c])
                    .sum();
            }
        }
    }
    out
}

fn taps(input: usize, output: usize, method: Resample) -> Taps {
    let scale = input as f64 / output as f64;
    let last = input.saturating_sub(1);
    (0..output)
        .map(|o| match method {
            Resample::NearestExact => {
                let i = ((o as f64 + 0.5) * scale).floor() as usize;
                vec![(i.min(last), 1.0)]
            }
            Resample::Bilinear => {
                let src = (scale * (o as f64 + 0.5) - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(last);
                let i1 = (i0 + 1).min(last);
                let t = (src - i0 as f64) as f32;
                vec![(i0, 1.0 - t), (i1, t)]
            }
            Resample::Area => {
                let start = (o * input) / output;
                let end = ((o + 1) * input).div_ceil(output);
                let n = (end - start) as f32;
                (start..end).map(|i| (i, 1.0 / n)).collect()
            }
            Resample::Bicubic => {
                let src = scale * (o as f64 + 0.5) - 0.5;
                let i0 = src.floor();
                let t = src - i0;
                (-1..=2)
                    .map(|k| {
                        let i = (i0 as isize + k).clamp(0, last as isize) as usize;
                        (i, cubic(k as f64 - t) as f32)
                    })
                    .collect()
            }
            Resample::Lanczos => lanczos_taps(o, scale, input),
        })
        .collect()
}

/// Keys' cubic convolution kernel with torch's A = -0.75.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.75;
    let x = x.abs();
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// PIL-style Lanczos-3: the support grows with the shrink factor so
/// downscaling averages instead of aliasing.
fn lanczos_taps(o: usize, scale: f64, input: usize) -> Vec<(usize, f32)> {
    const LOBES: f64 = 3.0;
    let filter_scale = scale.max(1.0);
    let support = LOBES * filter_scale;
    let center = (o as f64 + 0.5) * scale;
    let lo = (center - support).floor().max(0.0) as usize;
    let hi = ((center + support).ceil() as usize).min(input);
    let mut taps: Vec<(usize, f32)> = (lo..hi)
        .map(|i| {
            let x = (i as f64 + 0.5 - center) / filter_scale;
            (i, (sinc(x) * sinc(x / LOBES)) as f32)
        })
        .filter(|(_, w)| *w != 0.0)
        .collect();
    let total: f32 = taps.iter().map(|(_, w)| w).sum();
    if total.abs() > f32::EPSILON {
        for tap in &mut taps {
            tap.1 /= total;
        }
    } else {
        taps = vec![((center as usize).min(input.saturating_sub(1)), 1.0)];
    }
    taps
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-9 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(width: usize, height: usize) -> Image {
        let mut data = Vec::new();
        for y in 0..height {
            for x in 0..width {
                data.extend_from_slice(&[x as f32 / width as f32, y as f32 / height as f32, 0.5]);
            }
        }
        Image {
            batch: 1,
            height,
            width,
            data,
        }
    }

    #[test]
    fn invert_and_flip() {
        let img = ramp(4, 3);
        assert_eq!(img.inverted().pixel(0, 0, 0), [1.0, 1.0, 0.5]);
        let v = img.flipped(true);
        assert_eq!(v.pixel(0, 0, 1), img.pixel(0, 2, 1));
        let h = img.flipped(false);
        assert_eq!(h.pixel(0, 1, 0), img.pixel(0, 1, 3));
    }

    #[test]
    fn blur_keeps_flat_colour_and_softens_edges() {
        let flat = Image::filled(1, 8, 8, [0.25, 0.5, 0.75]);
        let blurred = flat.blurred(3, 1.0);
        for (a, b) in blurred.data.iter().zip(&flat.data) {
            assert!((a - b).abs() < 1e-6);
        }
        let mut edge = Image::filled(1, 1, 9, [0.0; 3]);
        for x in 5..9 {
            edge.data[x * 3] = 1.0;
        }
        let soft = edge.blurred(2, 1.0);
        let red: Vec<f32> = (0..9).map(|x| soft.pixel(0, 0, x)[0]).collect();
        assert!(
            red[3] > 0.0 && red[3] < red[4] && red[4] < red[5] && red[5] < 1.0,
            "{red:?}"
        );
    }

    #[test]
    fn gaussian_kernel_matches_stock_values() {
        // torch: gaussian_kernel(3, 1.0) = outer(k, k) with k ∝ exp(-[1, 0, 1] / 2).
        let k = gaussian_kernel(1, 1.0);
        let e = (-0.5f32).exp();
        let total = 1.0 + 2.0 * e;
        assert!((k[0] - e / total).abs() < 1e-6 && (k[1] - 1.0 / total).abs() < 1e-6);
    }

    #[test]
    fn reflect_folds_like_torch() {
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn bilinear_and_nearest_follow_torch() {
        // torch.nn.functional.interpolate([0, 1, 2, 3], size=8, mode="bilinear")
        // along one axis: 0, .25, .75, 1.25, 1.75, 2.25, 2.75, 3.
        let mut row = Image::filled(1, 1, 4, [0.0; 3]);
        for x in 0..4 {
            row.data[x * 3] = x as f32;
        }
        let up = row.resized(8, 1, Resample::Bilinear);
        let got: Vec<f32> = (0..8).map(|x| up.pixel(0, 0, x)[0]).collect();
        assert_eq!(got, [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]);
        let near = row.resized(2, 1, Resample::NearestExact);
        assert_eq!([near.pixel(0, 0, 0)[0], near.pixel(0, 0, 1)[0]], [1.0, 3.0]);
        let area = row.resized(2, 1, Resample::Area);
        assert_eq!([area.pixel(0, 0, 0)[0], area.pixel(0, 0, 1)[0]], [0.5, 2.5]);
    }

    #[test]
    fn every_method_keeps_a_flat_image_flat() {
        let flat = Image::filled(2, 5, 7, [0.2, 0.4, 0.6]);
        for method in ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"] {
            let method = Resample::parse(method).expect("known method");
            for (w, h) in [(3, 2), (16, 9)] {
                let out = flat.resized(w, h, method);
                assert_eq!((out.batch, out.width, out.height), (2, w, h));
                for v in out.data.chunks(3) {
                    for (a, b) in v.iter().zip([0.2, 0.4, 0.6]) {
                        assert!((a - b).abs() < 0.003, "{method:?}: {v:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn center_crop_keeps_the_middle() {
        let img = ramp(8, 4);
        let out = img.upscaled(2, 2, Resample::NearestExact, true);
        // 8×4 to 1:1 crops 2 columns each side, leaving x = 2..6.
        assert_eq!(out.pixel(0, 0, 0)[0], img.pixel(0, 0, 3)[0]);
    }

    #[test]
    fn saving_truncates_like_numpy() {
        assert_eq!(to_u8(1.0 - 128.0 / 255.0), 126);
        assert_eq!(to_u8(1.5), 255);
        assert_eq!(to_u8(-0.1), 0);
        assert_eq!(to_u8(f32::NAN), 0);
    }
}
