//! XCMP: XIA's control messages (`nxt` 1), ICMP's counterpart.
//!
//! Every message starts `type u8, code u8, checksum u16`; the checksum is
//! the Internet checksum over the whole message. The layouts follow what
//! xia-core v2's `XCMP` element puts on the wire:
//!
//! ```text
//! echo / echo reply:       type code cksum | ident u16 | seq u16 | data …
//! unreachable / time exc.: type code cksum | 4 zero bytes | offending XIP header | its first 8 payload bytes
//! redirect (ours, below):  type code cksum | n u8 | 3 zero bytes | n × 28 B new DAG | offending header | 8 bytes
//! ```
//!
//! xia-core v2 defines the redirect type (5) but never sends one. Ours
//! carries the node array of the DAG the sender should use instead, in the
//! same 28-byte node format as the XIP header, so a host that moved (see
//! `xia-migrate`) can tell its peers its whole new address, not one XID.

use std::fmt;

use super::checksum;
use super::dag::{WireDagError, NODE_LEN};
use super::xip::{Packet as XipPacket, XipError, XipRepr};
use crate::dag::{Dag, MAX_NODES};

/// Bytes of the offending packet's payload quoted after its header.
pub const QUOTED_PAYLOAD_LEN: usize = 8;

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const REDIRECT_COUNT: usize = 4;
    pub const REST: usize = 8;
}

/// Length of the fixed part of every message.
pub const HEADER_LEN: usize = field::REST;

/// XCMP message types.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MessageType {
    /// Echo reply (0).
    EchoReply,
    /// Destination unreachable (3).
    Unreachable,
    /// Redirect (5).
    Redirect,
    /// Echo request (8).
    EchoRequest,
    /// Time exceeded (11).
    TimeExceeded,
    /// Any other type.
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> MessageType {
        match v {
            0 => MessageType::EchoReply,
            3 => MessageType::Unreachable,
            5 => MessageType::Redirect,
            8 => MessageType::EchoRequest,
            11 => MessageType::TimeExceeded,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(v: MessageType) -> u8 {
        match v {
            MessageType::EchoReply => 0,
            MessageType::Unreachable => 3,
            MessageType::Redirect => 5,
            MessageType::EchoRequest => 8,
            MessageType::TimeExceeded => 11,
            MessageType::Unknown(other) => other,
        }
    }
}

/// Codes of a destination-unreachable message (ICMP's numbering, as in
/// xia-core).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum Unreachable {
    /// No route to the network (AD) (0).
    Network,
    /// No route to the host (1).
    Host,
    /// The next header is not supported (2).
    Protocol,
    /// The intent (e.g. a SID) is not served there (3).
    Intent,
    /// The DAG could not be parsed (16, xia-core's "unspecified").
    Unspecified,
    /// Any other code.
    Other(u8),
}

impl From<u8> for Unreachable {
    fn from(v: u8) -> Unreachable {
        match v {
            0 => Unreachable::Network,
            1 => Unreachable::Host,
            2 => Unreachable::Protocol,
            3 => Unreachable::Intent,
            16 => Unreachable::Unspecified,
            other => Unreachable::Other(other),
        }
    }
}

impl From<Unreachable> for u8 {
    fn from(v: Unreachable) -> u8 {
        match v {
            Unreachable::Network => 0,
            Unreachable::Host => 1,
            Unreachable::Protocol => 2,
            Unreachable::Intent => 3,
            Unreachable::Unspecified => 16,
            Unreachable::Other(other) => other,
        }
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Network => f.write_str("network unreachable"),
            Unreachable::Host => f.write_str("host unreachable"),
            Unreachable::Protocol => f.write_str("protocol unreachable"),
            Unreachable::Intent => f.write_str("intent unreachable"),
            Unreachable::Unspecified => f.write_str("unreachable (bad DAG)"),
            Unreachable::Other(c) => write!(f, "unreachable (code {c})"),
        }
    }
}

/// Why bytes are not a valid XCMP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XcmpError {
    /// Shorter than its type needs.
    #[error("truncated XCMP message: {needed} bytes needed, {actual} present")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        actual: usize,
    },
    /// The checksum does not match.
    #[error("bad XCMP checksum")]
    Checksum,
    /// A type this crate does not know.
    #[error("unknown XCMP type {0}")]
    UnknownType(u8),
    /// The header an error message quotes is not a valid XIP header.
    #[error("quoted header: {0}")]
    Quoted(XipError),
    /// A redirect's new DAG is malformed.
    #[error("redirect DAG: {0}")]
    RedirectDag(WireDagError),
}

