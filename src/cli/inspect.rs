//! `trajflow inspect`: what is in a dataset — its parts (and any that cannot be read), the schema,
//! row counts after upserts, per-column statistics, and the first rows.

use std::fmt::Write;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type};

use crate::error::Result;
use crate::store::{input_parts, latest_by_episode, latest_whitening, read_part, Dataset};

/// Renders the inspection report.
pub fn inspect(path: &Path, rows: usize) -> Result<String> {
    let mut s = String::new();
    let (stored, latest) = if Dataset::is_dataset(path) {
        let ds = Dataset::open(path)?;
        let commits = ds.commits()?;
        let _ = writeln!(s, "{}: {} part(s) (trajflow dataset)", path.display(), commits.len());
        if let Some(w) = latest_whitening(&commits) {
            let _ = writeln!(
                s,
                "'{}' is stored before its whitening and whitened when read: {} action tokens, mean {:.6}, {:?} \
                 variance, epsilon {:e} (`trajflow export` writes the values as read)",
                w.column, w.moments.n, w.moments.mean, w.params.std, w.params.epsilon
            );
        }
        let (latest, bad) = ds.read_latest(None, true)?;
        for e in bad {
            let _ = writeln!(s, "  unreadable part skipped: {e}");
        }
        (commits.iter().map(|c| c.rows as usize).sum(), latest)
    } else {
        plain_files(path, &mut s)?
    };
    let Some(first) = latest.first() else {
        let _ = writeln!(s, "no rows");
        return Ok(s);
    };
    let batch = arrow::compute::concat_batches(&first.schema(), &latest)?;
    let _ = writeln!(s, "rows: {} stored, {} current (latest per episode_id)", stored, batch.num_rows());
    let _ = writeln!(s, "columns:");
    for (i, f) in batch.schema().fields().iter().enumerate() {
        let _ = writeln!(s, "  {:<20} {:<14} {}", f.name(), type_name(f.data_type()), stats(batch.column(i).as_ref()));
    }
    let shown = rows.min(batch.num_rows());
    let _ = writeln!(s, "first {shown} row(s):");
    let options = arrow::util::display::FormatOptions::default().with_null("null");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for r in 0..shown {
        let _ = writeln!(s, "  row {r}:");
        for (f, fmt) in batch.schema().fields().iter().zip(&formatters) {
            let _ = writeln!(s, "    {:<20} {}", f.name(), clip(&fmt.value(r).to_string(), 96));
        }
    }
    Ok(s)
}

/// Reads the Parquet files at `path` (a file or a directory of them), reporting unreadable ones
/// in `s`: the stored row count and the latest row per `episode_id` (all rows without one).
fn plain_files(path: &Path, s: &mut String) -> Result<(usize, Vec<RecordBatch>)> {
    let parts = input_parts(path)?;
    let _ = writeln!(s, "{}: {} part(s)", path.display(), parts.len());
    let mut batches = Vec::new();
    for p in &parts {
        match read_part(p, None) {
            Ok(mut b) => batches.append(&mut b),
            Err(e) => {
                let _ = writeln!(s, "  unreadable part skipped: {e}");
            }
        }
    }
    let stored = batches.iter().map(|b| b.num_rows()).sum();
    if batches.first().is_some_and(|b| b.column_by_name("episode_id").is_some()) {
        return Ok((stored, latest_by_episode(&batches)?));
    }
    Ok((stored, batches))
}

fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::List(f) => format!("list<{}>", f.data_type()),
        other => other.to_string(),
    }
}

fn stats(col: &dyn Array) -> String {
    let nulls = col.null_count();
    let base = format!("nulls={nulls}");
    match col.data_type() {
        DataType::Float32 => {
            let a = col.as_primitive::<Float32Type>();
            describe(a.iter().flatten(), base)
        }
        DataType::List(f) if f.data_type() == &DataType::Float32 => {
            let l = col.as_list::<i32>();
            let lens: Vec<usize> = (0..l.len()).map(|i| l.value_length(i) as usize).collect();
            let mean_len = lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64;
            let v = l.values().as_primitive::<Float32Type>();
            describe(v.iter().flatten().filter(|x| !x.is_nan()), format!("{base} mean_len={mean_len:.1}"))
        }
        DataType::List(_) => {
            let l = col.as_list::<i32>();
            let total: i64 = (0..l.len()).map(|i| l.value_length(i) as i64).sum();
            format!("{base} mean_len={:.1}", total as f64 / l.len().max(1) as f64)
        }
        DataType::Boolean => {
            let b = col.as_boolean();
            format!("{base} true={}", b.true_count())
        }
        _ => base,
    }
}

fn describe(values: impl Iterator<Item = f32>, base: String) -> String {
    let (mut n, mut sum, mut min, mut max) = (0u64, 0f64, f32::INFINITY, f32::NEG_INFINITY);
    for x in values {
        n += 1;
        sum += x as f64;
        min = min.min(x);
        max = max.max(x);
    }
    if n == 0 {
        return base;
    }
    format!("{base} mean={:.4} min={min:.4} max={max:.4}", sum / n as f64)
}

/// Shortens `text` to at most `max` characters, marking the cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head} … ({} chars)", text.chars().count())
}
