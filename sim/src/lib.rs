//! mgmt simulator: turmoil hosts run the production clustering driver
//! ([`mgmt_store::cluster::Cluster`]) and store over simulated TCP
//! ([`net::TurmoilNet`]) with simulated time, while a schedule chosen by
//! proptest ([`schedule`]) sets `idealClusterSize`, writes keys, partitions
//! links, crashes, restarts, withdraws and adds hosts. Safety invariants
//! ([`invariants`]) are checked after every step; then, faults off, the
//! cluster must reach its ideal size within a bound.
//!
//! Hosts are `h1..hN` at `10.0.0.N` (turmoil treats every `127.x` address as
//! the host itself, so the article's `127.0.0.N` loopback layout becomes a
//! private subnet here), each serving clients on `:2379` and peers on `:2380`;
//! a controller host `ctl` (10.0.0.100) is the operator with an etcd client.
//!
//! # Determinism
//!
//! One seed fixes everything: the schedule (proptest's RNG seeded with it),
//! turmoil's network (latencies, host order), openraft's election timeouts
//! ([`mgmt_store::runtime::seed_raft_rng`]: the store's `AsyncRuntime` draws
//! from a generator seeded here), and simulated time (every deadline in the
//! store, client and driver is `tokio::time`; lease stamps use
//! `turmoil::since_epoch`). The store's files are real but written inline
//! ([`mgmt_store::net::Net::allows_threads`] is false): no OS thread, no
//! wall-clock wake-up. Runs are serialized within a process and each starts
//! at an aligned tokio task ID ([`run`]): a crashed host's tasks are dropped
//! in lists chosen by task ID, and that order decides which FIN leaves first.
//! The remaining source is tokio's own RNG (unbiased `select!` branch order,
//! `watch` notification order): turmoil seeds each host's runtime from the
//! sim seed only when tokio is built with `--cfg tokio_unstable`, so
//! bit-exact replay needs that flag (the `sim` profile build `test.sh` runs);
//! without it one seed replays the same schedule but may interleave tasks
//! differently ([`BIT_EXACT`]). Outside the trace: hyper stamps HTTP/2
//! responses with a wall-clock `date` header, which changes bytes on the
//! simulated wire but no event.
//!
//! The [`Report::trace`] lists, in simulated time order, every operation the
//! harness applied, every host status change (server, leader, nomination,
//! membership) and every operator request and its outcome.

pub mod invariants;
pub mod net;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use mgmt_core::cluster::Bug;
use mgmt_core::cluster::keys::{IDEAL_CLUSTER_SIZE, NOMINATED};
use mgmt_store::client::{ClientConfig, EtcdClient, WatchEvent};
use mgmt_store::cluster::{Cluster, ClusterConfig, Status};
use mgmt_store::{Env, StoreConfig};
use tokio::sync::{mpsc, watch};

/// Whether this build replays a seed bit for bit: tokio was built with
/// `--cfg tokio_unstable`, so turmoil seeds each host's tokio RNG.
pub const BIT_EXACT: bool = cfg!(tokio_unstable);

/// One step of the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// The operator puts `idealClusterSize`.
    SetIdeal(u32),
    /// The operator writes a key (acknowledged writes must survive).
    Write,
    /// Cut the link between two hosts (1-based).
    Partition(usize, usize),
    /// Heal every link.
    RepairAll,
    /// Stop a host's software; it restarts at the next `RestartAll` or in the
    /// liveness phase.
    Crash(usize),
    /// Crash whichever host is the store leader now (an election follows).
    CrashLeader,
    /// The host's agent shuts down cleanly (revokes its volunteer lease and
    /// waits to be removed); it stays down until `Join` or the liveness phase.
    Leave(usize),
    /// Start the host's agent if it is down (left, crashed or never started).
    Join(usize),
    /// Restart crashed hosts (not those that left).
    RestartAll,
    /// Let time pass.
    Wait,
}

/// A simulation run's settings; [`Config::from_seed`] draws one with proptest.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seeds turmoil (network, host order, tokio) and openraft's RNG.
    pub seed: u64,
    pub hosts: usize,
    /// Hosts (1-based) whose agent starts only at a `Join` (or in the
    /// liveness phase): volunteers that arrive later. Never host 1.
    pub late: BTreeSet<usize>,
    pub initial_ideal: u32,
    pub ops: Vec<Op>,
    /// Simulated time after each op.
    pub op_time: Duration,
    /// Liveness bound, simulated.
    pub converge_within: Duration,
    pub final_ideal: u32,
    /// A deliberate nomination bug (harness self-test only).
    pub bug: Bug,
}

