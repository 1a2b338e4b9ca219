//! Feeds arbitrary bytes to the graph compiler. It must never panic: every
//! input is either a graph or a list of located diagnostics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match mgmt_core::compile("fuzz.yaml", text) {
        Ok(graph) => {
            // Whatever compiled must be internally consistent and printable.
            let _ = graph.to_json();
            let _ = graph.to_dot();
            // Grouping keeps every resource, in exactly one vertex.
            let mut seen = vec![0u8; graph.resources.len()];
            for v in &graph.vertices {
                for &m in &v.members {
                    seen[m] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1));
            assert!(mgmt_core::algo::find_cycle(graph.vertices.len(), graph.vertex_edges().iter().map(|e| (e.from, e.to))).is_none());
        }
        Err(e) => assert!(!e.diagnostics.is_empty()),
    }
});
