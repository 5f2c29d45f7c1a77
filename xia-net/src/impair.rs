//! The link model, shared by the simulator and the real-network drivers
//! (which have no netem): each direction of a link has a bandwidth
//! (serialisation delay), a drop-tail queue counted in packets, a
//! propagation delay, and seeded random loss, jitter, reordering and
//! duplication. In the simulator, the arrival time is when the far end
//! gets the packet; a real driver holds the packet until then and sends
//! it (the real wire adds its own, small, delay).

use std::collections::VecDeque;
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xia_stack::time::Instant;

/// One direction's properties.
#[derive(Clone, Debug, PartialEq)]
pub struct Impairment {
    /// Bits per second (`u64::MAX`: no serialisation delay to speak of).
    pub bandwidth_bps: u64,
    /// Propagation delay.
    pub delay: Duration,
    /// Packets the queue holds (those in serialisation included).
    pub queue: usize,
    /// Chance each packet is lost.
    pub loss: f64,
    /// Most extra delay, drawn uniformly per packet.
    pub jitter: Duration,
    /// Chance a packet is held back by one more delay (at least 1 ms), so
    /// later packets overtake it.
    pub reorder: f64,
    /// Chance a packet arrives twice (the copy one serialisation time
    /// later).
    pub duplicate: f64,
}

impl Default for Impairment {
    /// No impairment: unlimited rate, no delay, a long queue, no loss.
    fn default() -> Impairment {
        Impairment {
            bandwidth_bps: u64::MAX,
            delay: Duration::ZERO,
            queue: 100_000,
            loss: 0.0,
            jitter: Duration::ZERO,
            reorder: 0.0,
            duplicate: 0.0,
        }
    }
}

/// What happened to a packet handed to a link.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fate {
    /// It arrives at the far end at this time.
    Arrives(Instant),
    /// It arrives twice: at the first time, and a copy at the second.
    Duplicated(Instant, Instant),
    /// The queue was full.
    QueueDrop,
    /// Lost on the wire (after using the link's time).
    Lost,
}

/// Counters of one direction.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct DirStats {
    /// Packets handed to the link.
    pub offered: u64,
    /// Delivered (scheduled to arrive).
    pub delivered: u64,
    /// Dropped at a full queue.
    pub queue_drops: u64,
    /// Lost to random loss.
    pub lost: u64,
    /// Bytes put on the wire.
    pub bytes: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
}

/// One direction of a link.
#[derive(Debug)]
pub struct Direction {
    spec: Impairment,
    rng: ChaCha8Rng,
    // Duplication draws come from their own stream, so adding them left
    // every loss, jitter and reordering draw where it was.
    dup_rng: ChaCha8Rng,
    busy_until: Instant,
    // Times at which queued packets finish transmission.
    in_flight: VecDeque<Instant>,
    /// Its counters.
    pub stats: DirStats,
}

