//! The migration control protocol's messages and their framing on the
//! agents' XStream connection.
//!
//! Every message is a frame: `length u32 | type u8 | body`, big-endian,
//! where `length` counts the type byte and the body. A migration uses one
//! connection from the source agent to the destination agent; a source
//! that has lost it while in doubt asks on a new one ([`Msg::Query`]).
//!
//! | type | message    | direction | body |
//! |------|------------|-----------|------|
//! | 1    | Offer      | src → dst | id u64, mode u8, pages u32, page size u32, source key (32 B), destination SID (24 B, XIP form), nonce (16 B), name (u16 length, UTF-8), signature (64 B) |
//! | 2    | Accept     | dst → src | id u64, destination key (32 B), nonce (16 B), signature (64 B) |
//! | 3    | Refuse     | dst → src | id u64, reason (UTF-8, the rest) |
//! | 4    | Pages      | src → dst | round u32, page messages ([`crate::pages`]) |
//! | 5    | RoundEnd   | src → dst | round u32, pages in the next round u32 |
//! | 6    | Progress   | dst → src | bytes received u64 |
//! | 7    | Final      | src → dst | image digest (20 B), signature (64 B), device state (the rest) |
//! | 8    | Commit     | dst → src | id u64, signature (64 B) |
//! | 9    | Activated  | dst → src | id u64, signature (64 B) |
//! | 10   | Abort      | either    | id u64, signature (64 B), reason (UTF-8, the rest) |
//! | 11   | Query      | src → dst | id u64, nonce (16 B) |
//! | 12   | Outcome    | dst → src | id u64, outcome u8 ([`Outcome`]), the query's nonce (16 B), destination key (32 B), signature (64 B) |
//! | 13   | Want       | dst → src | page numbers u32, 1 to [`MAX_WANT`] of them |
//!
//! Signatures are Ed25519 by the agents' keys; [`crate::auth`] says what
//! each one covers and why the unsigned messages need none.

use xia_stack::xid::Xid;

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 16;
/// An Ed25519 signature.
pub type Sig = [u8; 64];
/// An Ed25519 public key.
pub type KeyBytes = [u8; 32];

/// The largest frame either side accepts (the device state, which holds
/// the guest's whole XIA stack, is the largest message).
pub const MAX_FRAME: usize = 64 << 20;

/// Most pages one [`Msg::Want`] asks for.
pub const MAX_WANT: usize = 16 * 1024;

/// How a migration copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Stop-and-copy: pause, copy everything, resume at the destination.
    Full,
    /// Iterative pre-copy while the guest runs, then a short stop-and-copy.
    Live,
    /// Chooses full, live or live with page deltas from measurements
    /// ([`crate::model`]).
    Smart,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Full => 0,
            Mode::Live => 1,
            Mode::Smart => 2,
        }
    }
    fn from_code(c: u8) -> Option<Mode> {
        Some(match c {
            0 => Mode::Full,
            1 => Mode::Live,
            2 => Mode::Smart,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Full => "full",
            Mode::Live => "live",
            Mode::Smart => "smart",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "full" => Ok(Mode::Full),
            "live" => Ok(Mode::Live),
            "smart" => Ok(Mode::Smart),
            _ => Err(format!(
                "unknown migration mode {s:?} (full, live or smart)"
            )),
        }
    }
}

/// What a destination says of a migration it is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It knows nothing of it (never offered, or it restarted since): it
    /// holds no copy and never will.
    Unknown,
    /// Still receiving: it has not committed.
    Receiving,
    /// Aborted: it will never commit.
    Aborted,
    /// Committed: the guest is the destination's.
    Committed,
    /// The guest runs at the destination.
    Active,
}

impl Outcome {
    fn code(self) -> u8 {
        self as u8
    }
    fn from_code(c: u8) -> Option<Outcome> {
        Some(match c {
            0 => Outcome::Unknown,
            1 => Outcome::Receiving,
            2 => Outcome::Aborted,
            3 => Outcome::Committed,
            4 => Outcome::Active,
            _ => return None,
        })
    }
}