impl Config {
    /// The article's example: four hosts, ideal 3.
    pub fn article(seed: u64) -> Self {
        Config {
            seed,
            hosts: 4,
            late: BTreeSet::new(),
            initial_ideal: 3,
            ops: Vec::new(),
            op_time: Duration::from_secs(3),
            converge_within: Duration::from_secs(60),
            final_ideal: 3,
            bug: Bug::None,
        }
    }

    /// Hash of everything the schedule decides.
    pub fn schedule_hash(&self) -> u64 {
        fnv(format!(
            "{:?}",
            (
                self.hosts,
                &self.late,
                self.initial_ideal,
                &self.ops,
                self.op_time,
                self.final_ideal,
                self.bug,
            )
        )
        .as_bytes())
    }
}

/// FNV-1a: a hash that is the same in every process and Rust version.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the harness knows about the world, for the invariants.
#[derive(Default)]
pub struct World {
    /// Simulated time.
    pub now: Duration,
    pub hosts: BTreeMap<String, Status>,
    pub crashed: BTreeSet<String>,
    /// Every `idealClusterSize` the operator asked for, in order.
    pub ideal_history: Vec<IdealChange>,
    /// Hosts whose nomination key was put while it already existed.
    pub renominations: Vec<String>,
    /// Acknowledged writes, key -> value.
    pub acked: BTreeMap<String, String>,
    pub lost_writes: Vec<String>,
    /// A partition is in force: time bounds are off.
    pub faults_active: bool,
    /// Events in simulated time order (see [`Report::trace`]).
    pub trace: Vec<String>,
    /// What each host's agent follows of every host's exports
    /// (`mgmt_store::exports::follow`), while it runs.
    pub collected: BTreeMap<String, mgmt_store::exports::Shared>,
    /// The exports the store holds, as the operator last read them.
    pub exports_in_store: Option<BTreeSet<(String, String)>>,
    /// The deploy each host's agent follows now (`mgmt_store::fleet::follow`),
    /// and the highest it ever followed, across its restarts.
    pub following: BTreeMap<String, u64>,
    pub highest_followed: BTreeMap<String, u64>,
    /// Deploys the operator's writes were told succeeded: id -> text.
    pub acked_deploys: BTreeMap<u64, String>,
    /// Broken deploy rules (a host went back, an id given twice).
    pub deploy_violations: Vec<String>,
    /// The newest deploy the store holds, as the operator last read it.
    pub newest_deploy_in_store: Option<u64>,
    /// Links cut now, as `(a, b)` host names with `a < b`.
    pub cut: BTreeSet<(String, String)>,
    /// When the prober's last put was acknowledged.
    pub last_probe_ack: Option<Duration>,
    /// When each host's store server last started (it runs since).
    pub server_started: BTreeMap<String, Duration>,
}

impl World {
    /// A host's agent now follows deploy `id`.
    fn followed(&mut self, host: &str, id: u64) {
        let highest = self.highest_followed.entry(host.to_string()).or_insert(0);
        if id < *highest {
            let v = format!("{host} went back from deploy {highest} to {id}");
            self.deploy_violations.push(v);
        }
        *highest = (*highest).max(id);
        self.following.insert(host.to_string(), id);
        self.log(format!("{host} follows deploy {id}"));
    }

    /// The operator's write of deploy `id` with `text` was acknowledged.
    fn deploy_acked(&mut self, id: u64, text: String) {
        if let Some(other) = self.acked_deploys.get(&id)
            && *other != text
        {
            let v = format!("deploy {id} acknowledged to two writers: {other:?} and {text:?}");
            self.deploy_violations.push(v);
        }
        self.acked_deploys.insert(id, text);
    }
}

/// How long the leader may still act on an ideal size that was replaced
/// (the put's latency plus one membership change in flight).
pub const IDEAL_LAG: Duration = Duration::from_secs(10);

/// How many times the operator sets the final ideal size before giving up
/// (each a put and a read two seconds later).
const IDEAL_ATTEMPTS: u32 = 20;

/// One put of `idealClusterSize` by the operator.
#[derive(Clone, Debug)]
pub struct IdealChange {
    pub size: u32,
    /// When the put was acknowledged. `None` while it runs, and for good if
    /// it failed: a failed put (a deadline exceeded, no quorum) may or may
    /// not have been applied, and may still be applied after a later put
    /// was acknowledged (a member held it until a leader was elected), so
    /// its size stays possible for the rest of the run.
    pub acked: Option<Duration>,
}

