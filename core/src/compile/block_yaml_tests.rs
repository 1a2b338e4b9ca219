//! The fast reader against serde_saphyr: where it accepts a text, it must
//! read what serde_saphyr reads, locations included.

use super::super::parse_fully;
use super::super::yaml::GraphYaml;

/// Both readers' results, as text; `None` where the fast reader declined.
fn both(text: &str) -> (Option<String>, String) {
    let fast = super::from_str::<GraphYaml>(text).map(|g| format!("{g:#?}"));
    let full = match parse_fully(text) {
        Ok(g) => format!("{g:#?}"),
        Err(e) => format!("error: {e}"),
    };
    (fast, full)
}

/// The fast reader accepts `text` and reads what serde_saphyr reads.
fn accepted(text: &str) {
    match both(text) {
        (Some(fast), full) => assert_eq!(fast, full, "in:\n{text}"),
        (None, full) => panic!("declined:\n{text}\nserde_saphyr read:\n{full}"),
    }
}

/// The examples that are YAML as written (fleet1.yaml is a template).
const EXAMPLES: [&str; 22] = [
    include_str!("../../../examples/autoedges1.yaml"),
    include_str!("../../../examples/autoedges3.yaml"),
    include_str!("../../../examples/autogroup0.yaml"),
    include_str!("../../../examples/autogroup1.yaml"),
    include_str!("../../../examples/autogroup2.yaml"),
    include_str!("../../../examples/etcd1a.yaml"),
    include_str!("../../../examples/etcd1b.yaml"),
    include_str!("../../../examples/etcd1c.yaml"),
    include_str!("../../../examples/etcd1d.yaml"),
    include_str!("../../../examples/exec1.yaml"),
    include_str!("../../../examples/file1.yaml"),
    include_str!("../../../examples/file2.yaml"),
    include_str!("../../../examples/graph0.yaml"),
    include_str!("../../../examples/host1.yaml"),
    include_str!("../../../examples/msg1.yaml"),
    include_str!("../../../examples/noop1.yaml"),
    include_str!("../../../examples/parallel1.yaml"),
    include_str!("../../../examples/pkg1.yaml"),
    include_str!("../../../examples/pkg2.yaml"),
    include_str!("../../../examples/svc1.yaml"),
    include_str!("../../../examples/timer1.yaml"),
    include_str!("../../../examples/timer2.yaml"),
];

#[test]
fn every_example_is_read_fast_and_alike() {
    for text in EXAMPLES {
        accepted(text);
    }
}

/// Scalars that YAML reads in surprising ways, or that need quoting.
const TRICKY: &[&str] = &[
    "a",
    "n000001",
    "/tmp/x y",
    "true",
    "True",
    "yes",
    "no",
    "on",
    "y",
    "null",
    "~",
    "",
    "0644",
    "644",
    "0",
    "-1",
    "+5",
    "1.5",
    ".inf",
    "0x1F",
    "1_000",
    "0o17",
    "a: b",
    "a:b",
    "a #b",
    "a#b",
    "x\ny",
    "x\n\ny\n",
    "  lead",
    "trail  ",
    "é:é",
    "'q'",
    "\"dq\"",
    "back\\slash",
    "-dash",
    "- x",
    "@at",
    "%p",
    "a,b",
    "{x}",
    "[y]",
    "tab\there",
    "\u{1F600}",
    "key:",
    ":x",
    "? q",
    "&a",
    "*b",
    "!t",
    "|",
    ">",
    "#c",
    "a\\nb",
    "99999999999999999999",
    "-0",
    "00",
    "root",
    "exists",
    "5",
    "echo hi",
];

/// What a user would write for each key of [`KINDS`].
fn typical(key: &str) -> usize {
    let text = match key {
        "path" => "/tmp/x y",
        "mode" => "0644",
        "owner" => "root",
        "state" => "exists",
        "force" => "true",
        "interval" | "timeout" => "5",
        "cmd" => "echo hi",
        _ => "a",
    };
    TRICKY.iter().position(|&t| t == text).unwrap()
}

/// One scalar written in one of YAML's styles, at `indent` for a literal block.
fn scalar(text: &str, style: u8, indent: usize) -> String {
    match style % 4 {
        0 => text.to_string(),
        1 => format!("'{}'", text.replace('\'', "''")),
        2 => {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
                .replace('\t', "\\t");
            format!("\"{escaped}\"")
        }
        _ => {
            let pad = " ".repeat(indent + 2);
            let chomp = if text.ends_with('\n') { "" } else { "-" };
            let body: Vec<String> = text.lines().map(|l| format!("{pad}{l}")).collect();
            format!("|{chomp}\n{}", body.join("\n"))
        }
    }
}

