//! The engine: a sans-IO state machine that decides when each vertex runs.
//!
//! The driver (in `mgmt-io`, or a test, or the simulator) feeds inputs with
//! [`Engine::handle`], then drains [`Engine::poll_output`] and carries each
//! output out, then sleeps until [`Engine::poll_timeout`] or the next event.
//! Time is a value passed in; the engine never reads a clock.
//!
//! Rules:
//! - A vertex needs a CheckApply when it starts, when its own watch fires, when
//!   its poll interval elapses, and when something upstream changed state.
//! - It never runs while anything upstream has not succeeded or is about to run
//!   again, so an edge always means "after".
//! - Everything runnable is emitted at once: independent vertices run in parallel.
//! - While a new graph waits to replace this one, nothing starts; once nothing
//!   runs, the engine says so ([`Output::Drained`]) and the new graph may
//!   take over.
//! - A failure is retried per `retry`/`delay`; a vertex that failed for good
//!   blocks only what depends on it.
//! - `notify` edges carry a refresh to the downstream vertex when the upstream
//!   one changed something.

use std::collections::{BTreeSet, VecDeque};

use crate::graph::{Graph, VertexId};
use crate::resource::{Meta, Retry};
use crate::time::Millis;

/// Something that happened, fed to [`Engine::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Start everything. Call once, first.
    Start,
    /// A vertex's watch saw its real state change (or may have).
    WatchEvent(VertexId),
    /// Several vertices' watches fired at once, naming no member (a
    /// restarted watcher: what changed meanwhile went unseen): every one is
    /// marked before anything is scheduled, and checked in full.
    WatchEvents(Vec<VertexId>),
    /// One change the file watch saw, naming the members it concerns
    /// (vertex, member index in the vertex), as [`Input::WatchEvents`] marks
    /// every vertex at once. A vertex's next CheckApply may cover only the
    /// members named since its last one ([`Members::Only`]).
    MembersChanged(Vec<(VertexId, usize)>),
    /// A new graph waits to replace this one: start no CheckApply from now
    /// on, and say [`Output::Drained`] once none is running. What would
    /// have run stays due, so it has not settled ([`Engine::settled`]).
    NewGraphWaiting,
    /// The new graph will not replace this one after all: what was held
    /// back runs now.
    NewGraphAbandoned,
    /// A vertex's watch stopped with an error.
    WatchFailed { vertex: VertexId, error: String },
    /// A CheckApply the engine asked for finished.
    CheckApplyDone {
        vertex: VertexId,
        result: Result<bool, String>,
    },
    /// Nothing but the passage of time; call when [`Engine::poll_timeout`] is reached.
    Tick,
}

/// Something the driver must do, drained from [`Engine::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Start (or restart) the watch of a vertex.
    StartWatch(VertexId),
    /// Run CheckApply on a vertex. `apply: false` means check only.
    /// `refresh` asks the resource to act even if its state looks right.
    /// `members`: which of its members to check.
    /// Reply with [`Input::CheckApplyDone`].
    CheckApply {
        vertex: VertexId,
        apply: bool,
        refresh: bool,
        members: Members,
    },
    /// A failure that will be retried at `retry_at`.
    WillRetry {
        vertex: VertexId,
        error: String,
        retry_at: Millis,
    },
    /// A vertex failed for good; what depends on it stays blocked.
    FailedPermanently { vertex: VertexId, error: String },
    /// After [`Input::NewGraphWaiting`]: no CheckApply is running, and none
    /// will start. The new graph may replace this one now.
    Drained,
    /// Nothing has happened for the converged timeout. `failed` lists the
    /// vertices that failed for good. Emitted once per quiet period.
    Converged { failed: Vec<VertexId> },
}

/// The members of a vertex a CheckApply covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Members {
    /// Every member: at a start, after a change upstream, a poll, a retry, a
    /// restarted watch, or a watch event that named no member.
    All,
    /// Only these (indices in the vertex, ascending): the only reason to run
    /// is what the file watch saw happen to them ([`Input::MembersChanged`]),
    /// or, after a changeover, they are the vertex's new members
    /// ([`Carried::Partly`]).
    Only(Vec<usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    /// Has not succeeded yet (in this life).
    Unknown,
    Ok,
    /// Failed; `retries_used` failures so far.
    Failing {
        retries_used: u32,
    },
    Permanent,
}

