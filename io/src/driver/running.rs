//! The graph a run is running: its engine, its members, its watches, and
//! carrying out what the engine says, a changeover included.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mgmt_core::engine::{Engine, EngineConfig, Input, Members, Output};
use mgmt_core::resource::{Kind, Params};
use mgmt_core::{Graph, Millis, VertexId};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use super::event::Event;
use super::members::{Backends, VertexRes, build_slots, carry_members, check_apply_vertex};
use super::options::{Progress, RunOptions};
use super::report::{RunReport, Tally};
use super::watches::{WatchSpec, start_watch, watch_specs};
use crate::fswatch::{FsWatch, RawEvent};
use crate::own_writes::CleanUpDone;
use crate::{OwnWrites, pkg, svc};

/// One run: the graph it runs now and everything that carries the engine's
/// outputs out for it.
pub(super) struct Running {
    pub(super) graph: Graph,
    pub(super) engine: Engine,
    config: EngineConfig,
    opts: RunOptions,
    /// The engine's time zero.
    pub(super) epoch: Instant,
    /// Vertices failed for good, for `Progress`: counted as the engine says
    /// so, not scanned for on every turn of the loop.
    failed_for_good: usize,
    /// Each vertex's members; `None` while a CheckApply has them.
    slots: Vec<Option<Box<VertexRes>>>,
    specs: Vec<Vec<WatchSpec>>,
    tally: Tally,
    backends: Backends,
    pub(super) fs: FsWatch,
    pub(super) fs_events: mpsc::UnboundedReceiver<RawEvent>,
    /// The previous graph's watcher, kept until the new one has armed its
    /// watches, so no change falls between the two.
    retired_fs: Option<FsWatch>,
    /// Vertices whose file watches wait for a watcher that can start.
    pub(super) unwatched: BTreeSet<VertexId>,
    watchers: BTreeMap<VertexId, Vec<JoinHandle<()>>>,
    /// Which graph an event belongs to: a watch of a replaced graph may have
    /// sent one just before it was stopped.
    generation: u64,
    tx: mpsc::UnboundedSender<Event>,
    pub(super) rx: mpsc::UnboundedReceiver<Event>,
    cancel_tx: watch::Sender<bool>,
    running: JoinSet<()>,
    /// The caller's name for the graph running now ([`Progress::tag`]).
    tag: u64,
    /// Resources changed so far ([`Progress::changed`]).
    changed: u64,
    /// The engine drained for a waiting graph: it may replace this one.
    drained: bool,
    pub(super) converged: Option<Vec<VertexId>>,
    /// The clean-up of a killed run's temp files, until the run ends.
    clean_up: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts `graph`: its members built, its killed writes cleaned up, the
    /// engine started. The clean-up reads every managed file's directory: it
    /// runs on a blocking thread while this one builds the rest and the
    /// first checks run; no temp file is written before it is done
    /// ([`OwnWrites::after_clean_up`]), and the run ends after it.
    pub(super) async fn start(graph: Graph, opts: RunOptions) -> Running {
        let config = EngineConfig {
            noop: opts.noop,
            converged_timeout: opts.converged_timeout.map(|d| Millis(d.as_millis() as u64)),
        };
        // A single pass starts no watcher to tell its renames from drift.
        let own_writes = if config.single_pass() {
            OwnWrites::unheard()
        } else {
            OwnWrites::default()
        };
        // Checks start at once; writes wait for the clean-up.
        let (own_writes, cleaning) = own_writes.after_clean_up();
        let clean_up = spawn_clean_up(&graph, opts.noop, cleaning);
        let engine = Engine::new(&graph, config.clone());
        let slots = build_slots(&graph);
        let mut tally = Tally::default();
        tally.add_graph(&graph);
        if let Some(o) = &opts.observer {
            o.graph(&kinds(&graph));
        }
        // The renames this run's writes make, told to each graph's watcher
        // so their echoes are not taken for drift.
        let backends = Backends {
            packages: pkg::Backend::new(),
            services: Arc::new(svc::Backend::default()),
            own_writes,
        };
        let specs = watch_specs(&slots, &backends.packages);
        // Without an inotify instance (the per-user limit reached, with many
        // agents on one machine) the agent goes on: its store keeps serving,
        // each file resource's watch fails on its own, naming the cause, and
        // the watcher is tried again every second; once it starts, those
        // watches are armed and their resources checked again. A single
        // pass watches nothing, and starts no watcher.
        let (fs, fs_events) = if config.single_pass() {
            FsWatch::unused(backends.own_writes.clone())
        } else {
            let (fs, events) = FsWatch::new(backends.own_writes.clone());
            if let Some(why) = fs.unavailable() {
                error!("{why}; file resources are checked but not watched until it starts");
            }
            (fs, events)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let tag = opts.tag;
        let mut run = Running {
            graph,
            engine,
            config,
            opts,
            epoch: Instant::now(),
            failed_for_good: 0,
            slots,
            specs,
            tally,
            backends,
            fs,
            fs_events,
            retired_fs: None,
            unwatched: BTreeSet::new(),
            watchers: BTreeMap::new(),
            generation: 0,
            tx,
            rx,
            cancel_tx: watch::channel(false).0,
            running: JoinSet::new(),
            tag,
            changed: 0,
            drained: false,
            converged: None,
            clean_up: Some(clean_up),
        };
        run.handle(Input::Start);
        run
    }

    /// The engine's time now.
    fn now(&self) -> Millis {
        Millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// Feeds the engine one input, at the time now.
    pub(super) fn handle(&mut self, input: Input) {
        let now = self.now();
        self.engine.handle(now, input);
    }

    /// Carries out every output the engine has, then says how far the run is.
    pub(super) fn carry_out(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::StartWatch(v) => self.start_watch(v),
                Output::CheckApply {
                    vertex,
                    apply,
                    refresh,
                    members,
                } => self.check_apply(vertex, apply, refresh, members),
                Output::WillRetry {
                    vertex,
                    error,
                    retry_at,
                } => {
                    // Relative to the engine's clock: the delay it decided,
                    // not the time this log line happens to be written.
                    let in_ms = retry_at.0.saturating_sub(self.engine.now().0);
                    let id = self.graph.vertex_id(vertex);
                    if let Some(o) = &self.opts.observer {
                        o.retry(id.kind);
                    }
                    warn!(
                        resource = %id,
                        action = "retry",
                        "{id}: {error}; retrying in {in_ms} ms"
                    );
                }
                Output::FailedPermanently { vertex, error } => {
                    self.failed_for_good += 1;
                    let id = self.graph.vertex_id(vertex);
                    if let Some(o) = &self.opts.observer {
                        o.failed(id.kind);
                    }
                    error!(resource = %id, action = "failed", "{id}: failed: {error}");
                }
                Output::Drained => self.drained = true,
                Output::Converged { failed } => self.converged = Some(failed),
            }
        }
        self.publish();
        // The new graph's watches are armed: the old watcher may go.
        drop(self.retired_fs.take());
    }

