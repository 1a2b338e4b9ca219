//! Cluster nomination decisions: which volunteers become store members and
//! which members step down, so the cluster tracks `/_mgmt/idealClusterSize`.
//!
//! Like openraft's `Engine`, this only decides: the runtime feeds it what it
//! observes in the store ([`Input::Observed`]) and the outcome of the command it
//! asked for ([`Input::Done`]), and carries out each [`Command`] it emits. Only the
//! store's leader runs it.
//!
//! One membership change at a time, in this order (each waits for the last):
//! - grow: `Nominate(h)`; once `h` has started its peer server and advertised
//!   it, `AddLearner(h)`; once it is a learner, `Promote(h)`;
//! - shrink: `Unnominate(h)`, then `RemoveMember(h)`; `h` stops its server
//!   once it sees it is no longer a member. A leader of two hands over
//!   first (`HandOver(voter)`), and the next leader removes it.
//!
//! Choices are deterministic: grow picks the alphabetically first volunteer;
//! shrink removes hosts that stopped volunteering first, then the
//! alphabetically last member, never the leader while another member remains.
//! A nominee that does not start within [`NOMINEE_START_TIMEOUT`] is
//! un-nominated, so a dead nominee cannot block the cluster forever.

use std::collections::{BTreeMap, BTreeSet};

use super::{DEFAULT_IDEAL_CLUSTER_SIZE, Host};
use crate::time::Millis;

/// How long a nominee may take to start its server and advertise it.
pub const NOMINEE_START_TIMEOUT: Millis = Millis(30_000);
/// Wait after a failed command before deciding again.
pub const RETRY_DELAY: Millis = Millis(1_000);

/// A store member as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub learner: bool,
    /// The membership is joint, and its new voter set leaves this one out.
    pub outgoing: bool,
}

/// What the leader observes in the store and in its raft membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// This host, the leader.
    pub leader: Host,
    /// `/_mgmt/idealClusterSize`, if set: `Err(raw)` if it is not a size.
    pub ideal: Option<Result<u32, String>>,
    /// `/_mgmt/volunteers/<host>` -> its peer URLs.
    pub volunteers: BTreeMap<Host, Vec<String>>,
    /// `/_mgmt/nominated/<host>`.
    pub nominated: BTreeSet<Host>,
    /// `/_mgmt/endpoints/<host>` -> its advertised peer URLs: its server runs
    /// (for the current nomination).
    pub started: BTreeMap<Host, Vec<String>>,
    /// Raft membership.
    pub members: BTreeMap<Host, Member>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    /// Put `/_mgmt/nominated/<host>`: the host should start its peer server.
    Nominate(Host),
    /// Add the started nominee to the raft membership as a learner.
    AddLearner { host: Host, peer_urls: Vec<String> },
    /// Make a learner a voter.
    Promote(Host),
    /// Remove a member from the raft membership (the leader itself only
    /// while at least two other voters remain).
    RemoveMember(Host),
    /// Hand the leadership to this voter (etcd's MoveLeader), so that it
    /// removes the leader, whose nomination was withdrawn.
    HandOver(Host),
    /// Delete `/_mgmt/nominated/<host>`: the host should stop its server.
    Unnominate(Host),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The latest view of the store; replaces the previous one.
    Observed(View),
    /// The command last emitted finished.
    Done { ok: bool },
    /// Time passed; call at [`Nominator::poll_timeout`].
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Command(Command),
    /// `idealClusterSize` holds something that is not a size >= 1; it is
    /// ignored and the last valid size kept.
    InvalidIdealSize {
        raw: String,
        using: u32,
    },
}

/// A deliberate bug the simulator reintroduces to prove that its invariants
/// catch it (`sim`'s `harness_catches_growth_past_ideal`). Never set outside
/// that test.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bug {
    #[default]
    None,
    /// Skip the "members < ideal" checks (before nominating a volunteer and
    /// before adding a started nominee): every volunteer joins.
    GrowPastIdeal,
}

