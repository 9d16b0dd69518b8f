//! What keeps one client from taking `chatlake serve` from the others:
//!
//! - **Memory per query:** each connection plans in a session of its own
//!   whose memory pool ([`QueryPool`]) lets one query hold at most
//!   `--query-memory-mb`, inside the pool all queries share
//!   (`--memory-limit-mb`). Sorts, aggregations and joins spill to disk
//!   where DataFusion can; a query that still needs more fails alone with
//!   "Resources exhausted", and everyone else's queries go on.
//! - **Statement timeout and cancel request:** [`Guarded`] wraps
//!   datafusion-postgres's query handler and watches a query until its last
//!   row is sent, not only while it is planned (which is all the handler
//!   itself bounds): past the statement timeout, or on the protocol's cancel
//!   request ([`Registry`] finds the connection by its key), the query is
//!   dropped, which stops DataFusion's work, and the client gets SQLSTATE
//!   57014 as Postgres sends it.
//!   [`Guarded`] also hands the SQL to [`super::compat`] before it is planned.
//! - **Idle timeout:** [`idle`] resolves once a connection has run nothing
//!   for `--idle-timeout-secs`; the server then closes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::DfSessionService;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::query::Namer;

/// The memory pool of one connection's queries: at most `limit` bytes, taken
/// from the server's shared pool.
#[derive(Debug)]
pub(super) struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chatlake query pool ({} of {} bytes, within {})",
            self.used.load(Ordering::Relaxed),
            self.limit,
            self.shared
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "chatlake_query_pool"
    }
    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer)
    }
    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::SeqCst);
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::SeqCst);
    }
    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        let before = self.used.fetch_add(additional, Ordering::SeqCst);
        if before.saturating_add(additional) > self.limit {
            self.used.fetch_sub(additional, Ordering::SeqCst);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "this query needs more than the {} MiB one query may use \
                 (chatlake serve --query-memory-mb): {} could not grow by {} KiB",
                self.limit >> 20,
                reservation.consumer().name(),
                additional.div_ceil(1024)
            )));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }
    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// A session for one connection: the server's tables, views, functions and
/// pg_catalog (shared, not copied), with a memory pool of its own of at most
/// `query_limit` bytes inside the server's.
pub(super) fn connection_session(
    server: &SessionContext,
    query_limit: usize,
) -> Result<SessionContext> {
    let base = server.runtime_env();
    let pool = Arc::new(QueryPool {
        shared: Arc::clone(&base.memory_pool),
        limit: query_limit,
        used: AtomicUsize::new(0),
    });
    let runtime = RuntimeEnvBuilder::from_runtime_env(&base)
        .with_memory_pool(pool)
        .build_arc()
        .map_err(|e| Error::Internal(format!("serve: a connection's session: {e}")))?;
    let state = SessionStateBuilder::new_from_existing(server.state())
        .with_runtime_env(runtime)
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// Why a query was stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Cancelled,
    TimedOut(Duration),
}

impl Stop {
    /// The error the client gets, as Postgres words it (SQLSTATE 57014).
    fn error(self) -> PgWireError {
        match self {
            Stop::Cancelled => PgWireError::QueryCanceled,
            Stop::TimedOut(_) => PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "57014".into(),
                "canceling statement due to statement timeout".into(),
            ))),
        }
    }
}

/// One connection's state as the limits see it.
pub(super) struct Connection {
    peer: SocketAddr,
    /// Bumped by every cancel request for this connection.
    cancels: watch::Sender<u64>,
    /// Queries whose rows are still being sent.
    busy: AtomicUsize,
    /// When the connection last finished a query (or was opened).
    last: Mutex<Instant>,
    /// The (pid, secret key) the client got at login, once known.
    key: OnceLock<CancelKey>,
    registry: Arc<Registry>,
}

