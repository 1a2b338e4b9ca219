//! AutoEdges: dependencies the compiler adds so users need not write them.
//!
//! Each resource offers identities ([`uids`]: a file offers its path) and may
//! ask for edges through an [`AutoEdge`] iterator ([`auto_edge`]). The pass
//! ([`add_auto_edges`]) runs the iterator's `next()`/`test()` protocol from the
//! original mgmt: `next()` proposes a batch of [`Want`]s in order of preference,
//! the pass adds an edge for every managed resource that offers a wanted UID and
//! feeds back which proposals matched, and `test()` says whether to keep looking.
//! A file proposes its ancestors one at a time, nearest first, and stops at the
//! first match, so it depends on its *nearest* managed ancestor only.
//!
//! A svc offers `Uid::Svc` and proposes its unit file, `/etc/systemd/system/
//! <n>.service` first, then the packaged ones under `/usr/lib/systemd/system/`
//! and `/lib/systemd/system/` (file -> svc). A pkg proposes, with
//! [`Order::Before`] (the package comes before them), the services whose unit
//! files it ships and, for every path it ships, that path or its nearest
//! managed ancestor. What a package ships is a fact the compiler is given
//! ([`PackageFiles`], which io reads from the package manager): a package not
//! in it gets no edges and a note, never an error.
//!
//! Rules, chosen so the result is predictable:
//! - `meta: {autoedge: false}` makes a resource invisible to AutoEdges: it
//!   proposes nothing and matches nobody's proposal, so no automatic edge starts
//!   or ends at it. A file under such a directory falls through to the next
//!   managed ancestor (which must exist before the file just the same).
//! - An edge that duplicates an existing one, or that would close a cycle, is
//!   not added; a note says why. The proposal still counts as matched: the file
//!   found its nearest ancestor and does not go looking for a farther one.
//! - Resources are visited in `Kind[name]` order, so the edges and the notes
//!   are the same whatever the order of the YAML.
//!
//! Cycle checks are incremental: the pass keeps a topological order of the
//! resources and updates it per added edge (Pearce and Kelly's dynamic
//! topological sort), so an edge that agrees with the order costs O(1) and one
//! that does not costs only the region of the order it disturbs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::graph::{Graph, Note, ResEdge, ResIdx};
use crate::resource::{MountState, Params, Presence, Principal, Resource, ResourceId};

/// An identity a resource offers, or asks to be ordered against.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Uid {
    /// A filesystem path as a file resource spells it: a directory ends in `/`.
    Path(String),
    /// A systemd service by its name without `.service`.
    Svc(String),
    /// A local user, by name.
    User(String),
    /// A local group, by name.
    Group(String),
}

/// What each package ships (absolute paths, as the package manager lists
/// them: directories without a trailing `/`), for the packages whose list is
/// known.
pub type PackageFiles = BTreeMap<String, Vec<String>>;

/// Where systemd looks for a service's unit file, most specific first.
pub const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system/",
    "/usr/lib/systemd/system/",
    "/lib/systemd/system/",
];

/// Which way a wanted edge points, seen from the resource that proposes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Order {
    /// The proposer depends on the match: `match -> proposer` (file after its directory).
    After,
    /// The match depends on the proposer: `proposer -> match` (pkg before its files).
    Before,
}

/// One proposal: an edge to whichever managed resource offers `uid`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Want {
    pub uid: Uid,
    pub order: Order,
}

/// The `Next()`/`Test()` protocol of the original AutoEdges.
pub trait AutoEdge {
    /// The next batch of proposals, most preferred first; `None` when there are
    /// no more. Called once, then again after each `test` that returned true.
    fn next(&mut self) -> Option<Vec<Want>>;
    /// Told, per proposal of the last batch, whether a managed resource offered
    /// that UID. Returns true to be asked `next` again.
    fn test(&mut self, matched: &[bool]) -> bool;
}

