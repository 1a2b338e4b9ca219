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
//! - `pkg` groups with packages of the same state and flags, so one package
//!   manager transaction serves them all; a pinned version never groups;
//! - `line` groups with the lines of the same file, so one read and one
//!   atomic write apply them all, and no line's write can lose another's;
//! - `exec`, `svc`, `timer`, `msg`, `user`, `group`, `sysctl` and `mount` never
//!   group (each is its own unit of work);
//! - kinds never mix, `meta: {autogroup: false}` opts a resource out, and
//!   members must agree on `meta` retry, delay, poll and noop, because the
//!   engine runs a group with its head's meta.
//!
//! How vertices are chosen is an [`AutoGrouper`]. The default,
//! [`NonReachability`], groups two vertices only when neither can reach the
//! other, which keeps the graph acyclic and the order of every dependency.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::graph::{Graph, Note, Vertex, VertexId};
use crate::resource::{Kind, Params, PkgState, Resource, Retry};

/// Resources with equal classes may share a vertex; `None` never groups.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupClass<'a> {
    pub kind: Kind,
    /// Meta the engine takes from a group's head, so members must agree on it.
    /// Retry as `None` = forever, `Some(n)` = n times.
    pub retry: Option<u32>,
    pub delay_ms: u64,
    pub poll_s: u64,
    pub noop: bool,
    /// The kind's own key: the parent directory for a file, the state and
    /// flags for a pkg, empty for a noop.
    pub key: Cow<'a, str>,
}

