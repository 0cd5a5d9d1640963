//! The Arrow schema of the output and rows → record batches.
//!
//! `features` is a fixed-size list of float32 whose width is the model's (1280 for the
//! orientation model). Parquet has no fixed-size list: it is stored as a plain LIST, which
//! DuckDB reads as `FLOAT[]`, Spark as `array<float>` and Trino as `array(real)`; pyarrow
//! reads it back as `fixed_size_list<float, N>` from the Arrow schema kept in the footer.
//! Quality scores are a `map<string, float>`: their names depend on the model (`class/<label>`).

use super::row::Row;
use anyhow::{bail, Result};
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, Int32Builder, MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;

/// The schema of every part file; `feature_len` is the model's vector width.
pub(crate) fn schema(feature_len: i32) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, true),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("features", DataType::FixedSizeList(feature_item(), feature_len), true),
        Field::new("quality_scores", DataType::Map(map_entries(), false), true),
        Field::new("processed_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("error_code", DataType::Int32, true),
        Field::new("error_message", DataType::Utf8, true),
    ]))
}

/// The width of `features` in a schema this module wrote (or `None` if it has no such column).
pub(crate) fn feature_len(schema: &Schema) -> Option<usize> {
    match schema.field_with_name("features").ok()?.data_type() {
        DataType::FixedSizeList(_, n) => usize::try_from(*n).ok(),
        _ => None,
    }
}

fn feature_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

/// Parquet's MAP layout names (`key_value` of `key`, `value`), which every reader expects.
fn map_names() -> MapFieldNames {
    MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() }
}

fn map_entries() -> Arc<Field> {
    let names = map_names();
    Arc::new(Field::new(
        names.entry,
        DataType::Struct(Fields::from(vec![Field::new(names.key, DataType::Utf8, false), Field::new(names.value, DataType::Float32, false)])),
        false,
    ))
}

/// `rows` as one record batch of `schema(feature_len)`. A vector of another width is an error
/// naming the image: one file holds one width.
pub(crate) fn record_batch(rows: &[Row], feature_len: usize) -> Result<RecordBatch> {
    let width = i32::try_from(feature_len)?;
    let mut path = StringBuilder::new();
    let mut sha256 = StringBuilder::new();
    let mut model_version = StringBuilder::new();
    let mut features = FixedSizeListBuilder::with_capacity(Float32Builder::with_capacity(rows.len() * feature_len), width, rows.len())
        .with_field(feature_item());
    let names = map_names();
    let mut scores = MapBuilder::new(Some(names.clone()), StringBuilder::new(), Float32Builder::new())
        .with_values_field(Arc::new(Field::new(names.value, DataType::Float32, false)));
    let mut processed_at = Vec::with_capacity(rows.len());
    let mut error_code = Int32Builder::with_capacity(rows.len());
    let mut error_message = StringBuilder::new();
    for row in rows {
        path.append_value(&row.path);
        sha256.append_option(row.sha256.as_deref());
        model_version.append_option(row.model_version.as_deref());
        match &row.features {
            Some(v) if v.len() == feature_len => {
                features.values().append_slice(v);
                features.append(true);
            }
            Some(v) => bail!(
                "{}: the model answered {} floats, but this output's vectors have {feature_len} (did the model change under the same version?)",
                row.path,
                v.len()
            ),
            None => {
                // A null entry still occupies `width` (ignored) slots of the values.
                features.values().append_nulls(feature_len);
                features.append(false);
            }
        }
        match &row.quality_scores {
            Some(s) => {
                for (name, score) in s {
                    scores.keys().append_value(name);
                    scores.values().append_value(*score);
                }
                scores.append(true)?;
            }
            None => scores.append(false)?,
        }
        processed_at.push(row.processed_at_us);
        error_code.append_option(row.error.as_ref().map(|e| e.code));
        error_message.append_option(row.error.as_ref().map(|e| e.message.as_str()));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(path.finish()),
        Arc::new(sha256.finish()),
        Arc::new(model_version.finish()),
        Arc::new(features.finish()),
        Arc::new(scores.finish()),
        Arc::new(TimestampMicrosecondArray::from(processed_at).with_timezone("UTC")),
        Arc::new(error_code.finish()),
        Arc::new(error_message.finish()),
    ];
    Ok(RecordBatch::try_new(schema(width), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::row::Failure;

    fn answered(path: &str, features: Vec<f32>) -> Row {
        Row {
            path: path.into(),
            sha256: Some("ab".into()),
            model_version: Some("m/1".into()),
            features: Some(features),
            quality_scores: Some(vec![("blur".into(), 1.5), ("brightness".into(), 0.5)]),
            processed_at_us: 1,
            error: None,
        }
    }

    #[test]
    fn answers_and_failures_share_one_batch() {
        let failed = Row::failed("x.txt".into(), None, Failure { code: 3, message: "not an image".into() });
        let batch = record_batch(&[answered("a.jpg", vec![1.0, 2.0, 3.0]), failed], 3).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(feature_len(&batch.schema()), Some(3));
        assert_eq!(batch.column_by_name("features").unwrap().null_count(), 1);
        assert_eq!(batch.column_by_name("error_code").unwrap().null_count(), 1);
    }

    #[test]
    fn a_vector_of_another_width_names_the_image() {
        let e = record_batch(&[answered("a.jpg", vec![1.0, 2.0])], 3).err().unwrap().to_string();
        assert!(e.contains("a.jpg") && e.contains("2 floats") && e.contains("have 3"), "{e}");
    }
}
