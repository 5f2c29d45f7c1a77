//! # xia-stack: XIA's wire core and host stack
//!
//! The foundation of xia-rs, a userspace implementation of the eXpressive
//! Internet Architecture (XIA), wire-compatible with xia-core v2, Linux XIA
//! and Wireshark's XIP dissector.
//!
//! - [`xid`]: principal types and XIDs, their text forms, user-defined types.
//! - [`identity`]: self-certifying Ed25519 identities (XID = SHA-1 of the
//!   public key), signatures and key files.
//! - [`dag`]: DAG addresses with fallbacks, xia-core's `RE` and `DAG` text
//!   forms, and the operations applications need.
//! - [`wire`]: the XIP header and XCMP as zero-copy views plus validated
//!   representations (smoltcp's `Packet`/`Repr` pattern), and a DAG's wire
//!   form.
//! - [`forward`]: route tables and the DAG walk — the forwarding semantics
//!   hosts and routers share.
//! - [`host`]: the sans-IO end host: datagram sockets bound to SIDs, ping,
//!   XCMP errors reported to sockets.
//! - [`content`]: CIDs, chunking and verification, a byte-bounded LRU
//!   chunk cache.
//! - [`naming`]: the name service core: records whose changes are signed
//!   by the intent's owner, with replay protection.
//! - [`xhcp`]: router beacons that tell hosts their AD, gateway and name
//!   server.
//! - [`stream`]: XStream, a sans-IO TCP-grade reliable byte stream.
//! - [`socket`]: the socket API applications use — `XStream`,
//!   `XListener`, `XDatagram`, `XRaw`, names and chunks — as handles over
//!   a [`host::Host`], non-blocking.
//! - [`time`]: the caller-supplied clock of the sans-IO cores.
//!
//! Everything here is deterministic and does no I/O except reading and
//! writing key files in [`identity`]; randomness is passed in. No parser
//! panics on any input.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod content;
pub mod dag;
pub mod forward;
pub mod host;
pub mod identity;
pub mod naming;
mod serde_util;
pub mod socket;
pub mod stream;
pub mod time;
pub mod wire;
pub mod xhcp;
pub mod xid;

pub use dag::{Dag, DagError, DagParseError};
pub use identity::{Identity, PublicKey};
pub use xid::{Principal, Xid};
