use super::*;
use crate::resource::{FileState, Kind, Params, Principal, Retry};

fn ok(text: &str) -> Graph {
    match compile("g.yaml", text) {
        Ok(g) => g,
        Err(e) => panic!("expected success, got:\n{e}"),
    }
}

fn err(text: &str) -> String {
    match compile("g.yaml", text) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

const GRAPH0: &str = r#"---
graph: mygraph
resources:
  noop:
  - name: noop1
  file:
  - name: file1
    path: "/tmp/mgmt/f1"
    content: |
      i am f1
    state: exists
edges:
- name: e1
  from:
    kind: noop
    name: noop1
  to:
    kind: file
    name: file1
"#;

#[test]
fn graph0_compiles_to_two_vertices_and_one_edge() {
    let g = ok(GRAPH0);
    assert_eq!(g.name, "mygraph");
    assert_eq!(g.resources.len(), 2);
    assert_eq!(g.resources[0].id.to_string(), "File[file1]");
    assert_eq!(g.resources[1].id.to_string(), "Noop[noop1]");
    assert_eq!(g.edges.len(), 1);
    assert_eq!((g.edges[0].from, g.edges[0].to), (1, 0));
    let Params::File(f) = &g.resources[0].params else {
        panic!("not a file")
    };
    assert_eq!(f.path, "/tmp/mgmt/f1");
    assert_eq!(f.content.as_deref(), Some("i am f1\n"));
    assert_eq!(f.state, FileState::Exists);
    assert_eq!(
        g.to_json(),
        serde_json::json!({
            "graph": "mygraph",
            "vertices": [
                {"id": "File[file1]", "kind": "file", "name": "file1", "grouped": []},
                {"id": "Noop[noop1]", "kind": "noop", "name": "noop1", "grouped": []},
            ],
            "edges": [{"from": "Noop[noop1]", "to": "File[file1]", "auto": false}],
        })
    );
}

#[test]
fn file_params_and_meta_are_parsed() {
    let g = ok(r#"
graph: g
resources:
  file:
  - name: f
    path: /tmp/x//y
    mode: 0640
    owner: root
    group: 0
    state: absent
    meta:
      retry: -1
      delay: 250
      noop: true
      autoedge: false
  - name: g
    path: /tmp/d/
    mode: "755"
"#);
    let Params::File(f) = &g.resources[0].params else {
        panic!()
    };
    assert_eq!(f.path, "/tmp/x/y");
    assert_eq!(f.mode, Some(0o640));
    assert_eq!(f.owner, Some(Principal::Name("root".into())));
    assert_eq!(f.group, Some(Principal::Id(0)));
    assert_eq!(f.state, FileState::Absent);
    let m = &g.resources[0].meta;
    assert_eq!(
        (m.retry, m.delay_ms, m.noop, m.autoedge, m.autogroup),
        (Retry::Forever, 250, true, false, true)
    );
    let Params::File(d) = &g.resources[1].params else {
        panic!()
    };
    assert!(d.is_dir());
    assert_eq!(d.mode, Some(0o755));
}

#[test]
fn exec_params_follow_the_original_format() {
    let g = ok(r#"
graph: g
resources:
  exec:
  - name: exec1
    cmd: sleep 10s
    shell: ''
    timeout: 0
    watchcmd: ''
    watchshell: ''
    ifcmd: 'test -e /x'
    ifshell: '/bin/sh'
    pollint: 0
    state: present
"#);
    let Params::Exec(e) = &g.resources[0].params else {
        panic!()
    };
    assert_eq!(e.cmd.cmd, "sleep 10s");
    assert_eq!(e.cmd.shell, None);
    assert_eq!(e.timeout_s, None);
    assert_eq!(e.watch, None);
    assert_eq!(e.ifcmd.as_ref().unwrap().shell.as_deref(), Some("/bin/sh"));
}

#[test]
fn res_is_an_alias_of_kind_and_notify_is_kept() {
    let g = ok(r#"
graph: g
resources:
  noop: [{name: a}, {name: b}]
edges:
- {name: e, from: {res: noop, name: a}, to: {kind: Noop, name: b}, notify: true}
"#);
    assert!(g.edges[0].notify);
}

#[test]
fn exported_resources_are_kept_apart() {
    let g = ok("graph: g\nresources:\n  noop: [{name: '@@x'}, {name: y}]\n");
    assert_eq!(g.resources.len(), 1);
    assert_eq!(g.exported.len(), 1);
    assert_eq!(g.exported[0].id.to_string(), "Noop[x]");
    assert!(g.exported[0].exported);
}

#[test]
fn unknown_key_names_line_and_column() {
    let e = err("graph: g\nresources:\n  file:\n  - name: f\n    path: /tmp/f\n    contnet: x\n");
    assert!(e.starts_with("error: g.yaml:6:5: "), "{e}");
    assert!(e.contains("contnet"), "{e}");
}

#[test]
fn unknown_kind_names_line_and_column() {
    let e = err("graph: g\nresources:\n  frobnicator:\n  - name: f\n");
    assert!(e.starts_with("error: g.yaml:3:3: "), "{e}");
    assert!(e.contains("frobnicator"), "{e}");
}

#[test]
fn malformed_yaml_names_a_location() {
    let e = err("graph: g\nresources: [\n  noop: {\n");
    assert!(e.starts_with("error: g.yaml:"), "{e}");
    assert!(
        e.split(':')
            .nth(2)
            .is_some_and(|l| l.parse::<u32>().is_ok()),
        "{e}"
    );
}

#[test]
fn duplicate_resource_is_an_error_naming_it() {
    let e = err("graph: g\nresources:\n  noop:\n  - name: a\n  - name: a\n");
    assert!(
        e.contains("g.yaml:5:")
            && e.contains("Noop[a]: duplicate resource, first defined at line 4"),
        "{e}"
    );
}

#[test]
fn edge_to_missing_resource_is_an_error() {
    let e = err(
        "graph: g\nresources:\n  noop: [{name: a}]\nedges:\n- {name: e1, from: {kind: noop, name: a}, to: {kind: file, name: nope}}\n",
    );
    assert!(
        e.contains("g.yaml:5:") && e.contains("no resource File[nope]"),
        "{e}"
    );
}

#[test]
fn cycle_is_reported_with_its_vertices() {
    let e = err(r#"
graph: g
resources:
  noop: [{name: a}, {name: b}, {name: c}, {name: d}]
edges:
- {name: e1, from: {kind: noop, name: a}, to: {kind: noop, name: b}}
- {name: e2, from: {kind: noop, name: b}, to: {kind: noop, name: c}}
- {name: e3, from: {kind: noop, name: c}, to: {kind: noop, name: a}}
- {name: e4, from: {kind: noop, name: c}, to: {kind: noop, name: d}}
"#);
    assert!(
        e.contains("cycle: Noop[a] -> Noop[b] -> Noop[c] -> Noop[a]"),
        "{e}"
    );
}

#[test]
fn invalid_values_are_errors_with_subject() {
    let cases = [
        (
            "file: [{name: f, path: rel/path}]",
            "File[f]: path \"rel/path\" must be absolute",
        ),
        (
            "file: [{name: f, path: /x, mode: '0999'}]",
            "File[f]: mode \"0999\" is not an octal mode",
        ),
        (
            "file: [{name: f, path: /x, state: gone}]",
            "File[f]: state must be",
        ),
        (
            "file: [{name: f, path: /x/, content: hi}]",
            "File[f]: a directory",
        ),
        (
            "exec: [{name: e, cmd: ''}]",
            "Exec[e]: cmd must not be empty",
        ),
        (
            "exec: [{name: e, cmd: x, timeout: -3}]",
            "Exec[e]: timeout (s) must be >= 0",
        ),
        (
            "noop: [{name: n, meta: {retry: -2}}]",
            "Noop[n]: meta retry must be",
        ),
        (
            "noop: [{name: n, meta: {delay: -1}}]",
            "Noop[n]: meta delay",
        ),
        ("noop: [{name: ''}]", "empty name"),
    ];
    for (res, want) in cases {
        let e = err(&format!("graph: g\nresources:\n  {res}\n"));
        assert!(e.contains(want), "{res}: {e}");
        assert!(e.starts_with("error: g.yaml:3:"), "{res}: {e}");
    }
}

#[test]
fn all_problems_are_reported_together() {
    let e = err("graph: g\nresources:\n  file:\n  - {name: a, path: x}\n  - {name: b, path: y}\n");
    assert_eq!(e.lines().count(), 2, "{e}");
}

#[test]
fn duplicate_yaml_keys_are_rejected() {
    let e = err("graph: a\ngraph: b\n");
    assert!(e.starts_with("error: g.yaml:2:"), "{e}");
}

#[test]
fn missing_graph_name_is_an_error() {
    let e = err("resources: {}\n");
    assert!(e.contains("graph"), "{e}");
}

#[test]
fn kinds_round_trip_through_their_names() {
    for k in Kind::ALL {
        assert_eq!(Kind::parse(k.yaml_name()), Some(k));
        assert_eq!(Kind::parse(&k.to_string()), Some(k));
    }
}

#[test]
fn dot_output_draws_every_vertex_and_edge() {
    let g = ok(GRAPH0);
    let dot = g.to_dot();
    assert!(dot.starts_with("digraph \"mygraph\" {"), "{dot}");
    assert!(dot.contains("\"Noop[noop1]\" -> \"File[file1]\";"), "{dot}");
    assert!(
        dot.contains("\"File[file1]\" [label=\"File[file1]\"];"),
        "{dot}"
    );
}

#[test]
fn parser_messages_are_tidied() {
    let e = err("graph: g\nresources:\n  file: [{name: f, path: /x, mode: [1]}]\n");
    assert_eq!(e, "error: g.yaml:3:36: expected a string or a number");
    let e = err("graph: a\ngraph: b\n");
    assert_eq!(e, "error: g.yaml:2:1: duplicate mapping key: graph");
}

#[test]
fn large_graphs_fit_the_parser_budget() {
    // 10 000 noops and 20 000 edges: well past the parser's default node budget.
    let mut y = String::from("graph: big\nresources:\n  noop:\n");
    for i in 0..10_000 {
        y += &format!("  - {{name: n{i}}}\n");
    }
    y += "edges:\n";
    for i in 0..20_000 {
        let (a, b) = (i % 9_999, i % 9_999 + 1);
        y += &format!(
            "- {{name: e{i}, from: {{kind: noop, name: n{a}}}, to: {{kind: noop, name: n{b}}}}}\n"
        );
    }
    let g = ok(&y);
    assert_eq!(g.resources.len(), 10_000);
}

#[test]
fn alias_bombs_are_rejected() {
    let mut y = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        y += &format!(
            "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        );
    }
    y += "graph: *i\n";
    let e = err(&y);
    assert!(e.starts_with("error: g.yaml"), "{e}");
}

#[test]
fn two_files_with_one_path_are_an_error() {
    let e = err(
        "graph: g\nresources:\n  file:\n  - {name: a, path: /x/y}\n  - {name: b, path: /x//./y}\n",
    );
    assert!(
        e.contains("File[b]: path \"/x/y\" is also managed by File[a]"),
        "{e}"
    );
}

#[test]
fn paths_are_normalised() {
    for (raw, want) in [
        ("/a//b", "/a/b"),
        ("/a/./b/.", "/a/b/"),
        ("/a/././b", "/a/b"),
        ("/a/b/", "/a/b/"),
    ] {
        assert_eq!(normalise_path(raw), want, "{raw}");
    }
}
