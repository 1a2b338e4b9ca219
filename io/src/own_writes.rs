//! What this process writes, as the file watcher must tell it from drift:
//! the temp files of its atomic writes (their names) and the renames that
//! put them in place, each expected once.
//!
//! `file` writes and announces ([`OwnWrites`], handed to it by the driver);
//! `fswatch` recognises and uses up (the same value). Neither imports the
//! other, and no state is global: two runs in one process keep their
//! renames apart (their temp files are told apart by pid only). The same
//! value holds a run's first temp file back until the clean-up of a killed
//! run's ones has looked at its directories.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The temp file process `pid` writes `base`'s new content to, beside it.
pub(crate) fn temp_name(base: &str, pid: u32) -> String {
    format!(".{base}.mgmt-{pid}.tmp")
}

/// This process's id, asked of the kernel once: glibc no longer caches it,
/// and every atomic write (and every event the watcher sees) needs it. The
/// agent forks only to exec, so no copy of it runs on under another pid.
pub(crate) fn own_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Whether `path` names a temp file of this process's atomic writes.
pub(crate) fn is_own_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_temp_name)
        .is_some_and(|(_, pid)| pid == own_pid())
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

/// Renames a run is about to make over managed paths (its atomic
/// writes), each seen once by the watch and not taken for drift: a write of
/// ours costs one CheckApply, not one more for its own echo. An expectation
/// lasts `OWN_RENAME_TTL` (2 s) at most, so one whose event never came cannot
/// hide a later rename by someone else.
///
/// One value, shared: the driver hands a clone to the watcher (which takes
/// each echo once) and one to every CheckApply
/// that writes (which announces its renames). A writer given a fresh one
/// (`OwnWrites::default()`, as in a one-shot tool or a test) tells no one;
/// one given [`OwnWrites::unheard`] (a single pass, which watches nothing)
/// does not even keep the list.
///
/// It also holds writes back while a killed run's temp files are cleared
/// ([`OwnWrites::after_clean_up`]): the clean-up takes temp names of this
/// process's own pid for a dead run's (a reused pid), so a write of ours must
/// not start before it has looked.
#[derive(Clone, Debug)]
pub struct OwnWrites {
    /// `None`: unheard.
    renames: Option<Arc<Mutex<OwnRenames>>>,
    /// `None`: nothing to wait for.
    clean_up: Option<Arc<CleanUp>>,
}

impl Default for OwnWrites {
    fn default() -> Self {
        OwnWrites {
            renames: Some(Arc::default()),
            clean_up: None,
        }
    }
}

/// Whether a killed run's temp files are cleared yet.
#[derive(Debug, Default)]
struct CleanUp {
    done: Mutex<bool>,
    finished: Condvar,
}

/// Held by the clean-up of a killed run's temp files; dropped (on a panic
/// too) when it is over, which lets writes go on.
#[derive(Debug)]
pub(crate) struct CleanUpDone(Arc<CleanUp>);

impl Drop for CleanUpDone {
    fn drop(&mut self) {
        *self.0.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.finished.notify_all();
    }
}

const OWN_RENAME_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct OwnRenames {
    /// Path -> when each rename expected onto it was announced, oldest first.
    by_path: BTreeMap<PathBuf, Vec<Instant>>,
    /// Every announcement, oldest first: expiry looks at the front only, so
    /// an apply of N files costs N steps, not N² (a scan per write).
    order: VecDeque<(Instant, PathBuf)>,
}

impl OwnRenames {
    /// Drops the expectations whose event never came (an unwatched path).
    fn expire(&mut self, now: Instant) {
        let live = |t: &Instant| now.duration_since(*t) < OWN_RENAME_TTL;
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

impl OwnWrites {
    /// For writes no watcher hears: announcing a rename costs nothing (a
    /// lock, two path copies and a sorted insert, each write of a batch).
    pub fn unheard() -> Self {
        OwnWrites {
            renames: None,
            clean_up: None,
        }
    }

    /// These writes (and their clones') wait, before their first temp
    /// file, until the returned value is dropped: the clean-up of a killed
    /// run's temp files holds it. Checks need not wait, so the clean-up's
    /// directory reads overlap them.
    pub(crate) fn after_clean_up(mut self) -> (Self, CleanUpDone) {
        let clean_up = Arc::new(CleanUp::default());
        self.clean_up = Some(clean_up.clone());
        (self, CleanUpDone(clean_up))
    }

    /// Blocks until a killed run's temp files are cleared (at once if no
    /// clean-up holds these writes). Blocking: call it off the runtime.
    pub(crate) fn wait_for_clean_up(&self) {
        let Some(c) = &self.clean_up else {
            return;
        };
        let mut done = c.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = c.finished.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, OwnRenames>> {
        let renames = self.renames.as_ref()?;
        Some(renames.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Call just before renaming a temp file over `path` (and
    /// [`OwnWrites::rename_failed`] if the rename then fails).
    pub fn expect_rename(&self, path: &Path) {
        let Some(mut m) = self.lock() else {
            return;
        };
        let now = Instant::now();
        m.expire(now);
        m.by_path.entry(path.to_path_buf()).or_default().push(now);
        m.order.push_back((now, path.to_path_buf()));
    }

    /// The rename announced onto `path` did not happen.
    pub fn rename_failed(&self, path: &Path) {
        let Some(mut m) = self.lock() else {
            return;
        };
        if let Some(v) = m.by_path.get_mut(path) {
            v.pop();
            if v.is_empty() {
                m.by_path.remove(path);
            }
        }
    }

    /// Whether a rename onto `path` is the echo of one of ours (used up if so).
    pub(crate) fn take_rename(&self, path: &Path) -> bool {
        let Some(mut m) = self.lock() else {
            return false;
        };
        let Some(v) = m.by_path.get_mut(path) else {
            return false;
        };
        let now = Instant::now();
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

    #[test]
    fn a_rename_is_an_echo_once_and_only_to_the_watcher_it_was_told() {
        let own = OwnWrites::default();
        let watcher = own.clone();
        let elsewhere = OwnWrites::default();
        let path = Path::new("/srv/a.conf");
        own.expect_rename(path);
        assert!(
            !elsewhere.take_rename(path),
            "another driver's writes are not ours"
        );
        assert!(watcher.take_rename(path));
        assert!(!watcher.take_rename(path), "each echo is taken once");
        own.expect_rename(path);
        own.rename_failed(path);
        assert!(!watcher.take_rename(path), "a failed rename has no echo");
        let unheard = OwnWrites::unheard();
        unheard.expect_rename(path);
        assert!(
            !unheard.clone().take_rename(path),
            "nothing is kept for no one"
        );
    }

    #[test]
    fn writes_wait_for_the_clean_up_and_only_for_it() {
        OwnWrites::default().wait_for_clean_up();
        let (own, clean_up) = OwnWrites::default().after_clean_up();
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = own.clone();
        let t = std::thread::spawn(move || {
            writer.wait_for_clean_up();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "a write waits while the clean-up runs"
        );
        drop(clean_up);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the clean-up's end lets it go");
        t.join().unwrap();
        own.wait_for_clean_up();
    }
}
