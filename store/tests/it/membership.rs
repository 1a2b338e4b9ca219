//! The API clustering logic drives: local-only membership changes, the
//! membership and replication views and their watches, txn and revisioned reads.

use std::future::Future;
use std::time::Duration;

use mgmt_core::kv::{Compare, CompareResult, CompareTarget, PutRequest, RequestOp, TxnRequest};
use mgmt_store::{
    MemberNode, MemberSpec, MembershipChange, MembershipError, MembershipState, MembershipWatch,
    Replication, ReplicationWatch, Store, StoreHandle, member_id,
};

use crate::common::*;

const T: Duration = Duration::from_secs(10);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(T, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {T:?}"))
}

/// A one-member cluster in a new temporary directory (kept while it lives).
async fn single(name: &str) -> (tempfile::TempDir, StoreHandle) {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single(name, dir.path()).await;
    (dir, h)
}

async fn join(name: &str, prefix: &std::path::Path) -> StoreHandle {
    Store::start_join(config(name, prefix))
        .await
        .expect("joiner starts")
}

/// A member nobody runs: nothing answers on its peer URL.
fn absent(name: &str) -> MemberSpec {
    MemberSpec {
        id: member_id(name),
        node: MemberNode {
            name: name.into(),
            peer_urls: vec![format!("http://127.0.0.1:{}", free_port())],
            client_urls: vec![],
        },
    }
}

/// A store watch: its view now, and a wait for the next change.
trait Watch {
    type State;
    fn state(&mut self) -> Self::State;
    async fn changed(&mut self) -> bool;
}

macro_rules! impl_watch {
    ($watch:ty, $state:ty) => {
        impl Watch for $watch {
            type State = $state;
            fn state(&mut self) -> $state {
                <$watch>::state(self)
            }
            async fn changed(&mut self) -> bool {
                <$watch>::changed(self).await
            }
        }
    };
}
impl_watch!(MembershipWatch, MembershipState);
impl_watch!(ReplicationWatch, Replication);

/// Wait on `w` (no polling) until `pred` holds for its state.
async fn until<W: Watch>(mut w: W, pred: impl Fn(&W::State) -> bool) {
    within("watched condition", async {
        while !pred(&w.state()) {
            assert!(w.changed().await, "store stopped");
        }
    })
    .await;
}

