//! Core micro-benchmarks: `cargo bench -p mgmt-core`.
//!
//! - compiling 10 000-resource YAML graphs (parse, validate, AutoEdges, AutoGroup);
//! - AutoEdges + AutoGroup alone on 5 000-vertex graphs of several shapes;
//! - engine scheduling steps on a 10 000-vertex graph.
//!
//! Graphs come from a fixed-seed generator, so runs are comparable.

use mgmt_core::engine::{Engine, EngineConfig, Input, Output};
use mgmt_core::graph::{Graph, ResEdge, Vertex};
use mgmt_core::resource::{FileParams, FileState, Kind, Meta, Params, Resource, ResourceId};
use mgmt_core::{Millis, autoedge, autogroup, compile};

fn main() {
    print_peak_heap_100k();
    divan::main();
}

/// Counts the heap in use and its high-water mark, for the 100 000-resource
/// compiles (memory targets: ARCHITECTURE, bench/README.md).
struct PeakAlloc;

static IN_USE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
static PEAK: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
/// Counting is on only while peaks are measured, so timings pay nothing.
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Adds `delta` bytes to the heap in use, while counting.
fn count(delta: isize) {
    use std::sync::atomic::Ordering::Relaxed;
    if COUNTING.load(Relaxed) {
        let now = IN_USE.fetch_add(delta, Relaxed) + delta;
        PEAK.fetch_max(now, Relaxed);
    }
}

unsafe impl std::alloc::GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        count(-(layout.size() as isize));
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        count(new as isize - layout.size() as isize);
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

/// One compile of each 100 000-resource shape: its peak heap beyond the
/// YAML text (target: under 200 MB).
fn print_peak_heap_100k() {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, text) in [
        ("chain", chain_yaml(100_000)),
        ("fan", fan_yaml(100_000)),
        ("files in 4 dirs", files_in_dirs_yaml(100_000, 4)),
    ] {
        IN_USE.store(0, Relaxed);
        PEAK.store(0, Relaxed);
        COUNTING.store(true, Relaxed);
        let g = compile("bench.yaml", &text).unwrap();
        COUNTING.store(false, Relaxed);
        let peak = PEAK.load(Relaxed);
        eprintln!(
            "peak heap, compile 100 000 resources ({name}): {:.1} MB ({} vertices)",
            peak as f64 / 1e6,
            g.vertices.len()
        );
    }
}

/// `n` noops in one chain (`n - 1` edges): nothing can group.
fn chain_yaml(n: usize) -> String {
    noops_after_yaml(n, |i| i - 1)
}

/// One noop, then `n - 1` noops after it: the leaves form one group.
fn fan_yaml(n: usize) -> String {
    noops_after_yaml(n, |_| 0)
}

/// `n` noops; each but the first comes after noop `before(i)`.
fn noops_after_yaml(n: usize, before: impl Fn(usize) -> usize) -> String {
    let mut out = String::from("graph: bench\nresources:\n  noop:\n");
    for i in 0..n {
        out += &format!("  - name: n{i:06}\n");
    }
    out += "edges:\n";
    for i in 1..n {
        out += &format!(
            "- {{from: {{kind: noop, name: n{:06}}}, to: {{kind: noop, name: n{i:06}}}}}\n",
            before(i)
        );
    }
    out
}

/// A root directory, `dirs` directories in it and files spread over them:
/// autoedges file -> directory -> root, one group per directory.
fn files_in_dirs_yaml(n: usize, dirs: usize) -> String {
    let mut out = String::from("graph: bench\nresources:\n  file:\n  - name: /srv/mgmt-bench/\n");
    for d in 0..dirs {
        out += &format!("  - name: /srv/mgmt-bench/d{d:03}/\n");
    }
    for i in 0..n - dirs - 1 {
        out += &format!(
            "  - {{name: /srv/mgmt-bench/d{:03}/f{i:06}, content: \"x\\n\"}}\n",
            i % dirs
        );
    }
    out
}

/// xorshift64, fixed seed: the same graphs every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `n` noops with about `n` random forward edges (a sparse random DAG). Edges
/// are unnamed to stay under the YAML parser's node budget (250 000 nodes).
fn noops_yaml(n: usize) -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::from("graph: bench\nresources:\n  noop:\n");
    for i in 0..n {
        out += &format!("  - name: n{i:05}\n");
    }
    out += "edges:\n";
    for (a, b) in random_dag_edges(&mut rng, n, 1) {
        out += &format!(
            "- {{from: {{kind: noop, name: n{a:05}}}, to: {{kind: noop, name: n{b:05}}}}}\n"
        );
    }
    out
}

