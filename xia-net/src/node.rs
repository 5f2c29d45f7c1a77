//! The driver: one tokio task that owns a core, feeds it packets from its
//! UDP links and its timer from the runtime, and sends what it emits.
//!
//! The core is never shared. Anything else that needs it — an
//! application's socket call, a `stats` request — sends a closure through
//! a [`NodeHandle`]; the driver runs it between packets, with `now`, and
//! then flushes what it caused. That keeps the cores single-threaded and
//! deterministic given their inputs, exactly as in the simulator.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;

use tokio::sync::{mpsc, oneshot};
use xia_router::Router;
use xia_stack::forward::{PortId, Transmit};
use xia_stack::host::Host;
use xia_stack::time::Instant;
use xia_stack::xid::Xid;

use crate::clock::Clock;
use crate::udp::UdpLinks;

/// What the driver needs of a node: the sans-IO core's calls, plus a hook
/// after each step to hand its events to whoever waits for them.
pub trait Node: Send + 'static {
    /// A packet arrived on `port`.
    fn handle_packet(&mut self, now: Instant, port: PortId, packet: Vec<u8>);
    /// The timer fired.
    fn handle_timeout(&mut self, now: Instant);
    /// When the timer should fire next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next packet to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// Called after every packet, timer and command.
    fn after_step(&mut self, _now: Instant) {}
}

impl Node for Router {
    fn handle_packet(&mut self, now: Instant, port: PortId, packet: Vec<u8>) {
        Router::handle_packet(self, now, port, packet);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Router::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Router::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Router::poll_transmit(self)
    }
    fn after_step(&mut self, _now: Instant) {
        // Nothing runs on a router's own services yet: drop what was
        // delivered to it (echo, routing and XHCP are handled inside).
        while self.poll_delivered().is_some() {}
    }
}

impl Node for Host {
    fn handle_packet(&mut self, now: Instant, port: PortId, packet: Vec<u8>) {
        Host::handle_packet(self, now, port, packet);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Host::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Host::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Host::poll_transmit(self)
    }
}

/// Sees every packet the node receives (`sent` false) or sends (`sent`
/// true, when it leaves, after any impairment delay), with the port: for
/// pcaps and tracing.
pub type Tap = Box<dyn FnMut(Instant, bool, PortId, &[u8]) + Send>;

/// A packet held back by a link impairment: (release, order, port, next
/// hop, bytes).
type Held = Reverse<(Instant, u64, PortId, Option<Xid>, Vec<u8>)>;

/// A packet to send: port, next hop (for XARP), bytes.
type Out = (PortId, Option<Xid>, Vec<u8>);

/// What a port is.
#[derive(Clone, Copy, Debug)]
enum PortKind {
    /// The `i`-th peer of the UDP links.
    Udp(PortId),
    /// The `i`-th Ethernet interface.
    Ether(usize),
}

/// An Ethernet port: the interface and its neighbour resolution.
struct EtherPort {
    link: crate::ether::EtherLink,
    xarp: crate::xarp::Resolver,
    port: PortId,
}

/// A call to run on the node inside its driver.
type Call<N> = Box<dyn FnOnce(&mut N, Instant) + Send>;

/// Sends calls to a running node.
pub struct NodeHandle<N> {
    tx: mpsc::Sender<Call<N>>,
}

impl<N> Clone for NodeHandle<N> {
    fn clone(&self) -> Self {
        NodeHandle {
            tx: self.tx.clone(),
        }
    }
}

/// The node's driver has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node has stopped")]
pub struct Stopped;

