//! The async driver: carries out the core engine's decisions with real
//! resources, and feeds it real events and real time.
//!
//! One loop owns the engine. CheckApply runs in spawned tasks (so independent
//! vertices run in parallel); the engine guarantees a vertex never has two at
//! once, so each task takes its vertex's resources and hands them back.
//!
//! A grouped vertex can hold thousands of files. Its file members run in one
//! blocking task, spread over a few threads (members of a group have no path
//! between them, so their order does not matter), rather than one blocking
//! task and two thread hand-offs per file. When the engine says a run is due
//! only to the vertex's own watch (`full: false`), just the members the watch
//! events named are checked: a drift on one of 10 000 files checks one file.

mod files;
mod report;

pub use report::{CHANGES_KEPT, ResourceRun, RunReport};
use report::{MemberOutcome, Tally};

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mgmt_core::engine::{Engine, EngineConfig, Input, Members, Output};
use mgmt_core::resource::{
    FileParams, GroupParams, Kind, LineParams, MountParams, Params, PkgParams, ResourceId,
    SvcParams, SysctlParams, UserParams,
};
use mgmt_core::{Graph, Millis, VertexId};
use notify::RecommendedWatcher;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use crate::account;
use crate::exec::{self, ExecRes};
use crate::fswatch::FsWatch;
use crate::line;
use crate::mount;
use crate::msg;
use crate::pkg;
use crate::procwatch;
use crate::svc;
use crate::sysctl;

/// How to run a graph.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Check only; report what would change.
    pub noop: bool,
    /// Stop once nothing has happened for this long.
    pub converged_timeout: Option<Duration>,
    /// Where the run says how far it is (systemd's readiness and STATUS=).
    pub progress: Option<watch::Sender<Progress>>,
    /// Told of every CheckApply, watch event, retry and failure (metrics).
    pub observer: Option<Arc<dyn Observer>>,
    /// The caller's name for the first graph (a deploy id), reported in
    /// [`Progress::tag`] while it runs.
    pub tag: u64,
}

/// What a run reports as it goes, for metrics. Every method has a default
/// that does nothing; calls come from the driver's loop, so they must be
/// quick.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// The resources of the graph now running, counted by kind.
    fn graph(&self, _resources_by_kind: &BTreeMap<Kind, usize>) {}
    /// One resource's CheckApply: `Ok` with what it changed, or the error.
    fn check_applied(
        &self,
        _id: &ResourceId,
        _apply: bool,
        _result: &Result<Vec<String>, String>,
        _duration: Duration,
    ) {
    }
    fn watch_event(&self, _kind: Kind) {}
    /// A failure that will be retried (a soft failure, in upstream's words).
    fn retry(&self, _kind: Kind) {}
    /// A vertex of these kinds failed for good (hard).
    fn failed(&self, _kind: Kind) {}
    /// Whether everything has settled.
    fn converged(&self, _converged: bool) {}
}

fn kinds(graph: &Graph) -> BTreeMap<Kind, usize> {
    let mut by_kind = BTreeMap::new();
    for r in &graph.resources {
        *by_kind.entry(r.id.kind).or_insert(0) += 1;
    }
    by_kind
}

/// How far a run is, published whenever it changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every vertex has run and nothing runs or waits for a retry; stays
    /// true from the first time until something runs again.
    pub idle: bool,
    /// It has been idle once: the graph converged (or failed for good) at
    /// least once.
    pub ready: bool,
    /// Vertices whose CheckApply is running, of all vertices.
    pub running: usize,
    pub vertices: usize,
    /// Resources of the graph, and those that failed for good.
    pub resources: usize,
    pub failed: usize,
    /// The tag of the graph running now ([`RunOptions::tag`], [`Reload::compile`]).
    pub tag: u64,
    /// CheckApplies that changed something (or would have, under noop),
    /// since the run started.
    pub changed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot start the file watcher: {0}")]
    Watcher(#[from] notify::Error),
}

/// What the driver holds to run one member's CheckApply: its parameters,
/// or the state an exec or a msg keeps between runs.
enum MemberState {
    Noop,
    File(Arc<FileParams>),
    Exec(ExecRes),
    Pkg(Arc<PkgParams>),
    Svc(Arc<SvcParams>),
    /// Its CheckApply is a tick: it reports a change, so its children refresh.
    Timer,
    Msg(msg::MsgRes),
    User(Arc<UserParams>),
    Group(Arc<GroupParams>),
    /// Checked and applied with the other lines of its file, in one write.
    Line(Arc<LineParams>),
    Sysctl(Arc<SysctlParams>),
    Mount(Arc<MountParams>),
    Hostname(Arc<str>),
}

