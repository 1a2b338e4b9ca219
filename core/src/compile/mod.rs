//! YAML text -> validated [`Graph`]. Parse first, then act: nothing downstream
//! sees an unvalidated value. The compiler never panics on any input and reports
//! every problem it can find, each with a location.

mod block_yaml;
mod host;
mod yaml;

use std::collections::{BTreeSet, HashMap};
use std::fmt;

pub use crate::diagnostic::Diagnostic;
use crate::graph::{Collect, Graph, ResEdge, Vertex};
use crate::hostname::Hostname;
use crate::resource::{
    Command, ExecParams, FileParams, FileState, Kind, Meta, MsgParams, Params, PkgParams, PkgState,
    Principal, Priority, Resource, ResourceId, Retry, SvcParams, SvcStartup, SvcState,
};
use yaml::{
    ExecYaml, FileYaml, GraphYaml, Location, MetaYaml, MsgYaml, NoopYaml, PkgYaml, ScalarYaml,
    Spanned, SvcYaml, TimerYaml,
};

/// Every diagnostic of a failed compile, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct CompileError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

/// Options that change how a graph is compiled.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Run AutoEdges (per-resource `meta.autoedge` still applies). Default on.
    pub autoedge: bool,
    /// Run AutoGroup (per-resource `meta.autogroup` still applies). Default on.
    pub autogroup: bool,
    /// What each package ships, for package AutoEdges (io gathers it from the
    /// package manager: [`packages`] names the packages to ask about).
    pub package_files: crate::autoedge::PackageFiles,
    /// Resources collected from other hosts' exports (compiled on their own
    /// by [`crate::export::compile_collected`]), each with where it came from
    /// for messages. One that clashes with a local resource (same `Kind[name]`
    /// or the same path) is dropped with a warning: the local one wins.
    pub collected: Vec<(Resource, String)>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            autoedge: true,
            autogroup: true,
            package_files: Default::default(),
            collected: Vec::new(),
        }
    }
}

struct Ctx<'a> {
    file: &'a str,
    diags: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn diagnostic(
        &self,
        loc: Option<Location>,
        subject: Option<&ResourceId>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line_col: loc.filter(|l| l.line() > 0).map(|l| (l.line(), l.column())),
            subject: subject.map(|s| s.to_string()),
            message: message.into(),
        }
    }

    fn err(
        &mut self,
        loc: Option<Location>,
        subject: Option<&ResourceId>,
        message: impl Into<String>,
    ) {
        let d = self.diagnostic(loc, subject, message);
        self.diags.push(d);
    }

    fn warn(
        &mut self,
        loc: Option<Location>,
        subject: Option<&ResourceId>,
        message: impl Into<String>,
    ) {
        let d = self.diagnostic(loc, subject, message);
        self.warnings.push(d);
    }
}