/// The offer that starts a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The migration's id (unique per source agent).
    pub id: u64,
    /// How it copies.
    pub mode: Mode,
    /// The guest's pages.
    pub pages: u32,
    /// Bytes per page.
    pub page_size: u32,
    /// The guest's name.
    pub name: String,
    /// The source agent's public key (its SID is the key's SHA-1).
    pub key: KeyBytes,
    /// The destination agent's SID: an offer is good at one agent only.
    pub to: Xid,
    /// Fresh for every migration, so that no two offers sign the same
    /// bytes and every later signature is bound to this migration.
    pub nonce: [u8; NONCE_LEN],
    /// The source agent's signature over [`Offer::signed_bytes`].
    pub sig: Sig,
}

impl Offer {
    // Every field but the signature, in wire order.
    fn emit_fields(&self, b: &mut Vec<u8>) {
        b.extend_from_slice(&self.id.to_be_bytes());
        b.push(self.mode.code());
        b.extend_from_slice(&self.pages.to_be_bytes());
        b.extend_from_slice(&self.page_size.to_be_bytes());
        b.extend_from_slice(&self.key);
        b.extend_from_slice(&self.to.to_wire());
        b.extend_from_slice(&self.nonce);
        let name = &self.name.as_bytes()[..self.name.len().min(usize::from(u16::MAX))];
        b.extend_from_slice(&(name.len() as u16).to_be_bytes());
        b.extend_from_slice(name);
    }

    /// What the source's signature covers: a label, then every field but
    /// the signature as on the wire.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut b = crate::auth::LABEL_OFFER.to_vec();
        self.emit_fields(&mut b);
        b
    }

    /// The migration's session hash, SHA-1 of [`Offer::signed_bytes`]:
    /// every later signature covers it, so none can be replayed into
    /// another migration.
    pub fn session(&self) -> [u8; 20] {
        xia_stack::xid::sha1(&self.signed_bytes())
    }
}

/// One control-protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Asks the destination to reserve room for a guest.
    Offer(Offer),
    /// The destination reserved it.
    Accept {
        /// The migration.
        id: u64,
        /// The destination agent's public key (it must certify the SID
        /// the source connected to).
        key: KeyBytes,
        /// The destination's fresh nonce: the source's final signature
        /// covers it, so a replayed migration can never commit.
        nonce: [u8; NONCE_LEN],
        /// Over the session hash, the key and the nonce.
        sig: Sig,
    },
    /// The destination will not take it.
    Refuse {
        /// The migration.
        id: u64,
        /// Why.
        reason: String,
    },
    /// Pages of a round, as [`crate::pages::PageMsg`]s back to back.
    Pages {
        /// The round (0: the first, full pass).
        round: u32,
        /// The page messages.
        data: Vec<u8>,
    },
    /// A round ended.
    RoundEnd {
        /// The round that ended.
        round: u32,
        /// How many pages the next one carries.
        next: u32,
    },
    /// How much the destination has received (every frame's bytes).
    Progress {
        /// Bytes so far.
        received: u64,
    },
    /// The last pages are sent: here is the device state and the digest
    /// of the whole image.
    Final {
        /// SHA-1 over the SHA-1s of every page, in page order.
        digest: [u8; 20],
        /// The source's signature over the session hash, the
        /// destination's nonce, the digest and the device state's SHA-1.
        sig: Sig,
        /// The device state.
        device: Vec<u8>,
    },
    /// The destination holds a complete, verified image: the guest is
    /// its from now on.
    Commit {
        /// The migration.
        id: u64,
        /// Over the session hash and the image digest.
        sig: Sig,
    },
    /// The guest runs at the destination.
    Activated {
        /// The migration.
        id: u64,
        /// Over the session hash.
        sig: Sig,
    },
    /// Gives up (either side), before the commit.
    Abort {
        /// The migration.
        id: u64,
        /// The sender's signature over the session hash and the reason.
        sig: Sig,
        /// Why.
        reason: String,
    },
    /// An in-doubt source asks what became of a migration.
    Query {
        /// The migration.
        id: u64,
        /// Fresh for every query: the answer's signature covers it, so
        /// an old answer cannot be replayed.
        nonce: [u8; NONCE_LEN],
    },
    /// The answer.
    Outcome {
        /// The migration.
        id: u64,
        /// What the destination knows.
        outcome: Outcome,
        /// The nonce of the query it answers.
        nonce: [u8; NONCE_LEN],
        /// The destination agent's public key (a recovered source may
        /// never have seen its Accept).
        key: KeyBytes,
        /// Over the id, the outcome and the query's nonce.
        sig: Sig,
    },
    /// Pages sent by CID that the destination could not fetch from the
    /// network: send them whole. Unsigned, like pages: the signed final
    /// digest covers what the destination ends up holding.
    Want {
        /// The pages.
        pages: Vec<u32>,
    },
}

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame longer than [`MAX_FRAME`] or shorter than its type byte.
    #[error("frame length {0} out of range")]
    Length(usize),
    /// An unknown message type.
    #[error("unknown message type {0}")]
    Type(u8),
    /// A body shorter than its fields or with a bad value.
    #[error("malformed {0} message")]
    Body(&'static str),
}

