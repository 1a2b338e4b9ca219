//! AutoEdges through `compile`: which parent-directory edges appear.
//! Files are kept apart from grouping with different directories or
//! `autogroup: false` where the shape would otherwise hide an edge.

use crate::support::{notes, ok, shape, words, yaml};

/// (name, resources, user edges, expected auto edges as `from>to` by resource name)
const TABLE: &[(&str, &str, &str, &str)] = &[
    ("no_files_no_edges", "a b", "", ""),
    ("lone_file", "f:f:/t/f", "", ""),
    ("file_under_managed_dir", "f:d:/t/ f:f:/t/f", "", "d>f"),
    (
        "nearest_ancestor_only",
        "f:t:/t/ f:a:/t/a/ f:b:/t/a/b/ f:f:/t/a/b/f",
        "",
        "a>b b>f t>a",
    ),
    (
        "skips_unmanaged_levels",
        "f:t:/t/ f:f:/t/a/b/c/f",
        "",
        "t>f",
    ),
    (
        "autoedge_false_dir_is_skipped_through",
        "f:t:/t/ f!:a:/t/a/ f:f:/t/a/f",
        "",
        "t>f",
    ),
    (
        "autoedge_false_file_gets_no_edge",
        "f:t:/t/ f!:f:/t/f f:g:/t/g",
        "",
        "t>g",
    ),
    (
        "many_files_in_one_dir_each_get_one_edge",
        "f:d:/t/ f:a:/t/a f:b:/t/b f:c:/t/c",
        "",
        "d>a d>b d>c",
    ),
    (
        "user_edge_against_the_tree_refuses_the_cycle",
        "f:d:/t/ f:f:/t/f",
        "f>d",
        "",
    ),
    (
        "indirect_cycle_is_refused",
        "f:d:/t/ f:f:/t/f x:x",
        "f>x x>d",
        "",
    ),
    (
        "duplicate_of_user_edge_is_not_added",
        "f:d:/t/ f:f:/t/f",
        "d>f",
        "",
    ),
    (
        "file_named_differently_from_its_path",
        "f:conf:/etc/app/app.conf f:dir:/etc/app/",
        "",
        "dir>conf",
    ),
    (
        "a_file_is_not_a_directory",
        "f:plain:/t/a f:f:/t/a/f",
        "",
        "",
    ),
];

#[test]
fn autoedge_table() {
    let mut failures = Vec::new();
    for &(name, res, edges, want) in TABLE {
        let g = ok(&yaml(res, edges));
        let mut got: Vec<String> = g
            .edges
            .iter()
            .filter(|e| e.auto)
            .map(|e| {
                format!(
                    "{}>{}",
                    g.resources[e.from].id.name, g.resources[e.to].id.name
                )
            })
            .collect();
        got.sort();
        if got != words(want) {
            failures.push(format!(
                "{name}: got {got:?}, want {want:?}\nnotes: {:?}",
                notes(&g)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn auto_edges_show_in_json_as_auto() {
    let text = "graph: t\nresources:\n  file:\n  - {name: /t/, meta: {autogroup: false}}\n  - {name: /t/a/, meta: {autogroup: false}}\n  - {name: /t/a/f}\n";
    let g = ok(text);
    assert_eq!(
        g.to_json()["edges"],
        serde_json::json!([
            {"from": "File[/t/]", "to": "File[/t/a/]", "auto": true},
            {"from": "File[/t/a/]", "to": "File[/t/a/f]", "auto": true},
        ])
    );
    let names: Vec<&str> = g.edges.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "autoedge:File[/t/]->File[/t/a/]",
            "autoedge:File[/t/a/]->File[/t/a/f]"
        ]
    );
    assert_eq!(
        notes(&g),
        [
            "AutoEdge: adding File[/t/] -> File[/t/a/]",
            "AutoEdge: adding File[/t/a/] -> File[/t/a/f]",
        ]
    );
}

#[test]
fn refused_autoedges_are_noted_with_the_reason() {
    let g = ok(&yaml("f:d:/t/ f:f:/t/f x:x", "f>x x>d"));
    assert_eq!(
        notes(&g),
        [
            "AutoEdge: not adding File[d] -> File[f]: it would create a cycle \
          (File[f] already reaches File[d]: File[f] -> Exec[x] -> File[d])"
        ]
    );
    let g = ok(&yaml("f:d:/t/ f:f:/t/f", "d>f"));
    assert_eq!(
        notes(&g),
        ["AutoEdge: not adding File[d] -> File[f]: already an edge (d_f)"]
    );
    assert_eq!(shape(&g).1, ["d>f"]);
}

#[test]
fn disabling_autoedge_removes_the_edges_of_that_resource() {
    let on = ok(&yaml("f:d:/t/ f:f:/t/f", ""));
    assert_eq!(shape(&on).1, ["d>f~"]);
    let off = ok(&yaml("f!:d:/t/ f:f:/t/f", ""));
    assert!(off.edges.is_empty());
    let off = ok(&yaml("f:d:/t/ f!:f:/t/f", ""));
    assert!(off.edges.is_empty());
}

#[test]
fn example_autoedges1_shows_parent_directory_edges() {
    let g = ok(include_str!("../../../examples/autoedges1.yaml"));
    assert_eq!(
        shape(&g),
        (
            words("a1 c1 deep dir-a+dir-c+top root skip"),
            words("dir-a>a1~ dir-a>c1~ dir-a>deep~ root>dir-a~")
        )
    );
    let mut auto: Vec<String> = g
        .edges
        .iter()
        .map(|e| e.name.replace("/tmp/mgmt-autoedges", ""))
        .collect();
    auto.sort();
    assert_eq!(
        auto,
        [
            "autoedge:File[dir-a]->File[a1]",
            "autoedge:File[dir-a]->File[deep]",
            "autoedge:File[dir-c]->File[c1]",
            "autoedge:File[root]->File[dir-a]",
            "autoedge:File[root]->File[dir-c]",
            "autoedge:File[root]->File[top]",
        ]
    );
}
