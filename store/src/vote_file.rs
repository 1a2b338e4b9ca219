//! The raft vote on disk: two fixed-size slots in one file, written in turn
//! in place, so that saving a vote is one `pwrite` and one `fdatasync`.
//!
//! A vote is saved twice in every election this member takes part in, and a
//! one-shot run elects itself each time it starts. Replacing a whole file for
//! each save (write, fsync, rename, fsync of the directory) made that four
//! waits for the disk where one will do: the file's blocks and size never
//! change after it is created, so `fdatasync` has no metadata to write.
//!
//! Slot `seq % 2` takes the save numbered `seq`; each slot sits in its own
//! 4 KiB block and carries a CRC. A save torn by a crash can only damage the
//! slot it was writing, and the other still holds the vote saved before it,
//! which is what a save that never returned leaves: raft only relies on a
//! vote once its save returned. On open, the valid slot with the higher
//! `seq` is the vote. Data directories of older versions hold `vote.json`,
//! which is read when there is no vote file yet and removed after the first
//! save.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::types::{NodeId, Vote};

pub(crate) const VOTE_FILE: &str = "vote";
/// Where versions before the slotted file kept the vote.
const OLD_VOTE_FILE: &str = "vote.json";

/// Apart, so that no device writes both in one torn sector or page.
const SLOT_STRIDE: u64 = 4096;
/// `seq | term | node_id | committed` and the CRC of those 25 bytes.
const SLOT_LEN: usize = 8 + 8 + 8 + 1 + 4;

/// The vote file, open for the saves to come.
pub(crate) struct VoteFile {
    dir: PathBuf,
    /// `None` until the first save creates it (a new member, or one whose
    /// vote is still in `vote.json`).
    file: Option<File>,
    /// The `seq` of the last save found or made.
    seq: u64,
    /// The vote as the member holds it now: as found on open, then as saved.
    vote: Option<Vote>,
}

