//! Simulation scenarios. Each run prints its seed; `SIM_SEED=<n>` replays one
//! seed in `seeded_schedules`, `SIM_SEEDS=<count>` sweeps more (see README).

use sim::{Bug, Config, Op, run};

fn seed_base() -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Stamps each log line with simulated milliseconds, as the trace is stamped.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>8}", t.as_millis()),
            None => write!(w, "{:>8}", "-"),
        }
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIM_LOG").unwrap_or_else(|_| "off".into()),
        )
        .with_timer(SimTime)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

fn check(config: &Config) -> sim::Report {
    init_logs();
    eprintln!("sim seed {} {config:?}", config.seed);
    match run(config) {
        Ok(r) => r,
        Err(e) => panic!("seed {}: {e}", config.seed),
    }
}

#[test]
fn article_four_hosts_form_three() {
    let r = check(&Config::article(seed_base()));
    assert_eq!(r.final_members.len(), 3, "{r:?}");
}

#[test]
fn grow_3_5_1_3() {
    let mut c = Config::article(seed_base());
    c.hosts = 5;
    c.ops = vec![
        Op::Wait,
        Op::SetIdeal(5),
        Op::Wait,
        Op::Wait,
        Op::SetIdeal(1),
        Op::Wait,
        Op::Wait,
    ];
    c.final_ideal = 3;
    let r = check(&c);
    assert_eq!(r.final_members.len(), 3, "{r:?}");
}

#[test]
fn leader_crash_and_restart() {
    let mut c = Config::article(seed_base());
    c.ops = vec![
        Op::Wait,
        Op::Write,
        Op::Crash(1),
        Op::Wait,
        Op::Write,
        Op::Wait,
        Op::RestartAll,
        Op::Wait,
    ];
    check(&c);
}

/// Operators deploy in pairs at once while the leader crashes and a link is
/// cut: of each pair one gets the next id and the other is told to retry,
/// no host's agent ever follows an older deploy than before (its restart
/// included), and once the faults are over every member follows the newest.
#[test]
fn hosts_follow_racing_deploys_through_crashes_and_partitions() {
    let mut c = Config::article(seed_base());
    c.ops = vec![
        Op::Write,
        Op::Wait,
        Op::CrashLeader,
        Op::Write,
        Op::Partition(2, 3),
        Op::Write,
        Op::RepairAll,
        Op::RestartAll,
        Op::Write,
    ];
    let r = check(&c);
    let acked: Vec<&String> = r
        .trace
        .iter()
        .filter(|l| l.contains("ctl deploy") && l.contains(" = "))
        .collect();
    let refused = r
        .trace
        .iter()
        .filter(|l| l.contains("written by someone else first"))
        .count();
    assert!(acked.len() >= 4, "{acked:#?}");
    assert!(refused >= 1, "no race was lost: {r:#?}");
    for h in &r.final_members {
        assert!(
            r.trace
                .iter()
                .any(|l| l.contains(&format!("{h} follows deploy"))),
            "{h} followed no deploy"
        );
    }
}

/// Volunteers come and go while the members elect a new leader: the leader
/// crashes, and within the election timeout one volunteer withdraws (clean
/// shutdown, lease revoked) and another one arrives.
#[test]
fn volunteers_join_and_leave_during_leader_election() {
    let mut c = Config::article(seed_base());
    c.hosts = 5;
    c.late = [5].into();
    // 3 members (h1..h3) and a spare volunteer (h4) once settled; then steps
    // of 100 ms, well inside the 500-1000 ms election timeout.
    c.op_time = std::time::Duration::from_millis(100);
    let settle = vec![Op::Wait; 60];
    c.ops = settle.clone();
    c.ops.extend([
        Op::CrashLeader,
        Op::Leave(4),
        Op::Join(5),
        Op::Wait,
        Op::Leave(3),
        Op::Wait,
        Op::Join(4),
    ]);
    c.ops.extend(settle);
    c.ops.push(Op::RestartAll);
    c.final_ideal = 3;
    let r = check(&c);
    assert_eq!(r.final_members.len(), 3, "{r:?}");
    let elected_after_crash = r
        .trace
        .iter()
        .skip_while(|l| !l.contains("crashed"))
        .any(|l| l.contains("leader=true"));
    assert!(elected_after_crash, "no election after the crash: {r:#?}");
}

