use super::*;
use proptest::prelude::*;

fn put(store: &mut KvStore, k: &str, v: &str) -> Applied {
    store.apply(&Timed {
        now_ms: 0,
        command: Command::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            prev_kv: true,
            ..Default::default()
        }),
    })
}

fn get(store: &KvStore, k: &str) -> Option<KeyValue> {
    store
        .range(&RangeRequest {
            key: k.into(),
            ..Default::default()
        })
        .unwrap()
        .kvs
        .pop()
}

fn at(now_ms: u64, command: Command) -> Timed {
    Timed { now_ms, command }
}

#[test]
fn revisions_and_versions_follow_etcd() {
    let mut s = KvStore::new();
    assert_eq!(s.revision(), 1);
    let a = put(&mut s, "a", "1");
    assert_eq!(a.revision, 2);
    put(&mut s, "a", "2");
    let kv = get(&s, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    // Old revision still readable.
    let old = s
        .range(&RangeRequest {
            key: b"a".to_vec(),
            revision: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(old.kvs[0].value, b"1");
    assert_eq!(
        s.range(&RangeRequest {
            key: b"a".to_vec(),
            revision: 9,
            ..Default::default()
        }),
        Err(KvError::FutureRevision)
    );
    // Delete then recreate resets version and create revision.
    s.apply(&at(
        0,
        Command::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        }),
    ));
    put(&mut s, "a", "3");
    let kv = get(&s, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn delete_of_nothing_keeps_revision() {
    let mut s = KvStore::new();
    let r = s.apply(&at(
        0,
        Command::DeleteRange(DeleteRangeRequest {
            key: b"x".to_vec(),
            ..Default::default()
        }),
    ));
    assert_eq!(r.revision, 1);
    assert!(r.events.is_empty());
}

#[test]
fn txn_compares_and_is_one_revision() {
    let mut s = KvStore::new();
    put(&mut s, "k", "v");
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Value(b"v".to_vec()),
            key: b"k".to_vec(),
            range_end: vec![],
        }],
        success: vec![
            RequestOp::Put(PutRequest {
                key: b"x".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            }),
            RequestOp::Put(PutRequest {
                key: b"y".to_vec(),
                value: b"2".to_vec(),
                ..Default::default()
            }),
            RequestOp::Range(RangeRequest {
                key: b"x".to_vec(),
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    let r = s.apply(&at(0, Command::Txn(txn.clone())));
    assert_eq!(r.revision, 3);
    let Ok(Output::Txn(t)) = r.result else {
        panic!("{r:?}")
    };
    assert!(t.succeeded);
    let ResponseOp::Range(rr) = &t.responses[2] else {
        panic!()
    };
    assert_eq!(rr.kvs[0].value, b"1");
    assert_eq!(r.events.len(), 2);
    // Missing key: value compare fails, version compare against 0.
    let mut t2 = txn.clone();
    t2.compare[0].key = b"missing".to_vec();
    let r = s.apply(&at(0, Command::Txn(t2)));
    assert_eq!(
        r.result,
        Ok(Output::Txn(TxnResponse {
            succeeded: false,
            responses: vec![]
        }))
    );
    // Duplicate key in one branch is refused.
    let dup = TxnRequest {
        success: vec![txn.success[0].clone(), txn.success[0].clone()],
        ..Default::default()
    };
    assert_eq!(
        s.apply(&at(0, Command::Txn(dup))).result,
        Err(KvError::DuplicateKey)
    );
}

#[test]
fn leases_expire_and_take_their_keys() {
    let mut s = KvStore::new();
    let r = s.apply(&at(1000, Command::LeaseGrant { id: 0, ttl: 5 }));
    let Ok(Output::LeaseGrant { id, ttl: 5 }) = r.result else {
        panic!("{r:?}")
    };
    assert_ne!(id, 0);
    s.apply(&at(
        1000,
        Command::Put(PutRequest {
            key: b"l".to_vec(),
            value: b"v".to_vec(),
            lease: id,
            ..Default::default()
        }),
    ));
    let ttl = s.lease_time_to_live(id, true, 2500).unwrap();
    assert_eq!((ttl.ttl, ttl.granted_ttl), (4, 5));
    assert_eq!(ttl.keys, vec![b"l".to_vec()]);
    assert_eq!(s.next_lease_deadline_ms(), Some(6000));
    // Keepalive at 3000 moves the deadline.
    s.apply(&at(3000, Command::LeaseKeepAlive { id }));
    let r = s.apply(&at(6000, Command::ExpireLeases));
    assert_eq!(r.result, Ok(Output::ExpireLeases { revoked: vec![] }));
    let r = s.apply(&at(8000, Command::ExpireLeases));
    assert_eq!(r.result, Ok(Output::ExpireLeases { revoked: vec![id] }));
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kind, EventKind::Delete);
    assert!(get(&s, "l").is_none());
    // Unknown lease.
    let r = s.apply(&at(
        0,
        Command::Put(PutRequest {
            key: b"m".to_vec(),
            lease: 42,
            ..Default::default()
        }),
    ));
    assert_eq!(r.result, Err(KvError::LeaseNotFound));
    assert_eq!(
        s.apply(&at(0, Command::LeaseRevoke { id: 42 })).result,
        Err(KvError::LeaseNotFound)
    );
}

#[test]
fn watch_history_and_compaction() {
    let mut s = KvStore::new();
    put(&mut s, "/p/a", "1"); // 2
    put(&mut s, "/p/a", "2"); // 3
    put(&mut s, "/q", "x"); // 4
    s.apply(&at(
        0,
        Command::DeleteRange(DeleteRangeRequest {
            key: b"/p/".to_vec(),
            range_end: prefix_end(b"/p/"),
            prev_kv: true,
        }),
    )); // 5
    let ev = s.events_since(b"/p/", &prefix_end(b"/p/"), 3).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].kv.value, b"2");
    assert_eq!(ev[0].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(ev[1].kind, EventKind::Delete);
    assert_eq!(ev[1].kv.mod_revision, 5);
    assert_eq!(
        s.apply(&at(0, Command::Compact { revision: 4 })).result,
        Ok(Output::Compact)
    );
    assert!(matches!(
        s.events_since(b"/p/", &prefix_end(b"/p/"), 3),
        Err(KvError::Compacted {
            compact_revision: 4
        })
    ));
    assert!(matches!(
        s.range(&RangeRequest {
            key: b"/q".to_vec(),
            revision: 3,
            ..Default::default()
        }),
        Err(KvError::Compacted { .. })
    ));
    assert_eq!(get(&s, "/q").unwrap().value, b"x");
    let json = serde_json::to_string(&s).unwrap();
    let back: KvStore = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn prefix_end_matches_etcd() {
    assert_eq!(prefix_end(b"a"), b"b");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"\xff"), vec![0]);
}

// ---- model-based property test ----

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8, u8),
    Range(u8, u8, i64),
    CasVersion(u8, i64, u8),
    Compact(i64),
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', b'0' + (k % 8)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        (0u8..8, 0u8..4).prop_map(|(k, n)| Op::Delete(k, n)),
        (0u8..8, 0u8..9, 0i64..40).prop_map(|(k, n, r)| Op::Range(k, n, r)),
        (0u8..8, 0i64..4, any::<u8>()).prop_map(|(k, v, x)| Op::CasVersion(k, v, x)),
        (0i64..40).prop_map(Op::Compact),
    ]
}

