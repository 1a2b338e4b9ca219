//! A host whose server is stopped (or crashed) is not listed as a member for
//! long: its lease expires and the leader removes it. Only while a quorum of
//! voters runs: a cluster that lost its quorum can change nothing (a 2-member
//! cluster losing one is stuck until it returns), which liveness covers. While
//! a change is joint the quorum needs a majority of both voter sets (a
//! promotion begun before a crash can leave {h1,h2} and {h1,h2,h3} joint with
//! h2 down: stuck, though two of the three listed voters run).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::World;

/// How long a stopped host may stay listed (lease TTL + un-nominate + remove).
pub const GRACE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct StoppedNotMember {
    since: BTreeMap<String, Duration>,
}

impl StoppedNotMember {
    pub fn check(&mut self, w: &World) -> Result<(), String> {
        let Some(members) = w.leader_members() else {
            self.since.clear();
            return Ok(());
        };
        let sets = w.leader_voter_sets().cloned().unwrap_or_default();
        let quorum = !sets.is_empty()
            && sets.iter().all(|voters| {
                let live = voters.iter().filter(|n| !w.server_stopped(n)).count();
                live * 2 > voters.len()
            });
        if !quorum {
            self.since.clear();
            return Ok(());
        }
        let stale: Vec<String> = members
            .iter()
            .filter(|(name, _)| w.server_stopped(name))
            .map(|(name, _)| name.clone())
            .collect();
        self.since.retain(|h, _| stale.contains(h));
        for h in stale {
            let t = *self.since.entry(h.clone()).or_insert(w.now);
            if w.now - t > GRACE {
                return Err(format!("{h} stopped but still a member after {GRACE:?}"));
            }
        }
        Ok(())
    }
}
