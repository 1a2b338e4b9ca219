//! What a member keeps in its data directory besides the raft log and the
//! snapshots: its member ID and the members it once knew.

use crate::log_store;
#[cfg(doc)]
use crate::{StoreConfig, member_id};

/// The file that keeps the client URLs of the members a discarded state knew.
pub(crate) const KNOWN_MEMBERS_FILE: &str = "known_members";

/// Whether a data directory holds store state (a member ID or a raft log),
/// not just the members it once knew.
pub fn has_store_state(dir: &std::path::Path) -> bool {
    [MEMBER_ID_FILE, log_store::LOG_FILE]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// The client URLs [`StoreConfig::remember_members`] kept in a data directory.
pub fn known_members(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(KNOWN_MEMBERS_FILE))
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The file in a data directory that holds the member ID its state belongs to.
pub(crate) const MEMBER_ID_FILE: &str = "member_id";

/// The member ID a data directory's state was created with, if it has one.
/// A directory from before IDs were stored holds the hostname's [`member_id`]
/// (the only ID there was); it gets the file at its next start.
pub fn stored_member_id(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(MEMBER_ID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}