/// The leader's nomination state machine.
#[derive(Debug, Default)]
pub struct Nominator {
    bug: Bug,
    view: View,
    now: Millis,
    ideal: Option<u32>,
    reported_invalid: Option<String>,
    in_flight: Option<Command>,
    retry_at: Option<Millis>,
    /// Nominee -> when it was first seen nominated but not started.
    waiting_since: BTreeMap<Host, Millis>,
    outputs: Vec<Output>,
}

impl Nominator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A nominator with a deliberate [`Bug`] (simulator self-test only).
    #[doc(hidden)]
    pub fn with_bug(bug: Bug) -> Self {
        Nominator {
            bug,
            ..Self::default()
        }
    }

    /// Feeds one input at `now`, then decides. Drain [`Nominator::poll_output`] after.
    pub fn handle(&mut self, now: Millis, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::Observed(view) => {
                self.view = view;
                self.parse_ideal();
            }
            Input::Done { ok } => {
                self.in_flight = None;
                if !ok {
                    self.retry_at = Some(self.now + RETRY_DELAY);
                }
            }
            Input::Tick => {}
        }
        if self.retry_at.is_some_and(|t| t <= self.now) {
            self.retry_at = None;
        }
        self.track_nominees();
        if self.in_flight.is_none()
            && self.retry_at.is_none()
            && let Some(cmd) = self.decide()
        {
            self.in_flight = Some(cmd.clone());
            self.outputs.push(Output::Command(cmd));
        }
    }

    /// Drains what to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        (!self.outputs.is_empty()).then(|| self.outputs.remove(0))
    }

    /// When to feed [`Input::Tick`] next if nothing else happens.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let nominee_deadline = self
            .waiting_since
            .values()
            .map(|&t| t + NOMINEE_START_TIMEOUT)
            .min();
        match (self.retry_at, nominee_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The size the cluster is steering towards.
    pub fn ideal(&self) -> u32 {
        self.ideal.unwrap_or(DEFAULT_IDEAL_CLUSTER_SIZE)
    }

    /// Takes the size the view holds; an invalid one is reported once and
    /// the last valid size kept.
    fn parse_ideal(&mut self) {
        match self.view.ideal.clone() {
            Some(Ok(n)) => {
                self.ideal = Some(n);
                self.reported_invalid = None;
            }
            Some(Err(raw)) if self.reported_invalid.as_ref() != Some(&raw) => {
                self.outputs.push(Output::InvalidIdealSize {
                    raw: raw.clone(),
                    using: self.ideal(),
                });
                self.reported_invalid = Some(raw);
            }
            Some(Err(_)) | None => {}
        }
    }

    fn track_nominees(&mut self) {
        let pending: BTreeSet<&Host> = self
            .view
            .nominated
            .iter()
            .filter(|h| !self.view.members.contains_key(*h) && !self.view.started.contains_key(*h))
            .collect();
        self.waiting_since.retain(|h, _| pending.contains(h));
        for h in pending {
            self.waiting_since.entry(h.clone()).or_insert(self.now);
        }
    }

    /// How the leader leaves the membership. It removes itself only while
    /// the other voters hold a quorum without it (three voters or more). A
    /// leader of two that crashed after proposing its own removal would
    /// restart with a log whose latest configuration leaves it out, so it
    /// would not campaign, and the other voter cannot win without it: no
    /// leader, for good. So a leader of two hands the leadership over (as
    /// etcd's docs advise), and the next leader removes it.
    fn remove_leader(&self) -> Option<Command> {
        let v = &self.view;
        let voters = v.members.values().filter(|m| !m.learner).count();
        if voters >= 3 {
            return Some(Command::RemoveMember(v.leader.clone()));
        }
        self.heir().map(Command::HandOver)
    }

    /// Whom the leader hands over to: a voter that stays in the membership
    /// and whose leased key says it is alive (a crashed one would only hold
    /// the writes up).
    fn heir(&self) -> Option<Host> {
        let v = &self.view;
        v.members
            .iter()
            .find(|(h, m)| {
                **h != v.leader && !m.learner && !m.outgoing && v.volunteers.contains_key(*h)
            })
            .map(|(h, _)| h.clone())
    }

    fn decide(&self) -> Option<Command> {
        let v = &self.view;
        let ideal = self.ideal() as usize;
        // A leader outside its own membership (it finishes a change that
        // removed it, begun by an earlier leader) changes nothing more: its
        // host stops its server, and a member leads on.
        if !v.members.contains_key(&v.leader) {
            return None;
        }
        // A leader of a joint configuration that removes it (begun by an
        // earlier leader) starts nothing else: it finishes that change, or
        // hands over to a member of the new configuration to finish it.
        if v.members.get(&v.leader).is_some_and(|m| m.outgoing) {
            return self.remove_leader();
        }

        // Finish what is half done before starting anything new.
        // A learner gets promoted (unless it is leaving).
        for (h, m) in &v.members {
            if m.learner && v.volunteers.contains_key(h) && v.nominated.contains(h) {
                return Some(Command::Promote(h.clone()));
            }
        }
        // A started nominee joins as a learner.
        for h in &v.nominated {
            if !v.members.contains_key(h)
                && v.volunteers.contains_key(h)
                && let Some(urls) = v.started.get(h)
            {
                // The ideal size may have shrunk while it was starting.
                if v.members.len() >= ideal && self.bug != Bug::GrowPastIdeal {
                    return Some(Command::Unnominate(h.clone()));
                }
                return Some(Command::AddLearner {
                    host: h.clone(),
                    peer_urls: urls.clone(),
                });
            }
        }
        // A member whose nomination was withdrawn leaves the membership; its
        // host stops its server once it sees it is no longer a member.
        for h in v.members.keys() {
            if !v.nominated.contains(h) && *h != v.leader {
                return Some(Command::RemoveMember(h.clone()));
            }
        }
        // Then the leader, once no other member is left to remove.
        if !v.nominated.contains(&v.leader)
            && let Some(command) = self.remove_leader()
        {
            return Some(command);
        }
        // A nominee that stopped volunteering, or never started, is dropped.
        for h in &v.nominated {
            if v.members.contains_key(h) {
                continue;
            }
            let gave_up = self
                .waiting_since
                .get(h)
                .is_some_and(|&t| self.now >= t + NOMINEE_START_TIMEOUT);
            if !v.volunteers.contains_key(h) || gave_up {
                return Some(Command::Unnominate(h.clone()));
            }
        }
        // A nominee still starting: wait for it; one change at a time.
        if v.nominated.iter().any(|h| !v.members.contains_key(h)) {
            return None;
        }

        // Members that stopped volunteering step down, the leader last.
        let quitting = |h: &&Host| !v.volunteers.contains_key(*h) && v.nominated.contains(*h);
        if let Some(h) = v.members.keys().filter(quitting).rfind(|h| **h != v.leader) {
            return Some(Command::Unnominate(h.clone()));
        }
        if v.members.len() > 1 && quitting(&&v.leader) {
            return Some(Command::Unnominate(v.leader.clone()));
        }
        let members = v.members.len();
        let candidate = v
            .volunteers
            .keys()
            .find(|h| !v.members.contains_key(*h) && !v.nominated.contains(*h));
        if members < ideal || (self.bug == Bug::GrowPastIdeal && candidate.is_some()) {
            return candidate.map(|h| Command::Nominate(h.clone()));
        }
        if members > ideal {
            let victim = v.members.keys().rev().find(|h| **h != v.leader)?;
            return Some(Command::Unnominate(victim.clone()));
        }
        None
    }
}

#[cfg(test)]
#[path = "nominator_tests.rs"]
mod tests;
