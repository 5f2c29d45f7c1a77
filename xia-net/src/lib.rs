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

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod impair;
pub mod node;
pub mod udp;
