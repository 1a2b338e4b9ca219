//! Guards ARCHITECTURE.md's layering invariant: in every crate of the
//! workspace, no two top-level modules import each other, directly or round
//! a circle. Each module's dependencies sit below it, so a module can be read
//! (and moved to a crate of its own) with only what is beneath it.
//!
//! A module is a file under `src/` or a directory with its files; what it
//! imports is every `crate::name` its code (not its comments, its tests or
//! its doc-only imports) names, where `name` is another module or an item
//! the crate root re-exports from one (`crate::StoreConfig` is `config`'s).
//! The crate root only declares and re-exports, so it is no module here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &["core", "io", "store", "cli", "sim"];

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut circles = Vec::new();
    for krate in CRATES {
        let imports = module_imports(&workspace.join(krate).join("src"));
        assert!(imports.len() > 1, "{krate}: no modules found");
        for circle in circles_of(&imports) {
            circles.push(format!("{krate}: {}", circle.join(", ")));
        }
    }
    assert!(
        circles.is_empty(),
        "modules that import each other round a circle:\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_is_found_and_a_layering_is_not() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    let circle = circles_of(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]));
    assert_eq!(circle, [["a", "b", "c"]]);
    assert!(circles_of(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    let modules = names(&["a", "b", "c", "d", "e"]);
    let reexported = BTreeMap::from([("Item".to_string(), "e".to_string())]);
    let source = "use crate::{a::X, b};\nlet x = crate::c::f(); // crate::d\n\
                  #[cfg(doc)]\nuse crate::d::Y;\nlet y: crate::Item;\n";
    assert_eq!(
        imports_in(source, &modules, &reexported),
        names(&["a", "b", "c", "e"])
    );
    assert_eq!(
        reexports("pub use a::{X, Y};\npub use b::Z;\nuse c::W;\npub use d::{\n    V,\n};\n"),
        BTreeMap::from([
            ("X".to_string(), "a".to_string()),
            ("Y".to_string(), "a".to_string()),
            ("Z".to_string(), "b".to_string()),
            ("V".to_string(), "d".to_string()),
        ])
    );
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Each top-level module of the crate whose sources are in `src`, and the
/// other modules it imports.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut reexported = BTreeMap::new();
    for root in ["lib.rs", "main.rs"] {
        if let Ok(text) = std::fs::read_to_string(src.join(root)) {
            reexported.extend(reexports(&text));
        }
    }
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            files.insert(stem, rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && !["lib", "main"].contains(&&*stem)
        {
            files.insert(stem, vec![path]);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, paths)| {
            let mut imports = BTreeSet::new();
            for path in paths {
                let is_tests = path
                    .file_stem()
                    .is_some_and(|s| s.to_string_lossy().ends_with("tests"));
                if !is_tests {
                    let source = std::fs::read_to_string(path).unwrap();
                    imports.extend(imports_in(&source, &modules, &reexported));
                }
            }
            imports.remove(module);
            (module.clone(), imports)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// What a crate root re-exports: item name -> the module it comes from
/// (`pub use module::{A, B};`).
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for statement in root.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            // `self as kv` or `a::B` name the module itself or deeper items.
            if item.chars().all(|c| c.is_alphanumeric() || c == '_') {
                out.insert(item.to_string(), module.trim().to_string());
            }
        }
    }
    out
}

/// The modules among `modules` that `source` names as `crate::module`, or
/// through an item the root re-exports from one (`reexported`), outside
/// comments, doc-only imports and its unit tests.
fn imports_in(
    source: &str,
    modules: &BTreeSet<String>,
    reexported: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut doc_only = false;
    let code: String = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or("")
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .filter(|line| {
            // `#[cfg(doc)]` before a `use`: an import for doc links only,
            // up to its `;`.
            if line.trim() == "#[cfg(doc)]" {
                doc_only = true;
                return false;
            }
            let skip = doc_only;
            if doc_only && line.contains(';') {
                doc_only = false;
            }
            !skip
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b}`: the first name of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        found.insert(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found
        .into_iter()
        .map(|name| reexported.get(&name).cloned().unwrap_or(name))
        .filter(|m| modules.contains(m))
        .collect()
}

/// The strongly connected groups of more than one module (Tarjan's
/// algorithm), each sorted, in order.
fn circles_of(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Search<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    group.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !search.index.contains_key(v.as_str()) {
            search.visit(v);
        }
    }
    search.found.sort();
    search.found
}
