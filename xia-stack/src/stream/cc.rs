//! Congestion control: a small trait and NewReno (RFC 5681, RFC 6582).
//!
//! The connection decides *when* (new ACK, duplicate ACKs, partial ACK,
//! timeout); the controller decides *how much*. Two implementations:
//! [`NewReno`] and [`Cubic`] (RFC 9438, the default).

use std::time::Duration;

use crate::time::Instant;

/// A congestion controller's window arithmetic, in bytes.
pub trait CongestionController: std::fmt::Debug + Send {
    /// The congestion window.
    fn window(&self) -> usize;
    /// The slow-start threshold.
    fn ssthresh(&self) -> usize;
    /// `acked` new bytes were acknowledged outside fast recovery.
    fn on_ack(&mut self, acked: usize, mss: usize);
    /// The same, with the time and the smoothed RTT, for controllers whose
    /// growth depends on time (CUBIC). By default, [`Self::on_ack`].
    fn on_ack_at(&mut self, acked: usize, mss: usize, _now: Instant, _srtt: Option<Duration>) {
        self.on_ack(acked, mss);
    }
    /// Three duplicate ACKs: fast retransmit and enter fast recovery with
    /// `flight` bytes outstanding.
    fn on_enter_recovery(&mut self, flight: usize, mss: usize);
    /// A further duplicate ACK during fast recovery.
    fn on_recovery_dup_ack(&mut self, mss: usize);
    /// A partial ACK of `acked` bytes during fast recovery.
    fn on_partial_ack(&mut self, acked: usize, mss: usize);
    /// A full ACK ends fast recovery with `flight` bytes still outstanding.
    fn on_exit_recovery(&mut self, flight: usize, mss: usize);
    /// The retransmission timer expired; `first` is false for repeated
    /// timeouts of the same data, which keep ssthresh (RFC 5681 §3.1).
    fn on_timeout(&mut self, flight: usize, mss: usize, first: bool);
}

/// Slow start with RFC 3465's limit of L = 2 MSS per ACK, so stretch ACKs
/// do not stall growth; the same for both controllers.
fn slow_start(cwnd: usize, acked: usize, mss: usize) -> usize {
    cwnd.saturating_add(acked.min(2 * mss))
}

/// Fast-recovery window arithmetic (RFC 6582), which both controllers use:
/// they differ in how they reduce and grow, not in how they recover.
mod recovery {
    /// A further duplicate ACK: one more segment has left the network.
    pub fn inflate(cwnd: usize, mss: usize) -> usize {
        cwnd.saturating_add(mss)
    }

    /// A partial ACK (RFC 6582 3.2 (5)): deflate by the amount
    /// acknowledged, add back one MSS for the retransmission going out.
    pub fn deflate(cwnd: usize, acked: usize, mss: usize) -> usize {
        cwnd.saturating_sub(acked).saturating_add(mss).max(mss)
    }

    /// The full ACK that ends recovery (RFC 6582 3.2 (3), the option that
    /// avoids a burst).
    pub fn exit(ssthresh: usize, flight: usize, mss: usize) -> usize {
        ssthresh.min(flight.max(mss) + mss)
    }
}

/// NewReno: slow start, congestion avoidance, fast recovery with partial
/// ACKs (RFC 6582).
#[derive(Clone, Debug)]
pub struct NewReno {
    cwnd: usize,
    ssthresh: usize,
    /// Bytes acknowledged towards the next one-MSS increase in avoidance.
    acked_in_ca: usize,
}

impl NewReno {
    /// A controller with an initial window of `initial_segments` MSS.
    pub fn new(initial_segments: usize, mss: usize) -> NewReno {
        NewReno {
            cwnd: initial_segments.max(1) * mss,
            ssthresh: usize::MAX,
            acked_in_ca: 0,
        }
    }
}

impl CongestionController for NewReno {
    fn window(&self) -> usize {
        self.cwnd
    }

    fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    fn on_ack(&mut self, acked: usize, mss: usize) {
        if self.cwnd < self.ssthresh {
            // Slow start, with RFC 3465's limit of one MSS per ACK... of
            // L = 2 MSS, so stretch ACKs do not stall growth.
            self.cwnd = slow_start(self.cwnd, acked, mss);
        } else {
            // Congestion avoidance: one MSS per window of acknowledged data.
            self.acked_in_ca = self.acked_in_ca.saturating_add(acked);
            if self.acked_in_ca >= self.cwnd {
                self.acked_in_ca -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(mss);
            }
        }
    }