/// The packages whose file lists package AutoEdges would use: those of
/// `graph`'s pkg resources with `meta.autoedge` on, sorted; none if no file or
/// svc resource could be the end of such an edge (asking costs a PackageKit
/// transaction). Ask the package manager about them, then compile again with
/// [`CompileOptions::package_files`].
pub fn packages(graph: &Graph) -> Vec<String> {
    if !crate::autoedge::package_edges_possible(graph) {
        return Vec::new();
    }
    let mut names: Vec<String> = graph
        .resources
        .iter()
        .filter(|r| r.meta.autoedge)
        .filter_map(|r| match &r.params {
            Params::Pkg(p) => Some(p.name.clone()),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Compiles the YAML text of a graph, with AutoEdges and AutoGroup. `file`
/// names the source in diagnostics.
pub fn compile(file: &str, text: &str) -> Result<Graph, CompileError> {
    compile_with(file, text, &CompileOptions::default())
}

/// [`compile`] with options.
pub fn compile_with(file: &str, text: &str, opts: &CompileOptions) -> Result<Graph, CompileError> {
    let mut ctx = Ctx {
        file,
        diags: Vec::new(),
        warnings: Vec::new(),
    };
    let parsed = match parse(text) {
        Ok(p) => p,
        Err(e) => {
            ctx.err(
                e.location().map(Location::from),
                None,
                tidy_parse_message(&e.without_snippet().to_string()),
            );
            return Err(CompileError {
                diagnostics: ctx.diags,
            });
        }
    };
    let graph = build(&mut ctx, parsed, opts);
    if ctx.diags.is_empty() {
        Ok(graph)
    } else {
        Err(CompileError {
            diagnostics: ctx.diags,
        })
    }
}

/// The graph's YAML: read by the fast reader where it can, else by
/// serde_saphyr (which gives every error).
fn parse(text: &str) -> Result<GraphYaml, serde_saphyr::Error> {
    match block_yaml::from_str(text) {
        Some(graph) => Ok(graph),
        None => parse_fully(text),
    }
}

/// The graph's YAML read by serde_saphyr, whatever it holds.
fn parse_fully(text: &str) -> Result<GraphYaml, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    // `mode: 0644` must stay the string "0644", not the number 644.
    options.leading_zero_numbers_as_strings = true;
    // Room for graphs of ~100 000 resources; alias bombs stay bounded by the
    // default limits on anchors and recorded anchor events.
    let mut budget = options.budget.take().unwrap_or_default();
    budget.max_nodes = budget.max_nodes.max(5_000_000);
    budget.max_events = budget.max_events.max(20_000_000);
    options.budget = Some(budget);
    serde_saphyr::from_str_with_options(text, options)
}

/// The parser's message without its own location suffix (we print ours in
/// front) and with serde internals replaced by what a user can act on.
fn tidy_parse_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or("invalid YAML");
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    first
        .replace(
            "data did not match any variant of untagged enum ScalarYaml",
            "expected a string or a number",
        )
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}

/// Adds the resources of one kind that compile, room made for all of them at once.
fn add<Y>(
    located: &mut Vec<Option<(Resource, Location)>>,
    declared: Option<Vec<Y>>,
    mut compile: impl FnMut(Y) -> Option<(Resource, Location)>,
) {
    let declared = declared.unwrap_or_default();
    located.reserve(declared.len());
    located.extend(declared.into_iter().filter_map(|y| compile(y).map(Some)));
}

fn build(ctx: &mut Ctx<'_>, g: GraphYaml, opts: &CompileOptions) -> Graph {
    // Each slot is emptied as its resource moves to where it belongs: a
    // resource is a few hundred bytes, and a graph may have 150 000.
    let mut located: Vec<Option<(Resource, Location)>> = Vec::new();
    if let Some(res) = g.resources {
        let l = &mut located;
        add(l, res.noop, |y| noop(ctx, y));
        add(l, res.file, |y| file(ctx, y));
        add(l, res.exec, |y| exec(ctx, y));
        add(l, res.pkg, |y| pkg(ctx, y));
        add(l, res.svc, |y| svc(ctx, y));
        add(l, res.timer, |y| timer(ctx, y));
        add(l, res.msg, |y| msg(ctx, y));
        add(l, res.user, |y| host::user(ctx, y));
        add(l, res.group, |y| host::group(ctx, y));
        add(l, res.line, |y| host::line(ctx, y));
        add(l, res.sysctl, |y| host::sysctl(ctx, y));
        add(l, res.mount, |y| host::mount(ctx, y));
        add(l, res.hostname, |y| host::hostname(ctx, y));
    }

    // Duplicates: report the later definition, pointing at the first.
    let mut first_of: HashMap<(&ResourceId, bool), Location> =
        HashMap::with_capacity(located.len());
    let mut duplicate = vec![false; located.len()];
    for (i, slot) in located.iter().enumerate() {
        let Some((r, loc)) = slot else { continue };
        if let Some(first) = first_of.get(&(&r.id, r.exported)) {
            let msg = format!("duplicate resource, first defined at line {}", first.line());
            ctx.err(Some(*loc), Some(&r.id), msg);
            duplicate[i] = true;
        } else {
            first_of.insert((&r.id, r.exported), *loc);
        }
    }
    drop(first_of);
    let mut exported = Vec::new();
    let mut order = Vec::with_capacity(located.len());
    for (i, slot) in located.iter_mut().enumerate() {
        let Some((r, _)) = slot else { continue };
        if duplicate[i] {
            continue;
        }
        if r.exported {
            exported.extend(slot.take().map(|(r, _)| r));
        } else {
            order.push(i);
        }
    }
    let id = |i: usize| located[i].as_ref().map(|(r, _)| &r.id);
    order.sort_by(|&a, &b| id(a).cmp(&id(b)));
    // Sized once: collecting a filter_map would grow it by doubling.
    let mut resources: Vec<Resource> = Vec::with_capacity(order.len());
    resources.extend(
        order
            .into_iter()
            .filter_map(|i| located[i].take().map(|(r, _)| r)),
    );
    drop(located);
    if !opts.collected.is_empty() {
        collect_into(ctx, &mut resources, &opts.collected);
        resources.sort_by(|a, b| a.id.cmp(&b.id));
    }

    // Two resources managing one path would undo each other forever.
    let mut paths: HashMap<&str, &ResourceId> = HashMap::with_capacity(resources.len());
    for r in &resources {
        if let (Some(key), Params::File(f)) = (path_key(r), &r.params)
            && let Some(first) = paths.insert(key, &r.id)
        {
            let msg = format!("path {:?} is also managed by {first}", f.path);
            ctx.err(None, Some(&r.id), msg);
        }
    }

    host::check_lines(ctx, &resources);

    // A synced tree owns everything under it: another resource there would be
    // deleted by the sync or fight it; and a tree copied into itself never ends.
    let trees: Vec<(&str, &ResourceId)> = resources
        .iter()
        .filter_map(|r| match &r.params {
            Params::File(f) if f.recurse => Some((f.path.as_str(), &r.id)),
            _ => None,
        })
        .collect();
    for r in &resources {
        let Params::File(f) = &r.params else { continue };
        for (tree, owner) in &trees {
            if *owner != &r.id && is_under(&f.path, tree) {
                let msg = format!("path {:?} is inside {owner}'s synced tree {tree:?}", f.path);
                ctx.err(None, Some(&r.id), msg);
            }
        }
        if let Some(src) = &f.source
            && (is_under(&f.path, src) || is_under(src, &f.path))
        {
            let msg = format!("path {:?} and its source {src:?} overlap", f.path);
            ctx.err(None, Some(&r.id), msg);
        }
    }

    let hostname = g.hostname.and_then(|h| match Hostname::parse(&h.value) {
        Ok(name) => Some(name),
        Err(e) => {
            ctx.err(Some(h.referenced), None, format!("hostname: {e}"));
            None
        }
    });
    let mut graph = Graph {
        name: g.graph.value,
        comment: g.comment,
        hostname,
        vertices: (0..resources.len())
            .map(|i| Vertex { members: vec![i] })
            .collect(),
        resources,
        exported,
        edges: Vec::new(),
        warnings: std::mem::take(&mut ctx.warnings),
        collect: g
            .collect
            .unwrap_or_default()
            .into_iter()
            .map(|c| Collect {
                kind: c.kind,
                pattern: c.pattern,
            })
            .collect(),
        notes: Vec::new(),
    };

    // Edge ends are looked up by hash: a graph may have 100 000 edges.
    let index: HashMap<(Kind, &str), usize> = graph
        .resources
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.id.kind, r.id.name.as_str()), i))
        .collect();
    let mut edge_set = BTreeSet::new();
    let declared = g.edges.unwrap_or_default();
    let mut edges = Vec::with_capacity(declared.len());
    for (i, e) in declared.into_iter().enumerate() {
        let loc = e.referenced;
        let e = e.value;
        let name = e.name.unwrap_or_else(|| format!("e{}", i + 1));
        let mut ends = [None, None];
        for (slot, end) in ends.iter_mut().zip([&e.from, &e.to]) {
            let Some(kind) = Kind::parse(&end.kind) else {
                ctx.err(
                    Some(loc),
                    None,
                    format!("edge {name:?}: unknown kind {:?}", end.kind),
                );
                continue;
            };
            match index.get(&(kind, end.name.as_str())) {
                Some(&idx) => *slot = Some(idx),
                None => {
                    let id = ResourceId::new(kind, end.name.clone());
                    ctx.err(Some(loc), None, format!("edge {name:?}: no resource {id}"));
                }
            }
        }
        if let [Some(from), Some(to)] = ends {
            if from == to {
                let id = graph.resources[from].id.clone();
                ctx.err(
                    Some(loc),
                    Some(&id),
                    format!("edge {name:?} joins a resource to itself"),
                );
                continue;
            }
            let notify = e.notify.unwrap_or(false);
            if edge_set.insert((from, to)) {
                edges.push(ResEdge {
                    from,
                    to,
                    name,
                    notify,
                    auto: false,
                });
            } else if notify {
                // A repeated edge can only add a notify.
                if let Some(existing) = edges.iter_mut().find(|x| x.from == from && x.to == to) {
                    existing.notify = true;
                }
            }
        }
    }
    drop(index);
    // A timer's whole job is to refresh what follows it, notify or not.
    for e in &mut edges {
        if graph.resources[e.from].kind() == Kind::Timer {
            e.notify = true;
        }
    }
    graph.edges = edges;
    graph.edges.sort();

    if ctx.diags.is_empty()
        && let Some(cycle) = crate::algo::find_cycle(
            graph.resources.len(),
            graph.edges.iter().map(|e| (e.from, e.to)),
        )
    {
        let path: Vec<String> = cycle
            .iter()
            .chain(cycle.first())
            .map(|&i| graph.resources[i].id.to_string())
            .collect();
        ctx.err(
            None,
            None,
            format!("the graph has a cycle: {}", path.join(" -> ")),
        );
    }
    if ctx.diags.is_empty() {
        // The user's edges are valid and acyclic: add the automatic ones, then
        // group. Both keep the graph acyclic and log their decisions in `notes`.
        if opts.autoedge {
            crate::autoedge::add_auto_edges(&mut graph, &opts.package_files);
        }
        if opts.autogroup {
            crate::autogroup::autogroup(&mut graph);
        }
    }
    graph
}

