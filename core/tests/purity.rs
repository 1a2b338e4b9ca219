//! Guards the core's architecture invariant: no I/O, no clock, no randomness.
//! The core is driven by values; if it reached for the world, the simulator and
//! the fuzzer could no longer reproduce what they find.

use std::path::Path;

const FORBIDDEN_DEPS: &[&str] = &[
    "tokio",
    "notify",
    "zbus",
    "tonic",
    "openraft",
    "nix",
    "libc",
    "rand",
    "getrandom",
    "mio",
    "hyper",
];
const FORBIDDEN_CODE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "std::env",
    "tokio::",
    "Instant::now",
    "SystemTime",
    "Instant",
    // A grouped import could hide any of the above.
    "std::{",
    "thread_rng",
    "RandomState",
];

#[test]
fn core_depends_on_no_io_crates() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap_or("");
    let deps = deps.split("\n[").next().unwrap_or("");
    for line in deps.lines() {
        let name = line.split(['=', ' ']).next().unwrap_or("").trim();
        assert!(
            !FORBIDDEN_DEPS.contains(&name),
            "core must not depend on {name}"
        );
    }
}

#[test]
fn core_sources_do_no_io() {
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for bad in FORBIDDEN_CODE {
                    assert!(
                        !text.contains(bad),
                        "{} uses {bad}: the core takes time and events as inputs",
                        path.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "found only {checked} source files");
}