impl VoteFile {
    /// Opens the vote in `dir`, holding the vote saved last, if any.
    pub(crate) fn open(dir: &Path) -> io::Result<VoteFile> {
        let path = dir.join(VOTE_FILE);
        let mut vote_file = VoteFile {
            dir: dir.to_path_buf(),
            file: None,
            seq: 0,
            vote: None,
        };
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => {
                let newest = [0, 1]
                    .into_iter()
                    .filter_map(|slot| read_slot(&file, slot).transpose())
                    .collect::<io::Result<Vec<_>>>()?
                    .into_iter()
                    .max_by_key(|(seq, _)| *seq);
                let Some((seq, vote)) = newest else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: neither slot holds a vote (restore the data directory or remove this member's state)",
                            path.display()
                        ),
                    ));
                };
                vote_file.file = Some(file);
                vote_file.seq = seq;
                vote_file.vote = Some(vote);
                Ok(vote_file)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                vote_file.vote = crate::atomic_file::read_json(&dir.join(OLD_VOTE_FILE))?;
                Ok(vote_file)
            }
            Err(e) => Err(e),
        }
    }

    /// The vote this member holds.
    pub(crate) fn vote(&self) -> Option<Vote> {
        self.vote
    }

    /// Holds the vote found on open as not committed (what a restarted
    /// member knows of it), until the next save.
    pub(crate) fn hold_uncommitted(&mut self) {
        self.vote = self
            .vote
            .map(|v| Vote::new(v.leader_id.term, v.leader_id.node_id));
    }

    /// Saves `vote` durably: it is on disk when this returns.
    pub(crate) fn save(&mut self, vote: &Vote) -> io::Result<()> {
        let seq = self.seq + 1;
        let slot = encode(seq, vote);
        match &self.file {
            Some(file) => {
                file.write_all_at(&slot, (seq % 2) * SLOT_STRIDE)?;
                file.sync_data()?;
            }
            None => {
                // Created whole, both blocks allocated, and renamed into
                // place: every later save only overwrites.
                let mut bytes = vec![0; SLOT_STRIDE as usize * 2];
                let at = ((seq % 2) * SLOT_STRIDE) as usize;
                bytes[at..at + SLOT_LEN].copy_from_slice(&slot);
                crate::atomic_file::write_atomic(&self.dir, VOTE_FILE, &bytes)?;
                self.file = Some(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(self.dir.join(VOTE_FILE))?,
                );
                // The new file wins over the old one from now on; should
                // this removal be lost in a crash, it is read no more.
                match fs::remove_file(self.dir.join(OLD_VOTE_FILE)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        self.seq = seq;
        self.vote = Some(*vote);
        Ok(())
    }
}

fn encode(seq: u64, vote: &Vote) -> [u8; SLOT_LEN] {
    let mut slot = [0; SLOT_LEN];
    slot[0..8].copy_from_slice(&seq.to_le_bytes());
    slot[8..16].copy_from_slice(&vote.leader_id.term.to_le_bytes());
    slot[16..24].copy_from_slice(&vote.leader_id.node_id.to_le_bytes());
    slot[24] = u8::from(vote.committed);
    let crc = crc32fast::hash(&slot[..25]);
    slot[25..].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// The slot's `seq` and vote; `None` when it was never written or its CRC
/// does not match (a torn save).
fn read_slot(file: &File, slot: u64) -> io::Result<Option<(u64, Vote)>> {
    let mut bytes = [0; SLOT_LEN];
    match file.read_exact_at(&mut bytes, slot * SLOT_STRIDE) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let crc = u32::from_le_bytes(bytes[25..].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
    if seq == 0 || crc32fast::hash(&bytes[..25]) != crc || bytes[24] > 1 {
        return Ok(None);
    }
    let term = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let node_id: NodeId = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let vote = if bytes[24] == 1 {
        Vote::new_committed(term, node_id)
    } else {
        Vote::new(term, node_id)
    };
    Ok(Some((seq, vote)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saves read back across reopening, the newest winning, whichever slot
    /// it is in.
    #[test]
    fn the_newest_save_reads_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = VoteFile::open(dir.path()).unwrap();
        assert_eq!(file.vote(), None);
        for term in 1..=5 {
            file.save(&Vote::new(term, 3)).unwrap();
            let read = VoteFile::open(dir.path()).unwrap().vote();
            assert_eq!(read, Some(Vote::new(term, 3)));
        }
        file.save(&Vote::new_committed(5, 3)).unwrap();
        let mut again = VoteFile::open(dir.path()).unwrap();
        assert_eq!(again.vote(), Some(Vote::new_committed(5, 3)));
        // A reopened file goes on from the newest save.
        again.save(&Vote::new(6, 9)).unwrap();
        let read = VoteFile::open(dir.path()).unwrap().vote();
        assert_eq!(read, Some(Vote::new(6, 9)));
        assert_eq!(
            fs::metadata(dir.path().join(VOTE_FILE)).unwrap().len(),
            2 * SLOT_STRIDE
        );
    }

    /// A save torn by a crash (its slot's bytes half written) leaves the
    /// vote saved before it.
    #[test]
    fn a_torn_save_leaves_the_previous_vote() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = VoteFile::open(dir.path()).unwrap();
        file.save(&Vote::new(4, 1)).unwrap();
        file.save(&Vote::new(5, 2)).unwrap();
        // Save 2 went to slot 0; tear it.
        let raw = OpenOptions::new()
            .write(true)
            .open(dir.path().join(VOTE_FILE))
            .unwrap();
        raw.write_all_at(&[0xff; 12], 8).unwrap();
        let read = VoteFile::open(dir.path()).unwrap().vote();
        assert_eq!(read, Some(Vote::new(4, 1)));
    }

    /// A data directory of an older version: its `vote.json` is the vote
    /// until the first save, which replaces it.
    #[test]
    fn an_older_vote_json_is_read_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let old = Vote::new_committed(7, 2);
        fs::write(
            dir.path().join(OLD_VOTE_FILE),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let mut file = VoteFile::open(dir.path()).unwrap();
        assert_eq!(file.vote(), Some(old));
        file.save(&Vote::new(8, 2)).unwrap();
        assert!(!dir.path().join(OLD_VOTE_FILE).exists());
        let read = VoteFile::open(dir.path()).unwrap().vote();
        assert_eq!(read, Some(Vote::new(8, 2)));
    }

    /// A vote file with no valid slot is refused, not taken for "never
    /// voted" (which could vote twice in one term).
    #[test]
    fn a_file_with_no_valid_slot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(VOTE_FILE),
            vec![0xab; 2 * SLOT_STRIDE as usize],
        )
        .unwrap();
        let err = VoteFile::open(dir.path()).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
