//! Automatic clustering: the driver that carries out what this host's
//! [`mgmt_core::cluster::Agent`] decides.
//!
//! Every host runs one [`Cluster`]. Every rule (when to volunteer, start,
//! stop or discard the server, hold the lease, and, on the leader, nominate
//! and change the membership) is the agent's; the `/_mgmt/` keys are
//! [`mgmt_core::cluster::keys`]. The driver only feeds the agent what it sees
//! (the `/_mgmt/` watch, this host's store membership, each action's outcome)
//! and carries out its actions, each lane's in a task of its own so a slow
//! membership change never holds up the lease. Between events it sleeps until
//! the agent's next deadline: a converged host wakes for its lease
//! keep-alive only.

use std::sync::Arc;
use std::time::Duration;

use mgmt_core::cluster::agent::{
    self, Action, Agent, Input, KeepAlive, Lane, MemberChange, Notice, Output, Reason, StartMode,
    Stored,
};
use mgmt_core::cluster::keys::{self, ClusterKeys, RawKv};
use mgmt_core::time::Millis;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::client::{ClientConfig, ClientError, EtcdClient, Watch, WatchEvent};
use crate::{
    MemberNode, MemberSpec, MembershipChange, MembershipState, MembershipWatch, ReplicationWatch,
    Store, StoreConfig, StoreError, StoreHandle, has_store_state, known_members, stored_member_id,
};

/// Errors starting clustering.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("etcd client: {0}")]
    Client(#[from] ClientError),
    #[error("--seeds or a server of its own is needed to reach a cluster")]
    NoCluster,
}

/// Settings of one host.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Hostname, URLs, data prefix, timings and [`crate::Env`] of this host's server.
    pub store: StoreConfig,
    /// Client URLs of existing members; empty: bootstrap a new cluster here.
    pub seeds: Vec<String>,
    /// May this host run a store server (volunteer)? `--no-server` clears it.
    pub server: bool,
    /// Written to `idealClusterSize` when bootstrapping.
    pub ideal_cluster_size: Option<u32>,
    /// TTL of the host's lease (volunteer and endpoints keys), seconds.
    pub lease_ttl_s: i64,
    /// How long [`Cluster::shutdown`] waits for the leader to remove this member.
    pub leave_timeout: Duration,
    /// Budget of one etcd client call.
    pub request_timeout: Duration,
    /// The run leaves after one pass: a host alone in its own store
    /// advertises nothing ([`mgmt_core::cluster::agent::Config::single_pass`]).
    pub single_pass: bool,
    /// A deliberate nomination bug, for the simulator's self-test only.
    #[doc(hidden)]
    pub nominator_bug: mgmt_core::cluster::Bug,
}

impl ClusterConfig {
    pub fn new(store: StoreConfig) -> Self {
        ClusterConfig {
            store,
            seeds: Vec::new(),
            server: true,
            ideal_cluster_size: None,
            lease_ttl_s: 10,
            leave_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            single_pass: false,
            nominator_bug: mgmt_core::cluster::Bug::None,
        }
    }

    fn agent(&self) -> agent::Config {
        agent::Config {
            host: self.store.hostname.clone(),
            may_serve: self.server,
            seeds: self.seeds.clone(),
            peer_urls: self.store.peer_urls.clone(),
            ideal_on_bootstrap: self.ideal_cluster_size,
            lease_ttl_s: self.lease_ttl_s,
            leave_timeout: Millis(self.leave_timeout.as_millis() as u64),
            single_pass: self.single_pass,
            bug: self.nominator_bug,
        }
    }
}

/// What a host is doing, for logs, the CLI and tests.
pub use mgmt_core::cluster::agent::Status;

/// A running clustering driver. Call [`Cluster::shutdown`] to leave cleanly;
/// dropping it aborts the driver (and stops the server without leaving).
pub struct Cluster {
    client: EtcdClient,
    status: watch::Receiver<Status>,
    /// The server this host runs now, if any (for its figures).
    server: SharedServer,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// The store is ready (or was given up on), as `start` waits for.
    ready: watch::Receiver<bool>,
    /// Started without seeds: a cluster of its own, unless others joined.
    unseeded: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Cluster {
    /// Start clustering. A bootstrap host (no seeds), or a member restarting
    /// from its state, starts its server here (so a port in use fails here);
    /// a bootstrap host also makes its first writes (bounded by the request
    /// timeout). Everything else happens in the background.
    pub async fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        Self::launch(config, true).await
    }

