//! What the driver holds to run each member of a vertex (its parameters,
//! or the state an exec or a msg keeps between runs), how a new graph's
//! members are built or carried over from the old one, and the CheckApply
//! of a vertex's members.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use mgmt_core::Graph;
use mgmt_core::resource::{
    FileParams, GroupParams, Kind, LineParams, MountParams, Params, PkgParams, ResourceId,
    SvcParams, SysctlParams, UserParams,
};
use tokio::sync::watch;
use tracing::{debug, info};

use super::files;
use super::report::MemberOutcome;
use crate::exec::ExecRes;
use crate::{CheckApplyError, OwnWrites};
use crate::{account, line, mount, msg, pkg, svc, sysctl};

/// What the driver holds to run one member's CheckApply: its parameters,
/// or the state an exec or a msg keeps between runs.
pub(super) enum MemberState {
    Noop,
    File(Arc<FileParams>),
    Exec(ExecRes),
    Pkg(Arc<PkgParams>),
    Svc(Arc<SvcParams>),
    /// Its CheckApply is a tick: it reports a change, so its children refresh.
    Timer,
    Msg(msg::MsgRes),
    User(Arc<UserParams>),
    Group(Arc<GroupParams>),
    /// Checked and applied with the other lines of its file, in one write.
    Line(Arc<LineParams>),
    Sysctl(Arc<SysctlParams>),
    Mount(Arc<MountParams>),
    Hostname(Arc<str>),
}

/// A vertex's members, with their resource ids: what a CheckApply task
/// takes and hands back.
pub(super) struct VertexRes {
    pub(super) ids: Vec<ResourceId>,
    pub(super) members: Vec<MemberState>,
}

/// The members of each vertex of `graph`, each made by `member` from its
/// resource's index.
pub(super) fn slots_of(
    graph: &Graph,
    mut member: impl FnMut(usize) -> MemberState,
) -> Vec<Option<Box<VertexRes>>> {
    graph
        .vertices
        .iter()
        .map(|v| {
            let ids = v
                .members
                .iter()
                .map(|&m| graph.resources[m].id.clone())
                .collect();
            let members = v.members.iter().map(|&m| member(m)).collect();
            Some(Box::new(VertexRes { ids, members }))
        })
        .collect()
}

/// The members of each vertex, built from the graph's parameters.
pub(super) fn build_slots(graph: &Graph) -> Vec<Option<Box<VertexRes>>> {
    slots_of(graph, |m| new_member(&graph.resources[m].params))
}

pub(super) fn new_member(params: &Params) -> MemberState {
    match params {
        Params::Noop { .. } => MemberState::Noop,
        Params::File(p) => MemberState::File(Arc::new(p.clone())),
        Params::Exec(p) => MemberState::Exec(ExecRes::new(p.clone())),
        Params::Pkg(p) => MemberState::Pkg(Arc::new(p.clone())),
        Params::Svc(p) => MemberState::Svc(Arc::new(p.clone())),
        Params::Timer { .. } => MemberState::Timer,
        Params::Msg(p) => MemberState::Msg(msg::MsgRes::new(p.clone())),
        Params::User(p) => MemberState::User(Arc::new(p.clone())),
        Params::Group(p) => MemberState::Group(Arc::new(p.clone())),
        Params::Line(p) => MemberState::Line(Arc::new(p.clone())),
        Params::Sysctl(p) => MemberState::Sysctl(Arc::new(p.clone())),
        Params::Mount(p) => MemberState::Mount(Arc::new(p.clone())),
        Params::Hostname { hostname } => MemberState::Hostname(Arc::from(hostname.as_str())),
    }
}

/// The new graph's members: a kept resource brings its live member (what a
/// command or a message remembers) from wherever it was grouped before; the
/// others are built afresh.
pub(super) fn carry_members(
    old: &Graph,
    old_slots: Vec<Option<Box<VertexRes>>>,
    new: &Graph,
    plan: &mgmt_core::changeover::Plan,
) -> Vec<Option<Box<VertexRes>>> {
    let mut by_resource: Vec<Option<MemberState>> =
        (0..old.resources.len()).map(|_| None).collect();
    for (v, slot) in old_slots.into_iter().enumerate() {
        let Some(res) = slot else { continue };
        for (k, member) in res.members.into_iter().enumerate() {
            by_resource[old.vertices[v].members[k]] = Some(member);
        }
    }
    slots_of(new, |m| {
        plan.kept[m]
            .and_then(|o| by_resource[o].take())
            .unwrap_or_else(|| new_member(&new.resources[m].params))
    })
}

/// The shared backends a CheckApply may need.
#[derive(Clone)]
pub(super) struct Backends {
    pub(super) packages: Arc<pkg::Backend>,
    pub(super) services: Arc<svc::Backend>,
    /// Told of every rename a write makes, for the file watcher.
    pub(super) own_writes: OwnWrites,
}