/// Shapes the generator does not write: nested maps, lists, blank lines in
/// literals, comments in odd places, and what YAML reads differently.
const SHAPES: &[&str] = &[
    "graph: g\nresources:\n  noop:\n  - name: a\n    meta:\n      autogroup: false\n      retry: 3\n      delay: 0\n",
    "graph: g\nresources:\n  noop:\n  - {name: a, meta: {autoedge: false, retry: -1}}\n",
    "graph: g\nresources:\n  msg:\n  - name: m\n    body: hi # a comment\n    fields:\n      A_B: c\n      'X': \"y z\"\n",
    "graph: g\nresources:\n  msg:\n  - {name: m, fields: {A: b, C: d}}\n",
    "graph: g\nresources:\n  user:\n  - name: u\n    groups: [a, 'b', \"c\"]\n  - name: v\n    groups:\n    - a\n    -   b\n",
    "graph: g\nresources:\n  user:\n  - name: u\n    groups: []\n  - name: v\n    groups: [ a ,b ]\n",
    "graph: g\nresources:\n  file:\n  - name: /f\n    content: |\n        one\n\n        two\n\n\n    state: exists\n",
    "graph: g\nresources:\n  file:\n  - name: /f\n    content: |\n\n      after a blank\n",
    "graph: g\nresources:\n  file:\n  - name: /f\n    content: |\n       two\n      one\n",
    "graph: g\nresources:\n  file:\n  - name: /f\n    content: |+\n      kept\n\n",
    "graph: g\nresources:\n  file:\n  - name: /f\n    content: >\n      folded\n      text\n",
    "graph: g\nresources:\n  file:\n  - name: /f\n    content: |2\n        indented\n",
    "--- # the graph\ngraph: g\n",
    "---\ngraph: g\n...\n",
    "---\ngraph: g\n---\ngraph: h\n",
    "graph: g\ngraph: h\n",
    "graph: g\nresources:\n  noop:\n  - name: a\n    name: b\n",
    "graph: g\nresources:\n  msg:\n  - {name: m, fields: {A: b, A: d}}\n",
    "graph: g\nresources:\n   noop:\n    - name: a\n  file: []\n",
    "graph: g\nresources:\n  noop:\n  - name: a\n     comment: c\n",
    "graph: g\ncomment: a\n  continued\n",
    "graph: g\ncomment: \"a\n  continued\"\n",
    "graph: g\nresources: {noop: [{name: a}]}\n",
    "graph: g\nresources:\n  noop:\n  - name: a\nedges:\n- {name: e, from: {kind: noop, name: a}, to: {kind: noop, name: a}, notify: true}\n",
    "graph: &g g\ncomment: *g\n",
    "graph: !!str g\n",
    "graph: g\nresources:\n  noop:\n  -\n    name: a\n  - name: b\n",
    "graph: g\nresources:\n  noop:\n  - - name: a\n",
    "graph: g\nresources:\n\tnoop: []\n",
    "graph: g\r\n",
    "graph: g\nresources:\n  noop:\n  - name: a\n  -\n",
    "graph: g\nresources:\n  noop:\n  - name:\n",
    "graph: g\nresources:\n  noop:\n  - name: ~\n",
    "graph: g\nresources:\n  timer:\n  - {name: t, interval: 5}\n  - {name: u, interval: 0x5}\n",
    "graph: g\nresources:\n  timer:\n  - name: t\n    interval: 99999999999999999999\n",
    "graph: g\nresources:\n  noop:\n  - name: \"\\u00e9t\\u00e9 \\\"q\\\" \\\\\"\n  - name: 'it''s'\n",
    "graph: g\nresources:\n  noop:\n  - name: é # after\n  - {name: ü, comment: ö}\n",
    "graph: g\nunknown: 1\n",
    "graph: [g]\n",
    "graph: g\nresources:\n  noop:\n  - {name: a,}\n",
    "graph: g\nresources:\n  noop:\n  - {name: a\n  , comment: b}\n",
    "graph: g\nresources:\n  noop:\n  - {name: a} # c\n  - {name: b}#c\n",
];

#[test]
fn the_fast_reader_agrees_on_every_shape() {
    let mut accepted = 0;
    for text in SHAPES {
        if let (Some(fast), full) = both(text) {
            assert_eq!(fast, full, "in:\n{text}");
            accepted += 1;
        }
    }
    // What must be read fast, and what must not.
    assert!(accepted >= 12, "{accepted} shapes read fast");
    for text in [SHAPES[0], SHAPES[3], SHAPES[4], SHAPES[6], SHAPES[12]] {
        assert!(both(text).0.is_some(), "declined:\n{text}");
    }
    // Duplicate keys: serde_saphyr's error, with its message.
    for text in [SHAPES[15], SHAPES[16], SHAPES[17]] {
        assert!(both(text).0.is_none(), "accepted:\n{text}");
        assert!(both(text).1.starts_with("error"), "{text}");
    }
    // Anchors are serde_saphyr's to resolve.
    assert!(both(SHAPES[24]).0.is_none());
}

use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// A generated resource: its kind (in [`KINDS`]), its fields as (key, text
/// in [`TRICKY`], style), whether it is a flow map, and its name's style.
type GenResource = (usize, Vec<(usize, usize, u8)>, bool, u8);

fn resource() -> impl Strategy<Value = GenResource> {
    (
        0..4usize,
        proptest::collection::vec((0..6usize, 0..TRICKY.len(), any::<u8>()), 0..4),
        any::<bool>(),
        any::<u8>(),
    )
}

