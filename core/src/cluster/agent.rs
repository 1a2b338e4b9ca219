//! One host's clustering state machine: every rule of how a host takes part in
//! the store cluster, as values in and values out.
//!
//! The driver (`mgmt_store::cluster`) feeds it what it observes ([`Input`]: the
//! decoded `/_mgmt/` keys, this host's store membership, the outcome of each
//! action) and carries out each [`Action`] it emits; [`Agent::poll_timeout`] says
//! when to feed [`Input::Tick`]. Actions run in four [`Lane`]s: the agent never
//! has two actions of one lane in flight, so the driver may run lanes
//! concurrently and must feed each action's outcome back.
//!
//! The rules, all here:
//! - **Bootstrap** (no seeds): start a one-member store at once; once it leads
//!   and has read the keys, nominate itself and write `idealClusterSize`
//!   ([`keys::bootstrap_txn`]), unless the keys already say so (a restart).
//! - **Restart with state** (seeds given, state on disk): serve at once from the
//!   state (the cluster may need this very member for quorum); once the store
//!   has loaded its membership (or [`RESTART_CHECK_TIMEOUT`] passed), keep
//!   serving only if the membership lists this member's ID; otherwise stop,
//!   keep the state and wait for a nomination.
//! - **Volunteer**: a host that may serve holds `volunteers/<host>` on its lease.
//! - **Nominee**: once `nominated/<host>` appears, start a joining server under
//!   the nomination's ID ([`incarnation_id`]). State on disk is kept if it
//!   belongs to this nomination or to a member the cluster still lists;
//!   otherwise it is discarded first (raft must never see one ID with two logs).
//!   A running server holds `endpoints/<host>` (with its member ID) on the lease.
//! - **Removal**: a server that is not nominated, or runs for an earlier
//!   nomination, asks the other members (its own view may be stale once it is
//!   out: the hosts the keys show serving, the members its own log lists, its
//!   seeds) whether its ID is still a member, every [`REMOVAL_RECHECK`], and
//!   reads the keys again when no one answers; once it is not, it stops and
//!   discards its state.
//! - **Lease**: granted when there is a key to hold, kept alive every third of
//!   its TTL, granted anew when it expired; keys are rewritten when they change
//!   or when a read after the write no longer shows them. A single pass with no
//!   seeds holds none while its store has no other member.
//! - **Leader** (this host's store is raft leader): reads `/_mgmt/` from its own
//!   store, refreshes its own member URLs if they changed, and runs the
//!   [`Nominator`], one command at a time; a learner is promoted only once its
//!   replicated index is within [`PROMOTE_LAG`] of the leader's log (waiting at
//!   most the nominator's retry delay). Only a server started for the current
//!   nomination counts as started (its `endpoints/` ID is the nomination's), so
//!   a server of an earlier nomination still shutting down is never added back.
//! - **Leaving** ([`Input::Stop`]): revoke the lease; a membership change begun
//!   before is no longer waited for; then wait, at most `leave_timeout`, for the
//!   leader to remove this member (or for it to be the last one), stop the
//!   server, and finish. A removed member's state is discarded, but for the
//!   client URLs of the members it knew: a later start finds the cluster
//!   through them even if its seeds are gone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::keys::{self, ClusterKeys, Endpoints, Key, KeyError};
use super::nominator::{self, Bug, Command, Nominator, View};
use super::{Host, incarnation_id, member_id};
use crate::kv::TxnRequest;
use crate::time::Millis;

/// Wait after a failed lease grant, keep-alive, put or delete.
pub const LEASE_RETRY: Millis = Millis(500);
/// Wait after a failed read of `/_mgmt/`.
pub const READ_RETRY: Millis = Millis(500);
/// How often a server that may have been removed asks the other members.
pub const REMOVAL_RECHECK: Millis = Millis(500);
/// Wait after a server failed to start (or its start could not be decided).
pub const START_RETRY: Millis = Millis(2_000);
/// How long a restarted member waits for its store to load its membership.
pub const RESTART_CHECK_TIMEOUT: Millis = Millis(2_000);
/// Wait after an update of the leader's own member URLs.
pub const URL_UPDATE_RETRY: Millis = Millis(500);
/// Log entries a learner may lag behind the leader and still be promoted.
pub const PROMOTE_LAG: u64 = 64;

/// One host's settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub host: Host,
    /// May this host run a store server (volunteer)? `--no-server` clears it.
    pub may_serve: bool,
    /// Client URLs of existing members; empty: bootstrap a new cluster here.
    pub seeds: Vec<String>,
    /// Peer URLs this host's server will listen on, as configured.
    pub peer_urls: Vec<String>,
    /// Written to `idealClusterSize` when bootstrapping.
    pub ideal_on_bootstrap: Option<u32>,
    /// TTL of the host's lease, seconds.
    pub lease_ttl_s: i64,
    /// How long leaving waits for the leader to remove this member.
    pub leave_timeout: Millis,
    /// The run leaves after one pass (`--converged-timeout 0`): with no
    /// seeds, it holds no lease while its store has no other member.
    pub single_pass: bool,
    /// A deliberate nomination bug, for the simulator's self-test only.
    #[doc(hidden)]
    pub bug: Bug,
}

/// What this host's data directory held when the agent was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The directory holds store state.
    pub has_state: bool,
    /// The member ID that state belongs to, if it records one (state without
    /// one is the hostname's [`member_id`]).
    pub member_id: Option<u64>,
    /// Client URLs of the members it last knew of, kept when its state was
    /// discarded.
    pub known_members: Vec<String>,
}

/// A member as this host's store lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMember {
    pub id: u64,
    pub name: Host,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub learner: bool,
}

/// This host's store's membership, as its raft instance reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The raft leader's ID, if one is known.
    pub leader: Option<u64>,
    pub members: Vec<StoreMember>,
    /// The voter sets by ID: one, or two while a membership change is joint.
    pub voter_sets: Vec<Vec<u64>>,
    /// Raft has loaded (or been given) a membership config.
    pub loaded: bool,
    /// This host has applied that config: a quorum committed it. One only in
    /// its log may still be lost (its leader crashed before a quorum had it),
    /// so it alone never proves this host removed.
    pub committed: bool,
    /// Where that config is in the log: (term, index), raft's order.
    pub config_log: Option<(u64, u64)>,
}

/// One member's answer to [`Action::ListMembers`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberList {
    /// The IDs in its membership config.
    pub ids: Vec<u64>,
    /// Where that config is in the log, (term, index), where the member says it.
    pub config_log: Option<(u64, u64)>,
}

impl Membership {
    fn get(&self, id: u64) -> Option<&StoreMember> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// The leader's replication progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replication {
    pub last_log_index: u64,
    /// Member ID -> highest log index known replicated there.
    pub matched: BTreeMap<u64, u64>,
}

/// A membership change, run on this host's store only (never forwarded: only
/// a leader can commit it, so a deposed leader changes nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a non-voting learner; does not wait for it to catch up.
    AddLearner {
        id: u64,
        name: Host,
        peer_urls: Vec<String>,
        client_urls: Vec<String>,
    },
    Promote {
        id: u64,
    },
    Remove {
        id: u64,
    },
    /// Not a membership change but carried as one: hand the leadership to
    /// this voter (etcd's MoveLeader), which then removes this leader.
    MoveLeader {
        to: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// A one-member cluster of its own if there is no state (or restart from it).
    Bootstrap,
    /// Wait to be added by a member of the cluster (or restart from state).
    Join,
}