async fn membership_until(h: &StoreHandle, pred: impl Fn(&MembershipState) -> bool) {
    until(h.membership_changes(), pred).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_change_on_a_follower_is_not_leader_and_changes_nothing() {
    let (dir, n1) = single("m1").await;
    let n2 = join("m2", dir.path()).await;
    n1.add_learner(n2.member_spec("m2")).await.unwrap();
    n1.promote(n2.id()).await.unwrap();
    membership_until(&n2, |m| m.leader == Some(n1.id()) && m.members.len() == 2).await;
    let before = n1.membership();

    for change in [
        MembershipChange::AddLearner(absent("m3")),
        MembershipChange::Promote(member_id("m3")),
        MembershipChange::Remove(n1.id()),
    ] {
        assert_eq!(
            n2.change_membership_here(&change).await,
            Err(MembershipError::NotLeader),
            "{change:?}"
        );
    }
    assert_eq!(n1.membership(), before);
    assert_eq!(n2.membership().members, before.members);
    n2.shutdown().await;
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_here_does_not_wait_for_the_learner_and_the_watch_sees_it() {
    let (_dir, n1) = single("a1").await;
    let mut watch = n1.membership_changes();
    let before = n1.membership();
    assert!(before.loaded);
    assert_eq!(before.leader, Some(n1.id()));

    // Nothing runs at the learner's URL: waiting for it would never end.
    let learner = absent("a2");
    within(
        "add learner",
        n1.change_membership_here(&MembershipChange::AddLearner(learner.clone())),
    )
    .await
    .unwrap();
    // The watch wakes until the learner is listed (it may first report an
    // earlier change, such as the leader's own start).
    let listed = |m: &mgmt_store::MembershipState| m.members.iter().any(|m| m.id == learner.id);
    for _ in 0..10 {
        if listed(&watch.state()) {
            break;
        }
        assert!(within("membership change", watch.changed()).await);
    }
    let m = n1.membership();
    let added = m
        .members
        .iter()
        .find(|m| m.id == learner.id)
        .expect("listed");
    assert!(added.is_learner);
    assert_eq!(added.peer_urls, learner.node.peer_urls);

    within(
        "remove learner",
        n1.change_membership_here(&MembershipChange::Remove(learner.id)),
    )
    .await
    .unwrap();
    membership_until(&n1, |m| m.members.iter().all(|m| m.id != learner.id)).await;
    n1.shutdown().await;
    // A stopped store's watch reports it.
    assert!(!within("stopped watch", watch.changed()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_on_the_leader_names_the_learner_with_its_matched_index() {
    let (dir, n1) = single("r1").await;
    let n2 = join("r2", dir.path()).await;
    assert!(!n2.membership().loaded, "a joiner has no membership yet");
    n1.put(b"/r", b"1").await.unwrap();

    n1.change_membership_here(&MembershipChange::AddLearner(n2.member_spec("r2")))
        .await
        .unwrap();
    until(n1.replication_changes(), |r: &Replication| {
        r.matched
            .get(&n2.id())
            .is_some_and(|m| *m == r.last_log_index)
    })
    .await;
    let r = n1.replication();
    assert!(r.last_log_index > 0);
    assert_eq!(r.matched.get(&n2.id()), Some(&r.last_log_index), "{r:?}");
    membership_until(&n2, |m| m.loaded && m.leader == Some(n1.id())).await;
    assert!(
        n2.replication().matched.is_empty(),
        "only a leader reports it"
    );

    // The learner is promoted here once it caught up.
    n1.change_membership_here(&MembershipChange::Promote(n2.id()))
        .await
        .unwrap();
    membership_until(&n1, |m| m.members.iter().all(|m| !m.is_learner)).await;
    n2.shutdown().await;
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_answers_whether_its_compare_held() {
    let (_dir, n1) = single("t1").await;
    n1.put(b"/t/k", b"a").await.unwrap();
    let txn = |want: &[u8], put: &[u8]| TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Value(want.to_vec()),
            key: b"/t/k".to_vec(),
            range_end: vec![],
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: b"/t/k".to_vec(),
            value: put.to_vec(),
            ..Default::default()
        })],
        failure: vec![],
    };
    assert!(!n1.txn(txn(b"b", b"x")).await.unwrap());
    assert_eq!(n1.get(b"/t/k").await.unwrap().unwrap().value, b"a");
    assert!(n1.txn(txn(b"a", b"c")).await.unwrap());
    assert_eq!(n1.get(b"/t/k").await.unwrap().unwrap().value, b"c");
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prefix_at_reads_at_the_revision_of_the_last_write() {
    let (_dir, n1) = single("g1").await;
    n1.put(b"/g/a", b"1").await.unwrap();
    let rev = n1.put(b"/other", b"2").await.unwrap();
    let (at, kvs) = n1.get_prefix_at(b"/g/").await.unwrap();
    assert_eq!(at, rev);
    assert_eq!(kvs.len(), 1);
    assert_eq!(kvs[0].key, b"/g/a");
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_own_urls_has_nothing_to_do_while_they_are_current() {
    let (_dir, n1) = single("u1").await;
    let me = n1.member_spec("u1");
    membership_until(&n1, |m| {
        m.members
            .iter()
            .any(|m| m.id == me.id && m.peer_urls == me.node.peer_urls)
    })
    .await;
    assert!(!n1.update_own_urls().await.unwrap());
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_asked_of_a_learner_is_forwarded_to_the_leader() {
    let (dir, n1) = single("r1").await;
    let n2 = join("r2", dir.path()).await;
    n1.add_learner(n2.member_spec("r2")).await.unwrap();
    membership_until(&n2, |m| m.leader == Some(n1.id()) && m.members.len() == 2).await;
    // The learner is not the leader: it forwards its own removal there.
    n2.remove(n2.id()).await.unwrap();
    membership_until(&n1, |m| m.members.len() == 1).await;
    assert!(n1.membership().members.iter().all(|m| m.id == n1.id()));
    n2.shutdown().await;
    n1.shutdown().await;
}
