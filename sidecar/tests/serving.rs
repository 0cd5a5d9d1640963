//! Serving the real model: answers, versions, batching, health, reflection, chaos, bulk.

mod support;

use support::*;
use switchyard_proto::features::v1::{extract_batch_item, extract_realtime_request::ImageFormat};

fn demo_like() -> String {
    config(
        r#"
[batching]
max_batch_size = 8
max_queue_delay_us = 20000

[models.orientation]
versions = { specific = [1, 2] }
labels = { stable = 1, canary = 2 }
default_version = "stable"
"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifies_rendered_pages_and_returns_deterministic_features() {
    let repo = Repo::with(&[("orientation", &[1, 2]), ("orientation-lite", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &demo_like());
    let mut client = sidecar.client();

    for rotation in [0, 90, 180, 270] {
        for (ext, format) in [("jpg", ImageFormat::Jpeg), ("png", ImageFormat::Png), ("jpg", ImageFormat::Unknown)] {
            for pin in ["stable", "canary", "orientation-lite/1"] {
                let response = client
                    .extract_realtime(pinned(request(page(rotation, ext), format), pin))
                    .await
                    .unwrap_or_else(|s| panic!("page-{rotation}.{ext} on {pin}: {s:?}"))
                    .into_inner();
                assert_eq!(
                    predicted_class(&response.quality_scores),
                    rotation.to_string(),
                    "page-{rotation}.{ext} on {pin}: {:?}",
                    response.quality_scores
                );
                assert_eq!(response.feature_vector.len(), 1280);
                assert!(response.processed_at.is_some());
            }
        }
    }

    // Unpinned requests go to the default (stable) version; features are deterministic.
    let a = client.extract_realtime(request(page(0, "jpg"), ImageFormat::Jpeg)).await.unwrap().into_inner();
    let b = client.extract_realtime(request(page(0, "jpg"), ImageFormat::Jpeg)).await.unwrap().into_inner();
    assert_eq!(a.model_version, "orientation/1");
    assert_eq!(a.request_id, "t");
    assert_eq!(a.feature_vector, b.feature_vector);
    assert!(a.feature_vector.iter().all(|v| v.is_finite()) && a.feature_vector.iter().any(|v| *v != 0.0));

    // Quality: a text page is bright and sharp; a blurred copy is less sharp.
    let blur = a.quality_scores["blur"];
    let brightness = a.quality_scores["brightness"];
    assert!(brightness > 0.7 && brightness <= 1.0, "brightness {brightness}");
    assert!(blur > 100.0, "blur {blur}");

    // Pins by number, label and model/version name the version that answered.
    for (pin, expected) in [("2", "orientation/2"), ("orientation/canary", "orientation/2"), ("orientation-lite", "orientation-lite/1")] {
        let r = client.extract_realtime(pinned(request(page(0, "jpg"), ImageFormat::Jpeg), pin)).await.unwrap().into_inner();
        assert_eq!(r.model_version, expected, "pin {pin}");
    }
    let unknown = client.extract_realtime(pinned(request(page(0, "jpg"), ImageFormat::Jpeg), "7")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("orientation/1"), "{}", unknown.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &demo_like());
    let client = sidecar.client();
    let image = page(90, "jpg");
    let calls = (0..24).map(|_| {
        let mut client = client.clone();
        let image = image.clone();
        async move { client.extract_realtime(request(image, ImageFormat::Jpeg)).await }
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(predicted_class(&result.unwrap().into_inner().quality_scores), "90");
    }
    let metrics = sidecar.metrics();
    let labels = [("model", "orientation"), ("version", "1")];
    let images = metric(&metrics, "switchyard_sidecar_batch_size_sum", &labels);
    let batches = metric(&metrics, "switchyard_sidecar_batch_size_count", &labels);
    let single = metric(&metrics, "switchyard_sidecar_batch_size_bucket", &[("version", "1"), ("le", "1.0")]);
    assert_eq!(images, 24.0);
    assert!(batches < images && single < batches, "no batch larger than 1: {batches} batches, {single} of size 1");
    assert_eq!(metric(&metrics, "switchyard_sidecar_requests_total", &[("version", "1"), ("status", "ok")]), 24.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_rpc_answers_every_image_in_order() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &demo_like());
    let mut client = sidecar.client();
    let mut requests = Vec::new();
    for (i, rotation) in [0, 90, 180, 270, 0, 180].into_iter().enumerate() {
        let mut r = request(page(rotation, "jpg"), ImageFormat::Jpeg);
        r.request_id = format!("img-{i}");
        requests.push(r);
    }
    let mut bad = request(b"not an image".to_vec(), ImageFormat::Unknown);
    bad.request_id = "bad".into();
    requests.insert(3, bad);
    let response = client.extract_batch(futures::stream::iter(requests)).await.unwrap().into_inner();
    assert_eq!(response.items.len(), 7);
    let expected = ["0", "90", "180", "bad", "270", "0", "180"];
    for (item, want) in response.items.iter().zip(expected) {
        match item.result.as_ref().unwrap() {
            extract_batch_item::Result::Response(r) => assert_eq!(predicted_class(&r.quality_scores), want),
            extract_batch_item::Result::Error(e) => {
                assert_eq!(want, "bad");
                assert_eq!(e.request_id, "bad");
                assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_per_version_and_reflection() {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let repo = Repo::with(&[("orientation", &[1, 2])]);
    let sidecar = Sidecar::start(repo.path(), &demo_like());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", sidecar.grpc)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "features.v1.FeatureExtractionService", "orientation", "orientation/1", "orientation/2", "orientation/stable", "orientation/canary"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?} should be SERVING");
    }
    let missing = health.check(HealthCheckRequest { service: "orientation/3".into() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut responses = reflection.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let first = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else { panic!("{first:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"features.v1.FeatureExtractionService".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_injects_errors_and_latency_into_one_version() {
    let repo = Repo::with(&[("orientation", &[1, 2])]);
    let sidecar = Sidecar::start(repo.path(), &demo_like());
    let mut client = sidecar.client();
    let (status, body) = sidecar.http("POST", "/v1/chaos", r#"{"target":"orientation/canary","error_rate":1.0,"error_code":"UNAVAILABLE"}"#);
    assert_eq!(status, 200, "{body}");
    let err = client.extract_realtime(pinned(request(page(0, "jpg"), ImageFormat::Jpeg), "canary")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    client.extract_realtime(pinned(request(page(0, "jpg"), ImageFormat::Jpeg), "stable")).await.unwrap();
    let models = sidecar.models();
    let canary = models["versions"].as_array().unwrap().iter().find(|v| v["name"] == "orientation/2").unwrap();
    assert_eq!(canary["fault"]["error_code"], "UNAVAILABLE");

    let (status, _) = sidecar.http("POST", "/v1/chaos", r#"{"target":"orientation/2","latency_ms":300}"#);
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    client.extract_realtime(pinned(request(page(0, "jpg"), ImageFormat::Jpeg), "2")).await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "latency not injected");

    let (status, body) = sidecar.http("DELETE", "/v1/chaos?target=orientation/canary", "");
    assert_eq!((status, body.contains("\"cleared\":1")), (200, true), "{body}");
    client.extract_realtime(pinned(request(page(0, "jpg"), ImageFormat::Jpeg), "canary")).await.unwrap();

    let (status, body) = sidecar.http("POST", "/v1/chaos", r#"{"target":"orientation/2","error_rate":2}"#);
    assert_eq!(status, 400);
    assert!(body.contains("error_rate"), "{body}");
    let (status, body) = sidecar.http("POST", "/v1/chaos", r#"{"target":"orientation/9"}"#);
    assert_eq!(status, 400);
    assert!(body.contains("target"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_give_each_target_its_own_address() {
    let repo = Repo::with(&[("orientation", &[1, 2]), ("orientation-lite", &[1])]);
    let config = format!(
        "{}\n[[endpoints]]\nlisten = \"127.0.0.1:0\"\ndefault_version = \"orientation/canary\"\n\n\
         [[endpoints]]\nlisten = \"127.0.0.1:0\"\ndefault_version = \"orientation-lite\"\n",
        demo_like()
    );
    let sidecar = Sidecar::start(repo.path(), &config);
    for (client, expected) in [
        (sidecar.client(), "orientation/1"),
        (sidecar.endpoint_client("orientation/canary"), "orientation/2"),
        (sidecar.endpoint_client("orientation-lite"), "orientation-lite/1"),
    ] {
        let mut client = client;
        let r = client.extract_realtime(request(page(270, "jpg"), ImageFormat::Jpeg)).await.unwrap().into_inner();
        assert_eq!(r.model_version, expected);
        assert_eq!(predicted_class(&r.quality_scores), "270");
        // The header still pins.
        let r = client.extract_realtime(pinned(request(page(0, "jpg"), ImageFormat::Jpeg), "orientation/stable")).await.unwrap().into_inner();
        assert_eq!(r.model_version, "orientation/1");
    }
    let err = match Sidecar::try_start(repo.path(), &format!("{}\n[[endpoints]]\nlisten = \"127.0.0.1:0\"\ndefault_version = \"orientation/9\"\n", demo_like()), &[]) {
        Ok(_) => panic!("started with an endpoint for a version that is not served"),
        Err(e) => e,
    };
    assert!(err.contains("`endpoints[0].default_version`"), "{err}");
}