/// Adds the resources collected from other hosts, except those this graph
/// has already (by id, or by path for files): the local one wins, with a
/// warning.
fn collect_into(
    ctx: &mut Ctx<'_>,
    resources: &mut Vec<Resource>,
    collected: &[(Resource, String)],
) {
    let mut taken_ids: BTreeSet<ResourceId> = resources.iter().map(|r| r.id.clone()).collect();
    let mut taken_paths: BTreeSet<String> = resources
        .iter()
        .filter_map(|r| path_key(r).map(str::to_string))
        .collect();
    for (r, from) in collected {
        let path = path_key(r).map(str::to_string);
        if taken_ids.contains(&r.id) || path.as_ref().is_some_and(|p| taken_paths.contains(p)) {
            let w = ctx.diagnostic(
                None,
                Some(&r.id),
                format!("collected from {from}, but this graph already has it (or its path): the local one wins"),
            );
            ctx.warnings.push(w);
            continue;
        }
        taken_ids.insert(r.id.clone());
        taken_paths.extend(path);
        resources.push(r.clone());
    }
}

/// A resource's `path` and where it is written: the name when it has none,
/// as in the original.
fn path_or_name(
    path: &Option<Spanned<String>>,
    id: &ResourceId,
    name: &Spanned<String>,
) -> (String, Location) {
    match path {
        Some(p) => (p.value.clone(), p.referenced),
        None => (id.name.clone(), name.referenced),
    }
}

