//! One inotify instance for every file resource, with one watch per directory.
//!
//! Each managed path is watched through every existing directory above it:
//! its parent sees the file change, and the ancestors see a parent being
//! removed, renamed or created. Watches are shared, so thousands of files in a
//! few directories need only a few watches. Events are mapped back to the
//! vertex members that manage the paths they touch, so a group of thousands of
//! files re-checks only the file an event named.
//!
//! A synced directory tree (a file resource with `source` and `recurse`) is
//! watched through one watch per directory in it ([`FsWatch::add_tree`]),
//! kept up to date as directories appear and vanish: a tree of 10 000 files in
//! 100 directories costs 100 watches, not 10 000.
//!
//! Paths are kept in the form [`clean`] gives them and compared as bytes: a
//! byte-ordered map keeps every path under a directory in one range, and
//! comparing bytes is several times cheaper than comparing path components.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mgmt_core::VertexId;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::own_writes::{self, OwnWrites};

pub type RawEvent = notify::Result<notify::Event>;

/// A resource inside a vertex: the vertex and the member's index in it.
pub type MemberRef = (VertexId, usize);

pub struct FsWatch {
    /// `Err`: the kernel gave no inotify instance (say the per-user limit
    /// is reached); every watch fails with this, and the agent goes on.
    watcher: Result<RecommendedWatcher, String>,
    /// Renames this process's writers announced (see [`OwnWrites`]).
    own: OwnWrites,
    /// Where the watcher sends events: kept to make one later.
    tx: mpsc::UnboundedSender<RawEvent>,
    /// Managed path (clean, as bytes) -> who manages it and how it is
    /// watched. The path is shared with `by_vertex`: a daemon keeping 10 000
    /// files holds each once.
    targets: BTreeMap<Arc<OsStr>, Target>,
    /// Vertex -> the managed paths it added, so removing one touches only those.
    by_vertex: BTreeMap<VertexId, Vec<Arc<OsStr>>>,
    /// Watched directory -> how many targets and trees use it. The targets
    /// hold the same `Arc`, not copies of the path.
    dirs: BTreeMap<Arc<Path>, usize>,
    /// Tree root (clean) -> the members syncing it and the directories of it
    /// watched for them.
    trees: BTreeMap<OsString, Tree>,
    /// Vertex -> the tree roots it added.
    trees_by_vertex: BTreeMap<VertexId, Vec<OsString>>,
}

/// A managed path.
struct Target {
    /// The members managing it: most often one (a list, not a set, which
    /// would cost a tree node per path).
    members: Vec<MemberRef>,
    /// The directories it is watched through; `None` until it is armed.
    via: Option<Vec<Arc<Path>>>,
}

#[derive(Default)]
struct Tree {
    members: BTreeSet<MemberRef>,
    dirs: BTreeSet<PathBuf>,
}

impl FsWatch {
    /// Creates the watcher; raw events arrive on the returned channel and go
    /// back in through [`FsWatch::members_for`]. Without an inotify instance
    /// (the per-user limit reached, with many agents on one machine) it
    /// still comes back, watching nothing: each [`FsWatch::add`] fails with
    /// why, the caller says so, and [`FsWatch::revive`] tries again.
    /// `own`: the renames this process's writers announce, whose echoes are
    /// not drift.
    pub fn new(own: OwnWrites) -> (Self, mpsc::UnboundedReceiver<RawEvent>) {
        let (mut fs, rx) = Self::unused(own);
        fs.watcher = Self::inotify(&fs.tx);
        (fs, rx)
    }

    /// A watcher for a run that watches nothing (a single pass): no inotify
    /// instance, no thread; [`FsWatch::unavailable`] says why.
    pub fn unused(own: OwnWrites) -> (Self, mpsc::UnboundedReceiver<RawEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fs = FsWatch {
            watcher: Err("a single pass watches nothing".into()),
            tx,
            own,
            targets: BTreeMap::new(),
            by_vertex: BTreeMap::new(),
            dirs: BTreeMap::new(),
            trees: BTreeMap::new(),
            trees_by_vertex: BTreeMap::new(),
        };
        (fs, rx)
    }

    fn inotify(tx: &mpsc::UnboundedSender<RawEvent>) -> Result<RecommendedWatcher, String> {
        let tx = tx.clone();
        notify::recommended_watcher(move |ev: RawEvent| {
            let _ = tx.send(ev);
        })
        .map_err(|e| {
            format!(
                "cannot start the file watcher: {e} (inotify instances: see \
                 fs.inotify.max_user_instances)"
            )
        })
    }

    /// Why this watcher watches nothing, if it does not.
    pub fn unavailable(&self) -> Option<&str> {
        self.watcher.as_ref().err().map(String::as_str)
    }

    /// Tries again to get an inotify instance; true once there is one. Its
    /// events go to the same channel as ever.
    pub fn revive(&mut self) -> bool {
        if self.watcher.is_err() {
            self.watcher = Self::inotify(&self.tx);
        }
        self.watcher.is_ok()
    }

