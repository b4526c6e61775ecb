//! The `trajflow` command line: clap definitions and one function per subcommand. Library errors
//! come back as [`crate::Error`]; `main.rs` prints them and exits non-zero.

#[cfg(not(feature = "torch"))]
pub mod hand_over;
mod inspect;
#[cfg(feature = "torch")]
mod model;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::dataflow::{self, Cluster, Columns, Job};
use crate::error::{Error, Result};
use crate::pipeline::plan::InputColumns;
use crate::pipeline::training_checks::{check_training, TrainingMode};
use crate::pipeline::{explain::explain, PipelineSpec, Plan};
use crate::store::{input_parts, Dataset, PartReader};

/// trajflow: RL for LLM agents as TOML pipelines over Arrow/Parquet on timely dataflow.
#[derive(Parser, Debug)]
#[command(name = "trajflow", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a pipeline file (syntax, operators, parameters, DAG, columns) and exit.
    Validate {
        /// Pipeline TOML file.
        pipeline: PathBuf,
        /// Check columns against this dataset/file instead of the declared input table.
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// Print the validated plan: stages in order, columns, parameters, dataflow shape.
    Explain {
        /// Pipeline TOML file.
        pipeline: PathBuf,
        /// Check columns against this dataset/file instead of the declared input table.
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// List the operators a pipeline stage can use.
    Ops,
    /// Run a pipeline over stored data and write the result as a dataset.
    Reprocess {
        /// Pipeline TOML file.
        pipeline: PathBuf,
        /// Input: a trajflow dataset, a directory of Parquet files, or one Parquet file.
        #[arg(long)]
        input: PathBuf,
        /// Output dataset directory (created if needed; parts are added atomically).
        #[arg(long)]
        output: PathBuf,
        /// Output columns: every trajectory column plus the new ones (all), episode_id + every
        /// column the stages write (outputs), or episode_id + the results, without intermediates (final).
        #[arg(long, value_enum, default_value_t = Columns::All)]
        columns: Columns,
        /// Training on the rows.
        #[command(flatten)]
        learn: TrainArgs,
        /// Where the workers run.
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Process Parquet files as they land in a directory; only touched groups are recomputed.
    Watch {
        /// Pipeline TOML file.
        pipeline: PathBuf,
        /// Directory to watch.
        #[arg(long)]
        input: PathBuf,
        /// Output dataset directory; each file's changes are appended as new parts.
        #[arg(long)]
        output: PathBuf,
        /// Poll interval in milliseconds.
        #[arg(long, default_value_t = 200)]
        poll_ms: u64,
        /// Exit after this many seconds without a new file.
        #[arg(long)]
        idle_exit: Option<f64>,
        /// Exit after this many files.
        #[arg(long)]
        max_files: Option<usize>,
        /// Also ingest `*.jsonl` chat logs of this format (converted through the tokenizer of
        /// --import-model into OUTPUT's `_imported/` folder first).
        #[arg(long, value_enum)]
        import: Option<ImportFormat>,
        /// Model whose tokenizer and chat template render imported logs (default: the pipeline's
        /// [model], else smollm2-135m).
        #[arg(long)]
        import_model: Option<String>,
        /// Output columns: every trajectory column plus the new ones (all), episode_id + every
        /// column the stages write (outputs), or episode_id + the results, without intermediates (final).
        #[arg(long, value_enum, default_value_t = Columns::All)]
        columns: Columns,
        /// Snapshot the grouped stages' state (with --train, the learner's) every this many
        /// files, so that a restart replays only the files after the latest snapshot (0: never;
        /// a restart replays every file). Not with a deferred whitening, which replays every file.
        #[arg(long, default_value_t = 100)]
        snapshot_every: u64,
        /// Retention window: seal a group this many files after it was last touched; later rows
        /// for it are late, counted and kept out (default: groups stay open forever).
        #[arg(long)]
        seal_after: Option<u64>,
        /// Compact the output (merge parts and commit records, fold the ingest log) in the
        /// background every this many files (0: never; `trajflow compact` does it on demand).
        #[arg(long, default_value_t = 1000)]
        compact_every: u64,
        /// Training on the rows.
        #[command(flatten)]
        learn: TrainArgs,
        /// Where the workers run.
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Publish Parquet files into a directory watched by `trajflow watch`, atomically (an actor's
    /// way to hand over trajectories: readers never see a half-written file).
    Append {
        /// Directory to publish into.
        #[arg(long)]
        dir: PathBuf,
        /// Parquet files (trajectory rows).
        files: Vec<PathBuf>,
    },
    /// Print a dataset's schema, row counts, per-column statistics and a few rows.
    Inspect {
        /// A dataset directory, a directory of Parquet files, or one Parquet file.
        dataset: PathBuf,
        /// Rows to print.
        #[arg(long, default_value_t = 3)]
        rows: usize,
    },
    /// Merge a dataset's small parts and commit records into a few large parts, and fold a
    /// `watch` output's ingest log; safe while `watch` writes to it (epochs it has not logged are
    /// left alone) and while readers read it.
    Compact {
        /// A trajflow dataset directory.
        dataset: PathBuf,
        /// Rows per merged part.
        #[arg(long, default_value_t = 200_000)]
        target_rows: usize,
        /// Compact epochs up to this one (default: the last one the ingest log holds, or every
        /// epoch of a dataset without one).
        #[arg(long)]
        through: Option<u64>,
    },
    /// Write a dataset's current rows (the latest per episode_id, a deferred whitening applied) as
    /// one plain Parquet file, for tools that read Parquet without trajflow.
    Export {
        /// A trajflow dataset directory.
        dataset: PathBuf,
        /// The Parquet file to write.
        #[arg(long)]
        output: PathBuf,
        /// Only these columns (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
    },
    /// Write a synthetic trajectory dataset (seeded; for tests, benchmarks, demos).
    Synth {
        /// Output dataset directory.
        #[arg(long)]
        output: PathBuf,
        /// Number of groups.
        #[arg(long, default_value_t = 64)]
        groups: usize,
        /// Rollouts per group.
        #[arg(long, default_value_t = 6)]
        group_size: usize,
        /// Number of part files to split the groups over.
        #[arg(long, default_value_t = 1)]
        parts: usize,
        /// Maximum action tokens per turn.
        #[arg(long, default_value_t = 24)]
        max_action_tokens: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Prefix of episode and group ids.
        #[arg(long, default_value = "e")]
        id_prefix: String,
    },
    /// Report the libtorch in use and whether CUDA is available.
    #[cfg(feature = "torch")]
    Doctor,
    /// Generate a reply with a model (a Hugging Face folder, a .gguf file, or a short name).
    #[cfg(feature = "torch")]
    Generate {
        /// Model SPEC.
        #[arg(long)]
        model: String,
        /// A user message, rendered with the model's chat template.
        #[arg(long)]
        chat: Option<String>,
        /// Raw text to continue instead.
        #[arg(long)]
        prompt: Option<String>,
        /// Maximum new tokens.
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Sampling temperature (0 = greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Top-k (0 = off).
        #[arg(long, default_value_t = 0)]
        top_k: i64,
        /// Top-p (1 = off).
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// Sampler seed.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        /// Arithmetic of the matrix products (`bf16`: autocast-style mixed precision).
        #[arg(long, value_enum, default_value_t = crate::model::precision::Precision::Float32)]
        precision: crate::model::precision::Precision,
    },
    /// Import logged conversations as token-exact trajectories (through a model's chat template).
    #[cfg(feature = "torch")]
    Import {
        /// Input format.
        #[arg(long, value_enum)]
        format: crate::import::Format,
        /// Input file.
        #[arg(long)]
        input: PathBuf,
        /// Output dataset.
        #[arg(long)]
        output: PathBuf,
        /// Model whose tokenizer and chat template render the conversations.
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
    },
    /// Check that a bridged environment keeps the protocol of bridges/PROTOCOL.md: its hello
    /// line, determinism of (task_id, seed), the expert (admissible, solving, within the step
    /// budget), invalid actions, deadlines, stdout hygiene and close. Prints a table; exits
    /// non-zero on a violation.
    EnvCheck {
        /// A bridged environment: `twx[:GAME]`, `scienceworld[:TASK]` or `bridge:PROGRAM ARGS...`.
        env: String,
        /// Train tasks played, each with seeds 0 and 1, twice.
        #[arg(long, default_value_t = 3)]
        tasks: usize,
        /// Deadline per answer in seconds (default: TRAJFLOW_ENV_TIMEOUT, else 60).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Write expert demonstrations of a built-in environment as a trajectory dataset.
    #[cfg(feature = "torch")]
    Demos {
        /// Environment name: `household`, `household-pick`, or a bridged one (`twx[:GAME]`, `scienceworld[:TASK]`, `bridge:PROGRAM ARGS...`; see bridges/PROTOCOL.md).
        #[arg(long, default_value = "household")]
        env: String,
        /// Number of tasks.
        #[arg(long, default_value_t = 100)]
        tasks: usize,
        /// Task split.
        #[arg(long, value_enum, default_value_t = SplitArg::Train)]
        split: SplitArg,
        /// Output dataset.
        #[arg(long)]
        output: PathBuf,
        /// Model whose tokenizer and chat template render the episodes.
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
    },
    /// Train: run a training pipeline's loop (rollouts → stages → learner, one iteration per
    /// policy version) and write a run directory (config, trajectories, metrics, checkpoints, plot).
    #[cfg(feature = "torch")]
    Run {
        /// Pipeline TOML file with [model], [rollout], [learner] sections (omit with --resume).
        pipeline: Option<PathBuf>,
        /// Override a pipeline key: `learner.lr=1e-4`, `rollout.k=8`, `model=smollm2-135m`,
        /// `env=household`, `stage.ID.KEY=...` for the stage with that id (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run directory (default: runs/<pipeline name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its last checkpoint (with --set: as changed;
        /// the run's config.toml then records the change).
        #[arg(long, conflicts_with = "out")]
        resume: Option<PathBuf>,
        /// No per-iteration lines.
        #[arg(long)]
        quiet: bool,
        /// Where the workers run.
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Draw the learning curves of run directories into a PNG and print a comparison table.
    #[cfg(feature = "torch")]
    Report {
        /// Run directories.
        runs: Vec<PathBuf>,
        /// PNG to write.
        #[arg(long, default_value = "curves.png")]
        output: PathBuf,
    },
    /// Let a model play a built-in environment (K rollouts per task) and store the episodes.
    #[cfg(feature = "torch")]
    Rollout {
        /// Environment name: `household`, `household-pick`, or a bridged one (`twx[:GAME]`, `scienceworld[:TASK]`, `bridge:PROGRAM ARGS...`; see bridges/PROTOCOL.md).
        #[arg(long, default_value = "household")]
        env: String,
        /// Model SPEC.
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
        /// Number of tasks (the first of the split).
        #[arg(long, default_value_t = 8)]
        tasks: usize,
        /// Task split.
        #[arg(long, value_enum, default_value_t = SplitArg::Train)]
        split: SplitArg,
        /// Rollouts per task.
        #[arg(long, default_value_t = 2)]
        k: usize,
        /// Turns per episode at most.
        #[arg(long, default_value_t = 10)]
        max_turns: usize,
        /// New tokens per action at most.
        #[arg(long, default_value_t = 24)]
        max_action_tokens: usize,
        /// Sampling temperature.
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Reflexion trials per task (RetroAct): above 1, each failed trial is followed by a
        /// reflection the model writes, carried into the next trial's prompt (`--k` is ignored).
        #[arg(long, default_value_t = 1)]
        trials: usize,
        /// Choose among the environment's admissible actions (constrained decoding).
        #[arg(long)]
        admissible: bool,
        /// Episodes played at once; a finished episode's slot goes to the next one (default: all).
        #[arg(long)]
        slots: Option<usize>,
        /// With --admissible: score whole actions, normalised by `token` or `word` count (TWOSOME)
        /// or not (`sum`), instead of constrained decoding.
        #[arg(long, value_enum)]
        action_scoring: Option<crate::pipeline::training::Normalization>,
        /// Keep each episode's keys and values between turns (feed only the new observation).
        #[arg(long)]
        prefix_cache: bool,
        /// Output dataset.
        #[arg(long)]
        output: PathBuf,
    },
    /// Write per-token log-probs of a dataset's `tokens` under a model.
    #[cfg(feature = "torch")]
    Score {
        /// Model SPEC.
        #[arg(long)]
        model: String,
        /// Input dataset.
        #[arg(long)]
        input: PathBuf,
        /// Output dataset.
        #[arg(long)]
        output: PathBuf,
        /// Name of the log-prob column.
        #[arg(long, default_value = "logp")]
        column: String,
        /// Arithmetic of the matrix products (`bf16`: autocast-style mixed precision).
        #[arg(long, value_enum, default_value_t = crate::model::precision::Precision::Float32)]
        precision: crate::model::precision::Precision,
    },
}

/// A task split on the command line.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum SplitArg {
    /// Training tasks.
    Train,
    /// Development tasks.
    Dev,
    /// Test tasks.
    Test,
}

impl From<SplitArg> for crate::env::Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Train => crate::env::Split::Train,
            SplitArg::Dev => crate::env::Split::Dev,
            SplitArg::Test => crate::env::Split::Test,
        }
    }
}

/// `-w/--workers`, `--processes`, `--process-id`, `--hostfile`.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Worker threads in this process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes in the timely cluster.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Index of this process (0-based).
    #[arg(long, default_value_t = 0)]
    pub process_id: usize,
    /// File with one host:port line per process.
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
}

impl From<ClusterArgs> for Cluster {
    fn from(a: ClusterArgs) -> Cluster {
        Cluster { threads: a.workers, processes: a.processes, process_id: a.process_id, hostfile: a.hostfile }
    }
}

/// `trajflow env-check`: prints the conformance table; an error naming the violated checks.
fn env_check(env: &str, tasks: usize, timeout: Option<f64>) -> Result<String> {
    use crate::env::bridge::{conformance, deadline, Bridge};
    let timeout = timeout.map_or_else(deadline, std::time::Duration::from_secs_f64);
    let bridge = Bridge::by_name_within(env, timeout).ok_or_else(|| {
        Error::Usage(format!(
            "env-check: '{env}' is not a bridged environment (twx[:GAME], scienceworld[:TASK], bridge:PROGRAM ARGS...)"
        ))
    })?;
    let findings = conformance::check(bridge, tasks);
    print!("{}", conformance::table(env, &findings));
    let violated: Vec<&str> =
        findings.iter().filter(|f| f.verdict == conformance::Verdict::Violated).map(|f| f.check).collect();
    if violated.is_empty() {
        Ok("env-check: every check holds\n".into())
    } else {
        Err(Error::Usage(format!("env-check: {env} violates the protocol: {}", violated.join(", "))))
    }
}

/// `trajflow export`: the dataset's rows as read, written atomically as one Parquet file.
fn export(dataset: &Path, output: &Path, columns: Option<&[String]>) -> Result<String> {
    let ds = Dataset::open(dataset)?;
    let tag = ds.commits()?.first().map(|c| c.schema.clone()).unwrap_or_default();
    // The latest row of each episode is found by episode_id, whether or not it is exported.
    let with_id = columns.map(|c| {
        let mut c = c.to_vec();
        if !c.iter().any(|n| n == "episode_id") {
            c.push("episode_id".into());
        }
        c
    });
    let (mut batches, _) = ds.read_latest(with_id.as_deref(), false)?;
    if batches.is_empty() {
        return Err(Error::file(dataset, "has no rows to export"));
    }
    if let Some(cols) = columns {
        let select = |b: &arrow::array::RecordBatch| {
            let keep: Vec<usize> = cols.iter().filter_map(|c| b.schema().index_of(c).ok()).collect();
            b.project(&keep)
        };
        batches = batches.iter().map(select).collect::<std::result::Result<_, _>>()?;
    }
    let name = output.file_name().ok_or_else(|| Error::file(output, "is not a file name"))?.to_string_lossy();
    let dir = output.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let rows = crate::store::write_part(dir, &name, &batches, &tag)?;
    Ok(format!("export: {rows} rows of {} -> {}\n", dataset.display(), output.display()))
}

/// The columns of the first part of an input.
fn input_columns(input: &Path) -> Result<(InputColumns, Vec<PathBuf>)> {
    let parts = input_parts(input)?;
    let first = parts.first().ok_or_else(|| Error::file(input, "has no Parquet files"))?;
    let schema = PartReader::open(first)?.schema();
    Ok((schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect(), parts))
}

/// The validated plan of `pipeline` (against `input`'s columns when given). Without `input` a
/// training pipeline is also checked as `trajflow run` would run it.
fn plan_for(pipeline: &Path, input: Option<&Path>) -> Result<Plan> {
    let spec = PipelineSpec::from_file(pipeline)?;
    match input {
        None => {
            let plan = Plan::from_spec(spec.clone())?;
            check_training(&spec, &plan, TrainingMode::Run)?;
            Ok(plan)
        }
        Some(i) => {
            let (cols, _) = input_columns(i)?;
            Plan::with_input(spec, &cols, i.display().to_string())
        }
    }
}

/// A progress bar over rows read (a spinner when the total is unknown, as under `watch`).
/// `--train` and its options (reprocess, watch).
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Also train the pipeline's [model] with its [learner] on the rows, as [stream] says:
    /// OUTPUT is then a run directory (trajectories/, checkpoints/, metrics.jsonl, curves.png),
    /// and a restarted command continues from its last checkpoint.
    #[arg(long)]
    train: bool,
    /// Override a pipeline key, as `trajflow run --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// No per-update lines (with --train).
    #[arg(long)]
    quiet: bool,
}

/// The pipeline (with `sets`), what its outputs are gathered for, and the dataset they are
/// written to: OUTPUT itself, or with `train` the run directory OUTPUT's `ingested/` (the rows as
/// they came, which the learner trains on; its stage outputs go to `trajectories/`).
fn training(
    pipeline: &Path,
    learn: &TrainArgs,
    output: &Path,
    columns: Columns,
    cluster: &Cluster,
) -> Result<(PipelineSpec, dataflow::Gather, PathBuf)> {
    let TrainArgs { train, sets, quiet } = learn;
    let (train, verbose) = (*train, !*quiet);
    if !train {
        let (_, spec) = PipelineSpec::from_file_with_sets(pipeline, sets)?;
        return Ok((spec, dataflow::Gather::No, output.to_path_buf()));
    }
    if columns != Columns::All {
        return Err(Error::Usage("--train needs every trajectory column (--columns all)".into()));
    }
    #[cfg(feature = "torch")]
    {
        let (spec, plan) = crate::run::stream_spec(pipeline, sets, output, cluster.is_leader())?;
        let consumer: Option<Box<dyn dataflow::EpochConsumer>> = if cluster.is_leader() {
            if verbose {
                crate::progress::enable();
            }
            let t = spec.training.clone().expect("checked by stream_spec");
            Some(Box::new(crate::run::stream::StreamLearner::open(t, plan, output, verbose)?))
        } else {
            None
        };
        // The files are only ingested (stored, deduplicated, gathered to the learner): the model
        // steps and data stages run on each update's groups, as in a run on each iteration's.
        let ingest = PipelineSpec { stages: Vec::new(), ..spec };
        Ok((ingest, dataflow::Gather::To(consumer), output.join("ingested")))
    }
    #[cfg(not(feature = "torch"))]
    {
        let _ = (cluster, verbose);
        Err(Error::Usage("--train needs a build with the torch feature".into()))
    }
}

/// An import format, for `watch --import` (the same formats as `trajflow import`).
#[cfg(feature = "torch")]
type ImportFormat = crate::import::Format;
/// Import needs the tokenizers of the torch build.
#[cfg(not(feature = "torch"))]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ImportFormat {
    /// OpenAI chat messages.
    Openai,
}

