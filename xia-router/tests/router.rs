//! The router node on hand-built packets: forwarding, local delivery, XCMP,
//! broadcast learning, the fast path, and hostile input.

use proptest::prelude::*;
use xia_router::forward::{Action, Route};
use xia_router::{Drop, Router, RouterConfig};
use xia_stack::dag::Dag;
use xia_stack::time::Instant;
use xia_stack::wire::xcmp::{Packet as XcmpPacket, XcmpRepr};
use xia_stack::wire::xip::{NextHeader, Packet, XipRepr};
use xia_stack::xid::{Principal, Xid};

fn xid(p: Principal, b: u8) -> Xid {
    Xid::new(p, [b; 20])
}

const NOW: Instant = Instant::ZERO;

fn router(fast: bool) -> Router {
    let mut cfg = RouterConfig::new(xid(Principal::AD, 1), xid(Principal::HID, 1), 4);
    cfg.fast_path = fast;
    let mut r = Router::new(cfg);
    let t = r.tables_mut();
    t.insert(xid(Principal::AD, 2), Route::port(1)).unwrap();
    t.insert(xid(Principal::AD, 3), Route::port(2)).unwrap();
    t.insert(xid(Principal::HID, 10), Route::port(3)).unwrap();
    r
}

fn packet(dst: Dag, src: Dag, nxt: NextHeader, payload: &[u8]) -> Vec<u8> {
    XipRepr::new(dst, src, nxt, 0).to_bytes(payload).unwrap()
}

fn host_dag(ad: u8, hid: u8) -> Dag {
    Dag::path(&[xid(Principal::AD, ad), xid(Principal::HID, hid)]).unwrap()
}

fn parse(b: &[u8]) -> XipRepr {
    XipRepr::parse(&Packet::new_unchecked(b)).unwrap()
}

#[test]
fn forwards_and_counts() {
    let mut r = router(false);
    let p = packet(host_dag(2, 20), host_dag(3, 30), NextHeader::Data, b"x");
    r.handle_packet(NOW, 2, p);
    let t = r.poll_transmit().unwrap();
    assert_eq!(t.port, 1);
    assert_eq!(parse(&t.packet).hop_limit, 249);
    assert_eq!(r.counters().forwarded, 1);
    assert!(r.poll_transmit().is_none());
}

#[test]
fn local_ad_then_host_route() {
    let mut r = router(false);
    let p = packet(host_dag(1, 10), host_dag(2, 20), NextHeader::Data, b"x");
    r.handle_packet(NOW, 1, p);
    let t = r.poll_transmit().unwrap();
    assert_eq!(t.port, 3);
    let repr = parse(&t.packet);
    assert_eq!(repr.last, xia_stack::wire::xip::LastNode::Node(0));
}

#[test]
fn unreachable_sends_xcmp_back_to_the_source() {
    let mut r = router(false);
    let p = packet(
        host_dag(9, 90),
        host_dag(2, 20),
        NextHeader::Data,
        b"payload!",
    );
    r.handle_packet(NOW, 1, p);
    assert_eq!(r.counters().dropped(Drop::Unreachable), 1);
    let t = r.poll_transmit().expect("an XCMP error");
    assert_eq!(t.port, 1, "back toward AD 2");
    let repr = parse(&t.packet);
    assert_eq!(repr.next_header, NextHeader::Xcmp);
    let payload = &t.packet[repr.header_len()..];
    assert!(matches!(
        XcmpRepr::parse(&XcmpPacket::new_unchecked(payload)).unwrap(),
        XcmpRepr::Unreachable { .. }
    ));
    // An XCMP error that is itself unreachable gets no reply.
    let mut other = router(false);
    let lost = packet(host_dag(9, 90), host_dag(2, 20), NextHeader::Xcmp, payload);
    other.handle_packet(NOW, 1, lost);
    assert!(other.poll_transmit().is_none());
    assert_eq!(other.counters().xcmp_errors_sent, 0);
}

#[test]
fn hop_limit_expiry_gives_time_exceeded() {
    let mut r = router(false);
    let mut p = packet(host_dag(2, 20), host_dag(3, 30), NextHeader::Data, b"x");
    p[4] = 1;
    r.handle_packet(NOW, 2, p);
    assert_eq!(r.counters().dropped(Drop::HopLimit), 1);
    let t = r.poll_transmit().unwrap();
    let repr = parse(&t.packet);
    let x = XcmpRepr::parse(&XcmpPacket::new_unchecked(&t.packet[repr.header_len()..])).unwrap();
    assert!(matches!(x, XcmpRepr::TimeExceeded { .. }));
    assert_eq!(t.port, 2);
}

