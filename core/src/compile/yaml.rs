//! The YAML schema of a graph file, as serde types. Every struct denies unknown
//! fields so a typo is an error with a location, never silently ignored.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A 1-based line and column in the graph's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    line: u64,
    column: u64,
}

impl Location {
    pub fn new(line: u64, column: u64) -> Self {
        Location { line, column }
    }

    pub fn line(&self) -> u64 {
        self.line
    }

    pub fn column(&self) -> u64 {
        self.column
    }
}

impl From<serde_saphyr::Location> for Location {
    fn from(l: serde_saphyr::Location) -> Self {
        Location::new(l.line(), l.column())
    }
}

/// A value and where it is written. Either reader fills it in: serde_saphyr
/// through its own `Spanned` (the newtype path), [`super::block_yaml`] as a
/// map of `line`, `column` and `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub referenced: Location,
}

/// The newtype name [`Spanned`] asks its deserializer for.
pub const SPANNED: &str = "__mgmt_spanned";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpannedVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
            type Value = Spanned<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Self::Value, D::Error> {
                let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
                Ok(Spanned {
                    value: spanned.value,
                    referenced: spanned.referenced.into(),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                fn field<'de, A: MapAccess<'de>>(
                    map: &mut A,
                    name: &'static str,
                ) -> Result<(), A::Error> {
                    match map.next_key::<String>()? {
                        Some(key) if key == name => Ok(()),
                        _ => Err(de::Error::missing_field(name)),
                    }
                }
                field(&mut map, "line")?;
                let line = map.next_value()?;
                field(&mut map, "column")?;
                let column = map.next_value()?;
                field(&mut map, "value")?;
                Ok(Spanned {
                    value: map.next_value()?,
                    referenced: Location::new(line, column),
                })
            }
        }

        deserializer.deserialize_newtype_struct(SPANNED, SpannedVisitor(PhantomData))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphYaml {
    pub graph: Spanned<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub resources: Option<ResourcesYaml>,
    #[serde(default)]
    pub edges: Option<Vec<Spanned<EdgeYaml>>>,
    #[serde(default)]
    pub collect: Option<Vec<CollectYaml>>,
}

/// One list per kind. An unknown kind is an unknown field here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesYaml {
    #[serde(default)]
    pub noop: Option<Vec<NoopYaml>>,
    #[serde(default)]
    pub file: Option<Vec<FileYaml>>,
    #[serde(default)]
    pub exec: Option<Vec<ExecYaml>>,
    #[serde(default)]
    pub pkg: Option<Vec<PkgYaml>>,
    #[serde(default)]
    pub svc: Option<Vec<SvcYaml>>,
    #[serde(default)]
    pub timer: Option<Vec<TimerYaml>>,
    #[serde(default)]
    pub msg: Option<Vec<MsgYaml>>,
    #[serde(default)]
    pub user: Option<Vec<UserYaml>>,
    #[serde(default)]
    pub group: Option<Vec<GroupYaml>>,
    #[serde(default)]
    pub line: Option<Vec<LineYaml>>,
    #[serde(default)]
    pub sysctl: Option<Vec<SysctlYaml>>,
    #[serde(default)]
    pub mount: Option<Vec<MountYaml>>,
    #[serde(default)]
    pub hostname: Option<Vec<HostnameYaml>>,
}