/// Converts a landed JSON-lines log into `dir/<stem>.parquet` with `model`'s tokenizer.
fn importer(format: ImportFormat, model: String, dir: PathBuf) -> Result<dataflow::Importer> {
    #[cfg(feature = "torch")]
    {
        let tok = Arc::new(crate::model::load_tokenizer(&model)?);
        Ok(dataflow::Importer(Arc::new(move |path: &Path| model::import_file(format, path, &tok, &model, &dir))))
    }
    #[cfg(not(feature = "torch"))]
    {
        let _ = (format, model, dir);
        Err(Error::Usage("--import needs a build with the torch feature (tokenizers)".into()))
    }
}

fn progress(total: Option<u64>, leader: bool) -> Arc<dyn Fn(u64) + Send + Sync> {
    let (bar, template) = match total {
        Some(n) => (indicatif::ProgressBar::new(n), "{spinner} {msg} [{bar:30}] {pos}/{len} rows read ({per_sec})"),
        None => (indicatif::ProgressBar::new_spinner(), "{spinner} {msg} {pos} rows ingested ({per_sec})"),
    };
    if !leader {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).expect("the templates are valid").progress_chars("=> "),
    );
    bar.set_message("processing");
    Arc::new(move |n| bar.inc(n))
}

/// `trajflow compact`: the dataset's parts, then its ingest log, through `through` (default: the
/// last logged epoch, or every epoch when it has no ingest log).
fn compact(dir: &Path, target_rows: usize, through: Option<u64>) -> Result<String> {
    if target_rows == 0 {
        return Err(Error::Usage("--target-rows must be at least 1".into()));
    }
    let count = |d: &Path| walk_count(d);
    let before = count(dir);
    let ds = Dataset::open(dir)?;
    let log = dataflow::IngestLog::new(dir);
    let logged = log.last_epoch()?;
    let through = match (through, logged) {
        (Some(t), Some(l)) => t.min(l),
        (Some(t), None) => t,
        (None, l) => l.unwrap_or(u64::MAX),
    };
    let done = crate::store::compact(&ds, through, target_rows)?;
    let folded = match through {
        u64::MAX => 0,
        t => log.fold(t)?,
    };
    Ok(format!(
        "compact: {} part(s) merged into {} ({} rows, {} superseded rows left out), {folded} ingest record(s) folded, \
         {} leftover file(s) deleted; {} -> {} files under {}\n",
        done.parts_merged,
        done.parts_written,
        done.rows,
        done.superseded,
        done.leftovers,
        before,
        count(dir),
        dir.display()
    ))
}

