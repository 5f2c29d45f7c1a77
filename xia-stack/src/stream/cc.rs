//! Congestion control: a small trait and NewReno (RFC 5681, RFC 6582).
//!
//! The connection decides *when* (new ACK, duplicate ACKs, partial ACK,
//! timeout); the controller decides *how much*. Two implementations:
//! [`NewReno`] and [`Cubic`] (RFC 9438, the default). [`HyStart`] (RFC
//! 9406) ends the first slow start before it overflows the bottleneck.

use std::collections::VecDeque;
use std::time::Duration;

use super::{seq_ge, seq_le};
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
    /// Slow start ends without a loss (HyStart++): ssthresh becomes the
    /// current window. By default nothing happens.
    fn end_slow_start(&mut self, _mss: usize) {}
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
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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

    fn end_slow_start(&mut self, _mss: usize) {
        self.ssthresh = self.cwnd;
    }
}

/// Which congestion controller new connections use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
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

    /// The same as a [`Controller`] (what connections hold).
    pub(crate) fn controller(self, initial_segments: usize, mss: usize) -> Controller {
        match self {
            Algorithm::Cubic => Controller::Cubic(Cubic::new(initial_segments, mss)),
            Algorithm::NewReno => Controller::NewReno(NewReno::new(initial_segments, mss)),
        }
    }
}

/// A connection's congestion controller: one of the built-in ones, whose
/// state a host snapshot carries, or one the application supplied
/// ([`Connection::set_congestion_controller`](super::Connection::set_congestion_controller)).
///
/// A supplied controller is opaque: a snapshot records only its window
/// and slow-start threshold, and the restored connection continues with
/// NewReno from there.
pub(crate) enum Controller {
    Cubic(Cubic),
    NewReno(NewReno),
    Custom(Box<dyn CongestionController>),
}

impl std::ops::Deref for Controller {
    type Target = dyn CongestionController;

    fn deref(&self) -> &(dyn CongestionController + 'static) {
        match self {
            Controller::Cubic(c) => c,
            Controller::NewReno(c) => c,
            Controller::Custom(c) => &**c,
        }
    }
}

impl std::ops::DerefMut for Controller {
    fn deref_mut(&mut self) -> &mut (dyn CongestionController + 'static) {
        match self {
            Controller::Cubic(c) => c,
            Controller::NewReno(c) => c,
            Controller::Custom(c) => &mut **c,
        }
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// What a snapshot holds of a [`Controller`].
#[derive(serde::Serialize, serde::Deserialize)]
enum SavedController {
    Cubic(Cubic),
    NewReno(NewReno),
}

impl serde::Serialize for Controller {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let custom;
        let saved = match self {
            Controller::Cubic(c) => SavedControllerRef::Cubic(c),
            Controller::NewReno(c) => SavedControllerRef::NewReno(c),
            Controller::Custom(c) => {
                custom = NewReno {
                    cwnd: c.window(),
                    ssthresh: c.ssthresh(),
                    acked_in_ca: 0,
                };
                SavedControllerRef::NewReno(&custom)
            }
        };
        serde::Serialize::serialize(&saved, s)
    }
}

/// [`SavedController`] by reference (the same serialized form).
#[derive(serde::Serialize)]
#[serde(rename = "SavedController")]
enum SavedControllerRef<'a> {
    Cubic(&'a Cubic),
    NewReno(&'a NewReno),
}

impl<'de> serde::Deserialize<'de> for Controller {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Controller, D::Error> {
        Ok(
            match <SavedController as serde::Deserialize>::deserialize(d)? {
                SavedController::Cubic(c) => Controller::Cubic(c),
                SavedController::NewReno(c) => Controller::NewReno(c),
            },
        )
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
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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

    fn end_slow_start(&mut self, mss: usize) {
        // Avoidance starts at the plateau (K = 0): the curve grows slowly
        // first, then faster, probing above where slow start stopped.
        self.ssthresh = self.cwnd;
        self.w_max = self.cwnd as f64 / mss as f64;
        self.epoch = None;
    }
}

/// RFC 9406's constants.
const HYSTART_MIN_RTT_THRESH: Duration = Duration::from_millis(4);
const HYSTART_MAX_RTT_THRESH: Duration = Duration::from_millis(16);
const HYSTART_MIN_RTT_DIVISOR: u32 = 8;
const HYSTART_N_RTT_SAMPLE: u32 = 8;
const HYSTART_CSS_GROWTH_DIVISOR: usize = 4;
const HYSTART_CSS_ROUNDS: u32 = 5;
/// Most segments whose send times are kept for RTT samples.
const HYSTART_MAX_TIMED: usize = 4096;

/// Where HyStart++ is.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum HyPhase {
    /// Ordinary slow start, watching the round trip time.
    SlowStart,
    /// Conservative slow start: the RTT rose above this baseline.
    Css {
        baseline: Duration,
        #[serde(deserialize_with = "crate::serde_util::counter32")]
        rounds: u32,
    },
    /// Finished: avoidance, or a loss ended slow start first.
    Done,
}

/// What the window should do on an ACK in slow start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlowStartStep {
    /// Grow by what was acknowledged divided by this.
    Grow(usize),
    /// The round trip time rose for long enough: leave slow start now.
    Exit,
}

/// HyStart++ (RFC 9406) for the first slow start: within each round trip
/// it takes the minimum of the per-ACK RTT samples; when a round's
/// minimum exceeds the previous round's by an eighth (4–16 ms), the queue
/// at the bottleneck is filling, and slow start continues at a quarter of
/// its pace (conservative slow start) for five rounds, then ends without
/// a loss. Going back below the baseline resumes slow start (the rise was
/// noise). A loss or timeout ends it for good.
///
/// Without timestamps the samples come from the send times of new
/// segments, kept only during this first slow start (bounded), and
/// forgotten at the first retransmission (Karn).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct HyStart {
    phase: HyPhase,
    /// The round ends when this is acknowledged (SND.NXT at its start).
    window_end: Option<u32>,
    last_round_min: Option<Duration>,
    round_min: Option<Duration>,
    #[serde(deserialize_with = "crate::serde_util::counter32")]
    samples: u32,
    /// Ends and send times of new segments not yet acknowledged.
    timed: VecDeque<(u32, Instant)>,
}

