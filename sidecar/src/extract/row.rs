//! One output row: an image's features and scores, or why it has none. A failed image is a
//! row with an error code and message, never an abort: a bulk run over millions of files
//! should report its few bad ones, not stop at the first.

use switchyard_proto::features::v1::{ExtractError, ExtractRealtimeResponse};

pub(crate) struct Row {
    /// The image's id: its path as listed or found.
    pub path: String,
    /// Hex SHA-256 of the file's bytes (`None` when it could not be read).
    pub sha256: Option<String>,
    /// `<model>/<version>` that answered (`None` for failures: no model may have seen it).
    pub model_version: Option<String>,
    pub features: Option<Vec<f32>>,
    /// Sorted by name, so equal answers make equal files.
    pub quality_scores: Option<Vec<(String, f32)>>,
    /// When the model answered, or when the failure was recorded; µs since the Unix epoch, UTC.
    pub processed_at_us: i64,
    pub error: Option<Failure>,
}

/// A `google.rpc.Code` and what went wrong, as the sidecar's `ExtractError` has them.
pub(crate) struct Failure {
    pub code: i32,
    pub message: String,
}

impl Row {
    pub(crate) fn answered(path: String, sha256: String, response: ExtractRealtimeResponse) -> Row {
        let mut scores: Vec<(String, f32)> = response.quality_scores.into_iter().collect();
        scores.sort_by(|a, b| a.0.cmp(&b.0));
        Row {
            path,
            sha256: Some(sha256),
            model_version: Some(response.model_version),
            features: Some(response.feature_vector),
            quality_scores: Some(scores),
            processed_at_us: response.processed_at.map_or_else(now_us, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000),
            error: None,
        }
    }

    /// The sidecar refused this image (bad bytes, too large, …).
    pub(crate) fn refused(path: String, sha256: String, error: ExtractError) -> Row {
        Row::failed(path, Some(sha256), Failure { code: error.code, message: error.message })
    }

    pub(crate) fn failed(path: String, sha256: Option<String>, failure: Failure) -> Row {
        Row {
            path,
            sha256,
            model_version: None,
            features: None,
            quality_scores: None,
            processed_at_us: now_us(),
            error: Some(failure),
        }
    }
}

impl Failure {
    /// A file that could not be read, coded as the gRPC status a server would give it.
    pub(crate) fn unreadable(path: &str, e: &std::io::Error) -> Failure {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => tonic::Code::NotFound,
            std::io::ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
            std::io::ErrorKind::IsADirectory | std::io::ErrorKind::InvalidInput => tonic::Code::InvalidArgument,
            _ => tonic::Code::Unknown,
        };
        Failure { code: code as i32, message: format!("cannot read {path}: {e}") }
    }
}

fn now_us() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}
