//! Security of connection migration and name updates, end to end.
//!
//! Two ADs, a router in each, linked; a client (and the name server) in
//! AD A, a server and an attacker in AD B. Every packet goes through the
//! real cores — `xia-router`'s `Router` and `xia-stack`'s `Host` — wired
//! port to port and driven by a virtual clock, as the simulator does (the
//! simulator's public API runs topologies, but cannot inject packets).
//!
//! The attacker is on path: it reads one link (a tap) and sends what it
//! likes from its own port in AD B, source addresses included (a raw
//! socket cannot spoof its source DAG, so its packets are built by hand
//! and handed to its wire). The checks are the receiving end's: a MIGRATE
//! that is forged, replayed, stale or for another connection is refused
//! (`Stats::migrates_refused`, `StreamEvent::MigrateRefused`), the
//! connection keeps its peer DAG, and the checksummed stream it carries
//! ends with every byte exactly once; a genuine one is accepted. Name
//! updates signed by anyone but the owner, and the owner's old ones, are
//! refused by the name server over the network.
//!
//! A MIGRATEACK is unsigned (its wire form is a sequence number), so it
//! counts only on a segment in the mover's window that acknowledges its
//! data: `a_forged_migrate_ack_does_not_cancel_the_migrate` checks that a
//! forged one cannot strand a connection whose MIGRATE was lost (it did,
//! before `Connection::migrate_ack`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use xia_migrate::vm::{fill_stream, stream_mismatches};
use xia_router::forward::Route;
use xia_router::{Router, RouterConfig};
use xia_stack::dag::Dag;
use xia_stack::host::{Host, HostConfig, HostEvent, ListenerHandle, StreamHandle};
use xia_stack::identity::Identity;
use xia_stack::naming::{split_message, NameRequest, NameResponse, Registration, NAME_SERVER_SID};
use xia_stack::stream::migrate::{ack_bytes, Migrate, MigrateError};
use xia_stack::stream::{Connection, StreamEvent};
use xia_stack::time::Instant;
use xia_stack::wire::xdgram::XdgramRepr;
use xia_stack::wire::xip::{NextHeader, Packet, XipRepr};
use xia_stack::wire::xstream::{Flags, XstreamOption, XstreamRepr};
use xia_stack::xid::{Principal, Xid};

// ---- the network ----

const AD_A: Xid = Xid::new(Principal::AD, [0xaa; 20]);
const AD_B: Xid = Xid::new(Principal::AD, [0xbb; 20]);
const RA_HID: Xid = Xid::new(Principal::HID, [0xa1; 20]);
const RB_HID: Xid = Xid::new(Principal::HID, [0xb1; 20]);

// Nodes.
const RA: usize = 0;
const RB: usize = 1;
const CLIENT: usize = 2;
const SERVER: usize = 3;
const ATTACKER: usize = 4;
const NS: usize = 5;

// Wires (more are added when the server moves).
const BACKBONE: usize = 0;
const CLIENT_LINK: usize = 1;

// rA's port 3 and rB's port 1 are where the server plugs in.
const RA_SPARE_PORT: u16 = 3;
const RB_SERVER_PORT: u16 = 1;

const ACCESS_DELAY: Duration = Duration::from_millis(5);
const BACKBONE_DELAY: Duration = Duration::from_millis(10);
const BEACON_INTERVAL: Duration = Duration::from_millis(50);
// The applications run at least this often (the server paces its sends).
const TICK: Duration = Duration::from_millis(5);

/// Bytes of the pattern each server connection sends, and how fast: long
/// enough that the moves and attacks below happen mid-stream.
const STREAM_BYTES: u64 = 300_000;
const RATE: u64 = 150_000; // bytes per second

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn key(principal: Principal, seed: u8) -> Identity {
    Identity::from_secret_bytes(principal, &[seed; 32])
}

/// The services the server offers, each with its own SID key.
fn service_key(n: u8) -> Identity {
    key(Principal::SID, 0x50 + n)
}

/// The attacker's own service key: valid, but not the server's.
fn thief_key() -> Identity {
    key(Principal::SID, 0x66)
}

fn ns_dag() -> Dag {
    Dag::path(&[
        AD_A,
        host_identity(NS).xid().with_principal(Principal::HID),
        NAME_SERVER_SID,
    ])
    .expect("three nodes")
}

fn host_identity(node: usize) -> Identity {
    key(Principal::HID, 0x10 + node as u8)
}

fn hid(node: usize) -> Xid {
    host_identity(node).xid().with_principal(Principal::HID)
}

enum Node {
    Router(Box<Router>),
    Host(Box<Host>),
}

