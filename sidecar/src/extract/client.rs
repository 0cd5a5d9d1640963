//! The model server's side of a run: one `ExtractBatch` call per chunk of images, with the
//! priority and version metadata on every call, directly to a sidecar or through Envoy.

use super::row::{Failure, Row};
use anyhow::{bail, Context, Result};
use sha2::Digest;
use switchyard_proto::features::v1::extract_batch_item::Result as Item;
use switchyard_proto::features::v1::extract_realtime_request::ImageFormat;
use switchyard_proto::features::v1::feature_extraction_service_client::FeatureExtractionServiceClient;
use switchyard_proto::features::v1::ExtractRealtimeRequest;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;

#[derive(Clone)]
pub(crate) struct Extractor {
    client: FeatureExtractionServiceClient<Channel>,
    metadata: MetadataMap,
    target: String,
}

impl Extractor {
    /// Connects to `target` (`http://host:port`); `metadata` goes on every call.
    pub(crate) async fn connect(target: &str, metadata: &[(String, String)]) -> Result<Extractor> {
        let channel = tonic::transport::Endpoint::from_shared(target.to_string())
            .with_context(|| format!("bad target {target:?}"))?
            .connect()
            .await
            .with_context(|| format!("cannot connect to the model server at {target}"))?;
        let mut map = MetadataMap::new();
        for (key, value) in metadata {
            let k = MetadataKey::from_bytes(key.as_bytes()).with_context(|| format!("bad metadata key {key:?}"))?;
            let v = MetadataValue::try_from(value.as_str()).with_context(|| format!("bad metadata value {value:?} for {key}"))?;
            map.insert(k, v);
        }
        // Images are large: allow answers for a whole chunk of 1280-float vectors.
        let client = FeatureExtractionServiceClient::new(channel).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20);
        Ok(Extractor { client, metadata: map, target: target.to_string() })
    }

    /// Reads `paths` and extracts them in one call: one row per path, in order. Files that
    /// cannot be read are failed rows without a call. An error is the call's as a whole
    /// (the server is unreachable or refused the call): no row of the chunk is known then.
    pub(crate) async fn extract(&self, paths: Vec<String>) -> Result<Vec<Row>> {
        let loaded = tokio::task::spawn_blocking(move || paths.into_iter().map(read).collect::<Vec<_>>()).await?;
        // The bytes go into the requests; what each row needs of its file stays here.
        let mut requests = Vec::new();
        let mut files = Vec::with_capacity(loaded.len());
        for (path, file) in loaded {
            match file {
                Ok((sha256, image_data)) => {
                    let request_id = requests.len().to_string();
                    requests.push(ExtractRealtimeRequest { request_id, image_data, image_format: ImageFormat::Unknown as i32 });
                    files.push((path, Ok(sha256)));
                }
                Err(failure) => files.push((path, Err(failure))),
            }
        }
        let mut items = Vec::new().into_iter();
        if !requests.is_empty() {
            let sent = requests.len();
            let mut request = tonic::Request::new(tokio_stream::iter(requests));
            *request.metadata_mut() = self.metadata.clone();
            let answer = self.client.clone().extract_batch(request).await.map_err(|status| {
                anyhow::anyhow!("ExtractBatch to {}: {:?}: {}", self.target, status.code(), status.message())
            })?;
            let answered = answer.into_inner().items;
            if answered.len() != sent {
                bail!("ExtractBatch to {} answered {} items for {sent} images", self.target, answered.len());
            }
            items = answered.into_iter();
        }
        let mut rows = Vec::with_capacity(files.len());
        for (path, file) in files {
            rows.push(match file {
                Err(failure) => Row::failed(path, None, failure),
                Ok(sha256) => match items.next().and_then(|i| i.result) {
                    Some(Item::Response(r)) => Row::answered(path, sha256, r),
                    Some(Item::Error(e)) => Row::refused(path, sha256, e),
                    None => bail!("ExtractBatch to {} answered an empty item for {path}", self.target),
                },
            });
        }
        Ok(rows)
    }
}

/// A file's path with its hex SHA-256 and bytes, or why it could not be read.
fn read(path: String) -> (String, Result<(String, Vec<u8>), Failure>) {
    let file = match std::fs::read(&path) {
        Ok(bytes) => Ok((hex::encode(sha2::Sha256::digest(&bytes)), bytes)),
        Err(e) => Err(Failure::unreadable(&path, &e)),
    };
    (path, file)
}
