//! The embedded store next to a real etcd 3.4 (`/usr/bin/etcd`, Debian's
//! etcd-server), both on loopback, driven by the same tonic client in one run.
//! Not a test: `cargo run --release -p mgmt-store --example bench [PHASE]`,
//! PHASE one of `throughput` (default: all), `memory`, `big`.
//!
//! - throughput: puts and ranges of 128-byte values at 1, 8 and 64
//!   concurrent clients, on 1 and 3 members.
//! - memory: 1 GiB written as 100 KiB values over 100 keys, compacted every
//!   100 puts, with and without a watcher that never reads; the server's RSS
//!   (for mgmt the bench process, which holds the store; for etcd its own).
//! - big: puts and ranges at 0 and at 1 000 000 keys, and the snapshot's size
//!   on disk next to the live data.

use std::time::{Duration, Instant};

/// The allocator `mgmt` runs with, so the store here costs what it costs there.
#[path = "../../cli/src/allocator.rs"]
mod allocator;

use mgmt_store::pb::etcdserverpb::{
    self as pb, PutRequest, RangeRequest, kv_client::KvClient, watch_client::WatchClient,
};
use mgmt_store::{Store, StoreConfig};
use tonic::transport::Channel;

struct Stats {
    ops_per_s: f64,
    p50_us: u128,
    p99_us: u128,
}

async fn run(client: KvClient<Channel>, ops: usize, conc: usize, put: bool, keys: usize) -> Stats {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..ops).step_by(conc) {
                let key = format!("/bench/{:07}", (i * 7919) % keys).into_bytes();
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

async fn connect(endpoint: &str) -> KvClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    KvClient::new(ch)
}

async fn bench(name: &str, endpoint: &str, conc: usize, keys: usize) {
    bench_ops(name, endpoint, conc, keys, (conc * 250).clamp(2000, 8000)).await
}

async fn bench_ops(name: &str, endpoint: &str, conc: usize, keys: usize, ops: usize) {
    let client = connect(endpoint).await;
    for (what, put) in [("put", true), ("range", false)] {
        let s = run(client.clone(), ops, conc, put, keys).await;
        println!(
            "{name:<14} {conc:>3} clients {what:<6} {:>9.0} ops/s  p50 {:>6} us  p99 {:>6} us",
            s.ops_per_s, s.p50_us, s.p99_us
        );
    }
}

fn main() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run_phases());
}

async fn run_phases() {
    let phase = std::env::args().nth(1).unwrap_or_default();
    let all = phase.is_empty();
    if all || phase == "throughput" {
        throughput().await;
    }
    if all || phase == "memory" {
        memory().await;
    }
    if all || phase == "big" {
        big().await;
    }
}

