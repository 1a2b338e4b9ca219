//! When a member campaigns: raft's PreVote (etcd's `--pre-vote`, on by
//! default since 3.5), which openraft 0.9 lacks.
//!
//! openraft's own timer campaigns as soon as a follower has not heard its
//! leader for the leader lease plus its election timeout, whatever its log.
//! A member with a shorter log (it was cut off, or slow) then raises its term
//! in vain, and the member that could win campaigns at that same term, is
//! refused, and waits a whole timeout more: three elections' worth of time
//! with no leader (found by the simulator's availability invariant). So
//! openraft's timer is off (`enable_elect`), and this task decides instead:
//! after a randomized timeout without the leader (drawn again each time, as
//! etcd does) it first asks the other voters whether they would vote for it,
//! which changes no term, and campaigns only when a majority of every voter
//! set would. A voter says yes when the term asked for is above its own, its
//! own log is not newer, and it has not heard a leader for the lease: the
//! rules raft's real vote applies next.
//!
//! A member that has not heard its leader for that timeout names none
//! ([`Node::leader`], etcd's pre-candidate): hasleader watches end and
//! clients go elsewhere. A leader that has heard from no quorum for the lease
//! steps aside ([`lead`], etcd's CheckQuorum).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::{LogId, ServerState};

use futures::StreamExt;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::network::{decode, encode, request};
use crate::node::{AdminOp, Node};
use crate::runtime::RaftRng;
use crate::types::NodeId;

/// Whether a voter would vote for a candidate at `term` with this last log
/// id: as raft's PreVote, only for a term above its own (a member that has
/// begun a campaign of its own, or voted in one, refuses its rivals).
///
/// Answers with this voter's own term too: a candidate refused for its term
/// asks next time above it (raft's candidate adopts the term a PreVote
/// refusal names), else a voter whose own campaign can never win (its log is
/// behind) would refuse the one that can, forever.
///
/// A leader refuses, unless it has gone quiet or is handing over: a leader
/// handing over has silenced its heartbeats so that its successor can win,
/// and a successor whose first campaign got no answer from it (a connection
/// that died while the link was cut) must be able to campaign again, not
/// wait for the hand-over to time out with writes paused.
pub(crate) fn would_vote(
    node: &Node,
    term: u64,
    candidate_last_log: Option<LogId<NodeId>>,
) -> (bool, u64) {
    let (state, my_term) = {
        let m = node.raft.metrics();
        let m = m.borrow();
        (m.state, m.current_term)
    };
    let leading =
        state == ServerState::Leader && !node.quiet_leader() && !*node.transferring.borrow();
    if leading || term <= my_term {
        return (false, my_term);
    }
    let lease = lease(node);
    let heard_leader = node
        .last_leader_contact()
        .is_some_and(|t| t.elapsed() < lease);
    let mine = node.log.last_log_id();
    let yes = !heard_leader && candidate_last_log >= mine;
    tracing::debug!(
        ?candidate_last_log,
        ?mine,
        heard_leader,
        yes,
        "asked for a pre-vote"
    );
    (yes, my_term)
}

/// How long a follower that heard a leader keeps refusing votes: openraft's
/// leader lease, the longest election timeout.
fn lease(node: &Node) -> Duration {
    Duration::from_millis(node.raft.config().election_timeout_max)
}