impl Direction {
    /// A direction with its own RNG stream.
    pub fn new(spec: impl Into<Impairment>, seed: u64) -> Direction {
        Direction {
            spec: spec.into(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            dup_rng: ChaCha8Rng::seed_from_u64(seed ^ 0xd0b1_e000_0000_0001),
            busy_until: Instant::ZERO,
            in_flight: VecDeque::new(),
            stats: DirStats::default(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        // Draw even when p is 0 so that changing one probability does not
        // shift every later draw of the stream.
        let x = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// Whether the queue is full at `now` with `extra` more packets
    /// offered: `Some(t)` with the time its oldest packet leaves (then there
    /// is room for one more), `None` if it takes them. An end system's
    /// driver asks before it offers, and holds what does not fit, as a NIC
    /// whose ring is full stops its host's queue instead of dropping.
    pub fn full_until(&mut self, now: Instant, extra: usize) -> Option<Instant> {
        while self.in_flight.front().is_some_and(|&t| t <= now) {
            self.in_flight.pop_front();
        }
        // A queue of none drops everything: holding would wait forever.
        if self.in_flight.len() + extra < self.spec.queue || self.spec.queue == 0 {
            return None;
        }
        // With `extra` offered and none yet in the queue, the first of
        // them leaves one serialisation after `busy_until`; the caller
        // asks again then.
        Some(
            self.in_flight
                .get(self.in_flight.len() + extra - self.spec.queue)
                .copied()
                .unwrap_or(self.busy_until.max(now)),
        )
    }

    /// Offers a packet of `len` bytes at `now`.
    pub fn send(&mut self, now: Instant, len: usize) -> Fate {
        self.stats.offered += 1;
        while self.in_flight.front().is_some_and(|&t| t <= now) {
            self.in_flight.pop_front();
        }
        if self.in_flight.len() >= self.spec.queue {
            self.stats.queue_drops += 1;
            return Fate::QueueDrop;
        }
        let start = self.busy_until.max(now);
        let bits = len as u128 * 8;
        let tx = Duration::from_nanos(
            (bits * 1_000_000_000).div_ceil(self.spec.bandwidth_bps as u128) as u64,
        );
        self.busy_until = start + tx;
        self.in_flight.push_back(self.busy_until);
        self.stats.bytes += len as u64;
        let lost = self.chance(self.spec.loss);
        let jitter_draw = self.rng.next_u64();
        let reordered = self.chance(self.spec.reorder);
        if lost {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let jitter_ns = self.spec.jitter.as_nanos() as u64;
        let jitter = if jitter_ns == 0 {
            0
        } else {
            jitter_draw % (jitter_ns + 1)
        };
        let mut arrive = self.busy_until + self.spec.delay + Duration::from_nanos(jitter);
        if reordered {
            // Held back by one more propagation delay (at least 1 ms), so
            // packets sent after it overtake it.
            arrive = arrive + self.spec.delay.max(Duration::from_millis(1));
        }
        self.stats.delivered += 1;
        let x = (self.dup_rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if x < self.spec.duplicate {
            // The copy follows one serialisation time later, as a
            // link-layer retransmission would.
            self.stats.duplicated += 1;
            return Fate::Duplicated(arrive, arrive + tx.max(Duration::from_nanos(1)));
        }
        Fate::Arrives(arrive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(loss: f64) -> Impairment {
        Impairment {
            bandwidth_bps: 8_000_000,
            delay: Duration::from_millis(10),
            queue: 2,
            loss,
            jitter: Duration::ZERO,
            reorder: 0.0,
            duplicate: 0.0,
        }
    }

    #[test]
    fn serialisation_queue_and_delay() {
        let mut d = Direction::new(spec(0.0), 1);
        // 1000 bytes at 8 Mbit/s = 1 ms on the wire, then 10 ms of flight.
        assert_eq!(
            d.send(Instant::ZERO, 1000),
            Fate::Arrives(Instant::from_millis(11))
        );
        assert_eq!(
            d.send(Instant::ZERO, 1000),
            Fate::Arrives(Instant::from_millis(12))
        );
        assert_eq!(d.send(Instant::ZERO, 1000), Fate::QueueDrop);
        assert_eq!(
            d.send(Instant::from_millis(1), 1000),
            Fate::Arrives(Instant::from_millis(13))
        );
        assert_eq!(d.stats.queue_drops, 1);
    }

    #[test]
    fn loss_is_seeded() {
        let run = |seed| {
            let mut d = Direction::new(spec(0.5), seed);
            (0..100)
                .map(|i| d.send(Instant::from_secs(i), 10) == Fate::Lost)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let lost = run(7).iter().filter(|l| **l).count();
        assert!((30..70).contains(&lost), "{lost}");
    }

    #[test]
    fn duplication_is_seeded_and_leaves_other_draws_alone() {
        let run = |dup: f64| {
            let mut d = Direction::new(
                Impairment {
                    duplicate: dup,
                    ..spec(0.3)
                },
                5,
            );
            (0..200)
                .map(|i| d.send(Instant::from_secs(i), 1000))
                .collect::<Vec<_>>()
        };
        let (plain, dup) = (run(0.0), run(0.5));
        let copies = dup
            .iter()
            .filter(|f| matches!(f, Fate::Duplicated(..)))
            .count();
        assert!((40..110).contains(&copies), "{copies}");
        // The same packets are lost, and the first copy arrives when the
        // lone packet would have; the second one serialisation time later.
        for (p, d) in plain.iter().zip(&dup) {
            match (p, d) {
                (Fate::Arrives(a), Fate::Duplicated(b, c)) => {
                    assert_eq!(a, b);
                    assert_eq!(*c, *b + Duration::from_millis(1));
                }
                (p, d) => assert_eq!(p, d),
            }
        }
        assert_eq!(dup, run(0.5));
    }
}