#[test]
fn answers_echo_to_itself() {
    let mut r = router(false);
    let ping = XcmpRepr::EchoRequest {
        ident: 1,
        seq_no: 9,
        data: b"hi",
    }
    .to_bytes();
    let p = packet(host_dag(1, 1), host_dag(2, 20), NextHeader::Xcmp, &ping);
    r.handle_packet(NOW, 1, p);
    let t = r.poll_transmit().unwrap();
    assert_eq!(t.port, 1);
    assert_eq!(r.counters().echo_replies, 1);
}

#[test]
fn broadcast_copies_and_learns_the_neighbour() {
    let mut r = router(false);
    let src = host_dag(1, 77);
    let p = packet(
        Dag::from_xid(Xid::BROADCAST_HID),
        src,
        NextHeader::Data,
        b"hello",
    );
    r.handle_packet(NOW, 2, p);
    let ports: Vec<_> = std::iter::from_fn(|| r.poll_transmit())
        .map(|t| t.port)
        .collect();
    assert_eq!(ports, [0, 1, 3]);
    assert_eq!(r.counters().neighbours_learned, 1);
    // Now unicast to HID 77 goes out port 2.
    r.handle_packet(
        NOW,
        0,
        packet(host_dag(1, 77), host_dag(2, 20), NextHeader::Data, b""),
    );
    assert_eq!(r.poll_transmit().unwrap().port, 2);
}

#[test]
fn learnt_neighbours_expire_unless_heard_again() {
    let mut r = router(false);
    let bcast = || {
        packet(
            Dag::from_xid(Xid::BROADCAST_HID),
            host_dag(1, 77),
            NextHeader::Data,
            b"hi",
        )
    };
    r.handle_packet(Instant::from_secs(10), 2, bcast());
    while r.poll_transmit().is_some() {}
    assert_eq!(r.poll_timeout(), Some(Instant::from_secs(310)));
    // Heard again at 200 s: the expiry moves.
    r.handle_packet(Instant::from_secs(200), 2, bcast());
    while r.poll_transmit().is_some() {}
    assert_eq!(r.poll_timeout(), Some(Instant::from_secs(500)));
    r.handle_timeout(Instant::from_secs(310));
    assert!(r
        .tables()
        .table(Principal::HID)
        .unwrap()
        .get(xid(Principal::HID, 77).id())
        .is_some());
    r.handle_timeout(Instant::from_secs(500));
    assert!(r
        .tables()
        .table(Principal::HID)
        .unwrap()
        .get(xid(Principal::HID, 77).id())
        .is_none());
    assert_eq!(r.counters().neighbours_expired, 1);
    assert_eq!(r.poll_timeout(), None);
    // A configured route is never replaced or expired by learning.
    r.tables_mut()
        .insert(xid(Principal::HID, 77), Route::port(0))
        .unwrap();
    r.handle_packet(Instant::from_secs(600), 2, bcast());
    while r.poll_transmit().is_some() {}
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(
        r.tables()
            .table(Principal::HID)
            .unwrap()
            .get(xid(Principal::HID, 77).id()),
        Some(&Route::port(0))
    );
}

