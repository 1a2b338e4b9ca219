use super::*;
use crate::compile::{CompileOptions, compile_with};

/// Without AutoGroup, so vertex ids are resource ids (grouping has its own tests).
fn graph(text: &str) -> Graph {
    let opts = CompileOptions {
        autogroup: false,
        ..CompileOptions::default()
    };
    compile_with("t.yaml", text, &opts).unwrap_or_else(|e| panic!("{e}"))
}

fn drain(e: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

fn check_applies(out: &[Output]) -> Vec<VertexId> {
    out.iter()
        .filter_map(|o| match o {
            Output::CheckApply { vertex, .. } => Some(*vertex),
            _ => None,
        })
        .collect()
}

/// a -> b -> c, plus d alone. Sorted ids: a=0, b=1, c=2, d=3.
const CHAIN: &str = r#"
graph: g
resources:
  noop: [{name: a}, {name: b}, {name: c}, {name: d}]
edges:
- {name: e1, from: {kind: noop, name: a}, to: {kind: noop, name: b}}
- {name: e2, from: {kind: noop, name: b}, to: {kind: noop, name: c}, notify: true}
"#;

/// Finishes the first run of [`CHAIN`]'s four vertices, nothing changed.
fn settle_chain(e: &mut Engine) {
    for (v, t) in [(0, 1), (3, 1), (1, 2), (2, 3)] {
        e.handle(
            Millis(t),
            Input::CheckApplyDone {
                vertex: v,
                result: Ok(false),
            },
        );
    }
}

#[test]
fn start_watches_everything_and_runs_roots_in_parallel() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    let out = drain(&mut e);
    assert_eq!(
        out,
        vec![
            Output::StartWatch(0),
            Output::StartWatch(1),
            Output::StartWatch(2),
            Output::StartWatch(3),
            Output::CheckApply {
                vertex: 0,
                apply: true,
                refresh: false,
                members: Members::All
            },
            Output::CheckApply {
                vertex: 3,
                apply: true,
                refresh: false,
                members: Members::All
            },
        ]
    );
}

#[test]
fn downstream_waits_for_upstream_success_and_notify_refreshes() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    e.handle(
        Millis(1),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 1,
            apply: true,
            refresh: false,
            members: Members::All
        }]
    );
    e.handle(
        Millis(2),
        Input::CheckApplyDone {
            vertex: 1,
            result: Ok(true),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 2,
            apply: true,
            refresh: true,
            members: Members::All
        }]
    );
}

#[test]
fn watch_event_reruns_only_that_vertex_when_nothing_changed() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    settle_chain(&mut e);
    drain(&mut e);
    e.handle(Millis(10), Input::WatchEvent(1));
    assert_eq!(check_applies(&drain(&mut e)), vec![1]);
    e.handle(
        Millis(11),
        Input::CheckApplyDone {
            vertex: 1,
            result: Ok(false),
        },
    );
    assert!(drain(&mut e).is_empty());
    // A change upstream pokes the child, with a refresh on the notify edge.
    e.handle(Millis(12), Input::WatchEvent(1));
    drain(&mut e);
    e.handle(
        Millis(13),
        Input::CheckApplyDone {
            vertex: 1,
            result: Ok(true),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 2,
            apply: true,
            refresh: true,
            members: Members::All
        }]
    );
}

#[test]
fn single_pass_starts_no_watches() {
    let g = graph(CHAIN);
    let mut e = Engine::new(
        &g,
        EngineConfig {
            noop: false,
            converged_timeout: Some(Millis(0)),
        },
    );
    e.handle(Millis(0), Input::Start);
    let out = drain(&mut e);
    assert!(
        !out.iter().any(|o| matches!(o, Output::StartWatch(_))),
        "{out:?}"
    );
    assert_eq!(check_applies(&out), vec![0, 3]);
}

