//! The connection states and their transition table.
//!
//! The table below is the whole machine; [`State::next`] looks a
//! transition up in it and returns [`StreamError::IllegalTransition`] for
//! any pair it does not list, so a bug elsewhere surfaces as an error value
//! rather than as a silently corrupted state.
//!
//! | from          | transition        | to            |
//! |---------------|-------------------|---------------|
//! | Closed        | Connect           | SynSent       |
//! | Closed        | RecvSyn           | SynReceived   |
//! | SynSent       | RecvSynAck        | Established   |
//! | SynSent       | RecvSyn           | SynReceived   |
//! | SynSent       | Close             | Closed        |
//! | SynReceived   | AckOfSyn          | Established   |
//! | Established   | Close             | FinWait1      |
//! | Established   | RecvFin           | CloseWait     |
//! | CloseWait     | Close             | LastAck       |
//! | FinWait1      | AckOfFin          | FinWait2      |
//! | FinWait1      | RecvFin           | Closing       |
//! | FinWait2      | RecvFin           | TimeWait      |
//! | Closing       | AckOfFin          | TimeWait      |
//! | LastAck       | AckOfFin          | Closed        |
//! | TimeWait      | TimeWaitExpired   | Closed        |
//! | any but Closed| Abort             | Closed        |

use std::fmt;

use super::StreamError;

/// Where a connection is in its life (RFC 793's states, without LISTEN:
/// listening belongs to whoever demultiplexes SYNs and calls
/// [`Connection::accept`](super::Connection::accept)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// No connection (before connect, or after it ended).
    Closed,
    /// Our SYN is out; waiting for the peer's SYN|ACK.
    SynSent,
    /// The peer's SYN arrived and our SYN|ACK is out; waiting for its ACK.
    SynReceived,
    /// Both directions open.
    Established,
    /// We closed; our FIN is not yet acknowledged.
    FinWait1,
    /// We closed and our FIN is acknowledged; the peer may still send.
    FinWait2,
    /// The peer closed; we may still send.
    CloseWait,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed first, then we did; waiting for the ACK of our FIN.
    LastAck,
    /// Both closed; lingering so a lost last ACK can be repeated.
    TimeWait,
}

/// What moves a connection from one state to another.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Transition {
    /// The application opened the connection (our SYN goes out).
    Connect,
    /// A SYN without an ACK of ours arrived.
    RecvSyn,
    /// A SYN|ACK acknowledging our SYN arrived.
    RecvSynAck,
    /// The ACK of our SYN arrived.
    AckOfSyn,
    /// The application closed its sending direction.
    Close,
    /// The peer's FIN arrived in order.
    RecvFin,
    /// The ACK of our FIN arrived.
    AckOfFin,
    /// The TIME-WAIT timer ran out.
    TimeWaitExpired,
    /// A reset, a retransmission timeout or an abort.
    Abort,
}

use State::*;
use Transition::*;

/// The transition table (see the module docs); `Abort` is handled apart.
const TABLE: &[(State, Transition, State)] = &[
    (Closed, Connect, SynSent),
    (Closed, RecvSyn, SynReceived),
    (SynSent, RecvSynAck, Established),
    (SynSent, RecvSyn, SynReceived),
    (SynSent, Close, Closed),
    (SynReceived, AckOfSyn, Established),
    (Established, Close, FinWait1),
    (Established, RecvFin, CloseWait),
    (CloseWait, Close, LastAck),
    (FinWait1, AckOfFin, FinWait2),
    (FinWait1, RecvFin, Closing),
    (FinWait2, RecvFin, TimeWait),
    (Closing, AckOfFin, TimeWait),
    (LastAck, AckOfFin, Closed),
    (TimeWait, TimeWaitExpired, Closed),
];

/// Every state, for tests and diagrams.
pub const ALL_STATES: [State; 10] = [
    Closed,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
];

impl State {
    /// The state `t` leads to, or an error if the table has no such edge.
    pub fn next(self, t: Transition) -> Result<State, StreamError> {
        if t == Abort {
            return if self == Closed {
                Err(StreamError::IllegalTransition { from: self, via: t })
            } else {
                Ok(Closed)
            };
        }
        TABLE
            .iter()
            .find(|(f, tr, _)| *f == self && *tr == t)
            .map(|(_, _, to)| *to)
            .ok_or(StreamError::IllegalTransition { from: self, via: t })
    }

    /// Whether both SYNs have been exchanged (RFC 793's "synchronized").
    pub fn is_synchronized(self) -> bool {
        !matches!(self, Closed | SynSent | SynReceived)
    }

    /// Whether the peer's FIN has been received in this state.
    pub(crate) fn peer_closed(self) -> bool {
        matches!(self, CloseWait | Closing | LastAck | TimeWait)
    }

    /// Whether the application may still queue data.
    pub(crate) fn can_write(self) -> bool {
        matches!(self, SynSent | SynReceived | Established | CloseWait)
    }

    /// Whether data or a FIN of ours may be (re)sent in this state.
    pub(crate) fn can_send_data(self) -> bool {
        matches!(self, Established | CloseWait | FinWait1 | Closing | LastAck)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The machine as a Graphviz graph (the `Abort` edges left out).
pub fn to_dot() -> String {
    let mut s = String::from("digraph xstream {\n");
    for (from, t, to) in TABLE {
        s.push_str(&format!("  {from:?} -> {to:?} [label=\"{t:?}\"];\n"));
    }
    s.push_str("}\n");
    s
}
