//! This member's metrics under etcd's names, for the client port's
//! `/metrics` (see `http_face`): etcd's dashboards and alerts, and
//! `etcdctl check datascale` (which reads `process_resident_memory_bytes`),
//! work unchanged. Read from openraft's metrics and the state machine at
//! each scrape; only the count of leader changes is kept as it happens.

use std::sync::Arc;
use std::sync::atomic::Ordering;

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

/// One metric in Prometheus' text format 0.0.4 (what etcd serves, and
/// what `promtool check metrics` reads): its help, its type, its sample.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
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

/// The Prometheus text of this member's metrics now. Monotonic counts are
/// counters (etcd declares some of them gauges; the names are etcd's).
pub(crate) fn render(node: &Node) -> String {
    let mut out = String::new();
    let m = node.raft.metrics().borrow().clone();
    let leader = node.leader();
    let o = &mut out;
    metric(
        o,
        "etcd_server_has_leader",
        "gauge",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        i64::from(leader.is_some()),
    );
    metric(
        o,
        "etcd_server_is_leader",
        "gauge",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        i64::from(leader == Some(node.id)),
    );
    metric(
        o,
        "etcd_server_leader_changes_seen_total",
        "counter",
        "The number of leader changes seen.",
        node.leader_changes.load(Ordering::Relaxed),
    );
    let applied = m.last_applied.map_or(0, |l| l.index);
    let last = m.last_log_index.unwrap_or(0);
    metric(
        o,
        "etcd_server_proposals_committed_total",
        "counter",
        "The total number of consensus proposals committed.",
        applied,
    );
    metric(
        o,
        "etcd_server_proposals_applied_total",
        "counter",
        "The total number of consensus proposals applied.",
        applied,
    );
    metric(
        o,
        "etcd_server_proposals_pending",
        "gauge",
        "The current number of pending proposals to commit.",
        last.saturating_sub(applied),
    );
    metric(
        o,
        "etcd_server_proposals_failed_total",
        "counter",
        "The total number of failed proposals seen.",
        0,
    );
    metric(
        o,
        "etcd_server_term",
        "gauge",
        "The raft term of this member.",
        m.current_term,
    );
    let size = node.sm.lock().data.kv.size_bytes();
    metric(
        o,
        "etcd_mvcc_db_total_size_in_bytes",
        "gauge",
        "Total size of the underlying database physically allocated in bytes.",
        size,
    );
    metric(
        o,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "gauge",
        "Total size of the underlying database logically in use in bytes.",
        size,
    );
    node.log.fsync_durations().render(
        o,
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
    );
    node.channels.round_trips().render(
        o,
        "etcd_network_peer_round_trip_time_seconds",
        "Round-Trip-Time histogram between peers.",
    );
    if let Some(p) = process() {
        metric(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes,
        );
        metric(
            o,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds,
        );
        metric(
            o,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        );
        metric(
            o,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        );
    }
    out
}
