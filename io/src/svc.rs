//! The svc resource: a systemd service, checked and changed over systemd's
//! D-Bus API (zbus), and watched by its signals, never by polling.
//!
//! - Check: `LoadUnit` gives the unit's object; its `LoadState` (`not-found`:
//!   the unit does not exist), `ActiveState` and `UnitFileState` say what it is.
//! - Apply: `EnableUnitFiles` / `DisableUnitFiles` then `Reload` for `startup`;
//!   `StartUnit` / `StopUnit` for `state`, each waiting for its job's
//!   `JobRemoved` and its result. A refresh from upstream (a `notify` edge)
//!   reloads or restarts a running service it did not just start.
//! - Watch: after `Subscribe`, the unit's `PropertiesChanged` (a `systemctl
//!   stop` or a killed main process arrives within milliseconds) and the
//!   manager's `UnitFilesChanged` and `Reloading` (enable/disable behind
//!   mgmt's back).

use std::time::Duration;

use futures_util::StreamExt;
use mgmt_core::resource::{SvcParams, SvcStartup, SvcState};
use tokio::sync::Mutex;
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, proxy};

/// Bound on one job: systemd's own start timeout is 90 s by default.
const JOB_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Bound on one plain call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_or_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn reload(&self) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
}

/// Connections to the system and the user's service managers, made on first
/// use and again after a failure. Shared by every svc vertex.
#[derive(Debug, Default)]
pub struct Backend {
    system: Mutex<Option<Connection>>,
    session: Mutex<Option<Connection>>,
}

impl Backend {
    async fn conn(&self, session: bool) -> Result<Connection, SvcError> {
        let slot = if session { &self.session } else { &self.system };
        let mut c = slot.lock().await;
        if let Some(conn) = c.as_ref() {
            return Ok(conn.clone());
        }
        let conn = if session {
            Connection::session().await
        } else {
            Connection::system().await
        }
        .map_err(|source| SvcError::Bus {
            bus: if session { "session" } else { "system" },
            source: Box::new(source),
        })?;
        *c = Some(conn.clone());
        Ok(conn)
    }

    async fn forget(&self, session: bool) {
        let slot = if session { &self.session } else { &self.system };
        *slot.lock().await = None;
    }
}

/// What systemd says of a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    active: String,
    file: String,
}

impl Observed {
    fn running(&self) -> bool {
        // Starting counts as running (a start job is under way); stopping does not.
        matches!(self.active.as_str(), "active" | "reloading" | "activating")
    }

    /// Enabled for good (`enabled-runtime` lasts until the next boot only).
    fn enabled(&self) -> bool {
        self.file == "enabled"
    }

    /// Enabled at all: something a `startup: disabled` must undo.
    fn enabled_now(&self) -> bool {
        matches!(self.file.as_str(), "enabled" | "enabled-runtime")
    }
}

/// A D-Bus call that failed, or got no answer within [`CALL_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{what}: {}", tidy(source))]
    Failed {
        what: String,
        source: Box<zbus::Error>,
    },
    #[error("{what}: no answer within {seconds}s")]
    NoAnswer { what: String, seconds: u64 },
}

/// Why a service could not be checked or put right.
#[derive(Debug, thiserror::Error)]
pub enum SvcError {
    #[error("cannot connect to the {bus} bus: {source}")]
    Bus {
        bus: &'static str,
        source: Box<zbus::Error>,
    },
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("unit {0} does not exist")]
    NoSuchUnit(String),
    #[error("unit {0} is masked")]
    Masked(String),
    #[error("unit {unit} did not load ({state})")]
    NotLoaded { unit: String, state: String },
    #[error(
        "unit {unit} cannot be enabled (its unit file state is {file_state:?}: it has no \
         [Install] section to enable)"
    )]
    CannotEnable { unit: String, file_state: String },
    #[error("unit {unit} cannot be disabled (its unit file state is {file_state:?})")]
    CannotDisable { unit: String, file_state: String },
    #[error("{what} {unit}: the job ended {result:?}")]
    JobFailed {
        what: String,
        unit: String,
        result: String,
    },
    #[error("{what} {unit}: the connection to systemd closed")]
    Closed { what: String, unit: String },
    #[error("{what} {unit}: no result within {seconds}s")]
    JobTimedOut {
        what: String,
        unit: String,
        seconds: u64,
    },
}

pub(crate) async fn bounded<T>(
    what: &str,
    f: impl Future<Output = zbus::Result<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(|source| CallError::Failed {
            what: what.to_string(),
            source: Box::new(source),
        }),
        Err(_) => Err(CallError::NoAnswer {
            what: what.to_string(),
            seconds: CALL_TIMEOUT.as_secs(),
        }),
    }
}