#[derive(Clone, Debug)]
struct VState {
    dirty: bool,
    /// The next CheckApply must cover every member, not only what its watch saw.
    full: bool,
    /// Members the file watch named since the last CheckApply (see
    /// [`Members::Only`]).
    named: BTreeSet<usize>,
    refresh: bool,
    running: bool,
    health: Health,
    retry_at: Option<Millis>,
    poll_at: Option<Millis>,
    watch_retry_at: Option<Millis>,
    watch_failures: u32,
    /// The watch failed more often than `retry` allows: no events will come.
    watch_dead: bool,
    /// Its watch fired while its CheckApply ran: what it checked may have
    /// changed under it.
    poked_while_running: bool,
    /// The one extra try a failure gets for such an event has been used
    /// (until the next success).
    second_chance_used: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retry,
    WatchRetry,
    Poll,
}

/// The shortest wait before a failed watch is restarted, whatever `delay` says.
pub const MIN_WATCH_RESTART: Millis = Millis(250);

/// Settings of one run.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// Check only, everywhere.
    pub noop: bool,
    /// Report [`Output::Converged`] after this long with nothing happening.
    /// Zero is a single pass: no watches are started.
    pub converged_timeout: Option<Millis>,
}

impl EngineConfig {
    /// A converged timeout of zero: every vertex once, no watches.
    pub fn single_pass(&self) -> bool {
        self.converged_timeout == Some(Millis(0))
    }
}

/// What a vertex of a new graph brings from the graph it replaces
/// ([`Engine::resume`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Carried {
    /// New, or changed: checked in full, as at a start.
    Fresh,
    /// Every member was in the old graph, unchanged, and had settled there:
    /// no CheckApply until something happens to it.
    Settled,
    /// Some members settled unchanged, others new: one CheckApply, of the
    /// new ones only (these member indices, ascending).
    Partly(Vec<usize>),
}

/// Per-vertex settings derived from the graph.
#[derive(Clone, Debug)]
struct VConf {
    parents: Vec<VertexId>,
    children: Vec<(VertexId, bool)>,
    retry: Retry,
    delay: Millis,
    poll: Option<Millis>,
    /// Watched for events (`meta: {poll}` replaces the watch).
    watch: bool,
    noop: bool,
    /// A timer: its ticks are not activity, so a timer alone never holds
    /// off convergence (what its refreshes make others change still counts).
    ticks: bool,
}

/// The scheduling state machine. See the module docs.
///
/// Work per input is proportional to what the input touches (the vertex and
/// its children), not to the size of the graph: candidates for running are
/// kept in a set, timers in an ordered queue, and running work in a counter.
#[derive(Debug)]
pub struct Engine {
    conf: Vec<VConf>,
    state: Vec<VState>,
    config: EngineConfig,
    now: Millis,
    started: bool,
    last_activity: Millis,
    converged_reported: bool,
    outputs: VecDeque<Output>,
    /// Vertices whose runnability may have changed since the last schedule.
    candidates: BTreeSet<VertexId>,
    /// Pending timers, soonest first.
    timers: BTreeSet<(Millis, VertexId, Timer)>,
    running: usize,
    /// Retry and watch-retry timers pending: they keep the engine busy.
    busy_timers: usize,
    /// A new graph waits ([`Input::NewGraphWaiting`]): nothing starts; `true`
    /// once [`Output::Drained`] was said.
    draining: Option<bool>,
}

