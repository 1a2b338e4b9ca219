//! `--prometheus`: metrics in Prometheus's text format on `GET /metrics` at
//! `--prometheus-listen` (upstream mgmt's names where it has them:
//! `mgmt_resources`, `mgmt_checkapply_total`, `mgmt_failures_total`,
//! `mgmt_graph_start_time_seconds`). Nothing listens unless asked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mgmt_core::resource::{Kind, ResourceId};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// Upstream's labels: noop or not, changed something, failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckApplyLabels {
    kind: String,
    apply: String,
    eventful: String,
    errorful: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    kind: String,
    /// ok, changed or failed.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: String,
    /// soft (to be retried) or hard (for good).
    failure: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric; the driver reports into it ([`mgmt_io::Observer`]) and a
/// scrape reads it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    resources: Family<KindLabel, Gauge>,
    check_apply: Family<CheckApplyLabels, Counter>,
    duration: Family<ResultLabels, Histogram>,
    watch_events: Family<KindLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    converged: Gauge,
    graph_start: FloatGauge,
    last_change: FloatGauge,
    store_leader: Gauge,
    store_term: Gauge,
    store_members: Gauge,
    store_applied: Gauge,
    store_puts: Gauge,
    store_ranges: Gauge,
    store_watchers: Gauge,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn kind(k: Kind) -> String {
    k.yaml_name().to_string()
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let resources = Family::<KindLabel, Gauge>::default();
        registry.register(
            "mgmt_resources",
            "Resources managed, by kind",
            resources.clone(),
        );
        let check_apply = Family::<CheckApplyLabels, Counter>::default();
        registry.register(
            "mgmt_checkapply",
            "CheckApply calls, by kind, apply (not noop), eventful (changed something) and errorful",
            check_apply.clone(),
        );
        let duration = Family::<ResultLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        registry.register(
            "mgmt_checkapply_duration_seconds",
            "CheckApply durations, by kind and result (ok, changed, failed)",
            duration.clone(),
        );
        let watch_events = Family::<KindLabel, Counter>::default();
        registry.register(
            "mgmt_watch_events",
            "Events the resources' watches delivered, by kind",
            watch_events.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "mgmt_failures",
            "Failures, by kind: soft ones are retried, hard ones are for good",
            failures.clone(),
        );
        let converged = Gauge::default();
        registry.register(
            "mgmt_converged",
            "1 while nothing runs or waits for a retry",
            converged.clone(),
        );
        let graph_start = FloatGauge::default();
        registry.register(
            "mgmt_graph_start_time_seconds",
            "When the running graph started, in seconds since the epoch",
            graph_start.clone(),
        );
        let last_change = FloatGauge::default();
        registry.register(
            "mgmt_last_change_time_seconds",
            "When a CheckApply last changed something, in seconds since the epoch (time() minus it: the time since)",
            last_change.clone(),
        );
        let g = |registry: &mut Registry, name: &str, help: &str| {
            let m = Gauge::default();
            registry.register(name, help, m.clone());
            m
        };
        let store_leader = g(
            &mut registry,
            "mgmt_store_is_leader",
            "1 while this host's store member leads",
        );
        let store_term = g(
            &mut registry,
            "mgmt_store_raft_term",
            "The store member's raft term",
        );
        let store_members = g(
            &mut registry,
            "mgmt_store_members",
            "Members of the store cluster, as this member knows it",
        );
        let store_applied = g(
            &mut registry,
            "mgmt_store_applied_index",
            "The store member's last applied raft index",
        );
        let store_puts = g(
            &mut registry,
            "mgmt_store_puts",
            "Put requests this member answered since it started",
        );
        let store_ranges = g(
            &mut registry,
            "mgmt_store_ranges",
            "Range requests this member answered since it started",
        );
        let store_watchers = g(
            &mut registry,
            "mgmt_store_watchers",
            "Watchers on this member",
        );
        Metrics {
            registry,
            resources,
            check_apply,
            duration,
            watch_events,
            failures,
            converged,
            graph_start,
            last_change,
            store_leader,
            store_term,
            store_members,
            store_applied,
            store_puts,
            store_ranges,
            store_watchers,
        }
    }

    /// The exposition, with the store's figures as of now.
    pub fn render(&self, store: Option<mgmt_store::StoreStats>) -> String {
        let s = store.unwrap_or_default();
        self.store_leader.set(s.is_leader as i64);
        self.store_term.set(s.raft_term as i64);
        self.store_members.set(s.members as i64);
        self.store_applied.set(s.applied_index as i64);
        self.store_puts.set(s.puts as i64);
        self.store_ranges.set(s.ranges as i64);
        self.store_watchers.set(s.watchers as i64);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        classic_text(&out)
    }
}