/// What is wrong with a managed path, if anything: it must be absolute,
/// without NUL or `..`, and not `/`.
fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        Some(format!("path {path:?} must be absolute"))
    } else if path.contains('\0') || path.split('/').any(|c| c == "..") {
        Some(format!("path {path:?} must not contain NUL or '..'"))
    } else if path == "/" {
        Some("refusing to manage /".to_string())
    } else {
        None
    }
}

/// The path a file resource manages, as clashes are judged (a directory's
/// trailing `/` does not make it another path).
fn path_key(r: &Resource) -> Option<&str> {
    match &r.params {
        Params::File(f) => Some(f.path.trim_end_matches('/')),
        _ => None,
    }
}

fn resource_id(kind: Kind, name: &Spanned<String>) -> (ResourceId, bool) {
    match name.value.strip_prefix("@@") {
        Some(stripped) => (ResourceId::new(kind, stripped), true),
        None => (ResourceId::new(kind, name.value.clone()), false),
    }
}

/// Checks the name and builds the id; `None` after reporting a bad name.
fn named(ctx: &mut Ctx<'_>, kind: Kind, name: &Spanned<String>) -> Option<(ResourceId, bool)> {
    let (id, exported) = resource_id(kind, name);
    if id.name.trim().is_empty() {
        ctx.err(
            Some(name.referenced),
            None,
            format!("{kind} resource with an empty name"),
        );
        return None;
    }
    if id.name.chars().any(|c| c.is_control()) {
        ctx.err(
            Some(name.referenced),
            Some(&id),
            "name contains control characters",
        );
        return None;
    }
    Some((id, exported))
}

