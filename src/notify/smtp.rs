//! Email channels: one message built with lettre (MIME, header and body
//! encodings are its business, not ours) and sent over SMTP, with STARTTLS
//! required, TLS from the first byte (rustls), or plain for a local relay.
//!
//! A report is a multipart message: a plain-text summary and an email-safe
//! HTML body (tables, inline styles, no script, no SVG) whose charts are
//! PNG images attached inline by Content-ID, plus the full report as an
//! HTML attachment ([`crate::report::email`]). Alerts and test messages are
//! plain text.
//!
//! Every send is bounded by [`SEND_TIMEOUT`] as a whole (lettre times out
//! only the connect), and reads at most [`READ_CAP`] bytes from the server:
//! one that answers slowly or never ends its reply can neither hang a run
//! nor grow its memory. The conversation is lettre's
//! (`AsyncSmtpConnection`), over a connection made here for that cap.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio_rustls::rustls;

use super::channels::Message;
pub use super::config::{Security, SmtpConfig};

/// Connecting (TCP and TLS) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole delivery (connect, greet, authenticate, send, quit).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The message `m` as email: multipart for a report (see the module
/// docs), plain text otherwise.
pub fn build(c: &SmtpConfig, m: &Message) -> Result<lettre::Message, String> {
    let mut b = lettre::Message::builder()
        .from(
            c.from
                .parse::<Mailbox>()
                .map_err(|e| format!("from: {e}"))?,
        )
        .subject(m.subject.clone())
        .date(m.at.into())
        .user_agent("chatlake".into());
    for to in &c.to {
        b = b.to(to.parse::<Mailbox>().map_err(|e| format!("to: {e}"))?);
    }
    let built = match &m.email {
        None => b.singlepart(SinglePart::plain(m.text.clone())),
        Some(e) => {
            let mut related = MultiPart::related().multipart(MultiPart::alternative_plain_html(
                m.text.clone(),
                e.html.clone(),
            ));
            for chart in &e.charts {
                related = related.singlepart(
                    Attachment::new_inline(chart.id.clone())
                        .body(chart.png.clone(), ContentType::parse("image/png").unwrap()),
                );
            }
            b.multipart(
                MultiPart::mixed().multipart(related).singlepart(
                    Attachment::new(e.report_name.clone())
                        .body(e.report.clone(), ContentType::TEXT_HTML),
                ),
            )
        }
    };
    built.map_err(|e| format!("building the message: {e}"))
}

/// Bytes a server may send over one connection: its replies to one
/// message are a few hundred bytes; a server that sends endlessly (one
/// reply line that never ends) is cut off here, before memory grows.
const READ_CAP: usize = 1 << 20;

/// The TCP connection, reading at most [`READ_CAP`] bytes in all. (lettre
/// reads a reply line whole before checking its length.)
#[derive(Debug)]
struct Capped {
    inner: tokio::net::TcpStream,
    left: usize,
}

impl tokio::io::AsyncRead for Capped {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the server sent more than {} KiB of replies",
                READ_CAP >> 10
            ))));
        }
        let n = buf.remaining().min(self.left);
        let mut limited = tokio::io::ReadBuf::new(buf.initialize_unfilled_to(n));
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let read = limited.filled().len();
        buf.advance(read);
        self.left -= read;
        poll
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Capped {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.peer_addr()
    }
}

/// [`Capped`] inside TLS from the first byte (`security = "tls"`).
#[derive(Debug)]
struct Wrapped(tokio_rustls::client::TlsStream<Capped>);

