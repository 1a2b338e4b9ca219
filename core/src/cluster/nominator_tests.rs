use super::*;
use crate::cluster::Host;

fn hosts(names: &[&str]) -> BTreeMap<Host, Vec<String>> {
    names
        .iter()
        .map(|h| (h.to_string(), vec![format!("http://{h}:2380")]))
        .collect()
}

fn view(
    members: &[&str],
    volunteers: &[&str],
    nominated: &[&str],
    started: &[&str],
    ideal: Option<&str>,
) -> View {
    View {
        leader: "h1".into(),
        ideal: ideal.map(raw),
        volunteers: hosts(volunteers),
        nominated: nominated.iter().map(|h| h.to_string()).collect(),
        started: hosts(started),
        members: members
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    Member {
                        learner: false,
                        outgoing: false,
                    },
                )
            })
            .collect(),
    }
}

/// `idealClusterSize` as the key codec decodes it.
fn raw(text: &str) -> Result<u32, String> {
    crate::cluster::keys::decode_ideal(text).map_err(|_| text.to_string())
}

fn step(n: &mut Nominator, now: u64, input: Input) -> Vec<Output> {
    n.handle(Millis(now), input);
    std::iter::from_fn(|| n.poll_output()).collect()
}

fn cmd(c: Command) -> Vec<Output> {
    vec![Output::Command(c)]
}

#[test]
fn grows_one_volunteer_at_a_time_in_name_order() {
    let mut n = Nominator::new();
    let v = view(
        &["h1"],
        &["h1", "h3", "h2", "h4"],
        &["h1"],
        &["h1"],
        Some("3"),
    );
    assert_eq!(
        step(&mut n, 0, Input::Observed(v.clone())),
        cmd(Command::Nominate("h2".into()))
    );
    // Nothing else while that is in flight.
    assert_eq!(step(&mut n, 1, Input::Observed(v)), vec![]);
    let v = view(
        &["h1"],
        &["h1", "h2", "h3", "h4"],
        &["h1", "h2"],
        &["h1"],
        Some("3"),
    );
    assert_eq!(step(&mut n, 2, Input::Observed(v.clone())), vec![]);
    assert_eq!(
        step(&mut n, 3, Input::Done { ok: true }),
        vec![],
        "waits for h2 to start"
    );
    let v = view(
        &["h1"],
        &["h1", "h2", "h3", "h4"],
        &["h1", "h2"],
        &["h1", "h2"],
        Some("3"),
    );
    assert_eq!(
        step(&mut n, 4, Input::Observed(v)),
        cmd(Command::AddLearner {
            host: "h2".into(),
            peer_urls: vec!["http://h2:2380".into()]
        })
    );
    let mut v = view(
        &["h1", "h2"],
        &["h1", "h2", "h3", "h4"],
        &["h1", "h2"],
        &["h1", "h2"],
        Some("3"),
    );
    v.members.get_mut("h2").unwrap().learner = true;
    step(&mut n, 5, Input::Observed(v));
    assert_eq!(
        step(&mut n, 6, Input::Done { ok: true }),
        cmd(Command::Promote("h2".into()))
    );
    let v = view(
        &["h1", "h2"],
        &["h1", "h2", "h3", "h4"],
        &["h1", "h2"],
        &["h1", "h2"],
        Some("3"),
    );
    step(&mut n, 7, Input::Observed(v));
    assert_eq!(
        step(&mut n, 8, Input::Done { ok: true }),
        cmd(Command::Nominate("h3".into()))
    );
}

#[test]
fn at_ideal_size_nothing_happens() {
    let mut n = Nominator::new();
    let v = view(
        &["h1", "h2", "h3"],
        &["h1", "h2", "h3", "h4"],
        &["h1", "h2", "h3"],
        &["h1", "h2", "h3"],
        Some("3"),
    );
    assert_eq!(step(&mut n, 0, Input::Observed(v)), vec![]);
    assert_eq!(n.poll_timeout(), None);
}

#[test]
fn shrinks_from_the_last_name_never_the_leader_first() {
    let mut n = Nominator::new();
    let all = ["h1", "h2", "h3"];
    let v = view(&all, &all, &all, &all, Some("1"));
    assert_eq!(
        step(&mut n, 0, Input::Observed(v)),
        cmd(Command::Unnominate("h3".into()))
    );
    let v = view(&all, &all, &["h1", "h2"], &all, Some("1"));
    step(&mut n, 1, Input::Observed(v));
    assert_eq!(
        step(&mut n, 2, Input::Done { ok: true }),
        cmd(Command::RemoveMember("h3".into()))
    );
    let v = view(&["h1", "h2"], &all, &["h1", "h2"], &["h1", "h2"], Some("1"));
    step(&mut n, 3, Input::Observed(v));
    assert_eq!(
        step(&mut n, 4, Input::Done { ok: true }),
        cmd(Command::Unnominate("h2".into()))
    );
}

