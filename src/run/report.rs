//! `trajflow report`: learning curves of one or more run directories (PNG) and a comparison table
//! of their metrics. The area under a curve is the mean of its values over iterations 1..N (the
//! warm-start point excluded), so runs of equal length compare directly.

use std::path::{Path, PathBuf};

use super::metrics::{IterationMetrics, MetricsFile};
use super::plot::{save_png, Panel, Series};
use crate::error::{Error, Result};

/// The run's name in legends: its directory name.
fn name(run: &Path) -> String {
    run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| run.display().to_string())
}

fn curve(ms: &[IterationMetrics], f: impl Fn(&IterationMetrics) -> Option<f64>) -> Vec<(f64, f64)> {
    ms.iter().filter_map(|m| f(m).map(|y| (m.iteration as f64, y))).collect()
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

fn cell(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// Draws the curves of `runs` into `output` and returns the comparison table (Markdown).
pub fn report(runs: &[PathBuf], output: &Path) -> Result<String> {
    if runs.is_empty() {
        return Err(Error::Usage("report: name at least one run directory".into()));
    }
    let mut all = Vec::new();
    for r in runs {
        let ms = MetricsFile::new(r).read()?;
        if ms.is_empty() {
            return Err(Error::file(
                &r.join("metrics.jsonl"),
                "no metrics: not a run directory, or the run has not started",
            ));
        }
        all.push((name(r), ms));
    }
    let panel = |title: &str, y_range, f: &dyn Fn(&IterationMetrics) -> Option<f64>| Panel {
        title: title.into(),
        y_range,
        series: all.iter().map(|(n, ms)| Series { label: n.clone(), points: curve(ms, f) }).collect(),
    };
    let panels = [
        panel("eval success (greedy, dev tasks)", Some((0.0, 1.0)), &|m| m.eval_success_rate),
        panel("rollout success (sampled)", Some((0.0, 1.0)), &|m| (m.iteration > 0).then_some(m.success_rate)),
        panel("policy entropy (action tokens)", None, &|m| (m.iteration > 0).then_some(m.entropy)),
    ];
    save_png(&panels, output)?;
    let mut table = String::from(
        "| run | iterations | eval success after warm start | final eval success | best eval | eval AUC | final rollout success |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (n, ms) in &all {
        let rl: Vec<&IterationMetrics> = ms.iter().filter(|m| m.iteration > 0).collect();
        let last = ms.last().expect("non-empty");
        table.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} | {} |\n",
            rl.len(),
            cell(ms.iter().find(|m| m.iteration == 0).and_then(|m| m.eval_success_rate)),
            cell(last.eval_success_rate),
            cell(ms.iter().filter_map(|m| m.eval_success_rate).reduce(f64::max)),
            cell(mean(rl.iter().filter_map(|m| m.eval_success_rate))),
            cell((last.iteration > 0).then_some(last.success_rate)),
        ));
    }
    Ok(table)
}
