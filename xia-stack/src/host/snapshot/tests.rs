//! Snapshot and restore: round trips, a transfer that survives its
//! sender (or receiver) moving to a machine with another clock, and
//! hostile bytes.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::host::{HostConfig, HostEvent, ListenerHandle, StreamHandle};
use crate::identity::Identity;
use crate::stream::StreamEvent;
use crate::wire::xip::NextHeader;
use crate::xhcp::Beacon;
use crate::xid::Xid;

fn host(seed: u8, ad: u8) -> Host {
    let id = Identity::from_secret_bytes(Principal::HID, &[seed; 32]);
    let mut cfg = HostConfig::new(
        id,
        Xid::new(Principal::AD, [ad; 20]),
        Some(Xid::new(Principal::HID, [0xee; 20])),
    );
    cfg.seed = u64::from(seed);
    Host::new(cfg)
}

/// Moves every packet each host sends to the other, each at its own time.
fn pump(a: &mut Host, a_now: Instant, b: &mut Host, b_now: Instant) {
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            b.handle_packet(b_now, 0, t.packet);
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_packet(a_now, 0, t.packet);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

/// The byte at offset `i` of the test stream: not periodic over any
/// window a stream could confuse.
fn pattern(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8 ^ (i >> 16) as u8
}

/// A client `a` connected to a listener on `b`; returns the listener,
/// the client's stream and the server's.
fn connected(
    a: &mut Host,
    b: &mut Host,
    now: Instant,
) -> (ListenerHandle, StreamHandle, StreamHandle) {
    let key = Identity::from_secret_bytes(Principal::SID, &[0x77; 32]);
    let sid = key.xid();
    let l = b.listen(Some(sid)).unwrap();
    b.add_sid_key(key);
    let to = b.dag().append_xid(sid).unwrap();
    let s = a.connect(&to, now).unwrap();
    pump(a, now, b, now);
    let server = b.accept(l).expect("accepted");
    (l, s, server)
}

#[test]
fn a_restored_host_snapshots_to_the_same_bytes() {
    let now = Instant::from_secs(7);
    let (mut a, mut b) = (host(1, 7), host(2, 7));
    let (l, client, server) = connected(&mut a, &mut b, now);
    // A datagram socket with a datagram waiting, and some stream data
    // waiting to be read.
    let sock = b.bind(None).unwrap();
    let from = a.bind(None).unwrap();
    a.send_to(from, &b.socket_dag(sock).unwrap(), b"queued datagram")
        .unwrap();
    a.stream_write(client, b"hello across a migration", now)
        .unwrap();
    pump(&mut a, now, &mut b, now);
    let raw = b.raw_open(NextHeader::Unknown(200));
    b.put_chunk(b"a published chunk").unwrap();

    let snap = b.snapshot(now);
    let mut b2 = Host::restore(&snap, now).unwrap();
    assert_eq!(b2.snapshot(now), snap, "byte-identical");
    // Drained of the same events, the two hosts snapshot alike too.
    while b.poll_event().is_some() {}
    while b2.poll_event().is_some() {}
    assert_eq!(b2.snapshot(now), b.snapshot(now));

    // It is the same host.
    assert_eq!(b2.hid(), b.hid());
    assert_eq!(b2.listener_sid(l), b.listener_sid(l));
    assert_eq!(b2.raw_next_header(raw), Some(NextHeader::Unknown(200)));
    let (src, data) = b2.recv_from(sock).unwrap();
    assert_eq!(data, b"queued datagram");
    assert_eq!(src, a.socket_dag(from).unwrap());
    let mut buf = [0u8; 64];
    let n = b2.stream_read(server, &mut buf, now).unwrap();
    assert_eq!(&buf[..n], b"hello across a migration");
    // And its stream goes on with the peer.
    b2.stream_write(server, b"pong", now).unwrap();
    pump(&mut a, now, &mut b2, now);
    let n = a.stream_read(client, &mut buf, now).unwrap();
    assert_eq!(&buf[..n], b"pong");
    // Its RNG state moved: the next fresh SID is the original's.
    assert_eq!(b2.bind(None).ok().and_then(|h| b2.socket_sid(h)), {
        let h = b.bind(None).unwrap();
        b.socket_sid(h)
    });
}

/// Two hosts back to back over a link with a delay and a per-packet
/// serialisation time, in virtual time. `t` is the peer `b`'s clock;
/// `a`'s clock is `t + a_delta` (it changes when `a` is restored on a
/// machine whose clock has another origin).
struct Link {
    t: Instant,
    a_delta: i128,
    a: Host,
    b: Host,
    /// Packets on the wire: [to b, to a], each in arrival order.
    wire: [VecDeque<(Instant, Vec<u8>)>; 2],
    free: [Instant; 2],
}

const DELAY: Duration = Duration::from_millis(10);
const SPACING: Duration = Duration::from_micros(10);

impl Link {
    fn a_now(&self) -> Instant {
        Instant::from_nanos((i128::from(self.t.as_nanos()) + self.a_delta).max(0) as u64)
    }

    /// `a`'s time `at` on `b`'s clock.
    fn global(&self, at: Instant) -> Instant {
        Instant::from_nanos((i128::from(at.as_nanos()) - self.a_delta).max(0) as u64)
    }

    fn send(&mut self) {
        let t = self.t;
        let mut put = |dir: usize, packet: Vec<u8>| {
            let leaves = self.free[dir].max(t) + SPACING;
            self.free[dir] = leaves;
            self.wire[dir].push_back((leaves + DELAY, packet));
        };
        while let Some(p) = self.a.poll_transmit() {
            put(0, p.packet);
        }
        while let Some(p) = self.b.poll_transmit() {
            put(1, p.packet);
        }
    }

    /// Advances to the next arrival or timer and handles it; `false` when
    /// nothing is left to happen.
    fn step(&mut self) -> bool {
        self.send();
        let a_timer = self.a.poll_timeout().map(|at| self.global(at));
        let next = [
            self.wire[0].front().map(|p| p.0),
            self.wire[1].front().map(|p| p.0),
            a_timer,
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return false;
        };
        self.t = self.t.max(next);
        let (t, a_now) = (self.t, self.a_now());
        while self.wire[0].front().is_some_and(|p| p.0 <= t) {
            let (_, p) = self.wire[0].pop_front().unwrap();
            self.b.handle_packet(t, 0, p);
        }
        while self.wire[1].front().is_some_and(|p| p.0 <= t) {
            let (_, p) = self.wire[1].pop_front().unwrap();
            self.a.handle_packet(a_now, 0, p);
        }
        if a_timer.is_some_and(|at| at <= t) {
            self.a.handle_timeout(a_now);
        }
        if self.b.poll_timeout().is_some_and(|at| at <= t) {
            self.b.handle_timeout(t);
        }
        true
    }

    /// Fails the test on any stream error either host reports.
    fn check_events(&mut self) {
        for h in [&mut self.a, &mut self.b] {
            while let Some(e) = h.poll_event() {
                if let HostEvent::Stream {
                    event: StreamEvent::Error(why),
                    ..
                } = e
                {
                    panic!("stream failed: {why}");
                }
            }
        }
    }
}

/// What [`transfer`] saw.
struct Transfer {
    snapshot_len: usize,
    lost_in_flight: usize,
    restored_timer: Option<Instant>,
}

/// Streams `len` patterned bytes between `a` and `b` (from `a` if
/// `a_sends`, else from `b`) starting at `start`; when the receiver has
/// half, snapshots `a`, loses everything on the wire, lets `b` run alone
/// for `pause`, and restores `a` on a clock that reads `restore_at`.
/// Checks that every byte arrives once, in order.
fn transfer(a_sends: bool, start: Instant, restore_at: Instant, len: usize) -> Transfer {
    let (mut a, mut b) = (host(1, 7), host(2, 7));
    // The sender is the client when `a` sends, the server otherwise: a
    // restored host keeps both kinds of connection.
    let (sender, receiver) = if a_sends {
        let (_, s, r) = connected(&mut a, &mut b, start);
        (s, r)
    } else {
        let (_, r, s) = connected(&mut b, &mut a, start);
        (s, r)
    };
    let mut link = Link {
        t: start,
        a_delta: 0,
        a,
        b,
        wire: Default::default(),
        free: [start; 2],
    };
    let data: Vec<u8> = (0..len).map(pattern).collect();
    let (mut sent, mut got) = (0, Vec::with_capacity(len));
    let mut buf = vec![0u8; 64 * 1024];
    let mut closed = false;
    let mut result = None;
    let pause = Duration::from_millis(300);
    for _ in 0..2_000_000 {
        let (a_now, t) = (link.a_now(), link.t);
        let (tx, tx_now, rx, rx_now) = if a_sends {
            (&mut link.a, a_now, &mut link.b, t)
        } else {
            (&mut link.b, t, &mut link.a, a_now)
        };
        if sent < len {
            sent += tx.stream_write(sender, &data[sent..], tx_now).unwrap();
        } else if !closed {
            tx.stream_close(sender, tx_now).unwrap();
            closed = true;
        }
        loop {
            let n = rx.stream_read(receiver, &mut buf, rx_now).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if rx.stream(receiver).unwrap().is_read_finished() {
            break;
        }
        link.check_events();
        if result.is_none() && got.len() >= len / 2 {
            link.send();
            let snap = link.a.snapshot(link.a_now());
            // The machine stops: everything on the wire is lost, and the
            // peer runs on alone (its packets lost too) for a while.
            let data_packets =
                |q: &VecDeque<(Instant, Vec<u8>)>| q.iter().filter(|(_, p)| p.len() > 200).count();
            let lost = data_packets(&link.wire[if a_sends { 0 } else { 1 }]);
            link.wire = Default::default();
            let resume = link.t + pause;
            while let Some(due) = link.b.poll_timeout().filter(|&d| d <= resume) {
                link.t = link.t.max(due);
                link.b.handle_timeout(link.t);
                while link.b.poll_transmit().is_some() {}
            }
            link.t = resume;
            link.free = [resume; 2];
            // The host comes back on a machine whose clock reads
            // `restore_at` now; the original is gone.
            let restored = Host::restore(&snap, restore_at).expect("restores");
            let timer = restored.poll_timeout();
            link.a = restored;
            link.a_delta = i128::from(restore_at.as_nanos()) - i128::from(resume.as_nanos());
            assert_eq!(link.a_now(), restore_at);
            result = Some(Transfer {
                snapshot_len: snap.len(),
                lost_in_flight: lost,
                restored_timer: timer,
            });
        }
        assert!(link.step(), "stalled with {} of {len} bytes", got.len());
    }
    assert_eq!(got.len(), len, "every byte once");
    assert!(got == data, "in order, unchanged");
    result.expect("snapshotted midway")
}

#[test]
fn a_sender_restored_on_another_clock_completes_its_transfer() {
    let r = transfer(
        true,
        Instant::from_millis(250),
        Instant::from_secs(3),
        2 << 20,
    );
    assert!(r.lost_in_flight > 0, "data was in flight when it moved");
    println!(
        "mid-transfer snapshot of the sender: {} bytes ({} data packets lost)",
        r.snapshot_len, r.lost_in_flight
    );
}

#[test]
fn a_receiver_restored_on_another_clock_gets_every_byte() {
    let r = transfer(
        false,
        Instant::from_millis(250),
        Instant::from_secs(3),
        2 << 20,
    );
    assert!(r.lost_in_flight > 0, "data was in flight when it moved");
    println!(
        "mid-transfer snapshot of the receiver: {} bytes ({} data packets lost)",
        r.snapshot_len, r.lost_in_flight
    );
}

#[test]
fn restored_on_a_clock_behind_every_saved_time_timers_stay_sane() {
    // Snapshot at 100 s, restored at 1 ms: times before the snapshot
    // (send times, measurement marks) would fall before the origin.
    for (a_sends, restore_at) in [(true, Instant::ZERO), (false, Instant::from_millis(1))] {
        let r = transfer(a_sends, Instant::from_secs(100), restore_at, 1 << 20);
        // A sender has its retransmission timer running; a receiver that
        // acknowledges at once has none.
        assert_eq!(r.restored_timer.is_some(), a_sends);
        if let Some(timer) = r.restored_timer {
            assert!(timer >= restore_at, "{timer:?}");
            assert!(timer <= restore_at + Duration::from_secs(60), "{timer:?}");
        }
    }
}

#[test]
fn migrates_after_a_restore_on_a_slower_clock_are_not_stale() {
    let (mut a, mut b) = (host(1, 7), host(2, 7));
    let t = Instant::from_secs(100);
    let (_, client, server) = connected(&mut a, &mut b, t);
    let beacon = |ad: u8| Beacon {
        ad: Xid::new(Principal::AD, [ad; 20]),
        gateway: Xid::new(Principal::HID, [0xee; 20]),
        name_server: None,
    };
    // The client moves once (a MIGRATE stamped 100 s by its clock)...
    a.handle_packet(t, 0, beacon(8).packet());
    pump(&mut a, t, &mut b, t);
    assert_eq!(b.stream(server).unwrap().stats().peer_moves, 1);
    // ... then migrates to a machine whose clock reads 3 s, and moves
    // again: the peer must not take the new MIGRATE for a stale one.
    let now = Instant::from_secs(3);
    let mut a = Host::restore(&a.snapshot(t), now).unwrap();
    a.handle_packet(now, 0, beacon(9).packet());
    pump(&mut a, now, &mut b, t + Duration::from_millis(1));
    let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        !events.iter().any(|e| matches!(
            e,
            HostEvent::Stream {
                event: StreamEvent::MigrateRefused(_),
                ..
            }
        )),
        "{events:?}"
    );
    let conn = b.stream(server).unwrap();
    assert_eq!(conn.stats().peer_moves, 2);
    assert_eq!(conn.peer_dag(), a.stream(client).unwrap().local_dag());
}

#[test]
fn snapshot_sizes() {
    let now = Instant::from_secs(1);
    let fresh = host(1, 7);
    let (mut a, mut b) = (host(1, 7), host(2, 7));
    connected(&mut a, &mut b, now);
    while a.poll_event().is_some() {}
    println!(
        "snapshot of a fresh host: {} bytes; with one idle stream: {} bytes",
        fresh.snapshot(now).len(),
        a.snapshot(now).len()
    );
}

#[test]
fn wrong_bytes_are_clear_errors() {
    let now = Instant::from_secs(1);
    let snap = host(1, 7).snapshot(now);
    assert_eq!(
        Host::restore(b"", now).unwrap_err(),
        SnapshotError::BadMagic
    );
    assert_eq!(
        Host::restore(b"GIF89a..........", now).unwrap_err(),
        SnapshotError::BadMagic
    );
    assert_eq!(
        Host::restore(&snap[..12], now).unwrap_err(),
        SnapshotError::Decode("truncated header".into())
    );
    let mut v2 = snap.clone();
    v2[9] = 2;
    assert_eq!(
        Host::restore(&v2, now).unwrap_err(),
        SnapshotError::Version {
            found: 2,
            expected: 1
        }
    );
    let mut flipped = snap.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(
        Host::restore(&flipped, now).unwrap_err(),
        SnapshotError::Checksum
    );
    assert_eq!(
        Host::restore(&snap[..snap.len() - 1], now).unwrap_err(),
        SnapshotError::Checksum
    );
    // Past the checksum: what failed is named.
    let body = &snap[HEADER_LEN..];
    let err = decode(&body[..body.len() - 1], now).unwrap_err();
    assert_eq!(err, SnapshotError::Decode("truncated".into()));
    let mut longer = body.to_vec();
    longer.push(0);
    assert_eq!(
        decode(&longer, now).unwrap_err(),
        SnapshotError::Decode("1 bytes after the host".into())
    );
    let mut wrong = host(1, 7);
    wrong.hid = Xid::new(Principal::HID, [3; 20]);
    let err = Host::restore(&wrong.snapshot(now), now).unwrap_err();
    assert!(matches!(&err, SnapshotError::Decode(why) if why.contains("not the host identity")));
    // A key that does not derive its XID.
    let mut forged = host(1, 7);
    forged.sid_keys.insert(
        Xid::new(Principal::SID, [1; 20]),
        Identity::from_secret_bytes(Principal::SID, &[5; 32]),
    );
    let err = Host::restore(&forged.snapshot(now), now).unwrap_err();
    assert!(matches!(&err, SnapshotError::Decode(why) if why.contains("another SID")));
    let id = Identity::from_secret_bytes(Principal::SID, &[5; 32]);
    let lie =
        postcard::to_allocvec(&(Principal::SID, Xid::new(Principal::SID, [1; 20]), [5u8; 32]))
            .unwrap();
    assert!(postcard::from_bytes::<Identity>(&lie).is_err());
    assert!(serde_util::take_invalid()
        .unwrap()
        .contains("does not derive it"));
    let good = postcard::to_allocvec(&id).unwrap();
    assert_eq!(
        postcard::from_bytes::<Identity>(&good).unwrap().xid(),
        id.xid()
    );
}

/// A snapshot to damage, its time, and packets its peer had sent it
/// (lost on the way) to feed the damaged host.
struct Fixture {
    snap: Vec<u8>,
    now: Instant,
    inbound: Vec<Vec<u8>>,
}

/// A sender and a receiver mid-transfer, with half the data lost so that
/// there are out-of-order segments and SACKs about, and some of every
/// other kind of state.
fn fixtures() -> &'static [Fixture; 2] {
    static FIXTURES: OnceLock<[Fixture; 2]> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let now = Instant::from_secs(5);
        let (mut a, mut b) = (host(1, 7), host(2, 7));
        let (_, client, _) = connected(&mut a, &mut b, now);
        let data: Vec<u8> = (0..12_000).map(pattern).collect();
        a.stream_write(client, &data, now).unwrap();
        let mut to_b = Vec::new();
        while let Some(t) = a.poll_transmit() {
            if to_b.len() % 2 == 0 {
                b.handle_packet(now, 0, t.packet.clone());
            }
            to_b.push(t.packet);
        }
        let to_a: Vec<_> = std::iter::from_fn(|| b.poll_transmit())
            .map(|t| t.packet)
            .collect();
        a.stream_write(client, &data, now).unwrap();
        while a.poll_transmit().is_some() {}
        let sock = b.bind(None).unwrap();
        let from = a.bind(None).unwrap();
        a.send_to(from, &b.socket_dag(sock).unwrap(), b"dgram")
            .unwrap();
        let dgram = a.poll_transmit().unwrap();
        b.handle_packet(now, 0, dgram.packet);
        b.raw_open(NextHeader::Xdgram);
        b.serve_names(10);
        b.set_name_server(b.name_server_dag().unwrap());
        b.resolve(now, "pending.example").unwrap();
        let cid = a.put_chunk(&[7u8; 3000]).unwrap();
        b.fetch_chunk(&a.content_dag(cid), now).unwrap();
        b.put_chunk(b"cached").unwrap();
        [
            Fixture {
                snap: a.snapshot(now),
                now,
                inbound: to_a,
            },
            Fixture {
                snap: b.snapshot(now),
                now,
                inbound: to_b,
            },
        ]
    })
}

