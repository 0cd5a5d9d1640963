//! The `SchemaRegistry` gRPC service, served over a real loopback socket by tonic.

mod common;

use switchyard_proto::switchyard::registry::v1 as pb;
use switchyard_schema::compile::compile_dir;
use switchyard_schema::registry::{Registry, RegistryConfig};
use switchyard_schema::Schema;
use pb::schema_registry_client::SchemaRegistryClient;

fn corpus_schema(side: &str) -> Schema {
    compile_dir(&common::corpus_dir().join(format!("features_v1__ok_add_fields/{side}"))).unwrap()
}

fn breaking_schema() -> Schema {
    compile_dir(&common::corpus_dir().join("features_v1__break_types/new")).unwrap()
}

async fn serve(registry: std::sync::Arc<Registry>) -> SchemaRegistryClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(switchyard_schema::service::server(registry))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    SchemaRegistryClient::connect(format!("http://{addr}")).await.unwrap()
}

#[tokio::test]
async fn registry_over_grpc() {
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    registry.register(corpus_schema("old"), "001", None, false).unwrap();
    registry.register(corpus_schema("new"), "002", None, false).unwrap();
    let mut client = serve(registry.clone()).await;

    let list = client.list_subjects(pb::ListSubjectsRequest {}).await.unwrap().into_inner();
    assert_eq!(list.generation, 2);
    assert_eq!(list.subjects.len(), 1);
    let subject = &list.subjects[0];
    assert_eq!((subject.name.as_str(), subject.current_revision), ("features.v1", 2));
    assert_eq!(subject.mode, pb::CompatibilityMode::Backward as i32);
    assert_eq!(subject.revisions[0].files, ["features/v1/features.proto"]);

    let rev = client
        .get_revision(pb::GetRevisionRequest { subject: "features.v1".into(), revision: 1 })
        .await
        .unwrap()
        .into_inner();
    let decoded = Schema::decode(&rev.descriptor_set).unwrap();
    assert_eq!(decoded.fingerprint().to_string(), rev.revision.unwrap().fingerprint);
    let missing = client
        .get_revision(pb::GetRevisionRequest { subject: "features.v1".into(), revision: 7 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Two registered revisions against each other.
    let pair = client
        .check_compatibility(pb::CheckCompatibilityRequest {
            subject: "features.v1".into(),
            candidate: Some(pb::check_compatibility_request::Candidate::Revision(2)),
            against_revision: 1,
            category: pb::RuleCategory::WireJson as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pair.compatible, "{pair:?}");
    assert_eq!(pair.old_client_new_server, Some(pb::PairVerdict { requests: true, responses: true }));

    // An uploaded breaking set against the subject, as the gate would see it.
    let upload = client
        .check_compatibility(pb::CheckCompatibilityRequest {
            subject: "features.v1".into(),
            candidate: Some(pb::check_compatibility_request::Candidate::DescriptorSet(breaking_schema().encode())),
            against_revision: 0,
            category: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!upload.compatible);
    let rules: Vec<&str> = upload.findings.iter().map(|f| f.rule.as_str()).collect();
    assert!(rules.contains(&"FIELD_WIRE_COMPATIBLE_TYPE"), "{rules:?}");
    assert!(upload.findings.iter().all(|f| f.against_revision == 2 && f.line > 0));
    assert_eq!(registry.state().generation, 2, "checking registers nothing");

    let bad_upload = client
        .check_compatibility(pb::CheckCompatibilityRequest {
            subject: "features.v1".into(),
            candidate: Some(pb::check_compatibility_request::Candidate::DescriptorSet(vec![0xff, 0xff])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_upload.code(), tonic::Code::InvalidArgument);

    // Validation with a field path.
    let invalid = client
        .validate(pb::ValidateRequest {
            subject: "features.v1".into(),
            message_type: "features.v1.ExtractRealtimeRequest".into(),
            payload: vec![0, 0, 0, 0, 2, 2 << 3, 1],
            grpc_frames: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!invalid.valid);
    assert_eq!(invalid.revision, 2);
    assert_eq!(invalid.violations[0].kind, "wrong_wire_type");
    assert_eq!(invalid.violations[0].path, "image_data");
    assert_eq!(invalid.violations[0].frame, Some(0));

    // Snapshot, and the cheap "unchanged" answer.
    let snap = client
        .get_snapshot(pb::GetSnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snap.generation, 2);
    let parsed = switchyard_schema::snapshot::Snapshot::from_json(&snap.snapshot_json).unwrap();
    assert_eq!(parsed.verdict("features.v1", 2, 1).map(|v| v.is_compatible()), Some(true));
    let same = client
        .get_snapshot(pb::GetSnapshotRequest { known_generation: 2, include_descriptors: false })
        .await
        .unwrap()
        .into_inner();
    assert!(same.snapshot_json.is_empty());
    let with_sets = client
        .get_snapshot(pb::GetSnapshotRequest { known_generation: 0, include_descriptors: true })
        .await
        .unwrap()
        .into_inner();
    let parsed = switchyard_schema::snapshot::Snapshot::from_json(&with_sets.snapshot_json).unwrap();
    assert!(parsed.subjects["features.v1"].revisions.iter().all(|r| r.descriptor_set.is_some()));
}
