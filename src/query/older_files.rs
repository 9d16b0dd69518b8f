//! A file written by an older chatlake, named where it is opened.
//!
//! When a table gains a NOT NULL column, its files written before lack it.
//! DataFusion would read the column as nulls and fail later with Arrow's
//! "Column 'c' is declared as non-nullable but contains null values", which
//! names neither the table nor what to do. Each table's scan here adapts a
//! file's columns to the table's with DataFusion's own adapter, after one
//! check as the file is opened: a column declared NOT NULL and missing from
//! the file is an error naming the column and the table, and how its files
//! get written again. The check is of the file, not of the columns a query
//! reads: DataFusion has already put NULL for a column its statistics say
//! is all null, so a missing column is no longer seen by name. Being in the
//! scan, the message reaches every reader: `chatlake query`, `report` and
//! the server's clients, and both also name the file ([`Namer`]).

use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use object_store::path::Path;

/// The adapter factory of one table's scan.
#[derive(Debug)]
pub struct OlderFiles {
    table: String,
    dir: Path,
    refused: Refused,
}

/// Where a session's scans record the last file they refused: the factory
/// is not told the file's name, so the statement's error path looks for it
/// ([`crate::sink::readable::Opened::lacking`]) among the files opened.
pub type Refused = Arc<Mutex<Option<Refusal>>>;

/// A table's directory, the NOT NULL columns a file under it lacks, and
/// what the scan said.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub dir: Path,
    pub columns: Vec<String>,
    pub message: String,
}

impl OlderFiles {
    /// For table `table` (`schema.name`), whose files are under `dir`.
    pub fn new(table: &str, dir: Path, refused: &Refused) -> Arc<OlderFiles> {
        Arc::new(OlderFiles {
            table: table.to_string(),
            dir,
            refused: Arc::clone(refused),
        })
    }
}

impl PhysicalExprAdapterFactory for OlderFiles {
    /// Called as each file is opened, with the table's columns (`logical`)
    /// and the file's (`physical`).
    fn create(
        &self,
        logical: SchemaRef,
        physical: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let missing: Vec<&str> = logical
            .fields()
            .iter()
            .filter(|f| !f.is_nullable() && physical.field_with_name(f.name()).is_err())
            .map(|f| f.name().as_str())
            .collect();
        if !missing.is_empty() {
            let message = message(&self.table, &missing);
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(Refusal {
                dir: self.dir.clone(),
                columns: missing.iter().map(|c| c.to_string()).collect(),
                message: message.clone(),
            });
            return Err(DataFusionError::Execution(message));
        }
        DefaultPhysicalExprAdapterFactory.create(logical, physical)
    }
}

/// Names the file behind a refusal: the files a session opened, the last
/// refusal its scans recorded, and where the warehouse is. Cloned into the
/// server's connections, which get a statement's error apart from the
/// session that ran it.
#[derive(Debug, Clone)]
pub struct Namer {
    pub(crate) opened: crate::sink::readable::Opened,
    pub(crate) refused: Refused,
    pub(crate) store_url: String,
}

impl Namer {
    /// Forgets the files opened and the refusal recorded (before the next
    /// statement of `chatlake query`).
    pub(crate) fn clear(&self) {
        self.opened.clear();
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// The file the recorded refusal is about, as a user would type it,
    /// with the refusal's message; the refusal is taken. With `error`,
    /// only a refusal whose message the error quotes (another statement's
    /// refusal, on a server, is left for it).
    pub async fn refused_file(&self, error: Option<&str>) -> Option<(String, String)> {
        let refusal = {
            let mut slot = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            match (&*slot, error) {
                (Some(r), Some(e)) if !e.contains(&r.message) => return None,
                _ => slot.take()?,
            }
        };
        let path = self.opened.lacking(&refusal.dir, &refusal.columns).await?;
        Some((self.url_of(&path), refusal.message))
    }

    /// `message` with the file it is about (`warehouse file PATH: ...`),
    /// when it quotes the refusal recorded last; otherwise `message`.
    pub async fn name_in(&self, message: String) -> String {
        if !message.contains(OLDER) {
            return message;
        }
        match self.refused_file(Some(&message)).await {
            Some((path, refusal)) => {
                // The client's text from the refusal on (DataFusion's
                // "Execution error: " and the like before it left out),
                // worded as `chatlake query` words it.
                let from = message.find(&refusal).unwrap_or(0);
                format!("warehouse file {path}: {}", &message[from..])
            }
            None => message,
        }
    }

    /// Where a file is, as a user would type it (a plain path on local disk).
    pub(crate) fn url_of(&self, path: &Path) -> String {
        match self.store_url.strip_prefix("file://") {
            Some(_) => format!("/{path}"),
            None => format!("{}/{path}", self.store_url.trim_end_matches('/')),
        }
    }
}

/// The words every refusal's message holds.
const OLDER: &str = "missing from a file written by an older chatlake";

/// What to do about `columns` missing from a file of `table`.
fn message(table: &str, columns: &[&str]) -> String {
    let advice = if crate::calendar::TABLES.contains(&table) {
        // The reporting calendar is written whole by every run.
        "the next `chatlake run` of the pipeline rewrites it".to_string()
    } else if table.starts_with("meta.") {
        // Run history and the like: nothing fetches it again.
        "this chatlake cannot read that file; move it out of the warehouse".to_string()
    } else {
        "fetch its partitions again: reset the stream that writes it (`chatlake state reset --pipeline FILE --stream SOURCE.STREAM`), then `chatlake run`".to_string()
    };
    let names: Vec<String> = columns.iter().map(|c| format!("`{c}`")).collect();
    let (noun, verb) = match columns.len() {
        1 => ("column", "is"),
        _ => ("columns", "are"),
    };
    format!(
        "{noun} {} of {table} {verb} {OLDER}: {advice}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn schema(fields: &[(&str, bool)]) -> SchemaRef {
        Arc::new(Schema::new(
            fields
                .iter()
                .map(|(name, nullable)| Field::new(*name, DataType::Int64, *nullable))
                .collect::<Vec<_>>(),
        ))
    }

    /// A file lacking NOT NULL columns is refused, naming them all and what
    /// writes them again (a calendar table: the next run; a source's: fetch
    /// again; a run history: move it away); one lacking only nullable columns is read (as nulls).
    #[test]
    fn missing_not_null_columns_are_named_with_what_writes_them_again() {
        let table = schema(&[("a", false), ("b", false), ("c", true)]);
        let err = |name: &str, file: SchemaRef| {
            OlderFiles::new(name, Path::from("t"), &Refused::default())
                .create(Arc::clone(&table), file)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("meta.business_clock", schema(&[("c", true)])).contains(
                "columns `a`, `b` of meta.business_clock are missing from a file written by an older chatlake: the next `chatlake run` of the pipeline rewrites it"
            )
        );
        assert!(err("social25.conversation_stats", schema(&[("a", false)])).contains(
            "column `b` of social25.conversation_stats is missing from a file written by an older chatlake: fetch its partitions again: reset the stream that writes it (`chatlake state reset --pipeline FILE --stream SOURCE.STREAM`), then `chatlake run`"
        ));
        assert!(err("meta.runs", schema(&[("b", false)])).contains(
            "column `a` of meta.runs is missing from a file written by an older chatlake: this chatlake cannot read that file; move it out of the warehouse"
        ));
        assert!(
            OlderFiles::new("socialintents.chats", Path::from("t"), &Refused::default())
                .create(Arc::clone(&table), schema(&[("a", false), ("b", false)]))
                .is_ok()
        );
    }
}
