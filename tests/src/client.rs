//! A gRPC client for tests: calls through Envoy and reports who answered.

use switchyard_proto::features::v1::feature_extraction_service_client::FeatureExtractionServiceClient;
use switchyard_proto::features::v1::ExtractRealtimeRequest;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;

pub type Client = FeatureExtractionServiceClient<Channel>;

pub const EXTRACT: &str = "/features.v1.FeatureExtractionService/ExtractRealtime";

pub async fn connect(url: &str) -> Client {
    let channel = Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    FeatureExtractionServiceClient::new(channel)
}

/// A successful answer: which upstream served it and the response metadata.
#[derive(Debug)]
pub struct Answer {
    pub served_by: String,
    pub metadata: MetadataMap,
    /// The response's `quality_scores` (with class scores from a classifier).
    pub scores: std::collections::HashMap<String, f32>,
}

impl Answer {
    /// The highest class score (`class/<label>`) and its label, for classifiers.
    pub fn top_class(&self) -> Option<(&str, f32)> {
        self.scores
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("class/")?, *v)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The filter's decision header, if exposed.
    pub fn decision(&self) -> Option<String> {
        self.metadata
            .get("x-switchyard-decision")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// Calls `ExtractRealtime` with the given request metadata and an empty image.
pub async fn extract(client: &mut Client, headers: &[(&str, &str)]) -> Result<Answer, tonic::Status> {
    extract_image(client, headers, Vec::new()).await
}

/// Calls `ExtractRealtime` with an image (format sniffed by the server).
pub async fn extract_image(client: &mut Client, headers: &[(&str, &str)], image: Vec<u8>) -> Result<Answer, tonic::Status> {
    let mut req = tonic::Request::new(ExtractRealtimeRequest {
        request_id: "t".into(),
        image_data: image,
        ..Default::default()
    });
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).expect("header name");
        req.metadata_mut().insert(key, MetadataValue::try_from(*v).expect("header value"));
    }
    let resp = client.extract_realtime(req).await?;
    let metadata = resp.metadata().clone();
    let body = resp.into_inner();
    Ok(Answer { served_by: body.model_version, metadata, scores: body.quality_scores })
}

/// Calls until the request is refused and returns the refusal; panics if it is still served
/// once `within` has passed. After a target degrades, a request can reach an Envoy worker
/// that merges the shared health only on its next tick, so the first call may still be
/// routed: what is promised is the refusal within a bound, not on the first request.
pub async fn refused_within(client: &mut Client, headers: &[(&str, &str)], image: Vec<u8>, within: std::time::Duration) -> tonic::Status {
    let deadline = std::time::Instant::now() + within;
    loop {
        match extract_image(client, headers, image.clone()).await {
            Err(status) => return status,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(answer) => panic!("still served by {} {within:?} after degradation ({headers:?})", answer.served_by),
        }
    }
}

/// Calls an arbitrary method path with an empty message (for methods the upstream
/// does not implement, such as ones an access policy should stop first).
pub async fn call_path(url: &str, path: &str) -> Result<(), tonic::Status> {
    let channel = Channel::from_shared(url.to_owned()).expect("url").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<ExtractRealtimeRequest, ExtractRealtimeRequest>::default();
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    grpc.unary(tonic::Request::new(ExtractRealtimeRequest::default()), path, codec)
        .await
        .map(|_| ())
}

/// Sends `message` (already-encoded protobuf bytes, possibly invalid on purpose) as one
/// gRPC frame to `path`, with metadata; returns the raw response message bytes.
pub async fn call_raw(
    url: &str,
    path: &str,
    headers: &[(&str, &str)],
    message: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = Channel::from_shared(url.to_owned()).expect("url").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(message);
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).expect("header name");
        req.metadata_mut().insert(key, MetadataValue::try_from(*v).expect("header value"));
    }
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    grpc.unary(req, path, raw::RawCodec).await.map(|r| r.into_inner())
}

/// A codec that passes message bytes through untouched.
mod raw {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::Status;

    #[derive(Default)]
    pub struct RawCodec;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawCodec;
        type Decoder = RawCodec;
        fn encoder(&mut self) -> Self::Encoder {
            RawCodec
        }
        fn decoder(&mut self) -> Self::Decoder {
            RawCodec
        }
    }

    impl Encoder for RawCodec {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawCodec {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }
}
