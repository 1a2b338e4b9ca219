//! Deploys: graphs put into the cluster for every agent to run. The one place
//! their keys and values are built and parsed, and where the write of the
//! next one is planned.
//!
//! - Key: `/_mgmt/deploy/<id>`, the id zero-padded to 20 digits so the keys
//!   sort as the ids do (`/_mgmt/deploy/00000000000000000003`).
//! - Value, version 1: JSON, readable with `etcdctl get`:
//!   `{"version":1,"id":3,"time":"...","author":"root@h1","file":"site.yaml",
//!   "sha256":"...","text":"..."}`. `text` is the graph as written (a
//!   template, rendered by each host for itself).
//! - Deploy `N+1` is written in one txn that requires `N+1` to be absent and
//!   `N` present (upstream mgmt's rule): of two concurrent deploys one wins.
//!   The same txn deletes all but the newest [`KEEP`].

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Every deploy lives under this prefix.
pub const PREFIX: &str = crate::keyspace::DEPLOYS;

/// The value format this build writes, and the only one it reads.
pub const VERSION: u64 = 1;

/// Deploys kept: the newest 50, older ones deleted by the txn that writes a new one.
pub const KEEP: usize = 50;

/// The key of deploy `id`.
pub fn key(id: u64) -> String {
    format!("{PREFIX}{id:020}")
}

/// The id a key under [`PREFIX`] names.
pub fn id_of(key: &str) -> Result<u64, String> {
    let digits = key
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("{key}: not under {PREFIX}"))?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{key}: expected {PREFIX} and a 20-digit id"));
    }
    match digits.parse::<u64>() {
        // The largest would leave no next id.
        Ok(0) | Ok(u64::MAX) | Err(_) => {
            Err(format!("{key}: not a deploy id (1 to {})", u64::MAX - 1))
        }
        Ok(id) => Ok(id),
    }
}

/// One deploy, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    pub version: u64,
    pub id: u64,
    /// When it was written (RFC 3339, UTC), as the deploying host's clock said.
    pub time: String,
    /// `user@host`, the authenticated user, or the client certificate's name.
    pub author: String,
    /// The file it was read from, for errors (`site.yaml:3:5`).
    pub file: String,
    /// SHA-256 of `text`, lowercase hex.
    pub sha256: String,
    pub text: String,
}

/// What a deploy is made of before it has an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub time: String,
    pub author: String,
    pub file: String,
    pub text: String,
}

impl Deploy {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a deploy always serialises")
    }

    /// Parses a key and its value; `Err` names the key and what is wrong.
    pub fn decode(key: &str, value: &[u8]) -> Result<Deploy, String> {
        let id = id_of(key)?;
        let d: Deploy = crate::fleet::decode_versioned(key, value, VERSION, "deploy")?;
        if d.id != id {
            return Err(format!("{key}: the value is deploy {}", d.id));
        }
        if d.sha256 != sha256_hex(&d.text) {
            return Err(format!("{key}: the text does not match its sha256"));
        }
        Ok(d)
    }

    /// The file name errors of this deploy name: `deploy 3 (site.yaml)`.
    pub fn source_name(&self) -> String {
        format!("deploy {} ({})", self.id, self.file)
    }
}

/// SHA-256 of `text`, lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from_digit(u32::from(b >> 4), 16).expect("nibble"));
        out.push(char::from_digit(u32::from(b & 15), 16).expect("nibble"));
    }
    out
}

/// The one txn that writes the next deploy: put `key` = `value` if `key` is
/// absent and `previous` (none for the first deploy) is present; `delete`
/// what falls out of the newest [`KEEP`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub deploy: Deploy,
    pub key: String,
    pub value: String,
    pub previous: Option<String>,
    pub delete: Vec<String>,
}

/// Plans deploy `newest + 1` given the ids stored now.
pub fn plan(stored: &[u64], draft: Draft) -> Write {
    let mut ids = stored.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let newest = ids.last().copied();
    let id = newest.unwrap_or(0) + 1;
    let deploy = Deploy {
        version: VERSION,
        id,
        time: draft.time,
        author: draft.author,
        file: draft.file,
        sha256: sha256_hex(&draft.text),
        text: draft.text,
    };
    // With the new one, KEEP remain.
    let drop = (ids.len() + 1).saturating_sub(KEEP);
    Write {
        key: key(id),
        value: deploy.encode(),
        previous: newest.map(key),
        delete: ids[..drop].iter().map(|&i| key(i)).collect(),
        deploy,
    }
}

/// Which deploy a host runs next: the newest it has seen, and never one older
/// than the one it already follows.
pub fn newer(current: Option<u64>, candidate: u64) -> bool {
    current.is_none_or(|c| candidate > c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(text: &str) -> Draft {
        Draft {
            time: "2026-12-06T07:00:00Z".into(),
            author: "root@h1".into(),
            file: "site.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn keys_sort_as_ids_and_round_trip() {
        assert!(key(9) < key(10));
        assert_eq!(id_of(&key(123)), Ok(123));
        assert!(id_of("/_mgmt/deploy/12").is_err());
        assert!(id_of(&key(0)).is_err());
        assert!(id_of("/_mgmt/deploy/0000000000000000000x").is_err());
        assert!(id_of(&key(u64::MAX)).is_err());
        assert!(id_of("/_mgmt/deploy/99999999999999999999").is_err());
    }

    #[test]
    fn first_and_next_deploys() {
        let w = plan(&[], draft("graph: g\n"));
        assert_eq!((w.deploy.id, w.previous.clone()), (1, None));
        assert_eq!(Deploy::decode(&w.key, w.value.as_bytes()), Ok(w.deploy));
        let w = plan(&[1, 2, 3], draft("x"));
        assert_eq!(w.deploy.id, 4);
        assert_eq!(w.previous, Some(key(3)));
        assert!(w.delete.is_empty());
    }

    #[test]
    fn only_the_newest_are_kept() {
        let stored: Vec<u64> = (1..=KEEP as u64).collect();
        let w = plan(&stored, draft("x"));
        assert_eq!(w.deploy.id, KEEP as u64 + 1);
        assert_eq!(w.delete, vec![key(1)]);
        let stored: Vec<u64> = (1..=KEEP as u64 + 3).collect();
        assert_eq!(plan(&stored, draft("x")).delete.len(), 4);
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let w = plan(&[], draft("graph: g\n"));
        let tampered = w.value.replace("graph: g", "graph: h");
        let e = Deploy::decode(&w.key, tampered.as_bytes()).unwrap_err();
        assert!(e.contains("sha256"), "{e}");
        assert!(Deploy::decode(&key(2), w.value.as_bytes()).is_err());
        assert!(Deploy::decode(&w.key, b"{").is_err());
        assert!(Deploy::decode(&w.key, br#"{"version":2}"#).is_err());
    }

    #[test]
    fn a_host_never_goes_back() {
        assert!(newer(None, 1));
        assert!(newer(Some(3), 4));
        assert!(!newer(Some(3), 3));
        assert!(!newer(Some(3), 2));
    }
}
