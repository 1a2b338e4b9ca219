//! The membership never exceeds `max(idealClusterSize, size before the change)`:
//! growth stops at the ideal size, and a shrink never adds members. The ideal
//! size is the largest that may be in force ([`crate::World::ideal_bound`]):
//! one replaced less than [`crate::IDEAL_LAG`] ago (the leader may still be
//! finishing a change decided on it), or one whose put was not acknowledged
//! (a failed put may have been applied, even after a later one).
//!
//! The size before the change is the last *committed* membership's: a leader's
//! config change only in its own log is lost if it crashes (seed 321218: h4's
//! removal of h5 reached no other log, and h5 led on in the four-member config).

use crate::World;

#[derive(Default)]
pub struct MembershipBound {
    /// The largest size allowed so far: the last committed membership's.
    last: Option<usize>,
}

impl MembershipBound {
    pub fn check(&mut self, w: &World) -> Result<(), String> {
        let Some(leader) = w.leader().map(|h| &w.hosts[h]) else {
            return Ok(());
        };
        let size = leader.members.len();
        let limit = (w.ideal_bound() as usize).max(self.last.unwrap_or(size));
        if size > limit {
            return Err(format!(
                "membership {size} exceeds max(ideal {}, previous {:?})",
                w.ideal_bound(),
                self.last
            ));
        }
        if leader.members_committed {
            self.last = Some(size);
        }
        Ok(())
    }
}
