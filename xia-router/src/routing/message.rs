//! The routing daemon's messages: HELLO, LSA and LSA acknowledgement.
//!
//! They travel as XDGRAM payloads to the broadcast HID's routing service
//! (`RE HID:ff…ff SID:1110…1112`) with hop limit 1: every message is for
//! the link it is sent on; LSAs are flooded hop by hop by the routers.
//!
//! xia-core's routing daemon speaks protobuf messages of its own; these are
//! not wire-compatible with it (it floods host and AD tables with no
//! sequence numbers or ageing). All fields are big-endian:
//!
//! ```text
//! version u8 (1) | type u8 | body
//! HELLO (1): AD (24) | HID (24) | dead interval ms u32 | n u8 | n × heard HID (24)
//! LSA   (2): AD (24) | HID (24) | seq u32 | age s u16
//!            | n u8 | n × (neighbour AD (24) | neighbour HID (24) | cost u32)
//!            | m u16 | m × stub XID (24)
//! ACK   (3): n u8 | n × (origin HID (24) | seq u32)
//! ```

use xia_stack::xid::{Principal, Xid, XID_WIRE_LEN};

/// The message format version.
pub const VERSION: u8 = 1;

/// Most stub XIDs one LSA carries (bounds the message to about 24 KB).
pub const MAX_STUBS: usize = 1024;

/// A HELLO: "I am this router, and these are the routers I hear on this
/// link". A neighbour that lists us is two-way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's AD.
    pub ad: Xid,
    /// The sender's HID.
    pub hid: Xid,
    /// How long to remember the sender without hearing from it again.
    pub dead_interval_ms: u32,
    /// The routers the sender hears on this link.
    pub heard: Vec<Xid>,
}

/// One adjacency in an LSA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LsaLink {
    /// The neighbour's AD.
    pub ad: Xid,
    /// The neighbour's HID.
    pub hid: Xid,
    /// The cost of the link toward it.
    pub cost: u32,
}

/// A link-state advertisement: a router's adjacencies and the XIDs
/// reachable at it (attached hosts, its 4ID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lsa {
    /// The originating router's AD.
    pub ad: Xid,
    /// The originating router's HID.
    pub hid: Xid,
    /// Higher is newer.
    pub seq: u32,
    /// Seconds since it was originated, as known to the sender.
    pub age: u16,
    /// Its two-way adjacencies.
    pub links: Vec<LsaLink>,
    /// XIDs reachable at the origin. HIDs among them are routed inside the
    /// origin's AD only; other principals everywhere.
    pub stubs: Vec<Xid>,
}

/// Acknowledges receipt of an LSA (origin HID and sequence number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LsaAck {
    /// The LSA's origin.
    pub origin: Xid,
    /// Its sequence number.
    pub seq: u32,
}

/// A routing message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Neighbour discovery and liveness.
    Hello(Hello),
    /// A link-state advertisement being flooded.
    Lsa(Lsa),
    /// Acknowledgements of LSAs.
    Ack(Vec<LsaAck>),
}

/// Why bytes are not a routing message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Ends before the field named.
    #[error("routing message truncated in {0}")]
    Truncated(&'static str),
    /// Another version of the format.
    #[error("routing message version {0} is not 1")]
    Version(u8),
    /// A type byte this version does not define.
    #[error("unknown routing message type {0}")]
    UnknownType(u8),
    /// An XID of the wrong principal where the field needs another.
    #[error("routing message field {field} holds {xid}, not of the right type")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it held.
        xid: Xid,
    },
    /// More entries than the format allows.
    #[error("routing message has {count} {field}, more than {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes after the last field.
    #[error("trailing bytes after the routing message")]
    Trailing,
}

