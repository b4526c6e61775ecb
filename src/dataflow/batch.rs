//! The unit that flows through timely streams: an Arrow record batch of episode rows, tagged with
//! the file it came from. Within a process batches move by pointer; between processes they are
//! serialised as Arrow IPC streams (schema + buffers), so no row is ever re-encoded field by field.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Episode rows plus the file they were read from (for error messages).
#[derive(Clone, Debug)]
pub struct Batch {
    /// The rows.
    pub rows: RecordBatch,
    /// The source file (or `-` for rows re-emitted by a grouped stage).
    pub source: Arc<str>,
}

impl Batch {
    /// Splits the rows into one batch per worker, row `i` going to `hash(keys[i]) % peers`
    /// (a batch whose rows all go to one worker is passed on as is).
    pub fn split_by_keys(self, keys: &[String], peers: usize) -> crate::error::Result<Vec<(u64, Batch)>> {
        let mut by_worker: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            by_worker.entry(super::cluster::stable_hash(k.as_bytes()) % peers as u64).or_default().push(i as u32);
        }
        by_worker
            .into_iter()
            .map(|(w, idx)| {
                let rows = if idx.len() == self.rows.num_rows() {
                    self.rows.clone()
                } else {
                    arrow::compute::take_record_batch(&self.rows, &UInt32Array::from(idx))?
                };
                Ok((w, Batch { rows, source: self.source.clone() }))
            })
            .collect()
    }
}

/// Splits `rows` into one batch per worker by `hash(episode_id)`; `source` names them in errors.
pub fn spread_by_episode(rows: RecordBatch, peers: usize, source: &str) -> crate::error::Result<Vec<(u64, Batch)>> {
    if rows.column_by_name("episode_id").is_none() {
        return Err(crate::error::Error::Usage(format!("{source}: the rows have no episode_id")));
    }
    let keys = episode_ids(&rows);
    Batch { rows, source: source.into() }.split_by_keys(&keys, peers)
}

/// The columns of `rows` named in `names`, in that order; names `rows` lacks are skipped (no data
/// is copied).
pub fn select(rows: &RecordBatch, names: &[String]) -> RecordBatch {
    let schema = rows.schema();
    let picked: Vec<usize> = names.iter().filter_map(|c| schema.index_of(c).ok()).collect();
    rows.project(&picked).expect("projecting onto existing column indices cannot fail")
}

/// The `episode_id` of every row (every layout the dataflow sees has the column).
pub fn episode_ids(rows: &RecordBatch) -> Vec<String> {
    let ids = rows.column_by_name("episode_id").expect("every layout has episode_id").as_string::<i32>();
    (0..ids.len()).map(|i| ids.value(i).to_string()).collect()
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut bytes, &self.rows.schema()).map_err(serde::ser::Error::custom)?;
            w.write(&self.rows).map_err(serde::ser::Error::custom)?;
            w.finish().map_err(serde::ser::Error::custom)?;
        }
        (&*self.source, &bytes[..]).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (source, bytes): (String, Vec<u8>) = Deserialize::deserialize(d)?;
        let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(serde::de::Error::custom)?;
        let rows = reader
            .next()
            .ok_or_else(|| serde::de::Error::custom("empty IPC stream"))?
            .map_err(serde::de::Error::custom)?;
        Ok(Batch { rows, source: source.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn ipc_round_trip() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let rows = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1, 2, 3]))]).unwrap();
        let b = Batch { rows: rows.clone(), source: "f.parquet".into() };
        let json = serde_json::to_string(&b).unwrap();
        let back: Batch = serde_json::from_str(&json).unwrap();
        assert_eq!(back.rows, rows);
        assert_eq!(&*back.source, "f.parquet");
    }
}
