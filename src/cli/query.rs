//! `chatlake query` (and `sql`): read-only SQL over the warehouse, to
//! stdout, to a file (`--out`), or in the interactive shell.

use std::process::ExitCode;

use super::*;

/// The arguments of `chatlake query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub wh: WarehouseArg,
    /// Output format (with --out: taken from the file's extension).
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Read the SQL from this file (statements separated by `;`).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "sql"
    )]
    pub file: Option<PathBuf>,
    /// Write the result to FILE (.csv, .json, .ndjson or .parquet),
    /// outside the warehouse, instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The SQL: one or more statements separated by `;`, or `-` to read
    /// them from stdin. Without it: the SQL shell (history, statements
    /// ending with `;` over several lines; from a pipe, line by line).
    pub sql: Option<String>,
}

pub async fn execute(args: QueryArgs) -> Result<ExitCode> {
    let QueryArgs {
        wh,
        format,
        file,
        out,
        sql,
    } = args;
    let text = match (sql.as_deref(), &file) {
        (_, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| Error::io(format!("reading {}", f.display()), e))?,
        (Some("-"), None) => std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::io("reading SQL from stdin", e))?,
        (Some(s), None) => s.to_string(),
        (None, None) => {
            // No SQL: the shell.
            let wh = existing_warehouse(wh.warehouse, None)?;
            let session = crate::query::session(&wh).await?;
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
            return crate::shell::run(&session, format, terminal).await;
        }
    };
    let statements = crate::query::split_statements(&text)?;
    let wh = existing_warehouse(wh.warehouse, None)?;
    let ctx = crate::query::session(&wh).await?;
    if let Some(path) = out {
        let [one] = statements.as_slice() else {
            return Err(Error::Usage(format!(
                "--out writes one result; the SQL holds {} statements",
                statements.len()
            )));
        };
        let format = ResultFormat::of_path(&path)?;
        let file = OutFile::create(&wh, &path, "--out")?;
        let w = std::io::BufWriter::new(file);
        let (w, rows, nonfinite) = crate::query::write_result(&ctx, one, w, format).await?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(format!("writing {}", path.display()), e.into_error()))?;
        file.commit()?;
        if let Some(note) = crate::output::nonfinite_note(nonfinite) {
            crate::output::note(&note);
        }
        crate::output::note(&format!("{rows} rows written to {}", path.display()));
        return Ok(ExitCode::SUCCESS);
    }
    for sql in &statements {
        let w = std::io::BufWriter::new(std::io::stdout());
        let (_, _, nonfinite) =
            crate::query::write_result(&ctx, sql, w, ResultFormat::Text(format)).await?;
        if let Some(note) = crate::output::nonfinite_note(nonfinite) {
            crate::output::note(&note);
        }
    }
    Ok(ExitCode::SUCCESS)
}
