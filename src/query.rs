//! DataFusion over the warehouse: every table of `schemas/` registered as a
//! Hive-partitioned listing table (`dt` as a Date32 partition column), and
//! every view of `sql/` created on top. User SQL runs read-only.

mod guard;
pub use guard::{MAX_JSON_ARROWS, MAX_OPERATORS};
mod older_files;
pub use older_files::Namer;
mod percentile;

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};

use crate::dialect;
use crate::error::{Error, Result};
use crate::schema::{self, DT};
use crate::sink::{partition, Warehouse};

/// The values of the views' `${...}` placeholders: `timezone` and
/// `first_response_target_seconds`, from meta.reporting_settings.
async fn settings(ctx: &SessionContext) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("timezone", "UTC".to_string()),
        ("first_response_target_seconds", "120".to_string()),
    ];
    let sql = "SELECT timezone, CAST(first_response_target_seconds AS VARCHAR) FROM meta.reporting_settings LIMIT 1";
    let Ok(df) = ctx.sql(sql).await else {
        return out;
    };
    let Ok(batches) = df.collect().await else {
        return out;
    };
    if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
        for (i, slot) in out.iter_mut().enumerate() {
            let col = arrow::compute::cast(b.column(i), &DataType::Utf8).ok();
            if let Some(v) = col
                .as_ref()
                .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
                .map(|c| c.value(0).to_string())
            {
                // Only what the settings can legitimately hold (an IANA name, a number).
                if v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
                {
                    slot.1 = v;
                }
            }
        }
    }
    out
}

/// A DataFusion session over one warehouse (it derefs to the
/// [`SessionContext`]), which knows the files its queries opened.
pub struct Session {
    ctx: SessionContext,
    /// The files its queries opened, the last file a table's scan refused
    /// as too old, and where they are (see query::older_files).
    files: older_files::Namer,
    /// The reporting settings the views were filled with.
    settings: Vec<(&'static str, String)>,
}

impl std::ops::Deref for Session {
    type Target = SessionContext;
    fn deref(&self) -> &SessionContext {
        &self.ctx
    }
}

impl Session {
    /// A reporting setting the views were filled with (`timezone`,
    /// `first_response_target_seconds`).
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Where a file is, as a user would type it (a plain path on local disk).
    fn url_of(&self, path: &object_store::path::Path) -> String {
        self.files.url_of(path)
    }

    /// What names the file behind an older file's error, for the server's
    /// connections.
    pub fn older_files(&self) -> Namer {
        self.files.clone()
    }
}

/// Output formats of `chatlake query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A text table for people (lists shown as JSON).
    Table,
    /// CSV with a header row; lists as JSON text.
    Csv,
    /// One JSON array of objects, every column in every object (null as null).
    Json,
    /// One JSON object per line, every column (null as null).
    Ndjson,
}

/// A session with the warehouse tables and the reporting views registered.
pub async fn session(wh: &Warehouse) -> Result<Session> {
    session_with(wh, None, None).await
}

/// As [`session`], for `chatlake serve`: its queries share a memory pool of
/// `memory_limit` bytes (fairly, spilling to disk where they can).
pub async fn server_session(wh: &Warehouse, memory_limit: usize) -> Result<Session> {
    session_with(wh, None, Some(memory_limit)).await
}