/// Number of files under `dir`, recursively.
fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { walk_count(&e.path()) } else { 1 })
        .sum()
}

/// `trajflow ops`: every operator with its summary and the columns it reads (`?` = optional) and
/// writes, as built with its defaults (renamed per stage with `read.ROLE` / `write.ROLE`).
fn operators() -> String {
    let cols = |c: &[crate::stages::Col], mark: bool| -> String {
        let names: Vec<String> =
            c.iter().map(|c| format!("{}{}", c.name, if mark && c.optional { "?" } else { "" })).collect();
        names.join(", ")
    };
    let mut out = String::new();
    for (name, summary) in crate::stages::OPERATORS {
        out.push_str(&format!("{name:<22} {summary}\n"));
        // The parameters without a default get placeholders; they do not change the columns.
        let required: toml::Table = match *name {
            "gae" => toml::toml! { gamma = 1.0 lambda = 1.0 },
            "logprobs" => toml::toml! { model = "MODEL" },
            _ => toml::Table::new(),
        };
        let built = crate::stages::build(name, &required);
        match built {
            Ok(op) => {
                let d = op.describe();
                out.push_str(&format!(
                    "{:<22} reads {}; writes {}\n",
                    "",
                    cols(&d.reads(), true),
                    cols(&d.writes(), false)
                ));
            }
            Err(e) if e.key == "op" => out.push_str(&format!("{:<22} (only in the libtorch build)\n", "")),
            Err(e) => out.push_str(&format!("{:<22} ({}: {})\n", "", e.key, e.message)),
        }
    }
    out.push_str(
        "\nmodel-bound operators (graph-form training pipelines; `model = \"NAME\"` names a [models.NAME]):\n",
    );
    for op in crate::pipeline::graph::MODEL_OPERATORS {
        use crate::pipeline::graph::Needs;
        let model = match op.needs {
            Needs::Nothing => "no model".to_string(),
            Needs::Policy => "model: the policy".to_string(),
            Needs::Head(h) => format!("model: a {h} head"),
        };
        out.push_str(&format!("{:<22} {} ({:?}, {model})\n", op.name, op.summary, op.role));
        out.push_str(&format!("{:<22} reads {}; writes {}\n", "", op.reads, op.writes));
    }
    out
}

