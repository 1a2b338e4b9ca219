//! The fleet: `mgmt deploy` (a graph into the cluster, checked for every host
//! first), `mgmt status` (one row per host), and, for `mgmt run`, this
//! host's status as it publishes it. Keys and values: `mgmt_core::deploy`
//! and `mgmt_core::fleet`; store access: `mgmt_store::fleet`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use mgmt_core::Graph;
use mgmt_core::deploy::{Deploy, Draft};
use mgmt_core::facts::Facts;
use mgmt_core::fleet::{self, DeployError, HostStatus, Row, Source, State, Verdict};
use mgmt_store::client::{ClientConfig, EtcdClient, WatchEvent};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::args::{ClientArgs, DeployArgs, StatusArgs, TlsArgs};
use crate::{EXIT_BAD_INPUT, EXIT_FAILED};

impl ClientArgs {
    fn connect(&self) -> Result<EtcdClient, String> {
        let endpoints = mgmt_store::parse_urls(&self.seeds).map_err(|e| e.to_string())?;
        if endpoints.is_empty() {
            return Err("--seeds needs at least one URL".into());
        }
        let tls = TlsArgs::client_only(
            self.cert_file.clone(),
            self.key_file.clone(),
            self.trusted_ca_file.clone(),
        );
        let links = crate::tls::links(&tls, false, &[], &[], &endpoints)?;
        let mut config = ClientConfig::new(endpoints);
        config.env = mgmt_store::Env::tokio().with_tls(links);
        config.user = self.credentials()?;
        EtcdClient::new(config).map_err(|e| e.to_string())
    }

    fn credentials(&self) -> Result<Option<(String, String)>, String> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        match (user.split_once(':'), &self.password) {
            (Some((name, password)), None) => Ok(Some((name.into(), password.into()))),
            (None, Some(password)) => Ok(Some((user.clone(), password.clone()))),
            (Some(_), Some(_)) => {
                Err("--user NAME:PASSWORD and --password: give the password once".into())
            }
            (None, None) => Err(format!(
                "--user {user}: give its password: --user {user}:PASSWORD or --password"
            )),
        }
    }

    /// Who the cluster knows this client as: the user, else the name in
    /// the client certificate.
    fn identity(&self) -> Option<String> {
        match &self.user {
            Some(u) => Some(u.split_once(':').map_or(u.as_str(), |(n, _)| n).to_string()),
            None => self
                .cert_file
                .as_deref()
                .and_then(|f| mgmt_store::tls::certificate_name(f).ok()),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            report!("error: cannot start the runtime: {e}");
            ExitCode::from(EXIT_FAILED)
        })
}

/// Now, as RFC 3339 (UTC, whole seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Who deploys: the etcd user or the client certificate's name when there
/// is one (the cluster knows the deployer by it), else the user this runs
/// as, at this machine.
fn author(client: &ClientArgs) -> String {
    if let Some(name) = client.identity() {
        return name;
    }
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("uid{}", nix::unistd::getuid()));
    format!("{user}@{}", crate::machine_hostname())
}

