//! Time as a value. The core never reads a clock: drivers pass `now` in.

use std::ops::Add;

/// Milliseconds since an arbitrary, driver-chosen epoch (usually process start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Add for Millis {
    type Output = Millis;
    fn add(self, rhs: Millis) -> Millis {
        Millis(self.0.saturating_add(rhs.0))
    }
}

impl Millis {
    pub fn from_secs(s: u64) -> Millis {
        Millis(s.saturating_mul(1000))
    }
}