    /// As [`Cluster::start`] (its server started, or the error why not), but
    /// without waiting for the store to be ready: that goes on in the
    /// background ([`Cluster::ready`]). For a run that needs nothing from the
    /// store before its end (a one-shot graph with no exports or collection):
    /// the graph runs while the store elects its leader.
    pub async fn begin(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        Self::launch(config, false).await
    }

    /// Waits until the store is ready, as [`Cluster::start`] does (or gave up
    /// within the request timeout, or the cluster stops).
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|&r| r).await;
    }

    async fn launch(config: ClusterConfig, wait_ready: bool) -> Result<Cluster, ClusterError> {
        if config.seeds.is_empty() && !config.server {
            return Err(ClusterError::NoCluster);
        }
        let stored = if config.server {
            let dir = config.store.data_dir()?;
            Stored {
                has_state: has_store_state(&dir),
                member_id: stored_member_id(&dir),
                known_members: known_members(&dir),
            }
        } else {
            Stored::default()
        };
        let agent = Agent::new(config.agent(), stored);
        let (results_tx, results) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(Status::default());
        let (stop, stop_rx) = watch::channel(false);
        let shared_server = SharedServer::default();
        let mut driver = Driver {
            started_at: Instant::now(),
            config,
            agent,
            client: None,
            server: None,
            shared_server: shared_server.clone(),
            status: status_tx,
            lanes: Default::default(),
            next_generation: 0,
            results_tx,
            results,
            keys_watch: None,
            watched_from: None,
            membership: None,
            replication: None,
            replication_ended: false,
            backlog: Vec::new(),
        };
        driver.start_first_server().await?;
        let mut cc = ClientConfig::new(driver.agent.client_endpoints().to_vec());
        cc.env = driver.config.store.env.clone();
        cc.request_timeout = driver.config.request_timeout;
        let client = EtcdClient::new(cc)?;
        driver.client = Some(client.clone());
        let budget = driver.config.request_timeout;
        if wait_ready && !driver.agent.ready() {
            let _ = tokio::time::timeout(budget, driver.run(stop_rx.clone(), true)).await;
        }
        let unseeded = driver.config.seeds.is_empty();
        let (ready_tx, ready) = watch::channel(wait_ready);
        let task = tokio::spawn(async move {
            if !wait_ready && !driver.agent.ready() {
                let _ = tokio::time::timeout(budget, driver.run(stop_rx.clone(), true)).await;
            }
            ready_tx.send_replace(true);
            driver.run(stop_rx, false).await;
        });
        Ok(Cluster {
            client,
            status,
            server: shared_server,
            stop,
            task: Some(task),
            ready,
            unseeded,
        })
    }

    /// The etcd client this host uses (it follows the advertised endpoints).
    pub fn client(&self) -> EtcdClient {
        self.client.clone()
    }

    /// Watch what this host is doing.
    /// The figures of the store server this host runs now, if it runs one;
    /// ask the source as often as needed, for as long as the process runs.
    pub fn store_stats(&self) -> StoreStatsSource {
        StoreStatsSource(self.server.clone())
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// This host's server now, if it runs one.
    fn server(&self) -> Option<Arc<StoreHandle>> {
        current_server(&self.server)
    }

    /// Puts a key through this host's own server while it runs one (the
    /// write reaches the leader as one through the etcd API does, without
    /// the API's round trip on loopback), else through the client; returns
    /// the new revision.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, ClusterError> {
        match self.server() {
            Some(server) => Ok(server.put(key, value).await?),
            None => Ok(self.client.put(key, value, 0).await?),
        }
    }

    /// Leave the cluster cleanly and stop: revoke the lease, wait (bounded) for
    /// removal from the membership, stop the server.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// As [`Cluster::shutdown`], for a process that exits right after (a
    /// one-shot run): a member alone in a cluster of its own, whose state
    /// owes an orderly stop nothing (no snapshot due, no purge to record),
    /// is left running, to end with the process. It has no one to leave,
    /// every write it acknowledged is on disk (a write returns once its log
    /// entry is synced), and its state survives a kill at any point; the
    /// stop would cost each one-shot run 0.6 ms more (listeners closed,
    /// raft's tasks and threads woken to end). Any other host shuts down.
    pub async fn shutdown_before_exit(self) {
        let on_its_own = self.unseeded
            && self
                .server()
                .is_some_and(|s| s.alone() && !s.owes_an_orderly_stop());
        if on_its_own {
            debug!("the store ends with the process: alone, its writes on disk");
            // Dropped, it would abort the driver and wake the server's
            // tasks to stop: work the exit does anyway.
            std::mem::forget(self);
            return;
        }
        self.shutdown().await
    }
}

