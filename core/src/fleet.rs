//! The fleet's status: what each agent publishes about itself, and what
//! `mgmt status` and `mgmt deploy --wait` make of it. The one place these
//! keys and values are built and parsed.
//!
//! - `/_mgmt/fleet/<host>`: the host's [`HostStatus`] (JSON, version 1),
//!   no lease, so a host that stops answering stays listed.
//! - `/_mgmt/alive/<host>`: bound to the host's lease; gone within the
//!   lease's TTL once the host stops. A status without it is unreachable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::facts::Facts;
use crate::hostname::Hostname;

/// Outside the ranges the cluster driver watches
/// ([`crate::cluster::keys::watched_ranges`]): a fleet's statuses change
/// often and would wake every agent.
pub const STATUS_PREFIX: &str = "/_mgmt/fleet/";
pub const ALIVE_PREFIX: &str = "/_mgmt/alive/";

/// The value format this build writes, and the only one it reads.
pub const VERSION: u64 = 1;

pub fn status_key(host: &str) -> String {
    format!("{STATUS_PREFIX}{host}")
}

pub fn alive_key(host: &str) -> String {
    format!("{ALIVE_PREFIX}{host}")
}

/// The host a key under `prefix` names.
pub fn host_of<'a>(prefix: &str, key: &'a str) -> Result<&'a str, String> {
    let host = key
        .strip_prefix(prefix)
        .ok_or_else(|| format!("{key}: not under {prefix}"))?;
    Hostname::parse(host).map_err(|e| format!("{key}: {e}"))?;
    Ok(host)
}

/// A JSON value of format `version` (its `version` field), as a `what`;
/// `Err` names the key and what is wrong.
pub(crate) fn decode_versioned<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &[u8],
    version: u64,
    what: &str,
) -> Result<T, String> {
    let v: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| format!("{key}: the value is not JSON: {e}"))?;
    if v.get("version").and_then(serde_json::Value::as_u64) != Some(version) {
        return Err(format!("{key}: not a version {version} {what}"));
    }
    serde_json::from_value(v).map_err(|e| format!("{key}: not a {what}: {e}"))
}

/// Where a host's running graph came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Deploy `id` of the cluster.
    Deploy(u64),
    /// A local `--file`.
    File(String),
    /// Nothing yet: a host that follows deploys before the first one.
    None,
}

/// How the running graph is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Something runs, or waits to run or to be retried.
    Applying,
    /// Everything ran and holds.
    Converged,
    /// Nothing more will run until something changes, and some resources
    /// failed for good.
    Failed,
}

/// A deploy this host could not run (it keeps its graph).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployError {
    pub deploy: u64,
    /// The diagnostics, with `file:line:col`.
    pub message: String,
}

/// What a host publishes about itself on every change (debounced).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub version: u64,
    pub host: String,
    pub source: Source,
    pub state: State,
    /// The newest deploy it could not run, while it is the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeployError>,
    pub resources: usize,
    /// CheckApplies that changed something, since the agent started.
    pub changed: u64,
    /// Resources failed for good in the running graph.
    pub failed: usize,
    /// When something last changed (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<String>,
    /// When this status was written.
    pub updated: String,
    /// Set by another agent once this host's `alive` key expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<String>,
    /// `leader`, `member`, `learner` or `client`.
    pub store: String,
    pub mgmt_version: String,
    pub facts: Facts,
}

impl HostStatus {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a status always serialises")
    }

    pub fn decode(key: &str, value: &[u8]) -> Result<HostStatus, String> {
        let host = host_of(STATUS_PREFIX, key)?;
        let s: HostStatus = decode_versioned(key, value, VERSION, "status")?;
        if s.host != host {
            return Err(format!("{key}: the value is {:?}'s status", s.host));
        }
        Ok(s)
    }

    /// The deploy it runs, if it follows deploys.
    pub fn deploy(&self) -> Option<u64> {
        match self.source {
            Source::Deploy(id) => Some(id),
            _ => None,
        }
    }
}

/// One host as `mgmt status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub host: String,
    /// Its `alive` key is there.
    pub reachable: bool,
    pub status: HostStatus,
}

/// Every host with a status, by name; `alive` lists the hosts whose
/// `alive` key is there.
pub fn rows(statuses: Vec<HostStatus>, alive: &[String]) -> Vec<Row> {
    let by_host: BTreeMap<String, HostStatus> =
        statuses.into_iter().map(|s| (s.host.clone(), s)).collect();
    by_host
        .into_iter()
        .map(|(host, status)| Row {
            reachable: alive.contains(&host),
            host,
            status,
        })
        .collect()
}

/// How far a deploy has got across the live hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every live host runs it and converged.
    Converged,
    /// Every live host has settled on it, and these could not run it, failed
    /// on it, or moved on to a newer deploy.
    Failed(Vec<Row>),
    /// These live hosts have not settled on it yet (none: no host is alive).
    Waiting(Vec<String>),
}

