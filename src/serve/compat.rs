//! What Postgres clients ask on connecting that DataFusion 55 and
//! datafusion-postgres's pg_catalog do not answer as Postgres would, each
//! found by running the client (tests/server.sh):
//!
//! - `version()` answers as PostgreSQL 16 (SQLAlchemy parses the number);
//! - `to_regtype(name)` is NULL (psycopg looks up extension types; none
//!   exist here);
//! - `pg_get_serial_sequence(table, column)` is NULL and
//!   `pg_collation_is_visible(oid)` true (SQLAlchemy's inspector asks for
//!   each column; nothing here has a sequence or a collation of its own);
//! - `json_build_object(key, value, ...)` builds the JSON text (the
//!   inspector's column query calls it for identity columns);
//! - `a LIKE p ESCAPE 'c'` (SQLAlchemy lists schemas `NOT LIKE 'pg/_%'
//!   ESCAPE '/'`; DataFusion takes only the backslash) is rewritten before
//!   planning to `like_escape(a, p, 'c')`, a function of the same meaning
//!   ([`like_regex`]), for simple and extended queries ([`Parser`]);
//! - a correlated scalar subquery over pg_catalog that is not aggregated
//!   (DataFusion plans only aggregated ones) takes `max()` of its column
//!   ([`aggregate_catalog_subquery`]).

use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::FieldInfo;
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::error::PgWireResult;

/// Registers the functions clients expect on `ctx`.
pub(super) fn register(ctx: &SessionContext) {
    let constant = |name: &str, arity: usize, value: ScalarValue| {
        datafusion::logical_expr::ScalarUDF::new_from_impl(Constant {
            name: name.to_string(),
            signature: if arity == 0 {
                datafusion::logical_expr::Signature::nullary(Volatility::Immutable)
            } else {
                datafusion::logical_expr::Signature::any(arity, Volatility::Immutable)
            },
            value,
        })
    };
    ctx.register_udf(constant(
        "version",
        0,
        ScalarValue::Utf8(Some(format!(
            "PostgreSQL 16.0 (chatlake {}, Apache DataFusion 55, read-only)",
            env!("CARGO_PKG_VERSION")
        ))),
    ));
    ctx.register_udf(constant("to_regtype", 1, ScalarValue::Int32(None)));
    ctx.register_udf(constant(
        "pg_get_serial_sequence",
        2,
        ScalarValue::Utf8(None),
    ));
    ctx.register_udf(constant(
        "pg_collation_is_visible",
        1,
        ScalarValue::Boolean(Some(true)),
    ));
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        JsonBuildObject::default(),
    ));
    for (name, case_insensitive) in [("like_escape", false), ("ilike_escape", true)] {
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Utf8, DataType::Utf8, DataType::Utf8],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| like_escape(args, case_insensitive)),
        ));
    }
}

/// A function whose answer is always the same, whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: String,
    signature: datafusion::logical_expr::Signature,
    value: ScalarValue,
}

impl datafusion::logical_expr::ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.value.data_type())
    }
    fn invoke_with_args(
        &self,
        _args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `json_build_object(k1, v1, k2, v2, ...)`: a JSON object as text, keys as
/// text, numbers, booleans and NULL as JSON has them, anything else as its
/// text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: datafusion::logical_expr::Signature,
}