/// The identities a resource offers to other resources' proposals.
pub fn uids(r: &Resource) -> Vec<Uid> {
    match &r.params {
        Params::File(f) => vec![Uid::Path(f.path.clone())],
        // What is below a mount point comes after the mount.
        Params::Mount(m) if m.state == MountState::Mounted => {
            vec![Uid::Path(format!("{}/", m.path))]
        }
        Params::Svc(s) if !s.session => vec![Uid::Svc(s.name.clone())],
        // Only an account that will be there is something to come after.
        Params::User(u) if u.state == Presence::Present => vec![Uid::User(u.name.clone())],
        Params::Group(g) if g.state == Presence::Present => vec![Uid::Group(g.name.clone())],
        Params::Noop { .. }
        | Params::Exec(_)
        | Params::Pkg(_)
        | Params::Svc(_)
        | Params::Timer { .. }
        | Params::Msg(_)
        | Params::User(_)
        | Params::Group(_)
        | Params::Line(_)
        | Params::Sysctl(_)
        | Params::Mount(_)
        | Params::Hostname { .. } => Vec::new(),
    }
}

/// The proposal iterator of a resource, if its kind wants automatic edges.
/// Does not look at `meta.autoedge`; the pass does. `None` for a package whose
/// file list is not in `packages`.
pub fn auto_edge(r: &Resource, packages: &PackageFiles) -> Option<Box<dyn AutoEdge>> {
    match &r.params {
        // A file comes after its owner and group (chown needs them), and
        // after its nearest managed ancestor.
        Params::File(f) => {
            let accounts = [
                f.owner.as_ref().and_then(|o| named(o, Uid::User)),
                f.group.as_ref().and_then(|g| named(g, Uid::Group)),
            ];
            Some(Box::new(Chain::new(
                Fixed::after(accounts.into_iter().flatten()),
                FileAncestors::new(&f.path),
                false,
            )))
        }
        // A user comes after its primary and supplementary groups.
        Params::User(u) if u.state == Presence::Present => {
            let primary = u.group.as_ref().and_then(|g| named(g, Uid::Group));
            let supplementary = u.groups.iter().flatten().map(|g| Uid::Group(g.clone()));
            Some(Box::new(Fixed::after(
                primary.into_iter().chain(supplementary),
            )))
        }
        // A line comes after the file resource of its path, or else after its
        // nearest managed ancestor directory.
        Params::Line(l) => Some(Box::new(Chain::new(
            Fixed::after([Uid::Path(l.path.clone())]),
            FileAncestors::new(&l.path),
            true,
        ))),
        // A mount comes after its mount point's directory (or else the
        // nearest managed ancestor, which may be another mount).
        Params::Mount(m) => Some(Box::new(Chain::new(
            Fixed::after([Uid::Path(format!("{}/", m.path))]),
            FileAncestors::new(&m.path),
            true,
        ))),
        // A persisted sysctl comes after the directory of its file.
        Params::Sysctl(s) => s
            .persist
            .as_ref()
            .map(|f| Box::new(FileAncestors::new(f)) as Box<dyn AutoEdge>),
        // A user's service has its unit files elsewhere; packages ship system units.
        Params::Svc(s) if !s.session => Some(Box::new(UnitFiles::new(&s.name))),
        Params::Pkg(p) => packages
            .get(&p.name)
            .map(|files| Box::new(PackageShips::new(files)) as Box<dyn AutoEdge>),
        Params::Noop { .. }
        | Params::Exec(_)
        | Params::Svc(_)
        | Params::Timer { .. }
        | Params::Msg(_)
        | Params::User(_)
        | Params::Group(_)
        | Params::Hostname { .. } => None,
    }
}

/// An account named in a parameter, as a UID (an id names no resource).
fn named(p: &Principal, uid: fn(String) -> Uid) -> Option<Uid> {
    match p {
        Principal::Name(n) => Some(uid(n.clone())),
        Principal::Id(_) => None,
    }
}

/// One batch of proposals, all [`Order::After`], each independent of the others.
#[derive(Clone, Debug)]
pub struct Fixed(Option<Vec<Want>>);

impl Fixed {
    pub fn after(uids: impl IntoIterator<Item = Uid>) -> Self {
        let wants: Vec<Want> = uids
            .into_iter()
            .map(|uid| Want {
                uid,
                order: Order::After,
            })
            .collect();
        Fixed((!wants.is_empty()).then_some(wants))
    }
}

