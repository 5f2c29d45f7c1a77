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
pub use walk::{check, route, Checked, Verdict};
