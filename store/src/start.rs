//! Starting a member, as a list of steps ([`Bound::start`]): bind the
//! listeners first (a port in use fails before anything else runs), open the
//! state on disk, start raft, spawn the member's tasks and servers, then form
//! the cluster or resume from the state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mgmt_core::kv::Command;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{GRPC_OVERHEAD_BYTES, StoreConfig};
use crate::conn::Incoming;
use crate::data_dir::{MEMBER_ID_FILE, stored_member_id};
use crate::error::StoreError;
use crate::handle::StoreHandle;
use crate::in_flight::{CountInFlight, InFlight};
use crate::log_store::{LogStore, TornTail};
use crate::net::{Env, socket_addr};
use crate::network::{Channels, Network};
use crate::node::{self, Node};
use crate::pb::etcdserverpb as epb;
use crate::peer_service::PeerService;
use crate::restore::{RESTORE_FILE, settle_restore, take_restore};
use crate::server::Etcd;
use crate::state_machine::StateMachine;
use crate::stop::stopped;
use crate::types::{MemberNode, NodeId, member_id};
use crate::{authority, conn, elections, http_face, metrics, tls};

/// Pause after a lease expiry that did not commit.
const LEASE_EXPIRY_RETRY: Duration = Duration::from_millis(200);

/// Pause after a failed write of the cluster ID.
const CLUSTER_ID_RETRY: Duration = Duration::from_millis(500);

/// Entry points.
pub struct Store;

/// How a member without state starts.
#[derive(Clone, Copy)]
enum Mode {
    /// It forms a one-member cluster (or takes a restore waiting for it).
    Single,
    /// It waits for a member of an existing cluster to add it.
    Join,
}

impl Store {
    /// Start a member that forms a one-member cluster if its data directory has no
    /// state, or restarts from that state.
    pub async fn start_single(config: StoreConfig) -> Result<StoreHandle, StoreError> {
        Self::bind(config).await?.start_single().await
    }

    /// Start a member with no cluster of its own: it serves once a member of an
    /// existing cluster adds it (see [`StoreHandle::add_learner`]). With existing state
    /// it restarts from it, like `start_single`.
    pub async fn start_join(config: StoreConfig) -> Result<StoreHandle, StoreError> {
        Self::bind(config).await?.start_join().await
    }

    /// The first step of a start: bind every client and peer URL, failing on
    /// the first that cannot be bound (a port in use) or that is `https://`
    /// where its link has no certificate to serve. Nothing else has run yet;
    /// the rest of the start ([`Bound::start_single`], [`Bound::start_join`])
    /// may come later, and connections wait in the listeners' queues until it
    /// does.
    pub async fn bind(config: StoreConfig) -> Result<Bound, StoreError> {
        if config.client_urls.is_empty() || config.peer_urls.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: String::new(),
                reason: "at least one client URL and one peer URL are needed".into(),
            });
        }
        let clients = bind_all(&config.env, &config.client_urls, tls::Link::Client).await?;
        let peers = bind_all(&config.env, &config.peer_urls, tls::Link::Peer).await?;
        Ok(Bound {
            config,
            clients,
            peers,
        })
    }
}

/// A member whose listeners are bound ([`Store::bind`]) and that has not
/// started yet.
pub struct Bound {
    config: StoreConfig,
    clients: Vec<(String, Incoming)>,
    peers: Vec<(String, Incoming)>,
}

impl Bound {
    /// [`Store::start_single`], its listeners already bound.
    pub async fn start_single(self) -> Result<StoreHandle, StoreError> {
        self.start(Mode::Single).await
    }

    /// [`Store::start_join`], its listeners already bound.
    pub async fn start_join(self) -> Result<StoreHandle, StoreError> {
        self.start(Mode::Join).await
    }

