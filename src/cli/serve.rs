//! `chatlake serve`: the warehouse over the Postgres protocol (see
//! [`crate::serve`]) until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Args;

use super::{existing_warehouse, WarehouseArg};
use crate::config::secret::Secret;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub wh: WarehouseArg,
    /// Address to listen on. Without CHATLAKE_SERVE_PASSWORD only a
    /// loopback address is accepted.
    #[arg(long, default_value = "127.0.0.1:5433")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Who may connect and the limits, for `chatlake serve` and for the
/// listener of `chatlake schedule --serve`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The one user clients log in as (password: CHATLAKE_SERVE_PASSWORD,
    /// checked with SCRAM-SHA-256).
    #[arg(long, default_value = "chatlake")]
    pub user: String,
    /// TLS certificate chain (PEM), with --tls-key: clients can then use
    /// sslmode=require.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS private key (PEM, PKCS#8 or RSA), with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Connections served at once; more are closed at once.
    #[arg(long, default_value_t = 32)]
    pub max_connections: usize,
    /// Memory all running queries may hold together, in MiB (sorts and
    /// joins spill to disk where they can; a query that still needs more
    /// fails alone, with a clear error).
    #[arg(long, default_value_t = 2048)]
    pub memory_limit_mb: usize,
    /// Memory one query may hold, in MiB, within --memory-limit-mb.
    #[arg(long, default_value_t = 512)]
    pub query_memory_mb: usize,
    /// A statement running longer is stopped (SQLSTATE 57014); a client's
    /// SET statement_timeout may shorten it. 0: no limit.
    #[arg(long, default_value_t = 300)]
    pub statement_timeout_secs: u64,
    /// A connection that runs nothing for this long is closed. 0: never.
    #[arg(long, default_value_t = 3600)]
    pub idle_timeout_secs: u64,
}

impl ServerArgs {
    /// The server's options, listening on `listen`; the password from
    /// CHATLAKE_SERVE_PASSWORD.
    pub fn options(self, listen: std::net::SocketAddr) -> crate::serve::Options {
        let password = std::env::var("CHATLAKE_SERVE_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .map(Secret::new);
        crate::serve::Options {
            listen,
            user: self.user,
            password,
            tls: self.tls_cert.zip(self.tls_key),
            max_connections: self.max_connections,
            memory_limit: self.memory_limit_mb.saturating_mul(1 << 20),
            query_memory_limit: self.query_memory_mb.saturating_mul(1 << 20),
            statement_timeout: seconds(self.statement_timeout_secs),
            idle_timeout: seconds(self.idle_timeout_secs),
        }
    }
}

/// What the server says once it listens: where, for whom, how.
pub fn listening(
    wh: &crate::sink::Warehouse,
    o: &crate::serve::Options,
    addr: std::net::SocketAddr,
) {
    let auth = if o.password.is_some() {
        format!("user {}, SCRAM-SHA-256", o.user)
    } else {
        "no password (loopback only)".to_string()
    };
    crate::output::note(&format!(
        "serving {} read-only on postgres://{}@{addr}/datafusion ({auth}{}); Ctrl-C stops",
        wh.url_of(wh.root()).trim_end_matches('/'),
        o.user,
        if o.tls.is_some() { ", TLS" } else { "" }
    ))
}

pub async fn execute(args: ServeArgs) -> Result<ExitCode> {
    let wh = existing_warehouse(args.wh.warehouse, None)?;
    let options = args.server.options(args.listen);
    let stop = super::stop_on_signals("stopping the server (queries in progress end with it)");
    let stopped = async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    crate::serve::serve(
        &wh,
        &options,
        |addr| listening(&wh, &options, addr),
        stopped,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `n` seconds, or None for 0 (no limit).
fn seconds(n: u64) -> Option<std::time::Duration> {
    (n > 0).then(|| std::time::Duration::from_secs(n))
}
