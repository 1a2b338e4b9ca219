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
//! task and two thread hand-offs per file. When the engine names the members
//! a run covers (`Members::Only`: what the file watch saw), just those are
//! checked: a drift on one of 10 000 files checks one file.
//!
//! - `members`: what the driver holds to run each member, and the CheckApply
//!   of a vertex's members;
//! - `watches`: what each vertex watches, and starting those watches;
//! - `files`: a vertex's file members, checked on a thread per core;
//! - `report`: each resource's CheckApplies, tallied for the run's report.

mod event;
mod files;
mod members;
mod report;
mod watches;

use event::Event;
use members::{Backends, build_slots, carry_members, check_apply_vertex};
use report::Tally;
pub use report::{CHANGES_KEPT, ResourceRun, RunReport};
use watches::{WatchSpec, start_watch, watch_graph_file, watch_specs};

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mgmt_core::engine::{Engine, EngineConfig, Input, Members, Output};
use mgmt_core::resource::{Kind, Params, ResourceId};
use mgmt_core::{Graph, Millis, VertexId};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use crate::fswatch::FsWatch;
use crate::{CheckApplyError, OwnWrites};
use crate::{pkg, svc};

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
        _result: &Result<Vec<String>, CheckApplyError>,
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
/// why there is none (the located diagnostics, a file that cannot be read):
/// the caller's error, which the driver only reports.
pub type Compiled = Result<Option<(Graph, u64)>, Box<dyn std::error::Error + Send + Sync>>;

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
    // The renames this run's writes make, told to each graph's watcher so
    // their echoes are not taken for drift.
    let own_writes = OwnWrites::default();
    let mut specs = watch_specs(&slots, &packages);
    clean_up_after_a_killed_run(&graph, opts.noop);
    // Without an inotify instance (the per-user limit reached, with many
    // agents on one machine) the agent goes on: its store keeps serving, each
    // file resource's watch fails on its own, naming the cause, and the
    // watcher is tried again every second; once it starts, those watches are
    // armed and their resources checked again.
    let (mut fs, mut fs_events) = FsWatch::new(own_writes.clone());
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
                        own_writes: own_writes.clone(),
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
            let (new_fs, new_events) = FsWatch::new(own_writes.clone());
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
