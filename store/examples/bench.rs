//! Put/range throughput and latency of the embedded store next to a real etcd 3.4
//! (`/usr/bin/etcd` from Debian's etcd-server), both on loopback, driven by the same
//! gRPC client. Not a test: run `cargo run --release -p mgmt-store --example bench`.
//!
//! Optional args: `OPS CONCURRENCY` (default 2000 16).

use std::time::{Duration, Instant};

use mgmt_store::pb::etcdserverpb::{PutRequest, RangeRequest, kv_client::KvClient};
use mgmt_store::{Store, StoreConfig};
use tonic::transport::Channel;

struct Stats {
    ops_per_s: f64,
    p50_us: u128,
    p99_us: u128,
}

async fn run(client: KvClient<Channel>, ops: usize, conc: usize, put: bool) -> Stats {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..ops).step_by(conc) {
                let key = format!("/bench/{:06}", i % 1000).into_bytes();
                let t = Instant::now();
                if put {
                    c.put(PutRequest {
                        key,
                        value: vec![b'x'; 128],
                        ..Default::default()
                    })
                    .await
                    .expect("put");
                } else {
                    c.range(RangeRequest {
                        key,
                        ..Default::default()
                    })
                    .await
                    .expect("range");
                }
                lat.push(t.elapsed().as_micros());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    Stats {
        ops_per_s: ops as f64 / secs,
        p50_us: lat[lat.len() / 2],
        p99_us: lat[lat.len() * 99 / 100],
    }
}

async fn bench(name: &str, endpoint: String, ops: usize, conc: usize) {
    let ch = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let client = KvClient::new(ch);
    for (what, put) in [("put", true), ("range", false)] {
        let s = run(client.clone(), ops, conc, put).await;
        println!(
            "{name:<14} {what:<6} {:>9.0} ops/s  p50 {:>6} us  p99 {:>6} us",
            s.ops_per_s, s.p50_us, s.p99_us
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ops = args.first().copied().unwrap_or(2000);
    let conc = args.get(1).copied().unwrap_or(16);
    println!("{ops} ops per phase, {conc} concurrent clients, 128-byte values");

    // One node, then three, of each server; the client talks to the leader.
    let dir = tempfile::tempdir().unwrap();
    for members in [1usize, 3] {
        let stores = start_stores(dir.path(), members).await;
        bench(
            &format!("mgmt-store x{members}"),
            stores[0].client_urls()[0].clone(),
            ops,
            conc,
        )
        .await;
        for s in stores {
            s.shutdown().await;
        }
        let (etcd, url) = start_etcds(members).await;
        bench(&format!("etcd 3.4 x{members}"), url, ops, conc).await;
        drop(etcd);
    }
}

/// `members` stores on loopback, formed through the membership API; the first leads.
async fn start_stores(prefix: &std::path::Path, members: usize) -> Vec<mgmt_store::StoreHandle> {
    let config = |name: &str| {
        let mut c = StoreConfig::new(name, prefix.join(format!("{members}")));
        c.client_urls = vec!["http://127.0.0.1:0".into()];
        c.peer_urls = vec!["http://127.0.0.1:0".into()];
        c
    };
    let first = Store::start_single(config("bench1")).await.expect("store");
    first
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let mut stores = vec![first];
    for i in 2..=members {
        let name = format!("bench{i}");
        let s = Store::start_join(config(&name)).await.expect("store");
        stores[0]
            .add_learner(s.member_spec(&name))
            .await
            .expect("add learner");
        stores[0].promote(s.id()).await.expect("promote");
        stores.push(s);
    }
    stores
}

/// `members` real etcd servers on loopback; returns them and one client URL
/// once the cluster answers a write (a quorum has formed).
async fn start_etcds(members: usize) -> (mgmt_store::testing::RealEtcd, String) {
    let etcd = mgmt_store::testing::RealEtcd::start_cluster(members);
    let url = etcd.client_urls[0].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = match tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
        {
            Ok(ch) => KvClient::new(ch)
                .put(PutRequest {
                    key: b"ready".to_vec(),
                    value: b"1".to_vec(),
                    ..Default::default()
                })
                .await
                .is_ok(),
            Err(_) => false,
        };
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (etcd, url)
}
