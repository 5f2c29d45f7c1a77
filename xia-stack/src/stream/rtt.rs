//! The retransmission timer's estimator (RFC 6298).

use std::time::Duration;

/// Clock granularity `G` of RFC 6298 (the virtual clock is exact; 1 ms
/// keeps RTO above SRTT even when RTTVAR collapses to zero).
const GRANULARITY: Duration = Duration::from_millis(1);

/// SRTT, RTTVAR and the retransmission timeout with its backoff.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min: Duration,
    max: Duration,
    backoff: u32,
}

impl RttEstimator {
    /// An estimator with no samples: RTO is `initial` (RFC 6298 (2.1)).
    pub fn new(initial: Duration, min: Duration, max: Duration) -> RttEstimator {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial.clamp(min, max),
            min,
            max,
            backoff: 0,
        }
    }

    /// Feeds one sample from a segment that was not retransmitted (Karn).
    pub fn on_sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                // (2.2): first measurement.
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                // (2.3) with alpha = 1/8, beta = 1/4.
                let diff = srtt.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + diff / 4;
                self.srtt = Some(srtt * 7 / 8 + r / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        self.rto = (srtt + GRANULARITY.max(self.rttvar * 4)).clamp(self.min, self.max);
        self.backoff = 0;
    }

    /// Refuses restored state the arithmetic above could panic on.
    pub(crate) fn check(&self) -> Result<(), String> {
        let long = crate::serde_util::LONGEST;
        if self.min > self.max
            || self.rttvar > long
            || self.rto > long
            || self.srtt.is_some_and(|s| s > long)
        {
            return Err("RTT estimator out of range".into());
        }
        Ok(())
    }

    /// Doubles the timeout after it expired (5.5), up to the maximum.
    pub fn on_backoff(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    /// Forgets the backoff (new data was acknowledged).
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// The current timeout, backoff included.
    pub fn rto(&self) -> Duration {
        let factor = 1u32 << self.backoff.min(20);
        self.rto.saturating_mul(factor).min(self.max)
    }

    /// The smoothed round-trip time, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rfc6298_arithmetic_and_backoff() {
        let mut e = RttEstimator::new(ms(1000), ms(200), ms(60_000));
        assert_eq!(e.rto(), ms(1000));
        e.on_sample(ms(100));
        // RTO = 100 + 4 * 50 = 300.
        assert_eq!(e.rto(), ms(300));
        e.on_sample(ms(100));
        // RTTVAR = 3/4 * 50 + 0 = 37.5; RTO = 100 + 150.
        assert_eq!(e.rto(), ms(250));
        e.on_backoff();
        assert_eq!(e.rto(), ms(500));
        for _ in 0..30 {
            e.on_backoff();
        }
        assert_eq!(e.rto(), ms(60_000));
        e.reset_backoff();
        assert_eq!(e.rto(), ms(250));
    }

    #[test]
    fn minimum_applies() {
        let mut e = RttEstimator::new(ms(1000), ms(200), ms(60_000));
        e.on_sample(ms(1));
        assert_eq!(e.rto(), ms(200));
    }
}
