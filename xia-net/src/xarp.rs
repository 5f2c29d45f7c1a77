//! XARP: neighbour resolution on Ethernet, as xia-core does it — ARP
//! (RFC 826) with protocol type 0xC0DE and 24-byte protocol addresses (an
//! XID: 4-byte type, 20-byte ID), on EtherType 0x9990.
//!
//! A [`Resolver`] is sans-IO: hand it XIP packets with their next hop
//! ([`Resolver::send`]) and the frames heard on the interface
//! ([`Resolver::handle_frame`]); drain [`Resolver::poll_transmit`] for
//! frames to put on the wire, and call [`Resolver::handle_timeout`] when
//! [`Resolver::poll_timeout`] says. A packet whose next hop's MAC is not
//! known waits (bounded) while a request is broadcast, repeated each
//! second, three times; then it is dropped and counted.
//!
//! ```text
//! htype u16 (1) | ptype u16 (0xC0DE) | hlen u8 (6) | plen u8 (24) | oper u16 (1 request, 2 reply)
//! | sender MAC (6) | sender XID (24) | target MAC (6) | target XID (24)
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use xia_stack::time::Instant;
use xia_stack::xid::{Xid, XID_WIRE_LEN};

/// EtherType of XIP packets.
pub const ETHERTYPE_XIP: u16 = 0xC0DE;
/// EtherType of XARP.
pub const ETHERTYPE_XARP: u16 = 0x9990;
/// The broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// Bytes of an XARP message.
pub const XARP_LEN: usize = 8 + 2 * (6 + XID_WIRE_LEN);

/// How long a resolved neighbour is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Between repeated requests.
pub const RETRY: Duration = Duration::from_secs(1);
/// Requests before giving up on a neighbour.
pub const TRIES: u32 = 3;
/// Packets waiting per unresolved neighbour.
pub const QUEUE: usize = 64;
/// Neighbours being resolved at once.
pub const PENDING: usize = 256;
/// Neighbours remembered.
pub const CACHE: usize = 4096;

/// Request or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Who has this XID?
    Request,
    /// I have it, at this MAC.
    Reply,
}

/// An XARP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xarp {
    /// Request or reply.
    pub op: Op,
    /// The sender's MAC.
    pub sender_mac: [u8; 6],
    /// The sender's XID (its HID).
    pub sender: Xid,
    /// The target's MAC (zero in a request).
    pub target_mac: [u8; 6],
    /// The XID asked about.
    pub target: Xid,
}

/// Why bytes are not an XARP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XarpError {
    /// Shorter than the message.
    #[error("XARP message of {0} bytes is too short")]
    Truncated(usize),
    /// A header field not XARP's (hardware 1, protocol 0xC0DE, 6, 24).
    #[error("not XARP: {0}")]
    NotXarp(&'static str),
    /// An operation other than request or reply.
    #[error("XARP operation {0} is neither request (1) nor reply (2)")]
    Op(u16),
}

impl Xarp {
    /// Reads an XARP message (trailing Ethernet padding is ignored).
    pub fn parse(b: &[u8]) -> Result<Xarp, XarpError> {
        if b.len() < XARP_LEN {
            return Err(XarpError::Truncated(b.len()));
        }
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        if u16_at(0) != 1 {
            return Err(XarpError::NotXarp("hardware type is not Ethernet"));
        }
        if u16_at(2) != ETHERTYPE_XIP {
            return Err(XarpError::NotXarp("protocol type is not 0xC0DE"));
        }
        if b[4] != 6 || usize::from(b[5]) != XID_WIRE_LEN {
            return Err(XarpError::NotXarp("address lengths are not 6 and 24"));
        }
        let op = match u16_at(6) {
            1 => Op::Request,
            2 => Op::Reply,
            o => return Err(XarpError::Op(o)),
        };
        let mac = |i: usize| -> [u8; 6] { b[i..i + 6].try_into().expect("6 bytes") };
        let xid = |i: usize| Xid::from_wire(b[i..i + XID_WIRE_LEN].try_into().expect("24 bytes"));
        Ok(Xarp {
            op,
            sender_mac: mac(8),
            sender: xid(14),
            target_mac: mac(38),
            target: xid(44),
        })
    }

    /// The message's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(XARP_LEN);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ETHERTYPE_XIP.to_be_bytes());
        out.push(6);
        out.push(XID_WIRE_LEN as u8);
        let op: u16 = match self.op {
            Op::Request => 1,
            Op::Reply => 2,
        };
        out.extend_from_slice(&op.to_be_bytes());
        out.extend_from_slice(&self.sender_mac);
        out.extend_from_slice(&self.sender.to_wire());
        out.extend_from_slice(&self.target_mac);
        out.extend_from_slice(&self.target.to_wire());
        out
    }
}