#[test]
fn a_rerun_for_named_members_covers_them_only_and_anything_else_covers_all() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    settle_chain(&mut e);
    drain(&mut e);
    let members_of = |out: &[Output]| -> Vec<(usize, Members)> {
        out.iter()
            .filter_map(|o| match o {
                Output::CheckApply {
                    vertex, members, ..
                } => Some((*vertex, members.clone())),
                _ => None,
            })
            .collect()
    };
    // The file watch named members: only they need a look.
    e.handle(Millis(10), Input::MembersChanged(vec![(1, 0)]));
    assert_eq!(
        members_of(&drain(&mut e)),
        vec![(1, Members::Only(vec![0]))]
    );
    e.handle(
        Millis(10),
        Input::CheckApplyDone {
            vertex: 1,
            result: Ok(false),
        },
    );
    // A watch event that names no member: all of them.
    e.handle(Millis(10), Input::WatchEvent(1));
    assert_eq!(members_of(&drain(&mut e)), vec![(1, Members::All)]);
    // After a failure (for good: no retries by default), the next chance
    // an event gives it covers every member.
    e.handle(
        Millis(11),
        Input::CheckApplyDone {
            vertex: 1,
            result: Err("boom".into()),
        },
    );
    drain(&mut e);
    e.handle(Millis(12), Input::MembersChanged(vec![(1, 0)]));
    assert_eq!(members_of(&drain(&mut e)), vec![(1, Members::All)]);
    // A change upstream makes the child's run cover all, even if its own
    // watch named a member too.
    e.handle(Millis(13), Input::MembersChanged(vec![(2, 0)]));
    e.handle(
        Millis(14),
        Input::CheckApplyDone {
            vertex: 1,
            result: Ok(true),
        },
    );
    assert_eq!(members_of(&drain(&mut e)), vec![(2, Members::All)]);
}

#[test]
fn a_waiting_graph_holds_back_every_check_apply_until_the_engine_drained() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    assert_eq!(check_applies(&drain(&mut e)), vec![0, 3]);
    // a and d run; a new graph waits.
    e.handle(Millis(1), Input::NewGraphWaiting);
    assert_eq!(drain(&mut e), vec![]);
    // a finishes: b would run now, but is held back.
    e.handle(
        Millis(2),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(true),
        },
    );
    assert_eq!(drain(&mut e), vec![]);
    e.handle(Millis(3), Input::WatchEvent(3));
    assert_eq!(drain(&mut e), vec![]);
    // d, the last one running, finishes: drained, once.
    e.handle(
        Millis(4),
        Input::CheckApplyDone {
            vertex: 3,
            result: Ok(false),
        },
    );
    assert_eq!(drain(&mut e), vec![Output::Drained]);
    e.handle(Millis(5), Input::NewGraphWaiting);
    assert_eq!(drain(&mut e), vec![]);
    // What was held back has not settled: a new graph checks it.
    assert!(e.settled(0));
    assert!(!e.settled(1), "b was due and held back");
    assert!(!e.settled(3), "d saw an event and was held back");
    // The new graph is abandoned: what was held back runs.
    e.handle(Millis(6), Input::NewGraphAbandoned);
    assert_eq!(check_applies(&drain(&mut e)), vec![1, 3]);
}

#[test]
fn an_idle_engine_drains_at_once_and_does_not_converge_while_a_graph_waits() {
    let g = graph(CHAIN);
    let config = EngineConfig {
        converged_timeout: Some(Millis(100)),
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&g, config);
    e.handle(Millis(0), Input::Start);
    settle_chain(&mut e);
    drain(&mut e);
    e.handle(Millis(5), Input::NewGraphWaiting);
    assert_eq!(drain(&mut e), vec![Output::Drained]);
    e.handle(Millis(500), Input::Tick);
    assert_eq!(
        drain(&mut e),
        vec![],
        "converges only once the new graph runs"
    );
}

#[test]
fn event_while_running_reruns_after_completion() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    e.handle(Millis(1), Input::WatchEvent(0));
    assert!(
        check_applies(&drain(&mut e)).is_empty(),
        "must not run twice at once"
    );
    e.handle(
        Millis(2),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    assert_eq!(check_applies(&drain(&mut e)), vec![0]);
}

#[test]
fn upstream_dirty_blocks_downstream() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    settle_chain(&mut e);
    drain(&mut e);
    // Both a and b see drift at once: b must wait until a has run again.
    e.handle(Millis(10), Input::WatchEvent(0));
    e.handle(Millis(10), Input::WatchEvent(1));
    assert_eq!(check_applies(&drain(&mut e)), vec![0]);
    e.handle(
        Millis(11),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    assert_eq!(check_applies(&drain(&mut e)), vec![1]);
}

