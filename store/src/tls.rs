//! TLS on the store's two links (rustls, ring; no OpenSSL), with etcd's model:
//! the client URLs serve a certificate and, under `--client-cert-auth`, ask
//! clients for one signed by `--trusted-ca-file`; the peer URLs always ask
//! (peer links are mutually authenticated whenever they use TLS). A host dials
//! other members' URLs of either link with the same files: it trusts the
//! link's CA and presents the link's certificate.
//!
//! An `https://` URL switches TLS on for that listener or connection; which
//! files go with which link is the caller's to check (the CLI exits 2 on a
//! mismatch). Refused handshakes are logged with the link, the URL and the
//! remote address, and why: not TLS at all, no certificate, an untrusted,
//! expired or wrongly named one.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::conn::{Conn, Incoming};

/// How long a client may take over its handshake before it is dropped: one
/// that sends nothing must not hold a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes done and waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// A link's certificate files, by etcd's flags (`--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`, and the `--peer-` ones).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This host's certificate (PEM; its chain may follow it).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The CA that signs the other side's certificates (PEM).
    pub trusted_ca_file: Option<PathBuf>,
    /// Ask every client for a certificate signed by `trusted_ca_file`.
    pub client_cert_auth: bool,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        *self == TlsFiles::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key in it", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
}

/// One link's TLS, loaded: how this host serves it (when it has a
/// certificate) and how it dials it.
#[derive(Clone, Debug)]
pub struct LinkTls {
    serve: Option<Arc<ServerConfig>>,
    dial: Arc<ClientConfig>,
}

/// The TLS of both links; `None` where that link is plain.
#[derive(Clone, Debug, Default)]
pub struct Links {
    pub client: Option<LinkTls>,
    pub peer: Option<LinkTls>,
}

/// Which of the two links, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Client,
    Peer,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Client => "client",
            Link::Peer => "peer",
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// gRPC runs over HTTP/2 only: what a member dials.
fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec()]
}

/// What a member serves: HTTP/2 first (gRPC, curl), and HTTP/1.1 for the
/// HTTP face's clients (load balancers, Python's urllib3) that offer only it.
fn served_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |e: rustls::pki_types::pem::Error| match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
        e => TlsError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// Who the client certificate at `path` names: the common name of a user
/// (`root`), or `agent` for an agent's (as the server sees its holder).
pub fn certificate_name(path: &Path) -> Result<String, TlsError> {
    let chain = certificates(path)?;
    match crate::certs::identity_of_certificate(&chain[0]) {
        Some(mgmt_core::kv::auth::Identity::User(name)) => Ok(name),
        Some(_) => Ok("agent".into()),
        None => Err(TlsError::Invalid {
            path: path.to_path_buf(),
            reason: "no common name".into(),
        }),
    }
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => TlsError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The certificate and key, both given or neither.
fn identity(
    files: &TlsFiles,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => Ok(Some((certificates(cert)?, private_key(key)?))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsError::Config(
            "a certificate file needs its key file".into(),
        )),
        (None, Some(_)) => Err(TlsError::Config(
            "a key file needs its certificate file".into(),
        )),
    }
}

fn invalid(files: &TlsFiles, e: rustls::Error) -> TlsError {
    TlsError::Invalid {
        path: files.cert_file.clone().unwrap_or_default(),
        reason: e.to_string(),
    }
}

impl LinkTls {
    /// The client link: serves `cert_file` when given (asking clients for a
    /// certificate under `client_cert_auth`); dials trusting
    /// `trusted_ca_file`, presenting `cert_file` when given.
    pub fn client(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::load(files, files.client_cert_auth)
    }

    /// The peer link: serves and dials with the certificate, and always asks
    /// the other side for one signed by `trusted_ca_file`.
    pub fn peer(files: &TlsFiles) -> Result<Self, TlsError> {
        if files.cert_file.is_none() || files.trusted_ca_file.is_none() {
            return Err(TlsError::Config(
                "TLS on peer links needs --peer-cert-file, --peer-key-file and \
                 --peer-trusted-ca-file: peers authenticate each other"
                    .into(),
            ));
        }
        Self::load(files, true)
    }

    fn load(files: &TlsFiles, ask_clients: bool) -> Result<Self, TlsError> {
        let roots = files.trusted_ca_file.as_deref().map(roots).transpose()?;
        let identity = identity(files)?;
        let serve = match &identity {
            None => None,
            Some((chain, key)) => {
                let builder = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| invalid(files, e))?;
                let builder = match (&roots, ask_clients) {
                    (Some(roots), true) => builder.with_client_cert_verifier(
                        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                            .build()
                            .map_err(|e| TlsError::Config(e.to_string()))?,
                    ),
                    (None, true) => {
                        return Err(TlsError::Config(
                            "--client-cert-auth needs --trusted-ca-file: the CA that signs \
                             the clients' certificates"
                                .into(),
                        ));
                    }
                    (_, false) => builder.with_no_client_auth(),
                };
                let mut config = builder
                    .with_single_cert(chain.clone(), key.clone_key())
                    .map_err(|e| invalid(files, e))?;
                config.alpn_protocols = served_alpn();
                Some(Arc::new(config))
            }
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(files, e))?;
        let builder = match roots {
            Some(roots) => builder.with_root_certificates(roots),
            None => builder.with_root_certificates(RootCertStore::empty()),
        };
        let mut dial = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(files, e))?,
            None => builder.with_no_client_auth(),
        };
        dial.alpn_protocols = alpn();
        Ok(LinkTls {
            serve,
            dial: Arc::new(dial),
        })
    }

    /// Can this host serve the link over TLS (it has a certificate)?
    pub fn serves(&self) -> bool {
        self.serve.is_some()
    }
}

