//! The warehouse in other engines: `chatlake views --dialect ...` prints a
//! SQL script that defines every table over the warehouse's Hive layout and
//! every reporting view of `sql/` under the same qualified names, for
//! DataFusion (datafusion-cli), DuckDB or Spark SQL.
//!
//! One source of truth: the views are the `sql/` files, written in DataFusion
//! SQL restricted to what the three engines share, plus the few constructs
//! they spell differently, rewritten here by explicit rules:
//!
//! | `sql/` (DataFusion)            | DuckDB                 | Spark                              |
//! |--------------------------------|------------------------|------------------------------------|
//! | `CAST(x_at AS BIGINT)` (µs)    | `epoch_us(x_at)`       | `unix_micros(x_at)`                |
//! | `x AT TIME ZONE 'tz'`          | (same)                 | `from_utc_timestamp(x, 'tz')`      |
//! | `date_part('isodow', d)`       | (same)                 | `date_part('DAYOFWEEK_ISO', d)`    |
//!
//! The cast rule applies to timestamp columns, which are the columns whose
//! name ends in `_at`; a script for DuckDB or Spark that still holds an
//! `AS BIGINT)` is refused rather than emitted wrong (a test checks every
//! view). Spark scripts set the session time zone to UTC, so that
//! `from_utc_timestamp` gives the local wall-clock time.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::schema::{self, ColumnType, TableDef, DT};

/// An engine the scripts are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    #[value(name = "datafusion")]
    DataFusion,
    #[value(name = "duckdb")]
    DuckDb,
    Spark,
}

/// `sql` (a view of `sql/`, placeholders filled) in `dialect`.
pub fn rewrite(sql: &str, dialect: Dialect) -> Result<String> {
    use std::sync::OnceLock;
    static CAST: OnceLock<regex::Regex> = OnceLock::new();
    static AT_ZONE: OnceLock<regex::Regex> = OnceLock::new();
    let cast = CAST.get_or_init(|| {
        regex::Regex::new(
            r"(?i)CAST\(\s*([A-Za-z_][A-Za-z0-9_]*\.)?([A-Za-z0-9_]*_at)\s+AS\s+BIGINT\s*\)",
        )
        .expect("static regex")
    });
    let at_zone = AT_ZONE.get_or_init(|| {
        regex::Regex::new(r"(?i)\b([A-Za-z_][A-Za-z0-9_.]*)\s+AT\s+TIME\s+ZONE\s+('[^']*')")
            .expect("static regex")
    });
    let out = match dialect {
        Dialect::DataFusion => return Ok(sql.to_string()),
        Dialect::DuckDb => cast.replace_all(sql, "epoch_us($1$2)").into_owned(),
        Dialect::Spark => {
            let s = cast.replace_all(sql, "unix_micros($1$2)");
            let s = at_zone.replace_all(&s, "from_utc_timestamp($1, $2)");
            s.replace("date_part('isodow',", "date_part('DAYOFWEEK_ISO',")
        }
    };
    if out.to_ascii_uppercase().contains("AS BIGINT)") {
        return Err(Error::Usage(format!(
            "a view casts something other than a timestamp column (`…_at`) to BIGINT, which {dialect:?} reads differently: {}",
            out.lines()
                .find(|l| l.to_ascii_uppercase().contains("AS BIGINT)"))
                .unwrap_or("")
                .trim()
        )));
    }
    Ok(out)
}

/// `sql` with each `${name}` replaced by its setting.
pub fn fill(sql: &str, settings: &[(&str, String)]) -> String {
    settings.iter().fold(sql.to_string(), |s, (k, v)| {
        s.replace(&format!("${{{k}}}"), v)
    })
}

/// The reporting views of `sql/` (placeholders filled by `fill`) in an order
/// where each comes after the views it reads.
pub fn views_in_order(fill: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let names: Vec<String> = schema::VIEW_FILES
        .iter()
        .map(|(f, _)| f.trim_end_matches(".sql").to_string())
        .collect();
    let mut pending: Vec<(String, String)> = schema::VIEW_FILES
        .iter()
        .map(|(f, sql)| (f.trim_end_matches(".sql").to_string(), fill(sql)))
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    while !pending.is_empty() {
        let before = pending.len();
        let (ready, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(name, sql)| {
            names
                .iter()
                .filter(|n| *n != name && mentions(sql, n))
                .all(|n| done.contains(n))
        });
        if ready.is_empty() {
            // A cycle: keep file order (the engine will name the problem).
            out.extend(rest);
            break;
        }
        done.extend(ready.iter().map(|(n, _)| n.clone()));
        out.extend(ready);
        pending = rest;
        debug_assert!(pending.len() < before);
    }
    out
}

