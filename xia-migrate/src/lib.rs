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
//! - [`msg`]: the control protocol's messages and their framing;
//! - [`source`] and [`destination`]: the sans-IO sessions that drive the
//!   tables — offer and reservation, pre-copy rounds with dirty tracking,
//!   bandwidth and RTT measured on the fly, the stop rule (estimated
//!   downtime under a target, or rounds that stop shrinking), auto-converge,
//!   page deltas, a digest-checked commit, activation, and the in-doubt
//!   query after a failure;
//! - [`auth`]: the agents authenticate each other with their keys (an
//!   agent's SID is its key's hash) and sign every message that moves the
//!   transaction on;
//! - [`model`]: the pre-copy model, and the rule smart migration chooses
//!   full, live or live with deltas by.
//!
//! The signed MIGRATE that rebinds connections lives in
//! `xia_stack::stream::migrate`; the agents that run guests and drive
//! these sessions live in the testbed (simulator) and the daemons.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod auth;
pub mod destination;
pub mod guest;
pub mod model;
pub mod msg;
pub mod pages;
pub mod source;
pub mod state;
pub mod vm;

pub use auth::{AuthError, SourceAuth};
pub use destination::{DestinationConfig, DestinationNote, DestinationSession};
pub use guest::{DirtyModel, Guest, SyntheticGuest};
pub use msg::{Mode, Outcome};
pub use source::{MigrateError, Recovery, Report, SourceConfig, SourceNote, SourceSession, Status};
