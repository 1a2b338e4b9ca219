//! Collection: the resources this host's `collect:` entries take from every
//! host's exports (publishing and following them: `mgmt_store::exports`).

use mgmt_core::Graph;
use mgmt_core::export::{self, Exported};
use tracing::warn;

pub use mgmt_store::exports::{Shared, follow, publish};

/// The resources `graph`'s `collect:` entries take from `exports`, each
/// compiled on its own; one that does not compile is skipped with a warning.
pub fn collected(graph: &Graph, exports: &[Exported]) -> Vec<(mgmt_core::Resource, String)> {
    let mut out = Vec::new();
    for c in &graph.collect {
        let Some(kind) = mgmt_core::Kind::parse(&c.kind) else {
            warn!("collect: unknown kind {:?}", c.kind);
            continue;
        };
        for e in exports.iter().filter(|e| e.kind == kind) {
            match export::compile_collected(e, c.pattern.as_deref()) {
                Ok(r) => out.push((r, format!("host {}", e.host))),
                Err(err) => warn!(
                    "collect: skipped {}: {err}",
                    export::key_of(&e.host, e.kind, &e.name)
                ),
            }
        }
    }
    out
}