    fn start_watch(&mut self, v: VertexId) {
        let spec = &self.specs[v];
        start_watch(
            v,
            spec,
            &mut self.fs,
            &self.tx,
            &mut self.watchers,
            &self.backends.services,
            self.generation,
        );
        if self.fs.unavailable().is_some() && spec.iter().any(WatchSpec::uses_inotify) {
            self.unwatched.insert(v);
        }
    }

    fn check_apply(&mut self, vertex: VertexId, apply: bool, refresh: bool, members: Members) {
        let Some(mut res) = self.slots[vertex].take() else {
            error!(
                "{}: CheckApply requested while already running",
                self.graph.vertex_id(vertex)
            );
            return;
        };
        let which: Vec<usize> = match members {
            Members::All => (0..res.members.len()).collect(),
            Members::Only(which) => which,
        };
        let tx = self.tx.clone();
        let mut cancel = self.cancel_tx.subscribe();
        let backends = self.backends.clone();
        self.running.spawn(async move {
            let (result, outcomes) =
                check_apply_vertex(&mut res, &which, apply, refresh, &mut cancel, &backends).await;
            let _ = tx.send(Event::Done {
                vertex,
                res,
                result,
                outcomes,
                apply,
            });
        });
    }

    /// Tells the observer and the progress watch how far the run is.
    fn publish(&self) {
        let idle = self.engine.idle();
        if let Some(o) = &self.opts.observer {
            o.converged(idle);
        }
        if let Some(progress) = &self.opts.progress {
            let now = Progress {
                idle,
                ready: idle || progress.borrow().ready,
                running: self.engine.running(),
                vertices: self.graph.vertices.len(),
                resources: self.graph.resources.len(),
                failed: self.failed_for_good,
                tag: self.tag,
                changed: self.changed,
            };
            progress.send_if_modified(|p| std::mem::replace(p, now) != now);
        }
    }

