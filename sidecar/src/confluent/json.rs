//! Confluent Schema Registry's JSON shapes and error bodies, exactly as its clients read
//! them. Field names are Confluent's (`schemaType`, `compatibilityLevel`, `is_compatible`,
//! `error_code`), not this project's.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use switchyard_schema::compat::Mode;
use switchyard_schema::registry::Reference;

/// Confluent's media type; clients also accept `application/json`.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// The only schema type served.
pub(crate) const PROTOBUF: &str = "PROTOBUF";

/// A JSON answer with Confluent's content type.
pub(crate) fn reply(body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], bytes).into_response(),
        Err(e) => ApiError::store(format!("cannot encode the answer: {e}")).into_response(),
    }
}

/// The body of `POST /subjects/{s}/versions`, `POST /subjects/{s}` and the compatibility
/// checks. Other fields clients send (`metadata`, `ruleSet`, `version`, `id`) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SchemaRequest {
    pub(crate) schema: String,
    /// Absent means AVRO, as in Confluent.
    #[serde(default)]
    pub(crate) schema_type: Option<String>,
    #[serde(default)]
    pub(crate) references: Vec<ReferenceJson>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub(crate) struct ReferenceJson {
    pub(crate) name: String,
    pub(crate) subject: String,
    /// `-1` means the subject's latest version, as in Confluent.
    pub(crate) version: i64,
}

impl From<&Reference> for ReferenceJson {
    fn from(r: &Reference) -> Self {
        ReferenceJson { name: r.name.clone(), subject: r.subject.clone(), version: i64::from(r.version) }
    }
}

/// `GET /subjects/{s}/versions/{v}` and the lookup's answer.
#[derive(Debug, Serialize)]
pub(crate) struct SubjectVersion {
    pub(crate) subject: String,
    pub(crate) id: u32,
    pub(crate) version: u32,
    #[serde(rename = "schemaType")]
    pub(crate) schema_type: &'static str,
    pub(crate) schema: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) references: Vec<ReferenceJson>,
}

/// `GET /schemas/ids/{id}`.
#[derive(Debug, Serialize)]
pub(crate) struct SchemaById {
    pub(crate) schema: String,
    #[serde(rename = "schemaType")]
    pub(crate) schema_type: &'static str,
    pub(crate) references: Vec<ReferenceJson>,
}

/// `GET /schemas/ids/{id}/versions`.
#[derive(Debug, Serialize)]
pub(crate) struct VersionRef {
    pub(crate) subject: String,
    pub(crate) version: u32,
}

/// `POST /subjects/{s}/versions`.
#[derive(Debug, Serialize)]
pub(crate) struct Registered {
    pub(crate) id: u32,
}

/// `POST /compatibility/...`; `messages` only with `?verbose=true`.
#[derive(Debug, Serialize)]
pub(crate) struct Compatibility {
    pub(crate) is_compatible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) messages: Option<Vec<String>>,
}

/// `GET /config[/{s}]` and `DELETE /config[/{s}]`.
#[derive(Debug, Serialize)]
pub(crate) struct ConfigLevel {
    #[serde(rename = "compatibilityLevel")]
    pub(crate) compatibility_level: Mode,
}

/// `PUT /config[/{s}]`: Confluent's clients send `compatibility`; `compatibilityLevel`
/// (what GET answers) is accepted too.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigUpdate {
    #[serde(default)]
    pub(crate) compatibility: Option<String>,
    #[serde(default, rename = "compatibilityLevel")]
    pub(crate) compatibility_level: Option<String>,
}

/// The answer to `PUT /config[/{s}]`: the level set.
#[derive(Debug, Serialize)]
pub(crate) struct ConfigSet {
    pub(crate) compatibility: Mode,
}

/// Confluent's error body, `{"error_code": 40401, "message": "Subject 'x' not found."}`,
/// with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: u32,
    pub(crate) message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error_code: u32,
    message: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: String) -> Self {
        ApiError { status, code, message }
    }

    pub(crate) fn subject_not_found(subject: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found."))
    }

    pub(crate) fn version_not_found(version: u32) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40402, format!("Version {version} not found."))
    }

    pub(crate) fn schema_not_found(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40403, format!("Schema {detail} not found"))
    }

    pub(crate) fn subject_config_not_found(subject: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }

    pub(crate) fn invalid_schema(message: String) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, message)
    }

    pub(crate) fn invalid_version(version: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    pub(crate) fn invalid_compatibility(level: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!(
                "Invalid compatibility level {level:?}. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
            ),
        )
    }

    pub(crate) fn incompatible(subject: &str, details: &[String]) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                details.join(", ")
            ),
        )
    }

    pub(crate) fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 400, message)
    }

    pub(crate) fn unauthorized(message: String) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, 401, message)
    }

    pub(crate) fn forbidden(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, 40301, message)
    }

    pub(crate) fn store(message: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, 50001, format!("Error in the backend datastore: {message}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody { error_code: self.code, message: &self.message })
            .unwrap_or_else(|_| br#"{"error_code":50001,"message":"error"}"#.to_vec());
        (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], body).into_response()
    }
}

