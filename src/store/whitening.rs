//! A whitening recorded in a dataset instead of applied to its rows.
//!
//! Batch whitening (`normalize`, `scope = "batch"`) divides every action token by a statistic of
//! the whole dataset, so each new file under `watch` would change every stored row. When it ends
//! the pipeline, `watch` instead stores the column as it was before whitening and records the
//! statistic with each commit; readers apply the statistic of the latest commit that has one to
//! every part committed with one. The map is [`crate::ops::normalize::whiten`] itself, with the
//! same f64 statistics (serialised to round-trip exactly), so a read is bit-identical to rows
//! whitened when written. Only trajflow's readers know this: `trajflow export` writes the rows as
//! read, for other tools.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, UInt8Type};
use serde::{Deserialize, Serialize};

use super::read_part;
use crate::error::{Error, Result};
use crate::ops::normalize::{whiten, Moments, NormalizeParams};

/// The whitening of one column, as recorded in a commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeferredWhitening {
    /// The stored column (per-token float32 values before whitening).
    pub column: String,
    /// The segment column whose action tokens are whitened (others read as 0).
    pub segments: String,
    /// Statistics of the action tokens of every current row.
    pub moments: Moments,
    /// Variance estimator, ε and mean handling.
    pub params: NormalizeParams,
    /// The segment column is stored only for the whitening (the writer's output columns did not
    /// include it): reads leave it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub segments_only_for_whitening: bool,
}

impl DeferredWhitening {
    /// Reads the part file `path` (projected onto `columns`, `None` = all) and whitens it.
    pub fn read(&self, path: &Path, columns: Option<&[String]>) -> Result<Vec<RecordBatch>> {
        let mut needed = columns.map(<[String]>::to_vec);
        if let Some(cols) = needed.as_mut().filter(|c| c.contains(&self.column) && !c.contains(&self.segments)) {
            cols.push(self.segments.clone());
        }
        read_part(path, needed.as_deref())?
            .iter()
            .map(|b| {
                let b = self.apply(b, path)?;
                let schema = b.schema();
                let wanted = |name: &String| match columns {
                    Some(cols) => cols.contains(name),
                    None => !(self.segments_only_for_whitening && *name == self.segments),
                };
                let keep: Vec<usize> = (0..b.num_columns()).filter(|&i| wanted(schema.field(i).name())).collect();
                Ok(b.project(&keep)?)
            })
            .collect()
    }