impl HyStart {
    /// Active if `enabled`, else done from the start.
    pub(crate) fn new(enabled: bool) -> HyStart {
        HyStart {
            phase: if enabled {
                HyPhase::SlowStart
            } else {
                HyPhase::Done
            },
            window_end: None,
            last_round_min: None,
            round_min: None,
            samples: 0,
            timed: VecDeque::new(),
        }
    }

    /// Whether it still watches.
    pub(crate) fn active(&self) -> bool {
        self.phase != HyPhase::Done
    }

    /// A loss or timeout: slow start is the loss response's business now.
    pub(crate) fn finish(&mut self) {
        self.phase = HyPhase::Done;
        self.timed = VecDeque::new();
    }

    /// Refuses restored state the arithmetic above could overflow on.
    pub(crate) fn check(&self) -> Result<(), String> {
        let baseline = match self.phase {
            HyPhase::Css { baseline, .. } => Some(baseline),
            _ => None,
        };
        let times = [self.last_round_min, self.round_min, baseline];
        if times
            .into_iter()
            .flatten()
            .any(|t| t > crate::serde_util::LONGEST)
        {
            return Err("HyStart round-trip time out of range".into());
        }
        Ok(())
    }

    /// A new segment ending at `end` left at `now`.
    pub(crate) fn on_send(&mut self, end: u32, now: Instant) {
        if self.active() && self.timed.len() < HYSTART_MAX_TIMED {
            self.timed.push_back((end, now));
        }
    }

