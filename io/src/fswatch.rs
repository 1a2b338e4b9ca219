//! One inotify instance for every file resource, with one watch per directory.
//!
//! Each managed path is watched through every existing directory above it:
//! its parent sees the file change, and the ancestors see a parent being
//! removed, renamed or created. Watches are shared, so thousands of files in a
//! few directories need only a few watches. Events are mapped back to the
//! vertex members that manage the paths they touch, so a group of thousands of
//! files re-checks only the file an event named.
//!
//! Paths are kept in the form [`clean`] gives them and compared as bytes: a
//! byte-ordered map keeps every path under a directory in one range, and
//! comparing bytes is several times cheaper than comparing path components.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mgmt_core::VertexId;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

pub type RawEvent = notify::Result<notify::Event>;

/// A resource inside a vertex: the vertex and the member's index in it.
pub type MemberRef = (VertexId, usize);

pub struct FsWatch {
    watcher: RecommendedWatcher,
    /// Managed path (clean, as bytes) -> members managing it.
    targets: BTreeMap<OsString, BTreeSet<MemberRef>>,
    /// Vertex -> the managed paths it added, so removing one touches only those.
    by_vertex: BTreeMap<VertexId, Vec<OsString>>,
    /// Managed path -> the directories we watch it through.
    via: BTreeMap<OsString, Vec<PathBuf>>,
    /// Watched directory -> how many targets use it.
    dirs: BTreeMap<PathBuf, usize>,
}

impl FsWatch {
    /// Creates the watcher; raw events arrive on the returned channel and go
    /// back in through [`FsWatch::members_for`].
    pub fn new() -> notify::Result<(Self, mpsc::UnboundedReceiver<RawEvent>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |ev: RawEvent| {
            let _ = tx.send(ev);
        })?;
        Ok((
            FsWatch {
                watcher,
                targets: BTreeMap::new(),
                by_vertex: BTreeMap::new(),
                via: BTreeMap::new(),
                dirs: BTreeMap::new(),
            },
            rx,
        ))
    }

    /// Starts watching `path` on behalf of member `member` of `vertex`.
    pub fn add(&mut self, path: &str, vertex: VertexId, member: usize) -> notify::Result<()> {
        let target = clean(path);
        self.by_vertex
            .entry(vertex)
            .or_default()
            .push(target.clone());
        let members = self.targets.entry(target.clone()).or_default();
        members.insert((vertex, member));
        if members.len() > 1 && self.via.contains_key(&target) {
            return Ok(()); // Already armed for another member.
        }
        self.arm(&target)
    }

    /// Stops watching every path of `vertex`.
    pub fn remove_vertex(&mut self, vertex: VertexId) {
        for t in self.by_vertex.remove(&vertex).unwrap_or_default() {
            let Some(members) = self.targets.get_mut(&t) else {
                continue;
            };
            members.retain(|&(v, _)| v != vertex);
            if members.is_empty() {
                self.targets.remove(&t);
                for dir in self.via.remove(&t).unwrap_or_default() {
                    self.release(&dir);
                }
            }
        }
    }

    /// Watches every existing ancestor of `target`, and no other directory.
    fn arm(&mut self, target: &OsStr) -> notify::Result<()> {
        // A directory we hold a live watch on needs no stat: if it goes away,
        // its watch reports that and the targets below it are re-armed.
        let want: Vec<PathBuf> = Path::new(target)
            .ancestors()
            .skip(1)
            .filter(|d| self.dirs.contains_key(*d) || d.is_dir())
            .map(Path::to_path_buf)
            .collect();
        let have = self.via.remove(target).unwrap_or_default();
        let mut held = Vec::with_capacity(want.len());
        let mut result = Ok(());
        for d in want {
            if have.contains(&d) {
                held.push(d);
                continue;
            }
            if !self.dirs.contains_key(&d) {
                match self.watcher.watch(&d, RecursiveMode::NonRecursive) {
                    Ok(()) => {}
                    // Gone between the check and the watch: its creation or
                    // removal event will re-arm us.
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => {
                        result = Err(e);
                        continue;
                    }
                }
            }
            *self.dirs.entry(d.clone()).or_insert(0) += 1;
            held.push(d);
        }
        for d in have {
            if !held.contains(&d) {
                self.release(&d);
            }
        }
        self.via.insert(target.to_os_string(), held);
        result
    }

    fn release(&mut self, dir: &Path) {
        if let Some(n) = self.dirs.get_mut(dir) {
            *n -= 1;
            if *n == 0 {
                self.dirs.remove(dir);
                let _ = self.watcher.unwatch(dir);
            }
        }
    }

    /// Maps a raw event to the members it concerns, re-arming watches when
    /// directories appear or vanish. Errors and overflows concern everyone.
    pub fn members_for(&mut self, ev: RawEvent) -> BTreeSet<MemberRef> {
        let mut hit = BTreeSet::new();
        let ev = match ev {
            Ok(ev) if !ev.need_rescan() => ev,
            _ => {
                self.forget_dead_dirs();
                let all: Vec<OsString> = self.targets.keys().cloned().collect();
                for t in &all {
                    let _ = self.arm(t);
                }
                return self.targets.values().flatten().copied().collect();
            }
        };
        if matches!(ev.kind, EventKind::Access(_)) {
            return hit;
        }
        for p in &ev.paths {
            if let Some(vs) = self.targets.get(p.as_os_str()) {
                hit.extend(vs.iter().copied());
            }
            // Something at or above managed paths appeared, vanished or moved:
            // those paths may have too, and their watches may need to move.
            let prefix = p.join("").into_os_string();
            let itself = self.targets.get_key_value(p.as_os_str());
            let below: Vec<OsString> = itself
                .into_iter()
                .chain(
                    self.targets
                        .range(prefix.clone()..)
                        .take_while(|(t, _)| t.as_bytes().starts_with(prefix.as_bytes())),
                )
                .map(|(t, _)| t.clone())
                .collect();
            if below.is_empty() {
                continue;
            }
            // inotify watches inodes: once a watched directory is removed or
            // renamed, its watch is dead even if a new directory takes its path.
            let watch_dead = matches!(
                ev.kind,
                EventKind::Remove(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
            );
            if watch_dead && self.dirs.remove(p).is_some() {
                let _ = self.watcher.unwatch(p);
                for dirs in self.via.values_mut() {
                    dirs.retain(|d| d != p);
                }
            }
            for t in below {
                let _ = self.arm(&t);
                hit.extend(self.targets[&t].iter().copied());
            }
        }
        hit
    }

    /// Drops watches on directories that no longer exist (inotify dropped them).
    fn forget_dead_dirs(&mut self) {
        let dead: Vec<PathBuf> = self.dirs.keys().filter(|d| !d.is_dir()).cloned().collect();
        for d in dead {
            self.dirs.remove(&d);
            let _ = self.watcher.unwatch(&d);
            for dirs in self.via.values_mut() {
                dirs.retain(|v| *v != d);
            }
        }
    }
}

fn is_not_found(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// The one spelling of a path that events use: no trailing slash, no `//`
/// or `/./` (inotify events are built from the watched directory's path).
fn clean(path: &str) -> OsString {
    let p: PathBuf = Path::new(path).components().collect();
    if p.as_os_str().is_empty() {
        OsString::from("/")
    } else {
        p.into_os_string()
    }
}
