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
