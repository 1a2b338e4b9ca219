//! Properties of AutoEdges + AutoGroup on random acyclic graphs, compiled from
//! YAML twice: once as generated and once with resources and edges shuffled.

use mgmt_core::algo::find_cycle;
use mgmt_core::autogroup::group_class;
use mgmt_core::resource::Params;
use mgmt_core::{Graph, compile};
use proptest::prelude::*;

/// Paths files are drawn from: a small tree, so ancestors are often managed.
const PATHS: &[&str] = &[
    "/t/",
    "/t/a/",
    "/t/a/b/",
    "/t/a/b/c/",
    "/t/a/1",
    "/t/a/2",
    "/t/a/b/3",
    "/t/a/b/c/4",
    "/t/a/b/c/5",
    "/t/a/b/c/6/",
    "/t/a/b/c/6/x",
    "/t/d/",
    "/t/d/6",
    "/t/d/e/7",
    "/t/8",
    "/u/9",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum K {
    Noop,
    File,
    Exec,
}

#[derive(Clone, Debug)]
struct Res {
    kind: K,
    name: String,
    path: String,
    autogroup: bool,
    autoedge: bool,
    retry: u8,
}

#[derive(Clone, Debug)]
struct Spec {
    res: Vec<Res>,
    edges: Vec<(usize, usize)>,
    seed: u64,
}

/// `noops` noops, files on a random subset of [`PATHS`], up to `execs` execs;
/// random metas; up to `edge_factor * n` edges, oriented by random ranks so
/// the user graph is acyclic.
fn spec(
    noops: usize,
    files: bool,
    execs: usize,
    edge_factor: usize,
) -> impl Strategy<Value = Spec> {
    (
        0..=noops,
        prop::collection::vec(any::<bool>(), if files { PATHS.len() } else { 0 }),
        0..=execs,
    )
        .prop_flat_map(move |(n_noop, mask, n_exec)| {
            let mut res = Vec::new();
            for i in 0..n_noop {
                res.push((K::Noop, format!("n{i:02}"), String::new()));
            }
            for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
                res.push((K::File, format!("f{i:02}"), PATHS[i].to_string()));
            }
            for i in 0..n_exec {
                res.push((K::Exec, format!("x{i}"), String::new()));
            }
            let n = res.len();
            (
                Just(res),
                prop::collection::vec((0..8u8, 0..8u8, 0..8u8), n),
                prop::collection::vec((0..n.max(1), 0..n.max(1)), 0..=edge_factor * n),
                prop::collection::vec(any::<u32>(), n),
                any::<u64>(),
            )
        })
        .prop_map(|(res, metas, pairs, ranks, seed)| {
            let res = res
                .into_iter()
                .zip(metas)
                .map(|((kind, name, path), (g, e, r))| Res {
                    kind,
                    name,
                    path,
                    autogroup: g != 0,
                    autoedge: e != 0,
                    retry: u8::from(r == 0),
                })
                .collect();
            let mut edges: Vec<(usize, usize)> = pairs
                .into_iter()
                .filter(|(a, b)| a != b)
                .map(|(a, b)| {
                    if (ranks[a], a) < (ranks[b], b) {
                        (a, b)
                    } else {
                        (b, a)
                    }
                })
                .collect();
            edges.sort();
            edges.dedup();
            Spec { res, edges, seed }
        })
}

fn render(s: &Spec, res_order: &[usize], edge_order: &[usize]) -> String {
    let mut out = String::from("graph: p\nresources:\n");
    for (kind, key) in [(K::Noop, "noop"), (K::File, "file"), (K::Exec, "exec")] {
        let list: Vec<&Res> = res_order
            .iter()
            .map(|&i| &s.res[i])
            .filter(|r| r.kind == kind)
            .collect();
        if list.is_empty() {
            continue;
        }
        out += &format!("  {key}:\n");
        for r in list {
            let meta = format!(
                "meta: {{autogroup: {}, autoedge: {}, retry: {}}}",
                r.autogroup, r.autoedge, r.retry
            );
            out += &match kind {
                K::Noop => format!("  - {{name: {}, {meta}}}\n", r.name),
                K::File => format!("  - {{name: {}, path: \"{}\", {meta}}}\n", r.name, r.path),
                K::Exec => format!("  - {{name: {}, cmd: \"true\", {meta}}}\n", r.name),
            };
        }
    }
    if !s.edges.is_empty() {
        out += "edges:\n";
        let kind = |k: K| match k {
            K::Noop => "noop",
            K::File => "file",
            K::Exec => "exec",
        };
        for &e in edge_order {
            let (a, b) = s.edges[e];
            let (ra, rb) = (&s.res[a], &s.res[b]);
            out += &format!(
                "- {{name: u{a}_{b}, from: {{kind: {}, name: {}}}, to: {{kind: {}, name: {}}}}}\n",
                kind(ra.kind),
                ra.name,
                kind(rb.kind),
                rb.name
            );
        }
    }
    out
}

