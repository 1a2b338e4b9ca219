//! [`mgmt_store::net::Net`] over turmoil's simulated TCP and clock.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::future::BoxFuture;
use mgmt_store::net::{Conn, Incoming, Net};

/// Simulated network of the current turmoil host.
pub struct TurmoilNet;

impl Net for TurmoilNet {
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(SocketAddr, Incoming)>> {
        Box::pin(async move {
            // turmoil binds only the unspecified address; the host's own IP
            // (what its URLs advertise) reaches it.
            let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            let listener = turmoil::net::TcpListener::bind(any).await?;
            let port = listener.local_addr()?.port();
            let incoming = futures::stream::unfold(listener, |l| async move {
                let r = l
                    .accept()
                    .await
                    .map(|(s, remote)| Conn::accepted(s, remote));
                Some((r, l))
            });
            Ok((
                SocketAddr::new(addr.ip(), port),
                Box::pin(incoming) as Incoming,
            ))
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Conn>> {
        Box::pin(async move { Ok(Conn::new(turmoil::net::TcpStream::connect(addr).await?)) })
    }

    fn now_ms(&self) -> u64 {
        turmoil::since_epoch().unwrap_or(Duration::ZERO).as_millis() as u64
    }

    /// OS threads would run outside turmoil's clock and scheduler.
    fn allows_threads(&self) -> bool {
        false
    }
}
