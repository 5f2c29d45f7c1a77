use super::*;
use crate::content::ContentError;
use crate::forward::Transmit;
use crate::host::{HostConfig, NetError};
use crate::identity::Identity;
use crate::naming::NAME_SERVER_SID;
use crate::stream::StreamEvent;
use crate::time::Instant;

const T0: Instant = Instant::ZERO;
use crate::wire::xcmp::Unreachable;
use crate::wire::xip::{NextHeader, Packet, XipRepr};
use crate::xid::{Principal, Xid};

const NOW: Instant = Instant::ZERO;

fn host(seed: u8) -> Host {
    let id = Identity::from_secret_bytes(Principal::HID, &[seed; 32]);
    let mut cfg = HostConfig::new(
        id,
        Xid::new(Principal::AD, [7; 20]),
        Some(Xid::new(Principal::HID, [0xee; 20])),
    );
    cfg.seed = seed as u64;
    Host::new(cfg)
}

/// A client and a server that is also the name server both use.
fn pair() -> (Host, Host) {
    let (mut client, mut server) = (host(1), host(2));
    server.serve_names(10);
    let ns = server.name_server_dag().unwrap();
    client.set_name_server(ns.clone());
    server.set_name_server(ns);
    (client, server)
}

/// Moves every packet one host sends to the other, as a wire would.
fn pump(a: &mut Host, b: &mut Host) {
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            b.handle_packet(NOW, 0, t.packet);
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_packet(NOW, 0, t.packet);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

fn events(h: &mut Host) -> Vec<HostEvent> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

fn header(t: &Transmit) -> XipRepr {
    XipRepr::parse_header(&Packet::new_unchecked(&t.packet[..])).unwrap()
}

fn read_all(s: XStream, host: &mut Host) -> Result<Vec<u8>, SocketError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        match s.read(host, NOW, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(SocketError::WouldBlock) if !out.is_empty() => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn a_stream_by_dag_echoes_and_ends() {
    let (mut client, mut server) = pair();
    let listener = XListener::bind(&mut server, None).unwrap();
    let dst = listener.local_dag(&server).unwrap();
    assert_eq!(*dst.intent(), listener.sid(&server).unwrap());
    let s = XStream::connect(&mut client, NOW, &dst).unwrap();
    assert_eq!(s.state(&client), StreamState::Connecting);
    assert_eq!(
        s.write(&mut client, NOW, b"early"),
        Err(SocketError::WouldBlock)
    );
    assert!(!s.can_write(&client));
    assert_eq!(listener.accept(&mut server), Err(SocketError::WouldBlock));
    assert!(!listener.can_accept(&server));
    pump(&mut client, &mut server);
    assert!(events(&mut server).iter().any(|e| listener.matches(e)));
    assert!(listener.can_accept(&server));
    let conn = listener.accept(&mut server).unwrap();
    assert_eq!(s.state(&client), StreamState::Connected);
    assert_eq!(conn.state(&server), StreamState::Connected);
    // The client got a fresh SID of its own.
    let local = s.local_dag(&client).unwrap();
    assert_eq!(local.intent().principal(), Principal::SID);
    assert_eq!(conn.peer_dag(&server).unwrap().intent(), local.intent());

    let mut buf = [0u8; 64];
    assert_eq!(
        conn.read(&mut server, NOW, &mut buf),
        Err(SocketError::WouldBlock)
    );
    assert!(!conn.can_read(&server));
    assert!(s.can_write(&client));
    assert_eq!(s.write(&mut client, NOW, b"echo me, please"), Ok(15));
    pump(&mut client, &mut server);
    assert!(events(&mut server).iter().any(|e| conn.matches(e)));
    assert!(conn.can_read(&server));
    let got = read_all(conn, &mut server).unwrap();
    assert_eq!(got, b"echo me, please");
    conn.write(&mut server, NOW, &got).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(read_all(s, &mut client).unwrap(), b"echo me, please");

    // The client closes; the server reads the end, then closes too.
    s.close(&mut client, NOW).unwrap();
    s.close(&mut client, NOW).unwrap();
    assert!(matches!(
        s.write(&mut client, NOW, b"more"),
        Err(SocketError::Stream(_))
    ));
    pump(&mut client, &mut server);
    assert!(conn.can_read(&server));
    assert_eq!(conn.read(&mut server, NOW, &mut buf), Ok(0));
    conn.close(&mut server, NOW).unwrap();
    pump(&mut client, &mut server);
    assert_eq!(s.state(&client), StreamState::Closed);
    assert_eq!(conn.state(&server), StreamState::Closed);
    assert_eq!(s.read(&mut client, NOW, &mut buf), Ok(0));
    s.release(&mut client, NOW);
    assert!(matches!(
        s.read(&mut client, NOW, &mut buf),
        Err(SocketError::Host(_))
    ));
}

#[test]
fn a_stream_by_name_resolves_then_connects() {
    let (mut client, mut server) = pair();
    let svc = Identity::from_secret_bytes(Principal::SID, &[0x33; 32]);
    let listener = XListener::bind(&mut server, Some(svc.xid())).unwrap();
    let dag = listener.local_dag(&server).unwrap();
    let reg = register(&mut server, T0, &svc, "echo.example", &dag, 1).unwrap();
    let answers: Vec<_> = events(&mut server)
        .iter()
        .filter_map(|e| reg.answer(e))
        .collect();
    assert_eq!(answers, [Ok(1)]);

    let s = XStream::connect(&mut client, NOW, "echo.example").unwrap();
    assert_eq!(s.state(&client), StreamState::Resolving);
    assert_eq!(s.local_dag(&client), None);
    let mut buf = [0u8; 8];
    assert_eq!(
        s.read(&mut client, NOW, &mut buf),
        Err(SocketError::WouldBlock)
    );
    assert_eq!(
        s.write(&mut client, NOW, b"x"),
        Err(SocketError::WouldBlock)
    );
    assert!(!s.can_read(&client) && !s.can_write(&client));
    pump(&mut client, &mut server);
    let evs = events(&mut client);
    assert!(
        evs.contains(&HostEvent::Resolved {
            stream: s.handle(),
            result: Ok(dag.clone())
        }),
        "{evs:?}"
    );
    assert!(evs.contains(&HostEvent::Stream {
        stream: s.handle(),
        event: StreamEvent::Connected
    }));
    assert!(evs
        .iter()
        .all(|e| !matches!(e, HostEvent::NameAnswer { .. })));
    assert_eq!(s.state(&client), StreamState::Connected);
    assert_eq!(s.peer_dag(&client), Some(dag));
    let conn = listener.accept(&mut server).unwrap();
    s.write(&mut client, NOW, b"hi").unwrap();
    pump(&mut client, &mut server);
    assert_eq!(read_all(conn, &mut server).unwrap(), b"hi");
}

#[test]
fn an_unknown_name_fails_the_stream_clearly() {
    let (mut client, mut server) = pair();
    let s = XStream::connect(&mut client, NOW, Peer::Name("nobody.example".into())).unwrap();
    pump(&mut client, &mut server);
    let not_found = ResolveError::NotFound("nobody.example".into());
    assert_eq!(
        events(&mut client),
        [HostEvent::Resolved {
            stream: s.handle(),
            result: Err(not_found.clone())
        }]
    );
    let failed = SocketError::Resolve(not_found);
    assert_eq!(s.state(&client), StreamState::Failed(failed.clone()));
    assert_eq!(failed.to_string(), "nobody.example: name not known");
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut client, NOW, &mut buf), Err(failed.clone()));
    assert_eq!(s.write(&mut client, NOW, b"x"), Err(failed));
    assert!(s.can_read(&client), "a read would not block: it fails");
    s.release(&mut client, NOW);

    // Without a name server, connecting by name fails at once.
    let mut lonely = host(3);
    assert_eq!(
        XStream::connect(&mut lonely, NOW, "echo.example"),
        Err(SocketError::Host(HostError::NoNameServer))
    );
}

