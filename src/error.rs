//! The crate error: one enum whose variants name the thing at fault (file,
//! source, endpoint, stream, window, partition), and whether retrying can help.

use std::path::PathBuf;

/// Result with the crate [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in chatlake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline file could not be read or is invalid.
    #[error("pipeline {file}: {message}")]
    Config { file: PathBuf, message: String },

    /// A bug in chatlake itself (an invariant broken), not in the input.
    #[error("internal error (a bug in chatlake, please report it): {0}")]
    Internal(String),

    /// A command-line argument is invalid.
    #[error("{0}")]
    Usage(String),

    /// An HTTP request failed after its retries (or at once for 4xx).
    #[error("{source_name} {endpoint}: {message}")]
    Http {
        source_name: String,
        endpoint: String,
        message: String,
        /// Whether another attempt could succeed (429, 5xx, connection).
        retryable: bool,
    },

    /// The API answered, but the body is not what its documentation says.
    #[error("{source_name} {endpoint}: bad response: {message}")]
    BadResponse {
        source_name: String,
        endpoint: String,
        message: String,
    },

    /// A record batch could not be built for a table.
    #[error("table {table}, column {column}: {message}")]
    Normalize {
        table: String,
        column: String,
        message: String,
    },

    /// Reading or writing the warehouse failed.
    #[error("warehouse {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// Encoding or decoding a Parquet file failed.
    #[error("parquet {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// A warehouse file that cannot be read as what it should be.
    #[error("warehouse file {path}: {message}")]
    File { path: String, message: String },

    /// The watermark state is unreadable or was changed by another writer.
    #[error("state {path}: {message}")]
    State { path: String, message: String },

    /// A SQL query or view failed.
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),

    /// Arrow failed while building or printing a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// The run was asked to stop (SIGTERM/SIGINT) before this stream's next window.
    #[error(
        "{stream}: stopped before the next window (signal); everything committed so far stays"
    )]
    Stopped { stream: String },

    /// Another run of the pipeline holds its lock.
    #[error("pipeline `{pipeline}` is locked: another run is in progress ({holder}, since {since}; the lock expires at {until} unless renewed)")]
    Locked {
        pipeline: String,
        holder: String,
        since: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    },

    /// Arrow failed on a partition file (reading, merging, sorting).
    #[error("{context}: {source}")]
    ArrowAt {
        context: String,
        source: arrow::error::ArrowError,
    },

    /// A stream failed for one window (wraps the cause with its place).
    #[error("stream {stream}, window {window}: {source}")]
    Stream {
        stream: String,
        window: String,
        #[source]
        source: Box<Error>,
    },

    /// Local I/O (reading a pipeline file, binding the simulator).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The message of a caught panic's payload (a `String` or `&str`; "panic"
/// for anything else).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

impl Error {
    /// Whether retrying the same operation could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http { retryable, .. } => *retryable,
            Error::Stream { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// Wraps a warehouse error with the path it concerns.
    pub fn store(path: impl ToString, source: object_store::Error) -> Self {
        Error::Store {
            path: path.to_string(),
            source,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