const HELLO: u8 = 1;
const LSA: u8 = 2;
const ACK: u8 = 3;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], MessageError> {
        if self.0.len() < n {
            return Err(MessageError::Truncated(field));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, MessageError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, MessageError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, MessageError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn xid(&mut self, field: &'static str) -> Result<Xid, MessageError> {
        let b = self.take(XID_WIRE_LEN, field)?;
        Ok(Xid::from_wire(b.try_into().expect("24 bytes")))
    }
    fn typed(&mut self, field: &'static str, p: Principal) -> Result<Xid, MessageError> {
        let xid = self.xid(field)?;
        if xid.principal() != p {
            return Err(MessageError::WrongType { field, xid });
        }
        Ok(xid)
    }
}

impl Message {
    /// Reads a message.
    pub fn parse(bytes: &[u8]) -> Result<Message, MessageError> {
        let mut r = Reader(bytes);
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(MessageError::Version(version));
        }
        let msg = match r.u8("type")? {
            HELLO => {
                let ad = r.typed("hello AD", Principal::AD)?;
                let hid = r.typed("hello HID", Principal::HID)?;
                let dead_interval_ms = r.u32("dead interval")?;
                let n = r.u8("heard count")? as usize;
                let heard = (0..n)
                    .map(|_| r.typed("heard HID", Principal::HID))
                    .collect::<Result<_, _>>()?;
                Message::Hello(Hello {
                    ad,
                    hid,
                    dead_interval_ms,
                    heard,
                })
            }
            LSA => {
                let ad = r.typed("LSA AD", Principal::AD)?;
                let hid = r.typed("LSA HID", Principal::HID)?;
                let seq = r.u32("LSA sequence number")?;
                let age = r.u16("LSA age")?;
                let n = r.u8("link count")? as usize;
                let links = (0..n)
                    .map(|_| {
                        Ok(LsaLink {
                            ad: r.typed("link AD", Principal::AD)?,
                            hid: r.typed("link HID", Principal::HID)?,
                            cost: r.u32("link cost")?,
                        })
                    })
                    .collect::<Result<_, MessageError>>()?;
                let m = r.u16("stub count")? as usize;
                if m > MAX_STUBS {
                    return Err(MessageError::TooMany {
                        field: "stubs",
                        count: m,
                        max: MAX_STUBS,
                    });
                }
                let stubs = (0..m).map(|_| r.xid("stub")).collect::<Result<_, _>>()?;
                Message::Lsa(Lsa {
                    ad,
                    hid,
                    seq,
                    age,
                    links,
                    stubs,
                })
            }
            ACK => {
                let n = r.u8("ack count")? as usize;
                let acks = (0..n)
                    .map(|_| {
                        Ok(LsaAck {
                            origin: r.typed("ack origin", Principal::HID)?,
                            seq: r.u32("ack sequence number")?,
                        })
                    })
                    .collect::<Result<_, MessageError>>()?;
                Message::Ack(acks)
            }
            t => return Err(MessageError::UnknownType(t)),
        };
        if !r.0.is_empty() {
            return Err(MessageError::Trailing);
        }
        Ok(msg)
    }

    /// The message as bytes. Lists longer than the format allows are
    /// truncated (the state machine never builds such lists).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Message::Hello(h) => {
                out.push(HELLO);
                out.extend_from_slice(&h.ad.to_wire());
                out.extend_from_slice(&h.hid.to_wire());
                out.extend_from_slice(&h.dead_interval_ms.to_be_bytes());
                let heard = &h.heard[..h.heard.len().min(255)];
                out.push(heard.len() as u8);
                for x in heard {
                    out.extend_from_slice(&x.to_wire());
                }
            }
            Message::Lsa(l) => {
                out.push(LSA);
                out.extend_from_slice(&l.ad.to_wire());
                out.extend_from_slice(&l.hid.to_wire());
                out.extend_from_slice(&l.seq.to_be_bytes());
                out.extend_from_slice(&l.age.to_be_bytes());
                let links = &l.links[..l.links.len().min(255)];
                out.push(links.len() as u8);
                for k in links {
                    out.extend_from_slice(&k.ad.to_wire());
                    out.extend_from_slice(&k.hid.to_wire());
                    out.extend_from_slice(&k.cost.to_be_bytes());
                }
                let stubs = &l.stubs[..l.stubs.len().min(MAX_STUBS)];
                out.extend_from_slice(&(stubs.len() as u16).to_be_bytes());
                for x in stubs {
                    out.extend_from_slice(&x.to_wire());
                }
            }
            Message::Ack(acks) => {
                out.push(ACK);
                let acks = &acks[..acks.len().min(255)];
                out.push(acks.len() as u8);
                for a in acks {
                    out.extend_from_slice(&a.origin.to_wire());
                    out.extend_from_slice(&a.seq.to_be_bytes());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ad(b: u8) -> Xid {
        Xid::new(Principal::AD, [b; 20])
    }
    fn hid(b: u8) -> Xid {
        Xid::new(Principal::HID, [b; 20])
    }

    #[test]
    fn hello_bytes() {
        let m = Message::Hello(Hello {
            ad: ad(1),
            hid: hid(2),
            dead_interval_ms: 4000,
            heard: vec![hid(3)],
        });
        let b = m.to_bytes();
        assert_eq!(&b[..2], &[1, 1]);
        assert_eq!(&b[2..6], &[0, 0, 0, 0x10]);
        assert_eq!(&b[26..30], &[0, 0, 0, 0x11]);
        assert_eq!(&b[50..54], &4000u32.to_be_bytes());
        assert_eq!(b[54], 1);
        assert_eq!(b.len(), 55 + 24);
        assert_eq!(Message::parse(&b), Ok(m));
    }

    #[test]
    fn lsa_and_ack_round_trip() {
        let lsa = Message::Lsa(Lsa {
            ad: ad(1),
            hid: hid(2),
            seq: 7,
            age: 3,
            links: vec![LsaLink {
                ad: ad(4),
                hid: hid(5),
                cost: 10,
            }],
            stubs: vec![hid(6), Xid::from_ipv4([10, 0, 0, 1].into())],
        });
        let b = lsa.to_bytes();
        assert_eq!(b.len(), 2 + 48 + 4 + 2 + 1 + 52 + 2 + 48);
        assert_eq!(Message::parse(&b), Ok(lsa));
        let ack = Message::Ack(vec![LsaAck {
            origin: hid(2),
            seq: 7,
        }]);
        assert_eq!(Message::parse(&ack.to_bytes()), Ok(ack));
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(Message::parse(&[]), Err(MessageError::Truncated("version")));
        assert_eq!(Message::parse(&[2, 1]), Err(MessageError::Version(2)));
        assert_eq!(Message::parse(&[1, 9]), Err(MessageError::UnknownType(9)));
        assert_eq!(
            Message::parse(&[1, 1, 0]),
            Err(MessageError::Truncated("hello AD"))
        );
        let mut b = Message::Hello(Hello {
            ad: ad(1),
            hid: hid(2),
            dead_interval_ms: 1,
            heard: vec![],
        })
        .to_bytes();
        b[2..6].copy_from_slice(&[0, 0, 0, 0x11]);
        assert!(matches!(
            Message::parse(&b),
            Err(MessageError::WrongType {
                field: "hello AD",
                ..
            })
        ));
        b[2..6].copy_from_slice(&[0, 0, 0, 0x10]);
        b.push(0);
        assert_eq!(Message::parse(&b), Err(MessageError::Trailing));
        let mut lsa = Message::Lsa(Lsa {
            ad: ad(1),
            hid: hid(2),
            seq: 1,
            age: 0,
            links: vec![],
            stubs: vec![],
        })
        .to_bytes();
        let n = lsa.len();
        lsa[n - 2..].copy_from_slice(&2000u16.to_be_bytes());
        assert!(matches!(
            Message::parse(&lsa),
            Err(MessageError::TooMany { field: "stubs", .. })
        ));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Message::parse(&bytes);
        }

        #[test]
        fn parse_emit_round_trip(
            seq in any::<u32>(), age in any::<u16>(),
            links in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u32>()), 0..6),
            stubs in proptest::collection::vec(any::<u8>(), 0..6),
        ) {
            let m = Message::Lsa(Lsa {
                ad: ad(1), hid: hid(2), seq, age,
                links: links.iter().map(|&(a, h, cost)| LsaLink { ad: ad(a), hid: hid(h), cost }).collect(),
                stubs: stubs.iter().map(|&s| hid(s)).collect(),
            });
            prop_assert_eq!(Message::parse(&m.to_bytes()), Ok(m));
        }
    }
}
