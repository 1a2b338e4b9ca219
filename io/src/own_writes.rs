//! What this process writes, as the file watcher must tell it from drift:
//! the temp files of its atomic writes (their names) and the renames that
//! put them in place, each expected once.
//!
//! `file` writes and announces; `fswatch` recognises and uses up. Neither
//! imports the other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The temp file process `pid` writes `base`'s new content to, beside it.
pub(crate) fn temp_name(base: &str, pid: u32) -> String {
    format!(".{base}.mgmt-{pid}.tmp")
}

/// Whether `path` names a temp file of this process's atomic writes.
pub(crate) fn is_own_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_temp_name)
        .is_some_and(|(_, pid)| pid == std::process::id())
}

/// The managed name and the writer's pid of a [`temp_name`], if it is
/// exactly one (`007` or `+7` are not pids we write).
pub(crate) fn parse_temp_name(name: &str) -> Option<(&str, u32)> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (base, pid) = inner.rsplit_once(".mgmt-")?;
    let pid: u32 = pid
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| pid.parse().ok())??;
    (temp_name(base, pid) == name).then_some((base, pid))
}

/// Renames this process is about to make over managed paths (its atomic
/// writes), each seen once by the watch and not taken for drift: a write of
/// ours costs one CheckApply, not one more for its own echo. An expectation
/// lasts [`OWN_RENAME_TTL`] at most, so one whose event never came cannot
/// hide a later rename by someone else.
static OWN_RENAMES: std::sync::Mutex<OwnRenames> = std::sync::Mutex::new(OwnRenames {
    by_path: BTreeMap::new(),
    order: std::collections::VecDeque::new(),
});

const OWN_RENAME_TTL: std::time::Duration = std::time::Duration::from_secs(2);

struct OwnRenames {
    /// Path -> when each rename expected onto it was announced, oldest first.
    by_path: BTreeMap<PathBuf, Vec<std::time::Instant>>,
    /// Every announcement, oldest first: expiry looks at the front only, so
    /// an apply of N files costs N steps, not N² (a scan per write).
    order: std::collections::VecDeque<(std::time::Instant, PathBuf)>,
}

impl OwnRenames {
    /// Drops the expectations whose event never came (an unwatched path).
    fn expire(&mut self, now: std::time::Instant) {
        let live = |t: &std::time::Instant| now.duration_since(*t) < OWN_RENAME_TTL;
        while let Some((t, _)) = self.order.front() {
            if live(t) {
                break;
            }
            let Some((_, path)) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.by_path.get_mut(&path) {
                v.retain(live);
                if v.is_empty() {
                    self.by_path.remove(&path);
                }
            }
        }
    }
}

/// Call just before renaming a temp file over `path` (and [`own_rename_failed`]
/// if the rename then fails).
pub fn expect_own_rename(path: &Path) {
    let mut m = OWN_RENAMES.lock().unwrap_or_else(|e| e.into_inner());
    let now = std::time::Instant::now();
    m.expire(now);
    m.by_path.entry(path.to_path_buf()).or_default().push(now);
    m.order.push_back((now, path.to_path_buf()));
}

pub fn own_rename_failed(path: &Path) {
    let mut m = OWN_RENAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = m.by_path.get_mut(path) {
        v.pop();
        if v.is_empty() {
            m.by_path.remove(path);
        }
    }
}

/// Whether a rename onto `path` is the echo of one of ours (used up if so).
pub(crate) fn take_own_rename(path: &Path) -> bool {
    let mut m = OWN_RENAMES.lock().unwrap_or_else(|e| e.into_inner());
    let Some(v) = m.by_path.get_mut(path) else {
        return false;
    };
    let now = std::time::Instant::now();
    v.retain(|t| now.duration_since(*t) < OWN_RENAME_TTL);
    let ours = !v.is_empty();
    if ours {
        v.remove(0);
    }
    if v.is_empty() {
        m.by_path.remove(path);
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_temp_names_of_ours_parse() {
        assert_eq!(parse_temp_name(".a.conf.mgmt-42.tmp"), Some(("a.conf", 42)));
        assert_eq!(
            parse_temp_name(&temp_name("x.mgmt-1", 7)),
            Some(("x.mgmt-1", 7))
        );
        for not_ours in [
            ".a.mgmt-007.tmp",
            ".a.mgmt-+7.tmp",
            ".a.mgmt-.tmp",
            "a.mgmt-7.tmp",
            ".a.mgmt-7.tmp.bak",
            ".a.mgmt-99999999999.tmp",
        ] {
            assert_eq!(parse_temp_name(not_ours), None, "{not_ours}");
        }
    }
}