/// The model: a full copy of the key space after every revision.
#[derive(Clone, Default)]
struct Model {
    history: Vec<BTreeMap<Vec<u8>, KeyValue>>,
    compacted: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            // history[rev - 1] is the map at revision rev.
            history: vec![BTreeMap::new()],
            compacted: 0,
        }
    }
    fn rev(&self) -> i64 {
        self.history.len() as i64
    }
    fn cur(&self) -> &BTreeMap<Vec<u8>, KeyValue> {
        self.history.last().unwrap()
    }
    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        let rev = self.rev() + 1;
        let mut m = self.cur().clone();
        let kv = match m.get(&k) {
            Some(p) => KeyValue {
                key: k.clone(),
                create_revision: p.create_revision,
                mod_revision: rev,
                version: p.version + 1,
                value: v,
                lease: 0,
            },
            None => KeyValue {
                key: k.clone(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: v,
                lease: 0,
            },
        };
        m.insert(k, kv);
        self.history.push(m);
    }
}

fn range_of(k: u8, n: u8) -> (Vec<u8>, Vec<u8>) {
    if n == 0 {
        (key(k), vec![])
    } else {
        let end = vec![b'k', b'0' + (k % 8) + n];
        (key(k), end)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn matches_btreemap_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut s = KvStore::new();
        let mut m = Model::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let r = s.apply(&at(0, Command::Put(PutRequest { key: key(k), value: vec![v], ..Default::default() })));
                    m.put(key(k), vec![v]);
                    prop_assert_eq!(r.revision, m.rev());
                }
                Op::Delete(k, n) => {
                    let (start, end) = range_of(k, n);
                    let r = s.apply(&at(0, Command::DeleteRange(DeleteRangeRequest { key: start.clone(), range_end: end.clone(), prev_kv: true })));
                    let doomed: Vec<KeyValue> = m.cur().values().filter(|kv| in_range(&kv.key, &start, &end)).cloned().collect();
                    if !doomed.is_empty() {
                        let mut next = m.cur().clone();
                        for kv in &doomed { next.remove(&kv.key); }
                        m.history.push(next);
                    }
                    prop_assert_eq!(r.result, Ok(Output::DeleteRange(DeleteRangeResponse { deleted: doomed.len() as i64, prev_kvs: doomed })));
                    prop_assert_eq!(r.revision, m.rev());
                }
                Op::Range(k, n, rev) => {
                    let (start, end) = range_of(k, n);
                    let got = s.range(&RangeRequest { key: start.clone(), range_end: end.clone(), revision: rev, ..Default::default() });
                    let at_rev = if rev <= 0 { m.rev() } else { rev };
                    if at_rev > m.rev() {
                        prop_assert_eq!(got, Err(KvError::FutureRevision));
                    } else if at_rev < m.compacted {
                        let is_compacted = matches!(got, Err(KvError::Compacted { .. }));
                        prop_assert!(is_compacted);
                    } else {
                        let want: Vec<KeyValue> = m.history[(at_rev - 1) as usize].values().filter(|kv| in_range(&kv.key, &start, &end)).cloned().collect();
                        prop_assert_eq!(got, Ok(RangeResponse { count: want.len() as i64, kvs: want, more: false }));
                    }
                }
                Op::CasVersion(k, version, v) => {
                    let txn = TxnRequest {
                        compare: vec![Compare { result: CompareResult::Equal, target: CompareTarget::Version(version), key: key(k), range_end: vec![] }],
                        success: vec![RequestOp::Put(PutRequest { key: key(k), value: vec![v], ..Default::default() })],
                        failure: vec![],
                    };
                    let r = s.apply(&at(0, Command::Txn(txn)));
                    let cur_version = m.cur().get(&key(k)).map_or(0, |kv| kv.version);
                    let ok = cur_version == version;
                    if ok { m.put(key(k), vec![v]); }
                    let Ok(Output::Txn(t)) = r.result else { panic!() };
                    prop_assert_eq!(t.succeeded, ok);
                    prop_assert_eq!(r.revision, m.rev());
                }
                Op::Compact(rev) => {
                    let r = s.apply(&at(0, Command::Compact { revision: rev }));
                    if rev <= m.compacted {
                        let is_compacted = matches!(r.result, Err(KvError::Compacted { .. }));
                        prop_assert!(is_compacted);
                    } else if rev > m.rev() {
                        prop_assert_eq!(r.result, Err(KvError::FutureRevision));
                    } else {
                        prop_assert_eq!(r.result, Ok(Output::Compact));
                        m.compacted = rev;
                    }
                }
            }
        }
        // Watch history from the compaction point replays to the current state.
        let start = m.compacted.max(1);
        let events = s.events_since(b"k", &[0], start + 1).unwrap();
        let mut replay = m.history[(start - 1) as usize].clone();
        for e in events {
            match e.kind {
                EventKind::Put => { replay.insert(e.kv.key.clone(), e.kv); }
                EventKind::Delete => { replay.remove(&e.kv.key); }
            }
        }
        prop_assert_eq!(&replay, m.cur());
        // Snapshot round trip.
        let back: KvStore = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        prop_assert_eq!(back, s);
    }
}