/// About `per_vertex * n` edges `a -> b` with `a < b`, `b` within 100 of `a`
/// or anywhere after it, half each: local structure plus long jumps.
fn random_dag_edges(rng: &mut Rng, n: usize, per_vertex: usize) -> Vec<(usize, usize)> {
    let mut edges = Vec::new();
    for a in 0..n.saturating_sub(1) {
        for k in 0..per_vertex {
            let span = if k % 2 == 0 {
                100.min(n - a - 1)
            } else {
                n - a - 1
            };
            let b = a + 1 + rng.below(span);
            edges.push((a, b));
        }
    }
    edges.sort_unstable();
    edges.dedup();
    edges
}

fn graph(resources: Vec<Resource>, edges: &[(usize, usize)]) -> Graph {
    let mut resources = resources;
    resources.sort_by(|a, b| a.id.cmp(&b.id));
    Graph {
        name: "bench".into(),
        comment: None,
        hostname: None,
        vertices: (0..resources.len())
            .map(|i| Vertex { members: vec![i] })
            .collect(),
        resources,
        exported: Vec::new(),
        edges: edges
            .iter()
            .map(|&(from, to)| ResEdge {
                from,
                to,
                name: format!("{from}-{to}"),
                notify: false,
                auto: false,
            })
            .collect(),
        collect: Vec::new(),
        notes: Vec::new(),
        warnings: Vec::new(),
    }
}

fn noop(name: String) -> Resource {
    Resource {
        id: ResourceId::new(Kind::Noop, name),
        meta: Meta::default(),
        params: Params::Noop { comment: None },
        exported: false,
    }
}

fn file(path: String) -> Resource {
    Resource {
        id: ResourceId::new(Kind::File, path.clone()),
        meta: Meta::default(),
        params: Params::File(FileParams {
            path,
            content: None,
            source: None,
            recurse: false,
            force: false,
            state: FileState::Exists,
            mode: None,
            owner: None,
            group: None,
        }),
        exported: false,
    }
}

const N: usize = 5_000;

fn noops(n: usize) -> Vec<Resource> {
    (0..n).map(|i| noop(format!("n{i:05}"))).collect()
}

/// A three-level tree: 10 dirs, 100 subdirs, the rest files.
fn file_tree(n: usize) -> Vec<Resource> {
    let mut out = vec![file("/srv/".into())];
    for a in 0..10 {
        out.push(file(format!("/srv/{a}/")));
        for b in 0..10 {
            out.push(file(format!("/srv/{a}/{b}/")));
        }
    }
    let mut i = 0;
    while out.len() < n {
        out.push(file(format!("/srv/{}/{}/f{i:05}", i % 10, (i / 10) % 10)));
        i += 1;
    }
    out
}

#[divan::bench(sample_count = 10)]
fn compile_10k_files(bencher: divan::Bencher) {
    let text = files_in_dirs_yaml(10_000, 100); // 9 899 files in 100 dirs
    bencher.bench(|| compile("bench.yaml", divan::black_box(&text)).unwrap());
}

/// Compile + AutoEdges + AutoGroup of 100 000 resources (target: under 1 s).
#[divan::bench(sample_count = 3)]
fn compile_100k_noop_chain(bencher: divan::Bencher) {
    let text = chain_yaml(100_000);
    bencher.bench(|| compile("bench.yaml", divan::black_box(&text)).unwrap());
}

#[divan::bench(sample_count = 3)]
fn compile_100k_noop_fan(bencher: divan::Bencher) {
    let text = fan_yaml(100_000);
    bencher.bench(|| compile("bench.yaml", divan::black_box(&text)).unwrap());
}

#[divan::bench(sample_count = 3)]
fn compile_100k_files_in_4_dirs(bencher: divan::Bencher) {
    let text = files_in_dirs_yaml(100_000, 4);
    bencher.bench(|| compile("bench.yaml", divan::black_box(&text)).unwrap());
}