/// Why a server is started or stopped: what the driver logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Bootstrap,
    /// Restart from the state on disk.
    Restart,
    Nominated,
    /// Restarted from state that is not (yet) a member's.
    NotAMemberYet,
    /// No longer a member.
    Removed,
    /// Nominated anew while the server of an earlier nomination ran; the
    /// leader removed that member.
    Renominated,
    Leaving,
}

/// What the driver runs concurrently: at most one action of each at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// Start or stop the server, and the member lists that decide it.
    Server,
    /// Read `/_mgmt/`.
    Read,
    /// The lease and the keys it holds.
    Lease,
    /// The leader's writes and membership changes.
    Leader,
}

/// What the agent asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start this host's store server; `discard_first`: delete its state first.
    /// Answer [`Input::ServerStarted`] or [`Input::ServerStartFailed`].
    StartServer {
        mode: StartMode,
        /// The ID for fresh state (state on disk keeps its own).
        member_id: u64,
        discard_first: bool,
        reason: Reason,
    },
    /// Stop the server; `discard`: then delete its state, keeping only
    /// `remember`, the client URLs of the other members (a later start finds
    /// the cluster through them, [`Stored::known_members`]). Answer
    /// [`Input::ServerStopped`].
    StopServer {
        discard: bool,
        reason: Reason,
        remember: Vec<String>,
    },
    /// MemberList, asked through the cluster client (`via: None`) or of each
    /// of these client URLs. Answer [`Input::MemberList`].
    ListMembers { via: Option<Vec<String>> },
    /// Read every key under [`keys::PREFIX`]: linearizably from this host's own
    /// store, or through the client. Answer [`Input::KeysRead`] or
    /// [`Input::KeysReadFailed`].
    ReadKeys { from_own_store: bool },
    /// Point the client at these endpoints (no answer).
    SetClientEndpoints(Vec<String>),
    /// Answer [`Input::LeaseGranted`] or [`Input::LeaseGrantFailed`].
    GrantLease { ttl_s: i64 },
    /// Answer [`Input::KeptAlive`].
    KeepAlive { lease: i64 },
    /// Answer [`Input::LeaseRevoked`].
    RevokeLease { lease: i64 },
    /// Answer [`Input::KeyWritten`].
    PutLeased { key: Key, value: String, lease: i64 },
    /// Answer [`Input::KeyDeleted`].
    DeleteKey { key: Key },
    /// Run a txn on this host's own store. Answer [`Input::TxnDone`].
    Txn(TxnRequest),
    /// Answer [`Input::MembershipChanged`].
    ChangeMembership(MemberChange),
    /// Set this member's entry in the membership to the URLs it listens on.
    /// Answer [`Input::OwnUrlsUpdated`].
    UpdateOwnUrls,
    /// Drop the action in flight in this lane; feed nothing for it.
    Abandon(Lane),
    /// The host has left: stop driving.
    Finished,
}

impl Action {
    /// The lane an action occupies until its answer, if it has one.
    pub fn lane(&self) -> Option<Lane> {
        match self {
            Action::StartServer { .. } | Action::StopServer { .. } | Action::ListMembers { .. } => {
                Some(Lane::Server)
            }
            Action::ReadKeys { .. } => Some(Lane::Read),
            Action::GrantLease { .. }
            | Action::KeepAlive { .. }
            | Action::RevokeLease { .. }
            | Action::PutLeased { .. }
            | Action::DeleteKey { .. } => Some(Lane::Lease),
            Action::Txn(_) | Action::ChangeMembership(_) | Action::UpdateOwnUrls => {
                Some(Lane::Leader)
            }
            Action::SetClientEndpoints(_) | Action::Abandon(_) | Action::Finished => None,
        }
    }
}

/// Outcome of a keep-alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    Alive,
    /// The lease is gone.
    Expired,
    /// No answer; try again.
    Failed,
}

/// What happened, fed to [`Agent::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// `/_mgmt/` as read at store revision `revision`.
    KeysRead {
        revision: i64,
        keys: ClusterKeys,
    },
    KeysReadFailed,
    /// The watch of `/_mgmt/` saw changes up to `revision`; `None`: events may
    /// have been missed.
    KeysChanged {
        revision: Option<i64>,
    },
    ServerStarted {
        id: u64,
        peer_urls: Vec<String>,
        client_urls: Vec<String>,
    },
    /// `discarded`: the state was deleted before the start failed.
    ServerStartFailed {
        discarded: bool,
    },
    ServerStopped {
        discarded: bool,
    },
    /// The member IDs each MemberList asked answered (nothing from those
    /// that did not answer).
    MemberList(Vec<MemberList>),
    /// This host's store's membership changed (feed it whenever it does while
    /// a server runs).
    Membership(Membership),
    /// Replication progress (feed it while [`Agent::wants_replication`]).
    Replication(Replication),
    LeaseGranted {
        lease: i64,
    },
    LeaseGrantFailed,
    KeptAlive(KeepAlive),
    LeaseRevoked,
    /// `revision`: the put's revision, `None` if it failed.
    KeyWritten {
        revision: Option<i64>,
    },
    KeyDeleted {
        ok: bool,
    },
    /// Whether the txn's compare held; `Err`: it failed.
    TxnDone(Result<bool, String>),
    /// The change's outcome and the membership right after it.
    MembershipChanged {
        result: Result<(), String>,
        membership: Membership,
    },
    OwnUrlsUpdated,
    /// The operator asked this host to leave.
    Stop,
    /// Time passed; feed it at [`Agent::poll_timeout`].
    Tick,
}

/// Something worth telling the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The first successful read of `/_mgmt/`.
    Connected {
        volunteers: usize,
        nominated: usize,
    },
    /// A key or value under `/_mgmt/` does not parse; it is ignored.
    Malformed(KeyError),
    /// `idealClusterSize` is not a size; the last valid size is kept.
    InvalidIdealSize {
        raw: String,
        using: u32,
    },
    /// This host's store became leader: it manages the membership.
    Leading,
    /// The leader carries out a nominator command.
    Command(Command),
    /// A command did not take effect.
    CommandFailed {
        command: Command,
        reason: String,
    },
    /// The lease expired; the host volunteers again.
    LeaseExpired {
        lease: i64,
    },
    Leaving,
    /// Leaving gave up waiting for removal.
    NotRemovedInTime,
    /// Nominated under a member ID whose state this host discarded: it waits
    /// for a new nomination instead of serving that ID with an empty log.
    RetiredId {
        member_id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Action(Action),
    Notice(Notice),
}