/// Whether `sql` reads the relation `name` (a whole-word match).
fn mentions(sql: &str, name: &str) -> bool {
    sql.match_indices(name).any(|(i, _)| {
        let after = sql[i + name.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The SQL type of a column in `dialect`.
fn sql_type(ty: ColumnType, dialect: Dialect) -> &'static str {
    match (ty, dialect) {
        (ColumnType::String, Dialect::Spark) => "STRING",
        (ColumnType::String, _) => "VARCHAR",
        (ColumnType::Int64, _) => "BIGINT",
        (ColumnType::Float64, _) => "DOUBLE",
        (ColumnType::Bool, _) => "BOOLEAN",
        (ColumnType::Timestamp, Dialect::DuckDb) => "TIMESTAMPTZ",
        // microseconds with a UTC offset (DataFusion's bare TIMESTAMP is
        // nanoseconds without one)
        (ColumnType::Timestamp, Dialect::DataFusion) => "TIMESTAMP(6) WITH TIME ZONE",
        (ColumnType::Timestamp, Dialect::Spark) => "TIMESTAMP",
        (ColumnType::Date, _) => "DATE",
        (ColumnType::ListString, Dialect::DuckDb) => "VARCHAR[]",
        (ColumnType::ListString, Dialect::Spark) => "ARRAY<STRING>",
        (ColumnType::ListString, Dialect::DataFusion) => "VARCHAR[]",
    }
}

/// Every column of `t` as a query sees it: (name, SQL type), `dt` last.
fn columns(t: &TableDef, dialect: Dialect) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = t
        .columns
        .iter()
        .map(|c| (c.name.clone(), sql_type(c.ty, dialect)))
        .collect();
    out.push((
        schema::EXTRACTED_AT.into(),
        sql_type(ColumnType::Timestamp, dialect),
    ));
    out.push((schema::RUN_ID.into(), sql_type(ColumnType::String, dialect)));
    out.push((schema::EXTRA.into(), sql_type(ColumnType::String, dialect)));
    if t.is_partitioned() {
        out.push((DT.into(), "DATE"));
    }
    out
}

/// What the script needs to know about the warehouse.
pub struct Target<'a> {
    /// The warehouse root as the engine opens it: an absolute local path or
    /// `s3://bucket/prefix`, without a trailing slash.
    pub root: &'a str,
    /// Tables with at least one readable file; the others are defined as
    /// typed, empty views (an engine's file reader fails on no files).
    pub with_files: &'a BTreeSet<String>,
    /// Filled into the views' `${...}` placeholders.
    pub settings: &'a [(&'static str, String)],
    /// An S3-compatible server chatlake reached the warehouse through
    /// (`AWS_ENDPOINT_URL`), e.g. `http://127.0.0.1:9000`: the DuckDB script
    /// points its S3 secret there too. None for AWS itself.
    pub s3_endpoint: Option<&'a str>,
}

/// The DuckDB S3 secret: credentials from the AWS chain, plus the endpoint
/// of an S3-compatible server (path-style URLs; no TLS for `http://`).
fn duckdb_secret(endpoint: Option<&str>) -> String {
    let mut options = vec!["TYPE s3".to_string(), "PROVIDER credential_chain".into()];
    if let Some(url) = endpoint {
        let (tls, host) = match url.split_once("://") {
            Some((scheme, host)) => (scheme != "http", host),
            None => (true, url),
        };
        let host = host.trim_end_matches('/');
        options.push(format!("ENDPOINT {}", literal(host, Dialect::DuckDb)));
        options.push("URL_STYLE 'path'".into());
        options.push(format!("USE_SSL {tls}"));
    }
    format!(
        "CREATE SECRET IF NOT EXISTS chatlake_s3 ({});\n\n",
        options.join(", ")
    )
}

/// `text` as a string literal of `dialect`. DuckDB and DataFusion double a
/// quote (`'o''brien'`); Spark reads `\` escapes in literals and would
/// take `'o''brien'` as two literals run together, so it gets `'o\'brien'`.
pub fn literal(text: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::Spark => format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'")),
        Dialect::DuckDb | Dialect::DataFusion => format!("'{}'", text.replace('\'', "''")),
    }
}

