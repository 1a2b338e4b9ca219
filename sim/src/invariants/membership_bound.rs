//! The membership never exceeds `max(idealClusterSize, size before the change)`:
//! growth stops at the ideal size, and a shrink never adds members. The ideal
//! size is the largest that may be in force ([`crate::World::ideal_bound`]):
//! one replaced less than [`crate::IDEAL_LAG`] ago (the leader may still be
//! finishing a change decided on it), or one whose put was not acknowledged
//! (a failed put may have been applied, even after a later one).

use crate::World;

#[derive(Default)]
pub struct MembershipBound {
    /// The largest size allowed so far: the last observed size.
    last: Option<usize>,
}

impl MembershipBound {
    pub fn check(&mut self, w: &World) -> Result<(), String> {
        let Some(size) = w.leader_members().map(|m| m.len()) else {
            return Ok(());
        };
        let limit = (w.ideal_bound() as usize).max(self.last.unwrap_or(size));
        if size > limit {
            return Err(format!(
                "membership {size} exceeds max(ideal {}, previous {:?})",
                w.ideal_bound(),
                self.last
            ));
        }
        self.last = Some(size);
        Ok(())
    }
}
