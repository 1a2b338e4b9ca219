//! The `/_mgmt/` key space: every clustering key and value is built and parsed
//! here, and nowhere else.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `/_mgmt/volunteers/<host>` | peer URLs, comma-joined; bound to the host's lease | each host that may run a server |
//! | `/_mgmt/nominated/<host>` | peer URLs, comma-joined | the store leader, by conditional txn |
//! | `/_mgmt/endpoints/<host>` | `peer=<urls> client=<urls> id=<member ID, hex>`; bound to the host's lease | a host whose server runs |
//! | `/_mgmt/idealClusterSize` | decimal, >= 1 | the bootstrap host, or an operator |
//!
//! Values stay readable text, so an operator can inspect and set them with a
//! stock `etcdctl`. `<host>` is a host name ([`crate::Hostname`]). A key or value
//! that does not parse is reported ([`ClusterKeys::errors`]), never silently
//! dropped; keys under `/_mgmt/` that clustering does not own are left alone.

use std::collections::BTreeMap;
use std::fmt;

use crate::hostname::Hostname;
use crate::kv::{Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest};
use crate::kv::{RequestOp, TxnRequest};

use super::Host;

/// Namespace of the clustering keys.
pub const PREFIX: &str = crate::keyspace::RESERVED;
pub const VOLUNTEERS: &str = "/_mgmt/volunteers/";
pub const NOMINATED: &str = "/_mgmt/nominated/";
pub const ENDPOINTS: &str = "/_mgmt/endpoints/";
pub const IDEAL_CLUSTER_SIZE: &str = "/_mgmt/idealClusterSize";

/// One range `[key, range_end)` that holds both [`watched_ranges`], read
/// at one revision. It holds the exports and the statuses too (they sort
/// between), not the deploys, whose texts may be large.
pub fn read_range() -> (Vec<u8>, Vec<u8>) {
    (
        ENDPOINTS.into(),
        crate::kv::prefix_end(VOLUNTEERS.as_bytes()),
    )
}

/// The ranges `[key, range_end)` that hold every clustering key and no key
/// of the fleet's (deploys, statuses, alive keys), which change far more
/// often: what the cluster driver watches. Exports (`/_mgmt/exported/`)
/// fall in neither.
pub fn watched_ranges() -> [(Vec<u8>, Vec<u8>); 2] {
    use crate::kv::prefix_end;
    [
        (ENDPOINTS.into(), prefix_end(ENDPOINTS.as_bytes())),
        (IDEAL_CLUSTER_SIZE.into(), prefix_end(VOLUNTEERS.as_bytes())),
    ]
}

/// One clustering key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    IdealClusterSize,
    Volunteer(Host),
    Nominated(Host),
    Endpoints(Host),
}

impl Key {
    pub fn encode(&self) -> String {
        match self {
            Key::IdealClusterSize => IDEAL_CLUSTER_SIZE.to_string(),
            Key::Volunteer(h) => format!("{VOLUNTEERS}{h}"),
            Key::Nominated(h) => format!("{NOMINATED}{h}"),
            Key::Endpoints(h) => format!("{ENDPOINTS}{h}"),
        }
    }

