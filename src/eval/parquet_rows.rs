//! The rows of a parquet file as JSON objects: the hub's dataset files (HumanEval, MBPP) are
//! parquet, a few hundred rows of strings, integers and lists of strings.

use std::path::Path;

use anyhow::{Context, Result};
use parquet::file::reader::SerializedFileReader;
use parquet::record::Field;
use serde_json::{Map, Value};

pub fn read(path: &Path) -> Result<Vec<Value>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a parquet file", path.display()))?;
    let mut rows = Vec::new();
    for row in reader {
        let row = row.with_context(|| format!("{}: unreadable row", path.display()))?;
        let object: Map<String, Value> = row
            .into_columns()
            .into_iter()
            .map(|(name, field)| (name, json(&field)))
            .collect();
        rows.push(Value::Object(object));
    }
    Ok(rows)
}

/// The JSON form of the field types these datasets use; others become their text.
fn json(field: &Field) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Int(i) => Value::from(*i),
        Field::Long(i) => Value::from(*i),
        Field::Str(s) => Value::String(s.clone()),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(json).collect()),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-row file written by pyarrow with the schema of the hub's MBPP parquet (snappy).
    #[test]
    fn reads_the_hub_mbpp_schema() -> Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/mbpp-2.parquet");
        let rows = read(&path)?;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["task_id"], Value::from(11));
        assert!(rows[0]["test_list"]
            .as_array()
            .is_some_and(|t| t.len() == 3));
        Ok(())
    }

    #[test]
    fn reads_the_hub_humaneval_schema() -> Result<()> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/humaneval-2.parquet");
        let rows = read(&path)?;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["task_id"], Value::from("HumanEval/1"));
        assert!(rows[0]["canonical_solution"].is_string());
        Ok(())
    }
}
