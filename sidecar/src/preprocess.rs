//! From encoded bytes to model input: sniff and check the format, decode (JPEG in strict
//! mode, so a truncated file is an error rather than grey blocks), measure quality, and
//! resize-and-crop with a SIMD resizer into the model's input size.
//!
//! Each pre-processing thread keeps its decode buffer and resizer between calls
//! ([`Scratch`]), so steady-state work allocates only the small output image.

use crate::repository::InputSpec;
use fast_image_resize as fr;
use image::ImageDecoder;
use std::cell::RefCell;
use std::fmt;

/// Limits checked before decoding, from the image header alone.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_side: u32,
    pub max_pixels: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
        })
    }
}

impl Format {
    /// The format the magic bytes say, if any.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else {
            None
        }
    }
}

/// Why an image was refused; the text goes to the client with `INVALID_ARGUMENT`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("image_data is empty")]
    Empty,
    #[error("image_data is {size} bytes, over the {max}-byte limit (max_image_bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("image_data is neither JPEG nor PNG (first bytes: {0})")]
    UnknownFormat(String),
    #[error("image_format is {declared} but image_data is {actual}")]
    FormatMismatch { declared: Format, actual: Format },
    #[error("image_data is not a readable {format}: {detail}")]
    Corrupt { format: Format, detail: String },
    #[error("image is {width}x{height}; each side must be 1..={max_side} and the area at most {max_pixels} pixels")]
    Dimensions { width: u32, height: u32, max_side: u32, max_pixels: u64 },
}

/// Image quality measured on the decoded image at full resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// Variance of the Laplacian of luma (0..255 scale): low means blurry.
    pub blur: f32,
    /// Mean luma, 0 (black) to 1 (white).
    pub brightness: f32,
}

/// A pre-processed image: `width`×`height` RGB pixels, ready to normalise into a batch.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub rgb: Vec<u8>,
    pub quality: Quality,
}

/// Per-thread buffers reused across images.
#[derive(Default)]
pub struct Scratch {
    decoded: Vec<u8>,
    luma: Vec<u8>,
    resizer: fr::Resizer,
}

impl Scratch {
    /// Buffers kept between images are capped, so one huge image does not pin its memory
    /// to the thread for good (64 MiB holds a 20-megapixel decode).
    const KEEP: usize = 64 << 20;

    fn trim(&mut self) {
        if self.decoded.capacity() > Self::KEEP {
            self.decoded = Vec::new();
        }
        if self.luma.capacity() > Self::KEEP / 3 {
            self.luma = Vec::new();
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Decodes and pre-processes with this thread's [`Scratch`].
pub fn prepare(bytes: &[u8], declared: Option<Format>, limits: &Limits, spec: &InputSpec) -> Result<Prepared, ImageError> {
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        let prepared = prepare_with(&mut scratch, bytes, declared, limits, spec);
        scratch.trim();
        prepared
    })
}

pub fn prepare_with(
    scratch: &mut Scratch,
    bytes: &[u8],
    declared: Option<Format>,
    limits: &Limits,
    spec: &InputSpec,
) -> Result<Prepared, ImageError> {
    let format = check_format(bytes, declared, limits)?;
    let (width, height) = decode(format, bytes, limits, &mut scratch.decoded)?;
    let rgb_len = width as usize * height as usize * 3;
    let src = &scratch.decoded[..rgb_len];
    let quality = quality_with(&mut scratch.luma, src, width as usize, height as usize);
    let rgb = resize(&mut scratch.resizer, src, width, height, spec);
    Ok(Prepared { rgb, quality })
}

/// Cheap checks on the raw bytes: size cap, magic bytes, agreement with `image_format`.
pub fn check_format(bytes: &[u8], declared: Option<Format>, limits: &Limits) -> Result<Format, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge { size: bytes.len(), max: limits.max_bytes });
    }
    let actual = Format::sniff(bytes).ok_or_else(|| {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        ImageError::UnknownFormat(head.join(" "))
    })?;
    match declared {
        Some(declared) if declared != actual => Err(ImageError::FormatMismatch { declared, actual }),
        _ => Ok(actual),
    }
}

fn check_dimensions(width: u32, height: u32, limits: &Limits) -> Result<(), ImageError> {
    let area = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 || width > limits.max_side || height > limits.max_side || area > limits.max_pixels {
        return Err(ImageError::Dimensions { width, height, max_side: limits.max_side, max_pixels: limits.max_pixels });
    }
    Ok(())
}