#[test]
fn xhcp_beacons_go_out_every_port_each_interval() {
    let mut cfg = RouterConfig::new(xid(Principal::AD, 1), xid(Principal::HID, 1), 3);
    cfg.xhcp_interval = Some(std::time::Duration::from_secs(1));
    let mut r = Router::new(cfg);
    assert_eq!(r.poll_timeout(), Some(Instant::ZERO));
    r.handle_timeout(Instant::from_millis(100));
    let sent: Vec<_> = std::iter::from_fn(|| r.poll_transmit()).collect();
    assert_eq!(sent.iter().map(|t| t.port).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(r.poll_timeout(), Some(Instant::from_millis(1100)));
    r.handle_timeout(Instant::from_millis(500));
    assert!(r.poll_transmit().is_none(), "not due yet");
    // Another router hears it and does not flood it on.
    let mut other = router(false);
    other.handle_packet(Instant::ZERO, 0, sent[0].packet.clone());
    assert!(other.poll_transmit().is_none());
    assert_eq!(other.counters().beacons_heard, 1);
    // A host hearing it learns the router's AD.
    let id = xia_stack::Identity::from_secret_bytes(Principal::HID, &[3; 32]);
    let mut h = xia_stack::host::Host::new(xia_stack::host::HostConfig::new(
        id,
        xid(Principal::AD, 9),
        None,
    ));
    h.handle_packet(Instant::from_millis(100), 0, sent[0].packet.clone());
    assert!(matches!(
        h.poll_event(),
        Some(xia_stack::host::HostEvent::NetworkChanged { new_ad, .. }) if new_ad == xid(Principal::AD, 1)
    ));
}

#[test]
fn fast_path_hits_and_sees_table_changes() {
    let mut r = router(true);
    // Three fallbacks: IP 5 (no route), CID 6 (no route), AD 9 (a fallback
    // route), then the intent SID 8.
    let dst = Dag::parse(&format!(
        "DAG 3 0 1 2 - {} 3 - {} 3 - {} 3 - {}",
        xid(Principal::IP, 5),
        xid(Principal::CID, 6),
        xid(Principal::AD, 9),
        xid(Principal::SID, 8)
    ))
    .unwrap();
    r.tables_mut()
        .insert(xid(Principal::AD, 9), Route::special(Action::Fallback))
        .unwrap();
    r.tables_mut()
        .insert(xid(Principal::SID, 8), Route::port(1))
        .unwrap();
    for _ in 0..3 {
        r.handle_packet(
            NOW,
            0,
            packet(dst.clone(), host_dag(3, 30), NextHeader::Data, b""),
        );
        assert_eq!(r.poll_transmit().unwrap().port, 1);
    }
    assert_eq!(r.fast_path_stats(), Some((2, 1)));
    r.tables_mut()
        .insert(xid(Principal::SID, 8), Route::port(2))
        .unwrap();
    r.handle_packet(NOW, 0, packet(dst, host_dag(3, 30), NextHeader::Data, b""));
    assert_eq!(r.poll_transmit().unwrap().port, 2, "stale entry not used");
}

#[test]
fn malformed_packets_are_counted() {
    let mut r = router(true);
    r.handle_packet(NOW, 0, vec![1, 2, 3]);
    r.handle_packet(
        NOW,
        9,
        packet(host_dag(2, 20), host_dag(3, 30), NextHeader::Data, b""),
    );
    assert_eq!(r.counters().dropped(Drop::Malformed), 1);
    assert_eq!(r.counters().dropped(Drop::NoSuchPort), 1);
    assert!(r.poll_transmit().is_none());
}

fn arb_dst() -> impl Strategy<Value = Dag> {
    let node = (
        prop_oneof![
            Just(Principal::AD),
            Just(Principal::HID),
            Just(Principal::SID),
            Just(Principal::IP),
            Just(Principal::from_u32(0x99))
        ],
        0u8..12,
    )
        .prop_map(|(p, b)| xid(p, b));
    proptest::collection::vec(node, 1..6)
        .prop_flat_map(|xids| {
            let n = xids.len();
            let extra = proptest::collection::vec((0..n, 0..n), 0..6);
            (Just(xids), extra)
        })
        .prop_map(|(xids, extra)| {
            use xia_stack::dag::{Edges, Node};
            let n = xids.len();
            let mut nodes: Vec<Node> = xids
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    Node::new(
                        x,
                        if i + 1 < n {
                            Edges::from_slice(&[(i + 1) as u8]).unwrap()
                        } else {
                            Edges::new()
                        },
                    )
                })
                .collect();
            let mut entry = Edges::from_slice(&[0]).unwrap();
            for (a, b) in extra {
                let (lo, hi) = (a.min(b), a.max(b));
                if hi == lo {
                    if !entry.as_slice().contains(&(hi as u8)) {
                        let _ = entry.push(hi as u8);
                    }
                } else if hi < n && lo + 1 < n && !nodes[lo].edges.as_slice().contains(&(hi as u8))
                {
                    let _ = nodes[lo].edges.push(hi as u8);
                }
            }
            Dag::new(entry, nodes).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), port in 0u16..5) {
        let mut r = router(true);
        r.handle_packet(NOW, port, bytes);
        while r.poll_transmit().is_some() {}
        prop_assert_eq!(r.counters().received, 1);
    }

    #[test]
    fn corrupted_packets_never_panic(dst in arb_dst(), flips in proptest::collection::vec((0usize..300, any::<u8>()), 1..8)) {
        let mut p = packet(dst, host_dag(3, 30), NextHeader::Xcmp, b"12345678");
        for (at, v) in flips {
            let len = p.len();
            p[at % len] = v;
        }
        let mut r = router(true);
        r.handle_packet(NOW, 0, p);
        while r.poll_transmit().is_some() {}
    }

    #[test]
    fn fast_path_agrees_with_the_walk(dst in arb_dst(), hlim in 1u8..4) {
        let mut slow = router(false);
        let mut fast = router(true);
        for _ in 0..2 {
            let mut p = packet(dst.clone(), host_dag(3, 30), NextHeader::Data, b"abc");
            p[4] = hlim;
            slow.handle_packet(NOW, 0, p.clone());
            fast.handle_packet(NOW, 0, p);
            loop {
                let (a, b) = (slow.poll_transmit(), fast.poll_transmit());
                prop_assert_eq!(&a, &b);
                if a.is_none() { break; }
            }
        }
        prop_assert_eq!(slow.counters(), fast.counters());
    }
}