    async fn start(self, mode: Mode) -> Result<StoreHandle, StoreError> {
        let Bound {
            config,
            clients,
            peers,
        } = self;
        let own = MemberNode {
            name: config.hostname.clone(),
            peer_urls: peers.iter().map(|(u, _)| u.clone()).collect(),
            client_urls: clients.iter().map(|(u, _)| u.clone()).collect(),
        };
        let state = open_state(&config, mode)?;
        let (dir, has_state, restored) = (state.dir.clone(), state.has_state, state.restored);
        let torn_tail = state.torn_tail.clone();
        let Started {
            node,
            proposed,
            to_confirm,
            log_for_purge,
            wants_snapshot,
        } = start_raft(&config, state, own.clone()).await?;

        let (stop_tx, stop) = watch::channel(false);
        let cut = tokio_util::sync::CancellationToken::new();
        let in_flight = Arc::new(InFlight::default());
        let mut tasks = JoinSet::new();
        tasks.spawn(node::batcher(
            node.raft.clone(),
            config.env.clone(),
            proposed,
        ));
        tasks.spawn(node::read_indexer(node.raft.clone(), to_confirm));
        tasks.spawn(metrics::count_leader_changes(node.clone(), stop.clone()));
        // Campaigns are this task's to call (PreVote), not raft's timer.
        node.raft.runtime_config().elect(false);
        tasks.spawn(elections::run(node.clone(), stop.clone()));
        tasks.spawn(snapshot_by_log_size(
            node.clone(),
            wants_snapshot,
            log_for_purge,
            config.snapshot_log_bytes,
            stop.clone(),
        ));
        for (_, listener) in peers {
            let listener = conn::cuttable(listener, cut.clone());
            let counted = CountInFlight(in_flight.clone());
            tasks.spawn(serve_peers(node.clone(), listener, counted, stop.clone()));
        }
        let max_request = config.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
        for (_, listener) in clients {
            let listener = authority::lenient(conn::cuttable(listener, cut.clone()));
            let counted = CountInFlight(in_flight.clone());
            let serve = serve_clients(node.clone(), listener, counted, max_request, stop.clone());
            tasks.spawn(serve);
        }
        tasks.spawn(expire_leases(node.clone(), stop.clone()));
        tasks.spawn(compact_history(
            node.clone(),
            config.keep_revisions,
            stop.clone(),
        ));

        // A restarted member that is its membership's only voter campaigns at
        // once (`elections::run`): no timeout for the one vote it casts itself.
        if matches!(mode, Mode::Single) && !has_state {
            form_cluster(&node, own.clone(), restored, &dir).await?;
        }
        tasks.spawn(follow_leadership(node.clone(), stop.clone()));

        Ok(StoreHandle {
            node,
            stop: stop_tx,
            cut,
            in_flight,
            tasks: tokio::sync::Mutex::new(tasks),
            client_urls: own.client_urls,
            peer_urls: own.peer_urls,
            torn_tail,
        })
    }
}

/// Bind every URL of one link; fail on the first that cannot be bound, naming
/// it, or that is `https://` where the link has no certificate to serve.
/// Returns the listeners (TLS taken care of) and the URLs with their actual
/// ports.
async fn bind_all(
    env: &Env,
    urls: &[String],
    link: tls::Link,
) -> Result<Vec<(String, Incoming)>, StoreError> {
    let mut out = Vec::new();
    for url in urls {
        let addr = socket_addr(url)?;
        let https = url.starts_with("https://");
        let serving = env.tls().get(link).filter(|t| t.serves());
        if https && serving.is_none() {
            return Err(StoreError::InvalidUrl {
                url: url.clone(),
                reason: format!("https, but no certificate is configured for {link} links"),
            });
        }
        let (actual, incoming) = env.listen(addr).await.map_err(|source| StoreError::Bind {
            url: url.clone(),
            source,
        })?;
        let (scheme, incoming) = match serving {
            Some(config) if https => {
                let url = format!("https://{actual}");
                ("https", tls::accept(incoming, config, link, url))
            }
            _ => ("http", incoming),
        };
        out.push((format!("{scheme}://{actual}"), incoming));
    }
    Ok(out)
}

/// A member's state on disk, opened.
struct OpenState {
    dir: PathBuf,
    log: LogStore,
    torn_tail: Option<TornTail>,
    state_machine: StateMachine,
    id: NodeId,
    /// The log holds entries: the member restarts from them.
    has_state: bool,
    /// The revision of a restored snapshot the state machine now holds.
    restored: Option<i64>,
}

