//! What a run reports: each resource's CheckApplies, changes and errors,
//! tallied as they return (`mgmt run --report`).

use crate::CheckApplyError;
use mgmt_core::{Graph, ResourceId};

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// The name of the graph that ran last (after reloads and deploys).
    pub graph: String,
    /// True if it stopped because it converged (rather than a signal).
    pub converged: bool,
    /// Resources whose vertex failed for good.
    pub failed: Vec<ResourceId>,
    /// Every resource of the run (of each graph it ran, after a reload), by id.
    pub resources: Vec<ResourceRun>,
}

/// What one resource went through in a run (an entry of `mgmt run --report`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRun {
    pub id: ResourceId,
    /// CheckApply calls.
    pub checks: u64,
    /// What its CheckApplies changed (or would have, under noop), in order:
    /// the last [`CHANGES_KEPT`] (a daemon repairs drift for months).
    pub changes: Vec<String>,
    /// Changes older than those kept.
    pub changes_dropped: u64,
    /// CheckApplies that failed, and the last error.
    pub errors: u64,
    pub last_error: Option<String>,
    /// Time spent in its CheckApplies, in microseconds.
    pub busy_us: u64,
}

/// One member's CheckApply: its index in the vertex, what it changed or why
/// it failed, and how long it took (ms).
pub(super) type MemberOutcome = (usize, Result<Vec<String>, CheckApplyError>, f64);

/// Each resource's [`ResourceRun`], kept up to date as CheckApplies return:
/// sorted by id, each id once (a list, not a map keyed by a second copy of
/// every id: a daemon keeping 10 000 files holds 10 000 of them).
#[derive(Default)]
pub(super) struct Tally(Vec<ResourceRun>);

/// How many of a resource's changes a run keeps for its report.
pub const CHANGES_KEPT: usize = 64;

impl ResourceRun {
    /// A resource not checked yet.
    fn new(id: ResourceId) -> Self {
        ResourceRun {
            id,
            checks: 0,
            changes: Vec::new(),
            changes_dropped: 0,
            errors: 0,
            last_error: None,
            busy_us: 0,
        }
    }

    /// Adds what a CheckApply changed, keeping the last [`CHANGES_KEPT`].
    fn note_changes(&mut self, changes: Vec<String>) {
        self.changes.extend(changes);
        let over = self.changes.len().saturating_sub(CHANGES_KEPT);
        self.changes.drain(..over);
        self.changes_dropped += over as u64;
    }
}

impl Tally {
    pub(super) fn add_graph(&mut self, graph: &Graph) {
        let mut new: Vec<ResourceRun> = graph
            .resources
            .iter()
            .filter(|r| self.find(&r.id).is_none())
            .map(|r| ResourceRun::new(r.id.clone()))
            .collect();
        if !new.is_empty() {
            self.0.append(&mut new);
            self.0.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        }
    }

    fn find(&self, id: &ResourceId) -> Option<usize> {
        self.0.binary_search_by(|run| run.id.cmp(id)).ok()
    }

    /// Every resource's run, by id.
    pub(super) fn into_runs(self) -> Vec<ResourceRun> {
        self.0
    }

    /// Records a vertex's CheckApply: `ids` are its members'.
    pub(super) fn record(&mut self, ids: &[ResourceId], outcomes: Vec<MemberOutcome>) {
        for (i, result, ms) in outcomes {
            let Some(run) = self.find(&ids[i]).map(|k| &mut self.0[k]) else {
                continue;
            };
            run.checks += 1;
            run.busy_us += (ms * 1000.0) as u64;
            match result {
                Ok(changes) => run.note_changes(changes),
                Err(e) => {
                    run.errors += 1;
                    run.last_error = Some(e.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt_core::Kind;

    #[test]
    fn a_resource_keeps_its_last_changes_and_counts_the_older_ones() {
        let mut run = ResourceRun::new(ResourceId::new(Kind::File, "f"));
        run.note_changes(vec!["created file".into()]);
        assert_eq!(run.changes, ["created file"]);
        for i in 0..CHANGES_KEPT + 9 {
            run.note_changes(vec![format!("repair {i}")]);
        }
        assert_eq!(run.changes.len(), CHANGES_KEPT);
        assert_eq!(run.changes_dropped, 10);
        assert_eq!(run.changes[0], "repair 9");
        assert_eq!(
            run.changes.last().map(String::as_str),
            Some(format!("repair {}", CHANGES_KEPT + 8).as_str())
        );
    }
}