    fn on_enter_recovery(&mut self, flight: usize, mss: usize) {
        self.ssthresh = (flight / 2).max(2 * mss);
        self.cwnd = self.ssthresh + 3 * mss;
        self.acked_in_ca = 0;
    }

    fn on_recovery_dup_ack(&mut self, mss: usize) {
        self.cwnd = recovery::inflate(self.cwnd, mss);
    }

    fn on_partial_ack(&mut self, acked: usize, mss: usize) {
        self.cwnd = recovery::deflate(self.cwnd, acked, mss);
    }

    fn on_exit_recovery(&mut self, flight: usize, mss: usize) {
        self.cwnd = recovery::exit(self.ssthresh, flight, mss);
    }

    fn on_timeout(&mut self, flight: usize, mss: usize, first: bool) {
        if first {
            self.ssthresh = (flight / 2).max(2 * mss);
        }
        self.cwnd = mss;
        self.acked_in_ca = 0;
    }
}

/// Which congestion controller new connections use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// CUBIC (RFC 9438).
    #[default]
    Cubic,
    /// NewReno (RFC 5681, RFC 6582).
    NewReno,
}

impl Algorithm {
    /// A controller with an initial window of `initial_segments` MSS.
    pub fn build(self, initial_segments: usize, mss: usize) -> Box<dyn CongestionController> {
        match self {
            Algorithm::Cubic => Box::new(Cubic::new(initial_segments, mss)),
            Algorithm::NewReno => Box::new(NewReno::new(initial_segments, mss)),
        }
    }
}

/// CUBIC's constant C, in segments per second cubed.
const CUBIC_C: f64 = 0.4;
/// CUBIC's multiplicative decrease factor.
const CUBIC_BETA: f64 = 0.7;

/// CUBIC (RFC 9438): after a loss the window grows along a cubic function
/// of the time since it, plateauing around the window where the loss
/// happened, with a Reno-friendly floor. Fast recovery itself follows the
/// connection's NewReno rules (inflate on duplicate ACKs, deflate on
/// partial ACKs).
#[derive(Clone, Debug)]
pub struct Cubic {
    cwnd: usize,
    ssthresh: usize,
    /// The window (segments) before the last reduction.
    w_max: f64,
    /// Time to climb back to `w_max`, in seconds.
    k: f64,
    /// When the current avoidance epoch began (`None`: at the next ACK).
    epoch: Option<Instant>,
    /// The Reno-friendly window estimate, in segments.
    w_est: f64,
}

impl Cubic {
    /// A controller with an initial window of `initial_segments` MSS.
    pub fn new(initial_segments: usize, mss: usize) -> Cubic {
        Cubic {
            cwnd: initial_segments.max(1) * mss,
            ssthresh: usize::MAX,
            w_max: 0.0,
            k: 0.0,
            epoch: None,
            w_est: 0.0,
        }
    }

    fn reduce(&mut self, mss: usize) {
        let w = self.cwnd as f64 / mss as f64;
        // Fast convergence: give up more when the last peak was higher.
        self.w_max = if w < self.w_max {
            w * (1.0 + CUBIC_BETA) / 2.0
        } else {
            w
        };
        self.ssthresh = ((self.cwnd as f64 * CUBIC_BETA) as usize).max(2 * mss);
        self.epoch = None;
    }
}

impl CongestionController for Cubic {
    fn window(&self) -> usize {
        self.cwnd
    }

    fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    fn on_ack(&mut self, acked: usize, mss: usize) {
        // Without a clock CUBIC cannot run its curve: grow like Reno.
        if self.cwnd < self.ssthresh {
            self.cwnd = slow_start(self.cwnd, acked, mss);
        } else {
            self.cwnd = self
                .cwnd
                .saturating_add((mss * acked / self.cwnd.max(1)).max(1));
        }
    }

