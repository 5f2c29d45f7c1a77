//! Authentication of the migration control protocol with the agents' keys.
//!
//! An agent is reached at its SID, the SHA-1 of its public key (XIA's
//! self-certifying identifiers), so it proves who it is by signing with
//! that key: no certificate authority and no configuration beyond the
//! SID the source already dials. Each side checks that the key the other
//! presents certifies the SID it expects — the destination's the one the
//! source connected to, the source's one the destination trusts (any
//! agent that proves its key, unless [`crate::DestinationConfig::trusted`]
//! lists who may send) — and then every signature it receives.
//!
//! Every signed string starts with its own label, so a signature made for
//! one message can never pass for another, and (after the offer) covers
//! the migration's *session hash*, the SHA-1 of the signed offer, so none
//! can be replayed into another migration:
//!
//! | message   | signed by   | covers |
//! |-----------|-------------|--------|
//! | Offer     | source      | every field: id, mode, size, name, source key, destination SID, source nonce |
//! | Accept    | destination | session, destination key, destination nonce |
//! | Final     | source      | session, destination nonce, image digest, SHA-1 of the device state |
//! | Commit    | destination | session, image digest |
//! | Activated | destination | session |
//! | Abort     | its sender  | session, reason |
//! | Outcome   | destination | id, outcome, the query's nonce |
//!
//! Why this is enough for the transaction: the destination commits only
//! on a Final signed for *its* nonce, so an attacker who recorded a whole
//! migration and replays it gets an Accept with a fresh nonce and can
//! never produce the Final, hence never a second copy of the guest. The
//! source lets go of its paused copy only on a Commit, Activated or
//! Outcome signed by the destination's key; an in-doubt source resumes
//! only on an Outcome signed for a query nonce it has just drawn from a
//! secret nobody else sees. Pages travel unsigned, but the signed Final
//! carries the digest of the whole image, which the destination checks
//! against what it received, so altered pages abort the migration.
//! Progress and RoundEnd only steer pacing; Refuse, and an Abort before
//! the Accept, can only stop a migration that has copied nothing while
//! the guest still runs at the source, so they need no signature.
//!
//! A message whose signature does not verify is dropped and reported
//! (`Forged` notes): a forgery must not be able to end a migration either
//! way. Only the offer and the accept, which open it, fail it outright.
//!
//! **Not provided:** confidentiality. Pages and the device state (which
//! holds the guest's secret keys) travel in the clear; run migrations
//! over a trusted network, as QEMU's unencrypted migration stream does.

use xia_stack::identity::{Identity, PublicKey, Signature};
use xia_stack::xid::{sha1, Principal, Xid};

use crate::msg::{KeyBytes, Msg, Outcome, Sig, NONCE_LEN};

pub(crate) const LABEL_OFFER: &[u8] = b"xia-migrate/v1 offer\0";
const LABEL_ACCEPT: &[u8] = b"xia-migrate/v1 accept\0";
const LABEL_FINAL: &[u8] = b"xia-migrate/v1 final\0";
const LABEL_COMMIT: &[u8] = b"xia-migrate/v1 commit\0";
const LABEL_ACTIVATED: &[u8] = b"xia-migrate/v1 activated\0";
const LABEL_ABORT: &[u8] = b"xia-migrate/v1 abort\0";
const LABEL_OUTCOME: &[u8] = b"xia-migrate/v1 outcome\0";
const LABEL_QUERY: &[u8] = b"xia-migrate/v1 query nonce\0";

