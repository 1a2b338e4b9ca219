//! The compiled graph: resources, the edges between them, and the vertices the
//! engine schedules (one resource each, or a group after AutoGroup).

use std::fmt::Write as _;

use serde::Serialize;

use crate::resource::{Kind, Resource, ResourceId};

/// Index into [`Graph::resources`].
pub type ResIdx = usize;
/// Index into [`Graph::vertices`].
pub type VertexId = usize;

/// A dependency between two resources: `from` runs before `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResEdge {
    pub from: ResIdx,
    pub to: ResIdx,
    pub name: String,
    /// Send a refresh to `to` when `from` changed something.
    pub notify: bool,
    /// Added by AutoEdges rather than written by the user.
    pub auto: bool,
}

/// One schedulable unit: a resource, or a group of same-kind resources that run
/// together. Members keep their identity; the first one names the vertex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vertex {
    pub members: Vec<ResIdx>,
}

impl Vertex {
    pub fn head(&self) -> ResIdx {
        self.members[0]
    }
}

/// A dependency between two vertices, derived from the resource edges.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VertexEdge {
    pub from: VertexId,
    pub to: VertexId,
    pub notify: bool,
    /// True only if every resource edge behind it was automatic.
    pub auto: bool,
}

/// A decision of the compiler, kept as data and worded only when shown
/// ([`Graph::note_texts`]): a graph of 1 000 files makes 2 000 of them, and a
/// run at the default log level shows none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// AutoEdges added `from -> to`.
    EdgeAdded { from: ResIdx, to: ResIdx },
    /// AutoGroup ran the vertex headed by `member` in the one headed by `into`.
    Grouped { member: ResIdx, into: ResIdx },
    /// Any other decision, worded where it was made (they are few).
    Text(String),
}

/// A [`Note`] in words, as the CLI logs it.
pub struct NoteText<'a> {
    graph: &'a Graph,
    note: &'a Note,
}

impl std::fmt::Display for NoteText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = |r: ResIdx| &self.graph.resources[r].id;
        match self.note {
            Note::EdgeAdded { from, to } => {
                write!(f, "AutoEdge: adding {} -> {}", id(*from), id(*to))
            }
            Note::Grouped { member, into } => {
                write!(f, "Grouping: {} into {}", id(*member), id(*into))
            }
            Note::Text(text) => f.write_str(text),
        }
    }
}

/// `collect:` entries, kept for exported-resource collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collect {
    pub kind: String,
    pub pattern: Option<String>,
}

/// A validated, acyclic resource graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    pub name: String,
    pub comment: Option<String>,
    /// The only host this graph may run on.
    pub hostname: Option<crate::hostname::Hostname>,
    /// Resources run on this host, sorted by `Kind[name]`.
    pub resources: Vec<Resource>,
    /// Resources named `@@...`: exported to other hosts, not run here.
    pub exported: Vec<Resource>,
    pub edges: Vec<ResEdge>,
    pub vertices: Vec<Vertex>,
    pub collect: Vec<Collect>,
    /// Decisions the compiler made that a user may want to see (autoedges added
    /// or refused, grouping), in order. The CLI logs them ([`Graph::note_texts`]).
    pub notes: Vec<Note>,
    /// Input accepted but ignored, located like errors (a directory given
    /// `content`, as the original allowed). The CLI logs them as warnings.
    pub warnings: Vec<crate::diagnostic::Diagnostic>,
}

impl Graph {
    /// The vertex a resource belongs to, for every resource.
    pub fn vertex_of(&self) -> Vec<VertexId> {
        let mut of = vec![0; self.resources.len()];
        for (v, vertex) in self.vertices.iter().enumerate() {
            for &m in &vertex.members {
                of[m] = v;
            }
        }
        of
    }

    /// Edges between vertices: resource edges re-attached to their vertices,
    /// duplicates merged, edges inside a vertex dropped. Sorted.
    pub fn vertex_edges(&self) -> Vec<VertexEdge> {
        let of = self.vertex_of();
        // Sorted and merged in place: a graph may have 100 000 edges, and a
        // map would allocate a node for every few of them.
        let mut merged: Vec<VertexEdge> = self
            .edges
            .iter()
            .map(|e| VertexEdge {
                from: of[e.from],
                to: of[e.to],
                notify: e.notify,
                auto: e.auto,
            })
            .filter(|e| e.from != e.to)
            .collect();
        merged.sort_unstable_by_key(|e| (e.from, e.to));
        merged.dedup_by(|later, kept| {
            let same = (later.from, later.to) == (kept.from, kept.to);
            if same {
                kept.notify |= later.notify;
                kept.auto &= later.auto;
            }
            same
        });
        merged
    }