const KINDS: [(&str, &[&str]); 4] = [
    ("noop", &["comment"]),
    (
        "file",
        &["path", "content", "mode", "owner", "state", "force"],
    ),
    ("timer", &["interval"]),
    ("exec", &["cmd", "shell", "timeout", "state"]),
];

/// A graph document from generated pieces, with comments and blank lines.
fn document(name: usize, resources: &[GenResource], indent_seq: bool, noise: u8) -> String {
    let mut out = String::new();
    if noise & 1 != 0 {
        out.push_str("---\n");
    }
    if noise & 2 != 0 {
        out.push_str("# a comment\n\n");
    }
    out.push_str(&format!("graph: {}\n", scalar(TRICKY[name], noise >> 4, 0)));
    out.push_str("resources:\n");
    for (kind, (kind_name, keys)) in KINDS.iter().enumerate() {
        let mine: Vec<_> = resources.iter().filter(|r| r.0 == kind).collect();
        if mine.is_empty() {
            continue;
        }
        out.push_str(&format!("  {kind_name}:\n"));
        let dash = if indent_seq { "    " } else { "  " };
        for (i, (_, fields, flow, style)) in mine.iter().enumerate() {
            let mut entries = vec![format!("name: {}", scalar(&format!("r{i}"), *style, 0))];
            for &(key, text, style) in fields {
                let key = keys[key % keys.len()];
                let style = if *flow { style % 3 } else { style };
                let item_indent = dash.len() + 2;
                entries.push(format!(
                    "{key}: {}",
                    scalar(TRICKY[text], style, item_indent)
                ));
            }
            if *flow {
                out.push_str(&format!("{dash}- {{{}}}\n", entries.join(", ")));
            } else {
                let pad = format!("{dash}  ");
                out.push_str(&format!("{dash}- {}\n", entries.join(&format!("\n{pad}"))));
                if noise & 4 != 0 {
                    out.push_str(&format!("{pad}# after\n\n"));
                }
            }
        }
    }
    if noise & 8 != 0 && resources.len() > 1 {
        out.push_str("edges:\n- name: e1\n  from: {kind: noop, name: r0}\n  to:\n    kind: noop\n    name: r1\n");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Wherever the fast reader accepts a document, it reads what serde_saphyr
    /// reads; where serde_saphyr fails, the fast reader declines.
    /// Any text: the fast reader returns, and agrees where it accepts.
    #[test]
    fn the_fast_reader_never_panics(
        pieces in proptest::collection::vec(
            prop_oneof![
                Just("graph: g\n"), Just("resources:\n"), Just("  noop:\n"), Just("  - "),
                Just("name: "), Just("{"), Just("}"), Just("["), Just("]"), Just(", "),
                Just(": "), Just("|\n"), Just("|-\n"), Just("\n"), Just("    "), Just("#"),
                Just("\""), Just("'"), Just("\\u00e9"), Just("é"), Just("---\n"), Just("a"),
                Just("\t"), Just("5"),
            ],
            0..40,
        )
    ) {
        let text: String = pieces.concat();
        if let (Some(fast), full) = both(&text) {
            prop_assert_eq!(fast, full, "in:\n{}", text);
        }
    }

    #[test]
    fn the_fast_reader_agrees_with_serde_saphyr(
        name in 0..TRICKY.len(),
        resources in proptest::collection::vec(resource(), 0..6),
        indent_seq in any::<bool>(),
        noise in any::<u8>(),
    ) {
        let text = document(name, &resources, indent_seq, noise);
        if let (Some(fast), full) = both(&text) {
            prop_assert_eq!(fast, full, "in:\n{}", text);
        }
    }
}

#[test]
fn most_generated_documents_are_read_fast() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (
        0..2usize,
        proptest::collection::vec(resource(), 1..6),
        any::<bool>(),
        any::<u8>(),
    );
    let (mut fast, mut total) = (0, 0);
    for _ in 0..1500 {
        let (name, resources, indent_seq, noise) =
            strategy.new_tree(&mut runner).unwrap().current();
        // Only the plain strings a user would write unquoted.
        let resources: Vec<_> = resources
            .into_iter()
            .map(|(kind, fields, flow, style)| {
                let keys = KINDS[kind].1;
                let fields = fields
                    .into_iter()
                    .map(|(key, _, style)| {
                        let name = keys[key % keys.len()];
                        // Quoted, YAML reads them as strings; serde_saphyr as what is asked.
                        let style = if matches!(name, "force" | "interval" | "timeout") {
                            0
                        } else {
                            style % 3
                        };
                        (key, typical(name), style)
                    })
                    .collect();
                (kind, fields, flow, style % 3)
            })
            .collect();
        let text = document(name, &resources, indent_seq, noise);
        if parse_fully(&text).is_ok() {
            total += 1;
            fast += usize::from(both(&text).0.is_some());
        }
    }
    assert!(
        total > 150 && fast * 10 >= total * 9,
        "{fast} of {total} read fast"
    );
}
