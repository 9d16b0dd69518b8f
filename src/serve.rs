//! `chatlake serve`: the warehouse over the Postgres wire protocol, for the
//! tools analysts build dashboards in (Metabase, Superset, Grafana, DBeaver,
//! psql). The protocol is pgwire's and the query handling
//! datafusion-postgres's (with its pg_catalog, which the tools' catalog
//! queries read); what is chatlake's here is the session (every table and
//! reporting view, as `chatlake query` has them), who may connect, and what
//! they may run:
//!
//! - **Authentication:** SCRAM-SHA-256 for one user (`--user`, default
//!   `chatlake`) with the password from `CHATLAKE_SERVE_PASSWORD`. Without a
//!   password the server listens only on a loopback address, and says so.
//!   Every attempt is logged (user and address, never the password).
//! - **Read-only:** queries, EXPLAIN, SHOW, session SETs and transaction
//!   statements run; anything that would change data or the server (DDL,
//!   DML, COPY, a `SET datafusion.*`) is refused with a clear message.
//! - **Limits:** at most `--max-connections` at once (more are closed);
//!   the queries of the whole server share a memory pool of
//!   `--memory-limit-mb`, spilling sorts to disk where DataFusion can.
//! - **Fresh:** file listings are not cached, so a partition a run commits
//!   is seen by the next query on an open connection, never half-written.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::{DfSessionService, QueryHook};

use crate::config::secret::Secret;
use crate::error::{Error, Result};
use crate::sink::Warehouse;

/// How the server listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub user: String,
    pub password: Option<Secret>,
    /// PEM certificate chain and PKCS#8 key, for TLS (`sslmode=require`).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub max_connections: usize,
    /// Memory all running queries may hold together, in bytes.
    pub memory_limit: usize,
}

/// Checks the options before anything listens (pure).
pub fn validate(o: &Options) -> std::result::Result<(), String> {
    if o.password.is_none() && !o.listen.ip().is_loopback() {
        return Err(format!(
            "serve: refusing to listen on {} without a password: set CHATLAKE_SERVE_PASSWORD, \
             or listen on a loopback address such as 127.0.0.1",
            o.listen
        ));
    }
    if o.user.is_empty() {
        return Err("serve: --user is empty".into());
    }
    if o.max_connections == 0 {
        return Err("serve: --max-connections must be at least 1".into());
    }
    Ok(())
}

/// The one user's password, salted as SCRAM wants it.
#[derive(Debug)]
struct OneUser {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
}

/// SCRAM's iteration count (the RFC's minimum, as Postgres uses).
const ITERATIONS: usize = 4096;

// The trait's own signature (async_trait cannot take `LoginInfo<'_>`).
#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl AuthSource for OneUser {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or("");
        tracing::info!(user = %crate::config::secret::clean(user), from = %login.host(), "login attempt");
        if user != self.user {
            tracing::warn!(user = %crate::config::secret::clean(user), from = %login.host(), "login refused: unknown user");
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                format!("password authentication failed for user \"{user}\""),
            ))));
        }
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

/// Lets anyone in (loopback only, checked by [`validate`]).
struct Open {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// The startup handler the options call for.
enum Startup {
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
    Open(Open),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Scram(h) => h.on_startup(client, message).await,
            Startup::Open(h) => h.on_startup(client, message).await,
        }
    }
}

/// Refuses what is not reading.
struct ReadOnly;

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

/// Logs what the server answers with an error (failed logins included).
struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let message = crate::config::secret::clean(&error.to_string());
        tracing::info!(from = %client.socket_addr(), error = %message, "answered with an error");
    }
}

struct Handlers {
    session: Arc<DfSessionService>,
    /// The password's SCRAM form, or None (loopback only).
    user: Option<Arc<OneUser>>,
    connections: Arc<ConnectionManager>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    /// A startup handler for one connection (a SCRAM exchange has state).
    fn startup(&self) -> Startup {
        match &self.user {
            Some(user) => {
                let mut scram = ScramAuth::new(user.clone());
                scram.set_iterations(ITERATIONS);
                Startup::Scram(
                    SASLAuthStartupHandler::new(
                        Arc::new(DefaultServerParameterProvider::default()),
                    )
                    .with_scram(scram)
                    .with_connection_manager(self.connections.clone()),
                )
            }
            None => Startup::Open(Open {
                connections: self.connections.clone(),
            }),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
    }
    fn extended_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }
    /// Called once per connection.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(self.startup())
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<datafusion_postgres::pgwire::tokio::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
    };
    let bad =
        |p: &std::path::Path, why: String| Error::Usage(format!("serve: {}: {why}", p.display()));
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate chain ({e})")))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate in it".into()));
    }
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| bad(key, format!("not a PEM private key ({e})")))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| bad(cert, e.to_string()))?;
    Ok(datafusion_postgres::pgwire::tokio::TlsAcceptor::from(
        Arc::new(config),
    ))
}