/// Opens the log and the state machine in the member's data directory, and
/// the member ID its state belongs to (written on the first start). A
/// member forming a new cluster takes the restore waiting for it, if any.
fn open_state(config: &StoreConfig, mode: Mode) -> Result<OpenState, StoreError> {
    let dir = config.data_dir()?;
    let storage = |source| StoreError::Storage {
        dir: dir.clone(),
        source,
    };
    let (log, torn_tail) =
        LogStore::open(&dir, config.env.allows_threads(), config.snapshot_log_bytes)
            .map_err(storage)?;
    let state_machine = StateMachine::open(&dir, config.env.allows_threads()).map_err(storage)?;
    log.follow_snapshot_size(state_machine.shared.snapshot_bytes.clone());
    let has_state = log.last_index().is_some();
    let id = match stored_member_id(&dir) {
        Some(id) => id,
        None => {
            // State from before IDs were stored was the hostname's.
            let id = if has_state {
                member_id(&config.hostname)
            } else {
                config
                    .member_id
                    .unwrap_or_else(|| member_id(&config.hostname))
            };
            crate::atomic_file::write_atomic(&dir, MEMBER_ID_FILE, id.to_string().as_bytes())
                .map_err(storage)?;
            id
        }
    };
    let restore = match mode {
        Mode::Single if !has_state => {
            take_restore(&dir, config.env.now_ms()).map_err(|e| StoreError::Restore {
                file: dir.join(RESTORE_FILE),
                reason: e.to_string(),
            })?
        }
        _ => None,
    };
    let restored = restore.map(|data| {
        let revision = data.kv.revision();
        state_machine.shared.lock().data = data;
        revision
    });
    Ok(OpenState {
        dir,
        log,
        torn_tail,
        state_machine,
        id,
        has_state,
        restored,
    })
}

/// Raft started on the opened state, and what the member's tasks take from it.
struct Started {
    node: Arc<Node>,
    proposed: tokio::sync::mpsc::UnboundedReceiver<node::Proposal>,
    to_confirm: tokio::sync::mpsc::UnboundedReceiver<node::ReadReply>,
    log_for_purge: LogStore,
    wants_snapshot: Arc<tokio::sync::Notify>,
}

/// Starts raft on `state` with the config's timing, and the member around it.
async fn start_raft(
    config: &StoreConfig,
    state: OpenState,
    own: MemberNode,
) -> Result<Started, StoreError> {
    let raft_error = |e: &dyn std::fmt::Display| StoreError::Raft(e.to_string());
    let raft_config = openraft::Config {
        cluster_name: "mgmt".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_ms.0,
        election_timeout_max: config.election_timeout_ms.1,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: config.log_kept_after_snapshot,
        purge_batch_size: 1,
        ..Default::default()
    }
    .validate()
    .map_err(|e| raft_error(&e))?;
    let channels = Channels::new(config.env.clone());
    let shared = state.state_machine.shared.clone();
    let (log_reader, log_for_purge) = (state.log.clone(), state.log.clone());
    let wants_snapshot = state.log.wants_snapshot();
    let raft = openraft::Raft::new(
        state.id,
        Arc::new(raft_config),
        Network {
            channels: channels.clone(),
        },
        state.log,
        state.state_machine,
    )
    .await
    .map_err(|e| raft_error(&e))?;
    let (proposals, proposed) = tokio::sync::mpsc::unbounded_channel();
    let (reads, to_confirm) = tokio::sync::mpsc::unbounded_channel();
    let node = Arc::new(Node {
        id: state.id,
        own,
        raft,
        sm: shared,
        channels,
        env: config.env.clone(),
        limits: config.limits,
        transferring: watch::channel(false).0,
        proposals,
        reads,
        puts: Default::default(),
        ranges: Default::default(),
        log: log_reader,
        leader_contact: Default::default(),
        leaderless: watch::channel(false).0,
        term_seen: Default::default(),
        leader_changes: Default::default(),
    });
    Ok(Started {
        node,
        proposed,
        to_confirm,
        log_for_purge,
        wants_snapshot,
    })
}