impl World {
    /// The largest ideal size the leader may be acting on now: every size
    /// whose put was not acknowledged (it runs, or failed and may land at
    /// any time), and every acknowledged one not yet replaced by a later
    /// acknowledged put, or replaced less than [`IDEAL_LAG`] ago.
    pub fn ideal_bound(&self) -> u32 {
        let h = &self.ideal_history;
        (0..h.len())
            .filter(|&i| {
                let replaced = h[i + 1..].iter().filter_map(|c| c.acked).min();
                h[i].acked.is_none() || replaced.is_none_or(|t| t + IDEAL_LAG >= self.now)
            })
            .map(|i| h[i].size)
            .max()
            .unwrap_or(0)
    }

    /// Records a put of the ideal size; returns its index for [`Ctl::SetIdeal`].
    fn ask_ideal(&mut self, size: u32) -> usize {
        self.ideal_history.push(IdealChange { size, acked: None });
        self.ideal_history.len() - 1
    }

    /// The membership as the (first, by name) running leader sees it.
    pub fn leader_members(&self) -> Option<&Vec<(String, bool)>> {
        self.leader().map(|h| &self.hosts[h].members)
    }

    /// The voter sets the leader's config has: one, or two while a change is
    /// joint.
    pub fn leader_voter_sets(&self) -> Option<&Vec<Vec<String>>> {
        self.leader().map(|h| &self.hosts[h].voter_sets)
    }

    /// The (first, by name) running host whose store is leader.
    pub fn leader(&self) -> Option<&String> {
        self.hosts
            .iter()
            .find(|(h, s)| s.leader && !self.crashed.contains(*h))
            .map(|(h, _)| h)
    }

    /// Whether host `h` has no server running (crashed, or stopped it).
    pub fn server_stopped(&self, h: &str) -> bool {
        self.crashed.contains(h) || self.hosts.get(h).is_none_or(|s| s.server.is_none())
    }

    fn log(&mut self, event: String) {
        let t = turmoil::sim_elapsed().unwrap_or(self.now).as_millis();
        self.trace.push(format!("{t:>8} {event}"));
    }
}

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8))
}

/// The prober: writes through every host in turn, for
/// [`invariants::Availability`].
fn probe_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101))
}

/// How often the prober writes (each time through the next host).
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

fn cut_pair(a: usize, b: usize) -> (String, String) {
    let (a, b) = (a.min(b), a.max(b));
    (format!("h{a}"), format!("h{b}"))
}

fn ctl_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))
}

enum Ctl {
    /// Put the ideal size recorded at this index of `ideal_history`.
    SetIdeal(usize, u32),
    /// Put the ideal size recorded at this index, then read it back, and put
    /// it again until the store holds it: an earlier put that failed may
    /// land after this one, and an operator who sees the old size sets it
    /// again.
    SetIdealUntilHeld(usize, u32),
    Write(u64),
    Verify,
    /// Read every host's exports, into `World::exports_in_store`.
    ReadExports,
    /// Two operators deploy at once (each `mgmt deploy`'s one txn).
    DeployRace(u64),
    /// Read the newest deploy, into `World::newest_deploy_in_store`.
    ReadNewestDeploy,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub schedule_hash: u64,
    /// FNV-1a of [`Report::trace`].
    pub trace_hash: u64,
    /// Every applied op, host status change and operator request outcome, in
    /// simulated time order, each line stamped with simulated milliseconds.
    pub trace: Vec<String>,
    pub final_members: Vec<String>,
}

/// Run a simulation; `Err` names the invariant broken (with the seed to replay).
pub fn run(config: &Config) -> Result<Report, String> {
    // Unique per run, even for one seed run twice at once in one process.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mgmt-sim-{}-{}-{}",
        std::process::id(),
        config.seed,
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // One simulation at a time per process: tokio task IDs come from one
    // process-wide counter (see `align_task_ids`).
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    align_task_ids();
    mgmt_store::runtime::seed_raft_rng(Some(config.seed));
    let res = run_in(config, &dir);
    mgmt_store::runtime::seed_raft_rng(None);
    let _ = std::fs::remove_dir_all(&dir);
    res.map_err(|e| {
        format!(
            "{e}\nreplay: SIM_SEED={} cargo test -p sim --test sim seeded_schedules -- --nocapture",
            config.seed
        )
    })
}