#[test]
fn closing_a_resolving_stream_cancels_it() {
    let (mut client, mut server) = pair();
    let svc = Identity::from_secret_bytes(Principal::SID, &[0x44; 32]);
    let listener = XListener::bind(&mut server, Some(svc.xid())).unwrap();
    let dag = listener.local_dag(&server).unwrap();
    register(&mut server, T0, &svc, "svc", &dag, 1).unwrap();
    let s = XStream::connect(&mut client, NOW, "svc").unwrap();
    s.close(&mut client, NOW).unwrap();
    assert_eq!(s.state(&client), StreamState::Closed);
    pump(&mut client, &mut server);
    // The answer came back but no SYN left: nothing to accept.
    assert_eq!(listener.accept(&mut server), Err(SocketError::WouldBlock));
    assert_eq!(s.state(&client), StreamState::Closed);
    let mut buf = [0u8; 4];
    assert_eq!(s.read(&mut client, NOW, &mut buf), Ok(0));
}

#[test]
fn a_stream_to_an_unserved_sid_hears_xcmp_and_keeps_trying() {
    let (mut client, mut server) = pair();
    let nowhere = server
        .dag()
        .append_xid(Xid::new(Principal::SID, [0x99; 20]))
        .unwrap();
    let s = XStream::connect(&mut client, NOW, nowhere).unwrap();
    pump(&mut client, &mut server);
    // The server says the intent is unreachable. That error does not end
    // the stream (XCMP errors are not matched to streams yet): the
    // handshake goes on until its retransmission limit.
    assert!(events(&mut client).iter().any(|e| matches!(
        e,
        HostEvent::Error {
            error: NetError::Unreachable {
                reason: Unreachable::Intent,
                ..
            },
            ..
        }
    )));
    assert_eq!(s.state(&client), StreamState::Connecting);
    assert!(client.poll_timeout().is_some());
}