fn meta(ctx: &mut Ctx<'_>, id: &ResourceId, y: Option<Box<MetaYaml>>) -> Meta {
    let mut m = Meta::default();
    let Some(y) = y else { return m };
    m.autoedge = y.autoedge.unwrap_or(m.autoedge);
    m.autogroup = y.autogroup.unwrap_or(m.autogroup);
    m.noop = y.noop.unwrap_or(m.noop);
    if let Some(r) = y.retry {
        m.retry = match r.value {
            -1 => Retry::Forever,
            n if (0..=i64::from(u32::MAX)).contains(&n) => Retry::Times(n as u32),
            n => {
                ctx.err(
                    Some(r.referenced),
                    Some(id),
                    format!("meta retry must be -1 (forever) or a count >= 0, not {n}"),
                );
                m.retry
            }
        };
    }
    if let Some(d) = y.delay {
        m.delay_ms = non_negative(ctx, id, "meta delay (ms)", &d).unwrap_or(0);
    }
    if let Some(p) = y.poll {
        m.poll_s = non_negative(ctx, id, "meta poll (s)", &p).unwrap_or(0);
    }
    m
}

fn non_negative(ctx: &mut Ctx<'_>, id: &ResourceId, what: &str, v: &Spanned<i64>) -> Option<u64> {
    match u64::try_from(v.value) {
        Ok(n) => Some(n),
        Err(_) => {
            ctx.err(
                Some(v.referenced),
                Some(id),
                format!("{what} must be >= 0, not {}", v.value),
            );
            None
        }
    }
}

fn noop(ctx: &mut Ctx<'_>, y: NoopYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Noop, &y.name)?;
    let meta = meta(ctx, &id, y.meta);
    let loc = y.name.referenced;
    Some((
        Resource {
            id,
            meta,
            params: Params::Noop { comment: y.comment },
            exported,
        },
        loc,
    ))
}