/// What the watches of one vertex saw since its last CheckApply.
#[derive(Default)]
struct VertexRes {
    ids: Vec<ResourceId>,
    members: Vec<MemberState>,
}

/// What to watch for a vertex, fixed at start so a watch can restart while
/// its resources are out running a CheckApply.
enum WatchSpec {
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
    fn uses_inotify(&self) -> bool {
        matches!(self, WatchSpec::Path(..) | WatchSpec::Tree(..))
    }
}

/// `Watch` and `WatchFailed` carry the generation of the graph whose watch
/// sent them.
enum Event {
    Watch(u64, VertexId),
    WatchFailed(u64, VertexId, String),
    Done {
        vertex: VertexId,
        res: Box<VertexRes>,
        result: Result<bool, String>,
        outcomes: Vec<MemberOutcome>,
        apply: bool,
    },
}

/// Removes what a run killed mid-write left beside the managed files: its
/// temp files (targets are never half-written; the temp files just stay).
fn clean_up_after_a_killed_run(graph: &Graph, noop: bool) {
    // A resource with `meta: {noop: true}` changes nothing, temp files included.
    let paths = graph.resources.iter().filter_map(|r| match &r.params {
        Params::File(p) if !r.meta.noop => Some(p.path.as_str()),
        Params::Line(p) if !r.meta.noop => Some(p.path.as_str()),
        Params::Sysctl(p) if !r.meta.noop => p.persist.as_deref(),
        _ => None,
    });
    for stale in crate::file::remove_stale_temp_files(paths, !noop) {
        let path = stale.path.display();
        match stale.error {
            None if noop => info!("would remove {path}, left by a killed run"),
            None => info!("removed {path}, left by a killed run"),
            Some(e) => warn!("cannot remove {path}, left by a killed run: {e}"),
        }
    }
}

/// What [`Reload::compile`] gives: a new graph and its tag, nothing new, or
/// the diagnostics.
pub type Compiled = Result<Option<(Graph, u64)>, String>;

/// How a running graph is replaced when its file changes (or on SIGHUP).
pub struct Reload {
    /// The graph file, if the graph comes from one: its directory is watched
    /// for writes and renames, and SIGHUP reads it again.
    pub path: Option<PathBuf>,
    /// Reads and compiles the graph again: `Ok(None)` if its text is what
    /// runs now, `Err` with the located diagnostics if it does not compile
    /// (the running graph then goes on as it is). With the graph, the tag
    /// [`Progress::tag`] reports once it runs.
    pub compile: Box<dyn FnMut() -> Compiled + Send>,
    /// Something else the graph is compiled from changed (collected exports):
    /// compile again now.
    pub trigger: Option<mpsc::UnboundedReceiver<()>>,
}

/// How often a process without an inotify instance tries again to get one.
const WATCHER_RETRY: Duration = Duration::from_secs(1);

/// Quiet time after the last finished write or rename of the graph file
/// before it is read: an editor's save may be several.
const RELOAD_SETTLE: Duration = Duration::from_millis(10);

/// The members of each vertex of `graph`, each made by `member` from its
/// resource's index.
fn slots_of(
    graph: &Graph,
    mut member: impl FnMut(usize) -> MemberState,
) -> Vec<Option<Box<VertexRes>>> {
    graph
        .vertices
        .iter()
        .map(|v| {
            let ids = v
                .members
                .iter()
                .map(|&m| graph.resources[m].id.clone())
                .collect();
            let members = v.members.iter().map(|&m| member(m)).collect();
            Some(Box::new(VertexRes { ids, members }))
        })
        .collect()
}

/// The members of each vertex, built from the graph's parameters.
fn build_slots(graph: &Graph) -> Vec<Option<Box<VertexRes>>> {
    slots_of(graph, |m| new_member(&graph.resources[m].params))
}

