//! DataFusion over the warehouse: every table of `schemas/` registered as a
//! Hive-partitioned listing table (`dt` as a Date32 partition column), and
//! every view of `sql/` created on top. User SQL runs read-only.

use std::sync::Arc;

use arrow::datatypes::DataType;
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
    opened: crate::sink::readable::Opened,
    store_url: String,
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
        match self.store_url.strip_prefix("file://") {
            Some(_) => format!("/{path}"),
            None => format!("{}/{path}", self.store_url.trim_end_matches('/')),
        }
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
    session_with(wh, None).await
}

/// As [`session`], with `reporting.chats` computed once for the local dates
/// `from..=to` and held in memory, so that a report's many queries over the
/// views built on it do not recompute it (the same SQL, the same rows).
pub async fn session_for_dates(
    wh: &Warehouse,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<Session> {
    session_with(wh, Some((from, to))).await
}

async fn session_with(
    wh: &Warehouse,
    dates: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
) -> Result<Session> {
    let config = SessionConfig::new().with_information_schema(true);
    let mut ctx = SessionContext::new_with_config(config);
    // json_get_str(_extra, 'field'), json_get_int, json_contains, `->`, ...
    datafusion_functions_json::register_all(&mut ctx)?;
    // Queries read only what chatlake wrote, and write nothing.
    let (readable, opened) = crate::sink::readable::Readable::new(Arc::clone(wh.store()));
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
            .with_schema(t.file_schema());
        let table = ListingTable::try_new(config)?;
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
        opened,
        store_url: wh.store_url().to_string(),
        settings,
    })
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
    use futures::FutureExt;
    check_size(sql)?;
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    session.opened.clear();
    let outcome = std::panic::AssertUnwindSafe(async {
        let df = session.ctx.sql_with_options(sql, read_only).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let mut batches = df.collect().await?;
        // An empty result keeps its columns (a header in every format).
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema));
        }
        Ok::<_, datafusion::error::DataFusionError>(batches)
    })
    .catch_unwind()
    .await;
    let error = match outcome {
        Ok(Ok(batches)) => return Ok(batches),
        Ok(Err(e)) => match human(&e) {
            Some(message) => Error::Usage(message),
            None => Error::Query(e),
        },
        Err(panic) => Error::Internal(format!(
            "the query engine panicked: {}",
            crate::error::panic_message(panic.as_ref())
        )),
    };
    match session.opened.diagnose().await.into_iter().next() {
        Some((path, why)) => Err(Error::File {
            path: session.url_of(&path),
            message: format!("{why}; it was not written by chatlake or is damaged: move it away, or re-run the stream that writes this partition"),
        }),
        None => Err(error),
    }
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

/// Most operators one statement may hold. Planning and evaluating an
/// expression recurse once per operator; a statement like `SELECT 1+1+...`
/// with thousands of terms would otherwise exhaust the stack and abort.
pub const MAX_OPERATORS: usize = 1000;

/// Refuses a statement with more than [`MAX_OPERATORS`] operators, with an
/// error that says so (instead of a stack overflow).
fn check_size(sql: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(()); // the parser will say what is wrong
    };
    let operators = tokens
        .iter()
        .filter(|t| match t {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat => true,
            Token::Eq | Token::Neq | Token::Lt | Token::Gt | Token::LtEq | Token::GtEq => true,
            Token::Word(w) => matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::NOT),
            _ => false,
        })
        .count();
    if operators > MAX_OPERATORS {
        return Err(Error::Usage(format!(
            "the statement has {operators} operators; at most {MAX_OPERATORS} are accepted in one statement (an expression that deep would exhaust the stack)"
        )));
    }
    Ok(())
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

/// Writes a query result to `path` in the format of its extension (csv,
/// json, ndjson, parquet). Refused inside the warehouse, which stays
/// read-only. Returns the rows written.
pub fn export(wh: &Warehouse, batches: &[RecordBatch], path: &std::path::Path) -> Result<usize> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if wh.is_local() {
        let root = std::path::PathBuf::from(format!("/{}", wh.root()));
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let parent = std::fs::canonicalize(parent)
            .map_err(|e| Error::io(format!("--out {}", path.display()), e))?;
        if parent.starts_with(&root) {
            return Err(Error::Usage(format!(
                "--out {}: inside the warehouse {}; write results elsewhere (the warehouse is only written by runs)",
                path.display(),
                root.display()
            )));
        }
    }
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let bytes = match ext.as_str() {
        "csv" => render(batches, Format::Csv)?.into_bytes(),
        "json" => render(batches, Format::Json)?.into_bytes(),
        "ndjson" | "jsonl" => render(batches, Format::Ndjson)?.into_bytes(),
        "parquet" => {
            let schema = batches
                .first()
                .map(|b| b.schema())
                .ok_or_else(|| Error::Internal("a result without a schema".into()))?;
            let mut buf = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None)
                .map_err(|e| Error::Internal(format!("--out: {e}")))?;
            for b in batches {
                w.write(b)
                    .map_err(|e| Error::Internal(format!("--out: {e}")))?;
            }
            w.close()
                .map_err(|e| Error::Internal(format!("--out: {e}")))?;
            buf
        }
        other => {
            return Err(Error::Usage(format!(
                "--out {}: unknown extension `{other}`; use .csv, .json, .ndjson or .parquet",
                path.display()
            )))
        }
    };
    std::fs::write(path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(rows)
}

/// Renders batches as a pretty table, CSV (with header), a JSON array or
/// JSON lines. Every column appears even when the result has no row.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => {
            let shown = batches
                .iter()
                .map(nested_as_json)
                .collect::<Result<Vec<_>>>()?;
            Ok(arrow::util::pretty::pretty_format_batches(&shown)?.to_string())
        }
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(&nested_as_json(b)?)?;
                }
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        Format::Json => {
            let text = json::<arrow::json::writer::JsonArray>(batches)?;
            // The writer prints nothing at all for no rows.
            Ok(if text.is_empty() { "[]".into() } else { text } + "\n")
        }
        Format::Ndjson => json::<arrow::json::writer::LineDelimited>(batches),
    }
}

/// Batches as JSON in the writer's layout, every column (null as null).
fn json<F: arrow::json::writer::JsonFormat>(batches: &[RecordBatch]) -> Result<String> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, F>(Vec::new());
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(String::from_utf8_lossy(&w.into_inner()).into_owned())
}
