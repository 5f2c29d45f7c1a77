//! XStream: a sans-IO, TCP-grade reliable byte stream over XSTREAM
//! segments.
//!
//! A [`Connection`] is a state machine in quinn-proto's manner: it does no
//! I/O, reads no clock and uses no randomness (initial sequence numbers
//! are passed in). It consumes XSTREAM segments ([`XstreamRepr`](crate::wire::xstream::XstreamRepr) or bytes)
//! and produces segments as bytes, each meant for an XIP packet addressed
//! to [`Connection::peer_dag`]. It knows nothing of XIP: a connection is
//! identified by the pair of SIDs (the intents of the local and peer DAGs,
//! see [`ConnectionId`]), never by locators, so either end can move
//! ([`Connection::rebind_local`], [`Connection::set_peer_dag`]) while the
//! connection lives.
//!
//! Drive it like this:
//! - getters: [`Connection::state`], [`Connection::id`],
//!   [`Connection::stats`], the DAGs;
//! - `handle_*` for incoming events: [`Connection::handle_segment`],
//!   [`Connection::handle_bytes`], [`Connection::handle_timeout`];
//! - commands: [`Connection::write`], [`Connection::read`],
//!   [`Connection::close`], [`Connection::abort`];
//! - `poll_*` after each of the above, in this order:
//!   [`Connection::poll_transmit`] until `None`, [`Connection::poll_event`]
//!   until `None`, then [`Connection::poll_timeout`] to know when to call
//!   `handle_timeout` next.
//!
//! What is implemented: the three-way handshake (and simultaneous open)
//! with MSS and window-scale options; wrapping 32-bit byte sequence
//! numbers; bounded, autotuned send and receive buffers with bounded
//! out-of-order reassembly (see *Buffers* below); cumulative ACKs and a
//! scaled receive window from free buffer space, with window updates,
//! receiver- and sender-side silly-window avoidance and zero-window
//! probes; RFC 6298 retransmission timing with Karn's rule, exponential
//! backoff and retransmission limits (a lower one for the handshake, as Linux's
//! `tcp_syn_retries`); fast retransmit and NewReno fast
//! recovery (RFC 6582) behind the [`CongestionController`] trait;
//! selective acknowledgements (RFC 2018, [`Config::sack`], negotiated in
//! the handshake) with SACK-based loss recovery after RFC 6675; FIN in
//! both directions (half-close), TIME-WAIT, RST on errors and for
//! segments to a closed connection; optional delayed ACKs (off by
//! default); optional keepalive (off by default). The states and their
//! transition table are in [`state`].
//!
//! Congestion control is CUBIC (RFC 9438) by default, NewReno
//! selectable ([`Config::congestion`]). The first slow start ends early
//! when the round-trip time rises (HyStart++, RFC 9406,
//! [`Config::hystart`]), since a window doubling into a drop-tail queue
//! otherwise loses up to half a window at once. The window grows only
//! while it limits what is in flight (RFC 7661's concern, decided as
//! Linux's `tcp_is_cwnd_limited` does), so a flow held back by the
//! receiver or the application does not inflate it. While data is in
//! flight, new data leaves only in full segments (or all that is queued):
//! CUBIC opens the window by fractions of a segment per ACK, and each
//! fraction would otherwise become a tiny segment (RFC 1122 4.2.3.4).
//!
//! With SACK, the receiver reports up to four blocks of out-of-order
//! data (the newest first) in every ACK, and the sender keeps a bounded
//! scoreboard (1024 ranges) of SACKed ranges above SND.UNA. Recovery
//! begins at the third duplicate ACK or, if duplicate ACKs were lost, as
//! soon as three segments' worth above SND.UNA is SACKed (RFC 6675 5). In
//! fast recovery it sends while its estimate of the data in flight
//! ("pipe": outstanding minus SACKed minus holes deemed lost and not yet
//! repeated) is below ssthresh, first repeating the holes below the
//! highest SACKed byte, then new data. After a retransmission timeout it
//! resends from the first unacknowledged byte but skips SACKed ranges;
//! after three timeouts in a row it forgets the scoreboard (in case the
//! peer reneged). The simplifications: a hole counts as lost once three
//! segments' worth above it is SACKed (RFC 6675's IsLost, counted in
//! bytes), and a lost repeat of a hole waits for the timer. Without SACK
//! the sender uses NewReno recovery and a timeout resends everything from
//! the first unacknowledged byte (go-back-N), as classic BSD stacks do.
//!
//! # Buffers
//!
//! A 100 Mbit/s path with a 50 ms round trip holds 625 kB (its BDP), and
//! a sender needs up to about twice that in its window to keep such a
//! link busy through a bottleneck queue and loss recovery. Rather than
//! giving every connection buffers that large, XStream autotunes them as
//! Linux does (`tcp_rmem`/`tcp_wmem`):
//!
//! - The receive buffer starts at [`Config::recv_buffer`] (256 KiB).
//!   Once per round trip (the handshake measured one), if the
//!   application read more than in the round trip before, it grows to
//!   twice what was read, plus 16 segments, plus twice the growth (a
//!   sender in slow start doubles each round trip) — Linux's dynamic
//!   right-sizing — up to [`Config::recv_buffer_max`] (4 MiB; the default
//!   window scale of 7 can offer 8 MiB). Reads drive it: a reader that
//!   does not keep up keeps a small window, so memory goes to connections
//!   that move data, in proportion to their rate.
//! - The send buffer starts at [`Config::send_buffer`] (256 KiB) and
//!   grows to twice the usable window (the smaller of the congestion
//!   window and the peer's), up to [`Config::send_buffer_max`] (4 MiB).
//! - Neither shrinks (an offered window must stay valid); bytes are
//!   allocated only as data is buffered. Out-of-order segments lie inside
//!   the receive window, so their bytes count against it;
//!   [`Config::max_out_of_order`] (4096: a 4 MiB window of 1 KiB
//!   segments) bounds only the per-segment overhead.
//!
//! So one connection holds at most about `recv_buffer_max +
//! send_buffer_max` bytes plus per-segment bookkeeping. Fixed 4 MiB
//! defaults would reach the same speed on one fast path, but would let
//! every peer of a slow reader park 4 MiB in it; fixed 1 MiB buffers
//! would cap a 50 ms path at about 170 Mbit/s. `recv_buffer_max =
//! recv_buffer` turns receive autotuning off.
//!
//! # Keepalive
//!
//! With [`Config::keepalive`] set, an established connection (also
//! CLOSE-WAIT and FIN-WAIT-2) that has heard nothing from its peer for
//! that long, and has nothing of its own outstanding, sends a probe: a
//! segment with sequence number SND.UNA − 1 and no data, which the peer
//! finds out of window and answers with an ACK (RFC 1122 4.2.3.6). Any
//! segment from the peer restarts the idle time. Probes repeat every
//! [`Config::keepalive_interval`]; when [`Config::keepalive_probes`] of
//! them went unanswered, the connection fails with
//! [`ConnectionError::TimedOut`]. While data is outstanding the
//! retransmission timer watches the peer instead.
//!
//! Signed MIGRATE (xia-core v2's option 50, answered by 51; see
//! [`migrate`]): [`Connection::migrate`] moves our end and tells the peer,
//! on every segment until it is acknowledged (and on bare ACKs after a
//! timeout when idle, backing off to 64 RTOs and repeating at that
//! interval for as long as the connection is open — the peer may only be
//! slow to hear it; a connection that reaches CLOSED stops); the peer
//! checks the key, the signature, the intent and freshness before it
//! swaps the DAG, and refuses anything else
//! ([`StreamEvent::MigrateRefused`]) without touching the connection.
//! `rebind_local` / `set_peer_dag` remain for drivers that learn the new
//! DAG otherwise (a name update).
//!
//! Not implemented: D-SACK, timestamps (RTTM/PAWS), Nagle's algorithm,
//! ECN, pacing, RACK-TLP and detection of lost retransmissions (they wait
//! for the timer), PRR, F-RTO, limited transmit without SACK. A segment
//! carrying a MIGRATE (about 200 bytes of option) may exceed the MSS by
//! that much; the XIP layer does not fragment.