#[divan::bench(sample_count = 10)]
fn compile_10k_noops_random_dag(bencher: divan::Bencher) {
    let text = noops_yaml(10_000);
    bencher.bench(|| compile("bench.yaml", divan::black_box(&text)).unwrap());
}

/// AutoEdges + AutoGroup on the 5 000-vertex shapes below.
fn passes(bencher: divan::Bencher, g: Graph) {
    bencher
        .with_inputs(|| g.clone())
        .bench_local_values(|mut g| {
            autoedge::add_auto_edges(&mut g, &Default::default());
            autogroup::autogroup(&mut g);
            g
        });
}

#[divan::bench(sample_count = 10)]
fn passes_5k_noops_random_dag(bencher: divan::Bencher) {
    let edges = random_dag_edges(&mut Rng(7), N, 2);
    passes(bencher, graph(noops(N), &edges));
}

#[divan::bench(sample_count = 10)]
fn passes_5k_noops_chain(bencher: divan::Bencher) {
    let edges: Vec<_> = (1..N).map(|i| (i - 1, i)).collect();
    passes(bencher, graph(noops(N), &edges));
}

#[divan::bench(sample_count = 10)]
fn passes_5k_noops_no_edges(bencher: divan::Bencher) {
    passes(bencher, graph(noops(N), &[]));
}

#[divan::bench(sample_count = 10)]
fn passes_5k_noops_layers_of_50(bencher: divan::Bencher) {
    // 100 layers of 50; each vertex depends on two of the previous layer.
    let mut rng = Rng(11);
    let mut edges = Vec::new();
    for v in 50..N {
        let layer = v / 50;
        for _ in 0..2 {
            edges.push(((layer - 1) * 50 + rng.below(50), v));
        }
    }
    edges.sort_unstable();
    edges.dedup();
    passes(bencher, graph(noops(N), &edges));
}

#[divan::bench(sample_count = 10)]
fn passes_5k_file_tree(bencher: divan::Bencher) {
    passes(bencher, graph(file_tree(N), &[]));
}

/// A 10 000-vertex random DAG (about 10 000 edges), ungrouped.
fn engine_graph() -> Graph {
    let n = 10_000;
    let edges = random_dag_edges(&mut Rng(13), n, 1);
    graph(noops(n), &edges)
}

/// Feeds `input`, then completes every CheckApply it leads to (unchanged,
/// successful) until nothing runs. Returns how many ran.
fn run_to_quiet(e: &mut Engine, now: u64, input: Input) -> usize {
    let mut pending = vec![];
    e.handle(Millis(now), input);
    let mut ran = 0;
    loop {
        while let Some(o) = e.poll_output() {
            if let Output::CheckApply { vertex, .. } = o {
                pending.push(vertex);
            }
        }
        let Some(v) = pending.pop() else {
            return ran;
        };
        ran += 1;
        e.handle(
            Millis(now),
            Input::CheckApplyDone {
                vertex: v,
                result: Ok(false),
            },
        );
    }
}

fn converged_engine(g: &Graph) -> Engine {
    let mut e = Engine::new(g, EngineConfig::default());
    let ran = run_to_quiet(&mut e, 0, Input::Start);
    assert_eq!(ran, g.vertices.len());
    e
}

/// One scheduling step on a converged 10 000-vertex graph: a watch event on
/// one vertex, its CheckApply out, its (unchanged) result in. This is the
/// engine's share of one drift repair; it must not grow with the graph.
#[divan::bench(sample_count = 20)]
fn engine_step_10k_watch_event(bencher: divan::Bencher) {
    let g = engine_graph();
    let mut e = converged_engine(&g);
    let n = g.vertices.len();
    let mut k = 0usize;
    bencher.bench_local(|| {
        k = (k + 7919) % n;
        let ran = run_to_quiet(&mut e, 1, Input::WatchEvent(divan::black_box(k)));
        assert_eq!(ran, 1);
    });
}

/// Start to converged on the 10 000-vertex graph: every vertex scheduled once
/// in dependency order (10 000 CheckApply outputs and results).
#[divan::bench(sample_count = 10)]
fn engine_start_to_converged_10k(bencher: divan::Bencher) {
    let g = engine_graph();
    bencher
        .with_inputs(|| Engine::new(&g, EngineConfig::default()))
        .bench_local_values(|mut e| {
            run_to_quiet(&mut e, 0, Input::Start);
            e
        });
}
