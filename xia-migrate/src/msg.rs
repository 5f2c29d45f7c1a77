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
//! | 1    | Offer      | src → dst | id u64, mode u8, pages u32, page size u32, name (u16 length, UTF-8) |
//! | 2    | Accept     | dst → src | id u64 |
//! | 3    | Refuse     | dst → src | id u64, reason (UTF-8, the rest) |
//! | 4    | Pages      | src → dst | round u32, page messages ([`crate::pages`]) |
//! | 5    | RoundEnd   | src → dst | round u32, pages in the next round u32 |
//! | 6    | Progress   | dst → src | bytes received u64 |
//! | 7    | Final      | src → dst | image digest (20 B), device state (the rest) |
//! | 8    | Commit     | dst → src | id u64 |
//! | 9    | Activated  | dst → src | id u64 |
//! | 10   | Abort      | either    | id u64, reason (UTF-8, the rest) |
//! | 11   | Query      | src → dst | id u64 |
//! | 12   | Outcome    | dst → src | id u64, outcome u8 ([`Outcome`]) |

/// The largest frame either side accepts (the device state, which holds
/// the guest's whole XIA stack, is the largest message).
pub const MAX_FRAME: usize = 64 << 20;

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
        /// The device state.
        device: Vec<u8>,
    },
    /// The destination holds a complete, verified image: the guest is
    /// its from now on.
    Commit {
        /// The migration.
        id: u64,
    },
    /// The guest runs at the destination.
    Activated {
        /// The migration.
        id: u64,
    },
    /// Gives up (either side), before the commit.
    Abort {
        /// The migration.
        id: u64,
        /// Why.
        reason: String,
    },
    /// An in-doubt source asks what became of a migration.
    Query {
        /// The migration.
        id: u64,
    },
    /// The answer.
    Outcome {
        /// The migration.
        id: u64,
        /// What the destination knows.
        outcome: Outcome,
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
                b.extend_from_slice(&o.id.to_be_bytes());
                b.push(o.mode.code());
                b.extend_from_slice(&o.pages.to_be_bytes());
                b.extend_from_slice(&o.page_size.to_be_bytes());
                let name = &o.name.as_bytes()[..o.name.len().min(usize::from(u16::MAX))];
                b.extend_from_slice(&(name.len() as u16).to_be_bytes());
                b.extend_from_slice(name);
            }
            Msg::Accept { id } => id_frame(&mut b, 2, *id),
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
            Msg::Final { digest, device } => {
                b.push(7);
                b.extend_from_slice(digest);
                b.extend_from_slice(device);
            }
            Msg::Commit { id } => id_frame(&mut b, 8, *id),
            Msg::Activated { id } => id_frame(&mut b, 9, *id),
            Msg::Abort { id, reason } => {
                id_frame(&mut b, 10, *id);
                b.extend_from_slice(reason.as_bytes());
            }
            Msg::Query { id } => id_frame(&mut b, 11, *id),
            Msg::Outcome { id, outcome } => {
                id_frame(&mut b, 12, *id);
                b.push(outcome.code());
            }
        }
        let len = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&len.to_be_bytes());
        b
    }

    /// The message in a frame's type and body.
    pub fn parse(kind: u8, body: &[u8]) -> Result<Msg, FrameError> {
        let id = |what| {
            body.get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
                .ok_or(FrameError::Body(what))
        };
        let text = |b: &[u8], what| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| FrameError::Body(what))
        };
        let u32_at = |at: usize, what| {
            body.get(at..at + 4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
                .ok_or(FrameError::Body(what))
        };
        Ok(match kind {
            1 => {
                let id = id("offer")?;
                let mode = body
                    .get(8)
                    .and_then(|&c| Mode::from_code(c))
                    .ok_or(FrameError::Body("offer"))?;
                let pages = u32_at(9, "offer")?;
                let page_size = u32_at(13, "offer")?;
                let n = body.get(17..19).ok_or(FrameError::Body("offer"))?;
                let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
                let name = body.get(19..19 + n).ok_or(FrameError::Body("offer"))?;
                if body.len() != 19 + n || page_size == 0 {
                    return Err(FrameError::Body("offer"));
                }
                Msg::Offer(Offer {
                    id,
                    mode,
                    pages,
                    page_size,
                    name: text(name, "offer")?,
                })
            }
            2 => Msg::Accept { id: id("accept")? },
            3 => Msg::Refuse {
                id: id("refuse")?,
                reason: text(&body[8..], "refuse")?,
            },
            4 => Msg::Pages {
                round: u32_at(0, "pages")?,
                data: body[4..].to_vec(),
            },
            5 => Msg::RoundEnd {
                round: u32_at(0, "round-end")?,
                next: u32_at(4, "round-end")?,
            },
            6 => Msg::Progress {
                received: body
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
                    .ok_or(FrameError::Body("progress"))?,
            },
            7 => {
                let digest = body.get(..20).ok_or(FrameError::Body("final"))?;
                Msg::Final {
                    digest: digest.try_into().expect("20 bytes"),
                    device: body[20..].to_vec(),
                }
            }
            8 => Msg::Commit { id: id("commit")? },
            9 => Msg::Activated {
                id: id("activated")?,
            },
            10 => Msg::Abort {
                id: id("abort")?,
                reason: text(&body[8..], "abort")?,
            },
            11 => Msg::Query { id: id("query")? },
            12 => Msg::Outcome {
                id: id("outcome")?,
                outcome: body
                    .get(8)
                    .and_then(|&c| Outcome::from_code(c))
                    .ok_or(FrameError::Body("outcome"))?,
            },
            t => return Err(FrameError::Type(t)),
        })
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
            }),
            Msg::Accept { id: 7 },
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
                device: b"state".to_vec(),
            },
            Msg::Commit { id: 7 },
            Msg::Activated { id: 7 },
            Msg::Abort {
                id: 7,
                reason: "operator".into(),
            },
            Msg::Query { id: 7 },
            Msg::Outcome {
                id: 7,
                outcome: Outcome::Active,
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
        let mut r = FrameReader::default();
        r.push(&[0xff, 0, 0, 0]);
        assert!(matches!(r.next_msg(), Err(FrameError::Length(_))));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Msg::parse(kind, &body);
        }
    }
}