impl Engine {
    /// Builds an engine for a compiled graph. Nothing happens until [`Input::Start`].
    pub fn new(graph: &Graph, config: EngineConfig) -> Self {
        let n = graph.vertices.len();
        let mut conf: Vec<VConf> = graph
            .vertices
            .iter()
            .map(|v| {
                let meta: &Meta = &graph.resources[v.head()].meta;
                VConf {
                    parents: Vec::new(),
                    children: Vec::new(),
                    retry: meta.retry,
                    delay: Millis(meta.delay_ms),
                    poll: match meta.poll_s {
                        0 => graph.resources[v.head()].params.live_check_s(),
                        s => Some(s),
                    }
                    .map(|s| Millis(s.saturating_mul(1000))),
                    watch: meta.poll_s == 0,
                    noop: v.members.iter().any(|&m| graph.resources[m].meta.noop),
                    ticks: v
                        .members
                        .iter()
                        .all(|&m| graph.resources[m].kind() == crate::resource::Kind::Timer),
                }
            })
            .collect();
        for e in graph.vertex_edges() {
            conf[e.from].children.push((e.to, e.notify));
            conf[e.to].parents.push(e.from);
        }
        let state = vec![
            VState {
                dirty: true,
                full: true,
                named: BTreeSet::new(),
                refresh: false,
                running: false,
                health: Health::Unknown,
                retry_at: None,
                poll_at: None,
                watch_retry_at: None,
                watch_failures: 0,
                watch_dead: false,
                poked_while_running: false,
                second_chance_used: false,
            };
            n
        ];
        Engine {
            conf,
            state,
            config,
            now: Millis(0),
            started: false,
            last_activity: Millis(0),
            converged_reported: false,
            outputs: VecDeque::new(),
            candidates: BTreeSet::new(),
            timers: BTreeSet::new(),
            running: 0,
            busy_timers: 0,
            draining: None,
        }
    }

    /// An engine for a graph that replaces a running one (a changeover):
    /// `carried` says, per vertex of `graph`, what it brings from the old
    /// one. Settled vertices start healthy and clean, so they run again only
    /// on their own events or a change upstream. Then [`Input::Start`], at
    /// the changeover's time.
    pub fn resume(graph: &Graph, config: EngineConfig, carried: &[Carried]) -> Self {
        let mut e = Engine::new(graph, config);
        for (s, c) in e.state.iter_mut().zip(carried) {
            match c {
                Carried::Fresh => {}
                Carried::Settled => {
                    s.dirty = false;
                    s.full = false;
                    s.health = Health::Ok;
                }
                Carried::Partly(members) => {
                    s.full = false;
                    s.named = members.iter().copied().collect();
                }
            }
        }
        e
    }

    /// Whether vertex `v` has settled: its last CheckApply succeeded and
    /// nothing has asked for another (nor is one running or due).
    pub fn settled(&self, v: VertexId) -> bool {
        let s = &self.state[v];
        s.health == Health::Ok && !s.dirty && !s.running && s.retry_at.is_none()
    }

