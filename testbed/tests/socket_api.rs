//! The socket API as an application writer uses it: an echo service found
//! by name three ADs away, a datagram round trip (and a hop limit that is
//! too small), and a chunk published on one host and fetched from another.
//!
//! The network comes from a topology file like the shipped ones; the
//! harness below is the few lines any driver needs — it builds the routers
//! and hosts, carries packets over the links with their delays and runs
//! the nodes' timers — and the applications are plain code over
//! `xia_stack::socket`, reacting to the host events the driver hands them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use testbed::routes;
use testbed::topology::{NodeKind, Topology};
use xia_router::{Router, RouterConfig};
use xia_stack::host::{Host, HostConfig, HostEvent, NetError};
use xia_stack::identity::Identity;
use xia_stack::naming::NAME_SERVER_SID;
use xia_stack::socket::{
    fetch_chunk, put_chunk, register, resolve, SocketError, StreamState, XDatagram, XListener,
    XStream,
};
use xia_stack::stream::StreamEvent;
use xia_stack::time::Instant;
use xia_stack::xid::{Principal, Xid};

/// h1 in AD A reaches h2 in AD C through three routers; the name server
/// runs on hN in AD B and the routers announce it.
const TOPOLOGY: &str = r#"
[[ad]]
name = "A"
[[ad]]
name = "B"
[[ad]]
name = "C"
[[router]]
name = "rA"
ad = "A"
[[router]]
name = "rB"
ad = "B"
[[router]]
name = "rC"
ad = "C"
[[host]]
name = "h1"
ad = "A"
[[host]]
name = "h2"
ad = "C"
[[host]]
name = "hN"
ad = "B"
[[link]]
a = "h1"
b = "rA"
[[link]]
a = "rA"
b = "rB"
delay = "5ms"
[[link]]
a = "rB"
b = "rC"
delay = "5ms"
[[link]]
a = "rC"
b = "h2"
[[link]]
a = "hN"
b = "rB"
[name_server]
host = "hN"
[xhcp]
interval = "1s"
"#;

enum Node {
    Router(Box<Router>),
    Host(Box<Host>, Vec<HostEvent>),
}

/// A packet on a link: (arrival, order sent, node, port, bytes).
type InFlight = (Instant, u64, usize, u16, Vec<u8>);

/// A minimal driver: links are their delay (no loss, no queue limits).
struct Net {
    topo: Topology,
    ports: Vec<Vec<(usize, usize)>>,
    nodes: Vec<Node>,
    wire: BinaryHeap<Reverse<InFlight>>,
    sent: u64,
    now: Instant,
}

impl Net {
    fn new() -> Net {
        let topo = Topology::parse("socket-api.toml", TOPOLOGY).expect("a valid topology");
        let ports = routes::ports(&topo);
        let ns = topo.name_server.map(|i| {
            topo.node_dag(i)
                .append_xid(NAME_SERVER_SID)
                .expect("three nodes")
        });
        let mut nodes = Vec::new();
        for (i, n) in topo.nodes.iter().enumerate() {
            let ad = topo.ads[n.ad].xid;
            nodes.push(match n.kind {
                NodeKind::Router { .. } => {
                    let mut cfg = RouterConfig::new(ad, n.hid(), ports[i].len() as u16);
                    cfg.name_server = ns.clone();
                    cfg.xhcp_interval = topo.xhcp_interval;
                    let mut r = Router::new(cfg);
                    routes::install(&topo, &ports, i, r.tables_mut());
                    Node::Router(Box::new(r))
                }
                NodeKind::Host => {
                    let gateway = ports[i].first().map(|&(_, peer)| topo.nodes[peer].hid());
                    let mut cfg = HostConfig::new(n.identity.clone(), ad, gateway);
                    cfg.seed = i as u64;
                    let mut h = Host::new(cfg);
                    if let Some(ns) = &ns {
                        h.set_name_server(ns.clone());
                    }
                    if topo.name_server == Some(i) {
                        h.serve_names(100);
                    }
                    Node::Host(Box::new(h), Vec::new())
                }
            });
        }
        Net {
            topo,
            ports,
            nodes,
            wire: BinaryHeap::new(),
            sent: 0,
            now: Instant::ZERO,
        }
    }