impl tokio::io::AsyncRead for Wrapped {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Wrapped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Wrapped {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// One SMTP conversation: connect, TLS as configured, EHLO, AUTH,
/// MAIL/RCPT/DATA, QUIT. Errors as people read them.
async fn converse(c: &SmtpConfig, message: &lettre::Message) -> Result<(), SmtpError> {
    let net = |e: std::io::Error| SmtpError::Io(e.to_string());
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((c.host.as_str(), c.port())),
    )
    .await
    .map_err(|_| {
        SmtpError::Io(format!(
            "no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))
    })?
    .map_err(net)?;
    let capped = Capped {
        inner: tcp,
        left: READ_CAP,
    };
    let stream: Box<dyn AsyncTokioStream> = match c.security {
        Security::Tls => {
            let name = rustls::pki_types::ServerName::try_from(c.host.clone())
                .map_err(|e| SmtpError::Io(format!("TLS server name: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(tls_config())
                .connect(name, capped)
                .await
                .map_err(|e| SmtpError::Io(format!("TLS: {e}")))?;
            Box::new(Wrapped(tls))
        }
        Security::Starttls | Security::None => Box::new(capped),
    };
    let hello = ClientId::default();
    let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &hello).await?;
    if c.security == Security::Starttls {
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(SmtpError::Io(
                "the server does not offer STARTTLS, which security = \"starttls\" requires".into(),
            ));
        }
        let tls = TlsParameters::new_rustls(c.host.clone())?;
        conn.starttls(tls, &hello).await?;
    }
    if let (Some(user), Some(pass)) = (&c.username, &c.password) {
        let creds = Credentials::new(user.expose().to_string(), pass.expose().to_string());
        conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
            .await?;
    }
    conn.send(message.envelope(), &message.formatted()).await?;
    // The message is accepted; a failed goodbye does not change that.
    let _ = conn.quit().await;
    Ok(())
}

/// The Mozilla roots, as lettre and reqwest use them (webpki-roots).
fn tls_config() -> std::sync::Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            std::sync::Arc::new(
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        })
        .clone()
}

enum SmtpError {
    /// Connecting, TLS or reading failed: worth another try.
    Io(String),
    Smtp(lettre::transport::smtp::Error),
}

impl From<lettre::transport::smtp::Error> for SmtpError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        SmtpError::Smtp(e)
    }
}

/// What one attempt came to: whether to try again, and the error.
pub struct Attempt {
    pub retry: bool,
    pub error: Option<String>,
}

/// One attempt to send `message` (already built) through `c`.
pub async fn send_once(c: &SmtpConfig, message: &lettre::Message) -> Attempt {
    let at = format!("SMTP {}:{}", c.host, c.port());
    match tokio::time::timeout(SEND_TIMEOUT, converse(c, message)).await {
        Ok(Ok(())) => Attempt {
            retry: false,
            error: None,
        },
        Ok(Err(SmtpError::Io(e))) => Attempt {
            retry: true,
            error: Some(format!("{at}: {e}")),
        },
        Ok(Err(SmtpError::Smtp(e))) => Attempt {
            // A permanent refusal (5xx: bad address, authentication
            // failed) will not pass on a second try; the rest may.
            retry: !e.is_permanent(),
            error: Some(format!("{at}: {e}")),
        },
        Err(_) => Attempt {
            retry: true,
            error: Some(format!(
                "{at}: no answer within {} s",
                SEND_TIMEOUT.as_secs()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{Security, SmtpConfig};

    fn config(edit: impl FnOnce(&mut SmtpConfig)) -> Result<(), String> {
        let mut c = SmtpConfig {
            host: "smtp.example.com".into(),
            port: None,
            security: Security::Starttls,
            username: None,
            password: None,
            from: "chatlake <reports@example.com>".into(),
            to: vec!["lead@example.com".into()],
        };
        edit(&mut c);
        c.validate("leads")
    }

    #[test]
    fn an_email_channel_is_checked_before_anything_is_sent() {
        assert_eq!(config(|_| {}), Ok(()));
        type Edit = fn(&mut SmtpConfig);
        let cases: [(Edit, &str); 6] = [
            (|c| c.host = "smtp://smtp.example.com".into(), "host"),
            (|c| c.port = Some(0), "port"),
            (|c| c.to.clear(), "to: at least one"),
            (
                |c| c.to = vec!["not an address".into()],
                "to \"not an address\"",
            ),
            (|c| c.from = "@".into(), "from"),
            (
                |c| c.username = Some(crate::config::secret::Secret::new("user-x")),
                "both username and password",
            ),
        ];
        for (edit, want) in cases {
            let err = config(edit).unwrap_err();
            assert!(
                err.starts_with("[channels.leads]") && err.contains(want),
                "{err}"
            );
        }
        let port = |s| {
            SmtpConfig {
                security: s,
                ..serde_json::from_value(
                    serde_json::json!({"host": "h", "from": "a@b.c", "to": ["d@e.f"]}),
                )
                .unwrap()
            }
            .port()
        };
        assert_eq!(
            (
                port(Security::Starttls),
                port(Security::Tls),
                port(Security::None)
            ),
            (587, 465, 25)
        );
    }
}