#[test]
fn streams_and_listeners_have_options_and_lifetimes() {
    let (mut client, mut server) = pair();
    let listener = XListener::bind(&mut server, None).unwrap();
    let dst = listener.local_dag(&server).unwrap();
    let s = XStream::connect(&mut client, NOW, &dst).unwrap();
    let _ = client.poll_transmit(); // the SYN, at the default hop limit
    assert_eq!(
        s.hop_limit(&client),
        Some(crate::wire::xip::DEFAULT_HOP_LIMIT)
    );
    s.set_hop_limit(&mut client, 9).unwrap();
    assert_eq!(s.hop_limit(&client), Some(9));
    s.close(&mut client, NOW).unwrap();
    s.release(&mut client, NOW);
    assert!(s.set_hop_limit(&mut client, 9).is_err());

    let s = XStream::connect(&mut client, NOW, &dst).unwrap();
    s.set_hop_limit(&mut client, 9).unwrap();
    pump(&mut client, &mut server);
    let conn = listener.accept(&mut server).unwrap();
    s.write(&mut client, NOW, b"abc").unwrap();
    let t = client.poll_transmit().unwrap();
    assert_eq!(header(&t).hop_limit, 9 - 1);
    server.handle_packet(NOW, 0, t.packet);
    // A closed listener accepts no more; its accepted stream goes on.
    listener.close(&mut server, NOW).unwrap();
    assert!(matches!(
        listener.accept(&mut server),
        Err(SocketError::Host(HostError::BadListener(_)))
    ));
    assert_eq!(read_all(conn, &mut server).unwrap(), b"abc");
    conn.write(&mut server, NOW, b"d").unwrap();
    pump(&mut client, &mut server);
    assert_eq!(read_all(s, &mut client).unwrap(), b"d");
}