/// `Subscribe`: once per connection is enough, and systemd refuses a second.
async fn subscribe(manager: &ManagerProxy<'_>) -> Result<(), CallError> {
    match bounded("Subscribe", manager.subscribe()).await {
        Err(CallError::Failed { ref source, .. })
            if matches!(&**source, zbus::Error::MethodError(name, _, _)
                if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed") =>
        {
            Ok(())
        }
        r => r,
    }
}

/// A D-Bus error as systemd words it, without zbus's wrapping.
fn tidy(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(msg), _) => format!("{msg} ({name})"),
        zbus::Error::MethodError(name, None, _) => name.to_string(),
        e => e.to_string(),
    }
}

async fn observe(conn: &Connection, unit: &str) -> Result<(OwnedObjectPath, Observed), SvcError> {
    let manager = bounded("systemd", ManagerProxy::new(conn)).await?;
    let path = bounded(&format!("LoadUnit {unit}"), manager.load_unit(unit)).await?;
    let builder = UnitProxy::builder(conn)
        .path(path.clone())
        .map_err(|source| CallError::Failed {
            what: unit.to_string(),
            source: Box::new(source),
        })?
        .cache_properties(zbus::proxy::CacheProperties::No);
    let u = bounded(unit, builder.build()).await?;
    let load = bounded(unit, u.load_state()).await?;
    match load.as_str() {
        "loaded" => {}
        "not-found" => return Err(SvcError::NoSuchUnit(unit.to_string())),
        "masked" => return Err(SvcError::Masked(unit.to_string())),
        other => {
            return Err(SvcError::NotLoaded {
                unit: unit.to_string(),
                state: other.to_string(),
            });
        }
    }
    let active = bounded(unit, u.active_state()).await?;
    let file = bounded(unit, u.unit_file_state()).await?;
    Ok((path, Observed { active, file }))
}

/// Checks one service and, with `apply`, repairs it. Returns what changed
/// (or would change); empty: nothing.
pub async fn check_apply(
    backend: &Backend,
    p: &SvcParams,
    apply: bool,
    refresh: bool,
) -> Result<Vec<String>, SvcError> {
    let r = check_apply_on(backend, p, apply, refresh).await;
    // Any failure may be a connection gone bad: the next check connects
    // afresh (cheap) rather than fail on a dead one for ever.
    if r.is_err() {
        backend.forget(p.session).await;
    }
    r
}

async fn check_apply_on(
    backend: &Backend,
    p: &SvcParams,
    apply: bool,
    refresh: bool,
) -> Result<Vec<String>, SvcError> {
    let conn = backend.conn(p.session).await?;
    let unit = p.unit();
    let (_, seen) = observe(&conn, &unit).await?;
    let mut changes = Vec::new();
    let startup_change = match p.startup {
        Some(SvcStartup::Enabled) if !seen.enabled() => Some("enable"),
        Some(SvcStartup::Disabled) if seen.enabled_now() => Some("disable"),
        _ => None,
    };
    let state_change = match p.state {
        Some(SvcState::Running) if !seen.running() => Some("start"),
        Some(SvcState::Stopped) if seen.running() => Some("stop"),
        _ => None,
    };
    // A refresh from upstream: something this service depends on changed.
    let restart = refresh && state_change.is_none() && seen.running();
    if !apply {
        changes.extend(startup_change.map(|c| format!("{c} {unit}")));
        changes.extend(state_change.map(|c| format!("{c} {unit}")));
        if restart {
            changes.push(format!("reload or restart {unit}"));
        }
        return Ok(changes);
    }
    let manager = bounded("systemd", ManagerProxy::new(&conn)).await?;
    match startup_change {
        Some("enable") => {
            let (_, done) = bounded(
                &format!("EnableUnitFiles {unit}"),
                manager.enable_unit_files(&[&unit], false, true),
            )
            .await?;
            // Nothing to link (a static unit, no [Install] section): saying
            // "enabled" would only make the next check try again, forever.
            if done.is_empty() {
                return Err(SvcError::CannotEnable {
                    unit,
                    file_state: seen.file,
                });
            }
            bounded("Reload", manager.reload()).await?;
            changes.push("enabled".to_string());
        }
        Some(_) => {
            let runtime = seen.file == "enabled-runtime";
            let done = bounded(
                &format!("DisableUnitFiles {unit}"),
                manager.disable_unit_files(&[&unit], runtime),
            )
            .await?;
            if done.is_empty() {
                return Err(SvcError::CannotDisable {
                    unit,
                    file_state: seen.file,
                });
            }
            bounded("Reload", manager.reload()).await?;
            changes.push("disabled".to_string());
        }
        None => {}
    }
    if let Some(change) = state_change {
        run_job(&manager, &unit, change).await?;
        changes.push(
            if change == "start" {
                "started"
            } else {
                "stopped"
            }
            .to_string(),
        );
    } else if restart {
        run_job(&manager, &unit, "reload or restart").await?;
        changes.push("reloaded or restarted".to_string());
    }
    Ok(changes)
}