/// A version path segment: `latest`, `-1` (also latest) or 1..=2^31-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VersionSpec {
    Latest,
    Number(u32),
}

impl VersionSpec {
    pub(crate) fn parse(text: &str) -> Result<VersionSpec, ApiError> {
        if text.eq_ignore_ascii_case("latest") {
            return Ok(VersionSpec::Latest);
        }
        match text.parse::<i64>() {
            Ok(-1) => Ok(VersionSpec::Latest),
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(VersionSpec::Number(n as u32)),
            _ => Err(ApiError::invalid_version(text)),
        }
    }
}

/// A compatibility level as Confluent spells it (any case).
pub(crate) fn parse_level(text: &str) -> Result<Mode, ApiError> {
    let mode: Mode = text.parse().map_err(|_| ApiError::invalid_compatibility(text))?;
    // `Mode::from_str` also takes `-` for `_`; Confluent does not.
    if text.contains('-') {
        return Err(ApiError::invalid_compatibility(text));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> (StatusCode, String, serde_json::Value) {
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, content_type, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_have_confluents_status_code_and_body() {
        let cases = [
            (ApiError::subject_not_found("x"), 404, 40401, "Subject 'x' not found."),
            (ApiError::version_not_found(3), 404, 40402, "Version 3 not found."),
            (ApiError::schema_not_found(7), 404, 40403, "Schema 7 not found"),
            (ApiError::subject_config_not_found("x"), 404, 40408, "Subject 'x' does not have subject-level compatibility configured"),
            (ApiError::invalid_schema("bad".into()), 422, 42201, "bad"),
            (ApiError::store("disk full".into()), 500, 50001, "Error in the backend datastore: disk full"),
        ];
        for (error, status, code, message) in cases {
            let (s, content_type, body) = body_of(error.into_response()).await;
            assert_eq!(s.as_u16(), status);
            assert_eq!(content_type, CONTENT_TYPE);
            assert_eq!(body, serde_json::json!({"error_code": code, "message": message}));
        }
        let (s, _, body) = body_of(ApiError::incompatible("orders", &["a (R)".into()]).into_response()).await;
        assert_eq!((s.as_u16(), body["error_code"].as_u64()), (409, Some(409)));
        assert!(body["message"].as_str().unwrap().ends_with("subject \"orders\", details: [a (R)]"));
    }

    #[test]
    fn versions_and_levels_parse_as_confluent_spells_them() {
        assert_eq!(VersionSpec::parse("latest").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("-1").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("2").unwrap(), VersionSpec::Number(2));
        for bad in ["0", "-2", "x", "2147483648", ""] {
            assert_eq!(VersionSpec::parse(bad).unwrap_err().code, 42202, "{bad}");
        }
        assert_eq!(parse_level("full_transitive").unwrap(), Mode::FullTransitive);
        assert_eq!(parse_level("NONE").unwrap(), Mode::None);
        assert_eq!(parse_level("FULL-TRANSITIVE").unwrap_err().code, 42203);
        assert_eq!(parse_level("STRICT").unwrap_err().code, 42203);
    }

    #[test]
    fn shapes_serialize_with_confluents_names() {
        let v = SubjectVersion {
            subject: "s".into(),
            id: 4,
            version: 2,
            schema_type: PROTOBUF,
            schema: "syntax".into(),
            references: vec![ReferenceJson { name: "a.proto".into(), subject: "a".into(), version: 1 }],
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"subject": "s", "id": 4, "version": 2, "schemaType": "PROTOBUF", "schema": "syntax",
                               "references": [{"name": "a.proto", "subject": "a", "version": 1}]})
        );
        let c = ConfigLevel { compatibility_level: Mode::BackwardTransitive };
        assert_eq!(serde_json::to_value(&c).unwrap(), serde_json::json!({"compatibilityLevel": "BACKWARD_TRANSITIVE"}));
        let c = Compatibility { is_compatible: true, messages: None };
        assert_eq!(serde_json::to_value(&c).unwrap(), serde_json::json!({"is_compatible": true}));
    }
}