async fn throughput() {
    println!("throughput: 128-byte values over 1000 keys");
    let dir = tempfile::tempdir().unwrap();
    for members in [1usize, 3] {
        let stores = start_stores(dir.path(), members, |_| {}).await;
        let url = stores[0].client_urls()[0].clone();
        for conc in [1, 8, 64] {
            bench(&format!("mgmt-store x{members}"), &url, conc, 1000).await;
        }
        for s in stores {
            s.shutdown().await;
        }
        let (etcd, url) = start_etcds(members).await;
        for conc in [1, 8, 64] {
            bench(&format!("etcd 3.4 x{members}"), &url, conc, 1000).await;
        }
        drop(etcd);
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A watch on everything whose responses are never read.
async fn stalled_watch(
    endpoint: &str,
) -> (
    tonic::Streaming<pb::WatchResponse>,
    tokio::sync::mpsc::Sender<pb::WatchRequest>,
) {
    let mut client = WatchClient::connect(endpoint.to_string()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let stream = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (stream, tx)
}

/// 1 GiB as 100 KiB values over 100 keys from 8 clients, compacted every 100 puts.
async fn write_gib(endpoint: &str) -> Duration {
    const PUTS: usize = 10_486;
    let client = connect(endpoint).await;
    let start = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (mut c, done) = (client.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..PUTS).step_by(8) {
                let r = c
                    .put(PutRequest {
                        key: format!("/m/{:03}", i % 100).into_bytes(),
                        value: vec![b'm'; 100 * 1024],
                        ..Default::default()
                    })
                    .await
                    .expect("put");
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n % 100 == 0 {
                    let revision = r.into_inner().header.unwrap().revision;
                    let _ = c
                        .compact(pb::CompactionRequest {
                            revision,
                            ..Default::default()
                        })
                        .await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

async fn memory() {
    println!("memory: 1 GiB of 100 KiB values over 100 keys, compacted every 100 puts");
    for stalled in [false, true] {
        let label = if stalled {
            "a stalled watcher"
        } else {
            "no watcher"
        };
        let dir = tempfile::tempdir().unwrap();
        let stores = start_stores(dir.path(), 1, |_| {}).await;
        let url = stores[0].client_urls()[0].clone();
        let watch = if stalled {
            Some(stalled_watch(&url).await)
        } else {
            None
        };
        let took = write_gib(&url).await;
        let (rss, peak) = rss_mib(std::process::id());
        println!(
            "mgmt-store  {label:<18} RSS {rss:>5} MiB  peak {peak:>5} MiB  disk {:>5} MiB  {:.1} s",
            dir_bytes(dir.path()) >> 20,
            took.as_secs_f64()
        );
        drop(watch);
        for s in stores {
            s.shutdown().await;
        }

        let (etcd, url) = start_etcds(1).await;
        let watch = if stalled {
            Some(stalled_watch(&url).await)
        } else {
            None
        };
        let took = write_gib(&url).await;
        let (rss, peak) = rss_mib(etcd.pids()[0]);
        println!(
            "etcd 3.4    {label:<18} RSS {rss:>5} MiB  peak {peak:>5} MiB  disk {:>5} MiB  {:.1} s",
            dir_bytes(&etcd.data_dirs()[0]) >> 20,
            took.as_secs_f64()
        );
        drop(watch);
        drop(etcd);
    }
    println!("(mgmt's RSS is the whole bench process, its peak over the earlier phases too)");
}

/// 1 000 000 keys of 128 bytes, as txns of 128 puts from 16 clients.
async fn fill(endpoint: &str, keys: usize) {
    let client = connect(endpoint).await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            for chunk in (w * 128..keys).step_by(16 * 128) {
                let success = (chunk..(chunk + 128).min(keys))
                    .map(|i| pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(PutRequest {
                            key: format!("/bench/{i:07}").into_bytes(),
                            value: vec![b'x'; 128],
                            ..Default::default()
                        })),
                    })
                    .collect();
                c.txn(pb::TxnRequest {
                    success,
                    ..Default::default()
                })
                .await
                .expect("txn");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn big() {
    const KEYS: usize = 1_000_000;
    // Long enough phases (2-3 s) that a snapshot's share shows, and noise does not.
    const BIG_OPS: usize = 60_000;
    println!("big: 64 clients, 128-byte values, at 0 and at {KEYS} keys");
    let dir = tempfile::tempdir().unwrap();
    let no_snapshots = std::env::var("BENCH_NO_SNAPSHOTS").is_ok();
    let stores = start_stores(dir.path(), 1, |c| {
        if no_snapshots {
            c.snapshot_every = u64::MAX / 2;
            c.snapshot_log_bytes = u64::MAX / 2;
        }
    })
    .await;
    let url = stores[0].client_urls()[0].clone();
    bench_ops("mgmt-store 0", &url, 64, KEYS, BIG_OPS).await;
    let t = Instant::now();
    fill(&url, KEYS).await;
    println!(
        "mgmt-store: {KEYS} keys written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    bench_ops("mgmt-store 1M", &url, 64, KEYS, BIG_OPS).await;
    // Again once the fill's last snapshot is written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    bench_ops("mgmt-store 1M+5s", &url, 64, KEYS, BIG_OPS).await;
    // Snapshot on disk next to the live data (keys and values).
    let live = KEYS as u64 * (14 + 128);
    let snap = dir.path().join("1").join("bench1").join("snapshot.bin");
    stores[0].snapshot().await.expect("snapshot");
    let size = std::fs::metadata(&snap).map_or(0, |m| m.len());
    println!(
        "mgmt-store: snapshot {} MiB for {} MiB of keys and values ({:.2}x)",
        size >> 20,
        live >> 20,
        size as f64 / live as f64
    );
    for s in stores {
        s.shutdown().await;
    }
    let (etcd, url) = start_etcds(1).await;
    bench_ops("etcd 3.4 0", &url, 64, KEYS, BIG_OPS).await;
    let t = Instant::now();
    fill(&url, KEYS).await;
    println!(
        "etcd 3.4: {KEYS} keys written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    bench_ops("etcd 3.4 1M", &url, 64, KEYS, BIG_OPS).await;
    // Again once the fill's last snapshot is written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    bench_ops("etcd 3.4 1M+5s", &url, 64, KEYS, BIG_OPS).await;
    drop(etcd);
}

/// `members` stores on loopback, formed through the membership API; the first leads.
async fn start_stores(
    prefix: &std::path::Path,
    members: usize,
    tune: impl Fn(&mut StoreConfig),
) -> Vec<mgmt_store::StoreHandle> {
    let config = |name: &str| {
        let mut c = StoreConfig::new(name, prefix.join(format!("{members}")));
        c.client_urls = vec!["http://127.0.0.1:0".into()];
        c.peer_urls = vec!["http://127.0.0.1:0".into()];
        tune(&mut c);
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