/// Seeds 57641 and 56591 (this session's sweep): a member removed from the
/// cluster kept serving watches with its last leader, so a client whose
/// watch sat on it never heard of a deploy (or a clustering change) again.
/// A member not in its own membership ends `hasleader` watches now.
#[test]
fn a_watch_on_a_removed_member_moves_to_the_cluster() {
    replay(57641);
    replay(56591);
}

/// Seed 95185 (a sweep with the availability invariant): a member whose
/// log was behind campaigned in vain and sat at the higher term; the member
/// that could win asked for a pre-vote at that same term and was refused
/// forever. A pre-vote answer names the voter's term, and the candidate asks
/// above it next time, as raft's candidate adopts it.
#[test]
fn a_candidate_refused_for_its_term_asks_above_it() {
    replay(95185);
}

/// Sweep 110000+ on 7b28d5c: the leader lost its quorum when its joint
/// configuration needed a crashed voter, went quiet, and when the voter
/// came back led on, only to step aside again 250 ms later, judged by a
/// quorum acknowledgement from before its pause; it flapped until the
/// change finished, and the two live voters elected nobody in time. A
/// leader that leads on has a lease to be acknowledged anew.
#[test]
fn a_leader_that_leads_on_gets_a_lease_to_be_heard() {
    replay(112283);
}

/// Sweep 130000+ on e3d428a: the leader of two voters, leaving, proposed
/// its own removal and crashed before the entry reached the other voter.
/// Restarted, its own log's latest configuration left it out, so it did not
/// campaign, and the other voter could not win without it: no leader, for
/// good. A leader now hands over first, and the new leader removes it.
#[test]
fn a_leaving_leader_hands_over_before_it_is_removed() {
    replay(132366);
}

/// Sweep 300000+ on e01b1fb: a partition between two voters healed, and the
/// leader handed over to the other; the successor's vote request died on
/// the connection the partition had left dead, and its next pre-vote was
/// refused by the leader still handing over, so writes stayed paused until
/// the hand-over timed out. A leader handing over answers pre-votes.
#[test]
fn a_leader_handing_over_lets_its_successor_campaign_again() {
    replay(306875);
}

/// Sweep 306876+ on 9f55ec6: a leader cut off from its two voters (both
/// crashed) went quiet; they restarted and acknowledged the entries it still
/// replicated, which renewed their leases, but it led on only at its next
/// question a lease later, over connections the crashes had left dead:
/// writes stayed refused for over 4 s. A quiet leader whose entries a
/// quorum acknowledges leads on at once.
#[test]
fn a_quiet_leader_a_quorum_acknowledges_leads_on() {
    replay(307336);
}

/// Sweep 320000+ on 219e633: leader h4 removed h5 in a change only its own log
/// held, then crashed; h5 won in the four-member config the others still had.
/// The store was right (an uncommitted change is lost with its leader); the
/// membership-bound check was not: it took h4's uncommitted three members for
/// the size before the change. It now counts only committed memberships.
#[test]
fn a_membership_change_lost_with_its_leader_is_no_growth() {
    replay(321218);
}

/// Sweep 150000+ on f3d023f: a leader of two handing over began to leave,
/// which drops the transfer it waits for; the transfer's future, dropped
/// half-way, left the leader with its heartbeats off and every write held,
/// for good. A transfer now ends (heartbeats and writes resume) however its
/// future ends.
#[test]
fn a_leader_transfer_given_up_half_way_resumes_writes() {
    replay(150543);
}

#[test]
fn partition_and_heal() {
    let mut c = Config::article(seed_base());
    c.ops = vec![
        Op::Wait,
        Op::Write,
        Op::Partition(1, 2),
        Op::Partition(1, 3),
        Op::Write,
        Op::Wait,
        Op::RepairAll,
        Op::Write,
    ];
    check(&c);
}

