//! What clustering logic needs of the store's membership: local-only changes,
//! a view of the membership and of the leader's replication progress, and
//! watches that wake only when those change.
//!
//! A change through [`crate::StoreHandle::change_membership_here`] runs on this
//! member (never forwarded), and the views are this member's knowledge (a
//! follower's may lag the leader's).

use std::collections::BTreeMap;

use openraft::StoredMembership;
use openraft::metrics::{RaftDataMetrics, RaftServerMetrics};
use tokio::sync::watch;

use crate::stop::stopped;
use crate::types::{MemberNode, NodeId};

/// What a new member must be told to join: pass it to
/// [`crate::StoreHandle::add_learner`] or [`MembershipChange::AddLearner`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub id: u64,
    pub node: MemberNode,
}

/// A membership change for [`crate::StoreHandle::change_membership_here`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a non-voting learner. Returns once the change is committed, without
    /// waiting for the learner to catch up: watch
    /// [`crate::StoreHandle::replication`] for that.
    AddLearner(MemberSpec),
    /// Make a learner a voter.
    Promote(u64),
    /// Remove a member, voter or learner.
    Remove(u64),
}

/// Why [`crate::StoreHandle::change_membership_here`] did not change the membership.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// This member is not the leader; nothing was changed.
    #[error("this member is not the leader")]
    NotLeader,
    /// Another membership change is still in progress; nothing was changed.
    #[error("another membership change is in progress")]
    InProgress,
    #[error("{0}")]
    Other(String),
}

/// This member's view of the membership ([`crate::StoreHandle::membership`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipState {
    /// The leader, if one is known.
    pub leader: Option<u64>,
    /// Voters and learners, by ID.
    pub members: Vec<MemberInfo>,
    /// The voter sets of the config, by ID: one, or two while a change is
    /// joint (a quorum then needs a majority of each).
    pub voter_sets: Vec<Vec<u64>>,
    /// Raft has a membership config from its log or snapshot (it was
    /// initialised, or loaded, or received one from a leader). Until then
    /// `members` is empty and means nothing.
    pub loaded: bool,
    /// This member has applied the config (so a quorum committed it). A
    /// config that is only in its log may yet be lost: a leader that sent it
    /// and crashed before it was durable on a quorum restarts without it.
    pub committed: bool,
    /// Where the config is in the log: (term, index).
    pub config_log: Option<(u64, u64)>,
}

impl MembershipState {
    pub(crate) fn of(m: &RaftServerMetrics<NodeId, MemberNode>, last_applied: Option<u64>) -> Self {
        MembershipState {
            committed: config_committed(m, last_applied),
            leader: m.current_leader,
            members: members_of(&m.membership_config),
            voter_sets: m
                .membership_config
                .membership()
                .get_joint_config()
                .iter()
                .map(|set| set.iter().copied().collect())
                .collect(),
            loaded: m.membership_config.log_id().is_some(),
            config_log: m
                .membership_config
                .log_id()
                .map(|l| (l.leader_id.term, l.index)),
        }
    }
}

/// A member as listed by MemberList.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    /// The member's hostname.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The members of a membership config, voters and learners, by ID.
pub(crate) fn members_of(m: &StoredMembership<NodeId, MemberNode>) -> Vec<MemberInfo> {
    let membership = m.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, n)| MemberInfo {
            id: *id,
            name: n.name.clone(),
            peer_urls: n.peer_urls.clone(),
            client_urls: n.client_urls.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

/// Wakes when this member's membership, leader, vote or raft state changes
/// ([`crate::StoreHandle::membership_changes`]); not on heartbeats or writes, so
/// waiting on it costs nothing while the cluster is stable.
pub struct MembershipWatch {
    pub(crate) rx: watch::Receiver<RaftServerMetrics<NodeId, MemberNode>>,
    /// For when the config becomes committed (its index applied).
    pub(crate) data: watch::Receiver<RaftDataMetrics<NodeId>>,
    pub(crate) stop: watch::Receiver<bool>,
    /// `committed` as last reported by [`MembershipWatch::state`].
    pub(crate) committed: bool,
}

/// Whether the config in `m` has been applied here (`None`: no config came
/// from the log, nothing can be lost).
fn config_committed(m: &RaftServerMetrics<NodeId, MemberNode>, last_applied: Option<u64>) -> bool {
    match m.membership_config.log_id() {
        None => true,
        Some(l) => last_applied.is_some_and(|a| l.index <= a),
    }
}

impl MembershipWatch {
    /// Waits for the next change (any change since this watch last returned or
    /// was made, a config becoming committed included; not each write); false
    /// once the store stopped.
    pub async fn changed(&mut self) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        loop {
            tokio::select! {
                r = self.rx.changed() => return r.is_ok(),
                r = self.data.changed() => {
                    if r.is_err() {
                        return false;
                    }
                    let applied = self.data.borrow_and_update().last_applied.map(|l| l.index);
                    if config_committed(&self.rx.borrow(), applied) != self.committed {
                        return true;
                    }
                }
                () = stopped(&mut self.stop) => return false,
            }
        }
    }

    /// The membership now (what [`crate::StoreHandle::membership`] returns).
    pub fn state(&mut self) -> MembershipState {
        let applied = self.data.borrow_and_update().last_applied.map(|l| l.index);
        let state = MembershipState::of(&self.rx.borrow_and_update(), applied);
        self.committed = state.committed;
        state
    }
}

/// The leader's replication progress ([`crate::StoreHandle::replication`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replication {
    /// This member's last log index (0 with an empty log).
    pub last_log_index: u64,
    /// On the leader: the highest log index known to be replicated to each
    /// member (the leader itself included) that has matched any entry yet.
    /// Empty on any other member.
    pub matched: BTreeMap<u64, u64>,
}

impl Replication {
    pub(crate) fn of(m: &RaftDataMetrics<NodeId>) -> Self {
        Replication {
            last_log_index: m.last_log.map_or(0, |l| l.index),
            matched: m
                .replication
                .iter()
                .flatten()
                .filter_map(|(id, matched)| matched.map(|l| (*id, l.index)))
                .collect(),
        }
    }
}

/// Wakes when [`Replication`] changes: a write, a learner catching up, a change
/// of leader ([`crate::StoreHandle::replication_changes`]). Raft's data metrics
/// it is built on also change with every heartbeat on a leader; those wake this
/// watch's task briefly but never return from [`ReplicationWatch::changed`], so
/// wait on it only while replication matters (a learner is catching up).
pub struct ReplicationWatch {
    pub(crate) rx: watch::Receiver<RaftDataMetrics<NodeId>>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) last: Replication,
}

impl ReplicationWatch {
    /// Waits until the replication progress differs from what this watch last
    /// returned (or from when it was made); false once the store stopped.
    pub async fn changed(&mut self) -> bool {
        loop {
            if *self.stop.borrow() {
                return false;
            }
            tokio::select! {
                r = self.rx.changed() => if r.is_err() { return false },
                () = stopped(&mut self.stop) => return false,
            }
            let now = Replication::of(&self.rx.borrow_and_update());
            if now != self.last {
                self.last = now;
                return true;
            }
        }
    }

    /// The replication progress now (what [`crate::StoreHandle::replication`]
    /// returns); the next [`ReplicationWatch::changed`] compares with it.
    pub fn state(&mut self) -> Replication {
        self.last = Replication::of(&self.rx.borrow_and_update());
        self.last.clone()
    }
}
