//! Clustering decisions. Every host runs an [`Agent`] (when to volunteer,
//! start, stop and discard its store server, how to hold its lease); the host
//! whose store is raft leader also runs a [`Nominator`] (which volunteers
//! become members), inside its agent. Both only decide: the store's cluster
//! driver (`mgmt_store::cluster`) feeds them what it observes and carries out
//! what they emit. [`keys`] is the `/_mgmt/` key space they talk through.

pub mod agent;
pub mod keys;
pub mod nominator;

pub use agent::Agent;
pub use nominator::{Bug, Nominator};

/// A host name (the member name, and the `<host>` of its keys).
pub type Host = String;

/// The size used when `/_mgmt/idealClusterSize` is absent.
pub const DEFAULT_IDEAL_CLUSTER_SIZE: u32 = 5;

/// A member ID from a name: FNV-1a, never 0 (raft's "no node"). The
/// bootstrap member's ID is its hostname's.
pub fn member_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    if h == 0 { 1 } else { h }
}

/// The member ID a host serves under for the nomination whose key was created
/// at `nomination_revision`. Each nomination gets a new ID, as each etcd
/// member gets a new ID: a host that left and discarded its raft state must
/// never rejoin under an ID the cluster (or a leader's replication progress)
/// still associates with the old log, or raft sees that log go backwards.
/// MemberList still names every member by its hostname.
pub fn incarnation_id(host: &str, nomination_revision: i64) -> u64 {
    member_id(&format!("{host}#{nomination_revision}"))
}
