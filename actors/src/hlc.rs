//! Hybrid logical clock (Kulkarni et al.): versions that follow wall time
//! closely yet never go backwards on one node, so that last-write-wins between
//! replicas picks the write a user would call the latest.
//!
//! A [`Version`] packs milliseconds since the Unix epoch in the high 48 bits and
//! a logical counter in the low 16. Ties between nodes are broken by node id at
//! the storage layer, not here.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// A version stamp: `physical_ms << 16 | logical`.
pub type Version = u64;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// The smallest version a clock issues at wall time `at`.
pub fn version_at(at: SystemTime) -> Version {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms << LOGICAL_BITS
}

/// A hybrid logical clock shared by every writer on a node.
#[derive(Debug, Default)]
pub struct Hlc {
    last: Mutex<u64>,
}

impl Hlc {
    pub fn new() -> Self {
        Self::default()
    }

    fn wall_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// A new version, greater than every version this clock has issued or observed.
    pub fn now(&self) -> Version {
        let wall = Self::wall_ms() << LOGICAL_BITS;
        let mut last = self.last.lock();
        let next = if wall > *last { wall } else { *last + 1 };
        *last = next;
        next
    }

    /// Move the clock past a version seen from another node, so that a write
    /// that follows it causally gets a greater version.
    pub fn observe(&self, seen: Version) {
        let mut last = self.last.lock();
        if seen > *last {
            *last = seen;
        }
    }

    /// The wall-clock milliseconds of a version.
    pub fn physical_ms(version: Version) -> u64 {
        version >> LOGICAL_BITS
    }

    /// The logical counter of a version.
    pub fn logical(version: Version) -> u64 {
        version & LOGICAL_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase() {
        let clock = Hlc::new();
        let mut previous = 0;
        for _ in 0..100_000 {
            let v = clock.now();
            assert!(v > previous);
            previous = v;
        }
    }

    #[test]
    fn observe_moves_the_clock_forward() {
        let clock = Hlc::new();
        let far_future = (Hlc::wall_ms() + 60_000) << LOGICAL_BITS;
        clock.observe(far_future);
        assert!(clock.now() > far_future);
        assert_eq!(
            Hlc::physical_ms(far_future + 3),
            Hlc::physical_ms(far_future)
        );
        assert_eq!(Hlc::logical(far_future + 3), 3);
    }
}