impl Default for JsonBuildObject {
    fn default() -> Self {
        JsonBuildObject {
            signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        if args.args.len() % 2 != 0 {
            return Err(DataFusionError::Execution(
                "json_build_object: the arguments must be key, value pairs".into(),
            ));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let json = |v: ScalarValue| -> serde_json::Value {
            use serde_json::Value as J;
            match v {
                v if v.is_null() => J::Null,
                ScalarValue::Boolean(Some(b)) => J::Bool(b),
                ScalarValue::Int8(Some(n)) => n.into(),
                ScalarValue::Int16(Some(n)) => n.into(),
                ScalarValue::Int32(Some(n)) => n.into(),
                ScalarValue::Int64(Some(n)) => n.into(),
                ScalarValue::UInt8(Some(n)) => n.into(),
                ScalarValue::UInt16(Some(n)) => n.into(),
                ScalarValue::UInt32(Some(n)) => n.into(),
                ScalarValue::UInt64(Some(n)) => n.into(),
                ScalarValue::Float32(Some(f)) => serde_json::Number::from_f64(f64::from(f))
                    .map_or_else(|| J::String(f.to_string()), J::Number),
                ScalarValue::Float64(Some(f)) => serde_json::Number::from_f64(f)
                    .map_or_else(|| J::String(f.to_string()), J::Number),
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)) => J::String(s),
                v => J::String(v.to_string()),
            }
        };
        let rows = arrays.first().map_or(args.number_rows, |a| a.len());
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = match json(ScalarValue::try_from_array(&pair[0], i)?) {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => {
                        return Err(DataFusionError::Execution(
                            "json_build_object: a key is NULL".into(),
                        ))
                    }
                    other => other.to_string(),
                };
                object.insert(key, json(ScalarValue::try_from_array(&pair[1], i)?));
            }
            out.push(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `text LIKE pattern ESCAPE escape`, row by row (NULL in, NULL out).
fn like_escape(
    args: &[ColumnarValue],
    case_insensitive: bool,
) -> datafusion::error::Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let strings = |i: usize| -> datafusion::error::Result<StringArray> {
        let a = datafusion::arrow::compute::cast(&arrays[i], &DataType::Utf8)?;
        Ok(a.as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .unwrap_or_else(|| StringArray::new_null(a.len())))
    };
    let (text, pattern, escape) = (strings(0)?, strings(1)?, strings(2)?);
    let mut last: Option<(String, String, regex::Regex)> = None;
    let mut out = Vec::with_capacity(text.len());
    for i in 0..text.len() {
        if text.is_null(i) || pattern.is_null(i) || escape.is_null(i) {
            out.push(None);
            continue;
        }
        let (p, e) = (pattern.value(i), escape.value(i));
        if !matches!(&last, Some((lp, le, _)) if lp == p && le == e) {
            let re = like_regex(p, e, case_insensitive)
                .map_err(|why| DataFusionError::Execution(format!("LIKE ... ESCAPE: {why}")))?;
            last = Some((p.to_string(), e.to_string(), re));
        }
        let re = &last.as_ref().expect("set above").2;
        out.push(Some(re.is_match(text.value(i))));
    }
    let result = BooleanArray::from(out);
    Ok(
        if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?)
        } else {
            ColumnarValue::Array(Arc::new(result))
        },
    )
}