/// Decide when this member campaigns, until `stop`.
pub(crate) async fn run(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let config = node.raft.config();
    let (min, max) = (config.election_timeout_min, config.election_timeout_max);
    let started = Instant::now();
    let mut attempted: Option<Instant> = None;
    let mut metrics = node.raft.server_metrics();
    // When this member last saw its vote change (it voted for a candidate,
    // or saw a higher term): as in raft, that starts the timer over.
    let mut vote = metrics.borrow().vote;
    let mut voted_at: Option<Instant> = None;
    loop {
        let is_leader = metrics.borrow_and_update().state == ServerState::Leader;
        let sets = voter_sets(&node);
        if is_leader {
            node.leaderless
                .send_if_modified(|l| std::mem::replace(l, false));
            if lead(&node, &mut metrics, &mut stop).await {
                return;
            }
            // Stepped down (a higher term was seen, or it handed over): as a
            // follower that just heard its leader, it waits a whole lease, so
            // the member it handed over to, or the one that took over, goes
            // first.
            node.heard_leader();
            attempted = None;
            continue;
        }
        if !sets.iter().any(|set| set.contains(&node.id)) {
            // A learner (or a member no more) never campaigns.
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
            attempted = None;
            continue;
        }
        // After a leader was heard: the lease, then a random share of the
        // timeout range. The share starts a little after the lease, so that
        // the target of a MoveLeader, asked to campaign just after it, goes
        // first. After an attempt of ours (refused, or a vote split with
        // another candidate that passed its pre-vote too): a new random
        // share, so that two candidates drift apart.
        let low = min / 4;
        let jitter = Duration::from_millis(RaftRng.gen_range(low..=(max - min).max(low)));
        let contact = node.last_leader_contact();
        let heard = contact.max(voted_at);
        let wait_from = match (heard, attempted) {
            (Some(c), Some(a)) if a >= c => a,
            (Some(c), _) => c + lease(&node),
            (None, Some(a)) => a,
            (None, None) => started + Duration::from_millis(min),
        };
        // The only voter has no one to wait for (a restarted one-member
        // cluster would sit out a timeout for its own vote).
        let alone = sets.iter().all(|set| set == &[node.id]);
        let deadline = if alone && attempted.is_none() {
            Instant::now()
        } else {
            wait_from + jitter
        };
        tracing::trace!(id = node.id, ?contact, ?attempted, wait = ?deadline.saturating_duration_since(Instant::now()), "election timer");
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            r = metrics.changed() => {
                if r.is_err() {
                    return;
                }
                let now = metrics.borrow().vote;
                // A vote for another candidate, not this member's own
                // campaign, nor the commit of a vote it had.
                if now.leader_id != vote.leader_id && now.leader_id.voted_for() != Some(node.id) {
                    voted_at = Some(Instant::now());
                }
                vote = now;
                continue;
            }
            _ = stop.changed() => return,
        }
        if node.last_leader_contact() != contact {
            continue;
        }
        let sets = voter_sets(&node);
        attempted = Some(Instant::now());
        // No leader heard for a timeout: say so (hasleader watches end, and
        // clients go elsewhere) until one is heard again.
        node.leaderless
            .send_if_modified(|l| !std::mem::replace(l, true));
        let term = node.raft.metrics().borrow().current_term;
        // Campaign only if nothing changed meanwhile: a leader heard, or a
        // term begun (this member voted for someone).
        if pre_vote(&node, &sets).await
            && node.last_leader_contact() == contact
            && node.raft.metrics().borrow().current_term == term
        {
            tracing::debug!("pre-vote won: campaigning");
            let _ = node.raft.trigger().elect().await;
        }
    }
}

