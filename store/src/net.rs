//! The store's only contact with the network and the wall clock, behind one
//! trait so the simulator (`sim`, turmoil) can run the production store and
//! clustering driver over simulated TCP with simulated time.
//!
//! [`Env::tokio`] is the real world: tokio TCP and `SystemTime`. Every listener
//! (peer and client servers) and every outgoing connection (raft RPCs, request
//! forwarding, the etcd client) goes through an [`Env`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

pub use crate::conn::{Conn, ConnInfo, Incoming, Io};
use crate::error::StoreError;
use crate::tls::{Link, Links};

/// Network and clock of one host.
pub trait Net: Send + Sync + 'static {
    /// Listen on `addr` (port 0: any free port); returns the bound address.
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(SocketAddr, Incoming)>>;
    /// Open a connection to `addr`.
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Conn>>;
    /// Wall-clock milliseconds since the Unix epoch (lease deadlines).
    fn now_ms(&self) -> u64;
    /// May the store run work on OS threads of its own (the raft log's flusher)?
    /// A simulator whose clock and scheduling must stay deterministic says no.
    fn allows_threads(&self) -> bool {
        true
    }
}

/// A shared [`Net`], and the TLS its `https://` URLs use.
#[derive(Clone)]
pub struct Env {
    net: Arc<dyn Net>,
    tls: Arc<Links>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::tokio()
    }
}

impl Env {
    pub fn new(net: impl Net) -> Self {
        Env {
            net: Arc::new(net),
            tls: Arc::default(),
        }
    }

    /// The same network, with `tls` for `https://` URLs.
    pub fn with_tls(mut self, tls: Links) -> Self {
        self.tls = Arc::new(tls);
        self
    }

    pub fn tls(&self) -> &Links {
        &self.tls
    }

    /// Real TCP (tokio) and the system clock.
    pub fn tokio() -> Self {
        Env::new(TokioNet)
    }

    pub fn allows_threads(&self) -> bool {
        self.net.allows_threads()
    }

    pub fn now_ms(&self) -> u64 {
        self.net.now_ms()
    }

    pub async fn listen(&self, addr: SocketAddr) -> io::Result<(SocketAddr, Incoming)> {
        self.net.listen(addr).await
    }

    /// A lazily connected HTTP/2 channel to a client URL (`http://IP:PORT`, or
    /// `https://` over the client link's TLS) with keepalive, so a dead member
    /// or a wedged connection is noticed and redialed.
    pub fn channel(&self, url: &str) -> Result<Channel, tonic::transport::Error> {
        self.dial(url, Link::Client)
    }

    /// [`Env::channel`] to a peer URL, over the peer link's TLS if `https://`.
    pub fn peer_channel(&self, url: &str) -> Result<Channel, tonic::transport::Error> {
        self.dial(url, Link::Peer)
    }

    fn dial(&self, url: &str, link: Link) -> Result<Channel, tonic::transport::Error> {
        let (net, tls) = (self.net.clone(), self.tls.clone());
        let connector = tower::service_fn(move |uri: http::Uri| {
            let (net, tls) = (net.clone(), tls.clone());
            async move {
                let addr = uri_addr(&uri)?;
                let https = uri.scheme_str() == Some("https");
                let conn = net.connect(addr).await?;
                let conn = match (https, tls.get(link)) {
                    (false, _) => conn,
                    (true, Some(config)) => {
                        crate::tls::connect(config, uri.host().unwrap_or_default(), conn).await?
                    }
                    (true, None) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{uri}: https, but no TLS is configured for {link} links"),
                        ));
                    }
                };
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(conn))
            }
        });
        Ok(Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true)
            .connect_with_connector_lazy(connector))
    }
}

fn uri_addr(uri: &http::Uri) -> io::Result<SocketAddr> {
    let host = uri.host().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    format!("{host}:{port}")
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {uri}")))
}

struct TokioNet;

impl Net for TokioNet {
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(SocketAddr, Incoming)>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            let incoming = futures::stream::unfold(listener, |l| async move {
                let r = l.accept().await.map(|(s, remote)| {
                    let _ = s.set_nodelay(true);
                    Conn::accepted(s, remote)
                });
                Some((r, l))
            });
            Ok((local, Box::pin(incoming) as Incoming))
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Conn>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Conn::new(s))
        })
    }

    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Parse a comma- or semicolon-separated URL list. `host:port` gets `http://`.
pub fn parse_urls(list: &str) -> Result<Vec<String>, StoreError> {
    list.split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|u| {
            let url = if u.contains("://") {
                u.to_string()
            } else {
                format!("http://{u}")
            };
            socket_addr(&url)?;
            Ok(url)
        })
        .collect()
}

pub(crate) fn socket_addr(url: &str) -> Result<SocketAddr, StoreError> {
    let bad = |reason: &str| StoreError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("only http:// and https:// URLs are supported"))?;
    let hostport = rest.trim_end_matches('/');
    let hostport = if let Some(port) = hostport.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        hostport.to_string()
    };
    hostport
        .parse()
        .map_err(|_| bad("expected http://IP:PORT or https://IP:PORT"))
}