    /// Feeds one input at time `now` (monotonic; earlier values are treated as `now`).
    /// Then drain [`Engine::poll_output`].
    pub fn handle(&mut self, now: Millis, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::Start => self.start(),
            Input::WatchEvent(v) => self.watch_events(&[v]),
            Input::WatchEvents(vs) => self.watch_events(&vs),
            Input::MembersChanged(members) => self.members_changed(&members),
            Input::NewGraphWaiting => {
                self.draining.get_or_insert(false);
            }
            Input::NewGraphAbandoned => self.abandon_new_graph(),
            Input::WatchFailed { vertex, error } => self.watch_failed(vertex, error),
            Input::CheckApplyDone { vertex, result } => self.done(vertex, result),
            Input::Tick => {}
        }
        self.timers();
        self.schedule();
        self.check_drained();
        self.check_converged();
    }

    /// The next output to carry out, if any. Call until it returns `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call `handle(now, Input::Tick)` next if nothing else happens.
    /// `None`: nothing is scheduled; wait for events.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let timer = self.timers.first().map(|&(t, _, _)| t);
        let converge = match (self.config.converged_timeout, self.converged_reported) {
            (Some(timeout), false) if self.started && self.idle() && self.draining.is_none() => {
                Some(self.last_activity + timeout)
            }
            _ => None,
        };
        match (timer, converge) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when nothing is running and nothing can run now or after a retry
    /// delay. Never while a new graph waits: what is held back for it is due.
    pub fn idle(&self) -> bool {
        // Between inputs every runnable vertex has been started, so only
        // running work, pending retries and a hold keep the engine busy.
        self.running == 0 && self.busy_timers == 0 && self.draining.is_none()
    }

    /// Vertices whose CheckApply is running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The time of the latest input: what the outputs' times are relative to.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Vertices that failed for good, in order.
    pub fn failed(&self) -> Vec<VertexId> {
        (0..self.state.len())
            .filter(|&v| self.state[v].health == Health::Permanent)
            .collect()
    }

    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        self.activity();
        // A converged timeout of zero is a single pass: the run ends as soon
        // as nothing is running, so there is nothing a watch could wait for.
        // Starting none saves setting them up and, on Linux, tearing them down
        // (an inotify instance with watches costs an RCU grace period, 5-15 ms,
        // at exit).
        let single_pass = self.config.single_pass();
        for v in 0..self.conf.len() {
            if self.conf[v].watch && !single_pass {
                self.outputs.push_back(Output::StartWatch(v));
            }
            // A live check of a kind that has one runs beside its watch.
            if let Some(p) = self.conf[v].poll
                && !(single_pass && self.conf[v].watch)
            {
                self.set_timer(v, Timer::Poll, self.now + p);
            }
            if self.conf[v].parents.is_empty() {
                self.candidates.insert(v);
            }
        }
    }

    fn set_timer(&mut self, v: VertexId, kind: Timer, at: Millis) {
        let s = &mut self.state[v];
        let slot = match kind {
            Timer::Retry => &mut s.retry_at,
            Timer::WatchRetry => &mut s.watch_retry_at,
            Timer::Poll => &mut s.poll_at,
        };
        if let Some(old) = slot.replace(at) {
            self.timers.remove(&(old, v, kind));
        } else if kind != Timer::Poll {
            self.busy_timers += 1;
        }
        self.timers.insert((at, v, kind));
    }

    fn activity(&mut self) {
        self.last_activity = self.now;
        self.converged_reported = false;
    }

    /// Marks a vertex as needing a CheckApply. A permanent failure gets a new
    /// chance: the event may mean its cause went away.
    fn poke(&mut self, v: VertexId) {
        let s = &mut self.state[v];
        s.dirty = true;
        s.poked_while_running |= s.running;
        if s.health == Health::Permanent {
            s.health = Health::Failing { retries_used: 0 };
            s.full = true;
        }
        self.candidates.insert(v);
    }

    fn watch_events(&mut self, vs: &[VertexId]) {
        self.activity();
        for &v in vs {
            // An event that names no member: any of them may have changed.
            self.state[v].full = true;
            self.watch_works(v);
        }
    }

    fn members_changed(&mut self, members: &[(VertexId, usize)]) {
        self.activity();
        for &(v, m) in members {
            self.state[v].named.insert(m);
            self.watch_works(v);
        }
    }

    /// A watch event on `v`: earlier failures of its watch no longer count
    /// against it, one that had died for good is back, and `v` is due.
    fn watch_works(&mut self, v: VertexId) {
        self.state[v].watch_failures = 0;
        self.state[v].watch_dead = false;
        self.poke(v);
    }

    /// What was held back for a new graph becomes runnable again.
    fn abandon_new_graph(&mut self) {
        if self.draining.take().is_some() {
            let due = (0..self.state.len()).filter(|&v| self.state[v].dirty);
            self.candidates.extend(due);
        }
    }

    fn check_drained(&mut self) {
        if self.draining == Some(false) && self.running == 0 {
            self.draining = Some(true);
            self.outputs.push_back(Output::Drained);
        }
    }

    fn watch_failed(&mut self, v: VertexId, error: String) {
        self.activity();
        let s = &mut self.state[v];
        s.watch_failures += 1;
        // Events may be lost until the watch is back: the next check covers
        // every member.
        s.full = true;
        let used = s.watch_failures;
        if retry_allowed(self.conf[v].retry, used) {
            // A watch that dies at once (say `watchcmd: false`) with `retry: -1`
            // and no delay must not be restarted in a tight loop.
            let at = self.now + self.conf[v].delay.max(MIN_WATCH_RESTART);
            self.set_timer(v, Timer::WatchRetry, at);
            self.outputs.push_back(Output::WillRetry {
                vertex: v,
                error,
                retry_at: at,
            });
        } else {
            s.health = Health::Permanent;
            s.watch_dead = true;
            self.outputs
                .push_back(Output::FailedPermanently { vertex: v, error });
        }
    }

    fn done(&mut self, v: VertexId, result: Result<bool, String>) {
        if !self.state[v].running {
            return; // Not asked for: ignore rather than corrupt the schedule.
        }
        self.state[v].running = false;
        self.running -= 1;
        self.candidates.insert(v);
        let poked = std::mem::take(&mut self.state[v].poked_while_running);
        match result {
            Ok(changed) => {
                let s = &mut self.state[v];
                s.second_chance_used = false;
                // A CheckApply that was running when the watch died for good
                // does not bring the vertex back.
                s.health = if s.watch_dead {
                    Health::Permanent
                } else {
                    Health::Ok
                };
                if changed && !self.conf[v].ticks {
                    self.activity();
                }
                for i in 0..self.conf[v].children.len() {
                    let (c, notify) = self.conf[v].children[i];
                    if changed {
                        self.state[c].dirty = true;
                        self.state[c].full = true;
                        self.state[c].refresh |= notify;
                    }
                    // A dirty child may have been waiting for this success.
                    if self.state[c].dirty {
                        self.candidates.insert(c);
                    }
                }
            }
            Err(error) => {
                self.activity();
                let s = &mut self.state[v];
                let used = match s.health {
                    Health::Failing { retries_used } => retries_used + 1,
                    _ => 1,
                };
                s.dirty = true;
                s.full = true;
                // A failure its own watch saw the world change under (say a
                // directory removed mid-copy) gets one more try, after a
                // pause: no later event may come to give it one.
                let normal = retry_allowed(self.conf[v].retry, used);
                let second_chance = !normal && poked && !s.second_chance_used;
                if normal || second_chance {
                    let mut at = self.now + self.conf[v].delay;
                    if second_chance {
                        s.second_chance_used = true;
                        at = self.now + self.conf[v].delay.max(MIN_WATCH_RESTART);
                    }
                    self.state[v].health = Health::Failing { retries_used: used };
                    self.set_timer(v, Timer::Retry, at);
                    self.outputs.push_back(Output::WillRetry {
                        vertex: v,
                        error,
                        retry_at: at,
                    });
                } else {
                    s.health = Health::Permanent;
                    self.outputs
                        .push_back(Output::FailedPermanently { vertex: v, error });
                }
            }
        }
    }

    fn timers(&mut self) {
        while let Some(&(at, v, kind)) = self.timers.first() {
            if at > self.now {
                break;
            }
            self.timers.pop_first();
            let s = &mut self.state[v];
            match kind {
                Timer::Retry => {
                    s.retry_at = None;
                    self.busy_timers -= 1;
                    self.candidates.insert(v);
                }
                Timer::WatchRetry => {
                    s.watch_retry_at = None;
                    self.busy_timers -= 1;
                    self.outputs.push_back(Output::StartWatch(v));
                }
                Timer::Poll => {
                    s.poll_at = None;
                    s.dirty = true;
                    s.full = true;
                    self.candidates.insert(v);
                    if let Some(p) = self.conf[v].poll {
                        self.set_timer(v, Timer::Poll, self.now + p);
                    }
                }
            }
        }
    }

    fn runnable(&self, v: VertexId) -> bool {
        let s = &self.state[v];
        self.started
            && s.dirty
            && !s.running
            && s.retry_at.is_none()
            && s.health != Health::Permanent
            && self.conf[v].parents.iter().all(|&p| {
                let ps = &self.state[p];
                ps.health == Health::Ok && !ps.dirty && !ps.running
            })
    }

    fn schedule(&mut self) {
        if self.draining.is_some() {
            // Held back: the candidates wait for a new graph to be abandoned.
            return;
        }
        let candidates = std::mem::take(&mut self.candidates);
        for v in candidates {
            if self.runnable(v) {
                let s = &mut self.state[v];
                s.dirty = false;
                s.running = true;
                self.running += 1;
                let refresh = std::mem::take(&mut s.refresh);
                let full = std::mem::take(&mut s.full) || refresh;
                let named = std::mem::take(&mut s.named);
                let members = if full || named.is_empty() {
                    Members::All
                } else {
                    Members::Only(named.into_iter().collect())
                };
                let apply = !(self.config.noop || self.conf[v].noop);
                self.outputs.push_back(Output::CheckApply {
                    vertex: v,
                    apply,
                    refresh,
                    members,
                });
            }
        }
    }

    fn check_converged(&mut self) {
        let Some(timeout) = self.config.converged_timeout else {
            return;
        };
        if self.started
            && !self.converged_reported
            && self.now >= self.last_activity + timeout
            && self.idle()
        {
            self.converged_reported = true;
            self.outputs.push_back(Output::Converged {
                failed: self.failed(),
            });
        }
    }
}

fn retry_allowed(retry: Retry, failures: u32) -> bool {
    match retry {
        Retry::Forever => true,
        Retry::Times(n) => failures <= n,
    }
}

#[cfg(test)]
mod tests;
