//! # xia-net: the cores on real networks
//!
//! Thin tokio drivers for the sans-IO cores of `xia-stack` and
//! `xia-router`: the cores do not change, the drivers feed them packets
//! from sockets and time from the runtime's clock.
//!
//! - [`clock`]: the cores' time from tokio's.
//! - [`udp`]: XIA over UDP (port 13781), one peer address per link,
//!   batched receive and send.
//! - [`impair`]: the link model (rate, queue, delay, jitter, loss,
//!   reordering, duplication) — the simulator's links, and userspace
//!   impairments on real links, since this kernel has no netem.
//! - [`node`]: the driver that runs a router or host core on its links.
//! - [`event_log`]: a node's events kept, bounded, for the daemon's waiters;
//!   [`host_node`]: a host core with such a log.
//! - [`api`]: the protocol between a host daemon and its applications;
//!   [`server`] is the daemon's side, [`client`] the applications' async
//!   socket API (`XStream` is `AsyncRead + AsyncWrite`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod clock;
pub mod ether;
pub mod event_log;
pub mod host_node;
pub mod impair;
pub mod node;
pub mod server;
pub mod udp;
pub mod xarp;
