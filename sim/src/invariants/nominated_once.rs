//! No host is nominated twice: every put of `/_mgmt/nominated/<h>` creates the
//! key (the leader's conditional txn), it never overwrites a live nomination.

use crate::World;

pub fn nominated_once(w: &World) -> Result<(), String> {
    match w.renominations.first() {
        Some(h) => Err(format!("{h} nominated while already nominated")),
        None => Ok(()),
    }
}