#[test]
fn unnominate_then_renominate_same_address() {
    let mut c = Config::article(seed_base());
    c.hosts = 2;
    c.initial_ideal = 2;
    c.ops = vec![
        Op::Wait,
        Op::SetIdeal(1),
        Op::Wait,
        Op::Wait,
        Op::SetIdeal(2),
        Op::Wait,
    ];
    c.final_ideal = 2;
    let r = check(&c);
    assert_eq!(r.final_members, ["h1", "h2"]);
}

/// Replays a seed's schedule by name: a regression test for what it found.
fn replay(seed: u64) {
    check(&Config::from_seed(seed));
}

/// Seed 99: a host re-nominated while the server of its previous nomination
/// still ran was added back with that server's log, which it then discarded;
/// under the same member ID the leader saw the log go backwards (openraft
/// panic "follower log reversion"). Now each nomination has its own ID and
/// only a server started for the current nomination is added.
#[test]
fn renominated_host_is_not_added_back_with_its_old_server() {
    replay(99);
}

/// Seed 176: a host that rejoined under a new ID answered, on its old peer
/// URL, a vote request meant for its old ID with an empty log, electing a
/// stale leader (openraft assertion "Some(log_id) <= committed"). Raft
/// messages now name the member they are for and others refuse them.
#[test]
fn rejoined_host_does_not_answer_raft_for_its_old_id() {
    replay(176);
}

/// Seeds 5027, 5040, 6190 and 7005 ("membership 3 exceeds max(ideal 2, ...)"):
/// the operator's put of a smaller `idealClusterSize` failed (deadline
/// exceeded: the leader had just crashed), the cluster rightly went on with
/// the size in force, and the harness had counted the new size from the
/// moment it was asked for. A failed put may or may not have been applied, so
/// both sizes now stay allowed until a later put is acknowledged
/// (`sim::IdealChange`); `harness_catches_growth_past_ideal` still sees real
/// growth past the ideal size.
#[test]
fn a_failed_ideal_size_put_leaves_the_old_size_in_force() {
    for seed in [5027, 5040, 6190, 7005] {
        replay(seed);
    }
}

/// Seed 5402: a member whose URLs in the membership were stale retried the
/// update in a loop that never waited (it fails at once while another
/// membership change is in progress): it spun, and simulated time stood
/// still. It now pauses between attempts (the agent's `URL_UPDATE_RETRY`).
#[test]
fn a_failed_update_of_own_urls_does_not_spin() {
    replay(5402);
}

/// Seeds 24 and 32: a host restarting after its only seed left must still
/// find the cluster (through the members its store knew, listed with their
/// client URLs).
#[test]
fn restarted_host_finds_the_cluster_after_its_seeds_left() {
    replay(24);
    replay(32);
}

/// Seeds 19, 161 and 178, quarantined with 99 and 176 (stale-state leader,
/// no leader after crash/join/leave, membership above the ideal size after
/// CrashLeader): they pass with the identity fixes above.
#[test]
fn crash_leave_and_rejoin_schedules_converge() {
    replay(19);
    replay(161);
    replay(178);
}

/// Seed 68: with the cluster agent event-driven, a host learns of changes
/// only through its watch. The leader's watch sat on a member that had no
/// leader (a fresh nominee never added) and delivered nothing: nominees
/// never counted as started. Watches now honour etcd's `hasleader`: a
/// member without a leader refuses or ends them, and the client fails over.
#[test]
fn a_watch_on_a_member_without_a_leader_fails_over() {
    replay(68);
}

/// Seed 5020: a leader that removed itself could no longer read `/_mgmt/`
/// from its own store and so never decided to stop. Its own log saying it
/// is out is enough for a host that is not nominated for its server.
#[test]
fn a_leader_that_removed_itself_stops() {
    replay(5020);
}

/// Seed 5362: a nominee's store replays membership configs from before it
/// was added; taking one for a removal, it discarded its state and served
/// the same member ID again with an empty log ("follower log reversion",
/// openraft panics). A nominee's own log is no proof of removal, and an ID
/// whose state was discarded is never served again.
#[test]
fn a_nominee_is_not_removed_by_the_old_membership_it_replays() {
    replay(5362);
}

