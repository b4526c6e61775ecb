//! `trajflow generate`, `trajflow score` and `trajflow import`: a quick look at a model, per-token
//! log-probs of a stored dataset's sequences under it, and logged conversations tokenised with it.

use std::sync::Arc;

use arrow::array::{Array, AsArray, ListArray};
use arrow::datatypes::Int32Type;

use crate::error::{Error, Result};
use crate::model::generate::{generate, Sampling};
use crate::model::precision::Precision;
use crate::model::tokenizer::Message;
use crate::store::{input_parts, read_part, Dataset};

/// The device models run on: CUDA when available, else the CPU.
pub fn device() -> tch::Device {
    tch::Device::cuda_if_available()
}

/// Generates a reply to `chat` (rendered with the model's chat template) or continues `prompt`.
pub fn run_generate(
    spec: &str,
    precision: Precision,
    chat: Option<&str>,
    prompt: Option<&str>,
    s: Sampling,
) -> Result<String> {
    let (mut model, tok) = crate::model::load(spec, device())?;
    model.set_precision(precision);
    let text = match (chat, prompt) {
        (Some(c), None) => tok.apply_chat_template(&[Message::new("user", c)], true)?,
        (None, Some(p)) => p.to_string(),
        _ => return Err(Error::Usage("give exactly one of --chat or --prompt".into())),
    };
    let ids = tok.encode(&text)?;
    let mut s = s;
    if s.stop_tokens.is_empty() {
        s.stop_tokens = model.cfg.eos_token_ids.clone();
        s.stop_tokens.extend(tok.token_id(&tok.eos_token));
        s.stop_tokens.extend(tok.token_id("<|im_end|>"));
    }
    let g = generate(&model, &tok, &[ids], &s)?.remove(0);
    let mut reply = tok.decode(&g.tokens)?;
    for stop in s.stop_tokens.iter().filter_map(|&t| tok.decode(&[t]).ok()) {
        if let Some(stripped) = reply.strip_suffix(stop.as_str()) {
            reply = stripped.to_string();
        }
    }
    Ok(format!("{reply}\n"))
}

/// Writes `output`: the rows of `input` plus a per-token log-prob column `column` of `tokens`;
/// tokens a policy drew (rows with `sample_*`/`allowed_*`) get their log-prob under the
/// distribution they were drawn from, the others the plain softmax's.
pub fn run_score(
    spec: &str,
    precision: Precision,
    input: &std::path::Path,
    output: &std::path::Path,
    column: &str,
) -> Result<String> {
    let (mut model, _) = crate::model::load(spec, device())?;
    model.set_precision(precision);
    let out = Dataset::create(output)?;
    let mut rows = 0;
    let parts = input_parts(input)?;
    let superseded = crate::store::superseded_rows(&parts)?;
    for part in parts {
        for batch in read_part(&part, None)? {
            let batch = match superseded.get(&part) {
                Some(gone) => crate::store::without_episodes(&part, &batch, gone)?,
                None => batch,
            };
            let tokens = batch.column_by_name("tokens").and_then(|c| c.as_list_opt::<i32>()).ok_or_else(|| {
                Error::Schema { file: part.clone(), column: "tokens".into(), message: "missing or not a list".into() }
            })?;
            let seqs: Vec<Vec<i64>> = (0..tokens.len())
                .map(|i| tokens.value(i).as_primitive::<Int32Type>().values().iter().map(|&t| t as i64).collect())
                .collect();
            // Tokens a policy drew are scored under the distribution they were drawn from.
            let drawn = crate::run::examples::drawn_rows(&batch).map_err(|e| match e {
                Error::Usage(m) => Error::Usage(format!("{}: {m}", part.display())),
                other => other,
            })?;
            let drawn: Vec<_> = drawn.iter().map(Option::as_ref).collect();
            let lp = crate::model::score::drawn_logprobs(&model, &seqs, &drawn, 8192)?;
            let list = ListArray::from_iter_primitive::<arrow::datatypes::Float32Type, _, _>(
                lp.into_iter().map(|v| Some(v.into_iter().map(Some))),
            );
            let ty = crate::schema::ColumnType::parse("list<float32>").expect("a valid type");
            let batch = crate::dataflow::attach("score", &batch, &[(column.to_string(), ty)], vec![Arc::new(list)])?;
            rows += batch.num_rows();
            out.append(&[batch], 0, "score", &crate::schema::TableSchema::trajectory().tag(), Vec::new())?;
        }
    }
    Ok(format!("score: {rows} sequences scored under {spec} -> column '{column}' of {}\n", output.display()))
}

