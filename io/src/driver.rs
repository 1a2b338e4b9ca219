//! The async driver: carries out the core engine's decisions with real
//! resources, and feeds it real events and real time.
//!
//! One loop owns the engine. CheckApply runs in spawned tasks (so independent
//! vertices run in parallel); the engine guarantees a vertex never has two at
//! once, so each task takes its vertex's resources and hands them back.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mgmt_core::engine::{Engine, EngineConfig, Input, Output};
use mgmt_core::resource::{Kind, Params, ResourceId};
use mgmt_core::{Graph, Millis, VertexId};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use crate::exec::{self, ExecRes};
use crate::file;
use crate::fswatch::FsWatch;

/// How to run a graph.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Check only; report what would change.
    pub noop: bool,
    /// Stop once nothing has happened for this long.
    pub converged_timeout: Option<Duration>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// True if it stopped because it converged (rather than a signal).
    pub converged: bool,
    /// Resources whose vertex failed for good.
    pub failed: Vec<ResourceId>,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot start the file watcher: {0}")]
    Watcher(#[from] notify::Error),
}

enum Member {
    Noop,
    File(mgmt_core::resource::FileParams),
    Exec(ExecRes),
}

struct VertexRes {
    ids: Vec<ResourceId>,
    members: Vec<Member>,
}

/// What to watch for a vertex, fixed at start so a watch can restart while
/// its resources are out running a CheckApply.
enum WatchSpec {
    Path(ResourceId, String),
    Lines(mgmt_core::resource::Command, Arc<AtomicBool>),
}

enum Event {
    Watch(VertexId),
    WatchFailed(VertexId, String),
    Done {
        vertex: VertexId,
        res: Box<VertexRes>,
        result: Result<bool, String>,
    },
}

/// Runs `graph` until it converges (if a converged timeout is set) or until
/// `shutdown` completes. On return, no command it started is still running.
pub async fn run(
    graph: &Graph,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, DriverError> {
    let epoch = Instant::now();
    let now = || Millis(epoch.elapsed().as_millis() as u64);
    let config = EngineConfig {
        noop: opts.noop,
        converged_timeout: opts.converged_timeout.map(|d| Millis(d.as_millis() as u64)),
    };
    let mut engine = Engine::new(graph, config);
    let mut slots: Vec<Option<Box<VertexRes>>> = graph
        .vertices
        .iter()
        .map(|v| {
            let ids = v
                .members
                .iter()
                .map(|&m| graph.resources[m].id.clone())
                .collect();
            let members = v
                .members
                .iter()
                .map(|&m| match &graph.resources[m].params {
                    Params::Noop { .. } => Member::Noop,
                    Params::File(p) => Member::File(p.clone()),
                    Params::Exec(p) => Member::Exec(ExecRes::new(p.clone())),
                })
                .collect();
            Some(Box::new(VertexRes { ids, members }))
        })
        .collect();
    let specs: Vec<Vec<WatchSpec>> = slots
        .iter()
        .map(|res| {
            let res = res.as_deref().expect("all resources are home before start");
            res.ids
                .iter()
                .zip(&res.members)
                .filter_map(|(id, m)| match m {
                    Member::Noop => None,
                    Member::File(p) => Some(WatchSpec::Path(id.clone(), p.path.clone())),
                    Member::Exec(e) => e
                        .params
                        .watch
                        .clone()
                        .map(|c| WatchSpec::Lines(c, e.watch_fired.clone())),
                })
                .collect()
        })
        .collect();
    let (fs, mut fs_events) = FsWatch::new()?;
    let mut fs = fs;
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut running: JoinSet<()> = JoinSet::new();
    let mut watchers: BTreeMap<VertexId, Vec<JoinHandle<()>>> = BTreeMap::new();
    let mut converged = None;
    tokio::pin!(shutdown);

    engine.handle(now(), Input::Start);
    loop {
        while let Some(out) = engine.poll_output() {
            match out {
                Output::StartWatch(v) => {
                    start_watch(v, &specs[v], &mut fs, &tx, &mut watchers);
                }
                Output::CheckApply {
                    vertex,
                    apply,
                    refresh,
                } => {
                    let Some(mut res) = slots[vertex].take() else {
                        error!(
                            "{}: CheckApply requested while already running",
                            graph.vertex_id(vertex)
                        );
                        continue;
                    };
                    let tx = tx.clone();
                    let mut cancel = cancel_rx.clone();
                    running.spawn(async move {
                        let result =
                            check_apply_vertex(&mut res, apply, refresh, &mut cancel).await;
                        let _ = tx.send(Event::Done {
                            vertex,
                            res,
                            result,
                        });
                    });
                }
                Output::WillRetry {
                    vertex,
                    error,
                    retry_at,
                } => {
                    let in_ms = retry_at.0.saturating_sub(now().0);
                    warn!(
                        "{}: {error}; retrying in {in_ms} ms",
                        graph.vertex_id(vertex)
                    );
                }
                Output::FailedPermanently { vertex, error } => {
                    error!("{}: failed: {error}", graph.vertex_id(vertex));
                }
                Output::Converged { failed } => {
                    converged = Some(failed);
                }
            }
        }
        if converged.is_some() {
            break;
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
        tokio::select! {
            Some(ev) = rx.recv() => match ev {
                Event::Watch(v) => engine.handle(now(), Input::WatchEvent(v)),
                Event::WatchFailed(v, error) => engine.handle(now(), Input::WatchFailed { vertex: v, error }),
                Event::Done { vertex, res, result } => {
                    slots[vertex] = Some(res);
                    engine.handle(now(), Input::CheckApplyDone { vertex, result });
                }
            },
            Some(raw) = fs_events.recv() => {
                let t = now();
                for v in fs.vertices_for(raw) {
                    debug!("{}: watch event", graph.vertex_id(v));
                    engine.handle(t, Input::WatchEvent(v));
                }
            }
            () = sleep => engine.handle(now(), Input::Tick),
            () = &mut shutdown => {
                info!("shutting down");
                break;
            }
        }
    }

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
        converged: converged.is_some(),
        failed,
    })
}

