//! The DAG walk: xia-core v2's forwarding semantics as small reusable steps.
//!
//! A node (router or host) decides what to do with an XIP packet in these
//! steps, each a function here so the native router, the Click elements and
//! the simulator call the same code:
//!
//! 1. [`check`] — the header checks a forwarding node must make (xia-core's
//!    `CheckXIAHeader`, which it ships disabled); yields a [`Checked`] packet
//!    whose accessors cannot go out of bounds.
//! 2. [`Checked::current_node`] / [`Checked::edge`] — *select edge*: the
//!    out-edges of node `last` (the entry's sit in the intent's slots), in
//!    priority order.
//! 3. [`RouteTables::lookup`] — *classify and look up* the target XID in its
//!    principal's table; no table or a miss means fall back to the next edge.
//! 4. [`Checked::advance`] — on a local hit, set the edge's visited bit and
//!    `last = target`, then continue in the same node.
//! 5. [`Checked::at_destination`] — *check destination*: `last == dnode-1`.
//! 6. [`Checked::decrement_hop_limit`] — only when the packet leaves.
//!
//! [`route`] composes them into a [`Verdict`].

use super::table::{Action, Lookup, PortId, RouteTables};
use crate::dag::{DagError, NodeRef, MAX_EDGES, MAX_NODES};
use crate::wire::dag::{WireDagError, EDGE_UNUSED, EDGE_VISITED, NODE_LEN};
use crate::wire::xip::{Side, XipError, FIXED_LEN, LAST_ENTRY, VERSION};
use crate::xid::{Principal, Xid, ID_LEN};

/// What to do with a packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// It is for this node: the intent was reached (`intent: true`) or a
    /// locally bound SID on the way (`intent: false`).
    Deliver {
        /// Whether the DAG's intent itself was reached.
        intent: bool,
    },
    /// Send it out `port` (hop limit already decremented).
    Forward {
        /// The port.
        port: PortId,
        /// The neighbour, if the route names one.
        next_hop: Option<Xid>,
    },
    /// Copy it out every port but the incoming one (hop limit decremented).
    Broadcast,
    /// No edge could be followed, or a route says unreachable.
    Unreachable,
    /// A route says drop it silently.
    Discard,
    /// It would leave with its hop limit exhausted.
    TimeExceeded,
}

/// An XIP packet that passed [`check`]: every node index the walk can
/// reach is in bounds, so nothing here panics.
#[derive(Debug)]
pub struct Checked<'a> {
    buf: &'a mut [u8],
    dnode: usize,
}

const OFF_HLIM: usize = 4;
const OFF_DNODE: usize = 5;
const OFF_SNODE: usize = 6;
const OFF_LAST: usize = 7;

const LOW7: u32 = 0x7f7f_7f7f;
const HIGH: u32 = 0x8080_8080;
const ONES: u32 = 0x0101_0101;

/// The top bit of each byte of `x` that is zero. Exact per byte: the 7-bit
/// sums cannot carry across bytes (unlike the borrow-based zero test).
#[inline]
fn zero_bytes(x: u32) -> u32 {
    !(((x & LOW7) + LOW7) | x) & HIGH
}

/// Whether any of the four edge bytes in `word` (visited bits ignored) is
/// used and points at or past `count` (1..=20). Four bytes at once: the
/// header check runs on every packet a router sees.
#[inline]
fn edges_out_of_range(word: u32, count: u32) -> bool {
    let t = word & LOW7;
    // Bytes ≥ count: adding 0x80 - count to a 7-bit byte sets its top bit
    // exactly then, and cannot carry into the next byte.
    let ge = t.wrapping_add((0x80 - count) * ONES) & HIGH;
    let unused = zero_bytes(t ^ LOW7);
    ge & !unused != 0
}

