//! The agent alone: no network, no tokio; exact output lists.

use super::*;
use crate::cluster::keys::{Nomination, RawKv};

fn config(host: &str, seeds: &[&str]) -> Config {
    Config {
        host: host.into(),
        may_serve: true,
        seeds: seeds.iter().map(|s| s.to_string()).collect(),
        peer_urls: vec![peer(host)],
        ideal_on_bootstrap: Some(3),
        lease_ttl_s: 9,
        leave_timeout: Millis(10_000),
        single_pass: false,
        bug: Bug::None,
    }
}

fn peer(host: &str) -> String {
    format!("http://{host}:2380")
}

fn client(host: &str) -> String {
    format!("http://{host}:2379")
}

fn step(a: &mut Agent, now: u64, input: Input) -> Vec<Output> {
    a.handle(Millis(now), input);
    std::iter::from_fn(|| a.poll_output()).collect()
}

fn drain(a: &mut Agent) -> Vec<Output> {
    std::iter::from_fn(|| a.poll_output()).collect()
}

fn actions(outputs: &[Output]) -> Vec<Action> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Action(a) => Some(a.clone()),
            Output::Notice(_) => None,
        })
        .collect()
}

/// The actions, but for client endpoints (tested on their own).
fn act(a: &mut Agent, now: u64, input: Input) -> Vec<Action> {
    actions(&step(a, now, input))
        .into_iter()
        .filter(|a| !matches!(a, Action::SetClientEndpoints(_)))
        .collect()
}

fn started(host: &str, id: u64) -> Input {
    Input::ServerStarted {
        id,
        peer_urls: vec![peer(host)],
        client_urls: vec![client(host)],
    }
}

fn member(host: &str, id: u64, learner: bool) -> StoreMember {
    StoreMember {
        id,
        name: host.into(),
        peer_urls: vec![peer(host)],
        client_urls: vec![client(host)],
        learner,
    }
}

fn membership(leader: u64, members: &[StoreMember]) -> Membership {
    Membership {
        leader: Some(leader),
        members: members.to_vec(),
        voter_sets: vec![
            members
                .iter()
                .filter(|m| !m.learner)
                .map(|m| m.id)
                .collect(),
        ],
        loaded: true,
        committed: true,
        config_log: None,
    }
}

/// Members' answers that say no config index (as from before it was sent).
fn lists(ids: Vec<Vec<u64>>) -> Vec<MemberList> {
    ids.into_iter()
        .map(|ids| MemberList {
            ids,
            config_log: None,
        })
        .collect()
}

/// The cluster's keys: `nominated` with their create revisions, `endpoints`
/// with the member ID each advertises.
fn keys(volunteers: &[&str], nominated: &[(&str, i64)], endpoints: &[(&str, u64)]) -> ClusterKeys {
    ClusterKeys {
        ideal: Some(Ok(3)),
        volunteers: volunteers
            .iter()
            .map(|h| (h.to_string(), vec![peer(h)]))
            .collect(),
        nominated: nominated
            .iter()
            .map(|(h, rev)| {
                (
                    h.to_string(),
                    Nomination {
                        peer_urls: vec![peer(h)],
                        revision: *rev,
                    },
                )
            })
            .collect(),
        endpoints: endpoints
            .iter()
            .map(|(h, id)| {
                (
                    h.to_string(),
                    Endpoints {
                        peer_urls: vec![peer(h)],
                        client_urls: vec![client(h)],
                        member_id: *id,
                    },
                )
            })
            .collect(),
        errors: vec![],
    }
}

fn read(revision: i64, keys: ClusterKeys) -> Input {
    Input::KeysRead { revision, keys }
}

fn volunteer_put(host: &str, lease: i64) -> Action {
    Action::PutLeased {
        key: Key::Volunteer(host.into()),
        value: peer(host),
        lease,
    }
}

fn endpoints_put(host: &str, id: u64, lease: i64) -> Action {
    Action::PutLeased {
        key: Key::Endpoints(host.into()),
        value: Endpoints {
            peer_urls: vec![peer(host)],
            client_urls: vec![client(host)],
            member_id: id,
        }
        .encode(),
        lease,
    }
}

/// A host with seeds that volunteers, holds lease 7 and has read `k`.
fn volunteer(host: &str, k: ClusterKeys) -> Agent {
    let mut a = Agent::new(config(host, &["http://seed:2379"]), Stored::default());
    assert_eq!(
        actions(&drain(&mut a)),
        vec![
            Action::ReadKeys {
                from_own_store: false
            },
            Action::GrantLease { ttl_s: 9 }
        ]
    );
    act(&mut a, 1, Input::LeaseGranted { lease: 7 });
    act(&mut a, 2, Input::KeyWritten { revision: Some(3) });
    act(&mut a, 3, read(3, k));
    a
}

#[test]
fn a_volunteer_holds_its_key_on_a_lease_and_keeps_it_alive() {
    let mut a = Agent::new(config("h2", &["http://seed:2379"]), Stored::default());
    assert_eq!(a.client_endpoints(), ["http://seed:2379"]);
    assert_eq!(
        actions(&drain(&mut a)),
        vec![
            Action::ReadKeys {
                from_own_store: false
            },
            Action::GrantLease { ttl_s: 9 }
        ]
    );
    assert_eq!(
        act(&mut a, 1, Input::LeaseGranted { lease: 7 }),
        vec![volunteer_put("h2", 7)]
    );
    assert_eq!(
        act(&mut a, 2, Input::KeyWritten { revision: Some(3) }),
        vec![]
    );
    // Connected: told once.
    let out = step(
        &mut a,
        3,
        read(3, keys(&["h1", "h2"], &[("h1", 1)], &[("h1", 11)])),
    );
    assert_eq!(
        out,
        vec![
            Output::Notice(Notice::Connected {
                volunteers: 2,
                nominated: 1
            }),
            Output::Action(Action::SetClientEndpoints(vec![
                client("h1"),
                "http://seed:2379".into()
            ]))
        ]
    );
    // Idle until the keep-alive: a third of the TTL after the grant.
    assert_eq!(a.poll_timeout(), Some(Millis(3_001)));
    assert_eq!(
        act(&mut a, 3_001, Input::Tick),
        vec![Action::KeepAlive { lease: 7 }]
    );
    assert_eq!(
        act(&mut a, 3_002, Input::KeptAlive(KeepAlive::Alive)),
        vec![]
    );
    assert_eq!(a.poll_timeout(), Some(Millis(6_002)));
}

