//! Where command results go: query results written batch by batch (to
//! stdout or a file, so memory does not grow with the result and the first
//! rows show at once), and output files (`query --out`, `report --out`)
//! written beside their final name and renamed over it when whole, never
//! inside the warehouse and never through a link into it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::query::{nested_as_json, Format};
use crate::sink::Warehouse;

/// Rows a text table holds before it is printed: a longer result prints as
/// several tables of this many rows, each with its header.
pub const TABLE_ROWS: usize = 10_000;

/// The formats a result is written in (the `query` formats, and Parquet
/// for `--out x.parquet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    Text(Format),
    Parquet,
}

impl ResultFormat {
    /// The format of an `--out` file, by its extension.
    pub fn of_path(path: &Path) -> Result<ResultFormat> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        Ok(match ext.as_str() {
            "csv" => ResultFormat::Text(Format::Csv),
            "json" => ResultFormat::Text(Format::Json),
            "ndjson" | "jsonl" => ResultFormat::Text(Format::Ndjson),
            "parquet" => ResultFormat::Parquet,
            other => {
                return Err(Error::Usage(format!(
                    "--out {}: unknown extension `{other}`; use .csv, .json, .ndjson or .parquet",
                    path.display()
                )))
            }
        })
    }
}

/// `W`, remembering the kind of the first write error it saw: the format
/// writers wrap I/O errors in their own (the CSV writer as text), and a
/// closed stdout must still be told apart (`query | head` exits quietly).
struct Watch<W> {
    w: W,
    failed: Arc<std::sync::Mutex<Option<std::io::ErrorKind>>>,
}

impl<W: Write> Write for Watch<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf).inspect_err(|e| self.note(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush().inspect_err(|e| self.note(e))
    }
}

impl<W> Watch<W> {
    fn note(&self, e: &std::io::Error) {
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(e.kind());
        }
    }
}

enum Inner<W: Write + Send> {
    Table(W, Vec<RecordBatch>, usize),
    Csv(arrow::csv::Writer<W>),
    Json(arrow::json::Writer<W, arrow::json::writer::JsonArray>),
    Ndjson(arrow::json::Writer<W, arrow::json::writer::LineDelimited>),
    Parquet(parquet::arrow::ArrowWriter<W>),
}

/// Writes one result batch by batch. Every column appears even when the
/// result has no row (a header, `[]`, an empty Parquet file with the schema).
pub struct ResultWriter<W: Write + Send> {
    inner: Inner<Watch<W>>,
    failed: Arc<std::sync::Mutex<Option<std::io::ErrorKind>>>,
    schema: SchemaRef,
    rows: usize,
    /// NaN and ±infinity written as JSON null (JSON has no such numbers).
    nonfinite: usize,
}

impl<W: Write + Send> ResultWriter<W> {
    pub fn new(w: W, format: ResultFormat, schema: SchemaRef) -> Result<Self> {
        let failed = Arc::new(std::sync::Mutex::new(None));
        let w = Watch {
            w,
            failed: Arc::clone(&failed),
        };
        let inner = match format {
            ResultFormat::Text(Format::Table) => Inner::Table(w, Vec::new(), 0),
            ResultFormat::Text(Format::Csv) => {
                Inner::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(w))
            }
            ResultFormat::Text(Format::Json) => Inner::Json(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build(w),
            ),
            ResultFormat::Text(Format::Ndjson) => Inner::Ndjson(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build(w),
            ),
            ResultFormat::Parquet => Inner::Parquet(
                parquet::arrow::ArrowWriter::try_new(w, Arc::clone(&schema), None)
                    .map_err(|e| Error::Internal(format!("writing Parquet: {e}")))?,
            ),
        };
        Ok(ResultWriter {
            inner,
            failed,
            schema,
            rows: 0,
            nonfinite: 0,
        })
    }

    /// Writes one batch (a table holds up to [`TABLE_ROWS`] rows first).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let failed = Arc::clone(&self.failed);
        self.write_inner(batch).map_err(|e| io_first(&failed, e))
    }

    /// Ends the result; returns the writer, the rows written, and how many
    /// NaN or infinite values JSON had to write as null.
    pub fn finish(self) -> Result<(W, usize, usize)> {
        let failed = Arc::clone(&self.failed);
        self.finish_inner()
            .map(|(w, rows, n)| (w.w, rows, n))
            .map_err(|e| io_first(&failed, e))
    }

    fn write_inner(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        match &mut self.inner {
            Inner::Table(w, held, n) => {
                *n += batch.num_rows();
                held.push(batch.clone());
                if *n >= TABLE_ROWS {
                    print_table(w, held)?;
                    *n = 0;
                }
            }
            Inner::Csv(w) => w.write(&nested_as_json(batch)?)?,
            Inner::Json(w) => {
                self.nonfinite += nonfinite(batch);
                w.write(batch)?
            }
            Inner::Ndjson(w) => {
                self.nonfinite += nonfinite(batch);
                w.write(batch)?
            }
            Inner::Parquet(w) => w
                .write(batch)
                .map_err(|e| Error::Internal(format!("writing Parquet: {e}")))?,
        }
        Ok(())
    }

    fn finish_inner(self) -> Result<(Watch<W>, usize, usize)> {
        let empty = RecordBatch::new_empty(Arc::clone(&self.schema));
        let mut w = match self.inner {
            Inner::Table(mut w, mut held, n) => {
                if n > 0 || self.rows == 0 {
                    if held.is_empty() {
                        held.push(empty);
                    }
                    print_table(&mut w, &mut held)?;
                }
                w
            }
            Inner::Csv(mut w) => {
                if self.rows == 0 {
                    // The header.
                    w.write(&nested_as_json(&empty)?)?;
                }
                w.into_inner()
            }
            Inner::Json(mut w) => {
                w.finish()?;
                // `[]` for no rows.
                let mut w = w.into_inner();
                w.write_all(b"\n").map_err(out_error)?;
                w
            }
            Inner::Ndjson(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            Inner::Parquet(w) => w
                .into_inner()
                .map_err(|e| Error::Internal(format!("writing Parquet: {e}")))?,
        };
        w.flush().map_err(out_error)?;
        Ok((w, self.rows, self.nonfinite))
    }
}

