//! A 3-member cluster on loopback, formed through the membership API.

use std::time::Duration;

use mgmt_store::{Store, StoreConfig, StoreHandle};

use crate::common::*;

const T: Duration = Duration::from_secs(20);

async fn join(name: &str, prefix: &std::path::Path) -> StoreHandle {
    Store::start_join(config(name, prefix))
        .await
        .expect("joiner starts")
}

async fn read_all(nodes: &[&StoreHandle], key: &[u8], want: &[u8]) {
    for n in nodes {
        let kv = n.get(key).await.expect("linearizable read");
        assert_eq!(
            kv.map(|k| k.value).as_deref(),
            Some(want),
            "on member {:x}",
            n.id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_fail_over_and_catch_up() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let n1 = start_single("node1", dir.path()).await;
    let n2 = join("node2", dir.path()).await;
    let n3 = join("node3", dir.path()).await;
    n1.put(b"/before", b"1").await.unwrap();
    for n in [&n2, &n3] {
        n1.add_learner(n.member_spec(if n.id() == n2.id() { "node2" } else { "node3" }))
            .await
            .unwrap();
    }
    // Promote through a follower-forwarded path for one of them.
    n1.promote(n2.id()).await.unwrap();
    n2.promote(n3.id()).await.unwrap();
    // Committed on the leader; n3 learns of it with the next append.
    let members = eventually(Duration::from_secs(10), || async {
        let m = n3.members();
        (m.len() == 3 && m.iter().all(|m| !m.is_learner)).then_some(m)
    })
    .await;
    let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"node1") && names.contains(&"node3"));

    // Writes on any member (followers forward), reads on all.
    n2.put(b"/k2", b"from2").await.unwrap();
    n3.put(b"/k3", b"from3").await.unwrap();
    read_all(&[&n1, &n2, &n3], b"/before", b"1").await;
    read_all(&[&n1, &n2, &n3], b"/k2", b"from2").await;
    read_all(&[&n1, &n2, &n3], b"/k3", b"from3").await;
    // etcdctl on a follower sees all three members.
    let out = etcdctl_ok(&endpoint(&n3), &["member", "list"]).await;
    assert_eq!(out.lines().count(), 3, "{out}");

    // Stop the leader; the others elect a new one and lose nothing.
    let nodes = [n1, n2, n3];
    let leader_id = nodes[0].wait_for_leader(T).await.unwrap();
    let (dead_idx, _) = nodes
        .iter()
        .enumerate()
        .find(|(_, n)| n.id() == leader_id)
        .unwrap();
    let mut nodes: Vec<Option<StoreHandle>> = nodes.into_iter().map(Some).collect();
    let dead = nodes[dead_idx].take().unwrap();
    let dead_name = dead
        .members()
        .into_iter()
        .find(|m| m.id == dead.id())
        .unwrap()
        .name;
    let dead_client = dead.client_urls().to_vec();
    let dead_peer = dead.peer_urls().to_vec();
    dead.shutdown().await;
    drop(dead);
    let alive: Vec<&StoreHandle> = nodes.iter().flatten().collect();
    eventually(T, || async {
        let l = alive[0].leader();
        l.filter(|l| *l != leader_id && alive.iter().all(|n| n.leader() == Some(*l)))
    })
    .await;
    alive[0].put(b"/after", b"failover").await.unwrap();
    read_all(&alive, b"/k3", b"from3").await;
    read_all(&alive, b"/after", b"failover").await;

    // Restart the old leader on the same URLs and data: it catches up.
    let mut c: StoreConfig = config(&dead_name, dir.path());
    c.client_urls = dead_client;
    c.peer_urls = dead_peer;
    let back = Store::start_join(c).await.expect("restart");
    alive[1].put(b"/late", b"x").await.unwrap();
    let kv = eventually(T, || async {
        back.range(
            mgmt_core::kv::RangeRequest {
                key: b"/late".to_vec(),
                ..Default::default()
            },
            true,
        )
        .await
        .ok()
        .and_then(|mut r| r.kvs.pop())
    })
    .await;
    assert_eq!(kv.value, b"x");
    read_all(&[&back], b"/after", b"failover").await;
    back.shutdown().await;
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_purge_the_log_restart_and_seed_a_new_member() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("snap1", dir.path());
    c.snapshot_every = 10;
    c.log_kept_after_snapshot = 0;
    let n1 = Store::start_single(c.clone()).await.unwrap();
    n1.wait_for_leader(T).await.unwrap();
    for i in 0..40 {
        n1.put(format!("/s/{i:02}").as_bytes(), b"v").await.unwrap();
    }
    let snap = dir.path().join("snap1").join("snapshot.bin");
    eventually(T, || async { snap.exists().then_some(()) }).await;
    let purged = dir.path().join("snap1").join("purged.json");
    eventually(T, || async { purged.exists().then_some(()) }).await;
    // A new member is fed from the snapshot (the log before it is purged).
    let n2 = join("snap2", dir.path()).await;
    n1.add_learner(n2.member_spec("snap2")).await.unwrap();
    n1.promote(n2.id()).await.unwrap();
    assert_eq!(n2.get_prefix(b"/s/").await.unwrap().len(), 40);
    n1.put(b"/s/last", b"v").await.unwrap();
    // Restart both on the same URLs: state comes back from snapshot + log tail.
    let urls = |h: &StoreHandle| (h.client_urls().to_vec(), h.peer_urls().to_vec());
    let (u1, u2) = (urls(&n1), urls(&n2));
    n2.shutdown().await;
    n1.shutdown().await;
    drop((n1, n2));
    let mut c2 = config("snap2", dir.path());
    (c.client_urls, c.peer_urls) = u1;
    (c2.client_urls, c2.peer_urls) = u2;
    let back1 = Store::start_join(c).await.unwrap();
    let back2 = Store::start_join(c2).await.unwrap();
    for n in [&back1, &back2] {
        let got = n.get_prefix(b"/s/").await.unwrap().len();
        assert_eq!(
            got,
            41,
            "member {:x} applied {:?} leader {:?}",
            n.id(),
            n.applied_index(),
            n.leader()
        );
    }
    back2.shutdown().await;
    back1.shutdown().await;
}