#[test]
fn a_lost_lease_is_granted_again_and_its_keys_written_again() {
    let mut a = volunteer("h2", keys(&["h2"], &[], &[]));
    act(&mut a, 3_001, Input::Tick);
    let out = step(&mut a, 3_002, Input::KeptAlive(KeepAlive::Expired));
    assert_eq!(
        out,
        vec![
            Output::Notice(Notice::LeaseExpired { lease: 7 }),
            Output::Action(Action::GrantLease { ttl_s: 9 })
        ]
    );
    assert_eq!(
        act(&mut a, 3_003, Input::LeaseGranted { lease: 8 }),
        vec![volunteer_put("h2", 8)]
    );
}

#[test]
fn a_key_deleted_by_hand_is_written_again_once_a_later_read_misses_it() {
    let mut a = volunteer("h2", keys(&["h2"], &[], &[]));
    // A read older than the write says nothing about it.
    act(&mut a, 10, Input::KeysChanged { revision: Some(4) });
    assert_eq!(act(&mut a, 11, read(2, keys(&[], &[], &[]))), vec![]);
    act(&mut a, 12, Input::KeysChanged { revision: Some(5) });
    assert_eq!(
        act(&mut a, 13, read(5, keys(&[], &[], &[]))),
        vec![volunteer_put("h2", 7)]
    );
}

#[test]
fn a_failed_put_waits_before_the_next_attempt() {
    let mut a = Agent::new(config("h2", &["http://seed:2379"]), Stored::default());
    act(&mut a, 0, Input::Tick);
    act(&mut a, 1, Input::LeaseGranted { lease: 7 });
    assert_eq!(act(&mut a, 2, Input::KeyWritten { revision: None }), vec![]);
    assert_eq!(a.poll_timeout(), Some(Millis(2) + LEASE_RETRY));
    assert_eq!(act(&mut a, 502, Input::Tick), vec![volunteer_put("h2", 7)]);
}

#[test]
fn a_nominee_starts_a_joining_server_under_the_nominations_id_and_advertises_it() {
    let mut a = volunteer("h2", keys(&["h1", "h2"], &[("h1", 1)], &[("h1", 11)]));
    let id = incarnation_id("h2", 42);
    act(&mut a, 10, Input::KeysChanged { revision: Some(42) });
    let got = act(
        &mut a,
        11,
        read(
            42,
            keys(&["h1", "h2"], &[("h1", 1), ("h2", 42)], &[("h1", 11)]),
        ),
    );
    assert_eq!(
        got,
        vec![Action::StartServer {
            mode: StartMode::Join,
            member_id: id,
            discard_first: false,
            reason: Reason::Nominated,
        }]
    );
    assert_eq!(
        act(&mut a, 12, started("h2", id)),
        vec![endpoints_put("h2", id, 7)]
    );
    assert!(a.status().nominated);
    assert_eq!(a.status().server, Some(vec![client("h2")]));
}

#[test]
fn a_server_that_fails_to_start_is_tried_again_later() {
    let mut a = volunteer("h2", keys(&["h2"], &[("h2", 42)], &[]));
    assert_eq!(
        act(&mut a, 10, Input::ServerStartFailed { discarded: false }),
        vec![]
    );
    assert_eq!(a.poll_timeout(), Some(Millis(10) + START_RETRY));
    assert!(matches!(
        act(&mut a, 2_010, Input::Tick)[..],
        [Action::StartServer { .. }]
    ));
}

#[test]
fn a_restarted_member_its_own_log_lists_serves_on() {
    let id = incarnation_id("h2", 42);
    let stored = Stored {
        has_state: true,
        member_id: Some(id),
        known_members: vec![],
    };
    let mut a = Agent::new(config("h2", &["http://seed:2379"]), stored);
    assert_eq!(
        actions(&drain(&mut a))[0],
        Action::StartServer {
            mode: StartMode::Join,
            member_id: id,
            discard_first: false,
            reason: Reason::Restart,
        }
    );
    act(&mut a, 1, started("h2", id));
    let m = membership(11, &[member("h1", 11, false), member("h2", id, false)]);
    let got = act(&mut a, 2, Input::Membership(m));
    assert!(
        !got.iter().any(|a| matches!(a, Action::StopServer { .. })),
        "{got:?}"
    );
    // It serves for the nomination its ID is of.
    act(&mut a, 3, Input::LeaseGranted { lease: 7 });
    act(&mut a, 4, Input::KeyWritten { revision: Some(5) });
    act(&mut a, 5, Input::KeyWritten { revision: Some(6) });
    let got = act(
        &mut a,
        6,
        read(6, keys(&["h1", "h2"], &[("h1", 1), ("h2", 42)], &[])),
    );
    assert!(
        !got.iter()
            .any(|a| matches!(a, Action::ListMembers { .. } | Action::StopServer { .. })),
        "{got:?}"
    );
    assert_eq!(a.poll_timeout(), Some(Millis(3) + Millis(3_000)));
}

#[test]
fn a_restarted_host_that_is_no_member_keeps_its_state_until_nominated_then_asks_whether_to_keep_it()
{
    let old = incarnation_id("h2", 42);
    let stored = Stored {
        has_state: true,
        member_id: Some(old),
        known_members: vec![],
    };
    let mut a = Agent::new(config("h2", &["http://seed:2379"]), stored);
    drain(&mut a);
    act(&mut a, 1, started("h2", old));
    // Its own log has a membership without it: removed while it was down.
    let m = membership(11, &[member("h1", 11, false)]);
    let got = act(&mut a, 2, Input::Membership(m));
    assert!(got.contains(&Action::StopServer {
        discard: false,
        reason: Reason::NotAMemberYet,
        remember: vec![client("h1")],
    }));
    act(&mut a, 3, Input::ServerStopped { discarded: false });
    act(&mut a, 4, Input::LeaseGranted { lease: 7 });
    act(&mut a, 5, Input::KeyWritten { revision: Some(6) });
    // Nominated anew: may the old state be kept? Only if the cluster still
    // lists the old member.
    let got = act(
        &mut a,
        6,
        read(
            60,
            keys(&["h1", "h2"], &[("h1", 1), ("h2", 60)], &[("h1", 11)]),
        ),
    );
    assert_eq!(got, vec![Action::ListMembers { via: None }]);
    assert_eq!(
        act(&mut a, 7, Input::MemberList(lists(vec![vec![11]]))),
        vec![Action::StartServer {
            mode: StartMode::Join,
            member_id: incarnation_id("h2", 60),
            discard_first: true,
            reason: Reason::Nominated,
        }]
    );
}

