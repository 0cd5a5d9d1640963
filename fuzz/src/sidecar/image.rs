//! `sidecar_image`: `image_data` as a client sends it, through the sidecar's checks and
//! decoders (`preprocess`: sniff, `check_format`, `decode`, `prepare_with`).
//!
//! The limits exist so that an image's header, not its decoder, decides whether it is
//! decoded at all: a decoded image must have the size its header declares (read here from
//! the JPEG SOF / PNG IHDR, independently of the decoders) and fit the limits, and the
//! pixel buffer must be exactly that size.

use switchyard_sidecar::preprocess::{check_format, decode, prepare_with, Format, ImageError, Limits, Scratch};
use switchyard_sidecar::repository::{ChannelOrder, InputSpec, Layout};

/// Room for any seed and most mutations.
const WIDE: Limits = Limits { max_bytes: 1 << 20, max_side: 4096, max_pixels: 1 << 22 };
/// Small enough that the seeds cross it (by side, by area, by bytes).
const TIGHT: Limits = Limits { max_bytes: 2048, max_side: 24, max_pixels: 300 };

const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

pub fn image(data: &[u8]) {
    let sniffed = Format::sniff(data);
    assert_eq!(sniffed == Some(Format::Jpeg), data.starts_with(JPEG_MAGIC), "JPEG sniffed wrongly");
    assert_eq!(sniffed == Some(Format::Png), data.starts_with(PNG_MAGIC), "PNG sniffed wrongly");
    for limits in [WIDE, TIGHT] {
        for declared in [None, Some(Format::Jpeg), Some(Format::Png)] {
            format_check(data, sniffed, declared, &limits);
        }
    }
    let Some(format) = sniffed else { return };
    let header = match format {
        Format::Jpeg => jpeg_frames(data),
        Format::Png => png_ihdr(data).into_iter().collect(),
    };

    let mut wide_rgb = Vec::new();
    let wide = decode(format, data, &WIDE, &mut wide_rgb);
    let mut tight_rgb = Vec::new();
    let tight = decode(format, data, &TIGHT, &mut tight_rgb);
    for (limits, result, rgb) in [(&WIDE, &wide, &wide_rgb), (&TIGHT, &tight, &tight_rgb)] {
        if let Ok((w, h)) = *result {
            assert_eq!(rgb.len(), w as usize * h as usize * 3, "{format} {w}x{h}: an RGB buffer of {} bytes", rgb.len());
            assert!(fits(w, h, limits), "{format} {w}x{h} decoded under {limits:?}");
            assert!(header.contains(&(w, h)), "{format} decoded as {w}x{h}; its header declares {header:?}");
        }
        // What the header declares beyond the limits is never decoded.
        if header.len() == 1 && !fits(header[0].0, header[0].1, limits) {
            assert!(result.is_err(), "{format} declaring {:?} decoded under {limits:?}", header[0]);
        }
    }
    match (&wide, &tight) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{format}: two sizes for one image");
            assert_eq!(wide_rgb, tight_rgb, "{format}: two decodes of one image differ");
        }
        (Ok((w, h)), Err(e)) if !fits(*w, *h, &TIGHT) => {
            assert!(matches!(e, ImageError::Dimensions { width, height, .. } if (width, height) == (w, h)), "{format} {w}x{h} over the tight limits, refused as {e}");
        }
        _ => {}
    }
    prepared(data, wide.is_ok());
}

/// `check_format` refuses exactly what is empty, over the byte cap, not JPEG or PNG, or
/// not what the request declared, in that order.
fn format_check(data: &[u8], sniffed: Option<Format>, declared: Option<Format>, limits: &Limits) {
    let expected = if data.is_empty() {
        Err(ImageError::Empty)
    } else if data.len() > limits.max_bytes {
        Err(ImageError::TooLarge { size: data.len(), max: limits.max_bytes })
    } else {
        match (sniffed, declared) {
            (None, _) => Err(ImageError::UnknownFormat(String::new())),
            (Some(actual), Some(declared)) if declared != actual => Err(ImageError::FormatMismatch { declared, actual }),
            (Some(actual), _) => Ok(actual),
        }
    };
    match (check_format(data, declared, limits), expected) {
        (Err(ImageError::UnknownFormat(head)), Err(ImageError::UnknownFormat(_))) => {
            assert!(!head.is_empty(), "an unknown format shows no bytes");
        }
        (got, expected) => assert_eq!(got, expected, "check_format of {} bytes declared {declared:?} under {limits:?}", data.len()),
    }
}

/// The whole path the request takes: an image that decodes is prepared into exactly the
/// model's input size, with sane quality figures.
fn prepared(data: &[u8], decodes: bool) {
    let spec = InputSpec {
        name: "x".into(),
        layout: Layout::Nchw,
        channel_order: ChannelOrder::Rgb,
        width: 12,
        height: 10,
        resize_shorter: data.len().is_multiple_of(2).then_some(16),
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    match prepare_with(&mut Scratch::default(), data, None, &WIDE, &spec) {
        Ok(p) => {
            assert!(decodes, "prepared what does not decode");
            assert_eq!(p.rgb.len(), 12 * 10 * 3, "prepared to {} bytes", p.rgb.len());
            assert!(p.quality.blur.is_finite() && p.quality.blur >= 0.0, "blur {}", p.quality.blur);
            assert!((0.0..=1.0).contains(&p.quality.brightness), "brightness {}", p.quality.brightness);
        }
        Err(e) => assert!(!decodes, "decodes, but is not prepared: {e}"),
    }
}

fn fits(w: u32, h: u32, limits: &Limits) -> bool {
    (1..=limits.max_side).contains(&w) && (1..=limits.max_side).contains(&h) && u64::from(w) * u64::from(h) <= limits.max_pixels
}

/// Width and height from IHDR, which PNG requires to be the first chunk.
fn png_ihdr(data: &[u8]) -> Option<(u32, u32)> {
    let be = |at: usize| data.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    (data.get(12..16)? == b"IHDR").then_some(())?;
    Some((be(16)?, be(20)?))
}

/// Width and height of every baseline, extended or progressive frame header (SOF0-2, the
/// ones the decoder supports) before the first scan. Bytes between segments are skipped
/// to the next marker, as lenient decoders do.
fn jpeg_frames(data: &[u8]) -> Vec<(u32, u32)> {
    let be16 = |at: usize| data.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let mut frames = Vec::new();
    let mut i = 2;
    while i + 1 < data.len() {
        if data[i] != 0xFF || matches!(data[i + 1], 0xFF | 0x00) {
            i += 1;
            continue;
        }
        let marker = data[i + 1];
        i += 2;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => break,
            _ => {}
        }
        let Some(len) = be16(i) else { break };
        if (0xC0..=0xC2).contains(&marker) {
            if let (Some(h), Some(w)) = (be16(i + 3), be16(i + 5)) {
                frames.push((w as u32, h as u32));
            }
        }
        i += len.max(2);
    }
    frames
}