/// Where deploy `id` stands over the live hosts that follow deploys (a
/// host running a local `--file` never runs one). A host that fails on it
/// has settled, and so has one that cannot run it or a newer one (it will
/// never run `id`); one already on a newer deploy is done with `id` (it
/// never goes back).
pub fn verdict(rows: &[Row], id: u64) -> Verdict {
    let mut failed = Vec::new();
    let mut waiting = Vec::new();
    let following = |r: &&Row| r.reachable && !matches!(r.status.source, Source::File(_));
    for row in rows.iter().filter(following) {
        let s = &row.status;
        let runs = s.deploy();
        let cannot =
            runs.is_none_or(|d| d < id) && s.error.as_ref().is_some_and(|e| e.deploy >= id);
        match runs {
            _ if cannot => failed.push(row.clone()),
            Some(d) if d > id => {}
            Some(d) if d == id => match s.state {
                State::Converged => {}
                State::Failed => failed.push(row.clone()),
                State::Applying => waiting.push(row.host.clone()),
            },
            _ => waiting.push(row.host.clone()),
        }
    }
    if !waiting.is_empty() || !rows.iter().any(|r| following(&r)) {
        Verdict::Waiting(waiting)
    } else if !failed.is_empty() {
        Verdict::Failed(failed)
    } else {
        Verdict::Converged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(host: &str, source: Source, state: State) -> HostStatus {
        HostStatus {
            version: VERSION,
            host: host.into(),
            source,
            state,
            error: None,
            resources: 3,
            changed: 0,
            failed: 0,
            last_change: None,
            updated: "2026-12-06T07:00:00Z".into(),
            unreachable_since: None,
            store: "member".into(),
            mgmt_version: "0.1.0".into(),
            facts: Facts::default(),
        }
    }

    #[test]
    fn status_round_trips_and_names_its_host() {
        let s = status("h1", Source::Deploy(3), State::Converged);
        let v = s.encode();
        assert_eq!(HostStatus::decode(&status_key("h1"), v.as_bytes()), Ok(s));
        assert!(HostStatus::decode(&status_key("h2"), v.as_bytes()).is_err());
        assert!(HostStatus::decode("/_mgmt/fleet/-bad", v.as_bytes()).is_err());
        assert!(HostStatus::decode(&status_key("h1"), b"[]").is_err());
    }

    #[test]
    fn a_deploy_converges_when_every_live_host_runs_it() {
        let alive = vec!["h1".to_string(), "h2".to_string()];
        let mut all = vec![
            status("h1", Source::Deploy(2), State::Converged),
            status("h2", Source::Deploy(1), State::Converged),
            // Unreachable: not waited for.
            status("h3", Source::Deploy(1), State::Applying),
        ];
        assert_eq!(
            verdict(&rows(all.clone(), &alive), 2),
            Verdict::Waiting(vec!["h2".into()])
        );
        all[1].source = Source::Deploy(2);
        all[1].state = State::Applying;
        assert!(matches!(
            verdict(&rows(all.clone(), &alive), 2),
            Verdict::Waiting(_)
        ));
        all[1].state = State::Converged;
        assert_eq!(verdict(&rows(all.clone(), &alive), 2), Verdict::Converged);
        // Nobody alive: nothing has converged.
        assert_eq!(verdict(&rows(all, &[]), 2), Verdict::Waiting(vec![]));
    }

    #[test]
    fn failures_are_reported_once_every_host_settled() {
        let alive = vec!["h1".to_string(), "h2".to_string(), "h3".to_string()];
        let mut cannot = status("h2", Source::Deploy(1), State::Converged);
        cannot.error = Some(DeployError {
            deploy: 2,
            message: "error: deploy 2 (site.yaml):3:5: bad".into(),
        });
        let all = vec![
            status("h1", Source::Deploy(2), State::Failed),
            cannot,
            status("h3", Source::Deploy(2), State::Applying),
        ];
        assert!(
            matches!(verdict(&rows(all.clone(), &alive), 2), Verdict::Waiting(w) if w == ["h3"])
        );
        let mut all = all;
        all[2].state = State::Converged;
        match verdict(&rows(all, &alive), 2) {
            Verdict::Failed(rows) => {
                let hosts: Vec<&str> = rows.iter().map(|r| r.host.as_str()).collect();
                assert_eq!(hosts, ["h1", "h2"]);
            }
            v => panic!("{v:?}"),
        }
        // A host already on a newer deploy is done with this one; one that
        // runs this one and cannot run the next has not failed on it; a
        // host with a local file is not waited for.
        let mut on_2 = status("h2", Source::Deploy(2), State::Converged);
        on_2.error = Some(DeployError {
            deploy: 3,
            message: "bad".into(),
        });
        let all = vec![
            status("h1", Source::Deploy(3), State::Converged),
            on_2,
            status("h3", Source::File("/g.yaml".into()), State::Applying),
        ];
        assert_eq!(verdict(&rows(all, &alive), 2), Verdict::Converged);
        let all = vec![status(
            "h3",
            Source::File("/g.yaml".into()),
            State::Converged,
        )];
        assert_eq!(verdict(&rows(all, &alive), 2), Verdict::Waiting(vec![]));
    }
}
