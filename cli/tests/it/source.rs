//! file `source` with `recurse`: a directory tree kept in sync with its
//! source, event-driven on both sides, with one watch per directory.

use std::path::Path;
use std::time::Duration;

use crate::run::inotify_watches;
use crate::support::{Agent, example, run_to_end, stderr, wait_until, write};

fn same_tree(a: &Path, b: &Path) -> bool {
    fn list(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if p.is_dir() {
                    out.push((rel, None));
                    stack.push(p);
                } else {
                    out.push((rel, std::fs::read(&p).ok()));
                }
            }
        }
        out.sort();
        out
    }
    list(a) == list(b)
}

#[test]
fn a_synced_tree_follows_its_source_and_repairs_its_target_with_a_watch_per_directory() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    for i in 0..10 {
        let dir = src.join(format!("d{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for j in 0..100 {
            std::fs::write(dir.join(format!("f{j}")), format!("{i}/{j}\n")).unwrap();
        }
    }
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file:\n  - name: tree\n    path: {}/\n    source: {}/\n    \
             recurse: true\n",
            dst.display(),
            src.display()
        ),
    );
    let agent = Agent::start(&["run", "--file", &g]);
    agent.wait_for_line(
        "File[tree]: CheckApply: created directory",
        Duration::from_secs(30),
    );
    assert!(same_tree(&src, &dst), "first copy");
    let watches = inotify_watches(agent.pid());
    eprintln!("inotify watches for 2 trees of 11 directories and 1 000 files each: {watches}");
    assert!(
        watches <= 2 * 11 + 12,
        "{watches} watches: one per directory is the budget"
    );

    let synced = || same_tree(&src, &dst);
    type Step<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let steps: Vec<Step> = vec![
        (
            "source file edited",
            Box::new(|| std::fs::write(src.join("d3/f7"), "new\n").unwrap()),
        ),
        (
            "source file added",
            Box::new(|| std::fs::write(src.join("d4/new"), "n\n").unwrap()),
        ),
        (
            "source file deleted",
            Box::new(|| std::fs::remove_file(src.join("d5/f1")).unwrap()),
        ),
        (
            "source directory added with a file",
            Box::new(|| {
                std::fs::create_dir(src.join("fresh")).unwrap();
                std::fs::write(src.join("fresh/x"), "x\n").unwrap();
            }),
        ),
        (
            "file added in the new source directory",
            Box::new(|| std::fs::write(src.join("fresh/y"), "y\n").unwrap()),
        ),
        (
            "target file edited",
            Box::new(|| std::fs::write(dst.join("d6/f2"), "drift\n").unwrap()),
        ),
        (
            "target file deleted",
            Box::new(|| std::fs::remove_file(dst.join("d7/f3")).unwrap()),
        ),
        (
            "target file added",
            Box::new(|| std::fs::write(dst.join("d7/extra"), "e\n").unwrap()),
        ),
        // The agent repairs it while it goes: `rm -rf` may meet what it put back.
        (
            "target directory removed",
            Box::new(|| {
                let _ = std::fs::remove_dir_all(dst.join("d8"));
            }),
        ),
    ];
    for (what, change) in steps {
        change();
        let took = wait_until(Duration::from_secs(10), synced);
        eprintln!("{what}: in sync again after {took:?}");
        assert!(took.is_some(), "{what}: not in sync");
    }
    let after = inotify_watches(agent.pid());
    eprintln!("inotify watches after the changes: {after}");
    assert!(after <= 2 * 12 + 12, "{after} watches");
    assert!(agent.terminate().success());
}

#[test]
fn file2_runs_unchanged_on_a_source_tree_and_a_symlink_in_the_source_is_refused() {
    let src = Path::new("/var/lib/mgmt/files/some_dir");
    let dst = Path::new("/tmp/mgmt/hello");
    let _ = std::fs::remove_dir_all(dst);
    // The example's source sits under the agent's default prefix: what this
    // test creates there goes with it, the prefix itself excepted.
    let files_existed = src.parent().unwrap().exists();
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a"), "a\n").unwrap();
    std::fs::write(src.join("sub/b"), "b\n").unwrap();
    struct Gone {
        files_existed: bool,
    }
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all("/var/lib/mgmt/files/some_dir");
            if !self.files_existed {
                let _ = std::fs::remove_dir("/var/lib/mgmt/files");
            }
            let _ = std::fs::remove_dir_all("/tmp/mgmt/hello");
        }
    }
    let _gone = Gone { files_existed };
    // A file where the source has a directory: force replaces it.
    std::fs::create_dir_all(dst).unwrap();
    std::fs::write(dst.join("sub"), "in the way\n").unwrap();
    let out = run_to_end(&[
        "run",
        "--file",
        &example("file2.yaml"),
        "--converged-timeout",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(same_tree(src, dst), "{}", stderr(&out));

    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
    let out = run_to_end(&[
        "run",
        "--file",
        &example("file2.yaml"),
        "--converged-timeout",
        "0",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("link is a symbolic link"), "{err}");
    assert!(!dst.join("link").exists());
}

#[test]
fn a_copy_never_keeps_setuid_or_setgid_bits() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let tool = src.join("tool");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o6755)).unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file:\n  - name: tree\n    path: {}/\n    source: {}/\n    recurse: true\n  \
             - name: one\n    path: {}/one\n    source: {}\n",
            dst.display(),
            src.display(),
            d.path().display(),
            tool.display()
        ),
    );
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for copy in [dst.join("tool"), d.path().join("one")] {
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{}", copy.display());
    }
}