/// The regular expression a LIKE pattern with escape character `escape`
/// means: `%` any run of characters, `_` one character, the escape
/// character makes the next one literal ("" means none, as Postgres).
pub(super) fn like_regex(
    pattern: &str,
    escape: &str,
    case_insensitive: bool,
) -> Result<regex::Regex, String> {
    let mut chars = escape.chars();
    let escape = match (chars.next(), chars.next()) {
        (None, _) => None,
        (Some(c), None) => Some(c),
        _ => {
            return Err(format!(
                "the escape string must be one character, not {escape:?}"
            ))
        }
    };
    let mut re = String::from(if case_insensitive { "(?is)^" } else { "(?s)^" });
    let mut p = pattern.chars();
    while let Some(c) = p.next() {
        match c {
            c if Some(c) == escape => match p.next() {
                Some(next) => re.push_str(&regex::escape(&next.to_string())),
                None => return Err("the pattern ends with the escape character".into()),
            },
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| e.to_string())
}

/// `sql` with every `LIKE ... ESCAPE` turned into `like_escape(...)`, or
/// None when there is none (the text then goes on as the client sent it).
pub(super) fn rewrite(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let catalog_subquery = lower.contains("(select") && lower.contains("pg_");
    if !lower.contains("escape") && !catalog_subquery {
        return None;
    }
    let mut statements =
        datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    let _ = visit_expressions_mut(&mut statements, |e| {
        if let Expr::Subquery(query) = e {
            changed |= aggregate_catalog_subquery(query);
            return ControlFlow::Continue(());
        }
        if let Some(folded) = fold_case_into_subquery(e) {
            *e = folded;
            changed = true;
            return ControlFlow::Continue(());
        }
        let (negated, expr, pattern, escape, name) = match e {
            Expr::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: Some(escape),
            } => (*negated, expr, pattern, escape, "like_escape"),
            Expr::ILike {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: Some(escape),
            } => (*negated, expr, pattern, escape, "ilike_escape"),
            _ => return ControlFlow::<()>::Continue(()),
        };
        let escape = match &escape.value {
            Value::SingleQuotedString(s) => s.clone(),
            _ => return ControlFlow::Continue(()),
        };
        let arg = |e: Expr| FunctionArg::Unnamed(FunctionArgExpr::Expr(e));
        let call = call(
            name,
            vec![
                arg((**expr).clone()),
                arg((**pattern).clone()),
                arg(Expr::Value(Value::SingleQuotedString(escape).into())),
            ],
        );
        *e = if negated {
            Expr::UnaryOp {
                op: datafusion::sql::sqlparser::ast::UnaryOperator::Not,
                expr: Box::new(Expr::Nested(Box::new(call))),
            }
        } else {
            call
        };
        changed = true;
        ControlFlow::Continue(())
    });
    changed.then(|| {
        statements
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Aggregates which a scalar subquery's one column may already be.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "first_value",
    "last_value",
];

/// A scalar subquery over pg_catalog, `(SELECT x FROM pg_catalog.t WHERE
/// <correlated>)`, made `(SELECT max(x) ...)`: the catalog queries of
/// drivers (SQLAlchemy's columns) expect at most one row from it, which
/// Postgres checks as they run, while DataFusion plans a correlated scalar
/// subquery only when it is aggregated. The answer is the same for zero
/// or one row. Subqueries over chatlake's own tables are left alone.
fn aggregate_catalog_subquery(query: &mut datafusion::sql::sqlparser::ast::Query) -> bool {
    use datafusion::sql::sqlparser::ast::{GroupByExpr, SelectItem, SetExpr, TableFactor};
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    let over_catalog = select.from.iter().any(|t| {
        matches!(&t.relation, TableFactor::Table { name, .. }
            if name.to_string().to_ascii_lowercase().starts_with("pg_"))
    });
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    if !over_catalog || grouped || select.projection.len() != 1 {
        return false;
    }
    let expr = match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return false,
    };
    if let Expr::Function(f) = expr {
        let name = f.name.to_string().to_ascii_lowercase();
        if AGGREGATES.contains(&name.trim_start_matches("pg_catalog.")) {
            return false;
        }
    }
    let arg = FunctionArg::Unnamed(FunctionArgExpr::Expr(expr.clone()));
    *expr = call("max", vec![arg]);
    true
}

/// `CASE WHEN c THEN (SELECT max(x) FROM pg_catalog.t WHERE w) [ELSE NULL]
/// END` as `(SELECT max(x) FROM pg_catalog.t WHERE (c) AND (w))`: the same
/// answer (an aggregate over no rows is NULL), in the form DataFusion
/// plans (it does not plan a subquery inside CASE). Visited after the
/// subquery itself was aggregated.
fn fold_case_into_subquery(e: &Expr) -> Option<Expr> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, SetExpr};
    let Expr::Case {
        operand: None,
        conditions,
        else_result,
        ..
    } = e
    else {
        return None;
    };
    let else_null = match else_result.as_deref() {
        None => true,
        Some(Expr::Value(v)) => matches!(v.value, Value::Null),
        _ => false,
    };
    let [when] = conditions.as_slice() else {
        return None;
    };
    let Expr::Subquery(query) = &when.result else {
        return None;
    };
    let mut query = query.clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let aggregated = matches!(select.projection.as_slice(),
        [datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(Expr::Function(f))
        | datafusion::sql::sqlparser::ast::SelectItem::ExprWithAlias { expr: Expr::Function(f), .. }]
        if f.name.to_string().eq_ignore_ascii_case("max"));
    if !else_null || !aggregated {
        return None;
    }
    let condition = Expr::Nested(Box::new(when.condition.clone()));
    select.selection = Some(match select.selection.take() {
        Some(w) => Expr::BinaryOp {
            left: Box::new(condition),
            op: BinaryOperator::And,
            right: Box::new(Expr::Nested(Box::new(w))),
        },
        None => condition,
    });
    Some(Expr::Subquery(query))
}

