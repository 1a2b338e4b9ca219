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

use crate::client::{EtcdClient, TxnRequest, WatchEvent, txn};

/// How long a burst of changes under `/_mgmt/exported/` may last before it is
/// read again (one read for a host's whole transaction).
const SETTLE: Duration = Duration::from_millis(20);

/// Every host's exports, as last read from the store.
pub type Shared = Arc<Mutex<Vec<Exported>>>;

/// Publishes `exported` as `host`'s whole set, in one transaction: new and
/// changed ones written, dropped ones withdrawn (keys only, so etcd's rule
/// against a put inside a deleted range in one txn never applies).
pub async fn publish(client: &EtcdClient, host: &str, exported: &[Resource]) -> Result<(), String> {
    let want: BTreeMap<String, String> = exported
        .iter()
        .map(|r| (export::key(host, r), export::encode(r)))
        .collect();
    let (_, have) = client
        .get_prefix(export::host_prefix(host).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
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
        .await
        .map_err(|e| e.to_string())?;
    info!(
        "exports: {} of this host's resources published, {n} keys changed",
        want.len()
    );
    Ok(())
}

/// Reads every export once; a key that does not parse is skipped with a
/// warning naming it.
pub async fn read_all(client: &EtcdClient) -> Result<(i64, Vec<Exported>), String> {
    let (rev, kvs) = client
        .get_prefix(export::PREFIX.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for kv in kvs {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        match export::decode(&key, &kv.value) {
            Ok(e) => out.push(e),
            Err(e) => warn!("exports: skipped: {e}"),
        }
    }
    Ok((rev, out))
}

/// Keeps `shared` equal to every host's exports, and pokes `changed` when
/// they change: a watch on the prefix, no polling. Returns when `changed` is
/// closed.
pub async fn follow(client: EtcdClient, shared: Shared, changed: mpsc::UnboundedSender<()>) {
    loop {
        let rev = match read_all(&client).await {
            Ok((rev, all)) => {
                let differs = {
                    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let differs = *s != all;
                    *s = all;
                    differs
                };
                if differs && changed.send(()).is_err() {
                    return;
                }
                rev
            }
            Err(e) => {
                warn!("exports: cannot read {}: {e}; trying again", export::PREFIX);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut watch = client.watch_prefix(export::PREFIX.as_bytes(), rev + 1);
        // Any change (or a watch that had to start over): read again, after
        // the burst.
        match watch.next().await {
            Some(WatchEvent::Events(_)) | Some(WatchEvent::Resync) => {
                tokio::time::sleep(SETTLE).await;
            }
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
        if changed.is_closed() {
            return;
        }
    }
}