/// A read/write view of an XCMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, XcmpError> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the fixed 8 bytes are present (for a redirect, also its
    /// DAG); afterwards no accessor panics.
    pub fn check_len(&self) -> Result<(), XcmpError> {
        let actual = self.buffer.as_ref().len();
        let needed = if actual < HEADER_LEN {
            HEADER_LEN
        } else {
            self.rest_offset()
        };
        if actual < needed {
            return Err(XcmpError::Truncated { needed, actual });
        }
        Ok(())
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> MessageType {
        self.b()[field::TYPE].into()
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        self.b()[field::CODE]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        let b = &self.b()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Whether the checksum over the whole buffer is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.b()) == 0
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        let b = &self.b()[field::ECHO_IDENT];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Echo sequence number.
    pub fn echo_seq_no(&self) -> u16 {
        let b = &self.b()[field::ECHO_SEQNO];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Node count of a redirect's new DAG.
    pub fn redirect_count(&self) -> u8 {
        self.b()[field::REDIRECT_COUNT]
    }

    fn rest_offset(&self) -> usize {
        match self.msg_type() {
            MessageType::Redirect => HEADER_LEN + NODE_LEN * self.redirect_count() as usize,
            _ => HEADER_LEN,
        }
    }

    /// A redirect's new DAG node array.
    pub fn redirect_wire(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.rest_offset()]
    }

    /// What follows the fixed part: echo data, or the quoted packet.
    pub fn data(&self) -> &[u8] {
        &self.b()[self.rest_offset()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the type.
    pub fn set_msg_type(&mut self, v: MessageType) {
        self.bm()[field::TYPE] = v.into();
    }

    /// Sets the code.
    pub fn set_msg_code(&mut self, v: u8) {
        self.bm()[field::CODE] = v;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.bm()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.b());
        self.set_checksum(c);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, v: u16) {
        self.bm()[field::ECHO_IDENT].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq_no(&mut self, v: u16) {
        self.bm()[field::ECHO_SEQNO].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets bytes 4..8 (the unused word of error messages, or a redirect's
    /// count and padding).
    fn set_word(&mut self, w: [u8; 4]) {
        self.bm()[4..8].copy_from_slice(&w);
    }

    /// What follows the fixed part, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let at = self.rest_offset();
        &mut self.bm()[at..]
    }
}

/// A validated XCMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XcmpRepr<'a> {
    /// Echo request (ping).
    EchoRequest {
        /// Identifier (which pinger).
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data to echo back.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// Identifier copied from the request.
        ident: u16,
        /// Sequence number copied from the request.
        seq_no: u16,
        /// Data copied from the request.
        data: &'a [u8],
    },
    /// Destination unreachable.
    Unreachable {
        /// Why.
        reason: Unreachable,
        /// The offending header and up to 8 payload bytes.
        quoted: &'a [u8],
    },
    /// Hop limit reached zero (code 0) in transit.
    TimeExceeded {
        /// The code (0: in transit).
        code: u8,
        /// The offending header and up to 8 payload bytes.
        quoted: &'a [u8],
    },
    /// Use another DAG for this destination.
    Redirect {
        /// The code (0 network, 1 host).
        code: u8,
        /// The DAG to use instead.
        new_dst: Dag,
        /// The offending header and up to 8 payload bytes.
        quoted: &'a [u8],
    },
}

/// The quote an error message carries: the offending packet's header and
/// the first [`QUOTED_PAYLOAD_LEN`] bytes of its payload.
pub fn quote(offending: &[u8]) -> &[u8] {
    let p = XipPacket::new_unchecked(offending);
    if p.check_header_len().is_err() {
        return offending;
    }
    let end = (p.header_len() + QUOTED_PAYLOAD_LEN).min(offending.len());
    &offending[..end]
}

impl<'a> XcmpRepr<'a> {
    /// Parses a message, checking its checksum and, for error messages,
    /// that the quoted header is a valid XIP header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
    ) -> Result<XcmpRepr<'a>, XcmpError> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(XcmpError::Checksum);
        }
        let data: &'a [u8] = &packet.buffer.as_ref()[packet.rest_offset()..];
        let quoted = || -> Result<&'a [u8], XcmpError> {
            XipRepr::parse_header(&XipPacket::new_unchecked(data)).map_err(XcmpError::Quoted)?;
            Ok(data)
        };
        Ok(match packet.msg_type() {
            MessageType::EchoRequest => XcmpRepr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            MessageType::EchoReply => XcmpRepr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            MessageType::Unreachable => XcmpRepr::Unreachable {
                reason: packet.msg_code().into(),
                quoted: quoted()?,
            },
            MessageType::TimeExceeded => XcmpRepr::TimeExceeded {
                code: packet.msg_code(),
                quoted: quoted()?,
            },
            MessageType::Redirect => {
                let (new_dst, _) =
                    Dag::parse_wire(packet.redirect_wire()).map_err(XcmpError::RedirectDag)?;
                XcmpRepr::Redirect {
                    code: packet.msg_code(),
                    new_dst,
                    quoted: quoted()?,
                }
            }
            MessageType::Unknown(t) => return Err(XcmpError::UnknownType(t)),
        })
    }

    /// Whether this is an error message (never answered with another).
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            XcmpRepr::Unreachable { .. }
                | XcmpRepr::TimeExceeded { .. }
                | XcmpRepr::Redirect { .. }
        )
    }

    /// Bytes [`XcmpRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                XcmpRepr::EchoRequest { data, .. } | XcmpRepr::EchoReply { data, .. } => data.len(),
                XcmpRepr::Unreachable { quoted, .. } | XcmpRepr::TimeExceeded { quoted, .. } => {
                    quoted.len()
                }
                XcmpRepr::Redirect {
                    new_dst, quoted, ..
                } => new_dst.wire_len() + quoted.len(),
            }
    }

    /// Writes the message and its checksum into a buffer of exactly
    /// [`XcmpRepr::buffer_len`] bytes.
    ///
    /// # Panics
    /// If the buffer has another length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        assert_eq!(packet.b().len(), self.buffer_len(), "XCMP buffer length");
        let (ty, code, word, body): (MessageType, u8, [u8; 4], &[u8]) = match self {
            XcmpRepr::EchoRequest {
                ident,
                seq_no,
                data,
            }
            | XcmpRepr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                let ty = if matches!(self, XcmpRepr::EchoRequest { .. }) {
                    MessageType::EchoRequest
                } else {
                    MessageType::EchoReply
                };
                let [i0, i1] = ident.to_be_bytes();
                let [s0, s1] = seq_no.to_be_bytes();
                (ty, 0, [i0, i1, s0, s1], data)
            }
            XcmpRepr::Unreachable { reason, quoted } => {
                (MessageType::Unreachable, (*reason).into(), [0; 4], quoted)
            }
            XcmpRepr::TimeExceeded { code, quoted } => {
                (MessageType::TimeExceeded, *code, [0; 4], quoted)
            }
            XcmpRepr::Redirect {
                code,
                new_dst,
                quoted,
            } => {
                debug_assert!(new_dst.len() <= MAX_NODES);
                (
                    MessageType::Redirect,
                    *code,
                    [new_dst.len() as u8, 0, 0, 0],
                    quoted,
                )
            }
        };
        packet.set_msg_type(ty);
        packet.set_msg_code(code);
        packet.set_word(word);
        if let XcmpRepr::Redirect { new_dst, .. } = self {
            new_dst.emit_wire(&mut packet.bm()[HEADER_LEN..]);
        }
        packet.data_mut().copy_from_slice(body);
        packet.fill_checksum();
    }

    /// The message as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

