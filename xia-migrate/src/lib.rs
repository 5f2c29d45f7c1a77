//! # xia-migrate: VM migration over XIA
//!
//! Full (stop-and-copy) and live (iterative pre-copy) migration of a guest
//! between XIA networks, followed by signed rebinding of the guest's HID
//! and SIDs so that its peers' connections survive.
//!
//! Implemented so far:
//! - [`guest`]: what can be migrated ([`guest::Guest`]: pages with dirty
//!   tracking, pause/resume, device state) and a synthetic guest for the
//!   simulator and the daemons, whose memory is real bytes derived from a
//!   seed and whose dirtying follows a model (uniform, hot set, Zipf) at a
//!   rate, with a throttle for auto-converge;
//! - [`pages`]: how pages travel — zero pages and duplicates as
//!   references, re-sent pages as XOR deltas when smaller (XBZRLE-like),
//!   else whole — with the destination's decoder;
//! - [`state`]: the control protocol's states and transition tables for
//!   both sides, transactional (negotiate, pre-copy, stop-and-copy,
//!   commit, activation), with an *in doubt* state so that a source that
//!   loses contact while waiting for the commit never resumes blind: at
//!   most one copy of the guest runs, exactly one once the outcome is
//!   known (tested at every failure point).
//!
//! The signed MIGRATE that rebinds connections lives in
//! `xia_stack::stream::migrate`. Not implemented yet: the protocol engine
//! that drives the tables (messages, rounds, bandwidth estimation,
//! convergence), hypervisor agents, location management, the CLI and
//! experiments.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod guest;
pub mod pages;
pub mod state;
