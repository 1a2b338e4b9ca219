//! A fleet run as an operator runs it: four `mgmt run` agents with no graph
//! of their own, each on its own loopback address, filled by `mgmt deploy`
//! with one template every host renders for itself; `mgmt status` and
//! `mgmt deploy --wait` watching it converge. Through the embedded store,
//! then through a real etcd 3.4 with `--no-server --seeds`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::support::{Agent, free_port, mgmt, real_etcd, stderr, wait_until, write};

const T: Duration = Duration::from_secs(60);
const HOSTS: [&str; 4] = ["h1", "h2", "h3", "h4"];

/// Every host gets `a` and `b` under its own directory; `b` says which
/// version it is, and `VARIANT` is replaced per deploy.
const SITE: &str = r#"graph: site
# VARIANT
resources:
  file:
  - name: a
    path: "OUT/{{ host.name }}/a"
    content: "{{ host.name }} runs {{ host.os }} on {{ host.cpus }} cpus\n"
    state: exists
  - name: b
    path: "OUT/{{ host.name }}/b"
    content: "B\n"
    state: exists
"#;

/// The site with `variant` in place of the comment and `b`'s content.
fn site(out: &Path, variant: &str, b: &str) -> String {
    SITE.replace("OUT", &out.display().to_string())
        .replace("VARIANT", variant)
        .replace("B\\n", b)
}

fn run_mgmt(args: &[&str]) -> Output {
    mgmt().args(args).output().expect("mgmt runs")
}

/// The hosts `mgmt status --json` lists, as (name, reachable, JSON row).
fn status(seeds: &str) -> Vec<(String, bool, serde_json::Value)> {
    let out = run_mgmt(&["status", "--json", "--seeds", seeds]);
    if !out.status.success() {
        return Vec::new();
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    rows.into_iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap_or("").to_string(),
                r["reachable"].as_bool().unwrap_or(false),
                r,
            )
        })
        .collect()
}

fn deploy(seeds: &str, file: &str, extra: &[&str]) -> Output {
    let mut args = vec!["deploy", "--seeds", seeds, "--file", file];
    args.extend(extra);
    run_mgmt(&args)
}

