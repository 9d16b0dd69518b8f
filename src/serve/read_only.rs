//! What `chatlake serve` runs: queries, EXPLAIN, SHOW, session SETs and
//! transaction statements; anything that would change data or the server
//! (DDL, DML, COPY, a `SET datafusion.*`) is refused with a clear message,
//! before it is planned.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::QueryHook;

/// Refuses what is not reading.
pub(super) struct ReadOnly;

fn refuse(statement: &Statement) -> Option<PgWireError> {
    use Statement as S;
    let allowed = savepoint(statement).is_some()
        || match statement {
            S::Query(_)
            | S::Explain { .. }
            | S::ExplainTable { .. }
            | S::ShowVariable { .. }
            | S::ShowVariables { .. }
            | S::ShowTables { .. }
            | S::ShowColumns { .. }
            | S::ShowFunctions { .. }
            | S::StartTransaction { .. }
            | S::Commit { .. }
            | S::Rollback { .. }
            | S::Declare { .. }
            | S::Fetch { .. }
            | S::Close { .. }
            | S::Discard { .. }
            | S::Deallocate { .. } => true,
            // Session settings (DateStyle, extra_float_digits, application_name,
            // statement_timeout) are the client's own; DataFusion's are the server's.
            S::Set(set) => !set.to_string().to_ascii_lowercase().contains("datafusion."),
            _ => false,
        };
    (!allowed).then(|| {
        let text = statement.to_string();
        let what: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "25006".into(),
            format!(
                "chatlake serve is read-only: {what} is not allowed (only queries, EXPLAIN, SHOW and session SET)"
            ),
        )))
    })
}

/// SAVEPOINT and RELEASE, which drivers send around their own statements
/// (psycopg under SQLAlchemy): nothing to keep on a read-only server, so
/// they succeed and do nothing.
fn savepoint(statement: &Statement) -> Option<Response> {
    match statement {
        Statement::Savepoint { .. } => Some(Response::Execution(Tag::new("SAVEPOINT"))),
        Statement::ReleaseSavepoint { .. } => Some(Response::Execution(Tag::new("RELEASE"))),
        _ => None,
    }
}

/// A savepoint's no-op answer, a refusal, or None (the statement runs).
fn answer(statement: &Statement) -> Option<PgWireResult<Response>> {
    savepoint(statement)
        .map(Ok)
        .or_else(|| refuse(statement).map(Err))
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        answer(statement)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if savepoint(statement).is_some() {
            // No plan: handle_extended_query answers it.
            return Some(Ok(LogicalPlan::EmptyRelation(
                datafusion::logical_expr::EmptyRelation {
                    produce_one_row: false,
                    schema: Arc::new(datafusion::common::DFSchema::empty()),
                },
            )));
        }
        refuse(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        answer(statement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_statements_pass() {
        use datafusion::sql::sqlparser::{dialect::PostgreSqlDialect, parser::Parser};
        let parse = |sql: &str| {
            Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0)
        };
        for ok in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "SHOW search_path",
            "SET extra_float_digits = 3",
            "BEGIN",
            "COMMIT",
        ] {
            assert!(refuse(&parse(ok)).is_none(), "{ok}");
        }
        for bad in [
            "CREATE TABLE t (a INT)",
            "DROP TABLE socialintents.chats",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM t",
            "COPY t TO '/tmp/x'",
            "SET datafusion.execution.target_partitions = 1",
            "CREATE VIEW v AS SELECT 1",
        ] {
            let e = refuse(&parse(bad)).unwrap_or_else(|| panic!("{bad} passed"));
            assert!(e.to_string().contains("read-only"), "{e}");
        }
    }
}