#[test]
fn failures_retry_after_delay_then_fail_permanently_blocking_only_dependents() {
    let g = graph(
        r#"
graph: g
resources:
  noop:
  - {name: a, meta: {retry: 1, delay: 100}}
  - {name: b}
  - {name: c}
edges:
- {name: e1, from: {kind: noop, name: a}, to: {kind: noop, name: b}}
"#,
    );
    let cfg = EngineConfig {
        noop: false,
        converged_timeout: Some(Millis(500)),
    };
    let mut e = Engine::new(&g, cfg);
    e.handle(Millis(0), Input::Start);
    assert_eq!(check_applies(&drain(&mut e)), vec![0, 2]);
    e.handle(
        Millis(5),
        Input::CheckApplyDone {
            vertex: 2,
            result: Ok(false),
        },
    );
    e.handle(
        Millis(10),
        Input::CheckApplyDone {
            vertex: 0,
            result: Err("boom".into()),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::WillRetry {
            vertex: 0,
            error: "boom".into(),
            retry_at: Millis(110)
        }]
    );
    assert_eq!(e.poll_timeout(), Some(Millis(110)));
    e.handle(Millis(110), Input::Tick);
    assert_eq!(check_applies(&drain(&mut e)), vec![0]);
    e.handle(
        Millis(120),
        Input::CheckApplyDone {
            vertex: 0,
            result: Err("boom".into()),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::FailedPermanently {
            vertex: 0,
            error: "boom".into()
        }]
    );
    assert!(e.idle());
    assert_eq!(e.poll_timeout(), Some(Millis(620)));
    e.handle(Millis(620), Input::Tick);
    assert_eq!(drain(&mut e), vec![Output::Converged { failed: vec![0] }]);
    // An event gives the failed vertex a new chance.
    e.handle(Millis(700), Input::WatchEvent(0));
    assert_eq!(check_applies(&drain(&mut e)), vec![0]);
    e.handle(
        Millis(710),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    assert_eq!(check_applies(&drain(&mut e)), vec![1]);
}

#[test]
fn noop_mode_checks_without_applying() {
    let g = graph("graph: g\nresources:\n  noop: [{name: a}, {name: b, meta: {noop: true}}]\n");
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    let out = drain(&mut e);
    assert!(out.contains(&Output::CheckApply {
        vertex: 0,
        apply: true,
        refresh: false,
        members: Members::All
    }));
    assert!(out.contains(&Output::CheckApply {
        vertex: 1,
        apply: false,
        refresh: false,
        members: Members::All
    }));
    let mut e = Engine::new(
        &g,
        EngineConfig {
            noop: true,
            converged_timeout: None,
        },
    );
    e.handle(Millis(0), Input::Start);
    assert!(
        drain(&mut e)
            .iter()
            .all(|o| !matches!(o, Output::CheckApply { apply: true, .. }))
    );
}

#[test]
fn converged_after_quiet_period_and_not_before() {
    let g = graph(CHAIN);
    let mut e = Engine::new(
        &g,
        EngineConfig {
            noop: false,
            converged_timeout: Some(Millis(1000)),
        },
    );
    e.handle(Millis(0), Input::Start);
    for (v, t) in [(0, 1), (3, 1), (1, 2), (2, 3)] {
        e.handle(
            Millis(t),
            Input::CheckApplyDone {
                vertex: v,
                result: Ok(t == 1),
            },
        );
    }
    drain(&mut e);
    // The last change was at t=1.
    assert_eq!(e.poll_timeout(), Some(Millis(1001)));
    e.handle(Millis(900), Input::Tick);
    assert!(drain(&mut e).is_empty());
    e.handle(Millis(1001), Input::Tick);
    assert_eq!(drain(&mut e), vec![Output::Converged { failed: vec![] }]);
    assert_eq!(e.poll_timeout(), None, "reported once per quiet period");
}

#[test]
fn converged_timeout_zero_fires_once_everything_ran() {
    let g = graph(CHAIN);
    let mut e = Engine::new(
        &g,
        EngineConfig {
            noop: false,
            converged_timeout: Some(Millis(0)),
        },
    );
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    for v in [0, 3, 1] {
        e.handle(
            Millis(1),
            Input::CheckApplyDone {
                vertex: v,
                result: Ok(false),
            },
        );
        assert!(
            !drain(&mut e)
                .iter()
                .any(|o| matches!(o, Output::Converged { .. }))
        );
    }
    e.handle(
        Millis(2),
        Input::CheckApplyDone {
            vertex: 2,
            result: Ok(false),
        },
    );
    assert_eq!(drain(&mut e), vec![Output::Converged { failed: vec![] }]);
}

#[test]
fn poll_meta_schedules_checks_instead_of_a_watch() {
    let g = graph("graph: g\nresources:\n  noop: [{name: a, meta: {poll: 2}}]\n");
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 0,
            apply: true,
            refresh: false,
            members: Members::All
        }]
    );
    e.handle(
        Millis(3),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    assert_eq!(e.poll_timeout(), Some(Millis(2000)));
    e.handle(Millis(2000), Input::Tick);
    assert_eq!(check_applies(&drain(&mut e)), vec![0]);
}