/// Boxed in each kind's YAML: most resources have none, and every resource
/// of a graph is read before any compiles (a hundred bytes each, inline).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaYaml {
    pub autoedge: Option<bool>,
    pub autogroup: Option<bool>,
    pub noop: Option<bool>,
    pub retry: Option<Spanned<i64>>,
    pub delay: Option<Spanned<i64>>,
    pub poll: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub source: Option<Spanned<String>>,
    #[serde(default)]
    pub recurse: Option<Spanned<bool>>,
    #[serde(default)]
    pub force: Option<bool>,
    #[serde(default)]
    pub state: Option<Spanned<String>>,
    #[serde(default)]
    pub mode: Option<Spanned<ScalarYaml>>,
    #[serde(default)]
    pub owner: Option<Spanned<ScalarYaml>>,
    #[serde(default)]
    pub group: Option<Spanned<ScalarYaml>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    pub cmd: Spanned<String>,
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default)]
    pub timeout: Option<Spanned<i64>>,
    #[serde(default)]
    pub watchcmd: Option<String>,
    #[serde(default)]
    pub watchshell: Option<String>,
    #[serde(default)]
    pub ifcmd: Option<String>,
    #[serde(default)]
    pub ifshell: Option<String>,
    #[serde(default)]
    pub pollint: Option<Spanned<i64>>,
    #[serde(default)]
    pub state: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkgYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    #[serde(default)]
    pub state: Option<Spanned<String>>,
    #[serde(default)]
    pub allowuntrusted: Option<bool>,
    #[serde(default)]
    pub allownonfree: Option<bool>,
    #[serde(default)]
    pub allowunsupported: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvcYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    #[serde(default)]
    pub state: Option<Spanned<String>>,
    #[serde(default)]
    pub startup: Option<Spanned<String>>,
    #[serde(default)]
    pub session: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    pub interval: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsgYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub priority: Option<Spanned<String>>,
    #[serde(default)]
    pub fields: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    #[serde(default)]
    pub journal: Option<bool>,
    #[serde(default)]
    pub syslog: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    #[serde(default)]
    pub state: Option<Spanned<String>>,
    #[serde(default)]
    pub uid: Option<Spanned<i64>>,
    /// The primary group (Ansible's `group`, Puppet's `gid`): a name or a gid.
    #[serde(default)]
    pub group: Option<Spanned<ScalarYaml>>,
    #[serde(default)]
    pub gid: Option<Spanned<ScalarYaml>>,
    #[serde(default)]
    pub groups: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub home: Option<Spanned<String>>,
    #[serde(default)]
    pub managehome: Option<bool>,
    #[serde(default)]
    pub shell: Option<Spanned<String>>,
    #[serde(default)]
    pub comment: Option<Spanned<String>>,
    #[serde(default)]
    pub password: Option<Spanned<String>>,
    #[serde(default)]
    pub system: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    #[serde(default)]
    pub state: Option<Spanned<String>>,
    #[serde(default)]
    pub gid: Option<Spanned<i64>>,
    #[serde(default)]
    pub system: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub line: Option<Spanned<String>>,
    /// Ansible's `regexp`, Puppet's `match`.
    #[serde(default, rename = "match", alias = "regexp")]
    pub matches: Option<Spanned<String>>,
    #[serde(default)]
    pub state: Option<Spanned<String>>,
    #[serde(default, alias = "insertafter")]
    pub after: Option<Spanned<String>>,
    #[serde(default, alias = "insertbefore")]
    pub before: Option<Spanned<String>>,
    #[serde(default)]
    pub create: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlYaml {
    /// The key (`net.ipv4.ip_forward`).
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    pub value: Spanned<ScalarYaml>,
    #[serde(default)]
    pub persist: Option<bool>,
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    #[serde(default)]
    pub interval: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    /// The mount point; defaults to the name.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default, alias = "src")]
    pub device: Option<Spanned<String>>,
    #[serde(default)]
    pub fstype: Option<Spanned<String>>,
    #[serde(default, alias = "opts")]
    pub options: Option<Spanned<String>>,
    #[serde(default)]
    pub dump: Option<Spanned<i64>>,
    #[serde(default, alias = "passno")]
    pub pass: Option<Spanned<i64>>,
    #[serde(default)]
    pub state: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostnameYaml {
    pub name: Spanned<String>,
    #[serde(default)]
    pub meta: Option<Box<MetaYaml>>,
    /// The host name; defaults to the resource's name.
    #[serde(default)]
    pub hostname: Option<Spanned<String>>,
}

/// A string or an integer, for fields such as `mode: 0644` or `owner: 0` that
/// users write both ways.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ScalarYaml {
    Int(u64),
    Str(String),
}

impl ScalarYaml {
    pub fn as_text(&self) -> String {
        match self {
            ScalarYaml::Int(i) => i.to_string(),
            ScalarYaml::Str(s) => s.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeYaml {
    #[serde(default)]
    pub name: Option<String>,
    pub from: EndpointYaml,
    pub to: EndpointYaml,
    #[serde(default)]
    pub notify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointYaml {
    #[serde(alias = "res")]
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectYaml {
    pub kind: String,
    #[serde(default)]
    pub pattern: Option<String>,
}
