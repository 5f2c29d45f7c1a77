//! Building XCMP replies, with the rules every node follows: an error goes
//! back to the offending packet's source DAG, quotes its header and first 8
//! payload bytes, and is never sent about an XCMP error or a broadcast.

use crate::dag::Dag;
use crate::wire::xcmp::{quote, Packet as XcmpPacket, Unreachable, XcmpRepr};
use crate::wire::xip::{NextHeader, Packet, XipRepr};
use crate::xid::Xid;

/// Which error to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ErrorKind {
    /// Destination unreachable with this code.
    Unreachable(Unreachable),
    /// Hop limit exhausted in transit.
    TimeExceeded,
    /// Use this DAG instead.
    Redirect(Dag),
}

/// The unreachable code for a packet whose walk got stuck: it names what
/// the highest-priority edge from where the packet stands pointed at — the
/// network (an AD), the host (a HID), or the intent when that was next.
pub fn unreachable_reason(pkt: &crate::forward::walk::Checked<'_>) -> Unreachable {
    let node = pkt.current_node();
    let Some(target) = pkt.edge(node, 0) else {
        return Unreachable::Host;
    };
    if target == pkt.dnode() - 1 {
        return Unreachable::Intent;
    }
    match pkt.dst_xid(target).principal() {
        crate::xid::Principal::AD => Unreachable::Network,
        _ => Unreachable::Host,
    }
}

/// Whether `packet` is one no error may be sent about: an XCMP error
/// message itself, or a packet to the broadcast HID (as its intent, or to
/// a service behind it such as XHCP or routing). Unparseable bytes count
/// as such (there is no source to answer).
pub fn is_unanswerable(packet: &[u8]) -> bool {
    let p = Packet::new_unchecked(packet);
    let Ok(repr) = XipRepr::parse_header(&p) else {
        return true;
    };
    if repr.dst.nodes().iter().any(|n| n.xid == Xid::BROADCAST_HID) {
        return true;
    }
    if repr.next_header == NextHeader::Xcmp {
        let payload = &packet[repr.header_len().min(packet.len())..];
        return match XcmpRepr::parse(&XcmpPacket::new_unchecked(payload)) {
            Ok(x) => x.is_error(),
            // A malformed XCMP message is treated as an error message.
            Err(_) => true,
        };
    }
    false
}

/// An XCMP error about `offending`, from `own` (this node's DAG), addressed
/// to the offending packet's source; `None` when the rules forbid one.
pub fn error_reply(offending: &[u8], kind: ErrorKind, own: &Dag) -> Option<Vec<u8>> {
    if is_unanswerable(offending) {
        return None;
    }
    let repr = XipRepr::parse_header(&Packet::new_unchecked(offending)).ok()?;
    let quoted = quote(offending);
    let msg = match kind {
        ErrorKind::Unreachable(reason) => XcmpRepr::Unreachable { reason, quoted },
        ErrorKind::TimeExceeded => XcmpRepr::TimeExceeded { code: 0, quoted },
        ErrorKind::Redirect(new_dst) => XcmpRepr::Redirect {
            code: 1,
            new_dst,
            quoted,
        },
    };
    XipRepr::new(repr.src, own.clone(), NextHeader::Xcmp, 0)
        .to_bytes(&msg.to_bytes())
        .ok()
}

/// The echo reply to an XCMP echo request delivered here, from `own`;
/// `None` if `request` is not a valid echo request.
pub fn echo_reply(request: &[u8], own: &Dag) -> Option<Vec<u8>> {
    let p = Packet::new_unchecked(request);
    let repr = XipRepr::parse(&p).ok()?;
    if repr.next_header != NextHeader::Xcmp {
        return None;
    }
    let XcmpRepr::EchoRequest {
        ident,
        seq_no,
        data,
    } = XcmpRepr::parse(&XcmpPacket::new_unchecked(p.payload())).ok()?
    else {
        return None;
    };
    let reply = XcmpRepr::EchoReply {
        ident,
        seq_no,
        data,
    };
    XipRepr::new(repr.src, own.clone(), NextHeader::Xcmp, 0)
        .to_bytes(&reply.to_bytes())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(s: &str) -> Dag {
        Dag::parse(s).unwrap()
    }

    const ME: &str = "RE AD:0101010101010101010101010101010101010101 HID:0202020202020202020202020202020202020202";
    const PEER: &str = "RE AD:0303030303030303030303030303030303030303 HID:0404040404040404040404040404040404040404";

    #[test]
    fn errors_go_back_to_the_source_and_never_about_errors() {
        let data = XipRepr::new(dag(ME), dag(PEER), NextHeader::Data, 0)
            .to_bytes(b"payload!!")
            .unwrap();
        let err = error_reply(&data, ErrorKind::Unreachable(Unreachable::Host), &dag(ME)).unwrap();
        let r = XipRepr::parse(&Packet::new_unchecked(&err[..])).unwrap();
        assert_eq!(r.dst, dag(PEER));
        assert_eq!(r.next_header, NextHeader::Xcmp);
        assert!(is_unanswerable(&err));
        assert_eq!(error_reply(&err, ErrorKind::TimeExceeded, &dag(ME)), None);
        let bcast = XipRepr::new(
            Dag::from_xid(Xid::BROADCAST_HID),
            dag(PEER),
            NextHeader::Data,
            0,
        )
        .to_bytes(b"")
        .unwrap();
        assert_eq!(error_reply(&bcast, ErrorKind::TimeExceeded, &dag(ME)), None);
        assert_eq!(
            error_reply(b"junk", ErrorKind::TimeExceeded, &dag(ME)),
            None
        );
    }

    #[test]
    fn echo_is_answered_and_echo_is_not_an_error() {
        let ping = XcmpRepr::EchoRequest {
            ident: 7,
            seq_no: 3,
            data: b"abc",
        }
        .to_bytes();
        let req = XipRepr::new(dag(ME), dag(PEER), NextHeader::Xcmp, 0)
            .to_bytes(&ping)
            .unwrap();
        assert!(!is_unanswerable(&req));
        let rep = echo_reply(&req, &dag(ME)).unwrap();
        let p = Packet::new_unchecked(&rep[..]);
        assert_eq!(
            XcmpRepr::parse(&XcmpPacket::new_unchecked(p.payload())).unwrap(),
            XcmpRepr::EchoReply {
                ident: 7,
                seq_no: 3,
                data: b"abc"
            }
        );
        assert_eq!(echo_reply(&rep, &dag(ME)), None);
    }
}
