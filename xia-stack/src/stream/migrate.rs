//! Signed MIGRATE: how a moved endpoint tells its peer its new DAG, in the
//! body of XSTREAM option 50 (answered by MIGRATEACK, option 51), as
//! xia-core v2 does — with the holes v1 left closed.
//!
//! A [`Migrate`] carries the mover's new DAG, a timestamp, a sequence
//! number and its SID's public key, signed with that key over both SIDs,
//! a per-connection context (the two initial sequence numbers), the new
//! DAG, the timestamp and the sequence number. [`Migrate::verify`] accepts
//! it only if
//! - the key certifies the connection's peer SID (SHA-1 of the key is the
//!   SID), and the signature verifies;
//! - the new DAG's intent is that SID (a MIGRATE cannot redirect the
//!   connection to another service);
//! - it is fresh: its sequence number is above the last accepted one and
//!   its timestamp is not older (so a recorded MIGRATE cannot be replayed,
//!   on this connection or — the context differs — on another).
//!
//! Anything else is refused with the reason, and the connection keeps its
//! peer. Timestamps are the mover's clock in milliseconds; only their
//! order is checked, since the two ends' clocks need not agree.
//!
//! ```text
//! version u8 (1) | seq u32 | timestamp ms u64 | key (32) | signature (64)
//! | n u8 | new DAG (n × 28)
//! MIGRATEACK: version u8 (1) | seq u32
//! ```

use crate::dag::Dag;
use crate::identity::{Identity, PublicKey, Signature, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::serde_util::StaticStr;
use crate::wire::dag::NODE_LEN;
use crate::xid::Xid;

const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"xia-rs XSTREAM MIGRATE v1";

/// Why a MIGRATE is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum MigrateError {
    /// Bytes that are not a MIGRATE body.
    #[error("malformed MIGRATE: {0}")]
    Malformed(#[serde(deserialize_with = "crate::serde_util::static_reason")] StaticStr),
    /// The key does not hash to the connection's peer SID.
    #[error("the MIGRATE key does not certify {0}")]
    WrongKey(Xid),
    /// The signature does not verify.
    #[error("the MIGRATE signature does not verify")]
    BadSignature,
    /// The new DAG's intent is not the connection's peer SID.
    #[error("the MIGRATE names intent {got}, but the connection's peer is {want}")]
    IntentMismatch {
        /// The connection's peer SID.
        want: Xid,
        /// The new DAG's intent.
        got: Xid,
    },
    /// Its sequence number is not above the last accepted one.
    #[error("replayed MIGRATE: sequence number {seq} is not above {last}")]
    Replayed {
        /// Its sequence number.
        seq: u32,
        /// The last one accepted.
        last: u32,
    },
    /// Its timestamp is older than the last accepted one.
    #[error("stale MIGRATE: timestamp {ts} ms is older than {last} ms")]
    Stale {
        /// Its timestamp.
        ts: u64,
        /// The last one accepted.
        last: u64,
    },
    /// The signing identity is not the new DAG's intent.
    #[error("this identity ({0}) is not the new DAG's intent")]
    NotTheIntent(Xid),
}

/// A signed MIGRATE body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrate {
    /// The mover's new DAG (intent: its SID).
    pub new_dag: Dag,
    /// The mover's clock, in milliseconds.
    pub timestamp_ms: u64,
    /// Above every earlier MIGRATE of this connection.
    pub seq: u32,
    /// The SID's public key.
    pub key: PublicKey,
    /// Over [`signed_bytes`].
    pub signature: Signature,
}

/// The last MIGRATE a connection accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accepted {
    /// Its sequence number.
    pub seq: u32,
    /// Its timestamp.
    pub timestamp_ms: u64,
}

/// What the signature covers: the two SIDs (the mover's first), the
/// connection's context, the new DAG, the timestamp and the sequence
/// number.
pub fn signed_bytes(
    mover: &Xid,
    peer: &Xid,
    context: &[u8],
    new_dag: &Dag,
    timestamp_ms: u64,
    seq: u32,
) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&mover.to_wire());
    m.extend_from_slice(&peer.to_wire());
    m.extend_from_slice(&(context.len() as u32).to_be_bytes());
    m.extend_from_slice(context);
    m.push(new_dag.len() as u8);
    m.extend_from_slice(&new_dag.to_wire());
    m.extend_from_slice(&timestamp_ms.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m
}