impl Msg {
    /// The frame for this message.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0];
        match self {
            Msg::Offer(o) => {
                b.push(1);
                o.emit_fields(&mut b);
                b.extend_from_slice(&o.sig);
            }
            Msg::Accept {
                id,
                key,
                nonce,
                sig,
            } => {
                id_frame(&mut b, 2, *id);
                b.extend_from_slice(key);
                b.extend_from_slice(nonce);
                b.extend_from_slice(sig);
            }
            Msg::Refuse { id, reason } => {
                id_frame(&mut b, 3, *id);
                b.extend_from_slice(reason.as_bytes());
            }
            Msg::Pages { round, data } => {
                b.push(4);
                b.extend_from_slice(&round.to_be_bytes());
                b.extend_from_slice(data);
            }
            Msg::RoundEnd { round, next } => {
                b.push(5);
                b.extend_from_slice(&round.to_be_bytes());
                b.extend_from_slice(&next.to_be_bytes());
            }
            Msg::Progress { received } => {
                b.push(6);
                b.extend_from_slice(&received.to_be_bytes());
            }
            Msg::Final {
                digest,
                sig,
                device,
            } => {
                b.push(7);
                b.extend_from_slice(digest);
                b.extend_from_slice(sig);
                b.extend_from_slice(device);
            }
            Msg::Commit { id, sig } => {
                id_frame(&mut b, 8, *id);
                b.extend_from_slice(sig);
            }
            Msg::Activated { id, sig } => {
                id_frame(&mut b, 9, *id);
                b.extend_from_slice(sig);
            }
            Msg::Abort { id, sig, reason } => {
                id_frame(&mut b, 10, *id);
                b.extend_from_slice(sig);
                b.extend_from_slice(reason.as_bytes());
            }
            Msg::Query { id, nonce } => {
                id_frame(&mut b, 11, *id);
                b.extend_from_slice(nonce);
            }
            Msg::Outcome {
                id,
                outcome,
                nonce,
                key,
                sig,
            } => {
                id_frame(&mut b, 12, *id);
                b.push(outcome.code());
                b.extend_from_slice(nonce);
                b.extend_from_slice(key);
                b.extend_from_slice(sig);
            }
            Msg::Want { pages } => {
                b.push(13);
                for p in pages {
                    b.extend_from_slice(&p.to_be_bytes());
                }
            }
        }
        let len = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&len.to_be_bytes());
        b
    }

    /// The message in a frame's type and body.
    pub fn parse(kind: u8, body: &[u8]) -> Result<Msg, FrameError> {
        let what = match kind {
            1 => "offer",
            2 => "accept",
            3 => "refuse",
            4 => "pages",
            5 => "round-end",
            6 => "progress",
            7 => "final",
            8 => "commit",
            9 => "activated",
            10 => "abort",
            11 => "query",
            12 => "outcome",
            13 => "want",
            t => return Err(FrameError::Type(t)),
        };
        let mut r = Fields { body, at: 0, what };
        let m = match kind {
            1 => {
                let id = r.u64()?;
                let mode = Mode::from_code(r.u8()?).ok_or(r.bad())?;
                let pages = r.u32()?;
                let page_size = r.u32()?;
                let key = r.array()?;
                let to = Xid::from_wire(&r.array()?);
                let nonce = r.array()?;
                let n = usize::from(u16::from_be_bytes(r.array()?));
                let name = r.text(n)?;
                let sig = r.array()?;
                if page_size == 0 {
                    return Err(r.bad());
                }
                Msg::Offer(Offer {
                    id,
                    mode,
                    pages,
                    page_size,
                    name,
                    key,
                    to,
                    nonce,
                    sig,
                })
            }
            2 => Msg::Accept {
                id: r.u64()?,
                key: r.array()?,
                nonce: r.array()?,
                sig: r.array()?,
            },
            3 => Msg::Refuse {
                id: r.u64()?,
                reason: r.rest_text()?,
            },
            4 => Msg::Pages {
                round: r.u32()?,
                data: r.rest().to_vec(),
            },
            5 => Msg::RoundEnd {
                round: r.u32()?,
                next: r.u32()?,
            },
            6 => Msg::Progress { received: r.u64()? },
            7 => Msg::Final {
                digest: r.array()?,
                sig: r.array()?,
                device: r.rest().to_vec(),
            },
            8 => Msg::Commit {
                id: r.u64()?,
                sig: r.array()?,
            },
            9 => Msg::Activated {
                id: r.u64()?,
                sig: r.array()?,
            },
            10 => Msg::Abort {
                id: r.u64()?,
                sig: r.array()?,
                reason: r.rest_text()?,
            },
            11 => Msg::Query {
                id: r.u64()?,
                nonce: r.array()?,
            },
            13 => {
                let n = body.len() / 4;
                if body.len() % 4 != 0 || n == 0 || n > MAX_WANT {
                    return Err(r.bad());
                }
                Msg::Want {
                    pages: (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?,
                }
            }
            _ => Msg::Outcome {
                id: r.u64()?,
                outcome: Outcome::from_code(r.u8()?).ok_or(r.bad())?,
                nonce: r.array()?,
                key: r.array()?,
                sig: r.array()?,
            },
        };
        // Fixed-size messages are exactly their size: trailing bytes
        // mean the peer speaks another version.
        if r.at != body.len() {
            return Err(r.bad());
        }
        Ok(m)
    }
}