#[test]
fn volunteer_leaving_is_unnominated_then_removed() {
    let mut n = Nominator::new();
    let v = view(
        &["h1", "h2", "h3"],
        &["h1", "h3"],
        &["h1", "h2", "h3"],
        &["h1", "h2", "h3"],
        Some("5"),
    );
    assert_eq!(
        step(&mut n, 0, Input::Observed(v)),
        cmd(Command::Unnominate("h2".into()))
    );
}

#[test]
fn leader_that_stops_volunteering_goes_last() {
    let mut n = Nominator::new();
    let v = view(
        &["h1", "h2"],
        &["h2"],
        &["h1", "h2"],
        &["h1", "h2"],
        Some("5"),
    );
    assert_eq!(
        step(&mut n, 0, Input::Observed(v)),
        cmd(Command::Unnominate("h1".into()))
    );
    let v = view(&["h1", "h2"], &["h2"], &["h2"], &["h1", "h2"], Some("5"));
    step(&mut n, 1, Input::Observed(v));
    // The leader does not remove itself: it hands over to the other voter,
    assert_eq!(
        step(&mut n, 2, Input::Done { ok: true }),
        cmd(Command::HandOver("h2".into()))
    );
    // whose nominator removes it.
    let mut n = Nominator::new();
    let mut v = view(&["h1", "h2"], &["h2"], &["h2"], &["h1", "h2"], Some("5"));
    v.leader = "h2".into();
    assert_eq!(
        step(&mut n, 3, Input::Observed(v)),
        cmd(Command::RemoveMember("h1".into()))
    );
    // A learner is no heir: it is promoted first.
    let mut n = Nominator::new();
    let mut v = view(&["h1", "h2"], &["h2"], &["h2"], &["h1", "h2"], Some("5"));
    v.members.get_mut("h2").unwrap().learner = true;
    assert_eq!(
        step(&mut n, 0, Input::Observed(v)),
        cmd(Command::Promote("h2".into()))
    );
    // A leader of a joint configuration that removes it (an earlier leader
    // began the change) hands over even while nominated, and does nothing
    // else until it can.
    let mut n = Nominator::new();
    let two = ["h1", "h2"];
    let mut v = view(&two, &["h1"], &two, &two, Some("5"));
    v.members.get_mut("h1").unwrap().outgoing = true;
    assert_eq!(step(&mut n, 0, Input::Observed(v.clone())), vec![]);
    v.volunteers = hosts(&two);
    assert_eq!(
        step(&mut n, 1, Input::Observed(v)),
        cmd(Command::HandOver("h2".into()))
    );
    // Never to a member that goes too; with two others left to hold a
    // quorum, the leader finishes the change itself.
    let mut n = Nominator::new();
    let all = ["h1", "h2", "h3"];
    let mut v = view(&all, &all, &all, &all, Some("5"));
    v.members.get_mut("h1").unwrap().outgoing = true;
    v.members.get_mut("h3").unwrap().learner = true;
    v.members.get_mut("h2").unwrap().outgoing = true;
    assert_eq!(step(&mut n, 0, Input::Observed(v.clone())), vec![]);
    v.members.get_mut("h3").unwrap().learner = false;
    assert_eq!(
        step(&mut n, 1, Input::Observed(v)),
        cmd(Command::RemoveMember("h1".into()))
    );
    // Alone, the leader cannot remove itself.
    let mut n = Nominator::new();
    let v = view(&["h1"], &[], &[], &["h1"], Some("5"));
    assert_eq!(step(&mut n, 0, Input::Observed(v)), vec![]);
}

#[test]
fn invalid_ideal_sizes_are_ignored_and_reported_once() {
    let mut n = Nominator::new();
    let all = ["h1", "h2"];
    let v = view(&all, &all, &all, &all, Some("2"));
    step(&mut n, 0, Input::Observed(v));
    for raw in ["0", "-3", "many", ""] {
        let v = view(&all, &all, &all, &all, Some(raw));
        assert_eq!(
            step(&mut n, 1, Input::Observed(v.clone())),
            vec![Output::InvalidIdealSize {
                raw: raw.into(),
                using: 2
            }],
            "{raw:?}"
        );
        assert_eq!(step(&mut n, 2, Input::Observed(v)), vec![], "reported once");
    }
    assert_eq!(n.ideal(), 2);
}

