//! Feeds arbitrary bytes to the template render and the graph compiler, as
//! every agent does with a deploy. Neither may panic or run unbounded: every
//! input is either a graph or a located error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let facts = mgmt_core::facts::Facts {
        name: "h1".into(),
        os: "debian".into(),
        os_version: "12".into(),
        arch: "x86_64".into(),
        cpus: 2,
        memory_mb: 1024,
        ips: vec!["127.0.0.1".into()],
        ..Default::default()
    };
    let text = match mgmt_core::template::render("fuzz.yaml", text, &facts) {
        Ok(t) => t,
        Err(e) => {
            assert!(e.to_string().starts_with("error: fuzz.yaml"));
            return;
        }
    };
    match mgmt_core::compile("fuzz.yaml", &text) {
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
