//! The XIP header: XIA's network-layer header, byte-exact with xia-core v2,
//! Linux XIA and Wireshark's XIP dissector.
//!
//! ```text
//!  0      1      2      4      5       6       7      8
//! +------+------+------+------+-------+-------+------+------------------------+
//! | ver  | nxt  | plen | hlim | dnode | snode | last | 28 B × (dnode + snode) |
//! +------+------+------+------+-------+-------+------+------------------------+
//! ```
//!
//! [`Packet`] is a zero-copy view in the smoltcp manner: after
//! [`Packet::check_len`] succeeds no accessor panics (node accessors take an
//! index and return `None` past the end). [`XipRepr`] is the validated form:
//! [`XipRepr::parse`] checks every rule a receiver must check, and
//! [`XipRepr::emit`] never panics on a buffer of [`XipRepr::buffer_len`] bytes.

use std::fmt;

use super::dag::{EdgeMarks, WireDagError, WireNode, EDGE_VISITED, NODE_LEN};
use crate::dag::{Dag, MAX_EDGES, MAX_NODES};

/// The XIP version this crate speaks.
pub const VERSION: u8 = 1;
/// The hop limit new packets start with (xia-core's default).
pub const DEFAULT_HOP_LIMIT: u8 = 250;
/// The `last` value meaning "no node visited yet: at the entry node".
pub const LAST_ENTRY: u8 = 0x7e;
/// Length of the fixed part of the header.
pub const FIXED_LEN: usize = field::NODES;

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const VER: usize = 0;
    pub const NXT: usize = 1;
    pub const PLEN: Field = 2..4;
    pub const HLIM: usize = 4;
    pub const DNODE: usize = 5;
    pub const SNODE: usize = 6;
    pub const LAST: usize = 7;
    pub const NODES: usize = 8;
}

/// What follows the XIP header (`nxt`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum NextHeader {
    /// Raw data (0).
    Data,
    /// XCMP (1).
    Xcmp,
    /// Datagram transport (2).
    Xdgram,
    /// Stream transport (3).
    Xstream,
    /// Flow ID extension (4).
    Fid,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for NextHeader {
    fn from(v: u8) -> NextHeader {
        match v {
            0 => NextHeader::Data,
            1 => NextHeader::Xcmp,
            2 => NextHeader::Xdgram,
            3 => NextHeader::Xstream,
            4 => NextHeader::Fid,
            other => NextHeader::Unknown(other),
        }
    }
}

impl From<NextHeader> for u8 {
    fn from(v: NextHeader) -> u8 {
        match v {
            NextHeader::Data => 0,
            NextHeader::Xcmp => 1,
            NextHeader::Xdgram => 2,
            NextHeader::Xstream => 3,
            NextHeader::Fid => 4,
            NextHeader::Unknown(other) => other,
        }
    }
}

impl fmt::Display for NextHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHeader::Data => f.write_str("DATA"),
            NextHeader::Xcmp => f.write_str("XCMP"),
            NextHeader::Xdgram => f.write_str("XDGRAM"),
            NextHeader::Xstream => f.write_str("XSTREAM"),
            NextHeader::Fid => f.write_str("FID"),
            NextHeader::Unknown(v) => write!(f, "nxt {v}"),
        }
    }
}

/// The `last` field: where the packet is in its destination DAG.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LastNode {
    /// Nothing visited yet (0x7e).
    Entry,
    /// Node `i` of the destination DAG was the last one reached.
    Node(u8),
}

impl LastNode {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            LastNode::Entry => LAST_ENTRY,
            LastNode::Node(i) => i,
        }
    }
}

impl fmt::Display for LastNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LastNode::Entry => f.write_str("entry"),
            LastNode::Node(i) => write!(f, "{i}"),
        }
    }
}

/// Which of the two DAGs in a header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// The destination DAG.
    Destination,
    /// The source DAG.
    Source,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Destination => "destination",
            Side::Source => "source",
        })
    }
}

