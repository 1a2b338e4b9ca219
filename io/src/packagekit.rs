//! A PackageKit client over D-Bus (zbus): every package change mgmt makes goes
//! through here, one transaction per call.
//!
//! The daemon's API: the manager object `/org/freedesktop/PackageKit` creates a
//! transaction object per request (`CreateTransaction`); one method on it
//! (`Resolve`, `InstallPackages`, ...) starts the work, whose results arrive as
//! signals on that object (`Package`, `Files`, `ErrorCode`) until `Finished`.
//! The enum values below are PackageKit's (`pk-enum.h`); filters and flags are
//! bitfields of `1 << value`.
//!
//! Whether a package is installed is read from the `Package` signal's info
//! enum, never from the package id's data field (which the apt backend fills
//! with the repository name: upstream mgmt's #988).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, proxy};

/// PackageKit's well-known bus name.
pub const SERVICE: &str = "org.freedesktop.PackageKit";

/// How long PackageKit may take to start when D-Bus activates it (a cold
/// start took 0.7 s here).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Bound on one transaction: downloads of large packages take long, but a
/// daemon that stopped answering must not hold the graph for ever.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `PkFilterEnum` values, as bits.
pub mod filter {
    pub const NONE: u64 = 1 << 1;
    pub const INSTALLED: u64 = 1 << 2;
    pub const NOT_INSTALLED: u64 = 1 << 3;
    pub const FREE: u64 = 1 << 8;
    pub const SUPPORTED: u64 = 1 << 12;
    pub const NEWEST: u64 = 1 << 16;
    pub const ARCH: u64 = 1 << 18;
}

/// `PkTransactionFlagEnum` values, as bits.
pub mod flag {
    pub const NONE: u64 = 0;
    pub const ONLY_TRUSTED: u64 = 1 << 1;
    pub const ALLOW_REINSTALL: u64 = 1 << 4;
    pub const ALLOW_DOWNGRADE: u64 = 1 << 6;
}

/// `PkInfoEnum`: what a `Package` signal says of a package.
pub mod info {
    pub const INSTALLED: u32 = 1;
    pub const AVAILABLE: u32 = 2;
}

/// `PkExitEnum::SUCCESS`.
const EXIT_SUCCESS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PkError {
    #[error("cannot connect to the system bus: {0}")]
    Bus(String),
    #[error(
        "PackageKit is not installed: {SERVICE} is neither running nor activatable on the system bus"
    )]
    NotInstalled,
    #[error("PackageKit did not start within {}s", START_TIMEOUT.as_secs())]
    StartTimeout,
    #[error("PackageKit: {0}")]
    Call(String),
    /// The transaction ran and failed: PackageKit's error name and details.
    #[error("{0}")]
    Failed(String),
    #[error("PackageKit did not finish {what} within {}s", TRANSACTION_TIMEOUT.as_secs())]
    Timeout { what: String },
}

impl From<zbus::Error> for PkError {
    fn from(e: zbus::Error) -> Self {
        PkError::Call(e.to_string())
    }
}

#[proxy(
    interface = "org.freedesktop.PackageKit",
    default_service = "org.freedesktop.PackageKit",
    default_path = "/org/freedesktop/PackageKit"
)]
trait Manager {
    fn create_transaction(&self) -> zbus::Result<OwnedObjectPath>;
}

#[proxy(
    interface = "org.freedesktop.PackageKit.Transaction",
    default_service = "org.freedesktop.PackageKit"
)]
trait Transaction {
    fn set_hints(&self, hints: &[&str]) -> zbus::Result<()>;
    fn resolve(&self, filter: u64, packages: &[&str]) -> zbus::Result<()>;
    fn install_packages(&self, transaction_flags: u64, package_ids: &[&str]) -> zbus::Result<()>;
    fn remove_packages(
        &self,
        transaction_flags: u64,
        package_ids: &[&str],
        allow_deps: bool,
        autoremove: bool,
    ) -> zbus::Result<()>;
    fn update_packages(&self, transaction_flags: u64, package_ids: &[&str]) -> zbus::Result<()>;
    fn get_files(&self, package_ids: &[&str]) -> zbus::Result<()>;
    fn download_packages(&self, store_in_cache: bool, package_ids: &[&str]) -> zbus::Result<()>;
}

