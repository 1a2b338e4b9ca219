//! What each vertex watches, fixed when its graph starts so a watch can
//! restart while its resources are out running a CheckApply; starting those
//! watches; and the watch of the graph file itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mgmt_core::VertexId;
use mgmt_core::resource::{ResourceId, SvcParams};
use notify::RecommendedWatcher;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::event::Event;
use super::members::{MemberState, VertexRes};
use crate::fswatch::FsWatch;
use crate::{account, exec, pkg, procwatch, svc};

/// What to watch for a vertex, fixed at start so a watch can restart while
/// its resources are out running a CheckApply.
pub(super) enum WatchSpec {
    /// A file member (by its index in the vertex) and its path.
    Path(ResourceId, usize, String),
    /// A member syncing a whole tree: every directory at or under the path.
    Tree(ResourceId, usize, String),
    Lines(mgmt_core::resource::Command, Arc<AtomicBool>),
    Unit(Arc<SvcParams>),
    /// A `/proc` file the kernel flags with `POLLPRI` on change.
    Proc(&'static str),
    /// systemd-hostnamed's `PropertiesChanged`, where it runs.
    Hostnamed,
}

impl WatchSpec {
    /// Whether this watch goes through the inotify watcher (`FsWatch`).
    pub(super) fn uses_inotify(&self) -> bool {
        matches!(self, WatchSpec::Path(..) | WatchSpec::Tree(..))
    }
}

/// What to watch for each vertex, fixed when its graph starts so a watch can
/// restart while its resources are out running a CheckApply.
pub(super) fn watch_specs(
    slots: &[Option<Box<VertexRes>>],
    packages: &pkg::Backend,
) -> Vec<Vec<WatchSpec>> {
    slots
        .iter()
        .map(|res| {
            let res = res.as_deref().expect("all resources are home before start");
            res.ids
                .iter()
                .zip(&res.members)
                .enumerate()
                .flat_map(|(i, (id, m))| -> Vec<WatchSpec> {
                    match m {
                        MemberState::Noop | MemberState::Timer | MemberState::Msg(_) => Vec::new(),
                        // A copy watches its source as well as its target.
                        MemberState::File(p) => match &p.source {
                            Some(src) if p.recurse => vec![
                                WatchSpec::Tree(id.clone(), i, p.path.clone()),
                                WatchSpec::Tree(id.clone(), i, src.clone()),
                            ],
                            Some(src) => vec![
                                WatchSpec::Path(id.clone(), i, p.path.clone()),
                                WatchSpec::Path(id.clone(), i, src.clone()),
                            ],
                            None => vec![WatchSpec::Path(id.clone(), i, p.path.clone())],
                        },
                        // Every change to the installed set rewrites dpkg's database.
                        MemberState::Pkg(_) => packages
                            .watch_path()
                            .map(|path| WatchSpec::Path(id.clone(), i, path.to_string()))
                            .into_iter()
                            .collect(),
                        MemberState::Svc(p) => vec![WatchSpec::Unit(p.clone())],
                        MemberState::User(p) => account::user_files(p)
                            .into_iter()
                            .map(|f| WatchSpec::Path(id.clone(), i, f.to_string()))
                            .collect(),
                        MemberState::Group(_) => vec![WatchSpec::Path(
                            id.clone(),
                            i,
                            mgmt_core::accounts::GROUP.to_string(),
                        )],
                        MemberState::Line(p) => {
                            vec![WatchSpec::Path(id.clone(), i, p.path.clone())]
                        }
                        // The live value has no events: the engine's timer
                        // checks it (`live_check_s`); the file is watched.
                        MemberState::Sysctl(p) => p
                            .persist
                            .iter()
                            .map(|f| WatchSpec::Path(id.clone(), i, f.clone()))
                            .collect(),
                        MemberState::Hostname(_) => vec![
                            WatchSpec::Hostnamed,
                            WatchSpec::Proc(crate::hostname::KERNEL_HOSTNAME),
                            WatchSpec::Path(
                                id.clone(),
                                i,
                                crate::hostname::ETC_HOSTNAME.to_string(),
                            ),
                        ],
                        MemberState::Mount(_) => vec![
                            WatchSpec::Proc(mgmt_core::mounts::MOUNTINFO),
                            WatchSpec::Path(id.clone(), i, mgmt_core::mounts::FSTAB.to_string()),
                        ],
                        MemberState::Exec(e) => e
                            .params
                            .watch
                            .clone()
                            .map(|c| WatchSpec::Lines(c, e.watch_fired.clone()))
                            .into_iter()
                            .collect(),
                    }
                })
                .collect()
        })
        .collect()
}

/// Watches the graph file's directory; sends on `tx` for every event that
/// names the file (a write, or an editor's rename of a temp file over it).
pub(super) fn watch_graph_file(
    path: &Path,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<RecommendedWatcher> {
    use notify::Watcher as _;
    let file = path.to_path_buf();
    let name = file.file_name().map(|n| n.to_os_string());
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        use notify::event::{AccessKind, AccessMode, EventKind};
        let ours = match &ev {
            // Reading the file (as a reload does) is no change: only writes,
            // creations, renames and removals are.
            Ok(ev) => {
                // A finished write (close after writing), a rename, a
                // removal: not each write(2) of a save in progress.
                let change = match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) | EventKind::Create(_) => false,
                    EventKind::Modify(notify::event::ModifyKind::Data(_)) => false,
                    _ => true,
                };
                change
                    && ev
                        .paths
                        .iter()
                        .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            }
            Err(_) => true,
        };
        if ours {
            let _ = tx.send(());
        }
    })?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    w.watch(dir, notify::RecursiveMode::NonRecursive)?;
    Ok(w)
}