impl AutoEdge for Fixed {
    fn next(&mut self) -> Option<Vec<Want>> {
        self.0.take()
    }

    fn test(&mut self, _matched: &[bool]) -> bool {
        false
    }
}

/// `first`'s proposals, then `then`'s; with `stop_on_match`, a match among
/// `first`'s ends it (`then` is the fallback).
pub struct Chain<A, B> {
    first: A,
    then: B,
    in_first: bool,
    stop_on_match: bool,
}

impl<A: AutoEdge, B: AutoEdge> Chain<A, B> {
    pub fn new(first: A, then: B, stop_on_match: bool) -> Self {
        Chain {
            first,
            then,
            in_first: true,
            stop_on_match,
        }
    }
}

impl<A: AutoEdge, B: AutoEdge> AutoEdge for Chain<A, B> {
    fn next(&mut self) -> Option<Vec<Want>> {
        if self.in_first {
            if let Some(batch) = self.first.next() {
                return Some(batch);
            }
            self.in_first = false;
        }
        self.then.next()
    }

    fn test(&mut self, matched: &[bool]) -> bool {
        if !self.in_first {
            return self.then.test(matched);
        }
        if self.stop_on_match && matched.iter().any(|&m| m) {
            return false;
        }
        if !self.first.test(matched) {
            self.in_first = false;
        }
        true
    }
}

/// A service's proposals: its unit file in each of [`UNIT_DIRS`], one per
/// batch, until one matches (the file that defines the unit comes first).
#[derive(Clone, Debug)]
pub struct UnitFiles {
    next: Vec<String>,
}

impl UnitFiles {
    pub fn new(name: &str) -> Self {
        let mut next: Vec<String> = UNIT_DIRS
            .iter()
            .map(|d| format!("{d}{name}.service"))
            .collect();
        next.reverse();
        UnitFiles { next }
    }
}

impl AutoEdge for UnitFiles {
    fn next(&mut self) -> Option<Vec<Want>> {
        let path = self.next.pop()?;
        Some(vec![Want {
            uid: Uid::Path(path),
            order: Order::After,
        }])
    }

    fn test(&mut self, matched: &[bool]) -> bool {
        !matched.iter().any(|&m| m) && !self.next.is_empty()
    }
}

/// A package's proposals, all [`Order::Before`]: first the services whose
/// unit files it ships and every path it ships (as a file and as a
/// directory), then, for each shipped path no managed resource offered, its
/// parent, and so on up: each shipped path ends at its nearest managed
/// ancestor, as a file does. Each batch proposes a UID once.
#[derive(Clone, Debug)]
pub struct PackageShips {
    /// Per shipped path not matched yet: what to propose next (no trailing `/`).
    pending: Vec<String>,
    /// The last batch's UIDs, and for each the pending entries it stood for.
    last: Vec<(Uid, Vec<usize>)>,
    first: bool,
    units: Vec<String>,
}

impl PackageShips {
    pub fn new(files: &[String]) -> Self {
        let mut pending: Vec<String> = files
            .iter()
            .map(|f| f.trim_end_matches('/').to_string())
            .filter(|f| f.starts_with('/') && f.len() > 1)
            .collect();
        pending.sort();
        pending.dedup();
        let units = pending
            .iter()
            .filter_map(|f| {
                let (dir, file) = f.rsplit_once('/')?;
                let unit = file.strip_suffix(".service")?;
                // Templates (`x@.service`) are not a service one can manage.
                (UNIT_DIRS[1..].contains(&format!("{dir}/").as_str())
                    && !unit.ends_with('@')
                    && !unit.is_empty())
                .then(|| unit.to_string())
            })
            .collect();
        PackageShips {
            pending,
            last: Vec::new(),
            first: true,
            units,
        }
    }
}