impl<N: Node> NodeHandle<N> {
    /// Runs `f` on the node (between packets, with the current time) and
    /// returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut N, Instant) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let (tx, rx) = oneshot::channel();
        let call: Call<N> = Box::new(move |n, now| {
            let _ = tx.send(f(n, now));
        });
        self.tx.send(call).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// A node with its links, ready to [`run`](Driver::run).
pub struct Driver<N> {
    node: N,
    clock: Clock,
    links: UdpLinks,
    ports: Vec<PortKind>,
    // UDP peer index to port.
    udp_port: Vec<PortId>,
    ether: Vec<EtherPort>,
    ether_rx: mpsc::Receiver<(usize, Vec<u8>)>,
    ether_tx: mpsc::Sender<(usize, Vec<u8>)>,
    calls: mpsc::Receiver<Call<N>>,
    handle: NodeHandle<N>,
    held: BinaryHeap<Held>,
    order: u64,
    impair: Vec<Option<crate::impair::Direction>>,
    tap: Option<Tap>,
}

impl<N: Node> Driver<N> {
    /// A driver for `node` on `links`, with time from `clock`.
    pub fn new(node: N, links: UdpLinks, clock: Clock) -> Driver<N> {
        let (tx, calls) = mpsc::channel(1024);
        let (ether_tx, ether_rx) = mpsc::channel(4096);
        let n = links.peers().len() as PortId;
        Driver {
            node,
            clock,
            links,
            ports: (0..n).map(PortKind::Udp).collect(),
            udp_port: (0..n).collect(),
            ether: Vec::new(),
            ether_rx,
            ether_tx,
            calls,
            handle: NodeHandle { tx },
            held: BinaryHeap::new(),
            order: 0,
            impair: Vec::new(),
            tap: None,
        }
    }

    /// Numbers the ports: `order[i]` says what port `i` is — `None` for
    /// the next UDP peer (in the order of the links' peers), `Some(k)` for
    /// the `k`-th interface given to [`Driver::add_ethernet`]. By default
    /// the UDP peers are ports 0, 1, … and interfaces follow.
    pub fn set_port_order(&mut self, order: &[Option<usize>]) {
        let mut udp = 0;
        self.ports.clear();
        self.udp_port.clear();
        for (i, o) in order.iter().enumerate() {
            match o {
                None => {
                    self.ports.push(PortKind::Udp(udp));
                    self.udp_port.push(i as PortId);
                    udp += 1;
                }
                Some(k) => self.ports.push(PortKind::Ether(*k)),
            }
        }
        for (k, e) in self.ether.iter_mut().enumerate() {
            if let Some(p) = self
                .ports
                .iter()
                .position(|x| matches!(x, PortKind::Ether(j) if *j == k))
            {
                e.port = p as PortId;
            }
        }
    }

    /// Adds a raw Ethernet port (after the UDP ones unless
    /// [`Driver::set_port_order`] says otherwise); `hid` is the node's
    /// HID, which it answers XARP for. Returns its port.
    pub fn add_ethernet(&mut self, mut link: crate::ether::EtherLink, hid: Xid) -> PortId {
        let k = self.ether.len();
        let port = self.ports.len() as PortId;
        link.start_reader(k, self.ether_tx.clone());
        self.ether.push(EtherPort {
            xarp: crate::xarp::Resolver::new(link.mac(), hid),
            link,
            port,
        });
        self.ports.push(PortKind::Ether(k));
        port
    }

    /// Shows every packet to `tap` (see [`Tap`]).
    pub fn set_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// Impairs what this node sends on `port` (delay, jitter, rate, loss,
    /// reordering, duplication), with its own seeded randomness.
    pub fn impair(&mut self, port: PortId, direction: crate::impair::Direction) {
        let i = usize::from(port);
        if self.impair.len() <= i {
            self.impair.resize_with(i + 1, || None);
        }
        self.impair[i] = Some(direction);
    }

    /// A handle to send calls to the node while it runs.
    pub fn handle(&self) -> NodeHandle<N> {
        self.handle.clone()
    }