#[test]
fn a_restarted_member_that_is_still_listed_keeps_its_state() {
    let old = incarnation_id("h2", 42);
    let stored = Stored {
        has_state: true,
        member_id: Some(old),
        known_members: vec![],
    };
    let mut a = Agent::new(config("h2", &["http://seed:2379"]), stored);
    drain(&mut a);
    act(&mut a, 1, started("h2", old));
    // Its store never loads a membership: after the timeout it stops.
    assert_eq!(a.poll_timeout(), Some(Millis(1) + RESTART_CHECK_TIMEOUT));
    let got = act(&mut a, 2_001, Input::Tick);
    assert!(got.contains(&Action::StopServer {
        discard: false,
        reason: Reason::NotAMemberYet,
        remember: vec![],
    }));
    act(&mut a, 2_002, Input::ServerStopped { discarded: false });
    act(&mut a, 2_003, read(60, keys(&["h2"], &[("h2", 60)], &[])));
    assert_eq!(
        act(&mut a, 2_004, Input::MemberList(lists(vec![vec![11, old]]))),
        vec![Action::StartServer {
            mode: StartMode::Join,
            member_id: incarnation_id("h2", 60),
            discard_first: false,
            reason: Reason::Nominated,
        }]
    );
}

/// A running member on h2, nominated at revision 42, lease 7.
fn running_member() -> (Agent, u64) {
    let id = incarnation_id("h2", 42);
    let mut a = volunteer(
        "h2",
        keys(&["h1", "h2"], &[("h1", 1), ("h2", 42)], &[("h1", 11)]),
    );
    act(&mut a, 12, started("h2", id));
    act(&mut a, 13, Input::KeyWritten { revision: Some(43) });
    let m = membership(11, &[member("h1", 11, false), member("h2", id, false)]);
    act(&mut a, 14, Input::Membership(m));
    (a, id)
}

/// What h2 does once removed: stop, discard, and withdraw its endpoints key
/// at once (the volunteer key stays).
fn stopped_and_discarded(reason: Reason) -> Vec<Action> {
    vec![
        Action::StopServer {
            discard: true,
            reason,
            remember: vec![client("h1")],
        },
        Action::DeleteKey {
            key: Key::Endpoints("h2".into()),
        },
    ]
}

/// Seed 22807: h1, restarted from state older than h2's joining, answers a
/// member list without h2. That proves nothing: only a config no earlier in
/// the log than h2's own does. (h2 stopping on it left a two-voter cluster
/// whose leader could no longer remove it.)
#[test]
fn a_list_from_a_config_no_later_than_its_own_does_not_prove_a_member_removed() {
    let (mut a, id) = running_member();
    let mut m = membership(11, &[member("h1", 11, false), member("h2", id, false)]);
    m.config_log = Some((3, 40));
    act(&mut a, 14, Input::Membership(m));
    let unnominated = keys(&["h1", "h2"], &[("h1", 1)], &[("h1", 11), ("h2", id)]);
    act(&mut a, 20, read(50, unnominated));
    let stale = |term, index| {
        vec![MemberList {
            ids: vec![11, 7],
            config_log: Some((term, index)),
        }]
    };
    assert_eq!(act(&mut a, 21, Input::MemberList(stale(2, 52))), vec![]);
    assert_eq!(act(&mut a, 22, Input::MemberList(stale(3, 39))), vec![]);
    assert!(a.status().server.is_some());
    // A later config without it is the proof (the same one would be too).
    assert!(matches!(
        act(&mut a, 521, Input::Tick)[..],
        [Action::ListMembers { .. }]
    ));
    let got = act(&mut a, 522, Input::MemberList(stale(4, 12)));
    assert_eq!(got, stopped_and_discarded(Reason::Removed));
}

/// h2 (member `id`) is un-nominated, the others no longer list it, and its
/// server stops with its state discarded (at 20-22 ms).
fn unnominated_and_removed(a: &mut Agent, id: u64) {
    let unnominated = keys(&["h1", "h2"], &[("h1", 1)], &[("h1", 11), ("h2", id)]);
    act(a, 20, read(50, unnominated));
    act(a, 21, Input::MemberList(lists(vec![vec![11]])));
    act(a, 22, Input::ServerStopped { discarded: true });
}

#[test]
fn an_unnominated_member_stops_and_discards_its_state_once_the_others_no_longer_list_it() {
    let (mut a, id) = running_member();
    let unnominated = keys(&["h1", "h2"], &[("h1", 1)], &[("h1", 11), ("h2", id)]);
    let got = act(&mut a, 20, read(50, unnominated));
    assert_eq!(
        got,
        vec![Action::ListMembers {
            via: Some(vec![client("h1"), "http://seed:2379".into()])
        }]
    );
    // Still listed: ask again a little later (its own view may be stale).
    assert_eq!(
        act(&mut a, 21, Input::MemberList(lists(vec![vec![11, id]]))),
        vec![]
    );
    assert_eq!(a.poll_timeout(), Some(Millis(21) + REMOVAL_RECHECK));
    assert!(matches!(
        act(&mut a, 521, Input::Tick)[..],
        [Action::ListMembers { .. }]
    ));
    let got = act(&mut a, 522, Input::MemberList(lists(vec![vec![11]])));
    assert_eq!(got, stopped_and_discarded(Reason::Removed));
    assert_eq!(
        act(&mut a, 523, Input::ServerStopped { discarded: true }),
        vec![]
    );
    assert_eq!(a.status().server, None);
}

#[test]
fn a_member_its_own_store_no_longer_lists_stops_at_once() {
    let (mut a, id) = running_member();
    act(
        &mut a,
        20,
        read(
            50,
            keys(&["h1", "h2"], &[("h1", 1)], &[("h1", 11), ("h2", id)]),
        ),
    );
    act(&mut a, 21, Input::MemberList(lists(vec![])));
    let got = act(
        &mut a,
        22,
        Input::Membership(membership(11, &[member("h1", 11, false)])),
    );
    assert_eq!(got, stopped_and_discarded(Reason::Removed));
}