    fn index(&self, name: &str) -> usize {
        self.topo
            .nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// A host, to call the socket API on.
    fn host(&mut self, name: &str) -> &mut Host {
        let i = self.index(name);
        match &mut self.nodes[i] {
            Node::Host(h, _) => h,
            Node::Router(_) => panic!("{name} is a router"),
        }
    }

    /// The events a host raised since the last call.
    fn events(&mut self, name: &str) -> Vec<HostEvent> {
        let i = self.index(name);
        match &mut self.nodes[i] {
            Node::Host(_, evs) => std::mem::take(evs),
            Node::Router(_) => Vec::new(),
        }
    }

    /// Puts what every node sent on the wire, and collects host events.
    fn flush(&mut self) {
        for i in 0..self.nodes.len() {
            let mut out = Vec::new();
            match &mut self.nodes[i] {
                Node::Router(r) => {
                    while r.poll_delivered().is_some() {}
                    while let Some(t) = r.poll_transmit() {
                        out.push((t.port, t.packet));
                    }
                }
                Node::Host(h, evs) => {
                    evs.extend(std::iter::from_fn(|| h.poll_event()));
                    while let Some(t) = h.poll_transmit() {
                        out.push((t.port, t.packet));
                    }
                }
            }
            for (port, packet) in out {
                let Some(&(link, peer)) = self.ports[i].get(port as usize) else {
                    continue;
                };
                let peer_port = self.ports[peer]
                    .iter()
                    .position(|&(l, _)| l == link)
                    .expect("links join both ends") as u16;
                let delay = self.topo.links[link].delay + Duration::from_micros(10);
                self.sent += 1;
                self.wire.push(Reverse((
                    self.now + delay,
                    self.sent,
                    peer,
                    peer_port,
                    packet,
                )));
            }
        }
    }

    /// Advances to the next arrival or timer and handles everything due
    /// then.
    fn step(&mut self) {
        self.flush();
        let timers = self.nodes.iter().filter_map(|n| match n {
            Node::Router(r) => r.poll_timeout(),
            Node::Host(h, _) => h.poll_timeout(),
        });
        let arrival = self.wire.peek().map(|Reverse(p)| p.0);
        let Some(next) = timers.chain(arrival).min() else {
            panic!("nothing left to happen at {}", self.now);
        };
        self.now = self.now.max(next);
        while self.wire.peek().is_some_and(|Reverse(p)| p.0 <= self.now) {
            let Reverse((_, _, node, port, packet)) = self.wire.pop().expect("peeked");
            match &mut self.nodes[node] {
                Node::Router(r) => r.handle_packet(self.now, port, packet),
                Node::Host(h, _) => h.handle_packet(self.now, port, packet),
            }
        }
        for n in &mut self.nodes {
            match n {
                Node::Router(r) if r.poll_timeout().is_some_and(|t| t <= self.now) => {
                    r.handle_timeout(self.now)
                }
                Node::Host(h, _) if h.poll_timeout().is_some_and(|t| t <= self.now) => {
                    h.handle_timeout(self.now)
                }
                _ => {}
            }
        }
        self.flush();
    }

    /// Steps until `done` (given each step's events of `host`) holds;
    /// panics after `limit` of virtual time.
    fn run_until(
        &mut self,
        host: &str,
        limit: Duration,
        mut done: impl FnMut(&[HostEvent]) -> bool,
    ) {
        let deadline = self.now + limit;
        loop {
            self.step();
            let evs = self.events(host);
            if done(&evs) {
                return;
            }
            assert!(self.now < deadline, "gave up at {}", self.now);
        }
    }
}

/// The echo service on h2: accepts connections and writes back what it
/// reads; closes a connection when its client has.
struct EchoServer {
    listener: XListener,
    conns: Vec<(XStream, Vec<u8>, bool)>,
    echoed: usize,
}

impl EchoServer {
    fn on_events(&mut self, host: &mut Host, now: Instant, events: &[HostEvent]) {
        for e in events {
            if self.listener.matches(e) {
                while let Ok(s) = self.listener.accept(host) {
                    self.conns.push((s, Vec::new(), false));
                }
            }
        }
        let mut buf = [0u8; 4096];
        for (s, pending, closed) in &mut self.conns {
            loop {
                match s.read(host, now, &mut buf) {
                    Ok(0) => {
                        if pending.is_empty() && !*closed {
                            s.close(host, now).unwrap();
                            *closed = true;
                        }
                        break;
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(SocketError::WouldBlock) => break,
                    Err(e) => panic!("echo server: {e}"),
                }
            }
            while !pending.is_empty() {
                match s.write(host, now, pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        self.echoed += n;
                    }
                    Err(SocketError::WouldBlock) => break,
                    Err(e) => panic!("echo server: {e}"),
                }
            }
        }
    }
}

#[test]
fn a_client_resolves_a_service_connects_and_gets_its_bytes_echoed() {
    let mut net = Net::new();

    // The service: listen on its SID and register its name, signed by the
    // SID's key.
    let key = Identity::from_secret_bytes(Principal::SID, &[0x42; 32]);
    let h2 = net.host("h2");
    let listener = XListener::bind(h2, Some(key.xid())).unwrap();
    let dag = listener.local_dag(h2).unwrap();
    let reg = register(h2, Instant::ZERO, &key, "echo.example", &dag, 1).unwrap();
    net.run_until("h2", Duration::from_secs(1), |evs| {
        evs.iter().any(|e| reg.answer(e) == Some(Ok(1)))
    });

    // The client asks for the name explicitly once…
    let now = net.now;
    let q = resolve(net.host("h1"), now, "echo.example").unwrap();
    let mut found = None;
    net.run_until("h1", Duration::from_secs(1), |evs| {
        found = evs.iter().find_map(|e| q.answer(e));
        found.is_some()
    });
    assert_eq!(found, Some(Ok(dag.clone())));

    // …and then simply connects by name.
    let message: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let now = net.now;
    let client = XStream::connect(net.host("h1"), now, "echo.example").unwrap();
    assert_eq!(client.state(net.host("h1")), StreamState::Resolving);
    let mut server = EchoServer {
        listener,
        conns: Vec::new(),
        echoed: 0,
    };
    let (mut written, mut echo, mut closed) = (0, Vec::new(), false);
    let mut resolved = false;
    let deadline = net.now + Duration::from_secs(10);
    while !matches!(client.state(net.host("h1")), StreamState::Closed) {
        net.step();
        let now = net.now;
        let evs = net.events("h2");
        server.on_events(net.host("h2"), now, &evs);
        let evs = net.events("h1");
        let h1 = net.host("h1");
        for e in evs.iter().filter(|e| client.matches(e)) {
            match e {
                HostEvent::Resolved { result, .. } => {
                    assert_eq!(result, &Ok(dag.clone()));
                    resolved = true;
                }
                HostEvent::Stream {
                    event: StreamEvent::Error(err),
                    ..
                } => panic!("client: {err}"),
                _ => {}
            }
        }
        // Write what fits, read what came back, close when all is sent.
        while written < message.len() {
            match client.write(h1, now, &message[written..]) {
                Ok(n) => written += n,
                Err(SocketError::WouldBlock) => break,
                Err(e) => panic!("client write: {e}"),
            }
        }
        if written == message.len() && !closed {
            client.close(h1, now).unwrap();
            closed = true;
        }
        let mut buf = [0u8; 4096];
        loop {
            match client.read(h1, now, &mut buf) {
                Ok(0) | Err(SocketError::WouldBlock) => break,
                Ok(n) => echo.extend_from_slice(&buf[..n]),
                Err(e) => panic!("client read: {e}"),
            }
        }
        assert!(net.now < deadline, "unfinished at {}", net.now);
    }
    assert!(resolved);
    assert_eq!(server.echoed, message.len());
    assert_eq!(echo, message, "every byte came back, in order");
    let conn = client.connection(net.host("h1")).unwrap();
    assert_eq!(conn.stats().retransmissions, 0, "a clean network");
    assert_eq!(conn.peer_dag(), &dag);
}

#[test]
fn a_datagram_round_trip_and_a_hop_limit_too_small() {
    let mut net = Net::new();
    let sid = Xid::new(Principal::SID, [0xd6; 20]);
    let server = XDatagram::bind(net.host("h2"), Some(sid)).unwrap();
    let to_server = server.local_dag(net.host("h2")).unwrap();
    let client = XDatagram::bind(net.host("h1"), None).unwrap();
    client
        .send_to(net.host("h1"), &to_server, b"what time is it?")
        .unwrap();
    net.run_until("h2", Duration::from_secs(1), |evs| {
        evs.iter().any(|e| server.matches(e))
    });
    let mut buf = [0u8; 1500];
    let h2 = net.host("h2");
    let (n, from) = server.recv_from(h2, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"what time is it?");
    assert_eq!(from, client.local_dag(net.host("h1")).unwrap());
    let h2 = net.host("h2");
    server.send_to(h2, &from, b"time to go").unwrap();
    net.run_until("h1", Duration::from_secs(1), |evs| {
        evs.iter().any(|e| client.matches(e))
    });
    let (n, _) = client.recv_from(net.host("h1"), &mut buf).unwrap();
    assert_eq!(&buf[..n], b"time to go");
    assert_eq!(
        client.recv_from(net.host("h1"), &mut buf),
        Err(SocketError::WouldBlock)
    );

    // A hop limit of 3 is spent by h1 itself, rA and rB: rB says so.
    client.set_hop_limit(net.host("h1"), 3).unwrap();
    client.send_to(net.host("h1"), &to_server, b"far?").unwrap();
    let mut error = None;
    net.run_until("h1", Duration::from_secs(1), |evs| {
        error = evs.iter().find_map(|e| match e {
            HostEvent::Error {
                socket: Some(s),
                error,
                ..
            } if *s == client.handle() => Some(error.clone()),
            _ => None,
        });
        error.is_some()
    });
    match error {
        Some(NetError::TimeExceeded { from }) => {
            assert_eq!(net.topo.name_of(from.intent()).as_deref(), Some("rB"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_chunk_published_on_one_host_is_fetched_from_another() {
    let mut net = Net::new();
    let chunk: Vec<u8> = (0..30_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let dag = put_chunk(net.host("h2"), &chunk).unwrap();
    assert_eq!(*dag.intent(), Xid::cid_of(&chunk));
    let now = net.now;
    let fetch = fetch_chunk(net.host("h1"), now, &dag).unwrap();
    let mut got = None;
    net.run_until("h1", Duration::from_secs(5), |evs| {
        got = evs
            .iter()
            .find_map(|e| fetch.result(e))
            .map(|r| r.map(<[u8]>::to_vec));
        got.is_some()
    });
    assert_eq!(got, Some(Ok(chunk)));
}