impl Connection {
    pub(super) fn new(peer: SocketAddr, registry: &Arc<Registry>) -> Arc<Connection> {
        Arc::new(Connection {
            peer,
            cancels: watch::Sender::new(0),
            busy: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
            key: OnceLock::new(),
            registry: Arc::clone(registry),
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(key) = self.key.get() {
            self.registry.lock().remove(key);
        }
    }
}

/// What a client cancels with: the process id and secret key it got at login.
type CancelKey = (i32, Vec<u8>);

/// The open connections by the key their clients cancel with.
#[derive(Default)]
pub(super) struct Registry(Mutex<HashMap<CancelKey, Weak<Connection>>>);

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CancelKey, Weak<Connection>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl CancelHandler for Registry {
    /// Stops the query running on the connection the request names (pid and
    /// secret key must both match); nothing happens when none runs.
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let found = self.lock().get(&key).and_then(Weak::upgrade);
        match found {
            Some(conn) => {
                tracing::info!(connection = %conn.peer, "cancel request");
                conn.cancels.send_modify(|n| *n += 1);
            }
            None => tracing::info!("cancel request for no open connection: ignored"),
        }
    }
}

/// Counts a query as running until its last row is sent (it is held by the
/// row stream).
struct Busy(Arc<Connection>);

impl Busy {
    fn new(conn: &Arc<Connection>) -> Busy {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Resolves once `conn` has run nothing for `limit`.
pub(super) async fn idle(conn: &Connection, limit: Duration) {
    loop {
        let wait = if conn.busy.load(Ordering::SeqCst) > 0 {
            limit
        } else {
            let last = *conn.last.lock().unwrap_or_else(|p| p.into_inner());
            limit.saturating_sub(last.elapsed())
        };
        if wait.is_zero() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// The key metadata datafusion-postgres keeps a session's
/// `SET statement_timeout` under, in milliseconds.
const CLIENT_TIMEOUT: &str = "statement_timeout_ms";

/// The timeout a statement runs under: the client's `SET statement_timeout`
/// when it is shorter than the server's, else the server's.
fn statement_timeout(server: Option<Duration>, client: Option<Duration>) -> Option<Duration> {
    match (server, client) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, c) => s.or(c),
    }
}

/// datafusion-postgres's query handler, with the statement timeout and the
/// cancel request applied until the last row is sent.
pub(super) struct Guarded {
    service: Arc<DfSessionService>,
    /// The service's parser, after [`super::compat::rewrite`].
    parser: Arc<super::compat::Parser>,
    conn: Arc<Connection>,
    /// The server's statement timeout (`--statement-timeout-secs`).
    timeout: Option<Duration>,
    /// Names the file behind an older file's error.
    files: Namer,
}

/// What stops one query, shared by its row streams.
type Stopper = Shared<BoxFuture<'static, Stop>>;

impl Guarded {
    pub(super) fn new(
        service: Arc<DfSessionService>,
        conn: Arc<Connection>,
        timeout: Option<Duration>,
        files: Namer,
    ) -> Guarded {
        let parser = Arc::new(super::compat::Parser(service.query_parser()));
        Guarded {
            service,
            parser,
            conn,
            timeout,
            files,
        }
    }

    /// Starts watching a query: it counts as busy, and a cancel request or
    /// its timeout from now on stops it.
    fn begin<C: ClientInfo + ?Sized>(&self, client: &C) -> (Busy, Stopper) {
        self.conn.key.get_or_init(|| {
            let (pid, secret) = client.pid_and_secret_key();
            let key = (pid, secret.to_bytes().to_vec());
            self.conn
                .registry
                .lock()
                .insert(key.clone(), Arc::downgrade(&self.conn));
            key
        });
        let client_timeout = client
            .metadata()
            .get(CLIENT_TIMEOUT)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let timeout = statement_timeout(self.timeout, client_timeout);
        let mut cancels = self.conn.cancels.subscribe();
        let seen = *cancels.borrow_and_update();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let peer = self.conn.peer;
        let stop = async move {
            let cancelled = async {
                if cancels.wait_for(|n| *n != seen).await.is_err() {
                    // The connection is gone: nobody is left to cancel.
                    futures::future::pending::<()>().await;
                }
            };
            let why = match (deadline, timeout) {
                (Some(deadline), Some(timeout)) => tokio::select! {
                    _ = cancelled => Stop::Cancelled,
                    _ = tokio::time::sleep_until(deadline) => Stop::TimedOut(timeout),
                },
                _ => {
                    cancelled.await;
                    Stop::Cancelled
                }
            };
            match why {
                Stop::Cancelled => tracing::info!(connection = %peer, "statement cancelled"),
                Stop::TimedOut(t) => tracing::info!(
                    connection = %peer,
                    timeout_ms = t.as_millis() as u64,
                    "statement timed out"
                ),
            }
            why
        };
        (Busy::new(&self.conn), stop.boxed().shared())
    }
}

/// `response` with its rows cut off by `stop` (an error row, then the end)
/// and counted busy until the last is sent.
fn watched(response: Response, busy: &Arc<Busy>, stop: &Stopper, files: &Namer) -> Response {
    let Response::Query(mut query) = response else {
        return response;
    };
    struct Rows {
        rows: datafusion_postgres::pgwire::api::results::SendableRowStream,
        stop: Stopper,
        _busy: Arc<Busy>,
        done: bool,
        files: Namer,
    }
    let state = Rows {
        rows: std::mem::replace(&mut query.data_rows, futures::stream::empty().boxed()),
        stop: stop.clone(),
        _busy: Arc::clone(busy),
        done: false,
        files: files.clone(),
    };
    query.data_rows = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        tokio::select! {
            biased;
            why = s.stop.clone() => {
                s.done = true;
                Some((Err(why.error()), s))
            }
            row = s.rows.next() => match row {
                Some(Err(e)) => {
                    let e = named(&s.files, out_of_memory(e)).await;
                    Some((Err(e), s))
                }
                row => row.map(|row| (row, s)),
            },
        }
    })
    .boxed();
    Response::Query(query)
}

/// An error about a file from an older chatlake, with the file named as
/// `chatlake query` names it (see query::older_files); others pass.
async fn named(files: &Namer, e: PgWireError) -> PgWireError {
    let text = e.to_string();
    let with_file = files.name_in(text.clone()).await;
    if with_file == text {
        return e;
    }
    let mut info = ErrorInfo::from(e);
    info.message = with_file;
    PgWireError::UserError(Box::new(info))
}

/// A query stopped by a memory limit answers as Postgres does when out of
/// memory (SQLSTATE 53200), with DataFusion's message; other errors pass.
fn out_of_memory(e: PgWireError) -> PgWireError {
    let exhausted = match &e {
        PgWireError::ApiError(inner) => inner
            .downcast_ref::<DataFusionError>()
            .map(|d| matches!(d.find_root(), DataFusionError::ResourcesExhausted(_)))
            .unwrap_or(false),
        _ => false,
    };
    if !exhausted {
        return e;
    }
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "53200".into(),
        e.to_string(),
    )))
}

