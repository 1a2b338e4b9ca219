//! The store's only contact with the network and the wall clock, behind one
//! trait so the simulator (`sim`, turmoil) can run the production store and
//! clustering driver over simulated TCP with simulated time.
//!
//! [`Env::tokio`] is the real world: tokio TCP and `SystemTime`. Every listener
//! (peer and client servers) and every outgoing connection (raft RPCs, request
//! forwarding, the etcd client) goes through an [`Env`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint};

use crate::tls::{Link, Links};

/// A byte stream: what a listener accepts and a dialer returns.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One connection, type-erased so servers and channels stay concrete, with
/// what is known of the other end.
pub struct Conn {
    io: Pin<Box<dyn Io>>,
    info: ConnInfo,
}

/// What a server knows of a connection's other end: handed to every request
/// on it (tonic puts it in the request's extensions).
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    /// The remote address, where the transport knows it.
    pub remote: Option<SocketAddr>,
    /// Who the client's verified TLS certificate says it is, read once at
    /// the handshake (not on every request).
    pub client: Option<mgmt_core::kv::auth::Identity>,
}

impl Conn {
    pub fn new(io: impl Io) -> Self {
        Conn {
            io: Box::pin(io),
            info: ConnInfo::default(),
        }
    }

    /// A connection accepted from `remote`.
    pub fn accepted(io: impl Io, remote: SocketAddr) -> Self {
        Conn {
            io: Box::pin(io),
            info: ConnInfo {
                remote: Some(remote),
                client: None,
            },
        }
    }

    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// This connection seen through a layer (TLS, a header rewrite, a cut
    /// switch) that keeps what is known of the other end.
    pub(crate) fn layered<T: Io>(self, layer: impl FnOnce(Conn) -> T) -> Conn {
        let info = self.info.clone();
        Conn {
            io: Box::pin(layer(self)),
            info,
        }
    }

    pub(crate) fn with_info(io: impl Io, info: ConnInfo) -> Conn {
        Conn {
            io: Box::pin(io),
            info,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

/// Accepted connections of one listener; dropping it closes the listener.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

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

/// A connection that fails every read and write once `cut` is canceled, so a
/// stopped server drops its open connections (and a peer's long-lived streams
/// end) instead of leaving them served by tasks nobody owns.
struct Cuttable {
    io: Conn,
    cut: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Cuttable {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "server stopped",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for Cuttable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Wrap every accepted connection so canceling `cut` aborts it.
pub(crate) fn cuttable(incoming: Incoming, cut: tokio_util::sync::CancellationToken) -> Incoming {
    use futures::StreamExt;
    Box::pin(incoming.map(move |r| {
        r.map(|io| {
            io.layered(|io| Cuttable {
                io,
                cut: Box::pin(cut.clone().cancelled_owned()),
            })
        })
    }))
}