impl AutoEdge for PackageShips {
    fn next(&mut self) -> Option<Vec<Want>> {
        let mut batch: BTreeMap<Uid, Vec<usize>> = BTreeMap::new();
        if std::mem::take(&mut self.first) {
            for u in &self.units {
                batch.entry(Uid::Svc(u.clone())).or_default();
            }
            for (i, p) in self.pending.iter().enumerate() {
                batch.entry(Uid::Path(p.clone())).or_default().push(i);
                batch.entry(Uid::Path(format!("{p}/"))).or_default().push(i);
            }
        } else {
            for (i, p) in self.pending.iter().enumerate() {
                if p.is_empty() {
                    continue;
                }
                if let Some(cut) = p.rfind('/') {
                    batch
                        .entry(Uid::Path(p[..=cut].to_string()))
                        .or_default()
                        .push(i);
                }
            }
        }
        if batch.is_empty() {
            return None;
        }
        self.last = batch.into_iter().collect();
        Some(
            self.last
                .iter()
                .map(|(uid, _)| Want {
                    uid: uid.clone(),
                    order: Order::Before,
                })
                .collect(),
        )
    }

    fn test(&mut self, matched: &[bool]) -> bool {
        let mut done = vec![false; self.pending.len()];
        for ((_, who), &m) in self.last.iter().zip(matched) {
            if m {
                for &i in who {
                    done[i] = true;
                }
            }
        }
        // What did not match climbs one level; what did, or reached `/`, stops.
        for (p, d) in self.pending.iter_mut().zip(done) {
            match p.rfind('/') {
                Some(cut) if !d && cut > 0 => p.truncate(cut),
                _ => p.clear(),
            }
        }
        self.pending.iter().any(|p| !p.is_empty())
    }
}

/// A file's (or directory's) proposals: its ancestor directories, nearest
/// first, one per batch, until one matches.
#[derive(Clone, Debug)]
pub struct FileAncestors {
    /// The path whose parent is proposed next (no trailing `/`), or `None`
    /// once `/` has been proposed.
    rest: Option<String>,
}

impl FileAncestors {
    pub fn new(path: &str) -> Self {
        let trimmed = path.trim_end_matches('/');
        FileAncestors {
            rest: (!trimmed.is_empty()).then(|| trimmed.to_string()),
        }
    }
}

impl AutoEdge for FileAncestors {
    fn next(&mut self) -> Option<Vec<Want>> {
        let rest = self.rest.take()?;
        let cut = rest.rfind('/')?;
        let parent = &rest[..=cut];
        if cut > 0 {
            self.rest = Some(rest[..cut].to_string());
        }
        Some(vec![Want {
            uid: Uid::Path(parent.to_string()),
            order: Order::After,
        }])
    }

    fn test(&mut self, matched: &[bool]) -> bool {
        !matched.iter().any(|&m| m) && self.rest.is_some()
    }
}

/// Whether a package edge could end anywhere: at a file or a system service
/// that takes part in AutoEdges.
pub fn package_edges_possible(graph: &Graph) -> bool {
    graph.resources.iter().any(|r| {
        r.meta.autoedge
            && uids(r)
                .iter()
                .any(|u| matches!(u, Uid::Path(_) | Uid::Svc(_)))
    })
}