impl Migrate {
    /// Signs a MIGRATE to `peer` (the other end's SID) on the connection
    /// with `context`, by `identity`, which must be `new_dag`'s intent.
    pub fn sign(
        identity: &Identity,
        peer: &Xid,
        context: &[u8],
        new_dag: Dag,
        timestamp_ms: u64,
        seq: u32,
    ) -> Result<Migrate, MigrateError> {
        if identity.xid() != *new_dag.intent() {
            return Err(MigrateError::NotTheIntent(identity.xid()));
        }
        let m = signed_bytes(&identity.xid(), peer, context, &new_dag, timestamp_ms, seq);
        Ok(Migrate {
            signature: identity.sign(&m),
            key: identity.public_key(),
            new_dag,
            timestamp_ms,
            seq,
        })
    }

    /// Checks it on the connection from `mover` (the peer SID) to `us`,
    /// with `context`, given the last MIGRATE accepted (if any).
    pub fn verify(
        &self,
        mover: &Xid,
        us: &Xid,
        context: &[u8],
        last: Option<Accepted>,
    ) -> Result<(), MigrateError> {
        if self.new_dag.intent() != mover {
            return Err(MigrateError::IntentMismatch {
                want: *mover,
                got: *self.new_dag.intent(),
            });
        }
        if !self.key.certifies(mover) {
            return Err(MigrateError::WrongKey(*mover));
        }
        let m = signed_bytes(
            mover,
            us,
            context,
            &self.new_dag,
            self.timestamp_ms,
            self.seq,
        );
        self.key
            .verify(&m, &self.signature)
            .map_err(|_| MigrateError::BadSignature)?;
        if let Some(l) = last {
            if self.seq <= l.seq {
                return Err(MigrateError::Replayed {
                    seq: self.seq,
                    last: l.seq,
                });
            }
            if self.timestamp_ms < l.timestamp_ms {
                return Err(MigrateError::Stale {
                    ts: self.timestamp_ms,
                    last: l.timestamp_ms,
                });
            }
        }
        Ok(())
    }

    /// What to remember once accepted.
    pub fn accepted(&self) -> Accepted {
        Accepted {
            seq: self.seq,
            timestamp_ms: self.timestamp_ms,
        }
    }

    /// The option body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.key.to_bytes());
        out.extend_from_slice(&self.signature.to_bytes());
        out.push(self.new_dag.len() as u8);
        out.extend_from_slice(&self.new_dag.to_wire());
        out
    }

    /// Reads an option body (zero padding after the DAG is allowed).
    pub fn parse(b: &[u8]) -> Result<Migrate, MigrateError> {
        let fixed = 1 + 4 + 8 + PUBLIC_KEY_LEN + SIGNATURE_LEN + 1;
        if b.len() < fixed {
            return Err(MigrateError::Malformed("truncated"));
        }
        if b[0] != VERSION {
            return Err(MigrateError::Malformed("unknown version"));
        }
        let seq = u32::from_be_bytes(b[1..5].try_into().expect("4 bytes"));
        let timestamp_ms = u64::from_be_bytes(b[5..13].try_into().expect("8 bytes"));
        let k: [u8; PUBLIC_KEY_LEN] = b[13..45].try_into().expect("32 bytes");
        let key = PublicKey::from_bytes(&k).ok_or(MigrateError::Malformed("bad public key"))?;
        let s: [u8; SIGNATURE_LEN] = b[45..109].try_into().expect("64 bytes");
        let n = usize::from(b[109]);
        let rest = &b[fixed..];
        if n == 0 || rest.len() < n * NODE_LEN {
            return Err(MigrateError::Malformed("truncated DAG"));
        }
        if rest[n * NODE_LEN..].iter().any(|&x| x != 0) {
            return Err(MigrateError::Malformed("trailing bytes"));
        }
        let (new_dag, _) = Dag::parse_wire(&rest[..n * NODE_LEN])
            .map_err(|_| MigrateError::Malformed("bad DAG"))?;
        Ok(Migrate {
            new_dag,
            timestamp_ms,
            seq,
            key,
            signature: Signature::from_bytes(&s),
        })
    }
}