#[test]
fn watch_failure_restarts_the_watch_per_retry_meta() {
    let g = graph("graph: g\nresources:\n  noop: [{name: a, meta: {retry: 1, delay: 300}}]\n");
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    e.handle(
        Millis(10),
        Input::WatchFailed {
            vertex: 0,
            error: "gone".into(),
        },
    );
    drain(&mut e);
    e.handle(Millis(309), Input::Tick);
    assert!(drain(&mut e).is_empty());
    e.handle(Millis(310), Input::Tick);
    assert_eq!(drain(&mut e), vec![Output::StartWatch(0)]);
    e.handle(
        Millis(70),
        Input::WatchFailed {
            vertex: 0,
            error: "gone".into(),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::FailedPermanently {
            vertex: 0,
            error: "gone".into()
        }]
    );
}

#[test]
fn unexpected_completion_is_ignored() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    e.handle(
        Millis(1),
        Input::CheckApplyDone {
            vertex: 2,
            result: Ok(true),
        },
    );
    assert!(drain(&mut e).is_empty());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A random DAG of noops: edges only from lower to higher index.
    fn dag_yaml(n: usize, edges: &[(usize, usize)], retry: &[i8]) -> String {
        let mut y = String::from("graph: p\nresources:\n  noop:\n");
        for (i, r) in retry.iter().take(n).enumerate() {
            y += &format!("  - {{name: n{i:03}, meta: {{retry: {r}}}}}\n");
        }
        y += "edges:\n";
        for (k, &(a, b)) in edges.iter().enumerate() {
            let (a, b) = (a.min(b), a.max(b));
            if a != b {
                y += &format!(
                    "- {{name: e{k}, from: {{kind: noop, name: n{a:03}}}, to: {{kind: noop, name: n{b:03}}}, notify: {}}}\n",
                    k % 2 == 0
                );
            }
        }
        y
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Runs the engine to quiescence with a driver that completes pending
        /// CheckApplies in an arbitrary order and fails some of them, checking at
        /// every step that no vertex runs before all its parents succeeded.
        #[test]
        fn scheduling_respects_edges_and_everything_runs(
            n in 1usize..30,
            raw_edges in prop::collection::vec((0usize..30, 0usize..30), 0..60),
            retry in prop::collection::vec(0i8..3, 30),
            picks in prop::collection::vec((any::<usize>(), any::<bool>(), 0u8..10), 1..400),
            events in prop::collection::vec((0usize..30, 0usize..400), 0..10),
        ) {
            let edges: Vec<_> = raw_edges.into_iter().filter(|&(a, b)| a < n && b < n).collect();
            let g = graph(&dag_yaml(n, &edges, &retry));
            let parents: Vec<Vec<usize>> = (0..n).map(|v| g.vertex_edges().iter().filter(|e| e.to == v).map(|e| e.from).collect()).collect();
            let mut e = Engine::new(&g, EngineConfig { noop: false, converged_timeout: Some(Millis(0)) });
            let mut now = 0u64;
            e.handle(Millis(now), Input::Start);
            let mut running: Vec<usize> = Vec::new();
            let mut succeeded = vec![false; n];
            let mut ran = vec![0u32; n];
            let mut failed_for_good = vec![false; n];
            let mut step = 0usize;
            let mut converged = false;
            loop {
                while let Some(o) = e.poll_output() {
                    match o {
                        Output::CheckApply { vertex, .. } => {
                            prop_assert!(!running.contains(&vertex), "vertex {vertex} ran twice at once");
                            for &p in &parents[vertex] {
                                prop_assert!(succeeded[p] && !running.contains(&p), "vertex {vertex} ran before parent {p} succeeded");
                            }
                            running.push(vertex);
                            ran[vertex] += 1;
                        }
                        Output::FailedPermanently { vertex, .. } => failed_for_good[vertex] = true,
                        Output::Converged { .. } => converged = true,
                        _ => {}
                    }
                }
                let event = events.iter().find(|&&(v, at)| at == step && v < n).copied();
                step += 1;
                if let Some((v, _)) = event {
                    e.handle(Millis(now), Input::WatchEvent(v));
                    succeeded[v] = false;
                    converged = false;
                    continue;
                }
                now += 1;
                if running.is_empty() {
                    match e.poll_timeout() {
                        Some(t) if !converged => { now = now.max(t.0); e.handle(Millis(now), Input::Tick); continue; }
                        _ => break,
                    }
                }
                prop_assert!(step < 5000, "no quiescence");
                let (idx, change, fail) = picks[step % picks.len()];
                let v = running.remove(idx % running.len());
                let result = if fail == 0 && !failed_for_good[v] { Err("x".to_string()) } else { Ok(change) };
                succeeded[v] = result.is_ok();
                e.handle(Millis(now), Input::CheckApplyDone { vertex: v, result });
            }
            // Every vertex whose ancestors all succeeded has run and succeeded.
            // Ancestors, not only parents: a parent whose last run succeeded
            // may still owe a run (something above it changed while it ran)
            // that a vertex failed for good above it blocks, and then what
            // depends on it is blocked too (see
            // `a_stale_success_under_a_permanent_failure_still_blocks_below`).
            let mut blocked = vec![false; n];
            for v in crate::algo::topo_order(n, g.vertex_edges().iter().map(|e| (e.from, e.to))).unwrap() {
                blocked[v] = parents[v].iter().any(|&p| !succeeded[p] || blocked[p]);
                if !blocked[v] && !failed_for_good[v] {
                    prop_assert!(ran[v] > 0 && succeeded[v], "vertex {v} never converged");
                }
            }
        }

        /// With no failures, a graph converges and every vertex ran exactly as
        /// often as needed: at least once.
        #[test]
        fn failure_free_graph_converges(
            n in 1usize..40,
            raw_edges in prop::collection::vec((0usize..40, 0usize..40), 0..80),
            changes in prop::collection::vec(any::<bool>(), 40),
        ) {
            let edges: Vec<_> = raw_edges.into_iter().filter(|&(a, b)| a < n && b < n).collect();
            let g = graph(&dag_yaml(n, &edges, &[0; 40]));
            let mut e = Engine::new(&g, EngineConfig { noop: false, converged_timeout: Some(Millis(10)) });
            e.handle(Millis(0), Input::Start);
            let mut pending = std::collections::VecDeque::new();
            let mut ran = vec![0u32; n];
            let mut now = 0;
            let mut converged = None;
            for _ in 0..10_000 {
                while let Some(o) = e.poll_output() {
                    match o {
                        Output::CheckApply { vertex, .. } => { ran[vertex] += 1; pending.push_back(vertex) }
                        Output::Converged { failed } => converged = Some(failed),
                        _ => {}
                    }
                }
                if converged.is_some() { break; }
                now += 1;
                match pending.pop_front() {
                    // Change only on the first run, so the graph settles.
                    Some(v) => e.handle(Millis(now), Input::CheckApplyDone { vertex: v, result: Ok(changes[v] && ran[v] == 1) }),
                    None => { now = e.poll_timeout().expect("idle engine must have a converged deadline").0; e.handle(Millis(now), Input::Tick) }
                }
            }
            prop_assert_eq!(converged, Some(vec![]));
            prop_assert!(ran.iter().all(|&r| r >= 1));
        }

        /// A new graph waiting holds back every CheckApply: none starts while
        /// it waits, the engine says it drained exactly once, as soon as the
        /// last one running is home, and nothing settles that was held back.
        /// Abandoned, the held-back work runs and the graph still converges.
        #[test]
        fn a_waiting_graph_drains_once_and_starts_nothing(
            n in 1usize..30,
            raw_edges in prop::collection::vec((0usize..30, 0usize..30), 0..60),
            changes in prop::collection::vec(any::<bool>(), 30),
            wait_at in 0usize..20,
            abandon_after in 1usize..40,
            events in prop::collection::vec((0usize..30, any::<bool>()), 0..20),
        ) {
            let edges: Vec<_> = raw_edges.into_iter().filter(|&(a, b)| a < n && b < n).collect();
            let g = graph(&dag_yaml(n, &edges, &[0; 30]));
            let mut e = Engine::new(&g, EngineConfig { noop: false, converged_timeout: Some(Millis(10)) });
            e.handle(Millis(0), Input::Start);
            let mut running: std::collections::VecDeque<usize> = Default::default();
            let mut ran = vec![0u32; n];
            let (mut now, mut step) = (0u64, 0usize);
            let mut waiting_since: Option<usize> = None;
            let mut drained = 0;
            let mut converged = None;
            let mut events = events.into_iter().filter(|&(v, _)| v < n);
            for _ in 0..10_000 {
                while let Some(o) = e.poll_output() {
                    match o {
                        Output::CheckApply { vertex, .. } => {
                            prop_assert!(waiting_since.is_none(), "vertex {vertex} started while a graph waited");
                            ran[vertex] += 1;
                            running.push_back(vertex);
                        }
                        Output::Drained => {
                            prop_assert!(waiting_since.is_some() && running.is_empty(), "drained with {running:?} running");
                            drained += 1;
                        }
                        Output::Converged { failed } => converged = Some(failed),
                        _ => {}
                    }
                }
                if converged.is_some() { break; }
                step += 1;
                now += 1;
                match waiting_since {
                    None if step == wait_at && drained == 0 => {
                        waiting_since = Some(step);
                        e.handle(Millis(now), Input::NewGraphWaiting);
                        continue;
                    }
                    Some(since) if step >= since + abandon_after && running.is_empty() => {
                        prop_assert_eq!(drained, 1, "drained once, when the last run came home");
                        for v in 0..n {
                            // Nothing settles that was due: a vertex the waiting
                            // graph kept would otherwise skip its check.
                            if e.state[v].dirty {
                                prop_assert!(!e.settled(v));
                            }
                        }
                        waiting_since = None;
                        e.handle(Millis(now), Input::NewGraphAbandoned);
                        continue;
                    }
                    Some(_) => {
                        // Drift while the graph waits: marked, not run.
                        if let Some((v, named)) = events.next() {
                            let input = if named { Input::MembersChanged(vec![(v, 0)]) } else { Input::WatchEvent(v) };
                            e.handle(Millis(now), input);
                            continue;
                        }
                    }
                    None => {}
                }
                match running.pop_front() {
                    Some(v) => e.handle(Millis(now), Input::CheckApplyDone { vertex: v, result: Ok(changes[v] && ran[v] == 1) }),
                    None if waiting_since.is_some() => e.handle(Millis(now), Input::Tick),
                    None => { now = now.max(e.poll_timeout().expect("idle engine must have a converged deadline").0); e.handle(Millis(now), Input::Tick) }
                }
            }
            prop_assert_eq!(converged, Some(vec![]));
            prop_assert!(ran.iter().all(|&r| r >= 1));
        }
    }
}