struct Wire {
    ends: [(usize, u16); 2],
    delay: Duration,
    up: bool,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Arrival {
    at: Instant,
    order: u64,
    wire: usize,
    node: usize,
    port: u16,
    packet: Vec<u8>,
}

/// A server connection sending the pattern, paced at [`RATE`].
struct Upload {
    h: StreamHandle,
    start: Instant,
    sent: u64,
    closed: bool,
}

/// A client connection reading and checking the pattern.
struct Download {
    h: StreamHandle,
    got: u64,
    wrong: u64,
    finished: bool,
}

struct Net {
    now: Instant,
    nodes: Vec<Node>,
    wires: Vec<Wire>,
    queue: BinaryHeap<Reverse<Arrival>>,
    order: u64,
    next_tick: Instant,
    /// The wire the attacker reads, and what crossed it (either way).
    tap: usize,
    captured: Vec<Vec<u8>>,
    /// Every host's events, in order.
    log: Vec<Vec<HostEvent>>,
    listeners: Vec<ListenerHandle>,
    uploads: Vec<Upload>,
    downloads: Vec<Download>,
    unplugged_drops: u64,
}

fn host_mut(nodes: &mut [Node], i: usize) -> &mut Host {
    match &mut nodes[i] {
        Node::Host(h) => h,
        Node::Router(_) => panic!("node {i} is a router"),
    }
}

impl Net {
    /// The two ADs, with the attacker's tap on wire `tap`.
    fn new(tap: usize) -> Net {
        let router = |ad: Xid, hid: Xid, ports: u16, routes: &[(Xid, u16, Xid)]| {
            let mut cfg = RouterConfig::new(ad, hid, ports);
            cfg.xhcp_interval = Some(BEACON_INTERVAL);
            cfg.name_server = Some(ns_dag());
            let mut r = Router::new(cfg);
            for &(xid, port, next) in routes {
                r.tables_mut()
                    .insert(xid, Route::via(port, next))
                    .expect("room");
            }
            Node::Router(Box::new(r))
        };
        let ra = router(
            AD_A,
            RA_HID,
            4,
            &[
                (AD_B, 0, RB_HID),
                (hid(CLIENT), 1, hid(CLIENT)),
                (hid(NS), 2, hid(NS)),
            ],
        );
        let rb = router(
            AD_B,
            RB_HID,
            3,
            &[
                (AD_A, 0, RA_HID),
                (hid(SERVER), RB_SERVER_PORT, hid(SERVER)),
                (hid(ATTACKER), 2, hid(ATTACKER)),
            ],
        );
        let host = |node: usize, ad: Xid, gateway: Xid| {
            let mut cfg = HostConfig::new(host_identity(node), ad, Some(gateway));
            cfg.seed = 1000 + node as u64;
            let mut h = Host::new(cfg);
            h.set_name_server(ns_dag());
            if node == NS {
                h.serve_names(100);
            }
            Node::Host(Box::new(h))
        };
        let nodes = vec![
            ra,
            rb,
            host(CLIENT, AD_A, RA_HID),
            host(SERVER, AD_B, RB_HID),
            host(ATTACKER, AD_B, RB_HID),
            host(NS, AD_A, RA_HID),
        ];
        let wire = |a: (usize, u16), b: (usize, u16), delay| Wire {
            ends: [a, b],
            delay,
            up: true,
        };
        let wires = vec![
            wire((RA, 0), (RB, 0), BACKBONE_DELAY),
            wire((CLIENT, 0), (RA, 1), ACCESS_DELAY),
            wire((NS, 0), (RA, 2), ACCESS_DELAY),
            wire((SERVER, 0), (RB, RB_SERVER_PORT), ACCESS_DELAY),
            wire((ATTACKER, 0), (RB, 2), ACCESS_DELAY),
        ];
        let n = nodes.len();
        let mut net = Net {
            now: Instant::ZERO,
            nodes,
            wires,
            queue: BinaryHeap::new(),
            order: 0,
            next_tick: Instant::ZERO,
            tap,
            captured: Vec::new(),
            log: vec![Vec::new(); n],
            listeners: Vec::new(),
            uploads: Vec::new(),
            downloads: Vec::new(),
            unplugged_drops: 0,
        };
        // The server's services: it holds their keys, so it can sign
        // MIGRATEs for their connections when it moves.
        for n in 0..2 {
            let k = service_key(n);
            let server = host_mut(&mut net.nodes, SERVER);
            server.add_sid_key(k.clone());
            let l = server.listen(Some(k.xid())).expect("listen");
            net.listeners.push(l);
        }
        net
    }

    fn host(&self, i: usize) -> &Host {
        match &self.nodes[i] {
            Node::Host(h) => h,
            Node::Router(_) => panic!("node {i} is a router"),
        }
    }

    /// Runs `f` on host `i` now, and sends what it queued.
    fn with_host<R>(&mut self, i: usize, f: impl FnOnce(&mut Host, Instant) -> R) -> R {
        let now = self.now;
        let r = f(host_mut(&mut self.nodes, i), now);
        self.flush(i);
        r
    }

    /// The client opens a stream to service `n` on the server, where the
    /// server is now (AD B), and reads the pattern from it.
    fn download(&mut self, n: u8) -> StreamHandle {
        let dst = Dag::path(&[AD_B, hid(SERVER), service_key(n).xid()]).expect("three nodes");
        let h = self.with_host(CLIENT, |c, now| c.connect(&dst, now).expect("connect"));
        self.downloads.push(Download {
            h,
            got: 0,
            wrong: 0,
            finished: false,
        });
        h
    }

    /// Unplugs `host`'s port 0 and plugs it into `router`'s `port`.
    fn replug(&mut self, host: usize, router: usize, port: u16) {
        for w in &mut self.wires {
            if w.ends.contains(&(host, 0)) {
                w.up = false;
            }
        }
        self.wires.push(Wire {
            ends: [(host, 0), (router, port)],
            delay: ACCESS_DELAY,
            up: true,
        });
    }

    /// The attacker sends `packet` from its port, as is.
    fn inject(&mut self, packet: Vec<u8>) {
        self.transmit(ATTACKER, 0, packet);
    }