/// Adds the automatic edges of every resource whose `meta.autoedge` is on,
/// with a note per edge added or refused; `packages` says what each package
/// ships. Call on an acyclic graph (after the compiler's cycle check); the
/// graph stays acyclic and `edges` stays sorted.
pub fn add_auto_edges(graph: &mut Graph, packages: &PackageFiles) {
    let n = graph.resources.len();
    // Looked up by hash, not by order: a graph may offer 100 000 paths that
    // share a long prefix, which every comparison of an ordered map rereads.
    let offered: Vec<(Uid, ResIdx)> = graph
        .resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.meta.autoedge)
        .flat_map(|(i, r)| uids(r).into_iter().map(move |uid| (uid, i)))
        .collect();
    let mut offers: HashMap<&Uid, Vec<ResIdx>> = HashMap::with_capacity(offered.len());
    for (uid, i) in &offered {
        offers.entry(uid).or_default().push(*i);
    }
    let Some(mut dag) = DynDag::new(n, graph.edges.iter().map(|e| (e.from, e.to))) else {
        graph.notes.push(Note::Text(
            "AutoEdge: skipped, the graph has a cycle".to_string(),
        ));
        return;
    };
    // Every edge so far, by its ends: the user's (by index) and those added here.
    let mut existing: HashMap<(ResIdx, ResIdx), Existing> = graph
        .edges
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.from, e.to), Existing::Declared(i)))
        .collect();
    let mut added: Vec<ResEdge> = Vec::new();
    let note_unknown_packages = package_edges_possible(graph);
    for r in 0..n {
        if !graph.resources[r].meta.autoedge {
            continue;
        }
        let Some(mut it) = auto_edge(&graph.resources[r], packages) else {
            if note_unknown_packages && matches!(graph.resources[r].params, Params::Pkg(_)) {
                graph.notes.push(Note::Text(format!(
                    "AutoEdge: {}: what the package ships is not known (the package \
                     manager could not list it): no automatic edges",
                    graph.resources[r].id
                )));
            }
            continue;
        };
        while let Some(batch) = it.next() {
            let mut matched = vec![false; batch.len()];
            // A batch may name one resource twice; propose each edge once.
            let mut seen = BTreeSet::new();
            for (k, want) in batch.iter().enumerate() {
                for &m in offers.get(&want.uid).map(Vec::as_slice).unwrap_or(&[]) {
                    if m == r {
                        continue;
                    }
                    matched[k] = true;
                    let (from, to) = match want.order {
                        Order::After => (m, r),
                        Order::Before => (r, m),
                    };
                    if batch.len() > 1 && !seen.insert((from, to)) {
                        continue;
                    }
                    let id = |i: ResIdx| &graph.resources[i].id;
                    let (fid, tid) = (id(from), id(to));
                    if let Some(already) = existing.get(&(from, to)) {
                        let name = match *already {
                            Existing::Declared(i) => &graph.edges[i].name,
                            Existing::Added(i) => &added[i].name,
                        };
                        let text = format!(
                            "AutoEdge: not adding {fid} -> {tid}: already an edge ({name})"
                        );
                        graph.notes.push(Note::Text(text));
                        continue;
                    }
                    match dag.try_add(from, to) {
                        Ok(()) => {
                            graph.notes.push(Note::EdgeAdded { from, to });
                            existing.insert((from, to), Existing::Added(added.len()));
                            added.push(ResEdge {
                                from,
                                to,
                                name: auto_edge_name(fid, tid),
                                notify: false,
                                auto: true,
                            });
                        }
                        Err(path) => {
                            let path: Vec<String> =
                                path.into_iter().map(|i| id(i).to_string()).collect();
                            graph.notes.push(Note::Text(format!(
                                "AutoEdge: not adding {fid} -> {tid}: it would create a cycle \
                                 ({tid} already reaches {fid}: {})",
                                path.join(" -> ")
                            )));
                        }
                    }
                }
            }
            if !it.test(&matched) {
                break;
            }
        }
    }
    graph.edges.extend(added);
    graph.edges.sort();
}

/// Where an edge between two resources came from, while AutoEdges runs.
#[derive(Clone, Copy)]
enum Existing {
    /// The user's: `graph.edges[i]`.
    Declared(usize),
    /// The `i`th added by this pass.
    Added(usize),
}

/// `autoedge:File[/a/]->File[/a/b]`, written once into a string of its size
/// (one per automatic edge: a graph may have 100 000).
fn auto_edge_name(from: &ResourceId, to: &ResourceId) -> String {
    use std::fmt::Write as _;
    let mut name = String::with_capacity(32 + from.name.len() + to.name.len());
    let _ = write!(name, "autoedge:{from}->{to}");
    name
}

/// A DAG that refuses edges closing a cycle, keeping a topological order up to
/// date as edges are added (Pearce & Kelly, "A dynamic topological sort
/// algorithm for directed acyclic graphs", 2006).
struct DynDag {
    succ: Vec<Vec<usize>>,
    pred: Vec<Vec<usize>>,
    /// Position of each node in the current topological order.
    ord: Vec<usize>,
}