#[test]
fn watch_restarts_never_spin_even_with_no_delay() {
    let g = graph("graph: g\nresources:\n  noop: [{name: a, meta: {retry: -1, delay: 0}}]\n");
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    let failed = Input::WatchFailed {
        vertex: 0,
        error: "exited".into(),
    };
    e.handle(Millis(10), failed);
    drain(&mut e);
    assert_eq!(e.poll_timeout(), Some(Millis(10) + MIN_WATCH_RESTART));
}

#[test]
fn a_working_watch_forgets_old_failures() {
    let g = graph("graph: g\nresources:\n  noop: [{name: a, meta: {retry: 1, delay: 300}}]\n");
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    e.handle(
        Millis(1),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    for round in 0..3u64 {
        let t = 1000 * (round + 1);
        e.handle(
            Millis(t),
            Input::WatchFailed {
                vertex: 0,
                error: "gone".into(),
            },
        );
        e.handle(Millis(t + 300), Input::Tick);
        // The restarted watch delivers an event: it works again.
        e.handle(Millis(t + 400), Input::WatchEvent(0));
        e.handle(
            Millis(t + 401),
            Input::CheckApplyDone {
                vertex: 0,
                result: Ok(false),
            },
        );
        assert!(
            !drain(&mut e)
                .iter()
                .any(|o| matches!(o, Output::FailedPermanently { .. })),
            "round {round}"
        );
    }
    assert!(e.failed().is_empty());
}

#[test]
fn a_dead_watch_stays_failed_after_a_running_check_succeeds() {
    let g = graph("graph: g\nresources:\n  noop: [{name: a}]\n");
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    e.handle(
        Millis(1),
        Input::WatchFailed {
            vertex: 0,
            error: "gone".into(),
        },
    );
    e.handle(
        Millis(2),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    assert_eq!(e.failed(), vec![0]);
}

/// The minimal form of a saved proptest case (n = 22: 16 and 18 feed 20, 20
/// feeds 21). `b` succeeds, but `a` changed while `b` ran, so `b` owes another
/// run, and `a` then failed for good: `b` cannot run again, and `c` must not
/// run after a `b` that is not up to date. Both are blocked by `a`'s failure,
/// and both run once `a` works again.
#[test]
fn a_stale_success_under_a_permanent_failure_still_blocks_below() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    e.handle(
        Millis(1),
        Input::CheckApplyDone {
            vertex: 3,
            result: Ok(false),
        },
    );
    e.handle(
        Millis(1),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 1,
            apply: true,
            refresh: false,
            members: Members::All
        }]
    );
    // While b runs, a sees drift and changes something: b owes a run.
    e.handle(Millis(2), Input::WatchEvent(0));
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 0,
            apply: true,
            refresh: false,
            members: Members::All
        }]
    );
    e.handle(
        Millis(3),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(true),
        },
    );
    assert_eq!(drain(&mut e), vec![]);
    // Then a fails for good (no retries by default).
    e.handle(Millis(4), Input::WatchEvent(0));
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 0,
            apply: true,
            refresh: false,
            members: Members::All
        }]
    );
    e.handle(
        Millis(5),
        Input::CheckApplyDone {
            vertex: 0,
            result: Err("boom".into()),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::FailedPermanently {
            vertex: 0,
            error: "boom".into()
        }]
    );
    // b's run, started before a's change, succeeds: neither b (behind a) nor
    // c (behind a stale b) may run now.
    e.handle(
        Millis(6),
        Input::CheckApplyDone {
            vertex: 1,
            result: Ok(false),
        },
    );
    assert_eq!(drain(&mut e), vec![]);
    assert!(e.idle());
    assert_eq!(e.failed(), vec![0]);
    // a works again: b catches up, then c runs.
    e.handle(Millis(7), Input::WatchEvent(0));
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 0,
            apply: true,
            refresh: false,
            members: Members::All
        }]
    );
    e.handle(
        Millis(8),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 1,
            apply: true,
            refresh: false,
            members: Members::All
        }]
    );
    e.handle(
        Millis(9),
        Input::CheckApplyDone {
            vertex: 1,
            result: Ok(false),
        },
    );
    assert_eq!(
        drain(&mut e),
        vec![Output::CheckApply {
            vertex: 2,
            apply: true,
            refresh: false,
            members: Members::All
        }]
    );
}