/// Seed 7689: keys read through its own (stale) server show no other host
/// serving; its own log still lists h3, which is asked too. With no answer at
/// all, it reads the keys again before the next try.
#[test]
fn a_member_that_may_be_removed_also_asks_the_members_its_own_log_lists() {
    let (mut a, id) = running_member();
    let m = membership(
        11,
        &[
            member("h1", 11, false),
            member("h2", id, false),
            member("h3", 13, false),
        ],
    );
    act(&mut a, 15, Input::Membership(m));
    let got = act(
        &mut a,
        20,
        read(50, keys(&["h2"], &[("h1", 1)], &[("h2", id)])),
    );
    assert_eq!(
        got,
        vec![Action::ListMembers {
            via: Some(vec![client("h1"), client("h3"), "http://seed:2379".into()])
        }]
    );
    let got = act(&mut a, 21, Input::MemberList(lists(vec![])));
    assert_eq!(
        got,
        vec![Action::ReadKeys {
            from_own_store: false
        }]
    );
}

/// Seed 5265: a config without it that is only in its own log (the leader
/// that sent it may crash before a quorum has it) is no proof of removal; the
/// same config once applied is.
#[test]
fn a_member_its_own_log_drops_waits_until_that_config_is_committed() {
    let (mut a, id) = running_member();
    act(
        &mut a,
        20,
        read(
            50,
            keys(&["h1", "h2"], &[("h1", 1)], &[("h1", 11), ("h2", id)]),
        ),
    );
    act(&mut a, 21, Input::MemberList(lists(vec![])));
    let mut pending = membership(11, &[member("h1", 11, false)]);
    pending.committed = false;
    let got = act(&mut a, 22, Input::Membership(pending.clone()));
    assert!(
        !got.iter().any(|x| matches!(x, Action::StopServer { .. })),
        "stopped on an uncommitted config: {got:?}"
    );
    pending.committed = true;
    let got = act(&mut a, 23, Input::Membership(pending));
    assert_eq!(got, stopped_and_discarded(Reason::Removed));
}

#[test]
fn a_host_that_rejoins_on_the_same_urls_serves_under_a_new_member_id() {
    // The articles' address reuse: h2 left (state discarded) and comes back
    // on the same URLs. Its new incarnation must not answer for the old ID.
    let (mut a, old) = running_member();
    unnominated_and_removed(&mut a, old);
    act(&mut a, 23, Input::KeyDeleted { ok: true });
    let got = act(
        &mut a,
        24,
        read(
            70,
            keys(&["h1", "h2"], &[("h1", 1), ("h2", 70)], &[("h1", 11)]),
        ),
    );
    let new = incarnation_id("h2", 70);
    assert_ne!(new, old);
    assert_eq!(
        got,
        vec![Action::StartServer {
            mode: StartMode::Join,
            member_id: new,
            discard_first: false,
            reason: Reason::Nominated,
        }]
    );
}

#[test]
fn a_server_of_an_earlier_nomination_stops_once_removed_and_starts_anew() {
    let (mut a, old) = running_member();
    // Nominated again (revision 70) while the old server runs: it was
    // un-nominated and removed while this host did not look.
    let renominated = keys(
        &["h1", "h2"],
        &[("h1", 1), ("h2", 70)],
        &[("h1", 11), ("h2", old)],
    );
    assert!(matches!(
        act(&mut a, 20, read(70, renominated))[..],
        [Action::ListMembers { .. }]
    ));
    assert_eq!(
        act(&mut a, 21, Input::MemberList(lists(vec![vec![11]]))),
        stopped_and_discarded(Reason::Renominated)
    );
    assert!(
        act(&mut a, 22, Input::ServerStopped { discarded: true }).contains(&Action::StartServer {
            mode: StartMode::Join,
            member_id: incarnation_id("h2", 70),
            discard_first: false,
            reason: Reason::Nominated,
        })
    );
}

/// The bootstrap host h1, leading a one-member cluster, with lease 7.
fn leader() -> Agent {
    let id = member_id("h1");
    let mut a = Agent::new(config("h1", &[]), Stored::default());
    assert_eq!(
        actions(&drain(&mut a)),
        vec![
            Action::StartServer {
                mode: StartMode::Bootstrap,
                member_id: id,
                discard_first: false,
                reason: Reason::Bootstrap,
            },
            Action::ReadKeys {
                from_own_store: false
            },
            Action::GrantLease { ttl_s: 9 }
        ]
    );
    assert!(!a.ready());
    assert_eq!(act(&mut a, 1, started("h1", id)), vec![]);
    // The bootstrap writes wait for a read of the keys.
    let out = step(
        &mut a,
        2,
        Input::Membership(membership(id, &[member("h1", id, false)])),
    );
    assert_eq!(out, vec![Output::Notice(Notice::Leading)]);
    // Its own server: the only member there is.
    assert_eq!(a.client_endpoints(), [client("h1")]);
    // The read through the client shows no nomination yet: they are written,
    // and the keys read again from the own store.
    assert_eq!(
        act(&mut a, 3, read(1, keys(&[], &[], &[]))),
        vec![
            Action::ReadKeys {
                from_own_store: true
            },
            Action::Txn(keys::bootstrap_txn("h1", &[peer("h1")], Some(3))),
        ]
    );
    act(&mut a, 3, Input::TxnDone(Ok(true)));
    assert!(a.ready());
    act(&mut a, 4, Input::KeysReadFailed);
    act(&mut a, 5, Input::LeaseGranted { lease: 7 });
    act(&mut a, 6, Input::KeyWritten { revision: Some(3) });
    act(&mut a, 7, Input::KeyWritten { revision: Some(4) });
    a
}

#[test]
fn a_converged_leader_only_waits_for_its_keep_alive() {
    let mut a = leader();
    let id = member_id("h1");
    // The read after the failed one comes from the own store.
    assert_eq!(
        act(&mut a, 504, Input::Tick),
        vec![Action::ReadKeys {
            from_own_store: true
        }]
    );
    let got = act(
        &mut a,
        505,
        read(4, keys(&["h1"], &[("h1", 2)], &[("h1", id)])),
    );
    assert_eq!(got, vec![]);
    assert_eq!(a.poll_timeout(), Some(Millis(5) + Millis(3_000)));
    assert!(a.status().leader);
}

fn leader_with(k: ClusterKeys) -> Agent {
    let mut a = leader();
    act(&mut a, 504, Input::Tick);
    act(&mut a, 505, read(10, k));
    a
}

