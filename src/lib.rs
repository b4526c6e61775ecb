//! # trajflow
//!
//! Trains LLM agents with reinforcement learning. Every algorithm is a pipeline graph declared in
//! TOML over a small set of shared operators; trajectories flow through the graph as Arrow record
//! batches, are stored as Parquet, and the graph runs on timely dataflow, with differential
//! dataflow holding grouped state that must update incrementally.
//!
//! The layers, from data to execution:
//! - [`schema`]: the stored tables (`schemas/*.json`) and the row invariants checked at ingest;
//! - [`store`]: datasets of Parquet parts with an atomic, append-only manifest;
//! - [`ops`]: the pure math of every operator (returns, GAE, baselines, whitening, KL, ...);
//! - [`stages`]: operators bound to columns and parameters, and the registry of operator names;
//! - [`pipeline`]: TOML → spec → validated plan;
//! - [`dataflow`]: the plan rendered on timely/differential and driven over files or iterations;
//! - [`run`]: training pipelines run end to end (rollouts, stages, learner, checkpoints);
//! - [`cli`]: the `trajflow` command line.
#![warn(missing_docs)]

pub mod cli;
pub mod dataflow;
#[cfg(feature = "torch")]
pub mod device;
pub mod env;
pub mod error;
#[cfg(feature = "torch")]
pub mod import;
pub mod memory;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod progress;
#[cfg(feature = "torch")]
pub mod rollout;
#[cfg(feature = "torch")]
pub mod run;
pub mod schema;
pub mod stages;
pub mod store;
pub mod synth;
#[cfg(feature = "torch")]
pub mod train;

pub use error::{Error, Result};
