//! Serde helpers for the host snapshot ([`crate::host::Host::snapshot`]):
//! byte buffers written in bulk, counters checked on the way in, and the
//! few `&'static str` reasons some errors carry.
//!
//! Reading must never panic and should not hand the stack state it could
//! later panic on: counters that the stack increments with `+= 1` are
//! refused when so large that the next increment could overflow (a real
//! stack never gets there).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

thread_local! {
    /// The last reason [`invalid`] gave on this thread.
    static LAST_INVALID: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A deserialization error with a reason, which is also kept for
/// [`take_invalid`]: postcard's errors drop custom messages.
pub(crate) fn invalid<E: serde::de::Error>(why: impl fmt::Display) -> E {
    let why = why.to_string();
    let err = E::custom(&why);
    LAST_INVALID.with(|l| *l.borrow_mut() = Some(why));
    err
}

/// The reason of the last [`invalid`] on this thread, if any (and forgets
/// it).
pub(crate) fn take_invalid() -> Option<String> {
    LAST_INVALID.with(|l| l.borrow_mut().take())
}

/// Longest round-trip time or timeout a restored stack may hold: far
/// beyond any real one, and far from where `Duration` arithmetic
/// overflows.
pub(crate) const LONGEST: Duration = Duration::from_secs(1 << 32);

/// A `u64` the stack counts up with `+= 1`: at most `i64::MAX`.
pub(crate) fn counter<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v > i64::MAX as u64 {
        return Err(invalid(format!("counter {v} is out of range")));
    }
    Ok(v)
}

/// A `u32` the stack counts up with `+= 1`: at most `i32::MAX`.
pub(crate) fn counter32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v > i32::MAX as u32 {
        return Err(invalid(format!("counter {v} is out of range")));
    }
    Ok(v)
}

/// A `VecDeque<u8>` as one byte string (its logical contents, however the
/// ring buffer happens to be laid out).
pub(crate) mod deque_bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &VecDeque<u8>, s: S) -> Result<S::Ok, S::Error> {
        match d.as_slices() {
            (a, []) => s.serialize_bytes(a),
            (a, b) => {
                let mut v = Vec::with_capacity(a.len() + b.len());
                v.extend_from_slice(a);
                v.extend_from_slice(b);
                s.serialize_bytes(&v)
            }
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<u8>, D::Error> {
        let v: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        Ok(VecDeque::from(v.into_vec()))
    }
}

/// Every `&'static str` reason an error held in a host may carry
/// ([`crate::naming::NameError::Malformed`],
/// [`crate::stream::migrate::MigrateError::Malformed`]); a test checks
/// that the sources use no other.
pub(crate) const STATIC_REASONS: &[&str] = &[
    "truncated",
    "name is not UTF-8",
    "bad DAG",
    "trailing bytes",
    "bad public key",
    "unknown request type",
    "unknown response type",
    "unknown version",
    "truncated DAG",
    "not a MIGRATEACK",
    "the connection is not established",
];

/// `&'static str` under another name: serde's derive would otherwise
/// try to borrow it from the input (`'de: 'static`) instead of using
/// [`static_reason`].
pub(crate) type StaticStr = &'static str;

/// Reads a `&'static str` reason: one of [`STATIC_REASONS`].
pub(crate) fn static_reason<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    struct Reason;

    impl serde::de::Visitor<'_> for Reason {
        type Value = &'static str;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a known reason")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<&'static str, E> {
            STATIC_REASONS
                .iter()
                .find(|r| **r == v)
                .copied()
                .ok_or_else(|| invalid(format!("unknown reason {v:?}")))
        }
    }

    d.deserialize_str(Reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_static_reason_in_the_sources_is_known() {
        let sources = [
            include_str!("naming.rs"),
            include_str!("stream/migrate.rs"),
            include_str!("stream/conn.rs"),
        ];
        let mut seen = 0;
        for src in sources {
            for (i, _) in src.match_indices("Malformed(\"") {
                let rest = &src[i + "Malformed(\"".len()..];
                let reason = &rest[..rest.find('"').unwrap()];
                assert!(
                    STATIC_REASONS.contains(&reason),
                    "add {reason:?} to STATIC_REASONS"
                );
                seen += 1;
            }
        }
        assert!(seen >= STATIC_REASONS.len());
    }

    #[test]
    fn deques_are_written_by_content_not_layout() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct W(#[serde(with = "deque_bytes")] VecDeque<u8>);
        let mut wrapped = VecDeque::with_capacity(8);
        wrapped.extend([9, 9, 9, 9, 9, 9]);
        wrapped.drain(..5);
        wrapped.extend([1, 2, 3, 4]);
        let flat: VecDeque<u8> = [9, 1, 2, 3, 4].into_iter().collect();
        let a = postcard::to_allocvec(&W(wrapped)).unwrap();
        assert_eq!(a, postcard::to_allocvec(&W(flat.clone())).unwrap());
        assert_eq!(postcard::from_bytes::<W>(&a).unwrap(), W(flat));
    }
}