/// Rolls `spec` out in an environment and writes the episodes to `output`.
pub fn run_rollout(
    spec: &str,
    cfg: &crate::rollout::RolloutConfig,
    reflexion: Option<&crate::rollout::reflexion::ReflexionConfig>,
    output: &std::path::Path,
) -> Result<String> {
    let (model, tok) = crate::model::load(spec, device())?;
    let start = std::time::Instant::now();
    let rows = match reflexion {
        Some(r) => crate::rollout::reflexion::reflexion(&model, &tok, cfg, r)?,
        None => crate::rollout::rollout(&model, &tok, cfg)?,
    };
    let secs = start.elapsed().as_secs_f64();
    let episodes = rows.iter().filter(|r| r.prev_trial_reward.is_none()).count();
    let solved = rows.iter().filter(|r| r.success == Some(true)).count();
    let generated: usize = rows.iter().map(|r| r.segments.iter().filter(|&&s| s == 1).count()).sum();
    let trials = match reflexion {
        Some(_) => {
            let (first, any) =
                crate::rollout::reflexion::solved_shares(&crate::rollout::reflexion::trial_outcomes(&rows));
            format!(", tasks solved: first trial {:.1}%, any trial {:.1}%", 100.0 * first, 100.0 * any)
        }
        None => String::new(),
    };
    write_rows(rows, output, "rollout")?;
    Ok(format!(
        "rollout: {episodes} episodes ({solved} solved{trials}), {generated} generated tokens in {secs:.1}s ({:.1} tokens/s) -> {}\n",
        generated as f64 / secs,
        output.display()
    ))
}

/// Writes rows as one part of the dataset `output`.
fn write_rows(rows: Vec<crate::schema::builder::EpisodeRow>, output: &std::path::Path, writer: &str) -> Result<()> {
    let mut b = crate::schema::builder::TrajectoryBuilder::default();
    for r in rows {
        b.push(r);
    }
    let tag = crate::schema::TableSchema::trajectory().tag();
    Dataset::create(output)?.append(&[b.finish()], 0, writer, &tag, Vec::new())?;
    Ok(())
}

/// Writes expert demonstrations of `env` to `output`.
pub fn run_demos(
    env: &str,
    split: crate::env::Split,
    n: usize,
    output: &std::path::Path,
    spec: &str,
) -> Result<String> {
    let tok = crate::model::load_tokenizer(spec)?;
    let rows = crate::env::demos::expert_rows(env, split, n, &tok, spec)?;
    let solved = rows.iter().filter(|r| r.success == Some(true)).count();
    let turns: usize = rows.iter().map(|r| r.turn_rewards.len()).sum();
    let n_rows = rows.len();
    let failed: Vec<String> = rows.iter().filter_map(|r| r.env_error.clone()).collect();
    write_rows(rows, output, "demos")?;
    if let Some(first) = failed.first() {
        return Err(crate::error::Error::Usage(format!(
            "demos: {} of {n_rows} expert episodes of {env} failed in the environment (written to {} with \
             env_error set); the first: {first}",
            failed.len(),
            output.display()
        )));
    }
    Ok(format!("demos: {n_rows} expert episodes of {env} ({solved} solved, {turns} turns) -> {}\n", output.display()))
}

/// Converts one JSON-lines log to `dir/<stem>.parquet` (atomically), the rows rendered with
/// `tok`; returns the Parquet file's path. An empty log is an error (nothing to ingest).
pub fn import_file(
    format: crate::import::Format,
    input: &std::path::Path,
    tok: &crate::model::tokenizer::Tok,
    model: &str,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf> {
    let mut b = crate::schema::builder::TrajectoryBuilder::default();
    crate::import::rows_of(format, input, tok, model)?.into_iter().for_each(|r| b.push(r));
    if b.is_empty() {
        return Err(crate::error::Error::file(input, "no conversations"));
    }
    std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io(dir, e))?;
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "log".into());
    let name = format!("{stem}.parquet");
    crate::store::write_part(dir, &name, &[b.finish()], &crate::schema::TableSchema::trajectory().tag())?;
    Ok(dir.join(name))
}

/// Imports `input` (in `format`) into the dataset `output`, tokenised with `spec`'s tokenizer.
pub fn run_import(
    format: crate::import::Format,
    input: &std::path::Path,
    output: &std::path::Path,
    spec: &str,
) -> Result<String> {
    let tok = crate::model::load_tokenizer(spec)?;
    let mut all = crate::import::rows_of(format, input, &tok, spec)?.into_iter().peekable();
    let out = Dataset::create(output)?;
    let (mut rows, mut tokens, mut successes) = (0usize, 0usize, 0usize);
    let mut part = 0usize;
    while all.peek().is_some() {
        let mut b = crate::schema::builder::TrajectoryBuilder::default();
        for row in all.by_ref().take(4096) {
            tokens += row.tokens.len();
            successes += usize::from(row.success == Some(true));
            b.push(row);
        }
        rows += b.len();
        out.append(
            &[b.finish()],
            part as u64,
            "import",
            &crate::schema::TableSchema::trajectory().tag(),
            vec![input.display().to_string()],
        )?;
        part += 1;
    }
    Ok(format!(
        "import: {rows} episodes ({successes} successful, {tokens} tokens) from {} -> {}\n",
        input.display(),
        output.display()
    ))
}
