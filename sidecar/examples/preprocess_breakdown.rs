//! Where pre-processing time goes, per stage, for the benchmark images:
//! `cargo run --release -p switchyard-sidecar --example preprocess_breakdown -- var/testdata/bench var/models/orientation`
use std::time::Instant;
use switchyard_sidecar::preprocess::{self, Limits};
use switchyard_sidecar::repository::ModelConfig;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (images, model) = (args.get(1).map_or("var/testdata/bench", String::as_str), args.get(2).map_or("var/models/orientation", String::as_str));
    let config = ModelConfig::read(model.as_ref()).map_err(anyhow::Error::msg)?;
    let mut files: Vec<Vec<u8>> = Vec::new();
    for entry in std::fs::read_dir(images)? {
        files.push(std::fs::read(entry?.path())?);
    }
    let limits = Limits { max_bytes: 16 << 20, max_side: 16_384, max_pixels: 50_000_000 };
    let mut buf = Vec::new();
    let mut resizer = fast_image_resize::Resizer::new();
    let (mut decode, mut quality, mut resize, mut normalise) = (0.0, 0.0, 0.0, 0.0);
    let mut out = vec![0f32; (config.input.width * config.input.height * 3) as usize];
    let n = 400;
    for i in 0..n {
        let bytes = &files[i % files.len()];
        let t0 = Instant::now();
        let format = preprocess::check_format(bytes, None, &limits)?;
        let (w, h) = preprocess::decode(format, bytes, &limits, &mut buf)?;
        let t1 = Instant::now();
        let rgb = &buf[..(w * h * 3) as usize];
        std::hint::black_box(preprocess::quality(rgb, w as usize, h as usize));
        let t2 = Instant::now();
        let small = preprocess::resize(&mut resizer, rgb, w, h, &config.input);
        let t3 = Instant::now();
        preprocess::normalise(&small, &config.input, &mut out);
        let t4 = Instant::now();
        decode += (t1 - t0).as_secs_f64();
        quality += (t2 - t1).as_secs_f64();
        resize += (t3 - t2).as_secs_f64();
        normalise += (t4 - t3).as_secs_f64();
    }
    let ms = |s: f64| s * 1e3 / n as f64;
    println!("decode {:.3} ms, quality {:.3} ms, resize+crop {:.3} ms, normalise {:.3} ms", ms(decode), ms(quality), ms(resize), ms(normalise));
    Ok(())
}
