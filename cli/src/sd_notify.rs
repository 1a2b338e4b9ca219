//! systemd's service notifications (`Type=notify`): datagrams to the socket
//! `$NOTIFY_SOCKET` names. `READY=1` once the graph first converged (or
//! failed for good), `STATUS=` whenever the run or the store changes,
//! `STOPPING=1` on the way out. Nothing happens without the variable.

use std::os::unix::net::{SocketAddr, UnixDatagram};

use mgmt_io::Progress;
use mgmt_store::cluster::Status;
use tokio::sync::watch;

pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace.
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var_os("NOTIFY_SOCKET")?;
        let target = target.to_str()?;
        let addr = match target.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            }
            None => SocketAddr::from_pathname(target).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, addr })
    }

    /// Best effort: a service manager that went away is not the agent's
    /// problem.
    pub fn send(&self, state: &str) {
        let _ = self.socket.send_to_addr(state.as_bytes(), &self.addr);
    }
}

/// The STATUS= line for the run's progress and the store.
pub fn status_line(p: &Progress, store: Option<&Status>) -> String {
    let mut line = if p.running > 0 || !p.idle {
        format!("applying {} of {}", p.running, p.vertices)
    } else {
        format!("converged: {} resources", p.resources)
    };
    if p.failed > 0 {
        line.push_str(&format!(", {} failed", p.failed));
    }
    if let Some(s) = store {
        line.push_str(&match (&s.server, s.members.len()) {
            (Some(_), n) if s.leader => format!("; store: leader of {n}"),
            (Some(_), n) => format!("; store: member of {n}"),
            (None, _) => "; store: client".to_string(),
        });
    }
    line
}

/// Sends `READY=1` the first time the run is ready, and a STATUS= line each
/// time it changes; ends when the run's progress sender goes.
pub async fn follow(
    notifier: std::sync::Arc<Notifier>,
    mut progress: watch::Receiver<Progress>,
    mut store: Option<watch::Receiver<Status>>,
) {
    let mut ready_sent = false;
    let mut last = String::new();
    loop {
        let p = *progress.borrow_and_update();
        let line = {
            let s = store.as_mut().map(|s| s.borrow_and_update().clone());
            status_line(&p, s.as_ref())
        };
        if line != last {
            notifier.send(&format!("STATUS={line}"));
            last = line;
        }
        if p.ready && !ready_sent {
            notifier.send("READY=1");
            ready_sent = true;
        }
        let store_changed = async {
            match store.as_mut() {
                Some(s) => s.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = progress.changed() => if r.is_err() { break },
            ok = store_changed => if !ok { store = None },
        }
    }
}