/// Why bytes are not a valid XIP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XipError {
    /// Shorter than the header or the payload it announces.
    #[error("truncated: {needed} bytes needed, {actual} present")]
    Truncated {
        /// Bytes the header says there are.
        needed: usize,
        /// Bytes present.
        actual: usize,
    },
    /// Longer than header + payload length (receivers drop these).
    #[error("length mismatch: header + plen = {expected} bytes, packet has {actual}")]
    LengthMismatch {
        /// Header length plus `plen`.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// Not version 1.
    #[error("unsupported XIP version {0}")]
    BadVersion(u8),
    /// A DAG with no nodes.
    #[error("the {0} DAG has no nodes")]
    NoNodes(Side),
    /// A DAG with more than 20 nodes.
    #[error("the {side} DAG has {count} nodes, at most {MAX_NODES} are allowed")]
    TooManyNodes {
        /// Which DAG.
        side: Side,
        /// The count in the header.
        count: u8,
    },
    /// `last` is neither the entry value nor a destination node.
    #[error("last node {last:#04x} is neither 0x7e (entry) nor below dnode {dnode}")]
    BadLast {
        /// The `last` byte.
        last: u8,
        /// The destination node count.
        dnode: u8,
    },
    /// A DAG's node array is malformed.
    #[error("{side} DAG: {error}")]
    Dag {
        /// Which DAG.
        side: Side,
        /// What is wrong with it.
        error: WireDagError,
    },
    /// The payload does not fit the 16-bit length field.
    #[error("payload of {0} bytes does not fit in plen")]
    PayloadTooLong(usize),
}