#[test]
fn a_datagram_round_trip_with_a_hop_limit() {
    let (mut a, mut b) = pair();
    let sa = XDatagram::bind(&mut a, None).unwrap();
    let sid = Xid::new(Principal::SID, [0x5b; 20]);
    let sb = XDatagram::bind(&mut b, Some(sid)).unwrap();
    assert_eq!(sb.sid(&b), Some(sid));
    assert_eq!(
        XDatagram::bind(&mut b, Some(sid)),
        Err(SocketError::Host(HostError::AddressInUse(sid)))
    );
    let mut buf = [0u8; 64];
    assert_eq!(sb.recv_from(&mut b, &mut buf), Err(SocketError::WouldBlock));

    sa.set_hop_limit(&mut a, 17).unwrap();
    assert_eq!(sa.hop_limit(&a), Some(17));
    let to_b = sb.local_dag(&b).unwrap();
    sa.send_to(&mut a, &to_b, b"ping?").unwrap();
    let t = a.poll_transmit().unwrap();
    assert_eq!(header(&t).hop_limit, 17 - 1, "the host's own hop counts");
    b.handle_packet(NOW, 0, t.packet);
    let evs = events(&mut b);
    assert!(evs.iter().any(|e| sb.matches(e)));
    assert!(sb.can_read(&b));
    let (n, from) = sb.recv_from(&mut b, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping?");
    assert_eq!(from, sa.local_dag(&a).unwrap());
    sb.send_to(&mut b, &from, b"pong!").unwrap();
    pump(&mut a, &mut b);
    // A short buffer gets the start; the rest is dropped.
    let mut small = [0u8; 3];
    assert_eq!(sa.recv_from(&mut a, &mut small).unwrap().0, 3);
    assert_eq!(&small, b"pon");
    assert!(!sa.can_read(&a));
    events(&mut a);

    // Errors about what it sent come to the socket.
    sb.close(&mut b);
    sa.send_to(&mut a, &to_b, b"anyone?").unwrap();
    pump(&mut a, &mut b);
    let err = events(&mut a).into_iter().find(|e| sa.matches(e));
    assert!(
        matches!(
            err,
            Some(HostEvent::Error {
                error: NetError::Unreachable {
                    reason: Unreachable::Intent,
                    ..
                },
                ..
            })
        ),
        "{err:?}"
    );
    assert!(matches!(
        sb.recv_from(&mut b, &mut buf),
        Err(SocketError::Host(HostError::BadSocket(_)))
    ));
}

#[test]
fn raw_sockets_carry_whole_payloads_with_their_next_header() {
    let (mut a, mut b) = pair();
    let nxt = NextHeader::Unknown(0x99);
    let ra = XRaw::open(&mut a, nxt);
    let rb = XRaw::open(&mut b, NextHeader::from(0x99));
    assert_eq!(rb.next_header(&b), Some(nxt));
    ra.set_hop_limit(&mut a, 33).unwrap();
    ra.send_to(&mut a, &b.dag(), b"\x00\x01raw bytes").unwrap();
    let t = a.poll_transmit().unwrap();
    let h = header(&t);
    assert_eq!((h.next_header, h.hop_limit), (nxt, 33 - 1));
    assert_eq!(&t.packet[h.header_len()..], b"\x00\x01raw bytes");
    b.handle_packet(NOW, 0, t.packet);
    assert_eq!(events(&mut b), [HostEvent::RawReadable(rb.handle())]);
    assert!(rb.can_read(&b));
    let mut buf = [0u8; 64];
    let (n, from) = rb.recv_from(&mut b, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"\x00\x01raw bytes");
    assert_eq!(from, a.dag());
    assert_eq!(b.counters().no_socket, 0, "a raw socket took it");
    assert_eq!(rb.recv_from(&mut b, &mut buf), Err(SocketError::WouldBlock));

    // Another next header is not this socket's: the host answers that the
    // protocol is unreachable.
    rb.set_next_header(&mut b, NextHeader::Data).unwrap();
    ra.send_to(&mut a, &b.dag(), b"again").unwrap();
    pump(&mut a, &mut b);
    assert!(!rb.can_read(&b));
    assert!(events(&mut a).iter().any(|e| matches!(
        e,
        HostEvent::Error {
            error: NetError::Unreachable {
                reason: Unreachable::Protocol,
                ..
            },
            ..
        }
    )));
    rb.close(&mut b);
    assert!(rb.recv_from(&mut b, &mut buf).is_err());
    assert!(rb.set_hop_limit(&mut b, 1).is_err());
}

#[test]
fn a_raw_xcmp_socket_sees_echo_replies_the_stack_also_handles() {
    let (mut a, mut b) = pair();
    let raw = XRaw::open(&mut a, NextHeader::Xcmp);
    a.ping(&b.dag(), 7, 1, b"12345678", None).unwrap();
    pump(&mut a, &mut b);
    let evs = events(&mut a);
    assert!(evs.iter().any(|e| raw.matches(e)));
    assert!(evs
        .iter()
        .any(|e| matches!(e, HostEvent::EchoReply { ident: 7, .. })));
    let mut buf = [0u8; 64];
    let (n, from) = raw.recv_from(&mut a, &mut buf).unwrap();
    assert_eq!(from, b.dag());
    assert_eq!(buf[0], 0, "XCMP echo reply");
    assert_eq!(&buf[n - 8..n], b"12345678");
}

#[test]
fn put_and_fetch_a_chunk() {
    let (mut a, mut b) = pair();
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 31) as u8).collect();
    let dag = put_chunk(&mut b, &data).unwrap();
    assert_eq!(*dag.intent(), Xid::cid_of(&data));
    let fetch = fetch_chunk(&mut a, NOW, &dag).unwrap();
    assert_eq!(fetch.cid(), Xid::cid_of(&data));
    pump(&mut a, &mut b);
    let evs = events(&mut a);
    let got: Vec<_> = evs.iter().filter_map(|e| fetch.result(e)).collect();
    assert_eq!(got, [Ok(&data[..])]);
    let not_cid = b.dag();
    assert_eq!(
        fetch_chunk(&mut a, NOW, &not_cid),
        Err(SocketError::Content(ContentError::NotACid(
            *not_cid.intent()
        )))
    );
}

