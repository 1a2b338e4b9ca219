//! Automatic clustering: the driver that turns a set of mgmt hosts into a store
//! cluster of `/_mgmt/idealClusterSize` members, growing and shrinking it as hosts
//! come and go.
//!
//! Every host runs one [`Cluster`]. It talks to the cluster only as an etcd
//! client ([`EtcdClient`]), through keys under `/_mgmt/`:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `volunteers/<host>` | peer URLs, comma-joined; bound to the host's lease | each host that may run a server |
//! | `nominated/<host>` | peer URLs | the store leader, by conditional txn |
//! | `endpoints/<host>` | `peer=<urls> client=<urls> id=<member ID, hex>`; bound to the host's lease | a host once its server runs |
//! | `idealClusterSize` | decimal | the bootstrap host, or an operator |
//!
//! The leases make a crashed host's keys expire: the leader then sees it has
//! stopped volunteering and removes it.
//!
//! Roles, re-evaluated on every change seen through a watch of `/_mgmt/` and on
//! a periodic tick:
//! - **Bootstrap** (no seeds): start a one-member store, nominate itself, write
//!   `idealClusterSize`.
//! - **Volunteer** (any host that may run a server): hold `volunteers/<host>`.
//! - **Nominee**: once `nominated/<host>` appears, start the store server with
//!   [`Store::start_join`] (on fresh state unless it is still a member) and
//!   advertise `endpoints/<host>`; the leader adds it as a learner and promotes it.
//! - **Un-nominated**: keep serving until the leader removed it from the
//!   membership, then shut the server down (listeners released, so the same URLs
//!   can serve again later) and discard its raft state; it stays a client.
//! - **Leader** (the host whose store is raft leader): runs the pure
//!   [`Nominator`] (`mgmt_core::cluster`) over the observed [`View`] and carries
//!   out its commands one at a time. Right before each it checks it is still
//!   leader; nominations are txns conditional on the key's state, and membership
//!   changes are raft operations the leader alone can commit (no forwarding), so
//!   a deposed leader acting on a stale view changes nothing.
//!
//! [`Cluster::shutdown`] revokes the host's lease (its volunteer and endpoints
//! keys go with it); a member then waits, at most [`ClusterConfig::leave_timeout`],
//! for the leader to remove it before stopping its server, so shutdown never
//! hangs when the cluster has no quorum.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mgmt_core::cluster::{Command as NCommand, Input, Member as NMember, Nominator, Output, View};
use mgmt_core::time::Millis;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::client::{ClientConfig, ClientError, EtcdClient, TxnRequest, Watch, txn};
use crate::node::AdminOp;
use crate::{
    Member, MemberNode, MemberSpec, Store, StoreConfig, StoreError, StoreHandle, member_id,
    stored_member_id,
};

/// Namespace of the clustering keys.
pub const NS: &str = "/_mgmt/";
pub const VOLUNTEERS: &str = "/_mgmt/volunteers/";
pub const NOMINATED: &str = "/_mgmt/nominated/";
pub const ENDPOINTS: &str = "/_mgmt/endpoints/";
pub const IDEAL_CLUSTER_SIZE: &str = "/_mgmt/idealClusterSize";

/// Errors starting clustering.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("store: {0}")]
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
    /// Re-evaluate at least this often.
    pub tick: Duration,
    /// How long [`Cluster::shutdown`] waits for the leader to remove this member.
    pub leave_timeout: Duration,
    /// Budget of one etcd client call.
    pub request_timeout: Duration,
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
            tick: Duration::from_millis(500),
            leave_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            nominator_bug: mgmt_core::cluster::Bug::None,
        }
    }
}

/// What a host is doing, for logs, the CLI and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Client URLs of this host's store server while it runs.
    pub server: Option<Vec<String>>,
    /// This host's store is the raft leader.
    pub leader: bool,
    /// This host is nominated.
    pub nominated: bool,
    /// Times this host started a server (tests check restarts).
    pub servers_started: u64,
    /// The driver has finished (after shutdown).
    pub done: bool,
    /// The membership as this host's store sees it: `(name, is_learner)`, sorted.
    pub members: Vec<(String, bool)>,
}

