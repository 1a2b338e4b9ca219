//! AutoGroup: run compatible resources together as one vertex.
//!
//! Grouping is not merging: a group vertex lists its members, every member
//! keeps its identity, params and edges, and the graph's resource edges are
//! untouched. Edges between vertices are derived from them
//! ([`Graph::vertex_edges`]), so every dependency of every member is re-attached
//! to its group automatically and a changed graph can be regrouped differently.
//!
//! Which resources may share a vertex is a per-kind decision, [`groupable`],
//! derived from a [`GroupClass`] so that it is an equivalence relation:
//! - `noop` groups with any `noop`;
//! - `file` groups with files (and directories) whose parent directory is the
//!   same, so one directory watch can serve them all. Their `state`, content
//!   and mode may differ: each member is still checked and applied on its own;
//! - `exec` never groups (each command is its own unit of work);
//! - kinds never mix, `meta: {autogroup: false}` opts a resource out, and
//!   members must agree on `meta` retry, delay, poll and noop, because the
//!   engine runs a group with its head's meta.
//!
//! How vertices are chosen is an [`AutoGrouper`]. The default,
//! [`NonReachability`], groups two vertices only when neither can reach the
//! other, which keeps the graph acyclic and the order of every dependency.

use std::collections::BTreeMap;

use crate::graph::{Graph, Vertex, VertexId};
use crate::resource::{Kind, Params, Resource, Retry};

/// Resources with equal classes may share a vertex; `None` never groups.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupClass {
    pub kind: Kind,
    /// Meta the engine takes from a group's head, so members must agree on it.
    /// Retry as `None` = forever, `Some(n)` = n times.
    pub retry: Option<u32>,
    pub delay_ms: u64,
    pub poll_s: u64,
    pub noop: bool,
    /// The kind's own key: the parent directory for a file, empty for a noop.
    pub key: String,
}

/// The grouping class of a resource, or `None` if it never groups.
pub fn group_class(r: &Resource) -> Option<GroupClass> {
    if !r.meta.autogroup || r.exported {
        return None;
    }
    let key = match &r.params {
        Params::Noop { .. } => String::new(),
        Params::File(f) => parent_dir(&f.path)?.to_string(),
        Params::Exec(_) => return None,
    };
    Some(GroupClass {
        kind: r.kind(),
        retry: match r.meta.retry {
            Retry::Times(n) => Some(n),
            Retry::Forever => None,
        },
        delay_ms: r.meta.delay_ms,
        poll_s: r.meta.poll_s,
        noop: r.meta.noop,
        key,
    })
}

