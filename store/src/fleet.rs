//! Deploys and the fleet's status in the store, as agents and `mgmt deploy`
//! / `mgmt status` see them (keys and values: `mgmt_core::deploy` and
//! `mgmt_core::fleet`). Works against this store and a real etcd alike.

use std::time::Duration;

use mgmt_core::deploy::{self, Deploy, Draft};
use mgmt_core::fleet::{self, HostStatus};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::client::{
    ClientError, EtcdClient, TxnRequest, WatchEvent, decode_each, prefix_end, txn,
};
use crate::cluster::Cluster;
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb::event::EventType;

/// Why a deploy was not written.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Another deploy took the id first: read again and retry.
    #[error(
        "deploy {0} was written by someone else first; nothing was deployed: run the command again"
    )]
    Conflict(u64),
    #[error("{0}")]
    Store(#[from] ClientError),
}

/// Every stored deploy, oldest first; one whose key or value does not parse
/// is skipped with a warning naming it.
pub async fn list(client: &EtcdClient) -> Result<(i64, Vec<Deploy>), ClientError> {
    let (rev, kvs) = client.get_prefix(deploy::PREFIX.as_bytes()).await?;
    Ok((rev, decode_each(kvs, "deploys", Deploy::decode)))
}

/// The newest deploy that parses, read alone (the keys sort as the ids),
/// and the revision of the read.
pub async fn newest(client: &EtcdClient) -> Result<(i64, Option<Deploy>), ClientError> {
    let prefix = deploy::PREFIX.as_bytes();
    let req = pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: pb::range_request::SortOrder::Descend as i32,
        sort_target: pb::range_request::SortTarget::Key as i32,
        ..Default::default()
    };
    let r = client.range(req).await?;
    let rev = r.header.map_or(0, |h| h.revision);
    let Some(kv) = r.kvs.into_iter().next() else {
        return Ok((rev, None));
    };
    match Deploy::decode(&String::from_utf8_lossy(&kv.key), &kv.value) {
        Ok(d) => Ok((rev, Some(d))),
        Err(e) => {
            // Rare (written by hand): fall back to reading them all.
            warn!("deploys: skipped: {e}");
            let (rev, all) = list(client).await?;
            Ok((rev, all.into_iter().next_back()))
        }
    }
}

/// Writes `draft` as the next deploy, in one txn that requires the id to be
/// free and the previous one present, deleting what falls out of the
/// newest [`deploy::KEEP`].
pub async fn write(client: &EtcdClient, draft: Draft) -> Result<Deploy, DeployError> {
    let prefix = deploy::PREFIX.as_bytes();
    let ids_only = pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        keys_only: true,
        ..Default::default()
    };
    let kvs = client.range(ids_only).await?.kvs;
    let ids: Vec<u64> = kvs
        .iter()
        .filter_map(|kv| deploy::id_of(&String::from_utf8_lossy(&kv.key)).ok())
        .collect();
    let w = deploy::plan(&ids, draft);
    let mut compare = vec![txn::absent(w.key.as_bytes())];
    if let Some(prev) = &w.previous {
        compare.push(txn::present(prev.as_bytes()));
    }
    let mut success = vec![txn::put(w.key.as_bytes(), w.value.as_bytes(), 0)];
    success.extend(w.delete.iter().map(|k| txn::delete(k.as_bytes())));
    let r = client
        .txn(TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        })
        .await?;
    if r.succeeded {
        return Ok(w.deploy);
    }
    // A retry of a txn that had landed fails its compare: ours is there.
    let ours = client
        .get(w.key.as_bytes())
        .await?
        .is_some_and(|kv| kv.value == w.value.as_bytes());
    if ours {
        Ok(w.deploy)
    } else {
        Err(DeployError::Conflict(w.deploy.id))
    }
}