/// Bound on one MemberList asked of one member on its own.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Bound on one membership change, so the leader's lane never stalls for long.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// An action's outcome, from its lane's task.
struct Done {
    lane: Lane,
    /// Which of the lane's actions (an abandoned one's outcome is dropped).
    generation: u64,
    input: Input,
    /// The server a start made.
    server: Option<Arc<StoreHandle>>,
}

#[derive(Default)]
struct LaneTask {
    generation: u64,
    task: Option<JoinHandle<()>>,
}

/// The driver's current server, shared with [`Cluster::store_stats`].
type SharedServer = Arc<std::sync::Mutex<Option<Arc<StoreHandle>>>>;

/// The server in `shared` now, if any.
fn current_server(shared: &SharedServer) -> Option<Arc<StoreHandle>> {
    shared.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Where the figures of this host's store server are read (metrics).
#[derive(Clone)]
pub struct StoreStatsSource(SharedServer);

impl StoreStatsSource {
    /// The server's figures now; `None` while this host runs none.
    pub fn get(&self) -> Option<crate::StoreStats> {
        current_server(&self.0).map(|s| s.stats())
    }
}

struct Driver {
    config: ClusterConfig,
    agent: Agent,
    /// Present once the first server (if any) started.
    client: Option<EtcdClient>,
    server: Option<Arc<StoreHandle>>,
    /// `server`, for [`Cluster::store_stats`]: set with it by [`Driver::set_server`].
    shared_server: SharedServer,
    started_at: Instant,
    status: watch::Sender<Status>,
    lanes: std::collections::BTreeMap<Lane, LaneTask>,
    next_generation: u64,
    results_tx: mpsc::UnboundedSender<Done>,
    results: mpsc::UnboundedReceiver<Done>,
    keys_watch: Option<Watch>,
    /// The revision the watch was opened after (the first read's).
    watched_from: Option<i64>,
    membership: Option<(MembershipWatch, MembershipState)>,
    replication: Option<ReplicationWatch>,
    /// The replication watch of the current server ended.
    replication_ended: bool,
    /// Outputs the agent made before the client existed.
    backlog: Vec<Output>,
}

/// What a lane's task needs, cloned out of the driver.
#[derive(Clone)]
struct Ctx {
    config: ClusterConfig,
    client: Option<EtcdClient>,
    server: Option<Arc<StoreHandle>>,
}

enum Wake {
    Done(Done),
    Keys(Option<WatchEvent>),
    Membership(bool),
    Replication(bool),
    Tick,
    Stop,
}

impl Driver {
    fn now(&self) -> Millis {
        Millis(self.started_at.elapsed().as_millis() as u64)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            config: self.config.clone(),
            client: self.client.clone(),
            server: self.server.clone(),
        }
    }

    /// The server the agent starts first (bootstrap, or a restart from
    /// state) starts before anything else; its error is the caller's. The
    /// agent's other first outputs wait in the backlog for the client.
    async fn start_first_server(&mut self) -> Result<(), ClusterError> {
        let mut first: Vec<Output> = std::iter::from_fn(|| self.agent.poll_output()).collect();
        if let Some(Output::Action(Action::StartServer {
            mode,
            member_id,
            discard_first,
            reason,
        })) = first.first().cloned()
        {
            first.remove(0);
            self.backlog = first;
            let started = start_server(&self.ctx(), mode, member_id, discard_first, reason).await;
            let (input, server) = started.map_err(|(e, _)| e)?;
            self.feed(input, server);
        } else {
            self.backlog = first;
        }
        Ok(())
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>, until_ready: bool) {
        let mut stopping = false;
        loop {
            if self.carry_out() {
                break;
            }
            self.publish(false);
            if until_ready && self.agent.ready() {
                return;
            }
            let deadline = self
                .agent
                .poll_timeout()
                .map(|t| self.started_at + Duration::from_millis(t.0));
            let wants_replication = self.agent.wants_replication();
            if !wants_replication {
                self.replication = None;
            } else if self.replication.is_none()
                && !self.replication_ended
                && let Some(s) = &self.server
            {
                self.replication = Some(s.replication_changes());
                let r = s.replication();
                self.feed_now(Input::Replication(replication(r)));
                continue;
            }
            let wake = tokio::select! {
                Some(done) = self.results.recv() => Wake::Done(done),
                ev = next_event(&mut self.keys_watch) => Wake::Keys(ev),
                ok = membership_changed(&mut self.membership) => Wake::Membership(ok),
                ok = replication_changed(&mut self.replication) => Wake::Replication(ok),
                () = sleep_until(deadline) => Wake::Tick,
                r = stop.wait_for(|s| *s), if !stopping => { let _ = r; Wake::Stop }
            };
            match wake {
                Wake::Done(done) => {
                    let current = self
                        .lanes
                        .get(&done.lane)
                        .is_some_and(|l| l.generation == done.generation);
                    if current {
                        self.lanes.remove(&done.lane);
                        self.feed(done.input, done.server);
                    }
                }
                Wake::Keys(ev) => {
                    // Only clustering keys are watched; the filter is the
                    // rule, should the ranges ever hold more.
                    if let Some(revision) = self.coalesce(ev).await {
                        self.feed_now(Input::KeysChanged { revision });
                    }
                }
                Wake::Membership(true) => {
                    if let Some((w, last)) = &mut self.membership {
                        let now = w.state();
                        if now != *last {
                            *last = now.clone();
                            self.feed_now(Input::Membership(membership(now)));
                        }
                    }
                }
                Wake::Membership(false) => self.membership = None,
                Wake::Replication(true) => {
                    if let Some(s) = &self.server {
                        let r = s.replication();
                        self.feed_now(Input::Replication(replication(r)));
                    }
                }
                Wake::Replication(false) => {
                    // The store stopped: not watched again until a new server.
                    self.replication = None;
                    self.replication_ended = true;
                }
                Wake::Tick => self.feed_now(Input::Tick),
                Wake::Stop => {
                    stopping = true;
                    info!("leaving the cluster");
                    self.feed_now(Input::Stop);
                }
            }
        }
        for (_, lane) in std::mem::take(&mut self.lanes) {
            if let Some(t) = lane.task {
                t.abort();
            }
        }
        if let Some(s) = self.set_server(None) {
            s.shutdown().await;
        }
        self.publish(true);
    }

    /// A burst of watch deliveries becomes one: `None` if it changed no
    /// clustering key, else the last revision seen, or `Some(None)` if events
    /// may have been missed (the watch ended or resynced).
    async fn coalesce(&mut self, first: Option<WatchEvent>) -> Option<Option<i64>> {
        let mut delivery = Some(first);
        let (mut last, mut missed, mut relevant) = (0, false, false);
        while let Some(d) = delivery.take() {
            match d {
                Some(WatchEvent::Events(e)) => {
                    last = last.max(last_revision(&e).unwrap_or(0));
                    relevant |= e.iter().any(|e| {
                        e.kv.as_ref()
                            .is_some_and(|kv| !matches!(keys::Key::decode(&kv.key), Ok(None)))
                    });
                }
                Some(WatchEvent::Resync) => missed = true,
                None => {
                    self.keys_watch = None;
                    return Some(None);
                }
            }
            if let Some(w) = self.keys_watch.as_mut() {
                delivery = tokio::time::timeout(Duration::ZERO, w.next()).await.ok();
            }
        }
        if missed {
            Some(None)
        } else {
            relevant.then_some(Some(last))
        }
    }

    /// Replaces the current server (for the driver and for the figures);
    /// returns the one it was.
    fn set_server(&mut self, server: Option<Arc<StoreHandle>>) -> Option<Arc<StoreHandle>> {
        *self.shared_server.lock().unwrap_or_else(|e| e.into_inner()) = server.clone();
        std::mem::replace(&mut self.server, server)
    }

    fn feed_now(&mut self, input: Input) {
        let now = self.now();
        self.agent.handle(now, input);
    }

    /// Feeds an outcome; a started server is kept, and its membership watched.
    fn feed(&mut self, input: Input, server: Option<Arc<StoreHandle>>) {
        let started = server.is_some();
        if let Some(s) = server {
            self.set_server(Some(s));
        }
        let read = match &input {
            Input::KeysRead { revision, keys } => {
                debug!(
                    revision,
                    volunteers = ?keys.volunteers.keys().collect::<Vec<_>>(),
                    nominated = ?keys.nominated.iter().map(|(h, n)| (h, n.revision)).collect::<Vec<_>>(),
                    ideal = ?keys.ideal,
                    "read {}", keys::PREFIX
                );
                Some(*revision)
            }
            _ => None,
        };
        self.feed_now(input);
        if let Some(revision) = read
            && self.keys_watch.is_none()
        {
            self.watched_from = Some(revision);
            self.ensure_keys_watch();
        }
        if started && let Some(s) = &self.server {
            self.replication_ended = false;
            let mut w = s.membership_changes();
            let state = w.state();
            self.membership = Some((w, state.clone()));
            self.feed_now(Input::Membership(membership(state)));
        }
    }

    /// Carries out the agent's outputs; true once it finished.
    fn carry_out(&mut self) -> bool {
        let backlog = std::mem::take(&mut self.backlog);
        let mut outputs = backlog.into_iter();
        while let Some(output) = outputs.next().or_else(|| self.agent.poll_output()) {
            match output {
                Output::Notice(n) => log_notice(&n, self.client.as_ref()),
                Output::Action(Action::Finished) => return true,
                Output::Action(Action::Abandon(lane)) => {
                    if let Some(t) = self.lanes.remove(&lane).and_then(|l| l.task) {
                        t.abort();
                    }
                }
                Output::Action(Action::SetClientEndpoints(urls)) => {
                    if let Some(c) = &self.client
                        && let Err(e) = c.set_endpoints(&urls)
                    {
                        warn!(error = %e, "ignoring bad advertised endpoints");
                    }
                }
                Output::Action(action) => {
                    debug!(?action, "cluster action");
                    self.dispatch(action)
                }
            }
        }
        false
    }

    fn dispatch(&mut self, action: Action) {
        let Some(lane) = action.lane() else { return };
        let mut ctx = self.ctx();
        if let Action::StopServer { .. } = action {
            // Nothing dispatched after this uses the stopping server.
            ctx.server = self.set_server(None);
            self.membership = None;
            self.replication = None;
        }
        // Never reused: an abandoned action's late answer must not pass for
        // a later one's.
        self.next_generation += 1;
        let generation = self.next_generation;
        let entry = self.lanes.entry(lane).or_default();
        entry.generation = generation;
        let tx = self.results_tx.clone();
        entry.task = Some(tokio::spawn(async move {
            let (input, server) = execute(&ctx, action).await;
            let _ = tx.send(Done {
                lane,
                generation,
                input,
                server,
            });
        }));
    }

    /// The watch starts after the first read, so no change between the two
    /// is missed; it is opened again (from the last read) if it ends.
    fn ensure_keys_watch(&mut self) {
        // A single pass alone in its store watches nothing: no one else
        // writes clustering keys there before it ends.
        if self.keys_watch.is_some() || self.agent.alone_for_one_pass() {
            return;
        }
        let (Some(c), Some(rev)) = (&self.client, self.watched_from) else {
            return;
        };
        self.keys_watch = Some(c.watch_ranges(&keys::watched_ranges(), rev + 1));
    }

    fn publish(&self, done: bool) {
        let mut st = self.agent.status();
        if done {
            // Whatever happened, nothing runs any more.
            st = Status {
                done: true,
                servers_started: st.servers_started,
                nominated: st.nominated,
                ..Status::default()
            };
        }
        self.status.send_if_modified(|old| {
            if *old != st {
                *old = st;
                true
            } else {
                false
            }
        });
    }
}