mod buffer;
mod cc;
mod conn;
pub mod migrate;
mod rtt;
pub mod state;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use cc::{Algorithm, CongestionController, Cubic, NewReno};
pub use conn::{Connection, ConnectionId, Stats};
pub use rtt::RttEstimator;
pub use state::{State, Transition};

/// How a connection behaves; [`Config::default`] suits simulations.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// The largest payload we accept per segment (announced in our SYN).
    pub mss: u16,
    /// Initial send buffer size in bytes (unacknowledged plus unsent
    /// data); it grows to twice the usable window, up to
    /// [`send_buffer_max`](Self::send_buffer_max).
    pub send_buffer: usize,
    /// Largest send buffer in bytes.
    pub send_buffer_max: usize,
    /// Initial receive buffer size in bytes (the most the window offers);
    /// autotuning grows it up to [`recv_buffer_max`](Self::recv_buffer_max)
    /// while the application keeps reading.
    pub recv_buffer: usize,
    /// Largest receive buffer in bytes (equal to `recv_buffer`: no
    /// autotuning). The window never exceeds 65535 << `window_scale`.
    pub recv_buffer_max: usize,
    /// Most out-of-order segments held for reassembly (their bytes lie
    /// inside the window, so this bounds only the per-segment overhead).
    pub max_out_of_order: usize,
    /// The window-scale shift we announce (at most 14).
    pub window_scale: u8,
    /// Initial congestion window in segments.
    pub initial_window: usize,
    /// RTO before any RTT sample (RFC 6298: 1 s).
    pub initial_rto: Duration,
    /// Lower bound of the RTO.
    pub min_rto: Duration,
    /// Upper bound of the RTO, backoff included.
    pub max_rto: Duration,
    /// Retransmissions of the same data before giving up.
    pub max_retransmissions: u32,
    /// Retransmissions of a SYN (or SYN|ACK) before giving up: 6, as
    /// Linux's `tcp_syn_retries`, fails a connection to a silent peer
    /// after about two minutes instead of many.
    pub syn_retries: u32,
    /// How long TIME-WAIT lasts (2×MSL).
    pub time_wait: Duration,
    /// Delay ACKs by at most this long (`None`: ACK every segment).
    pub delayed_ack: Option<Duration>,
    /// The congestion controller (CUBIC by default, NewReno selectable).
    pub congestion: Algorithm,
    /// End the first slow start when the round-trip time rises, before
    /// the bottleneck queue overflows (HyStart++, RFC 9406).
    pub hystart: bool,
    /// Offer selective acknowledgements (RFC 2018); used only if both
    /// ends offer them.
    pub sack: bool,
    /// Probe the peer after this long without hearing from it (`None`, the
    /// default: never, as RFC 1122 4.2.3.6 asks).
    pub keepalive: Option<Duration>,
    /// Time between keepalive probes while they go unanswered.
    pub keepalive_interval: Duration,
    /// Unanswered keepalive probes after which the connection fails with
    /// [`ConnectionError::TimedOut`].
    pub keepalive_probes: u32,
}

