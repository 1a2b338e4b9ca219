//! mgmt simulator: turmoil hosts run the production clustering driver
//! ([`mgmt_store::cluster::Cluster`]) and store over simulated TCP
//! ([`net::TurmoilNet`]) with simulated time, while a seeded schedule sets
//! `idealClusterSize`, writes keys, partitions links and crashes and restarts
//! hosts. Safety invariants ([`invariants`]) are checked after every step;
//! then, faults off, the cluster must reach its ideal size within a bound.
//!
//! Hosts are `h1..hN` at `10.0.0.N` (turmoil treats every `127.x` address as
//! the host itself, so the article's `127.0.0.N` loopback layout becomes a
//! private subnet here), each serving clients on `:2379` and peers on `:2380`;
//! a controller host `ctl` (10.0.0.100) is the operator with an etcd client.
//!
//! # Determinism
//!
//! Deterministic: the schedule (derived from the seed only), turmoil's network
//! and its seeded per-host tokio RNG, simulated time (every deadline in the
//! store, client and driver is `tokio::time`; lease stamps use
//! `turmoil::since_epoch`). Not deterministic: openraft 0.9 draws election
//! timeouts from `rand::thread_rng` (a seeded custom `AsyncRuntime` would fix
//! it) and the store's log fsyncs are real file I/O, so two runs of one seed
//! follow the same schedule but may elect different leaders. The self-test
//! therefore compares schedule hashes and reports (without asserting) whether
//! the execution traces matched.

pub mod invariants;
pub mod net;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mgmt_store::client::{ClientConfig, EtcdClient, WatchEvent};
use mgmt_store::cluster::{Cluster, ClusterConfig, IDEAL_CLUSTER_SIZE, NOMINATED, Status};
use mgmt_store::{Env, StoreConfig};
use tokio::sync::mpsc;

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
    /// Restart crashed hosts.
    RestartAll,
    /// Let time pass.
    Wait,
}

/// A simulation run's settings; [`Config::from_seed`] derives one.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub hosts: usize,
    pub initial_ideal: u32,
    pub ops: Vec<Op>,
    /// Simulated time after each op.
    pub op_time: Duration,
    /// Liveness bound, simulated.
    pub converge_within: Duration,
    pub final_ideal: u32,
}

/// SplitMix64: a tiny seeded RNG, so the schedule depends on the seed alone.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl Config {
    /// The article's example: four hosts, ideal 3.
    pub fn article(seed: u64) -> Self {
        Config {
            seed,
            hosts: 4,
            initial_ideal: 3,
            ops: Vec::new(),
            op_time: Duration::from_secs(3),
            converge_within: Duration::from_secs(60),
            final_ideal: 3,
        }
    }

    /// A random schedule of `len` ops with faults, from `seed` alone.
    pub fn from_seed(seed: u64, len: usize) -> Self {
        let mut rng = Rng::new(seed);
        let hosts = 3 + rng.below(3) as usize;
        let mut ops = Vec::new();
        for _ in 0..len {
            let op = match rng.below(10) {
                0 | 1 => Op::SetIdeal(1 + rng.below(5) as u32),
                2 | 3 => Op::Write,
                4 => {
                    let a = 1 + rng.below(hosts as u64) as usize;
                    let b = 1 + rng.below(hosts as u64) as usize;
                    if a == b {
                        Op::Wait
                    } else {
                        Op::Partition(a, b)
                    }
                }
                5 => Op::RepairAll,
                6 => Op::Crash(1 + rng.below(hosts as u64) as usize),
                7 => Op::RestartAll,
                _ => Op::Wait,
            };
            ops.push(op);
        }
        Config {
            seed,
            hosts,
            initial_ideal: 1 + rng.below(5) as u32,
            ops,
            op_time: Duration::from_secs(1 + rng.below(4)),
            converge_within: Duration::from_secs(120),
            final_ideal: 1 + rng.below(5) as u32,
        }
    }

    /// Hash of everything the seed decides.
    pub fn schedule_hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            self.hosts,
            self.initial_ideal,
            &self.ops,
            self.op_time,
            self.final_ideal,
        )
            .hash(&mut h);
        h.finish()
    }
}

/// What the harness knows about the world, for the invariants.
#[derive(Default)]
pub struct World {
    /// Simulated time.
    pub now: Duration,
    pub hosts: BTreeMap<String, Status>,
    pub crashed: BTreeSet<String>,
    /// Every `idealClusterSize` the operator set, with when.
    pub ideal_history: Vec<(Duration, u32)>,
    /// Hosts whose nomination key was put while it already existed.
    pub renominations: Vec<String>,
    /// Acknowledged writes, key -> value.
    pub acked: BTreeMap<String, String>,
    pub lost_writes: Vec<String>,
    /// A partition is in force: time bounds are off.
    pub faults_active: bool,
}

/// How long the leader may still act on an ideal size that was replaced
/// (the put's latency plus one membership change in flight).
pub const IDEAL_LAG: Duration = Duration::from_secs(10);