#[test]
fn resolve_and_register_answer_through_events() {
    let (mut client, mut server) = pair();
    let svc = Identity::from_secret_bytes(Principal::SID, &[0x55; 32]);
    let dag = server.dag().append_xid(svc.xid()).unwrap();
    let reg = register(&mut client, T0, &svc, "thing", &dag, 4).unwrap();
    pump(&mut client, &mut server);
    let evs = events(&mut client);
    assert_eq!(evs.iter().find_map(|e| reg.answer(e)), Some(Ok(4)));
    // A replay is refused with the name server's reason.
    let again = register(&mut client, T0, &svc, "thing", &dag, 4).unwrap();
    pump(&mut client, &mut server);
    match events(&mut client).iter().find_map(|e| again.answer(e)) {
        Some(Err(SocketError::Refused(why))) => assert!(why.contains("not above"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A key that does not certify the DAG's intent is refused too.
    let wrong = Identity::from_secret_bytes(Principal::SID, &[0x56; 32]);
    let forged = register(&mut client, T0, &wrong, "thing", &dag, 5).unwrap();
    pump(&mut client, &mut server);
    let answer = events(&mut client).iter().find_map(|e| forged.answer(e));
    assert!(
        matches!(answer, Some(Err(SocketError::Refused(_)))),
        "{answer:?}"
    );
    // Not a name at all: refused before anything is sent.
    assert!(matches!(
        register(&mut client, T0, &svc, "Not A Name", &dag, 6),
        Err(SocketError::Name(_))
    ));

    let r = resolve(&mut client, T0, "thing").unwrap();
    assert_eq!(r.name(), "thing");
    pump(&mut client, &mut server);
    assert_eq!(
        events(&mut client).iter().find_map(|e| r.answer(e)),
        Some(Ok(dag))
    );
    let r = resolve(&mut client, T0, "other").unwrap();
    pump(&mut client, &mut server);
    assert_eq!(
        events(&mut client).iter().find_map(|e| r.answer(e)),
        Some(Err(SocketError::Resolve(ResolveError::NotFound(
            "other".into()
        ))))
    );
    assert_eq!(server.name_server_dag().unwrap().intent(), &NAME_SERVER_SID);
}

#[test]
fn peers_convert_and_print() {
    assert_eq!(Peer::from("web"), Peer::Name("web".into()));
    assert_eq!(Peer::from("web").to_string(), "name:web");
    let d = host(1).dag();
    assert_eq!(Peer::from(&d), Peer::Dag(d.clone()));
    assert!(Peer::from(d).to_string().starts_with("RE "));
    assert_eq!(
        SocketError::from(HostError::Resolving(crate::host::StreamHandle(0))),
        SocketError::WouldBlock
    );
}

#[test]
fn a_name_keeper_registers_retries_and_follows_the_dag() {
    let (mut client, mut server) = pair();
    let svc = Identity::from_secret_bytes(Principal::SID, &[0x57; 32]);
    let dag = client.dag().append_xid(svc.xid()).unwrap();
    let mut keeper = NameKeeper::new("kept", 100);
    // The name server drops the first request (lost on the way): the
    // stack asks again, gives up, and the keeper tries later.
    keeper.poll(&mut client, T0, &svc, &dag);
    while client.poll_transmit().is_some() {}
    let mut now = T0;
    while keeper.timeouts == 0 {
        now = client.poll_timeout().unwrap();
        client.handle_timeout(now);
        while client.poll_transmit().is_some() {}
        for e in events(&mut client) {
            keeper.handle_event(now, &e);
        }
    }
    assert!(!keeper.is_registered(&dag));
    let retry = keeper.poll_timeout().unwrap();
    assert!(retry > now);
    keeper.poll(&mut client, now, &svc, &dag);
    assert_eq!(client.poll_transmit(), None, "not before the retry");
    // At the retry it registers, with the next sequence number.
    keeper.poll(&mut client, retry, &svc, &dag);
    pump(&mut client, &mut server);
    for e in events(&mut client) {
        keeper.handle_event(retry, &e);
    }
    assert!(keeper.is_registered(&dag));
    // Registered: nothing more to send until the DAG changes.
    keeper.poll(&mut client, retry, &svc, &dag);
    assert_eq!(client.poll_transmit(), None);
    let moved = Dag::path(&[Xid::new(Principal::AD, [8; 20]), client.hid(), svc.xid()]).unwrap();
    assert!(!keeper.is_registered(&moved));
    keeper.poll(&mut client, retry, &svc, &moved);
    pump(&mut client, &mut server);
    for e in events(&mut client) {
        keeper.handle_event(retry, &e);
    }
    assert!(keeper.is_registered(&moved), "{keeper:?}");
    let r = resolve(&mut client, retry, "kept").unwrap();
    pump(&mut client, &mut server);
    let got = events(&mut client).iter().find_map(|e| r.answer(e));
    assert_eq!(got, Some(Ok(moved)));
}