/// A timer (id 1, every 2 s) refreshing a noop (id 0). Its ticks refresh the
/// noop each interval, but a tick is not activity: a quiet noop lets the run
/// converge between ticks.
#[test]
fn a_timer_refreshes_its_child_each_interval_and_alone_never_holds_off_convergence() {
    let g = graph(
        "graph: g\nresources:\n  noop: [{name: n}]\n  timer: [{name: t, interval: 2}]\n\
         edges:\n- {name: e, from: {kind: timer, name: t}, to: {kind: noop, name: n}}\n",
    );
    assert!(g.edges[0].notify, "a timer's edges always refresh");
    let mut e = Engine::new(
        &g,
        EngineConfig {
            noop: false,
            converged_timeout: Some(Millis(1000)),
        },
    );
    // The timer ticks at `at`: the noop is refreshed.
    let tick = |e: &mut Engine, at: u64| {
        e.handle(
            Millis(at),
            Input::CheckApplyDone {
                vertex: 1,
                result: Ok(true),
            },
        );
        let out = drain(e);
        let refreshed = Output::CheckApply {
            vertex: 0,
            apply: true,
            refresh: true,
            members: Members::All,
        };
        assert!(out.contains(&refreshed), "tick at {at}: {out:?}");
    };
    e.handle(Millis(0), Input::Start);
    assert_eq!(check_applies(&drain(&mut e)), [1], "the timer runs first");
    tick(&mut e, 1);
    e.handle(
        Millis(2),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    drain(&mut e);
    // Activity ended at the start (t=0): converged at 1 000 ms, before the
    // next tick at 2 000 ms.
    e.handle(Millis(1000), Input::Tick);
    assert_eq!(drain(&mut e), vec![Output::Converged { failed: vec![] }]);
    e.handle(Millis(2000), Input::Tick);
    assert_eq!(check_applies(&drain(&mut e)), [1], "the next tick");
    tick(&mut e, 2001);
}

/// A CheckApply that fails for good while its own watch saw a change (a
/// directory removed mid-copy, say) gets one more try after a pause, since
/// no later event may come to give it one; a second such failure is final.
#[test]
fn a_failure_under_a_changing_world_gets_one_more_try() {
    let g = graph("graph: g\nresources:\n  noop: [{name: a}]\n");
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    assert_eq!(check_applies(&drain(&mut e)), [0]);
    let fail = |e: &mut Engine, at: u64| {
        e.handle(Millis(at), Input::WatchEvent(0));
        e.handle(
            Millis(at + 1),
            Input::CheckApplyDone {
                vertex: 0,
                result: Err("gone".into()),
            },
        );
        drain(e)
    };
    let out = fail(&mut e, 10);
    let retry_at = match out.as_slice() {
        [Output::WillRetry { retry_at, .. }] => *retry_at,
        other => panic!("{other:?}"),
    };
    assert_eq!(retry_at, Millis(11) + MIN_WATCH_RESTART);
    e.handle(retry_at, Input::Tick);
    assert_eq!(check_applies(&drain(&mut e)), [0]);
    let out = fail(&mut e, retry_at.0 + 10);
    assert!(
        matches!(out.as_slice(), [Output::FailedPermanently { .. }]),
        "{out:?}"
    );
    // Without an event during the run, a failure with `retry: 0` is final at once.
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    e.handle(
        Millis(1),
        Input::CheckApplyDone {
            vertex: 0,
            result: Err("no".into()),
        },
    );
    assert!(matches!(
        drain(&mut e).as_slice(),
        [Output::FailedPermanently { .. }]
    ));
}

#[test]
fn drift_seen_by_a_parent_and_its_child_at_once_runs_the_parent_first() {
    let g = graph(CHAIN);
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    settle_chain(&mut e);
    drain(&mut e);
    // One change that b (the parent) and c (its child) both watch, the
    // child named first: only b starts, and c after it.
    e.handle(Millis(10), Input::WatchEvents(vec![2, 1]));
    assert_eq!(check_applies(&drain(&mut e)), vec![1]);
    e.handle(
        Millis(11),
        Input::CheckApplyDone {
            vertex: 1,
            result: Ok(false),
        },
    );
    assert_eq!(check_applies(&drain(&mut e)), vec![2]);
}

#[test]
fn a_watch_that_died_for_good_comes_back_with_its_next_event() {
    let g = graph("graph: g\nresources:\n  noop: [{name: a}]\n");
    let mut e = Engine::new(&g, EngineConfig::default());
    e.handle(Millis(0), Input::Start);
    drain(&mut e);
    // No retries: the watch's failure is for good, and so is the vertex's.
    e.handle(
        Millis(1),
        Input::WatchFailed {
            vertex: 0,
            error: "no inotify".into(),
        },
    );
    e.handle(
        Millis(2),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    drain(&mut e);
    assert!(!e.settled(0));
    // The driver armed the watch again and says so with an event: the
    // vertex runs and, when it succeeds, it is healthy again.
    e.handle(Millis(3), Input::WatchEvents(vec![0]));
    assert_eq!(check_applies(&drain(&mut e)), vec![0]);
    e.handle(
        Millis(4),
        Input::CheckApplyDone {
            vertex: 0,
            result: Ok(false),
        },
    );
    assert!(e.settled(0));
}
