//! Packet formats, smoltcp-style: a zero-copy `Packet<T>` view per header
//! plus a validated `Repr` with `parse` and `emit`.
//!
//! Every parser here takes untrusted bytes and returns a typed error; none
//! panics, whatever the input (proptest and cargo-fuzz check this).

pub mod checksum;
pub mod dag;
pub mod dump;
pub mod xcmp;
pub mod xdgram;
pub mod xip;
pub mod xstream;