    /// `Ok(None)`: not a clustering key (outside `/_mgmt/`, or a key there that
    /// another part of mgmt owns).
    pub fn decode(key: &[u8]) -> Result<Option<Key>, KeyError> {
        let text = std::str::from_utf8(key).map_err(|_| KeyError::Key {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "not UTF-8".into(),
        })?;
        if text == IDEAL_CLUSTER_SIZE {
            return Ok(Some(Key::IdealClusterSize));
        }
        let (make, host): (fn(Host) -> Key, &str) = if let Some(h) = text.strip_prefix(VOLUNTEERS) {
            (Key::Volunteer, h)
        } else if let Some(h) = text.strip_prefix(NOMINATED) {
            (Key::Nominated, h)
        } else if let Some(h) = text.strip_prefix(ENDPOINTS) {
            (Key::Endpoints, h)
        } else {
            return Ok(None);
        };
        Hostname::parse(host)
            .map(|h| Some(make(h.as_str().to_string())))
            .map_err(|e| KeyError::Key {
                key: text.to_string(),
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// A key or value under `/_mgmt/` that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{key}: not a clustering key: {reason}")]
    Key { key: String, reason: String },
    #[error("{key} = {value:?}: {reason}")]
    Value {
        key: String,
        value: String,
        reason: String,
    },
}

/// A list of URLs, comma-joined (the volunteer and nominated values).
pub fn encode_urls(urls: &[String]) -> String {
    urls.join(",")
}

/// Parses [`encode_urls`]: at least one URL, none empty or with spaces.
pub fn decode_urls(value: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = value.split(',').map(|u| u.trim().to_string()).collect();
    if urls
        .iter()
        .any(|u| u.is_empty() || u.contains(char::is_whitespace))
    {
        return Err("expected comma-separated URLs".into());
    }
    Ok(urls)
}

/// The value of `endpoints/<host>`: where a running server listens, and the
/// member ID it serves under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub member_id: u64,
}

impl Endpoints {
    pub fn encode(&self) -> String {
        format!(
            "peer={} client={} id={:x}",
            encode_urls(&self.peer_urls),
            encode_urls(&self.client_urls),
            self.member_id
        )
    }

    pub fn decode(value: &str) -> Result<Endpoints, String> {
        let (mut peer, mut client, mut id) = (None, None, None);
        for part in value.split_whitespace() {
            if let Some(p) = part.strip_prefix("peer=") {
                peer = Some(decode_urls(p).map_err(|e| format!("peer: {e}"))?);
            } else if let Some(c) = part.strip_prefix("client=") {
                client = Some(decode_urls(c).map_err(|e| format!("client: {e}"))?);
            } else if let Some(i) = part.strip_prefix("id=") {
                id = Some(u64::from_str_radix(i, 16).map_err(|_| "id: expected hex".to_string())?);
            } else {
                return Err(format!("unexpected {part:?}"));
            }
        }
        match (peer, client, id) {
            (Some(peer_urls), Some(client_urls), Some(member_id)) => Ok(Endpoints {
                peer_urls,
                client_urls,
                member_id,
            }),
            _ => Err("expected peer=<urls> client=<urls> id=<hex>".into()),
        }
    }
}

/// `idealClusterSize`'s value.
pub fn encode_ideal(size: u32) -> String {
    size.to_string()
}

/// Parses [`encode_ideal`]; a size is at least 1.
pub fn decode_ideal(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a size >= 1".into()),
    }
}

/// A nomination: `nominated/<host>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nomination {
    pub peer_urls: Vec<String>,
    /// The key's create revision: it names this nomination (and so the
    /// member ID the nominee serves under, [`super::incarnation_id`]).
    pub revision: i64,
}

/// One key/value as the store returns it.
#[derive(Clone, Copy, Debug)]
pub struct RawKv<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub create_revision: i64,
}

impl<'a> From<&'a crate::kv::KeyValue> for RawKv<'a> {
    fn from(kv: &'a crate::kv::KeyValue) -> Self {
        RawKv {
            key: &kv.key,
            value: &kv.value,
            create_revision: kv.create_revision,
        }
    }
}

/// Every clustering key, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterKeys {
    /// `idealClusterSize`: `Err(raw)` when it is set to something that is not a
    /// size (the nominator reports that and keeps the last valid size).
    pub ideal: Option<Result<u32, String>>,
    pub volunteers: BTreeMap<Host, Vec<String>>,
    pub nominated: BTreeMap<Host, Nomination>,
    pub endpoints: BTreeMap<Host, Endpoints>,
    /// Keys and values that did not parse (other than `idealClusterSize`).
    pub errors: Vec<KeyError>,
}