#[test]
fn the_content_cache_keeps_only_chunks_that_match_their_cid() {
    use xia_router::cache::ContentCache;
    use xia_stack::content::pieces;
    use xia_stack::wire::xdgram::XdgramRepr;
    let mut tables = xia_router::forward::RouteTables::new();
    let mut cache = ContentCache::new(1 << 20);
    let real = vec![7u8; 3000];
    let cid = Xid::cid_of(&real);
    let forged = vec![8u8; 3000];
    let to_client = host_dag(2, 20).append_xid(xid(Principal::SID, 5)).unwrap();
    let from = host_dag(3, 30).append_xid(cid).unwrap();
    let as_packets = |data: &[u8]| -> Vec<Vec<u8>> {
        pieces(data, 0, u32::MAX)
            .into_iter()
            .map(|p| {
                let seg = XdgramRepr {
                    next_header: NextHeader::Data,
                    payload: &p,
                }
                .to_bytes();
                packet(to_client.clone(), from.clone(), NextHeader::Xdgram, &seg)
            })
            .collect()
    };
    let completed: Vec<bool> = as_packets(&forged)
        .iter()
        .map(|p| cache.observe(p, &mut tables))
        .collect();
    assert_eq!(
        completed,
        [false, false, false],
        "a forged chunk is not kept"
    );
    assert_eq!(cache.usage(), (0, 0));
    let completed: Vec<bool> = as_packets(&real)
        .iter()
        .map(|p| cache.observe(p, &mut tables))
        .collect();
    assert_eq!(completed, [false, false, true]);
    assert_eq!(cache.usage(), (1, 3000));
    assert_eq!(
        tables.lookup(&cid),
        xia_router::forward::Lookup::Hit(Route::LOCAL)
    );
}

#[test]
fn a_host_that_joins_registers_with_its_gateway() {
    use xia_stack::host::{Host, HostConfig, HostEvent};
    let mut cfg = RouterConfig::new(xid(Principal::AD, 1), xid(Principal::HID, 1), 2);
    cfg.xhcp_interval = Some(std::time::Duration::from_secs(1));
    let mut r = Router::new(cfg);
    r.handle_timeout(Instant::ZERO);
    let beacon = r.poll_transmit().unwrap();
    while r.poll_transmit().is_some() {}
    // A host configured for another AD hears the beacon on the router's port 0.
    let id = xia_stack::Identity::from_secret_bytes(Principal::HID, &[3; 32]);
    let hid = id.xid();
    let mut h = Host::new(HostConfig::new(id, xid(Principal::AD, 9), None));
    h.handle_packet(Instant::ZERO, 0, beacon.packet);
    assert!(matches!(
        h.poll_event(),
        Some(HostEvent::NetworkChanged { .. })
    ));
    let reg = h.poll_transmit().expect("a registration");
    assert_eq!(reg.next_hop, Some(xid(Principal::HID, 1)));
    r.handle_packet(Instant::ZERO, 0, reg.packet.clone());
    assert_eq!(r.counters().hosts_registered, 1);
    assert_eq!(
        r.tables()
            .table(Principal::HID)
            .unwrap()
            .get(hid.id())
            .map(|r| r.action),
        Some(Action::Forward(0))
    );
    // A registration replayed into another AD's router is refused.
    let mut other = Router::new(RouterConfig::new(
        xid(Principal::AD, 2),
        xid(Principal::HID, 2),
        2,
    ));
    let mut bytes = reg.packet;
    // Point it at the other router (its AD and HID) without re-signing.
    let dst = Dag::path(&[
        xid(Principal::AD, 2),
        xid(Principal::HID, 2),
        xia_stack::xhcp::XHCP_SID,
    ])
    .unwrap();
    let repr = XipRepr::parse(&Packet::new_unchecked(&bytes[..])).unwrap();
    let payload = bytes[repr.header_len()..].to_vec();
    bytes = XipRepr { dst, ..repr }.to_bytes(&payload).unwrap();
    other.handle_packet(Instant::ZERO, 0, bytes);
    assert_eq!(other.counters().hosts_registered, 0);
    assert_eq!(other.counters().dropped(Drop::Malformed), 1);
}
