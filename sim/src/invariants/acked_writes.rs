//! No acknowledged write is lost: every write the store acknowledged is read
//! back (checked when the cluster has converged, and on every later read).

use crate::World;

pub fn acked_writes_survive(w: &World) -> Result<(), String> {
    match w.lost_writes.first() {
        Some(k) => Err(format!("acknowledged write {k} lost")),
        None => Ok(()),
    }
}
