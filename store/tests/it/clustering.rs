//! The clustering driver in-process: several hosts on loopback, each its own
//! ports and data prefix, grown and shrunk through `/_mgmt/idealClusterSize`.

use std::time::Duration;

use mgmt_core::cluster::keys::IDEAL_CLUSTER_SIZE;
use mgmt_store::StoreConfig;
use mgmt_store::client::{ClientConfig, EtcdClient};
use mgmt_store::cluster::{Cluster, ClusterConfig, Status};

use crate::common::*;

const T: Duration = Duration::from_secs(60);

struct Host {
    cluster: Cluster,
    client_url: String,
}

fn host_config(name: &str, dir: &std::path::Path, seeds: &[&str]) -> ClusterConfig {
    let mut s = StoreConfig::new(name, dir);
    s.client_urls = vec![format!("http://127.0.0.1:{}", free_port())];
    s.peer_urls = vec![format!("http://127.0.0.1:{}", free_port())];
    let mut c = ClusterConfig::new(s);
    c.seeds = seeds.iter().map(|s| s.to_string()).collect();
    c.lease_ttl_s = 3;
    c.leave_timeout = Duration::from_secs(5);
    c
}

async fn start(config: ClusterConfig) -> Host {
    init_tracing();
    let client_url = config.store.client_urls[0].clone();
    Host {
        cluster: Cluster::start(config).await.expect("cluster starts"),
        client_url,
    }
}

fn client(url: &str) -> EtcdClient {
    EtcdClient::new(ClientConfig::new(vec![url.to_string()])).unwrap()
}

/// Voter names, as the given member lists them (None while unreachable).
async fn voters(c: &EtcdClient) -> Option<Vec<String>> {
    let members = c.member_list().await.ok()?;
    if members.iter().any(|m| m.is_learner) {
        return None;
    }
    let mut names: Vec<String> = members.into_iter().map(|m| m.name).collect();
    names.sort();
    Some(names)
}

async fn wait_voters(c: &EtcdClient, want: &[&str]) {
    eventually(T, || async { (voters(c).await? == want).then_some(()) }).await;
}