    /// The inotify watcher, or why there is none.
    fn watcher(&mut self) -> notify::Result<&mut RecommendedWatcher> {
        self.watcher
            .as_mut()
            .map_err(|why| notify::Error::generic(why))
    }

    /// Starts watching `path` on behalf of member `member` of `vertex`.
    pub fn add(&mut self, path: &str, vertex: VertexId, member: usize) -> notify::Result<()> {
        let cleaned = clean(path);
        let target: Arc<OsStr> = match self.targets.get_key_value(cleaned.as_os_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(cleaned),
        };
        let entry = self
            .targets
            .entry(target.clone())
            .or_insert_with(|| Target {
                members: Vec::with_capacity(1),
                via: None,
            });
        if !entry.members.contains(&(vertex, member)) {
            entry.members.push((vertex, member));
        }
        let armed = entry.members.len() > 1 && entry.via.is_some();
        self.by_vertex
            .entry(vertex)
            .or_default()
            .push(target.clone());
        if armed {
            return Ok(()); // Already armed for another member.
        }
        self.arm(&target)
    }

    /// Starts watching the whole tree at `root` (every directory in it, and
    /// the root's ancestors) on behalf of member `member` of `vertex`: any
    /// change at or under `root` concerns that member.
    pub fn add_tree(&mut self, root: &str, vertex: VertexId, member: usize) -> notify::Result<()> {
        self.add(root, vertex, member)?;
        let key = clean(root);
        self.trees_by_vertex
            .entry(vertex)
            .or_default()
            .push(key.clone());
        self.trees
            .entry(key.clone())
            .or_default()
            .members
            .insert((vertex, member));
        self.arm_tree(&key, Path::new(&key).to_path_buf())
    }