/// While this member leads: raft's CheckQuorum (etcd's, always on), which
/// openraft 0.9 lacks. A leader that has heard from no quorum for the lease
/// (cut off from the others, or a joint change needing a voter it cannot
/// reach) goes quiet: no heartbeats, no new proposals, no leader to name, so
/// the voters' leases run out and those that can reach each other elect one.
/// Every lease it asks the voters (a pre-vote question, which renews no lease)
/// whether a quorum answers again; if one does, it leads on. It leads on at
/// once, too, when a quorum acknowledges its log entries (raft replicates
/// them still): those voters take it as their leader, so waiting for the
/// next question would only keep writes refused while their leases run on.
/// Returns true once `stop` fires, false when no longer leader.
async fn lead(
    node: &Node,
    metrics: &mut watch::Receiver<
        openraft::metrics::RaftServerMetrics<NodeId, crate::types::MemberNode>,
    >,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let lease = lease(node);
    let lease_ms = lease.as_millis() as u64;
    // Since when this leader has led without a pause: a quorum's last
    // acknowledgement older than that says nothing about the quorum now.
    let mut leading = Instant::now();
    let mut quiet = false;
    let mut quiet_since = Instant::now();
    let mut asked = Instant::now();
    let stopped = loop {
        let alone = voter_sets(node).iter().all(|set| set == &[node.id]);
        if alone && !quiet {
            // The only voter has no quorum to lose: wait for a change.
            tokio::select! {
                r = metrics.changed() => if r.is_err() { break true },
                _ = stop.changed() => break true,
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(lease / 4) => {}
                r = metrics.changed() => if r.is_err() { break true },
                _ = stop.changed() => break true,
            }
        }
        if metrics.borrow_and_update().state != ServerState::Leader {
            break false;
        }
        if *node.transferring.borrow() {
            // MoveLeader silenced this leader on purpose (`Node::move_leader`).
            continue;
        }
        // None until a quorum first acknowledged this leader. A leader that
        // just led on again has a lease to be acknowledged anew: judged by
        // an acknowledgement from before its pause, it would step aside
        // again at once (seed 112283: it flapped for two seconds while a
        // restarted voter caught up, and the cluster stayed leaderless).
        let acked_ms_ago = node.raft.metrics().borrow().millis_since_quorum_ack;
        let led_ms = leading.elapsed().as_millis() as u64;
        let since_ack = acked_ms_ago.map_or(led_ms, |a| a.min(led_ms));
        let lost = !alone && since_ack > lease_ms;
        // A quorum acknowledged this leader's entries after it went quiet.
        let acked_since_quiet =
            quiet && acked_ms_ago.is_some_and(|a| a < quiet_since.elapsed().as_millis() as u64);
        match quiet {
            false if lost => {
                tracing::warn!(
                    "this leader has heard from no quorum for {lease:?}: stepping aside so that \
                     the voters that can reach each other elect one"
                );
                quiet = true;
                quiet_since = Instant::now();
                asked = Instant::now();
                node.raft.runtime_config().heartbeat(false);
                node.leaderless.send_replace(true);
            }
            // Asked, not heartbeaten: a heartbeat would renew the lease of
            // the voters this leader reaches, and keep them from electing.
            true if acked_since_quiet || asked.elapsed() >= lease => {
                asked = Instant::now();
                let sets = voter_sets(node);
                if (acked_since_quiet || reaches_quorum(node, &sets).await)
                    && metrics.borrow().state == ServerState::Leader
                {
                    tracing::info!("a quorum answers this leader again: leading on");
                    quiet = false;
                    leading = Instant::now();
                    node.raft.runtime_config().heartbeat(true);
                    node.leaderless.send_replace(false);
                }
            }
            _ => {}
        }
    };
    if quiet {
        node.raft.runtime_config().heartbeat(true);
    }
    stopped
}

/// The voter sets of this member's membership: one, or two while joint.
///
/// Read from the server metrics, the watch this task waits on: openraft
/// sends them before its `RaftMetrics`, so a task woken by a change that read
/// `RaftMetrics` could see the membership from before it. A restarted lone
/// voter woken by its loaded state read the empty startup membership, took
/// itself for a learner and waited for a change that never came: no leader
/// at all (one one-shot run in about 30 waited out the store's 5 s).
fn voter_sets(node: &Node) -> Vec<Vec<NodeId>> {
    let m = node.raft.server_metrics();
    let m = m.borrow();
    m.membership_config
        .membership()
        .get_joint_config()
        .iter()
        .map(|set| set.iter().copied().collect())
        .collect()
}

/// Ask every other voter whether it would vote for this member; true when a
/// majority of every voter set (this member included) would.
async fn pre_vote(node: &Node, sets: &[Vec<NodeId>]) -> bool {
    ask(node, sets, "pre-vote", |answer| answer == Some(true)).await
}

/// Whether a majority of every voter set (this member included) answers at
/// all, whatever it answers: a quorum this member reaches.
async fn reaches_quorum(node: &Node, sets: &[Vec<NodeId>]) -> bool {
    ask(node, sets, "quorum check", |answer| answer.is_some()).await
}