/// One package as a `Package` signal reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// `PkInfoEnum` ([`info`]).
    pub info: u32,
    /// `name;version;arch;data`.
    pub id: String,
}

impl Package {
    pub fn name(&self) -> &str {
        self.id.split(';').next().unwrap_or("")
    }

    pub fn version(&self) -> &str {
        self.id.split(';').nth(1).unwrap_or("")
    }

    pub fn arch(&self) -> &str {
        self.id.split(';').nth(2).unwrap_or("")
    }
}

/// What a finished transaction reported.
#[derive(Debug, Default)]
pub struct Outcome {
    pub packages: Vec<Package>,
    /// `Files` signals: package id -> paths.
    pub files: BTreeMap<String, Vec<String>>,
}

/// One request, run as one transaction.
#[derive(Clone, Debug)]
pub enum Request<'a> {
    Resolve {
        filter: u64,
        names: &'a [&'a str],
    },
    Install {
        flags: u64,
        ids: &'a [&'a str],
    },
    Remove {
        flags: u64,
        ids: &'a [&'a str],
    },
    Update {
        flags: u64,
        ids: &'a [&'a str],
    },
    GetFiles {
        ids: &'a [&'a str],
    },
    /// Into the package manager's own cache, where a later install finds it.
    Download {
        ids: &'a [&'a str],
    },
}

impl Request<'_> {
    fn describe(&self) -> String {
        let (verb, list) = match self {
            Request::Resolve { names, .. } => ("resolving", names),
            Request::Install { ids, .. } => ("installing", ids),
            Request::Remove { ids, .. } => ("removing", ids),
            Request::Update { ids, .. } => ("updating", ids),
            Request::GetFiles { ids } => ("listing the files of", ids),
            Request::Download { ids } => ("downloading", ids),
        };
        let names: Vec<&str> = list
            .iter()
            .map(|i| i.split(';').next().unwrap_or(i))
            .collect();
        format!("{verb} {}", names.join(" "))
    }
}

/// A connection to PackageKit on the system bus
/// (`DBUS_SYSTEM_BUS_ADDRESS` overrides where that is).
#[derive(Clone, Debug)]
pub struct PackageKit {
    conn: Connection,
}

impl PackageKit {
    /// Connects to the system bus and makes sure PackageKit runs, starting it
    /// through D-Bus activation if needed (bounded: a bus whose activation is
    /// broken gives an error, not a hang).
    pub async fn connect() -> Result<Self, PkError> {
        let conn = Connection::system()
            .await
            .map_err(|e| PkError::Bus(e.to_string()))?;
        let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
        let name = zbus::names::BusName::try_from(SERVICE).expect("a valid bus name");
        if !dbus
            .name_has_owner(name.clone())
            .await
            .map_err(zbus::Error::from)?
        {
            let activatable = dbus
                .list_activatable_names()
                .await
                .map_err(zbus::Error::from)?;
            if !activatable.iter().any(|n| n.as_str() == SERVICE) {
                return Err(PkError::NotInstalled);
            }
            let wk = zbus::names::WellKnownName::try_from(SERVICE).expect("a valid name");
            match tokio::time::timeout(START_TIMEOUT, dbus.start_service_by_name(wk, 0)).await {
                Err(_) => return Err(PkError::StartTimeout),
                Ok(r) => {
                    r.map_err(zbus::Error::from)?;
                }
            }
        }
        Ok(PackageKit { conn })
    }

