//! The msg resource: log a message each time it runs (its first check, and
//! each refresh from upstream), in mgmt's log and, if asked, in the systemd
//! journal and syslog.
//!
//! The journal is written in its native protocol: one datagram to
//! `/run/systemd/journal/socket` with `FIELD` entries, each in the binary
//! form (`NAME\n`, a little-endian u64 length, the value, `\n`), which any
//! value (newlines included) can take. Syslog gets one RFC 3164 datagram on
//! `/dev/log`, facility user.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use mgmt_core::resource::{MsgParams, Priority};

/// Where journald listens for native messages.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Where syslog daemons listen.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// A msg resource's state across runs.
#[derive(Debug)]
pub struct MsgRes {
    pub params: MsgParams,
    logged: bool,
}

impl MsgRes {
    pub fn new(params: MsgParams) -> Self {
        MsgRes {
            params,
            logged: false,
        }
    }

    /// Logs the message when it is due: the first time, and on each refresh.
    /// Returns what it did (or would do); empty: nothing due.
    pub fn check_apply(
        &mut self,
        id: &str,
        apply: bool,
        refresh: bool,
    ) -> Result<Vec<String>, MsgError> {
        if self.logged && !refresh {
            return Ok(Vec::new());
        }
        let p = &self.params;
        let mut did = vec!["logged the message".to_string()];
        if !apply {
            return Ok(did);
        }
        log(id, p);
        if p.journal {
            send(Path::new(JOURNAL_SOCKET), &journal_datagram(p)).map_err(MsgError::Journal)?;
            did.push("sent it to the journal".to_string());
        }
        if p.syslog {
            let line = format!(
                "<{}>mgmt[{}]: {}",
                8 + p.priority.level(),
                std::process::id(),
                p.body
            );
            send(Path::new(SYSLOG_SOCKET), line.as_bytes()).map_err(MsgError::Syslog)?;
            did.push("sent it to syslog".to_string());
        }
        self.logged = true;
        Ok(did)
    }
}

fn log(id: &str, p: &MsgParams) {
    let fields: Vec<String> = p.fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    let extra = if fields.is_empty() {
        String::new()
    } else {
        format!(" ({})", fields.join(" "))
    };
    match p.priority {
        Priority::Emerg | Priority::Alert | Priority::Crit | Priority::Err => {
            tracing::error!("{id}: {}{extra}", p.body)
        }
        Priority::Warning => tracing::warn!("{id}: {}{extra}", p.body),
        Priority::Notice | Priority::Info => tracing::info!("{id}: {}{extra}", p.body),
        Priority::Debug => tracing::debug!("{id}: {}{extra}", p.body),
    }
}

/// The journal's native datagram for a message.
pub fn journal_datagram(p: &MsgParams) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    };
    field("MESSAGE", p.body.as_bytes());
    field("PRIORITY", p.priority.level().to_string().as_bytes());
    field("SYSLOG_IDENTIFIER", b"mgmt");
    for (k, v) in &p.fields {
        field(k, v.as_bytes());
    }
    out
}

/// Why a message did not reach the journal or syslog.
#[derive(Debug, thiserror::Error)]
pub enum MsgError {
    #[error("journal: {0}")]
    Journal(SendError),
    #[error("syslog: {0}")]
    Syslog(SendError),
}

/// Why one datagram was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{} does not exist: no {daemon} runs on this machine", socket.display())]
    NoSocket {
        socket: std::path::PathBuf,
        daemon: &'static str,
    },
    #[error("{0}")]
    Socket(std::io::Error),
    #[error("{}: {source}", socket.display())]
    Send {
        socket: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// One datagram to a listening socket, with a message that says what is
/// missing when nothing listens there.
fn send(socket: &Path, bytes: &[u8]) -> Result<(), SendError> {
    if !socket.exists() {
        return Err(SendError::NoSocket {
            socket: socket.to_path_buf(),
            daemon: if socket == Path::new(JOURNAL_SOCKET) {
                "systemd journal"
            } else {
                "syslog daemon"
            },
        });
    }
    let s = UnixDatagram::unbound().map_err(SendError::Socket)?;
    // A stalled log daemon (its queue full) must not block the agent.
    s.set_nonblocking(true).map_err(SendError::Socket)?;
    s.send_to(bytes, socket)
        .map(|_| ())
        .map_err(|source| SendError::Send {
            socket: socket.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(journal: bool) -> MsgParams {
        MsgParams {
            body: "two\nlines".into(),
            priority: Priority::Warning,
            fields: [("APP".to_string(), "web".to_string())].into(),
            journal,
            syslog: false,
        }
    }

    #[test]
    fn the_journal_datagram_frames_every_field_in_binary_form() {
        let d = journal_datagram(&params(true));
        let mut want = Vec::new();
        for (k, v) in [
            ("MESSAGE", "two\nlines"),
            ("PRIORITY", "4"),
            ("SYSLOG_IDENTIFIER", "mgmt"),
            ("APP", "web"),
        ] {
            want.extend_from_slice(k.as_bytes());
            want.push(b'\n');
            want.extend_from_slice(&(v.len() as u64).to_le_bytes());
            want.extend_from_slice(v.as_bytes());
            want.push(b'\n');
        }
        assert_eq!(d, want);
    }

    #[test]
    fn it_logs_first_and_then_only_on_refresh() {
        let mut m = MsgRes::new(params(false));
        assert_eq!(m.check_apply("Msg[m]", true, false).unwrap().len(), 1);
        assert!(m.check_apply("Msg[m]", true, false).unwrap().is_empty());
        assert_eq!(m.check_apply("Msg[m]", true, true).unwrap().len(), 1);
    }

    #[test]
    fn a_datagram_reaches_a_listening_socket() {
        let dir = std::env::temp_dir().join(format!("mgmt-msg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        send(&path, b"hello").unwrap();
        let mut buf = [0u8; 16];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let missing = send(&dir.join("nothing"), b"x").unwrap_err();
        assert!(matches!(missing, SendError::NoSocket { .. }), "{missing}");
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