impl DynDag {
    /// `None` if the edges have a cycle.
    fn new(n: usize, edges: impl IntoIterator<Item = (usize, usize)> + Clone) -> Option<Self> {
        let order = crate::algo::topo_order(n, edges.clone())?;
        let mut ord = vec![0; n];
        for (pos, &v) in order.iter().enumerate() {
            ord[v] = pos;
        }
        let mut succ = vec![Vec::new(); n];
        let mut pred = vec![Vec::new(); n];
        for (f, t) in edges {
            succ[f].push(t);
            pred[t].push(f);
        }
        Some(DynDag { succ, pred, ord })
    }

    /// Adds `from -> to`, or returns a path `to -> ... -> from` that it would
    /// close into a cycle.
    fn try_add(&mut self, from: usize, to: usize) -> Result<(), Vec<usize>> {
        let (lb, ub) = (self.ord[to], self.ord[from]);
        if lb > ub {
            self.succ[from].push(to);
            self.pred[to].push(from);
            return Ok(());
        }
        // Forward from `to`, within the affected region of the order.
        let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
        let mut fwd = vec![to];
        let mut stack = vec![to];
        parent.insert(to, to);
        while let Some(v) = stack.pop() {
            for &w in &self.succ[v] {
                if w == from {
                    let mut path = vec![from, v];
                    let mut x = v;
                    while x != to {
                        x = parent[&x];
                        path.push(x);
                    }
                    path.reverse();
                    return Err(path);
                }
                if self.ord[w] < ub && !parent.contains_key(&w) {
                    parent.insert(w, v);
                    fwd.push(w);
                    stack.push(w);
                }
            }
        }
        // Backward from `from`, within the region.
        let mut seen: BTreeSet<usize> = BTreeSet::from([from]);
        let mut bwd = vec![from];
        let mut stack = vec![from];
        while let Some(v) = stack.pop() {
            for &w in &self.pred[v] {
                if self.ord[w] > lb && seen.insert(w) {
                    bwd.push(w);
                    stack.push(w);
                }
            }
        }
        // Everything that reaches `from` moves before everything `to` reaches,
        // reusing the same slots of the order.
        bwd.sort_by_key(|&v| self.ord[v]);
        fwd.sort_by_key(|&v| self.ord[v]);
        let mut slots: Vec<usize> = bwd.iter().chain(&fwd).map(|&v| self.ord[v]).collect();
        slots.sort_unstable();
        for (v, slot) in bwd.into_iter().chain(fwd).zip(slots) {
            self.ord[v] = slot;
        }
        self.succ[from].push(to);
        self.pred[to].push(from);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposals(path: &str) -> Vec<String> {
        let mut it = FileAncestors::new(path);
        let mut out = Vec::new();
        while let Some(batch) = it.next() {
            for w in &batch {
                if let Uid::Path(p) = &w.uid {
                    out.push(p.clone());
                }
            }
            if !it.test(&vec![false; batch.len()]) {
                break;
            }
        }
        out
    }

    #[test]
    fn file_proposes_ancestors_nearest_first() {
        assert_eq!(proposals("/a/b/c/f"), ["/a/b/c/", "/a/b/", "/a/", "/"]);
        assert_eq!(proposals("/a/b/"), ["/a/", "/"]);
        assert_eq!(proposals("/f"), ["/"]);
        assert!(proposals("/").is_empty());
    }

    #[test]
    fn file_stops_at_first_match() {
        let mut it = FileAncestors::new("/a/b/c");
        assert!(it.next().is_some());
        assert!(!it.test(&[true]));
    }

    #[test]
    fn dyn_dag_refuses_cycles_and_reorders() {
        // 0 -> 1 -> 2; initial order 0,1,2.
        let mut d = DynDag::new(4, [(0, 1), (1, 2)]).unwrap();
        assert_eq!(d.try_add(2, 0), Err(vec![0, 1, 2]));
        // 3 -> 0 goes against the order (3 is last) and must reorder.
        assert_eq!(d.try_add(3, 0), Ok(()));
        assert!(d.ord[3] < d.ord[0]);
        assert_eq!(d.try_add(2, 3), Err(vec![3, 0, 1, 2]));
        assert_eq!(d.try_add(1, 3).map_err(|p| p.len()), Err(3));
    }
}