#[test]
fn size_counts_history_and_compaction_frees_it() {
    let mut s = KvStore::new();
    put(&mut s, "k", "0123456789");
    put(&mut s, "k", "0123456789");
    let one = 1 + 10 + RECORD_OVERHEAD;
    assert_eq!(s.size_bytes(), 2 * one);
    let rev = s.revision();
    s.apply(&at(0, Command::Compact { revision: rev }));
    assert_eq!(s.size_bytes(), one);
    // A store read back from a snapshot counts the same.
    let copy = s.clone().recount();
    assert_eq!(copy.size_bytes(), s.size_bytes());
}

#[test]
fn nospace_refuses_growth_but_not_deletes_until_disarmed() {
    let mut s = KvStore::new();
    put(&mut s, "a", "1");
    let raise = |activate| Command::Alarm {
        activate,
        member_id: 7,
        alarm: Alarm::NoSpace,
    };
    let out = s.apply(&at(0, raise(true)));
    assert_eq!(
        out.result,
        Ok(Output::Alarm {
            alarms: vec![(7, Alarm::NoSpace)]
        })
    );
    assert_eq!(put(&mut s, "b", "2").result, Err(KvError::NoSpace));
    let grant = s.apply(&at(0, Command::LeaseGrant { id: 0, ttl: 5 }));
    assert_eq!(grant.result, Err(KvError::NoSpace));
    let del = s.apply(&at(
        0,
        Command::DeleteRange(DeleteRangeRequest {
            key: "a".into(),
            ..Default::default()
        }),
    ));
    assert!(del.result.is_ok());
    s.apply(&at(0, raise(false)));
    assert!(s.alarms().is_empty());
    assert!(put(&mut s, "b", "2").result.is_ok());
}