/// Step 1: the header checks a forwarding node makes before walking: the
/// exact length, version 1, 1–20 nodes per DAG, a valid `last`, and every
/// used edge of the destination DAG pointing inside it. (The full DAG rules —
/// one sink, acyclic — are [`crate::wire::xip::XipRepr::parse`]'s job; the
/// walk is bounded so a cycle cannot trap it.)
pub fn check(buf: &mut [u8]) -> Result<Checked<'_>, XipError> {
    let actual = buf.len();
    if actual < FIXED_LEN {
        return Err(XipError::Truncated {
            needed: FIXED_LEN,
            actual,
        });
    }
    if buf[0] != VERSION {
        return Err(XipError::BadVersion(buf[0]));
    }
    let (dnode, snode) = (buf[OFF_DNODE], buf[OFF_SNODE]);
    for (side, count) in [(Side::Destination, dnode), (Side::Source, snode)] {
        if count == 0 {
            return Err(XipError::NoNodes(side));
        }
        if count as usize > MAX_NODES {
            return Err(XipError::TooManyNodes { side, count });
        }
    }
    let header = FIXED_LEN + NODE_LEN * (dnode as usize + snode as usize);
    let expected = header + u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if actual < expected {
        return Err(XipError::Truncated {
            needed: expected,
            actual,
        });
    }
    if actual > expected {
        return Err(XipError::LengthMismatch { expected, actual });
    }
    let last = buf[OFF_LAST];
    if last != LAST_ENTRY && last >= dnode {
        return Err(XipError::BadLast { last, dnode });
    }
    // Only the destination DAG's edges are read by the walk, so only they
    // are checked here; the source DAG is validated where it is used (an
    // XCMP reply parses it, the receiving host parses the whole packet).
    let count = dnode as usize;
    let dst = &buf[FIXED_LEN..FIXED_LEN + NODE_LEN * count];
    for (node, n) in dst.chunks_exact(NODE_LEN).enumerate() {
        let word = u32::from_be_bytes([n[24], n[25], n[26], n[27]]);
        if edges_out_of_range(word, count as u32) {
            // Rare: find the offending byte for the error message.
            let target = n[24..]
                .iter()
                .map(|e| (e & !EDGE_VISITED) as usize)
                .find(|&t| t != EDGE_UNUSED as usize && t >= count)
                .unwrap_or(EDGE_UNUSED as usize);
            let from = if node == count - 1 {
                NodeRef::Entry
            } else {
                NodeRef::Node(node)
            };
            return Err(XipError::Dag {
                side: Side::Destination,
                error: WireDagError::Structure(DagError::EdgeOutOfRange {
                    from,
                    target,
                    nodes: count,
                }),
            });
        }
    }
    Ok(Checked {
        buf,
        dnode: dnode as usize,
    })
}