    /// `batch` with the column whitened (unchanged if the batch does not hold it).
    pub fn apply(&self, batch: &RecordBatch, file: &Path) -> Result<RecordBatch> {
        let Some(i) = batch.schema().index_of(&self.column).ok() else { return Ok(batch.clone()) };
        let schema_error = |column: &str, message: &str| Error::Schema {
            file: file.to_path_buf(),
            column: column.to_string(),
            message: message.to_string(),
        };
        let values = batch
            .column(i)
            .as_list_opt::<i32>()
            .filter(|l| l.values().data_type() == &arrow::datatypes::DataType::Float32)
            .ok_or_else(|| schema_error(&self.column, "a deferred whitening needs list<float32>"))?;
        let segments = batch
            .column_by_name(&self.segments)
            .and_then(|c| c.as_list_opt::<i32>())
            .filter(|l| l.values().data_type() == &arrow::datatypes::DataType::UInt8)
            .ok_or_else(|| schema_error(&self.segments, "a deferred whitening needs this list<uint8> column"))?;
        let (x, seg) = (values.values().as_primitive::<Float32Type>(), segments.values().as_primitive::<UInt8Type>());
        let mut out = vec![0f32; x.len()];
        for r in 0..values.len() {
            let (a, b) = (values.value_offsets()[r] as usize, values.value_offsets()[r + 1] as usize);
            let (c, d) = (segments.value_offsets()[r] as usize, segments.value_offsets()[r + 1] as usize);
            if values.is_null(r) || b - a == 0 {
                continue;
            }
            if d - c != b - a {
                return Err(schema_error(&self.column, &format!("row {r}: {} values for {} segments", b - a, d - c)));
            }
            let s = &seg.values()[c..d];
            whiten(&x.values()[a..b], s, &self.moments, &self.params, &mut out[a..b]);
        }
        let arrow::datatypes::DataType::List(field) = values.data_type() else { unreachable!("checked to be a list") };
        let whitened = arrow::array::ListArray::new(
            field.clone(),
            values.offsets().clone(),
            Arc::new(arrow::array::Float32Array::from(out)),
            values.nulls().cloned(),
        );
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[i] = Arc::new(whitened);
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::normalize::{moments, StdKind};
    use arrow::array::{Int32Array, ListArray, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use proptest::prelude::*;

    fn rows(values: &[Option<Vec<f32>>], segments: &[Vec<u8>]) -> RecordBatch {
        let ids: Vec<String> = (0..values.len()).map(|i| format!("e{i}")).collect();
        let v = ListArray::from_iter_primitive::<Float32Type, _, _>(
            values.iter().map(|r| r.as_ref().map(|r| r.iter().map(|&x| Some(x)).collect::<Vec<_>>())),
        );
        let s = ListArray::from_iter_primitive::<UInt8Type, _, _>(
            segments.iter().map(|r| Some(r.iter().map(|&x| Some(x)).collect::<Vec<_>>())),
        );
        let schema = Schema::new(vec![
            Field::new("episode_id", DataType::Utf8, false),
            Field::new("raw", v.data_type().clone(), true),
            Field::new("seg", s.data_type().clone(), true),
            Field::new("other", DataType::Int32, false),
        ]);
        let other = Int32Array::from((0..values.len() as i32).collect::<Vec<_>>());
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(ids)), Arc::new(v), Arc::new(s), Arc::new(other)],
        )
        .unwrap()
    }

    fn whitening(m: Moments) -> DeferredWhitening {
        DeferredWhitening {
            column: "raw".into(),
            segments: "seg".into(),
            moments: m,
            params: NormalizeParams { std: StdKind::Population, epsilon: 1e-6, shift_mean: true },
            segments_only_for_whitening: false,
        }
    }

    fn lists(batch: &RecordBatch, name: &str) -> Vec<Option<Vec<f32>>> {
        let l = batch.column_by_name(name).unwrap().as_list::<i32>();
        (0..l.len())
            .map(|i| l.is_valid(i).then(|| l.value(i).as_primitive::<Float32Type>().values().to_vec()))
            .collect()
    }

    /// Action tokens (segment 1) map through `whiten`, others read 0; null and empty rows stay.
    #[test]
    fn apply_whitens_action_tokens_row_by_row() {
        let values = [Some(vec![9.0, 1.0, 2.0, 9.0]), None, Some(vec![]), Some(vec![3.0, 6.0])];
        let segments = [vec![0, 1, 1, 2], vec![], vec![], vec![1, 1]];
        // Action values 1, 2, 3, 6: mean 3, m2 14, population variance 3.5.
        let m = moments(&[1.0, 2.0, 3.0, 6.0], &[1, 1, 1, 1]);
        assert_eq!(m, Moments { n: 4, mean: 3.0, m2: 14.0 });
        let out = whitening(m).apply(&rows(&values, &segments), Path::new("p")).unwrap();
        let s = 1.0 / (3.5f64 + 1e-6).sqrt();
        let w = |x: f64| ((x - 3.0) * s) as f32;
        assert_eq!(
            lists(&out, "raw"),
            vec![Some(vec![0.0, w(1.0), w(2.0), 0.0]), None, Some(vec![]), Some(vec![w(3.0), w(6.0)])]
        );
        assert_eq!(out.column(3).as_ref(), rows(&values, &segments).column(3).as_ref(), "other columns untouched");
    }

    #[test]
    fn mismatched_lengths_and_missing_segments_are_named() {
        let w = whitening(Moments { n: 2, mean: 0.0, m2: 1.0 });
        let bad = rows(&[Some(vec![1.0, 2.0])], &[vec![1]]);
        let err = w.apply(&bad, Path::new("part-7.parquet")).unwrap_err().to_string();
        assert!(
            err.contains("part-7.parquet") && err.contains("raw") && err.contains("2 values for 1 segments"),
            "{err}"
        );
        let no_seg = bad.project(&[0, 1]).unwrap();
        let err = w.apply(&no_seg, Path::new("p")).unwrap_err().to_string();
        assert!(err.contains("seg"), "{err}");
    }

    /// A projected read fetches the segments it needs and returns only what was asked; a full read
    /// leaves out segments stored only for the whitening.
    #[test]
    fn reads_project_around_the_segments() {
        let dir = tempfile::tempdir().unwrap();
        let batch = rows(&[Some(vec![1.0, 5.0])], &[vec![1, 1]]);
        super::super::write_part(dir.path(), "p.parquet", &[batch], "t.v1").unwrap();
        let path = dir.path().join("p.parquet");
        let mut w = whitening(Moments { n: 2, mean: 3.0, m2: 8.0 });
        let asked = ["episode_id".to_string(), "raw".to_string()];
        let got = w.read(&path, Some(&asked)).unwrap();
        let names: Vec<String> = got[0].schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, asked);
        let s = 1.0 / (4.0f64 + 1e-6).sqrt();
        assert_eq!(lists(&got[0], "raw"), vec![Some(vec![(-2.0 * s) as f32, (2.0 * s) as f32])]);
        assert_eq!(w.read(&path, None).unwrap()[0].num_columns(), 4);
        w.segments_only_for_whitening = true;
        let all = w.read(&path, None).unwrap();
        assert!(all[0].column_by_name("seg").is_none() && all[0].num_columns() == 3);
    }

    /// A value serde_json's default float parser reads back one bit off (found by the property
    /// below before `float_roundtrip` was enabled).
    #[test]
    fn a_value_the_fast_float_parser_rounds_wrongly_round_trips() {
        let w = whitening(Moments { n: 0, mean: 0.0, m2: 979419673784.5253 });
        let back: DeferredWhitening = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back.moments.m2.to_bits(), w.moments.m2.to_bits());
    }

    proptest! {
        /// The statistic survives its JSON commit record bit for bit (a read whitens exactly as
        /// the writer would have).
        #[test]
        fn statistics_round_trip_through_json_exactly(mean in any::<f64>(), m2 in 0.0f64..1e12, n in 0u64..1 << 40) {
            prop_assume!(mean.is_finite());
            let w = whitening(Moments { n, mean, m2 });
            let back: DeferredWhitening = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
            prop_assert_eq!(back.moments.mean.to_bits(), mean.to_bits());
            prop_assert_eq!(back.moments.m2.to_bits(), m2.to_bits());
            prop_assert_eq!(back, w);
        }
    }
}