fn start_watch(
    v: VertexId,
    specs: &[WatchSpec],
    fs: &mut FsWatch,
    tx: &mpsc::UnboundedSender<Event>,
    watchers: &mut BTreeMap<VertexId, Vec<JoinHandle<()>>>,
) {
    // A restart replaces whatever was there.
    fs.remove_vertex(v);
    for h in watchers.remove(&v).unwrap_or_default() {
        h.abort();
    }
    for spec in specs {
        match spec {
            WatchSpec::Path(id, path) => {
                if let Err(e) = fs.add(path, v) {
                    let _ = tx.send(Event::WatchFailed(v, format!("{id}: watch: {e}")));
                }
            }
            WatchSpec::Lines(cmd, fired) => {
                let (cmd, fired, tx) = (cmd.clone(), fired.clone(), tx.clone());
                let handle = tokio::spawn(async move {
                    let tx2 = tx.clone();
                    let why = exec::watch_lines(&cmd, move || {
                        fired.store(true, Ordering::SeqCst);
                        let _ = tx2.send(Event::Watch(v));
                    })
                    .await;
                    let _ = tx.send(Event::WatchFailed(v, why));
                });
                watchers.entry(v).or_default().push(handle);
            }
        }
    }
}

/// Runs CheckApply on every member of a vertex, in order. The vertex changed
/// if any member did; the first error fails it (later members still run, so a
/// group makes as much progress as it can).
async fn check_apply_vertex(
    res: &mut VertexRes,
    apply: bool,
    refresh: bool,
    cancel: &mut watch::Receiver<bool>,
) -> Result<bool, String> {
    let mut changed = false;
    let mut first_error = None;
    for (id, m) in res.ids.iter().zip(res.members.iter_mut()) {
        let started = Instant::now();
        let result = match m {
            Member::Noop => Ok(Vec::new()),
            Member::File(p) => {
                let p = p.clone();
                match tokio::task::spawn_blocking(move || file::check_apply(&p, apply)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("file task failed: {e}")),
                }
            }
            Member::Exec(e) => e.check_apply(apply, refresh, cancel).await,
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(changes) if changes.is_empty() => {
                if id.kind != Kind::Noop {
                    debug!("{id}: CheckApply: ok ({ms:.1} ms)");
                }
            }
            Ok(changes) => {
                changed = true;
                let verb = if apply { "" } else { "would have: " };
                info!(
                    "{id}: CheckApply: {verb}{} ({ms:.1} ms)",
                    changes.join(", ")
                );
            }
            Err(e) => {
                first_error.get_or_insert(format!("{id}: {e}"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(changed),
    }
}
