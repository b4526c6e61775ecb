//! `trajflow report`: learning curves of one or more run directories (PNG) and a comparison table
//! of their metrics. The area under a curve is the mean of its values over iterations 1..N (the
//! warm-start point excluded), so runs of equal length compare directly. Runs named `NAME-sSEED`
//! are also summarised per NAME over seeds (mean ± sample std), the learning benchmark's table.

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
                r.join("metrics.jsonl"),
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
    let mut panels = vec![panel("eval success (greedy, dev tasks)", Some((0.0, 1.0)), &|m| m.eval_success_rate)];
    if all.iter().any(|(_, ms)| ms.iter().any(|m| m.eval_final_success_rate.is_some())) {
        panels.push(panel("eval success, all Reflexion trials", Some((0.0, 1.0)), &|m| m.eval_final_success_rate));
    }
    panels.push(panel("rollout success (sampled)", Some((0.0, 1.0)), &|m| (m.iteration > 0).then_some(m.success_rate)));
    panels.push(panel("policy entropy (trained tokens)", None, &|m| {
        (m.iteration > 0 && m.updates > 0).then_some(m.entropy)
    }));
    save_png(&panels, output)?;
    let mut table = String::from(
        "| run | iterations | eval success after warm start | final eval success | best eval | eval AUC | final rollout success | \
         final eval, all Reflexion trials |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (n, ms) in &all {
        let rl: Vec<&IterationMetrics> = ms.iter().filter(|m| m.iteration > 0).collect();
        let last = ms.last().expect("non-empty");
        table.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} |\n",
            rl.len(),
            cell(ms.iter().find(|m| m.iteration == 0).and_then(|m| m.eval_success_rate)),
            cell(last.eval_success_rate),
            cell(ms.iter().filter_map(|m| m.eval_success_rate).reduce(f64::max)),
            cell(mean(rl.iter().filter_map(|m| m.eval_success_rate))),
            cell((last.iteration > 0).then_some(last.success_rate)),
            cell(last.eval_final_success_rate),
        ));
    }
    let seeds = seed_table(&all);
    if !seeds.is_empty() {
        table.push('\n');
        table.push_str(&seeds);
    }
    Ok(table)
}

/// `NAME` of a run directory called `NAME-sSEED`.
fn seed_group(run: &str) -> Option<&str> {
    let (name, seed) = run.rsplit_once("-s")?;
    (!seed.is_empty() && seed.chars().all(|c| c.is_ascii_digit())).then_some(name)
}

fn mean_std(v: &[f64]) -> String {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    format!("{m:.3} ± {sd:.3}")
}

/// Mean ± std over seeds of the eval success after the warm start, at the end, and its AUC.
fn seed_table(all: &[(String, Vec<IterationMetrics>)]) -> String {
    let mut groups: std::collections::BTreeMap<&str, Vec<&Vec<IterationMetrics>>> = Default::default();
    for (n, ms) in all {
        if let Some(g) = seed_group(n) {
            groups.entry(g).or_default().push(ms);
        }
    }
    if groups.is_empty() {
        return String::new();
    }
    let mut t = String::from(
        "| pipeline | seeds | eval success after warm start | final eval success | eval AUC | final rollout success | \
         all Reflexion trials: after warm start | all trials: final |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (g, runs) in groups {
        let col = |f: &dyn Fn(&Vec<IterationMetrics>) -> Option<f64>| -> String {
            let v: Vec<f64> = runs.iter().filter_map(|ms| f(ms)).collect();
            if v.is_empty() {
                "-".into()
            } else {
                mean_std(&v)
            }
        };
        t.push_str(&format!(
            "| {g} | {} | {} | {} | {} | {} | {} | {} |\n",
            runs.len(),
            col(&|ms| ms.iter().find(|m| m.iteration == 0).and_then(|m| m.eval_success_rate)),
            col(&|ms| ms.last().and_then(|m| m.eval_success_rate)),
            col(&|ms| mean(ms.iter().filter(|m| m.iteration > 0).filter_map(|m| m.eval_success_rate))),
            col(&|ms| ms.last().filter(|m| m.iteration > 0).map(|m| m.success_rate)),
            col(&|ms| ms.iter().find(|m| m.iteration == 0).and_then(|m| m.eval_final_success_rate)),
            col(&|ms| ms.last().and_then(|m| m.eval_final_success_rate)),
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_groups_and_summaries() {
        assert_eq!(seed_group("loop-s0"), Some("loop"));
        assert_eq!(seed_group("ppo-gae-s12"), Some("ppo-gae"));
        assert_eq!(seed_group("loop"), None);
        assert_eq!(seed_group("loop-sx"), None);
        assert_eq!(mean_std(&[0.2, 0.4]), "0.300 ± 0.141");
        let run = |final_eval: f64| {
            vec![
                IterationMetrics { iteration: 0, eval_success_rate: Some(0.1), ..Default::default() },
                IterationMetrics {
                    iteration: 1,
                    eval_success_rate: Some(final_eval),
                    success_rate: 0.5,
                    ..Default::default()
                },
            ]
        };
        let t = seed_table(&[("a-s0".into(), run(0.2)), ("a-s1".into(), run(0.4)), ("b".into(), run(0.9))]);
        assert!(t.contains("| a | 2 | 0.100 ± 0.000 | 0.300 ± 0.141 | 0.300 ± 0.141 | 0.500 ± 0.000 | - | - |"), "{t}");
        assert!(!t.contains("| b |"), "{t}");
    }
}