    /// Whether the engine drained for a waiting graph since the last call.
    pub(super) fn take_drained(&mut self) -> bool {
        std::mem::take(&mut self.drained)
    }

    /// Replaces the running graph with `new` once the engine drained for it
    /// (every CheckApply home), as `changeover::plan` says; without a
    /// watcher for it the running graph goes on.
    pub(super) fn change_over(&mut self, new: Graph, new_tag: u64) {
        // A fresh watcher first: without one the running graph goes on.
        let (new_fs, new_events) = FsWatch::new(self.backends.own_writes.clone());
        if let Some(why) = new_fs.unavailable() {
            error!("{why}: no watcher for the new graph; the running graph goes on");
            self.handle(Input::NewGraphAbandoned);
            return;
        }
        // Drift already seen but not yet handed to the engine: a vertex it
        // touches has not settled.
        while let Ok(raw) = self.fs_events.try_recv() {
            let members = self.fs.members_for(raw).into_iter().collect();
            self.handle(Input::MembersChanged(members));
        }
        for (_, handles) in std::mem::take(&mut self.watchers) {
            for h in handles {
                h.abort();
            }
        }
        self.generation += 1;
        let plan = mgmt_core::changeover::plan(&self.graph, &new, |v| self.engine.settled(v));
        info!(
            "changeover to graph {:?}: {} resources kept, {} started, {} stopped",
            new.name,
            plan.kept.iter().flatten().count(),
            plan.started.len(),
            plan.stopped.len()
        );
        self.tally.add_graph(&new);
        if let Some(o) = &self.opts.observer {
            o.graph(&kinds(&new));
        }
        let old_slots = std::mem::take(&mut self.slots);
        self.slots = carry_members(&self.graph, old_slots, &new, &plan);
        self.specs = watch_specs(&self.slots, &self.backends.packages);
        self.retired_fs = Some(std::mem::replace(&mut self.fs, new_fs));
        self.fs_events = new_events;
        clean_up_after_a_killed_run(&new, self.opts.noop);
        self.engine = Engine::resume(&new, self.config.clone(), &plan.carried);
        self.failed_for_good = self.engine.failed().len();
        self.graph = new;
        self.tag = new_tag;
        self.handle(Input::Start);
    }

