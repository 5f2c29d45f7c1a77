//! Routing: link-state routing between routers (HELLO, LSAs with sequence
//! numbers and ageing, reliable flooding, Dijkstra), run by the
//! [`Router`](crate::Router) on its well-known service [`ROUTING_SID`].
//! Intra-AD host routes come from XHCP host registration; each router
//! advertises the hosts attached to it as stubs of its LSA.
//!
//! [`message`] is the wire format, [`linkstate`] the state machine.

pub mod linkstate;
pub mod message;

pub use linkstate::{LinkState, LinkStateConfig, RoutingCounters};
pub use message::{Message, MessageError};

use xia_stack::xid::{Principal, Xid};

/// The routing service's well-known SID (xia-core's).
pub const ROUTING_SID: Xid = Xid::new(
    Principal::SID,
    [
        0x11, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x12,
    ],
);

/// Route flag on routes installed by the routing protocol.
pub const FLAG_ROUTED: u32 = 2;
