//! Router counters: every packet is counted once as received and, if it is
//! not forwarded, broadcast or delivered, once under a [`Drop`] reason.

use std::fmt;

/// Why a packet was dropped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Drop {
    /// The header failed the forwarding checks.
    Malformed,
    /// No edge of the DAG could be followed (an XCMP unreachable was sent
    /// unless the packet was an XCMP error or a broadcast).
    Unreachable,
    /// The hop limit ran out (XCMP time exceeded, same exception).
    HopLimit,
    /// A route said discard.
    Discarded,
    /// A route or the arrival named a port the router does not have.
    NoSuchPort,
    /// An output or delivery queue was full.
    QueueFull,
}

impl Drop {
    /// All reasons, for printing tables.
    pub const ALL: [Drop; 6] = [
        Drop::Malformed,
        Drop::Unreachable,
        Drop::HopLimit,
        Drop::Discarded,
        Drop::NoSuchPort,
        Drop::QueueFull,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::Unreachable => "unreachable",
            Drop::HopLimit => "hop_limit",
            Drop::Discarded => "discarded",
            Drop::NoSuchPort => "no_such_port",
            Drop::QueueFull => "queue_full",
        }
    }
}

/// A router's counters.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Counters {
    /// Packets handed to the router.
    pub received: u64,
    /// Packets sent on toward their destination.
    pub forwarded: u64,
    /// Broadcast packets (each copied to every other port).
    pub broadcast: u64,
    /// Packets for the router itself.
    pub delivered: u64,
    /// XCMP echo replies sent.
    pub echo_replies: u64,
    /// XCMP errors sent.
    pub xcmp_errors_sent: u64,
    /// HID routes learnt from broadcasts.
    pub neighbours_learned: u64,
    /// Learnt HID routes that expired.
    pub neighbours_expired: u64,
    /// XHCP beacons sent (one per port per interval).
    pub beacons_sent: u64,
    /// XHCP beacons heard from other routers (never forwarded).
    pub beacons_heard: u64,
    /// Hosts that registered their HID here (XHCP).
    pub hosts_registered: u64,
    /// Chunks cached from passing traffic.
    pub chunks_cached: u64,
    /// Chunk requests answered from the cache.
    pub chunks_served: u64,
    /// Routing messages heard (link-local, never forwarded).
    pub routing_heard: u64,
    /// Routing messages sent.
    pub routing_sent: u64,
    drops: [u64; Drop::ALL.len()],
}

impl Counters {
    /// Counts a drop.
    pub fn drop(&mut self, why: Drop) {
        self.drops[why as usize] += 1;
    }

    /// Drops for one reason.
    pub fn dropped(&self, why: Drop) -> u64 {
        self.drops[why as usize]
    }

    /// Drops for all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rx {} fwd {} bcast {} local {} echo {} xcmp-err {}",
            self.received,
            self.forwarded,
            self.broadcast,
            self.delivered,
            self.echo_replies,
            self.xcmp_errors_sent
        )?;
        if self.chunks_cached + self.chunks_served > 0 {
            write!(
                f,
                " chunks cached {} served {}",
                self.chunks_cached, self.chunks_served
            )?;
        }
        if self.routing_heard + self.routing_sent > 0 {
            write!(
                f,
                " routing rx {} tx {}",
                self.routing_heard, self.routing_sent
            )?;
        }
        for d in Drop::ALL {
            let n = self.dropped(d);
            if n > 0 {
                write!(f, " drop:{} {n}", d.name())?;
            }
        }
        Ok(())
    }
}