/// What the host is doing, for logs, the CLI and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Client URLs of this host's store server while it runs.
    pub server: Option<Vec<String>>,
    /// This host's store is the raft leader.
    pub leader: bool,
    /// This host is nominated.
    pub nominated: bool,
    /// The agent has read the cluster's keys (it is connected).
    pub keys_read: bool,
    /// Times this host started a server.
    pub servers_started: u64,
    /// The agent has finished (it left).
    pub done: bool,
    /// The membership as this host's store sees it: `(name, is_learner)`, sorted.
    pub members: Vec<(String, bool)>,
    /// A quorum committed that membership (this host applied it). One only in
    /// the leader's log may still be lost with that leader.
    pub members_committed: bool,
    /// Its voter sets by name, each sorted: one, or two while a change is
    /// joint (a quorum needs a majority of each).
    pub voter_sets: Vec<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Running {
    id: u64,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    /// The nomination (create revision) this server serves for, once known.
    nomination: Option<i64>,
    /// A restarted server is confirmed once its membership lists it.
    confirmed: bool,
    since: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Server {
    Off,
    Starting {
        nomination: Option<i64>,
        restart: bool,
    },
    Running(Running),
    Stopping,
}

/// What a MemberList in flight is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Query {
    /// May the state of member `old` be kept when starting for `nomination`?
    Start { nomination: i64, old: u64 },
    /// Is member `id` still a member?
    Removal { id: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    id: i64,
    keepalive_at: Millis,
    /// Key -> value and the revision it was written at.
    held: BTreeMap<Key, (String, i64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Decided while the leader lane was busy: it starts once the lane is free.
    Pending,
    /// Its action is in flight.
    Acting,
    /// It changed keys: wait for a read of the own store that shows it.
    AwaitKeys,
    /// A promotion waits for the learner to catch up, until the deadline.
    AwaitCatchUp { until: Millis },
}

/// The nominator command being carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Task {
    command: Command,
    /// Membership changes left to make (a host may have several member IDs).
    changes: VecDeque<MemberChange>,
    step: Step,
}

/// What the leader lane is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LeaderWork {
    Bootstrap,
    UrlUpdate,
    Task,
}

/// One host's clustering state machine.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    now: Millis,
    outputs: VecDeque<Output>,
    busy: BTreeSet<Lane>,
    /// What the leader lane's action in flight is for.
    leader_work: Option<LeaderWork>,

    keys: Option<ClusterKeys>,
    keys_revision: i64,
    keys_from_own: bool,
    /// The last read succeeded.
    keys_fresh: bool,
    keys_dirty: bool,
    /// The read in flight is from the own store.
    reading_own: bool,
    read_retry_at: Option<Millis>,
    reported: BTreeSet<String>,
    connected: bool,

    server: Server,
    stored: Stored,
    /// Peer URLs as bound (port 0 resolved once a server ran).
    peer_urls: Vec<String>,
    servers_started: u64,
    membership: Membership,
    replication: Option<Replication>,
    /// Client URLs of the other members the store last knew of: a host whose
    /// seeds are all gone still finds the cluster through them.
    remembered: Vec<String>,
    next_start_at: Millis,
    /// Member IDs whose state was discarded: never served again.
    retired: BTreeSet<u64>,
    /// The nomination last refused for a retired ID (told once).
    refused: Option<i64>,
    query: Option<Query>,
    removal_recheck_at: Option<Millis>,

    lease: Option<Lease>,
    lease_retry_at: Option<Millis>,
    /// The put in flight: key and value.
    putting: Option<(Key, String)>,
    deleting: Option<Key>,

    bootstrapped: bool,
    bootstrap_retry_at: Option<Millis>,
    nominator: Option<Nominator>,
    fed_view: Option<View>,
    task: Option<Task>,
    url_retry_at: Option<Millis>,

    client_endpoints: Vec<String>,
    leaving_since: Option<Millis>,
    finished: bool,
}

impl Agent {
    /// A host's agent, given what its data directory holds. Drain
    /// [`Agent::poll_output`] at once: a bootstrap host or a member restarting
    /// from state starts its server first (a driver starts that one before
    /// the rest, so a port in use fails at once), then it reads the keys and
    /// asks for a lease.
    pub fn new(config: Config, stored: Stored) -> Agent {
        let mut agent = Agent {
            remembered: stored.known_members.clone(),
            peer_urls: config.peer_urls.clone(),
            config,
            now: Millis(0),
            outputs: VecDeque::new(),
            busy: BTreeSet::new(),
            leader_work: None,
            keys: None,
            keys_revision: 0,
            keys_from_own: false,
            keys_fresh: false,
            keys_dirty: true,
            reading_own: false,
            read_retry_at: None,
            reported: BTreeSet::new(),
            connected: false,
            server: Server::Off,
            stored: stored.clone(),
            servers_started: 0,
            membership: Membership::default(),
            replication: None,
            next_start_at: Millis(0),
            retired: BTreeSet::new(),
            refused: None,
            query: None,
            removal_recheck_at: None,
            lease: None,
            lease_retry_at: None,
            putting: None,
            deleting: None,
            bootstrapped: false,
            bootstrap_retry_at: None,
            nominator: None,
            fed_view: None,
            task: None,
            url_retry_at: None,
            client_endpoints: Vec::new(),
            leaving_since: None,
            finished: false,
        };
        let me = agent.config.host.clone();
        if agent.bootstrap() {
            // The store starts from the state it has (a restarted first
            // host), and bootstraps a cluster only without one.
            let reason = if stored.has_state {
                Reason::Restart
            } else {
                Reason::Bootstrap
            };
            agent.act(Action::StartServer {
                mode: StartMode::Bootstrap,
                member_id: member_id(&me),
                discard_first: false,
                reason,
            });
            agent.server = Server::Starting {
                nomination: None,
                restart: false,
            };
        } else if agent.config.may_serve && stored.has_state {
            agent.act(Action::StartServer {
                mode: StartMode::Join,
                member_id: stored.member_id.unwrap_or_else(|| member_id(&me)),
                discard_first: false,
                reason: Reason::Restart,
            });
            agent.server = Server::Starting {
                nomination: None,
                restart: true,
            };
        }
        agent.client_endpoints = agent.wanted_endpoints();
        agent.decide();
        agent
    }

    /// Feeds one input at `now`, then decides. Drain [`Agent::poll_output`] after.
    pub fn handle(&mut self, now: Millis, input: Input) {
        self.now = self.now.max(now);
        if self.finished {
            return;
        }
        if let Some(lane) = input_lane(&input) {
            self.busy.remove(&lane);
        }
        match input {
            Input::KeysRead { revision, keys } => self.keys_read(revision, keys),
            Input::KeysReadFailed => {
                self.keys_fresh = false;
                self.keys_dirty = true;
                self.read_retry_at = Some(self.now + READ_RETRY);
            }
            Input::KeysChanged { revision } => {
                if revision.is_none_or(|r| r > self.keys_revision) {
                    self.keys_dirty = true;
                }
            }
            Input::ServerStarted {
                id,
                peer_urls,
                client_urls,
            } => self.server_started(id, peer_urls, client_urls),
            Input::ServerStartFailed { discarded } => {
                if discarded {
                    self.discarded();
                }
                self.server = Server::Off;
                self.next_start_at = self.now + START_RETRY;
            }
            Input::ServerStopped { discarded } => {
                if discarded {
                    self.discarded();
                }
                self.server = Server::Off;
                self.membership = Membership::default();
                self.replication = None;
                if self.leaving_since.is_some() {
                    self.finish();
                    return;
                }
            }
            Input::MemberList(ids) => self.member_list(ids),
            Input::Membership(m) => {
                if matches!(self.server, Server::Running(_)) {
                    self.membership = m;
                }
            }
            Input::Replication(r) => {
                if self.wants_replication() {
                    self.replication = Some(r);
                }
            }
            Input::LeaseGranted { lease } => {
                self.lease = Some(Lease {
                    id: lease,
                    keepalive_at: self.now + self.keepalive_interval(),
                    held: BTreeMap::new(),
                });
            }
            Input::LeaseGrantFailed => self.lease_retry_at = Some(self.now + LEASE_RETRY),
            Input::KeptAlive(k) => self.kept_alive(k),
            Input::LeaseRevoked => {}
            Input::KeyWritten { revision } => {
                let put = self.putting.take();
                match (revision, put, self.lease.as_mut()) {
                    (Some(rev), Some((key, value)), Some(l)) => {
                        l.held.insert(key, (value, rev));
                    }
                    (None, _, _) => self.lease_retry_at = Some(self.now + LEASE_RETRY),
                    _ => {}
                }
            }
            Input::KeyDeleted { ok } => {
                let key = self.deleting.take();
                if !ok {
                    self.lease_retry_at = Some(self.now + LEASE_RETRY);
                } else if let (Some(key), Some(l)) = (key, self.lease.as_mut()) {
                    l.held.remove(&key);
                }
            }
            Input::TxnDone(result) => self.txn_done(result),
            Input::MembershipChanged { result, membership } => {
                if matches!(self.server, Server::Running(_)) {
                    self.membership = membership;
                }
                self.member_change_done(result);
            }
            Input::OwnUrlsUpdated => self.url_retry_at = Some(self.now + URL_UPDATE_RETRY),
            Input::Stop => self.stop(),
            Input::Tick => {}
        }
        self.decide();
    }