/// Keeps the log's size in bytes, not only in entries: once
/// `snapshot_log_bytes` were appended, a snapshot, then a purge that keeps at
/// most that many bytes of the newest entries (openraft's own purge counts
/// entries, whatever their size).
async fn snapshot_by_log_size(
    node: Arc<Node>,
    wants_snapshot: Arc<tokio::sync::Notify>,
    log: LogStore,
    keep: u64,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = wants_snapshot.notified() => {}
            _ = stopped(&mut stop) => break,
        }
        if let Err(e) = node.snapshot_now().await {
            tracing::warn!(error = %e, "snapshot for the log's size failed");
            continue;
        }
        let snapshot = node.raft.metrics().borrow().snapshot.map_or(0, |s| s.index);
        if let Some(upto) = log.purge_point(keep) {
            let _ = node.raft.trigger().purge_log(upto.min(snapshot)).await;
        }
    }
}

/// Wait after a failed compaction of the history.
const COMPACT_RETRY: Duration = Duration::from_secs(1);

/// Keeps at most about `2 * keep` revisions of history: whenever this member
/// leads and holds that many, it compacts to the newest minus `keep` (one
/// raft write per `keep` revisions). A compaction visits every key, so it
/// also waits for as many revisions as there are keys: a store of many
/// keys compacts no more than once per that many writes. Checked as raft
/// reports progress, so a one-shot run that leads for a few milliseconds
/// checks too.
async fn compact_history(node: Arc<Node>, keep: u64, mut stop: watch::Receiver<bool>) {
    let Ok(keep) = i64::try_from(keep) else {
        return;
    };
    if keep == 0 {
        return;
    }
    let mut metrics = node.raft.metrics();
    loop {
        let leading = metrics.borrow_and_update().current_leader == Some(node.id);
        let held = leading.then(|| {
            let g = node.sm.lock();
            let keys = i64::try_from(g.data.kv.key_count()).unwrap_or(i64::MAX);
            (g.data.kv.revision(), g.data.kv.compact_revision(), keys)
        });
        if let Some((newest, compacted, keys)) = held
            && newest - compacted >= keep.saturating_mul(2).max(keys)
        {
            let revision = newest - keep;
            match node.write(Command::Compact { revision }).await {
                Ok(_) => tracing::debug!(revision, "history compacted"),
                Err(e) => {
                    tracing::warn!(error = %e, revision, "cannot compact the history; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(COMPACT_RETRY) => {}
                        _ = stopped(&mut stop) => break,
                    }
                }
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            _ = stopped(&mut stop) => break,
        }
    }
}

/// Serves the peer service on one peer listener until `stop`.
async fn serve_peers(
    node: Arc<Node>,
    listener: Incoming,
    counted: CountInFlight,
    mut stop: watch::Receiver<bool>,
) {
    let svc = crate::pb::mgmtpeer::peer_server::PeerServer::new(PeerService { node })
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let res = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .layer(counted)
        .add_service(svc)
        .serve_with_incoming_shutdown(listener, async move {
            stopped(&mut stop).await;
        })
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "peer server failed");
    }
}

/// Serves the etcd API on one client listener until `stop`: gRPC and, beside
/// it on HTTP/1.1, the HTTP face (`/health`, the JSON gateway, ...).
async fn serve_clients(
    node: Arc<Node>,
    listener: Incoming,
    counted: CountInFlight,
    max_request: usize,
    mut stop: watch::Receiver<bool>,
) {
    let etcd = Etcd { node: node.clone() };
    let res = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(counted)
        .layer(http_face::HttpFaceLayer { node })
        .add_service(
            epb::kv_server::KvServer::new(etcd.clone()).max_decoding_message_size(max_request),
        )
        .add_service(
            epb::watch_server::WatchServer::new(etcd.clone())
                .max_decoding_message_size(max_request),
        )
        .add_service(
            epb::lease_server::LeaseServer::new(etcd.clone())
                .max_decoding_message_size(max_request),
        )
        .add_service(
            epb::cluster_server::ClusterServer::new(etcd.clone())
                .max_decoding_message_size(max_request),
        )
        .add_service(
            epb::auth_server::AuthServer::new(etcd.clone()).max_decoding_message_size(max_request),
        )
        .add_service(
            epb::maintenance_server::MaintenanceServer::new(etcd)
                .max_decoding_message_size(max_request)
                .max_encoding_message_size(max_request),
        )
        .serve_with_incoming_shutdown(listener, async move {
            stopped(&mut stop).await;
        })
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "client server failed");
    }
}

