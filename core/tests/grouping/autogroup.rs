//! Graph -> expected grouped graph. Vertices are listed in `Kind[name]` order
//! (exec, file, noop), each as `head+members`; edges as `from>to`.

use crate::support::{notes, ok, shape, words, yaml};

/// (name, resources, edges, expected vertices, expected edges)
const TABLE: &[(&str, &str, &str, &str, &str)] = &[
    ("empty", "", "", "", ""),
    ("single", "a", "", "a", ""),
    ("pair_without_path_groups", "a b", "", "a+b", ""),
    ("three_way_group", "a b c", "", "a+b+c", ""),
    ("pair_with_path_stays_apart", "a b", "a>b", "a b", "a>b"),
    (
        "chain_of_three_stays_apart",
        "a b c",
        "a>b b>c",
        "a b c",
        "a>b b>c",
    ),
    (
        "path_through_another_kind_keeps_pair_apart",
        "a b x:x",
        "a>x x>b",
        "x a b",
        "x>b a>x",
    ),
    (
        "diamond_groups_its_middle",
        "a b c d",
        "a>b a>c b>d c>d",
        "a b+c d",
        "a>b b>d",
    ),
    (
        "two_parallel_chains_group_level_by_level",
        "a b c d",
        "a>b c>d",
        "a+c b+d",
        "a>b",
    ),
    (
        "z_shape_groups_into_two",
        "a b c d",
        "a>b c>b c>d",
        "a+c b+d",
        "a>b",
    ),
    (
        // Greedy in name order: a joins c first, which puts d before {a,c}
        // before b, so nothing else can group. {a,d} + {b,c} would have made
        // two vertices; the result is maximal, not minimum.
        "greedy_choice_blocks_a_later_group",
        "a b c d",
        "a>b d>c",
        "a+c b d",
        "a>b d>a",
    ),
    (
        "chain_and_a_loner_group_at_the_head",
        "a b c d e f",
        "a>b b>c c>d d>e",
        "a+f b c d e",
        "a>b b>c c>d d>e",
    ),
    (
        "edges_to_one_target_are_deduplicated",
        "a b c",
        "a>c b>c",
        "a+b c",
        "a>c",
    ),
    (
        "notify_survives_grouping",
        "a b c",
        "a>c b>c*",
        "a+b c",
        "a>c*",
    ),
    ("opted_out_member_stays_alone", "a b! c", "", "a+c b", ""),
    ("all_opted_out", "a! b!", "", "a b", ""),
    ("different_retry_never_groups", "a r:b c", "", "a+c b", ""),
    ("execs_never_group", "x:x x:y", "", "x y", ""),
    (
        "kinds_never_mix",
        "a b x:x x:y f:f:/t/f f:g:/t/g",
        "",
        "x y f+g a+b",
        "",
    ),
    (
        "files_group_per_directory",
        "f:f1:/t/a/1 f:f2:/t/a/2 f:f3:/t/b/3 f:f4:/t/b/4 f:f5:/t/c/5",
        "",
        "f1+f2 f3+f4 f5",
        "",
    ),
    (
        "directory_groups_with_its_siblings_not_its_children",
        "f:d:/t/a/ f:e:/t/b f:k:/t/a/k f:l:/t/a/l",
        "",
        "d+e k+l",
        "d>k~",
    ),
    (
        "group_keeps_edges_of_every_member",
        "a b c d e",
        "c>a d>b a>e",
        "a+b c+d e",
        "a>e c>a",
    ),
    (
        "wide_fan_out_groups_all_leaves",
        "r a b c d",
        "r>a r>b r>c r>d",
        "a+b+c+d r",
        "r>a",
    ),
];

#[test]
fn autogroup_table() {
    let mut failures = Vec::new();
    for &(name, res, edges, want_v, want_e) in TABLE {
        let g = ok(&yaml(res, edges));
        let got = shape(&g);
        let want = (words(want_v), words(want_e));
        if got != want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn grouping_notes_name_each_decision() {
    let g = ok(&yaml("a b c d", "a>b c>d"));
    let grouping: Vec<String> = notes(&g)
        .into_iter()
        .filter(|n| n.starts_with("Grouping"))
        .collect();
    assert_eq!(
        grouping,
        [
            "Grouping: Noop[c] into Noop[a]",
            "Grouping: Noop[d] into Noop[b]"
        ]
    );
}

#[test]
fn grouped_json_lists_members_and_dot_draws_one_node() {
    let g = ok(&yaml("a b c", "a>c"));
    assert_eq!(
        g.to_json(),
        serde_json::json!({
            "graph": "t",
            "vertices": [
                {"id": "Noop[a]", "kind": "noop", "name": "a", "grouped": ["Noop[b]"]},
                {"id": "Noop[c]", "kind": "noop", "name": "c", "grouped": []},
            ],
            "edges": [{"from": "Noop[a]", "to": "Noop[c]", "auto": false}],
            "resource_edges": [{"from": "Noop[a]", "to": "Noop[c]", "auto": false}],
        })
    );
    let dot = g.to_dot();
    assert!(
        dot.contains("\"Noop[a]\" [label=\"Noop[a]\\nNoop[b]\"];"),
        "{dot}"
    );
    assert!(!dot.contains("\"Noop[b]\" ["), "{dot}");
}

#[test]
fn grouping_keeps_members_identity_and_params() {
    let g = ok(
        "graph: t\nresources:\n  noop:\n  - {name: a, comment: one}\n  - {name: b, comment: two}\n",
    );
    assert_eq!(g.vertices.len(), 1);
    assert_eq!(g.vertices[0].members, [0, 1]);
    assert_eq!(g.resources.len(), 2);
    let comments: Vec<_> = g
        .resources
        .iter()
        .map(|r| match &r.params {
            mgmt_core::resource::Params::Noop { comment } => comment.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(comments, [Some("one".to_string()), Some("two".to_string())]);
}

#[test]
fn groupable_is_per_kind_and_meta() {
    use mgmt_core::autogroup::groupable;
    let g = ok(&yaml(
        "a b! r:c x:x x:y f:f:/t/a/f f:g:/t/a/g/ f:h:/t/b/h",
        "",
    ));
    let r = |name: &str| {
        g.resources
            .iter()
            .find(|r| r.id.name == name)
            .expect("resource")
    };
    assert!(groupable(r("a"), r("a")));
    assert!(!groupable(r("a"), r("b")), "autogroup: false opts out");
    assert!(!groupable(r("a"), r("c")), "retry differs");
    assert!(!groupable(r("x"), r("y")), "exec never groups");
    assert!(groupable(r("f"), r("g")), "a file and a directory in /t/a/");
    assert!(!groupable(r("f"), r("h")), "different directories");
    assert!(!groupable(r("a"), r("f")), "kinds never mix");
}

#[test]
fn example_autogroup0_groups_across_the_chains() {
    let g = ok(include_str!("../../../examples/autogroup0.yaml"));
    assert_eq!(
        shape(&g),
        (words("a1+b1 a2+b2 a3 solo"), words("a1>a2 a2>a3"))
    );
}
