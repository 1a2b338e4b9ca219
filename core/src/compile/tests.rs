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
fn the_printed_json_is_the_json_value_pretty_printed() {
    // Grouped members, auto and notify edges: every field and both orders.
    let g = ok(
        "graph: g\nresources:\n  noop: [{name: a}, {name: b}]\n  file:\n  - {name: d, path: /t/}\n  - {name: f1, path: /t/f1}\n  - {name: f2, path: /t/f2}\nedges:\n- {name: e, from: {kind: noop, name: a}, to: {kind: file, name: f1}, notify: true}\n",
    );
    let mut written = Vec::new();
    g.write_json(&mut written).unwrap();
    let value = serde_json::to_string_pretty(&g.to_json()).unwrap();
    assert_eq!(String::from_utf8(written).unwrap(), value);
    assert!(
        value.contains("\"notify\": true") && value.contains("\"grouped\": [\n"),
        "{value}"
    );
}

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
            "resource_edges": [{"from": "Noop[noop1]", "to": "File[file1]", "auto": false}],
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

fn pkg_params(g: &Graph, name: &str) -> crate::resource::PkgParams {
    match &g
        .resources
        .iter()
        .find(|r| r.id.name == name)
        .unwrap()
        .params
    {
        Params::Pkg(p) => p.clone(),
        other => panic!("not a pkg: {other:?}"),
    }
}

#[test]
fn pkg_states_and_flags_compile_as_the_original_spelled_them() {
    let g = ok(
        "graph: g\nresources:\n  pkg:\n  - name: a\n    state: installed\n  \
                - name: b\n    state: uninstalled\n  - name: c\n    state: newest\n    allownonfree: true\n  \
                - name: d\n    state: \"1:2.3-4\"\n    allowuntrusted: true\n    allowunsupported: true\n",
    );
    use crate::resource::PkgState;
    assert_eq!(pkg_params(&g, "a").state, PkgState::Installed);
    assert_eq!(pkg_params(&g, "b").state, PkgState::Uninstalled);
    let c = pkg_params(&g, "c");
    assert_eq!(
        (c.state, c.allow_nonfree, c.allow_untrusted),
        (PkgState::Newest, true, false)
    );
    let d = pkg_params(&g, "d");
    assert_eq!(d.state, PkgState::Version("1:2.3-4".into()));
    assert!(d.allow_untrusted && d.allow_unsupported);
}

#[test]
fn bad_pkg_and_svc_input_is_located() {
    let e = err("graph: g\nresources:\n  pkg:\n  - name: a\n");
    assert!(
        e.contains("g.yaml:4:") && e.contains("Pkg[a]: state is required"),
        "{e}"
    );
    let e = err("graph: g\nresources:\n  pkg:\n  - name: a\n    state: present\n");
    assert!(
        e.contains("g.yaml:5:") && e.contains("not \"present\""),
        "{e}"
    );
    let e = err("graph: g\nresources:\n  pkg:\n  - name: \"a;b\"\n    state: installed\n");
    assert!(e.contains("is not a package name"), "{e}");
    let e = err("graph: g\nresources:\n  svc:\n  - name: s\n    state: started\n");
    assert!(
        e.contains("g.yaml:5:") && e.contains("running or stopped"),
        "{e}"
    );
    let e = err("graph: g\nresources:\n  svc:\n  - name: s\n    startup: yes\n");
    assert!(e.contains("enabled or disabled"), "{e}");
    let e = err("graph: g\nresources:\n  svc:\n  - name: s/x\n");
    assert!(e.contains("is not a unit name"), "{e}");
}

#[test]
fn svc_names_may_carry_their_suffix() {
    let g = ok(
        "graph: g\nresources:\n  svc:\n  - name: sshd.service\n    state: running\n    session: true\n",
    );
    let Params::Svc(s) = &g.resources[0].params else {
        panic!()
    };
    assert_eq!((s.unit(), s.session), ("sshd.service".to_string(), true));
    assert_eq!(s.state, Some(crate::resource::SvcState::Running));
    assert_eq!(s.startup, None);
}

#[test]
fn a_directory_with_content_is_accepted_with_a_located_warning() {
    let g = ok("graph: g\nresources:\n  file:\n  - name: d\n    path: /t/d/\n    content: x\n");
    let Params::File(f) = &g.resources[0].params else {
        panic!()
    };
    assert_eq!(f.content, None);
    assert_eq!(g.warnings.len(), 1);
    let w = g.warnings[0].to_string();
    assert!(
        w.starts_with("g.yaml:5:") && w.contains("`content` is ignored"),
        "{w}"
    );
}

