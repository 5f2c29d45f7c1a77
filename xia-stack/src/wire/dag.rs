//! The wire form of a DAG: the node array as it appears in the XIP header
//! (and in xia-core's `sockaddr_x`).
//!
//! Each node is 28 bytes: a big-endian `u32` principal type, the 20-byte
//! identifier, and 4 edge bytes. An edge byte's low 7 bits are the target
//! node's index ([`EDGE_UNUSED`] = no edge) and bit 7 is the *visited* mark
//! routers set on the edge they took. The entry node is not stored: its edges
//! sit in the intent's edge slots (the intent, the last node, has no
//! out-edges of its own).
//!
//! Parsing is strict: used edges come before unused ones, an unused edge is
//! never marked visited, and the result must be a valid [`Dag`].

use std::fmt;

use crate::dag::{Dag, DagError, Edges, Node, MAX_EDGES, MAX_NODES};
use crate::xid::{Xid, XID_WIRE_LEN};

/// Bytes per node on the wire.
pub const NODE_LEN: usize = XID_WIRE_LEN + MAX_EDGES;
/// Edge byte value of an unused edge slot.
pub const EDGE_UNUSED: u8 = 0x7f;
/// The visited mark on an edge byte.
pub const EDGE_VISITED: u8 = 0x80;

/// Visited marks of a DAG's wire edges: bit `4 * node + slot`, where `node`
/// is the wire position (so the entry's edges are the last node's slots).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EdgeMarks(u128);

impl EdgeMarks {
    /// No edge visited: how every packet leaves its source.
    pub const NONE: EdgeMarks = EdgeMarks(0);

    /// Whether slot `slot` of wire node `node` is marked.
    pub fn is_visited(&self, node: usize, slot: usize) -> bool {
        node < MAX_NODES && slot < MAX_EDGES && self.0 >> (node * MAX_EDGES + slot) & 1 == 1
    }

    /// Marks slot `slot` of wire node `node`; out-of-range positions are
    /// ignored (there is no such edge to mark).
    pub fn mark(&mut self, node: usize, slot: usize) {
        if node < MAX_NODES && slot < MAX_EDGES {
            self.0 |= 1 << (node * MAX_EDGES + slot);
        }
    }

    /// Whether any edge is marked.
    pub fn any(&self) -> bool {
        self.0 != 0
    }
}

impl fmt::Debug for EdgeMarks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EdgeMarks({:#x})", self.0)
    }
}

/// One node as stored on the wire, with its raw edge bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WireNode {
    /// The node's XID.
    pub xid: Xid,
    /// The four raw edge bytes.
    pub edges: [u8; MAX_EDGES],
}

impl WireNode {
    /// Reads a node from exactly [`NODE_LEN`] bytes; `None` for any other
    /// length.
    pub fn read(bytes: &[u8]) -> Option<WireNode> {
        let bytes: &[u8; NODE_LEN] = bytes.try_into().ok()?;
        let mut xid = [0u8; XID_WIRE_LEN];
        xid.copy_from_slice(&bytes[..XID_WIRE_LEN]);
        let mut edges = [0u8; MAX_EDGES];
        edges.copy_from_slice(&bytes[XID_WIRE_LEN..]);
        Some(WireNode {
            xid: Xid::from_wire(&xid),
            edges,
        })
    }

    /// The target of edge `slot`, or `None` if the slot is unused.
    pub fn edge_target(&self, slot: usize) -> Option<u8> {
        let t = self.edges.get(slot)? & !EDGE_VISITED;
        (t != EDGE_UNUSED).then_some(t)
    }

    /// Whether edge `slot` carries the visited mark.
    pub fn edge_visited(&self, slot: usize) -> bool {
        self.edges.get(slot).is_some_and(|e| e & EDGE_VISITED != 0)
    }
}

/// Why bytes are not a DAG's node array.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireDagError {
    /// The length is not a whole number of nodes.
    #[error("{len} bytes is not a whole number of {NODE_LEN}-byte nodes")]
    BadLength {
        /// The length given.
        len: usize,
    },
    /// A used edge follows an unused one.
    #[error("node {node} edge slot {slot} is used after an unused slot")]
    EdgeGap {
        /// Wire position of the node.
        node: usize,
        /// The slot.
        slot: usize,
    },
    /// An unused edge carries the visited mark (0xff).
    #[error("node {node} edge slot {slot} is unused but marked visited")]
    VisitedUnused {
        /// Wire position of the node.
        node: usize,
        /// The slot.
        slot: usize,
    },
    /// The nodes and edges break a DAG rule (node numbers are wire
    /// positions; the entry's edges are the last node's slots).
    #[error("{0}")]
    Structure(DagError),
}

impl Dag {
    /// Bytes of the node array.
    pub fn wire_len(&self) -> usize {
        self.len() * NODE_LEN
    }

    /// Writes the node array with no visited marks into the first
    /// [`Dag::wire_len`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Dag::wire_len`].
    pub fn emit_wire(&self, buf: &mut [u8]) {
        self.emit_wire_marked(buf, EdgeMarks::NONE)
    }