/// As [`session`], with `reporting.chats` computed once for the local dates
/// `from..=to` and held in memory, so that a report's many queries over the
/// views built on it do not recompute it (the same SQL, the same rows).
pub async fn session_for_dates(
    wh: &Warehouse,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<Session> {
    session_with(wh, Some((from, to)), None).await
}

async fn session_with(
    wh: &Warehouse,
    dates: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
    memory_limit: Option<usize>,
) -> Result<Session> {
    // DataFusion's own settings may be tuned from the environment, as in
    // datafusion-cli: DATAFUSION_EXECUTION_TARGET_PARTITIONS=4 and so on.
    let mut config = SessionConfig::from_env()
        .map_err(|e| {
            let set: Vec<String> = std::env::vars_os()
                .filter_map(|(k, _)| k.into_string().ok())
                .filter(|k| k.starts_with("DATAFUSION_"))
                .collect();
            Error::Usage(format!(
                "DataFusion's settings from {}: {e}",
                set.join(", ")
            ))
        })?
        .with_information_schema(true);
    // A join whose smaller side is at most 32 MB (meta.business_clock, the
    // agents) builds its hash table once and every partition probes it,
    // instead of both sides being hash-partitioned: the SLA view's two clock
    // joins no longer repartition every chat (BENCHMARKS.md, "Only what
    // zstd shrinks, and the clock joins in one partition"). DataFusion's
    // default is 1 MB; the environment variable still decides where it is
    // set.
    if std::env::var_os("DATAFUSION_OPTIMIZER_HASH_JOIN_SINGLE_PARTITION_THRESHOLD").is_none() {
        config
            .options_mut()
            .optimizer
            .hash_join_single_partition_threshold = 32 << 20;
    }
    // No cache of file listings (DataFusion keeps them forever by default):
    // a session outlives runs (the shell, a report beside a schedule), and
    // every statement must see the partitions as they are now, and read the
    // versions it listed (see sink::readable).
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0),
        );
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(
            datafusion::execution::memory_pool::FairSpillPool::new(limit),
        ));
    }
    let runtime = runtime.build_arc()?;
    let mut ctx = SessionContext::new_with_config_rt(config, runtime);
    // json_get_str(_extra, 'field'), json_get_int, json_contains, `->`, ...
    datafusion_functions_json::register_all(&mut ctx)?;
    // percentile_cont, exact for DOUBLE (see query/percentile.rs)
    ctx.register_udaf(percentile::udaf());
    // Queries read only what chatlake wrote, and write nothing.
    let refused = older_files::Refused::default();
    let (readable, opened) =
        crate::sink::readable::Readable::new(Arc::clone(wh.store()), wh.is_local());
    ctx.register_object_store(wh.store_url(), Arc::new(readable));
    let catalog = ctx.catalog("datafusion").expect("default catalog");
    for name in schema::tables()
        .map(|t| t.schema_name())
        .chain(["reporting"])
    {
        if catalog.schema(name).is_none() {
            catalog.register_schema(name, Arc::new(MemorySchemaProvider::new()))?;
        }
    }
    for t in schema::tables() {
        // Only the files chatlake writes (see `partition::read_glob`).
        let dir = wh.url_of(&partition::table_dir(wh.root(), t));
        let glob = glob::Pattern::new(partition::read_glob(t)).expect("static glob");
        let url = ListingTableUrl::try_new(
            url::Url::parse(&dir).map_err(|e| Error::Usage(format!("warehouse URL {dir}: {e}")))?,
            Some(glob),
        )?;
        let mut options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        if t.is_partitioned() {
            options = options.with_table_partition_cols(vec![(DT.to_string(), DataType::Date32)]);
        }
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(with_string_views(t.file_schema()))
            .with_expr_adapter_factory(older_files::OlderFiles::new(
                &t.name,
                partition::table_dir(wh.root(), t),
                &refused,
            ));
        // Each file's statistics (for pruning and planning) are read once
        // and kept while its size and modification time stay the same, as
        // DataFusion keeps its footers: a query over a year of daily
        // partitions otherwise decodes every footer's statistics again.
        let mut table = ListingTable::try_new(config)?
            .with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache());
        if let Some(key) = unique_key(t) {
            table = table.with_constraints(key);
        }
        ctx.register_table(
            TableReference::partial(t.schema_name(), t.table_name()),
            Arc::new(table),
        )?;
    }
    // The reporting settings the latest run wrote fill the views' ${...}
    // placeholders (UTC and a 120 s target before any run wrote them).
    let settings = settings(&ctx).await;
    // Each view after the views it reads.
    for (name, sql) in dialect::views_in_order(|sql| dialect::fill(sql, &settings)) {
        ctx.sql(&sql)
            .await
            .map_err(|e| Error::Usage(format!("sql/{name}.sql: {e}")))?;
        if let (Some((from, to)), "reporting.chats") = (dates, name.as_str()) {
            let rows = ctx
                .sql(&format!(
                    "SELECT * FROM reporting.chats WHERE dt BETWEEN DATE '{from}' AND DATE '{to}'"
                ))
                .await?;
            let schema = Arc::new(rows.schema().as_arrow().clone());
            let batches = rows.collect().await?;
            let name = TableReference::partial("reporting", "chats");
            ctx.deregister_table(name.clone())?;
            ctx.register_table(
                name,
                Arc::new(datafusion::datasource::MemTable::try_new(
                    schema,
                    vec![batches],
                )?),
            )?;
        }
    }
    Ok(Session {
        ctx,
        files: older_files::Namer {
            opened,
            refused,
            store_url: wh.store_url().to_string(),
        },
        settings,
    })
}

