//! The pkg resource: check a vertex's packages against the installed set, and
//! repair them in as few PackageKit transactions as their states need (a
//! group of three `installed` packages: one `Resolve`, one `InstallPackages`).
//!
//! Checks read dpkg's database where there is one ([`crate::dpkg`]); every
//! change, and every question dpkg cannot answer (is a newer version
//! available?), goes to PackageKit. A package PackageKit cannot find fails
//! alone: the other members of its group are still installed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use mgmt_core::resource::{PkgParams, PkgState};
use tokio::sync::Mutex;

use crate::dpkg;
use crate::packagekit::{self, PackageKit, PkError, Request, filter, flag, info};

/// Where the packages' state comes from and where changes go. Shared by every
/// pkg vertex; connects to PackageKit on first use (and again after a failure).
#[derive(Debug)]
pub struct Backend {
    pk: Mutex<Option<PackageKit>>,
    /// dpkg's status database; `None`: ask PackageKit for the installed set.
    status: Option<PathBuf>,
}

impl Backend {
    pub fn new() -> Arc<Self> {
        Arc::new(Backend {
            pk: Mutex::new(None),
            status: Some(PathBuf::from(dpkg::STATUS)),
        })
    }

    /// The path a watch should follow to see every change of the installed
    /// set, if this system has one.
    pub fn watch_path(&self) -> Option<&str> {
        self.status.as_deref().and_then(|p| p.to_str())
    }

    async fn pk(&self) -> Result<PackageKit, PkError> {
        let mut pk = self.pk.lock().await;
        if let Some(c) = pk.as_ref() {
            return Ok(c.clone());
        }
        let c = PackageKit::connect().await?;
        *pk = Some(c.clone());
        Ok(c)
    }

    /// Runs one transaction; a failure to reach PackageKit drops the
    /// connection so the next call connects afresh.
    async fn run(&self, req: Request<'_>) -> Result<packagekit::Outcome, PkError> {
        let pk = self.pk().await?;
        let r = pk.run(req).await;
        if matches!(r, Err(PkError::Call(_))) {
            *self.pk.lock().await = None;
        }
        r
    }

    /// Installed versions of each name: from dpkg's database, or PackageKit.
    async fn installed(&self, names: &[&str]) -> Result<BTreeMap<String, Vec<String>>, PkgError> {
        if let Some(path) = self.status.clone() {
            let unreadable = |reason: String| PkgError::Database {
                path: dpkg::STATUS,
                reason,
            };
            let db = tokio::task::spawn_blocking(move || dpkg::Db::read(&path))
                .await
                .map_err(|e| unreadable(e.to_string()))?
                .map_err(|e| unreadable(e.to_string()))?;
            if let Some(db) = db {
                return Ok(names
                    .iter()
                    .map(|n| {
                        let versions = db.get(n).iter().map(|i| i.version.clone()).collect();
                        (n.to_string(), versions)
                    })
                    .collect());
            }
        }
        let out = self
            .run(Request::Resolve {
                filter: filter::INSTALLED,
                names,
            })
            .await
            .map_err(|e| PkgError::Query(Arc::new(e)))?;
        let mut map: BTreeMap<String, Vec<String>> =
            names.iter().map(|n| (n.to_string(), Vec::new())).collect();
        for p in out.packages.iter().filter(|p| p.info == info::INSTALLED) {
            if let Some(v) = map.get_mut(base_name(p.name())) {
                v.push(p.version().to_string());
            }
        }
        Ok(map)
    }
}

/// What a member needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Need {
    Nothing,
    Install,
    InstallVersion(String),
    Remove,
    /// Installed; a newer version is available as this package id.
    Update(String),
}