/// A running clustering driver. Call [`Cluster::shutdown`] to leave cleanly;
/// dropping it aborts the driver (and stops the server without leaving).
pub struct Cluster {
    client: EtcdClient,
    status: watch::Receiver<Status>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Cluster {
    /// Start clustering. Without seeds this starts the first member at once (so a
    /// port in use fails here) and performs the bootstrap writes; with seeds it
    /// connects as a client and volunteers in the background.
    pub async fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let bootstrap = config.seeds.is_empty();
        if bootstrap && !config.server {
            return Err(ClusterError::NoCluster);
        }
        let mut server = None;
        let mut remembered = Vec::new();
        let endpoints = if bootstrap {
            let store = Store::start_single(config.store.clone()).await?;
            info!(
                "store server started on {} (bootstrap)",
                store.client_urls().join(", ")
            );
            let urls = store.client_urls().to_vec();
            server = Some(Arc::new(store));
            urls
        } else {
            if config.server && has_state(&config.store.data_dir()?) {
                // A member restarting (after a crash): serve again at once from
                // its state. Waiting to read its nomination first could
                // deadlock: the cluster may need this very member for quorum.
                let store = Store::start_join(config.store.clone()).await?;
                // Raft publishes the membership it loaded once its core runs.
                let _ = store
                    .node
                    .raft
                    .wait(Some(Duration::from_secs(2)))
                    .metrics(|m| m.membership_config.log_id().is_some(), "loaded")
                    .await;
                if store.members().iter().any(|m| m.id == store.id()) {
                    info!(
                        "store server restarted on {} from its state",
                        store.client_urls().join(", ")
                    );
                    server = Some(Arc::new(store));
                } else {
                    // Not a member by its own log: removed while down, or a
                    // nominee that stopped before it learnt it was added. The
                    // state stays until its nomination is known (see
                    // `start_server`): discarding a learner's log the leader
                    // already counted would make that log go backwards.
                    remembered = others_client_urls(&store);
                    store.shutdown().await;
                    info!("store state is not of a member yet; waiting for the nomination");
                }
            }
            config.seeds.clone()
        };
        let mut cc = ClientConfig::new(endpoints);
        cc.env = config.store.env.clone();
        cc.request_timeout = config.request_timeout;
        let client = EtcdClient::new(cc)?;
        let (status_tx, status) = watch::channel(Status::default());
        let (stop, stop_rx) = watch::channel(false);
        let mut driver = Driver {
            started_at: Instant::now(),
            peer_urls: config.store.peer_urls.clone(),
            config,
            client: client.clone(),
            server,
            status: status_tx,
            lease: None,
            lease_checked: Instant::now(),
            nominator: None,
            view: Observed::default(),
            bootstrapped: false,
            leaving_since: None,
            servers_started: 0,
            next_start_attempt: Instant::now(),
            connected: false,
            remembered,
            stop_requested: stop_rx.clone(),
        };
        if let Some(s) = driver.server.clone() {
            driver.servers_started = 1;
            driver.peer_urls = s.peer_urls().to_vec();
            // The bootstrap writes, once there is a leader (bounded: a restarted
            // member of a cluster without quorum keeps trying in the driver).
            if bootstrap
                && s.wait_for_leader(driver.config.request_timeout)
                    .await
                    .is_ok()
            {
                driver.bootstrap().await;
            }
        }
        driver.publish();
        let task = tokio::spawn(driver.run(stop_rx));
        Ok(Cluster {
            client,
            status,
            stop,
            task: Some(task),
        })
    }

    /// The etcd client this host uses (it follows the advertised endpoints).
    pub fn client(&self) -> EtcdClient {
        self.client.clone()
    }

    /// Watch what this host is doing.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Leave the cluster cleanly and stop: revoke the lease, wait (bounded) for
    /// removal from the membership, stop the server.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// The cluster as read from `/_mgmt/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Observed {
    ideal_raw: Option<String>,
    volunteers: BTreeMap<String, String>,
    nominated: BTreeMap<String, String>,
    /// host -> create revision of its `nominated/<host>` key (names the
    /// nomination, and so the member ID it serves under, [`incarnation_id`]).
    nominated_rev: BTreeMap<String, i64>,
    /// host -> (peer URLs, client URLs)
    endpoints: BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// host -> member ID its advertised server runs under.
    endpoint_ids: BTreeMap<String, u64>,
}