/// Runs a parsed command line; returns what to print on stdout.
pub fn run(cli: Cli) -> Result<String> {
    match cli.command {
        Command::Validate { pipeline, input } => {
            let plan = plan_for(&pipeline, input.as_deref())?;
            let steps = match &plan.graph {
                Some(g) => format!(
                    "{} model steps, {} data stages, update '{}'",
                    g.before.len() + g.in_stages.len(),
                    plan.stages.len() - g.in_stages.len(),
                    g.update.id
                ),
                None => format!("{} stages", plan.stages.len()),
            };
            Ok(format!("{}: ok ({steps}, pipeline '{}')\n", pipeline.display(), plan.name))
        }
        Command::Explain { pipeline, input } => Ok(explain(&plan_for(&pipeline, input.as_deref())?)),
        Command::Ops => Ok(operators()),
        Command::Reprocess { pipeline, input, output, columns, learn, cluster } => {
            let (cols, parts) = input_columns(&input)?;
            let cluster: Cluster = cluster.into();
            let (spec, gather, dataset) = training(&pipeline, &learn, &output, columns, &cluster)?;
            let plan = Plan::with_input(spec, &cols, input.display().to_string())?;
            let stored: u64 = parts.iter().map(|p| PartReader::open(p).map(|r| r.num_rows())).sum::<Result<u64>>()?;
            let superseded = crate::store::superseded_rows(&parts)?;
            let skipped: u64 = superseded.values().map(|ids| ids.len() as u64).sum();
            let start = std::time::Instant::now();
            let report = dataflow::run(
                plan,
                Job::Reprocess { inputs: parts.clone(), superseded },
                dataset.clone(),
                columns,
                &cluster,
                progress(Some(stored - skipped), cluster.is_leader() && !learn.train),
                gather,
            )?;
            let current = stored - skipped;
            let skipped = if skipped > 0 { format!(" ({skipped} superseded rows skipped)") } else { String::new() };
            Ok(format!(
                "reprocess: {} input rows from {} file(s){skipped} -> {} rows in {} part(s) of {} ({} worker(s) in this process, {:.2}s)\n",
                current,
                parts.len(),
                report.rows_written,
                report.parts,
                dataset.display(),
                cluster.threads,
                start.elapsed().as_secs_f64()
            ))
        }
        Command::Watch {
            pipeline,
            input,
            output,
            poll_ms,
            idle_exit,
            max_files,
            import,
            import_model,
            columns,
            snapshot_every,
            seal_after,
            compact_every,
            learn,
            cluster,
        } => {
            if seal_after == Some(0) {
                return Err(Error::Usage("--seal-after must be at least 1 (file)".into()));
            }
            let cluster: Cluster = cluster.into();
            let (spec, gather, dataset) = training(&pipeline, &learn, &output, columns, &cluster)?;
            let import = match import {
                Some(format) => {
                    let default = spec.training.as_ref().map_or("smollm2-135m".to_string(), |t| t.model.name.clone());
                    Some(importer(format, import_model.unwrap_or(default), dataset.join("_imported"))?)
                }
                None => None,
            };
            let plan = Plan::from_spec(spec)?;
            let job = Job::Watch {
                dir: input.clone(),
                poll: Duration::from_millis(poll_ms),
                idle_exit: idle_exit.map(Duration::from_secs_f64),
                max_files,
                import,
                snapshot_every,
                seal_after,
                compact_every,
            };
            eprintln!("watching {} (poll {poll_ms} ms); writing changes to {}", input.display(), dataset.display());
            let report = dataflow::run(
                plan,
                job,
                dataset,
                columns,
                &cluster,
                progress(None, cluster.is_leader() && !learn.train),
                gather,
            )?;
            let mut s = format!(
                "watch: {} file(s) ingested, {} rows written in {} part(s)\n",
                report.epochs, report.rows_written, report.parts
            );
            for r in &report.rejected {
                s.push_str(&format!("rejected: {r}\n"));
            }
            Ok(s)
        }
        Command::Inspect { dataset, rows } => inspect::inspect(&dataset, rows),
        Command::Compact { dataset, target_rows, through } => compact(&dataset, target_rows, through),
        Command::Export { dataset, output, columns } => export(&dataset, &output, columns.as_deref()),
        Command::Append { dir, files } => {
            let mut out = String::new();
            for f in files {
                let dest = crate::store::publish_file(&f, &dir)?;
                out.push_str(&format!("append: {} -> {}\n", f.display(), dest.display()));
            }
            Ok(out)
        }
        Command::Synth { output, groups, group_size, parts, max_action_tokens, seed, id_prefix } => {
            let ds = Dataset::create(&output)?;
            let parts = parts.max(1);
            let tag = crate::schema::TableSchema::trajectory().tag();
            let mut rows = 0;
            for p in 0..parts {
                let share = groups / parts + usize::from(p < groups % parts);
                let spec = crate::synth::SynthSpec {
                    groups: share,
                    group_size,
                    max_action_tokens,
                    seed: seed.wrapping_add(p as u64),
                    id_prefix: format!("{id_prefix}{p}"),
                    ..Default::default()
                };
                let batch = crate::synth::generate(&spec);
                rows += batch.num_rows();
                ds.append(&[batch], p as u64, "synth", &tag, Vec::new())?;
            }
            Ok(format!("synth: {rows} episodes in {parts} part(s) -> {}\n", output.display()))
        }
        #[cfg(feature = "torch")]
        Command::Doctor => Ok(crate::device::report()),
        #[cfg(feature = "torch")]
        Command::Generate { model, chat, prompt, max_new_tokens, temperature, top_k, top_p, seed, precision } => {
            let s = crate::model::generate::Sampling {
                temperature,
                top_k,
                top_p,
                max_new_tokens,
                seed,
                ..Default::default()
            };
            model::run_generate(&model, precision, chat.as_deref(), prompt.as_deref(), s)
        }
        #[cfg(feature = "torch")]
        Command::Score { model, input, output, column, precision } => {
            model::run_score(&model, precision, &input, &output, &column)
        }
        #[cfg(feature = "torch")]
        Command::Import { format, input, output, model } => model::run_import(format, &input, &output, &model),
        Command::EnvCheck { env, tasks, timeout } => env_check(&env, tasks, timeout),
        #[cfg(feature = "torch")]
        Command::Demos { env, tasks, split, output, model } => {
            model::run_demos(&env, split.into(), tasks, &output, &model)
        }
        #[cfg(feature = "torch")]
        Command::Run { pipeline, sets, out, resume, quiet, cluster } => {
            let (dir, resume_flag) = match (resume, out) {
                (Some(d), _) => (d, true),
                (None, Some(d)) => (d, false),
                (None, None) => {
                    let p = pipeline.as_ref().ok_or_else(|| Error::Usage("run: name a pipeline file".into()))?;
                    (PathBuf::from("runs").join(PipelineSpec::from_file(p)?.name), false)
                }
            };
            let start = std::time::Instant::now();
            let opts = crate::run::RunOptions {
                pipeline,
                sets,
                dir,
                resume: resume_flag,
                cluster: cluster.into(),
                verbose: !quiet,
            };
            let dir = crate::run::run(opts)?;
            let metrics = crate::run::metrics::MetricsFile::new(&dir).read()?;
            Ok(format!(
                "run: {} done in {:.1}s\n  metrics: {}\n  curves:  {}\n{}",
                dir.display(),
                start.elapsed().as_secs_f64(),
                dir.join("metrics.jsonl").display(),
                dir.join("curves.png").display(),
                crate::run::gain::verdict(&metrics).unwrap_or_default()
            ))
        }
        #[cfg(feature = "torch")]
        Command::Report { runs, output } => {
            let table = crate::run::report::report(&runs, &output)?;
            Ok(format!("{table}curves: {}\n", output.display()))
        }
        #[cfg(feature = "torch")]
        Command::Rollout {
            env,
            model,
            tasks,
            split,
            k,
            max_turns,
            max_action_tokens,
            temperature,
            seed,
            trials,
            admissible,
            slots,
            action_scoring,
            prefix_cache,
            output,
        } => {
            let cfg = crate::rollout::RolloutConfig {
                env,
                tasks: crate::env::task_ids(split.into(), tasks),
                k,
                seed,
                sampling: crate::model::generate::Sampling {
                    temperature,
                    max_new_tokens: max_action_tokens,
                    seed: seed as i64,
                    ..Default::default()
                },
                max_turns,
                policy_version: 0,
                model_name: model.clone(),
                iteration: 0,
                correction: None,
                memory: Default::default(),
                admissible,
                slots,
                scoring: action_scoring,
                prefix_cache,
            };
            let reflexion = (trials > 1).then_some(crate::rollout::reflexion::ReflexionConfig {
                trials,
                memory: 3,
                reflection_tokens: 64,
            });
            model::run_rollout(&model, &cfg, reflexion.as_ref(), &output)
        }
    }
}