impl Links {
    pub fn get(&self, link: Link) -> Option<&LinkTls> {
        match link {
            Link::Client => self.client.as_ref(),
            Link::Peer => self.peer.as_ref(),
        }
    }
}

/// Why a handshake failed, in an operator's words where rustls's are terse.
/// Whether a failed handshake only ended because the client closed or reset
/// the connection, without any TLS error on either side.
fn abandoned(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe
    ) && e
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_none()
}

fn refusal(e: &io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    use rustls::CertificateError as C;
    match tls {
        rustls::Error::InvalidMessage(_) => {
            format!("not a TLS client (plaintext HTTP on a TLS port?): {tls}")
        }
        rustls::Error::NoCertificatesPresented => "the client presented no certificate".into(),
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "certificate not signed by the trusted CA".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "certificate expired".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "certificate not valid yet".into()
        }
        // A CA of the same name as the trusted one, but another key.
        rustls::Error::InvalidCertificate(C::BadSignature) => {
            "certificate not signed by the trusted CA (a CA of its name, not its key)".into()
        }
        other => other.to_string(),
    }
}

/// The TLS server side of a listener: every accepted connection's handshake
/// runs on a task of its own (a slow client holds no one up); the ones that
/// succeed come out, the ones that fail are logged and dropped. Ends when the
/// listener does or the server stops taking connections.
pub(crate) fn accept(incoming: Incoming, config: &LinkTls, link: Link, url: String) -> Incoming {
    let Some(server) = config.serve.clone() else {
        return incoming;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Conn>>(ACCEPTED_QUEUE);
    let mut incoming = incoming;
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                () = tx.closed() => break,
            };
            let conn = match next {
                None => break,
                Some(Err(e)) => {
                    if tx.send(Err(e)).await.is_err() {
                        break;
                    }
                    continue;
                }
                Some(Ok(conn)) => conn,
            };
            let (acceptor, tx, url) = (acceptor.clone(), tx.clone(), url.clone());
            tokio::spawn(async move {
                let from = conn
                    .info()
                    .remote
                    .map_or_else(|| "?".to_string(), |a| a.to_string());
                let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await;
                let tls = match shaken {
                    Ok(Ok(tls)) => tls,
                    // The client went away mid-handshake (a peer stopping or
                    // giving up its dial, a port probe): nothing was refused.
                    Ok(Err(e)) if abandoned(&e) => {
                        tracing::debug!(%link, %url, %from, error = %e, "TLS handshake abandoned by the client");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%link, %url, %from, reason = %refusal(&e), "TLS connection refused");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%link, %url, %from, "TLS connection refused: no handshake within 10 s");
                        return;
                    }
                };
                let (plain, session) = tls.get_ref();
                let mut info = plain.info().clone();
                info.client = session
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| crate::certs::identity_of_certificate(leaf));
                let out = Conn::with_info(tls, info);
                let _ = tx.send(Ok(out)).await;
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The TLS client side of a connection to `host` (the URL's host: the name
/// the certificate must carry).
pub(crate) async fn connect(config: &LinkTls, host: &str, conn: Conn) -> io::Result<Conn> {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host}: not a name a certificate can carry: {e}"),
        )
    })?;
    let connector = tokio_rustls::TlsConnector::from(config.dial.clone());
    let tls = connector.connect(name, conn).await.map_err(|e| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("TLS to {host} refused: {}", refusal_by_server(&e)),
        )
    })?;
    let info = tls.get_ref().0.info().clone();
    Ok(Conn::with_info(tls, info))
}

/// Why a server's certificate was not accepted, or why it refused ours.
fn refusal_by_server(e: &io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    use rustls::CertificateError as C;
    match tls {
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => "the server's certificate is for another name".into(),
        rustls::Error::InvalidMessage(_) => {
            format!("the server does not speak TLS (an http:// URL?): {tls}")
        }
        _ => refusal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that closes or resets mid-handshake is not reported as a
    /// refusal; a TLS error, whatever its kind, is.
    #[test]
    fn a_client_gone_mid_handshake_is_not_a_refusal() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::BrokenPipe,
        ] {
            assert!(abandoned(&io::Error::from(kind)), "{kind:?}");
        }
        let refused = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::NoCertificatesPresented,
        );
        assert!(!abandoned(&refused));
        assert_eq!(refusal(&refused), "the client presented no certificate");
        let reset_by_tls = io::Error::new(
            io::ErrorKind::ConnectionReset,
            rustls::Error::NoCertificatesPresented,
        );
        assert!(!abandoned(&reset_by_tls));
    }
}