    /// Watches every directory at or under `from`, inside tree `root`, that
    /// the tree does not watch yet. Symbolic links are not followed.
    fn arm_tree(&mut self, root: &OsStr, from: PathBuf) -> notify::Result<()> {
        let mut result = Ok(());
        let mut stack = vec![from];
        while let Some(d) = stack.pop() {
            if !fs_is_dir(&d) {
                continue;
            }
            let known = self.trees.get(root).is_some_and(|t| t.dirs.contains(&d));
            if !known {
                match self.acquire(&d) {
                    Ok(()) => {
                        if let Some(t) = self.trees.get_mut(root) {
                            t.dirs.insert(d.clone());
                        }
                    }
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => {
                        result = Err(e);
                        continue;
                    }
                }
            }
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
        result
    }

    /// One more user of a watch on `dir`, which is watched from the first.
    fn acquire(&mut self, dir: &Path) -> notify::Result<()> {
        if !self.dirs.contains_key(dir) {
            self.watcher()?.watch(dir, RecursiveMode::NonRecursive)?;
        }
        *self.dirs.entry(Arc::from(dir)).or_insert(0) += 1;
        Ok(())
    }

    /// The members of trees that `p` is in, arming directories that appeared
    /// in them and releasing those that went. `dead`: the event removed or
    /// renamed `p`, so watches at or under it are dead (or point elsewhere)
    /// whatever is at that path now.
    fn tree_members_for(&mut self, p: &Path, dead: bool) -> Vec<MemberRef> {
        let roots: Vec<OsString> = self
            .trees
            .keys()
            .filter(|r| p.starts_with(Path::new(r)))
            .cloned()
            .collect();
        let mut hit = Vec::new();
        for root in roots {
            let gone: Vec<PathBuf> = match self.trees.get(&root) {
                Some(t) => t
                    .dirs
                    .iter()
                    .filter(|d| d.starts_with(p) && (dead || !fs_is_dir(d)))
                    .cloned()
                    .collect(),
                None => continue,
            };
            for d in gone {
                if let Some(t) = self.trees.get_mut(&root) {
                    t.dirs.remove(&d);
                }
                self.release(&d);
            }
            if fs_is_dir(p) {
                let _ = self.arm_tree(&root, p.to_path_buf());
            }
            hit.extend(self.trees[&root].members.iter().copied());
        }
        hit
    }

    /// Stops watching every path of `vertex`.
    pub fn remove_vertex(&mut self, vertex: VertexId) {
        for root in self.trees_by_vertex.remove(&vertex).unwrap_or_default() {
            let Some(t) = self.trees.get_mut(&root) else {
                continue;
            };
            t.members.retain(|&(v, _)| v != vertex);
            if t.members.is_empty() {
                let dirs = std::mem::take(&mut t.dirs);
                self.trees.remove(&root);
                for d in dirs {
                    self.release(&d);
                }
            }
        }
        for t in self.by_vertex.remove(&vertex).unwrap_or_default() {
            let Some(target) = self.targets.get_mut(&*t) else {
                continue;
            };
            target.members.retain(|&(v, _)| v != vertex);
            if target.members.is_empty() {
                let via = self.targets.remove(&*t).and_then(|t| t.via);
                for dir in via.unwrap_or_default() {
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
        let have = self
            .targets
            .get_mut(target)
            .and_then(|t| t.via.take())
            .unwrap_or_default();
        let mut held: Vec<Arc<Path>> = Vec::with_capacity(want.len());
        let mut result = Ok(());
        for d in want {
            if let Some(h) = have.iter().find(|h| ***h == *d) {
                held.push(h.clone());
                continue;
            }
            if !self.dirs.contains_key(d.as_path()) {
                match self
                    .watcher()
                    .and_then(|w| w.watch(&d, RecursiveMode::NonRecursive))
                {
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
            let key = match self.dirs.get_key_value(d.as_path()) {
                Some((key, _)) => key.clone(),
                None => Arc::from(d),
            };
            *self.dirs.entry(key.clone()).or_insert(0) += 1;
            held.push(key);
        }
        for d in have {
            if !held.contains(&d) {
                self.release(&d);
            }
        }
        match self.targets.get_mut(target) {
            Some(t) => t.via = Some(held),
            None => held.iter().for_each(|d| self.release(d)),
        }
        result
    }

    fn release(&mut self, dir: &Path) {
        if let Some(n) = self.dirs.get_mut(dir) {
            *n -= 1;
            if *n == 0 {
                self.dirs.remove(dir);
                // A directory that is gone took its watch with it, and notify
                // drops it on its own (unwatching too would only race it).
                if fs_is_dir(dir) {
                    let _ = self.watcher().map(|w| w.unwatch(dir));
                }
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
                let all: Vec<Arc<OsStr>> = self.targets.keys().cloned().collect();
                for t in &all {
                    let _ = self.arm(t);
                }
                let roots: Vec<OsString> = self.trees.keys().cloned().collect();
                for root in roots {
                    let live = &self.dirs;
                    if let Some(t) = self.trees.get_mut(&root) {
                        t.dirs.retain(|d| live.contains_key(d.as_path()));
                    }
                    let _ = self.arm_tree(&root, Path::new(&root).to_path_buf());
                }
                return self
                    .targets
                    .values()
                    .flat_map(|t| t.members.iter().copied())
                    .collect();
            }
        };
        if matches!(ev.kind, EventKind::Access(_)) {
            return hit;
        }
        use notify::event::{ModifyKind, RenameMode};
        // notify reports a rename as `From` and `To`, then once more as
        // `Both`: the first two say everything.
        if matches!(
            ev.kind,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both))
        ) {
            return hit;
        }
        let renamed_to = matches!(ev.kind, EventKind::Modify(ModifyKind::Name(RenameMode::To)));
        // inotify watches inodes: once a watched directory is removed or
        // renamed, its watch is dead even if a new directory takes its path.
        let watch_dead = matches!(
            ev.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        // The echo of our own rename, and our own temp files, are not drift.
        let ours: Vec<bool> = ev
            .paths
            .iter()
            .map(|p| (renamed_to && self.own.take_rename(p)) || own_writes::is_own_temp(p))
            .collect();
        for (p, &ours) in ev.paths.iter().zip(&ours) {
            if ours {
                continue;
            }
            if let Some(t) = self.targets.get(p.as_os_str()) {
                hit.extend(t.members.iter().copied());
            }
            // Something at or above managed paths appeared, vanished or moved:
            // those paths may have too, and their watches may need to move.
            let prefix = p.join("").into_os_string();
            let itself = self.targets.get_key_value(p.as_os_str());
            let below: Vec<Arc<OsStr>> = itself
                .into_iter()
                .chain(
                    self.targets
                        .range::<OsStr, _>((Bound::Included(prefix.as_os_str()), Bound::Unbounded))
                        .take_while(|(t, _)| t.as_bytes().starts_with(prefix.as_bytes())),
                )
                .map(|(t, _)| t.clone())
                .collect();
            if below.is_empty() {
                continue;
            }
            if watch_dead && self.dirs.remove(p.as_path()).is_some() {
                let _ = self.watcher().map(|w| w.unwatch(p));
                self.forget_watches_through(p);
                // Its share in trees went with it.
                for t in self.trees.values_mut() {
                    t.dirs.remove(p);
                }
            }
            for t in below {
                let _ = self.arm(&t);
                hit.extend(self.targets[&*t].members.iter().copied());
            }
        }
        if !self.trees.is_empty() {
            for (p, &ours) in ev.paths.iter().zip(&ours) {
                let members = self.tree_members_for(p, watch_dead);
                if !ours {
                    hit.extend(members);
                }
            }
        }
        hit
    }

    /// Drops watches on directories that no longer exist (inotify dropped them).
    fn forget_dead_dirs(&mut self) {
        let dead: Vec<Arc<Path>> = self.dirs.keys().filter(|d| !d.is_dir()).cloned().collect();
        for d in dead {
            self.dirs.remove(&d);
            let _ = self.watcher().map(|w| w.unwatch(&d));
            self.forget_watches_through(&d);
        }
    }

    /// No target is watched through `dir` any more (its watch is gone).
    fn forget_watches_through(&mut self, dir: &Path) {
        for t in self.targets.values_mut() {
            if let Some(via) = &mut t.via {
                via.retain(|d| **d != *dir);
            }
        }
    }
}

/// A directory, not a link to one.
fn fs_is_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
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