/// Refuses a warehouse root the scripts cannot name faithfully: control
/// characters (a newline would end the script's comment line and start a
/// statement), glob characters (`*?[]{}`: the engines' file readers
/// expand them, so the script would read other directories), and `\` and
/// `%`, which the object store keeps percent-encoded.
pub fn check_root(root: &str) -> Result<()> {
    if let Some(c) = root
        .chars()
        .find(|c| c.is_control() || "*?[]{}\\%".contains(*c))
    {
        return Err(Error::Usage(format!(
            "the warehouse path {:?} holds {c:?}, which the engines' file readers would not read as a plain path; \
             move or link the warehouse to a path without control or glob characters (*?[]{{}}), \\ or % to generate views",
            root
        )));
    }
    Ok(())
}

/// The whole script: schemas, tables, views.
pub fn script(target: &Target<'_>, dialect: Dialect, generated: &str) -> Result<String> {
    check_root(target.root)?;
    let mut out = String::new();
    let setting_text: Vec<String> = target
        .settings
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    out.push_str(&format!(
        "-- chatlake tables and reporting views for {d}, over {root}\n\
         -- generated by `chatlake views --dialect {d}` at {generated}\n\
         -- reporting settings (meta.reporting_settings): {settings}\n\
         -- Tables without files when this was generated are empty views: generate again after a run fills them.\n\n",
        root = target.root,
        d = dialect_name(dialect),
        settings = setting_text.join(", "),
    ));
    if target.root.starts_with("s3://") {
        match dialect {
            Dialect::DuckDb => {
                out.push_str(
                    "INSTALL httpfs;\nLOAD httpfs;\n\
                     -- credentials from the usual AWS chain (environment, profile, instance role)\n",
                );
                out.push_str(&duckdb_secret(target.s3_endpoint));
            }
            Dialect::Spark => out.push_str(
                "-- S3: run Spark with hadoop-aws on the classpath; the script reads s3a:// paths.\n\n",
            ),
            Dialect::DataFusion => {}
        }
    }
    match dialect {
        Dialect::Spark => out.push_str("SET spark.sql.session.timeZone = UTC;\n\n"),
        // `TIMESTAMP WITH TIME ZONE` below takes this zone.
        Dialect::DataFusion => out.push_str("SET datafusion.execution.time_zone = 'UTC';\n\n"),
        Dialect::DuckDb => {}
    }
    let schemas: BTreeSet<&str> = schema::tables()
        .map(|t| t.schema_name())
        .chain(["reporting"])
        .collect();
    for s in &schemas {
        out.push_str(&match dialect {
            Dialect::Spark => format!("CREATE DATABASE IF NOT EXISTS {s};\n"),
            _ => format!("CREATE SCHEMA IF NOT EXISTS {s};\n"),
        });
    }
    out.push('\n');
    for t in schema::tables() {
        out.push_str(&table(t, target, dialect));
        out.push_str(";\n");
    }
    out.push('\n');
    for (name, sql) in views_in_order(|sql| fill(sql, target.settings)) {
        let sql = rewrite(&sql, dialect)?;
        let create = format!("CREATE VIEW {name}");
        let body = sql.replacen(&create, &format!("CREATE OR REPLACE VIEW {name}"), 1);
        if body == sql && dialect != Dialect::DataFusion {
            return Err(Error::Internal(format!(
                "sql/{name}.sql does not start its statement with `{create}`"
            )));
        }
        let body = if dialect == Dialect::DataFusion {
            sql
        } else {
            body
        };
        out.push_str(body.trim_end().trim_end_matches(';'));
        out.push_str(";\n\n");
    }
    Ok(out)
}

fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::DataFusion => "datafusion",
        Dialect::DuckDb => "duckdb",
        Dialect::Spark => "spark",
    }
}