impl<'a> Checked<'a> {
    /// The packet's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.buf
    }

    /// Destination node count.
    pub fn dnode(&self) -> usize {
        self.dnode
    }

    /// The wire index whose edge slots the walk reads next: node `last`,
    /// or the intent's slots (the entry's edges) when `last` is the entry.
    #[inline]
    pub fn current_node(&self) -> usize {
        match self.buf[OFF_LAST] {
            LAST_ENTRY => self.dnode - 1,
            i => i as usize,
        }
    }

    /// Whether the walk is still at the entry node.
    pub fn at_entry(&self) -> bool {
        self.buf[OFF_LAST] == LAST_ENTRY
    }

    /// Step 2: the target of edge `slot` of wire node `node`, or `None` if
    /// that slot is unused (or out of range).
    #[inline]
    pub fn edge(&self, node: usize, slot: usize) -> Option<usize> {
        if node >= self.dnode || slot >= MAX_EDGES {
            return None;
        }
        let e = self.buf[FIXED_LEN + node * NODE_LEN + NODE_LEN - MAX_EDGES + slot] & !EDGE_VISITED;
        (e != EDGE_UNUSED).then_some(e as usize)
    }

    /// Destination node `i`'s XID (`i` < dnode, as every edge target is).
    #[inline]
    pub fn dst_xid(&self, i: usize) -> Xid {
        let at = FIXED_LEN + i.min(self.dnode - 1) * NODE_LEN;
        let b = &self.buf[at..at + 4 + ID_LEN];
        let ty = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&b[4..]);
        Xid::new(Principal::from_u32(ty), id)
    }

    /// Step 4: a local hit on edge `slot` of `node` (its target is
    /// `target`): mark the edge visited and move `last` to the target.
    #[inline]
    pub fn advance(&mut self, node: usize, slot: usize, target: usize) {
        if node < self.dnode && slot < MAX_EDGES && target < self.dnode {
            self.buf[FIXED_LEN + node * NODE_LEN + NODE_LEN - MAX_EDGES + slot] |= EDGE_VISITED;
            self.buf[OFF_LAST] = target as u8;
        }
    }

    /// The visited bits of the destination DAG's edges, bit `4·node + slot`
    /// (what a cache records before and after a walk).
    pub fn visited_bits(&self) -> u128 {
        let mut bits = 0u128;
        for node in 0..self.dnode {
            let at = FIXED_LEN + node * NODE_LEN + NODE_LEN - MAX_EDGES;
            let b = &self.buf[at..at + MAX_EDGES];
            // Visited bit set, on a used edge (0xff is an unused slot).
            let word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let mut v = word & HIGH & !zero_bytes(word ^ u32::MAX);
            while v != 0 {
                let slot = v.trailing_zeros() as usize / 8;
                v &= v - 1;
                bits |= 1 << (node * MAX_EDGES + slot);
            }
        }
        bits
    }

    /// Replays a walk recorded earlier on an identical DAG: sets the
    /// visited bits in `bits` and moves `last` to `last` (ignored unless it
    /// is the entry value or a destination node).
    pub fn replay(&mut self, bits: u128, last: u8) {
        let mut rest = bits;
        while rest != 0 {
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let (node, slot) = (bit / MAX_EDGES, bit % MAX_EDGES);
            if node < self.dnode {
                self.buf[FIXED_LEN + node * NODE_LEN + NODE_LEN - MAX_EDGES + slot] |= EDGE_VISITED;
            }
        }
        if last == LAST_ENTRY || (last as usize) < self.dnode {
            self.buf[OFF_LAST] = last;
        }
    }

    /// The raw `last` byte.
    pub fn last_raw(&self) -> u8 {
        self.buf[OFF_LAST]
    }

    /// The destination node array (for cache keys).
    pub fn dst_wire(&self) -> &[u8] {
        &self.buf[FIXED_LEN..FIXED_LEN + self.dnode * NODE_LEN]
    }

    /// Step 5: whether the intent has been reached.
    #[inline]
    pub fn at_destination(&self) -> bool {
        self.buf[OFF_LAST] as usize == self.dnode - 1
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buf[OFF_HLIM]
    }

    /// Step 6: decrement the hop limit of a packet about to leave; `false`
    /// (and no change) if it is exhausted (≤ 1).
    #[inline]
    pub fn decrement_hop_limit(&mut self) -> bool {
        let h = self.buf[OFF_HLIM];
        if h <= 1 {
            return false;
        }
        self.buf[OFF_HLIM] = h - 1;
        true
    }
}