/// The write error the output saw, if any, rather than the format
/// writer's wrapping of it.
fn io_first(failed: &std::sync::Mutex<Option<std::io::ErrorKind>>, e: Error) -> Error {
    match failed.lock().ok().and_then(|f| *f) {
        Some(kind) => Error::io("writing the result", std::io::Error::from(kind)),
        None => e,
    }
}

fn out_error(e: std::io::Error) -> Error {
    Error::io("writing the result", e)
}

fn print_table<W: Write>(w: &mut W, held: &mut Vec<RecordBatch>) -> Result<()> {
    let shown = held
        .iter()
        .map(nested_as_json)
        .collect::<Result<Vec<_>>>()?;
    held.clear();
    let text = arrow::util::pretty::pretty_format_batches(&shown)?;
    writeln!(w, "{text}").map_err(out_error)
}

/// NaN and infinite values in the float columns of `batch`.
fn nonfinite(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Float64 => c
                .as_primitive::<arrow::datatypes::Float64Type>()
                .iter()
                .flatten()
                .filter(|v| !v.is_finite())
                .count(),
            DataType::Float32 => c
                .as_primitive::<arrow::datatypes::Float32Type>()
                .iter()
                .flatten()
                .filter(|v| !v.is_finite())
                .count(),
            _ => 0,
        })
        .sum()
}

/// The note printed on stderr when JSON wrote NaN or infinities as null.
pub fn nonfinite_note(n: usize) -> Option<String> {
    (n > 0).then(|| {
        format!(
            "note: {n} NaN or infinite value(s) written as null (JSON has no such numbers; use --format csv or .parquet to keep them)"
        )
    })
}

/// An output file written whole or not at all: the bytes go to a temporary
/// file beside `path`, renamed over it by [`OutFile::commit`]. A link at
/// `path` is replaced, never followed; a path inside the local warehouse
/// (itself, through a linked directory or through a link) is refused.
pub struct OutFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl OutFile {
    /// `flag` names the option in errors (`--out`).
    pub fn create(wh: &Warehouse, path: &Path, flag: &str) -> Result<OutFile> {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let shown = path.display();
        let dir = std::fs::canonicalize(parent)
            .map_err(|e| Error::io(format!("{flag} {shown}: its directory"), e))?;
        if wh.is_local() {
            let root = PathBuf::from(format!("/{}", wh.root()));
            let root = std::fs::canonicalize(&root).unwrap_or(root);
            // The directory, and what a link at `path` points to.
            let target = std::fs::canonicalize(path).ok();
            if dir.starts_with(&root) || target.is_some_and(|t| t.starts_with(&root)) {
                return Err(Error::Usage(format!(
                    "{flag} {shown}: inside the warehouse {}; write elsewhere (the warehouse is only written by runs)",
                    root.display()
                )));
            }
        }
        if path.is_dir() {
            return Err(Error::Usage(format!("{flag} {shown}: is a directory")));
        }
        let tmp = tempfile::Builder::new()
            .prefix(".chatlake-out-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(format!("{flag} {shown}: creating a file beside it"), e))?;
        Ok(OutFile {
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// Renames the finished file over `path` (readable as a new file
    /// would be: 0644, or the old file's permissions).
    pub fn commit(self) -> Result<()> {
        let shown = self.path.display().to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::symlink_metadata(&self.path)
                .ok()
                .filter(|m| m.is_file())
                .map_or(0o644, |m| m.permissions().mode() & 0o777);
            std::fs::set_permissions(self.tmp.path(), std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("writing {shown}"), e))?;
        }
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| Error::io(format!("writing {shown}"), e))?;
        self.tmp
            .persist(&self.path)
            .map_err(|e| Error::io(format!("writing {shown}"), e.error))?;
        Ok(())
    }
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// Whether chatlake's own stderr lines are JSON (`--log-format json`).
static JSON_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`error`] and [`note`] write JSON objects (set once, at start).
pub fn set_json_stderr(on: bool) {
    JSON_STDERR.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Prints `error: <message>` on stderr, secrets redacted and control
/// characters escaped; with `--log-format json`, one JSON object in the
/// logs' layout instead, so that every stderr line stays JSON.
pub fn error(message: &str) {
    stderr_line("ERROR", "error: ", message);
}

/// Prints a note (what was written where) on stderr, as [`error`] does.
pub fn note(message: &str) {
    stderr_line("INFO", "", message);
}

fn stderr_line(level: &str, prefix: &str, message: &str) {
    let message = crate::config::secret::redact(message);
    let line = if JSON_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": level,
            "fields": { "message": format!("{prefix}{message}") },
            "target": "chatlake",
        })
        .to_string()
    } else {
        format!(
            "{prefix}{}",
            crate::config::secret::escape_controls(&message)
        )
    };
    eprintln!("{line}");
}