/// `mgmt run --converged-timeout 0` of `host`, following the deploys.
fn one_shot(work: &Path, seeds: &str, host: &str) -> Output {
    let args = one_shot_args(work, seeds, host);
    run_mgmt(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn one_shot_args(work: &Path, seeds: &str, host: &str) -> Vec<String> {
    let prefix = work.join(format!("state-{host}")).display().to_string();
    [
        "run",
        "--hostname",
        host,
        "--prefix",
        &prefix,
        "--no-server",
        "--seeds",
        seeds,
        "--converged-timeout",
        "0",
    ]
    .map(String::from)
    .to_vec()
}

/// CheckApply count of each resource in an agent's `--report`.
fn checks(report: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(report).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out: Vec<(String, u64)> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resource"].as_str().unwrap().to_string(),
                r["checks"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

struct Fleet {
    agents: Vec<Option<Agent>>,
    reports: Vec<PathBuf>,
    /// What `mgmt deploy` and `mgmt status` are given.
    seeds: String,
}

/// Four agents with no `--file`; `etcd`: clients of that etcd, else h1
/// starts the embedded store and the others join it.
fn start(work: &Path, etcd: Option<&str>) -> Fleet {
    let first = format!("http://127.0.0.21:{}", free_port());
    let mut agents = Vec::new();
    let mut reports = Vec::new();
    for (i, host) in HOSTS.iter().enumerate() {
        let ip = format!("127.0.0.{}", 21 + i);
        let report = work.join(format!("{host}.report.json"));
        let mut args: Vec<String> = [
            "run",
            "--hostname",
            host,
            "--prefix",
            &work.join(format!("state-{host}")).display().to_string(),
            "--report",
            &report.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        match etcd {
            Some(url) => args.extend(["--no-server".into(), "--seeds".into(), url.into()]),
            None => {
                let client = if i == 0 {
                    first.clone()
                } else {
                    format!("http://{ip}:{}", free_port())
                };
                args.extend([
                    "--client-urls".into(),
                    client,
                    "--server-urls".into(),
                    format!("http://{ip}:{}", free_port()),
                    "--ideal-cluster-size".into(),
                    "3".into(),
                ]);
                if i > 0 {
                    args.extend(["--seeds".into(), first.clone()]);
                }
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = Agent::start(&refs);
        if i == 0 && etcd.is_none() {
            agent.wait_for_line("following the cluster's deploys", T);
        }
        agents.push(Some(agent));
        reports.push(report);
    }
    Fleet {
        agents,
        reports,
        seeds: etcd.map_or(first, str::to_string),
    }
}

fn scenario(etcd: Option<&str>) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let mut fleet = start(work.path(), etcd);
    let seeds = fleet.seeds.clone();

    // Before any deploy every agent runs an empty graph and says so.
    let ok = wait_until(T, || {
        let rows = status(&seeds);
        rows.len() == 4
            && rows
                .iter()
                .all(|(_, alive, r)| *alive && r["status"]["source"] == "none")
    });
    assert!(
        ok.is_some(),
        "four agents waiting for a deploy: {:?}",
        status(&seeds)
    );
    // A one-shot run with no deploy to apply says so and fails.
    let early = one_shot(work.path(), &seeds, "h0");
    assert_eq!(early.status.code(), Some(1), "{}", stderr(&early));
    assert!(
        stderr(&early).contains("no deploy to apply here"),
        "{}",
        stderr(&early)
    );

    // Deploy 1: each host renders the template for itself. (The
    // directories exist: a parent's creation would be one more event.)
    for h in HOSTS {
        std::fs::create_dir_all(out.join(h)).unwrap();
    }
    let v1 = write(work.path(), "site.yaml", &site(&out, "v1", "B\\n"));
    let o = deploy(&seeds, &v1, &["--wait", "--timeout", "60"]);
    assert!(o.status.success(), "deploy 1: {}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().next(), Some("1"));
    for h in HOSTS {
        let a = std::fs::read_to_string(out.join(h).join("a")).unwrap();
        assert!(a.starts_with(&format!("{h} runs ")), "{h}: {a:?}");
        assert!(!a.contains("{{"), "{h}: {a:?}");
        assert_eq!(
            std::fs::read_to_string(out.join(h).join("b")).unwrap(),
            "B\n"
        );
    }
    let rows = status(&seeds);
    for (h, alive, r) in rows.iter().filter(|(h, ..)| h != "h0") {
        assert!(*alive, "{h}");
        assert_eq!(r["status"]["source"]["deploy"], 1, "{h}: {r}");
        assert_eq!(r["status"]["state"], "converged", "{h}: {r}");
        assert_eq!(r["status"]["facts"]["name"], h.as_str(), "{h}: {r}");
    }

    // What h2 would run, rendered with the facts it published.
    let probe = write(
        work.path(),
        "probe.yaml",
        "graph: probe\nresources:\n  noop:\n  - name: \"n-{{ host.name }}-{{ host.os }}\"\n",
    );
    let graph_of = |host: &str| {
        run_mgmt(&[
            "graph",
            "--file",
            &probe,
            "--hostname",
            host,
            "--from-cluster",
            "--seeds",
            &seeds,
        ])
    };
    let shown = graph_of("h2");
    assert!(shown.status.success(), "{}", stderr(&shown));
    let h2_os = rows.iter().find(|(h, ..)| h == "h2").unwrap().2["status"]["facts"]["os"].clone();
    let want = format!("Noop[n-h2-{}]", h2_os.as_str().unwrap());
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&want),
        "{want}"
    );
    assert_eq!(graph_of("h9").status.code(), Some(2));

    // Deploy 2 changes h2's render only: only h2's `b` runs again.
    let v2 = write(
        work.path(),
        "site2.yaml",
        &site(
            &out,
            "v2",
            "{% if host.name == 'h2' %}B2{% else %}B{% endif %}\\n",
        ),
    );
    let o = deploy(&seeds, &v2, &["--wait", "--timeout", "60"]);
    assert!(o.status.success(), "deploy 2: {}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("h2/b")).unwrap(), "B2\n");
    assert_eq!(std::fs::read_to_string(out.join("h1/b")).unwrap(), "B\n");

    // Rollback: a new deploy (3) with deploy 1's text.
    let o = run_mgmt(&["deploy", "--seeds", &seeds, "--rollback", "1", "--wait"]);
    assert!(o.status.success(), "rollback: {}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().next(), Some("3"));
    assert_eq!(std::fs::read_to_string(out.join("h2/b")).unwrap(), "B\n");
    let list = run_mgmt(&["deploy", "--seeds", &seeds, "--list"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.contains("(rollback to 1)"), "{list}");
    // The same text again writes nothing: a pipeline may run twice.
    let o = deploy(&seeds, &v1, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "3");
    let shown = run_mgmt(&["deploy", "--seeds", &seeds, "--show", "3"]);
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout),
        std::fs::read_to_string(&v1).unwrap()
    );

    // A graph h3 cannot render is refused, naming the host and the line;
    // nothing is written.
    let bad_text = site(
        &out,
        "{% if host.name == 'h3' %}{{ host.no_such_fact }}{% endif %}",
        "B\\n",
    );
    let bad = write(work.path(), "bad.yaml", &bad_text);
    let o = deploy(&seeds, &bad, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("host h3: error: bad.yaml (deploy):2:"),
        "{err}"
    );
    assert!(!err.contains("host h1"), "{err}");
    let list = run_mgmt(&["deploy", "--seeds", &seeds, "--list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 4);

    // With --force it is deploy 4: h3 keeps deploy 3 and says why; --wait
    // exits 1 with h3's row.
    let o = deploy(&seeds, &bad, &["--force", "--wait", "--timeout", "60"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("1 hosts did not converge"), "{err}");
    let rows = status(&seeds);
    let h3 = &rows.iter().find(|(h, ..)| h == "h3").unwrap().2["status"];
    assert_eq!(h3["source"]["deploy"], 3, "{h3}");
    assert_eq!(h3["error"]["deploy"], 4, "{h3}");
    let message = h3["error"]["message"].as_str().unwrap();
    assert!(message.contains("bad.yaml):2:"), "{message}");
    for (h, _, r) in rows.iter().filter(|(h, ..)| h != "h3" && h != "h0") {
        assert_eq!(r["status"]["source"]["deploy"], 4, "{h}: {r}");
    }
    let table = run_mgmt(&["status", "--seeds", &seeds]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("cannot run deploy 4"), "{table}");

    // A killed agent stays listed, as unreachable.
    let h4 = fleet.agents[3].take().unwrap();
    drop(h4);
    let ok = wait_until(T, || {
        status(&seeds).iter().any(|(h, alive, r)| {
            h == "h4" && !alive && r["status"]["unreachable_since"].is_string()
        })
    });
    assert!(
        ok.is_some(),
        "h4 never shown unreachable: {:?}",
        status(&seeds)
    );
    let table = run_mgmt(&["status", "--seeds", &seeds]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("unreachable since"), "{table}");

    // A one-shot run (`--converged-timeout 0`) applies the newest deploy
    // its render allows and exits: h5 has not run before.
    let h5 = one_shot(work.path(), &seeds, "h5");
    assert!(h5.status.success(), "{}", stderr(&h5));
    assert!(stderr(&h5).contains("running deploy 4"), "{}", stderr(&h5));
    assert_eq!(std::fs::read_to_string(out.join("h5/b")).unwrap(), "B\n");
    // Its last status says what it did.
    let rows = status(&seeds);
    let h5 = &rows.iter().find(|(h, ..)| h == "h5").unwrap().2["status"];
    assert_eq!(h5["source"]["deploy"], 4, "{h5}");
    assert_eq!(h5["state"], "converged", "{h5}");
    // A one-shot run of a local file that needs nothing from the store runs
    // its graph while its client connects, and still leaves its status.
    let local = work.path().join("local.yaml");
    let local_file = out.join("h6-local");
    std::fs::write(
        &local,
        format!(
            "graph: local\nresources:\n  file:\n  - name: l\n    path: {}\n    content: \"L\\n\"\n",
            local_file.display()
        ),
    )
    .unwrap();
    let mut args: Vec<String> = one_shot_args(work.path(), &seeds, "h6");
    args.extend(["--file".to_string(), local.display().to_string()]);
    let h6 = run_mgmt(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(h6.status.success(), "{}", stderr(&h6));
    assert_eq!(std::fs::read_to_string(&local_file).unwrap(), "L\n");
    let rows = status(&seeds);
    let h6 = &rows.iter().find(|(h, ..)| h == "h6").unwrap().2["status"];
    assert_eq!(h6["source"]["file"], local.display().to_string(), "{h6}");
    assert_eq!(h6["state"], "converged", "{h6}");

    // Unchanged renders ran nothing again: h1 and h3 checked each file once,
    // h2 its `b` three times (deploys 1, 2, 3).
    for ((host, agent), report) in HOSTS
        .iter()
        .zip(&mut fleet.agents)
        .zip(&fleet.reports)
        .take(3)
    {
        assert!(agent.take().unwrap().terminate().success());
        let b = if *host == "h2" { 3 } else { 1 };
        assert_eq!(
            checks(report),
            vec![("File[a]".to_string(), 1), ("File[b]".to_string(), b)],
            "{host}"
        );
    }
}

#[test]
fn four_agents_follow_deploys_through_the_embedded_store() {
    scenario(None);
}

#[test]
fn four_client_agents_follow_deploys_through_a_real_etcd() {
    let (_etcd, port) = real_etcd();
    scenario(Some(&format!("http://127.0.0.1:{port}")));
}
