//! Exported (`@@`) resources collected by other hosts through the store: the
//! articles' four agents with the original's etcd1a.yaml ... etcd1d.yaml,
//! unchanged, on loopback; with the embedded store, then with a real etcd.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Agent, example, free_port, real_etcd, wait_until};

const HOSTS: [char; 4] = ['a', 'b', 'c', 'd'];

fn dir(x: char) -> PathBuf {
    PathBuf::from(format!("/tmp/mgmt{}", x.to_ascii_uppercase()))
}

fn clean() {
    for x in HOSTS {
        let _ = std::fs::remove_dir_all(dir(x));
    }
}

/// Every host's directory holds its own f1 and every host's f2 in `exports`.
fn all_collected(exports: &[char]) -> bool {
    HOSTS.iter().all(|&x| {
        let own =
            std::fs::read_to_string(dir(x).join(format!("f1{x}"))).is_ok_and(|s| s == "i am f1\n");
        own && exports.iter().all(|&e| {
            std::fs::read_to_string(dir(x).join(format!("f2{e}"))).is_ok_and(|s| {
                s == format!("i am f2, exported from host {}\n", e.to_ascii_uppercase())
            })
        })
    })
}

/// Four agents on copies of the examples in `work`; `store`: the first one
/// serves the store (embedded) or every one is a client of `seeds`.
fn four(work: &Path, seeds: Option<&str>) -> Vec<Agent> {
    let first_client = free_port();
    HOSTS
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let g = work.join(format!("etcd1{x}.yaml"));
            std::fs::copy(example(&format!("etcd1{x}.yaml")), &g).unwrap();
            let client = if i == 0 { first_client } else { free_port() };
            let mut args: Vec<String> = vec![
                "run".into(),
                "--file".into(),
                g.display().to_string(),
                "--hostname".into(),
                format!("h{}", i + 1),
                "--prefix".into(),
                work.join(format!("state{i}")).display().to_string(),
            ];
            match seeds {
                Some(s) => args.extend(["--no-server".into(), "--seeds".into(), s.to_string()]),
                None => {
                    args.extend([
                        "--client-urls".into(),
                        format!("http://127.0.0.1:{client}"),
                        "--server-urls".into(),
                        format!("http://127.0.0.1:{}", free_port()),
                    ]);
                    if i > 0 {
                        args.extend(["--seeds".into(), format!("http://127.0.0.1:{first_client}")]);
                    }
                }
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            Agent::start(&refs)
        })
        .collect()
}

fn scenario(what: &str, seeds: Option<&str>) {
    clean();
    let work = tempfile::tempdir().unwrap();
    let agents = four(work.path(), seeds);
    let started = Instant::now();
    let took = wait_until(Duration::from_secs(30), || all_collected(&HOSTS));
    eprintln!("{what}: every host has every export after {took:?}");
    assert!(
        took.is_some(),
        "{what}: not every host collected every export"
    );

    // B drops @@file2b: the others stop managing f2b (the file stays).
    let b = work.path().join("etcd1b.yaml");
    let text = std::fs::read_to_string(&b).unwrap();
    let dropped = text.replace(
        "  - name: \"@@file2b\"\n    path: \"/tmp/mgmtB/f2b\"\n    content: |\n      i am f2, exported from host B\n    state: exists\n",
        "",
    );
    assert_ne!(dropped, text, "the example changed shape");
    std::fs::write(&b, &dropped).unwrap();
    let a_f2b = dir('a').join("f2b");
    let released = wait_until(Duration::from_secs(10), || {
        // Still managed: a drift is repaired. Released: it stays.
        std::fs::write(&a_f2b, "drift\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(&a_f2b).is_ok_and(|s| s == "drift\n")
    });
    eprintln!("{what}: f2b released on host A after {released:?}");
    assert!(released.is_some(), "{what}: host A still manages f2b");

    // B exports something new: it appears everywhere.
    let added = dropped.replace(
        "collect:",
        "  - name: \"@@file3b\"\n    path: \"/tmp/mgmtB/f3b\"\n    content: \"new from B\\n\"\ncollect:",
    );
    std::fs::write(&b, &added).unwrap();
    let t = Instant::now();
    let everywhere = wait_until(Duration::from_secs(10), || {
        HOSTS.iter().all(|&x| {
            std::fs::read_to_string(dir(x).join("f3b")).is_ok_and(|s| s == "new from B\n")
        })
    });
    eprintln!(
        "{what}: a new export everywhere after {:?}",
        everywhere.map(|_| t.elapsed())
    );
    assert!(
        everywhere.is_some(),
        "{what}: the new export did not reach every host"
    );
    for a in agents.into_iter().rev() {
        assert!(
            a.terminate().success(),
            "{what}: an agent did not stop cleanly"
        );
    }
    eprintln!("{what}: {:?} in all", started.elapsed());
    clean();
}

#[test]
fn four_agents_exchange_exports_through_the_embedded_store_and_through_a_real_etcd() {
    scenario("embedded store", None);
    let (_etcd, port) = real_etcd();
    scenario("real etcd", Some(&format!("http://127.0.0.1:{port}")));
}