/// Seeds 5178 and 7326: hosts that left cleanly and start again with seeds
/// that have left too. Keeping the raft state of a removed member (7326) let
/// it stand for election in a membership long gone; discarding everything
/// (5178) left it no way to find the cluster. It keeps only the client URLs
/// of the members it knew (`known_members`).
#[test]
fn a_host_that_left_finds_the_cluster_again_through_the_members_it_knew() {
    replay(5178);
    replay(7326);
}

/// Seed 9177: a learner the leader had removed never learns of it and kept
/// serving (watches included) from a log nobody appended to any more. It asked
/// the others whether it was still a member, but a fresh nominee, which knows
/// no members, answered first with an empty list, every time. Each member is
/// asked now, and an empty list says nothing.
#[test]
fn a_removed_learner_asks_every_member_whether_it_is_out() {
    replay(9177);
}

/// Seed 9645: the leader's own-URL update held the leader lane when the
/// nominator decided its next command; the command went out beside it, two
/// leader actions in flight, and the nominator waited forever for an answer
/// it had been given already. A command decided while the lane is busy waits.
#[test]
fn a_nominator_command_waits_for_the_leader_lane() {
    replay(9645);
}

/// Seed 10139: a leaving leader removed itself and stopped its server as soon
/// as its own (uncommitted) config no longer listed it; the remaining member
/// had the joint config only, crashed, and could never reach quorum again. A
/// server never stops while a membership change it proposed is in flight.
#[test]
fn a_leader_stops_only_once_its_membership_change_is_done() {
    replay(10139);
}

/// Seed 7511: a host became leader while a read through its client was in
/// flight; that read landed after it and counted as the leader's view, which
/// must come from its own store, so the nominator was never fed and nothing
/// more changed to wake it. A new leader reads its own store, always.
#[test]
fn a_new_leader_decides_on_its_own_stores_keys() {
    replay(7511);
}

/// Seed 11960: the bootstrap member restarted from state, led, removed
/// itself, and was nominated again: its server (the hostname's ID, so one
/// that "can be" any nomination's) took the new nomination as its own and
/// served on outside the membership. A server its own log counts out never
/// adopts a nomination.
#[test]
fn a_removed_bootstrap_member_nominated_again_starts_afresh() {
    replay(11960);
}

/// Seed 11837: h2 crashed while the leader promoted h3, so the config stayed
/// joint ({h1,h2} and {h1,h2,h3}) with no quorum in the first set. The
/// harness counted two live voters of three and expected h2's removal; a
/// quorum needs a majority of each voter set, and nothing can change until h2
/// returns (it does, in the liveness phase, and the cluster converges).
#[test]
fn a_crash_during_a_joint_change_leaves_the_cluster_waiting_for_quorum() {
    replay(11837);
}

/// Seed 5265 (found once hosts exported and followed resources, which moved
/// the timing): h4 got the leader's final config without itself, uncommitted,
/// the leader (h3) crashed before it was durable there, and h4 took its own
/// log for proof it was removed and discarded its state; h3 came back with
/// the joint config and could never reach a quorum again. A config only in a
/// host's log proves nothing until it is applied there (committed).
#[test]
fn an_uncommitted_config_without_a_host_never_makes_it_discard_its_state() {
    replay(5265);
}

/// Seed 7689: h1 (the leader) crashed and came back from a log whose config
/// was {h1, h3}; meanwhile h3 had become the only member. h1's view of the
/// keys was stale (read through its own server, which no longer heard of any
/// change), so it asked only h2, which was down, whether it was still a member,
/// forever; h3 nominated and withdrew h1 in a loop. A host that may have been
/// removed now also asks the members its own log lists, and reads the keys
/// again when no one answers.
#[test]
fn a_stale_member_asks_the_members_its_own_log_lists() {
    replay(7689);
}