    /// Runs `req` as one transaction and collects what it reported.
    pub async fn run(&self, req: Request<'_>) -> Result<Outcome, PkError> {
        let what = req.describe();
        match tokio::time::timeout(TRANSACTION_TIMEOUT, self.run_unbounded(req)).await {
            Ok(r) => r,
            Err(_) => Err(PkError::Timeout { what }),
        }
    }

    async fn run_unbounded(&self, req: Request<'_>) -> Result<Outcome, PkError> {
        let what = req.describe();
        // Long transactions say how far they are (PackageKit's Percentage).
        let long = matches!(
            req,
            Request::Install { .. } | Request::Remove { .. } | Request::Update { .. }
        );
        let manager = ManagerProxy::new(&self.conn).await?;
        let path = manager.create_transaction().await?;
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.PackageKit")?
            .path(path.clone())?
            .build()
            .await?;
        let mut changes = props.receive_properties_changed().await?;
        let mut progress = Progress::default();
        let tx = TransactionProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        // Subscribed before the work starts, so no signal is missed; one stream
        // keeps them in the order PackageKit sent them.
        let mut signals = tx.inner().receive_all_signals().await?;
        tx.set_hints(&["interactive=false", "background=false"])
            .await?;
        match req {
            Request::Resolve { filter, names } => tx.resolve(filter, names).await?,
            Request::Install { flags, ids } => tx.install_packages(flags, ids).await?,
            // Never removes what depends on the package (that would remove
            // more than the graph asked for): such a removal fails, naming them.
            Request::Remove { flags, ids } => tx.remove_packages(flags, ids, false, false).await?,
            Request::Update { flags, ids } => tx.update_packages(flags, ids).await?,
            Request::GetFiles { ids } => tx.get_files(ids).await?,
            Request::Download { ids } => tx.download_packages(true, ids).await?,
        }
        let mut out = Outcome::default();
        let mut error = None;
        loop {
            let msg = tokio::select! {
                msg = signals.next() => msg,
                Some(change) = changes.next() => {
                    if long && let Some(pct) = percentage(&change) && let Some(step) = progress.step(pct) {
                        tracing::info!("{what}: {step}%");
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            let header = msg.header();
            let Some(member) = header.member() else {
                continue;
            };
            let body = msg.body();
            match member.as_str() {
                "Package" => {
                    if let Ok((info, id, _summary)) = body.deserialize::<(u32, String, String)>() {
                        // Newer PackageKit packs an update's severity into the
                        // upper 16 bits; the info enum is the lower ones.
                        let info = info & 0xFFFF;
                        out.packages.push(Package { info, id });
                    }
                }
                "Files" => {
                    if let Ok((id, files)) = body.deserialize::<(String, Vec<String>)>() {
                        out.files.entry(id).or_default().extend(files);
                    }
                }
                "ErrorCode" => {
                    if let Ok((code, details)) = body.deserialize::<(u32, String)>() {
                        error = Some(format!("{} ({})", details.trim(), error_name(code)));
                    }
                }
                "Finished" => {
                    let (exit, _runtime) = body
                        .deserialize::<(u32, u32)>()
                        .map_err(|e| PkError::Call(e.to_string()))?;
                    return match (exit, error) {
                        (EXIT_SUCCESS, None) => Ok(out),
                        (_, Some(e)) => Err(PkError::Failed(e)),
                        (exit, None) => Err(PkError::Failed(format!(
                            "the transaction ended with exit code {exit}"
                        ))),
                    };
                }
                _ => {}
            }
        }
        Err(PkError::Call(
            "the connection to PackageKit closed before the transaction finished".into(),
        ))
    }
}

/// The transaction's Percentage in a PropertiesChanged signal (PackageKit
/// says 101 while it does not know).
fn percentage(change: &zbus::fdo::PropertiesChanged) -> Option<u32> {
    let args = change.args().ok()?;
    let value = args.changed_properties().get("Percentage")?;
    let pct = u32::try_from(value).ok()?;
    (pct <= 100).then_some(pct)
}

/// Which percentages are worth a log line: each tenth, once.
#[derive(Default)]
struct Progress {
    logged: Option<u32>,
}

impl Progress {
    /// The tenth `pct` reached, if it is a new one.
    fn step(&mut self, pct: u32) -> Option<u32> {
        let step = pct / 10 * 10;
        if step == 0 || self.logged.is_some_and(|l| l >= step) {
            return None;
        }
        self.logged = Some(step);
        Some(step)
    }
}

/// PackageKit's name of an error code (`PkErrorEnum`), for messages.
fn error_name(code: u32) -> String {
    const NAMES: &[&str] = &[
        "unknown",
        "out-of-memory",
        "no-network",
        "not-supported",
        "internal-error",
        "gpg-failure",
        "package-id-invalid",
        "package-not-installed",
        "package-not-found",
        "package-already-installed",
        "package-download-failed",
        "group-not-found",
        "group-list-invalid",
        "dep-resolution-failed",
        "filter-invalid",
        "create-thread-failed",
        "transaction-error",
        "transaction-cancelled",
        "no-cache",
        "repo-not-found",
        "cannot-remove-system-package",
        "process-kill",
        "failed-initialization",
        "failed-finalise",
        "failed-config-parsing",
        "cannot-cancel",
        "cannot-get-lock",
        "no-packages-to-update",
        "cannot-write-repo-config",
        "local-install-failed",
        "bad-gpg-signature",
        "missing-gpg-signature",
        "cannot-install-source-package",
        "repo-configuration-error",
        "no-license-agreement",
        "file-conflicts",
        "package-conflicts",
        "repo-not-available",
        "invalid-package-file",
        "package-install-blocked",
        "package-corrupt",
        "all-packages-already-installed",
        "file-not-found",
        "no-more-mirrors-to-try",
        "no-distro-upgrade-data",
        "incompatible-architecture",
        "no-space-on-device",
        "media-change-required",
        "not-authorized",
        "update-not-found",
        "cannot-install-repo-unsigned",
        "cannot-update-repo-unsigned",
        "cannot-get-filelist",
        "cannot-get-requires",
        "cannot-disable-repository",
        "restricted-download",
        "package-failed-to-configure",
        "package-failed-to-build",
        "package-failed-to-install",
        "package-failed-to-remove",
        "update-failed-due-to-running-process",
        "package-database-changed",
        "provide-type-not-supported",
        "install-root-invalid",
        "cannot-fetch-sources",
        "cancelled-priority",
        "unfinished-transaction",
        "lock-required",
        "repo-already-set",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("error {code}"), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_logged_once_a_tenth() {
        let mut p = Progress::default();
        let steps: Vec<u32> = [0, 5, 12, 18, 10, 47, 100, 100]
            .into_iter()
            .filter_map(|pct| p.step(pct))
            .collect();
        assert_eq!(steps, [10, 40, 100]);
    }

    #[test]
    fn package_ids_split_into_their_fields() {
        let p = Package {
            info: info::AVAILABLE,
            id: "cowsay;3.03+dfsg2-8;all;debian-oldstable-main".into(),
        };
        assert_eq!(
            (p.name(), p.version(), p.arch()),
            ("cowsay", "3.03+dfsg2-8", "all")
        );
    }

    #[test]
    fn error_codes_have_pk_names() {
        assert_eq!(error_name(8), "package-not-found");
        assert_eq!(error_name(48), "not-authorized");
        assert_eq!(error_name(999), "error 999");
    }

    #[test]
    fn a_request_describes_itself_by_package_names() {
        let ids = ["cowsay;3.03;all;main", "sl;5.02;amd64;main"];
        assert_eq!(
            Request::Install {
                flags: flag::ONLY_TRUSTED,
                ids: &ids
            }
            .describe(),
            "installing cowsay sl"
        );
    }
}