#[async_trait]
impl SimpleQueryHandler for Guarded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let (busy, stop) = self.begin(client);
        let rewritten = super::compat::rewrite(query);
        let query = rewritten.as_deref().unwrap_or(query);
        let responses = tokio::select! {
            responses = SimpleQueryHandler::do_query(&*self.service, client, query) => match responses {
                Ok(r) => r,
                Err(e) => return Err(named(&self.files, e).await),
            },
            why = stop.clone() => return Err(why.error()),
        };
        let busy = Arc::new(busy);
        Ok(responses
            .into_iter()
            .map(|r| watched(r, &busy, &stop, &self.files))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Guarded {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = super::compat::Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let (busy, stop) = self.begin(client);
        let response = tokio::select! {
            response = ExtendedQueryHandler::do_query(&*self.service, client, portal, max_rows) => match response {
                Ok(r) => r,
                Err(e) => return Err(named(&self.files, e).await),
            },
            why = stop.clone() => return Err(why.error()),
        };
        Ok(watched(response, &Arc::new(busy), &stop, &self.files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shorter_timeout_wins() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(statement_timeout(s(300), None), s(300));
        assert_eq!(statement_timeout(s(300), s(5)), s(5));
        assert_eq!(statement_timeout(s(300), s(900)), s(300));
        assert_eq!(statement_timeout(None, s(5)), s(5));
        assert_eq!(statement_timeout(None, None), None);
    }

    #[test]
    fn one_query_may_hold_at_most_its_limit_of_the_shared_pool() {
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(100 << 20));
        let pool = |limit| -> Arc<dyn MemoryPool> {
            Arc::new(QueryPool {
                shared: Arc::clone(&shared),
                limit,
                used: AtomicUsize::new(0),
            })
        };
        let (a, b) = (pool(10 << 20), pool(95 << 20));
        let ra = MemoryConsumer::new("a").register(&a);
        ra.try_grow(8 << 20).unwrap();
        let err = ra.try_grow(4 << 20).unwrap_err().to_string();
        assert!(err.contains("--query-memory-mb"), "{err}");
        assert_eq!((a.reserved(), shared.reserved()), (8 << 20, 8 << 20));
        // The other query is bounded by what is left of the shared pool.
        let rb = MemoryConsumer::new("b").register(&b);
        assert!(rb.try_grow(93 << 20).is_err());
        assert_eq!(shared.reserved(), 8 << 20);
        rb.try_grow(90 << 20).unwrap();
        drop(ra);
        assert_eq!((a.reserved(), shared.reserved()), (0, 90 << 20));
    }
}
