//! Forwarding: route tables and the DAG walk, shared by hosts and routers.
//!
//! This is the one implementation of XIA's forwarding semantics. It lives in
//! `xia-stack` rather than `xia-router` because hosts walk DAGs too (in
//! xia-core, hosts run the same route-table elements as routers, with their
//! own HID and bound SIDs as local entries); `xia-router` builds the router
//! node — ports, fast path, broadcast, XCMP errors, counters — on top of it
//! and re-exports it.

pub mod table;
pub mod walk;
pub mod xcmp;

pub use table::{Action, Lookup, PortId, Route, RouteTable, RouteTables, TableFull};

/// A packet a node wants sent: out `port`, to neighbour `next_hop` when the
/// route names one. What hosts and routers hand their drivers.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Transmit {
    /// The port (interface).
    pub port: PortId,
    /// The neighbour to hand it to, if known.
    pub next_hop: Option<crate::xid::Xid>,
    /// The whole XIP packet.
    #[serde(with = "serde_bytes")]
    pub packet: Vec<u8>,
}
pub use walk::{check, route, Checked, Verdict};
