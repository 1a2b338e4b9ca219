//! A linearizability check of a key/value history, as Knossos and Porcupine
//! do it (Wing and Gong's search): each key is a register (linearizability is
//! local, so keys are checked one at a time), and a history is linearizable
//! if its operations can be put in one order that respects real time (an
//! operation that returned before another was invoked comes first) in which
//! every read returns the value of the last write before it.
//!
//! A write whose outcome is unknown (a timeout, a connection cut by the
//! fault) may have happened at any time after its invocation, or never.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// One client operation on one key, with when it was invoked and when its
/// answer came.
#[derive(Clone, Debug)]
pub struct Op {
    pub key: String,
    pub kind: OpKind,
    pub invoked: Instant,
    /// `None`: no answer (a write that may or may not have happened).
    pub returned: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put(String),
    /// A read, and the value it saw (`None`: the key was absent).
    Get(Option<String>),
}

/// Why a history is not linearizable: the key whose operations admit no
/// order, and how many there were.
#[derive(Debug)]
pub struct NotLinearizable {
    pub key: String,
    pub ops: usize,
}

/// Checks every key's history; reads without an answer must have been left
/// out by the caller (they observed nothing).
pub fn check(history: &[Op]) -> Result<usize, NotLinearizable> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in &by_key {
        if !register_linearizable(ops) {
            return Err(NotLinearizable {
                key: key.to_string(),
                ops: ops.len(),
            });
        }
    }
    Ok(by_key.len())
}

/// Wing and Gong's search over one register's operations, with the states
/// already explored (which operations are done, and the value) remembered.
fn register_linearizable(ops: &[&Op]) -> bool {
    let epoch = ops.iter().map(|o| o.invoked).min();
    let Some(epoch) = epoch else { return true };
    let nanos = |t: Instant| t.duration_since(epoch).as_nanos();
    struct Entry {
        invoked: u128,
        /// `u128::MAX`: no answer.
        returned: u128,
        kind: OpKind,
    }
    // A write without an answer whose value no read saw can always be taken
    // as never having happened (it could only make some read wrong): left
    // out, so the search does not try every subset of them.
    let read: HashSet<&str> = ops
        .iter()
        .filter_map(|o| match &o.kind {
            OpKind::Get(Some(v)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let mut entries: Vec<Entry> = ops
        .iter()
        .filter(|o| match &o.kind {
            OpKind::Put(v) => o.returned.is_some() || read.contains(v.as_str()),
            OpKind::Get(_) => true,
        })
        .map(|o| Entry {
            invoked: nanos(o.invoked),
            returned: o.returned.map_or(u128::MAX, nanos),
            kind: o.kind.clone(),
        })
        .collect();
    entries.sort_by_key(|e| e.invoked);
    let n = entries.len();
    let required: Vec<bool> = entries.iter().map(|e| e.returned != u128::MAX).collect();
    let words = n.div_ceil(64);
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // Depth-first: (operations done, the register's value).
    let mut stack: Vec<(Vec<u64>, Option<String>)> = vec![(vec![0; words], None)];
    let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;
    while let Some((done, value)) = stack.pop() {
        if (0..n).all(|i| !required[i] || is_done(&done, i)) {
            return true;
        }
        if !seen.insert((done.clone(), value.clone())) {
            continue;
        }
        // An operation may come next only if none still to come returned
        // before it was invoked.
        let first_return = (0..n)
            .filter(|&i| !is_done(&done, i))
            .map(|i| entries[i].returned)
            .min()
            .unwrap_or(u128::MAX);
        for i in (0..n).filter(|&i| !is_done(&done, i)) {
            let e = &entries[i];
            if e.invoked > first_return {
                break; // sorted by invocation: none after it can come next
            }
            let next = match &e.kind {
                OpKind::Put(v) => Some(v.clone()),
                OpKind::Get(seen_value) if *seen_value == value => value.clone(),
                OpKind::Get(_) => continue,
            };
            let mut now_done = done.clone();
            now_done[i / 64] |= 1 << (i % 64);
            stack.push((now_done, next));
        }
        // A write without an answer may never have happened: the others go
        // on as if it were not there, once nothing else can come first.
        let skippable: Vec<usize> = (0..n)
            .filter(|&i| !is_done(&done, i) && !required[i] && entries[i].invoked <= first_return)
            .collect();
        for i in skippable {
            let mut now_done = done.clone();
            now_done[i / 64] |= 1 << (i % 64);
            stack.push((now_done, value.clone()));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn op(key: &str, kind: OpKind, from_ms: u64, to_ms: Option<u64>) -> Op {
        let t0 = *EPOCH;
        Op {
            key: key.into(),
            kind,
            invoked: t0 + Duration::from_millis(from_ms),
            returned: to_ms.map(|t| t0 + Duration::from_millis(t)),
        }
    }

    static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

    fn put(v: &str) -> OpKind {
        OpKind::Put(v.into())
    }

    fn get(v: Option<&str>) -> OpKind {
        OpKind::Get(v.map(String::from))
    }

    #[test]
    fn overlapping_writes_may_be_read_in_either_order_but_a_stale_read_is_caught() {
        // a and b overlap: a read after both may see either.
        let fine = [
            op("k", put("a"), 0, Some(10)),
            op("k", put("b"), 5, Some(15)),
            op("k", get(Some("a")), 20, Some(25)),
        ];
        assert!(check(&fine).is_ok());
        // b was written after a returned: a later read of a is stale.
        let stale = [
            op("k", put("a"), 0, Some(10)),
            op("k", put("b"), 11, Some(15)),
            op("k", get(Some("a")), 20, Some(25)),
        ];
        let e = check(&stale).unwrap_err();
        assert_eq!((e.key.as_str(), e.ops), ("k", 3));
        // A read of a value never written, or of none after a write.
        assert!(check(&[op("k", get(Some("x")), 0, Some(1))]).is_err());
        assert!(
            check(&[
                op("k", put("a"), 0, Some(1)),
                op("k", get(None), 2, Some(3))
            ])
            .is_err()
        );
    }

    #[test]
    fn a_write_without_an_answer_may_or_may_not_have_happened() {
        let seen = [
            op("k", put("a"), 0, None),
            op("k", get(Some("a")), 50, Some(60)),
        ];
        assert!(check(&seen).is_ok());
        let unseen = [op("k", put("a"), 0, None), op("k", get(None), 50, Some(60))];
        assert!(check(&unseen).is_ok());
        // But once seen it cannot be unseen.
        let flicker = [
            op("k", put("a"), 0, None),
            op("k", get(Some("a")), 50, Some(60)),
            op("k", get(None), 70, Some(80)),
        ];
        assert!(check(&flicker).is_err());
    }

    #[test]
    fn keys_are_checked_apart() {
        let h = [
            op("k1", put("a"), 0, Some(10)),
            op("k2", put("b"), 0, Some(10)),
            op("k1", get(Some("a")), 20, Some(25)),
            op("k2", get(Some("b")), 20, Some(25)),
        ];
        assert_eq!(check(&h).unwrap(), 2);
    }
}
