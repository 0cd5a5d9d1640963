//! `filter/config.schema.json` is generated from the configuration types; this test fails
//! when the committed file differs from what they generate now.

use super::json_schema;
use std::path::Path;

#[test]
fn the_committed_json_schema_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.schema.json");
    let generated = format!("{}\n", serde_json::to_string_pretty(&json_schema()).unwrap());
    if std::env::var_os("SWITCHYARD_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate it with `SWITCHYARD_BLESS=1 cargo test -p switchyard-filter-core json_schema`",
        path.display()
    );
}