/// An Ethernet frame: destination, source, EtherType, payload.
pub fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Counters of a resolver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XarpCounters {
    /// Requests sent.
    pub requests: u64,
    /// Replies sent.
    pub replies: u64,
    /// Packets dropped: their neighbour never answered, or too many waited.
    pub unresolved_drops: u64,
    /// Frames that were not XIP or XARP, or malformed.
    pub ignored: u64,
}

#[derive(Debug)]
struct Pending {
    packets: VecDeque<Vec<u8>>,
    next: Instant,
    tries: u32,
}

/// Neighbour resolution on one Ethernet interface.
#[derive(Debug)]
pub struct Resolver {
    mac: [u8; 6],
    xid: Xid,
    cache: BTreeMap<Xid, ([u8; 6], Instant)>,
    pending: BTreeMap<Xid, Pending>,
    out: VecDeque<Vec<u8>>,
    counters: XarpCounters,
}

impl Resolver {
    /// A resolver for the interface with `mac`, answering for `xid` (the
    /// node's HID).
    pub fn new(mac: [u8; 6], xid: Xid) -> Resolver {
        Resolver {
            mac,
            xid,
            cache: BTreeMap::new(),
            pending: BTreeMap::new(),
            out: VecDeque::new(),
            counters: XarpCounters::default(),
        }
    }

    /// Its counters.
    pub fn counters(&self) -> XarpCounters {
        self.counters
    }

    /// The MAC known for `xid`, if any.
    pub fn lookup(&self, xid: &Xid, now: Instant) -> Option<[u8; 6]> {
        self.cache
            .get(xid)
            .filter(|(_, exp)| *exp > now)
            .map(|(m, _)| *m)
    }

    /// Sends an XIP packet toward `next_hop` (broadcast when there is none
    /// or it is the broadcast HID).
    pub fn send(&mut self, now: Instant, next_hop: Option<Xid>, packet: Vec<u8>) {
        let Some(nh) = next_hop.filter(|x| *x != Xid::BROADCAST_HID) else {
            self.out
                .push_back(frame(BROADCAST, self.mac, ETHERTYPE_XIP, &packet));
            return;
        };
        if let Some(mac) = self.lookup(&nh, now) {
            self.out
                .push_back(frame(mac, self.mac, ETHERTYPE_XIP, &packet));
            return;
        }
        if !self.pending.contains_key(&nh) {
            if self.pending.len() >= PENDING {
                self.counters.unresolved_drops += 1;
                return;
            }
            self.pending.insert(
                nh,
                Pending {
                    packets: VecDeque::new(),
                    next: now + RETRY,
                    tries: 1,
                },
            );
            self.request(nh);
        }
        let p = self.pending.get_mut(&nh).expect("inserted");
        if p.packets.len() >= QUEUE {
            self.counters.unresolved_drops += 1;
            return;
        }
        p.packets.push_back(packet);
    }

    fn request(&mut self, target: Xid) {
        self.counters.requests += 1;
        let msg = Xarp {
            op: Op::Request,
            sender_mac: self.mac,
            sender: self.xid,
            target_mac: [0; 6],
            target,
        };
        self.out
            .push_back(frame(BROADCAST, self.mac, ETHERTYPE_XARP, &msg.to_bytes()));
    }

    /// Handles a frame heard on the interface; returns the XIP packet it
    /// carried, if it carried one for us.
    pub fn handle_frame(&mut self, now: Instant, f: &[u8]) -> Option<Vec<u8>> {
        if f.len() < 14 {
            self.counters.ignored += 1;
            return None;
        }
        let dst: [u8; 6] = f[0..6].try_into().expect("6 bytes");
        if dst != self.mac && dst != BROADCAST {
            return None;
        }
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        let payload = &f[14..];
        match ethertype {
            ETHERTYPE_XIP => Some(payload.to_vec()),
            ETHERTYPE_XARP => {
                match Xarp::parse(payload) {
                    Ok(m) => self.on_xarp(now, m),
                    Err(_) => self.counters.ignored += 1,
                }
                None
            }
            _ => {
                self.counters.ignored += 1;
                None
            }
        }
    }

