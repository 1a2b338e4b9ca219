//! A tiny graph notation for tables, and readers of `to_json()`.
//!
//! Resources: `a` is a noop, `a!` a noop with `autogroup: false`, `x:a` an exec,
//! `f:a:/path` a file, `f!:a:/path` a file with `autoedge: false`,
//! `r:a` a noop with `retry: 3`. Edges: `a>b` (from a to b, by name).

use std::collections::BTreeMap;

use mgmt_core::{Graph, compile};

pub fn yaml(resources: &str, edges: &str) -> String {
    let mut kinds: BTreeMap<String, &str> = BTreeMap::new();
    let (mut noop, mut file, mut exec) = (String::new(), String::new(), String::new());
    for tok in resources.split_whitespace() {
        let parts: Vec<&str> = tok.split(':').collect();
        match parts.as_slice() {
            ["x", name] => {
                kinds.insert(name.to_string(), "exec");
                exec += &format!("  - {{name: {name}, cmd: \"true\"}}\n");
            }
            ["r", name] => {
                kinds.insert(name.to_string(), "noop");
                noop += &format!("  - {{name: {name}, meta: {{retry: 3}}}}\n");
            }
            [f @ ("f" | "f!"), name, path] => {
                kinds.insert(name.to_string(), "file");
                let meta = if *f == "f!" {
                    ", meta: {autoedge: false}"
                } else {
                    ""
                };
                file += &format!("  - {{name: {name}, path: \"{path}\"{meta}}}\n");
            }
            [name] => match name.strip_suffix('!') {
                Some(n) => {
                    kinds.insert(n.to_string(), "noop");
                    noop += &format!("  - {{name: {n}, meta: {{autogroup: false}}}}\n");
                }
                None => {
                    kinds.insert(name.to_string(), "noop");
                    noop += &format!("  - {{name: {name}}}\n");
                }
            },
            _ => panic!("bad resource token {tok:?}"),
        }
    }
    let mut out = String::from("graph: t\nresources:\n");
    for (k, list) in [("noop", noop), ("file", file), ("exec", exec)] {
        if !list.is_empty() {
            out += &format!("  {k}:\n{list}");
        }
    }
    let edges: Vec<&str> = edges.split_whitespace().collect();
    if !edges.is_empty() {
        out += "edges:\n";
        for e in edges {
            let (notify, e) = match e.strip_suffix('*') {
                Some(e) => (true, e),
                None => (false, e),
            };
            let (f, t) = e.split_once('>').expect("edge a>b");
            out += &format!(
                "- {{name: {f}_{t}, notify: {notify}, from: {{kind: {}, name: {f}}}, to: {{kind: {}, name: {t}}}}}\n",
                kinds[f], kinds[t]
            );
        }
    }
    out
}

pub fn ok(text: &str) -> Graph {
    match compile("t.yaml", text) {
        Ok(g) => g,
        Err(e) => panic!("expected success, got:\n{e}\n--- in\n{text}"),
    }
}

/// `to_json()` in the table notation: vertices as `head+member+...` by name,
/// edges as `from>to` by head name (`~` for auto, `*` for notify).
pub fn shape(g: &Graph) -> (Vec<String>, Vec<String>) {
    let j = g.to_json();
    let mut name_of = BTreeMap::new();
    let vertices = j["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            name_of.insert(
                v["id"].as_str().unwrap().to_string(),
                v["name"].as_str().unwrap().to_string(),
            );
            let mut s = v["name"].as_str().unwrap().to_string();
            for m in v["grouped"].as_array().unwrap() {
                let id = m.as_str().unwrap();
                let name = &id[id.find('[').unwrap() + 1..id.len() - 1];
                s += "+";
                s += name;
            }
            s
        })
        .collect();
    let edges = j["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut s = format!(
                "{}>{}",
                name_of[e["from"].as_str().unwrap()],
                name_of[e["to"].as_str().unwrap()]
            );
            if e["auto"].as_bool().unwrap() {
                s += "~";
            }
            if e.get("notify").and_then(|n| n.as_bool()) == Some(true) {
                s += "*";
            }
            s
        })
        .collect();
    (vertices, edges)
}

pub fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// The compiler's notes, in words.
pub fn notes(g: &Graph) -> Vec<String> {
    g.note_texts().map(|n| n.to_string()).collect()
}