impl ClusterKeys {
    /// Decodes the result of a read of [`PREFIX`].
    pub fn decode<'a>(kvs: impl IntoIterator<Item = RawKv<'a>>) -> ClusterKeys {
        let mut keys = ClusterKeys::default();
        for kv in kvs {
            let key = match Key::decode(kv.key) {
                Ok(Some(key)) => key,
                Ok(None) => continue,
                Err(e) => {
                    keys.errors.push(e);
                    continue;
                }
            };
            let value = String::from_utf8_lossy(kv.value);
            let bad = |reason: String| KeyError::Value {
                key: key.encode(),
                value: value.to_string(),
                reason,
            };
            let decoded = match &key {
                Key::IdealClusterSize => {
                    keys.ideal = Some(decode_ideal(&value).map_err(|_| value.to_string()));
                    Ok(())
                }
                Key::Volunteer(h) => decode_urls(&value).map(|u| {
                    keys.volunteers.insert(h.clone(), u);
                }),
                Key::Nominated(h) => decode_urls(&value).map(|peer_urls| {
                    keys.nominated.insert(
                        h.clone(),
                        Nomination {
                            peer_urls,
                            revision: kv.create_revision,
                        },
                    );
                }),
                Key::Endpoints(h) => Endpoints::decode(&value).map(|e| {
                    keys.endpoints.insert(h.clone(), e);
                }),
            };
            if let Err(reason) = decoded {
                keys.errors.push(bad(reason));
            }
        }
        keys
    }
}

/// A put of `key` = `value` (bound to `lease`, 0 for none).
pub fn put(key: &Key, value: String, lease: i64) -> PutRequest {
    PutRequest {
        key: key.encode().into_bytes(),
        value: value.into_bytes(),
        lease,
        ..Default::default()
    }
}

/// A delete of `key`.
pub fn delete(key: &Key) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.encode().into_bytes(),
        range_end: Vec::new(),
        prev_kv: false,
    }
}

fn exists(key: &Key, yes: bool) -> Compare {
    Compare {
        result: if yes {
            CompareResult::Greater
        } else {
            CompareResult::Equal
        },
        target: CompareTarget::CreateRevision(0),
        key: key.encode().into_bytes(),
        range_end: Vec::new(),
    }
}

/// Nominate `host`, only if it is not nominated yet and still volunteers.
pub fn nominate_txn(host: &str, peer_urls: &[String]) -> TxnRequest {
    let nominated = Key::Nominated(host.to_string());
    TxnRequest {
        compare: vec![
            exists(&nominated, false),
            exists(&Key::Volunteer(host.to_string()), true),
        ],
        success: vec![RequestOp::Put(put(&nominated, encode_urls(peer_urls), 0))],
        failure: vec![],
    }
}

/// Withdraw `host`'s nomination, only if it has one.
pub fn unnominate_txn(host: &str) -> TxnRequest {
    let nominated = Key::Nominated(host.to_string());
    TxnRequest {
        compare: vec![exists(&nominated, true)],
        success: vec![RequestOp::DeleteRange(delete(&nominated))],
        failure: vec![],
    }
}

