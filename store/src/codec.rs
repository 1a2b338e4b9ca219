//! The store's one binary encoding: raft log entries, state-machine snapshots
//! and peer messages. postcard (serde, varints, byte strings copied whole),
//! after a format byte. Data written before it (JSON, which starts with `{`)
//! is still read.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first byte of everything this module encodes.
const FORMAT_POSTCARD: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty message")]
    Empty,
    #[error("unknown format byte {0:#04x}")]
    UnknownFormat(u8),
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_extend(v, vec![FORMAT_POSTCARD])?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_POSTCARD) => Ok(postcard::from_bytes(&bytes[1..])?),
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        Some(&b) => Err(CodecError::UnknownFormat(b)),
    }
}

/// The leading part of a message as a `T`, the rest left undecoded:
/// postcard writes a struct's fields in order, so the value of its first
/// field (or fields) reads alone. Data in JSON has no such prefix: `None`.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, CodecError> {
    match bytes.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_POSTCARD) => Ok(Some(postcard::take_from_bytes(&bytes[1..])?.0)),
        Some(b'{') => Ok(None),
        Some(&b) => Err(CodecError::UnknownFormat(b)),
    }
}

impl From<CodecError> for std::io::Error {
    fn from(e: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt_core::kv::{Command, PutRequest, Timed};

    #[test]
    fn an_entrys_log_id_reads_alone_from_its_encoding() {
        use crate::types::{Entry, LogId};
        let log_id = LogId::new(openraft::CommittedLeaderId::new(7, 3), 41);
        let entry = Entry {
            log_id,
            payload: openraft::EntryPayload::Blank,
        };
        let bytes = encode(&entry).unwrap();
        assert_eq!(decode_prefix::<LogId>(&bytes).unwrap(), Some(log_id));
        let json = serde_json::to_vec(&entry).unwrap();
        assert_eq!(decode_prefix::<LogId>(&json).unwrap(), None);
    }

    #[test]
    fn a_command_round_trips_and_json_still_reads() {
        let timed = Timed {
            now_ms: 7,
            command: Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: vec![0xff; 1000],
                ..Default::default()
            }),
        };
        let bytes = encode(&timed).unwrap();
        // The value is copied whole: about its own size, not 3-4 bytes a byte.
        assert!(bytes.len() < 1100, "{}", bytes.len());
        assert_eq!(decode::<Timed>(&bytes).unwrap(), timed);
        let json = serde_json::to_vec(&timed).unwrap();
        assert_eq!(decode::<Timed>(&json).unwrap(), timed);
        assert!(matches!(
            decode::<Timed>(&[9]),
            Err(CodecError::UnknownFormat(9))
        ));
    }
}
