//! Invariants, checked after every simulation step. One per file.

mod acked_writes;
mod availability;
mod deploys;
mod membership_bound;
mod nominated_once;
mod stopped_not_member;

pub use acked_writes::acked_writes_survive;
pub use availability::Availability;
pub use deploys::deploys_move_forward;
pub use membership_bound::MembershipBound;
pub use nominated_once::nominated_once;
pub use stopped_not_member::StoppedNotMember;
