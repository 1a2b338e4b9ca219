//! dpkg's database of installed packages, read directly: a check of a
//! converged package costs one read of `/var/lib/dpkg/status` (milliseconds)
//! instead of a PackageKit transaction (most of a second). It is only read:
//! every change goes through PackageKit.
//!
//! dpkg replaces `status` by renaming `status-new` over it at the end of every
//! transaction, whoever ran it (apt-get, dpkg, PackageKit), so a watch on that
//! path sees every change to the installed set.

use std::collections::BTreeMap;
use std::path::Path;

/// Where dpkg keeps its status database.
pub const STATUS: &str = "/var/lib/dpkg/status";

/// One installed package: its architecture and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub arch: String,
    pub version: String,
}

/// The installed packages by name (a multi-arch package may be installed for
/// several architectures).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Db {
    installed: BTreeMap<String, Vec<Installed>>,
}

impl Db {
    /// Reads the database at `path`; `None` if there is none (not a dpkg system).
    pub fn read(path: &Path) -> std::io::Result<Option<Db>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(Db::parse(&text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Parses the status file's text. Only packages whose status is
    /// `installed` count: `config-files` (removed, configuration kept) and the
    /// half-done states do not.
    pub fn parse(text: &str) -> Db {
        let mut installed: BTreeMap<String, Vec<Installed>> = BTreeMap::new();
        for stanza in text.split("\n\n") {
            let (mut name, mut status, mut arch, mut version) = (None, None, None, None);
            for line in stanza.lines() {
                if let Some(v) = line.strip_prefix("Package: ") {
                    name = Some(v.trim());
                } else if let Some(v) = line.strip_prefix("Status: ") {
                    status = Some(v.trim());
                } else if let Some(v) = line.strip_prefix("Architecture: ") {
                    arch = Some(v.trim());
                } else if let Some(v) = line.strip_prefix("Version: ") {
                    version = Some(v.trim());
                }
            }
            let is_installed =
                status.is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"));
            if let (Some(name), true) = (name, is_installed) {
                installed
                    .entry(name.to_string())
                    .or_default()
                    .push(Installed {
                        arch: arch.unwrap_or("").to_string(),
                        version: version.unwrap_or("").to_string(),
                    });
            }
        }
        Db { installed }
    }

    /// The installed versions of `name` (`name:arch` selects one architecture).
    pub fn get(&self, name: &str) -> Vec<&Installed> {
        let (base, arch) = match name.split_once(':') {
            Some((b, a)) => (b, Some(a)),
            None => (name, None),
        };
        self.installed
            .get(base)
            .map(|all| {
                all.iter()
                    .filter(|i| arch.is_none_or(|a| i.arch == a))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_TEXT: &str = "\
Package: cowsay
Status: install ok installed
Priority: optional
Architecture: all
Version: 3.03+dfsg2-8
Description: configurable talking cow
 A longer description.

Package: sl
Status: deinstall ok config-files
Architecture: amd64
Version: 5.02-1+b1

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9

Package: half
Status: install reinstreq half-installed
Architecture: amd64
Version: 1
";

    #[test]
    fn only_installed_packages_count() {
        let db = Db::parse(STATUS_TEXT);
        assert_eq!(db.get("cowsay").len(), 1);
        assert_eq!(db.get("cowsay")[0].version, "3.03+dfsg2-8");
        assert!(db.get("sl").is_empty(), "config-files is not installed");
        assert!(db.get("half").is_empty(), "half-installed is not installed");
        assert!(db.get("nosuch").is_empty());
    }

    #[test]
    fn an_architecture_suffix_selects_one_of_a_multi_arch_package() {
        let db = Db::parse(STATUS_TEXT);
        assert_eq!(db.get("libc6").len(), 2);
        assert_eq!(db.get("libc6:i386").len(), 1);
        assert!(db.get("libc6:arm64").is_empty());
    }

    #[test]
    fn a_missing_database_is_none() {
        assert_eq!(Db::read(Path::new("/nonexistent/status")).unwrap(), None);
    }
}
