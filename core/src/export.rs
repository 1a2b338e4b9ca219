//! Exported resources in the store: the one place their keys and values are
//! built and parsed.
//!
//! - Key: `/_mgmt/exported/<host>/resources/<kind>/<name>` (the original's
//!   layout), `kind` as YAML spells it (`file`).
//! - Value, version 1: JSON, readable with `etcdctl get`:
//!   `{"version":1,"kind":"file","name":"f2a","resource":{...}}`, where
//!   `resource` is the resource as the graph format writes it (the same field
//!   names, so what a host collects is compiled, and validated, exactly as if
//!   it were written in its own graph).

use serde_json::{Map, Value, json};

use crate::compile::{CompileError, CompileOptions, compile_with};
use crate::graph::Graph;
use crate::hostname::Hostname;
use crate::resource::{FileState, Kind, Params, Resource, Retry, SvcStartup, SvcState};

/// Every host's exports live under this prefix.
pub const PREFIX: &str = "/_mgmt/exported/";

/// The value format this build writes, and the only one it reads.
pub const VERSION: u64 = 1;

/// The prefix of one host's exports.
pub fn host_prefix(host: &str) -> String {
    format!("{PREFIX}{host}/resources/")
}

/// The key of one exported resource.
pub fn key(host: &str, r: &Resource) -> String {
    key_of(host, r.kind(), &r.id.name)
}

/// The key of the export `kind`/`name` of `host`.
pub fn key_of(host: &str, kind: Kind, name: &str) -> String {
    format!("{}{}/{name}", host_prefix(host), kind.yaml_name())
}

/// An exported resource as read from the store, not compiled yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    pub host: String,
    pub kind: Kind,
    pub name: String,
    /// The resource in the graph format's field names.
    pub resource: Map<String, Value>,
}

/// Parses a key and its value; `Err` names what is wrong (the caller warns
/// and skips it: one bad host never stops another's graph).
pub fn decode(key: &str, value: &[u8]) -> Result<Exported, String> {
    let rest = key
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("{key}: not under {PREFIX}"))?;
    let mut parts = rest.splitn(4, '/');
    let (host, resources, kind, name) = (parts.next(), parts.next(), parts.next(), parts.next());
    let (Some(host), Some("resources"), Some(kind), Some(name)) = (host, resources, kind, name)
    else {
        return Err(format!(
            "{key}: expected {PREFIX}<host>/resources/<kind>/<name>"
        ));
    };
    Hostname::parse(host).map_err(|e| format!("{key}: {e}"))?;
    let kind = Kind::parse(kind).ok_or_else(|| format!("{key}: unknown kind {kind:?}"))?;
    let v: Value =
        serde_json::from_slice(value).map_err(|e| format!("{key}: the value is not JSON: {e}"))?;
    if v.get("version").and_then(Value::as_u64) != Some(VERSION) {
        return Err(format!("{key}: not a version {VERSION} export"));
    }
    let resource = v
        .get("resource")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| format!("{key}: no resource in the value"))?;
    if resource.get("name").and_then(Value::as_str) != Some(name) {
        return Err(format!("{key}: the value names another resource"));
    }
    Ok(Exported {
        host: host.to_string(),
        kind,
        name: name.to_string(),
        resource,
    })
}

/// The value of an exported resource.
pub fn encode(r: &Resource) -> String {
    json!({
        "version": VERSION,
        "kind": r.kind().yaml_name(),
        "name": r.id.name,
        "resource": Value::Object(to_mapping(r)),
    })
    .to_string()
}