    /// What a watch or a CheckApply task said.
    pub(super) fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Watch(g, v) if g == self.generation => {
                if let Some(o) = &self.opts.observer {
                    o.watch_event(self.graph.vertex_id(v).kind);
                }
                self.handle(Input::WatchEvent(v));
            }
            Event::WatchFailed(g, v, error) if g == self.generation => {
                self.handle(Input::WatchFailed { vertex: v, error })
            }
            Event::Watch(..) | Event::WatchFailed(..) => {}
            Event::Done {
                vertex,
                res,
                result,
                outcomes,
                apply,
            } => {
                if let Some(o) = &self.opts.observer {
                    for (i, result, ms) in &outcomes {
                        let took = Duration::from_secs_f64(ms / 1000.0);
                        o.check_applied(&res.ids[*i], apply, result, took);
                    }
                }
                self.changed += outcomes
                    .iter()
                    .filter(|(_, r, _)| r.as_ref().is_ok_and(|c| !c.is_empty()))
                    .count() as u64;
                self.tally.record(&res.ids, outcomes);
                self.slots[vertex] = Some(res);
                self.handle(Input::CheckApplyDone { vertex, result });
            }
        }
    }

    /// A change the file watch saw: every member it concerns, told to the
    /// engine at once (a parent and its child watching one file: the parent
    /// runs first).
    pub(super) fn on_file_event(&mut self, raw: RawEvent) {
        let members: Vec<(VertexId, usize)> = self.fs.members_for(raw).into_iter().collect();
        for (i, &(v, _)) in members.iter().enumerate() {
            if i == 0 || members[i - 1].0 != v {
                if let Some(o) = &self.opts.observer {
                    o.watch_event(self.graph.vertex_id(v).kind);
                }
                debug!("{}: watch event", self.graph.vertex_id(v));
            }
        }
        if !members.is_empty() {
            self.handle(Input::MembersChanged(members));
        }
    }

    /// Tries again to start a file watcher, for the watches waiting for one.
    pub(super) fn revive_watcher(&mut self) {
        if !self.fs.revive() {
            return;
        }
        info!("the file watcher started: file resources are watched again");
        let again: Vec<VertexId> = std::mem::take(&mut self.unwatched).into_iter().collect();
        for &v in &again {
            self.start_watch(v);
        }
        // Whatever changed meanwhile went unseen: check them again.
        self.handle(Input::WatchEvents(again));
    }

    /// Stops the run: its watches (their drop kills watch commands) and its
    /// running commands; in-flight file writes finish (they are short and
    /// atomic). Then what it did.
    pub(super) async fn finish(mut self) -> RunReport {
        // A run that wrote nothing did not wait for it; it ends with it.
        if let Some(clean_up) = self.clean_up.take()
            && let Err(e) = clean_up.await
        {
            error!("cleaning up after a killed run: {e}");
        }
        drop(self.retired_fs.take());
        for (_, handles) in std::mem::take(&mut self.watchers) {
            for h in handles {
                h.abort();
            }
        }
        let _ = self.cancel_tx.send(true);
        while self.running.join_next().await.is_some() {}
        drop(self.fs);
        let failed_vertices = self
            .converged
            .clone()
            .unwrap_or_else(|| self.engine.failed());
        let graph = &self.graph;
        let failed = failed_vertices
            .iter()
            .flat_map(|&v| {
                graph.vertices[v]
                    .members
                    .iter()
                    .map(|&m| graph.resources[m].id.clone())
            })
            .collect();
        RunReport {
            graph: graph.name.clone(),
            converged: self.converged.is_some(),
            failed,
            resources: self.tally.into_runs(),
        }
    }
}

/// The resources of a graph, counted by kind (for the observer).
fn kinds(graph: &Graph) -> BTreeMap<Kind, usize> {
    let mut by_kind = BTreeMap::new();
    for r in &graph.resources {
        *by_kind.entry(r.id.kind).or_insert(0) += 1;
    }
    by_kind
}

/// Removes what a run killed mid-write left beside the managed files: its
/// temp files (targets are never half-written; the temp files just stay).
fn clean_up_after_a_killed_run(graph: &Graph, noop: bool) {
    report_clean_up(
        crate::file::remove_stale_temp_files(cleaned_paths(graph), !noop),
        noop,
    );
}

/// [`clean_up_after_a_killed_run`] on a blocking thread.
/// Writes wait until it is over (`done` dropped), checks do not.
fn spawn_clean_up(graph: &Graph, noop: bool, done: CleanUpDone) -> JoinHandle<()> {
    let paths: Vec<String> = cleaned_paths(graph).map(str::to_owned).collect();
    tokio::task::spawn_blocking(move || {
        let stale = crate::file::remove_stale_temp_files(paths.iter().map(String::as_str), !noop);
        drop(done);
        report_clean_up(stale, noop);
    })
}

/// The paths whose killed writes are cleaned up: a resource with
/// `meta: {noop: true}` changes nothing, temp files included.
fn cleaned_paths(graph: &Graph) -> impl Iterator<Item = &str> {
    graph.resources.iter().filter_map(|r| match &r.params {
        Params::File(p) if !r.meta.noop => Some(p.path.as_str()),
        Params::Line(p) if !r.meta.noop => Some(p.path.as_str()),
        Params::Sysctl(p) if !r.meta.noop => p.persist.as_deref(),
        _ => None,
    })
}

fn report_clean_up(stale: Vec<crate::file::StaleTemp>, noop: bool) {
    for stale in stale {
        let path = stale.path.display();
        match stale.error {
            None if noop => info!("would remove {path}, left by a killed run"),
            None => info!("removed {path}, left by a killed run"),
            Some(e) => warn!("cannot remove {path}, left by a killed run: {e}"),
        }
    }
}