/// A MIGRATEACK body: the sequence number accepted.
pub fn ack_bytes(seq: u32) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// Reads a MIGRATEACK body (zero padding allowed).
pub fn parse_ack(b: &[u8]) -> Result<u32, MigrateError> {
    if b.len() < 5 || b[0] != VERSION {
        return Err(MigrateError::Malformed("not a MIGRATEACK"));
    }
    if b[5..].iter().any(|&x| x != 0) {
        return Err(MigrateError::Malformed("trailing bytes"));
    }
    Ok(u32::from_be_bytes(b[1..5].try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xid::Principal;
    use proptest::prelude::*;

    fn sid(b: u8) -> Identity {
        Identity::from_secret_bytes(Principal::SID, &[b; 32])
    }

    fn dag_for(id: &Identity, ad: u8) -> Dag {
        Dag::path(&[
            Xid::new(Principal::AD, [ad; 20]),
            Xid::new(Principal::HID, [9; 20]),
            id.xid(),
        ])
        .unwrap()
    }

    const CTX: &[u8] = b"isn-a isn-b";

    #[test]
    fn a_signed_migrate_round_trips_and_verifies() {
        let (mover, us) = (sid(1), sid(2));
        let m = Migrate::sign(&mover, &us.xid(), CTX, dag_for(&mover, 7), 1000, 1).unwrap();
        let mut b = m.to_bytes();
        b.extend_from_slice(&[0, 0, 0]); // option padding
        let back = Migrate::parse(&b).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.verify(&mover.xid(), &us.xid(), CTX, None), Ok(()));
        assert_eq!(parse_ack(&ack_bytes(7)), Ok(7));
    }

    #[test]
    fn forged_replayed_stale_and_mismatched_migrates_are_refused() {
        let (mover, us, thief) = (sid(1), sid(2), sid(3));
        let good = Migrate::sign(&mover, &us.xid(), CTX, dag_for(&mover, 7), 1000, 5).unwrap();
        // Signed by another key, claiming the mover's SID.
        let mut forged =
            Migrate::sign(&thief, &us.xid(), CTX, dag_for(&thief, 7), 1000, 6).unwrap();
        forged.new_dag = dag_for(&mover, 7);
        assert_eq!(
            forged.verify(&mover.xid(), &us.xid(), CTX, None),
            Err(MigrateError::WrongKey(mover.xid()))
        );
        // The right key, but the DAG changed after signing.
        let mut tampered = good.clone();
        tampered.new_dag = dag_for(&mover, 8);
        assert_eq!(
            tampered.verify(&mover.xid(), &us.xid(), CTX, None),
            Err(MigrateError::BadSignature)
        );
        // Redirecting the connection to another service.
        let other = Migrate::sign(&thief, &us.xid(), CTX, dag_for(&thief, 7), 1000, 6).unwrap();
        assert!(matches!(
            other.verify(&mover.xid(), &us.xid(), CTX, None),
            Err(MigrateError::IntentMismatch { .. })
        ));
        // Replayed on this connection, and on another one.
        let last = Some(good.accepted());
        assert_eq!(
            good.verify(&mover.xid(), &us.xid(), CTX, last),
            Err(MigrateError::Replayed { seq: 5, last: 5 })
        );
        assert_eq!(
            good.verify(&mover.xid(), &us.xid(), b"another connection", None),
            Err(MigrateError::BadSignature)
        );
        // Newer sequence number, older timestamp.
        let stale = Migrate::sign(&mover, &us.xid(), CTX, dag_for(&mover, 9), 900, 6).unwrap();
        assert_eq!(
            stale.verify(&mover.xid(), &us.xid(), CTX, last),
            Err(MigrateError::Stale {
                ts: 900,
                last: 1000
            })
        );
        // Only the intent's own key may sign.
        assert_eq!(
            Migrate::sign(&thief, &us.xid(), CTX, dag_for(&mover, 7), 1, 1),
            Err(MigrateError::NotTheIntent(thief.xid()))
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let (mover, us) = (sid(1), sid(2));
        let b = Migrate::sign(&mover, &us.xid(), CTX, dag_for(&mover, 7), 1, 1)
            .unwrap()
            .to_bytes();
        assert!(Migrate::parse(&b[..50]).is_err());
        let mut v = b.clone();
        v[0] = 2;
        assert_eq!(
            Migrate::parse(&v),
            Err(MigrateError::Malformed("unknown version"))
        );
        let mut t = b.clone();
        t.push(1);
        assert_eq!(
            Migrate::parse(&t),
            Err(MigrateError::Malformed("trailing bytes"))
        );
        assert!(parse_ack(&[1, 0]).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Migrate::parse(&bytes);
            let _ = parse_ack(&bytes);
        }
    }
}