/// A deterministic shuffle of `0..n` (xorshift; no RNG crate in the core's tests).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn compiled(text: &str) -> Graph {
    match compile("p.yaml", text) {
        Ok(g) => g,
        Err(e) => panic!("generated graph failed to compile:\n{e}\n--- in\n{text}"),
    }
}

/// `reach[a][b]`: a path of one or more edges from `a` to `b`.
fn reachability(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<bool>> {
    let mut adj = vec![Vec::new(); n];
    for &(f, t) in edges {
        adj[f].push(t);
    }
    (0..n)
        .map(|s| {
            let mut seen = vec![false; n];
            let mut stack = adj[s].clone();
            while let Some(v) = stack.pop() {
                if !seen[v] {
                    seen[v] = true;
                    stack.extend(&adj[v]);
                }
            }
            seen
        })
        .collect()
}

fn path_of(g: &Graph, r: usize) -> Option<&str> {
    match &g.resources[r].params {
        Params::File(f) => Some(&f.path),
        _ => None,
    }
}

/// Every property of the issue, on one compiled graph.
fn check(g: &Graph) -> Result<(), TestCaseError> {
    let n = g.resources.len();
    let redges: Vec<(usize, usize)> = g.edges.iter().map(|e| (e.from, e.to)).collect();
    // (f) AutoEdges created no cycle.
    prop_assert!(find_cycle(n, redges.iter().copied()).is_none());
    let reach = reachability(n, &redges);

    // AutoEdges only touch resources with autoedge on, and only join a
    // directory to something under it.
    for e in g.edges.iter().filter(|e| e.auto) {
        prop_assert!(g.resources[e.from].meta.autoedge && g.resources[e.to].meta.autoedge);
        let (dir, child) = (path_of(g, e.from).unwrap(), path_of(g, e.to).unwrap());
        prop_assert!(dir.ends_with('/') && child.starts_with(dir) && child != dir);
    }
    // (g) A file's only autoedge comes from its nearest managed ancestor; it is
    // missing only if a user edge already says so or it would close a cycle.
    for (f, from_f) in reach.iter().enumerate() {
        let Some(fp) = path_of(g, f) else { continue };
        let into: Vec<usize> = g
            .edges
            .iter()
            .filter(|e| e.auto && e.to == f)
            .map(|e| e.from)
            .collect();
        let nearest = (0..n)
            .filter(|&a| g.resources[a].meta.autoedge && g.resources[f].meta.autoedge)
            .filter_map(|a| path_of(g, a).map(|p| (a, p)))
            .filter(|(_, p)| p.ends_with('/') && fp.starts_with(p) && fp != *p)
            .max_by_key(|(_, p)| p.len())
            .map(|(a, _)| a);
        match nearest {
            None => prop_assert!(into.is_empty(), "{fp}: unexpected autoedges {into:?}"),
            Some(a) => {
                prop_assert!(
                    into.is_empty() || into == [a],
                    "{fp}: autoedges from {into:?}"
                );
                if into.is_empty() {
                    let user = g.edges.iter().any(|e| e.from == a && e.to == f);
                    prop_assert!(user || from_f[a], "{fp}: autoedge missing without reason");
                }
            }
        }
    }

    // (d) Every resource in exactly one vertex.
    let mut all: Vec<usize> = g.vertices.iter().flat_map(|v| v.members.clone()).collect();
    all.sort_unstable();
    prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
    let of = g.vertex_of();
    let nv = g.vertices.len();
    let vedges: Vec<(usize, usize)> = g.vertex_edges().iter().map(|e| (e.from, e.to)).collect();
    // (a) The grouped graph is acyclic.
    prop_assert!(find_cycle(nv, vedges.iter().copied()).is_none());
    let vreach = reachability(nv, &vedges);
    for v in &g.vertices {
        let class = group_class(&g.resources[v.head()]);
        for &m in &v.members {
            // Members are compatible; kinds never mix.
            if v.members.len() > 1 {
                prop_assert!(class.is_some());
                prop_assert_eq!(&group_class(&g.resources[m]), &class);
            }
            // (b) No two members of a group had a path between them.
            for &o in &v.members {
                prop_assert!(!reach[m][o], "grouped {m} and {o} with a path between them");
            }
        }
    }
    // (c) Every path between resources survives between their vertices.
    for a in 0..n {
        for b in 0..n {
            if reach[a][b] {
                prop_assert!(of[a] != of[b] && vreach[of[a]][of[b]]);
            }
        }
    }
    // Maximality: two compatible vertices left apart have a path between them.
    let classes: Vec<_> = g
        .vertices
        .iter()
        .map(|v| group_class(&g.resources[v.head()]))
        .collect();
    for u in 0..nv {
        for v in u + 1..nv {
            if classes[u].is_some() && classes[u] == classes[v] {
                prop_assert!(
                    vreach[u][v] || vreach[v][u],
                    "{} and {} could still group",
                    g.vertex_id(u),
                    g.vertex_id(v)
                );
            }
        }
    }
    Ok(())
}

/// The grouping the greedy rule defines, computed the slow, obvious way: for
/// each vertex in order, join each later compatible vertex still alone unless
/// a path joins them in the graph grouped so far (searched afresh each time).
fn reference_grouping(g: &Graph) -> Vec<Vec<usize>> {
    let n = g.resources.len();
    let class: Vec<_> = (0..n).map(|r| group_class(&g.resources[r])).collect();
    let mut group_of: Vec<usize> = (0..n).collect();
    let mut members: Vec<Vec<usize>> = (0..n).map(|r| vec![r]).collect();
    let path = |group_of: &[usize], from: usize, to: usize| {
        let mut adj = vec![Vec::new(); n];
        for e in &g.edges {
            adj[group_of[e.from]].push(group_of[e.to]);
        }
        let mut seen = vec![false; n];
        let mut stack = adj[from].clone();
        while let Some(v) = stack.pop() {
            if v == to {
                return true;
            }
            if !std::mem::replace(&mut seen[v], true) {
                stack.extend(&adj[v]);
            }
        }
        false
    };
    for a in 0..n {
        if group_of[a] != a || class[a].is_none() {
            continue;
        }
        for b in a + 1..n {
            if group_of[b] != b || members[b].len() > 1 || class[b] != class[a] {
                continue;
            }
            if !path(&group_of, a, b) && !path(&group_of, b, a) {
                group_of[b] = a;
                let moved = std::mem::take(&mut members[b]);
                members[a].extend(moved);
            }
        }
    }
    members.into_iter().filter(|m| !m.is_empty()).collect()
}

fn run(s: &Spec) -> Result<(), TestCaseError> {
    let res_order: Vec<usize> = (0..s.res.len()).collect();
    let edge_order: Vec<usize> = (0..s.edges.len()).collect();
    let text = render(s, &res_order, &edge_order);
    let g = compiled(&text);
    check(&g)?;
    // Exactly the greedy rule's grouping, however the sets are represented.
    let ungrouped = mgmt_core::compile::compile_with(
        "p.yaml",
        &text,
        &mgmt_core::compile::CompileOptions {
            autogroup: false,
            ..Default::default()
        },
    )
    .unwrap();
    let want = reference_grouping(&ungrouped);
    let got: Vec<Vec<usize>> = g.vertices.iter().map(|v| v.members.clone()).collect();
    prop_assert_eq!(got, want);
    // Maximal: grouping the grouped graph again joins nothing.
    let mut again = g.clone();
    mgmt_core::autogroup::autogroup(&mut again);
    prop_assert_eq!(&again.vertices, &g.vertices);
    // (e) Deterministic whatever the input order.
    let text2 = render(
        s,
        &shuffled(s.res.len(), s.seed),
        &shuffled(s.edges.len(), s.seed.rotate_left(17)),
    );
    let g2 = compiled(&text2);
    prop_assert_eq!(g.to_json(), g2.to_json());
    prop_assert_eq!(&g.vertices, &g2.vertices);
    prop_assert_eq!(&g.edges, &g2.edges);
    prop_assert_eq!(&g.notes, &g2.notes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Noop DAGs up to 50 vertices: grouping alone, sparse to dense.
    #[test]
    fn grouping_properties_on_noop_dags(s in spec(50, false, 0, 3)) {
        run(&s)?;
    }

    /// Files in a small tree with noops and execs: AutoEdges then grouping.
    #[test]
    fn autoedge_and_grouping_properties_on_mixed_graphs(s in spec(20, true, 4, 2)) {
        run(&s)?;
    }
}

#[test]
fn shuffle_is_a_permutation() {
    let mut v = shuffled(10, 42);
    v.sort_unstable();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
}