    fn transmit(&mut self, node: usize, port: u16, packet: Vec<u8>) {
        let Some(w) = self
            .wires
            .iter()
            .position(|w| w.up && w.ends.contains(&(node, port)))
        else {
            self.unplugged_drops += 1;
            return;
        };
        let wire = &self.wires[w];
        let (to, to_port) = if wire.ends[0] == (node, port) {
            wire.ends[1]
        } else {
            wire.ends[0]
        };
        if w == self.tap {
            self.captured.push(packet.clone());
        }
        self.order += 1;
        self.queue.push(Reverse(Arrival {
            at: self.now + wire.delay,
            order: self.order,
            wire: w,
            node: to,
            port: to_port,
            packet,
        }));
    }

    /// Sends what node `i` queued; keeps a host's events.
    fn flush(&mut self, i: usize) {
        let mut out = Vec::new();
        match &mut self.nodes[i] {
            Node::Router(r) => {
                while let Some(t) = r.poll_transmit() {
                    out.push((t.port, t.packet));
                }
                while r.poll_delivered().is_some() {}
            }
            Node::Host(h) => {
                while let Some(e) = h.poll_event() {
                    self.log[i].push(e);
                }
                while let Some(t) = h.poll_transmit() {
                    out.push((t.port, t.packet));
                }
            }
        }
        for (port, packet) in out {
            self.transmit(i, port, packet);
        }
    }

    fn timeout(&self, i: usize) -> Option<Instant> {
        match &self.nodes[i] {
            Node::Router(r) => r.poll_timeout(),
            Node::Host(h) => h.poll_timeout(),
        }
    }

