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
//! numbers; bounded send and receive buffers with bounded out-of-order
//! reassembly; cumulative ACKs and a scaled receive window from free
//! buffer space, with window updates and zero-window probes; RFC 6298
//! retransmission timing with Karn's rule, exponential backoff and a
//! retransmission limit; fast retransmit and NewReno fast recovery
//! (RFC 6582) behind the [`CongestionController`] trait; selective
//! acknowledgements (RFC 2018, [`Config::sack`], negotiated in the
//! handshake) with SACK-based loss recovery after RFC 6675; FIN in both
//! directions (half-close), TIME-WAIT, RST on errors and for segments to a
//! closed connection; optional delayed ACKs (off by default). The states
//! and their transition table are in [`state`].
//!
//! Congestion control is CUBIC (RFC 9438) by default, NewReno
//! selectable ([`Config::congestion`]).
//!
//! With SACK, the receiver reports up to four blocks of out-of-order
//! data (the newest first) in every ACK, and the sender keeps a bounded
//! scoreboard of SACKed ranges above SND.UNA. In fast recovery it sends
//! while its estimate of the data in flight ("pipe": outstanding minus
//! SACKed minus holes not yet repeated) is below ssthresh, first
//! repeating the holes below the highest SACKed byte, then new data.
//! After a retransmission timeout it resends from the first
//! unacknowledged byte but skips SACKed ranges; after three timeouts in a
//! row it forgets the scoreboard (in case the peer reneged). The
//! simplifications: a hole counts as lost as soon as anything above it is
//! SACKed, and a lost repeat of a hole waits for the timer. Without SACK
//! the sender uses NewReno recovery and a timeout resends everything from
//! the first unacknowledged byte (go-back-N), as classic BSD stacks do.
//!
//! Not implemented: D-SACK, timestamps (RTTM/PAWS), keepalive,
//! Nagle's algorithm, ECN, and xia-core's MIGRATE options (migration here
//! is explicit through the two DAG setters).

mod buffer;
mod cc;
mod conn;
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The largest payload we accept per segment (announced in our SYN).
    pub mss: u16,
    /// Send buffer size in bytes (unacknowledged plus unsent data).
    pub send_buffer: usize,
    /// Receive buffer size in bytes (the most the window offers).
    pub recv_buffer: usize,
    /// Most out-of-order segments held for reassembly.
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
    /// How long TIME-WAIT lasts (2×MSL).
    pub time_wait: Duration,
    /// Delay ACKs by at most this long (`None`: ACK every segment).
    pub delayed_ack: Option<Duration>,
    /// The congestion controller (CUBIC by default, NewReno selectable).
    pub congestion: Algorithm,
    /// Offer selective acknowledgements (RFC 2018); used only if both
    /// ends offer them.
    pub sack: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mss: 1200,
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            max_out_of_order: 256,
            window_scale: 7,
            initial_window: 10,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            max_retransmissions: 12,
            time_wait: Duration::from_secs(1),
            delayed_ack: None,
            congestion: Algorithm::Cubic,
            sack: true,
        }
    }
}

/// Something the application should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// Why a connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The peer answered our SYN with a reset.
    #[error("connection refused")]
    Refused,
    /// The peer reset the established connection.
    #[error("connection reset by peer")]
    Reset,
    /// Data went unacknowledged through the retransmission limit.
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