// Reads a body's fields in order; every shortfall is the message's error.
struct Fields<'a> {
    body: &'a [u8],
    at: usize,
    what: &'static str,
}

impl Fields<'_> {
    fn bad(&self) -> FrameError {
        FrameError::Body(self.what)
    }
    fn take(&mut self, n: usize) -> Result<&[u8], FrameError> {
        let b = self
            .body
            .get(self.at..self.at.saturating_add(n))
            .ok_or(FrameError::Body(self.what))?;
        self.at += n;
        Ok(b)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let what = self.what;
        self.take(N)?.try_into().map_err(|_| FrameError::Body(what))
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn text(&mut self, n: usize) -> Result<String, FrameError> {
        let what = self.what;
        std::str::from_utf8(self.take(n)?)
            .map(str::to_owned)
            .map_err(|_| FrameError::Body(what))
    }
    fn rest(&mut self) -> &[u8] {
        let b = &self.body[self.at.min(self.body.len())..];
        self.at = self.body.len();
        b
    }
    fn rest_text(&mut self) -> Result<String, FrameError> {
        let n = self.body.len().saturating_sub(self.at);
        self.text(n)
    }
}

fn id_frame(b: &mut Vec<u8>, kind: u8, id: u64) {
    b.push(kind);
    b.extend_from_slice(&id.to_be_bytes());
}

/// Reassembles frames from a byte stream, holding at most one frame's
/// bytes (plus what arrived after it).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    // Where the unread bytes start: consumed frames are dropped in bulk,
    // not byte by byte.
    at: usize,
    /// Bytes taken in so far (what [`Msg::Progress`] reports).
    pub received: u64,
}

