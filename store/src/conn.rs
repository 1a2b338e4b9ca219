//! One connection of the store's transport, whatever carries it (tokio TCP,
//! the simulator's, TLS over either), with what is known of its other end; and
//! the cut switch that ends a stopped server's connections. The layers that
//! wrap a connection (`tls`, `authority`) and the network behind it (`net`)
//! all build on this module, which builds on none of them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