#[test]
fn the_leader_grows_the_cluster_nominate_add_learner_then_promote_once_caught_up() {
    let id1 = member_id("h1");
    let mut a = leader();
    act(&mut a, 504, Input::Tick);
    let out = step(
        &mut a,
        505,
        read(10, keys(&["h1", "h2"], &[("h1", 2)], &[("h1", id1)])),
    );
    assert_eq!(
        out,
        vec![
            Output::Notice(Notice::Command(Command::Nominate("h2".into()))),
            Output::Action(Action::Txn(keys::nominate_txn("h2", &[peer("h2")])))
        ]
    );
    // Decided again only on a read that shows the nomination.
    assert_eq!(
        act(&mut a, 506, Input::TxnDone(Ok(true))),
        vec![Action::ReadKeys {
            from_own_store: true
        }]
    );
    assert_eq!(
        act(
            &mut a,
            507,
            read(
                11,
                keys(&["h1", "h2"], &[("h1", 2), ("h2", 11)], &[("h1", id1)])
            )
        ),
        vec![]
    );
    let id2 = incarnation_id("h2", 11);
    let k = keys(
        &["h1", "h2"],
        &[("h1", 2), ("h2", 11)],
        &[("h1", id1), ("h2", id2)],
    );
    act(&mut a, 508, Input::KeysChanged { revision: Some(12) });
    let got = act(&mut a, 509, read(12, k));
    assert_eq!(
        got,
        vec![Action::ChangeMembership(MemberChange::AddLearner {
            id: id2,
            name: "h2".into(),
            peer_urls: vec![peer("h2")],
            client_urls: vec![client("h2")],
        })]
    );
    let m = membership(id1, &[member("h1", id1, false), member("h2", id2, true)]);
    act(
        &mut a,
        510,
        Input::MembershipChanged {
            result: Ok(()),
            membership: m,
        },
    );
    // Promote waits for the learner to catch up.
    assert!(a.wants_replication());
    let lagging = Replication {
        last_log_index: 200,
        matched: BTreeMap::from([(id2, 100)]),
    };
    assert_eq!(act(&mut a, 511, Input::Replication(lagging)), vec![]);
    let close = Replication {
        last_log_index: 200,
        matched: BTreeMap::from([(id2, 200 - PROMOTE_LAG)]),
    };
    assert_eq!(
        act(&mut a, 512, Input::Replication(close)),
        vec![Action::ChangeMembership(MemberChange::Promote { id: id2 })]
    );
    assert!(!a.wants_replication());
}

#[test]
fn a_learner_that_does_not_catch_up_is_retried_after_the_nominators_delay() {
    let id1 = member_id("h1");
    let id2 = incarnation_id("h2", 11);
    let mut a = leader_with(keys(
        &["h1", "h2"],
        &[("h1", 2), ("h2", 11)],
        &[("h1", id1), ("h2", id2)],
    ));
    // AddLearner was in flight; h2 is a learner now: promote it.
    let m = membership(id1, &[member("h1", id1, false), member("h2", id2, true)]);
    let out = step(
        &mut a,
        506,
        Input::MembershipChanged {
            result: Ok(()),
            membership: m,
        },
    );
    assert_eq!(
        out,
        vec![Output::Notice(Notice::Command(Command::Promote(
            "h2".into()
        )))]
    );
    assert_eq!(a.poll_timeout(), Some(Millis(506) + nominator::RETRY_DELAY));
    let out = step(&mut a, 1_506, Input::Tick);
    assert_eq!(
        out,
        vec![Output::Notice(Notice::CommandFailed {
            command: Command::Promote("h2".into()),
            reason: "still catching up".into()
        })]
    );
    assert!(!a.wants_replication());
}

#[test]
fn the_leader_shrinks_the_cluster_unnominate_then_remove() {
    let id1 = member_id("h1");
    let (id2, id3) = (incarnation_id("h2", 11), incarnation_id("h3", 12));
    let mut k = keys(
        &["h1", "h2", "h3"],
        &[("h1", 2), ("h2", 11), ("h3", 12)],
        &[("h1", id1), ("h2", id2), ("h3", id3)],
    );
    k.ideal = Some(Ok(2));
    let mut a = leader();
    let m = membership(
        id1,
        &[
            member("h1", id1, false),
            member("h2", id2, false),
            member("h3", id3, false),
        ],
    );
    act(&mut a, 503, Input::Membership(m));
    act(&mut a, 504, Input::Tick);
    assert_eq!(
        act(&mut a, 505, read(20, k.clone())),
        vec![Action::Txn(keys::unnominate_txn("h3"))]
    );
    act(&mut a, 506, Input::TxnDone(Ok(true)));
    k.nominated.remove("h3");
    assert_eq!(
        act(&mut a, 507, read(21, k)),
        vec![Action::ChangeMembership(MemberChange::Remove { id: id3 })]
    );
}

#[test]
fn a_leader_whose_nomination_is_withdrawn_hands_over_and_never_removes_itself() {
    let id1 = member_id("h1");
    let id2 = incarnation_id("h2", 11);
    let k = keys(&["h2"], &[("h2", 11)], &[("h1", id1), ("h2", id2)]);
    let mut a = leader();
    let both = [member("h1", id1, false), member("h2", id2, false)];
    act(&mut a, 503, Input::Membership(membership(id1, &both)));
    act(&mut a, 504, Input::Tick);
    let out = act(&mut a, 505, read(20, k));
    let changes: Vec<&Action> = out
        .iter()
        .filter(|a| matches!(a, Action::ChangeMembership(_)))
        .collect();
    assert_eq!(
        changes,
        vec![&Action::ChangeMembership(MemberChange::MoveLeader {
            to: id2
        })]
    );
    // Once h2 leads, h1 proposes nothing: h2's nominator removes it.
    let out = act(
        &mut a,
        506,
        Input::MembershipChanged {
            result: Ok(()),
            membership: membership(id2, &both),
        },
    );
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::ChangeMembership(_) | Action::Txn(_))),
        "{out:?}"
    );
}

#[test]
fn a_failed_nomination_is_told_and_retried_after_the_delay() {
    let id1 = member_id("h1");
    let mut a = leader_with(keys(&["h1", "h2"], &[("h1", 2)], &[("h1", id1)]));
    let out = step(&mut a, 506, Input::TxnDone(Ok(false)));
    assert_eq!(
        out,
        vec![Output::Notice(Notice::CommandFailed {
            command: Command::Nominate("h2".into()),
            reason: "did not apply (state changed)".into()
        })]
    );
    assert_eq!(a.poll_timeout(), Some(Millis(506) + nominator::RETRY_DELAY));
    assert!(
        act(&mut a, 1_506, Input::Tick)
            .contains(&Action::Txn(keys::nominate_txn("h2", &[peer("h2")])))
    );
}