/// Walks the packet's destination DAG against `tables` and says what to do.
/// Local hits advance the packet in place (visited bit, `last`); a packet
/// that leaves has its hop limit decremented.
pub fn route(tables: &RouteTables, pkt: &mut Checked<'_>) -> Verdict {
    // Every local step follows a DAG edge, so a valid DAG needs at most
    // dnode steps; the bound keeps a malicious cycle from trapping us.
    for _ in 0..=pkt.dnode {
        let node = pkt.current_node();
        let mut advanced = false;
        for slot in 0..MAX_EDGES {
            let Some(target) = pkt.edge(node, slot) else {
                break;
            };
            let xid = pkt.dst_xid(target);
            let route = match tables.lookup(&xid) {
                Lookup::NoTable | Lookup::Miss => continue,
                Lookup::Hit(route) => route,
            };
            match route.action {
                Action::Fallback => continue,
                Action::Local => {
                    pkt.advance(node, slot, target);
                    if pkt.at_destination() {
                        return Verdict::Deliver { intent: true };
                    }
                    if xid.principal() == Principal::SID {
                        return Verdict::Deliver { intent: false };
                    }
                    advanced = true;
                    break;
                }
                Action::Forward(port) => {
                    if !pkt.decrement_hop_limit() {
                        return Verdict::TimeExceeded;
                    }
                    return Verdict::Forward {
                        port,
                        next_hop: route.next_hop,
                    };
                }
                Action::Broadcast => {
                    if !pkt.decrement_hop_limit() {
                        return Verdict::TimeExceeded;
                    }
                    return Verdict::Broadcast;
                }
                Action::Unreachable => return Verdict::Unreachable,
                Action::Discard => return Verdict::Discard,
            }
        }
        if !advanced {
            return Verdict::Unreachable;
        }
    }
    Verdict::Unreachable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::Dag;
    use crate::forward::table::Route;
    use crate::wire::xip::{NextHeader, Packet, XipRepr};

    const A: &str = "AD:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
    const A2: &str = "AD:0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e";
    const H: &str = "HID:0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";
    const S: &str = "SID:0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c";

    fn x(s: &str) -> Xid {
        s.parse().unwrap()
    }

    fn packet(dst: &str) -> Vec<u8> {
        XipRepr::new(
            Dag::parse(dst).unwrap(),
            Dag::parse("RE HID:0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d").unwrap(),
            NextHeader::Data,
            0,
        )
        .to_bytes(b"x")
        .unwrap()
    }

    fn repr(b: &[u8]) -> XipRepr {
        XipRepr::parse(&Packet::new_unchecked(b)).unwrap()
    }

    #[test]
    fn forwards_toward_a_remote_ad() {
        let mut t = RouteTables::with_principals(&[Principal::AD, Principal::HID, Principal::SID]);
        t.insert(x(A), Route::port(2)).unwrap();
        let mut b = packet(&format!("RE {A} {H} {S}"));
        let v = route(&t, &mut check(&mut b).unwrap());
        assert_eq!(
            v,
            Verdict::Forward {
                port: 2,
                next_hop: None
            }
        );
        let r = repr(&b);
        assert_eq!(r.hop_limit, 249);
        assert_eq!(r.last, crate::wire::xip::LastNode::Entry);
    }

    #[test]
    fn local_hits_advance_and_deliver() {
        let mut t = RouteTables::with_principals(&[Principal::AD, Principal::HID, Principal::SID]);
        t.insert(x(A), Route::LOCAL).unwrap();
        t.insert(x(H), Route::LOCAL).unwrap();
        t.insert(x(S), Route::LOCAL).unwrap();
        let mut b = packet(&format!("RE {A} {H} {S}"));
        assert_eq!(
            route(&t, &mut check(&mut b).unwrap()),
            Verdict::Deliver { intent: true }
        );
        let r = repr(&b);
        assert_eq!(r.last, crate::wire::xip::LastNode::Node(2));
        assert!(
            r.dst_visited.is_visited(2, 0)
                && r.dst_visited.is_visited(0, 0)
                && r.dst_visited.is_visited(1, 0)
        );
        assert_eq!(r.hop_limit, 250, "not decremented when delivered");
    }

    #[test]
    fn fallback_on_miss_and_on_unknown_principal() {
        let mut t = RouteTables::with_principals(&[Principal::AD, Principal::HID]);
        t.insert(x(A2), Route::port(7)).unwrap();
        // Edge 0 → SID (no SID table: fall back), edge 1 → A (miss), A2 hit.
        let mut b = packet(&format!("DAG 2 0 1 - {A} 2 - {A2} 2 - {S}"));
        assert_eq!(
            route(&t, &mut check(&mut b).unwrap()),
            Verdict::Forward {
                port: 7,
                next_hop: None
            }
        );
        // An unregistered principal type in the DAG also falls back.
        let weird = "0x7777:0101010101010101010101010101010101010101";
        let mut b = packet(&format!("DAG 1 0 - {weird} 1 - {A2}"));
        assert_eq!(
            route(&t, &mut check(&mut b).unwrap()),
            Verdict::Forward {
                port: 7,
                next_hop: None
            }
        );
    }

    #[test]
    fn unreachable_time_exceeded_and_discard() {
        let mut t = RouteTables::with_principals(&[Principal::AD]);
        let mut b = packet(&format!("RE {A} {S}"));
        assert_eq!(route(&t, &mut check(&mut b).unwrap()), Verdict::Unreachable);
        t.insert(x(A), Route::port(1)).unwrap();
        b[4] = 1;
        assert_eq!(
            route(&t, &mut check(&mut b).unwrap()),
            Verdict::TimeExceeded
        );
        assert_eq!(b[4], 1);
        t.insert(x(A), Route::special(Action::Discard)).unwrap();
        assert_eq!(route(&t, &mut check(&mut b).unwrap()), Verdict::Discard);
    }

    #[test]
    fn locally_bound_sid_is_delivered_before_the_intent() {
        let mut t = RouteTables::with_principals(&[Principal::SID, Principal::HID]);
        t.insert(x(S), Route::LOCAL).unwrap();
        let mut b = packet(&format!("RE {S} {H}"));
        assert_eq!(
            route(&t, &mut check(&mut b).unwrap()),
            Verdict::Deliver { intent: false }
        );
    }

    #[test]
    fn a_cycle_cannot_trap_the_walk() {
        // Hand-made bytes: entry → 0 → 1 → 0 (a cycle), all local.
        let mut b = packet(&format!("RE {A} {H} {S}"));
        b[8 + NODE_LEN + 24] = 0; // node 1 (H) → node 0 (A)
        let mut t = RouteTables::new();
        t.insert(x(A), Route::LOCAL).unwrap();
        t.insert(x(H), Route::LOCAL).unwrap();
        assert_eq!(route(&t, &mut check(&mut b).unwrap()), Verdict::Unreachable);
    }

    #[test]
    fn edge_range_check_agrees_with_bytes() {
        for count in 1..=20u32 {
            for b0 in 0..=255u8 {
                for b1 in [0u8, 1, 0x7f, 0xff, 0x80, 19, 20, 0x93] {
                    let word = u32::from_be_bytes([b0, b1, 0x7f, 0xff]);
                    let slow = [b0, b1, 0x7f, 0xff].iter().any(|e| {
                        let t = (e & 0x7f) as u32;
                        t != 0x7f && t >= count
                    });
                    assert_eq!(
                        edges_out_of_range(word, count),
                        slow,
                        "{word:#x} count {count}"
                    );
                }
            }
        }
    }

    #[test]
    fn check_refuses_bad_headers() {
        let mut b = packet(&format!("RE {A} {S}"));
        b[8 + 24] = 0x05;
        assert!(matches!(
            check(&mut b),
            Err(XipError::Dag {
                side: Side::Destination,
                ..
            })
        ));
        let mut b = packet(&format!("RE {A} {S}"));
        b.push(0);
        assert!(matches!(
            check(&mut b),
            Err(XipError::LengthMismatch { .. })
        ));
        let mut b = packet(&format!("RE {A} {S}"));
        b[7] = 9;
        assert!(matches!(check(&mut b), Err(XipError::BadLast { .. })));
        assert!(matches!(
            check(&mut [1, 2]),
            Err(XipError::Truncated { .. })
        ));
    }
}