/// The member ID a host serves under for the nomination whose key was created
/// at `nomination_revision`. Each nomination gets a new ID, as each etcd
/// member gets a new ID: a host that left and discarded its raft state must
/// never rejoin under an ID the cluster (or a leader's replication progress)
/// still associates with the old log, or openraft sees that log go backwards
/// ("follower log reversion"). The bootstrap member keeps [`member_id`] of its
/// hostname. MemberList still names every member by its hostname.
pub fn incarnation_id(host: &str, nomination_revision: i64) -> u64 {
    member_id(&format!("{host}#{nomination_revision}"))
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// `endpoints/<host>` value.
fn endpoints_value(peer: &[String], client: &[String], id: u64) -> String {
    format!(
        "peer={} client={} id={id:x}",
        peer.join(","),
        client.join(",")
    )
}

fn parse_endpoints(v: &str) -> (Vec<String>, Vec<String>, Option<u64>) {
    let mut peer = Vec::new();
    let mut client = Vec::new();
    let mut id = None;
    for part in v.split_whitespace() {
        if let Some(p) = part.strip_prefix("peer=") {
            peer = split_urls(p);
        } else if let Some(c) = part.strip_prefix("client=") {
            client = split_urls(c);
        } else if let Some(i) = part.strip_prefix("id=") {
            id = u64::from_str_radix(i, 16).ok();
        }
    }
    (peer, client, id)
}

impl Observed {
    fn parse(kvs: Vec<crate::client::KeyValue>) -> Self {
        let mut o = Observed::default();
        for kv in kvs {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let value = String::from_utf8_lossy(&kv.value).into_owned();
            if key == IDEAL_CLUSTER_SIZE {
                o.ideal_raw = Some(value);
            } else if let Some(h) = key.strip_prefix(VOLUNTEERS) {
                o.volunteers.insert(h.to_string(), value);
            } else if let Some(h) = key.strip_prefix(NOMINATED) {
                o.nominated.insert(h.to_string(), value);
                o.nominated_rev.insert(h.to_string(), kv.create_revision);
            } else if let Some(h) = key.strip_prefix(ENDPOINTS) {
                let (peer, client, id) = parse_endpoints(&value);
                o.endpoints.insert(h.to_string(), (peer, client));
                if let Some(id) = id {
                    o.endpoint_ids.insert(h.to_string(), id);
                }
            }
        }
        o
    }
}

struct Driver {
    config: ClusterConfig,
    client: EtcdClient,
    server: Option<Arc<StoreHandle>>,
    /// Peer URLs as bound (port 0 resolved once a server ran).
    peer_urls: Vec<String>,
    status: watch::Sender<Status>,
    /// The host's lease and the keys it holds, as last written.
    lease: Option<(i64, BTreeMap<String, String>)>,
    lease_checked: Instant,
    /// Present while this host's store is leader.
    nominator: Option<Nominator>,
    view: Observed,
    bootstrapped: bool,
    leaving_since: Option<Instant>,
    servers_started: u64,
    next_start_attempt: Instant,
    started_at: Instant,
    connected: bool,
    /// Client URLs of the other members this host's store last knew of: a
    /// host whose seeds are all gone still finds the cluster through them.
    remembered: Vec<String>,
    /// Turns true when the agent is asked to stop.
    stop_requested: watch::Receiver<bool>,
}

impl Driver {
    fn host(&self) -> &str {
        &self.config.store.hostname
    }

    fn now(&self) -> Millis {
        Millis(self.started_at.elapsed().as_millis() as u64)
    }

    fn publish(&self) {
        let leader = self
            .server
            .as_ref()
            .is_some_and(|s| s.leader() == Some(s.id()));
        let st = Status {
            server: self.server.as_ref().map(|s| s.client_urls().to_vec()),
            leader,
            nominated: self.view.nominated.contains_key(self.host()),
            servers_started: self.servers_started,
            done: false,
            members: self.server.as_ref().map_or_else(Vec::new, |s| {
                let mut m: Vec<(String, bool)> = s
                    .members()
                    .into_iter()
                    .map(|m| (m.name, m.is_learner))
                    .collect();
                m.sort();
                m
            }),
        };
        self.status.send_if_modified(|old| {
            if *old != st {
                *old = st;
                true
            } else {
                false
            }
        });
    }

    /// Nominate itself and write idealClusterSize (the first member's job).
    async fn bootstrap(&mut self) {
        let Some(s) = self.server.clone() else { return };
        let me = self.host().to_string();
        let key = format!("{NOMINATED}{me}");
        let mut ok = s
            .put(key.as_bytes(), self.peer_urls.join(",").as_bytes())
            .await
            .is_ok();
        if let Some(n) = self.config.ideal_cluster_size {
            ok &= s
                .put(IDEAL_CLUSTER_SIZE.as_bytes(), n.to_string().as_bytes())
                .await
                .is_ok();
        }
        self.bootstrapped = ok;
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut watch: Option<Watch> = None;
        let mut next_tick = Instant::now();
        loop {
            if watch.is_none() {
                watch = Some(self.client.watch_prefix(NS.as_bytes(), 0));
            }
            let w = watch.as_mut().expect("watch");
            tokio::select! {
                ev = w.next() => {
                    // Coalesce a burst of events into one step.
                    let mut ended = ev.is_none();
                    while !ended {
                        match tokio::time::timeout(Duration::ZERO, w.next()).await {
                            Ok(Some(_)) => {}
                            Ok(None) => ended = true,
                            Err(_) => break,
                        }
                    }
                    if ended {
                        watch = None;
                    }
                }
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick = Instant::now() + self.config.tick;
                }
                r = stop.changed(), if self.leaving_since.is_none() => {
                    let _ = r;
                    info!("leaving the cluster");
                    self.leaving_since = Some(Instant::now());
                    // Without quorum the revoke cannot commit: it gets the
                    // leave timeout at most, like everything after it.
                    let _ = tokio::time::timeout(self.config.leave_timeout, self.release_lease()).await;
                }
            }
            let done = match self.leaving_since {
                // Leaving is bounded as a whole: RPCs that cannot succeed
                // without quorum must not stretch it step by step.
                Some(since) => {
                    let left = self.config.leave_timeout.saturating_sub(since.elapsed());
                    match tokio::time::timeout(left, self.step()).await {
                        Ok(done) => done,
                        Err(_) => self.leave_done(since).await,
                    }
                }
                None => self.step().await,
            };
            if done {
                break;
            }
        }
        drop(watch);
        self.status.send_modify(|s| {
            s.done = true;
            s.server = None;
            s.members.clear();
        });
    }

    /// One evaluation. Returns true once the host has left (shutdown finished).
    async fn step(&mut self) -> bool {
        if self.server.is_some() && !self.bootstrapped && self.config.seeds.is_empty() {
            self.bootstrap().await;
        }
        let read_ok = match self.client.get_prefix(NS.as_bytes()).await {
            Ok((_, kvs)) => {
                self.view = Observed::parse(kvs);
                if !self.connected {
                    self.connected = true;
                    info!(
                        "connected to the cluster via {}: {} volunteers, {} nominated",
                        self.client.endpoints().join(","),
                        self.view.volunteers.len(),
                        self.view.nominated.len()
                    );
                }
                self.follow_endpoints();
                true
            }
            Err(e) => {
                debug!(error = %e, "cannot read {NS}");
                // The seeds may all be gone (a member restarting after the
                // cluster moved on): try the members its own log lists too.
                self.follow_endpoints();
                false
            }
        };
        if self.leaving_since.is_none() {
            self.keep_lease().await;
        }
        if read_ok {
            self.host_role().await;
        }
        self.leader_role().await;
        self.publish();
        if let Some(since) = self.leaving_since {
            return self.leave_done(since).await;
        }
        false
    }

    /// Point the client at every advertised member (and the seeds).
    fn follow_endpoints(&self) {
        let mut urls: Vec<String> = Vec::new();
        if let Some(s) = &self.server
            && self.is_voter(s)
        {
            urls.extend(s.client_urls().iter().cloned());
        }
        for (h, (_, client)) in &self.view.endpoints {
            if h != self.host() {
                urls.extend(client.iter().cloned());
            }
        }
        urls.extend(self.config.seeds.iter().cloned());
        // The other members this host's store knows (or last knew) of, last:
        // a host that restarts after its seeds left still reaches the cluster.
        match &self.server {
            Some(s) => urls.extend(others_client_urls(s)),
            None => urls.extend(self.remembered.iter().cloned()),
        }
        let mut seen = BTreeSet::new();
        urls.retain(|u| seen.insert(u.clone()));
        if let Err(e) = self.client.set_endpoints(&urls) {
            warn!(error = %e, "ignoring bad advertised endpoints");
        }
    }

    fn is_voter(&self, s: &StoreHandle) -> bool {
        s.leader().is_some() && s.members().iter().any(|m| m.id == s.id() && !m.is_learner)
    }

    /// The keys this host's lease should hold right now.
    fn wanted_leased_keys(&self) -> BTreeMap<String, String> {
        let mut keys = BTreeMap::new();
        if self.config.server {
            keys.insert(
                format!("{VOLUNTEERS}{}", self.host()),
                self.peer_urls.join(","),
            );
        }
        if let Some(s) = &self.server {
            keys.insert(
                format!("{ENDPOINTS}{}", self.host()),
                endpoints_value(s.peer_urls(), s.client_urls(), s.id()),
            );
        }
        keys
    }

    /// Hold the lease and its keys: refresh it every third of its TTL, re-grant
    /// it if it expired, (re)write keys that changed, delete keys no longer wanted.
    async fn keep_lease(&mut self) {
        let wanted = self.wanted_leased_keys();
        if wanted.is_empty() && self.lease.is_none() {
            return;
        }
        let ttl = self.config.lease_ttl_s.max(1);
        if let Some((id, _)) = &self.lease {
            let id = *id;
            let due = self.lease_checked + Duration::from_millis(ttl as u64 * 1000 / 3);
            if Instant::now() >= due {
                match self.client.lease_keep_alive_once(id).await {
                    Ok(left) if left > 0 => self.lease_checked = Instant::now(),
                    Ok(_) | Err(ClientError::Status(_)) => {
                        warn!("lease {id:x} expired; volunteering again");
                        self.lease = None;
                    }
                    Err(e) => debug!(error = %e, "lease keepalive failed"),
                }
            }
        }
        if self.lease.is_none() {
            match self.client.lease_grant(ttl).await {
                Ok(id) => {
                    self.lease = Some((id, BTreeMap::new()));
                    self.lease_checked = Instant::now();
                }
                Err(e) => {
                    debug!(error = %e, "lease grant failed");
                    return;
                }
            }
        }
        let Some((id, held)) = self.lease.clone() else {
            return;
        };
        let mut now_held = held.clone();
        for (k, v) in &wanted {
            // Rewrite keys that vanished from the store too (e.g. deleted by hand).
            let in_store = self.key_in_view(k);
            if held.get(k) != Some(v) || !in_store {
                match self.client.put(k.as_bytes(), v.as_bytes(), id).await {
                    Ok(_) => {
                        now_held.insert(k.clone(), v.clone());
                    }
                    Err(e) => debug!(error = %e, "cannot write {k}"),
                }
            }
        }
        for k in held.keys().filter(|k| !wanted.contains_key(*k)) {
            match self.client.delete(k.as_bytes(), false).await {
                Ok(_) => {
                    now_held.remove(k);
                }
                Err(e) => debug!(error = %e, "cannot delete {k}"),
            }
        }
        self.lease = Some((id, now_held));
    }

    fn key_in_view(&self, key: &str) -> bool {
        if let Some(h) = key.strip_prefix(VOLUNTEERS) {
            self.view.volunteers.contains_key(h)
        } else if let Some(h) = key.strip_prefix(ENDPOINTS) {
            self.view.endpoints.contains_key(h)
        } else {
            true
        }
    }

    async fn release_lease(&mut self) {
        if let Some((id, _)) = self.lease.take()
            && let Err(e) = self.client.lease_revoke(id).await
        {
            warn!(error = %e, "could not revoke lease {id:x}; it expires by itself");
        }
    }

    /// Start or stop this host's server to match its nomination.
    async fn host_role(&mut self) {
        let me = self.host().to_string();
        let nominated = self.view.nominated.contains_key(&me);
        let may_serve = self.config.server && self.leaving_since.is_none();
        if nominated && may_serve && self.server.is_none() {
            if Instant::now() >= self.next_start_attempt {
                self.start_server().await;
            }
        } else if nominated
            && let Some(s) = self.server.clone()
            && self.stale_server(&s)
            && self.removed(&s).await
        {
            // Nominated anew while the server of an earlier nomination was still
            // running: the leader removed that member first. Stop it and
            // start again under the new nomination's ID.
            info!("re-nominated: stopping the store server of the earlier nomination");
            self.stop_server(true).await;
        } else if !nominated
            && let Some(s) = self.server.clone()
            && self.removed(&s).await
        {
            info!("no longer a member: stopping the store server");
            self.stop_server(true).await;
        }
    }

    /// The member ID of this host's current nomination, if it is nominated.
    fn nomination_id(&self) -> Option<u64> {
        let me = self.host();
        self.view
            .nominated_rev
            .get(me)
            .map(|rev| incarnation_id(me, *rev))
    }

    /// Whether the running server was started for an earlier nomination (its
    /// ID is not the current nomination's). The bootstrap member's ID is its
    /// hostname's and never matches; it is stale only once removed.
    fn stale_server(&self, s: &StoreHandle) -> bool {
        self.nomination_id().is_some_and(|id| id != s.id())
    }

    /// Start the server as a joining member under the current nomination's
    /// ID ([`incarnation_id`]). State on disk is kept if it belongs to this
    /// nomination (a nominee restarting) or to a member the cluster still
    /// lists (a member restarting); otherwise it is discarded, and the fresh
    /// state gets the new ID, never the old one.
    async fn start_server(&mut self) {
        let me = self.host().to_string();
        let Some(want) = self.nomination_id() else {
            return;
        };
        let dir = match self.config.store.data_dir() {
            Ok(dir) => dir,
            Err(e) => {
                error!("cannot start the store server: {e}");
                self.next_start_attempt = Instant::now() + Duration::from_secs(2);
                return;
            }
        };
        if dir.exists() {
            let stored = stored_member_id(&dir);
            if stored != Some(want) {
                let members = match self.client.member_list().await {
                    Ok(m) => m,
                    Err(e) => {
                        debug!(error = %e, "member list unavailable; not starting yet");
                        return;
                    }
                };
                let old = stored.unwrap_or_else(|| member_id(&me));
                if !members.iter().any(|m| m.id == old) {
                    info!("discarding stale store state in {}", dir.display());
                    if let Err(e) = self.config.store.discard_data_dir() {
                        error!("cannot discard stale store state: {e}");
                        return;
                    }
                }
            }
        }
        let mut config = self.config.store.clone();
        config.member_id = Some(want);
        match Store::start_join(config).await {
            Ok(s) => {
                info!(
                    "nominated: store server started on {}",
                    s.client_urls().join(", ")
                );
                self.peer_urls = s.peer_urls().to_vec();
                self.server = Some(Arc::new(s));
                self.servers_started += 1;
                // Advertise at once; the leader waits for it.
                self.keep_lease().await;
            }
            Err(e) => {
                error!("cannot start the store server: {e}");
                self.next_start_attempt = Instant::now() + Duration::from_secs(2);
            }
        }
    }

    /// Has the cluster removed this host's member? Asked of the other members
    /// (this one's own view may be stale once it is out) and of its own store.
    async fn removed(&self, s: &StoreHandle) -> bool {
        let id = s.id();
        if !s.members().iter().any(|m| m.id == id) {
            return true;
        }
        let mut others: Vec<String> = self
            .view
            .endpoints
            .iter()
            .filter(|(h, _)| *h != self.host())
            .flat_map(|(_, (_, c))| c.iter().cloned())
            .collect();
        others.extend(
            self.config
                .seeds
                .iter()
                .filter(|u| !s.client_urls().contains(u))
                .cloned(),
        );
        if others.is_empty() {
            return false;
        }
        let mut cc = ClientConfig::new(others);
        cc.env = self.config.store.env.clone();
        cc.request_timeout = self.config.request_timeout;
        let Ok(c) = EtcdClient::new(cc) else {
            return false;
        };
        match c.member_list().await {
            Ok(members) => !members.is_empty() && !members.iter().any(|m| m.id == id),
            Err(_) => false,
        }
    }

    /// Stop the server; `discard` also deletes its raft state (it is no member).
    async fn stop_server(&mut self, discard: bool) {
        let Some(s) = self.server.take() else { return };
        self.remembered = others_client_urls(&s);
        s.shutdown().await;
        info!("store server stopped");
        if discard {
            match self.config.store.discard_data_dir() {
                Ok(dir) => info!("discarded store state in {}", dir.display()),
                Err(e) => warn!("cannot discard store state: {e}"),
            }
        }
        self.follow_endpoints();
        // Withdraw the endpoints key (the lease keeps the volunteer key).
        if self.leaving_since.is_none() {
            self.keep_lease().await;
        }
    }

    /// While shutting down: done once no server runs, or this is the last
    /// member, or the leave timeout passed.
    async fn leave_done(&mut self, since: Instant) -> bool {
        let Some(s) = self.server.clone() else {
            return true;
        };
        let alone = s.members().len() <= 1;
        let timed_out = since.elapsed() >= self.config.leave_timeout;
        if alone || timed_out {
            if timed_out && !alone {
                warn!("not removed from the cluster in time; stopping anyway");
            }
            self.stop_server(false).await;
            return true;
        }
        false
    }

    /// If this host's store is leader, decide and act (one command at a time).
    async fn leader_role(&mut self) {
        let Some(s) = self.server.clone() else {
            self.nominator = None;
            return;
        };
        if s.leader() != Some(s.id()) {
            self.nominator = None;
            return;
        }
        if self.nominator.is_none() {
            info!("store leader: managing cluster membership");
        }
        let mut n = self
            .nominator
            .take()
            .unwrap_or_else(|| Nominator::with_bug(self.config.nominator_bug));
        // A bound on commands per step keeps the loop responsive.
        for _ in 0..8 {
            let Some(view) = self.leader_view(&s).await else {
                break;
            };
            let now = self.now();
            n.handle(now, Input::Observed(view));
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle(now, Input::Tick);
            }
            let mut cmd = None;
            while let Some(o) = n.poll_output() {
                match o {
                    Output::Command(c) => cmd = Some(c),
                    Output::InvalidIdealSize { raw, using } => error!(
                        "{IDEAL_CLUSTER_SIZE} = {raw:?} is not a size >= 1; ignored, using {using}"
                    ),
                }
            }
            let Some(cmd) = cmd else { break };
            let ok = self.execute(&s, &cmd).await;
            // Feed the effect before the outcome, so the next decision sees it.
            if let Some(view) = self.leader_view(&s).await {
                n.handle(self.now(), Input::Observed(view));
            }
            n.handle(self.now(), Input::Done { ok });
            if !ok {
                break;
            }
        }
        self.nominator = Some(n);
    }

    /// The leader's view: keys read linearizably from its own store, and its
    /// raft membership.
    async fn leader_view(&self, s: &StoreHandle) -> Option<View> {
        let kvs = s.get_prefix(NS.as_bytes()).await.ok()?;
        let o = Observed::parse(
            kvs.into_iter()
                .map(|kv| crate::client::KeyValue {
                    key: kv.key,
                    value: kv.value,
                    create_revision: kv.create_revision,
                    ..Default::default()
                })
                .collect(),
        );
        Some(View {
            leader: self.host().to_string(),
            ideal_raw: o.ideal_raw.clone(),
            volunteers: o.volunteers.clone(),
            nominated: o.nominated.keys().cloned().collect(),
            // Only a server started for the current nomination counts: an
            // endpoints key left by the server of an earlier nomination (still
            // shutting down) must not be added back under the new one.
            started: o
                .endpoints
                .iter()
                .filter(|(h, _)| {
                    o.nominated_rev.get(*h).map(|rev| incarnation_id(h, *rev))
                        == o.endpoint_ids.get(*h).copied()
                })
                .map(|(h, (p, _))| (h.clone(), p.join(",")))
                .collect(),
            members: s
                .members()
                .into_iter()
                .map(|m| {
                    (
                        m.name,
                        NMember {
                            learner: m.is_learner,
                        },
                    )
                })
                .collect(),
        })
    }

    /// Carry out one command with fencing; true if it took effect.
    async fn execute(&self, s: &StoreHandle, cmd: &NCommand) -> bool {
        if s.leader() != Some(s.id()) {
            return false;
        }
        info!("cluster: {cmd:?}");
        let res: Result<bool, String> = match cmd {
            NCommand::Nominate(h) => {
                let key = format!("{NOMINATED}{h}");
                let vol = format!("{VOLUNTEERS}{h}");
                let urls = s
                    .get(vol.as_bytes())
                    .await
                    .ok()
                    .flatten()
                    .map(|kv| kv.value)
                    .unwrap_or_default();
                self.txn(
                    s,
                    TxnRequest {
                        compare: vec![txn::absent(key.as_bytes()), txn::present(vol.as_bytes())],
                        success: vec![txn::put(key.as_bytes(), &urls, 0)],
                        failure: vec![],
                    },
                )
                .await
            }
            NCommand::Unnominate(h) => {
                let key = format!("{NOMINATED}{h}");
                self.txn(
                    s,
                    TxnRequest {
                        compare: vec![txn::present(key.as_bytes())],
                        success: vec![txn::delete(key.as_bytes())],
                        failure: vec![],
                    },
                )
                .await
            }
            NCommand::AddLearner { host, peer_urls } => {
                let key = format!("{NOMINATED}{host}");
                let Some(rev) = s
                    .get(key.as_bytes())
                    .await
                    .ok()
                    .flatten()
                    .map(|kv| kv.create_revision)
                else {
                    debug!("cluster: {host} is no longer nominated");
                    return false;
                };
                // From the leader's own (linearizable) read, as the decision
                // was: the driver's client view may predate the nominee's
                // endpoints, and a member listed without client URLs cannot be
                // found through MemberList (a restarted member whose seeds
                // are gone looks for the cluster there).
                let ep = format!("{ENDPOINTS}{host}");
                let client_urls = s
                    .get(ep.as_bytes())
                    .await
                    .ok()
                    .flatten()
                    .map(|kv| parse_endpoints(&String::from_utf8_lossy(&kv.value)).1)
                    .unwrap_or_default();
                let spec = MemberSpec {
                    id: incarnation_id(host, rev),
                    node: MemberNode {
                        name: host.clone(),
                        peer_urls: split_urls(peer_urls),
                        client_urls,
                    },
                };
                // Not blocking until it caught up: a nominee that dies now must
                // not stall the leader. Promote waits for it instead.
                let add = async {
                    s.node
                        .raft
                        .add_learner(spec.id, spec.node, false)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                };
                self.until_stop(ADMIN_TIMEOUT, add).await
            }
            NCommand::Promote(h) => {
                let learners: Vec<u64> = named(&s.members(), h)
                    .filter(|m| m.is_learner)
                    .map(|m| m.id)
                    .collect();
                let mut res = Ok(!learners.is_empty());
                for id in learners {
                    if !caught_up(s, id) {
                        debug!("cluster: {h} is still catching up");
                        return false;
                    }
                    res = self.admin(s, AdminOp::Promote { id }).await;
                    if !matches!(res, Ok(true)) {
                        break;
                    }
                }
                res
            }
            NCommand::RemoveMember(h) => {
                // Every member of that name: normally one.
                let ids: Vec<u64> = named(&s.members(), h).map(|m| m.id).collect();
                let mut res = Ok(!ids.is_empty());
                for id in ids {
                    res = self.admin(s, AdminOp::Remove { id }).await;
                    if !matches!(res, Ok(true)) {
                        break;
                    }
                }
                res
            }
        };
        match res {
            Ok(true) => true,
            Ok(false) => {
                debug!("cluster: {cmd:?} did not apply (state changed)");
                false
            }
            Err(e) => {
                warn!("cluster: {cmd:?} failed: {e}");
                false
            }
        }
    }

    async fn txn(&self, s: &StoreHandle, req: TxnRequest) -> Result<bool, String> {
        let req = crate::server::txn_from_pb(req).map_err(|e| e.to_string())?;
        let applied = s
            .command(mgmt_core::kv::Command::Txn(req))
            .await
            .map_err(|e| e.to_string())?;
        match applied.result.map_err(|e| e.to_string())? {
            mgmt_core::kv::Output::Txn(t) => Ok(t.succeeded),
            _ => Ok(false),
        }
    }

    /// A membership change on this member only if it is leader (never forwarded).
    async fn admin(&self, s: &StoreHandle, op: AdminOp) -> Result<bool, String> {
        let change = async { s.node.admin_local(&op).await.map_err(|e| format!("{e:?}")) };
        self.until_stop(crate::node::REQUEST_TIMEOUT * 6, change)
            .await
    }

    /// Waits for a membership change for at most `limit`. A change begun
    /// before a stop request is waited for no longer once it comes (as after
    /// a timeout: the change stays proposed): without quorum the wait lasts
    /// its whole limit, and the agent must leave. A change made while leaving
    /// (the leader removing itself) is not cut.
    async fn until_stop(
        &self,
        limit: Duration,
        change: impl std::future::Future<Output = Result<(), String>>,
    ) -> Result<bool, String> {
        let change = tokio::time::timeout(limit, change);
        let mut stop = self.stop_requested.clone();
        let began_before_stop = !*stop.borrow();
        let stop_requested = async move {
            if began_before_stop {
                let _ = stop.wait_for(|s| *s).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = change => match r {
                Ok(Ok(())) => Ok(true),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("timed out".into()),
            },
            _ = stop_requested => Err("stopping; no longer waiting for it to commit".into()),
        }
    }
}

/// Client URLs of the members `s` knows of, other than itself.
fn others_client_urls(s: &StoreHandle) -> Vec<String> {
    s.members()
        .into_iter()
        .filter(|m| m.id != s.id())
        .flat_map(|m| m.client_urls)
        .collect()
}

/// The members named `host` (its hostname).
fn named<'a>(members: &'a [Member], host: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
    members.iter().filter(move |m| m.name == host)
}

/// Whether a data directory holds store state from an earlier run.
fn has_state(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Bound on one membership change, so the leader's loop never stalls for long.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Log entries a learner may lag behind the leader and still be promoted.
const PROMOTE_LAG: u64 = 64;

/// Whether the learner `id` has replicated (nearly) all of the leader's log.
fn caught_up(s: &StoreHandle, id: u64) -> bool {
    let m = s.node.raft.metrics();
    let m = m.borrow();
    let last = m.last_log_index.unwrap_or(0);
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned().flatten())
        .is_some_and(|matched| matched.index + PROMOTE_LAG >= last)
}