/// OpenMetrics text as Prometheus's classic text format (0.0.4), which every
/// scraper and `promtool check metrics` read: a counter family is named with
/// its `_total` there, and there is no `# EOF`.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

impl mgmt_io::Observer for Metrics {
    fn graph(&self, by_kind: &BTreeMap<Kind, usize>) {
        self.graph_start.set(now_s());
        for k in Kind::ALL {
            let n = by_kind.get(&k).copied().unwrap_or(0);
            self.resources
                .get_or_create(&KindLabel { kind: kind(k) })
                .set(n as i64);
        }
    }

    fn check_applied(
        &self,
        id: &ResourceId,
        apply: bool,
        result: &Result<Vec<String>, mgmt_io::CheckApplyError>,
        took: Duration,
    ) {
        let eventful = matches!(result, Ok(c) if !c.is_empty());
        let errorful = result.is_err();
        self.check_apply
            .get_or_create(&CheckApplyLabels {
                kind: kind(id.kind),
                apply: apply.to_string(),
                eventful: eventful.to_string(),
                errorful: errorful.to_string(),
            })
            .inc();
        let outcome = match (errorful, eventful) {
            (true, _) => "failed",
            (false, true) => "changed",
            (false, false) => "ok",
        };
        self.duration
            .get_or_create(&ResultLabels {
                kind: kind(id.kind),
                result: outcome.into(),
            })
            .observe(took.as_secs_f64());
        if eventful {
            self.last_change.set(now_s());
        }
    }

    fn watch_event(&self, k: Kind) {
        self.watch_events
            .get_or_create(&KindLabel { kind: kind(k) })
            .inc();
    }

    fn retry(&self, k: Kind) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind(k),
                failure: "soft".into(),
            })
            .inc();
    }

    fn failed(&self, k: Kind) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind(k),
                failure: "hard".into(),
            })
            .inc();
    }

    fn converged(&self, converged: bool) {
        self.converged.set(converged as i64);
    }
}

/// The largest request head read: a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8 << 10;

/// Serves `GET /metrics` on `listener` until the runtime ends. HTTP/1.1, one
/// request per connection: all a Prometheus scrape needs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: impl Fn() -> Option<mgmt_store::StoreStats> + Send + Sync + 'static,
) {
    let store = Arc::new(store);
    loop {
        let Ok((mut conn, from)) = listener.accept().await else {
            // Out of descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (metrics, store) = (metrics.clone(), store.clone());
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(10), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                    let n = conn.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split(' ');
            let (method, path) = (parts.next(), parts.next().unwrap_or_default());
            let path = path.split('?').next().unwrap_or_default();
            let (status, kind, body) = match (method, path) {
                (Some("GET"), "/metrics") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.render(store()),
                ),
                (Some("GET"), _) => ("404 Not Found", "text/plain", "only /metrics\n".into()),
                _ => {
                    warn!(%from, "metrics: not a GET: {line}");
                    (
                        "405 Method Not Allowed",
                        "text/plain",
                        "GET /metrics\n".into(),
                    )
                }
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