/// Serves `wh` until `stop` resolves. Returns once the listener is closed
/// (connections in progress end with the process).
pub async fn serve(
    wh: &Warehouse,
    o: &Options,
    ready: impl FnOnce(SocketAddr),
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    validate(o).map_err(Error::Usage)?;
    let session = crate::query::server_session(wh, o.memory_limit).await?;
    let ctx: Arc<SessionContext> = Arc::new((*session).clone());
    datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(
        &ctx,
        "datafusion",
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| Error::Internal(format!("pg_catalog: {e}")))?;
    // version() as Postgres answers it: clients parse the number from it
    // (SQLAlchemy refuses a server whose version() it cannot read).
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "version",
        vec![],
        datafusion::arrow::datatypes::DataType::Utf8,
        datafusion::logical_expr::Volatility::Immutable,
        Arc::new(|_args: &[datafusion::logical_expr::ColumnarValue]| {
            Ok(datafusion::logical_expr::ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Utf8(Some(format!(
                    "PostgreSQL 16.0 (chatlake {}, Apache DataFusion 55, read-only)",
                    env!("CARGO_PKG_VERSION")
                ))),
            ))
        }),
    ));
    // to_regtype(name): drivers look up extension types with it (psycopg's
    // TypeInfo, for hstore); none exist here, so it is NULL, as Postgres
    // answers for a type it does not have.
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "to_regtype",
        vec![datafusion::arrow::datatypes::DataType::Utf8],
        datafusion::arrow::datatypes::DataType::Int32,
        datafusion::logical_expr::Volatility::Immutable,
        Arc::new(|_args: &[datafusion::logical_expr::ColumnarValue]| {
            Ok(datafusion::logical_expr::ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Int32(None),
            ))
        }),
    ));
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnly),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let connections = Arc::new(ConnectionManager::new());
    let user = o.password.as_ref().map(|p| {
        let salt: Vec<u8> = (0..16).map(|_| fastrand::u8(..)).collect();
        let salted = gen_salted_password(p.expose(), &salt, ITERATIONS);
        Arc::new(OneUser {
            user: o.user.clone(),
            salt,
            salted,
        })
    });
    let handlers = Arc::new(Handlers {
        session: Arc::new(DfSessionService::new_with_hooks(ctx, hooks)),
        user,
        cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
        connections,
    });
    let tls = match &o.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .map_err(|e| Error::io(format!("serve: listening on {}", o.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("serve: the listening address".to_string(), e))?;
    tracing::info!(
        listen = %addr,
        tls = tls.is_some(),
        password = o.password.is_some(),
        "serving the warehouse over the Postgres protocol (read-only)"
    );
    ready(addr);
    let limit = Arc::new(tokio::sync::Semaphore::new(o.max_connections));
    tokio::pin!(stop);
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(from = %peer, max = o.max_connections, "connection refused: too many connections");
            drop(socket);
            continue;
        };
        let (handlers, tls) = (handlers.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) =
                datafusion_postgres::pgwire::tokio::process_socket(socket, tls, handlers).await
            {
                tracing::debug!(from = %peer, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_password_only_loopback_is_served() {
        let o = |listen: &str, password: Option<&str>| Options {
            listen: listen.parse().unwrap(),
            user: "chatlake".into(),
            password: password.map(Secret::new),
            tls: None,
            max_connections: 8,
            memory_limit: 1 << 30,
        };
        assert!(validate(&o("127.0.0.1:5433", None)).is_ok());
        assert!(validate(&o("[::1]:5433", None)).is_ok());
        let err = validate(&o("0.0.0.0:5433", None)).unwrap_err();
        assert!(err.contains("CHATLAKE_SERVE_PASSWORD"), "{err}");
        assert!(validate(&o("0.0.0.0:5433", Some("pw-long-enough"))).is_ok());
    }

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
