//! Watchers with bounded cost: a client that stops reading holds back at most
//! a few buffers; once it reads again it gets every event it missed, from the
//! key space's history, in order; if that history was compacted meanwhile,
//! etcd's compacted cancel.

use mgmt_store::pb::etcdserverpb::{
    self as pb, watch_client::WatchClient, watch_request::RequestUnion,
};
use tokio_stream::StreamExt;

use crate::common::*;

/// A watch on `prefix` whose responses nobody reads until asked.
async fn stalled_watch(
    h: &mgmt_store::StoreHandle,
    prefix: &[u8],
) -> (
    tonic::Streaming<pb::WatchResponse>,
    tokio::sync::mpsc::Sender<pb::WatchRequest>,
) {
    let mut client = WatchClient::connect(h.client_urls()[0].clone())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut range_end = prefix.to_vec();
    *range_end.last_mut().unwrap() += 1;
    tx.send(pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: prefix.to_vec(),
            range_end,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut stream = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = stream.next().await.unwrap().unwrap();
    assert!(created.created);
    (stream, tx)
}

/// 4 000 puts of 1 KiB: far more than the stream's buffers and HTTP/2's
/// window hold.
async fn flood(h: &mgmt_store::StoreHandle) -> Vec<i64> {
    let value = vec![b'v'; 1024];
    let mut revisions = Vec::new();
    for i in 0..4000 {
        revisions.push(h.put(format!("/w/{i}").as_bytes(), &value).await.unwrap());
    }
    revisions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stalls_gets_every_event_from_history_once_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("w1", dir.path()).await;
    let (mut stream, _keep) = stalled_watch(&h, b"/w/").await;
    let revisions = flood(&h).await;
    let mut seen = Vec::new();
    while seen.len() < revisions.len() {
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        assert!(!resp.canceled, "{}", resp.cancel_reason);
        seen.extend(
            resp.events
                .iter()
                .map(|e| e.kv.as_ref().unwrap().mod_revision),
        );
    }
    assert_eq!(seen, revisions, "events missing, repeated or out of order");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_whose_history_was_compacted_is_canceled_as_etcd_does() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("w2", dir.path()).await;
    let (mut stream, _keep) = stalled_watch(&h, b"/w/").await;
    let revisions = flood(&h).await;
    let last = *revisions.last().unwrap();
    let mut kv = pb::kv_client::KvClient::connect(h.client_urls()[0].clone())
        .await
        .unwrap();
    kv.compact(pb::CompactionRequest {
        revision: last,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut canceled = None;
    while canceled.is_none() {
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("the watch ends")
            .unwrap()
            .unwrap();
        if resp.canceled {
            canceled = Some(resp);
        }
    }
    let c = canceled.unwrap();
    assert_eq!(c.compact_revision, last);
    assert_eq!(
        c.cancel_reason,
        "etcdserver: mvcc: required revision has been compacted"
    );
    h.shutdown().await;
}
