//! Time as the sans-IO cores see it: a caller-supplied [`Instant`].
//!
//! No core reads a clock. The simulator passes virtual time; the real-network
//! drivers pass time since their start. Durations are `std::time::Duration`.
//!
//! # Serialization
//!
//! An [`Instant`] only means something next to the clock it came from: two
//! processes (or the same stack before and after a VM migration) have
//! different origins, so a raw nanosecond count moved from one to the
//! other would put every deadline in the wrong place. Inside a host
//! snapshot ([`Host::snapshot`](crate::host::Host::snapshot) /
//! [`Host::restore`](crate::host::Host::restore)) an `Instant` is
//! therefore written as a signed offset in nanoseconds (`i64`, saturating)
//! from the snapshot's `now`, and read back relative to the restoring
//! side's `now`; a time that would fall before the new clock's origin
//! becomes [`Instant::ZERO`]. The base lives in a thread-local set only
//! for the duration of one snapshot or restore. Outside a snapshot an
//! `Instant` serializes as its raw `u64` nanoseconds.

use std::cell::Cell;
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in nanoseconds since an arbitrary origin (the start of
/// a simulation or of a daemon).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);

    /// From nanoseconds since the origin.
    pub const fn from_nanos(n: u64) -> Instant {
        Instant(n)
    }

    /// From milliseconds since the origin.
    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms * 1_000_000)
    }

    /// From seconds since the origin.
    pub const fn from_secs(s: u64) -> Instant {
        Instant(s * 1_000_000_000)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Seconds since the origin, as a float (for printing).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

thread_local! {
    /// The `now` of the snapshot or restore running on this thread.
    static SNAPSHOT_BASE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Makes `Instant`s serialize relative to `base` on this thread until the
/// guard is dropped (then the previous base, if any, is back: the guard
/// also restores it when a snapshot or restore fails or panics).
pub(crate) fn relative_to(base: Instant) -> BaseGuard {
    BaseGuard(SNAPSHOT_BASE.with(|b| b.replace(Some(base))))
}

/// Restores the previous serialization base when dropped.
pub(crate) struct BaseGuard(Option<Instant>);

impl Drop for BaseGuard {
    fn drop(&mut self) {
        SNAPSHOT_BASE.with(|b| b.set(self.0));
    }
}

fn snapshot_base() -> Option<Instant> {
    SNAPSHOT_BASE.with(Cell::get)
}

impl serde::Serialize for Instant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match snapshot_base() {
            Some(base) => {
                let offset = i128::from(self.0) - i128::from(base.0);
                s.serialize_i64(offset.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
            }
            None => s.serialize_u64(self.0),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Instant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        match snapshot_base() {
            Some(base) => {
                let offset = <i64 as serde::Deserialize>::deserialize(d)?;
                let t = i128::from(base.0) + i128::from(offset);
                Ok(Instant(t.clamp(0, u64::MAX.into()) as u64))
            }
            None => <u64 as serde::Deserialize>::deserialize(d).map(Instant),
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, d: Duration) -> Instant {
        // Saturate rather than wrap: "never" stays in the far future.
        Instant(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.0 / 1_000_000_000,
            (self.0 % 1_000_000_000) / 1000
        )
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(1500);
        assert_eq!(t.to_string(), "1.500000s");
        assert_eq!(t + Duration::from_millis(500), Instant::from_secs(2));
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(
            (Instant::from_nanos(u64::MAX) + Duration::from_secs(1)).as_nanos(),
            u64::MAX
        );
    }

    #[test]
    fn serialized_relative_to_the_base_and_rebased() {
        let t = Instant::from_millis(1500);
        // Outside a snapshot: raw nanoseconds.
        let raw = postcard::to_allocvec(&t).unwrap();
        assert_eq!(postcard::from_bytes::<Instant>(&raw).unwrap(), t);
        let bytes = {
            let _g = relative_to(Instant::from_secs(1));
            postcard::to_allocvec(&[t, Instant::from_millis(200)]).unwrap()
        };
        {
            let _outer = relative_to(Instant::from_secs(10));
            {
                let _g = relative_to(Instant::from_secs(100));
                let back: [Instant; 2] = postcard::from_bytes(&bytes).unwrap();
                assert_eq!(
                    back,
                    [Instant::from_millis(100_500), Instant::from_millis(99_200)]
                );
            }
            // Before the new origin: saturates at zero.
            let back: [Instant; 2] = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(
                back,
                [Instant::from_millis(10_500), Instant::from_millis(9_200)]
            );
            let _g = relative_to(Instant::ZERO);
            let back: [Instant; 2] = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, [Instant::from_millis(500), Instant::ZERO]);
        }
        // The guards put the previous base back.
        assert_eq!(snapshot_base(), None);
        let _g = relative_to(Instant::ZERO);
        let far = postcard::to_allocvec(&Instant::from_nanos(u64::MAX)).unwrap();
        assert_eq!(
            postcard::from_bytes::<Instant>(&far).unwrap(),
            Instant::from_nanos(i64::MAX as u64)
        );
    }
}
