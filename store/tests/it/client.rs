//! The etcd client against our store and against a real etcd 3.4.

use std::time::Duration;

use mgmt_store::Store;
use mgmt_store::client::{ClientConfig, EtcdClient, WatchEvent, txn};

use crate::common::*;

const T: Duration = Duration::from_secs(20);

fn client(endpoints: Vec<String>) -> EtcdClient {
    EtcdClient::new(ClientConfig::new(endpoints)).unwrap()
}

/// Waits (bounded) until the server answers.
async fn ready(c: &EtcdClient) {
    eventually(T, || async { c.get(b"/ready").await.ok().map(|_| ()) }).await;
}

async fn next_event(w: &mut mgmt_store::client::Watch) -> WatchEvent {
    tokio::time::timeout(T, w.next())
        .await
        .expect("watch delivers in time")
        .expect("watch open")
}

/// Everything the clustering driver uses, in one pass.
async fn exercise(c: &EtcdClient) {
    ready(c).await;
    // Watch from the next revision: the watch stream connects in the background,
    // and "from now" (0) could start after the put below.
    let (rev, _) = c.get_prefix(b"/t/").await.unwrap();
    let mut w = c.watch_prefix(b"/t/", rev + 1);
    c.put(b"/t/a", b"1", 0).await.unwrap();
    assert_eq!(c.get(b"/t/a").await.unwrap().unwrap().value, b"1");
    match next_event(&mut w).await {
        WatchEvent::Events(evs) => assert_eq!(evs[0].kv.as_ref().unwrap().key, b"/t/a"),
        other => panic!("{other:?}"),
    }
    // Conditional txn: create-if-absent succeeds once.
    let req = || mgmt_store::client::TxnRequest {
        compare: vec![txn::absent(b"/t/n")],
        success: vec![txn::put(b"/t/n", b"x", 0)],
        failure: vec![],
    };
    assert!(c.txn(req()).await.unwrap().succeeded);
    assert!(!c.txn(req()).await.unwrap().succeeded);
    // Lease: keys bound to it go when it is revoked.
    let lease = c.lease_grant(30).await.unwrap();
    c.put(b"/t/leased", b"v", lease).await.unwrap();
    assert!(c.lease_keep_alive_once(lease).await.unwrap() > 0);
    c.lease_revoke(lease).await.unwrap();
    assert!(c.get(b"/t/leased").await.unwrap().is_none());
    assert!(c.lease_keep_alive_once(lease).await.unwrap() <= 0);
    let (_, kvs) = c.get_prefix(b"/t/").await.unwrap();
    assert_eq!(kvs.len(), 2);
    assert_eq!(c.delete(b"/t/", true).await.unwrap(), 2);
    assert_eq!(c.member_list().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_against_our_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_single("c1", dir.path()).await;
    // A dead endpoint first: the client fails over to the live one.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let c = client(vec![dead, s.client_urls()[0].clone()]);
    exercise(&c).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_against_real_etcd() {
    init_tracing();
    let etcd = RealEtcd::start();
    let c = client(etcd.client_urls.clone());
    exercise(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("w1", dir.path());
    let port = free_port();
    cfg.client_urls = vec![format!("http://127.0.0.1:{port}")];
    let s = mgmt_store::Store::start_single(cfg.clone()).await.unwrap();
    s.wait_for_leader(T).await.unwrap();
    let c = client(vec![cfg.client_urls[0].clone()]);
    ready(&c).await;
    let (rev, _) = c.get_prefix(b"/w/").await.unwrap();
    let mut w = c.watch_prefix(b"/w/", rev + 1);
    c.put(b"/w/1", b"a", 0).await.unwrap();
    assert!(matches!(next_event(&mut w).await, WatchEvent::Events(_)));
    s.shutdown().await;
    // Same URLs, same state: the watch reconnects and resumes.
    let s = mgmt_store::Store::start_single(cfg).await.unwrap();
    s.wait_for_leader(T).await.unwrap();
    c.put(b"/w/2", b"b", 0).await.unwrap();
    match next_event(&mut w).await {
        WatchEvent::Events(evs) => assert_eq!(evs[0].kv.as_ref().unwrap().key, b"/w/2"),
        other => panic!("{other:?}"),
    }
    s.shutdown().await;
}

/// A stopping store does not wait for connections that have nothing in
/// flight: with a client's idle connection and its watch stream open,
/// shutdown ends well inside its grace period (it used to wait all of it),
/// and the same URLs serve again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_idle_connections_and_streams_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("h1", dir.path()).await;
    let c = client(h.client_urls().to_vec());
    ready(&c).await;
    let rev = c.put(b"/k", b"v", 0).await.unwrap();
    let mut w = c.watch_prefix(b"/", rev + 1);
    c.put(b"/k", b"w", 0).await.unwrap();
    next_event(&mut w).await;
    let started = std::time::Instant::now();
    h.shutdown().await;
    let took = started.elapsed();
    assert!(
        took < mgmt_store::SHUTDOWN_GRACE,
        "shutdown waited {took:?} for idle connections"
    );
    let mut again = config("h1", dir.path());
    again.client_urls = h.client_urls().to_vec();
    again.peer_urls = h.peer_urls().to_vec();
    let again = Store::start_single(again)
        .await
        .expect("the same URLs serve again");
    again.shutdown().await;
}