    /// Drains what to do and what to tell, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to feed [`Input::Tick`] if nothing else happens first. `None`: only
    /// an event can change anything (a converged host waits for its next
    /// keep-alive only).
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.finished {
            return None;
        }
        let mut at: Vec<Millis> = Vec::new();
        if let Some(l) = &self.lease
            && self.leaving_since.is_none()
        {
            at.push(l.keepalive_at);
        }
        at.extend(self.lease_retry_at);
        if self.keys_dirty {
            at.extend(self.read_retry_at);
        }
        if matches!(self.server, Server::Off) && self.nomination().is_some() {
            at.push(self.next_start_at);
        }
        at.extend(self.removal_recheck_at);
        if let Server::Running(r) = &self.server
            && !r.confirmed
        {
            at.push(r.since + RESTART_CHECK_TIMEOUT);
        }
        at.extend(self.url_retry_at);
        if !self.bootstrapped {
            at.extend(self.bootstrap_retry_at);
        }
        if let Some(n) = &self.nominator {
            at.extend(n.poll_timeout());
        }
        if let Some(Task {
            step: Step::AwaitCatchUp { until },
            ..
        }) = &self.task
        {
            at.push(*until);
        }
        if let Some(since) = self.leaving_since {
            at.push(since + self.config.leave_timeout);
        }
        // A deadline that has passed was acted on (or waits for a lane): only
        // future ones wake the driver, so it never spins.
        at.into_iter().filter(|t| *t > self.now).min()
    }

    /// Whether the driver should feed [`Input::Replication`]: a promotion waits
    /// for a learner to catch up.
    pub fn wants_replication(&self) -> bool {
        matches!(
            self.task,
            Some(Task {
                step: Step::AwaitCatchUp { .. },
                ..
            })
        )
    }

    /// The client endpoints wanted now (also emitted as
    /// [`Action::SetClientEndpoints`] whenever they change).
    pub fn client_endpoints(&self) -> &[String] {
        &self.client_endpoints
    }

    /// Whether the bootstrap writes are done (always true with seeds).
    pub fn ready(&self) -> bool {
        !self.bootstrap() || self.bootstrapped
    }

    pub fn status(&self) -> Status {
        let mut members: Vec<(String, bool)> = self
            .membership
            .members
            .iter()
            .map(|m| (m.name.clone(), m.learner))
            .collect();
        members.sort();
        let name_of = |id: &u64| {
            self.membership
                .get(*id)
                .map_or_else(|| format!("#{id:x}"), |m| m.name.to_string())
        };
        let voter_sets = self
            .membership
            .voter_sets
            .iter()
            .map(|set| {
                let mut names: Vec<String> = set.iter().map(name_of).collect();
                names.sort();
                names
            })
            .collect();
        Status {
            server: match &self.server {
                Server::Running(r) => Some(r.client_urls.clone()),
                _ => None,
            },
            leader: self.is_leader(),
            nominated: self.nomination().is_some(),
            keys_read: self.connected,
            servers_started: self.servers_started,
            done: self.finished,
            members,
            members_committed: self.membership.committed,
            voter_sets,
        }
    }

    // --- inputs ---

    fn keys_read(&mut self, revision: i64, keys: ClusterKeys) {
        let errors: BTreeSet<String> = keys.errors.iter().map(|e| e.to_string()).collect();
        for e in &keys.errors {
            if !self.reported.contains(&e.to_string()) {
                self.notice(Notice::Malformed(e.clone()));
            }
        }
        self.reported = errors;
        if !self.connected {
            self.connected = true;
            self.notice(Notice::Connected {
                volunteers: keys.volunteers.len(),
                nominated: keys.nominated.len(),
            });
        }
        self.keys_revision = revision;
        self.keys_from_own = self.reading_own;
        // A read begun before this host led came through the client: the
        // leader decides on its own store's keys only.
        if self.is_leader() && !self.keys_from_own {
            self.keys_dirty = true;
        }
        self.keys_fresh = true;
        self.read_retry_at = None;
        self.keys = Some(keys);
        if self.keys_from_own
            && let Some(t) = &self.task
            && t.step == Step::AwaitKeys
        {
            self.feed_view();
            self.nominator_done(true);
        }
    }

    fn server_started(&mut self, id: u64, peer_urls: Vec<String>, client_urls: Vec<String>) {
        let (nomination, restart) = match self.server {
            Server::Starting {
                nomination,
                restart,
            } => (nomination, restart),
            _ => (None, false),
        };
        self.servers_started += 1;
        self.stored = Stored {
            has_state: true,
            member_id: Some(id),
            known_members: Vec::new(),
        };
        self.peer_urls = peer_urls.clone();
        self.server = Server::Running(Running {
            id,
            peer_urls,
            client_urls,
            nomination,
            confirmed: !restart,
            since: self.now,
        });
        self.removal_recheck_at = None;
    }

    /// `lists`: what each member asked answered (none: no answer). A server
    /// that is not a member yet knows no members: an empty list says nothing.
    /// This host's own log says server `id` is out, in a committed config.
    fn out_by_own_log(&self, id: u64) -> bool {
        self.membership.loaded && self.membership.committed && self.membership.get(id).is_none()
    }

    fn member_list(&mut self, lists: Vec<MemberList>) {
        let lists: Vec<MemberList> = lists.into_iter().filter(|l| !l.ids.is_empty()).collect();
        // A config no earlier in the log than this host's own: what a member
        // left behind (restarted from state older than this host's config)
        // lists proves nothing.
        let mine = self.membership.config_log;
        let not_older = |l: &MemberList| match (l.config_log, mine) {
            (Some(theirs), Some(mine)) => theirs >= mine,
            _ => true,
        };
        match self.query.take() {
            Some(Query::Start { nomination, old }) if !lists.is_empty() => {
                // The old state is kept if any member still lists it.
                let listed = lists.iter().any(|l| l.ids.contains(&old));
                if self.nomination() == Some(nomination) && self.may_start() {
                    self.start_for(nomination, !listed);
                }
            }
            Some(Query::Start { .. }) => self.next_start_at = self.now + REMOVAL_RECHECK,
            // Removed once any member's list lacks it, from a config no
            // earlier than this host's own: a member that still lists it may
            // be one the cluster left behind, and one whose config is older
            // than this host's was left behind before this host joined.
            Some(Query::Removal { id })
                if lists.iter().any(|l| !l.ids.contains(&id) && not_older(l))
                    && self.running_id() == Some(id)
                    && !self.changing_membership() =>
            {
                let reason = if self.nomination().is_some() {
                    Reason::Renominated
                } else {
                    Reason::Removed
                };
                self.stop_removed(reason);
            }
            Some(Query::Removal { .. }) => {
                self.removal_recheck_at = Some(self.now + REMOVAL_RECHECK);
                // No one answered: whom to ask may have changed since the
                // keys were read.
                if lists.is_empty() {
                    self.keys_dirty = true;
                }
            }
            None => {}
        }
    }

    fn kept_alive(&mut self, k: KeepAlive) {
        let interval = self.keepalive_interval();
        let Some(l) = self.lease.as_mut() else { return };
        match k {
            KeepAlive::Alive => l.keepalive_at = self.now + interval,
            KeepAlive::Expired => {
                let lease = l.id;
                self.lease = None;
                self.notice(Notice::LeaseExpired { lease });
            }
            KeepAlive::Failed => l.keepalive_at = self.now + LEASE_RETRY,
        }
    }

    fn txn_done(&mut self, result: Result<bool, String>) {
        match self.take_leader_work() {
            Some(LeaderWork::Bootstrap) => {
                self.bootstrapped = matches!(result, Ok(true));
                if !self.bootstrapped {
                    self.bootstrap_retry_at = Some(self.now + LEASE_RETRY);
                }
            }
            Some(LeaderWork::Task) => match result {
                Ok(true) => {
                    // Decide again only on a view that shows the change.
                    if let Some(t) = &mut self.task {
                        t.step = Step::AwaitKeys;
                    }
                    self.keys_dirty = true;
                    self.read_retry_at = None;
                }
                Ok(false) => self.command_failed("did not apply (state changed)".into()),
                Err(e) => self.command_failed(e),
            },
            _ => {}
        }
    }

    fn member_change_done(&mut self, result: Result<(), String>) {
        self.take_leader_work();
        match result {
            Ok(()) => {
                let more = self.task.as_mut().and_then(|t| {
                    t.step = Step::Acting;
                    t.changes.pop_front()
                });
                match more {
                    Some(change) => self.change_membership(change),
                    None => {
                        self.feed_view();
                        self.nominator_done(true);
                    }
                }
            }
            Err(e) => self.command_failed(e),
        }
    }

    fn stop(&mut self) {
        if self.leaving_since.is_some() {
            return;
        }
        self.leaving_since = Some(self.now);
        self.notice(Notice::Leaving);
        // A membership change begun before is no longer waited for: without
        // quorum it would last its whole timeout, and the agent must leave.
        let changing = self
            .task
            .as_ref()
            .is_some_and(|t| t.step == Step::Acting && is_membership(&t.command));
        if changing && self.leader_work == Some(LeaderWork::Task) {
            self.act(Action::Abandon(Lane::Leader));
            self.busy.remove(&Lane::Leader);
            self.leader_work = None;
            self.command_failed("stopping; no longer waiting for it to commit".into());
        }
        if self.busy.contains(&Lane::Lease) {
            self.act(Action::Abandon(Lane::Lease));
            self.busy.remove(&Lane::Lease);
            self.putting = None;
            self.deleting = None;
        }
        if let Some(l) = self.lease.take() {
            self.act(Action::RevokeLease { lease: l.id });
        }
    }

    // --- decisions ---

    fn decide(&mut self) {
        if self.finished {
            return;
        }
        self.decide_read();
        self.decide_server();
        if self.finished {
            return;
        }
        self.decide_lease();
        self.decide_leader();
        self.decide_endpoints();
    }

    fn decide_read(&mut self) {
        if !self.keys_dirty
            || self.busy.contains(&Lane::Read)
            || self.read_retry_at.is_some_and(|t| t > self.now)
        {
            return;
        }
        self.keys_dirty = false;
        self.reading_own = self.is_leader();
        self.act(Action::ReadKeys {
            from_own_store: self.reading_own,
        });
    }

    fn decide_server(&mut self) {
        if let Some(since) = self.leaving_since {
            return self.decide_leave(since);
        }
        if self.busy.contains(&Lane::Server) {
            return;
        }
        match self.server.clone() {
            Server::Off => {
                if let Some(nomination) = self.nomination()
                    && self.may_start()
                    && self.keys_fresh
                    && self.now >= self.next_start_at
                {
                    self.start_nominated(nomination);
                }
            }
            Server::Running(r) if !r.confirmed => {
                let member = self.membership.get(r.id).is_some();
                if member {
                    if let Server::Running(r) = &mut self.server {
                        r.confirmed = true;
                    }
                    self.decide_server();
                } else if self.membership.loaded || self.now >= r.since + RESTART_CHECK_TIMEOUT {
                    // Not a member by its own log: removed while down, or a
                    // nominee that stopped before it learnt it was added. The
                    // state stays until its nomination is known: discarding a
                    // learner's log the leader already counted would make
                    // that log go backwards.
                    self.stop_server(false, Reason::NotAMemberYet);
                }
            }
            // A membership change it proposed is still in flight: stopping
            // now could leave the others with its first half only (a joint
            // config no quorum can ever finish).
            Server::Running(_) if self.changing_membership() => {}
            Server::Running(r) => self.decide_removal(r),
            Server::Starting { .. } | Server::Stopping => {}
        }
    }

    /// Start for the nomination created at `nomination`, deciding first
    /// whether state on disk may be kept.
    fn start_nominated(&mut self, nomination: i64) {
        let want = incarnation_id(&self.config.host, nomination);
        // Fresh state under an ID whose log the cluster has seen would make
        // that log go backwards: wait for a new nomination (the leader
        // withdraws one whose nominee never starts).
        if self.retired.contains(&want) {
            if self.refused != Some(nomination) {
                self.refused = Some(nomination);
                self.notice(Notice::RetiredId { member_id: want });
            }
            return;
        }
        if self.stored.has_state && self.stored.member_id != Some(want) {
            let old = self
                .stored
                .member_id
                .unwrap_or_else(|| member_id(&self.config.host));
            self.query = Some(Query::Start { nomination, old });
            self.act(Action::ListMembers { via: None });
            return;
        }
        self.start_for(nomination, false);
    }

    fn start_for(&mut self, nomination: i64, discard_first: bool) {
        self.act(Action::StartServer {
            mode: StartMode::Join,
            member_id: incarnation_id(&self.config.host, nomination),
            discard_first,
            reason: Reason::Nominated,
        });
        self.server = Server::Starting {
            nomination: Some(nomination),
            restart: false,
        };
    }

    fn decide_removal(&mut self, r: Running) {
        if self.keys.is_none() {
            return;
        }
        let me = self.config.host.clone();
        let current = self.nomination();
        // A server started without a nomination (bootstrap, restart) serves for
        // the current one if its ID can be that nomination's, and it is still
        // a member by its own log (a bootstrap member that removed itself and
        // is nominated anew starts afresh, under the new nomination's ID).
        let out_by_own_log = self.out_by_own_log(r.id);
        if r.nomination.is_none()
            && !out_by_own_log
            && let Some(rev) = current
            && (r.id == incarnation_id(&me, rev) || r.id == member_id(&me))
            && let Server::Running(run) = &mut self.server
        {
            run.nomination = Some(rev);
            let run = run.clone();
            return self.decide_removal(run);
        }
        let suspect = current.is_none() || current != r.nomination;
        if !suspect {
            self.removal_recheck_at = None;
            return;
        }
        // Not nominated for it, and its own log says it is out: that needs no
        // fresh keys (a leader that removed itself cannot read them from its
        // own store any more). A nominee's own log is no proof: it replays
        // membership configs from before it was added.
        if self.out_by_own_log(r.id) {
            return self.stop_removed(Reason::Removed);
        }
        if !self.keys_fresh {
            return;
        }
        if self.removal_recheck_at.is_some_and(|t| t > self.now) {
            return;
        }
        // Whom to ask: the hosts serving by the keys, the other members its
        // own log lists (the keys may be a stale view, read through this very
        // server), and the seeds.
        let mut others: Vec<String> = self
            .keys
            .iter()
            .flat_map(|k| k.endpoints.iter())
            .filter(|(h, _)| **h != me)
            .flat_map(|(_, e)| e.client_urls.iter().cloned())
            .collect();
        let listed = self.membership.members.iter().filter(|m| m.id != r.id);
        others.extend(listed.flat_map(|m| m.client_urls.iter().cloned()));
        others.extend(self.config.seeds.iter().cloned());
        others.retain(|u| !r.client_urls.contains(u));
        let mut seen = BTreeSet::new();
        others.retain(|u| seen.insert(u.clone()));
        if others.is_empty() {
            self.removal_recheck_at = Some(self.now + REMOVAL_RECHECK);
            return;
        }
        self.query = Some(Query::Removal { id: r.id });
        self.act(Action::ListMembers { via: Some(others) });
    }

    fn decide_leave(&mut self, since: Millis) {
        match self.server.clone() {
            Server::Off => self.finish(),
            Server::Starting { .. } => {
                self.act(Action::Abandon(Lane::Server));
                self.busy.remove(&Lane::Server);
                self.server = Server::Off;
                self.finish();
            }
            Server::Stopping => {}
            Server::Running(r) => {
                let timed_out = self.now >= since + self.config.leave_timeout;
                if self.changing_membership() && !timed_out {
                    return;
                }
                let alone = self.membership.members.len() <= 1;
                // The leader may still remove this member while it leaves.
                if !self.busy.contains(&Lane::Server) && !alone && !timed_out {
                    self.decide_removal(r);
                    if !matches!(self.server, Server::Running(_)) {
                        return;
                    }
                }
                if alone || timed_out {
                    if timed_out && !alone {
                        self.notice(Notice::NotRemovedInTime);
                    }
                    if self.busy.contains(&Lane::Server) {
                        self.act(Action::Abandon(Lane::Server));
                        self.busy.remove(&Lane::Server);
                        self.query = None;
                    }
                    self.stop_server(false, Reason::Leaving);
                }
            }
        }
    }

    fn decide_lease(&mut self) {
        if self.leaving_since.is_some() || self.busy.contains(&Lane::Lease) {
            return;
        }
        let wanted = self.wanted_keys();
        if wanted.is_empty() && self.lease.is_none() {
            return;
        }
        if self.lease_retry_at.is_some_and(|t| t > self.now) {
            return;
        }
        self.lease_retry_at = None;
        let Some(l) = &self.lease else {
            let ttl_s = self.config.lease_ttl_s.max(1);
            return self.act(Action::GrantLease { ttl_s });
        };
        let lease = l.id;
        if self.now >= l.keepalive_at {
            return self.act(Action::KeepAlive { lease });
        }
        for (key, value) in &wanted {
            let stale = match l.held.get(key) {
                Some((held, rev)) => held != value || self.vanished(key, *rev),
                None => true,
            };
            if stale {
                self.putting = Some((key.clone(), value.clone()));
                return self.act(Action::PutLeased {
                    key: key.clone(),
                    value: value.clone(),
                    lease,
                });
            }
        }
        if let Some(key) = l.held.keys().find(|k| !wanted.contains_key(*k)).cloned() {
            self.deleting = Some(key.clone());
            self.act(Action::DeleteKey { key });
        }
    }

    fn decide_leader(&mut self) {
        if !self.is_leader() {
            if self.nominator.take().is_some() {
                self.fed_view = None;
            }
            // A command half done is the next leader's to redo.
            if self.task.as_ref().is_some_and(|t| t.step != Step::Acting) {
                self.task = None;
            }
            return;
        }
        if self.nominator.is_none() {
            self.notice(Notice::Leading);
            self.nominator = Some(Nominator::with_bug(self.config.bug));
            self.fed_view = None;
            // Whatever was read before (through the client, or from the own
            // store in an earlier term) is not this term's own view.
            self.keys_from_own = false;
            self.keys_dirty = true;
            // Its own store answers now: a client read that failed before
            // (no leader yet) does not make this one wait out its retry.
            self.read_retry_at = None;
            self.decide_read();
        }
        if self.busy.contains(&Lane::Leader) {
            return;
        }
        if self.bootstrap()
            && !self.bootstrapped
            && self.bootstrap_retry_at.is_none_or(|t| t <= self.now)
        {
            // Decided on a read of the keys: a restarted host finds its
            // writes there and does not write them again (a synced raft write
            // at every start of a one-shot run).
            if self.keys.is_none() {
                return;
            }
            if self.bootstrap_written() {
                self.bootstrapped = true;
                return self.decide_leader();
            }
            let txn = keys::bootstrap_txn(
                &self.config.host,
                &self.peer_urls,
                self.config.ideal_on_bootstrap,
            );
            return self.act_leader(Action::Txn(txn), LeaderWork::Bootstrap);
        }
        if self.own_urls_stale() && self.url_retry_at.is_none_or(|t| t <= self.now) {
            return self.act_leader(Action::UpdateOwnUrls, LeaderWork::UrlUpdate);
        }
        if let Some(t) = &self.task {
            match t.step {
                Step::Pending => {
                    self.start_task();
                    return;
                }
                Step::AwaitCatchUp { until } => {
                    if let Some(MemberChange::Promote { id }) = t.changes.front().cloned()
                        && self.caught_up(id)
                    {
                        self.task.as_mut().expect("task").changes.pop_front();
                        self.change_membership(MemberChange::Promote { id });
                    } else if self.now >= until {
                        self.command_failed("still catching up".into());
                    } else {
                        return;
                    }
                }
                Step::AwaitKeys | Step::Acting => return,
            }
            if self.task.is_some() {
                return;
            }
        }
        if !self.keys_from_own || self.task.is_some() {
            return;
        }
        self.feed_view();
        let due = self
            .nominator
            .as_ref()
            .and_then(Nominator::poll_timeout)
            .is_some_and(|t| t <= self.now);
        if due {
            self.feed_nominator(nominator::Input::Tick);
        }
    }

    fn decide_endpoints(&mut self) {
        let wanted = self.wanted_endpoints();
        if wanted != self.client_endpoints && !wanted.is_empty() {
            self.client_endpoints = wanted.clone();
            self.act(Action::SetClientEndpoints(wanted));
        }
    }

    // --- the leader's commands ---

    fn feed_view(&mut self) {
        let Some(view) = self.view() else { return };
        if self.fed_view.as_ref() != Some(&view) {
            self.fed_view = Some(view.clone());
            self.feed_nominator(nominator::Input::Observed(view));
        }
    }

    fn feed_nominator(&mut self, input: nominator::Input) {
        let Some(n) = self.nominator.as_mut() else {
            return;
        };
        n.handle(self.now, input);
        let mut outputs = Vec::new();
        while let Some(o) = n.poll_output() {
            outputs.push(o);
        }
        for o in outputs {
            match o {
                nominator::Output::Command(c) => self.begin(c),
                nominator::Output::InvalidIdealSize { raw, using } => {
                    self.notice(Notice::InvalidIdealSize { raw, using })
                }
            }
        }
    }

    fn nominator_done(&mut self, ok: bool) {
        self.task = None;
        self.feed_nominator(nominator::Input::Done { ok });
    }

    fn command_failed(&mut self, reason: String) {
        if let Some(t) = &self.task {
            let command = t.command.clone();
            self.notice(Notice::CommandFailed { command, reason });
        }
        self.nominator_done(false);
    }

    /// Starts carrying out a nominator command.
    fn begin(&mut self, command: Command) {
        self.notice(Notice::Command(command.clone()));
        self.task = Some(Task {
            command,
            changes: VecDeque::new(),
            step: Step::Pending,
        });
        // One leader action at a time (the lane may hold an update of the
        // leader's own URLs, or an action of a term it lost and regained).
        if !self.busy.contains(&Lane::Leader) {
            self.start_task();
        }
    }

    /// Carries out the pending task's first step.
    fn start_task(&mut self) {
        // A host that stopped leading (it may just have removed itself)
        // starts nothing: its writes would be forwarded to the new leader.
        if !self.is_leader() {
            self.task = None;
            return;
        }
        let Some(task) = self.task.as_mut() else {
            return;
        };
        task.step = Step::Acting;
        let command = task.command.clone();
        let keys = self.keys.clone().unwrap_or_default();
        let named = |learner_only: bool, host: &str| -> VecDeque<u64> {
            self.membership
                .members
                .iter()
                .filter(|m| m.name == host && (m.learner || !learner_only))
                .map(|m| m.id)
                .collect()
        };
        match &command {
            Command::Nominate(h) => match keys.volunteers.get(h) {
                Some(urls) => {
                    self.act_leader(Action::Txn(keys::nominate_txn(h, urls)), LeaderWork::Task)
                }
                None => self.command_failed(format!("{h} no longer volunteers")),
            },
            Command::Unnominate(h) => {
                self.act_leader(Action::Txn(keys::unnominate_txn(h)), LeaderWork::Task)
            }
            Command::AddLearner { host, peer_urls } => {
                let Some(n) = keys.nominated.get(host) else {
                    return self.command_failed(format!("{host} is no longer nominated"));
                };
                // A member listed without client URLs could not be found
                // through MemberList (a restarted member whose seeds are gone
                // looks for the cluster there).
                let client_urls = keys
                    .endpoints
                    .get(host)
                    .map(|e| e.client_urls.clone())
                    .unwrap_or_default();
                self.change_membership(MemberChange::AddLearner {
                    id: incarnation_id(host, n.revision),
                    name: host.clone(),
                    peer_urls: peer_urls.clone(),
                    client_urls,
                });
            }
            Command::Promote(h) => {
                let ids = named(true, h);
                if ids.is_empty() {
                    return self.command_failed(format!("{h} is not a learner"));
                }
                let t = self.task.as_mut().expect("task");
                t.changes = ids
                    .into_iter()
                    .map(|id| MemberChange::Promote { id })
                    .collect();
                t.step = Step::AwaitCatchUp {
                    until: self.now + nominator::RETRY_DELAY,
                };
            }
            Command::RemoveMember(h) => {
                let mut changes: VecDeque<MemberChange> = named(false, h)
                    .into_iter()
                    .map(|id| MemberChange::Remove { id })
                    .collect();
                match changes.pop_front() {
                    Some(first) => {
                        self.task.as_mut().expect("task").changes = changes;
                        self.change_membership(first);
                    }
                    None => self.command_failed(format!("{h} is not a member")),
                }
            }
            Command::HandOver(h) => {
                let voter = (self.membership.members.iter())
                    .find(|m| m.name == *h && !m.learner)
                    .map(|m| m.id);
                match voter {
                    Some(to) => self.change_membership(MemberChange::MoveLeader { to }),
                    None => self.command_failed(format!("{h} is not a voter")),
                }
            }
        }
    }

    fn change_membership(&mut self, change: MemberChange) {
        if let Some(t) = &mut self.task {
            t.step = Step::Acting;
        }
        // Promotions left wait for their learner to catch up, one at a time.
        if let MemberChange::Promote { id } = change
            && !self.caught_up(id)
        {
            if let Some(t) = &mut self.task {
                t.changes.push_front(change);
                t.step = Step::AwaitCatchUp {
                    until: self.now + nominator::RETRY_DELAY,
                };
            }
            return;
        }
        self.act_leader(Action::ChangeMembership(change), LeaderWork::Task);
    }

    fn caught_up(&self, id: u64) -> bool {
        self.replication.as_ref().is_some_and(|r| {
            r.matched
                .get(&id)
                .is_some_and(|m| m + PROMOTE_LAG >= r.last_log_index)
        })
    }

    /// The nominator's view: keys read from the own store, and its membership.
    fn view(&self) -> Option<View> {
        let keys = self.keys.as_ref()?;
        Some(View {
            leader: self.config.host.clone(),
            ideal: keys.ideal.clone(),
            volunteers: keys.volunteers.clone(),
            nominated: keys.nominated.keys().cloned().collect(),
            // Only a server started for the current nomination counts: an
            // endpoints key left by the server of an earlier nomination (still
            // shutting down) must not be added back under the new one.
            started: keys
                .endpoints
                .iter()
                .filter(|(h, e)| {
                    keys.nominated
                        .get(*h)
                        .is_some_and(|n| incarnation_id(h, n.revision) == e.member_id)
                })
                .map(|(h, e)| (h.clone(), e.peer_urls.clone()))
                .collect(),
            members: self
                .membership
                .members
                .iter()
                .map(|m| {
                    let sets = &self.membership.voter_sets;
                    let outgoing = !m.learner
                        && sets.len() > 1
                        && sets.last().is_some_and(|s| !s.contains(&m.id));
                    let member = nominator::Member {
                        learner: m.learner,
                        outgoing,
                    };
                    (m.name.clone(), member)
                })
                .collect(),
        })
    }

    // --- helpers ---

    /// A membership change of this leader's is in flight (a nominator
    /// command's, or the update of its own URLs).
    fn changing_membership(&self) -> bool {
        self.busy.contains(&Lane::Leader)
            && match self.leader_work {
                Some(LeaderWork::UrlUpdate) => true,
                Some(LeaderWork::Task) => self
                    .task
                    .as_ref()
                    .is_some_and(|t| t.step == Step::Acting && is_membership(&t.command)),
                _ => false,
            }
    }

    fn bootstrap(&self) -> bool {
        self.config.seeds.is_empty()
    }

    /// The keys read show this host nominated on its own peer URLs and the
    /// ideal size it would write: the bootstrap writes would change nothing.
    fn bootstrap_written(&self) -> bool {
        let Some(keys) = &self.keys else { return false };
        let nominated = keys
            .nominated
            .get(&self.config.host)
            .is_some_and(|n| n.peer_urls == self.peer_urls);
        let ideal = self
            .config
            .ideal_on_bootstrap
            .is_none_or(|n| keys.ideal == Some(Ok(n)));
        nominated && ideal
    }

    fn may_start(&self) -> bool {
        self.config.may_serve && self.leaving_since.is_none()
    }

    /// The create revision of this host's nomination, if it is nominated.
    fn nomination(&self) -> Option<i64> {
        self.keys
            .as_ref()?
            .nominated
            .get(&self.config.host)
            .map(|n| n.revision)
    }

    fn running_id(&self) -> Option<u64> {
        match &self.server {
            Server::Running(r) => Some(r.id),
            _ => None,
        }
    }

    /// This host's store leads and is still a member (a leader that removed
    /// itself manages nothing and reads nothing from its own store).
    fn is_leader(&self) -> bool {
        self.running_id().is_some_and(|id| {
            self.membership.leader == Some(id) && self.membership.get(id).is_some()
        })
    }

    fn own_urls_stale(&self) -> bool {
        let Server::Running(r) = &self.server else {
            return false;
        };
        // Only while still a member: a leader that just removed itself must
        // not add itself back.
        self.membership.get(r.id).is_some_and(|m| {
            m.name != self.config.host
                || m.peer_urls != r.peer_urls
                || m.client_urls != r.client_urls
        })
    }

    fn keepalive_interval(&self) -> Millis {
        Millis(self.config.lease_ttl_s.max(1) as u64 * 1000 / 3)
    }

    /// The keys this host's lease should hold right now.
    fn wanted_keys(&self) -> BTreeMap<Key, String> {
        let me = self.config.host.clone();
        let mut keys = BTreeMap::new();
        if self.alone_for_one_pass() {
            return keys;
        }
        if self.config.may_serve {
            keys.insert(
                Key::Volunteer(me.clone()),
                keys::encode_urls(&self.peer_urls),
            );
        }
        if let Server::Running(r) = &self.server {
            let e = Endpoints {
                peer_urls: r.peer_urls.clone(),
                client_urls: r.client_urls.clone(),
                member_id: r.id,
            };
            keys.insert(Key::Endpoints(me), e.encode());
        }
        keys
    }

    /// A single pass of a host that bootstrapped or restarted on its own
    /// store (no seeds), while that store lists no other member (or has not
    /// loaded its membership yet). Its volunteer and endpoints keys would
    /// serve no one: nobody else can read them before the run is over, and
    /// they would cost a lease grant, two puts and a revoke, each a synced
    /// raft write. The nominator never un-nominates a lone leader that does
    /// not volunteer; once another member shows up, the keys are written.
    pub fn alone_for_one_pass(&self) -> bool {
        self.config.single_pass
            && self.config.seeds.is_empty()
            && !self
                .membership
                .members
                .iter()
                .any(|m| m.name != self.config.host)
    }

    /// A key written at `written` that a later read no longer shows (deleted
    /// by hand, say): it is written again.
    fn vanished(&self, key: &Key, written: i64) -> bool {
        let Some(keys) = &self.keys else { return false };
        if self.keys_revision < written {
            return false;
        }
        // A value that does not parse is there (and reported): writing it
        // again would not change what the read shows.
        let unparsed = keys
            .errors
            .iter()
            .any(|e| matches!(e, KeyError::Value { key: k, .. } if *k == key.encode()));
        match key {
            Key::Volunteer(h) => !keys.volunteers.contains_key(h) && !unparsed,
            Key::Endpoints(h) => !keys.endpoints.contains_key(h) && !unparsed,
            _ => false,
        }
    }

    /// Every advertised member (own server first while it votes), the seeds,
    /// then the members the store knows or last knew of.
    fn wanted_endpoints(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        let running = match &self.server {
            Server::Running(r) => Some(r),
            _ => None,
        };
        if let Some(r) = running
            && self.membership.leader.is_some()
            && self.membership.get(r.id).is_some_and(|m| !m.learner)
        {
            urls.extend(r.client_urls.iter().cloned());
        }
        if let Some(keys) = &self.keys {
            for (h, e) in &keys.endpoints {
                if *h != self.config.host {
                    urls.extend(e.client_urls.iter().cloned());
                }
            }
        }
        urls.extend(self.config.seeds.iter().cloned());
        if let Some(r) = running {
            urls.extend(self.others_client_urls(r.id));
        }
        // Last: the members an earlier server knew of. A fresh server knows
        // none, and a host whose keys are stale and whose seeds are gone
        // still finds the cluster through them.
        urls.extend(self.remembered.iter().cloned());
        // A bootstrap host's own server, before it knows it leads: the only
        // member there is, when nothing else is known.
        if urls.is_empty()
            && let Some(r) = running
        {
            urls.extend(r.client_urls.iter().cloned());
        }
        let mut seen = BTreeSet::new();
        urls.retain(|u| seen.insert(u.clone()));
        urls
    }

    fn others_client_urls(&self, own: u64) -> Vec<String> {
        self.membership
            .members
            .iter()
            .filter(|m| m.id != own)
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect()
    }

    /// The state on disk is gone: the ID it was of is never served again.
    fn discarded(&mut self) {
        if let Some(id) = self.stored.member_id {
            self.retired.insert(id);
        }
        self.stored = Stored {
            known_members: self.remembered.clone(),
            ..Stored::default()
        };
    }

    fn stop_server(&mut self, discard: bool, reason: Reason) {
        if let Some(id) = self.running_id() {
            let others = self.others_client_urls(id);
            // A server that knew no one (a nominee not added yet) teaches nothing.
            if !others.is_empty() {
                self.remembered = others;
            }
        }
        self.server = Server::Stopping;
        self.removal_recheck_at = None;
        self.act(Action::StopServer {
            discard,
            reason,
            remember: self.remembered.clone(),
        });
    }

    /// Stops the server of a member the cluster removed and discards its
    /// state: raft state of a removed member must never serve again (it would
    /// stand for election in a membership long gone).
    fn stop_removed(&mut self, reason: Reason) {
        self.stop_server(true, reason);
    }

    fn finish(&mut self) {
        self.finished = true;
        self.act(Action::Finished);
    }

    fn take_leader_work(&mut self) -> Option<LeaderWork> {
        self.leader_work.take()
    }

    fn act_leader(&mut self, action: Action, work: LeaderWork) {
        self.leader_work = Some(work);
        self.act(action);
    }

    fn act(&mut self, action: Action) {
        if let Some(lane) = action.lane() {
            self.busy.insert(lane);
        }
        self.outputs.push_back(Output::Action(action));
    }

    fn notice(&mut self, notice: Notice) {
        self.outputs.push_back(Output::Notice(notice));
    }
}

/// The lane whose action an input answers.
fn input_lane(input: &Input) -> Option<Lane> {
    match input {
        Input::KeysRead { .. } | Input::KeysReadFailed => Some(Lane::Read),
        Input::ServerStarted { .. }
        | Input::ServerStartFailed { .. }
        | Input::ServerStopped { .. }
        | Input::MemberList(_) => Some(Lane::Server),
        Input::LeaseGranted { .. }
        | Input::LeaseGrantFailed
        | Input::KeptAlive(_)
        | Input::LeaseRevoked
        | Input::KeyWritten { .. }
        | Input::KeyDeleted { .. } => Some(Lane::Lease),
        Input::TxnDone(_) | Input::MembershipChanged { .. } | Input::OwnUrlsUpdated => {
            Some(Lane::Leader)
        }
        Input::KeysChanged { .. }
        | Input::Membership(_)
        | Input::Replication(_)
        | Input::Stop
        | Input::Tick => None,
    }
}

fn is_membership(c: &Command) -> bool {
    matches!(
        c,
        Command::AddLearner { .. }
            | Command::Promote(_)
            | Command::RemoveMember(_)
            | Command::HandOver(_)
    )
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