fn new_member(params: &Params) -> MemberState {
    match params {
        Params::Noop { .. } => MemberState::Noop,
        Params::File(p) => MemberState::File(Arc::new(p.clone())),
        Params::Exec(p) => MemberState::Exec(ExecRes::new(p.clone())),
        Params::Pkg(p) => MemberState::Pkg(Arc::new(p.clone())),
        Params::Svc(p) => MemberState::Svc(Arc::new(p.clone())),
        Params::Timer { .. } => MemberState::Timer,
        Params::Msg(p) => MemberState::Msg(msg::MsgRes::new(p.clone())),
        Params::User(p) => MemberState::User(Arc::new(p.clone())),
        Params::Group(p) => MemberState::Group(Arc::new(p.clone())),
        Params::Line(p) => MemberState::Line(Arc::new(p.clone())),
        Params::Sysctl(p) => MemberState::Sysctl(Arc::new(p.clone())),
        Params::Mount(p) => MemberState::Mount(Arc::new(p.clone())),
        Params::Hostname { hostname } => MemberState::Hostname(Arc::from(hostname.as_str())),
    }
}

/// What to watch for each vertex, fixed when its graph starts so a watch can
/// restart while its resources are out running a CheckApply.
fn watch_specs(slots: &[Option<Box<VertexRes>>], packages: &pkg::Backend) -> Vec<Vec<WatchSpec>> {
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
fn watch_graph_file(
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

/// Runs `graph` until it converges (if a converged timeout is set) or until
/// `shutdown` completes. With `reload`, a change to the graph file (or a
/// SIGHUP) changes the graph over while it runs: see [`changeover`]. On
/// return, no command it started is still running.
pub async fn run(
    graph: Graph,
    opts: RunOptions,
    reload: Option<Reload>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, DriverError> {
    let mut graph = graph;
    let epoch = Instant::now();
    let now = || Millis(epoch.elapsed().as_millis() as u64);
    let config = EngineConfig {
        noop: opts.noop,
        converged_timeout: opts.converged_timeout.map(|d| Millis(d.as_millis() as u64)),
    };
    let mut engine = Engine::new(&graph, config.clone());
    // Vertices failed for good, for `Progress`: counted as the engine says
    // so, not scanned for on every turn of the loop.
    let mut failed_for_good = 0;
    let mut slots = build_slots(&graph);
    let mut tally = Tally::default();
    tally.add_graph(&graph);
    if let Some(o) = &opts.observer {
        o.graph(&kinds(&graph));
    }
    let packages = pkg::Backend::new();
    let services = Arc::new(svc::Backend::default());
    let mut specs = watch_specs(&slots, &packages);
    clean_up_after_a_killed_run(&graph, opts.noop);
    // Without an inotify instance (the per-user limit reached, with many
    // agents on one machine) the agent goes on: its store keeps serving, each
    // file resource's watch fails on its own, naming the cause, and the
    // watcher is tried again every second; once it starts, those watches are
    // armed and their resources checked again.
    let (mut fs, mut fs_events) = FsWatch::new();
    if let Some(why) = fs.unavailable() {
        error!("{why}; file resources are checked but not watched until it starts");
    }
    let mut unwatched: BTreeSet<VertexId> = BTreeSet::new();
    let mut revive = tokio::time::interval(WATCHER_RETRY);
    // The previous graph's watcher, kept until the new one has armed its
    // watches, so no change falls between the two.
    let mut retired_fs: Option<FsWatch> = None;
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut running: JoinSet<()> = JoinSet::new();
    let mut watchers: BTreeMap<VertexId, Vec<JoinHandle<()>>> = BTreeMap::new();
    let mut converged = None;
    // Which graph an event belongs to: a watch of a replaced graph may have
    // sent one just before it was stopped.
    let mut generation: u64 = 0;
    // A single pass watches nothing, its graph file included.
    let single_pass = config.converged_timeout == Some(Millis(0));
    let mut reload = reload.filter(|_| !single_pass);
    let reload_path = reload.as_ref().and_then(|r| r.path.clone());
    let mut trigger = reload.as_mut().and_then(|r| r.trigger.take());
    // Compiling may take a while (package file lists): off the loop, on a
    // blocking thread, one at a time.
    let compiler = reload.map(|r| Arc::new(std::sync::Mutex::new(r.compile)));
    let mut compiling: Option<JoinHandle<Compiled>> = None;
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel::<()>();
    let _graph_watch = match &reload_path {
        Some(path) => match watch_graph_file(path, reload_tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    "cannot watch {}: {e}; SIGHUP still reloads it",
                    path.display()
                );
                None
            }
        },
        None => None,
    };
    let mut hangup = match &reload_path {
        Some(_) => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        None => None,
    };
    let mut reload_at: Option<Instant> = None;
    let mut pending: Option<(Graph, u64)> = None;
    let mut tag = opts.tag;
    let mut changed: u64 = 0;
    // The engine has drained for the pending graph: it may replace this one.
    let mut drained = false;
    tokio::pin!(shutdown);

    engine.handle(now(), Input::Start);
    loop {
        while let Some(out) = engine.poll_output() {
            match out {
                Output::StartWatch(v) => {
                    start_watch(
                        v,
                        &specs[v],
                        &mut fs,
                        &tx,
                        &mut watchers,
                        &services,
                        generation,
                    );
                    if fs.unavailable().is_some() && specs[v].iter().any(WatchSpec::uses_inotify) {
                        unwatched.insert(v);
                    }
                }
                Output::CheckApply {
                    vertex,
                    apply,
                    refresh,
                    members,
                } => {
                    let Some(mut res) = slots[vertex].take() else {
                        error!(
                            "{}: CheckApply requested while already running",
                            graph.vertex_id(vertex)
                        );
                        continue;
                    };
                    let which: Vec<usize> = match members {
                        Members::All => (0..res.members.len()).collect(),
                        Members::Only(which) => which,
                    };
                    let tx = tx.clone();
                    let mut cancel = cancel_rx.clone();
                    let backends = Backends {
                        packages: packages.clone(),
                        services: services.clone(),
                    };
                    running.spawn(async move {
                        let (result, outcomes) = check_apply_vertex(
                            &mut res,
                            &which,
                            apply,
                            refresh,
                            &mut cancel,
                            &backends,
                        )
                        .await;
                        let _ = tx.send(Event::Done {
                            vertex,
                            res,
                            result,
                            outcomes,
                            apply,
                        });
                    });
                }
                Output::WillRetry {
                    vertex,
                    error,
                    retry_at,
                } => {
                    // Relative to the engine's clock: the delay it decided, not the
                    // time this log line happens to be written.
                    let in_ms = retry_at.0.saturating_sub(engine.now().0);
                    let id = graph.vertex_id(vertex);
                    if let Some(o) = &opts.observer {
                        o.retry(id.kind);
                    }
                    warn!(
                        resource = %id,
                        action = "retry",
                        "{id}: {error}; retrying in {in_ms} ms"
                    );
                }
                Output::FailedPermanently { vertex, error } => {
                    failed_for_good += 1;
                    let id = graph.vertex_id(vertex);
                    if let Some(o) = &opts.observer {
                        o.failed(id.kind);
                    }
                    error!(resource = %id, action = "failed", "{id}: failed: {error}");
                }
                Output::Drained => drained = true,
                Output::Converged { failed } => {
                    converged = Some(failed);
                }
            }
        }
        if let Some(o) = &opts.observer {
            o.converged(engine.idle());
        }
        if let Some(progress) = &opts.progress {
            let idle = engine.idle();
            let now = Progress {
                idle,
                ready: idle || progress.borrow().ready,
                running: engine.running(),
                vertices: graph.vertices.len(),
                resources: graph.resources.len(),
                failed: failed_for_good,
                tag,
                changed,
            };
            progress.send_if_modified(|p| std::mem::replace(p, now) != now);
        }
        // The new graph's watches are armed: the old watcher may go.
        drop(retired_fs.take());
        if converged.is_some() {
            break;
        }
        // The engine drained for the new graph: every CheckApply is home.
        if std::mem::take(&mut drained)
            && let Some((new, new_tag)) = pending.take()
        {
            // A fresh watcher first: without one the running graph goes on.
            let (new_fs, new_events) = FsWatch::new();
            if let Some(why) = new_fs.unavailable() {
                error!("{why}: no watcher for the new graph; the running graph goes on");
                engine.handle(now(), Input::NewGraphAbandoned);
                continue;
            }
            // Drift already seen but not yet handed to the engine: a vertex it
            // touches has not settled.
            while let Ok(raw) = fs_events.try_recv() {
                let members = fs.members_for(raw).into_iter().collect();
                engine.handle(now(), Input::MembersChanged(members));
            }
            for (_, handles) in std::mem::take(&mut watchers) {
                for h in handles {
                    h.abort();
                }
            }
            generation += 1;
            let plan = mgmt_core::changeover::plan(&graph, &new, |v| engine.settled(v));
            info!(
                "changeover to graph {:?}: {} resources kept, {} started, {} stopped",
                new.name,
                plan.kept.iter().flatten().count(),
                plan.started.len(),
                plan.stopped.len()
            );
            tally.add_graph(&new);
            if let Some(o) = &opts.observer {
                o.graph(&kinds(&new));
            }
            slots = carry_members(&graph, std::mem::take(&mut slots), &new, &plan);
            specs = watch_specs(&slots, &packages);
            retired_fs = Some(std::mem::replace(&mut fs, new_fs));
            fs_events = new_events;
            clean_up_after_a_killed_run(&new, opts.noop);
            engine = Engine::resume(&new, config.clone(), &plan.carried);
            failed_for_good = engine.failed().len();
            graph = new;
            tag = new_tag;
            engine.handle(now(), Input::Start);
            continue;
        }
        let deadline = engine
            .poll_timeout()
            .map(|t| epoch + Duration::from_millis(t.0));
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let busy = compiling.is_some();
        let reload_due = async {
            match reload_at {
                Some(t) if !busy => tokio::time::sleep_until(t.into()).await,
                _ => std::future::pending().await,
            }
        };
        let compiled = async {
            match &mut compiling {
                Some(h) => h.await,
                None => std::future::pending().await,
            }
        };
        let poked = async {
            match &mut trigger {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        let hup = async {
            match &mut hangup {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(ev) = rx.recv() => match ev {
                Event::Watch(g, v) if g == generation => {
                    if let Some(o) = &opts.observer {
                        o.watch_event(graph.vertex_id(v).kind);
                    }
                    engine.handle(now(), Input::WatchEvent(v));
                }
                Event::WatchFailed(g, v, error) if g == generation => {
                    engine.handle(now(), Input::WatchFailed { vertex: v, error })
                }
                Event::Watch(..) | Event::WatchFailed(..) => {}
                Event::Done {
                    vertex,
                    res,
                    result,
                    outcomes,
                    apply,
                } => {
                    if let Some(o) = &opts.observer {
                        for (i, result, ms) in &outcomes {
                            let took = Duration::from_secs_f64(ms / 1000.0);
                            o.check_applied(&res.ids[*i], apply, result, took);
                        }
                    }
                    changed += outcomes
                        .iter()
                        .filter(|(_, r, _)| r.as_ref().is_ok_and(|c| !c.is_empty()))
                        .count() as u64;
                    tally.record(&res.ids, outcomes);
                    slots[vertex] = Some(res);
                    engine.handle(now(), Input::CheckApplyDone { vertex, result });
                }
            },
            Some(raw) = fs_events.recv() => {
                // Every vertex this change concerns, told to the engine at
                // once (a parent and its child watching one file: the
                // parent runs first).
                let members: Vec<(VertexId, usize)> = fs.members_for(raw).into_iter().collect();
                for (i, &(v, _)) in members.iter().enumerate() {
                    if i == 0 || members[i - 1].0 != v {
                        if let Some(o) = &opts.observer {
                            o.watch_event(graph.vertex_id(v).kind);
                        }
                        debug!("{}: watch event", graph.vertex_id(v));
                    }
                }
                if !members.is_empty() {
                    engine.handle(now(), Input::MembersChanged(members));
                }
            }
            Some(()) = reload_rx.recv() => {
                reload_at = Some(Instant::now() + RELOAD_SETTLE);
            }
            Some(()) = poked => {
                reload_at = Some(Instant::now());
            }
            Some(()) = hup => {
                info!("SIGHUP: reloading the graph");
                reload_at = Some(Instant::now());
            }
            () = reload_due => {
                reload_at = None;
                if let Some(c) = &compiler {
                    let c = c.clone();
                    compiling = Some(tokio::task::spawn_blocking(move || {
                        let mut compile = c.lock().unwrap_or_else(|e| e.into_inner());
                        compile()
                    }));
                }
            }
            r = compiled => {
                compiling = None;
                let path = reload_path.as_deref().unwrap_or(Path::new("the graph"));
                match r {
                    Ok(Ok(Some(new))) => {
                        pending = Some(new);
                        engine.handle(now(), Input::NewGraphWaiting);
                    }
                    Ok(Ok(None)) => debug!("{}: unchanged", path.display()),
                    Ok(Err(e)) => error!("{e}\nthe running graph goes on unchanged"),
                    Err(e) => error!("{}: the reload failed: {e}; the running graph goes on", path.display()),
                }
            }
            () = sleep => engine.handle(now(), Input::Tick),
            _ = revive.tick(), if !unwatched.is_empty() => {
                if fs.revive() {
                    info!("the file watcher started: file resources are watched again");
                    let again: Vec<VertexId> = std::mem::take(&mut unwatched).into_iter().collect();
                    for &v in &again {
                        start_watch(v, &specs[v], &mut fs, &tx, &mut watchers, &services, generation);
                    }
                    // Whatever changed meanwhile went unseen: check them again.
                    engine.handle(now(), Input::WatchEvents(again));
                }
            }
            () = &mut shutdown => {
                info!("shutting down");
                break;
            }
        }
    }
    drop(retired_fs);

    // Stop watches (their drop kills watch commands), end running commands,
    // and let in-flight file writes finish: they are short and atomic.
    for (_, handles) in watchers {
        for h in handles {
            h.abort();
        }
    }
    let _ = cancel_tx.send(true);
    while running.join_next().await.is_some() {}
    drop(fs);

    let failed_vertices = converged.clone().unwrap_or_else(|| engine.failed());
    let failed = failed_vertices
        .iter()
        .flat_map(|&v| {
            graph.vertices[v]
                .members
                .iter()
                .map(|&m| graph.resources[m].id.clone())
        })
        .collect();
    Ok(RunReport {
        graph: graph.name.clone(),
        converged: converged.is_some(),
        failed,
        resources: tally.into_runs(),
    })
}

/// The new graph's members: a kept resource brings its live member (what a
/// command or a message remembers) from wherever it was grouped before; the
/// others are built afresh.
fn carry_members(
    old: &Graph,
    old_slots: Vec<Option<Box<VertexRes>>>,
    new: &Graph,
    plan: &mgmt_core::changeover::Plan,
) -> Vec<Option<Box<VertexRes>>> {
    let mut by_resource: Vec<Option<MemberState>> =
        (0..old.resources.len()).map(|_| None).collect();
    for (v, slot) in old_slots.into_iter().enumerate() {
        let Some(res) = slot else { continue };
        for (k, member) in res.members.into_iter().enumerate() {
            by_resource[old.vertices[v].members[k]] = Some(member);
        }
    }
    slots_of(new, |m| {
        plan.kept[m]
            .and_then(|o| by_resource[o].take())
            .unwrap_or_else(|| new_member(&new.resources[m].params))
    })
}

fn start_watch(
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
fn spawn_watch<W, F>(
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

/// The shared backends a CheckApply may need.
struct Backends {
    packages: Arc<pkg::Backend>,
    services: Arc<svc::Backend>,
}

/// Runs CheckApply on the members `which` (indices, ascending) of a vertex.
/// The vertex changed if any member did; the first error fails it (later
/// members still run, so a group makes as much progress as it can). File
/// members run together off the runtime; results are logged in member order.
async fn check_apply_vertex(
    res: &mut VertexRes,
    which: &[usize],
    apply: bool,
    refresh: bool,
    cancel: &mut watch::Receiver<bool>,
    backends: &Backends,
) -> (Result<bool, String>, Vec<MemberOutcome>) {
    let files: Vec<(usize, Arc<FileParams>)> = which
        .iter()
        .filter_map(|&i| match &res.members[i] {
            MemberState::File(p) => Some((i, p.clone())),
            _ => None,
        })
        .collect();
    let mut outcomes: BTreeMap<usize, (Result<Vec<String>, String>, f64)> = BTreeMap::new();
    if !files.is_empty() {
        let idx: Vec<usize> = files.iter().map(|(i, _)| *i).collect();
        match tokio::task::spawn_blocking(move || files::check_apply_files(&files, apply)).await {
            Ok(done) => outcomes.extend(done.into_iter().map(|(i, r, ms)| (i, (r, ms)))),
            Err(e) => {
                for i in idx {
                    outcomes.insert(i, (Err(format!("file task failed: {e}")), 0.0));
                }
            }
        }
    }
    let pkgs: Vec<(usize, Arc<PkgParams>)> = which
        .iter()
        .filter_map(|&i| match &res.members[i] {
            MemberState::Pkg(p) => Some((i, p.clone())),
            _ => None,
        })
        .collect();
    if !pkgs.is_empty() {
        // One batch: the vertex's packages share transactions.
        let started = Instant::now();
        let done = pkg::check_apply(&backends.packages, &pkgs, apply).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        outcomes.extend(done.into_iter().map(|(i, r)| (i, (r, ms))));
    }
    let mut lines: BTreeMap<String, Vec<(usize, Arc<LineParams>)>> = BTreeMap::new();
    for &i in which {
        if let MemberState::Line(p) = &res.members[i] {
            lines
                .entry(p.path.clone())
                .or_default()
                .push((i, p.clone()));
        }
    }
    for (path, members) in lines {
        // One read and one write per file, whatever the number of lines.
        let idx: Vec<usize> = members.iter().map(|(i, _)| *i).collect();
        let started = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let params: Vec<&LineParams> = members.iter().map(|(_, p)| &**p).collect();
            line::check_apply(&path, &params, apply)
        })
        .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match done {
            Ok(Ok(results)) => {
                for (i, r) in idx.into_iter().zip(results) {
                    outcomes.insert(i, (r.map_err(|e| e.to_string()), ms));
                }
            }
            // The file's own trouble is every member's.
            Ok(Err(e)) => {
                for i in idx {
                    outcomes.insert(i, (Err(e.to_string()), ms));
                }
            }
            Err(e) => {
                for i in idx {
                    outcomes.insert(i, (Err(format!("line task failed: {e}")), ms));
                }
            }
        }
    }
    for &i in which {
        let started = Instant::now();
        let result = match &mut res.members[i] {
            MemberState::File(_) | MemberState::Pkg(_) | MemberState::Line(_) => continue,
            MemberState::User(p) => account::check_apply_user(p, apply)
                .await
                .map_err(|e| e.to_string()),
            MemberState::Group(p) => account::check_apply_group(p, apply)
                .await
                .map_err(|e| e.to_string()),
            MemberState::Mount(p) => mount::check_apply(p, apply)
                .await
                .map_err(|e| e.to_string()),
            MemberState::Hostname(name) => crate::hostname::check_apply(name, apply)
                .await
                .map_err(|e| e.to_string()),
            MemberState::Sysctl(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || sysctl::check_apply(&p, apply))
                    .await
                    .map_err(|e| format!("sysctl task failed: {e}"))
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            MemberState::Noop => Ok(Vec::new()),
            MemberState::Exec(e) => e
                .check_apply(apply, refresh, cancel)
                .await
                .map_err(|e| e.to_string()),
            MemberState::Svc(p) => svc::check_apply(&backends.services, p, apply, refresh)
                .await
                .map_err(|e| e.to_string()),
            MemberState::Timer => Ok(vec!["tick".to_string()]),
            MemberState::Msg(m) => m
                .check_apply(&res.ids[i].to_string(), apply, refresh)
                .map_err(|e| e.to_string()),
        };
        outcomes.insert(i, (result, started.elapsed().as_secs_f64() * 1000.0));
    }
    let mut changed = false;
    let mut first_error = None;
    let mut done = Vec::with_capacity(outcomes.len());
    for (i, (result, ms)) in outcomes {
        let id = &res.ids[i];
        match &result {
            Ok(changes) if changes.is_empty() => {
                if id.kind != Kind::Noop {
                    debug!("{id}: CheckApply: ok ({ms:.1} ms)");
                }
            }
            Ok(changes) => {
                changed = true;
                let verb = if apply { "" } else { "would have: " };
                info!(
                    resource = %id,
                    action = "CheckApply",
                    duration_ms = ms,
                    "{id}: CheckApply: {verb}{} ({ms:.1} ms)",
                    changes.join(", ")
                );
            }
            Err(e) => {
                first_error.get_or_insert(format!("{id}: {e}"));
            }
        }
        done.push((i, result, ms));
    }
    let result = match first_error {
        Some(e) => Err(e),
        None => Ok(changed),
    };
    (result, done)
}