/// The grouping class of a resource, or `None` if it never groups.
pub fn group_class(r: &Resource) -> Option<GroupClass<'_>> {
    if !r.meta.autogroup || r.exported {
        return None;
    }
    let key = match &r.params {
        Params::Noop { .. } => Cow::Borrowed(""),
        Params::File(f) => Cow::Borrowed(parent_dir(&f.path)?),
        Params::Pkg(p) => match p.state {
            PkgState::Version(_) => return None,
            ref state => Cow::Owned(format!(
                "{state} untrusted={} nonfree={} unsupported={}",
                p.allow_untrusted, p.allow_nonfree, p.allow_unsupported
            )),
        },
        // One read and one atomic write of the file serve every line in it.
        Params::Line(l) => Cow::Borrowed(l.path.as_str()),
        // A timer ticks on its own interval; a message is its own unit; each
        // account is one command.
        Params::Exec(_)
        | Params::Svc(_)
        | Params::Timer { .. }
        | Params::Msg(_)
        | Params::User(_)
        | Params::Group(_)
        | Params::Sysctl(_)
        | Params::Mount(_)
        | Params::Hostname { .. } => return None,
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
/// Cost: candidates (vertices that have a compatible partner) are ranked in a
/// depth-first topological order, in which a vertex's descendants form few
/// runs in trees and tree-like DAGs; each candidate keeps the candidates it
/// reaches and that reach it as runs of ranks ([`Ranks`]), built once over
/// the vertex DAG (a chain of any length: one run each). The next partner of
/// a head is the lowest-numbered pending candidate of its class outside those
/// runs: a range-minimum query per gap ([`MinTree`]). Joining `b` into `a`
/// merges their runs into `a`'s and into those of the pending candidates
/// whose reachability actually changed. Memory is linear in the runs, never
/// `candidates^2`: 100 000 resources compile in well under 200 MB.
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
        // Candidates: vertices with at least one compatible partner, numbered
        // in vertex order (the order heads are visited in).
        let mut class_of_vertex = vec![usize::MAX; nv];
        let mut n_classes = 0;
        for vs in classes.values().filter(|vs| vs.len() >= 2) {
            for &v in vs {
                class_of_vertex[v] = n_classes;
            }
            n_classes += 1;
        }
        let cands: Vec<VertexId> = (0..nv)
            .filter(|&v| class_of_vertex[v] != usize::MAX)
            .collect();
        let nc = cands.len();
        if nc == 0 {
            return;
        }
        let mut succ = vec![Vec::new(); nv];
        let mut pred = vec![Vec::new(); nv];
        for e in graph.vertex_edges() {
            succ[e.from].push(e.to);
            pred[e.to].push(e.from);
        }
        let Some(order) = crate::algo::dfs_topo_order(&succ) else {
            graph.notes.push(Note::Text(
                "Grouping: skipped, the graph has a cycle".to_string(),
            ));
            return;
        };
        // Rank: a candidate's position among the candidates in `order`.
        let mut rank_of_vertex = vec![u32::MAX; nv];
        let mut vertex_at_rank = Vec::with_capacity(nc);
        for &v in &order {
            if class_of_vertex[v] != usize::MAX {
                rank_of_vertex[v] = vertex_at_rank.len() as u32;
                vertex_at_rank.push(v);
            }
        }
        // Everything below is indexed by rank; `index[r]` is the candidate's
        // number in vertex order, which decides who is visited and joined first.
        let mut index_at_rank = vec![0u32; nc];
        for (i, &v) in cands.iter().enumerate() {
            index_at_rank[rank_of_vertex[v] as usize] = i as u32;
        }
        let mut desc = closure(order.iter().rev(), &succ, &rank_of_vertex, &vertex_at_rank);
        let mut anc = closure(order.iter(), &pred, &rank_of_vertex, &vertex_at_rank);

        // Per class: its candidates' ranks, ascending, with the lowest pending
        // candidate number over any range of them; and its candidates by number.
        let mut class_ranks: Vec<Vec<u32>> = vec![Vec::new(); n_classes];
        for (r, &v) in vertex_at_rank.iter().enumerate() {
            class_ranks[class_of_vertex[v]].push(r as u32);
        }
        let mut class_by_index: Vec<Vec<u32>> = vec![Vec::new(); n_classes];
        for &v in &cands {
            class_by_index[class_of_vertex[v]].push(rank_of_vertex[v]);
        }
        let mut pending_in_class: Vec<MinTree> = class_ranks
            .iter()
            .map(|ranks| MinTree::new(ranks.iter().map(|&r| index_at_rank[r as usize])))
            .collect();
        let pos_in_class = |r: u32, ranks: &[u32]| ranks.partition_point(|&x| x < r);
        // Pending candidates by rank: after the current head, not yet joined.
        let mut pending = Bits::ones(nc);

        // Candidates joined into each head (by rank), in order.
        let mut joined: Vec<Vec<u32>> = vec![Vec::new(); nc];
        let mut notes = Vec::new();
        for &va in &cands {
            let a = rank_of_vertex[va];
            if !pending.get(a) {
                continue;
            }
            let class = class_of_vertex[va];
            let ranks = &class_ranks[class];
            let by_index = &class_by_index[class];
            let after = |r: u32| {
                let i = index_at_rank[r as usize];
                by_index.partition_point(|&x| index_at_rank[x as usize] <= i)
            };
            pending.clear(a);
            pending_in_class[class].clear(pos_in_class(a, ranks));
            // Where a walk over the class by number resumes: everything before
            // it is joined or refused, and a refusal is final.
            let mut from = after(a);
            loop {
                let reach = desc[a as usize].union(&anc[a as usize], nc);
                let next = match &reach {
                    // Few runs: a range-minimum query per gap between them.
                    Ranks::Runs(runs) => runs
                        .gaps(nc as u32)
                        .filter_map(|(lo, hi)| {
                            pending_in_class[class]
                                .min(pos_in_class(lo, ranks), pos_in_class(hi, ranks))
                        })
                        .min()
                        .map(|index| rank_of_vertex[cands[index as usize]]),
                    // Fragmented: walk the class in order; over one head the
                    // walk passes each member once.
                    Ranks::Bits(bits) => by_index[from..]
                        .iter()
                        .copied()
                        .find(|&r| pending.get(r) && !bits.get(r)),
                };
                let Some(b) = next else { break };
                from = after(b);
                pending.clear(b);
                pending_in_class[class].clear(pos_in_class(b, ranks));
                join(&mut desc, &mut anc, &pending, a, b, nc);
                joined[a as usize].push(b);
                notes.push(Note::Grouped {
                    member: graph.vertices[vertex_at_rank[b as usize]].head(),
                    into: graph.vertices[va].head(),
                });
            }
        }

        let mut absorbed = vec![false; nv];
        for bs in &joined {
            for &b in bs {
                absorbed[vertex_at_rank[b as usize]] = true;
            }
        }
        let old = std::mem::take(&mut graph.vertices);
        let mut vertices = Vec::with_capacity(nv - joined.iter().map(Vec::len).sum::<usize>());
        for (v, vertex) in old.iter().enumerate() {
            if absorbed[v] {
                continue;
            }
            let mut members = vertex.members.clone();
            if rank_of_vertex[v] != u32::MAX {
                for &b in &joined[rank_of_vertex[v] as usize] {
                    members.extend_from_slice(&old[vertex_at_rank[b as usize]].members);
                }
            }
            vertices.push(Vertex { members });
        }
        graph.vertices = vertices;
        graph.notes.extend(notes);
    }
}