impl FrameReader {
    /// Takes bytes from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        if self.at > 0 && self.at >= self.buf.len() / 2 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, if one is in; an error poisons the stream
    /// (the caller aborts the migration).
    pub fn next_msg(&mut self) -> Result<Option<Msg>, FrameError> {
        let rest = &self.buf[self.at..];
        let Some(head) = rest.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(head.try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(FrameError::Length(len));
        }
        let Some(frame) = rest.get(4..4 + len) else {
            return Ok(None);
        };
        let msg = Msg::parse(frame[0], &frame[1..]);
        self.at += 4 + len;
        msg.map(Some)
    }

    /// Takes the bytes not yet read as messages (to hand the rest of a
    /// stream to another reader).
    pub fn take_pending(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.at);
        self.buf.clear();
        self.at = 0;
        rest
    }

    /// Bytes waiting for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all() -> Vec<Msg> {
        vec![
            Msg::Offer(Offer {
                id: 7,
                mode: Mode::Live,
                pages: 1024,
                page_size: 4096,
                name: "vm1".into(),
                key: [1; 32],
                to: Xid::new(xia_stack::xid::Principal::SID, [2; 20]),
                nonce: [3; NONCE_LEN],
                sig: [4; 64],
            }),
            Msg::Accept {
                id: 7,
                key: [1; 32],
                nonce: [3; NONCE_LEN],
                sig: [4; 64],
            },
            Msg::Refuse {
                id: 7,
                reason: "no room".into(),
            },
            Msg::Pages {
                round: 2,
                data: vec![0, 0, 0, 1, 0],
            },
            Msg::RoundEnd { round: 2, next: 40 },
            Msg::Progress { received: 1 << 33 },
            Msg::Final {
                digest: [9; 20],
                sig: [4; 64],
                device: b"state".to_vec(),
            },
            Msg::Commit {
                id: 7,
                sig: [4; 64],
            },
            Msg::Activated {
                id: 7,
                sig: [5; 64],
            },
            Msg::Abort {
                id: 7,
                sig: [6; 64],
                reason: "operator".into(),
            },
            Msg::Query {
                id: 7,
                nonce: [8; NONCE_LEN],
            },
            Msg::Outcome {
                id: 7,
                outcome: Outcome::Active,
                nonce: [8; NONCE_LEN],
                key: [1; 32],
                sig: [4; 64],
            },
            Msg::Want {
                pages: vec![3, 1 << 20],
            },
        ]
    }

    #[test]
    fn every_message_round_trips_through_a_byte_stream() {
        let mut r = FrameReader::default();
        let bytes: Vec<u8> = all().iter().flat_map(Msg::to_frame).collect();
        // Fed a byte at a time.
        let mut got = Vec::new();
        for b in &bytes {
            r.push(std::slice::from_ref(b));
            while let Some(m) = r.next_msg().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, all());
        assert_eq!(r.received, bytes.len() as u64);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut r = FrameReader::default();
        r.push(&[0, 0, 0, 0]);
        assert_eq!(r.next_msg(), Err(FrameError::Length(0)));
        let mut r = FrameReader::default();
        r.push(&[0, 0, 0, 1, 99]);
        assert_eq!(r.next_msg(), Err(FrameError::Type(99)));
        let mut r = FrameReader::default();
        r.push(&[0, 0, 0, 3, 2, 0, 0]);
        assert_eq!(r.next_msg(), Err(FrameError::Body("accept")));
        // A fixed-size message with a byte too many.
        let mut f = Msg::Commit {
            id: 1,
            sig: [0; 64],
        }
        .to_frame();
        f.push(0);
        f[3] += 1;
        let mut r = FrameReader::default();
        r.push(&f);
        assert_eq!(r.next_msg(), Err(FrameError::Body("commit")));
        let mut r = FrameReader::default();
        r.push(&[0xff, 0, 0, 0]);
        assert!(matches!(r.next_msg(), Err(FrameError::Length(_))));
        // A want of no pages, or of a page and a half.
        for body in [&[][..], &[0, 0, 0, 1, 0, 0][..]] {
            assert_eq!(Msg::parse(13, body), Err(FrameError::Body("want")));
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Msg::parse(kind, &body);
        }
    }
}
