//! The library's error type. Every variant carries enough context to act on it: the file, the
//! pipeline stage, the TOML key or the column that is wrong. `anyhow` is used only at the binary
//! edge (`main.rs`) and in tests.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in trajflow, by layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline file is malformed or invalid.
    #[error("{file}: {}{}{message}", stage.as_deref().map(place).unwrap_or_default(), key.as_ref().map(|k| format!("key '{k}': ")).unwrap_or_default())]
    Spec {
        /// The pipeline file.
        file: PathBuf,
        /// The stage id, when the problem is inside one stage, or a table (`[run]`, `[models.NAME]`).
        stage: Option<String>,
        /// The TOML key at fault, when there is one.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A stored file does not match the schema it should have.
    #[error("{file}: column '{column}': {message}")]
    Schema {
        /// The Parquet file.
        file: PathBuf,
        /// The column at fault.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// A row of data breaks an invariant an operator relies on.
    #[error("{file}: episode '{episode}': column '{column}': {message}")]
    Data {
        /// The file the row came from.
        file: PathBuf,
        /// The episode id of the row.
        episode: String,
        /// The column at fault.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// A stage failed while running.
    #[error("stage '{stage}': {message}")]
    Stage {
        /// The stage id.
        stage: String,
        /// What went wrong.
        message: String,
    },
    /// A file could not be read or is not a readable Parquet file.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An I/O error on a known path.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Arrow computation error.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Dataflow runtime error (timely setup, a worker that failed).
    #[error("dataflow: {0}")]
    Dataflow(String),
    /// A model file could not be loaded (the message names the file).
    #[error("{0}")]
    Model(String),
    /// A libtorch operation failed.
    #[cfg(feature = "torch")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Invalid command-line usage.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A file-level error on `file`.
    pub fn file(file: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File { file: file.into(), message: message.to_string() }
    }

    /// A stage error.
    pub fn stage(stage: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Stage { stage: stage.into(), message: message.to_string() }
    }
}

impl From<crate::model::gguf::GgufError> for Error {
    fn from(e: crate::model::gguf::GgufError) -> Self {
        Error::Model(e.to_string())
    }
}

/// Where in a pipeline file a spec error is: `stage 'ID': `, or a table as written (`[models.policy]: `).
fn place(stage: &str) -> String {
    if stage.starts_with('[') {
        format!("{stage}: ")
    } else {
        format!("stage '{stage}': ")
    }
}