/// `schema` with its string columns as `Utf8View`, as DataFusion's Parquet
/// reader reads them (`schema_force_view_types`): declared `Utf8`, every
/// string read is copied once more by a cast to the declared type.
fn with_string_views(schema: SchemaRef) -> SchemaRef {
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// The primary key of a table that chatlake computes and writes whole, in
/// one file, in one commit (the `meta` tables of the calendar and the
/// settings), as a constraint DataFusion may rely on: it then drops a LEFT
/// JOIN of `meta.business_clock` whose columns a query does not read (the
/// views that need no business seconds; DataFusion's `eliminate_join`).
/// Tables the sources fill are left without one: their keys are unique once
/// a run has committed, and a constraint DataFusion relies on must hold for
/// every file listing it may plan over.
fn unique_key(t: &schema::TableDef) -> Option<datafusion::common::Constraints> {
    if t.schema_name() != "meta" || t.is_partitioned() || t.primary_key.is_empty() {
        return None;
    }
    let fields = t.file_schema();
    let key = t
        .primary_key
        .iter()
        .map(|c| fields.index_of(c).ok())
        .collect::<Option<Vec<usize>>>()?;
    Some(datafusion::common::Constraints::new_unverified(vec![
        datafusion::common::Constraint::PrimaryKey(key),
    ]))
}

/// The `chatlake views` script for `dialect` over this warehouse: its
/// tables and reporting views, the settings filled in from
/// meta.reporting_settings (see [`crate::dialect`]).
pub async fn views_script(wh: &Warehouse, dialect: crate::dialect::Dialect) -> Result<String> {
    let session = session(wh).await?;
    let mut with_files = std::collections::BTreeSet::new();
    for t in schema::tables() {
        let rows = run(&session, &format!("SELECT 1 FROM {} LIMIT 1", t.name)).await?;
        if rows.iter().any(|b| b.num_rows() > 0) {
            with_files.insert(t.name.clone());
        }
    }
    let root = match wh.store_url().scheme() {
        "file" => format!("/{}", wh.root()),
        _ => format!(
            "{}/{}",
            wh.store_url().as_str().trim_end_matches('/'),
            wh.root()
        )
        .trim_end_matches('/')
        .to_string(),
    };
    // The endpoint object_store's from_env() took, for the DuckDB secret.
    let endpoint = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    let target = crate::dialect::Target {
        root: &root,
        with_files: &with_files,
        settings: &session.settings,
        s3_endpoint: endpoint.as_deref().filter(|_| root.starts_with("s3://")),
    };
    let generated = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    crate::dialect::script(&target, dialect, &generated)
}

/// Runs one read-only statement: no DDL, no DML (INSERT, COPY), no SET.
///
/// When it fails on a file that is not valid Parquet (damaged, or put there
/// by hand), the error names that file; a decoder that panics on a hostile
/// footer is caught and reported the same way.
pub async fn run(session: &Session, sql: &str) -> Result<Vec<RecordBatch>> {
    let (schema, mut batches) = run_streaming(
        session,
        sql,
        |schema| Ok((schema, Vec::new())),
        |(_, all), b| {
            all.push(b);
            Ok(())
        },
    )
    .await?;
    // An empty result keeps its columns (a header in every format).
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

/// As [`run`], handing each batch to `each` as the engine makes it, so
/// that nothing holds the whole result: `start` gets the result's schema
/// before the first batch and makes what `each` writes into. An error of
/// `each` (stdout closed, a full disk) is returned as it is.
pub async fn run_streaming<S>(
    session: &Session,
    sql: &str,
    start: impl FnOnce(SchemaRef) -> Result<S>,
    mut each: impl FnMut(&mut S, RecordBatch) -> Result<()>,
) -> Result<S> {
    // Called at the first batch (or at the end of an empty result): an
    // attempt that fails before it leaves `start` for the next one.
    let mut start = Some(start);
    let mut attempt = 1;
    loop {
        let mut sent = false;
        let outcome = run_once(session, sql, &mut start, |s, b| {
            sent = true;
            each(s, b)
        })
        .await;
        match outcome {
            // A run replaced a file between the listing and its reading:
            // the statement runs again on the new listing, unless rows are
            // already out.
            Err(Replaced(path)) if !sent && attempt < MAX_ATTEMPTS => {
                tracing::debug!(file = %path, attempt, "a file changed while the query read it; running it again");
                attempt += 1;
            }
            Err(Replaced(path)) => {
                return Err(Error::File {
                    path: session.url_of(&object_store::path::Path::from(path)),
                    message: "a run replaced this file while the query was reading it (its partition is always whole, old or new); run the query again".into(),
                })
            }
            Err(Failed(e)) => return Err(e),
            Ok(s) => return Ok(s),
        }
    }
}

/// Times a statement is run when files change under it.
const MAX_ATTEMPTS: u32 = 8;

/// Why one attempt of a statement failed.
enum Attempt {
    /// The file (a store path) changed between listing and reading.
    Replaced(String),
    Failed(Error),
}
use Attempt::{Failed, Replaced};

/// The object-store path named by a precondition failure in `text`
/// (object_store: "Request precondition failure for path PATH: ...").
fn replaced_path(text: &str) -> Option<String> {
    let rest = text.split("precondition failure for path ").nth(1)?;
    Some(rest.split(": ").next().unwrap_or(rest).to_string())
}

/// One attempt of [`run_streaming`].
async fn run_once<S>(
    session: &Session,
    sql: &str,
    start: &mut Option<impl FnOnce(SchemaRef) -> Result<S>>,
    mut each: impl FnMut(&mut S, RecordBatch) -> Result<()>,
) -> std::result::Result<S, Attempt> {
    use futures::{FutureExt, StreamExt};
    guard::check_size(sql).map_err(Failed)?;
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    session.files.clear();
    let mut ours: Option<Error> = None;
    let outcome = std::panic::AssertUnwindSafe(async {
        let df = session.ctx.sql_with_options(sql, read_only).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await?;
        let mut sink = None;
        loop {
            let batch = stream.next().await.transpose()?;
            if sink.is_none() {
                let made = match start.take() {
                    Some(start) => start(Arc::clone(&schema)),
                    None => Err(Error::Internal("a result was started twice".into())),
                };
                match made {
                    Ok(s) => sink = Some(s),
                    Err(e) => {
                        ours = Some(e);
                        return Ok(None);
                    }
                }
            }
            let (Some(batch), Some(sink)) = (batch, sink.as_mut()) else {
                break;
            };
            if let Err(e) = each(sink, batch) {
                ours = Some(e);
                return Ok(None);
            }
        }
        Ok::<_, datafusion::error::DataFusionError>(sink)
    })
    .catch_unwind()
    .await;
    if let Some(e) = ours {
        return Err(Failed(e));
    }
    let error = match outcome {
        Ok(Ok(Some(sink))) => return Ok(sink),
        Ok(Ok(None)) => {
            return Err(Failed(Error::Internal(
                "a result writer stopped without an error".into(),
            )))
        }
        Ok(Err(e)) => match (replaced_path(&e.to_string()), human(&e)) {
            (Some(path), _) => return Err(Replaced(path)),
            (None, Some(message)) => Error::Usage(message),
            (None, None) => Error::Query(e),
        },
        Err(panic) => Error::Internal(format!(
            "the query engine panicked: {}",
            crate::error::panic_message(panic.as_ref())
        )),
    };
    if let Some((path, message)) = session.files.refused_file(None).await {
        return Err(Failed(Error::File { path, message }));
    }
    match session.files.opened.diagnose().await.into_iter().next() {
        Some((path, why)) => Err(Failed(Error::File {
            path: session.url_of(&path),
            message: format!("{why}; it was not written by chatlake or is damaged: move it away, or re-run the stream that writes this partition"),
        })),
        None => Err(Failed(error)),
    }
}

/// Runs `sql` and writes its result to `w` in `format`, batch by batch.
/// Returns the writer, the rows written and the NaN/infinite values JSON
/// wrote as null.
pub async fn write_result<W: std::io::Write + Send>(
    session: &Session,
    sql: &str,
    w: W,
    format: crate::output::ResultFormat,
) -> Result<(W, usize, usize)> {
    let writer = run_streaming(
        session,
        sql,
        |schema| crate::output::ResultWriter::new(w, format, schema),
        |out, b| out.write(&b),
    )
    .await?;
    writer.finish()
}

/// `batch` with every nested column (list, struct, map) as JSON text, for
/// formats that only take flat values (CSV): `["a","b"]`, `{"k":1}`.
pub fn nested_as_json(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{Field, Schema};
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, col) in batch.schema().fields().iter().zip(batch.columns()) {
        if !f.data_type().is_nested() {
            fields.push(f.as_ref().clone());
            columns.push(Arc::clone(col));
            continue;
        }
        let one = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "v",
                f.data_type().clone(),
                true,
            )])),
            vec![Arc::clone(col)],
        )?;
        let mut w = arrow::json::ArrayWriter::new(Vec::new());
        w.write(&one)?;
        w.finish()?;
        let rows: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(&w.into_inner())
                .map_err(|e| Error::Usage(format!("column {}: {e}", f.name())))?;
        let text: StringArray = rows
            .iter()
            .map(|r| r.get("v").filter(|v| !v.is_null()).map(|v| v.to_string()))
            .collect();
        fields.push(Field::new(f.name(), DataType::Utf8, true));
        columns.push(Arc::new(text));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// DataFusion's message in one line a person reads, where it is one of the