#[test]
fn an_endpoints_key_of_an_earlier_nomination_is_not_a_started_nominee() {
    let id1 = member_id("h1");
    // h2 is nominated at revision 30 but still advertises its server of the
    // nomination at revision 11: it is not added under the new ID.
    let k = keys(
        &["h1", "h2"],
        &[("h1", 2), ("h2", 30)],
        &[("h1", id1), ("h2", incarnation_id("h2", 11))],
    );
    let mut a = leader();
    act(&mut a, 504, Input::Tick);
    assert_eq!(act(&mut a, 505, read(31, k)), vec![]);
}

#[test]
fn the_leader_refreshes_its_own_member_urls_when_they_changed() {
    let id1 = member_id("h1");
    let mut a = leader_with(keys(&["h1"], &[("h1", 2)], &[("h1", id1)]));
    let mut old = member("h1", id1, false);
    old.client_urls = vec!["http://h1:9999".into()];
    assert_eq!(
        act(&mut a, 506, Input::Membership(membership(id1, &[old]))),
        vec![Action::UpdateOwnUrls]
    );
    // The attempt (whatever its outcome) is not repeated at once.
    assert_eq!(act(&mut a, 507, Input::OwnUrlsUpdated), vec![]);
    assert_eq!(a.poll_timeout(), Some(Millis(507) + URL_UPDATE_RETRY));
}

#[test]
fn a_malformed_key_is_reported_once() {
    let mut a = Agent::new(config("h2", &["http://seed:2379"]), Stored::default());
    act(&mut a, 0, Input::Tick);
    let raw = [RawKv {
        key: b"/_mgmt/endpoints/h3",
        value: b"peer=http://h3:2380",
        create_revision: 5,
    }];
    let k = ClusterKeys::decode(raw);
    assert!(k.endpoints.is_empty());
    let out = step(&mut a, 1, read(5, k.clone()));
    assert!(
        out.iter().any(|o| matches!(o, Output::Notice(Notice::Malformed(KeyError::Value { key, .. })) if key == "/_mgmt/endpoints/h3")),
        "{out:?}"
    );
    act(&mut a, 2, Input::KeysChanged { revision: Some(6) });
    let out = step(&mut a, 3, read(6, k));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Notice(Notice::Malformed(_))))
    );
}

