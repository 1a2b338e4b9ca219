//! Exported resources in the store, as every host's agent sees them: publish
//! this host's set, and follow every host's with a watch (keys and values:
//! `mgmt_core::export`). Works against this store and a real etcd alike.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mgmt_core::Resource;
use mgmt_core::export::{self, Exported};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::client::{ClientError, EtcdClient, TxnRequest, WatchEvent, txn};

/// How long changes under `/_mgmt/exported/` are gathered, from the first
/// of a burst, before the view is handed on: a host's whole transaction,
/// and a fleet's exports arriving together, make one poke.
const SETTLE: Duration = Duration::from_millis(50);

/// Every host's exports, as last read from the store.
pub type Shared = Arc<Mutex<Vec<Exported>>>;

/// Publishes `exported` as `host`'s whole set, in one transaction: new and
/// changed ones written, dropped ones withdrawn (keys only, so etcd's rule
/// against a put inside a deleted range in one txn never applies).
pub async fn publish(
    client: &EtcdClient,
    host: &str,
    exported: &[Resource],
) -> Result<(), ClientError> {
    let want: BTreeMap<String, String> = exported
        .iter()
        .map(|r| (export::key(host, r), export::encode(r)))
        .collect();
    let (_, have) = client
        .get_prefix(export::host_prefix(host).as_bytes())
        .await?;
    let mut ops = Vec::new();
    for kv in &have {
        if !want.contains_key(String::from_utf8_lossy(&kv.key).as_ref()) {
            ops.push(txn::delete(&kv.key));
        }
    }
    for (key, value) in &want {
        let same = have
            .iter()
            .any(|kv| kv.key == key.as_bytes() && kv.value == value.as_bytes());
        if !same {
            ops.push(txn::put(key.as_bytes(), value.as_bytes(), 0));
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let n = ops.len();
    client
        .txn(TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        })
        .await?;
    info!(
        "exports: {} of this host's resources published, {n} keys changed",
        want.len()
    );
    Ok(())
}

/// Reads every export once; a key that does not parse is skipped with a
/// warning naming it.
pub async fn read_all(client: &EtcdClient) -> Result<(i64, Vec<Exported>), ClientError> {
    let (rev, kvs) = client.get_prefix(export::PREFIX.as_bytes()).await?;
    Ok((
        rev,
        crate::client::decode_each(kvs, "exports", export::decode),
    ))
}

/// Keeps `shared` equal to every host's exports, and pokes `changed` when
/// they change: one read, then the watch's events applied to that view
/// (read again only if the watch may have missed some), no polling. Events
/// are gathered for [`SETTLE`] after the first of a burst, so a fleet's
/// exports arriving together make a few pokes, not one per host. Returns
/// when `changed` is closed.
pub async fn follow(client: EtcdClient, shared: Shared, changed: mpsc::UnboundedSender<()>) {
    let set = |view: &BTreeMap<String, Exported>| {
        let all: Vec<Exported> = view.values().cloned().collect();
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        let differs = *s != all;
        *s = all;
        differs
    };
    loop {
        let (rev, all) = match read_all(&client).await {
            Ok(read) => read,
            Err(e) => {
                warn!("exports: cannot read {}: {e}; trying again", export::PREFIX);
                tokio::time::sleep(Duration::from_secs(1)).await;
                if changed.is_closed() {
                    return;
                }
                continue;
            }
        };
        let mut view: BTreeMap<String, Exported> = all
            .into_iter()
            .map(|e| (export::key_of(&e.host, e.kind, &e.name), e))
            .collect();
        if set(&view) && changed.send(()).is_err() {
            return;
        }
        let mut watch = client.watch_prefix(export::PREFIX.as_bytes(), rev + 1);
        // Until the watch may have missed something: then read again.
        'watching: loop {
            let Some(WatchEvent::Events(first)) = watch.next().await else {
                tokio::time::sleep(SETTLE).await;
                break 'watching;
            };
            apply(&mut view, first);
            let until = tokio::time::Instant::now() + SETTLE;
            while let Ok(more) = tokio::time::timeout_at(until, watch.next()).await {
                match more {
                    Some(WatchEvent::Events(events)) => apply(&mut view, events),
                    _ => break 'watching,
                }
            }
            if set(&view) && changed.send(()).is_err() {
                return;
            }
        }
        if changed.is_closed() {
            return;
        }
    }
}

/// Applies a watch delivery to `view`: a put decoded (one that does not
/// parse is dropped with a warning, as a read would), a delete removed.
fn apply(view: &mut BTreeMap<String, Exported>, events: Vec<crate::client::Event>) {
    use crate::pb::mvccpb::event::EventType;
    for e in events {
        let Some(kv) = e.kv else { continue };
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        if e.r#type == EventType::Delete as i32 {
            view.remove(&key);
            continue;
        }
        match export::decode(&key, &kv.value) {
            Ok(x) => {
                view.insert(key, x);
            }
            Err(err) => {
                warn!("exports: skipped: {err}");
                view.remove(&key);
            }
        }
    }
}