#[test]
fn default_ideal_size_is_five() {
    let mut n = Nominator::new();
    let v = view(
        &["h1", "h2", "h3", "h4", "h5"],
        &["h1", "h2", "h3", "h4", "h5", "h6"],
        &["h1", "h2", "h3", "h4", "h5"],
        &[],
        None,
    );
    assert_eq!(step(&mut n, 0, Input::Observed(v)), vec![]);
    assert_eq!(n.ideal(), 5);
}

#[test]
fn nominee_that_never_starts_is_dropped_after_the_timeout() {
    let mut n = Nominator::new();
    let v = view(
        &["h1"],
        &["h1", "h2", "h3"],
        &["h1", "h2"],
        &["h1"],
        Some("2"),
    );
    assert_eq!(step(&mut n, 0, Input::Observed(v)), vec![]);
    assert_eq!(n.poll_timeout(), Some(NOMINEE_START_TIMEOUT));
    assert_eq!(step(&mut n, 29_999, Input::Tick), vec![]);
    assert_eq!(
        step(&mut n, 30_000, Input::Tick),
        cmd(Command::Unnominate("h2".into()))
    );
}

#[test]
fn failed_command_is_retried_after_a_delay() {
    let mut n = Nominator::new();
    let v = view(&["h1"], &["h1", "h2"], &["h1"], &["h1"], Some("2"));
    assert_eq!(
        step(&mut n, 0, Input::Observed(v)),
        cmd(Command::Nominate("h2".into()))
    );
    assert_eq!(step(&mut n, 10, Input::Done { ok: false }), vec![]);
    assert_eq!(n.poll_timeout(), Some(Millis(10) + RETRY_DELAY));
    assert_eq!(
        step(&mut n, 1010, Input::Tick),
        cmd(Command::Nominate("h2".into()))
    );
}

#[test]
fn ideal_shrinking_while_a_nominee_starts_drops_the_nominee() {
    let mut n = Nominator::new();
    let v = view(
        &["h1", "h2"],
        &["h1", "h2", "h3"],
        &["h1", "h2", "h3"],
        &["h1", "h2", "h3"],
        Some("2"),
    );
    assert_eq!(
        step(&mut n, 0, Input::Observed(v)),
        cmd(Command::Unnominate("h3".into()))
    );
}