/// Ask every other voter the pre-vote question; `counts` says whether an
/// answer (`None`: none came) counts toward the majority of every voter set
/// this returns.
async fn ask(
    node: &Node,
    sets: &[Vec<NodeId>],
    why: &str,
    counts: impl Fn(Option<bool>) -> bool,
) -> bool {
    let last_log = node.log.last_log_id();
    let own = node.raft.metrics().borrow().current_term;
    let term = own.max(node.term_seen.load(Ordering::Relaxed)) + 1;
    let others: std::collections::BTreeSet<NodeId> = sets
        .iter()
        .flatten()
        .copied()
        .filter(|id| *id != node.id)
        .collect();
    let timeout = Duration::from_millis(node.raft.config().election_timeout_min);
    let asks = others.into_iter().map(|id| async move {
        let Some(mut peer) = node
            .peer_url(id)
            .and_then(|url| node.channels.get(&url).ok())
        else {
            return (id, None);
        };
        let op = AdminOp::PreVote { term, last_log };
        // The deadline is the caller's to keep: a peer that is gone
        // (crashed, its connection not yet closed) never answers.
        let answer = tokio::time::timeout(timeout, peer.admin(request(encode(&op), timeout)));
        let answer = match answer.await {
            Ok(Ok(r)) => {
                let answer = decode::<Result<(bool, u64), crate::node::FwdError>>(r.get_ref())
                    .ok()
                    .and_then(Result::ok);
                if let Some((_, their_term)) = answer {
                    node.term_seen.fetch_max(their_term, Ordering::Relaxed);
                }
                Some(answer.is_some_and(|(yes, _)| yes))
            }
            // A member of an older version does not know the question:
            // it votes as raft alone decides, so count it as raft would.
            Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => Some(true),
            Ok(Err(_)) | Err(_) => None,
        };
        (id, answer)
    });
    // Done as soon as the answers decide it: a peer that is gone would hold
    // the round for the whole timeout, and an answer that old may be stale.
    let mut pending: futures::stream::FuturesUnordered<_> = asks.collect();
    let mut counted: BTreeMap<NodeId, bool> = BTreeMap::new();
    let won = loop {
        if let Some(decided) = decided(node.id, sets, &counted) {
            break decided;
        }
        match pending.next().await {
            Some((id, answer)) => {
                counted.insert(id, counts(answer));
            }
            None => break false,
        }
    };
    tracing::debug!(?last_log, ?counted, won, "{why}");
    won
}

/// Whether these answers (this member's own yes included) already win a
/// majority of every voter set (`Some(true)`), can no longer (`Some(false)`),
/// or may still.
fn decided(me: NodeId, sets: &[Vec<NodeId>], answers: &BTreeMap<NodeId, bool>) -> Option<bool> {
    let mut all_won = true;
    for set in sets {
        let yes = set
            .iter()
            .filter(|id| **id == me || answers.get(id) == Some(&true))
            .count();
        let no = set
            .iter()
            .filter(|id| answers.get(id) == Some(&false))
            .count();
        if (set.len() - no) * 2 <= set.len() {
            return Some(false);
        }
        all_won &= yes * 2 > set.len();
    }
    all_won.then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pre_vote_is_decided_by_a_majority_of_every_voter_set() {
        let answers = |a: &[(NodeId, bool)]| a.iter().copied().collect::<BTreeMap<_, _>>();
        let three = vec![vec![1, 2, 3]];
        assert_eq!(decided(1, &three, &answers(&[])), None);
        assert_eq!(decided(1, &three, &answers(&[(2, true)])), Some(true));
        assert_eq!(decided(1, &three, &answers(&[(2, false)])), None);
        assert_eq!(
            decided(1, &three, &answers(&[(2, false), (3, false)])),
            Some(false)
        );
        // Joint: {1,2,3} and {1,4,5}: a yes from 2 alone is not enough.
        let joint = vec![vec![1, 2, 3], vec![1, 4, 5]];
        assert_eq!(decided(1, &joint, &answers(&[(2, true)])), None);
        assert_eq!(
            decided(1, &joint, &answers(&[(2, true), (5, true)])),
            Some(true)
        );
        assert_eq!(
            decided(1, &joint, &answers(&[(4, false), (5, false)])),
            Some(false)
        );
        // The only voter wins alone.
        assert_eq!(decided(1, &[vec![1]], &answers(&[])), Some(true));
    }
}