/// Whether `a` and `b` may be members of one vertex. An equivalence relation on
/// the resources that group at all.
pub fn groupable(a: &Resource, b: &Resource) -> bool {
    match (group_class(a), group_class(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// `/a/b/c` and `/a/b/c/` -> `/a/b/`. `None` for `/`.
fn parent_dir(path: &str) -> Option<&str> {
    let trimmed = path.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    Some(&path[..=cut])
}

/// A strategy that chooses which vertices to group.
pub trait AutoGrouper {
    /// Short name, for notes.
    fn name(&self) -> &'static str;
    /// Regroups `graph.vertices` in place, pushing a note per decision
    /// (`Grouping: Noop[b] into Noop[a]`). Must only join vertices whose heads
    /// are [`groupable`], keep every resource in exactly one vertex, keep the
    /// vertex list sorted by head, and leave the vertex graph acyclic with
    /// every path of the resource graph. Call on an acyclic graph.
    fn group(&self, graph: &mut Graph);
}

/// Runs the default grouper, [`NonReachability`].
pub fn autogroup(graph: &mut Graph) {
    NonReachability.group(graph);
}

/// Groups two vertices only when neither reaches the other in the current,
/// partially grouped graph, and groups maximally: when it ends, every two
/// remaining groupable vertices are joined by a path.
///
/// Order: for each vertex `a` in `Kind[name]` order, every later compatible
/// vertex `b` still on its own is joined into `a` if no path joins them. A
/// refused pair stays refused because joining vertices only ever adds paths,
/// which is what makes one pass maximal.
///
/// Cost: reachability between candidates (vertices that have a compatible
/// partner) is a pair of bit matrices, descendants and ancestors, built once
/// over the vertex DAG; joining `b` into `a` ORs `b`'s rows into `a`'s and into
/// the rows of the vertices whose reachability actually changed. Memory is
/// `vertices x candidates` bits while building, `2 x candidates^2` after.
#[derive(Clone, Copy, Debug, Default)]
pub struct NonReachability;

impl AutoGrouper for NonReachability {
    fn name(&self) -> &'static str {
        "non-reachability"
    }

    fn group(&self, graph: &mut Graph) {
        let nv = graph.vertices.len();
        // Class of each vertex: its head's, if every member shares it.
        let mut classes: BTreeMap<GroupClass, Vec<VertexId>> = BTreeMap::new();
        for (v, vertex) in graph.vertices.iter().enumerate() {
            let Some(c) = group_class(&graph.resources[vertex.head()]) else {
                continue;
            };
            if vertex.members[1..]
                .iter()
                .all(|&m| group_class(&graph.resources[m]).as_ref() == Some(&c))
            {
                classes.entry(c).or_default().push(v);
            }
        }
        // Candidates: vertices with at least one compatible partner, numbered in
        // vertex order, each tagged with its class.
        let mut cand_of = vec![usize::MAX; nv];
        let mut class_of_cand = Vec::new();
        let mut n_classes = 0;
        for vs in classes.values().filter(|vs| vs.len() >= 2) {
            for &v in vs {
                cand_of[v] = n_classes;
            }
            n_classes += 1;
        }
        let mut cands = Vec::new();
        for (v, c) in cand_of.iter_mut().enumerate() {
            if *c != usize::MAX {
                class_of_cand.push(*c);
                *c = cands.len();
                cands.push(v);
            }
        }
        let nc = cands.len();
        if nc == 0 {
            return;
        }
        let vedges: Vec<(usize, usize)> = graph
            .vertex_edges()
            .iter()
            .map(|e| (e.from, e.to))
            .collect();
        let Some(order) = crate::algo::topo_order(nv, vedges.iter().copied()) else {
            graph
                .notes
                .push("Grouping: skipped, the graph has a cycle".to_string());
            return;
        };
        let mut succ = vec![Vec::new(); nv];
        let mut pred = vec![Vec::new(); nv];
        for &(f, t) in &vedges {
            succ[f].push(t);
            pred[t].push(f);
        }
        let mut desc = closure(&order, &succ, &cand_of, &cands, true);
        let mut anc = closure(&order, &pred, &cand_of, &cands, false);

        let mut class_bits = vec![BitRow::zeros(nc); n_classes];
        for (i, &c) in class_of_cand.iter().enumerate() {
            class_bits[c].set(i);
        }
        // Candidates after the current head and not joined into anything: the
        // only ones whose rows, and whose columns, are still read. Heads are
        // visited in index order, so everything before the current one is done.
        let mut pending = BitRow::zeros(nc);
        for i in 0..nc {
            pending.set(i);
        }
        // Candidates joined into each head, in order.
        let mut joined: Vec<Vec<usize>> = vec![Vec::new(); nc];
        let mut notes = Vec::new();
        for a in 0..nc {
            if !pending.get(a) {
                continue;
            }
            pending.clear(a);
            let cls = &class_bits[class_of_cand[a]];
            let mut from = a + 1;
            loop {
                let next = first_set_from(from, pending.0.len(), |w| {
                    cls.0[w] & pending.0[w] & !desc.row(a)[w] & !anc.row(a)[w]
                });
                let Some(b) = next else { break };
                pending.clear(b);
                join(&mut desc, &mut anc, &pending, a, b);
                joined[a].push(b);
                notes.push(format!(
                    "Grouping: {} into {}",
                    graph.vertex_id(cands[b]),
                    graph.vertex_id(cands[a])
                ));
                from = b + 1;
            }
        }

        let mut absorbed = vec![false; nv];
        for bs in &joined {
            for &b in bs {
                absorbed[cands[b]] = true;
            }
        }
        let old = std::mem::take(&mut graph.vertices);
        let mut vertices = Vec::with_capacity(nv - joined.iter().map(Vec::len).sum::<usize>());
        for (v, vertex) in old.iter().enumerate() {
            if absorbed[v] {
                continue;
            }
            let mut members = vertex.members.clone();
            if cand_of[v] != usize::MAX {
                for &b in &joined[cand_of[v]] {
                    members.extend_from_slice(&old[cands[b]].members);
                }
            }
            vertices.push(Vertex { members });
        }
        graph.vertices = vertices;
        graph.notes.extend(notes);
    }
}

/// Joins candidate `b` into candidate `a`: whatever reached either now reaches
/// everything either reached, and `a`. Only the rows and columns of `pending`
/// candidates (all after `a`) are kept up to date; the rest are never read again.
fn join(desc: &mut BitMatrix, anc: &mut BitMatrix, pending: &BitRow, a: usize, b: usize) {
    let lo = a / 64;
    let words = lo..desc.words;
    let or =
        |m: &BitMatrix| -> Vec<u64> { words.clone().map(|w| m.row(a)[w] | m.row(b)[w]).collect() };
    // Only candidates that reached exactly one of the two gain anything; those
    // that reached both already reach all of it.
    let xor = |m: &BitMatrix| -> Vec<u64> {
        words
            .clone()
            .map(|w| (m.row(a)[w] ^ m.row(b)[w]) & pending.0[w])
            .collect()
    };
    let (new_desc, new_anc) = (or(desc), or(anc));
    let (changed_desc, changed_anc) = (xor(desc), xor(anc));
    for (m, changed, new) in [
        (&mut *desc, &changed_anc, &new_desc),
        (&mut *anc, &changed_desc, &new_anc),
    ] {
        for_each_set(changed, |x| {
            let row = &mut m.row_mut(lo * 64 + x)[lo..];
            for (r, n) in row.iter_mut().zip(new) {
                *r |= n;
            }
            row[0] |= 1 << (a % 64);
        });
        m.row_mut(a)[lo..].copy_from_slice(new);
    }
}

/// For each candidate, the candidates it reaches (`forward`) or that reach it,
/// through any vertex. `order` is a topological order of the vertex DAG whose
/// adjacency is `adj` (successors if `forward`, else predecessors).
fn closure(
    order: &[usize],
    adj: &[Vec<usize>],
    cand_of: &[usize],
    cands: &[usize],
    forward: bool,
) -> BitMatrix {
    let nc = cands.len();
    let mut all = BitMatrix::zeros(order.len(), nc);
    let mut visit = |v: usize| {
        for &w in &adj[v] {
            // `w` is finished: it comes before `v` in this visiting order.
            let (dst, src) = all.two_rows(v, w);
            for (d, s) in dst.iter_mut().zip(src) {
                *d |= *s;
            }
            if cand_of[w] != usize::MAX {
                let c = cand_of[w];
                dst[c / 64] |= 1 << (c % 64);
            }
        }
    };
    if forward {
        order.iter().rev().for_each(|&v| visit(v));
    } else {
        order.iter().for_each(|&v| visit(v));
    }
    // Keep only the candidates' rows, in place: `cands` ascends, so row
    // `cands[i] >= i` is still intact when row `i` is written. A second
    // matrix here was a third of AutoGroup's peak memory (massif, 10 000 files).
    let w = all.words;
    for (i, &v) in cands.iter().enumerate() {
        if v != i {
            all.data.copy_within(v * w..(v + 1) * w, i * w);
        }
    }
    all.data.truncate(nc * w);
    all.data.shrink_to_fit();
    all
}

/// The lowest bit index >= `from` set in `word(w)`, for words `0..words`.
fn first_set_from(from: usize, words: usize, word: impl Fn(usize) -> u64) -> Option<usize> {
    let mut w = from / 64;
    let mut mask = !0u64 << (from % 64);
    while w < words {
        let x = word(w) & mask;
        if x != 0 {
            return Some(w * 64 + x.trailing_zeros() as usize);
        }
        w += 1;
        mask = !0;
    }
    None
}

fn for_each_set(words: &[u64], mut f: impl FnMut(usize)) {
    for (w, &word) in words.iter().enumerate() {
        let mut x = word;
        while x != 0 {
            f(w * 64 + x.trailing_zeros() as usize);
            x &= x - 1;
        }
    }
}

/// A row of bits over the candidates.
#[derive(Clone, Debug)]
struct BitRow(Vec<u64>);

impl BitRow {
    fn zeros(n: usize) -> Self {
        BitRow(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
}

/// Rows of bits, stored contiguously.
struct BitMatrix {
    words: usize,
    data: Vec<u64>,
}

impl BitMatrix {
    fn zeros(rows: usize, cols: usize) -> Self {
        let words = cols.div_ceil(64);
        BitMatrix {
            words,
            data: vec![0; rows * words],
        }
    }
    fn row(&self, r: usize) -> &[u64] {
        &self.data[r * self.words..(r + 1) * self.words]
    }
    fn row_mut(&mut self, r: usize) -> &mut [u64] {
        &mut self.data[r * self.words..(r + 1) * self.words]
    }
    /// Row `a` mutably and row `b` shared; `a != b`.
    fn two_rows(&mut self, a: usize, b: usize) -> (&mut [u64], &[u64]) {
        assert_ne!(a, b, "a vertex is not its own neighbour in a DAG");
        let w = self.words;
        if a < b {
            let (lo, hi) = self.data.split_at_mut(b * w);
            (&mut lo[a * w..(a + 1) * w], &hi[..w])
        } else {
            let (lo, hi) = self.data.split_at_mut(a * w);
            (&mut hi[..w], &lo[b * w..(b + 1) * w])
        }
    }
}