#[test]
fn hash_kv_is_the_same_for_the_same_log_and_differs_after_a_write() {
    let mut a = KvStore::new();
    let mut b = KvStore::new();
    for s in [&mut a, &mut b] {
        put(s, "x", "1");
        put(s, "y", "2");
    }
    let (ha, _) = a.hash_kv(0).unwrap();
    assert_eq!(b.hash_kv(0).unwrap().0, ha);
    let rev = a.revision();
    put(&mut a, "x", "3");
    assert_ne!(a.hash_kv(0).unwrap().0, ha);
    // At the earlier revision the history hashes as before.
    assert_eq!(a.hash_kv(rev).unwrap().0, ha);
    assert_eq!(a.hash_kv(rev + 5), Err(KvError::FutureRevision));
}

/// Applies `op` as a command (reads do nothing here).
fn apply_op(s: &mut KvStore, op: &Op) {
    let command = match op {
        Op::Put(k, v) => Command::Put(PutRequest {
            key: key(*k),
            value: vec![*v],
            ..Default::default()
        }),
        Op::Delete(k, n) => {
            let (key, range_end) = range_of(*k, *n);
            Command::DeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: false,
            })
        }
        Op::Compact(rev) => Command::Compact { revision: *rev },
        Op::Range(..) | Op::CasVersion(..) => return,
    };
    s.apply(&at(0, command));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// A snapshot read in slices while commands (compactions included) go on
    /// is the store as it was when it began; once it ends, the store is the
    /// one that took no snapshot at all, to the byte.
    #[test]
    fn a_sliced_snapshot_is_the_store_as_of_its_start(
        before in prop::collection::vec(op(), 0..40),
        during in prop::collection::vec((op(), 1usize..4), 0..30),
    ) {
        let mut s = KvStore::new();
        for op in &before {
            apply_op(&mut s, op);
        }
        let then = s.clone();
        let mut twin = s.clone();
        let head = s.begin_snapshot();
        let mut keys = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        let mut during = during.into_iter();
        loop {
            // A slice, then some commands before the next one.
            let (op, size) = during.next().unwrap_or((Op::Range(0, 0, 0), 2));
            let slice = s.snapshot_slice(&head, after.as_deref(), size);
            apply_op(&mut s, &op);
            apply_op(&mut twin, &op);
            let Some(last) = slice.last() else { break };
            after = Some(last.key().to_vec());
            keys.extend(slice);
        }
        for (op, _) in during {
            apply_op(&mut s, &op);
            apply_op(&mut twin, &op);
        }
        prop_assert_eq!(KvStore::from_snapshot(head, keys), then);
        // Versions held for it are hidden from every read meanwhile...
        prop_assert_eq!(s.hash_kv(0), twin.hash_kv(0));
        s.end_snapshot();
        // ...and gone after it.
        prop_assert_eq!(s, twin);
    }
}