/// Seed 22807 (found by the sweep, failing before this fix too): at ideal size
/// 1 the two voters h3 (leader) and h4 (no longer nominated) remained. h1,
/// restarted from state older than h4's joining, answered h4's member list
/// without h4, and h4 took that for its removal and stopped its server: the
/// leader could then never commit h4's removal, which needed h4's vote. A
/// list now proves a removal only if its config is no earlier in the log than
/// the host's own (the store sends the config's log id with MemberList).
#[test]
fn a_member_list_from_a_member_left_behind_proves_no_removal() {
    replay(22807);
}

/// Seeds whose schedules fail today, each a real finding of the sweep; remove
/// an entry once it passes.
const KNOWN_FAILING: &[(u64, &str)] = &[];

/// Proptest-chosen schedules, one per seed from `SIM_SEED` (default 1) on;
/// `SIM_SEEDS` of them (default 3, or 1 when `SIM_SEED` is set). A failure
/// prints the seed and the smallest failing schedule proptest shrank it to.
#[test]
fn seeded_schedules() {
    init_logs();
    let count: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if std::env::var("SIM_SEED").is_ok() {
            1
        } else {
            3
        });
    let shrink: u32 = std::env::var("SIM_SHRINK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let base = seed_base();
    let start = std::time::Instant::now();
    for seed in base..base + count {
        // Quarantined: found by this sweep, not fixed yet. Replaying one by
        // name (SIM_SEED=<seed>, SIM_SEEDS unset) still runs it.
        if let Some((_, why)) = KNOWN_FAILING.iter().find(|(s, _)| *s == seed)
            && (count > 1 || std::env::var("SIM_SEEDS").is_ok())
        {
            eprintln!("sim seed {seed}: SKIPPED, known failure: {why}");
            continue;
        }
        eprintln!("sim seed {seed} {:?}", Config::from_seed(seed));
        if let Err(e) = sim::schedule::check_seed(seed, shrink) {
            panic!("seed {seed}: {e}");
        }
    }
    eprintln!(
        "{count} seeds from {base} passed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// One seed twice gives the same schedule and, when the build replays bit for
/// bit (`sim::BIT_EXACT`, tokio built with `--cfg tokio_unstable`), the same
/// trace of every event.
#[test]
fn same_seed_same_trace() {
    let seed = seed_base();
    assert_eq!(
        Config::from_seed(seed).schedule_hash(),
        Config::from_seed(seed).schedule_hash()
    );
    let mut c = Config::from_seed(seed);
    // A schedule with every kind of fault, whatever the seed drew.
    c.ops.extend([
        Op::Write,
        Op::Partition(1, 2),
        Op::CrashLeader,
        Op::Leave(3),
        Op::RepairAll,
        Op::Join(3),
        Op::RestartAll,
    ]);
    let (a, b) = (check(&c), check(&c));
    assert_eq!(a.schedule_hash, b.schedule_hash);
    if sim::BIT_EXACT {
        if let Some(i) =
            (0..a.trace.len().max(b.trace.len())).find(|&i| a.trace.get(i) != b.trace.get(i))
        {
            let window = |t: &[String]| t[i.saturating_sub(8)..(i + 3).min(t.len())].join("\n");
            panic!(
                "seed {seed}: traces diverge at event {i}:\nfirst run:\n{}\nsecond run:\n{}",
                window(&a.trace),
                window(&b.trace)
            );
        }
        assert_eq!(a.trace_hash, b.trace_hash);
        eprintln!(
            "seed {seed}: trace hash {:x} ({} events, both runs)",
            a.trace_hash,
            a.trace.len()
        );
    } else {
        eprintln!(
            "seed {seed}: trace hashes {:x} {:x}; not asserted: this build is not bit-exact \
             (tokio without --cfg tokio_unstable; run ./test.sh or see README)",
            a.trace_hash, b.trace_hash
        );
    }
}

/// Prove the harness: with the nominator's "members < ideal" check removed,
/// the four-host article cluster grows to four and the membership invariant
/// must say so.
#[test]
fn harness_catches_growth_past_ideal() {
    init_logs();
    let mut c = Config::article(seed_base());
    c.bug = Bug::GrowPastIdeal;
    let err = run(&c).expect_err("the sim missed a nominator that ignores idealClusterSize");
    assert!(err.contains("membership 4 exceeds"), "{err}");
}
