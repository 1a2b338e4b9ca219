//! openraft type configuration.

use std::fmt;
use std::io::Cursor;

use mgmt_core::kv::{Applied, Timed};
use serde::{Deserialize, Serialize};

/// What the cluster knows about a member: etcd's `Member` without the ID.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// The member's hostname.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name, self.peer_urls.join(","))
    }
}

openraft::declare_raft_types!(
    /// Raft types of the store: log entries carry timed key-space commands.
    pub TypeConfig:
        D = Timed,
        R = Option<Applied>,
        Node = MemberNode,
        AsyncRuntime = crate::runtime::StoreRuntime,
);

pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
pub type Raft = openraft::Raft<TypeConfig>;

/// A member's raft ID (also its etcd member ID) from a name; the clustering
/// rules choose which name (`mgmt_core::cluster::incarnation_id`).
pub use mgmt_core::cluster::member_id;