/// The first member's writes: its own nomination and, if given, the ideal size.
pub fn bootstrap_txn(host: &str, peer_urls: &[String], ideal: Option<u32>) -> TxnRequest {
    let mut success = vec![RequestOp::Put(put(
        &Key::Nominated(host.to_string()),
        encode_urls(peer_urls),
        0,
    ))];
    if let Some(n) = ideal {
        success.push(RequestOp::Put(put(
            &Key::IdealClusterSize,
            encode_ideal(n),
            0,
        )));
    }
    TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv<'a>(key: &'a str, value: &'a str, create_revision: i64) -> RawKv<'a> {
        RawKv {
            key: key.as_bytes(),
            value: value.as_bytes(),
            create_revision,
        }
    }

    #[test]
    fn the_watched_ranges_hold_every_clustering_key_and_no_fleet_key() {
        let watched = |key: &str| {
            watched_ranges().iter().any(|(start, end)| {
                start.as_slice() <= key.as_bytes() && key.as_bytes() < end.as_slice()
            })
        };
        for key in [
            Key::IdealClusterSize,
            Key::Volunteer("h1".into()),
            Key::Nominated("a".into()),
            Key::Endpoints("zz".into()),
        ] {
            assert!(watched(&key.encode()), "{key}");
        }
        let (start, end) = read_range();
        for (s, e) in watched_ranges() {
            assert!(start <= s && e <= end);
        }
        assert!(crate::deploy::key(1).as_bytes() < start.as_slice());
        for key in [
            crate::deploy::key(1),
            crate::fleet::status_key("h1"),
            crate::fleet::alive_key("h1"),
            crate::export::key_of("h1", crate::Kind::File, "f"),
        ] {
            assert!(!watched(&key), "{key}");
        }
    }

    #[test]
    fn every_key_decodes_to_what_encoded_it() {
        for key in [
            Key::IdealClusterSize,
            Key::Volunteer("h1".into()),
            Key::Nominated("h-2".into()),
            Key::Endpoints("host3.example".into()),
        ] {
            assert_eq!(Key::decode(key.encode().as_bytes()), Ok(Some(key)));
        }
        assert_eq!(
            Key::decode(b"/_mgmt/exported/h1/resources/file/f"),
            Ok(None)
        );
        assert_eq!(Key::decode(b"/other"), Ok(None));
    }

    #[test]
    fn endpoints_keep_url_lists_and_the_member_id() {
        let e = Endpoints {
            peer_urls: vec!["http://10.0.0.1:2380".into(), "http://10.0.0.1:2381".into()],
            client_urls: vec!["http://10.0.0.1:2379".into()],
            member_id: 0xdead_beef,
        };
        assert_eq!(
            e.encode(),
            "peer=http://10.0.0.1:2380,http://10.0.0.1:2381 client=http://10.0.0.1:2379 id=deadbeef"
        );
        assert_eq!(Endpoints::decode(&e.encode()), Ok(e));
    }

    #[test]
    fn a_read_decodes_into_typed_keys() {
        let keys = ClusterKeys::decode([
            kv("/_mgmt/idealClusterSize", "3", 2),
            kv("/_mgmt/volunteers/h1", "http://h1:2380", 3),
            kv("/_mgmt/nominated/h1", "http://h1:2380", 4),
            kv(
                "/_mgmt/endpoints/h1",
                "peer=http://h1:2380 client=http://h1:2379 id=1f",
                5,
            ),
            kv("/_mgmt/somethingElse", "x", 6),
        ]);
        assert_eq!(keys.ideal, Some(Ok(3)));
        assert_eq!(keys.volunteers["h1"], ["http://h1:2380"]);
        assert_eq!(keys.nominated["h1"].revision, 4);
        assert_eq!(keys.endpoints["h1"].member_id, 0x1f);
        assert_eq!(keys.endpoints["h1"].client_urls, ["http://h1:2379"]);
        assert!(keys.errors.is_empty(), "{:?}", keys.errors);
    }

    #[test]
    fn malformed_keys_and_values_are_reported_not_dropped_silently() {
        let keys = ClusterKeys::decode([
            kv("/_mgmt/volunteers/bad_host", "http://x:2380", 3),
            kv("/_mgmt/volunteers/h2", "", 4),
            kv("/_mgmt/endpoints/h3", "peer=http://h3:2380 id=zz", 5),
            kv("/_mgmt/idealClusterSize", "zero", 6),
        ]);
        assert!(keys.volunteers.is_empty());
        assert!(keys.endpoints.is_empty());
        let errors: Vec<String> = keys.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("/_mgmt/volunteers/bad_host: not a clustering key"));
        assert!(errors[1].starts_with("/_mgmt/volunteers/h2 = \"\""));
        assert!(errors[2].contains("/_mgmt/endpoints/h3"), "{}", errors[2]);
        // The nominator reports an invalid size itself (it keeps the last one).
        assert_eq!(keys.ideal, Some(Err("zero".into())));
    }

    #[test]
    fn the_nomination_txn_holds_only_for_a_volunteer_not_yet_nominated() {
        let t = nominate_txn("h2", &["http://h2:2380".into()]);
        let keys: Vec<&[u8]> = t.compare.iter().map(|c| c.key.as_slice()).collect();
        assert_eq!(keys, [&b"/_mgmt/nominated/h2"[..], b"/_mgmt/volunteers/h2"]);
        assert_eq!(t.compare[0].result, CompareResult::Equal);
        assert_eq!(t.compare[1].result, CompareResult::Greater);
    }
}