pub(super) fn start_watch(
    v: VertexId,
    specs: &[WatchSpec],
    fs: &mut FsWatch,
    tx: &mpsc::UnboundedSender<Event>,
    watchers: &mut BTreeMap<VertexId, Vec<JoinHandle<()>>>,
    services: &Arc<svc::Backend>,
    generation: u64,
) {
    let g = generation;
    // A restart replaces whatever was there.
    fs.remove_vertex(v);
    for h in watchers.remove(&v).unwrap_or_default() {
        h.abort();
    }
    for spec in specs {
        match spec {
            WatchSpec::Path(id, member, path) => {
                if let Err(e) = fs.add(path, v, *member) {
                    let _ = tx.send(Event::WatchFailed(g, v, format!("{id}: watch: {e}")));
                }
            }
            WatchSpec::Tree(id, member, path) => {
                if let Err(e) = fs.add_tree(path, v, *member) {
                    let _ = tx.send(Event::WatchFailed(g, v, format!("{id}: watch: {e}")));
                }
            }
            WatchSpec::Lines(cmd, fired) => {
                let (cmd, fired) = (cmd.clone(), fired.clone());
                let handle = spawn_watch(tx, g, v, move |event| async move {
                    exec::watch_lines(&cmd, move || {
                        fired.store(true, Ordering::SeqCst);
                        event();
                    })
                    .await
                });
                watchers.entry(v).or_default().push(handle);
            }
            WatchSpec::Hostnamed => {
                let handle = spawn_watch(tx, g, v, crate::hostname::watch_hostnamed);
                watchers.entry(v).or_default().push(handle);
            }
            WatchSpec::Proc(path) => {
                let path = *path;
                let handle = spawn_watch(tx, g, v, move |event| procwatch::watch(path, event));
                watchers.entry(v).or_default().push(handle);
            }
            WatchSpec::Unit(p) => {
                let (p, services) = (p.clone(), services.clone());
                let handle = spawn_watch(tx, g, v, move |event| async move {
                    svc::watch(&services, &p, event).await
                });
                watchers.entry(v).or_default().push(handle);
            }
        }
    }
}

/// Runs a watch in a task of its own: `watch` is given the function that
/// reports an event of vertex `v`, and returns why it stopped (a failure).
pub(super) fn spawn_watch<W, F>(
    tx: &mpsc::UnboundedSender<Event>,
    g: u64,
    v: VertexId,
    watch: W,
) -> JoinHandle<()>
where
    W: FnOnce(Box<dyn Fn() + Send + Sync>) -> F,
    F: Future<Output = String> + Send + 'static,
{
    let events = tx.clone();
    let why = watch(Box::new(move || {
        let _ = events.send(Event::Watch(g, v));
    }));
    let tx = tx.clone();
    tokio::spawn(async move {
        let why = why.await;
        let _ = tx.send(Event::WatchFailed(g, v, why));
    })
}