/// Keeps `newest` at the newest deploy in the store, never going back to an
/// older id (a host never does by itself): a watch on the prefix, no
/// polling. Returns once every receiver is gone.
pub async fn follow(client: EtcdClient, newest_tx: watch::Sender<Option<Deploy>>) {
    loop {
        let rev = match newest(&client).await {
            Ok((rev, found)) => {
                if let Some(d) = found {
                    newest_tx.send_if_modified(|cur| {
                        let forward = deploy::newer(cur.as_ref().map(|c| c.id), d.id);
                        if forward {
                            *cur = Some(d);
                        }
                        forward
                    });
                }
                rev
            }
            Err(e) => {
                warn!("deploys: cannot read {}: {e}; trying again", deploy::PREFIX);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = newest_tx.closed() => return,
                }
                continue;
            }
        };
        let mut watch = client.watch_prefix(deploy::PREFIX.as_bytes(), rev + 1);
        let next = tokio::select! {
            n = watch.next() => n,
            () = newest_tx.closed() => return,
        };
        match next {
            Some(WatchEvent::Events(_)) | Some(WatchEvent::Resync) => {}
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Every host's status and which hosts are alive, in one read of each
/// prefix; a value that does not parse is skipped with a warning.
pub async fn read_status(
    client: &EtcdClient,
) -> Result<(i64, Vec<HostStatus>, Vec<String>), ClientError> {
    let (rev, kvs) = client.get_prefix(fleet::STATUS_PREFIX.as_bytes()).await?;
    let statuses = decode_each(kvs, "status", HostStatus::decode);
    let (_, kvs) = client.get_prefix(fleet::ALIVE_PREFIX.as_bytes()).await?;
    let alive = kvs
        .iter()
        .filter_map(|kv| {
            fleet::host_of(fleet::ALIVE_PREFIX, &String::from_utf8_lossy(&kv.key))
                .ok()
                .map(str::to_string)
        })
        .collect();
    Ok((rev, statuses, alive))
}

/// The lease of a host's `alive` key: gone this long after the host stops.
pub const ALIVE_TTL_S: i64 = 10;

/// The least time between two writes of a host's status: a burst of
/// CheckApplies is one write, not one per resource.
pub const STATUS_EVERY: Duration = Duration::from_millis(100);

/// The one status a run that is over without a lease writes.
async fn write_last_status(
    client: &EtcdClient,
    status_key: &str,
    status: &watch::Receiver<HostStatus>,
    now: &impl Fn() -> String,
) {
    let value = stamped(&status.borrow(), now);
    if let Err(e) = client.put(status_key.as_bytes(), value.as_bytes(), 0).await {
        warn!("status: cannot write {status_key}: {e}");
    }
}

/// The status of a run that is over and never marked its host alive (a
/// one-shot run): one write, through this host's own server when it runs
/// one ([`Cluster::put`]).
pub async fn write_final_status(cluster: &Cluster, status: &HostStatus, now: impl Fn() -> String) {
    let status_key = fleet::status_key(&status.host);
    let value = stamped(status, &now);
    if let Err(e) = cluster.put(status_key.as_bytes(), value.as_bytes()).await {
        warn!("status: cannot write {status_key}: {e}");
    }
}

/// Publishes this host's status whenever `status` changes (the latest value
/// only, at most every [`STATUS_EVERY`]: a burst is one write), and holds its `alive` key on a lease kept
/// alive every third of [`ALIVE_TTL_S`]. When another host's `alive` key
/// goes, marks its status unreachable (one txn, so of every agent that saw
/// it one writes). Returns once `status`'s sender is gone.
pub async fn publish_status(
    client: EtcdClient,
    host: String,
    mut status: watch::Receiver<HostStatus>,
    now: impl Fn() -> String + Send + 'static,
) {
    let alive_key = fleet::alive_key(&host);
    let status_key = fleet::status_key(&host);
    // A run that ended before this host was ever marked alive (a one-shot
    // run, its store still starting) has only its last status to say: one
    // write, not a lease granted to be revoked at once, nor a watch.
    if status.has_changed().is_err() {
        return write_last_status(&client, &status_key, &status, &now).await;
    }
    let mut lease: Option<i64> = None;
    // The last status written, as built (before its `updated` stamp).
    let mut written: Option<HostStatus> = None;
    let mut alive_watch = Some(client.watch_prefix(fleet::ALIVE_PREFIX.as_bytes(), 0));
    let keep_alive = Duration::from_secs((ALIVE_TTL_S / 3) as u64);
    // Its own deadline: a host whose status changes all the time still
    // keeps its lease.
    let mut next_keep_alive = tokio::time::Instant::now() + keep_alive;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        // The run ended while this host was still not marked alive (its
        // lease refused): its last status, as above.
        if lease.is_none() && status.has_changed().is_err() {
            return write_last_status(&client, &status_key, &status, &now).await;
        }
        // The lease first: a status is only written by a host known alive.
        if lease.is_none() {
            match grant_alive(&client, &alive_key, &host).await {
                Ok(id) => {
                    lease = Some(id);
                    // Written again: another agent may have marked it
                    // unreachable while the lease was gone.
                    written = None;
                }
                Err(e) => {
                    warn!("status: cannot hold {alive_key}: {e}; trying again");
                    retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
        let current = status.borrow_and_update().clone();
        if lease.is_some() && written.as_ref() != Some(&current) {
            let value = stamped(&current, &now);
            match client.put(status_key.as_bytes(), value.as_bytes(), 0).await {
                Ok(_) => written = Some(current),
                Err(e) => {
                    warn!("status: cannot write {status_key}: {e}; trying again");
                    retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
        let wake = retry_at
            .take()
            .unwrap_or(next_keep_alive)
            .min(next_keep_alive);
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    // Leaving on purpose: the last status is written, then
                    // the alive key goes at once.
                    let current = status.borrow().clone();
                    if let Some(id) = lease {
                        if written.as_ref() != Some(&current) {
                            let value = stamped(&current, &now);
                            let _ = client.put(status_key.as_bytes(), value.as_bytes(), 0).await;
                        }
                        let _ = client.lease_revoke(id).await;
                    }
                    return;
                }
                // Let the burst end: what is written is the latest. The run's
                // end ends the wait (a one-shot run does not linger for it).
                let settled = tokio::time::Instant::now() + STATUS_EVERY;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(settled) => break,
                        changed = status.changed() => if changed.is_err() { break },
                    }
                }
            }
            ev = crate::cluster::next_event(&mut alive_watch) => {
                if ev.is_none() {
                    // The watch task ended (it does not on errors): others'
                    // departures go unmarked, the rest goes on.
                    alive_watch = None;
                }
                if let Some(WatchEvent::Events(events)) = ev {
                    for e in events {
                        let gone = e.r#type == EventType::Delete as i32;
                        let key = e.kv.map(|kv| String::from_utf8_lossy(&kv.key).into_owned());
                        // On a task of its own: many hosts going at once
                        // must not hold up this host's keep-alive.
                        if let (true, Some(key)) = (gone, key)
                            && let Ok(h) = fleet::host_of(fleet::ALIVE_PREFIX, &key)
                            && h != host
                        {
                            let (client, h, since) = (client.clone(), h.to_string(), now());
                            tokio::spawn(async move {
                                if let Err(e) = mark_unreachable(&client, &h, since).await {
                                    warn!("status: cannot mark {h} unreachable: {e}");
                                }
                            });
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() < next_keep_alive {
                    continue;
                }
                next_keep_alive = tokio::time::Instant::now() + keep_alive;
                if let Some(id) = lease {
                    match client.lease_keep_alive_once(id).await {
                        Ok(ttl) if ttl > 0 => {}
                        Ok(_) => {
                            info!("status: the lease of {alive_key} expired; taking a new one");
                            lease = None;
                        }
                        Err(e) => warn!("status: cannot keep {alive_key} alive: {e}"),
                    }
                }
            }
        }
    }
}

/// `status` as written: stamped with the time of the write.
fn stamped(status: &HostStatus, now: &impl Fn() -> String) -> String {
    HostStatus {
        updated: now(),
        ..status.clone()
    }
    .encode()
}

async fn grant_alive(client: &EtcdClient, key: &str, host: &str) -> Result<i64, ClientError> {
    let id = client.lease_grant(ALIVE_TTL_S).await?;
    client.put(key.as_bytes(), host.as_bytes(), id).await?;
    Ok(id)
}

/// Sets `unreachable_since` in `host`'s status if its `alive` key is still
/// gone and nobody changed the status since it was read.
async fn mark_unreachable(client: &EtcdClient, host: &str, since: String) -> Result<(), String> {
    let key = fleet::status_key(host);
    let Some(kv) = client
        .get(key.as_bytes())
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let mut s = HostStatus::decode(&key, &kv.value)?;
    if s.unreachable_since.is_some() {
        return Ok(());
    }
    s.unreachable_since = Some(since);
    let unchanged = txn::modified_at(key.as_bytes(), kv.mod_revision);
    let alive = fleet::alive_key(host);
    client
        .txn(TxnRequest {
            compare: vec![unchanged, txn::absent(alive.as_bytes())],
            success: vec![txn::put(key.as_bytes(), s.encode().as_bytes(), 0)],
            failure: Vec::new(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