    /// Writes the node array with the given visited marks.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Dag::wire_len`].
    pub fn emit_wire_marked(&self, buf: &mut [u8], marks: EdgeMarks) {
        let last = self.len() - 1;
        for (i, (node, chunk)) in self
            .nodes()
            .iter()
            .zip(buf[..self.wire_len()].chunks_exact_mut(NODE_LEN))
            .enumerate()
        {
            chunk[..XID_WIRE_LEN].copy_from_slice(&node.xid.to_wire());
            let edges = if i == last {
                self.entry_edges()
            } else {
                &node.edges
            };
            for slot in 0..MAX_EDGES {
                let mut byte = edges.as_slice().get(slot).copied().unwrap_or(EDGE_UNUSED);
                if marks.is_visited(i, slot) && slot < edges.len() {
                    byte |= EDGE_VISITED;
                }
                chunk[XID_WIRE_LEN + slot] = byte;
            }
        }
    }

    /// The node array as bytes.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.wire_len()];
        self.emit_wire(&mut v);
        v
    }

    /// Reads a node array (its length gives the node count) and returns the
    /// DAG and the visited marks it carried.
    pub fn parse_wire(buf: &[u8]) -> Result<(Dag, EdgeMarks), WireDagError> {
        if buf.len() % NODE_LEN != 0 {
            return Err(WireDagError::BadLength { len: buf.len() });
        }
        let n = buf.len() / NODE_LEN;
        if n == 0 {
            return Err(WireDagError::Structure(DagError::Empty));
        }
        if n > MAX_NODES {
            return Err(WireDagError::Structure(DagError::TooManyNodes { count: n }));
        }
        let mut marks = EdgeMarks::NONE;
        let mut nodes = Vec::with_capacity(n);
        let mut entry = Edges::new();
        for (i, chunk) in buf.chunks_exact(NODE_LEN).enumerate() {
            let wn = WireNode::read(chunk).expect("chunk is NODE_LEN bytes");
            let mut edges = Edges::new();
            let mut ended = false;
            for slot in 0..MAX_EDGES {
                let byte = wn.edges[slot];
                match wn.edge_target(slot) {
                    None if byte & EDGE_VISITED != 0 => {
                        return Err(WireDagError::VisitedUnused { node: i, slot })
                    }
                    None => ended = true,
                    Some(_) if ended => return Err(WireDagError::EdgeGap { node: i, slot }),
                    Some(t) => {
                        edges.push(t).expect("at most MAX_EDGES slots");
                        if wn.edge_visited(slot) {
                            marks.mark(i, slot);
                        }
                    }
                }
            }
            if i == n - 1 {
                entry = edges;
                nodes.push(Node::new(wn.xid, Edges::new()));
            } else {
                nodes.push(Node::new(wn.xid, edges));
            }
        }
        let dag = Dag::new(entry, nodes).map_err(WireDagError::Structure)?;
        Ok((dag, marks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    const A: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
    const H: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";
    const S: &str = "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c";

    #[test]
    fn reference_example_bytes() {
        // `RE AD:A HID:H SID:S` from xia-wire.md.
        let d = Dag::parse(&format!("RE AD:{A} HID:{H} SID:{S}")).unwrap();
        let want = hex(&format!(
            "00000010 {A} 01 7f 7f 7f  00000011 {H} 02 7f 7f 7f  00000013 {S} 00 7f 7f 7f"
        ));
        assert_eq!(d.to_wire(), want);
        assert_eq!(Dag::parse_wire(&want).unwrap(), (d, EdgeMarks::NONE));
    }

    #[test]
    fn ipv4_fallback_bytes() {
        let d = Dag::parse(&format!("RE ( IP:10.0.0.1 ) AD:{A} SID:{S}")).unwrap();
        let ip = "4500000000010000fafa0000000000000a000001";
        let want = hex(&format!(
            "00000014 {ip} 01 7f 7f 7f  00000010 {A} 02 7f 7f 7f  00000013 {S} 01 00 7f 7f"
        ));
        assert_eq!(d.to_wire(), want);
        assert_eq!(Dag::parse_wire(&want).unwrap().0, d);
    }

    #[test]
    fn visited_marks_round_trip() {
        let d = Dag::parse(&format!("RE AD:{A} HID:{H} SID:{S}")).unwrap();
        let mut marks = EdgeMarks::NONE;
        marks.mark(2, 0); // entry → AD taken
        marks.mark(0, 0); // AD → HID taken
        let mut buf = vec![0u8; d.wire_len()];
        d.emit_wire_marked(&mut buf, marks);
        assert_eq!(buf[24], 0x81);
        assert_eq!(buf[2 * NODE_LEN + 24], 0x80);
        assert_eq!(Dag::parse_wire(&buf).unwrap(), (d, marks));
    }

    #[test]
    fn strict_edge_bytes() {
        let d = Dag::parse(&format!("RE AD:{A} SID:{S}")).unwrap();
        let good = d.to_wire();
        let mut gap = good.clone();
        gap[24..28].copy_from_slice(&[0x7f, 0x01, 0x7f, 0x7f]);
        assert_eq!(
            Dag::parse_wire(&gap).unwrap_err(),
            WireDagError::EdgeGap { node: 0, slot: 1 }
        );
        let mut vis = good.clone();
        vis[27] = 0xff;
        assert_eq!(
            Dag::parse_wire(&vis).unwrap_err(),
            WireDagError::VisitedUnused { node: 0, slot: 3 }
        );
        let mut range = good.clone();
        range[24] = 0x05;
        assert!(matches!(
            Dag::parse_wire(&range).unwrap_err(),
            WireDagError::Structure(DagError::EdgeOutOfRange { target: 5, .. })
        ));
        assert_eq!(
            Dag::parse_wire(&good[..30]).unwrap_err(),
            WireDagError::BadLength { len: 30 }
        );
        assert_eq!(
            Dag::parse_wire(&[]).unwrap_err(),
            WireDagError::Structure(DagError::Empty)
        );
    }
}
