//! Checkpoints that resume exactly: the trainable weights, the optimiser state, and a small JSON
//! record of the step, the data position and the seeds, written atomically into one folder:
//!
//! ```text
//! CKPT/weights.safetensors     every variable of the given var stores (model, adapter, heads)
//! CKPT/optimizer.safetensors   AdamW's m and v
//! CKPT/state.json              {"step", "data_position", "seed"}
//! ```
//! Everything random in a step is seeded from (seed, step), never from a generator's hidden
//! state, so reloading these files and continuing gives bit-identical weights on the CPU.

use std::collections::HashMap;
use std::path::Path;

use tch::nn::VarStore;
use tch::Tensor;

use super::optim::AdamW;
use crate::error::{Error, Result};

/// Where a run is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Optimiser updates done.
    pub step: u64,
    /// How far into the data the run has read (the caller's unit: rows, batches, files).
    pub data_position: u64,
    /// The run's seed.
    pub seed: u64,
}

fn named(stores: &[&VarStore]) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = stores.iter().flat_map(|vs| vs.variables()).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes a checkpoint of `stores`, `opt` and `state` into `dir` (replacing an older one).
pub fn save(dir: &Path, stores: &[&VarStore], opt: &AdamW, state: &TrainState) -> Result<()> {
    save_with(dir, stores, opt, state, |_| Ok(()))
}

/// [`save`], with `extra` writing more files into the folder before it is published, so that a
/// checkpoint is complete (heads, model-folder files) or absent, never partial.
pub fn save_with(
    dir: &Path,
    stores: &[&VarStore],
    opt: &AdamW,
    state: &TrainState,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Tensor::write_safetensors(&named(stores), tmp.join("weights.safetensors"))?;
    Tensor::write_safetensors(&opt.state(), tmp.join("optimizer.safetensors"))?;
    extra(&tmp)?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(tmp.join("state.json"), json).map_err(|e| Error::io(&tmp, e))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
}

/// Loads a checkpoint into `stores` and `opt` (copying in place) and returns its state.
pub fn load(dir: &Path, stores: &[&VarStore], opt: &mut AdamW) -> Result<TrainState> {
    let read = |name: &str| -> Result<HashMap<String, Tensor>> {
        let f = dir.join(name);
        Ok(Tensor::read_safetensors(&f).map_err(|e| Error::file(&f, e))?.into_iter().collect())
    };
    let weights = read("weights.safetensors")?;
    tch::no_grad(|| {
        for (name, mut var) in named(stores) {
            let w = weights
                .get(&name)
                .ok_or_else(|| Error::Model(format!("checkpoint {} has no '{name}'", dir.display())))?;
            var.copy_(w);
        }
        Ok::<(), Error>(())
    })?;
    let f = dir.join("state.json");
    let text = std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| Error::file(&f, format!("invalid state: {e}")))?;
    opt.load_state(&read("optimizer.safetensors")?, state.step)?;
    Ok(state)
}
