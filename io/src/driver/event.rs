//! What the driver's tasks tell its loop.

use mgmt_core::VertexId;

use super::members::VertexRes;
use super::report::MemberOutcome;

/// `Watch` and `WatchFailed` carry the generation of the graph whose watch
/// sent them.
pub(super) enum Event {
    Watch(u64, VertexId),
    WatchFailed(u64, VertexId, String),
    Done {
        vertex: VertexId,
        res: Box<VertexRes>,
        result: Result<bool, String>,
        outcomes: Vec<MemberOutcome>,
        apply: bool,
    },
}