#[test]
fn leaving_revokes_the_lease_and_waits_for_removal_at_most_the_leave_timeout() {
    let (mut a, _) = running_member();
    let out = step(&mut a, 100, Input::Stop);
    assert_eq!(
        out,
        vec![
            Output::Notice(Notice::Leaving),
            Output::Action(Action::RevokeLease { lease: 7 })
        ]
    );
    assert_eq!(act(&mut a, 101, Input::LeaseRevoked), vec![]);
    assert_eq!(a.poll_timeout(), Some(Millis(100) + Millis(10_000)));
    let out = step(&mut a, 10_100, Input::Tick);
    assert_eq!(
        out[..2],
        vec![
            Output::Notice(Notice::NotRemovedInTime),
            Output::Action(Action::StopServer {
                discard: false,
                reason: Reason::Leaving,
                remember: vec![client("h1")],
            })
        ]
    );
    assert_eq!(
        act(&mut a, 10_101, Input::ServerStopped { discarded: false }),
        vec![Action::Finished]
    );
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn the_last_member_leaves_at_once() {
    let mut a = leader_with(keys(&["h1"], &[("h1", 2)], &[("h1", member_id("h1"))]));
    let got = act(&mut a, 600, Input::Stop);
    assert_eq!(
        got,
        vec![
            Action::RevokeLease { lease: 7 },
            Action::StopServer {
                discard: false,
                reason: Reason::Leaving,
                remember: vec![],
            }
        ]
    );
}

#[test]
fn a_membership_change_in_flight_is_not_waited_for_once_the_host_leaves() {
    let id1 = member_id("h1");
    let id2 = incarnation_id("h2", 11);
    let mut a = leader_with(keys(
        &["h1", "h2"],
        &[("h1", 2), ("h2", 11)],
        &[("h1", id1), ("h2", id2)],
    ));
    // AddLearner is in flight.
    assert!(a.busy.contains(&Lane::Leader));
    let got = act(&mut a, 600, Input::Stop);
    assert_eq!(got[0], Action::Abandon(Lane::Leader));
}

#[test]
fn a_host_without_a_server_never_volunteers() {
    let mut c = config("h9", &["http://seed:2379"]);
    c.may_serve = false;
    let mut a = Agent::new(c, Stored::default());
    assert_eq!(
        actions(&drain(&mut a)),
        vec![Action::ReadKeys {
            from_own_store: false
        }]
    );
    assert_eq!(
        act(&mut a, 1, read(3, keys(&["h1"], &[("h9", 2)], &[]))),
        vec![]
    );
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn the_client_follows_every_advertised_member_then_the_seeds_then_remembered_members() {
    let (mut a, id) = running_member();
    // A voter with a leader: its own server first.
    let out = actions(&step(&mut a, 20, Input::Tick));
    assert_eq!(out, vec![]);
    assert_eq!(
        a.client_endpoints(),
        [client("h2"), client("h1"), "http://seed:2379".into()]
    );
    let k = keys(
        &["h1", "h2", "h3"],
        &[("h1", 1), ("h2", 42), ("h3", 44)],
        &[("h1", 11), ("h2", id), ("h3", 33)],
    );
    let out = actions(&step(&mut a, 21, read(44, k)));
    assert_eq!(
        out,
        vec![Action::SetClientEndpoints(vec![
            client("h2"),
            client("h1"),
            client("h3"),
            "http://seed:2379".into()
        ])]
    );
}

#[test]
fn a_leader_that_removed_itself_stops_without_reading_the_keys() {
    let id1 = member_id("h1");
    let id2 = incarnation_id("h2", 11);
    let mut a = leader_with(keys(&["h2"], &[("h2", 11)], &[("h1", id1), ("h2", id2)]));
    // Its store still names it leader, but its membership no longer lists it:
    // it reads nothing from its own store, and stops.
    act(&mut a, 600, Input::KeysReadFailed);
    // (It was asking the others whether it is still a member.)
    act(&mut a, 600, Input::MemberList(lists(vec![])));
    // Its membership change (here the AddLearner in flight) ends first: a
    // server never stops while a change it proposed is half done.
    let out = membership(id1, &[member("h2", id2, false)]);
    let got = act(&mut a, 601, Input::Membership(out.clone()));
    assert!(
        !got.iter().any(|a| matches!(a, Action::StopServer { .. })),
        "{got:?}"
    );
    let got = act(
        &mut a,
        602,
        Input::MembershipChanged {
            result: Ok(()),
            membership: out,
        },
    );
    assert!(!a.status().leader);
    assert_eq!(
        got[0],
        Action::StopServer {
            discard: true,
            reason: Reason::Removed,
            remember: vec![client("h2")],
        }
    );
}

#[test]
fn a_host_removed_while_leaving_discards_its_state_but_the_member_list() {
    let (mut a, _) = running_member();
    act(&mut a, 100, Input::Stop);
    act(&mut a, 101, Input::LeaseRevoked);
    act(
        &mut a,
        101,
        read(50, keys(&["h1"], &[("h1", 1)], &[("h1", 11)])),
    );
    act(&mut a, 101, Input::MemberList(lists(vec![])));
    let others = [member("h1", 11, false), member("h3", 33, false)];
    let got = act(&mut a, 102, Input::Membership(membership(11, &others)));
    assert_eq!(
        got,
        vec![Action::StopServer {
            discard: true,
            reason: Reason::Removed,
            remember: vec![client("h1"), client("h3")],
        }]
    );
    assert_eq!(
        act(&mut a, 103, Input::ServerStopped { discarded: true }),
        vec![Action::Finished]
    );
}

#[test]
fn a_nominee_removed_before_it_learnt_of_its_addition_replays_old_membership_and_serves_on() {
    // A nominee's store replays the log from the start: its first membership
    // configs are from before it was added. That is no removal.
    let (mut a, id) = running_member();
    let got = act(
        &mut a,
        20,
        Input::Membership(membership(11, &[member("h1", 11, false)])),
    );
    assert_eq!(got, vec![]);
    assert_eq!(a.status().server, Some(vec![client("h2")]));
    let _ = id;
}

#[test]
fn an_id_whose_state_was_discarded_is_never_served_again() {
    let (mut a, id) = running_member();
    unnominated_and_removed(&mut a, id);
    // A stale view shows the old nomination again: no fresh state under `id`.
    let out = step(
        &mut a,
        23,
        read(
            51,
            keys(&["h1", "h2"], &[("h1", 1), ("h2", 42)], &[("h1", 11)]),
        ),
    );
    assert!(
        out.contains(&Output::Notice(Notice::RetiredId { member_id: id })),
        "{out:?}"
    );
    assert!(
        !actions(&out)
            .iter()
            .any(|a| matches!(a, Action::StartServer { .. }))
    );
}

#[test]
fn a_host_whose_state_was_discarded_finds_the_cluster_through_the_members_it_knew() {
    let stored = Stored {
        has_state: false,
        member_id: None,
        known_members: vec![client("h3"), client("h4")],
    };
    let a = Agent::new(config("h2", &["http://gone:2379"]), stored);
    assert_eq!(
        a.client_endpoints(),
        ["http://gone:2379".to_string(), client("h3"), client("h4")]
    );
}

#[test]
fn a_command_decided_while_the_leader_lane_is_busy_waits_for_it() {
    let id1 = member_id("h1");
    let mut a = leader_with(keys(&["h1", "h2"], &[("h1", 2)], &[("h1", id1)]));
    // Nominate(h2) succeeded; the read that shows it is on its way.
    act(&mut a, 506, Input::TxnDone(Ok(true)));
    // Meanwhile the leader's own URLs need an update: the lane is taken.
    let mut old = member("h1", id1, false);
    old.client_urls = vec!["http://h1:9999".into()];
    assert_eq!(
        act(&mut a, 507, Input::Membership(membership(id1, &[old]))),
        vec![Action::UpdateOwnUrls]
    );
    // The read shows h2 nominated and started: the nominator's next command
    // waits for the lane.
    let id2 = incarnation_id("h2", 11);
    let k = keys(
        &["h1", "h2"],
        &[("h1", 2), ("h2", 11)],
        &[("h1", id1), ("h2", id2)],
    );
    let out = step(&mut a, 508, read(12, k));
    assert!(
        !actions(&out)
            .iter()
            .any(|a| matches!(a, Action::ChangeMembership(_))),
        "{out:?}"
    );
    let fresh = membership(id1, &[member("h1", id1, false)]);
    act(&mut a, 509, Input::Membership(fresh));
    assert_eq!(
        act(&mut a, 510, Input::OwnUrlsUpdated),
        vec![Action::ChangeMembership(MemberChange::AddLearner {
            id: id2,
            name: "h2".into(),
            peer_urls: vec![peer("h2")],
            client_urls: vec![client("h2")],
        })]
    );
}

#[test]
fn a_member_that_knows_no_members_says_nothing_about_removal() {
    let (mut a, id) = running_member();
    act(
        &mut a,
        20,
        read(
            50,
            keys(
                &["h1", "h2", "h3"],
                &[("h1", 1), ("h3", 60)],
                &[("h1", 11), ("h2", id), ("h3", 33)],
            ),
        ),
    );
    // h3, a fresh nominee, lists no one; h1 still lists h2: not removed yet.
    assert_eq!(
        act(
            &mut a,
            21,
            Input::MemberList(lists(vec![vec![], vec![11, id]]))
        ),
        vec![]
    );
    // Once h1's list lacks it, it is.
    act(&mut a, 521, Input::Tick);
    assert_eq!(
        act(
            &mut a,
            522,
            Input::MemberList(lists(vec![vec![], vec![11]]))
        ),
        stopped_and_discarded(Reason::Removed)
    );
}

#[test]
fn a_failed_bootstrap_write_waits_before_the_next_attempt() {
    let id = member_id("h1");
    let mut a = Agent::new(config("h1", &[]), Stored::default());
    drain(&mut a);
    act(&mut a, 1, started("h1", id));
    act(
        &mut a,
        2,
        Input::Membership(membership(id, &[member("h1", id, false)])),
    );
    act(&mut a, 3, read(1, keys(&[], &[], &[])));
    assert_eq!(
        act(&mut a, 3, Input::TxnDone(Err("raft stopped".into()))),
        vec![]
    );
    assert!(!a.ready());
    assert_eq!(a.poll_timeout(), Some(Millis(3) + LEASE_RETRY));
    assert_eq!(
        act(&mut a, 503, Input::Tick),
        vec![Action::Txn(keys::bootstrap_txn(
            "h1",
            &[peer("h1")],
            Some(3)
        ))]
    );
}

#[test]
fn a_host_that_stopped_leading_starts_no_command() {
    let id1 = member_id("h1");
    let id2 = incarnation_id("h2", 11);
    // AddLearner(h2) is in flight; it ends with h1 no longer leading.
    let mut a = leader_with(keys(
        &["h1", "h2"],
        &[("h1", 2), ("h2", 11)],
        &[("h1", id1), ("h2", id2)],
    ));
    let deposed = membership(id2, &[member("h1", id1, false), member("h2", id2, true)]);
    let got = act(
        &mut a,
        600,
        Input::MembershipChanged {
            result: Ok(()),
            membership: deposed,
        },
    );
    assert!(
        !got.iter()
            .any(|a| matches!(a, Action::Txn(_) | Action::ChangeMembership(_))),
        "{got:?}"
    );
    assert!(!a.status().leader);
}

#[test]
fn a_read_begun_before_leading_is_followed_by_one_from_the_own_store() {
    let id1 = member_id("h1");
    let mut a = leader();
    // Leadership is lost, then regained while a client read is in flight.
    act(
        &mut a,
        504,
        Input::Membership(membership(99, &[member("h1", id1, false)])),
    );
    act(&mut a, 505, Input::KeysChanged { revision: Some(9) });
    act(&mut a, 1_005, Input::Tick);
    act(
        &mut a,
        1_006,
        Input::Membership(membership(id1, &[member("h1", id1, false)])),
    );
    let got = act(
        &mut a,
        1_007,
        read(9, keys(&["h1"], &[("h1", 2)], &[("h1", id1)])),
    );
    assert!(
        got.contains(&Action::ReadKeys {
            from_own_store: true
        }),
        "{got:?}"
    );
}

#[test]
fn a_bootstrap_server_its_own_log_counts_out_does_not_adopt_a_new_nomination() {
    let id1 = member_id("h1");
    let id2 = incarnation_id("h2", 11);
    // Restarted from the state of the bootstrap member (the hostname's ID).
    let stored = Stored {
        has_state: true,
        member_id: Some(id1),
        known_members: vec![],
    };
    let mut a = Agent::new(config("h1", &["http://h2:2379"]), stored);
    drain(&mut a);
    act(&mut a, 1, started("h1", id1));
    act(
        &mut a,
        2,
        Input::Membership(membership(
            id1,
            &[member("h1", id1, false), member("h2", id2, false)],
        )),
    );
    // It removed itself; then it is nominated anew (revision 40).
    act(
        &mut a,
        3,
        Input::Membership(membership(id2, &[member("h2", id2, false)])),
    );
    let got = act(
        &mut a,
        4,
        read(
            40,
            keys(&["h1", "h2"], &[("h1", 40), ("h2", 11)], &[("h2", id2)]),
        ),
    );
    assert!(
        got.iter()
            .any(|a| matches!(a, Action::StopServer { discard: true, .. })),
        "{got:?}"
    );
}

/// The first host restarted with its state says so: the store restarts from
/// that state (bootstrap mode makes a cluster only when there is none).
#[test]
fn a_restarted_bootstrap_host_restarts_from_its_state() {
    let id = member_id("h1");
    let stored = Stored {
        has_state: true,
        member_id: Some(id),
        ..Stored::default()
    };
    let mut a = Agent::new(config("h1", &[]), stored);
    let first = actions(&drain(&mut a)).into_iter().next();
    assert_eq!(
        first,
        Some(Action::StartServer {
            mode: StartMode::Bootstrap,
            member_id: id,
            discard_first: false,
            reason: Reason::Restart,
        })
    );
}

fn one_pass(host: &str) -> Agent {
    let mut c = config(host, &[]);
    c.single_pass = true;
    Agent::new(c, Stored::default())
}

#[test]
fn a_lone_single_pass_holds_no_lease_and_leaves_at_once() {
    let id = member_id("h1");
    let mut a = one_pass("h1");
    let first = actions(&drain(&mut a));
    assert!(
        !first.iter().any(|x| matches!(x, Action::GrantLease { .. })),
        "{first:?}"
    );
    assert_eq!(act(&mut a, 1, started("h1", id)), vec![]);
    act(
        &mut a,
        2,
        Input::Membership(membership(id, &[member("h1", id, false)])),
    );
    // A restart: the read shows its nomination and ideal size, so nothing
    // is written again; it shows it not volunteering, and the nominator
    // leaves a lone leader be.
    let restarted = keys(&[], &[("h1", 2)], &[]);
    assert_eq!(
        act(&mut a, 3, read(4, restarted.clone())),
        vec![Action::ReadKeys {
            from_own_store: true
        }]
    );
    assert!(a.ready());
    assert_eq!(act(&mut a, 4, read(4, restarted)), vec![]);
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(
        act(&mut a, 600, Input::Stop),
        vec![Action::StopServer {
            discard: false,
            reason: Reason::Leaving,
            remember: vec![],
        }]
    );
}

#[test]
fn a_single_pass_whose_store_lists_another_member_volunteers_and_advertises() {
    let (id1, id2) = (member_id("h1"), member_id("h2"));
    let mut a = one_pass("h1");
    drain(&mut a);
    act(&mut a, 1, started("h1", id1));
    let both = [member("h1", id1, false), member("h2", id2, false)];
    let got = act(&mut a, 2, Input::Membership(membership(id1, &both)));
    assert!(got.contains(&Action::GrantLease { ttl_s: 9 }), "{got:?}");
    act(&mut a, 3, Input::TxnDone(Ok(true)));
    let mut written = Vec::new();
    for (now, input) in [
        (4, Input::LeaseGranted { lease: 7 }),
        (5, Input::KeyWritten { revision: Some(3) }),
        (6, Input::KeyWritten { revision: Some(4) }),
    ] {
        written.extend(act(&mut a, now, input));
    }
    assert!(written.contains(&volunteer_put("h1", 7)), "{written:?}");
    assert!(
        written.contains(&endpoints_put("h1", id1, 7)),
        "{written:?}"
    );
}

#[test]
fn a_new_leader_reads_its_own_store_at_once_after_a_failed_read() {
    let id = member_id("h1");
    let mut a = Agent::new(config("h1", &[]), Stored::default());
    drain(&mut a);
    act(&mut a, 1, started("h1", id));
    // Through the client, before there is a leader: it would retry at 502.
    act(&mut a, 2, Input::KeysReadFailed);
    let got = act(
        &mut a,
        3,
        Input::Membership(membership(id, &[member("h1", id, false)])),
    );
    assert_eq!(
        got,
        vec![Action::ReadKeys {
            from_own_store: true
        }]
    );
    assert_eq!(
        act(&mut a, 4, read(1, keys(&[], &[], &[]))),
        vec![Action::Txn(keys::bootstrap_txn(
            "h1",
            &[peer("h1")],
            Some(3)
        ))]
    );
}
