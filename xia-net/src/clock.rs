//! Real time for the sans-IO cores, which count time as an
//! [`Instant`](xia_stack::time::Instant) from zero: a [`Clock`] fixes the
//! zero at its creation and converts both ways.

use std::time::Duration;

use xia_stack::time::Instant;

/// The zero of a driver's timeline.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Clock {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }

    /// The cores' time now.
    pub fn now(&self) -> Instant {
        self.at(tokio::time::Instant::now())
    }

    /// A runtime instant as the cores' time (instants before the zero
    /// are the zero).
    pub fn at(&self, t: tokio::time::Instant) -> Instant {
        let d = t.saturating_duration_since(self.start);
        Instant::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The cores' time as a runtime instant, for sleeping until it.
    pub fn deadline(&self, t: Instant) -> tokio::time::Instant {
        self.start + Duration::from_nanos(t.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn converts_both_ways() {
        let c = Clock::start();
        assert_eq!(c.now(), Instant::ZERO);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(c.now(), Instant::from_millis(1500));
        let t = Instant::from_secs(3);
        assert_eq!(c.at(c.deadline(t)), t);
    }
}