/// Joins candidate `b` into candidate `a` (ranks): whatever reached either now
/// reaches everything either reached, and `a`. Only the sets of `pending`
/// candidates and of `a` are kept up to date; the rest are never read again.
fn join(desc: &mut [Ranks], anc: &mut [Ranks], pending: &Bits, a: u32, b: u32, n: usize) {
    let (a, b) = (a as usize, b as usize);
    let point = Ranks::Runs(Runs(vec![(a as u32, a as u32 + 1)]));
    let new_desc = desc[a].union(&desc[b], n);
    let new_anc = anc[a].union(&anc[b], n);
    let plus_desc = new_desc.union(&point, n);
    let plus_anc = new_anc.union(&point, n);
    // Only candidates that reached exactly one of the two gain anything; those
    // that reached both already reach all of it.
    let mut gain_desc = Vec::new();
    Ranks::for_each_in_xor(&anc[a], &anc[b], pending, n, |x| gain_desc.push(x));
    let mut gain_anc = Vec::new();
    Ranks::for_each_in_xor(&desc[a], &desc[b], pending, n, |x| gain_anc.push(x));
    for x in gain_desc {
        desc[x].union_with(&plus_desc, n);
    }
    for x in gain_anc {
        anc[x].union_with(&plus_anc, n);
    }
    desc[a] = new_desc;
    anc[a] = new_anc;
    // `b` is never read again.
    desc[b] = Ranks::default();
    anc[b] = Ranks::default();
}

/// For each candidate (by rank), the candidates it reaches through `adj`
/// (successors, visited in reverse topological order; or predecessors, in
/// topological order), through any vertex. A vertex's set is dropped once the
/// last vertex that needs it has read it, unless it is a candidate's.
fn closure<'a>(
    visit: impl Iterator<Item = &'a usize>,
    adj: &[Vec<usize>],
    rank_of_vertex: &[u32],
    vertex_at_rank: &[usize],
) -> Vec<Ranks> {
    let nv = adj.len();
    let n = vertex_at_rank.len();
    // How many vertices still have to read each vertex's set.
    let mut readers = vec![0u32; nv];
    for ws in adj {
        for &w in ws {
            readers[w] += 1;
        }
    }
    let mut sets: Vec<Ranks> = vec![Ranks::default(); nv];
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &v in visit {
        // Runs are gathered and merged once; fragmented sets are ORed.
        runs.clear();
        let mut bits: Option<Bits> = None;
        for &w in &adj[v] {
            // `w` is finished: it comes before `v` in this visiting order.
            match &sets[w] {
                Ranks::Runs(r) => runs.extend_from_slice(&r.0),
                Ranks::Bits(b) => bits.get_or_insert_with(|| Bits::zeros(n)).or(b),
            }
            if rank_of_vertex[w] != u32::MAX {
                runs.push((rank_of_vertex[w], rank_of_vertex[w] + 1));
            }
            readers[w] -= 1;
            if readers[w] == 0 && rank_of_vertex[w] == u32::MAX {
                sets[w] = Ranks::default();
            }
        }
        sets[v] = match bits {
            Some(mut b) => {
                for &(lo, hi) in &runs {
                    b.set_range(lo, hi);
                }
                Ranks::Bits(b)
            }
            None => Ranks::from_runs(Runs::from_runs(&mut runs), n),
        };
    }
    vertex_at_rank
        .iter()
        .map(|&v| std::mem::take(&mut sets[v]))
        .collect()
}

