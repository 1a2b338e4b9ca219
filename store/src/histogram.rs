//! A histogram of durations, kept as it happens by the parts it times (the
//! log's fsyncs, the peers' round trips) and rendered by `metrics` at each
//! scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A histogram of durations with etcd's buckets for it: counts kept in
/// atomics, so observing costs a few adds and never blocks.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending.
    bounds: Vec<f64>,
    /// Observations at or below each bound (not cumulative), then above all.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// `n` buckets doubling from `first` seconds (Prometheus' exponential
    /// buckets, as etcd defines its histograms).
    pub fn exponential(first: f64, n: usize) -> Self {
        let bounds: Vec<f64> = (0..n).map(|i| first * 2f64.powi(i as i32)).collect();
        let counts = (0..=n).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds,
            counts,
            sum_ns: AtomicU64::new(0),
        }
    }

    /// etcd's `etcd_disk_wal_fsync_duration_seconds`: 1 ms to 8 s.
    pub fn wal_fsync() -> Self {
        Histogram::exponential(0.001, 14)
    }

    /// etcd's `etcd_network_peer_round_trip_time_seconds`: 0.1 ms to 3.3 s.
    pub fn peer_round_trip() -> Self {
        Histogram::exponential(0.0001, 16)
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, help: &str) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut total = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            total += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {total}");
        }
        total += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {total}");
    }
}
