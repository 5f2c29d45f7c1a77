//! Snapshots of a whole host stack, to move it with a migrating VM.
//!
//! [`Host::snapshot`] writes everything a host holds — its HID key, bound
//! SIDs and their keys, listeners, stream connections with their full
//! transport state (buffers, sequence numbers, congestion control, RTT
//! estimator, timers, SACK scoreboard), datagram and raw sockets with
//! their queues, pending name requests and chunk fetches, the chunk cache,
//! queued transmits and events, counters and the RNG — and
//! [`Host::restore`] builds the same host from it on another machine (or
//! in another process). Restored, the host behaves as the original would
//! have: its peers see a pause, after which retransmission recovers what
//! was lost on the way.
//!
//! # Times
//!
//! The stack never reads a clock: every [`Instant`] is the caller's, and
//! each process (each machine) counts from its own origin. A raw
//! timestamp moved to another machine would be meaningless there — a
//! retransmission timer could fire years late or at once. So a snapshot
//! holds every time as a signed offset from the `now` given to `snapshot`,
//! and `restore` puts them back relative to its own `now`: a timer due
//! 200 ms after the snapshot is due 200 ms after the restore. (Offsets
//! that would fall before the new clock's origin become
//! [`Instant::ZERO`].) The time spent in transit does not count: to the
//! host it is as if no time passed. See [`crate::time`] for the encoding.
//!
//! The timestamps of the host's signed MIGRATEs, which its peers require
//! to never go back, are kept increasing across a restore on a clock that
//! reads less than the original's did.
//!
//! # Format
//!
//! `"XIA-HOST"` (8 bytes), a format version (`u16`, big-endian), the SHA-1
//! of the body (20 bytes), then the body: [postcard] of the snapshot's
//! `now` and the host. The checksum catches accidental damage only.
//!
//! # Trust
//!
//! **A snapshot contains the host's secret keys** (its HID's and every
//! SID key it holds). It must travel over an authenticated, confidential
//! channel and be stored like a key file. `restore` never panics on any
//! input — arbitrary bytes are an error — and it checks what a host's
//! structure depends on: every DAG, identity (its key must derive its
//! XID) and cached chunk (its bytes must hash to its CID) is verified
//! again, and the invariants the stack's arithmetic relies on are
//! checked. It does not prove that a well-formed snapshot describes a
//! state this stack could have reached; that is what the authenticated
//! channel is for.
//!
//! # What does not move
//!
//! A congestion controller the application supplied with
//! [`Connection::set_congestion_controller`](crate::stream::Connection::set_congestion_controller)
//! is opaque: the snapshot keeps its window and slow-start threshold, and
//! the restored connection continues with NewReno from there. Everything
//! else moves.

use super::Host;
use crate::serde_util;
use crate::time::{self, Instant};
use crate::xid::{sha1, Principal, ID_LEN};

/// What a snapshot starts with.
const MAGIC: &[u8; 8] = b"XIA-HOST";
/// The format written; the only one read.
const VERSION: u16 = 1;
/// Magic, version and checksum.
const HEADER_LEN: usize = MAGIC.len() + 2 + ID_LEN;

/// Why bytes could not be restored as a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start like a host snapshot.
    #[error("not a host snapshot")]
    BadMagic,
    /// A snapshot in another format version.
    #[error("host snapshot format version {found}; this stack reads version {expected}")]
    Version {
        /// The version found.
        found: u16,
        /// The version this stack reads.
        expected: u16,
    },
    /// The body does not match its checksum (damaged or truncated).
    #[error("host snapshot damaged: its checksum does not match")]
    Checksum,
    /// The body could not be decoded; says what failed.
    #[error("host snapshot could not be decoded: {0}")]
    Decode(String),
}