/// A set of candidate ranks in `0..n`: runs while they are few, else bits,
/// whichever is smaller (a chain or a tree: one run or a few each; a random
/// DAG: bits), so memory is linear in the runs and a set never exceeds `n` bits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ranks {
    Runs(Runs),
    Bits(Bits),
}

impl Default for Ranks {
    fn default() -> Self {
        Ranks::Runs(Runs::default())
    }
}

impl Ranks {
    /// More runs than this take more room than `n` bits.
    fn max_runs(n: usize) -> usize {
        n.div_ceil(64) / 2 + 1
    }

    fn from_runs(runs: Runs, n: usize) -> Ranks {
        if runs.0.len() > Ranks::max_runs(n) {
            Ranks::Bits(runs.to_bits(n))
        } else {
            Ranks::Runs(runs)
        }
    }

    fn union(&self, other: &Ranks, n: usize) -> Ranks {
        // Start from the bits, if either is bits: one copy, then an OR.
        let (mut out, other) = match (self, other) {
            (Ranks::Runs(_), Ranks::Bits(_)) => (other.clone(), self),
            _ => (self.clone(), other),
        };
        out.union_with(other, n);
        out
    }

    /// `self |= other`, in place once `self` is bits.
    fn union_with(&mut self, other: &Ranks, n: usize) {
        if let (Ranks::Runs(x), Ranks::Runs(y)) = (&*self, other) {
            *self = Ranks::from_runs(x.union(y), n);
            return;
        }
        if let Ranks::Runs(r) = self {
            *self = Ranks::Bits(r.to_bits(n));
        }
        let Ranks::Bits(b) = self else {
            unreachable!("made bits above")
        };
        match other {
            Ranks::Bits(o) => b.or(o),
            Ranks::Runs(r) => r.0.iter().for_each(|&(lo, hi)| b.set_range(lo, hi)),
        }
    }

    /// Calls `f` on each member of `pending` in exactly one of `x` and `y`.
    fn for_each_in_xor(x: &Ranks, y: &Ranks, pending: &Bits, n: usize, mut f: impl FnMut(usize)) {
        if let (Ranks::Runs(x), Ranks::Runs(y)) = (x, y) {
            for &(lo, hi) in &x.combine(y, |p, q| p != q).0 {
                pending.for_each_in(lo, hi, &mut f);
            }
            return;
        }
        fn as_bits(r: &Ranks, n: usize) -> std::borrow::Cow<'_, Bits> {
            match r {
                Ranks::Bits(b) => std::borrow::Cow::Borrowed(b),
                Ranks::Runs(r) => std::borrow::Cow::Owned(r.to_bits(n)),
            }
        }
        let (x, y) = (as_bits(x, n), as_bits(y, n));
        for (w, ((a, b), p)) in x.0.iter().zip(&y.0).zip(&pending.0).enumerate() {
            for_each_bit(w, (a ^ b) & p, &mut f);
        }
    }
}

/// Calls `f` on the index of each bit set in `word`, the `w`-th word.
fn for_each_bit(w: usize, mut word: u64, f: &mut impl FnMut(usize)) {
    while word != 0 {
        f(w * 64 + word.trailing_zeros() as usize);
        word &= word - 1;
    }
}

/// Ranks as sorted, disjoint, non-adjacent half-open runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Runs(Vec<(u32, u32)>);

