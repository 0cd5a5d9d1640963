//! Refusals: bad input, deadlines, cancelled clients, full queues, bad configuration.

mod support;

use std::time::Duration;
use support::*;
use switchyard_proto::features::v1::extract_realtime_request::ImageFormat;
use tonic::Code;

/// Sets the dimensions in a baseline JPEG's SOF0 frame header.
fn jpeg_with_size(mut jpeg: Vec<u8>, width: u16, height: u16) -> Vec<u8> {
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0 marker");
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

/// Sets the dimensions in a PNG's IHDR (and fixes its CRC).
fn png_with_size(mut png: Vec<u8>, width: u32, height: u32) -> Vec<u8> {
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_get_invalid_argument_with_a_precise_message() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &config("max_image_bytes = 400000\nmax_image_side = 8192\n"));
    let mut client = sidecar.client();
    let jpeg = page(0, "jpg");
    let png = page(0, "png");
    let cases: Vec<(&str, Vec<u8>, ImageFormat, &str)> = vec![
        ("empty", Vec::new(), ImageFormat::Unknown, "image_data is empty"),
        ("garbage", b"GIF89a this is not what you think".to_vec(), ImageFormat::Unknown, "neither JPEG nor PNG (first bytes: 47 49 46 38"),
        ("truncated jpeg", jpeg[..jpeg.len() / 2].to_vec(), ImageFormat::Jpeg, "not a readable JPEG"),
        ("truncated png", png[..png.len() / 2].to_vec(), ImageFormat::Png, "not a readable PNG"),
        ("header only jpeg", jpeg[..300].to_vec(), ImageFormat::Jpeg, "not a readable JPEG"),
        ("png declared jpeg", png.clone(), ImageFormat::Jpeg, "image_format is JPEG but image_data is PNG"),
        ("jpeg declared png", jpeg.clone(), ImageFormat::Png, "image_format is PNG but image_data is JPEG"),
        ("huge jpeg", jpeg_with_size(jpeg.clone(), 60_000, 60_000), ImageFormat::Jpeg, "image is 60000x60000"),
        ("huge png", png_with_size(png.clone(), 100_000, 20), ImageFormat::Png, "image is 100000x20"),
        ("zero png", png_with_size(png.clone(), 0, 20), ImageFormat::Png, "image is 0x20"),
        ("over the cap", [&jpeg[..], &vec![0u8; 400_001 - jpeg.len()][..]].concat(), ImageFormat::Jpeg, "400001 bytes, over the 400000-byte limit (max_image_bytes)"),
    ];
    for (name, bytes, format, expected) in cases {
        let status = client.extract_realtime(request(bytes, format)).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(status.message().contains(expected), "{name}: {:?} should contain {expected:?}", status.message());
    }
    // The process kept serving.
    let ok = client.extract_realtime(request(jpeg, ImageFormat::Jpeg)).await.unwrap().into_inner();
    assert_eq!(predicted_class(&ok.quality_scores), "0");
    assert!(!sidecar.log().contains("panicked"), "{}", sidecar.log());
    let metrics = sidecar.metrics();
    assert_eq!(metric(&metrics, "switchyard_sidecar_requests_total", &[("status", "invalid_argument")]), 11.0);
}