    /// The compiler's notes, in words.
    pub fn note_texts(&self) -> impl Iterator<Item = NoteText<'_>> {
        self.notes.iter().map(|note| NoteText { graph: self, note })
    }

    /// The identity that names a vertex.
    pub fn vertex_id(&self, v: VertexId) -> &ResourceId {
        &self.resources[self.vertices[v].head()].id
    }

    /// The graph as `mgmt graph` prints it. This JSON shape is a public interface.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.json_view()).expect("graph JSON is always serializable")
    }

    /// [`Graph::to_json`]'s text, pretty-printed straight to `out` (no
    /// `Value` tree in between: `mgmt graph` of 100 000 resources built one
    /// of hundreds of MB).
    pub fn write_json(&self, out: impl std::io::Write) -> serde_json::Result<()> {
        serde_json::to_writer_pretty(out, &self.json_view())
    }

    /// What [`Graph::to_json`] and [`Graph::write_json`] say. Fields in
    /// alphabetical order, as a `serde_json::Value` (a sorted map) prints
    /// them: both write the same text.
    fn json_view(&self) -> JsonGraph<'_> {
        let vertices = self
            .vertices
            .iter()
            .map(|v| {
                let head = &self.resources[v.head()].id;
                JsonVertex {
                    grouped: v.members[1..]
                        .iter()
                        .map(|&m| IdText(&self.resources[m].id))
                        .collect(),
                    id: IdText(head),
                    kind: head.kind.yaml_name(),
                    name: &head.name,
                }
            })
            .collect();
        let edges = self
            .vertex_edges()
            .into_iter()
            .map(|e| JsonEdge {
                auto: e.auto,
                from: IdText(self.vertex_id(e.from)),
                notify: e.notify,
                to: IdText(self.vertex_id(e.to)),
            })
            .collect();
        let resource_edges = self
            .edges
            .iter()
            .map(|e| JsonEdge {
                auto: e.auto,
                from: IdText(&self.resources[e.from].id),
                notify: e.notify,
                to: IdText(&self.resources[e.to].id),
            })
            .collect();
        JsonGraph {
            edges,
            graph: &self.name,
            resource_edges,
            vertices,
        }
    }

    /// The graph in Graphviz dot. A group is drawn as one node listing its members.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(&self.name));
        for (v, vertex) in self.vertices.iter().enumerate() {
            let label = vertex
                .members
                .iter()
                .map(|&m| dot_escape(&self.resources[m].id.to_string()))
                .collect::<Vec<_>>()
                .join("\\n");
            let _ = writeln!(
                out,
                "\t\"{}\" [label=\"{}\"];",
                dot_escape(&self.vertex_id(v).to_string()),
                label
            );
        }
        for e in self.vertex_edges() {
            let style = if e.auto { " [style=dashed]" } else { "" };
            let _ = writeln!(
                out,
                "\t\"{}\" -> \"{}\"{};",
                dot_escape(&self.vertex_id(e.from).to_string()),
                dot_escape(&self.vertex_id(e.to).to_string()),
                style
            );
        }
        out.push_str("}\n");
        out
    }

    /// Resources of one kind, in order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (ResIdx, &Resource)> {
        self.resources
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.kind() == kind)
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `Graph::json_view`'s shapes (see there for the field order).
#[derive(Serialize)]
struct JsonGraph<'a> {
    edges: Vec<JsonEdge<'a>>,
    graph: &'a str,
    /// Edges between resources, before grouping joined their ends.
    resource_edges: Vec<JsonEdge<'a>>,
    vertices: Vec<JsonVertex<'a>>,
}

#[derive(Serialize)]
struct JsonVertex<'a> {
    grouped: Vec<IdText<'a>>,
    id: IdText<'a>,
    kind: &'static str,
    name: &'a str,
}

#[derive(Serialize)]
struct JsonEdge<'a> {
    auto: bool,
    from: IdText<'a>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    notify: bool,
    to: IdText<'a>,
}

/// A resource ID written as its text (`Kind[name]`) straight into the
/// output: a graph of 150 000 resources made 450 000 strings for it.
struct IdText<'a>(&'a ResourceId);

impl Serialize for IdText<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}