/// Why a message is not authentic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The bytes where a key should be are not an Ed25519 key.
    #[error("the {0} carries no valid public key")]
    BadKey(&'static str),
    /// The key does not hash to the SID it must come from.
    #[error("the {what}'s key does not certify {expected}")]
    WrongKey {
        /// The message.
        what: &'static str,
        /// The SID it should come from.
        expected: Xid,
    },
    /// The signature does not verify under the sender's key.
    #[error("bad signature on the {0}")]
    BadSignature(&'static str),
    /// The offer names another agent.
    #[error("the offer is for agent {to}, not this one ({me})")]
    NotForUs {
        /// Whom it is for.
        to: Xid,
        /// Who got it.
        me: Xid,
    },
    /// The source is not on the destination's list.
    #[error("source agent {0} is not trusted here")]
    Untrusted(Xid),
    /// An outcome that answers no query of this session.
    #[error("the outcome answers a query this source never sent")]
    UnknownQuery,
    /// A message that needs a key the session does not have yet.
    #[error("the {0} came before the key to check it")]
    NoKey(&'static str),
}

/// What a source agent needs to authenticate one migration.
#[derive(Clone, Debug)]
pub struct SourceAuth {
    /// The source agent's key.
    pub key: Identity,
    /// The destination agent's SID (the intent of the DAG it dials).
    pub destination: Xid,
    /// Fresh random bytes, never sent: the offer's nonce and every
    /// query's nonce are derived from them.
    pub secret: [u8; 32],
}

impl SourceAuth {
    pub(crate) fn offer_nonce(&self) -> [u8; NONCE_LEN] {
        derive(b"offer", &self.secret, 0)
    }

    // Unpredictable to anyone without the secret, so nobody can collect
    // a signed answer for a query the source has not asked yet.
    pub(crate) fn query_nonce(&self, n: u32) -> [u8; NONCE_LEN] {
        derive(LABEL_QUERY, &self.secret, n)
    }
}

fn derive(label: &[u8], secret: &[u8; 32], n: u32) -> [u8; NONCE_LEN] {
    let h = sha1(&[label, secret.as_slice(), &n.to_be_bytes()].concat());
    let mut out = [0; NONCE_LEN];
    out.copy_from_slice(&h[..NONCE_LEN]);
    out
}

pub(crate) fn sign(key: &Identity, bytes: &[u8]) -> Sig {
    key.sign(bytes).to_bytes()
}

pub(crate) fn public_key(bytes: &KeyBytes, what: &'static str) -> Result<PublicKey, AuthError> {
    PublicKey::from_bytes(bytes).ok_or(AuthError::BadKey(what))
}

/// The key, if it certifies `expected`.
pub(crate) fn certified(
    bytes: &KeyBytes,
    expected: &Xid,
    what: &'static str,
) -> Result<PublicKey, AuthError> {
    let key = public_key(bytes, what)?;
    if key.certifies(expected) {
        Ok(key)
    } else {
        Err(AuthError::WrongKey {
            what,
            expected: *expected,
        })
    }
}

pub(crate) fn verify(
    key: &PublicKey,
    bytes: &[u8],
    sig: &Sig,
    what: &'static str,
) -> Result<(), AuthError> {
    key.verify(bytes, &Signature::from_bytes(sig))
        .map_err(|_| AuthError::BadSignature(what))
}

/// The SID a key stands for.
pub(crate) fn sid_of(key: &PublicKey) -> Xid {
    key.xid(Principal::SID)
}

pub(crate) fn accept_bytes(session: &[u8; 20], key: &KeyBytes, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    [LABEL_ACCEPT, session, key, nonce].concat()
}

pub(crate) fn final_bytes(
    session: &[u8; 20],
    dest_nonce: &[u8; NONCE_LEN],
    digest: &[u8; 20],
    device: &[u8],
) -> Vec<u8> {
    [LABEL_FINAL, session, dest_nonce, digest, &sha1(device)].concat()
}

pub(crate) fn commit_bytes(session: &[u8; 20], digest: &[u8; 20]) -> Vec<u8> {
    [LABEL_COMMIT, session, digest].concat()
}

pub(crate) fn activated_bytes(session: &[u8; 20]) -> Vec<u8> {
    [LABEL_ACTIVATED, session].concat()
}

pub(crate) fn abort_bytes(session: &[u8; 20], reason: &str) -> Vec<u8> {
    [LABEL_ABORT, session, reason.as_bytes()].concat()
}

pub(crate) fn outcome_bytes(id: u64, outcome: Outcome, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    [
        LABEL_OUTCOME,
        &id.to_be_bytes(),
        &[outcome as u8],
        nonce.as_slice(),
    ]
    .concat()
}

/// The signed answer to a query: agents answer in-doubt sources from what
/// they remember of a migration, with their key.
pub fn outcome_msg(key: &Identity, id: u64, outcome: Outcome, nonce: &[u8; NONCE_LEN]) -> Msg {
    Msg::Outcome {
        id,
        outcome,
        nonce: *nonce,
        key: key.public_key().to_bytes(),
        sig: sign(key, &outcome_bytes(id, outcome, nonce)),
    }
}

/// An Abort signed for a session (either side sends one).
pub(crate) fn abort_msg(key: &Identity, id: u64, session: &[u8; 20], reason: &str) -> Msg {
    Msg::Abort {
        id,
        sig: sign(key, &abort_bytes(session, reason)),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Identity {
        Identity::from_secret_bytes(Principal::SID, &[n; 32])
    }

    #[test]
    fn a_signature_for_one_message_never_passes_for_another() {
        let k = id(1);
        let s = [7; 20];
        let commit = sign(&k, &commit_bytes(&s, &[0; 20]));
        let key = k.public_key();
        assert!(verify(&key, &commit_bytes(&s, &[0; 20]), &commit, "commit").is_ok());
        // The same bytes under another label, another session or digest.
        assert!(verify(&key, &activated_bytes(&s), &commit, "activated").is_err());
        assert!(verify(&key, &commit_bytes(&[8; 20], &[0; 20]), &commit, "commit").is_err());
        assert!(verify(&key, &commit_bytes(&s, &[1; 20]), &commit, "commit").is_err());
        // Another key.
        assert_eq!(
            verify(
                &id(2).public_key(),
                &commit_bytes(&s, &[0; 20]),
                &commit,
                "commit"
            ),
            Err(AuthError::BadSignature("commit"))
        );
    }

    #[test]
    fn keys_must_certify_the_expected_sid() {
        let k = id(1).public_key().to_bytes();
        assert!(certified(&k, &id(1).xid(), "accept").is_ok());
        assert_eq!(
            certified(&k, &id(2).xid(), "accept"),
            Err(AuthError::WrongKey {
                what: "accept",
                expected: id(2).xid()
            })
        );
    }

    #[test]
    fn query_nonces_are_fresh_and_differ_from_the_offers() {
        let a = SourceAuth {
            key: id(1),
            destination: id(2).xid(),
            secret: [9; 32],
        };
        let mut seen: Vec<_> = (0..100).map(|n| a.query_nonce(n)).collect();
        seen.push(a.offer_nonce());
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 101);
    }
}
