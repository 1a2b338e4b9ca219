//! One inotify instance for every file resource, with one watch per directory.
//!
//! Each managed path is watched through every existing directory above it:
//! its parent sees the file change, and the ancestors see a parent being
//! removed, renamed or created. Watches are shared, so thousands of files in a
//! few directories need only a few watches. Events are mapped back to the
//! vertices that manage the paths they touch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use mgmt_core::VertexId;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

pub type RawEvent = notify::Result<notify::Event>;

pub struct FsWatch {
    watcher: RecommendedWatcher,
    /// Managed path (no trailing slash) -> vertices managing it.
    targets: BTreeMap<PathBuf, BTreeSet<VertexId>>,
    /// Managed path -> the directories we watch it through.
    via: BTreeMap<PathBuf, Vec<PathBuf>>,
    /// Watched directory -> how many targets use it.
    dirs: BTreeMap<PathBuf, usize>,
}

impl FsWatch {
    /// Creates the watcher; raw events arrive on the returned channel and go
    /// back in through [`FsWatch::vertices_for`].
    pub fn new() -> notify::Result<(Self, mpsc::UnboundedReceiver<RawEvent>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |ev: RawEvent| {
            let _ = tx.send(ev);
        })?;
        Ok((
            FsWatch {
                watcher,
                targets: BTreeMap::new(),
                via: BTreeMap::new(),
                dirs: BTreeMap::new(),
            },
            rx,
        ))
    }

    /// Starts watching `path` on behalf of `vertex`.
    pub fn add(&mut self, path: &str, vertex: VertexId) -> notify::Result<()> {
        let target = clean(path);
        self.targets
            .entry(target.clone())
            .or_default()
            .insert(vertex);
        self.arm(&target)
    }

    /// Stops watching every path of `vertex`.
    pub fn remove_vertex(&mut self, vertex: VertexId) {
        let mut emptied = Vec::new();
        for (t, vs) in self.targets.iter_mut() {
            if vs.remove(&vertex) && vs.is_empty() {
                emptied.push(t.clone());
            }
        }
        for t in emptied {
            self.targets.remove(&t);
            for dir in self.via.remove(&t).unwrap_or_default() {
                self.release(&dir);
            }
        }
    }

    /// Number of inotify watches in use.
    pub fn watch_count(&self) -> usize {
        self.dirs.len()
    }

    /// Watches every existing ancestor of `target`, and no other directory.
    fn arm(&mut self, target: &Path) -> notify::Result<()> {
        let want: Vec<PathBuf> = target
            .ancestors()
            .skip(1)
            .filter(|d| d.is_dir())
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
        self.via.insert(target.to_path_buf(), held);
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

    /// Maps a raw event to the vertices it concerns, re-arming watches when
    /// directories appear or vanish. Errors and overflows concern everyone.
    pub fn vertices_for(&mut self, ev: RawEvent) -> BTreeSet<VertexId> {
        let mut hit = BTreeSet::new();
        let ev = match ev {
            Ok(ev) if !ev.need_rescan() => ev,
            _ => {
                self.forget_dead_dirs();
                let all: Vec<PathBuf> = self.targets.keys().cloned().collect();
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
            if let Some(vs) = self.targets.get(p) {
                hit.extend(vs.iter().copied());
            }
            // Something at or above managed paths appeared, vanished or moved:
            // those paths may have too, and their watches may need to move.
            let prefix = p.join("");
            let below: Vec<PathBuf> = self
                .targets
                .range(prefix.clone()..)
                .take_while(|(t, _)| t.starts_with(&prefix))
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

fn clean(path: &str) -> PathBuf {
    let trimmed = path.trim_end_matches('/');
    PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed })
}