/// The next delivery of a watch, if there is one; never, if not.
pub(crate) async fn next_event(w: &mut Option<Watch>) -> Option<WatchEvent> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn membership_changed(m: &mut Option<(MembershipWatch, MembershipState)>) -> bool {
    match m {
        Some((w, _)) => w.changed().await,
        None => std::future::pending().await,
    }
}

async fn replication_changed(r: &mut Option<ReplicationWatch>) -> bool {
    match r {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn last_revision(events: &[crate::client::Event]) -> Option<i64> {
    events
        .iter()
        .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
        .max()
}

fn membership(m: MembershipState) -> agent::Membership {
    agent::Membership {
        leader: m.leader,
        loaded: m.loaded,
        committed: m.committed,
        config_log: m.config_log,
        voter_sets: m.voter_sets,
        members: m
            .members
            .into_iter()
            .map(|m| agent::StoreMember {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                learner: m.is_learner,
            })
            .collect(),
    }
}

fn replication(r: crate::Replication) -> agent::Replication {
    agent::Replication {
        last_log_index: r.last_log_index,
        matched: r.matched,
    }
}

fn log_notice(n: &Notice, client: Option<&EtcdClient>) {
    match n {
        Notice::Connected {
            volunteers,
            nominated,
        } => info!(
            "connected to the cluster via {}: {volunteers} volunteers, {nominated} nominated",
            client.map(|c| c.endpoints().join(",")).unwrap_or_default()
        ),
        Notice::Malformed(e) => error!("ignoring a malformed clustering key: {e}"),
        Notice::InvalidIdealSize { raw, using } => error!(
            "{} = {raw:?} is not a size >= 1; ignored, using {using}",
            keys::Key::IdealClusterSize
        ),
        Notice::Leading => info!("store leader: managing cluster membership"),
        Notice::Command(c) => info!("cluster: {c:?}"),
        Notice::CommandFailed { command, reason } => warn!("cluster: {command:?}: {reason}"),
        Notice::LeaseExpired { lease } => warn!("lease {lease:x} expired; volunteering again"),
        Notice::Leaving => debug!("leaving: lease revoked"),
        Notice::NotRemovedInTime => warn!("not removed from the cluster in time; stopping anyway"),
        Notice::RetiredId { member_id } => warn!(
            "nominated as member {member_id:x}, whose state was discarded; waiting for a new nomination"
        ),
    }
}

/// Carries out one action; returns its outcome (and a server it started).
async fn execute(ctx: &Ctx, action: Action) -> (Input, Option<Arc<StoreHandle>>) {
    let input =
        match action {
            Action::StartServer {
                mode,
                member_id,
                discard_first,
                reason,
            } => {
                return match start_server(ctx, mode, member_id, discard_first, reason).await {
                    Ok(r) => r,
                    Err((e, discarded)) => {
                        error!("cannot start the store server: {e}");
                        (Input::ServerStartFailed { discarded }, None)
                    }
                };
            }
            Action::StopServer {
                discard,
                reason,
                remember,
            } => stop_server(ctx, discard, reason, &remember).await,
            Action::ListMembers { via } => Input::MemberList(list_members(ctx, via).await),
            Action::ReadKeys { from_own_store } => match read_keys(ctx, from_own_store).await {
                Some((revision, keys)) => Input::KeysRead { revision, keys },
                None => Input::KeysReadFailed,
            },
            Action::GrantLease { ttl_s } => match client(ctx).lease_grant(ttl_s).await {
                Ok(lease) => Input::LeaseGranted { lease },
                Err(e) => {
                    debug!(error = %e, "lease grant failed");
                    Input::LeaseGrantFailed
                }
            },
            Action::KeepAlive { lease } => {
                Input::KeptAlive(match client(ctx).lease_keep_alive_once(lease).await {
                    Ok(left) if left > 0 => KeepAlive::Alive,
                    Ok(_) | Err(ClientError::Status(_)) => KeepAlive::Expired,
                    Err(e) => {
                        debug!(error = %e, "lease keepalive failed");
                        KeepAlive::Failed
                    }
                })
            }
            Action::RevokeLease { lease } => {
                if let Err(e) = client(ctx).lease_revoke(lease).await {
                    warn!(error = %e, "could not revoke lease {lease:x}; it expires by itself");
                }
                Input::LeaseRevoked
            }
            Action::PutLeased { key, value, lease } => {
                let k = key.encode();
                match client(ctx).put(k.as_bytes(), value.as_bytes(), lease).await {
                    Ok(revision) => Input::KeyWritten {
                        revision: Some(revision),
                    },
                    Err(e) => {
                        debug!(error = %e, "cannot write {k}");
                        Input::KeyWritten { revision: None }
                    }
                }
            }
            Action::DeleteKey { key } => {
                let k = key.encode();
                let ok = match client(ctx).delete(k.as_bytes(), false).await {
                    Ok(_) => true,
                    Err(e) => {
                        debug!(error = %e, "cannot delete {k}");
                        false
                    }
                };
                Input::KeyDeleted { ok }
            }
            Action::Txn(txn) => Input::TxnDone(match &ctx.server {
                Some(s) => s.txn(txn).await.map_err(|e| e.to_string()),
                None => Err("no server".into()),
            }),
            Action::ChangeMembership(change) => {
                let Some(s) = &ctx.server else {
                    return (
                        Input::MembershipChanged {
                            result: Err("no server".into()),
                            membership: agent::Membership::default(),
                        },
                        None,
                    );
                };
                let change = match change {
                    MemberChange::AddLearner {
                        id,
                        name,
                        peer_urls,
                        client_urls,
                    } => MembershipChange::AddLearner(MemberSpec {
                        id,
                        node: MemberNode {
                            name,
                            peer_urls,
                            client_urls,
                        },
                    }),
                    MemberChange::Promote { id } => MembershipChange::Promote(id),
                    MemberChange::Remove { id } => MembershipChange::Remove(id),
                    MemberChange::MoveLeader { to } => {
                        let result = s.move_leader(to).await.map_err(|e| e.to_string());
                        return (
                            Input::MembershipChanged {
                                result,
                                membership: membership(s.membership()),
                            },
                            None,
                        );
                    }
                };
                let result =
                    match tokio::time::timeout(ADMIN_TIMEOUT, s.change_membership_here(&change))
                        .await
                    {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err("timed out".into()),
                    };
                Input::MembershipChanged {
                    result,
                    membership: membership(s.membership()),
                }
            }
            Action::UpdateOwnUrls => {
                if let Some(s) = &ctx.server {
                    match tokio::time::timeout(ADMIN_TIMEOUT, s.update_own_urls()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => warn!(error = %e, "could not update own member URLs"),
                        Err(_) => warn!("could not update own member URLs: timed out"),
                    }
                }
                Input::OwnUrlsUpdated
            }
            Action::SetClientEndpoints(_) | Action::Abandon(_) | Action::Finished => Input::Tick,
        };
    (input, None)
}

fn client(ctx: &Ctx) -> &EtcdClient {
    ctx.client
        .as_ref()
        .expect("the client exists before any lease action")
}

/// Starts the server; on failure also says whether its state was discarded.
async fn start_server(
    ctx: &Ctx,
    mode: StartMode,
    member_id: u64,
    discard_first: bool,
    reason: Reason,
) -> Result<(Input, Option<Arc<StoreHandle>>), (ClusterError, bool)> {
    if discard_first {
        let dir = ctx
            .config
            .store
            .discard_data_dir()
            .map_err(|e| (e.into(), false))?;
        info!("discarded stale store state in {}", dir.display());
    }
    let mut config = ctx.config.store.clone();
    config.member_id = Some(member_id);
    let started = match mode {
        StartMode::Bootstrap => Store::start_single(config).await,
        StartMode::Join => Store::start_join(config).await,
    };
    let store = started.map_err(|e| (e.into(), discard_first))?;
    let urls = store.client_urls().join(", ");
    match reason {
        Reason::Bootstrap => info!("store server started on {urls} (bootstrap)"),
        Reason::Restart => info!("store server restarted on {urls} from its state"),
        _ => info!("nominated: store server started on {urls}"),
    }
    let input = Input::ServerStarted {
        id: store.id(),
        peer_urls: store.peer_urls().to_vec(),
        client_urls: store.client_urls().to_vec(),
    };
    Ok((input, Some(Arc::new(store))))
}

async fn stop_server(ctx: &Ctx, discard: bool, reason: Reason, remember: &[String]) -> Input {
    match reason {
        Reason::NotAMemberYet => {
            info!("store state is not of a member yet; waiting for the nomination")
        }
        Reason::Removed => info!("no longer a member: stopping the store server"),
        Reason::Renominated => {
            info!("re-nominated: stopping the store server of the earlier nomination")
        }
        _ => {}
    }
    if let Some(s) = &ctx.server {
        s.shutdown().await;
        info!("store server stopped");
    }
    let mut discarded = false;
    if discard {
        match ctx.config.store.discard_data_dir() {
            Ok(dir) => {
                discarded = true;
                info!("discarded store state in {}", dir.display());
                if !remember.is_empty()
                    && let Err(e) = ctx.config.store.remember_members(remember)
                {
                    warn!("cannot keep the member list: {e}");
                }
            }
            Err(e) => warn!("cannot discard store state: {e}"),
        }
    }
    Input::ServerStopped { discarded }
}

/// MemberList through the cluster client, or of each URL on its own: one
/// list per member that answered.
async fn list_members(ctx: &Ctx, via: Option<Vec<String>>) -> Vec<agent::MemberList> {
    type Answer = Result<(Vec<crate::client::PbMember>, Option<(u64, u64)>), ClientError>;
    let list = |r: Answer| match r {
        Ok((m, config_log)) => Some(agent::MemberList {
            ids: m.into_iter().map(|m| m.id).collect(),
            config_log,
        }),
        Err(e) => {
            debug!(error = %e, "member list unavailable");
            None
        }
    };
    let Some(urls) = via else {
        return list(client(ctx).member_list_indexed().await)
            .into_iter()
            .collect();
    };
    let asks = urls.into_iter().map(|url| {
        let mut cc = ClientConfig::new(vec![url]);
        cc.env = ctx.config.store.env.clone();
        // Every answer is waited for: one member that hangs (shutting
        // down, partitioned) must not hold up what the others say.
        cc.request_timeout = ctx.config.request_timeout.min(PROBE_TIMEOUT);
        async move {
            match EtcdClient::new(cc) {
                Ok(c) => c.member_list_indexed().await,
                Err(e) => Err(e),
            }
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(list)
        .collect()
}

/// Whether this host's own server is its membership's only voter and leads
/// (once it has voted for itself, which such a member does at once). Then a
/// read through the cluster is a read from that server: the client's would
/// reach it over a connection to itself (a lone member's restart read its
/// keys that way, then from its store once it led).
async fn leads_alone(ctx: &Ctx) -> bool {
    let Some(s) = ctx.server.as_ref() else {
        return false;
    };
    let budget = ctx.config.request_timeout;
    let mut changes = s.membership_changes();
    let mut membership = changes.state();
    // A member without seeds has its membership from its own log (or its
    // bootstrap) as soon as raft reports it; one that joins has it only
    // from its leader, and does not wait for it here.
    while !membership.loaded && ctx.config.seeds.is_empty() {
        if !matches!(
            tokio::time::timeout(budget, changes.changed()).await,
            Ok(true)
        ) {
            return false;
        }
        membership = changes.state();
    }
    let only_voter = membership.loaded
        && !membership.voter_sets.is_empty()
        && membership.voter_sets.iter().all(|set| set == &[s.id()]);
    only_voter && s.wait_for_leader(budget).await.ok() == Some(s.id())
}

impl<'a> From<&'a crate::client::KeyValue> for RawKv<'a> {
    fn from(kv: &'a crate::client::KeyValue) -> Self {
        RawKv {
            key: &kv.key,
            value: &kv.value,
            create_revision: kv.create_revision,
        }
    }
}

async fn read_keys(ctx: &Ctx, from_own_store: bool) -> Option<(i64, ClusterKeys)> {
    // One range holding both watched ranges (and statuses and exports, but
    // not the deploys, whose texts may be large).
    let (key, range_end) = keys::read_range();
    let failed = |e: &dyn std::fmt::Display| debug!(error = %e, "cannot read {}", keys::PREFIX);
    if from_own_store || leads_alone(ctx).await {
        let s = ctx.server.as_ref()?;
        let (revision, kvs) = s
            .get_range_at(&key, &range_end)
            .await
            .map_err(|e| failed(&e))
            .ok()?;
        return Some((revision, ClusterKeys::decode(kvs.iter().map(RawKv::from))));
    }
    let (revision, kvs) = client(ctx)
        .get_range(&key, &range_end)
        .await
        .map_err(|e| failed(&e))
        .ok()?;
    Some((revision, ClusterKeys::decode(kvs.iter().map(RawKv::from))))
}