/// common ones: a parser error (with its position), an unknown table (with
/// the closest names and where to list them).
fn human(e: &datafusion::error::DataFusionError) -> Option<String> {
    let text = e.to_string();
    if text.starts_with("SQL error: ") {
        return Some(sql_error(&text));
    }
    let missing = text.split("table '").nth(1)?.split("' not found").next()?;
    let name = missing
        .trim_start_matches("datafusion.")
        .trim_start_matches("public.");
    let mut known: Vec<String> = schema::tables()
        .map(|t| t.name.clone())
        .chain(
            schema::VIEW_FILES
                .iter()
                .map(|(f, _)| f.trim_end_matches(".sql").to_string()),
        )
        .collect();
    known.sort_by_key(|k| distance(k, name).min(distance(k.split('.').nth(1).unwrap_or(k), name)));
    Some(format!(
        "no table or view named `{name}`; closest: {}. List them all with: SHOW TABLES",
        known
            .iter()
            .take(3)
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Edit distance (Levenshtein) between two short names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The statements of a SQL text (split by the SQL parser, so a `;` inside a
/// string stays where it is); an empty text is an error.
pub fn split_statements(text: &str) -> Result<Vec<String>> {
    use datafusion::sql::parser::DFParser;
    guard::refuse_writes(text)?;
    let statements =
        DFParser::parse_sql(text).map_err(|e| Error::Usage(sql_error(&e.to_string())))?;
    if statements.is_empty() {
        return Err(Error::Usage("no SQL statement given".into()));
    }
    Ok(statements.iter().map(|s| s.to_string()).collect())
}

/// A parser error in one human line: `SQL error: ParserError("Expected: an
/// SQL statement, found: SELEC at Line: 1, Column: 1")` becomes `SQL: expected
/// an SQL statement, found SELEC (line 1, column 1)`.
pub fn sql_error(message: &str) -> String {
    let inner = message
        .trim_start_matches("SQL error: ")
        .trim_start_matches("ParserError(\"")
        .trim_start_matches("TokenizerError(\"")
        .trim_end_matches("\")")
        .replace("Expected: ", "expected ")
        .replace(", found: ", ", found ");
    match inner.rsplit_once(" at Line: ") {
        Some((what, pos)) => {
            let pos = pos.replace(", Column: ", ", column ");
            format!("SQL: {what} (line {pos})")
        }
        None => format!("SQL: {inner}"),
    }
}

/// Renders batches as a pretty table, CSV (with header), a JSON array or
/// JSON lines. Every column appears even when the result has no row.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::Internal("a result without a schema".into()))?;
    let format = crate::output::ResultFormat::Text(format);
    let mut w = crate::output::ResultWriter::new(Vec::new(), format, schema)?;
    for b in batches {
        w.write(b)?;
    }
    let (bytes, _, _) = w.finish()?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    // A table ends without a newline, as its callers print it with one.
    if format == crate::output::ResultFormat::Text(Format::Table) && text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}
