//! How a run is asked to go ([`RunOptions`]), and what it says as it goes:
//! its progress, and each event to an [`Observer`] (metrics).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mgmt_core::resource::{Kind, ResourceId};
use tokio::sync::watch;

use crate::CheckApplyError;

/// How to run a graph.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Check only; report what would change.
    pub noop: bool,
    /// Stop once nothing has happened for this long.
    pub converged_timeout: Option<Duration>,
    /// Where the run says how far it is (systemd's readiness and STATUS=).
    pub progress: Option<watch::Sender<Progress>>,
    /// Told of every CheckApply, watch event, retry and failure (metrics).
    pub observer: Option<Arc<dyn Observer>>,
    /// The caller's name for the first graph (a deploy id), reported in
    /// [`Progress::tag`] while it runs.
    pub tag: u64,
}

impl RunOptions {
    /// A converged timeout of zero: every vertex once, nothing watched.
    pub fn single_pass(&self) -> bool {
        // In the engine's milliseconds, as it will be told.
        self.converged_timeout.is_some_and(|d| d.as_millis() == 0)
    }
}

/// What a run reports as it goes, for metrics. Every method has a default
/// that does nothing; calls come from the driver's loop, so they must be
/// quick.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// The resources of the graph now running, counted by kind.
    fn graph(&self, _resources_by_kind: &BTreeMap<Kind, usize>) {}
    /// One resource's CheckApply: `Ok` with what it changed, or the error.
    fn check_applied(
        &self,
        _id: &ResourceId,
        _apply: bool,
        _result: &Result<Vec<String>, CheckApplyError>,
        _duration: Duration,
    ) {
    }
    fn watch_event(&self, _kind: Kind) {}
    /// A failure that will be retried (a soft failure, in upstream's words).
    fn retry(&self, _kind: Kind) {}
    /// A vertex of these kinds failed for good (hard).
    fn failed(&self, _kind: Kind) {}
    /// Whether everything has settled.
    fn converged(&self, _converged: bool) {}
}

/// How far a run is, published whenever it changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every vertex has run and nothing runs or waits for a retry; stays
    /// true from the first time until something runs again.
    pub idle: bool,
    /// It has been idle once: the graph converged (or failed for good) at
    /// least once.
    pub ready: bool,
    /// Vertices whose CheckApply is running, of all vertices.
    pub running: usize,
    pub vertices: usize,
    /// Resources of the graph, and those that failed for good.
    pub resources: usize,
    pub failed: usize,
    /// The tag of the graph running now ([`RunOptions::tag`], [`super::Reload::compile`]).
    pub tag: u64,
    /// CheckApplies that changed something (or would have, under noop),
    /// since the run started.
    pub changed: u64,
}
