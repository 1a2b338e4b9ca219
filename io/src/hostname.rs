//! The `hostname` kind: the static host name and the kernel's.
//!
//! Where systemd-hostnamed answers on the system bus, both are read and set
//! through it (`StaticHostname`/`Hostname`, `SetStaticHostname`/
//! `SetHostname`), and its `PropertiesChanged` signal is a watch: the names
//! then live wherever hostnamed keeps them. Elsewhere mgmt sets them itself:
//! `/etc/hostname` (written atomically) and `/proc/sys/kernel/hostname`
//! (this UTS namespace's). The file is watched through inotify and the
//! kernel's name by its `POLLPRI` change event (`procwatch`) either way: a
//! `hostname other`, an edit of the file or a `hostnamectl set-hostname` is
//! repaired at once, without polling.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use futures_util::StreamExt;
use zbus::{Connection, proxy};

use crate::OwnWrites;
use crate::file::{Durability, FileError, io_err, write_atomically};

#[proxy(
    interface = "org.freedesktop.hostname1",
    default_service = "org.freedesktop.hostname1",
    default_path = "/org/freedesktop/hostname1"
)]
trait Hostname1 {
    fn set_static_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    fn set_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn static_hostname(&self) -> zbus::Result<String>;
    /// The kernel's (transient) name.
    #[zbus(property)]
    fn hostname(&self) -> zbus::Result<String>;
}

/// How long finding hostnamed may take (asking activates it).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub const ETC_HOSTNAME: &str = "/etc/hostname";
pub const KERNEL_HOSTNAME: &str = "/proc/sys/kernel/hostname";

#[derive(Debug, thiserror::Error)]
pub enum HostnameError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("systemd-hostnamed: {0}")]
    Hostnamed(#[from] crate::svc::CallError),
    #[error("hostname task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A hostnamed call with svc's bound on D-Bus calls.
async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = zbus::Result<T>>,
) -> Result<T, HostnameError> {
    Ok(crate::svc::bounded(what, f).await?)
}

/// hostnamed on the system bus, if it answers (asking activates it); `None`
/// where there is no system bus or no hostnamed on it.
async fn hostnamed() -> Option<(Connection, Hostname1Proxy<'static>)> {
    let conn = tokio::time::timeout(CALL_TIMEOUT, Connection::system())
        .await
        .ok()?
        .ok()?;
    let builder = Hostname1Proxy::builder(&conn).cache_properties(zbus::proxy::CacheProperties::No);
    let proxy = tokio::time::timeout(CALL_TIMEOUT, builder.build())
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(CALL_TIMEOUT, proxy.static_hostname())
        .await
        .ok()?
        .ok()?;
    Some((conn, proxy))
}

/// Checks both names and, with `apply`, sets them: through hostnamed where
/// it answers, else in the files.
pub async fn check_apply(
    name: &str,
    apply: bool,
    own: &OwnWrites,
) -> Result<Vec<String>, HostnameError> {
    let Some((_conn, proxy)) = hostnamed().await else {
        let (name, own) = (name.to_string(), own.clone());
        return tokio::task::spawn_blocking(move || check_apply_files(&name, apply, &own)).await?;
    };
    let mut changes = Vec::new();
    let have = bounded("StaticHostname", proxy.static_hostname()).await?;
    if have != name {
        changes.push(format!("static {have:?} -> {name:?}"));
        if apply {
            bounded("SetStaticHostname", proxy.set_static_hostname(name, false)).await?;
        }
    }
    let kernel = bounded("Hostname", proxy.hostname()).await?;
    if kernel != name {
        changes.push(format!("kernel {kernel:?} -> {name:?}"));
        if apply {
            bounded("SetHostname", proxy.set_hostname(name, false)).await?;
        }
    }
    Ok(changes)
}

/// Calls `on_change` on each `PropertiesChanged` of hostnamed; where no
/// hostnamed answers, waits forever (the files are watched on their own).
/// Returns why it stopped.
pub async fn watch_hostnamed(on_change: impl Fn()) -> String {
    let Some((conn, _)) = hostnamed().await else {
        return std::future::pending().await;
    };
    let r: Result<String, HostnameError> = async {
        let builder = zbus::fdo::PropertiesProxy::builder(&conn)
            .destination("org.freedesktop.hostname1")
            .and_then(|b| b.path("/org/freedesktop/hostname1"))
            .map_err(|source| crate::svc::CallError::Failed {
                what: "hostnamed".into(),
                source: Box::new(source),
            })?;
        let props = bounded("hostnamed", builder.build()).await?;
        let mut changed = bounded("PropertiesChanged", props.receive_properties_changed()).await?;
        while changed.next().await.is_some() {
            on_change();
        }
        Ok("systemd-hostnamed's signals ended".to_string())
    }
    .await;
    r.unwrap_or_else(|e| e.to_string())
}

/// The name `/etc/hostname` gives: its first line that is not a comment
/// (hostname(5)); empty when there is none or no file.
fn static_name() -> Result<String, HostnameError> {
    match fs::read_to_string(ETC_HOSTNAME) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("")
            .to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_err(Path::new(ETC_HOSTNAME), "read")(e).into()),
    }
}

/// Checks both names in the files and, with `apply`, sets them there.
/// Blocking (small files).
fn check_apply_files(
    name: &str,
    apply: bool,
    own: &OwnWrites,
) -> Result<Vec<String>, HostnameError> {
    let mut changes = Vec::new();
    let have = static_name()?;
    if have != name {
        changes.push(format!("static {have:?} -> {name:?}"));
        if apply {
            let path = Path::new(ETC_HOSTNAME);
            let mode = fs::metadata(path).map_or(0o644, |m| m.mode() & 0o7777);
            write_atomically(
                path,
                format!("{name}\n").as_bytes(),
                mode,
                None,
                Durability::PerFile,
                own,
            )?;
        }
    }
    let kernel =
        fs::read_to_string(KERNEL_HOSTNAME).map_err(io_err(Path::new(KERNEL_HOSTNAME), "read"))?;
    let kernel = kernel.trim_end();
    if kernel != name {
        changes.push(format!("kernel {kernel:?} -> {name:?}"));
        if apply {
            // sethostname(2) of this UTS namespace, as `hostname NAME` does.
            fs::write(KERNEL_HOSTNAME, name)
                .map_err(io_err(Path::new(KERNEL_HOSTNAME), "write"))?;
        }
    }
    Ok(changes)
}