/// The statement that defines table `t`.
fn table(t: &TableDef, target: &Target<'_>, dialect: Dialect) -> String {
    let dir = format!("{}/{}", target.root, t.name.replacen('.', "/", 1));
    let name = &t.name;
    if !target.with_files.contains(name) {
        let cols: Vec<String> = columns(t, dialect)
            .iter()
            .map(|(c, ty)| format!("CAST(NULL AS {ty}) AS {c}"))
            .collect();
        let view = match dialect {
            Dialect::DataFusion => "CREATE VIEW",
            _ => "CREATE OR REPLACE VIEW",
        };
        return format!(
            "-- {name}: no files yet\n{view} {name} AS SELECT {} WHERE 1 = 0",
            cols.join(", ")
        );
    }
    // Only the files chatlake writes (`data.parquet`, or run-named files of
    // the append-only meta tables), as in chatlake's own reader.
    let file = match (crate::sink::partition::read_glob(t), dialect) {
        ("data.parquet", _) => "data.parquet",
        // `?` would start a query string in DuckDB's s3:// URLs.
        (glob, Dialect::DuckDb) => glob,
        _ => "????????T??????Z-*.parquet",
    };
    let pattern = if t.is_partitioned() {
        format!("{dir}/dt=*/{file}")
    } else {
        format!("{dir}/{file}")
    };
    let typed_columns = || {
        let cols: Vec<String> = columns(t, dialect)
            .iter()
            .map(|(c, ty)| format!("{c} {ty}"))
            .collect();
        cols.join(", ")
    };
    let partitioned = if t.is_partitioned() {
        " PARTITIONED BY (dt)"
    } else {
        ""
    };
    match dialect {
        Dialect::DuckDb => {
            let hive = if t.is_partitioned() {
                ", hive_partitioning = true, hive_types = {'dt': DATE}"
            } else {
                ", hive_partitioning = false"
            };
            format!(
                "CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({}{hive})",
                literal(&pattern, dialect)
            )
        }
        Dialect::Spark => {
            let dir = dir.replacen("s3://", "s3a://", 1);
            format!(
                "DROP TABLE IF EXISTS {name};\nCREATE TABLE {name} ({}) USING parquet{partitioned} \
                 OPTIONS (path {}, pathGlobFilter '{file}', recursiveFileLookup 'false');\n{}",
                typed_columns(),
                literal(&dir, dialect),
                if t.is_partitioned() {
                    format!("MSCK REPAIR TABLE {name}")
                } else {
                    format!("REFRESH TABLE {name}")
                }
            )
        }
        Dialect::DataFusion => format!(
            "CREATE EXTERNAL TABLE {name} ({}) STORED AS PARQUET{partitioned} LOCATION {}",
            typed_columns(),
            literal(&format!("{dir}/"), dialect)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_view_rewrites_for_every_engine() {
        for d in [Dialect::DuckDb, Dialect::Spark] {
            for (name, sql) in views_in_order(|s| s.to_string()) {
                let out = rewrite(&sql, d).unwrap_or_else(|e| panic!("{name} in {d:?}: {e}"));
                if d == Dialect::Spark {
                    assert!(!out.contains("AT TIME ZONE"), "{name}");
                }
            }
        }
    }

    #[test]
    fn rules_rewrite_only_what_they_name() {
        let sql = "SELECT CAST(c.first_response_at AS BIGINT) - CAST(opens_at AS bigint), \
                   CAST(b.started_at AT TIME ZONE 'Europe/Paris' AS DATE), date_part('isodow', b.dt)";
        assert_eq!(
            rewrite(sql, Dialect::DuckDb).unwrap(),
            "SELECT epoch_us(c.first_response_at) - epoch_us(opens_at), \
             CAST(b.started_at AT TIME ZONE 'Europe/Paris' AS DATE), date_part('isodow', b.dt)"
        );
        assert_eq!(
            rewrite(sql, Dialect::Spark).unwrap(),
            "SELECT unix_micros(c.first_response_at) - unix_micros(opens_at), \
             CAST(from_utc_timestamp(b.started_at, 'Europe/Paris') AS DATE), date_part('DAYOFWEEK_ISO', b.dt)"
        );
        let e = rewrite("SELECT CAST(n AS BIGINT)", Dialect::DuckDb).unwrap_err();
        assert!(e.to_string().contains("CAST(n AS BIGINT)"), "{e}");
    }

    #[test]
    fn duckdb_secret_points_at_an_s3_compatible_endpoint() {
        assert_eq!(
            duckdb_secret(None),
            "CREATE SECRET IF NOT EXISTS chatlake_s3 (TYPE s3, PROVIDER credential_chain);\n\n"
        );
        assert_eq!(
            duckdb_secret(Some("http://127.0.0.1:9000/")),
            "CREATE SECRET IF NOT EXISTS chatlake_s3 (TYPE s3, PROVIDER credential_chain, \
             ENDPOINT '127.0.0.1:9000', URL_STYLE 'path', USE_SSL false);\n\n"
        );
        assert!(duckdb_secret(Some("https://minio.example.com"))
            .contains("ENDPOINT 'minio.example.com', URL_STYLE 'path', USE_SSL true"));
    }

    #[test]
    fn views_come_after_what_they_read() {
        let order: Vec<String> = views_in_order(|s| s.to_string())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let at = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert!(at("reporting.chats") < at("reporting.response_times"));
        assert!(at("reporting.chats") < at("reporting.agent_performance"));
        assert_eq!(order.len(), schema::VIEW_FILES.len());
    }
}