async fn wait_status(h: &Host, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
    let mut rx = h.cluster.status();
    let got = match tokio::time::timeout(T, rx.wait_for(|s| pred(s))).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    got.unwrap_or_else(|| panic!("status never became {what}: {:?}", *rx.borrow()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_reuse_after_unnominate() {
    let dir = tempfile::tempdir().unwrap();
    let mut c1 = host_config("h1", dir.path(), &[]);
    c1.ideal_cluster_size = Some(2);
    let h1 = start(c1).await;
    let h2 = start(host_config("h2", dir.path(), &[&h1.client_url])).await;
    let admin = client(&h1.client_url);
    wait_voters(&admin, &["h1", "h2"]).await;
    let first = wait_status(&h2, "serving", |s| s.server.is_some()).await;

    // Shrink: h2 is un-nominated, removed, and stops its server.
    admin
        .put(IDEAL_CLUSTER_SIZE.as_bytes(), b"1", 0)
        .await
        .unwrap();
    wait_voters(&admin, &["h1"]).await;
    wait_status(&h2, "stopped", |s| s.server.is_none() && !s.nominated).await;

    // Regrow on the very same URLs: they must bind again, on fresh raft state.
    admin
        .put(IDEAL_CLUSTER_SIZE.as_bytes(), b"2", 0)
        .await
        .unwrap();
    wait_voters(&admin, &["h1", "h2"]).await;
    let again = wait_status(&h2, "serving again", |s| {
        s.server.is_some() && s.servers_started == 2
    })
    .await;
    assert_eq!(again.server, first.server, "same client URLs");
    // The regrown member serves reads and writes.
    let c2 = client(&h2.client_url);
    c2.put(b"/after", b"regrow", 0).await.unwrap();
    assert_eq!(
        admin.get(b"/after").await.unwrap().unwrap().value,
        b"regrow"
    );

    h2.cluster.shutdown().await;
    h1.cluster.shutdown().await;
}

/// A host that was removed discarded its raft state; when it is nominated
/// again it must join under a new member ID, as a new etcd member would:
/// under its old ID a leader could still hold replication progress for the
/// old log and see this one "go backwards" (openraft's follower log
/// reversion; sim seed 99). MemberList still names it by its hostname.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_with_fresh_state_gets_a_new_member_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut c1 = host_config("h1", dir.path(), &[]);
    c1.ideal_cluster_size = Some(2);
    let h1 = start(c1).await;
    let h2 = start(host_config("h2", dir.path(), &[&h1.client_url])).await;
    let admin = client(&h1.client_url);
    wait_voters(&admin, &["h1", "h2"]).await;
    let id_of = |members: &[mgmt_store::client::PbMember], name: &str| {
        members.iter().find(|m| m.name == name).map(|m| m.id)
    };
    let first = id_of(&admin.member_list().await.unwrap(), "h2").expect("h2 listed");

    admin
        .put(IDEAL_CLUSTER_SIZE.as_bytes(), b"1", 0)
        .await
        .unwrap();
    wait_voters(&admin, &["h1"]).await;
    wait_status(&h2, "stopped", |s| s.server.is_none() && !s.nominated).await;
    admin
        .put(IDEAL_CLUSTER_SIZE.as_bytes(), b"2", 0)
        .await
        .unwrap();
    wait_voters(&admin, &["h1", "h2"]).await;
    let members = admin.member_list().await.unwrap();
    let again = id_of(&members, "h2").expect("h2 listed again");
    assert_ne!(again, first, "fresh state, new ID");
    assert_eq!(members.len(), 2, "no leftover member: {members:?}");

    h2.cluster.shutdown().await;
    h1.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_leaves_even_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut c1 = host_config("h1", dir.path(), &[]);
    c1.ideal_cluster_size = Some(3);
    let h1 = start(c1).await;
    let h2 = start(host_config("h2", dir.path(), &[&h1.client_url])).await;
    let h3 = start(host_config("h3", dir.path(), &[&h1.client_url])).await;
    let c2 = client(&h2.client_url);
    wait_voters(&c2, &["h1", "h2", "h3"]).await;

    // A follower leaves.
    h3.cluster.shutdown().await;
    wait_voters(&c2, &["h1", "h2"]).await;
    // The leader (h1, the bootstrap host) leaves: it removes itself, h2 takes over.
    let leader = wait_status(&h1, "leader", |s| s.leader).await;
    assert!(leader.leader);
    h1.cluster.shutdown().await;
    wait_voters(&c2, &["h2"]).await;
    c2.put(b"/still", b"works", 0).await.unwrap();
    h2.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_quorum_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut c1 = host_config("h1", dir.path(), &[]);
    c1.ideal_cluster_size = Some(2);
    let h1 = start(c1).await;
    let h2 = start(host_config("h2", dir.path(), &[&h1.client_url])).await;
    wait_voters(&client(&h1.client_url), &["h1", "h2"]).await;
    // h2 vanishes without leaving: h1 alone has no quorum.
    drop(h2);
    tokio::time::timeout(T, h1.cluster.shutdown())
        .await
        .expect("shutdown returns without quorum (leave timeout)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ideal_size_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut c1 = host_config("h1", dir.path(), &[]);
    c1.ideal_cluster_size = Some(1);
    let h1 = start(c1).await;
    let h2 = start(host_config("h2", dir.path(), &[&h1.client_url])).await;
    let admin = client(&h1.client_url);
    wait_voters(&admin, &["h1"]).await;
    for bad in ["0", "-3", "many"] {
        admin
            .put(IDEAL_CLUSTER_SIZE.as_bytes(), bad.as_bytes(), 0)
            .await
            .unwrap();
    }
    // Still one member; a valid size then takes effect.
    wait_voters(&admin, &["h1"]).await;
    admin
        .put(IDEAL_CLUSTER_SIZE.as_bytes(), b"2", 0)
        .await
        .unwrap();
    wait_voters(&admin, &["h1", "h2"]).await;
    h2.cluster.shutdown().await;
    h1.cluster.shutdown().await;
}

/// Whether something listens on `url`'s port.
fn listening(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    std::net::TcpStream::connect(addr).is_ok()
}

/// A member restarted alone (no seeds, the only voter of its store) reads the
/// cluster's keys from its own store once it leads, not through its etcd API
/// over a connection to itself; a single pass also watches none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_member_reads_its_keys_from_its_own_store() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(host_config("lone", dir.path(), &[])).await;
    first.cluster.shutdown().await;
    for single_pass in [false, true] {
        let mut config = host_config("lone", dir.path(), &[]);
        config.single_pass = single_pass;
        let h = start(config).await;
        let mut status = h.cluster.status();
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.keys_read && s.leader),
        )
        .await
        .expect("the keys are read within 10 s")
        .unwrap();
        let stats = || h.cluster.store_stats().get().expect("a server runs");
        let stats = if single_pass {
            stats()
        } else {
            // The keys watch follows the first read (through the client).
            eventually(Duration::from_secs(10), || async {
                let s = stats();
                (s.watchers > 0).then_some(s)
            })
            .await
        };
        assert_eq!(
            stats.ranges, 0,
            "single pass {single_pass}: no read through the etcd API"
        );
        assert_eq!(
            stats.watchers > 0,
            !single_pass,
            "single pass {single_pass}: the keys watched in a daemon only"
        );
        h.cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_one_shot_member_ends_with_its_process_unless_its_state_owes_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut lone = host_config("lone", dir.path(), &[]);
    lone.single_pass = true;
    let h = start(lone).await;
    // Written through its own server, readable through the etcd API.
    let revision = h.cluster.put(b"/k", b"v").await.unwrap();
    let c = client(&h.client_url);
    let kv = c.get(b"/k").await.unwrap().expect("the put is there");
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"v"[..], revision)
    );
    let url = h.client_url.clone();
    h.cluster.shutdown_before_exit().await;
    // Nothing to stop for: left serving, to end with the process.
    assert!(
        listening(&url),
        "a lone member with nothing owed is left running"
    );
    assert_eq!(c.get(b"/k").await.unwrap().unwrap().value, b"v");

    // Enough writes for a snapshot at stop: the stop happens, and takes it.
    let mut owing = host_config("owing", dir.path(), &[]);
    owing.single_pass = true;
    let h = start(owing).await;
    for i in 0..300 {
        h.cluster
            .put(format!("/s/{i:03}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    let url = h.client_url.clone();
    h.cluster.shutdown_before_exit().await;
    assert!(!listening(&url), "a member owing a snapshot stops in order");
    assert!(
        dir.path().join("owing").join("snapshot.bin").is_file(),
        "the stop took the snapshot due"
    );
}