pub fn deploy(args: DeployArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let client = match rt.block_on(async { args.client.connect() }) {
        Ok(c) => c,
        Err(e) => {
            report!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    rt.block_on(deploy_with(&client, &args))
}

async fn deploy_with(client: &EtcdClient, args: &DeployArgs) -> ExitCode {
    let failed = |e: &dyn std::fmt::Display| {
        report!("error: {e}");
        ExitCode::from(EXIT_FAILED)
    };
    if args.list || args.show.is_some() || args.rollback.is_some() {
        let all = match mgmt_store::fleet::list(client).await {
            Ok((_, all)) => all,
            Err(e) => return failed(&e),
        };
        if args.list {
            let mut out = String::from("ID\tTIME\tAUTHOR\tSHA256\tFILE\n");
            for d in &all {
                out += &format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    d.id,
                    d.time,
                    d.author,
                    &d.sha256[..12],
                    d.file
                );
            }
            return crate::print_stdout(out.as_bytes());
        }
        if let Some(id) = args.show {
            return match all.iter().find(|d| d.id == id) {
                Some(d) => crate::print_stdout(d.text.as_bytes()),
                None => {
                    report!("error: no deploy {id} (mgmt deploy --list shows the kept ones)");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            };
        }
        let want = args.rollback.unwrap_or(0);
        let target = if want == 0 {
            all.iter().rev().nth(1)
        } else {
            all.iter().find(|d| d.id == want)
        };
        let Some(target) = target else {
            report!(
                "error: no deploy {} to roll back to (mgmt deploy --list shows the kept ones)",
                if want == 0 {
                    "before the newest".to_string()
                } else {
                    want.to_string()
                }
            );
            return ExitCode::from(EXIT_BAD_INPUT);
        };
        info!("rolling back to deploy {}", target.id);
        let file = format!("{} (rollback to {})", target.file, target.id);
        return put_deploy(client, args, file, target.text.clone()).await;
    }
    let path = args.file.as_ref().expect("clap: one of the group");
    let text = match crate::read_graph(path, args.max_graph_bytes) {
        Ok(t) => t,
        Err(e) => {
            report!("error: {}: {e}", path.display());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    put_deploy(client, args, file, text).await
}

/// Checks `text` for every host that published its facts, writes it as
/// the next deploy, and waits for it if asked.
async fn put_deploy(
    client: &EtcdClient,
    args: &DeployArgs,
    file: String,
    text: String,
) -> ExitCode {
    // A user granted only /_mgmt/deploy/ may not read the statuses: the
    // graph is then checked with this machine's facts alone.
    let statuses = match mgmt_store::fleet::read_status(client).await {
        Ok((_, s, _)) => s,
        Err(e) if e.permission_denied() => {
            warn!("cannot read the fleet's facts: {e}");
            Vec::new()
        }
        Err(e) => {
            report!("error: cannot read the fleet's facts: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // Hosts that run a local --file never run a deploy.
    let mut hosts: Vec<Facts> = statuses
        .into_iter()
        .filter(|s| !matches!(s.source, Source::File(_)))
        .map(|s| s.facts)
        .collect();
    if hosts.is_empty() {
        warn!("no host has published its facts yet: checking the graph with this machine's");
        hosts.push(mgmt_io::facts::gather(&crate::machine_hostname()));
    }
    let name = format!("{file} (deploy)");
    let mut refused = 0;
    for facts in &hosts {
        if let Err(e) = crate::render_and_compile(&name, &text, facts) {
            refused += 1;
            let e = e.replace('\n', "\n  ");
            if args.force {
                warn!("host {}: {e}", facts.name);
            } else {
                report!("host {}: {e}", facts.name);
            }
        }
    }
    if refused > 0 && !args.force {
        report!(
            "error: {refused} of {} hosts cannot run this graph; nothing was deployed \
             (--force deploys it anyway: those hosts keep their graph)",
            hosts.len()
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    // Deploying the text that is already the newest changes nothing (a
    // pipeline run again must not make a new deploy).
    if let Ok((_, Some(newest))) = mgmt_store::fleet::newest(client).await
        && newest.sha256 == mgmt_core::deploy::sha256_hex(&text)
    {
        info!(
            "deploy {} ({}) already has this text: nothing written",
            newest.id, newest.file
        );
        let _ = writeln!(std::io::stdout(), "{}", newest.id);
        if args.wait {
            return wait_for(client, newest.id, args.timeout, false).await;
        }
        return ExitCode::SUCCESS;
    }
    let draft = Draft {
        time: now_rfc3339(),
        author: author(&args.client),
        file,
        text,
    };
    let deploy = match mgmt_store::fleet::write(client, draft).await {
        Ok(d) => d,
        Err(e) => {
            report!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    info!(
        "deploy {} written ({}, sha256 {}), checked for {} hosts{}",
        deploy.id,
        deploy.file,
        &deploy.sha256[..12],
        hosts.len(),
        if refused > 0 {
            format!(", {refused} of which cannot run it")
        } else {
            String::new()
        }
    );
    let _ = writeln!(std::io::stdout(), "{}", deploy.id);
    if args.wait {
        return wait_for(client, deploy.id, args.timeout, false).await;
    }
    ExitCode::SUCCESS
}

pub fn status(args: StatusArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let client = match args.client.connect() {
            Ok(c) => c,
            Err(e) => {
                report!("error: {e}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        };
        if let Some(id) = args.wait {
            return wait_for(&client, id, args.timeout, args.json).await;
        }
        match mgmt_store::fleet::read_status(&client).await {
            Ok((_, statuses, alive)) => print_rows(&fleet::rows(statuses, &alive), args.json),
            Err(e) => {
                report!("error: cannot read the fleet's status: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        }
    })
}

/// Waits (a watch on the status and alive keys, no polling) until deploy
/// `id` converged on every live host (0) or every live host settled and
/// some failed (1, with their rows), or `timeout_s` passed (1).
async fn wait_for(client: &EtcdClient, id: u64, timeout_s: u64, json: bool) -> ExitCode {
    // A century is forever enough (and no overflow).
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(timeout_s.min(100 * 365 * 86_400));
    loop {
        let (rev, rows) = match mgmt_store::fleet::read_status(client).await {
            Ok((rev, statuses, alive)) => (rev, fleet::rows(statuses, &alive)),
            Err(e @ mgmt_store::client::ClientError::Status(_)) => {
                // Refused, not unreachable: waiting longer changes nothing.
                report!("error: cannot read the fleet's status: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
            Err(e) => {
                warn!("cannot read the fleet's status: {e}; trying again");
                if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_secs(1)))
                    .await
                    .is_err()
                {
                    report!("error: deploy {id}: timed out");
                    return ExitCode::from(EXIT_FAILED);
                }
                continue;
            }
        };
        let waiting = match fleet::verdict(&rows, id) {
            Verdict::Converged => {
                info!("deploy {id}: every live host runs it and converged");
                let _ = print_rows(&rows, json);
                return ExitCode::SUCCESS;
            }
            Verdict::Failed(failed) => {
                report!(
                    "error: deploy {id}: {} hosts did not converge on it:",
                    failed.len()
                );
                let _ = print_rows(&failed, json);
                return ExitCode::from(EXIT_FAILED);
            }
            Verdict::Waiting(w) => w,
        };
        let mut statuses = client.watch_prefix(fleet::STATUS_PREFIX.as_bytes(), rev + 1);
        let mut alive = client.watch_prefix(fleet::ALIVE_PREFIX.as_bytes(), rev + 1);
        let changed = async {
            tokio::select! {
                e = statuses.next() => e,
                e = alive.next() => e,
            }
        };
        match tokio::time::timeout_at(deadline, changed).await {
            Ok(Some(WatchEvent::Events(_) | WatchEvent::Resync)) => {}
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => {
                report!(
                    "error: deploy {id}: timed out after {timeout_s} s; still waiting for: {}",
                    if waiting.is_empty() {
                        "any live host".to_string()
                    } else {
                        waiting.join(", ")
                    }
                );
                let _ = print_rows(&rows, json);
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
}

fn print_rows(rows: &[Row], json: bool) -> ExitCode {
    if json {
        let text = serde_json::to_string_pretty(rows).expect("rows serialise");
        return crate::print_stdout(format!("{text}\n").as_bytes());
    }
    let mut table = vec![
        [
            "HOST",
            "STATE",
            "GRAPH",
            "RESOURCES",
            "CHANGED",
            "FAILED",
            "LAST CHANGE",
            "STORE",
            "VERSION",
            "NOTE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        let s = &r.status;
        let state = if r.reachable {
            match s.state {
                State::Applying => "applying",
                State::Converged => "converged",
                State::Failed => "failed",
            }
            .to_string()
        } else {
            format!(
                "unreachable since {}",
                s.unreachable_since
                    .clone()
                    .unwrap_or_else(|| format!("after {}", s.updated))
            )
        };
        let graph = match &s.source {
            Source::Deploy(id) => format!("deploy {id}"),
            Source::File(f) => format!("file {f}"),
            Source::None => "none (no deploy yet)".into(),
        };
        let note = match &s.error {
            Some(DeployError { deploy, message }) => {
                format!(
                    "cannot run deploy {deploy}: {}",
                    message.replace('\n', "; ")
                )
            }
            None => String::new(),
        };
        table.push(vec![
            r.host.clone(),
            state,
            graph,
            s.resources.to_string(),
            s.changed.to_string(),
            s.failed.to_string(),
            s.last_change.clone().unwrap_or_else(|| "-".into()),
            s.store.clone(),
            s.mgmt_version.clone(),
            note,
        ]);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    crate::print_stdout(out.as_bytes())
}

/// What this host's status is made of, besides the run's progress.
pub struct StatusInputs {
    pub host: String,
    pub facts: Facts,
    /// Where the running graph came from: a file, or deploys (the tag of
    /// the running graph is the deploy id; 0 before the first).
    pub file: Option<String>,
    /// The newest deploy this host could not run.
    pub error: watch::Receiver<Option<DeployError>>,
    pub progress: watch::Receiver<mgmt_io::Progress>,
    pub store: watch::Receiver<mgmt_store::cluster::Status>,
}

/// Turns the run's progress into this host's [`HostStatus`] and publishes
/// it (`mgmt_store::fleet::publish_status`). Ends when the progress sender
/// is gone (the run ended), revoking this host's `alive` key.
pub async fn publish_status(client: EtcdClient, mut inputs: StatusInputs) {
    let host = inputs.host.clone();
    // A run already over: its last status is all there is to say.
    if inputs.progress.has_changed().is_err() {
        let (_, rx) = watch::channel(last_status(&mut inputs));
        mgmt_store::fleet::publish_status(client, host, rx, now_rfc3339).await;
        return;
    }
    let (tx, rx) = watch::channel(build_status(&mut inputs, None));
    let publisher = tokio::spawn(mgmt_store::fleet::publish_status(
        client,
        host,
        rx,
        now_rfc3339,
    ));
    let mut last_changed = (0, None);
    // Only the run's end ends it: the deploy errors' sender goes with the
    // reloader (at once in a one-shot run), the store's with the cluster.
    let (mut errors_open, mut store_open) = (true, true);
    loop {
        tokio::select! {
            r = inputs.progress.changed() => if r.is_err() { break },
            r = inputs.error.changed(), if errors_open => errors_open = r.is_ok(),
            r = inputs.store.changed(), if store_open => store_open = r.is_ok(),
        }
        let changed = inputs.progress.borrow().changed;
        if changed != last_changed.0 {
            last_changed = (changed, Some(now_rfc3339()));
        }
        let new = build_status(&mut inputs, last_changed.1.clone());
        tx.send_if_modified(|old| {
            let differs = *old != new;
            if differs {
                *old = new;
            }
            differs
        });
    }
    drop(tx);
    let _ = publisher.await;
}

/// Writes the last status of a run that is over and whose store ran
/// beside it (a one-shot run): one write, through this host's own server
/// when it runs one.
pub async fn write_final_status(cluster: &mgmt_store::cluster::Cluster, mut inputs: StatusInputs) {
    let last = last_status(&mut inputs);
    mgmt_store::fleet::write_final_status(cluster, &last, now_rfc3339).await;
}

/// The status of a run that is over: changed at its end if it changed anything.
fn last_status(inputs: &mut StatusInputs) -> HostStatus {
    let changed = inputs.progress.borrow().changed != 0;
    build_status(inputs, changed.then(now_rfc3339))
}

fn build_status(inputs: &mut StatusInputs, last_change: Option<String>) -> HostStatus {
    let p = *inputs.progress.borrow_and_update();
    let store = inputs.store.borrow_and_update().clone();
    let error = inputs.error.borrow_and_update().clone();
    let source = match (&inputs.file, p.tag) {
        (Some(f), _) => Source::File(f.clone()),
        (None, 0) => Source::None,
        (None, id) => Source::Deploy(id),
    };
    HostStatus {
        version: fleet::VERSION,
        host: inputs.host.clone(),
        source,
        state: match (p.idle, p.failed) {
            (false, _) => State::Applying,
            (true, 0) => State::Converged,
            (true, _) => State::Failed,
        },
        // An error of a deploy older than the one running is history.
        error: error.filter(|e| e.deploy > p.tag),
        resources: p.resources,
        changed: p.changed,
        failed: p.failed,
        last_change,
        // Stamped by the writer, at each write.
        updated: String::new(),
        unreachable_since: None,
        store: if store.server.is_none() {
            "client"
        } else if store.leader {
            "leader"
        } else if store
            .members
            .iter()
            .any(|(name, learner)| *name == inputs.host && *learner)
        {
            "learner"
        } else {
            "member"
        }
        .to_string(),
        mgmt_version: env!("CARGO_PKG_VERSION").to_string(),
        facts: inputs.facts.clone(),
    }
}

/// The facts `host` published in the cluster (its status), for `mgmt graph
/// --from-cluster`.
pub fn published_facts(client: &ClientArgs, host: &str) -> Result<Facts, ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let c = client.connect().map_err(|e| {
            report!("error: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        })?;
        let (_, statuses, _) = mgmt_store::fleet::read_status(&c).await.map_err(|e| {
            report!("error: cannot read the fleet's facts: {e}");
            ExitCode::from(EXIT_FAILED)
        })?;
        match statuses.into_iter().find(|s| s.host == host) {
            Some(s) => Ok(s.facts),
            None => {
                report!(
                    "error: host {host} has published no status (mgmt status lists those that have)"
                );
                Err(ExitCode::from(EXIT_BAD_INPUT))
            }
        }
    })
}

/// The newest stored deploy that renders and compiles for the host `facts`
/// describe (no collection, no package AutoEdges: what it ran before a
/// restart), and its id.
pub async fn newest_that_compiles(client: &EtcdClient, facts: &Facts) -> Option<(Graph, u64)> {
    let (_, all) = mgmt_store::fleet::list(client)
        .await
        .map_err(|e| warn!("cannot list the deploys: {e}"))
        .ok()?;
    all.iter().rev().find_map(|d| {
        crate::render_and_compile(&d.source_name(), &d.text, facts)
            .map(|g| (g, d.id))
            .ok()
    })
}

/// Follows the cluster's deploys from `first` (the newest read at start):
/// the newest one, never an older one.
pub fn follow_deploys(
    client: EtcdClient,
    first: Option<Deploy>,
) -> watch::Receiver<Option<Deploy>> {
    let (tx, rx) = watch::channel(first);
    tokio::spawn(mgmt_store::fleet::follow(client, tx));
    rx
}