impl Host {
    /// The whole stack as bytes, with every time expressed relative to
    /// `now` — to move the host with a migrating VM and
    /// [`restore`](Host::restore) it elsewhere.
    ///
    /// It holds everything: the HID key, bound SIDs and their keys,
    /// listeners, stream connections with their full transport state
    /// (buffers, sequence numbers, congestion control, RTT estimator,
    /// timers, SACK scoreboard), datagram and raw sockets with their
    /// queues, pending name requests and chunk fetches, the chunk cache,
    /// queued transmits and events, counters and the RNG. Only a
    /// congestion controller the application supplied
    /// ([`Connection::set_congestion_controller`](crate::stream::Connection::set_congestion_controller))
    /// does not move whole: its window and threshold do, and the restored
    /// connection goes on with NewReno.
    ///
    /// Times are written as offsets from `now`, because every process
    /// counts [`Instant`]s from its own origin: a timer due 200 ms after
    /// the snapshot is due 200 ms after the restore.
    ///
    /// **The snapshot contains the host's secret keys.** Carry it over an
    /// authenticated, confidential channel and store it like a key file;
    /// its checksum only catches accidental damage.
    pub fn snapshot(&self, now: Instant) -> Vec<u8> {
        let body = encode(self, now);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&sha1(&body));
        out.extend_from_slice(&body);
        out
    }

    /// A host from a [`snapshot`](Host::snapshot), its times rebased on
    /// this machine's `now` (a time that would fall before this clock's
    /// origin becomes [`Instant::ZERO`]).
    ///
    /// Never panics: bytes that are not a valid snapshot are an error. It
    /// checks the format, the checksum, every DAG, that every key derives
    /// its XID and every cached chunk hashes to its CID, and the
    /// invariants the stack's arithmetic relies on — not that the state is
    /// one this stack could have reached: take snapshots only from an
    /// authenticated source.
    pub fn restore(bytes: &[u8], now: Instant) -> Result<Host, SnapshotError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(SnapshotError::Decode("truncated header".into()));
        };
        let found = u16::from_be_bytes([header[8], header[9]]);
        if found != VERSION {
            return Err(SnapshotError::Version {
                found,
                expected: VERSION,
            });
        }
        let body = &bytes[HEADER_LEN..];
        if sha1(body)[..] != header[10..] {
            return Err(SnapshotError::Checksum);
        }
        decode(body, now)
    }

    /// Refuses a decoded host that the stack could panic on.
    fn check_restored(&self) -> Result<(), String> {
        if self.config.interfaces.is_empty() {
            return Err("a host needs an interface".into());
        }
        if self.hid != self.config.identity.xid().with_principal(Principal::HID) {
            return Err(format!("HID {} is not the host identity's", self.hid));
        }
        self.config.stream.check()?;
        if let Some((sid, _)) = self.sid_keys.iter().find(|(sid, k)| **sid != k.xid()) {
            return Err(format!("the key held for {sid} is another SID's"));
        }
        for s in self.streams.iter().flatten() {
            s.check()?;
        }
        for f in &self.fetches {
            f.check()?;
        }
        if let Some(names) = &self.names {
            names.check()?;
        }
        Ok(())
    }
}

/// The snapshot body: its `now` (raw nanoseconds) and the host, times
/// relative to `now`.
fn encode(host: &Host, now: Instant) -> Vec<u8> {
    let _base = time::relative_to(now);
    postcard::to_allocvec(&(now.as_nanos(), host))
        .expect("a host serializes: every collection has a known length")
}

/// A host from a snapshot body, its times relative to `now`, checked.
fn decode(body: &[u8], now: Instant) -> Result<Host, SnapshotError> {
    let _base = time::relative_to(now);
    serde_util::take_invalid();
    let ((then, mut host), rest) = postcard::take_from_bytes::<(u64, Host)>(body)
        .map_err(|e| SnapshotError::Decode(describe(e)))?;
    if !rest.is_empty() {
        return Err(SnapshotError::Decode(format!(
            "{} bytes after the host",
            rest.len()
        )));
    }
    host.check_restored().map_err(SnapshotError::Decode)?;
    // Our MIGRATE timestamps come from our clock: if this one reads less
    // than the snapshot's did, shift them so that they do not go back.
    let behind_ms = (then / 1_000_000).saturating_sub(now.as_nanos() / 1_000_000);
    host.migrate_clock_ms = host.migrate_clock_ms.saturating_add(behind_ms);
    Ok(host)
}

/// Postcard's error, with the reason our own checks gave (postcard keeps
/// only that there was one).
fn describe(e: postcard::Error) -> String {
    match (e, serde_util::take_invalid()) {
        (postcard::Error::SerdeDeCustom, Some(why)) => why,
        (postcard::Error::DeserializeUnexpectedEnd, _) => "truncated".into(),
        (e, _) => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