/// `name(args)`.
fn call(name: &str, args: Vec<FunctionArg>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args,
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// datafusion-postgres's parser for the extended protocol, given the SQL
/// after [`rewrite`].
pub(super) struct Parser(pub(super) Arc<datafusion_postgres::Parser>);

#[async_trait]
impl QueryParser for Parser {
    type Statement = <datafusion_postgres::Parser as QueryParser>::Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match rewrite(sql) {
            Some(sql) => self.0.parse_sql(client, &sql, types).await,
            None => self.0.parse_sql(client, sql, types).await,
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.0.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.0.get_result_schema(stmt, column_format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_with_an_escape_character_means_what_postgres_means() {
        let m = |p: &str, e: &str, s: &str| like_regex(p, e, false).unwrap().is_match(s);
        // SQLAlchemy's schema filter: names starting "pg_", literally.
        assert!(m("pg/_%", "/", "pg_catalog"));
        assert!(!m("pg/_%", "/", "pgxcatalog"));
        assert!(!m("pg/_%", "/", "reporting"));
        assert!(m("a//b", "/", "a/b"));
        assert!(m("100/%", "/", "100%"));
        assert!(!m("100/%", "/", "1000"));
        assert!(m("a_c", "", "abc"));
        assert!(m("a.c%", "/", "a.c\nd"));
        assert!(!m("a.c", "/", "abc"));
        assert!(like_regex("ab/", "/", false).is_err());
        assert!(like_regex("ab", "//", false).is_err());
        assert!(like_regex("PG/_%", "/", true).unwrap().is_match("pg_toast"));
    }

    #[tokio::test]
    async fn json_build_object_builds_the_object() {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx
            .sql("SELECT json_build_object('a', 1, 'b', 'x', 'c', NULL, 'd', true, 'e', 2.5) AS j")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let j = batches[0].column(0);
        let j = datafusion::arrow::compute::cast(j, &DataType::Utf8).unwrap();
        let j = j.as_any().downcast_ref::<StringArray>().unwrap().value(0);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(j).unwrap(),
            serde_json::json!({"a": 1, "b": "x", "c": null, "d": true, "e": 2.5})
        );
    }

    #[test]
    fn only_like_with_escape_is_rewritten() {
        assert_eq!(rewrite("SELECT 1"), None);
        assert_eq!(rewrite("SELECT 'escape' LIKE 'e%'"), None);
        let sql = rewrite(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname NOT LIKE $1::VARCHAR || '%' ESCAPE '/' ORDER BY nspname",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE NOT (like_escape(nspname, $1::VARCHAR || '%', '/')) ORDER BY nspname"
        );
        // A catalog subquery is aggregated; one over chatlake's tables is not.
        assert_eq!(
            rewrite("SELECT (SELECT t.typname FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid) AS ty FROM pg_catalog.pg_attribute a").unwrap(),
            "SELECT (SELECT max(t.typname) FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid) AS ty FROM pg_catalog.pg_attribute a"
        );
        assert_eq!(
            rewrite("SELECT (SELECT count(*) FROM pg_catalog.pg_type) AS n"),
            None
        );
        assert_eq!(
            rewrite("SELECT (SELECT c.chat_id FROM socialintents.chats c WHERE c.chat_id = x.id) FROM pg_catalog.pg_class x"),
            None
        );
        assert!(rewrite("SELECT a ILIKE 'x/_' ESCAPE '/' FROM t")
            .unwrap()
            .contains("ilike_escape(a, 'x/_', '/')"));
    }
}