fn base_name(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// Resolve filters for a package's flags: free and supported packages only,
/// unless it allows others.
fn filters(p: &PkgParams) -> u64 {
    let mut f = filter::ARCH;
    if !p.allow_nonfree {
        f |= filter::FREE;
    }
    if !p.allow_unsupported {
        f |= filter::SUPPORTED;
    }
    f
}

fn transaction_flags(p: &PkgParams) -> u64 {
    if p.allow_untrusted {
        flag::NONE
    } else {
        flag::ONLY_TRUSTED
    }
}

/// Why a package member failed. Cloned to every member a failed query or
/// transaction concerned.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PkgError {
    /// dpkg's status database could not be read.
    #[error("cannot read {path}: {reason}")]
    Database { path: &'static str, reason: String },
    /// PackageKit could not say what is installed.
    #[error("{0}")]
    Query(Arc<PkError>),
    /// PackageKit could not say whether a newer version is available.
    #[error("{name}: {source}")]
    Newest { name: String, source: Arc<PkError> },
    /// PackageKit could not resolve the name.
    #[error("cannot resolve {name}: {source}")]
    Resolve { name: String, source: Arc<PkError> },
    /// No installable package of that name (among the packages the
    /// member's flags allow: `note` says which).
    #[error("package {name} not found: PackageKit knows no installable package of that name{note}")]
    NotFound { name: String, note: &'static str },
    /// The repositories do not have that version.
    #[error("version {version} of {name} is not available (PackageKit knows: {known})")]
    VersionUnavailable {
        name: String,
        version: String,
        known: String,
    },
    /// The transaction of these packages failed.
    #[error("PackageKit, for {packages}: {source}")]
    Transaction {
        packages: String,
        source: Arc<PkError>,
    },
    /// Placeholder for a member whose transaction has not run yet.
    #[error("not run")]
    NotRun,
}

/// Per member (by the caller's index): what changed (empty: nothing), or why
/// it failed.
pub type PkgOutcome = (usize, Result<Vec<String>, PkgError>);

/// Checks the packages of one vertex and, with `apply`, repairs them.
/// Members sharing a state and flags share each transaction.
pub async fn check_apply(
    backend: &Backend,
    members: &[(usize, Arc<PkgParams>)],
    apply: bool,
) -> Vec<PkgOutcome> {
    // (allow_untrusted, allow_nonfree, allow_unsupported) -> its members.
    type Flags = (bool, bool, bool);
    let mut by_flags: BTreeMap<Flags, Vec<(usize, Arc<PkgParams>)>> = BTreeMap::new();
    for (i, p) in members {
        by_flags
            .entry((p.allow_untrusted, p.allow_nonfree, p.allow_unsupported))
            .or_default()
            .push((*i, p.clone()));
    }
    let mut out = Vec::new();
    for batch in by_flags.into_values() {
        out.extend(check_apply_batch(backend, &batch, apply).await);
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

async fn check_apply_batch(
    backend: &Backend,
    members: &[(usize, Arc<PkgParams>)],
    apply: bool,
) -> Vec<PkgOutcome> {
    let names: Vec<&str> = members.iter().map(|(_, p)| p.name.as_str()).collect();
    let installed = match backend.installed(&names).await {
        Ok(i) => i,
        Err(e) => return members.iter().map(|(i, _)| (*i, Err(e.clone()))).collect(),
    };
    let first = &members[0].1;
    let mut needs: Vec<Result<Need, PkgError>> = members
        .iter()
        .map(|(_, p)| {
            let have = &installed[&p.name];
            Ok(match &p.state {
                PkgState::Installed if have.is_empty() => Need::Install,
                PkgState::Uninstalled if !have.is_empty() => Need::Remove,
                PkgState::Newest if have.is_empty() => Need::Install,
                PkgState::Version(v) if !have.contains(v) => Need::InstallVersion(v.clone()),
                _ => Need::Nothing,
            })
        })
        .collect();

    // Whether an installed `newest` package has a newer version: only
    // PackageKit knows (the repositories' candidates).
    let newest: Vec<&str> = members
        .iter()
        .filter(|(_, p)| p.state == PkgState::Newest && !installed[&p.name].is_empty())
        .map(|(_, p)| p.name.as_str())
        .collect();
    if !newest.is_empty() {
        let r = backend
            .run(Request::Resolve {
                filter: filters(first) | filter::NEWEST,
                names: &newest,
            })
            .await
            .map_err(Arc::new);
        for ((_, p), need) in members.iter().zip(needs.iter_mut()) {
            if !newest.contains(&p.name.as_str()) {
                continue;
            }
            *need = match &r {
                Err(e) => Err(PkgError::Newest {
                    name: p.name.clone(),
                    source: e.clone(),
                }),
                Ok(o) => Ok(o
                    .packages
                    .iter()
                    .find(|pk| pk.name() == base_name(&p.name) && pk.info == info::AVAILABLE)
                    .map_or(Need::Nothing, |pk| Need::Update(pk.id.clone()))),
            };
        }
    }

    if !apply {
        return members
            .iter()
            .zip(needs)
            .map(|((i, p), need)| (*i, need.map(|n| would(&p.name, &n))))
            .collect();
    }

    let mut results: Vec<MemberResult> = needs
        .iter()
        .map(|n| match n {
            Ok(Need::Nothing) => Ok(Vec::new()),
            Ok(_) => Err(PkgError::NotRun), // filled in below
            Err(e) => Err(e.clone()),
        })
        .collect();
    let flags = transaction_flags(first);
    let with = |want: fn(&Need) -> bool| -> Vec<usize> {
        (0..members.len())
            .filter(|&k| needs[k].as_ref().is_ok_and(want))
            .collect()
    };

    // Installs (state installed, or newest and absent): one Resolve, one Install.
    resolve_and_transact(
        backend,
        members,
        &with(|n| *n == Need::Install),
        filters(first) | filter::NOT_INSTALLED | filter::NEWEST,
        |found, name| match found.iter().find(|p| p.info == info::AVAILABLE) {
            Some(p) => Ok(Some(p.id.clone())),
            None => Err(PkgError::NotFound {
                name: name.to_string(),
                note: restricted_note(first),
            }),
        },
        |ids| Request::Install { flags, ids },
        |id| format!("installed {}", version_of(id)),
        &mut results,
    )
    .await;

    // Exact versions: the id of that version, if the repositories have it.
    let version_flags = flags | flag::ALLOW_DOWNGRADE | flag::ALLOW_REINSTALL;
    for k in with(|n| matches!(n, Need::InstallVersion(_))) {
        let Ok(Need::InstallVersion(v)) = &needs[k] else {
            continue;
        };
        resolve_and_transact(
            backend,
            members,
            &[k],
            filters(first),
            |found, name| match found.iter().find(|p| p.version() == v) {
                Some(p) => Ok(Some(p.id.clone())),
                None => {
                    let known: Vec<&str> = found.iter().map(|p| p.version()).collect();
                    Err(PkgError::VersionUnavailable {
                        name: name.to_string(),
                        version: v.clone(),
                        known: if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        },
                    })
                }
            },
            |ids| Request::Install {
                flags: version_flags,
                ids,
            },
            |id| format!("installed version {}", version_of(id)),
            &mut results,
        )
        .await;
    }

    // Updates: the newer ids are known from the check.
    let updates: Vec<(usize, String)> = (0..members.len())
        .filter_map(|k| match &needs[k] {
            Ok(Need::Update(id)) => Some((k, id.clone())),
            _ => None,
        })
        .collect();
    transact(
        backend,
        &updates,
        |ids| Request::Update { flags, ids },
        |id| format!("updated to {}", version_of(id)),
        &mut results,
    )
    .await;

    // Removals: the installed ids (one gone since the check needs nothing).
    resolve_and_transact(
        backend,
        members,
        &with(|n| *n == Need::Remove),
        filter::INSTALLED,
        |found, _| {
            Ok(found
                .iter()
                .find(|p| p.info == info::INSTALLED)
                .map(|p| p.id.clone()))
        },
        |ids| Request::Remove { flags, ids },
        |id| format!("removed {}", version_of(id)),
        &mut results,
    )
    .await;
    members.iter().map(|(i, _)| *i).zip(results).collect()
}

type MemberResult = Result<Vec<String>, PkgError>;

/// Resolves the names of members `ks` with `filter`, picks each one's package
/// id from what PackageKit found of that name (`Ok(None)`: nothing to do;
/// `Err`: that member fails alone), then runs one transaction of the ids.
#[allow(clippy::too_many_arguments)]
async fn resolve_and_transact(
    backend: &Backend,
    members: &[(usize, Arc<PkgParams>)],
    ks: &[usize],
    filter: u64,
    pick: impl Fn(&[&packagekit::Package], &str) -> Result<Option<String>, PkgError>,
    request: impl for<'a> Fn(&'a [&'a str]) -> Request<'a>,
    changed: impl Fn(&str) -> String,
    results: &mut [MemberResult],
) {
    if ks.is_empty() {
        return;
    }
    let names: Vec<&str> = ks.iter().map(|&k| members[k].1.name.as_str()).collect();
    let found = match backend
        .run(Request::Resolve {
            filter,
            names: &names,
        })
        .await
    {
        Ok(o) => o.packages,
        Err(e) => {
            let e = Arc::new(e);
            for &k in ks {
                results[k] = Err(PkgError::Resolve {
                    name: members[k].1.name.clone(),
                    source: e.clone(),
                });
            }
            return;
        }
    };
    let mut ids = Vec::new();
    for &k in ks {
        let name = &members[k].1.name;
        let same: Vec<&packagekit::Package> = found
            .iter()
            .filter(|p| p.name() == base_name(name))
            .collect();
        match pick(&same, name) {
            Ok(Some(id)) => ids.push((k, id)),
            Ok(None) => results[k] = Ok(Vec::new()),
            Err(e) => results[k] = Err(e),
        }
    }
    transact(backend, &ids, request, changed, results).await;
}

/// Runs one transaction for `ids` (member index, package id) and records each
/// member's result: its change, or the transaction's error naming the packages.
async fn transact(
    backend: &Backend,
    ids: &[(usize, String)],
    request: impl for<'a> Fn(&'a [&'a str]) -> Request<'a>,
    changed: impl Fn(&str) -> String,
    results: &mut [MemberResult],
) {
    if ids.is_empty() {
        return;
    }
    let list: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
    let names: Vec<&str> = list
        .iter()
        .map(|id| id.split(';').next().unwrap_or(id))
        .collect();
    if ids.len() > 1 {
        tracing::info!(
            "PackageKit: one transaction for {} packages: {}",
            ids.len(),
            names.join(" ")
        );
    }
    match backend.run(request(&list)).await {
        Ok(_) => {
            for (k, id) in ids {
                results[*k] = Ok(vec![changed(id)]);
            }
        }
        Err(e) => {
            let (packages, source) = (names.join(" "), Arc::new(e));
            for (k, _) in ids {
                results[*k] = Err(PkgError::Transaction {
                    packages: packages.clone(),
                    source: source.clone(),
                });
            }
        }
    }
}

fn version_of(id: &str) -> String {
    let mut f = id.split(';');
    let name = f.next().unwrap_or(id);
    let version = f.next().unwrap_or("");
    format!("{name} {version}")
}

fn restricted_note(p: &PkgParams) -> &'static str {
    match (p.allow_nonfree, p.allow_unsupported) {
        (false, false) => {
            " among free, supported packages (allownonfree, allowunsupported widen it)"
        }
        (false, true) => " among free packages (allownonfree widens it)",
        (true, false) => " among supported packages (allowunsupported widens it)",
        (true, true) => "",
    }
}

/// What `--noop` reports for a need.
fn would(name: &str, need: &Need) -> Vec<String> {
    match need {
        Need::Nothing => Vec::new(),
        Need::Install => vec![format!("install {name}")],
        Need::InstallVersion(v) => vec![format!("install {name} version {v}")],
        Need::Remove => vec![format!("remove {name}")],
        Need::Update(id) => vec![format!("update to {}", version_of(id))],
    }
}

/// Bound on gathering package file lists for AutoEdges (downloads included).
const FILES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What the packages `names` ship, for package AutoEdges, with a note for
/// each package whose list could not be had (it then gets no edges). An
/// installed package's list comes from PackageKit (`GetFiles`); one not
/// installed is downloaded into the package manager's cache (where its
/// install finds it later) and its archive listed, since PackageKit's apt
/// backend lists files of installed packages only.
pub async fn package_files(names: &[String]) -> (mgmt_core::autoedge::PackageFiles, Vec<String>) {
    match tokio::time::timeout(FILES_TIMEOUT, package_files_unbounded(names)).await {
        Ok(r) => r,
        Err(_) => (
            Default::default(),
            vec![format!(
                "AutoEdge: listing what {} ship took over {}s: no package edges",
                names.join(", "),
                FILES_TIMEOUT.as_secs()
            )],
        ),
    }
}

async fn package_files_unbounded(
    names: &[String],
) -> (mgmt_core::autoedge::PackageFiles, Vec<String>) {
    let mut files = mgmt_core::autoedge::PackageFiles::new();
    let mut notes = Vec::new();
    let pk = match PackageKit::connect().await {
        Ok(pk) => pk,
        Err(e) => {
            notes.push(format!("AutoEdge: cannot list what packages ship: {e}"));
            return (files, notes);
        }
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let resolved = match pk
        .run(Request::Resolve {
            filter: filter::ARCH | filter::NEWEST,
            names: &refs,
        })
        .await
    {
        Ok(o) => o.packages,
        Err(e) => {
            notes.push(format!(
                "AutoEdge: cannot resolve {}: {e}",
                names.join(", ")
            ));
            return (files, notes);
        }
    };
    // Per name, the installed package if there is one, else the candidate.
    let mut chosen: BTreeMap<&str, &packagekit::Package> = BTreeMap::new();
    for p in &resolved {
        let slot = chosen.entry(p.name()).or_insert(p);
        if p.info == info::INSTALLED {
            *slot = p;
        }
    }
    for name in names {
        if !chosen.contains_key(base_name(name)) {
            notes.push(format!(
                "AutoEdge: Pkg[{name}]: PackageKit cannot resolve it: no package edges"
            ));
        }
    }
    let installed: Vec<&str> = chosen
        .values()
        .filter(|p| p.info == info::INSTALLED)
        .map(|p| p.id.as_str())
        .collect();
    if !installed.is_empty() {
        match pk.run(Request::GetFiles { ids: &installed }).await {
            Ok(o) => {
                for (id, list) in o.files {
                    files
                        .entry(id.split(';').next().unwrap_or(&id).to_string())
                        .or_default()
                        .extend(list);
                }
            }
            Err(e) => notes.push(format!(
                "AutoEdge: cannot list installed packages' files: {e}"
            )),
        }
    }
    let available: Vec<&str> = chosen
        .values()
        .filter(|p| p.info != info::INSTALLED)
        .map(|p| p.id.as_str())
        .collect();
    if !available.is_empty() {
        match pk.run(Request::Download { ids: &available }).await {
            Ok(o) => {
                for (id, debs) in o.files {
                    let name = id.split(';').next().unwrap_or(&id).to_string();
                    for deb in debs {
                        match deb_contents(&deb).await {
                            Ok(list) => files.entry(name.clone()).or_default().extend(list),
                            Err(e) => notes.push(format!("AutoEdge: Pkg[{name}]: {e}")),
                        }
                    }
                }
            }
            Err(e) => notes.push(format!(
                "AutoEdge: cannot download {} to list their files: {e}",
                available
                    .iter()
                    .map(|i| i.split(';').next().unwrap_or(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    // Back to the names the graph used (`name:arch` included).
    let by_base = files;
    let mut files = mgmt_core::autoedge::PackageFiles::new();
    for name in names {
        if let Some(list) = by_base.get(base_name(name)) {
            files.insert(name.clone(), list.clone());
        }
    }
    (files, notes)
}

/// The paths a `.deb` archive installs, as absolute paths (read with
/// `dpkg-deb`, which only reads the archive).
async fn deb_contents(deb: &str) -> Result<Vec<String>, String> {
    let out = tokio::process::Command::new("dpkg-deb")
        .arg("--contents")
        .arg(deb)
        .output()
        .await
        .map_err(|e| format!("dpkg-deb --contents {deb}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "dpkg-deb --contents {deb}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_deb_listing(&String::from_utf8_lossy(&out.stdout)))
}

/// `dpkg-deb --contents` lines (`drwxr-xr-x root/root 0 2023-01-01 12:00
/// ./etc/drbd.d/`) -> `/etc/drbd.d`. Links (`a -> b`) give their own path.
fn parse_deb_listing(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let path = line.split_whitespace().nth(5)?;
            let path = path.strip_prefix('.')?;
            let path = path.trim_end_matches('/');
            (!path.is_empty()).then(|| path.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deb_listing_gives_absolute_paths() {
        let listing = "drwxr-xr-x root/root         0 2023-02-01 10:00 ./
drwxr-xr-x root/root         0 2023-02-01 10:00 ./etc/
-rw-r--r-- root/root       133 2023-02-01 10:00 ./etc/drbd.conf
drwxr-xr-x root/root         0 2023-02-01 10:00 ./etc/drbd.d/
lrwxrwxrwx root/root         0 2023-02-01 10:00 ./usr/sbin/drbdsetup-84 -> drbdsetup
";
        assert_eq!(
            parse_deb_listing(listing),
            [
                "/etc",
                "/etc/drbd.conf",
                "/etc/drbd.d",
                "/usr/sbin/drbdsetup-84"
            ]
        );
    }

    fn pkg(state: PkgState) -> PkgParams {
        PkgParams {
            name: "cowsay".into(),
            state,
            allow_untrusted: false,
            allow_nonfree: false,
            allow_unsupported: false,
        }
    }

    #[test]
    fn filters_restrict_to_free_supported_packages_unless_allowed() {
        let p = pkg(PkgState::Installed);
        assert_eq!(filters(&p), filter::ARCH | filter::FREE | filter::SUPPORTED);
        let mut q = p.clone();
        q.allow_nonfree = true;
        q.allow_unsupported = true;
        assert_eq!(filters(&q), filter::ARCH);
        assert_eq!(transaction_flags(&p), flag::ONLY_TRUSTED);
        q.allow_untrusted = true;
        assert_eq!(transaction_flags(&q), flag::NONE);
    }

    #[test]
    fn noop_reports_name_what_would_change() {
        assert_eq!(would("cowsay", &Need::Install), ["install cowsay"]);
        assert_eq!(
            would("sl", &Need::Update("sl;5.03;amd64;main".into())),
            ["update to sl 5.03"]
        );
        assert!(would("sl", &Need::Nothing).is_empty());
    }
}
