//! The end of a run: a one-line summary, and `--report FILE`, a JSON record
//! of every resource's outcome and timing (Puppet's last-run report is the
//! model: what changed, what failed, how long each took).

use std::path::Path;
use std::time::Duration;

use mgmt_io::{ResourceRun, RunReport};
use serde_json::json;

/// What the summary line says.
pub struct Summary {
    pub resources: usize,
    pub changed: usize,
    pub failed: usize,
    pub seconds: f64,
}

impl Summary {
    pub fn of(report: &RunReport, elapsed: Duration) -> Summary {
        Summary {
            resources: report.resources.len(),
            changed: report
                .resources
                .iter()
                .filter(|r| !r.changes.is_empty())
                .count(),
            failed: report.failed.len(),
            seconds: elapsed.as_secs_f64(),
        }
    }
}

/// `failed` (its vertex failed for good), `changed`, `unchanged`, or
/// `skipped` (never checked: a dependency failed, or the run stopped first).
fn status(r: &ResourceRun, report: &RunReport) -> &'static str {
    if report.failed.contains(&r.id) {
        "failed"
    } else if !r.changes.is_empty() {
        "changed"
    } else if r.checks > 0 {
        "unchanged"
    } else {
        "skipped"
    }
}

pub fn json(
    report: &RunReport,
    summary: &Summary,
    graph: &str,
    host: &str,
    noop: bool,
) -> serde_json::Value {
    let resources: Vec<serde_json::Value> = report
        .resources
        .iter()
        .map(|r| {
            json!({
                "resource": r.id.to_string(),
                "kind": r.id.kind.to_string(),
                "name": r.id.name,
                "status": status(r, report),
                "changes": r.changes,
                "changes_dropped": r.changes_dropped,
                "checks": r.checks,
                "errors": r.errors,
                "last_error": r.last_error,
                "duration_ms": r.busy_us as f64 / 1000.0,
            })
        })
        .collect();
    json!({
        "graph": graph,
        "host": host,
        "noop": noop,
        "converged": report.converged,
        "summary": {
            "resources": summary.resources,
            "changed": summary.changed,
            "failed": summary.failed,
            "seconds": summary.seconds,
        },
        "resources": resources,
    })
}

/// Written whole to a temporary file beside `path`, then renamed over it: a
/// reader never sees half a report.
pub fn write(path: &Path, report: &serde_json::Value) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    text.push('\n');
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