/// A resource in the graph format's field names (what a user would write).
pub fn to_mapping(r: &Resource) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(r.id.name));
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            m.insert(k.into(), v);
        }
    };
    match &r.params {
        Params::Noop { comment } => put("comment", json!(comment)),
        Params::File(f) => {
            put("path", json!(f.path));
            put("content", json!(f.content));
            put("source", json!(f.source));
            if f.recurse {
                put("recurse", json!(true));
            }
            if f.force {
                put("force", json!(true));
            }
            put(
                "state",
                json!(match f.state {
                    FileState::Exists => "exists",
                    FileState::Absent => "absent",
                }),
            );
            put("mode", json!(f.mode.map(|m| format!("{m:04o}"))));
            put("owner", json!(f.owner.as_ref().map(|p| p.to_string())));
            put("group", json!(f.group.as_ref().map(|p| p.to_string())));
        }
        Params::Exec(e) => {
            put("cmd", json!(e.cmd.cmd));
            put("shell", json!(e.cmd.shell));
            put("timeout", json!(e.timeout_s));
            put("watchcmd", json!(e.watch.as_ref().map(|c| &c.cmd)));
            put(
                "watchshell",
                json!(e.watch.as_ref().and_then(|c| c.shell.as_ref())),
            );
            put("ifcmd", json!(e.ifcmd.as_ref().map(|c| &c.cmd)));
            put(
                "ifshell",
                json!(e.ifcmd.as_ref().and_then(|c| c.shell.as_ref())),
            );
        }
        Params::Pkg(p) => {
            put(
                "state",
                json!(p.state.to_string().trim_start_matches("version ")),
            );
            put("allowuntrusted", json!(p.allow_untrusted));
            put("allownonfree", json!(p.allow_nonfree));
            put("allowunsupported", json!(p.allow_unsupported));
        }
        Params::Svc(s) => {
            put(
                "state",
                json!(s.state.map(|st| match st {
                    SvcState::Running => "running",
                    SvcState::Stopped => "stopped",
                })),
            );
            put(
                "startup",
                json!(s.startup.map(|st| match st {
                    SvcStartup::Enabled => "enabled",
                    SvcStartup::Disabled => "disabled",
                })),
            );
            put("session", json!(s.session));
        }
        Params::Timer { interval_s } => put("interval", json!(interval_s)),
        Params::Msg(msg) => {
            put("body", json!(msg.body));
            put("priority", json!(format!("{:?}", msg.priority)));
            put("fields", json!(msg.fields));
            put("journal", json!(msg.journal));
            put("syslog", json!(msg.syslog));
        }
        Params::User(u) => {
            put("state", json!(u.state.as_str()));
            put("uid", json!(u.uid));
            put("group", json!(u.group.as_ref().map(|g| g.to_string())));
            put("groups", json!(u.groups));
            put("home", json!(u.home));
            if u.managehome {
                put("managehome", json!(true));
            }
            put("shell", json!(u.shell));
            put("comment", json!(u.comment));
            put("password", json!(u.password));
            if u.system {
                put("system", json!(true));
            }
        }
        Params::Group(g) => {
            put("state", json!(g.state.as_str()));
            put("gid", json!(g.gid));
            if g.system {
                put("system", json!(true));
            }
        }
        Params::Line(l) => {
            put("path", json!(l.path));
            put("line", json!(l.line));
            put("match", json!(l.matches));
            put("state", json!(l.state.as_str()));
            put("after", json!(l.after));
            put("before", json!(l.before));
            if l.create {
                put("create", json!(true));
            }
        }
        Params::Sysctl(p) => {
            put("value", json!(p.value));
            put("persist", json!(p.persist.is_some()));
            put("file", json!(p.persist));
            put("interval", json!(p.interval_s));
        }
        Params::Mount(m) => {
            put("path", json!(m.path));
            put("device", json!((!m.device.is_empty()).then_some(&m.device)));
            put("fstype", json!((!m.fstype.is_empty()).then_some(&m.fstype)));
            put("options", json!(m.options.join(",")));
            put("dump", json!(m.dump));
            put("pass", json!(m.pass));
            put("state", json!(m.state.as_str()));
        }
        Params::Hostname { hostname } => put("hostname", json!(hostname)),
    }
    let meta = &r.meta;
    m.insert(
        "meta".into(),
        json!({
            "autoedge": meta.autoedge,
            "autogroup": meta.autogroup,
            "noop": meta.noop,
            "retry": match meta.retry { Retry::Times(n) => i64::from(n), Retry::Forever => -1 },
            "delay": meta.delay_ms,
            "poll": meta.poll_s,
        }),
    );
    m
}

