//! Who may connect to `chatlake serve`: one user with a SCRAM-SHA-256
//! password (pgwire's SASL exchange, a handler per connection because the
//! exchange has state), or anyone on loopback when no password is set.
//! Every attempt is logged with the user and address, never the password.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::config::secret::Secret;

/// The one user's password, salted as SCRAM wants it.
#[derive(Debug)]
pub(super) struct OneUser {
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

/// Lets anyone in (loopback only, checked by [`super::validate`]).
pub(super) struct Open;

impl NoopStartupHandler for Open {}

/// The startup handler the options call for.
pub(super) enum Startup {
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

impl OneUser {
    /// The user and the salted form of the password (the password itself
    /// is not kept).
    pub(super) fn new(user: &str, password: &Secret) -> Arc<Self> {
        let salt: Vec<u8> = (0..16).map(|_| fastrand::u8(..)).collect();
        let salted = gen_salted_password(password.expose(), &salt, ITERATIONS);
        Arc::new(OneUser {
            user: user.to_string(),
            salt,
            salted,
        })
    }
}

/// A startup handler for one connection: SCRAM for `user`, or open
/// (loopback only, checked before listening).
pub(super) fn startup(user: Option<&Arc<OneUser>>) -> Startup {
    match user {
        Some(user) => {
            let mut scram = ScramAuth::new(user.clone());
            scram.set_iterations(ITERATIONS);
            Startup::Scram(
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(scram),
            )
        }
        None => Startup::Open(Open),
    }
}