/// Runs CheckApply on the members `which` (indices, ascending) of a vertex.
/// The vertex changed if any member did; the first error fails it (later
/// members still run, so a group makes as much progress as it can). File
/// members run together off the runtime; results are logged in member order.
pub(super) async fn check_apply_vertex(
    res: &mut VertexRes,
    which: &[usize],
    apply: bool,
    refresh: bool,
    cancel: &mut watch::Receiver<bool>,
    backends: &Backends,
) -> (Result<bool, String>, Vec<MemberOutcome>) {
    let files: Vec<(usize, Arc<FileParams>)> = which
        .iter()
        .filter_map(|&i| match &res.members[i] {
            MemberState::File(p) => Some((i, p.clone())),
            _ => None,
        })
        .collect();
    // In member order once sorted, below (the file threads interleave theirs).
    let mut outcomes: Vec<MemberOutcome> = Vec::with_capacity(which.len());
    if !files.is_empty() {
        let idx: Vec<usize> = files.iter().map(|(i, _)| *i).collect();
        let own = backends.own_writes.clone();
        let check = move || files::check_apply_files(&files, apply, &own);
        match tokio::task::spawn_blocking(check).await {
            Ok(done) => outcomes.extend(done),
            Err(e) => {
                let e = CheckApplyError::Task {
                    what: "file",
                    reason: e.to_string(),
                };
                for i in idx {
                    outcomes.push((i, Err(e.clone()), 0.0));
                }
            }
        }
    }
    let pkgs: Vec<(usize, Arc<PkgParams>)> = which
        .iter()
        .filter_map(|&i| match &res.members[i] {
            MemberState::Pkg(p) => Some((i, p.clone())),
            _ => None,
        })
        .collect();
    if !pkgs.is_empty() {
        // One batch: the vertex's packages share transactions.
        let started = Instant::now();
        let done = pkg::check_apply(&backends.packages, &pkgs, apply).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        outcomes.extend(
            done.into_iter()
                .map(|(i, r)| (i, r.map_err(CheckApplyError::from), ms)),
        );
    }
    let mut lines: BTreeMap<String, Vec<(usize, Arc<LineParams>)>> = BTreeMap::new();
    for &i in which {
        if let MemberState::Line(p) = &res.members[i] {
            lines
                .entry(p.path.clone())
                .or_default()
                .push((i, p.clone()));
        }
    }
    for (path, members) in lines {
        // One read and one write per file, whatever the number of lines.
        let idx: Vec<usize> = members.iter().map(|(i, _)| *i).collect();
        let started = Instant::now();
        let own = backends.own_writes.clone();
        let done = tokio::task::spawn_blocking(move || {
            let params: Vec<&LineParams> = members.iter().map(|(_, p)| &**p).collect();
            line::check_apply(&path, &params, apply, &own)
        })
        .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match done {
            Ok(Ok(results)) => {
                for (i, r) in idx.into_iter().zip(results) {
                    outcomes.push((i, r.map_err(CheckApplyError::from), ms));
                }
            }
            // The file's own trouble is every member's.
            Ok(Err(e)) => {
                let e = CheckApplyError::from(e);
                for i in idx {
                    outcomes.push((i, Err(e.clone()), ms));
                }
            }
            Err(e) => {
                let e = CheckApplyError::Task {
                    what: "line",
                    reason: e.to_string(),
                };
                for i in idx {
                    outcomes.push((i, Err(e.clone()), ms));
                }
            }
        }
    }
    for &i in which {
        let started = Instant::now();
        let result = match &mut res.members[i] {
            MemberState::File(_) | MemberState::Pkg(_) | MemberState::Line(_) => continue,
            MemberState::User(p) => account::check_apply_user(p, apply)
                .await
                .map_err(CheckApplyError::from),
            MemberState::Group(p) => account::check_apply_group(p, apply)
                .await
                .map_err(CheckApplyError::from),
            MemberState::Mount(p) => mount::check_apply(p, apply, &backends.own_writes)
                .await
                .map_err(CheckApplyError::from),
            MemberState::Hostname(name) => {
                crate::hostname::check_apply(name, apply, &backends.own_writes)
                    .await
                    .map_err(CheckApplyError::from)
            }
            MemberState::Sysctl(p) => {
                let (p, own) = (p.clone(), backends.own_writes.clone());
                tokio::task::spawn_blocking(move || sysctl::check_apply(&p, apply, &own))
                    .await
                    .map_err(|e| CheckApplyError::Task {
                        what: "sysctl",
                        reason: e.to_string(),
                    })
                    .and_then(|r| r.map_err(CheckApplyError::from))
            }
            MemberState::Noop => Ok(Vec::new()),
            MemberState::Exec(e) => e
                .check_apply(apply, refresh, cancel)
                .await
                .map_err(CheckApplyError::from),
            MemberState::Svc(p) => svc::check_apply(&backends.services, p, apply, refresh)
                .await
                .map_err(CheckApplyError::from),
            MemberState::Timer => Ok(vec!["tick".to_string()]),
            MemberState::Msg(m) => m
                .check_apply(&res.ids[i].to_string(), apply, refresh)
                .map_err(CheckApplyError::from),
        };
        outcomes.push((i, result, started.elapsed().as_secs_f64() * 1000.0));
    }
    let mut changed = false;
    let mut first_error = None;
    outcomes.sort_unstable_by_key(|o| o.0);
    for (i, result, ms) in &outcomes {
        let (id, ms) = (&res.ids[*i], *ms);
        match result {
            Ok(changes) if changes.is_empty() => {
                if id.kind != Kind::Noop {
                    debug!("{id}: CheckApply: ok ({ms:.1} ms)");
                }
            }
            Ok(changes) => {
                changed = true;
                let verb = if apply { "" } else { "would have: " };
                info!(
                    resource = %id,
                    action = "CheckApply",
                    duration_ms = ms,
                    "{id}: CheckApply: {verb}{} ({ms:.1} ms)",
                    changes.join(", ")
                );
            }
            Err(e) => {
                first_error.get_or_insert(format!("{id}: {e}"));
            }
        }
    }
    let result = match first_error {
        Some(e) => Err(e),
        None => Ok(changed),
    };
    (result, outcomes)
}