/// Starts a job and waits for systemd's `JobRemoved` of it; an outcome other
/// than `done` is an error naming it.
async fn run_job(manager: &ManagerProxy<'_>, unit: &str, what: &str) -> Result<(), SvcError> {
    // Subscribed first: a quick job may be removed before the call returns.
    subscribe(manager).await?;
    let mut removed = bounded("JobRemoved", manager.inner().receive_signal("JobRemoved")).await?;
    let job = match what {
        "start" => {
            bounded(
                &format!("StartUnit {unit}"),
                manager.start_unit(unit, "replace"),
            )
            .await?
        }
        "stop" => {
            bounded(
                &format!("StopUnit {unit}"),
                manager.stop_unit(unit, "replace"),
            )
            .await?
        }
        _ => {
            bounded(
                &format!("ReloadOrRestartUnit {unit}"),
                manager.reload_or_restart_unit(unit, "replace"),
            )
            .await?
        }
    };
    let wait = async {
        while let Some(msg) = removed.next().await {
            if let Ok((_id, path, _unit, result)) = msg
                .body()
                .deserialize::<(u32, OwnedObjectPath, String, String)>()
                && path == job
            {
                return Some(result);
            }
        }
        None
    };
    let (what, unit) = (what.to_string(), unit.to_string());
    match tokio::time::timeout(JOB_TIMEOUT, wait).await {
        Ok(Some(r)) if r == "done" => Ok(()),
        Ok(Some(result)) => Err(SvcError::JobFailed { what, unit, result }),
        Ok(None) => Err(SvcError::Closed { what, unit }),
        Err(_) => Err(SvcError::JobTimedOut {
            what,
            unit,
            seconds: JOB_TIMEOUT.as_secs(),
        }),
    }
}

/// Watches one service until the connection fails, calling `on_change` for
/// each change systemd reports of it (its state, or the unit files).
/// Returns why it stopped.
pub async fn watch(backend: &Backend, p: &SvcParams, mut on_change: impl FnMut()) -> String {
    let conn = match backend.conn(p.session).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let unit = p.unit();
    let r: Result<String, CallError> = async {
        let manager = bounded("systemd", ManagerProxy::new(&conn)).await?;
        subscribe(&manager).await?;
        let path = bounded(&format!("LoadUnit {unit}"), manager.load_unit(&unit)).await?;
        let builder = zbus::fdo::PropertiesProxy::builder(&conn)
            .destination("org.freedesktop.systemd1")
            .and_then(|b| b.path(path))
            .map_err(|source| CallError::Failed {
                what: unit.clone(),
                source: Box::new(source),
            })?;
        let props = bounded(unit.as_str(), builder.build()).await?;
        let mut changed = bounded(unit.as_str(), props.receive_properties_changed()).await?;
        let mut files = bounded(
            "UnitFilesChanged",
            manager.inner().receive_signal("UnitFilesChanged"),
        )
        .await?;
        let mut reloading =
            bounded("Reloading", manager.inner().receive_signal("Reloading")).await?;
        loop {
            tokio::select! {
                m = changed.next() => match m {
                    Some(_) => on_change(),
                    None => break,
                },
                m = files.next() => match m {
                    Some(_) => on_change(),
                    None => break,
                },
                m = reloading.next() => match m {
                    Some(_) => on_change(),
                    None => break,
                },
            }
        }
        Ok(format!("{unit}: the connection to systemd closed"))
    }
    .await;
    backend.forget(p.session).await;
    r.unwrap_or_else(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activating_counts_as_running_and_deactivating_does_not() {
        let o = |active: &str, file: &str| Observed {
            active: active.into(),
            file: file.into(),
        };
        assert!(o("active", "enabled").running());
        assert!(o("activating", "disabled").running());
        assert!(!o("deactivating", "disabled").running());
        assert!(!o("failed", "disabled").running());
        assert!(o("inactive", "enabled").enabled());
        assert!(!o("inactive", "static").enabled());
        assert!(!o("inactive", "enabled-runtime").enabled());
        assert!(o("inactive", "enabled-runtime").enabled_now());
    }
}