    /// An ACK of new data up to `ack`, with `snd_nxt` the next sequence
    /// number to send; the window is in slow start.
    pub(crate) fn on_ack(&mut self, ack: u32, snd_nxt: u32, now: Instant) -> SlowStartStep {
        let mut sample = None;
        while let Some(&(end, sent)) = self.timed.front() {
            if !seq_le(end, ack) {
                break;
            }
            sample = Some(now.saturating_since(sent));
            self.timed.pop_front();
        }
        if !self.active() {
            return SlowStartStep::Grow(1);
        }
        let new_round = self.window_end.is_none_or(|e| seq_ge(ack, e));
        if new_round {
            self.window_end = Some(snd_nxt);
            self.last_round_min = self.round_min;
            self.round_min = None;
            self.samples = 0;
            if let HyPhase::Css { baseline, rounds } = self.phase {
                if rounds + 1 >= HYSTART_CSS_ROUNDS {
                    self.finish();
                    return SlowStartStep::Exit;
                }
                self.phase = HyPhase::Css {
                    baseline,
                    rounds: rounds + 1,
                };
            }
        }
        if let Some(r) = sample {
            self.round_min = Some(self.round_min.map_or(r, |m| m.min(r)));
            self.samples += 1;
        }
        if let (Some(cur), Some(last)) = (self.round_min, self.last_round_min) {
            if self.samples >= HYSTART_N_RTT_SAMPLE {
                match self.phase {
                    HyPhase::SlowStart => {
                        let thresh = (last / HYSTART_MIN_RTT_DIVISOR)
                            .clamp(HYSTART_MIN_RTT_THRESH, HYSTART_MAX_RTT_THRESH);
                        if cur >= last + thresh {
                            self.phase = HyPhase::Css {
                                baseline: cur,
                                rounds: 0,
                            };
                        }
                    }
                    HyPhase::Css { baseline, .. } if cur < baseline => {
                        self.phase = HyPhase::SlowStart;
                    }
                    _ => {}
                }
            }
        }
        match self.phase {
            HyPhase::Css { .. } => SlowStartStep::Grow(HYSTART_CSS_GROWTH_DIVISOR),
            _ => SlowStartStep::Grow(1),
        }
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
    fn hystart_leaves_slow_start_when_the_rtt_rises() {
        let mut h = HyStart::new(true);
        let ms = Duration::from_millis;
        let mut now = Instant::from_secs(1);
        let mut seq = 0u32;
        // One round of 10 segments, each acknowledged after `rtt`.
        let mut round = |h: &mut HyStart, rtt: Duration, now: &mut Instant| {
            let start = *now;
            let mut steps = Vec::new();
            for i in 0..10u32 {
                h.on_send(seq + (i + 1) * 100, start);
            }
            let end = seq + 1000;
            for i in 0..10u32 {
                *now = start + rtt + ms(u64::from(i));
                // Each ACK releases a segment of the next round.
                steps.push(h.on_ack(seq + (i + 1) * 100, end + (i + 1) * 100, *now));
            }
            seq = end;
            steps
        };
        assert!(round(&mut h, ms(50), &mut now)
            .iter()
            .all(|s| *s == SlowStartStep::Grow(1)));
        // A rise of less than an eighth (6.25 ms) is not a queue.
        assert!(round(&mut h, ms(55), &mut now)
            .iter()
            .all(|s| *s == SlowStartStep::Grow(1)));
        // 10 ms more than the last round: conservative slow start.
        let steps = round(&mut h, ms(65), &mut now);
        assert_eq!(steps.last(), Some(&SlowStartStep::Grow(4)));
        // It stays conservative while the RTT stays high, then exits.
        let mut exit = false;
        for _ in 0..6 {
            exit |= round(&mut h, ms(70), &mut now).contains(&SlowStartStep::Exit);
        }
        assert!(exit);
        assert!(!h.active());
    }

    #[test]
    fn hystart_resumes_slow_start_when_the_rise_was_noise() {
        let mut h = HyStart::new(true);
        let ms = Duration::from_millis;
        let t0 = Instant::from_secs(1);
        let mut seq = 0u32;
        let mut last = SlowStartStep::Grow(1);
        for (r, rtt) in [50u64, 70, 45].into_iter().enumerate() {
            let start = t0 + ms(200 * r as u64);
            for i in 0..10u32 {
                h.on_send(seq + (i + 1) * 100, start);
            }
            for i in 0..10u32 {
                let (ack, nxt) = (seq + (i + 1) * 100, seq + 1000 + (i + 1) * 100);
                last = h.on_ack(ack, nxt, start + ms(rtt));
            }
            seq += 1000;
            if r == 1 {
                assert_eq!(last, SlowStartStep::Grow(4));
            }
        }
        assert_eq!(last, SlowStartStep::Grow(1));
        h.finish();
        assert!(!h.active());
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
