//! This member's metrics under etcd's names, for the client port's
//! `/metrics` (see `http_face`): etcd's dashboards and alerts, and
//! `etcdctl check datascale` (which reads `process_resident_memory_bytes`),
//! work unchanged. Read from openraft's metrics and the state machine at
//! each scrape; only the count of leader changes is kept as it happens.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::node::Node;

/// Counts the leaders this member sees take over, until `stop`.
pub(crate) async fn count_leader_changes(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut metrics = node.raft.metrics();
    let mut leader = metrics.borrow_and_update().current_leader;
    loop {
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let now = metrics.borrow_and_update().current_leader;
        if now.is_some() && now != leader {
            node.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        leader = now;
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter<u64, AtomicU64> = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// What `/proc/self` says of this process: resident bytes, CPU seconds,
/// open descriptors, start time (seconds since the epoch).
struct Process {
    resident_bytes: i64,
    cpu_seconds: f64,
    open_fds: i64,
    start_time_seconds: i64,
}

/// Clock ticks per second in `/proc/self/stat`: `USER_HZ`, 100 on every
/// Linux architecture (it is part of the kernel's ABI).
const TICKS_PER_SECOND: f64 = 100.0;

fn process() -> Option<Process> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces), from
    // field 3 (state): utime is field 14, stime 15, starttime 22.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    let start_ticks: f64 = rest.get(19)?.parse().ok()?;
    let boot_time: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    Some(Process {
        resident_bytes: rss_kib * 1024,
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        open_fds,
        start_time_seconds: boot_time + (start_ticks / TICKS_PER_SECOND) as i64,
    })
}

/// The Prometheus text of this member's metrics now.
pub(crate) fn render(node: &Node) -> String {
    let mut r = Registry::default();
    let m = node.raft.metrics().borrow().clone();
    let leader = node.leader();
    gauge(
        &mut r,
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        i64::from(leader.is_some()),
    );
    gauge(
        &mut r,
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        i64::from(leader == Some(node.id)),
    );
    counter(
        &mut r,
        "etcd_server_leader_changes_seen",
        "The number of leader changes seen.",
        node.leader_changes.load(Ordering::Relaxed),
    );
    let applied = m.last_applied.map_or(0, |l| l.index);
    let last = m.last_log_index.unwrap_or(0);
    gauge(
        &mut r,
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        applied as i64,
    );
    gauge(
        &mut r,
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        applied as i64,
    );
    gauge(
        &mut r,
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        last.saturating_sub(applied) as i64,
    );
    counter(
        &mut r,
        "etcd_server_proposals_failed",
        "The total number of failed proposals seen.",
        0,
    );
    gauge(
        &mut r,
        "etcd_server_term",
        "The raft term of this member.",
        m.current_term as i64,
    );
    let size = node.sm.lock().data.kv.size_bytes() as i64;
    gauge(
        &mut r,
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        size,
    );
    gauge(
        &mut r,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        size,
    );
    if let Some(p) = process() {
        gauge(
            &mut r,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes,
        );
        gauge(
            &mut r,
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds,
        );
        gauge(
            &mut r,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        );
        let cpu: Counter<f64, AtomicU64> = Counter::default();
        cpu.inc_by(p.cpu_seconds);
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}