    fn on_xarp(&mut self, now: Instant, m: Xarp) {
        // Learn the sender either way (RFC 826's merge rule), then answer
        // a request for us.
        if m.sender != self.xid {
            if self.cache.len() >= CACHE && !self.cache.contains_key(&m.sender) {
                // Forget the entry that expires first.
                if let Some(old) = self
                    .cache
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(x, _)| *x)
                {
                    self.cache.remove(&old);
                }
            }
            self.cache.insert(m.sender, (m.sender_mac, now + CACHE_TTL));
            if let Some(p) = self.pending.remove(&m.sender) {
                for packet in p.packets {
                    self.out
                        .push_back(frame(m.sender_mac, self.mac, ETHERTYPE_XIP, &packet));
                }
            }
        }
        if m.op == Op::Request && m.target == self.xid {
            self.counters.replies += 1;
            let reply = Xarp {
                op: Op::Reply,
                sender_mac: self.mac,
                sender: self.xid,
                target_mac: m.sender_mac,
                target: m.sender,
            };
            self.out.push_back(frame(
                m.sender_mac,
                self.mac,
                ETHERTYPE_XARP,
                &reply.to_bytes(),
            ));
        }
    }

    /// The next frame to put on the wire.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// When a request is due again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next).min()
    }

    /// Repeats requests that are due, or gives up on their neighbours.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Xid> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(x, _)| *x)
            .collect();
        for x in due {
            let p = self.pending.get_mut(&x).expect("listed");
            if p.tries >= TRIES {
                let p = self.pending.remove(&x).expect("listed");
                self.counters.unresolved_drops += p.packets.len() as u64;
                continue;
            }
            p.tries += 1;
            p.next = now + RETRY;
            self.request(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xia_stack::xid::Principal;

    fn hid(b: u8) -> Xid {
        Xid::new(Principal::HID, [b; 20])
    }

    #[test]
    fn message_bytes_round_trip_and_errors() {
        let m = Xarp {
            op: Op::Request,
            sender_mac: [2, 0, 0, 0, 0, 1],
            sender: hid(1),
            target_mac: [0; 6],
            target: hid(2),
        };
        let b = m.to_bytes();
        assert_eq!(b.len(), XARP_LEN);
        assert_eq!(&b[..8], &[0, 1, 0xc0, 0xde, 6, 24, 0, 1]);
        assert_eq!(Xarp::parse(&b), Ok(m));
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(Xarp::parse(&padded), Ok(m));
        assert_eq!(Xarp::parse(&b[..20]), Err(XarpError::Truncated(20)));
        let mut bad = b.clone();
        bad[7] = 9;
        assert_eq!(Xarp::parse(&bad), Err(XarpError::Op(9)));
        bad[3] = 0;
        assert!(matches!(Xarp::parse(&bad), Err(XarpError::NotXarp(_))));
    }

    #[test]
    fn two_resolvers_find_each_other_and_deliver_queued_packets() {
        let (ma, mb) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
        let mut a = Resolver::new(ma, hid(1));
        let mut b = Resolver::new(mb, hid(2));
        let now = Instant::ZERO;
        a.send(now, Some(hid(2)), b"first".to_vec());
        a.send(now, Some(hid(2)), b"second".to_vec());
        // One broadcast request, the packets wait.
        let req = a.poll_transmit().unwrap();
        assert_eq!(&req[..6], &BROADCAST);
        assert!(a.poll_transmit().is_none());
        assert_eq!(b.handle_frame(now, &req), None);
        let reply = b.poll_transmit().unwrap();
        assert_eq!(&reply[..6], &ma);
        assert_eq!(b.lookup(&hid(1), now), Some(ma), "learnt from the request");
        a.handle_frame(now, &reply);
        let f1 = a.poll_transmit().unwrap();
        let f2 = a.poll_transmit().unwrap();
        assert_eq!(b.handle_frame(now, &f1), Some(b"first".to_vec()));
        assert_eq!(b.handle_frame(now, &f2), Some(b"second".to_vec()));
        // Now known: straight out.
        a.send(now, Some(hid(2)), b"third".to_vec());
        assert_eq!(&a.poll_transmit().unwrap()[..6], &mb);
        // Frames for another MAC are not ours.
        let other = frame([2, 9, 9, 9, 9, 9], ma, ETHERTYPE_XIP, b"x");
        assert_eq!(b.handle_frame(now, &other), None);
    }

    #[test]
    fn an_absent_neighbour_is_asked_three_times_then_given_up() {
        let mut a = Resolver::new([2, 0, 0, 0, 0, 1], hid(1));
        a.send(Instant::ZERO, Some(hid(7)), vec![1]);
        while a.poll_transmit().is_some() {}
        let mut t = Instant::ZERO;
        while let Some(due) = a.poll_timeout() {
            t = due;
            a.handle_timeout(t);
            while a.poll_transmit().is_some() {}
        }
        assert_eq!(a.counters().requests, 3);
        assert_eq!(a.counters().unresolved_drops, 1);
        assert_eq!(t, Instant::from_secs(3));
        // Broadcasts need no resolution.
        a.send(t, None, vec![2]);
        assert_eq!(&a.poll_transmit().unwrap()[..6], &BROADCAST);
    }
}
