//! Changeover: what a new graph keeps of the running one. A resource is kept
//! when the new graph has one with the same kind and name whose parameters
//! and meta are equal (the whole [`Resource`] compares equal); it keeps its
//! live state (a command that ran, a message logged) and, if it had settled,
//! runs no CheckApply for the changeover. Groups are recomputed from the
//! members: a kept member may move to another vertex without running again.

use std::collections::HashMap;

use crate::engine::Carried;
use crate::graph::{Graph, ResIdx, VertexId};
use crate::resource::ResourceId;

/// How the new graph relates to the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Per resource of the new graph: the unchanged old resource it keeps.
    pub kept: Vec<Option<ResIdx>>,
    /// Per resource of the new graph: it must be checked (new, changed, or
    /// kept from a vertex that had not settled).
    pub needs_check: Vec<bool>,
    /// Per vertex of the new graph: what it brings (for [`crate::Engine::resume`]).
    pub carried: Vec<Carried>,
    /// Old resources the new graph drops or changes: stopped.
    pub stopped: Vec<ResourceId>,
    /// New resources the new graph adds or changes: started and checked.
    pub started: Vec<ResourceId>,
}

/// Compares `new` with the running `old` graph; `settled(v)` says whether
/// old vertex `v` had settled (its last CheckApply succeeded and none is due).
pub fn plan(old: &Graph, new: &Graph, settled: impl Fn(VertexId) -> bool) -> Plan {
    let old_vertex = old.vertex_of();
    let by_id: HashMap<&ResourceId, ResIdx> = old
        .resources
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.id, i))
        .collect();
    let kept: Vec<Option<ResIdx>> = new
        .resources
        .iter()
        .map(|r| {
            by_id
                .get(&r.id)
                .copied()
                .filter(|&i| old.resources[i] == *r)
        })
        .collect();
    let needs_check: Vec<bool> = kept
        .iter()
        .map(|k| !k.is_some_and(|o| settled(old_vertex[o])))
        .collect();
    let carried = new
        .vertices
        .iter()
        .map(|v| {
            let to_check: Vec<usize> = (0..v.members.len())
                .filter(|&k| needs_check[v.members[k]])
                .collect();
            if to_check.is_empty() {
                Carried::Settled
            } else if to_check.len() < v.members.len() {
                Carried::Partly(to_check)
            } else {
                Carried::Fresh
            }
        })
        .collect();
    let mut still: Vec<bool> = vec![false; old.resources.len()];
    for o in kept.iter().flatten() {
        still[*o] = true;
    }
    let stopped = old
        .resources
        .iter()
        .zip(&still)
        .filter(|(_, k)| !**k)
        .map(|(r, _)| r.id.clone())
        .collect();
    let started = new
        .resources
        .iter()
        .zip(&kept)
        .filter(|(_, k)| k.is_none())
        .map(|(r, _)| r.id.clone())
        .collect();
    Plan {
        kept,
        needs_check,
        carried,
        stopped,
        started,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;

    fn g(files: &[(&str, &str)]) -> Graph {
        let mut y = String::from("graph: g\nresources:\n  file:\n");
        for (path, content) in files {
            y.push_str(&format!("  - {{name: {path}, content: {content}}}\n"));
        }
        compile("g.yaml", &y).unwrap()
    }

    #[test]
    fn unchanged_settled_resources_are_kept_and_changed_ones_start_afresh() {
        // /d/a and /d/b group (one directory); /e/c is alone.
        let old = g(&[("/d/a", "1"), ("/d/b", "1"), ("/e/c", "1")]);
        let new = g(&[("/d/a", "1"), ("/d/b", "2"), ("/e/c", "1"), ("/e/n", "1")]);
        let p = plan(&old, &new, |_| true);
        let name = |i: usize| new.resources[i].id.name.clone();
        let kept: Vec<String> = (0..new.resources.len())
            .filter(|&i| p.kept[i].is_some())
            .map(name)
            .collect();
        assert_eq!(kept, ["/d/a", "/e/c"]);
        assert_eq!(p.stopped, [ResourceId::new(crate::Kind::File, "/d/b")]);
        assert_eq!(
            p.started,
            [
                ResourceId::new(crate::Kind::File, "/d/b"),
                ResourceId::new(crate::Kind::File, "/e/n")
            ]
        );
        // Two vertices, both with a kept member and a new one: /d/b (changed)
        // after /d/a, /e/n (new) after /e/c.
        assert_eq!(
            p.carried,
            [Carried::Partly(vec![1]), Carried::Partly(vec![1])],
            "each vertex checks its new member only"
        );
    }

    #[test]
    fn a_member_that_had_not_settled_runs_again() {
        let old = g(&[("/d/a", "1")]);
        let new = g(&[("/d/a", "1")]);
        assert_eq!(plan(&old, &new, |_| true).carried, [Carried::Settled]);
        assert_eq!(plan(&old, &new, |_| false).carried, [Carried::Fresh]);
    }
}
