//! Deploys through the client, against our store and a real etcd 3.4: ids
//! only grow, of racing writers one wins each id, the newest 50 are kept,
//! and a follower sees every newer deploy and never an older one.

use std::time::Duration;

use mgmt_core::deploy::{Draft, KEEP};
use mgmt_store::client::{ClientConfig, EtcdClient};
use mgmt_store::fleet::{self, DeployError};

use crate::common::*;

const T: Duration = Duration::from_secs(20);

fn draft(text: &str) -> Draft {
    Draft {
        time: "2026-12-06T08:00:00Z".into(),
        author: "test".into(),
        file: "t.yaml".into(),
        text: text.into(),
    }
}

async fn deploys(c: &EtcdClient) {
    eventually(T, || async { c.get(b"/ready").await.ok().map(|_| ()) }).await;
    let (newest_tx, mut newest) = tokio::sync::watch::channel(None);
    let follower = tokio::spawn(fleet::follow(c.clone(), newest_tx));

    // Two writers at once, many times: each id goes to exactly one of them.
    let mut won = Vec::new();
    for round in 0..10 {
        let (a, b) = tokio::join!(
            fleet::write(c, draft(&format!("graph: a{round}\n"))),
            fleet::write(c, draft(&format!("graph: b{round}\n")))
        );
        for r in [a, b] {
            match r {
                Ok(d) => won.push(d.id),
                Err(DeployError::Conflict(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    let mut unique = won.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), won.len(), "an id given twice: {won:?}");
    assert!(won.len() >= 10, "{won:?}");

    // The follower reaches the newest, having only moved forward.
    let newest_id = *unique.last().unwrap();
    let mut seen = Vec::new();
    let reached = tokio::time::timeout(T, async {
        loop {
            if let Some(d) = newest.borrow_and_update().as_ref() {
                seen.push(d.id);
                if d.id == newest_id {
                    return;
                }
            }
            newest.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "the follower saw {seen:?}, not {newest_id}"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // Past 50, the oldest go in the same txn.
    for i in 0..(KEEP + 5) {
        fleet::write(c, draft(&format!("graph: k{i}\n")))
            .await
            .unwrap();
    }
    let (_, all) = fleet::list(c).await.unwrap();
    assert_eq!(all.len(), KEEP);
    let ids: Vec<u64> = all.iter().map(|d| d.id).collect();
    let last = newest_id + KEEP as u64 + 5;
    assert_eq!(ids, ((last - KEEP as u64 + 1)..=last).collect::<Vec<_>>());
    assert_eq!(fleet::newest(c).await.unwrap().1.unwrap().id, last);
    follower.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_against_our_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_single("d1", dir.path()).await;
    let c = EtcdClient::new(ClientConfig::new(s.client_urls().to_vec())).unwrap();
    deploys(&c).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_against_real_etcd() {
    init_tracing();
    let etcd = RealEtcd::start();
    let c = EtcdClient::new(ClientConfig::new(etcd.client_urls.clone())).unwrap();
    deploys(&c).await;
}