    fn on_ack_at(&mut self, acked: usize, mss: usize, now: Instant, srtt: Option<Duration>) {
        if self.cwnd < self.ssthresh {
            self.cwnd = slow_start(self.cwnd, acked, mss);
            return;
        }
        let m = mss as f64;
        let cwnd = self.cwnd as f64 / m;
        let start = *self.epoch.get_or_insert_with(|| {
            // A new epoch: K is when the curve returns to W_max.
            self.k = ((self.w_max - cwnd).max(0.0) / CUBIC_C).cbrt();
            self.w_est = cwnd;
            now
        });
        let rtt = srtt.unwrap_or(Duration::from_millis(100)).as_secs_f64();
        // Aim one RTT ahead, as RFC 9438 §4.2 does.
        let t = (now - start).as_secs_f64() + rtt;
        let target = (CUBIC_C * (t - self.k).powi(3) + self.w_max).clamp(cwnd, 1.5 * cwnd);
        // Reno-friendly region (§4.3): what AIMD with the same β would have.
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        self.w_est += alpha * (acked as f64 / m) / cwnd;
        let goal = target.max(self.w_est);
        if goal > cwnd {
            let grow = (goal - cwnd) / cwnd * (acked as f64 / m);
            self.cwnd = self.cwnd.saturating_add((grow * m) as usize);
        }
    }

    fn on_enter_recovery(&mut self, _flight: usize, mss: usize) {
        self.reduce(mss);
        self.cwnd = self.ssthresh + 3 * mss;
    }

    fn on_recovery_dup_ack(&mut self, mss: usize) {
        self.cwnd = recovery::inflate(self.cwnd, mss);
    }

    fn on_partial_ack(&mut self, acked: usize, mss: usize) {
        self.cwnd = recovery::deflate(self.cwnd, acked, mss);
    }

    fn on_exit_recovery(&mut self, flight: usize, mss: usize) {
        self.cwnd = recovery::exit(self.ssthresh, flight, mss);
    }

    fn on_timeout(&mut self, _flight: usize, mss: usize, first: bool) {
        if first {
            self.reduce(mss);
        }
        self.cwnd = mss;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_reduces_by_beta_and_climbs_back_along_the_curve() {
        let mss = 1000;
        let mut c = Cubic::new(100, mss);
        c.ssthresh = 0; // in avoidance
        c.on_enter_recovery(100_000, mss);
        assert_eq!(c.ssthresh(), 70_000);
        c.on_exit_recovery(70_000, mss);
        assert_eq!(c.window(), 70_000);
        // K = cbrt(30 / 0.4) ≈ 4.2 s: the window climbs back to about 100
        // segments by then, slowly at first.
        let rtt = Some(Duration::from_millis(100));
        let mut now = Instant::from_secs(10);
        let at = |c: &mut Cubic, secs: f64, now: &mut Instant| {
            let until = Instant::from_secs(10) + Duration::from_secs_f64(secs);
            while *now < until {
                // One window of ACKs per RTT.
                let w = c.window();
                c.on_ack_at(w, mss, *now, rtt);
                *now = *now + Duration::from_millis(100);
            }
            c.window()
        };
        let early = at(&mut c, 1.0, &mut now);
        let plateau = at(&mut c, 4.2, &mut now);
        let later = at(&mut c, 7.0, &mut now);
        assert!(early < 90_000, "{early}");
        assert!((90_000..115_000).contains(&plateau), "{plateau}");
        assert!(later > plateau, "{later} after {plateau}");
        // A timeout resets to one segment.
        c.on_timeout(later, mss, true);
        assert_eq!(c.window(), mss);
    }

    #[test]
    fn slow_start_then_avoidance_then_recovery() {
        let mss = 1000;
        let mut c = NewReno::new(2, mss);
        assert_eq!(c.window(), 2000);
        c.on_ack(1000, mss);
        assert_eq!(c.window(), 3000);
        c.on_enter_recovery(8000, mss);
        assert_eq!(c.ssthresh(), 4000);
        assert_eq!(c.window(), 7000);
        c.on_recovery_dup_ack(mss);
        assert_eq!(c.window(), 8000);
        c.on_partial_ack(2000, mss);
        assert_eq!(c.window(), 7000);
        c.on_exit_recovery(3000, mss);
        assert_eq!(c.window(), 4000);
        // Avoidance: +1 MSS after a full window is acknowledged.
        c.on_ack(2000, mss);
        assert_eq!(c.window(), 4000);
        c.on_ack(2000, mss);
        assert_eq!(c.window(), 5000);
        c.on_timeout(5000, mss, true);
        assert_eq!((c.window(), c.ssthresh()), (1000, 2500));
        c.on_timeout(1000, mss, false);
        assert_eq!(c.ssthresh(), 2500);
    }
}
