//! Congestion control: a small trait and NewReno (RFC 5681, RFC 6582).
//!
//! The connection decides *when* (new ACK, duplicate ACKs, partial ACK,
//! timeout); the controller decides *how much*. CUBIC would be another
//! implementation of the same trait.

/// A congestion controller's window arithmetic, in bytes.
pub trait CongestionController: std::fmt::Debug + Send {
    /// The congestion window.
    fn window(&self) -> usize;
    /// The slow-start threshold.
    fn ssthresh(&self) -> usize;
    /// `acked` new bytes were acknowledged outside fast recovery.
    fn on_ack(&mut self, acked: usize, mss: usize);
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
            self.cwnd = self.cwnd.saturating_add(acked.min(2 * mss));
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
        self.cwnd = self.cwnd.saturating_add(mss);
    }

    fn on_partial_ack(&mut self, acked: usize, mss: usize) {
        // RFC 6582 3.2 (5): deflate by the amount acknowledged, add back
        // one MSS for the retransmission that goes out now.
        self.cwnd = self.cwnd.saturating_sub(acked).saturating_add(mss).max(mss);
    }

    fn on_exit_recovery(&mut self, flight: usize, mss: usize) {
        // RFC 6582 3.2 (3), the option that avoids a burst.
        self.cwnd = self.ssthresh.min(flight.max(mss) + mss);
    }

    fn on_timeout(&mut self, flight: usize, mss: usize, first: bool) {
        if first {
            self.ssthresh = (flight / 2).max(2 * mss);
        }
        self.cwnd = mss;
        self.acked_in_ca = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