mod model {
    //! The nominator against a small model of the hosts and the store, with
    //! proptest choosing operator actions and host failures.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        SetIdeal(String),
        Volunteer(usize),
        Withdraw(usize),
        /// A host whose next start attempt never happens.
        Mute(usize),
        Step,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..8).prop_map(|n| Op::SetIdeal(n.to_string())),
            Just(Op::SetIdeal("x".into())),
            (1usize..7).prop_map(Op::Volunteer),
            (1usize..7).prop_map(Op::Withdraw),
            (1usize..7).prop_map(Op::Mute),
            Just(Op::Step),
            Just(Op::Step),
            Just(Op::Step),
        ]
    }

    struct World {
        view: View,
        muted: BTreeSet<Host>,
        nominated_ever_while_nominated: BTreeSet<Host>,
    }

    impl World {
        /// Hosts react: a nominee starts its server (unless muted); a host
        /// neither nominated nor a member stops its server.
        fn react(&mut self) {
            let v = &mut self.view;
            for h in v.nominated.clone() {
                if !self.muted.contains(&h) && v.volunteers.contains_key(&h) {
                    v.started
                        .insert(h.clone(), vec![format!("http://{h}:2380")]);
                }
            }
            let stopped: Vec<Host> = v
                .started
                .keys()
                .filter(|h| !v.nominated.contains(*h) && !v.members.contains_key(*h))
                .cloned()
                .collect();
            for h in stopped {
                v.started.remove(&h);
            }
        }

        fn apply(&mut self, c: &Command, ideal: u32) -> Result<(), TestCaseError> {
            let v = &mut self.view;
            match c {
                Command::Nominate(h) => {
                    prop_assert!(!v.nominated.contains(h), "{h} nominated twice");
                    prop_assert!(
                        self.nominated_ever_while_nominated.insert(h.clone()),
                        "{h} nominated twice"
                    );
                    v.nominated.insert(h.clone());
                }
                Command::AddLearner { host, .. } => {
                    prop_assert!(
                        v.started.contains_key(host),
                        "{host} added before its server started"
                    );
                    prop_assert!(
                        v.members.len() < ideal as usize,
                        "membership would exceed the ideal size {ideal}"
                    );
                    v.members.insert(
                        host.clone(),
                        Member {
                            learner: true,
                            outgoing: false,
                        },
                    );
                }
                Command::Promote(h) => {
                    v.members
                        .get_mut(h)
                        .ok_or_else(|| TestCaseError::fail(format!("promote non-member {h}")))?
                        .learner = false;
                }
                Command::RemoveMember(h) => {
                    prop_assert!(v.members.len() > 1, "removed the last member");
                    let voters = v.members.values().filter(|m| !m.learner).count();
                    prop_assert!(
                        *h != v.leader || voters >= 3,
                        "the leader of {voters} voters removed itself"
                    );
                    v.members.remove(h);
                    if *h == v.leader {
                        let next = v.members.iter().find(|(_, m)| !m.learner);
                        v.leader = next.map(|(h, _)| h.clone()).expect("a voter left");
                    }
                }
                Command::HandOver(h) => {
                    prop_assert!(*h != v.leader, "handed over to itself");
                    prop_assert!(
                        v.members.get(h).is_some_and(|m| !m.learner),
                        "handed over to {h}, no voter"
                    );
                    v.leader = h.clone();
                }
                Command::Unnominate(h) => {
                    prop_assert!(
                        v.nominated.remove(h),
                        "un-nominated {h} who was not nominated"
                    );
                    self.nominated_ever_while_nominated.remove(h);
                }
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn safety_and_liveness(ops in prop::collection::vec(op(), 0..80), final_ideal in 1u32..7) {
            let mut world = World {
                view: View {
                    leader: "h1".into(),
                    ideal: Some(Ok(3)),
                    volunteers: hosts(&["h1"]),
                    nominated: ["h1".to_string()].into(),
                    started: hosts(&["h1"]),
                    members: [("h1".to_string(), Member { learner: false, outgoing: false })].into(),
                            },
                muted: BTreeSet::new(),
                nominated_ever_while_nominated: ["h1".to_string()].into(),
            };
            let mut n = Nominator::new();
            let mut now = 0u64;
            let mut in_flight: Option<Command> = None;
            let run = |n: &mut Nominator, world: &mut World, in_flight: &mut Option<Command>, now: u64| -> Result<(), TestCaseError> {
                if let Some(c) = in_flight.take() {
                    let before = world.view.members.len();
                    let before_leader = world.view.leader.clone();
                    world.apply(&c, n.ideal())?;
                    prop_assert!(world.view.members.len() <= before.max(n.ideal() as usize));
                    world.react();
                    // The new leader runs a nominator of its own.
                    let handed_over = matches!(c, Command::HandOver(_))
                        || matches!(&c, Command::RemoveMember(h) if world.view.leader != before_leader);
                    if handed_over {
                        *n = Nominator::new();
                    }
                    n.handle(Millis(now), Input::Observed(world.view.clone()));
                    if !handed_over {
                        n.handle(Millis(now), Input::Done { ok: true });
                    }
                } else {
                    world.react();
                    n.handle(Millis(now), Input::Observed(world.view.clone()));
                }
                while let Some(o) = n.poll_output() {
                    if let Output::Command(c) = o {
                        prop_assert!(in_flight.is_none(), "two commands in flight");
                        *in_flight = Some(c);
                    }
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::SetIdeal(text) => world.view.ideal = Some(raw(&text)),
                    Op::Volunteer(i) => { world.view.volunteers.insert(format!("h{i}"), vec![format!("http://h{i}:2380")]); }
                    Op::Withdraw(i) => { world.view.volunteers.remove(&format!("h{i}")); }
                    Op::Mute(i) if i > 1 => { world.muted.insert(format!("h{i}")); }
                    Op::Mute(_) => {}
                    Op::Step => now += 5_000,
                }
                run(&mut n, &mut world, &mut in_flight, now)?;
            }
            // Liveness: faults off, every volunteer healthy; the cluster must
            // reach min(ideal, volunteers) voters and stay there.
            world.muted.clear();
            world.view.ideal = Some(raw(&final_ideal.to_string()));
            for _ in 0..200 {
                now += 1_000;
                run(&mut n, &mut world, &mut in_flight, now)?;
                if in_flight.is_none()
                    && let Some(t) = n.poll_timeout() { now = now.max(t.0); n.handle(Millis(now), Input::Tick); }
            }
            let want = (final_ideal as usize).min(world.view.volunteers.len().max(1));
            prop_assert!(in_flight.is_none(), "still busy: {in_flight:?}");
            prop_assert_eq!(world.view.members.len(), want, "view: {:?}", world.view);
            prop_assert!(world.view.members.values().all(|m| !m.learner));
        }
    }
}