/// Make the next tokio task ID a multiple of 4. A current-thread runtime
/// keeps its tasks in 4 lists chosen by task ID (tokio's `OwnedTasks`), and a
/// crashed host's tasks are dropped list by list, so the order in which its
/// sockets send their FINs (and so every later network delay turmoil draws)
/// depends on the IDs. IDs come from a process-wide counter; starting each
/// run at the same residue makes that order a function of the seed.
fn align_task_ids() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a bare current-thread runtime");
    loop {
        let task = rt.spawn(async {});
        let id: u64 = task
            .id()
            .to_string()
            .parse()
            .expect("task IDs are integers");
        let _ = rt.block_on(task);
        if id % 4 == 3 {
            break;
        }
    }
}

fn host_config(i: usize, seeded: bool, config: &Config, dir: &std::path::Path) -> ClusterConfig {
    let name = format!("h{i}");
    let mut s = StoreConfig::new(name, dir);
    s.client_urls = vec![format!("http://{}:2379", ip(i))];
    s.peer_urls = vec![format!("http://{}:2380", ip(i))];
    s.env = Env::new(net::TurmoilNet);
    let mut c = ClusterConfig::new(s);
    if seeded {
        c.seeds = vec![format!("http://{}:2379", ip(1))];
    }
    c.ideal_cluster_size = Some(config.initial_ideal);
    c.lease_ttl_s = 3;
    c.request_timeout = Duration::from_secs(3);
    c.leave_timeout = Duration::from_secs(5);
    c.nominator_bug = config.bug;
    c
}

fn status_line(name: &str, st: &Status) -> String {
    format!(
        "{name} server={} leader={} nominated={} started={} members={:?}",
        st.server.is_some(),
        st.leader,
        st.nominated,
        st.servers_started,
        st.members
    )
}