fn file(ctx: &mut Ctx<'_>, y: FileYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::File, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    let (path, path_loc) = path_or_name(&y.path, &id, &y.name);
    if let Some(problem) = path_problem(&path) {
        ctx.err(Some(path_loc), Some(&id), problem);
    }
    let state = match y.state.as_ref().map(|s| s.value.as_str()) {
        None | Some("exists") | Some("present") => FileState::Exists,
        Some("absent") => FileState::Absent,
        Some(other) => {
            let loc = y.state.as_ref().map(|s| s.referenced);
            ctx.err(
                loc,
                Some(&id),
                format!("state must be \"exists\" or \"absent\", not {other:?}"),
            );
            FileState::Exists
        }
    };
    let mode = y
        .mode
        .as_ref()
        .and_then(|m| match parse_mode(&m.value.as_text()) {
            Some(mode) => Some(mode),
            None => {
                let text = m.value.as_text();
                ctx.err(
                    Some(m.referenced),
                    Some(&id),
                    format!("mode {text:?} is not an octal mode like \"0644\""),
                );
                None
            }
        });
    let owner = y
        .owner
        .as_ref()
        .and_then(|o| principal(ctx, &id, "owner", o));
    let group = y
        .group
        .as_ref()
        .and_then(|g| principal(ctx, &id, "group", g));
    let source = y.source.as_ref().and_then(|src| {
        let v = &src.value;
        if !v.starts_with('/') || v.contains('\0') || v.split('/').any(|c| c == "..") {
            ctx.err(
                Some(src.referenced),
                Some(&id),
                format!("source {v:?} must be an absolute path without NUL or '..'"),
            );
            return None;
        }
        Some(normalise_path(v))
    });
    if source.is_some() && y.content.is_some() {
        let loc = y.source.as_ref().map(|s| s.referenced);
        ctx.err(loc, Some(&id), "give either content or source, not both");
    }
    if source.is_some() && state == FileState::Absent {
        let loc = y.source.as_ref().map(|s| s.referenced);
        ctx.err(
            loc,
            Some(&id),
            "state: absent removes the path: it takes no source",
        );
    }
    let recurse = y.recurse.as_ref().is_some_and(|r| r.value);
    if recurse && source.is_none() {
        let loc = y.recurse.as_ref().map(|r| r.referenced);
        ctx.err(loc, Some(&id), "recurse: true needs a source to copy");
    }
    let mut params = FileParams {
        path: normalise_path(&path),
        content: y.content,
        source,
        recurse,
        force: y.force.unwrap_or(false),
        state,
        mode,
        owner,
        group,
    };
    if recurse && !params.is_dir() {
        let loc = y.recurse.as_ref().map(|r| r.referenced);
        ctx.err(
            loc,
            Some(&id),
            "recurse: true syncs a directory: end the path in '/'",
        );
    }
    if params.is_dir() && params.content.take().is_some() {
        // The original ignored it, and its examples rely on that.
        ctx.warn(
            Some(path_loc),
            Some(&id),
            "a directory (path ending in '/') has no content: `content` is ignored",
        );
    }
    (ctx.diags.len() == before).then_some({
        (
            Resource {
                id,
                meta,
                params: Params::File(params),
                exported,
            },
            y.name.referenced,
        )
    })
}

/// Collapses repeated slashes; keeps the trailing slash that marks a directory.
/// Drops empty and `.` components (`//`, `/./`, a trailing `/.`); keeps the
/// trailing slash that marks a directory. `..` is rejected before this.
fn normalise_path(p: &str) -> String {
    let is_dir = p.ends_with('/') || p.ends_with("/.");
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut out = format!("/{}", parts.join("/"));
    if is_dir && out != "/" {
        out.push('/');
    }
    out
}

/// `"0644"`, `"644"`, `"0o644"` -> 0o644. At most 4 octal digits.
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