/// Decodes into `out` (resized as needed) as packed RGB8 and returns the dimensions.
pub fn decode(format: Format, bytes: &[u8], limits: &Limits, out: &mut Vec<u8>) -> Result<(u32, u32), ImageError> {
    let corrupt = |detail: String| ImageError::Corrupt { format, detail };
    match format {
        Format::Jpeg => {
            use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
            let options = DecoderOptions::default()
                .set_strict_mode(true)
                .set_max_width(limits.max_side as usize)
                .set_max_height(limits.max_side as usize)
                .jpeg_set_out_colorspace(ColorSpace::RGB);
            let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
            // Read the header without size limits first, so an absurd size gets our message.
            let mut probe = zune_jpeg::JpegDecoder::new_with_options(
                ZCursor::new(bytes),
                DecoderOptions::default().set_max_width(usize::MAX).set_max_height(usize::MAX),
            );
            probe.decode_headers().map_err(|e| corrupt(e.to_string()))?;
            let (w, h) = probe.dimensions().ok_or_else(|| corrupt("no frame header".into()))?;
            let (w, h) = (w as u32, h as u32);
            check_dimensions(w, h, limits)?;
            decoder.decode_headers().map_err(|e| corrupt(e.to_string()))?;
            let len = decoder.output_buffer_size().ok_or_else(|| corrupt("no frame header".into()))?;
            if len != w as usize * h as usize * 3 {
                return Err(corrupt(format!("unexpected output size {len} for {w}x{h} RGB")));
            }
            out.resize(len, 0);
            decoder.decode_into(out).map_err(|e| corrupt(e.to_string()))?;
            Ok((w, h))
        }
        Format::Png => {
            // IHDR is the first chunk: check the size before the decoder reads further.
            if let (Some(w), Some(h)) = (be_u32(bytes, 16), be_u32(bytes, 20)) {
                if &bytes[12..16] == b"IHDR" {
                    check_dimensions(w, h, limits)?;
                }
            }
            let mut decoder =
                image::codecs::png::PngDecoder::new(std::io::Cursor::new(bytes)).map_err(|e| corrupt(e.to_string()))?;
            let (w, h) = decoder.dimensions();
            check_dimensions(w, h, limits)?;
            let mut image_limits = image::Limits::default();
            image_limits.max_image_width = Some(limits.max_side);
            image_limits.max_image_height = Some(limits.max_side);
            decoder.set_limits(image_limits).map_err(|e| corrupt(e.to_string()))?;
            let color = decoder.color_type();
            let raw_len = usize::try_from(decoder.total_bytes()).map_err(|_| corrupt("too large".into()))?;
            let rgb_len = w as usize * h as usize * 3;
            out.resize(rgb_len, 0);
            if color == image::ColorType::Rgb8 {
                decoder.read_image(&mut out[..rgb_len]).map_err(|e| corrupt(e.to_string()))?;
                return Ok((w, h));
            }
            let mut raw = vec![0u8; raw_len];
            decoder.read_image(&mut raw).map_err(|e| corrupt(e.to_string()))?;
            to_rgb8(&raw, color, &mut out[..rgb_len]).map_err(corrupt)?;
            Ok((w, h))
        }
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Converts any PNG pixel layout to packed RGB8 (alpha dropped, 16-bit narrowed).
fn to_rgb8(raw: &[u8], color: image::ColorType, out: &mut [u8]) -> Result<(), String> {
    use image::ColorType as C;
    let (channels, bytes_per_sample) = match color {
        C::L8 => (1, 1),
        C::La8 => (2, 1),
        C::Rgb8 => (3, 1),
        C::Rgba8 => (4, 1),
        C::L16 => (1, 2),
        C::La16 => (2, 2),
        C::Rgb16 => (3, 2),
        C::Rgba16 => (4, 2),
        other => return Err(format!("unsupported pixel layout {other:?}")),
    };
    let stride = channels * bytes_per_sample;
    // Big-endian 16-bit samples: the high byte comes first.
    let sample = |px: &[u8], c: usize| px[c * bytes_per_sample];
    for (px, dst) in raw.chunks_exact(stride).zip(out.chunks_exact_mut(3)) {
        if channels >= 3 {
            dst[0] = sample(px, 0);
            dst[1] = sample(px, 1);
            dst[2] = sample(px, 2);
        } else {
            let l = sample(px, 0);
            dst.fill(l);
        }
    }
    Ok(())
}

/// Blur (variance of the 4-neighbour Laplacian of luma) and brightness (mean luma).
pub fn quality(rgb: &[u8], width: usize, height: usize) -> Quality {
    quality_with(&mut Vec::new(), rgb, width, height)
}

/// [`quality`] with a caller-owned luma buffer. Written as slice zips so that the compiler
/// vectorises both passes (it costs ~0.2 ms for 640x480).
pub fn quality_with(luma: &mut Vec<u8>, rgb: &[u8], width: usize, height: usize) -> Quality {
    let pixels = width * height;
    luma.resize(pixels, 0);
    to_luma(&rgb[..pixels * 3], luma);
    let luma_sum: u64 = luma.chunks(4096).map(|c| c.iter().map(|&v| u32::from(v)).sum::<u32>() as u64).sum();
    let (lap_sum, lap_sq) = laplacian_sums(luma, width, height);
    let lap_n = (width.saturating_sub(2) * height.saturating_sub(2)) as f64;
    let blur = if lap_n == 0.0 {
        0.0
    } else {
        let mean = lap_sum as f64 / lap_n;
        (lap_sq as f64 / lap_n - mean * mean).max(0.0)
    };
    Quality { blur: blur as f32, brightness: (luma_sum as f64 / pixels.max(1) as f64 / 255.0) as f32 }
}

/// Sum and sum of squares of the 4-neighbour Laplacian over the interior of `luma`.
fn laplacian_sums(luma: &[u8], width: usize, height: usize) -> (i64, i64) {
    #[inline(always)]
    fn sums(luma: &[u8], width: usize, height: usize) -> (i64, i64) {
        let (mut lap_sum, mut lap_sq) = (0i64, 0i64);
        if width > 2 && height > 2 {
            for y in 1..height - 1 {
                let up = &luma[(y - 1) * width..y * width];
                let mid = &luma[y * width..(y + 1) * width];
                let down = &luma[(y + 1) * width..(y + 2) * width];
                // i16 lanes and i32 sums (chunks keep them from overflowing): SSE2 has the
                // multiply-add for that, not for i64.
                let (mut s, mut sq) = (0i32, 0i64);
                let row = |start: usize, end: usize| {
                    let (mut s, mut sq) = (0i32, 0i32);
                    for ((((u, d), l), r), c) in up[start + 1..end + 1]
                        .iter()
                        .zip(&down[start + 1..end + 1])
                        .zip(&mid[start..end])
                        .zip(&mid[start + 2..end + 2])
                        .zip(&mid[start + 1..end + 1])
                    {
                        let v = i16::from(*u) + i16::from(*d) + i16::from(*l) + i16::from(*r) - 4 * i16::from(*c);
                        s += i32::from(v);
                        sq += i32::from(v) * i32::from(v);
                    }
                    (s, sq)
                };
                let inner = width - 2;
                let mut start = 0;
                while start < inner {
                    // 2048 * 1020^2 < 2^31
                    let end = (start + 2048).min(inner);
                    let (a, b) = row(start, end);
                    s += a;
                    sq += i64::from(b);
                    start = end;
                }
                lap_sum += i64::from(s);
                lap_sq += sq;
            }
        }
        (lap_sum, lap_sq)
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn sums_avx2(luma: &[u8], width: usize, height: usize) -> (i64, i64) {
            sums(luma, width, height)
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { sums_avx2(luma, width, height) };
        }
    }
    sums(luma, width, height)
}

/// BT.601 luma in 8-bit fixed point (the weighted sum fits u16: at most 65408). The loop is
/// compiled twice, and the AVX2 copy (chosen at run time) vectorises the 3-byte stride.
fn to_luma(rgb: &[u8], luma: &mut [u8]) {
    #[inline(always)]
    fn convert(rgb: &[u8], luma: &mut [u8]) {
        for (l, p) in luma.iter_mut().zip(rgb.chunks_exact(3)) {
            *l = ((77 * u16::from(p[0]) + 150 * u16::from(p[1]) + 29 * u16::from(p[2]) + 128) >> 8) as u8;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn convert_avx2(rgb: &[u8], luma: &mut [u8]) {
            convert(rgb, luma)
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { convert_avx2(rgb, luma) };
            return;
        }
    }
    convert(rgb, luma)
}

/// The source rectangle that, scaled to `width`×`height`, equals "resize the shorter side to
/// `resize_shorter`, then centre-crop": one SIMD resize pass instead of two.
fn crop_box(src_w: u32, src_h: u32, spec: &InputSpec) -> (f64, f64, f64, f64) {
    let (sw, sh) = (f64::from(src_w), f64::from(src_h));
    match spec.resize_shorter {
        None => (0.0, 0.0, sw, sh),
        Some(shorter) => {
            let scale = f64::from(shorter) / sw.min(sh);
            let (cw, ch) = (f64::from(spec.width) / scale, f64::from(spec.height) / scale);
            let (cw, ch) = (cw.min(sw), ch.min(sh));
            ((sw - cw) / 2.0, (sh - ch) / 2.0, cw, ch)
        }
    }
}

pub fn resize(resizer: &mut fr::Resizer, src: &[u8], width: u32, height: u32, spec: &InputSpec) -> Vec<u8> {
    let mut rgb = vec![0u8; spec.width as usize * spec.height as usize * 3];
    let (left, top, w, h) = crop_box(width, height, spec);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .crop(left, top, w, h);
    // Both buffers are RGB8 of the sizes given, so neither construction nor resize can fail.
    let result = fr::images::ImageRef::new(width, height, src, fr::PixelType::U8x3).and_then(|src| {
        fr::images::Image::from_slice_u8(spec.width, spec.height, &mut rgb, fr::PixelType::U8x3).map(|dst| (src, dst))
    });
    if let Ok((src, mut dst)) = result {
        if let Err(e) = resizer.resize(&src, &mut dst, &options) {
            tracing::error!(error = %e, "resize failed");
        }
    }
    rgb
}

/// Writes `rgb` (H×W×3 u8) normalised into `out` in the model's layout and channel order.
pub fn normalise(rgb: &[u8], spec: &InputSpec, out: &mut [f32]) {
    use crate::repository::{ChannelOrder, Layout};
    let plane = spec.width as usize * spec.height as usize;
    let order: [usize; 3] = match spec.channel_order {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    // (v / 255 - mean) / std  ==  v * scale + bias
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * spec.std[order[c]]));
    let bias: [f32; 3] = std::array::from_fn(|c| -spec.mean[order[c]] / spec.std[order[c]]);
    match spec.layout {
        Layout::Nchw => {
            let (r, rest) = out[..plane * 3].split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                r[i] = f32::from(px[order[0]]) * scale[0] + bias[0];
                g[i] = f32::from(px[order[1]]) * scale[1] + bias[1];
                b[i] = f32::from(px[order[2]]) * scale[2] + bias[2];
            }
        }
        Layout::Nhwc => {
            for (px, dst) in rgb.chunks_exact(3).zip(out.chunks_exact_mut(3)) {
                for c in 0..3 {
                    dst[c] = f32::from(px[order[c]]) * scale[c] + bias[c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_bytes: 1 << 20, max_side: 4096, max_pixels: 1 << 24 }
    }

    #[test]
    fn format_checks() {
        let l = limits();
        assert_eq!(check_format(b"", None, &l), Err(ImageError::Empty));
        assert!(matches!(check_format(b"GIF89a", None, &l), Err(ImageError::UnknownFormat(_))));
        assert!(matches!(
            check_format(b"\x89PNG\r\n\x1a\nxxxx", Some(Format::Jpeg), &l),
            Err(ImageError::FormatMismatch { declared: Format::Jpeg, actual: Format::Png })
        ));
    }

    #[test]
    fn quality_of_flat_and_edgy_images() {
        let flat = vec![128u8; 16 * 16 * 3];
        let q = quality(&flat, 16, 16);
        assert_eq!(q.blur, 0.0);
        assert!((q.brightness - 128.0 / 255.0).abs() < 0.01);
        let checker: Vec<u8> = (0..16 * 16).flat_map(|i| if (i % 16 + i / 16) % 2 == 0 { [255; 3] } else { [0; 3] }).collect();
        assert!(quality(&checker, 16, 16).blur > 10_000.0);
    }

    #[test]
    fn crop_box_matches_resize_then_centre_crop() {
        let spec: InputSpec = toml::from_str("name='x'\nwidth=224\nheight=224\nresize_shorter=256\n").unwrap();
        let (l, t, w, h) = crop_box(640, 480, &spec);
        // shorter side 480 -> 256: scale 0.5333; 224 px of output = 420 px of source
        assert!((w - 420.0).abs() < 1e-9 && (h - 420.0).abs() < 1e-9);
        assert!((l - 110.0).abs() < 1e-9 && (t - 30.0).abs() < 1e-9);
    }
}