/// One host's software: wait until wanted up, run the agent, leave cleanly
/// when no longer wanted, and start again if wanted again.
async fn host_main(
    name: String,
    mut cfg: ClusterConfig,
    mut up: watch::Receiver<bool>,
    world: Arc<Mutex<World>>,
    started_once: Arc<Mutex<bool>>,
) -> turmoil::Result {
    loop {
        if up.wait_for(|u| *u).await.is_err() {
            return Ok(());
        }
        {
            // h1 bootstraps with no seeds only the first time; restarted, it
            // rejoins through h2 like any other host.
            let mut once = started_once.lock().unwrap();
            if *once && cfg.seeds.is_empty() {
                cfg.seeds = vec![format!("http://{}:2379", ip(2))];
            }
            *once = true;
        }
        world.lock().unwrap().log(format!("{name} agent starts"));
        let cluster = Cluster::start(cfg.clone()).await?;
        // Each host exports one resource and follows everyone's, as an
        // agent with `@@` resources and `collect:` does.
        let exporting = {
            let client = cluster.client();
            let host = name.clone();
            tokio::spawn(async move {
                let mine = [mgmt_core::Resource {
                    id: mgmt_core::ResourceId::new(mgmt_core::Kind::Noop, "present"),
                    meta: Default::default(),
                    params: mgmt_core::resource::Params::Noop { comment: None },
                    exported: true,
                }];
                // Until it lands: the cluster may have no quorum yet.
                while mgmt_store::exports::publish(&client, &host, &mine)
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        let view: mgmt_store::exports::Shared = Default::default();
        world
            .lock()
            .unwrap()
            .collected
            .insert(name.clone(), view.clone());
        let (poke, mut pokes) = mpsc::unbounded_channel();
        let following = tokio::spawn(mgmt_store::exports::follow(cluster.client(), view, poke));
        let draining = tokio::spawn(async move { while pokes.recv().await.is_some() {} });
        // And follows the cluster's deploys, as `mgmt run` with no --file.
        let (newest_tx, mut newest) = watch::channel(None);
        let deploys = tokio::spawn(mgmt_store::fleet::follow(cluster.client(), newest_tx));
        let recording = {
            let (world, name) = (world.clone(), name.clone());
            tokio::spawn(async move {
                while newest.changed().await.is_ok() {
                    let id = newest.borrow_and_update().as_ref().map(|d| d.id);
                    if let Some(id) = id {
                        world.lock().unwrap().followed(&name, id);
                    }
                }
            })
        };
        let mut rx = cluster.status();
        let leave = loop {
            let st = rx.borrow_and_update().clone();
            {
                let mut w = world.lock().unwrap();
                w.log(status_line(&name, &st));
                if st.server.is_some() && w.server_stopped(&name) {
                    let now = turmoil::sim_elapsed().unwrap_or(w.now);
                    w.server_started.insert(name.clone(), now);
                }
                w.hosts.insert(name.clone(), st);
            }
            let wake = tokio::select! {
                biased;
                r = up.wait_for(|u| !*u) => if r.is_ok() { Wake::Leave } else { Wake::Closed },
                r = rx.changed() => if r.is_ok() { Wake::Status } else { Wake::Closed },
            };
            match wake {
                Wake::Status => {}
                Wake::Leave => break true,
                Wake::Closed => break false,
            }
        };
        for t in [&exporting, &following, &draining, &deploys, &recording] {
            t.abort();
        }
        {
            let mut w = world.lock().unwrap();
            w.collected.remove(&name);
            w.following.remove(&name);
        }
        if !leave {
            drop(cluster);
            return Ok(());
        }
        world.lock().unwrap().log(format!("{name} agent leaves"));
        cluster.shutdown().await;
        let mut w = world.lock().unwrap();
        w.log(format!("{name} agent left"));
        w.hosts.insert(name.clone(), Status::default());
    }
}

enum Wake {
    Status,
    Leave,
    Closed,
}

fn run_in(config: &Config, dir: &std::path::Path) -> Result<Report, String> {
    let world = Arc::new(Mutex::new(World {
        // The bootstrap host writes the initial size before anything else.
        ideal_history: vec![IdealChange {
            size: config.initial_ideal,
            acked: Some(Duration::ZERO),
        }],
        ..World::default()
    }));
    // Whether each host's agent should run (index 0 unused).
    let up: Vec<watch::Sender<bool>> = (0..=config.hosts)
        .map(|i| watch::channel(i >= 1 && !config.late.contains(&i)).0)
        .collect();
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tick_duration(Duration::from_millis(5))
        .rng_seed(config.seed)
        .tcp_capacity(1 << 16)
        .build();

    for i in 1..=config.hosts {
        let cfg = host_config(i, i != 1, config, dir);
        let world = world.clone();
        let name = format!("h{i}");
        let up = up[i].subscribe();
        let started_once = Arc::new(Mutex::new(false));
        sim.host(ip(i), move || {
            host_main(
                name.clone(),
                cfg.clone(),
                up.clone(),
                world.clone(),
                started_once.clone(),
            )
        });
    }

    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Ctl>();
    {
        let world = world.clone();
        let endpoints: Vec<String> = (1..=config.hosts)
            .map(|i| format!("http://{}:2379", ip(i)))
            .collect();
        sim.client(ctl_ip(), async move {
            let mut cc = ClientConfig::new(endpoints);
            cc.env = Env::new(net::TurmoilNet);
            let client = EtcdClient::new(cc)?;
            let mut watch = client.watch_prefix(NOMINATED.as_bytes(), 0);
            loop {
                tokio::select! {
                    biased;
                    op = ctl_rx.recv() => match op {
                        None => return Ok(()),
                        Some(Ctl::SetIdeal(index, n)) => {
                            // Best effort: the cluster may have no quorum right now.
                            put_ideal(&client, &world, index, n).await;
                        }
                        Some(Ctl::SetIdealUntilHeld(index, n)) => {
                            for _ in 0..IDEAL_ATTEMPTS {
                                put_ideal(&client, &world, index, n).await;
                                tokio::time::sleep(Duration::from_secs(2)).await;
                                let held = client.get(IDEAL_CLUSTER_SIZE.as_bytes()).await;
                                let held = held.map(|kv| kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()));
                                world.lock().unwrap().log(format!("ctl read idealClusterSize = {held:?}"));
                                if matches!(&held, Ok(Some(v)) if *v == n.to_string()) {
                                    break;
                                }
                            }
                        }
                        Some(Ctl::Write(i)) => {
                            let (k, v) = (format!("/data/k{i}"), format!("v{i}"));
                            let r = client.put(k.as_bytes(), v.as_bytes(), 0).await;
                            let mut w = world.lock().unwrap();
                            w.log(format!("ctl put {k} ok={}", r.is_ok()));
                            if r.is_ok() {
                                w.acked.insert(k, v);
                            }
                        }
                        Some(Ctl::DeployRace(n)) => {
                            for who in ["a", "b"] {
                                let (client, world) = (client.clone(), world.clone());
                                tokio::spawn(async move {
                                    let text = format!("graph: d{n}{who}\n");
                                    let draft = mgmt_core::deploy::Draft {
                                        time: String::new(),
                                        author: who.into(),
                                        file: "sim.yaml".into(),
                                        text: text.clone(),
                                    };
                                    let r = mgmt_store::fleet::write(&client, draft).await;
                                    let mut w = world.lock().unwrap();
                                    match r {
                                        Ok(d) => {
                                            w.log(format!("ctl deploy {text:?} = {}", d.id));
                                            w.deploy_acked(d.id, text);
                                        }
                                        Err(e) => w.log(format!("ctl deploy {text:?} failed: {e}")),
                                    }
                                });
                            }
                        }
                        Some(Ctl::ReadNewestDeploy) => {
                            let r = mgmt_store::fleet::newest(&client).await;
                            if let Ok((_, newest)) = r {
                                world.lock().unwrap().newest_deploy_in_store = newest.map(|d| d.id);
                            }
                        }
                        Some(Ctl::ReadExports) => {
                            let r = mgmt_store::exports::read_all(&client).await;
                            let mut w = world.lock().unwrap();
                            if let Ok((_, all)) = r {
                                w.exports_in_store = Some(all.into_iter().map(|e| (e.host, e.name)).collect());
                            }
                        }
                        Some(Ctl::Verify) => {
                            let acked = world.lock().unwrap().acked.clone();
                            let r = client.get_prefix(b"/data/").await;
                            let mut w = world.lock().unwrap();
                            w.log(format!("ctl verify ok={}", r.is_ok()));
                            if let Ok((_, kvs)) = r {
                                let got: BTreeMap<String, String> = kvs.into_iter().map(|kv| {
                                    (String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned())
                                }).collect();
                                let lost: Vec<String> = acked.iter().filter(|(k, v)| got.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
                                w.lost_writes.extend(lost);
                            }
                        }
                    },
                    ev = watch.next() => {
                        if let Some(WatchEvent::Events(evs)) = ev {
                            let mut w = world.lock().unwrap();
                            for e in evs {
                                let kv = e.kv.unwrap_or_default();
                                let h = String::from_utf8_lossy(&kv.key).into_owned();
                                w.log(format!("ctl saw {} {h}", if e.r#type == 0 { "put" } else { "delete" }));
                                if e.r#type == 0 && e.prev_kv.is_some() {
                                    w.renominations.push(h);
                                }
                            }
                        }
                    }
                }
            }
        });
    }

    {
        let world = world.clone();
        let hosts = config.hosts;
        sim.client(probe_ip(), async move {
            let clients = (1..=hosts)
                .map(|i| {
                    let mut cc = ClientConfig::new(vec![format!("http://{}:2379", ip(i))]);
                    cc.env = Env::new(net::TurmoilNet);
                    cc.request_timeout = Duration::from_secs(2);
                    cc.attempt_timeout = Duration::from_secs(2);
                    EtcdClient::new(cc)
                })
                .collect::<Result<Vec<_>, _>>()?;
            for n in 0u64.. {
                let client = clients[n as usize % clients.len()].clone();
                let world = world.clone();
                tokio::spawn(async move {
                    let r = client.put(b"/probe", n.to_string().as_bytes(), 0).await;
                    tracing::debug!(n, ?r, "probe");
                    if r.is_ok() {
                        world.lock().unwrap().last_probe_ack = turmoil::sim_elapsed();
                    }
                });
                tokio::time::sleep(PROBE_EVERY).await;
            }
            Ok(())
        });
    }

    let mut checks = Checks::default();
    let mut writes = 0u64;
    let mut partitions: Vec<(usize, usize)> = Vec::new();
    let step_for =
        |sim: &mut turmoil::Sim<'_>, d: Duration, checks: &mut Checks| -> Result<(), String> {
            let end = sim.elapsed() + d;
            while sim.elapsed() < end {
                sim.step().map_err(|e| format!("simulation failed: {e}"))?;
                let mut w = world.lock().unwrap();
                w.now = sim.elapsed();
                checks.bound.check(&w)?;
                checks.available.check(&w)?;
                invariants::nominated_once(&w)?;
                invariants::acked_writes_survive(&w)?;
                invariants::deploys_move_forward(&w)?;
                if !w.faults_active {
                    checks.stopped.check(&w)?;
                }
            }
            Ok(())
        };

    // Let the bootstrap host come up first, as in the article.
    step_for(&mut sim, Duration::from_secs(2), &mut checks)?;
    for op in &config.ops {
        world.lock().unwrap().log(format!("op {op:?}"));
        match op {
            Op::SetIdeal(n) => {
                let index = world.lock().unwrap().ask_ideal(*n);
                let _ = ctl_tx.send(Ctl::SetIdeal(index, *n));
            }
            Op::Write => {
                writes += 1;
                let _ = ctl_tx.send(Ctl::Write(writes));
                let _ = ctl_tx.send(Ctl::DeployRace(writes));
            }
            Op::Partition(a, b) => {
                sim.partition(ip(*a), ip(*b));
                partitions.push((*a, *b));
                world.lock().unwrap().cut.insert(cut_pair(*a, *b));
                world.lock().unwrap().faults_active = true;
            }
            Op::RepairAll => {
                for (a, b) in partitions.drain(..) {
                    sim.repair(ip(a), ip(b));
                    world.lock().unwrap().cut.remove(&cut_pair(a, b));
                }
                world.lock().unwrap().faults_active = false;
            }
            Op::Crash(i) => crash(&mut sim, &world, *i),
            Op::CrashLeader => {
                let leader = world.lock().unwrap().leader().cloned();
                if let Some(h) = leader {
                    crash(&mut sim, &world, h[1..].parse().expect("host name"));
                }
            }
            Op::Leave(i) => {
                up[*i].send_replace(false);
            }
            Op::Join(i) => join(&mut sim, &world, &up, *i),
            Op::RestartAll => restart_crashed(&mut sim, &world),
            Op::Wait => {}
        }
        step_for(&mut sim, config.op_time, &mut checks)?;
    }

    // Liveness: faults off, every host up, a final ideal size.
    world.lock().unwrap().log("liveness phase".into());
    for (a, b) in partitions.drain(..) {
        sim.repair(ip(a), ip(b));
        world.lock().unwrap().cut.remove(&cut_pair(a, b));
    }
    world.lock().unwrap().faults_active = false;
    for i in 1..=config.hosts {
        join(&mut sim, &world, &up, i);
    }
    let index = world.lock().unwrap().ask_ideal(config.final_ideal);
    let _ = ctl_tx.send(Ctl::SetIdealUntilHeld(index, config.final_ideal));
    let want = (config.final_ideal as usize).min(config.hosts);
    let deadline = sim.elapsed() + config.converge_within;
    let members = loop {
        step_for(&mut sim, Duration::from_millis(500), &mut checks)?;
        let w = world.lock().unwrap();
        if let Some(m) = w.leader_members()
            && m.len() == want
            && m.iter().all(|(_, learner)| !learner)
        {
            break m.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        }
        if sim.elapsed() > deadline {
            let tail = w.trace[w.trace.len().saturating_sub(60)..].join("\n");
            return Err(format!(
                "liveness: {want} members not reached within {:?}; leader sees {:?}\nlast events:\n{tail}",
                config.converge_within,
                w.leader_members()
            ));
        }
    };
    // Every acknowledged write is still there.
    let _ = ctl_tx.send(Ctl::Verify);
    step_for(&mut sim, Duration::from_secs(5), &mut checks)?;
    // Every member's agent follows exactly the exports the store holds. (Only
    // members: a host seeded only with hosts that no longer serve never finds
    // the cluster, which no invariant here is about.)
    let deadline = sim.elapsed() + Duration::from_secs(30);
    loop {
        let _ = ctl_tx.send(Ctl::ReadExports);
        step_for(&mut sim, Duration::from_secs(1), &mut checks)?;
        let w = world.lock().unwrap();
        let Some(truth) = w.exports_in_store.clone() else {
            continue;
        };
        let members: BTreeSet<String> = w
            .leader_members()
            .map(|m| m.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        let behind: Vec<String> = w
            .collected
            .iter()
            .filter(|(h, _)| members.contains(*h))
            .filter_map(|(h, view)| {
                let seen: BTreeSet<(String, String)> = view
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|e| (e.host.clone(), e.name.clone()))
                    .collect();
                if !truth.contains(&(h.clone(), "present".to_string())) {
                    return Some(format!("{h}'s own export is not in the store"));
                }
                (seen != truth).then(|| format!("{h} follows {seen:?}"))
            })
            .collect();
        if behind.is_empty() && !truth.is_empty() {
            break;
        }
        if sim.elapsed() > deadline {
            return Err(format!(
                "exports: the store holds {truth:?}, but {}",
                behind.join("; ")
            ));
        }
    }
    // One more deploy once the faults are over: every member's agent
    // follows the newest deploy the store holds within the bound.
    let _ = ctl_tx.send(Ctl::DeployRace(writes + 1));
    let deadline = sim.elapsed() + Duration::from_secs(30);
    loop {
        let _ = ctl_tx.send(Ctl::ReadNewestDeploy);
        step_for(&mut sim, Duration::from_secs(1), &mut checks)?;
        let w = world.lock().unwrap();
        let last = [
            format!("graph: d{}a\n", writes + 1),
            format!("graph: d{}b\n", writes + 1),
        ];
        let last_acked = w
            .acked_deploys
            .iter()
            .filter(|(_, text)| last.contains(text))
            .map(|(id, _)| *id)
            .max();
        let (Some(newest), Some(last_acked)) = (w.newest_deploy_in_store, last_acked) else {
            if sim.elapsed() > deadline {
                return Err("deploys: the last deploy was never acknowledged".into());
            }
            continue;
        };
        let behind: Vec<String> = w
            .leader_members()
            .into_iter()
            .flatten()
            .filter(|(h, _)| w.following.get(h) != Some(&newest))
            .map(|(h, _)| format!("{h} follows {:?}", w.following.get(h)))
            .collect();
        if behind.is_empty() && newest >= last_acked {
            break;
        }
        if sim.elapsed() > deadline {
            let tail = w.trace[w.trace.len().saturating_sub(60)..].join("\n");
            return Err(format!(
                "deploys: the newest is {newest}, but {}\nlast events:\n{tail}",
                behind.join("; ")
            ));
        }
    }
    drop(ctl_tx);
    let trace = std::mem::take(&mut world.lock().unwrap().trace);
    Ok(Report {
        seed: config.seed,
        schedule_hash: config.schedule_hash(),
        trace_hash: fnv(trace.join("\n").as_bytes()),
        trace,
        final_members: members,
    })
}

/// The operator's put of the ideal size recorded at `index` of
/// `ideal_history`, acknowledged there when it succeeds.
async fn put_ideal(client: &EtcdClient, world: &Mutex<World>, index: usize, n: u32) {
    let r = client
        .put(IDEAL_CLUSTER_SIZE.as_bytes(), n.to_string().as_bytes(), 0)
        .await;
    let mut w = world.lock().unwrap();
    if r.is_ok() {
        let now = w.now;
        w.ideal_history[index].acked.get_or_insert(now);
    }
    w.log(format!("ctl idealClusterSize={n} = {r:?}"));
}

/// The invariants that keep state between steps.
#[derive(Default)]
struct Checks {
    bound: invariants::MembershipBound,
    stopped: invariants::StoppedNotMember,
    available: invariants::Availability,
}

fn crash(sim: &mut turmoil::Sim<'_>, world: &Arc<Mutex<World>>, i: usize) {
    let h = format!("h{i}");
    let mut w = world.lock().unwrap();
    if w.crashed.insert(h.clone()) {
        w.log(format!("{h} crashed"));
        drop(w);
        sim.crash(ip(i));
    }
}

fn restart(sim: &mut turmoil::Sim<'_>, world: &Arc<Mutex<World>>, i: usize) {
    let h = format!("h{i}");
    let mut w = world.lock().unwrap();
    w.crashed.remove(&h);
    w.hosts.remove(&h);
    w.log(format!("{h} restarted"));
    drop(w);
    sim.bounce(ip(i));
}

fn restart_crashed(sim: &mut turmoil::Sim<'_>, world: &Arc<Mutex<World>>) {
    let crashed: Vec<String> = world.lock().unwrap().crashed.iter().cloned().collect();
    for h in crashed {
        restart(sim, world, h[1..].parse().expect("host name"));
    }
}

/// Want host `i` up; restart its software if it is not running.
fn join(
    sim: &mut turmoil::Sim<'_>,
    world: &Arc<Mutex<World>>,
    up: &[watch::Sender<bool>],
    i: usize,
) {
    up[i].send_replace(true);
    if world.lock().unwrap().crashed.contains(&format!("h{i}")) || !sim.is_host_running(ip(i)) {
        restart(sim, world, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deploy invariant can fail: a host that goes back, across a
    /// restart too, and an id acknowledged to two writers, are caught.
    #[test]
    fn the_deploy_invariant_catches_a_host_going_back_and_an_id_given_twice() {
        let mut w = World::default();
        w.followed("h1", 3);
        w.following.remove("h1");
        w.followed("h1", 3);
        assert!(invariants::deploys_move_forward(&w).is_ok());
        w.followed("h1", 2);
        assert!(invariants::deploys_move_forward(&w).is_err());
        let mut w = World::default();
        w.deploy_acked(4, "a".into());
        w.deploy_acked(4, "a".into());
        assert!(invariants::deploys_move_forward(&w).is_ok());
        w.deploy_acked(4, "b".into());
        assert!(invariants::deploys_move_forward(&w).is_err());
    }
}
