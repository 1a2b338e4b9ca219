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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mgmt_core::VertexId;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::own_writes;

pub type RawEvent = notify::Result<notify::Event>;

/// A resource inside a vertex: the vertex and the member's index in it.
pub type MemberRef = (VertexId, usize);

pub struct FsWatch {
    /// `Err`: the kernel gave no inotify instance (say the per-user limit
    /// is reached); every watch fails with this, and the agent goes on.
    watcher: Result<RecommendedWatcher, String>,
    /// Where the watcher sends events: kept to make one later.
    tx: mpsc::UnboundedSender<RawEvent>,
    /// Managed path (clean, as bytes) -> members managing it (most often
    /// one: a list, not a set, which would cost a tree node per path).
    targets: BTreeMap<OsString, Vec<MemberRef>>,
    /// Vertex -> the managed paths it added, so removing one touches only those.
    by_vertex: BTreeMap<VertexId, Vec<OsString>>,
    /// Managed path -> the directories we watch it through.
    via: BTreeMap<OsString, Vec<PathBuf>>,
    /// Watched directory -> how many targets and trees use it.
    dirs: BTreeMap<PathBuf, usize>,
    /// Tree root (clean) -> the members syncing it and the directories of it
    /// watched for them.
    trees: BTreeMap<OsString, Tree>,
    /// Vertex -> the tree roots it added.
    trees_by_vertex: BTreeMap<VertexId, Vec<OsString>>,
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
    pub fn new() -> (Self, mpsc::UnboundedReceiver<RawEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = Self::inotify(&tx);
        let fs = FsWatch {
            watcher,
            tx,
            targets: BTreeMap::new(),
            by_vertex: BTreeMap::new(),
            via: BTreeMap::new(),
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
        let target = clean(path);
        self.by_vertex
            .entry(vertex)
            .or_default()
            .push(target.clone());
        let members = self.targets.entry(target.clone()).or_default();
        if !members.contains(&(vertex, member)) {
            members.push((vertex, member));
        }
        if members.len() > 1 && self.via.contains_key(&target) {
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
        *self.dirs.entry(dir.to_path_buf()).or_insert(0) += 1;
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
                let all: Vec<OsString> = self.targets.keys().cloned().collect();
                for t in &all {
                    let _ = self.arm(t);
                }
                let roots: Vec<OsString> = self.trees.keys().cloned().collect();
                for root in roots {
                    let live = &self.dirs;
                    if let Some(t) = self.trees.get_mut(&root) {
                        t.dirs.retain(|d| live.contains_key(d));
                    }
                    let _ = self.arm_tree(&root, Path::new(&root).to_path_buf());
                }
                return self.targets.values().flatten().copied().collect();
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
            .map(|p| (renamed_to && own_writes::take_own_rename(p)) || own_writes::is_own_temp(p))
            .collect();
        for (p, &ours) in ev.paths.iter().zip(&ours) {
            if ours {
                continue;
            }
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
            if watch_dead && self.dirs.remove(p).is_some() {
                let _ = self.watcher().map(|w| w.unwatch(p));
                for dirs in self.via.values_mut() {
                    dirs.retain(|d| d != p);
                }
                // Its share in trees went with it.
                for t in self.trees.values_mut() {
                    t.dirs.remove(p);
                }
            }
            for t in below {
                let _ = self.arm(&t);
                hit.extend(self.targets[&t].iter().copied());
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
        let dead: Vec<PathBuf> = self.dirs.keys().filter(|d| !d.is_dir()).cloned().collect();
        for d in dead {
            self.dirs.remove(&d);
            let _ = self.watcher().map(|w| w.unwatch(&d));
            for dirs in self.via.values_mut() {
                dirs.retain(|v| *v != d);
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