fn principal(
    ctx: &mut Ctx<'_>,
    id: &ResourceId,
    what: &str,
    v: &Spanned<ScalarYaml>,
) -> Option<Principal> {
    match &v.value {
        ScalarYaml::Int(n) => match u32::try_from(*n) {
            Ok(n) => Some(Principal::Id(n)),
            Err(_) => {
                ctx.err(
                    Some(v.referenced),
                    Some(id),
                    format!("{what} id {n} is out of range"),
                );
                None
            }
        },
        ScalarYaml::Str(s) if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() => {
            s.parse().ok().map(Principal::Id)
        }
        ScalarYaml::Str(s) if !s.is_empty() && !s.contains([':', '/', '\0', '\n']) => {
            Some(Principal::Name(s.clone()))
        }
        ScalarYaml::Str(s) => {
            ctx.err(
                Some(v.referenced),
                Some(id),
                format!("{what} {s:?} is not a valid name or id"),
            );
            None
        }
    }
}

fn command(cmd: Option<String>, shell: Option<String>) -> Option<Command> {
    let cmd = cmd.filter(|c| !c.trim().is_empty())?;
    Some(Command {
        cmd,
        shell: shell.filter(|s| !s.trim().is_empty()),
    })
}

fn exec(ctx: &mut Ctx<'_>, y: ExecYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Exec, &y.name)?;
    let before = ctx.diags.len();
    let mut meta = meta(ctx, &id, y.meta);
    let Some(cmd) = command(Some(y.cmd.value.clone()), y.shell) else {
        ctx.err(Some(y.cmd.referenced), Some(&id), "cmd must not be empty");
        return None;
    };
    let timeout_s = match &y.timeout {
        Some(t) => non_negative(ctx, &id, "timeout (s)", t).filter(|&t| t > 0),
        None => None,
    };
    if let Some(p) = &y.pollint {
        // `pollint` is the exec-specific spelling of `meta: {poll: N}`.
        if let Some(n) = non_negative(ctx, &id, "pollint (s)", p).filter(|&n| n > 0)
            && meta.poll_s == 0
        {
            meta.poll_s = n;
        }
    }
    if let Some(s) = &y.state
        && !matches!(s.value.as_str(), "present" | "")
    {
        ctx.err(
            Some(s.referenced),
            Some(&id),
            format!("state must be \"present\", not {:?}", s.value),
        );
    }
    let params = ExecParams {
        cmd,
        timeout_s,
        watch: command(y.watchcmd, y.watchshell),
        ifcmd: command(y.ifcmd, y.ifshell),
    };
    (ctx.diags.len() == before).then_some({
        (
            Resource {
                id,
                meta,
                params: Params::Exec(params),
                exported,
            },
            y.name.referenced,
        )
    })
}

/// `path` is `dir` or below it (both as the compiler spells paths).
fn is_under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    let path = path.trim_end_matches('/');
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/') || dir.is_empty())
}

fn timer(ctx: &mut Ctx<'_>, y: TimerYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Timer, &y.name)?;
    let before = ctx.diags.len();
    let mut meta = meta(ctx, &id, y.meta);
    let interval_s = match u64::try_from(y.interval.value) {
        Ok(n) if n > 0 => n,
        _ => {
            ctx.err(
                Some(y.interval.referenced),
                Some(&id),
                format!(
                    "interval must be a number of seconds > 0, not {}",
                    y.interval.value
                ),
            );
            1
        }
    };
    // The engine's poll timer is the tick.
    meta.poll_s = interval_s;
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::Timer { interval_s },
            exported,
        },
        y.name.referenced,
    ))
}

fn msg(ctx: &mut Ctx<'_>, y: MsgYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Msg, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    let priority = match &y.priority {
        None => Priority::Info,
        Some(p) if p.value.is_empty() => Priority::Info,
        Some(p) => Priority::parse(&p.value).unwrap_or_else(|| {
            ctx.err(
                Some(p.referenced),
                Some(&id),
                format!(
                    "priority must be one of Emerg, Alert, Crit, Err, Warning, Notice, Info, \
                     Debug, not {:?}",
                    p.value
                ),
            );
            Priority::Info
        }),
    };
    let fields = y
        .fields
        .as_ref()
        .map(|f| f.value.clone())
        .unwrap_or_default();
    for name in fields.keys() {
        // The journal's own rule for field names.
        let ok = !name.is_empty()
            && !name.starts_with('_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            let loc = y.fields.as_ref().map(|f| f.referenced);
            ctx.err(
                loc,
                Some(&id),
                format!(
                    "field name {name:?} must be upper-case letters, digits and '_', not \
                     starting with '_' or a digit"
                ),
            );
        }
    }
    let params = MsgParams {
        body: y.body.unwrap_or_default(),
        priority,
        fields,
        journal: y.journal.unwrap_or(false),
        syslog: y.syslog.unwrap_or(false),
    };
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::Msg(params),
            exported,
        },
        y.name.referenced,
    ))
}