impl Config {
    /// Refuses restored settings connections could panic on (an RTO range
    /// upside down, a window that overflows).
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.min_rto > self.max_rto || self.max_rto > crate::serde_util::LONGEST {
            return Err("stream RTO bounds out of range".into());
        }
        if self.initial_window > 1 << 16 {
            return Err("stream initial window out of range".into());
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mss: 1200,
            send_buffer: 256 * 1024,
            send_buffer_max: 4 * 1024 * 1024,
            recv_buffer: 256 * 1024,
            recv_buffer_max: 4 * 1024 * 1024,
            max_out_of_order: 4096,
            window_scale: 7,
            initial_window: 10,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            max_retransmissions: 12,
            syn_retries: 6,
            time_wait: Duration::from_secs(1),
            delayed_ack: None,
            congestion: Algorithm::Cubic,
            hystart: true,
            sack: true,
            keepalive: None,
            keepalive_interval: Duration::from_secs(75),
            keepalive_probes: 9,
        }
    }
}

/// Something the application should know about.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StreamEvent {
    /// The handshake completed.
    Connected,
    /// New data can be read.
    Readable,
    /// Send buffer space became free after a short write.
    Writable,
    /// The peer closed its direction: after the remaining data, reads end.
    PeerClosed,
    /// The connection ended (after TIME-WAIT, the last ACK, or an error).
    Closed,
    /// The connection failed; [`StreamEvent::Closed`] follows.
    Error(ConnectionError),
    /// The peer moved: a signed MIGRATE was accepted and segments now go
    /// to this DAG.
    PeerMoved(crate::dag::Dag),
    /// A MIGRATE was refused (forged, replayed, stale, or for another
    /// intent); the peer's DAG is unchanged.
    MigrateRefused(migrate::MigrateError),
}

/// Why a connection failed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
pub enum ConnectionError {
    /// The peer answered our SYN with a reset.
    #[error("connection refused")]
    Refused,
    /// The peer reset the established connection.
    #[error("connection reset by peer")]
    Reset,
    /// Data went unacknowledged through the retransmission limit, or
    /// keepalive probes went unanswered.
    #[error("connection timed out")]
    TimedOut,
}

/// A command the connection cannot carry out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The state machine has no such edge.
    #[error("illegal transition {via:?} from state {from}")]
    IllegalTransition {
        /// The state the connection was in.
        from: State,
        /// The attempted transition.
        via: Transition,
    },
    /// The operation is not possible in the current state.
    #[error("{op} is not possible in state {state}")]
    InvalidState {
        /// The operation.
        op: &'static str,
        /// The state.
        state: State,
    },
    /// `accept` was given a segment that is not a bare SYN.
    #[error("not a SYN segment")]
    NotSyn,
    /// A new DAG has a different intent: it names another endpoint.
    #[error("the new DAG's intent differs from the connection's SID")]
    IntentMismatch,
    /// The connection failed earlier.
    #[error("connection failed: {0}")]
    Failed(ConnectionError),
}

/// `a < b` in sequence space (RFC 1982 serial arithmetic).
pub(crate) fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
pub(crate) fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// `a > b` in sequence space.
pub(crate) fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}

/// `a >= b` in sequence space.
pub(crate) fn seq_ge(a: u32, b: u32) -> bool {
    seq_le(b, a)
}