/// Compiles one collected resource on its own (so that a bad one is skipped
/// alone), with the file `pattern` rule of the original: the directory
/// `pattern` replaces the exported path's directory, keeping the file name.
pub fn compile_collected(e: &Exported, pattern: Option<&str>) -> Result<Resource, String> {
    let mut mapping = e.resource.clone();
    if let (Kind::File, Some(dir)) = (e.kind, pattern)
        && let Some(path) = mapping.get("path").and_then(Value::as_str)
    {
        let file = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let trailing = if path.ends_with('/') { "/" } else { "" };
        let new = format!("{}/{file}{trailing}", dir.trim_end_matches('/'));
        mapping.insert("path".into(), json!(new));
    }
    // JSON is YAML: a one-resource graph in the user's own format.
    let text = format!(
        "graph: collected\nresources:\n  {}:\n  - {}\n",
        e.kind.yaml_name(),
        Value::Object(mapping)
    );
    let opts = CompileOptions {
        autoedge: false,
        autogroup: false,
        ..Default::default()
    };
    let from = format!("{} (exported by {})", e.name, e.host);
    let g: Graph =
        compile_with(&from, &text, &opts).map_err(|err: CompileError| err.to_string())?;
    g.resources
        .into_iter()
        .next()
        .ok_or_else(|| format!("{from}: no resource"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;

    #[test]
    fn an_export_round_trips_through_its_key_and_value() {
        let g = compile(
            "g.yaml",
            "graph: g\nresources:\n  file:\n  - name: \"@@f2a\"\n    path: /tmp/mgmtA/f2a\n    content: |\n      i am f2\n    mode: \"0640\"\n",
        )
        .unwrap();
        let r = &g.exported[0];
        let k = key("h1", r);
        assert_eq!(k, "/_mgmt/exported/h1/resources/file/f2a");
        let e = decode(&k, encode(r).as_bytes()).unwrap();
        assert_eq!(
            (e.host.as_str(), e.kind, e.name.as_str()),
            ("h1", Kind::File, "f2a")
        );
        let same = compile_collected(&e, None).unwrap();
        assert_eq!(same.params, r.params);
        assert_eq!(same.meta, r.meta);
        let moved = compile_collected(&e, Some("/tmp/mgmtB/")).unwrap();
        let Params::File(f) = &moved.params else {
            panic!()
        };
        assert_eq!(f.path, "/tmp/mgmtB/f2a");
    }

    #[test]
    fn bad_keys_and_values_say_what_is_wrong() {
        for (k, v, want) in [
            ("/_mgmt/exported/h1/resources/file/f", "{", "not JSON"),
            (
                "/_mgmt/exported/h1/resources/file/f",
                r#"{"version":2}"#,
                "not a version 1",
            ),
            (
                "/_mgmt/exported/h1/resources/blob/f",
                r#"{"version":1}"#,
                "unknown kind",
            ),
            ("/_mgmt/exported/h1/other", "{}", "expected"),
            ("/_mgmt/exported/a..b/resources/file/f", "{}", "a..b"),
            (
                "/_mgmt/exported/h1/resources/file/f",
                r#"{"version":1,"resource":{"name":"g"}}"#,
                "another resource",
            ),
        ] {
            let e = decode(k, v.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{k} {v}: {e}");
        }
        let e = decode(
            "/_mgmt/exported/h1/resources/file/f",
            br#"{"version":1,"resource":{"name":"f","path":"relative"}}"#,
        )
        .unwrap();
        let err = compile_collected(&e, None).unwrap_err();
        assert!(
            err.contains("must be absolute") && err.contains("exported by h1"),
            "{err}"
        );
    }
}
