//! `chatlake serve`: the warehouse over the Postgres wire protocol, for the
//! tools analysts build dashboards in (Metabase, Superset, Grafana, DBeaver,
//! psql). The protocol is pgwire's and the query handling
//! datafusion-postgres's (with its pg_catalog, which the tools' catalog
//! queries read); what is chatlake's here is the session (every table and
//! reporting view, as `chatlake query` has them), who may connect, what
//! they may run and for how long:
//!
//! - [`auth`]: SCRAM-SHA-256 for one user (`--user`, default `chatlake`)
//!   with the password from `CHATLAKE_SERVE_PASSWORD`. Without a password
//!   the server listens only on a loopback address, and says so. Every
//!   attempt is logged (user and address, never the password).
//! - [`read_only`]: queries, EXPLAIN, SHOW, session SETs and transaction
//!   statements run; anything that would change data or the server (DDL,
//!   DML, COPY, a `SET datafusion.*`) is refused with a clear message.
//! - [`compat`]: the functions and syntax clients ask for on connecting
//!   that DataFusion does not have as Postgres does.
//! - [`limits`]: memory per query within a pool shared by all, a statement
//!   timeout, the cancel request, an idle timeout; and here, at most
//!   `--max-connections` at once (more are closed).
//! - **Fresh:** file listings are not cached, so a partition a run commits
//!   is seen by the next query on an open connection, never half-written.
//!
//! Errors are logged with their SQLSTATE only: a message can quote the
//! query's literals (an email address in a WHERE clause), and the client
//! has it already.

mod auth;
mod compat;
mod limits;
mod read_only;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};
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
    /// Memory one query may hold, in bytes (at most `memory_limit`).
    pub query_memory_limit: usize,
    /// The longest a statement may run (a client's `SET statement_timeout`
    /// may shorten it, not lengthen it); None: no limit.
    pub statement_timeout: Option<Duration>,
    /// A connection that runs nothing for this long is closed; None: never.
    pub idle_timeout: Option<Duration>,
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
    if o.query_memory_limit == 0 || o.query_memory_limit > o.memory_limit {
        return Err(format!(
            "serve: --query-memory-mb must be between 1 and --memory-limit-mb ({} MiB)",
            o.memory_limit >> 20
        ));
    }
    Ok(())
}

/// Logs what the server answers with an error, by SQLSTATE (the message
/// can quote the query's values; the client has it).
struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        // pgwire turns every error into the ErrorInfo the client gets; doing
        // it here gives the SQLSTATE without reading the message.
        let taken = std::mem::replace(error, PgWireError::QueryCanceled);
        let info = ErrorInfo::from(taken);
        let code = info.code.clone();
        *error = PgWireError::UserError(Box::new(info));
        tracing::info!(from = %client.socket_addr(), sqlstate = %code, "answered with an error");
    }
}

/// What every connection shares.
struct Server {
    /// The session every connection's own is made from.
    session: SessionContext,
    hooks: Vec<Arc<dyn QueryHook>>,
    /// The password's SCRAM form, or None (loopback only).
    user: Option<Arc<auth::OneUser>>,
    cancels: Arc<limits::Registry>,
    options: Options,
    /// Names the file behind an older file's error (query::older_files).
    files: crate::query::Namer,
}

/// The handlers of one connection (pgwire asks for them once per
/// connection).
struct Handlers {
    query: Arc<limits::Guarded>,
    startup: Arc<auth::Startup>,
    cancels: Arc<limits::Registry>,
}

impl Server {
    fn connection(&self, conn: &Arc<limits::Connection>) -> Result<Handlers> {
        let session = limits::connection_session(&self.session, self.options.query_memory_limit)?;
        Ok(Handlers {
            query: Arc::new(limits::Guarded::new(
                Arc::new(DfSessionService::new_with_hooks(
                    Arc::new(session),
                    self.hooks.clone(),
                )),
                Arc::clone(conn),
                self.options.statement_timeout,
                self.files.clone(),
            )),
            startup: Arc::new(auth::startup(self.user.as_ref())),
            cancels: Arc::clone(&self.cancels),
        })
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        self.query.clone()
    }
    fn extended_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        self.query.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.cancels.clone()
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
    let ctx: SessionContext = (*session).clone();
    datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(
        &ctx,
        "datafusion",
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| Error::Internal(format!("pg_catalog: {e}")))?;
    compat::register(&ctx);
    let server = Arc::new(Server {
        session: ctx,
        hooks: vec![
            Arc::new(read_only::ReadOnly),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ],
        user: o.password.as_ref().map(|p| auth::OneUser::new(&o.user, p)),
        cancels: Arc::new(limits::Registry::default()),
        options: o.clone(),
        files: session.older_files(),
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
        let conn = limits::Connection::new(peer, &server.cancels);
        let handlers = match server.connection(&conn) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(from = %peer, error = %e, "connection refused");
                continue;
            }
        };
        let (tls, idle_timeout) = (tls.clone(), o.idle_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let idle = async {
                match idle_timeout {
                    Some(limit) => limits::idle(&conn, limit).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                ended = datafusion_postgres::pgwire::tokio::process_socket(socket, tls, handlers) => {
                    if let Err(e) = ended {
                        tracing::debug!(from = %peer, error = %e, "connection ended with an error");
                    }
                }
                _ = idle => tracing::info!(
                    from = %peer,
                    idle_timeout_s = idle_timeout.unwrap_or_default().as_secs(),
                    "connection closed: idle"
                ),
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
            query_memory_limit: 1 << 29,
            statement_timeout: None,
            idle_timeout: None,
        };
        assert!(validate(&o("127.0.0.1:5433", None)).is_ok());
        assert!(validate(&o("[::1]:5433", None)).is_ok());
        let err = validate(&o("0.0.0.0:5433", None)).unwrap_err();
        assert!(err.contains("CHATLAKE_SERVE_PASSWORD"), "{err}");
        assert!(validate(&o("0.0.0.0:5433", Some("pw-long-enough"))).is_ok());
    }
}