/// A package or unit name as package managers and systemd spell them: no
/// whitespace, and none of the characters a PackageKit package id (`;`) or a
/// path (`/`) gives a meaning to.
fn valid_unit_or_package_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._:@".contains(c))
}

fn pkg(ctx: &mut Ctx<'_>, y: PkgYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Pkg, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    if !valid_unit_or_package_name(&id.name) {
        ctx.err(
            Some(y.name.referenced),
            Some(&id),
            format!(
                "{:?} is not a package name (letters, digits and + - . _ : @ only)",
                id.name
            ),
        );
    }
    let state = match &y.state {
        None => {
            ctx.err(
                Some(y.name.referenced),
                Some(&id),
                "state is required: installed, uninstalled, newest or a version",
            );
            PkgState::Installed
        }
        Some(s) => match s.value.as_str() {
            "installed" => PkgState::Installed,
            "uninstalled" => PkgState::Uninstalled,
            "newest" => PkgState::Newest,
            v if !v.is_empty() && v.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                if v.chars().any(|c| c.is_whitespace() || c == ';') {
                    ctx.err(
                        Some(s.referenced),
                        Some(&id),
                        format!("version {v:?} must not contain whitespace or ';'"),
                    );
                }
                PkgState::Version(v.to_string())
            }
            other => {
                ctx.err(
                    Some(s.referenced),
                    Some(&id),
                    format!(
                        "state must be installed, uninstalled, newest or a version \
                         (starting with a digit), not {other:?}"
                    ),
                );
                PkgState::Installed
            }
        },
    };
    let params = PkgParams {
        name: id.name.clone(),
        state,
        allow_untrusted: y.allowuntrusted.unwrap_or(false),
        allow_nonfree: y.allownonfree.unwrap_or(false),
        allow_unsupported: y.allowunsupported.unwrap_or(false),
    };
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::Pkg(params),
            exported,
        },
        y.name.referenced,
    ))
}

fn svc(ctx: &mut Ctx<'_>, y: SvcYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Svc, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    let name = id
        .name
        .strip_suffix(".service")
        .unwrap_or(&id.name)
        .to_string();
    if !valid_unit_or_package_name(&name) {
        ctx.err(
            Some(y.name.referenced),
            Some(&id),
            format!(
                "{:?} is not a unit name (letters, digits and + - . _ : @ only)",
                id.name
            ),
        );
    }
    let state = y.state.as_ref().and_then(|s| match s.value.as_str() {
        "running" => Some(SvcState::Running),
        "stopped" => Some(SvcState::Stopped),
        "" => None,
        other => {
            ctx.err(
                Some(s.referenced),
                Some(&id),
                format!("state must be running or stopped, not {other:?}"),
            );
            None
        }
    });
    let startup = y.startup.as_ref().and_then(|s| match s.value.as_str() {
        "enabled" => Some(SvcStartup::Enabled),
        "disabled" => Some(SvcStartup::Disabled),
        "" => None,
        other => {
            ctx.err(
                Some(s.referenced),
                Some(&id),
                format!("startup must be enabled or disabled, not {other:?}"),
            );
            None
        }
    });
    let params = SvcParams {
        name,
        state,
        startup,
        session: y.session.unwrap_or(false),
    };
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::Svc(params),
            exported,
        },
        y.name.referenced,
    ))
}

#[cfg(test)]
mod tests;