impl Runs {
    /// The set covered by `runs` (any order, may overlap); sorts `runs`.
    fn from_runs(runs: &mut [(u32, u32)]) -> Runs {
        runs.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::new();
        for &(lo, hi) in runs.iter() {
            match out.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        out.shrink_to_fit();
        Runs(out)
    }

    fn to_bits(&self, n: usize) -> Bits {
        let mut b = Bits::zeros(n);
        for &(lo, hi) in &self.0 {
            b.set_range(lo, hi);
        }
        b
    }

    fn union(&self, other: &Runs) -> Runs {
        self.combine(other, |x, y| x || y)
    }

    /// The ranks where `keep(in self, in other)` holds, in one sweep over both.
    fn combine(&self, other: &Runs, keep: impl Fn(bool, bool) -> bool) -> Runs {
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j) = (0, 0);
        let mut out: Vec<(u32, u32)> = Vec::new();
        // Sweep over boundaries: `at` is where the current segment starts.
        let mut at = match (a.first(), b.first()) {
            (Some(x), Some(y)) => x.0.min(y.0),
            (Some(x), None) => x.0,
            (None, Some(y)) => y.0,
            (None, None) => return Runs::default(),
        };
        loop {
            while i < a.len() && a[i].1 <= at {
                i += 1;
            }
            while j < b.len() && b[j].1 <= at {
                j += 1;
            }
            if i == a.len() && j == b.len() {
                break;
            }
            let in_a = i < a.len() && a[i].0 <= at;
            let in_b = j < b.len() && b[j].0 <= at;
            // The segment lasts until the next boundary of either set.
            let edge = |runs: &[(u32, u32)], k: usize, inside: bool| match (runs.get(k), inside) {
                (Some(r), true) => r.1,
                (Some(r), false) => r.0,
                (None, _) => u32::MAX,
            };
            let end = edge(a, i, in_a).min(edge(b, j, in_b));
            if keep(in_a, in_b) {
                match out.last_mut() {
                    Some(last) if last.1 == at => last.1 = end,
                    _ => out.push((at, end)),
                }
            }
            at = end;
        }
        Runs(out)
    }

    /// The runs of `0..n` not in the set.
    fn gaps(&self, n: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let starts = std::iter::once(0).chain(self.0.iter().map(|r| r.1));
        let ends = self.0.iter().map(|r| r.0).chain(std::iter::once(n));
        starts.zip(ends).filter(|(lo, hi)| lo < hi)
    }
}

/// A fixed-size set of ranks, one bit each.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    fn zeros(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn ones(n: usize) -> Bits {
        let mut b = Bits::zeros(n);
        b.set_range(0, n as u32);
        b
    }
    fn get(&self, r: u32) -> bool {
        self.0[r as usize / 64] >> (r % 64) & 1 == 1
    }
    fn clear(&mut self, r: u32) {
        self.0[r as usize / 64] &= !(1 << (r % 64));
    }
    fn or(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    fn set_range(&mut self, lo: u32, hi: u32) {
        for (w, mask) in word_masks(lo, hi) {
            self.0[w] |= mask;
        }
    }
    /// Calls `f` on each member in `lo..hi`, a word at a time.
    fn for_each_in(&self, lo: u32, hi: u32, mut f: impl FnMut(usize)) {
        for (w, mask) in word_masks(lo, hi) {
            for_each_bit(w, self.0[w] & mask, &mut f);
        }
    }
}

/// The words that bits `lo..hi` fall in, each with the mask of those bits.
fn word_masks(lo: u32, hi: u32) -> impl Iterator<Item = (usize, u64)> {
    let (lo, hi) = (lo as usize, hi as usize);
    (lo / 64..hi.div_ceil(64)).map(move |w| {
        let mut mask = !0u64;
        if w == lo / 64 {
            mask &= !0u64 << (lo % 64);
        }
        if (w + 1) * 64 > hi {
            mask &= (1u64 << (hi % 64)) - 1;
        }
        (w, mask)
    })
}