/// A read/write view of an XIP packet.
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
    pub fn new_checked(buffer: T) -> Result<Packet<T>, XipError> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the fixed header, both node arrays and
    /// the payload `plen` announces; afterwards no accessor panics.
    pub fn check_len(&self) -> Result<(), XipError> {
        let actual = self.buffer.as_ref().len();
        if actual < FIXED_LEN {
            return Err(XipError::Truncated {
                needed: FIXED_LEN,
                actual,
            });
        }
        let needed = self.total_len();
        if actual < needed {
            return Err(XipError::Truncated { needed, actual });
        }
        Ok(())
    }

    /// Checks only that the fixed header and node arrays are present: for
    /// an offending header quoted in XCMP, whose payload is cut short.
    pub fn check_header_len(&self) -> Result<(), XipError> {
        let actual = self.buffer.as_ref().len();
        let needed = if actual < FIXED_LEN {
            FIXED_LEN
        } else {
            self.header_len()
        };
        if actual < needed {
            return Err(XipError::Truncated { needed, actual });
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// `ver`.
    pub fn version(&self) -> u8 {
        self.b()[field::VER]
    }

    /// `nxt`.
    pub fn next_header(&self) -> NextHeader {
        self.b()[field::NXT].into()
    }

    /// `plen`: payload length, header excluded.
    pub fn payload_len(&self) -> u16 {
        let b = &self.b()[field::PLEN];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// `hlim`.
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HLIM]
    }

    /// `dnode`: destination node count.
    pub fn dst_count(&self) -> u8 {
        self.b()[field::DNODE]
    }

    /// `snode`: source node count.
    pub fn src_count(&self) -> u8 {
        self.b()[field::SNODE]
    }

    /// `last`, raw.
    pub fn last_raw(&self) -> u8 {
        self.b()[field::LAST]
    }

    /// Header length: fixed part plus both node arrays.
    pub fn header_len(&self) -> usize {
        FIXED_LEN + NODE_LEN * (self.dst_count() as usize + self.src_count() as usize)
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        self.header_len() + self.payload_len() as usize
    }

    /// The destination node array.
    pub fn dst_wire(&self) -> &[u8] {
        let start = FIXED_LEN;
        &self.b()[start..start + NODE_LEN * self.dst_count() as usize]
    }

    /// The source node array.
    pub fn src_wire(&self) -> &[u8] {
        let start = FIXED_LEN + NODE_LEN * self.dst_count() as usize;
        &self.b()[start..self.header_len()]
    }

    /// Destination node `i`, or `None` past `dnode`.
    pub fn dst_node(&self, i: usize) -> Option<WireNode> {
        let w = self.dst_wire();
        w.get(i * NODE_LEN..(i + 1) * NODE_LEN)
            .and_then(WireNode::read)
    }

    /// Source node `i`, or `None` past `snode`.
    pub fn src_node(&self, i: usize) -> Option<WireNode> {
        let w = self.src_wire();
        w.get(i * NODE_LEN..(i + 1) * NODE_LEN)
            .and_then(WireNode::read)
    }

    /// The payload (`plen` bytes after the header).
    pub fn payload(&self) -> &[u8] {
        let start = self.header_len();
        &self.b()[start..start + self.payload_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets `ver`.
    pub fn set_version(&mut self, v: u8) {
        self.bm()[field::VER] = v;
    }

    /// Sets `nxt`.
    pub fn set_next_header(&mut self, v: NextHeader) {
        self.bm()[field::NXT] = v.into();
    }

    /// Sets `plen`.
    pub fn set_payload_len(&mut self, v: u16) {
        self.bm()[field::PLEN].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets `hlim`.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.bm()[field::HLIM] = v;
    }

    /// Sets `dnode`.
    pub fn set_dst_count(&mut self, v: u8) {
        self.bm()[field::DNODE] = v;
    }

    /// Sets `snode`.
    pub fn set_src_count(&mut self, v: u8) {
        self.bm()[field::SNODE] = v;
    }

    /// Sets `last`.
    pub fn set_last_raw(&mut self, v: u8) {
        self.bm()[field::LAST] = v;
    }

    /// Sets the visited mark on edge `slot` of destination node `node`;
    /// `false` (and no change) if there is no such slot.
    pub fn mark_dst_edge(&mut self, node: usize, slot: usize) -> bool {
        if slot >= MAX_EDGES || node >= self.dst_count() as usize {
            return false;
        }
        let at = FIXED_LEN + node * NODE_LEN + NODE_LEN - MAX_EDGES + slot;
        match self.bm().get_mut(at) {
            Some(b) => {
                *b |= EDGE_VISITED;
                true
            }
            None => false,
        }
    }

    /// The destination node array, writable.
    pub fn dst_wire_mut(&mut self) -> &mut [u8] {
        let end = FIXED_LEN + NODE_LEN * self.dst_count() as usize;
        &mut self.bm()[FIXED_LEN..end]
    }

    /// The source node array, writable.
    pub fn src_wire_mut(&mut self) -> &mut [u8] {
        let start = FIXED_LEN + NODE_LEN * self.dst_count() as usize;
        let end = self.header_len();
        &mut self.bm()[start..end]
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = start + self.payload_len() as usize;
        &mut self.bm()[start..end]
    }
}

/// A validated XIP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XipRepr {
    /// What follows the header.
    pub next_header: NextHeader,
    /// Hops left.
    pub hop_limit: u8,
    /// Progress through the destination DAG.
    pub last: LastNode,
    /// Where the packet goes.
    pub dst: Dag,
    /// Where it came from (where replies go).
    pub src: Dag,
    /// Edges of `dst` that routers have taken.
    pub dst_visited: EdgeMarks,
    /// Visited marks in `src` (normally none; kept for byte fidelity).
    pub src_visited: EdgeMarks,
    /// Payload length.
    pub payload_len: usize,
}

impl XipRepr {
    /// A fresh header: default hop limit, at the entry node, nothing visited.
    pub fn new(dst: Dag, src: Dag, next_header: NextHeader, payload_len: usize) -> XipRepr {
        XipRepr {
            next_header,
            hop_limit: DEFAULT_HOP_LIMIT,
            last: LastNode::Entry,
            dst,
            src,
            dst_visited: EdgeMarks::NONE,
            src_visited: EdgeMarks::NONE,
            payload_len,
        }
    }

    /// Parses and validates a whole packet: its length must be exactly
    /// header + `plen`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<XipRepr, XipError> {
        packet.check_len()?;
        let repr = XipRepr::parse_header(packet)?;
        let actual = packet.buffer.as_ref().len();
        let expected = packet.total_len();
        if actual != expected {
            return Err(XipError::LengthMismatch { expected, actual });
        }
        Ok(repr)
    }

    /// Parses and validates the header only; the payload may be cut short
    /// (as in a header quoted by XCMP).
    pub fn parse_header<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<XipRepr, XipError> {
        if packet.buffer.as_ref().len() >= FIXED_LEN && packet.version() != VERSION {
            return Err(XipError::BadVersion(packet.version()));
        }
        packet.check_header_len()?;
        let (dnode, snode) = (packet.dst_count(), packet.src_count());
        for (side, count) in [(Side::Destination, dnode), (Side::Source, snode)] {
            if count == 0 {
                return Err(XipError::NoNodes(side));
            }
            if count as usize > MAX_NODES {
                return Err(XipError::TooManyNodes { side, count });
            }
        }
        let last = match packet.last_raw() {
            LAST_ENTRY => LastNode::Entry,
            i if i < dnode => LastNode::Node(i),
            last => return Err(XipError::BadLast { last, dnode }),
        };
        let (dst, dst_visited) =
            Dag::parse_wire(packet.dst_wire()).map_err(|error| XipError::Dag {
                side: Side::Destination,
                error,
            })?;
        let (src, src_visited) =
            Dag::parse_wire(packet.src_wire()).map_err(|error| XipError::Dag {
                side: Side::Source,
                error,
            })?;
        Ok(XipRepr {
            next_header: packet.next_header(),
            hop_limit: packet.hop_limit(),
            last,
            dst,
            src,
            dst_visited,
            src_visited,
            payload_len: packet.payload_len() as usize,
        })
    }

    /// Header length.
    pub fn header_len(&self) -> usize {
        FIXED_LEN + self.dst.wire_len() + self.src.wire_len()
    }

    /// Bytes [`XipRepr::emit`] needs: the header (the payload is the
    /// caller's, written through [`Packet::payload_mut`] afterwards).
    pub fn buffer_len(&self) -> usize {
        self.header_len()
    }

    /// Writes the header into `packet`, whose buffer must be at least
    /// [`XipRepr::buffer_len`] bytes (plus the payload, to reach it).
    ///
    /// # Errors
    /// [`XipError::PayloadTooLong`] if `payload_len` exceeds 65535. A
    /// [`LastNode::Node`] index is written as given; [`XipRepr::parse`]
    /// is what checks it.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
    ) -> Result<(), XipError> {
        let plen = u16::try_from(self.payload_len)
            .map_err(|_| XipError::PayloadTooLong(self.payload_len))?;
        packet.set_version(VERSION);
        packet.set_next_header(self.next_header);
        packet.set_payload_len(plen);
        packet.set_hop_limit(self.hop_limit);
        // A Dag has at most 20 nodes, so these fit a byte.
        packet.set_dst_count(self.dst.len() as u8);
        packet.set_src_count(self.src.len() as u8);
        packet.set_last_raw(self.last.to_byte());
        self.dst
            .emit_wire_marked(packet.dst_wire_mut(), self.dst_visited);
        self.src
            .emit_wire_marked(packet.src_wire_mut(), self.src_visited);
        Ok(())
    }

    /// A whole packet as bytes: this header followed by `payload`
    /// (`payload_len` is taken from it).
    pub fn to_bytes(&self, payload: &[u8]) -> Result<Vec<u8>, XipError> {
        let mut repr = self.clone();
        repr.payload_len = payload.len();
        let mut buf = vec![0u8; repr.header_len() + payload.len()];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p)?;
        p.payload_mut().copy_from_slice(payload);
        Ok(buf)
    }
}

