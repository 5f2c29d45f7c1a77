//! # xia-router: XIA forwarding
//!
//! A sans-IO XIA router: it takes packets, the port they arrived on and the
//! time, and returns packets to send. No sockets, no clock.
//!
//! The forwarding semantics — per-principal route tables and xia-core v2's
//! DAG walk as reusable steps — live in [`xia_stack::forward`] (hosts walk
//! DAGs too) and are re-exported here as [`forward`]. This crate adds the
//! router node: ports, a per-destination [fast path](fastpath) invalidated
//! on any table change, broadcast HID with neighbour learning, XCMP echo
//! and errors (never about XCMP errors or broadcasts), XHCP beacons, an
//! opportunistic content [cache], and [counters] for every drop reason.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod counters;
pub mod fastpath;
pub mod router;
pub mod routing;

pub use xia_stack::forward;

pub use counters::{Counters, Drop};
pub use router::{Delivered, Router, RouterConfig};
pub use xia_stack::forward::Transmit;