    /// Runs until `shutdown` completes (or a socket fails); returns the
    /// node, so its final state can be inspected.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> io::Result<N> {
        tokio::pin!(shutdown);
        let mut inbox = Vec::with_capacity(crate::udp::BATCH);
        // The node's first timer (beacons, HELLOs) is due at once.
        self.step(|n, now| n.handle_timeout(now)).await?;
        loop {
            let timer = self.node.poll_timeout();
            let release = self.held.peek().map(|Reverse(h)| h.0);
            let xarp = self
                .ether
                .iter()
                .filter_map(|e| e.xarp.poll_timeout())
                .min();
            let wake = [timer, release, xarp].into_iter().flatten().min();
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(self.clock.deadline(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                r = self.links.recv(&mut inbox) => {
                    r?;
                    let mut packets = std::mem::take(&mut inbox);
                    for (port, _) in packets.iter_mut() {
                        *port = self.udp_port.get(usize::from(*port)).copied().unwrap_or(*port);
                    }
                    if let Some(tap) = self.tap.as_mut() {
                        let now = self.clock.now();
                        for (port, p) in &packets {
                            tap(now, false, *port, p);
                        }
                    }
                    self.step(move |n, now| {
                        for (port, p) in packets.drain(..) {
                            n.handle_packet(now, port, p);
                        }
                    }).await?;
                }
                Some((k, frame)) = self.ether_rx.recv() => {
                    let now = self.clock.now();
                    let e = &mut self.ether[k];
                    let port = e.port;
                    let packet = e.xarp.handle_frame(now, &frame);
                    self.flush_ether(k);
                    if let Some(p) = packet {
                        if let Some(tap) = self.tap.as_mut() {
                            tap(now, false, port, &p);
                        }
                        self.step(move |n, now| n.handle_packet(now, port, p)).await?;
                    }
                }
                () = sleep => {
                    let now = self.clock.now();
                    for k in 0..self.ether.len() {
                        if self.ether[k].xarp.poll_timeout().is_some_and(|t| t <= now) {
                            self.ether[k].xarp.handle_timeout(now);
                            self.flush_ether(k);
                        }
                    }
                    if timer.is_some_and(|t| t <= now) {
                        self.step(|n, now| n.handle_timeout(now)).await?;
                    } else {
                        self.release(now).await?;
                    }
                }
                Some(call) = self.calls.recv() => self.step(call).await?,
            }
        }
        Ok(self.node)
    }

    // Runs one step on the node, then sends what it emitted.
    async fn step(&mut self, f: impl FnOnce(&mut N, Instant)) -> io::Result<()> {
        let now = self.clock.now();
        f(&mut self.node, now);
        self.node.after_step(now);
        let mut out = Vec::new();
        while let Some(t) = self.node.poll_transmit() {
            match self
                .impair
                .get_mut(usize::from(t.port))
                .and_then(Option::as_mut)
            {
                None => out.push((t.port, t.next_hop, t.packet)),
                Some(dir) => {
                    use crate::impair::Fate;
                    match dir.send(now, t.packet.len()) {
                        Fate::Arrives(at) => self.hold(at, t.port, t.next_hop, t.packet),
                        Fate::Duplicated(a, b) => {
                            self.hold(a, t.port, t.next_hop, t.packet.clone());
                            self.hold(b, t.port, t.next_hop, t.packet);
                        }
                        Fate::QueueDrop | Fate::Lost => {}
                    }
                }
            }
        }
        self.send(now, out).await?;
        self.release(now).await
    }

    async fn send(&mut self, now: Instant, out: Vec<Out>) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        if let Some(tap) = self.tap.as_mut() {
            for (port, _, p) in &out {
                tap(now, true, *port, p);
            }
        }
        let mut udp = Vec::with_capacity(out.len());
        for (port, next_hop, p) in out {
            match self.ports.get(usize::from(port)) {
                Some(PortKind::Udp(j)) => udp.push((*j, p)),
                Some(PortKind::Ether(k)) => {
                    let k = *k;
                    self.ether[k].xarp.send(now, next_hop, p);
                    self.flush_ether(k);
                }
                None => {}
            }
        }
        if udp.is_empty() {
            return Ok(());
        }
        self.links.send(&udp).await
    }

    // Puts the frames Ethernet port `k`'s resolver produced on its wire.
    fn flush_ether(&mut self, k: usize) {
        let e = &mut self.ether[k];
        while let Some(f) = e.xarp.poll_transmit() {
            e.link.send(&f);
        }
    }

    fn hold(&mut self, at: Instant, port: PortId, next_hop: Option<Xid>, packet: Vec<u8>) {
        self.order += 1;
        self.held
            .push(Reverse((at, self.order, port, next_hop, packet)));
    }

    // Sends the held packets whose time has come.
    async fn release(&mut self, now: Instant) -> io::Result<()> {
        let mut out = Vec::new();
        while self.held.peek().is_some_and(|Reverse(h)| h.0 <= now) {
            let Reverse((_, _, port, nh, p)) = self.held.pop().expect("peeked");
            out.push((port, nh, p));
        }
        self.send(now, out).await
    }

    /// Its UDP links.
    pub fn links(&self) -> &UdpLinks {
        &self.links
    }
}