    /// Runs every event up to `until`, then sets the clock to it.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..5_000_000 {
            let arrival = self.queue.peek().map(|Reverse(a)| a.at);
            let timer = (0..self.nodes.len()).filter_map(|i| self.timeout(i)).min();
            let next = [arrival, timer, Some(self.next_tick)]
                .into_iter()
                .flatten()
                .min()
                .expect("the tick is always there");
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if arrival == Some(next) {
                let Reverse(a) = self.queue.pop().expect("peeked");
                if !self.wires[a.wire].up {
                    self.unplugged_drops += 1;
                    continue;
                }
                match &mut self.nodes[a.node] {
                    Node::Router(r) => r.handle_packet(next, a.port, a.packet),
                    Node::Host(h) => h.handle_packet(next, a.port, a.packet),
                }
                self.flush(a.node);
            } else if timer == Some(next) {
                for i in 0..self.nodes.len() {
                    if self.timeout(i).is_some_and(|t| t <= next) {
                        match &mut self.nodes[i] {
                            Node::Router(r) => r.handle_timeout(next),
                            Node::Host(h) => h.handle_timeout(next),
                        }
                        self.flush(i);
                    }
                }
            } else {
                self.next_tick = next + TICK;
            }
            self.pump_apps();
        }
        panic!("the network did not settle by {until}");
    }

    /// The server accepts and sends the paced pattern; the client reads
    /// and checks it.
    fn pump_apps(&mut self) {
        let now = self.now;
        let mut buf = vec![0u8; 16 * 1024];
        let server = host_mut(&mut self.nodes, SERVER);
        for &l in &self.listeners {
            while let Some(h) = server.accept(l) {
                self.uploads.push(Upload {
                    h,
                    start: now,
                    sent: 0,
                    closed: false,
                });
            }
        }
        for u in &mut self.uploads {
            let elapsed = (now - u.start).as_nanos();
            let allowed =
                (u128::from(RATE) * elapsed / 1_000_000_000).min(u128::from(STREAM_BYTES)) as u64;
            while u.sent < allowed {
                let n = ((allowed - u.sent) as usize).min(buf.len());
                fill_stream(u.sent, &mut buf[..n]);
                match server.stream_write(u.h, &buf[..n], now) {
                    Ok(k) if k > 0 => u.sent += k as u64,
                    // Full, or not established yet: later.
                    _ => break,
                }
            }
            if u.sent == STREAM_BYTES && !u.closed {
                u.closed = server.stream_close(u.h, now).is_ok();
            }
        }
        let client = host_mut(&mut self.nodes, CLIENT);
        for d in &mut self.downloads {
            loop {
                let n = client.stream_read(d.h, &mut buf, now).expect("a stream");
                if n == 0 {
                    break;
                }
                d.wrong += stream_mismatches(d.got, &buf[..n]);
                d.got += n as u64;
            }
            if !d.finished && client.stream(d.h).is_some_and(Connection::is_read_finished) {
                d.finished = true;
                client.stream_close(d.h, now).expect("close");
            }
        }
        self.flush(SERVER);
        self.flush(CLIENT);
    }

    // ---- what the tests look at ----

    fn client_conn(&self, h: StreamHandle) -> &Connection {
        self.host(CLIENT).stream(h).expect("an open stream")
    }

    /// The client's events on stream `h`, in order.
    fn stream_events(&self, h: StreamHandle) -> impl Iterator<Item = &StreamEvent> + '_ {
        self.log[CLIENT].iter().filter_map(move |e| match e {
            HostEvent::Stream { stream, event } if *stream == h => Some(event),
            _ => None,
        })
    }

    /// The MIGRATEs the client refused on `h`, in order.
    fn refusals(&self, h: StreamHandle) -> Vec<MigrateError> {
        self.stream_events(h)
            .filter_map(|e| match e {
                StreamEvent::MigrateRefused(why) => Some(why.clone()),
                _ => None,
            })
            .collect()
    }

    /// The peer DAGs the client accepted on `h`, in order.
    fn peer_moves(&self, h: StreamHandle) -> Vec<Dag> {
        self.stream_events(h)
            .filter_map(|e| match e {
                StreamEvent::PeerMoved(dag) => Some(dag.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every download got the whole pattern, each byte once, and ended.
    fn assert_streams_whole(&self) {
        assert_eq!(self.downloads.len(), self.uploads.len(), "all accepted");
        for (k, d) in self.downloads.iter().enumerate() {
            let c = self.client_conn(d.h);
            assert_eq!(
                (d.got, d.wrong, d.finished, c.error()),
                (STREAM_BYTES, 0, true, None),
                "download {k}: {:?}",
                c.stats()
            );
        }
    }

    /// The XSTREAM segments the tap saw, in order.
    fn tapped_segments(&self) -> Vec<Tapped> {
        self.captured
            .iter()
            .filter_map(|p| {
                let repr = XipRepr::parse(&Packet::new_unchecked(&p[..])).ok()?;
                (repr.next_header == NextHeader::Xstream).then(|| Tapped {
                    seg: p[repr.header_len()..].to_vec(),
                    src: repr.src,
                    dst: repr.dst,
                })
            })
            .collect()
    }

    /// The segments the tap saw from SID `from` to SID `to`.
    fn tapped_between(&self, from: Xid, to: Xid) -> Vec<Tapped> {
        self.tapped_segments()
            .into_iter()
            .filter(|t| *t.src.intent() == from && *t.dst.intent() == to)
            .collect()
    }

    /// The first tapped segment from `from` to `to` carrying a MIGRATE
    /// with sequence number `seq`, and that MIGRATE.
    fn tapped_migrate(&self, from: Xid, to: Xid, seq: u32) -> (Tapped, Migrate) {
        self.tapped_between(from, to)
            .into_iter()
            .find_map(|t| {
                let m = t.migrate().filter(|m| m.seq == seq)?;
                Some((t, m))
            })
            .unwrap_or_else(|| panic!("no MIGRATE {seq} from {from} to {to} on the tap"))
    }

    /// What binds a MIGRATE to the client's connection `h` (its two
    /// initial sequence numbers, the smaller first), as an on-path
    /// observer reads it from the SYN and SYN|ACK.
    fn tapped_context(&self, h: StreamHandle) -> Vec<u8> {
        let id = self.client_conn(h).id();
        let isn = |from: Xid, to: Xid, flags: Flags| {
            self.tapped_between(from, to)
                .iter()
                .map(Tapped::repr)
                .find(|s| s.flags.contains(flags))
                .expect("the handshake was tapped")
                .seq
        };
        let ours = isn(id.local, id.peer, Flags::SYN);
        let theirs = isn(id.peer, id.local, Flags::SYN | Flags::ACK);
        let (a, b) = (ours.min(theirs), ours.max(theirs));
        [a.to_be_bytes(), b.to_be_bytes()].concat()
    }

    /// A bare ACK to the client's connection `h`, spoofed from the
    /// server's SID at `from`, carrying `body` as its MIGRATE, with the
    /// sequence numbers of the last segment the tap saw on it.
    fn forged_ack(&self, h: StreamHandle, from: &Dag, body: Vec<u8>) -> Vec<u8> {
        let c = self.client_conn(h);
        let last = self
            .tapped_between(c.id().peer, c.id().local)
            .pop()
            .expect("the connection was tapped");
        let last = last.repr();
        let seg = XstreamRepr {
            next_header: 0,
            flags: Flags::ACK,
            seq: last.seq.wrapping_add(last.payload.len() as u32),
            ack: last.ack,
            window: last.window,
            options: vec![XstreamOption::Migrate(body)],
            payload: &[],
        }
        .to_bytes()
        .expect("a segment");
        xip(c.local_dag(), from, &seg)
    }
}

/// A segment the tap saw, with its addresses.
struct Tapped {
    src: Dag,
    dst: Dag,
    seg: Vec<u8>,
}

impl Tapped {
    fn repr(&self) -> XstreamRepr<'_> {
        XstreamRepr::parse(&self.seg).expect("a tapped segment parses")
    }

    fn migrate(&self) -> Option<Migrate> {
        self.repr().options.iter().find_map(|o| match o {
            XstreamOption::Migrate(body) => Migrate::parse(body).ok(),
            _ => None,
        })
    }

    fn migrate_body(&self) -> Vec<u8> {
        self.migrate().expect("a MIGRATE").to_bytes()
    }

    /// The same segment, from the same addresses, in a fresh XIP header
    /// (the walk state routers wrote on the way is reset, as a replaying
    /// attacker would).
    fn replay(&self) -> Vec<u8> {
        xip(&self.dst, &self.src, &self.seg)
    }
}

/// An XSTREAM packet from `src` to `dst`.
fn xip(dst: &Dag, src: &Dag, seg: &[u8]) -> Vec<u8> {
    XipRepr::new(dst.clone(), src.clone(), NextHeader::Xstream, 0)
        .to_bytes(seg)
        .expect("fits")
}

fn server_dag(ad: Xid, service: u8) -> Dag {
    Dag::path(&[ad, hid(SERVER), service_key(service).xid()]).expect("three nodes")
}

// ---- 1. forgeries, no legitimate move ----

/// MIGRATEs forged by an attacker in the server's AD, claiming the
/// server's SID: signed with the attacker's own key, carrying the
/// server's real public key over the attacker's signature, and validly
/// signed for the attacker's own SID; and a body cut short. Each is
/// refused, counted and reported, and the stream goes on; the same
/// injection path delivers a genuinely signed MIGRATE, which is accepted,
/// so the refusals are the checks' doing.
#[test]
fn forged_migrates_are_refused_and_the_stream_survives() {
    let mut net = Net::new(CLIENT_LINK);
    let h = net.download(0);
    net.run_until(ms(300));
    assert!(net.downloads[0].got > 0, "the stream runs");
    let c = net.client_conn(h);
    let (client_sid, sid) = (c.id().local, c.id().peer);
    let home = c.peer_dag().clone();
    assert_eq!(home, server_dag(AD_B, 0));
    let ctx = net.tapped_context(h);
    let thief = thief_key();
    // Where the attacker wants the client's segments: its own host.
    let attacker_dag = Dag::path(&[AD_B, hid(ATTACKER), sid]).expect("three nodes");

    // (a) The wrong key: the attacker signs with its own key, claiming
    // the server's SID.
    let mut wrong_key = Migrate::sign(
        &thief,
        &client_sid,
        &ctx,
        Dag::path(&[AD_B, hid(ATTACKER), thief.xid()]).expect("three nodes"),
        1_000,
        1,
    )
    .expect("signs");
    wrong_key.new_dag = attacker_dag;
    // (b) The server's public key (it is public: name registrations
    // carry it) over the attacker's signature.
    let mut bad_sig = wrong_key.clone();
    bad_sig.key = service_key(0).public_key();
    // (c) A valid signature, by the attacker for its own SID.
    let own_sid = Migrate::sign(
        &thief,
        &client_sid,
        &ctx,
        Dag::path(&[AD_B, hid(ATTACKER), thief.xid()]).expect("three nodes"),
        1_000,
        1,
    )
    .expect("signs");
    // (d) Not a MIGRATE body at all: cut short.
    let truncated = wrong_key.to_bytes()[..60].to_vec();
    let attacks = [
        (wrong_key.to_bytes(), MigrateError::WrongKey(sid)),
        (bad_sig.to_bytes(), MigrateError::BadSignature),
        (
            own_sid.to_bytes(),
            MigrateError::IntentMismatch {
                want: sid,
                got: thief.xid(),
            },
        ),
        (truncated, MigrateError::Malformed("truncated")),
    ];
    let mut want = Vec::new();
    let mut t = 400;
    for (body, why) in attacks {
        let p = net.forged_ack(h, &home, body);
        net.inject(p);
        t += 100;
        net.run_until(ms(t));
        want.push(why);
        assert_eq!(net.refusals(h), want);
        let c = net.client_conn(h);
        assert_eq!(c.stats().migrates_refused, want.len() as u64);
        assert_eq!(c.peer_dag(), &home, "the peer stays where it was");
        assert!(net.downloads[0].got < STREAM_BYTES, "still mid-stream");
    }
    assert!(net.peer_moves(h).is_empty());

    // The control: the same path, a MIGRATE signed with the server's key
    // (here naming the place the server really is) is accepted.
    let genuine =
        Migrate::sign(&service_key(0), &client_sid, &ctx, home.clone(), 1_000, 1).expect("signs");
    let p = net.forged_ack(h, &home, genuine.to_bytes());
    net.inject(p);
    net.run_until(ms(t + 100));
    assert_eq!(net.peer_moves(h), vec![home.clone()]);
    assert_eq!(net.client_conn(h).stats().peer_moves, 1);

    net.run_until(ms(4_000));
    net.assert_streams_whole();
    let c = net.client_conn(h);
    assert_eq!(c.peer_dag(), &home);
    assert_eq!(c.stats().migrates_refused, 4);
    // Nothing of the connection ever reached the attacker's host.
    assert_eq!(net.host(ATTACKER).counters().no_socket, 0);
    // The server's end saw none of it.
    let server = net.host(SERVER);
    let s = server.stream(net.uploads[0].h).expect("open").stats();
    assert_eq!((s.migrates_refused, s.peer_moves), (0, 0));
}

// ---- 2. legitimate moves, replays, stale and misdirected MIGRATEs ----

/// The server moves from AD B to AD A and back, signing a MIGRATE each
/// time for each of its three connections with the client: two to
/// service 0 (`a`, `b`), one to service 1 (`c`). The client accepts them
/// (the control). The attacker records them off the client's link and
/// replays them — the latest again, the first after the second move, one
/// connection's on another connection of the same service, another
/// service's on connection `a` — and a MIGRATE validly signed by the
/// service's key but with an older clock arrives. Only the genuine moves
/// change the peer; every stream ends whole.
#[test]
fn legitimate_moves_are_followed_and_replays_are_refused() {
    let mut net = Net::new(CLIENT_LINK);
    let a = net.download(0);
    let b = net.download(0);
    let c = net.download(1);
    net.run_until(ms(400));
    let (at_b, at_a) = (server_dag(AD_B, 0), server_dag(AD_A, 0));
    let sid = service_key(0).xid();
    let sid_of = |net: &Net, h| net.client_conn(h).id().local;
    let (a_sid, c_sid) = (sid_of(&net, a), sid_of(&net, c));
    for h in [a, b] {
        assert_eq!(net.client_conn(h).peer_dag(), &at_b);
    }

    // The server moves to AD A: it hears rA's beacon, registers with rA
    // and signs MIGRATE 1 on each connection.
    net.replug(SERVER, RA, RA_SPARE_PORT);
    net.run_until(ms(650));
    assert_eq!(net.host(SERVER).dag().nodes()[0].xid, AD_A);
    assert_eq!(net.peer_moves(a), vec![at_a.clone()], "the control");
    assert_eq!(net.peer_moves(b), vec![at_a.clone()]);
    assert_eq!(net.peer_moves(c), vec![server_dag(AD_A, 1)]);
    for h in [a, b, c] {
        assert_eq!(net.client_conn(h).stats().peer_moves, 1);
        assert!(net.refusals(h).is_empty());
    }
    for u in &net.uploads {
        let s = net.host(SERVER).stream(u.h).expect("open");
        assert!(!s.migrate_pending(), "the client acknowledged it");
    }
    let (first_a, m1) = net.tapped_migrate(sid, a_sid, 1);
    assert_eq!(m1.new_dag, at_a);
    let (first_c, _) = net.tapped_migrate(service_key(1).xid(), c_sid, 1);

    // The latest MIGRATE, replayed byte for byte: taken as a repeat whose
    // acknowledgement was lost — acknowledged again, and nothing moves or
    // is refused.
    let acks = |net: &Net| {
        net.tapped_between(a_sid, sid)
            .iter()
            .filter(|t| {
                t.repr()
                    .options
                    .iter()
                    .any(|o| matches!(o, XstreamOption::MigrateAck(_)))
            })
            .count()
    };
    let acks_before = acks(&net);
    net.inject(first_a.replay());
    net.run_until(ms(700));
    assert!(
        acks(&net) > acks_before,
        "the replay reached the connection"
    );
    assert_eq!(net.client_conn(a).peer_dag(), &at_a);
    assert_eq!(net.client_conn(a).stats().peer_moves, 1);
    assert!(net.refusals(a).is_empty());

    // Service 1's genuine MIGRATE on connection a (service 0's): a valid
    // signature for another SID.
    let p = net.forged_ack(a, &at_a, first_c.migrate_body());
    net.inject(p);
    net.run_until(ms(750));
    assert_eq!(
        net.refusals(a),
        vec![MigrateError::IntentMismatch {
            want: sid,
            got: service_key(1).xid()
        }]
    );
    // Connection a's genuine MIGRATE on connection b, same service: a
    // valid signature for another connection.
    let p = net.forged_ack(b, &at_a, first_a.migrate_body());
    net.inject(p);
    net.run_until(ms(800));
    assert_eq!(net.refusals(b), vec![MigrateError::BadSignature]);
    for h in [a, b] {
        assert_eq!(net.client_conn(h).peer_dag(), &at_a);
    }

    // The server moves back to AD B: MIGRATE 2.
    net.replug(SERVER, RB, RB_SERVER_PORT);
    net.run_until(ms(1_050));
    assert_eq!(net.host(SERVER).dag().nodes()[0].xid, AD_B);
    assert_eq!(net.peer_moves(a), vec![at_a.clone(), at_b.clone()]);
    assert_eq!(net.peer_moves(b), vec![at_a.clone(), at_b.clone()]);
    let (_, m2) = net.tapped_migrate(sid, a_sid, 2);
    assert!(m2.timestamp_ms > m1.timestamp_ms);

    // MIGRATE 1 replayed: it would send a's segments to AD A, where the
    // server no longer is.
    net.inject(first_a.replay());
    net.run_until(ms(1_100));
    assert_eq!(
        net.refusals(a)[1..],
        [MigrateError::Replayed { seq: 1, last: 2 }]
    );
    assert_eq!(net.client_conn(a).peer_dag(), &at_b);

    // Stale: signed with the service's key and a higher sequence number,
    // but an older clock (as an old copy of the service, restored from a
    // snapshot elsewhere, would sign it).
    let stale = Migrate::sign(
        &service_key(0),
        &a_sid,
        &net.tapped_context(a),
        at_a.clone(),
        m2.timestamp_ms - 1,
        3,
    )
    .expect("signs");
    let p = net.forged_ack(a, &at_b, stale.to_bytes());
    net.inject(p);
    net.run_until(ms(1_150));
    assert_eq!(
        net.refusals(a)[2..],
        [MigrateError::Stale {
            ts: m2.timestamp_ms - 1,
            last: m2.timestamp_ms
        }]
    );
    assert!(
        net.downloads.iter().all(|d| d.got < STREAM_BYTES),
        "mid-stream"
    );

    net.run_until(ms(4_000));
    net.assert_streams_whole();
    for (h, refused, dag) in [(a, 3, &at_b), (b, 1, &at_b), (c, 0, &server_dag(AD_B, 1))] {
        let conn = net.client_conn(h);
        assert_eq!(conn.peer_dag(), dag);
        let s = conn.stats();
        assert_eq!((s.migrates_refused, s.peer_moves), (refused, 2), "{h:?}");
    }
}

// ---- 3. name updates ----

/// Name requests the tap saw: the sender's DAG and the request.
fn tapped_name_requests(net: &Net) -> Vec<(Dag, NameRequest)> {
    net.captured
        .iter()
        .filter_map(|p| {
            let repr = XipRepr::parse(&Packet::new_unchecked(&p[..])).ok()?;
            if repr.next_header != NextHeader::Xdgram || *repr.dst.intent() != NAME_SERVER_SID {
                return None;
            }
            let dg = XdgramRepr::parse(&p[repr.header_len()..]).ok()?;
            let (_, body) = split_message(dg.payload).ok()?;
            Some((repr.src, NameRequest::parse(body).ok()?))
        })
        .collect()
}

/// Name-server answers the tap saw (whoever they were for).
fn tapped_name_answers(net: &Net) -> Vec<Result<NameResponse, String>> {
    net.captured
        .iter()
        .filter_map(|p| {
            let repr = XipRepr::parse(&Packet::new_unchecked(&p[..])).ok()?;
            if repr.next_header != NextHeader::Xdgram || *repr.src.intent() != NAME_SERVER_SID {
                return None;
            }
            let dg = XdgramRepr::parse(&p[repr.header_len()..]).ok()?;
            let (_, body) = split_message(dg.payload).ok()?;
            NameResponse::parse(body).ok()
        })
        .collect()
}

impl Net {
    /// Host `i` sends `req` to the name server and waits for the answer.
    fn ask(&mut self, i: usize, req: NameRequest) -> Result<NameResponse, String> {
        let ns = ns_dag();
        let id = self.with_host(i, |h, now| h.name_request(now, &ns, &req).expect("sent"));
        let deadline = self.now + Duration::from_millis(200);
        self.run_until(deadline);
        self.log[i]
            .iter()
            .find_map(|e| match e {
                HostEvent::NameAnswer { id: got, answer } if *got == id => Some(answer.clone()),
                _ => None,
            })
            .expect("answered")
    }

    /// What the client resolves `name` to, through the network.
    fn resolve(&mut self, name: &str) -> (Dag, u64) {
        match self.ask(CLIENT, NameRequest::Resolve(name.into())) {
            Ok(NameResponse::Record { dag, seq, .. }) => (dag, seq),
            other => panic!("{name}: {other:?}"),
        }
    }
}

fn refusal(answer: Result<NameResponse, String>, want: &str) {
    match answer {
        Err(why) => assert!(why.contains(want), "{why:?} does not say {want:?}"),
        Ok(r) => panic!("accepted: {r:?}, wanted a refusal saying {want:?}"),
    }
}

/// The server's service 0 owns "video.example". The attacker, reading the
/// backbone, learns the registration (and the owner's public key) and
/// tries, from its own host through the routers to the name server in AD
/// A: its own SID under the name; the owner's SID at its own host under
/// its own key; the same with the owner's key and its own signature; the
/// owner's registration again; and, after the owner moved and updated its
/// record, the owner's older registration — as a request of its own and
/// as the captured packet. All are refused; the name resolves to the
/// owner's current DAG throughout, and the owner's own update (the
/// control) is accepted.
#[test]
fn name_updates_by_others_and_old_owner_updates_are_refused() {
    const NAME: &str = "video.example";
    let mut net = Net::new(BACKBONE);
    let owner = service_key(0);
    let thief = thief_key();
    let first = Registration::sign(&owner, NAME, &server_dag(AD_B, 0), 1).expect("signs");
    assert_eq!(
        net.ask(SERVER, NameRequest::Register(Box::new(first.clone()))),
        Ok(NameResponse::Registered { seq: 1 })
    );
    assert_eq!(net.resolve(NAME), (server_dag(AD_B, 0), 1));

    // What the attacker learnt on the backbone.
    let tapped = tapped_name_requests(&net);
    let (from, captured) = tapped
        .iter()
        .find_map(|(src, r)| match r {
            NameRequest::Register(reg) => Some((src.clone(), (**reg).clone())),
            _ => None,
        })
        .expect("the registration crossed the backbone");
    assert_eq!(captured, first);
    let owner_key = captured.key;
    let at_attacker = Dag::path(&[AD_B, hid(ATTACKER), owner.xid()]).expect("three nodes");

    let takeover = Registration::sign(
        &thief,
        NAME,
        &Dag::path(&[AD_B, hid(ATTACKER), thief.xid()]).expect("three nodes"),
        100,
    )
    .expect("signs");
    let wrong_key = Registration::sign(&thief, NAME, &at_attacker, 100).expect("signs");
    let mut bad_sig = wrong_key.clone();
    bad_sig.key = owner_key;
    for (reg, why) in [
        (takeover, "is owned by"),
        (wrong_key, "does not certify"),
        (bad_sig, "bad signature"),
        (first.clone(), "1 is not above 1"),
    ] {
        refusal(net.ask(ATTACKER, NameRequest::Register(Box::new(reg))), why);
        assert_eq!(net.resolve(NAME), (server_dag(AD_B, 0), 1));
    }

    // The owner moves to AD A and updates its record (the control).
    net.replug(SERVER, RA, RA_SPARE_PORT);
    net.run_until(net.now + Duration::from_millis(100));
    assert_eq!(net.host(SERVER).dag().nodes()[0].xid, AD_A);
    let update = Registration::sign(&owner, NAME, &server_dag(AD_A, 0), 2).expect("signs");
    assert_eq!(
        net.ask(SERVER, NameRequest::Register(Box::new(update))),
        Ok(NameResponse::Registered { seq: 2 })
    );
    assert_eq!(net.resolve(NAME), (server_dag(AD_A, 0), 2));

    // The older registration, as the attacker's own request ...
    refusal(
        net.ask(ATTACKER, NameRequest::Register(Box::new(first.clone()))),
        "1 is not above 2",
    );
    assert_eq!(net.resolve(NAME), (server_dag(AD_A, 0), 2));
    // ... and as the very packet the owner sent, from the owner's old
    // address: the refusal goes back there, across the backbone.
    let packet = net
        .captured
        .iter()
        .find(|p| {
            XipRepr::parse(&Packet::new_unchecked(&p[..]))
                .is_ok_and(|r| *r.dst.intent() == NAME_SERVER_SID && r.src == from)
        })
        .expect("tapped")
        .clone();
    let repr = XipRepr::parse(&Packet::new_unchecked(&packet[..])).expect("parses");
    let fresh = XipRepr::new(repr.dst.clone(), repr.src.clone(), NextHeader::Xdgram, 0)
        .to_bytes(&packet[repr.header_len()..])
        .expect("fits");
    let answers_before = tapped_name_answers(&net).len();
    net.inject(fresh);
    net.run_until(net.now + Duration::from_millis(200));
    let answers = tapped_name_answers(&net);
    assert_eq!(answers.len(), answers_before + 1);
    refusal(answers[answers_before].clone(), "1 is not above 2");
    assert_eq!(net.resolve(NAME), (server_dag(AD_A, 0), 2));
}

// ---- the harness can see a hijack ----

/// What the checks above guard against, so that their assertions can
/// fail: a MIGRATE to the attacker's host signed with the service's own
/// key (what a stack that skipped its checks would take from the
/// attacker) is accepted; the client's segments go to the attacker, and
/// the stream stalls.
#[test]
fn an_accepted_hijack_would_show() {
    let mut net = Net::new(CLIENT_LINK);
    let h = net.download(0);
    net.run_until(ms(300));
    let c = net.client_conn(h);
    let (client_sid, sid) = (c.id().local, c.id().peer);
    let home = c.peer_dag().clone();
    let to_attacker = Dag::path(&[AD_B, hid(ATTACKER), sid]).expect("three nodes");
    let m = Migrate::sign(
        &service_key(0),
        &client_sid,
        &net.tapped_context(h),
        to_attacker.clone(),
        1_000,
        1,
    )
    .expect("signs");
    net.inject(net.forged_ack(h, &home, m.to_bytes()));
    net.run_until(ms(4_000));
    assert_eq!(net.client_conn(h).peer_dag(), &to_attacker);
    assert!(net.host(ATTACKER).counters().no_socket > 0);
    let d = &net.downloads[0];
    assert!(!d.finished && d.got < STREAM_BYTES, "{}", d.got);
}

// ---- MIGRATEACK ----

/// The server moves while the client's link is out (120 ms): every
/// segment carrying its MIGRATE is lost. If `forge`, the attacker — who
/// saw the connection's SIDs on the client's link before — sends the
/// server one bare MIGRATEACK for sequence number 1 (always the first),
/// from the client's DAG, with made-up sequence and acknowledgement
/// numbers. Returns the network when the link is back, and the server's
/// connection.
fn move_during_an_outage(forge: bool) -> (Net, StreamHandle) {
    let mut net = Net::new(CLIENT_LINK);
    let h = net.download(0);
    net.run_until(ms(300));
    let sid = service_key(0).xid();
    let client_dag = net
        .tapped_segments()
        .into_iter()
        .find(|t| *t.dst.intent() == sid)
        .expect("tapped")
        .src;
    net.wires[CLIENT_LINK].up = false;
    net.replug(SERVER, RA, RA_SPARE_PORT);
    net.run_until(ms(380));
    let u = net.uploads[0].h;
    let server = net.host(SERVER).stream(u).expect("open");
    assert!(server.migrate_pending(), "moved, MIGRATE not acknowledged");
    assert_eq!(
        net.client_conn(h).stats().peer_moves,
        0,
        "nothing got through"
    );
    if forge {
        let seg = XstreamRepr {
            next_header: 0,
            flags: Flags::ACK,
            seq: 0x1234_5678,
            ack: 0x0bad_cafe,
            window: 1,
            options: vec![XstreamOption::MigrateAck(ack_bytes(1))],
            payload: &[],
        }
        .to_bytes()
        .expect("a segment");
        net.inject(xip(&server_dag(AD_A, 0), &client_dag, &seg));
    }
    net.run_until(ms(420));
    net.wires[CLIENT_LINK].up = true;
    (net, u)
}

/// The control for the next test: a MIGRATE lost in an outage is
/// repeated until the client acknowledges it, and the stream recovers.
#[test]
fn a_lost_migrate_is_repeated_until_acknowledged() {
    let (mut net, _) = move_during_an_outage(false);
    net.run_until(ms(6_000));
    net.assert_streams_whole();
    let h = net.downloads[0].h;
    assert_eq!(net.peer_moves(h), vec![server_dag(AD_A, 0)]);
}

/// A MIGRATEACK is not authenticated: one bare segment with made-up
/// sequence numbers, from anyone who once saw the connection's two SIDs,
/// used to make the mover stop repeating its MIGRATE; if the MIGRATE was
/// lost, the peer never learnt the new DAG and the connection was
/// stranded. Now an ack counts only on an acceptable segment.
#[test]
fn a_forged_migrate_ack_does_not_cancel_the_migrate() {
    let (mut net, u) = move_during_an_outage(true);
    let server = net.host(SERVER).stream(u).expect("open");
    assert!(
        server.migrate_pending(),
        "a forged MIGRATEACK (out of window) cancelled the server's MIGRATE"
    );
    net.run_until(ms(6_000));
    net.assert_streams_whole();
}