/// A long batching delay keeps a lone request queued past its deadline.
fn slow_batching(queue_capacity: usize) -> String {
    config(&format!("[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 1000000\nqueue_capacity = {queue_capacity}\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadlines_are_dropped_before_inference() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &slow_batching(8));
    let mut client = sidecar.client();
    let mut call = tonic::Request::new(request(page(0, "jpg"), ImageFormat::Jpeg));
    call.set_timeout(Duration::from_millis(200));
    let status = client.extract_realtime(call).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The batch closes after 1 s; the worker then drops the expired request unrun.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = sidecar.metrics();
    let labels = [("model", "orientation"), ("version", "1")];
    assert_eq!(metric(&metrics, "switchyard_sidecar_dropped_total", &[("version", "1"), ("reason", "deadline")]), 1.0);
    assert_eq!(metric(&metrics, "switchyard_sidecar_inference_seconds_count", &labels), 0.0, "inference ran");
    assert_eq!(metric(&metrics, "switchyard_sidecar_requests_total", &[("status", "deadline_exceeded")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_are_dropped_before_inference() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &slow_batching(8));
    let mut client = sidecar.client();
    // No deadline is sent: the client just gives up (RST_STREAM) while the request is queued.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), client.extract_realtime(request(page(0, "jpg"), ImageFormat::Jpeg))).await;
    assert!(gave_up.is_err(), "the call should still have been queued");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = sidecar.metrics();
    assert_eq!(metric(&metrics, "switchyard_sidecar_dropped_total", &[("version", "1"), ("reason", "cancelled")]), 1.0);
    assert_eq!(metric(&metrics, "switchyard_sidecar_inference_seconds_count", &[("version", "1")]), 0.0, "inference ran");
    assert_eq!(metric(&metrics, "switchyard_sidecar_requests_total", &[("status", "cancelled")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_resource_exhausted_at_once() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &slow_batching(2));
    let client = sidecar.client();
    let image = page(0, "jpg");
    // Two requests fill the queue (they wait up to 1 s for a batch of 8).
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let mut client = client.clone();
            let image = image.clone();
            tokio::spawn(async move { client.extract_realtime(request(image, ImageFormat::Jpeg)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = client.clone();
    let rejected = third.extract_realtime(request(image.clone(), ImageFormat::Jpeg)).await.unwrap_err();
    assert_eq!(rejected.code(), Code::ResourceExhausted, "{rejected:?}");
    assert!(rejected.message().contains("orientation/1 is at capacity (2"), "{}", rejected.message());
    for q in queued {
        q.await.unwrap().expect("queued requests are served");
    }
    // Room again once they are answered.
    third.extract_realtime(request(image, ImageFormat::Jpeg)).await.unwrap();
}

#[test]
fn bad_configuration_names_the_field() {
    let repo = Repo::with(&[("orientation", &[1])]);
    for (config, expected) in [
        ("[batching]\nmax_batch_size = 0\n", "`batching.max_batch_size` must be in 1..=1024"),
        ("[batching]\nmax_batch = 4\n", "unknown field `max_batch`"),
        ("version_header = \"X-Pin\"\n", "`version_header` must be a lower-case ASCII metadata key"),
        ("[models.orientation]\nversions = { specific = [1] }\nlabels = { canary = 2 }\n", "`models.orientation.labels.canary` names version 2"),
        ("[models.orientation]\nversions = { latest = 1, all = true }\n", "exactly one of"),
    ] {
        let err = match Sidecar::try_start(repo.path(), config, &[]) {
            Ok(_) => panic!("started with {config:?}"),
            Err(e) => e,
        };
        assert!(err.contains(expected), "{config:?}: {err}");
    }
}

#[test]
fn missing_onnxruntime_and_repository_fail_clearly() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let err = match Sidecar::try_start(repo.path(), &config(""), &["--onnxruntime", "/nonexistent/libonnxruntime.so"]) {
        Ok(_) => panic!("started without ONNX Runtime"),
        Err(e) => e,
    };
    assert!(err.contains("libonnxruntime not found at /nonexistent/libonnxruntime.so") && err.contains("cargo xtask setup"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = match Sidecar::try_start(&empty.path().join("missing"), &config(""), &[]) {
        Ok(_) => panic!("started without a repository"),
        Err(e) => e,
    };
    assert!(err.contains("cannot read model repository") && err.contains("cargo xtask setup"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accelerator_that_cannot_start_falls_back_to_cpu_unless_required() {
    // The venv's onnxruntime is the CPU build: CUDA cannot start here.
    let repo = Repo::with(&[("orientation-lite", &[1])]);
    let sidecar = Sidecar::start(repo.path(), "[runtime]\nexecution_providers = [\"cuda\", \"cpu\"]\nintra_op_threads = 1\n[repository]\nwatch = false\n");
    assert!(sidecar.log().contains("execution provider could not start"), "{}", sidecar.log());
    assert_eq!(sidecar.models()["versions"][0]["provider"], "cpu");
    let r = sidecar.client().extract_realtime(request(page(180, "jpg"), ImageFormat::Jpeg)).await.unwrap().into_inner();
    assert_eq!(predicted_class(&r.quality_scores), "180");

    let err = match Sidecar::try_start(repo.path(), &config(""), &["--execution-providers", "cuda", "--require-provider"]) {
        Ok(_) => panic!("started on CPU although CUDA was required"),
        Err(e) => e,
    };
    assert!(err.contains("execution provider `cuda` could not start and `runtime.require_provider` is set"), "{err}");
}