#[test]
fn packages_of_one_state_group_and_pinned_versions_do_not() {
    let g = ok(
        "graph: g\nresources:\n  pkg:\n  - name: a\n    state: installed\n  \
                - name: b\n    state: installed\n  - name: c\n    state: uninstalled\n  \
                - name: d\n    state: uninstalled\n  - name: e\n    state: \"1.0\"\n  \
                - name: f\n    state: \"1.0\"\n  - name: g\n    state: installed\n    allownonfree: true\n",
    );
    let groups: Vec<Vec<&str>> = g
        .vertices
        .iter()
        .map(|v| {
            v.members
                .iter()
                .map(|&m| g.resources[m].id.name.as_str())
                .collect()
        })
        .collect();
    assert_eq!(
        groups,
        [
            vec!["a", "b"],
            vec!["c", "d"],
            vec!["e"],
            vec!["f"],
            vec!["g"]
        ]
    );
}

#[test]
fn packages_are_asked_about_only_when_an_edge_could_end_somewhere() {
    let only_pkgs = ok("graph: g\nresources:\n  pkg:\n  - name: a\n    state: installed\n");
    assert!(packages(&only_pkgs).is_empty());
    assert!(
        !notes(&only_pkgs).iter().any(|n| n.contains("not known")),
        "{:?}",
        notes(&only_pkgs)
    );
    let with_file = ok(
        "graph: g\nresources:\n  pkg:\n  - name: b\n    state: installed\n  \
                        - name: a\n    state: installed\n  - name: c\n    state: installed\n    \
                        meta: {autoedge: false}\n  file:\n  - name: /etc/x\n",
    );
    assert_eq!(packages(&with_file), ["a", "b"]);
}

