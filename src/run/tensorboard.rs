//! TensorBoard event files of a run (`RUN/tensorboard/events.out.tfevents.0.trajflow`): every
//! numeric metric of every `metrics.jsonl` line as a scalar, tagged by its JSON path
//! (`eval_success_rate`, `time_s/rollout`, `stream/stale_rows`), at step = the iteration.
//!
//! No well-kept Rust crate writes these files (the one there is, tensorboard-rs, was last released
//! in 2022 on protobuf 2), and the format is small, so it is written here: a TFRecord stream of
//! `Event` protos — each record is `len: u64 LE, masked_crc32c(len): u32, data, masked_crc32c(data):
//! u32` — starting with an event whose `file_version` is `brain.Event:2`.
//!
//! Invariant: the file always describes `metrics.jsonl` exactly. Lines are appended to both;
//! when a resumed run drops metrics lines after its checkpoint, the event file is rewritten from
//! the remaining lines (atomically), so TensorBoard never shows an abandoned branch.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The event file of the run directory `run`.
pub fn events_file(run: &Path) -> PathBuf {
    run.join("tensorboard").join("events.out.tfevents.0.trajflow")
}

/// Appends one metrics line (a JSON object with an `iteration`) as an event.
pub fn append(run: &Path, line: &serde_json::Value) -> Result<()> {
    let path = events_file(run);
    let mut bytes = Vec::new();
    if !path.exists() {
        bytes.extend(record(&version_event()));
    }
    bytes.extend(record(&scalars_event(line)));
    let dir = path.parent().expect("the events file is in a folder");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    f.write_all(&bytes).map_err(|e| Error::io(&path, e))
}

/// Rewrites the event file from `lines` (after a resumed run truncated its metrics).
pub fn rewrite(run: &Path, lines: &[serde_json::Value]) -> Result<()> {
    let path = events_file(run);
    let mut bytes = record(&version_event());
    for l in lines {
        bytes.extend(record(&scalars_event(l)));
    }
    let dir = path.parent().expect("the events file is in a folder");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
    crate::store::write_atomically(dir, &name, &bytes)
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `Event { wall_time = 1, file_version = 3 }`.
fn version_event() -> Vec<u8> {
    let mut e = Vec::new();
    double_field(&mut e, 1, now());
    bytes_field(&mut e, 3, b"brain.Event:2");
    e
}

/// `Event { wall_time = 1, step = 2, summary = 5 { value = 1 { tag = 1, simple_value = 2 }* } }`.
fn scalars_event(line: &serde_json::Value) -> Vec<u8> {
    let mut values = Vec::new();
    flatten("", line, &mut values);
    let step = line.get("iteration").and_then(serde_json::Value::as_i64).unwrap_or(0);
    let mut summary = Vec::new();
    for (tag, x) in values.iter().filter(|(t, _)| t != "iteration") {
        let mut v = Vec::new();
        bytes_field(&mut v, 1, tag.as_bytes());
        key(&mut v, 2, 5);
        v.extend((*x as f32).to_le_bytes());
        bytes_field(&mut summary, 1, &v);
    }
    let mut e = Vec::new();
    double_field(&mut e, 1, now());
    key(&mut e, 2, 0);
    varint(&mut e, step as u64);
    bytes_field(&mut e, 5, &summary);
    e
}

/// Every number in `v`, with its `/`-joined path.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => out.extend(n.as_f64().map(|x| (prefix.to_string(), x))),
        serde_json::Value::Bool(b) => out.push((prefix.to_string(), f64::from(u8::from(*b)))),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}/{k}") };
                flatten(&p, x, out);
            }
        }
        _ => {}
    }
}

fn varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn double_field(out: &mut Vec<u8>, field: u32, x: f64) {
    key(out, field, 1);
    out.extend(x.to_le_bytes());
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend(b);
}

/// One TFRecord.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend(len);
    r.extend(masked_crc(&len).to_le_bytes());
    r.extend(data);
    r.extend(masked_crc(data).to_le_bytes());
    r
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// TFRecord's masking of a CRC.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value_and_protobuf_encodings() {
        // The CRC-32C check value (RFC 3720, B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, vec![0xAC, 0x02]);
        let mut k = Vec::new();
        key(&mut k, 5, 2);
        assert_eq!(k, vec![0x2A]);
    }

    #[test]
    fn rewrite_equals_appends_up_to_wall_times() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<serde_json::Value> = (0..3)
            .map(|i| serde_json::json!({"iteration": i, "loss": 0.5 * i as f64, "time_s": {"learn": 1.0}}))
            .collect();
        for l in &lines {
            append(dir.path(), l).unwrap();
        }
        let appended = std::fs::read(events_file(dir.path())).unwrap();
        rewrite(dir.path(), &lines).unwrap();
        let rewritten = std::fs::read(events_file(dir.path())).unwrap();
        // Same records and lengths; only the 8-byte wall times (and so the CRCs) may differ.
        assert_eq!(appended.len(), rewritten.len());
        let mut tags = Vec::new();
        flatten("", &lines[1], &mut tags);
        assert_eq!(tags, vec![("iteration".into(), 1.0), ("loss".into(), 0.5), ("time_s/learn".into(), 1.0)]);
    }
}