/// Range minimum over a fixed list of values, with values cleared to "none".
struct MinTree {
    size: usize,
    tree: Vec<u32>,
}

impl MinTree {
    fn new(values: impl ExactSizeIterator<Item = u32>) -> MinTree {
        let size = values.len().next_power_of_two();
        let mut tree = vec![u32::MAX; 2 * size];
        for (i, v) in values.enumerate() {
            tree[size + i] = v;
        }
        for i in (1..size).rev() {
            tree[i] = tree[2 * i].min(tree[2 * i + 1]);
        }
        MinTree { size, tree }
    }

    fn clear(&mut self, pos: usize) {
        let mut i = self.size + pos;
        self.tree[i] = u32::MAX;
        while i > 1 {
            i /= 2;
            self.tree[i] = self.tree[2 * i].min(self.tree[2 * i + 1]);
        }
    }

    /// The least value at positions `lo..hi`, if any is set.
    fn min(&self, lo: usize, hi: usize) -> Option<u32> {
        let (mut l, mut r) = (lo + self.size, hi + self.size);
        let mut best = u32::MAX;
        while l < r {
            if l & 1 == 1 {
                best = best.min(self.tree[l]);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                best = best.min(self.tree[r]);
            }
            l /= 2;
            r /= 2;
        }
        (best != u32::MAX).then_some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(bits: &[bool]) -> Runs {
        let mut runs: Vec<(u32, u32)> = (0..bits.len() as u32)
            .filter(|&i| bits[i as usize])
            .map(|i| (i, i + 1))
            .collect();
        Runs::from_runs(&mut runs)
    }

    #[test]
    fn ranks_agree_with_bit_sets() {
        // Every pair of subsets of 0..8: union, xor and gaps as bits say.
        for x in 0u32..256 {
            for y in (0u32..256).step_by(7) {
                let bx: Vec<bool> = (0..8).map(|i| x >> i & 1 == 1).collect();
                let by: Vec<bool> = (0..8).map(|i| y >> i & 1 == 1).collect();
                let (a, b) = (set(&bx), set(&by));
                let or: Vec<bool> = (0..8).map(|i| bx[i] || by[i]).collect();
                let xor: Vec<bool> = (0..8).map(|i| bx[i] != by[i]).collect();
                assert_eq!(a.union(&b), set(&or), "{x:08b} | {y:08b}");
                assert_eq!(a.combine(&b, |p, q| p != q), set(&xor), "{x:08b} ^ {y:08b}");
                let not: Vec<bool> = bx.iter().map(|b| !b).collect();
                let mut gaps: Vec<(u32, u32)> = a.gaps(8).collect();
                assert_eq!(Runs::from_runs(&mut gaps), set(&not), "!{x:08b}");
            }
        }
    }

    #[test]
    fn bits_visit_exactly_their_members_in_a_range() {
        for n in [1usize, 63, 64, 65, 130, 200] {
            let mut b = Bits::ones(n);
            for r in (0..n as u32).step_by(3) {
                b.clear(r);
            }
            for lo in 0..n as u32 {
                for hi in (lo..=n as u32).step_by(17).chain([n as u32]) {
                    let mut seen = Vec::new();
                    b.for_each_in(lo, hi, |x| seen.push(x));
                    let want: Vec<usize> =
                        (lo as usize..hi as usize).filter(|x| x % 3 != 0).collect();
                    assert_eq!(seen, want, "n {n} {lo}..{hi}");
                }
            }
        }
    }

    #[test]
    fn min_tree_finds_the_least_value_left_in_a_range() {
        let values = [5u32, 3, 9, 1, 7, 2];
        let mut t = MinTree::new(values.iter().copied());
        assert_eq!(t.min(0, 6), Some(1));
        assert_eq!(t.min(0, 3), Some(3));
        assert_eq!(t.min(4, 4), None);
        t.clear(3);
        assert_eq!(t.min(0, 6), Some(2));
        t.clear(5);
        t.clear(1);
        assert_eq!(t.min(1, 6), Some(7));
    }
}