#[test]
fn package_autoedges_reach_shipped_files_their_nearest_managed_ancestors_and_units() {
    let text = "graph: g\nresources:\n  pkg:\n  - name: drbd-utils\n    state: installed\n  \
                - name: other\n    state: installed\n  file:\n  - name: conf\n    path: /etc/drbd.conf\n  \
                - name: dir\n    path: /etc/drbd.d/\n  - name: deep\n    path: /usr/share/doc/\n  \
                svc:\n  - name: drbd\n  - name: ssh\n";
    let files: crate::autoedge::PackageFiles = [(
        "drbd-utils".to_string(),
        [
            "/etc",
            "/etc/drbd.conf",
            "/etc/drbd.d",
            "/etc/drbd.d/global_common.conf",
            "/lib/systemd/system/drbd.service",
            "/lib/systemd/system/drbd@.service",
            "/usr/share/doc/drbd-utils/copyright",
        ]
        .map(String::from)
        .to_vec(),
    )]
    .into();
    let opts = CompileOptions {
        package_files: files,
        autogroup: false,
        ..Default::default()
    };
    let g = compile_with("g.yaml", text, &opts).unwrap();
    let edges: BTreeSet<(String, String)> = g
        .edges
        .iter()
        .filter(|e| e.auto)
        .map(|e| {
            (
                g.resources[e.from].id.to_string(),
                g.resources[e.to].id.to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("Pkg[drbd-utils]", "File[conf]"),
        ("Pkg[drbd-utils]", "File[dir]"),
        ("Pkg[drbd-utils]", "File[deep]"),
        ("Pkg[drbd-utils]", "Svc[drbd]"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(edges, want, "notes: {:?}", notes(&g));
    assert!(
        notes(&g)
            .iter()
            .any(|n| n.contains("Pkg[other]: what the package ships is not known")),
        "{:?}",
        notes(&g)
    );
}

#[test]
fn a_service_follows_its_unit_file_the_most_specific_first() {
    let text = "graph: g\nresources:\n  file:\n  - name: /etc/systemd/system/web.service\n  \
                - name: /lib/systemd/system/web.service\n  - name: /lib/systemd/system/db.service\n  \
                - name: /etc/systemd/system/mine.service\n  \
                svc:\n  - name: web\n  - name: db\n  - name: mine\n    session: true\n";
    let opts = CompileOptions {
        autogroup: false,
        ..Default::default()
    };
    let g = compile_with("g.yaml", text, &opts).unwrap();
    let edges: BTreeSet<(String, String)> = g
        .edges
        .iter()
        .map(|e| {
            (
                g.resources[e.from].id.to_string(),
                g.resources[e.to].id.to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("File[/etc/systemd/system/web.service]", "Svc[web]"),
        ("File[/lib/systemd/system/db.service]", "Svc[db]"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    // The user's own manager reads other directories: no edge for `mine`.
    assert_eq!(edges, want, "notes: {:?}", notes(&g));
}

#[test]
fn source_recurse_and_force_compile_and_their_misuse_is_located() {
    let g = ok(
        "graph: g\nresources:\n  file:\n  - name: t\n    path: /srv/app/\n    \
                source: /var/lib/mgmt/files/app/\n    recurse: true\n    force: true\n",
    );
    let Params::File(f) = &g.resources[0].params else {
        panic!()
    };
    assert_eq!(f.source.as_deref(), Some("/var/lib/mgmt/files/app/"));
    assert!(f.recurse && f.force);
    for (res, want) in [
        (
            "{name: t, path: /a, source: /b, content: x}",
            "either content or source",
        ),
        (
            "{name: t, path: /a/, recurse: true}",
            "recurse: true needs a source",
        ),
        (
            "{name: t, path: /a, source: /b/, recurse: true}",
            "end the path in '/'",
        ),
        (
            "{name: t, path: /a/, source: rel/}",
            "must be an absolute path",
        ),
        (
            "{name: t, path: /a/b/, source: /a/, recurse: true}",
            "overlap",
        ),
        ("{name: t, path: /a/, source: /a/b/}", "overlap"),
        (
            "{name: t, path: /a/, source: /b/, recurse: true, state: absent}",
            "takes no source",
        ),
    ] {
        let e = err(&format!("graph: g\nresources:\n  file:\n  - {res}\n"));
        assert!(e.contains(want), "{res}: {e}");
    }
    let e = err(
        "graph: g\nresources:\n  file:\n  - {name: t, path: /srv/, source: /x/, recurse: true}\n  \
                 - {name: /srv/inside, content: x}\n",
    );
    assert!(
        e.contains("File[/srv/inside]: path \"/srv/inside\" is inside File[t]'s synced tree"),
        "{e}"
    );
}

#[test]
fn timer_and_msg_params_compile_and_bad_ones_are_located() {
    let g = ok(
        "graph: g\nresources:\n  timer:\n  - {name: t, interval: 30}\n  msg:\n  \
                - name: m\n    body: hi\n    priority: Warning\n    journal: true\n    fields: {APP: web}\n",
    );
    let t = g
        .resources
        .iter()
        .find(|r| r.id.kind == Kind::Timer)
        .unwrap();
    assert_eq!(t.params, Params::Timer { interval_s: 30 });
    assert_eq!(t.meta.poll_s, 30);
    let Params::Msg(m) = &g
        .resources
        .iter()
        .find(|r| r.id.kind == Kind::Msg)
        .unwrap()
        .params
    else {
        panic!()
    };
    assert_eq!(m.priority, crate::resource::Priority::Warning);
    assert!(m.journal && !m.syslog);
    assert_eq!(m.fields["APP"], "web");
    let e = err("graph: g\nresources:\n  timer:\n  - {name: t, interval: 0}\n");
    assert!(
        e.contains("g.yaml:4:") && e.contains("interval must be"),
        "{e}"
    );
    let e = err("graph: g\nresources:\n  msg:\n  - {name: m, priority: Loud}\n");
    assert!(e.contains("priority must be one of"), "{e}");
    let e = err("graph: g\nresources:\n  msg:\n  - {name: m, fields: {_X: y}}\n");
    assert!(e.contains("field name \"_X\""), "{e}");
}

const HOST_KINDS: &str = r#"graph: host
resources:
  group:
  - name: web
    gid: 1600
  user:
  - name: alice
    uid: 1600
    group: web
    groups: [adm, web]
    home: /home/alice
    managehome: true
    shell: /bin/bash
    comment: Alice Liddell
  file:
  - name: /srv/site/
    owner: alice
    group: web
  - name: /etc/ssh/
  line:
  - name: no-root
    path: /etc/ssh/sshd_config
    line: PermitRootLogin no
    match: ^#?PermitRootLogin
  - name: port
    path: /etc/ssh/sshd_config
    line: Port 2222
    regexp: ^#?Port
    insertafter: ^#?AddressFamily
"#;

#[test]
fn user_group_and_line_compile_with_their_edges_and_group() {
    let g = ok(HOST_KINDS);
    let Some(Params::User(u)) = g
        .resources
        .iter()
        .find(|r| r.kind() == Kind::User)
        .map(|r| &r.params)
    else {
        panic!("no user")
    };
    assert_eq!(u.uid, Some(1600));
    assert_eq!(u.group, Some(Principal::Name("web".into())));
    assert_eq!(u.groups, Some(vec!["adm".to_string(), "web".to_string()]));
    let json = g.to_json();
    let edges: Vec<(String, String)> = json["resource_edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("Group[web]", "User[alice]"),
        ("User[alice]", "File[/srv/site/]"),
        ("Group[web]", "File[/srv/site/]"),
        ("File[/etc/ssh/]", "Line[no-root]"),
        ("File[/etc/ssh/]", "Line[port]"),
    ] {
        assert!(
            edges.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} missing from {edges:?}"
        );
    }
    // Both lines of sshd_config are one vertex: one read, one write.
    let lines: Vec<_> = g
        .vertices
        .iter()
        .filter(|v| g.resources[v.head()].kind() == Kind::Line)
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].members.len(), 2);
}

#[test]
fn a_line_follows_the_file_resource_of_its_path() {
    let g = ok(
        "graph: g\nresources:\n  file:\n  - name: /etc/\n  - name: /etc/hosts\n    mode: \"0644\"\n  line:\n  - name: h\n    path: /etc/hosts\n    line: 10.0.0.1 db\n",
    );
    let edges: Vec<String> = g
        .edges
        .iter()
        .map(|e| format!("{} -> {}", g.resources[e.from].id, g.resources[e.to].id))
        .collect();
    assert!(
        edges.contains(&"File[/etc/hosts] -> Line[h]".to_string()),
        "{edges:?}"
    );
    assert!(
        !edges.contains(&"File[/etc/] -> Line[h]".to_string()),
        "{edges:?}"
    );
}

#[test]
fn bad_host_kinds_are_located_errors() {
    for (text, want) in [
        (
            "graph: g\nresources:\n  user:\n  - name: bob\n    uid: 4294967295\n",
            "g.yaml:5:10: User[bob]: uid 4294967295 is out of range",
        ),
        (
            "graph: g\nresources:\n  user:\n  - name: bob\n    uid: -1\n",
            "g.yaml:5:10: User[bob]: uid -1 is out of range",
        ),
        (
            "graph: g\nresources:\n  group:\n  - name: 1234\n",
            "is not a group name",
        ),
        (
            "graph: g\nresources:\n  user:\n  - name: bob\n    shell: bash\n",
            "g.yaml:5:12: User[bob]: shell \"bash\" must be an absolute path",
        ),
        (
            "graph: g\nresources:\n  user:\n  - name: bob\n    comment: \"a:b\"\n",
            "comment must not contain ':'",
        ),
        (
            "graph: g\nresources:\n  line:\n  - name: l\n    path: etc/hosts\n    line: x\n",
            "g.yaml:5:11: Line[l]: path \"etc/hosts\" must be absolute",
        ),
        (
            "graph: g\nresources:\n  line:\n  - name: l\n    path: /etc/hosts\n    line: x\n    match: \"a(\"\n",
            "g.yaml:7:12: Line[l]: match: invalid regular expression \"a(\"",
        ),
        (
            "graph: g\nresources:\n  line:\n  - name: l\n    path: /etc/hosts\n",
            "line is required when state is present",
        ),
        (
            "graph: g\nresources:\n  line:\n  - name: l\n    path: /etc/hosts\n    line: x\n    after: a\n    before: b\n",
            "not both",
        ),
        (
            "graph: g\nresources:\n  file:\n  - name: /etc/hosts\n    content: x\n  line:\n  - name: l\n    path: /etc/hosts\n    line: x\n",
            "Line[l]: File[/etc/hosts] writes the whole of",
        ),
        (
            "graph: g\nresources:\n  line:\n  - name: a\n    path: /f\n    line: x\n  - name: b\n    path: /f\n    line: x\n    state: absent\n",
            "one would undo the other",
        ),
        (
            "graph: g\nresources:\n  line:\n  - name: a\n    path: /f\n    line: Port 1\n    match: ^Port\n  - name: b\n    path: /f\n    line: Port 2\n    match: ^Port\n",
            "one would undo the other",
        ),
        (
            "graph: g\nresources:\n  sysctl:\n  - name: net..ipv4\n    value: 1\n",
            "g.yaml:4:11: Sysctl[net..ipv4]: \"net..ipv4\" is not a sysctl key",
        ),
        (
            "graph: g\nresources:\n  sysctl:\n  - name: ../../etc/passwd\n    value: 1\n",
            "is not a sysctl key",
        ),
        (
            "graph: g\nresources:\n  sysctl:\n  - name: vm.swappiness\n    value: 1\n    interval: 0\n",
            "g.yaml:6:15: Sysctl[vm.swappiness]: interval must be a number of seconds > 0",
        ),
        (
            "graph: g\nresources:\n  sysctl:\n  - name: vm.swappiness\n    value: 1\n    file: /etc/s.conf\n  - name: vm.overcommit_memory\n    value: 1\n    file: /etc/s.conf\n",
            "Sysctl[vm.swappiness]: Sysctl[vm.overcommit_memory] also writes \"/etc/s.conf\"",
        ),
        (
            "graph: g\nresources:\n  mount:\n  - name: /mnt/x\n    device: /dev/sdb1\n    fstype: ext5\n",
            "g.yaml:6:13: Mount[/mnt/x]: unknown fstype \"ext5\"",
        ),
        (
            "graph: g\nresources:\n  mount:\n  - name: mnt/x\n    device: /dev/sdb1\n    fstype: ext4\n",
            "g.yaml:4:11: Mount[mnt/x]: path \"mnt/x\" must be absolute",
        ),
        (
            "graph: g\nresources:\n  mount:\n  - name: /mnt/x\n    fstype: ext4\n",
            "device is required when state is mounted",
        ),
        (
            "graph: g\nresources:\n  mount:\n  - name: /mnt/x\n    device: -o\n    fstype: ext4\n",
            "not starting with '-'",
        ),
        (
            "graph: g\nresources:\n  mount:\n  - name: a\n    path: /mnt/x\n    device: tmpfs\n    fstype: tmpfs\n  - name: b\n    path: /mnt/x/\n    device: tmpfs\n    fstype: tmpfs\n",
            "also mounts \"/mnt/x\"",
        ),
        (
            "graph: g\nresources:\n  hostname:\n  - name: web_01\n",
            "g.yaml:4:11: Hostname[web_01]: invalid host name \"web_01\"",
        ),
        (
            "graph: g\nresources:\n  hostname:\n  - name: a\n  - name: b\n",
            "Hostname[b]: Hostname[a] also names this host",
        ),
    ] {
        let e = err(text);
        assert!(e.contains(want), "{text}\nwanted {want:?} in:\n{e}");
    }
}

#[test]
fn mounts_order_nested_mounts_and_what_is_below_them() {
    let g = ok(
        "graph: g\nresources:\n  mount:\n  - name: /srv\n    device: /dev/vdb\n    fstype: xfs\n  - name: /srv/cache\n    device: tmpfs\n    fstype: tmpfs\n  file:\n  - name: /srv/cache/\n  - name: /srv/cache/f\n    content: x\n",
    );
    let edges: Vec<String> = g
        .edges
        .iter()
        .map(|e| format!("{} -> {}", g.resources[e.from].id, g.resources[e.to].id))
        .collect();
    for want in [
        "Mount[/srv] -> File[/srv/cache/]",
        "File[/srv/cache/] -> Mount[/srv/cache]",
        "Mount[/srv/cache] -> File[/srv/cache/f]",
    ] {
        assert!(edges.contains(&want.to_string()), "{want} not in {edges:?}");
    }
}

#[test]
fn a_sysctl_persists_by_default_and_checks_its_live_value_on_a_timer() {
    let g = ok(
        "graph: g\nresources:\n  sysctl:\n  - name: net.ipv4.ip_local_port_range\n    value: \"20000   40000\"\n",
    );
    let Params::Sysctl(p) = &g.resources[0].params else {
        panic!()
    };
    assert_eq!(p.value, "20000 40000");
    assert_eq!(
        p.persist.as_deref(),
        Some("/etc/sysctl.d/99-mgmt-net.ipv4.ip_local_port_range.conf")
    );
    assert_eq!(p.proc_path(), "/proc/sys/net/ipv4/ip_local_port_range");
    assert_eq!(g.resources[0].params.live_check_s(), Some(10));
}

#[test]
fn host_kinds_round_trip_through_an_export() {
    let g = ok(&HOST_KINDS.replace("name: alice", "name: \"@@alice\""));
    let r = &g.exported[0];
    let e = crate::export::decode(
        &crate::export::key("h1", r),
        crate::export::encode(r).as_bytes(),
    )
    .unwrap();
    let back = crate::export::compile_collected(&e, None).unwrap();
    assert_eq!(back.params, r.params);
}

/// The compiler's notes, in words.
fn notes(g: &Graph) -> Vec<String> {
    g.note_texts().map(|n| n.to_string()).collect()
}

#[test]
fn resources_are_sorted_and_exported_ones_kept_apart_in_the_order_written() {
    let g = ok(
        "graph: g\nresources:\n  noop:\n  - name: c\n  - name: '@@x2'\n  - name: a\n  - name: '@@x1'\n  - name: b\n",
    );
    let names: Vec<&str> = g.resources.iter().map(|r| r.id.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let exported: Vec<&str> = g.exported.iter().map(|r| r.id.name.as_str()).collect();
    assert_eq!(exported, ["x2", "x1"]);
}