impl fmt::Display for XipRepr {
    /// One line: `XIP nxt=XDGRAM hlim=250 last=entry plen=12 dst=… src=…`,
    /// DAGs in RE form where they have one, else DAG form on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one_line = |d: &Dag| {
            d.to_re_string()
                .unwrap_or_else(|| d.to_string().replace(" \n", " "))
        };
        write!(
            f,
            "XIP nxt={} hlim={} last={} plen={} dst=[{}] src=[{}]",
            self.next_header,
            self.hop_limit,
            self.last,
            self.payload_len,
            one_line(&self.dst),
            one_line(&self.src)
        )
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match XipRepr::parse(&Packet::new_unchecked(self.buffer.as_ref())) {
            Ok(repr) => write!(f, "{repr}"),
            Err(e) => write!(f, "XIP ({e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AD:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
    const H: &str = "HID:0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";
    const S: &str = "SID:0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c";
    const H2: &str = "HID:0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    fn packet_bytes() -> Vec<u8> {
        let a = &A[3..];
        let h = &H[4..];
        let s = &S[4..];
        let h2 = &H2[4..];
        hex(&format!(
            "01 02 0003 fa 03 01 7e
             00000010 {a} 01 7f 7f 7f
             00000011 {h} 02 7f 7f 7f
             00000013 {s} 00 7f 7f 7f
             00000011 {h2} 00 7f 7f 7f
             616263"
        ))
    }

    fn repr() -> XipRepr {
        XipRepr::new(
            Dag::parse(&format!("RE {A} {H} {S}")).unwrap(),
            Dag::parse(&format!("RE {H2}")).unwrap(),
            NextHeader::Xdgram,
            3,
        )
    }

    #[test]
    fn test_parse() {
        let bytes = packet_bytes();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.header_len(), 8 + 4 * 28);
        assert_eq!(p.payload(), b"abc");
        assert_eq!(XipRepr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        assert_eq!(repr().to_bytes(b"abc").unwrap(), packet_bytes());
    }

    #[test]
    fn test_visited_and_last() {
        let mut bytes = packet_bytes();
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        assert!(p.mark_dst_edge(2, 0));
        assert!(!p.mark_dst_edge(3, 0));
        assert!(!p.mark_dst_edge(0, 4));
        p.set_last_raw(0);
        let r = XipRepr::parse(&Packet::new_unchecked(&bytes[..])).unwrap();
        assert_eq!(r.last, LastNode::Node(0));
        assert!(r.dst_visited.is_visited(2, 0));
        let again = r.to_bytes(b"abc").unwrap();
        assert_eq!(again, bytes);
    }

    #[test]
    fn test_impossible_len() {
        let bytes = packet_bytes();
        let short = &bytes[..bytes.len() - 1];
        assert_eq!(
            XipRepr::parse(&Packet::new_unchecked(short)).unwrap_err(),
            XipError::Truncated {
                needed: bytes.len(),
                actual: bytes.len() - 1
            }
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            XipRepr::parse(&Packet::new_unchecked(&long[..])).unwrap_err(),
            XipError::LengthMismatch {
                expected: bytes.len(),
                actual: bytes.len() + 1
            }
        );
        assert!(matches!(
            Packet::new_checked(&bytes[..5]),
            Err(XipError::Truncated { needed: 8, .. })
        ));
    }

    #[test]
    fn test_header_rules() {
        let parse = |b: &[u8]| XipRepr::parse(&Packet::new_unchecked(b)).unwrap_err();
        let mut b = packet_bytes();
        b[0] = 2;
        assert_eq!(parse(&b), XipError::BadVersion(2));
        let mut b = packet_bytes();
        b[7] = 3;
        assert_eq!(parse(&b), XipError::BadLast { last: 3, dnode: 3 });
        let mut b = vec![1, 0, 0, 0, 250, 21, 1, 0x7e];
        b.resize(8 + 22 * 28, 0);
        assert_eq!(
            parse(&b),
            XipError::TooManyNodes {
                side: Side::Destination,
                count: 21
            }
        );
        let b = [1, 0, 0, 0, 250, 0, 0, 0x7e];
        assert_eq!(parse(&b), XipError::NoNodes(Side::Destination));
        let mut b = packet_bytes();
        b[8 + 24] = 0x09;
        assert!(matches!(
            parse(&b),
            XipError::Dag {
                side: Side::Destination,
                ..
            }
        ));
    }

    #[test]
    fn test_display() {
        let r = repr();
        assert_eq!(
            r.to_string(),
            format!("XIP nxt=XDGRAM hlim=250 last=entry plen=3 dst=[RE {A} {H} {S}] src=[RE {H2}]")
        );
    }
}
