//! Crash safety: acknowledged writes survive `kill -9`; a torn log tail is cut.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const CHILD_ENV: &str = "MGMT_STORE_TEST_CHILD_PREFIX";

/// Not a test of its own: when the parent test re-runs this binary with
/// `MGMT_STORE_TEST_CHILD_PREFIX` set, this runs a store until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_store_process() {
    let Ok(prefix) = std::env::var(CHILD_ENV) else {
        return;
    };
    let h = start_single("crashy", std::path::Path::new(&prefix)).await;
    println!("READY {}", endpoint(&h));
    // Serve until the parent kills this process.
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "persistence::child_store_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, dir.path());
    let mut child = LineChild::spawn(cmd);
    let (_, ready) = child.wait_line(Duration::from_secs(60), |l| l.contains("READY "));
    // The test harness may print its own text before ours on the same line.
    let ep = ready.split("READY ").nth(1).unwrap().trim().to_string();
    for i in 0..20 {
        let out = etcdctl(
            &ep,
            &["put", &format!("/crash/{i:02}"), &format!("v{i}")],
            None,
        )
        .await;
        assert!(out.ok, "{}", out.stderr);
    }
    // kill -9: no shutdown path runs.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.child.wait();

    let h = start_single("crashy", dir.path()).await;
    let kvs = h.get_prefix(b"/crash/").await.unwrap();
    assert_eq!(kvs.len(), 20);
    for (i, kv) in kvs.iter().enumerate() {
        assert_eq!(kv.value, format!("v{i}").as_bytes());
    }
    // And the restarted store keeps working.
    h.put(b"/crash/after", b"ok").await.unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_log_tail_is_reported_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("torn", dir.path()).await;
    for i in 0..5 {
        h.put(format!("/t/{i}").as_bytes(), b"v").await.unwrap();
    }
    h.shutdown().await;
    drop(h);
    let log = dir.path().join("torn").join("raft.log");
    let good_len = std::fs::metadata(&log).unwrap().len();
    // A torn write: a frame header promising more bytes than follow.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"'])
        .unwrap();
    drop(f);

    let h = start_single("torn", dir.path()).await;
    let torn = h.torn_tail().expect("torn tail reported").clone();
    assert_eq!(torn.offset, good_len);
    assert_eq!(torn.dropped_bytes, 10);
    assert_eq!(h.get_prefix(b"/t/").await.unwrap().len(), 5);
    h.put(b"/t/new", b"v").await.unwrap();
    h.shutdown().await;
    drop(h);

    // A flipped byte inside the last frame: CRC mismatch, that entry is dropped,
    // earlier ones stay.
    let len = std::fs::metadata(&log).unwrap().len();
    let mut bytes = std::fs::read(&log).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55;
    std::fs::write(&log, &bytes).unwrap();
    let h = start_single("torn", dir.path()).await;
    let torn = h.torn_tail().expect("corrupt frame reported");
    assert_eq!(torn.reason, "CRC mismatch");
    assert!(torn.offset < len);
    let keys: Vec<Vec<u8>> = h
        .get_prefix(b"/t/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    for i in 0..5 {
        assert!(keys.contains(&format!("/t/{i}").into_bytes()), "{keys:?}");
    }
    h.shutdown().await;
    drop(h);

    // A flipped byte in the middle, with good frames after it: acknowledged
    // entries would be lost by cutting there, so the store refuses to start.
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[20] ^= 0x55;
    std::fs::write(&log, &bytes).unwrap();
    let mut c = config("torn", dir.path());
    c.client_urls = vec!["http://127.0.0.1:0".into()];
    let err = match mgmt_store::Store::start_single(c).await {
        Ok(_) => panic!("a log corrupt in the middle must not be served"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("corrupt frame at offset") && err.contains("valid frames after it"),
        "{err}"
    );
}

/// A data directory keeps the member ID its state was created with: the ID
/// asked for applies only to fresh state (a restart never changes identity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_keeps_the_member_id_it_was_created_with() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("h1", dir.path());
    c.member_id = Some(42);
    let h = mgmt_store::Store::start_single(c.clone()).await.unwrap();
    assert_eq!(h.id(), 42);
    h.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    h.put(b"/k", b"v").await.unwrap();
    h.shutdown().await;
    drop(h);
    assert_eq!(
        mgmt_store::stored_member_id(&c.data_dir().unwrap()),
        Some(42)
    );

    c.member_id = Some(7);
    let h = mgmt_store::Store::start_single(c.clone()).await.unwrap();
    assert_eq!(h.id(), 42, "restart keeps the stored ID");
    h.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    assert_eq!(h.get(b"/k").await.unwrap().unwrap().value, b"v");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stopping_after_many_writes_restarts_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("stops", dir.path()).await;
    for i in 0..300 {
        h.put(format!("/s/{i:03}").as_bytes(), format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    h.shutdown().await;
    drop(h);
    // The stop took a snapshot: a restart loads it instead of applying the
    // 300 entries again.
    let snapshot = dir.path().join("stops").join("snapshot.bin");
    let taken = std::fs::read(&snapshot).expect("a snapshot taken at the stop");
    let h = start_single("stops", dir.path()).await;
    let kvs = h.get_prefix(b"/s/").await.unwrap();
    assert_eq!(kvs.len(), 300);
    assert_eq!(kvs[299].value, b"v299");
    h.put(b"/s/after", b"ok").await.unwrap();
    h.shutdown().await;
    drop(h);
    // A few writes since are no reason for another.
    assert_eq!(std::fs::read(&snapshot).unwrap(), taken);
    let h = start_single("stops", dir.path()).await;
    assert_eq!(h.get_prefix(b"/s/").await.unwrap().len(), 301);
    h.shutdown().await;
}
