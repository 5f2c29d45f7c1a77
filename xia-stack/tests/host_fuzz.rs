//! Hostile input to a host with every kind of socket open never panics:
//! random bytes, and valid packets of each next-header type with bytes
//! changed.

use proptest::prelude::*;
use xia_stack::dag::Dag;
use xia_stack::host::{Host, HostConfig};
use xia_stack::time::Instant;
use xia_stack::wire::xip::{NextHeader, XipRepr};
use xia_stack::wire::xstream::{Flags, XstreamRepr};
use xia_stack::xid::{Principal, Xid};
use xia_stack::Identity;

fn host() -> (Host, Dag) {
    let id = Identity::from_secret_bytes(Principal::HID, &[4; 32]);
    let ad = Xid::new(Principal::AD, [1; 20]);
    let mut h = Host::new(HostConfig::new(
        id,
        ad,
        Some(Xid::new(Principal::HID, [2; 20])),
    ));
    let sid = Xid::new(Principal::SID, [3; 20]);
    h.bind(Some(sid)).unwrap();
    h.listen(Some(sid)).unwrap();
    let peer = Dag::path(&[
        Xid::new(Principal::AD, [9; 20]),
        Xid::new(Principal::HID, [8; 20]),
    ])
    .unwrap();
    let _ = h.connect(
        &peer.append_xid(Xid::new(Principal::SID, [7; 20])).unwrap(),
        Instant::ZERO,
    );
    let me = h.dag().append_xid(sid).unwrap();
    (h, me)
}

fn valid(nxt: u8, me: &Dag) -> Vec<u8> {
    let src = Dag::path(&[
        Xid::new(Principal::AD, [9; 20]),
        Xid::new(Principal::HID, [8; 20]),
        Xid::new(Principal::SID, [7; 20]),
    ])
    .unwrap();
    let payload = match nxt {
        3 => XstreamRepr {
            next_header: 0,
            flags: Flags::SYN,
            seq: 1,
            ack: 0,
            window: 65535,
            options: vec![],
            payload: &[],
        }
        .to_bytes()
        .unwrap(),
        _ => vec![0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
    };
    XipRepr::new(me.clone(), src, NextHeader::from(nxt), 0)
        .to_bytes(&payload)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (mut h, _) = host();
        h.handle_packet(Instant::from_millis(5), 0, bytes);
        while h.poll_transmit().is_some() {}
        while h.poll_event().is_some() {}
        h.handle_timeout(Instant::from_secs(3));
    }

    #[test]
    fn mutated_packets(nxt in 0u8..5, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6)) {
        let (mut h, me) = host();
        let mut p = valid(nxt, &me);
        for (at, v) in flips {
            let len = p.len();
            p[at % len] = v;
        }
        h.handle_packet(Instant::from_millis(5), 0, p);
        while h.poll_transmit().is_some() {}
        while h.poll_event().is_some() {}
        h.handle_timeout(Instant::from_secs(3));
        while h.poll_transmit().is_some() {}
    }
}