impl World {
    /// The largest ideal size the leader may be acting on now.
    pub fn ideal_bound(&self) -> u32 {
        let last = self.ideal_history.last().map_or(0, |(_, n)| *n);
        self.ideal_history
            .iter()
            .filter(|(t, _)| *t + IDEAL_LAG >= self.now)
            .map(|(_, n)| *n)
            .fold(last, u32::max)
    }

    /// The membership as the (first, by name) running leader sees it.
    pub fn leader_members(&self) -> Option<&Vec<(String, bool)>> {
        self.hosts
            .iter()
            .filter(|(h, s)| s.leader && !self.crashed.contains(*h))
            .map(|(_, s)| &s.members)
            .next()
    }

    /// Whether host `h` has no server running (crashed, or stopped it).
    pub fn server_stopped(&self, h: &str) -> bool {
        self.crashed.contains(h) || self.hosts.get(h).is_none_or(|s| s.server.is_none())
    }
}

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8))
}

fn ctl_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))
}

enum Ctl {
    SetIdeal(u32),
    Write(u64),
    Verify,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub schedule_hash: u64,
    /// Hash of every host status change, in order (see the crate docs on determinism).
    pub trace_hash: u64,
    pub final_members: Vec<String>,
}

/// Run a simulation; `Err` names the invariant broken (with the seed to replay).
pub fn run(config: &Config) -> Result<Report, String> {
    let dir = std::env::temp_dir().join(format!("mgmt-sim-{}-{}", std::process::id(), config.seed));
    let _ = std::fs::remove_dir_all(&dir);
    let res = run_in(config, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    res.map_err(|e| {
        format!(
            "{e}\nreplay: SIM_SEED={} cargo test -p sim --test sim seeded_schedules -- --nocapture",
            config.seed
        )
    })
}

fn host_config(i: usize, n_seeds: bool, ideal: u32, dir: &std::path::Path) -> ClusterConfig {
    let name = format!("h{i}");
    let mut s = StoreConfig::new(name, dir);
    s.client_urls = vec![format!("http://{}:2379", ip(i))];
    s.peer_urls = vec![format!("http://{}:2380", ip(i))];
    s.env = Env::new(net::TurmoilNet);
    let mut c = ClusterConfig::new(s);
    if n_seeds {
        c.seeds = vec![format!("http://{}:2379", ip(1))];
    }
    c.ideal_cluster_size = Some(ideal);
    c.lease_ttl_s = 3;
    c.tick = Duration::from_millis(250);
    c.request_timeout = Duration::from_secs(3);
    c
}

fn run_in(config: &Config, dir: &std::path::Path) -> Result<Report, String> {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tick_duration(Duration::from_millis(5))
        .rng_seed(config.seed)
        .tcp_capacity(1 << 16)
        .build();
    let world = Arc::new(Mutex::new(World {
        ideal_history: vec![(Duration::ZERO, config.initial_ideal)],
        ..World::default()
    }));
    let trace = Arc::new(Mutex::new(std::collections::hash_map::DefaultHasher::new()));

    for i in 1..=config.hosts {
        let cfg = host_config(i, i != 1, config.initial_ideal, dir);
        let world = world.clone();
        let trace = trace.clone();
        let name = format!("h{i}");
        // h1 bootstraps with no seeds only the first time; a restarted h1
        // rejoins through h2 like any other host (its state says it was a member).
        let started_once = Arc::new(Mutex::new(false));
        sim.host(ip(i), move || {
            let mut cfg = cfg.clone();
            let mut once = started_once.lock().unwrap();
            if *once && cfg.seeds.is_empty() {
                cfg.seeds = vec![format!("http://{}:2379", ip(2))];
            }
            *once = true;
            let world = world.clone();
            let trace = trace.clone();
            let name = name.clone();
            async move {
                let cluster = Cluster::start(cfg).await?;
                let mut rx = cluster.status();
                loop {
                    let st = rx.borrow_and_update().clone();
                    {
                        let mut t = trace.lock().unwrap();
                        (&name, &st.server, st.leader, &st.members).hash(&mut *t);
                    }
                    world.lock().unwrap().hosts.insert(name.clone(), st);
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
                drop(cluster);
                Ok(())
            }
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
                    ev = watch.next() => {
                        if let Some(WatchEvent::Events(evs)) = ev {
                            for e in evs {
                                let kv = e.kv.unwrap_or_default();
                                if e.r#type == 0 && e.prev_kv.is_some() {
                                    let h = String::from_utf8_lossy(&kv.key).into_owned();
                                    world.lock().unwrap().renominations.push(h);
                                }
                            }
                        }
                    }
                    op = ctl_rx.recv() => match op {
                        None => return Ok(()),
                        Some(Ctl::SetIdeal(n)) => {
                            // Best effort: the cluster may have no quorum right now.
                            let _ = client.put(IDEAL_CLUSTER_SIZE.as_bytes(), n.to_string().as_bytes(), 0).await;
                        }
                        Some(Ctl::Write(i)) => {
                            let (k, v) = (format!("/data/k{i}"), format!("v{i}"));
                            if client.put(k.as_bytes(), v.as_bytes(), 0).await.is_ok() {
                                world.lock().unwrap().acked.insert(k, v);
                            }
                        }
                        Some(Ctl::Verify) => {
                            let acked = world.lock().unwrap().acked.clone();
                            if let Ok((_, kvs)) = client.get_prefix(b"/data/").await {
                                let got: BTreeMap<String, String> = kvs.into_iter().map(|kv| {
                                    (String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned())
                                }).collect();
                                let lost: Vec<String> = acked.iter().filter(|(k, v)| got.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
                                world.lock().unwrap().lost_writes.extend(lost);
                            }
                        }
                    }
                }
            }
        });
    }

    let mut bound = invariants::MembershipBound::default();
    let mut stopped = invariants::StoppedNotMember::default();
    let mut writes = 0u64;
    let mut partitions: Vec<(usize, usize)> = Vec::new();
    let step_for = |sim: &mut turmoil::Sim<'_>,
                    d: Duration,
                    bound: &mut invariants::MembershipBound,
                    stopped: &mut invariants::StoppedNotMember|
     -> Result<(), String> {
        let end = sim.elapsed() + d;
        while sim.elapsed() < end {
            sim.step().map_err(|e| format!("simulation failed: {e}"))?;
            let mut w = world.lock().unwrap();
            w.now = sim.elapsed();
            bound.check(&w)?;
            invariants::nominated_once(&w)?;
            invariants::acked_writes_survive(&w)?;
            if !w.faults_active {
                stopped.check(&w)?;
            }
        }
        Ok(())
    };

    // Let the bootstrap host come up first, as in the article.
    step_for(&mut sim, Duration::from_secs(2), &mut bound, &mut stopped)?;
    for op in &config.ops {
        match op {
            Op::SetIdeal(n) => {
                let mut w = world.lock().unwrap();
                let now = w.now;
                w.ideal_history.push((now, *n));
                drop(w);
                let _ = ctl_tx.send(Ctl::SetIdeal(*n));
            }
            Op::Write => {
                writes += 1;
                let _ = ctl_tx.send(Ctl::Write(writes));
            }
            Op::Partition(a, b) => {
                sim.partition(ip(*a), ip(*b));
                partitions.push((*a, *b));
                world.lock().unwrap().faults_active = true;
            }
            Op::RepairAll => {
                for (a, b) in partitions.drain(..) {
                    sim.repair(ip(a), ip(b));
                }
                world.lock().unwrap().faults_active = false;
            }
            Op::Crash(i) => {
                let h = format!("h{i}");
                let mut w = world.lock().unwrap();
                if !w.crashed.contains(&h) {
                    w.crashed.insert(h);
                    drop(w);
                    sim.crash(ip(*i));
                }
            }
            Op::RestartAll => restart_all(&mut sim, &world),
            Op::Wait => {}
        }
        step_for(&mut sim, config.op_time, &mut bound, &mut stopped)?;
    }

    // Liveness: faults off, every host up, a final ideal size.
    for (a, b) in partitions.drain(..) {
        sim.repair(ip(a), ip(b));
    }
    world.lock().unwrap().faults_active = false;
    restart_all(&mut sim, &world);
    {
        let mut w = world.lock().unwrap();
        let now = w.now;
        w.ideal_history.push((now, config.final_ideal));
    }
    let _ = ctl_tx.send(Ctl::SetIdeal(config.final_ideal));
    let want = (config.final_ideal as usize).min(config.hosts);
    let deadline = sim.elapsed() + config.converge_within;
    let members = loop {
        step_for(
            &mut sim,
            Duration::from_millis(500),
            &mut bound,
            &mut stopped,
        )?;
        let w = world.lock().unwrap();
        if let Some(m) = w.leader_members()
            && m.len() == want
            && m.iter().all(|(_, learner)| !learner)
        {
            break m.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        }
        if sim.elapsed() > deadline {
            return Err(format!(
                "liveness: {want} members not reached within {:?}; leader sees {:?}",
                config.converge_within,
                w.leader_members()
            ));
        }
    };
    // Every acknowledged write is still there.
    let _ = ctl_tx.send(Ctl::Verify);
    step_for(&mut sim, Duration::from_secs(5), &mut bound, &mut stopped)?;
    drop(ctl_tx);
    let trace_hash = trace.lock().unwrap().finish();
    Ok(Report {
        seed: config.seed,
        schedule_hash: config.schedule_hash(),
        trace_hash,
        final_members: members,
    })
}

fn restart_all(sim: &mut turmoil::Sim<'_>, world: &Arc<Mutex<World>>) {
    let crashed: Vec<String> = std::mem::take(&mut world.lock().unwrap().crashed)
        .into_iter()
        .collect();
    for h in crashed {
        let i: usize = h[1..].parse().expect("host name");
        world.lock().unwrap().hosts.remove(&h);
        sim.bounce(ip(i));
    }
}

/// The data directory root used by a run (for docs and debugging).
pub fn data_root(seed: u64) -> PathBuf {
    std::env::temp_dir().join(format!("mgmt-sim-{}-{seed}", std::process::id()))
}
