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
//! - `running`: the graph being run, and carrying out the engine's outputs
//!   for it (a changeover included); `run` only waits for the next event;
//! - `options`: how a run is asked to go, and what it reports as it goes;
//! - `members`: what the driver holds to run each member, and the CheckApply
//!   of a vertex's members;
//! - `event`: what its tasks tell the loop;
//! - `watches`: what each vertex watches, and starting those watches;
//! - `files`: a vertex's file members, checked on a thread per core;
//! - `report`: each resource's CheckApplies, tallied for the run's report.

mod event;
mod files;
mod members;
mod options;
mod report;
mod running;
mod watches;

pub use options::{Observer, Progress, RunOptions};
pub use report::{CHANGES_KEPT, ResourceRun, RunReport};
use running::Running;
use watches::watch_graph_file;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mgmt_core::Graph;
use mgmt_core::engine::Input;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot start the file watcher: {0}")]
    Watcher(#[from] notify::Error),
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
/// SIGHUP) changes the graph over while it runs: see
/// [`mgmt_core::changeover`]. On
/// return, no command it started is still running.
pub async fn run(
    graph: Graph,
    opts: RunOptions,
    reload: Option<Reload>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, DriverError> {
    // A single pass watches nothing, its graph file included.
    let single_pass = opts.single_pass();
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
    let mut revive = tokio::time::interval(WATCHER_RETRY);
    tokio::pin!(shutdown);

    let mut run = Running::start(graph, opts).await;
    loop {
        run.carry_out();
        if run.converged.is_some() {
            break;
        }
        // The engine drained for the new graph: every CheckApply is home.
        if run.take_drained()
            && let Some((new, new_tag)) = pending.take()
        {
            run.change_over(new, new_tag);
            continue;
        }
        let deadline = run
            .engine
            .poll_timeout()
            .map(|t| run.epoch + Duration::from_millis(t.0));
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
        let watching_for_a_watcher = !run.unwatched.is_empty();
        tokio::select! {
            Some(ev) = run.rx.recv() => run.on_event(ev),
            Some(raw) = run.fs_events.recv() => run.on_file_event(raw),
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
                        run.handle(Input::NewGraphWaiting);
                    }
                    Ok(Ok(None)) => debug!("{}: unchanged", path.display()),
                    Ok(Err(e)) => error!("{e}\nthe running graph goes on unchanged"),
                    Err(e) => error!("{}: the reload failed: {e}; the running graph goes on", path.display()),
                }
            }
            () = sleep => run.handle(Input::Tick),
            _ = revive.tick(), if watching_for_a_watcher => run.revive_watcher(),
            () = &mut shutdown => {
                info!("shutting down");
                break;
            }
        }
    }
    Ok(run.finish().await)
}
