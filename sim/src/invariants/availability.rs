//! Availability: whenever a majority of the voters is up and connected (a
//! minority crashed, stopped or cut off), the store accepts writes again
//! within [`BOUND`]. etcd's bound is about two election timeouts; this one
//! is two of the simulator's longest (1 s) plus the time to dial a cut link
//! again and the prober's period.
//!
//! Which voters: every voter set the last leader seen had, and every voter
//! set a running server lists (a change may be joint, a follower may hold an
//! entry the crashed leader appended): a majority of each must be up, and
//! pairwise connected; a server that just started counts from its start.
//! Asking for more sets only makes the rule apply less often, never wrongly. "Writes accepted" is the prober's: a put through
//! every host in turn every [`crate::PROBE_EVERY`]; one acknowledged within
//! the last [`BOUND`] is enough.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::World;

/// How long writes may be refused while a majority is up and connected.
pub const BOUND: Duration = Duration::from_secs(4);

#[derive(Default)]
pub struct Availability {
    /// The voter sets of the last leader seen.
    leader_sets: Vec<Vec<String>>,
    /// Since when a majority has been up and connected, without a break.
    since: Option<Duration>,
}

impl Availability {
    pub fn check(&mut self, w: &World) -> Result<(), String> {
        if let Some(sets) = w.leader_voter_sets() {
            self.leader_sets = sets.clone();
        }
        let Some(majority) = self.majority_up_and_connected(w) else {
            self.since = None;
            return Ok(());
        };
        // A server that just started (restarted from its state, say) is
        // given the bound too: it must load its log and hear a leader.
        let started = majority
            .iter()
            .filter_map(|h| w.server_started.get(h))
            .max();
        let since = (*self.since.get_or_insert(w.now)).max(started.copied().unwrap_or_default());
        let quiet_from = w.now.saturating_sub(BOUND);
        if since > quiet_from || w.last_probe_ack.is_some_and(|t| t > quiet_from) {
            return Ok(());
        }
        let tail = w.trace[w.trace.len().saturating_sub(40)..].join("\n");
        let views: Vec<String> = w
            .hosts
            .iter()
            .filter(|(h, _)| !w.server_stopped(h))
            .map(|(h, st)| format!("{h} {:?}", st.voter_sets))
            .collect();
        Err(format!(
            "availability: {majority:?} (a majority of every voter set, up and connected) since \
             {since:?}, but no write acknowledged since {:?}; the last leader's voter sets \
             {:?}, running servers' {views:?}, links cut {:?}\nlast events:\n{tail}",
            w.last_probe_ack, self.leader_sets, w.cut
        ))
    }

    /// A set of running, pairwise connected hosts holding a majority of every
    /// voter set in force, if there is one.
    fn majority_up_and_connected(&self, w: &World) -> Option<Vec<String>> {
        let up: Vec<&String> = w.hosts.keys().filter(|h| !w.server_stopped(h)).collect();
        let mut sets: BTreeSet<&Vec<String>> = self.leader_sets.iter().collect();
        for h in &up {
            sets.extend(&w.hosts[*h].voter_sets);
        }
        if sets.is_empty() || up.len() > 16 {
            return None;
        }
        (1u32..1 << up.len())
            .map(|bits| {
                (0..up.len())
                    .filter(|i| bits & (1 << i) != 0)
                    .map(|i| up[i].clone())
                    .collect::<Vec<String>>()
            })
            .find(|s| {
                let connected = s.iter().all(|a| {
                    s.iter()
                        .all(|b| a >= b || !w.cut.contains(&(a.clone(), b.clone())))
                });
                connected
                    && sets.iter().all(|voters| {
                        let n = voters.iter().filter(|v| s.contains(v)).count();
                        n * 2 > voters.len()
                    })
            })
    }
}