/// Runs a restored host a little — packets in, timers, packets and
/// events out: it must not panic either.
fn exercise(mut h: Host, now: Instant, inbound: &[Vec<u8>]) {
    for p in inbound {
        h.handle_packet(now, 0, p.clone());
    }
    for k in 0..3 {
        let t = h.poll_timeout().unwrap_or(now).max(now) + Duration::from_millis(k);
        h.handle_timeout(t);
        while h.poll_transmit().is_some() {}
        while h.poll_event().is_some() {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_are_refused(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        magic in any::<bool>(),
    ) {
        if magic && bytes.len() >= 10 {
            bytes[..8].copy_from_slice(MAGIC);
            bytes[8..10].copy_from_slice(&VERSION.to_be_bytes());
        }
        let now = Instant::from_secs(1);
        prop_assert!(Host::restore(&bytes, now).is_err());
        // Past the header checks too.
        if let Ok(h) = decode(&bytes, now) {
            exercise(h, now, &[]);
        }
    }

    #[test]
    fn damaged_snapshots_never_panic(
        which in 0usize..2,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
        truncate in any::<bool>(),
        later in 0u64..10_000,
    ) {
        let f = &fixtures()[which];
        let now = Instant::from_millis(later);
        let damage = |mut bytes: Vec<u8>| {
            for &(at, v) in &flips {
                let i = at % bytes.len();
                bytes[i] ^= v;
            }
            if truncate {
                bytes.truncate(cut % bytes.len());
            }
            bytes
        };
        // Through restore: the header and checksum catch it.
        match Host::restore(&damage(f.snap.clone()), now) {
            Ok(h) => exercise(h, now, &f.inbound),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        // Past the checksum: the decoder itself meets the damage.
        if let Ok(h) = decode(&damage(f.snap[HEADER_LEN..].to_vec()), now) {
            exercise(h, now, &f.inbound);
        }
        // The undamaged snapshot restores at any time, its timers after
        // `now` however the clocks compare.
        let h = Host::restore(&f.snap, now).unwrap();
        prop_assert!(h.poll_timeout().is_none_or(|t| t >= now), "{:?}", f.now);
    }
}

/// Every single-byte change of the fixtures' bodies, decoded past the
/// checksum and run: slow in a debug build (about a minute and a half),
/// so run it on demand with `cargo test -p xia-stack -- --ignored every_byte`.
#[test]
#[ignore]
fn every_byte_changed_decodes_or_fails_without_panicking() {
    for f in fixtures() {
        let body = &f.snap[HEADER_LEN..];
        for i in 0..body.len() {
            for v in [0x01u8, 0x80, 0xff] {
                let mut b = body.to_vec();
                b[i] ^= v;
                if let Ok(h) = decode(&b, f.now) {
                    exercise(h, f.now, &f.inbound);
                }
            }
        }
    }
}