/// Lease expiry: the leader proposes ExpireLeases once a deadline passes.
/// It sleeps until the earliest deadline, woken when that or the leader
/// changes: no timer runs while nothing can expire.
async fn expire_leases(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut deadline = node.sm.lease_deadline();
    let mut leader = node.raft.server_metrics();
    loop {
        let due = *deadline.borrow_and_update();
        let leading = leader.borrow_and_update().current_leader == Some(node.id);
        let wait = due
            .filter(|_| leading)
            .map(|d| Duration::from_millis(d.saturating_sub(node.env.now_ms())));
        if wait == Some(Duration::ZERO) {
            node.expire_leases_if_due().await;
            if *deadline.borrow() == due {
                // Not committed (no quorum): try again shortly.
                tokio::select! {
                    _ = tokio::time::sleep(LEASE_EXPIRY_RETRY) => {}
                    _ = stopped(&mut stop) => break,
                }
            }
            continue;
        }
        tokio::select! {
            _ = sleep_for(wait) => {}
            r = deadline.changed() => if r.is_err() { break },
            r = leader.changed() => if r.is_err() { break },
            _ = stopped(&mut stop) => break,
        }
    }
}

/// Sleeps for `d`, or forever without one.
async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// A member without state forms a new one-member cluster of itself; a
/// restore waiting in `dir` is made durable.
async fn form_cluster(
    node: &Node,
    own: MemberNode,
    restored: Option<i64>,
    dir: &Path,
) -> Result<(), StoreError> {
    let members = BTreeMap::from([(node.id, own)]);
    node.raft
        .initialize(members)
        .await
        .map_err(|e| StoreError::Raft(e.to_string()))?;
    if let Some(revision) = restored {
        settle_restore(node, dir).await?;
        tracing::info!(revision, "store restored from a snapshot");
    }
    // Every response header names the cluster: its ID is recorded before
    // the new store is handed out, not only by the leader's task a moment
    // later (a watch created in between got a header without one, which
    // etcd never sends).
    node.await_leader(FORM_TIMEOUT).await?;
    if node.sm.lock().data.kv.cluster_id() == 0 {
        let cluster_id = cluster_id_of(node.id);
        node.write(Command::SetClusterId { cluster_id }).await?;
    }
    Ok(())
}

/// The ID of the cluster whose first leader was `leader`.
fn cluster_id_of(leader: NodeId) -> u64 {
    member_id(&format!("cluster:{leader}"))
}

/// Bound on a new one-member cluster electing itself.
const FORM_TIMEOUT: Duration = Duration::from_secs(10);

/// Once leader, records the cluster ID; ticks only while there is another
/// member. (The leader's own member URLs are the cluster agent's to refresh:
/// `StoreHandle::update_own_urls`.) Raft's server metrics change with the
/// leader, not with heartbeats.
async fn follow_leadership(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut metrics = node.raft.server_metrics();
    loop {
        let (is_leader, alone) = {
            let m = metrics.borrow_and_update();
            let leader = m.current_leader == Some(node.id);
            let only_me = m.membership_config.nodes().map(|(id, _)| *id).eq([node.id]);
            (leader, leader && only_me)
        };
        // The lone member that leads has no one to send heartbeats to and no
        // election to call: raft's ticks only wake it. They come back with
        // the first other member.
        node.raft.runtime_config().tick(!alone);
        if is_leader && node.sm.lock().data.kv.cluster_id() == 0 {
            let cluster_id = cluster_id_of(node.id);
            if node
                .write(Command::SetClusterId { cluster_id })
                .await
                .is_err()
            {
                tokio::select! {
                    _ = tokio::time::sleep(CLUSTER_ID_RETRY) => continue,
                    _ = stopped(&mut stop) => break,
                }
            }
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { break },
            _ = stopped(&mut stop) => break,
        }
    }
}