impl fmt::Display for XcmpRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let about = |q: &[u8]| match XipRepr::parse_header(&XipPacket::new_unchecked(q)) {
            Ok(r) => format!("about [{r}]"),
            Err(e) => format!("about an unreadable header ({e})"),
        };
        match self {
            XcmpRepr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                write!(
                    f,
                    "XCMP echo request id={ident} seq={seq_no} len={}",
                    data.len()
                )
            }
            XcmpRepr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                write!(
                    f,
                    "XCMP echo reply id={ident} seq={seq_no} len={}",
                    data.len()
                )
            }
            XcmpRepr::Unreachable { reason, quoted } => {
                write!(f, "XCMP {reason} {}", about(quoted))
            }
            XcmpRepr::TimeExceeded { code, quoted } => {
                write!(f, "XCMP time exceeded (code {code}) {}", about(quoted))
            }
            XcmpRepr::Redirect {
                code,
                new_dst,
                quoted,
            } => write!(
                f,
                "XCMP redirect (code {code}) to [{}] {}",
                new_dst.to_string().replace(" \n", " "),
                about(quoted)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::xip::NextHeader;

    fn offending() -> Vec<u8> {
        let dst = Dag::parse("RE AD:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a SID:0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c").unwrap();
        let src = Dag::parse("RE HID:0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d").unwrap();
        XipRepr::new(dst, src, NextHeader::Xdgram, 0)
            .to_bytes(b"0123456789abcdef")
            .unwrap()
    }

    #[test]
    fn test_echo_bytes() {
        let r = XcmpRepr::EchoRequest {
            ident: 0x1234,
            seq_no: 1,
            data: b"hi",
        };
        let bytes = r.to_bytes();
        // 08 00 | cksum | 12 34 00 01 | 68 69
        // sum = 0x0800 + 0x1234 + 0x0001 + 0x6869 = 0x829e → !0x829e = 0x7d61
        assert_eq!(
            bytes,
            [0x08, 0x00, 0x7d, 0x61, 0x12, 0x34, 0x00, 0x01, 0x68, 0x69]
        );
        assert_eq!(
            XcmpRepr::parse(&Packet::new_unchecked(&bytes[..])).unwrap(),
            r
        );
    }

    #[test]
    fn test_unreachable_quotes_header_and_8_bytes() {
        let off = offending();
        let q = quote(&off);
        assert_eq!(q.len(), 8 + 3 * 28 + 8);
        let r = XcmpRepr::Unreachable {
            reason: Unreachable::Intent,
            quoted: q,
        };
        let bytes = r.to_bytes();
        assert_eq!(&bytes[..2], &[3, 3]);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
        assert_eq!(&bytes[8..], q);
        let parsed = XcmpRepr::parse(&Packet::new_unchecked(&bytes[..])).unwrap();
        assert_eq!(parsed, r);
        assert!(parsed.is_error());
        assert!(parsed
            .to_string()
            .starts_with("XCMP intent unreachable about [XIP nxt=XDGRAM"));
    }

    #[test]
    fn test_redirect_round_trip() {
        let off = offending();
        let new_dst = Dag::parse("RE AD:0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e HID:0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d").unwrap();
        let r = XcmpRepr::Redirect {
            code: 1,
            new_dst,
            quoted: quote(&off),
        };
        let bytes = r.to_bytes();
        assert_eq!(bytes[4], 2);
        assert_eq!(
            XcmpRepr::parse(&Packet::new_unchecked(&bytes[..])).unwrap(),
            r
        );
    }

    #[test]
    fn test_bad_messages() {
        let off = offending();
        let r = XcmpRepr::TimeExceeded {
            code: 0,
            quoted: quote(&off),
        };
        let mut bytes = r.to_bytes();
        bytes[9] ^= 1;
        assert_eq!(
            XcmpRepr::parse(&Packet::new_unchecked(&bytes[..])).unwrap_err(),
            XcmpError::Checksum
        );
        let junk = XcmpRepr::TimeExceeded {
            code: 0,
            quoted: &[1, 2, 3],
        }
        .to_bytes();
        assert!(matches!(
            XcmpRepr::parse(&Packet::new_unchecked(&junk[..])).unwrap_err(),
            XcmpError::Quoted(_)
        ));
        assert!(matches!(
            Packet::new_checked(&[8u8, 0, 0][..]),
            Err(XcmpError::Truncated {
                needed: 8,
                actual: 3
            })
        ));
        let mut unknown = [42u8, 0, 0, 0, 0, 0, 0, 0];
        Packet::new_unchecked(&mut unknown[..]).fill_checksum();
        assert_eq!(
            XcmpRepr::parse(&Packet::new_unchecked(&unknown[..])).unwrap_err(),
            XcmpError::UnknownType(42)
        );
    }
}
