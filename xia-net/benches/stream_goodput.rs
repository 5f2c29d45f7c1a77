//! XStream goodput between two host daemons over loopback UDP, against
//! Linux TCP over loopback and smoltcp's TCP over the same UDP tunnel, in
//! the same run.
//!
//! Every variant moves the same bulk transfer ([`BYTES`], 256 MiB unless
//! `XIA_BENCH_MIB` says otherwise) from a sending application to a
//! receiving one, timed from just before the sender connects until the
//! receiver has read the last byte (handshake and slow start included).
//! Each "process" is a thread with its own current-thread tokio runtime,
//! as `xia host` and the `xia` apps run:
//!
//! - **XStream, API, host–host**: two host daemons (`Driver<HostNode>` on
//!   loopback `UdpLinks`, each serving the application API on a Unix
//!   socket with `xia_net::server::serve`), linked directly to each other
//!   in one AD (a host sends what is not its own out of its only link, so
//!   no router or gateway is needed). The applications are two more
//!   threads using `xia_net::client::Client` (`listen`/`accept`,
//!   `connect`, `AsyncRead`/`AsyncWrite`). Four threads.
//! - **XStream, API, via a router**: the same with one XIA router
//!   (`Driver<Router>`, its own thread) between the hosts, which learn
//!   their gateway from its XHCP beacons. Five threads.
//! - **XStream, embedded**: the same two daemons with the applications
//!   running as tasks inside them, driving the sockets through
//!   `NodeHandle::call` (up to [`CALL_BYTES`] per call): the transport
//!   without the Unix-socket API. Two threads.
//! - **Linux TCP**: tokio `TcpStream`s over loopback, kernel defaults.
//!   Two threads.
//! - **smoltcp**: smoltcp 0.12 TCP, `Medium::Ip`, over a `phy::Device`
//!   whose IP packets travel as UDP datagrams between two loopback
//!   sockets — the same `UdpLinks` as the daemons, so the same batching
//!   (`recvmmsg`, GSO) and socket buffers. MTU 1500, 4 MiB socket buffers,
//!   no ACK delay, no Nagle, CUBIC (its default), checksums off as in
//!   `testbed/benches/goodput.rs`. Each end polls its interface with the
//!   real clock until nothing moves, sends what it emitted, then sleeps
//!   until a datagram arrives or `poll_delay` passes. Two threads.
//!
//! The rounds are interleaved (one run of every variant per round) after
//! a warm-up round that also checks every byte received; the summary
//! gives medians and ratios against Linux TCP and smoltcp. CPU time is
//! the whole process's (`/proc/self/stat`, user and system, 10 ms ticks)
//! over the timed part. `XIA_BENCH_ROUNDS` sets the rounds (default 7),
//! `XIA_BENCH_ONLY` a comma-separated subset of `api,router,embedded,tcp,
//! smoltcp` (for profiling one variant).
//!
//! `cargo bench -p xia-net --bench stream_goodput` (Linux). Without
//! `--bench` (`cargo test --benches`) it moves 4 MiB once per variant, as
//! a smoke test.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config as IfaceConfig, Interface, PollResult, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use xia_net::client::Client;
use xia_net::clock::Clock;
use xia_net::host_node::HostNode;
use xia_net::node::{Driver, Node, NodeHandle};
use xia_net::udp::{UdpLinks, BATCH};
use xia_router::{Router, RouterConfig};
use xia_stack::host::{Host, HostConfig, HostEvent, StreamHandle};
use xia_stack::socket::{Peer, SocketError, StreamState, XListener, XStream};
use xia_stack::{Dag, Identity, Principal, Xid};

/// Bytes of the transfer, unless `XIA_BENCH_MIB` says otherwise.
const BYTES: u64 = 256 << 20;
/// Bytes per application write (and read buffer).
const CHUNK: usize = 64 * 1024;
/// Most bytes an embedded application moves per `NodeHandle::call`.
const CALL_BYTES: usize = 256 * 1024;
/// smoltcp's socket buffers (XStream's grow to 4 MiB).
const SMOL_BUFFER: usize = 4 << 20;
/// smoltcp's device MTU: 1460-byte segments in 1500-byte IPv4 packets.
const SMOL_MTU: usize = 1500;
/// A transfer taking longer than this has stalled.
const STALL: Duration = Duration::from_secs(120);

/// One timed transfer.
#[derive(Clone, Copy, Debug)]
struct Sample {
    secs: f64,
    /// Process CPU seconds (user, system) over the timed part.
    user: f64,
    sys: f64,
    /// The XStream sender's retransmissions and timeouts.
    retx: Option<(u64, u64)>,
}

impl Sample {
    fn mbps(&self, bytes: u64) -> f64 {
        bytes as f64 * 8.0 / self.secs / 1e6
    }
}

/// The process's CPU time so far: (user, system) seconds.
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15, the 12th and 13th after ')'.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// A point in a transfer: when, and the process's CPU time then.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    cpu: (f64, f64),
}

impl Mark {
    fn now() -> Mark {
        Mark {
            at: Instant::now(),
            cpu: cpu(),
        }
    }

    fn sample(start: Mark, end: Mark, retx: Option<(u64, u64)>) -> Sample {
        Sample {
            secs: end.at.duration_since(start.at).as_secs_f64(),
            user: end.cpu.0 - start.cpu.0,
            sys: end.cpu.1 - start.cpu.1,
            retx,
        }
    }
}

/// What the senders write, over and over.
fn source() -> Arc<Vec<u8>> {
    Arc::new(
        (0..CHUNK as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect(),
    )
}

/// Checks that `data`, received at stream offset `at`, is the source.
fn check(src: &[u8], at: u64, data: &[u8]) {
    let mut off = (at % src.len() as u64) as usize;
    let mut rest = data;
    while !rest.is_empty() {
        let n = rest.len().min(src.len() - off);
        assert!(rest[..n] == src[off..off + n], "corrupt byte near {at}");
        rest = &rest[n..];
        off = 0;
    }
}

/// The source bytes at stream offset `at`, at most `left` of them.
fn next_slice(src: &[u8], at: u64, left: u64) -> &[u8] {
    let off = (at % src.len() as u64) as usize;
    let n = ((src.len() - off) as u64).min(left) as usize;
    &src[off..off + n]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn spawn<R: Send + 'static>(name: &str, f: impl FnOnce() -> R + Send + 'static) -> JoinHandle<R> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("a thread")
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

// ---- XIA nodes on their own threads ----

/// A node's thread after it bound its UDP socket, waiting for its peers.
struct Bound<N> {
    addr: SocketAddr,
    peers: mpsc::Sender<Vec<SocketAddr>>,
    ready: mpsc::Receiver<(NodeHandle<N>, tokio::runtime::Handle)>,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<N>,
}

/// A running node.
struct Running<N> {
    handle: NodeHandle<N>,
    rt: tokio::runtime::Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<N>,
}

/// Starts `node` on a thread of its own; `setup` runs inside its runtime
/// once the driver exists (to serve the API).
fn bind_node<N: Node>(
    name: &str,
    node: N,
    setup: impl FnOnce(NodeHandle<N>) + Send + 'static,
) -> Bound<N> {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (peers_tx, peers_rx) = mpsc::channel::<Vec<SocketAddr>>();
    let (ready_tx, ready) = mpsc::channel();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let thread = spawn(name, move || {
        runtime().block_on(async move {
            let mut links = UdpLinks::bind(local(), vec![]).expect("bind UDP");
            addr_tx.send(links.local_addr().expect("bound")).unwrap();
            // Nothing else runs on this runtime yet: blocking is fine.
            for p in peers_rx.recv().expect("peers") {
                links.add_peer(p).expect("a new peer");
            }
            let d = Driver::new(node, links, Clock::start());
            setup(d.handle());
            ready_tx
                .send((d.handle(), tokio::runtime::Handle::current()))
                .unwrap();
            d.run(async move {
                let _ = stop_rx.await;
            })
            .await
            .expect("the driver runs")
        })
    });
    Bound {
        addr: addr_rx.recv().expect("the node's address"),
        peers: peers_tx,
        ready,
        stop,
        thread,
    }
}

impl<N: Node> Bound<N> {
    fn start(self, peers: Vec<SocketAddr>) -> Running<N> {
        self.peers.send(peers).unwrap();
        let (handle, rt) = self.ready.recv().expect("the node started");
        Running {
            handle,
            rt,
            stop: self.stop,
            thread: self.thread,
        }
    }
}

impl<N: Node> Running<N> {
    fn stop(self) -> N {
        let _ = self.stop.send(());
        self.thread.join().expect("the node's thread")
    }
}

fn identity(p: Principal, b: u8) -> Identity {
    Identity::from_secret_bytes(p, &[b; 32])
}

fn ad() -> Xid {
    identity(Principal::AD, 1).xid()
}

/// The receiving service's SID.
fn service() -> Xid {
    identity(Principal::SID, 0x42).xid()
}

/// Two host daemons, linked directly or through one router.
struct XiaNet {
    hosts: [Running<HostNode>; 2],
    router: Option<Running<Router>>,
    sockets: [PathBuf; 2],
    dir: PathBuf,
}

fn host(b: u8) -> HostNode {
    let mut cfg = HostConfig::new(identity(Principal::HID, b), ad(), None);
    cfg.seed = u64::from(b);
    HostNode::new(Host::new(cfg))
}

fn xia_net(via_router: bool, api: bool, run: usize) -> XiaNet {
    let dir = std::env::temp_dir().join(format!("xia-stream-goodput-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let sockets = [dir.join("h1.sock"), dir.join("h2.sock")];
    let daemon = |name: &str, b: u8, path: &PathBuf| {
        let path = path.clone();
        bind_node(name, host(b), move |h| {
            if api {
                let l = tokio::net::UnixListener::bind(&path).expect("bind the API socket");
                tokio::spawn(xia_net::server::serve(l, h));
            }
        })
    };
    let h1 = daemon("h1-daemon", 21, &sockets[0]);
    let h2 = daemon("h2-daemon", 22, &sockets[1]);
    let (a1, a2) = (h1.addr, h2.addr);
    let (hosts, router) = if via_router {
        let mut cfg = RouterConfig::new(ad(), identity(Principal::HID, 11).xid(), 2);
        cfg.xhcp_interval = Some(Duration::from_millis(100));
        let r = bind_node("router", Router::new(cfg), |_| {});
        let ra = r.addr;
        let hosts = [h1.start(vec![ra]), h2.start(vec![ra])];
        (hosts, Some(r.start(vec![a1, a2])))
    } else {
        ([h1.start(vec![a2]), h2.start(vec![a1])], None)
    };
    let net = XiaNet {
        hosts,
        router,
        sockets,
        dir,
    };
    if via_router {
        // The hosts learn their gateway from its beacons and register
        // with it: ping until h2 answers.
        let h2_dag = Dag::path(&[ad(), identity(Principal::HID, 22).xid()]).unwrap();
        runtime().block_on(converge(&net.hosts[0].handle, h2_dag));
    }
    net
}

impl XiaNet {
    fn stop(self) {
        for h in self.hosts {
            h.stop();
        }
        if let Some(r) = self.router {
            r.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The listening service's address on h2.
    fn service_dag(&self) -> Dag {
        Dag::path(&[ad(), identity(Principal::HID, 22).xid(), service()]).unwrap()
    }
}

async fn converge(h1: &NodeHandle<HostNode>, dst: Dag) {
    for seq in 0..100u16 {
        let d = dst.clone();
        let pos = h1
            .call(move |n, _| {
                let pos = n.position();
                let _ = n.host.ping(&d, 7, seq, b"hello", None);
                pos
            })
            .await
            .expect("h1 runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answered = h1
            .call(move |n, _| {
                n.events_since(pos)
                    .any(|e| matches!(e, HostEvent::EchoReply { seq_no, .. } if *seq_no == seq))
            })
            .await
            .expect("h1 runs");
        if answered {
            return;
        }
    }
    panic!("h1 cannot reach h2 through the router after 5 s");
}

/// Retransmissions and timeouts of every stream the host still has.
async fn retransmissions(h: &NodeHandle<HostNode>) -> (u64, u64) {
    h.call(|n, _| {
        (0..1024)
            .filter_map(|i| n.host.stream(StreamHandle(i)))
            .map(|c| (c.stats().retransmissions, c.stats().timeouts))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
    .await
    .expect("the host runs")
}

// ---- XStream through the application API ----

fn xstream_api(via_router: bool, bytes: u64, verify: bool, run: usize) -> Sample {
    let net = xia_net(via_router, true, run);
    let [p1, p2] = net.sockets.clone();
    let h1 = net.hosts[0].handle.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<String>();
    let receiver = spawn("app-recv", move || {
        runtime().block_on(async move {
            let c = Client::new(&p2);
            let l = c.listen(Some(service())).await.expect("listen");
            ready_tx.send(l.dag().to_re_string().expect("RE")).unwrap();
            let mut s = l.accept().await.expect("accept");
            let src = source();
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            while got < bytes {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "the stream ended after {got} bytes");
                if verify {
                    check(&src, got, &buf[..n]);
                }
                got += n as u64;
            }
            let end = Mark::now();
            let retx = retransmissions(&h1).await;
            while s.read(&mut buf).await.expect("read") > 0 {}
            s.shutdown().await.expect("close");
            (end, retx)
        })
    });
    let sender = spawn("app-send", move || {
        runtime().block_on(async move {
            let to = ready_rx.recv().expect("the listener's DAG");
            let start = Mark::now();
            let mut s = Client::new(&p1).connect(&to).await.expect("connect");
            let src = source();
            let mut sent = 0u64;
            while sent < bytes {
                let chunk = next_slice(&src, sent, bytes - sent);
                s.write_all(chunk).await.expect("write");
                sent += chunk.len() as u64;
            }
            s.shutdown().await.expect("close");
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.expect("the peer's close");
            start
        })
    });
    let start = sender.join().expect("the sender");
    let (end, retx) = receiver.join().expect("the receiver");
    net.stop();
    Mark::sample(start, end, Some(retx))
}

// ---- XStream with the applications inside the daemons ----

/// Calls `f` until it gives an answer, sleeping on the host's event log
/// between tries (as the daemon's server does).
async fn wait_for<R: Send + 'static>(
    h: &NodeHandle<HostNode>,
    changed: &mut watch::Receiver<u64>,
    f: impl Fn(&mut HostNode, xia_stack::time::Instant) -> Option<R> + Clone + Send + 'static,
) -> R {
    loop {
        changed.borrow_and_update();
        let g = f.clone();
        if let Some(r) = h.call(g).await.expect("the host runs") {
            return r;
        }
        changed.changed().await.expect("the host runs");
    }
}

async fn embedded_receiver(
    h: NodeHandle<HostNode>,
    ready: mpsc::Sender<Dag>,
    bytes: u64,
    verify: bool,
) -> Mark {
    let mut changed = h.call(|n, _| n.subscribe()).await.unwrap();
    let (l, dag) = h
        .call(|n, _| {
            let l = XListener::bind(&mut n.host, Some(service())).expect("listen");
            (l, l.local_dag(&n.host).expect("a DAG"))
        })
        .await
        .unwrap();
    ready.send(dag).unwrap();
    let s = wait_for(&h, &mut changed, move |n, _| match l.accept(&mut n.host) {
        Ok(s) => Some(s),
        Err(SocketError::WouldBlock) => None,
        Err(e) => panic!("accept: {e}"),
    })
    .await;
    let src = source();
    let mut buf = vec![0u8; CALL_BYTES];
    let mut got = 0u64;
    let mut end = None;
    loop {
        changed.borrow_and_update();
        let (b, n, eof) = h
            .call(move |n, now| {
                let (mut k, mut eof) = (0, false);
                while k < buf.len() {
                    match s.read(&mut n.host, now, &mut buf[k..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(m) => k += m,
                        Err(SocketError::WouldBlock) => break,
                        Err(e) => panic!("read: {e}"),
                    }
                }
                (buf, k, eof)
            })
            .await
            .unwrap();
        buf = b;
        if verify {
            check(&src, got, &buf[..n]);
        }
        got += n as u64;
        if got >= bytes && end.is_none() {
            end = Some(Mark::now());
        }
        if eof {
            break;
        }
        if n == 0 {
            changed.changed().await.unwrap();
        }
    }
    assert_eq!(got, bytes, "the stream ended early");
    let _ = h.call(move |n, now| s.close(&mut n.host, now)).await;
    end.expect("all bytes arrived")
}

async fn embedded_sender(h: NodeHandle<HostNode>, to: Dag, bytes: u64) -> (Mark, (u64, u64)) {
    let mut changed = h.call(|n, _| n.subscribe()).await.unwrap();
    let start = Mark::now();
    let s = h
        .call(move |n, now| XStream::connect(&mut n.host, now, Peer::Dag(to)))
        .await
        .unwrap()
        .expect("connect");
    let state = wait_for(&h, &mut changed, move |n, _| match s.state(&n.host) {
        StreamState::Resolving | StreamState::Connecting => None,
        other => Some(other),
    })
    .await;
    assert_eq!(state, StreamState::Connected);
    let src = source();
    let mut sent = 0u64;
    while sent < bytes {
        changed.borrow_and_update();
        let src = src.clone();
        let wrote = h
            .call(move |n, now| {
                let mut w = 0u64;
                while w < CALL_BYTES as u64 && sent + w < bytes {
                    let chunk = next_slice(&src, sent + w, bytes - sent - w);
                    match s.write(&mut n.host, now, chunk) {
                        Ok(k) => w += k as u64,
                        Err(SocketError::WouldBlock) => break,
                        Err(e) => panic!("write: {e}"),
                    }
                }
                w
            })
            .await
            .unwrap();
        sent += wrote;
        if wrote == 0 {
            changed.changed().await.unwrap();
        }
    }
    let _ = h.call(move |n, now| s.close(&mut n.host, now)).await;
    // The receiver closes once it has everything: wait for it, so the
    // stream's counters are final.
    wait_for(&h, &mut changed, move |n, now| {
        let mut b = [0u8; 1];
        matches!(s.read(&mut n.host, now, &mut b), Ok(0)).then_some(())
    })
    .await;
    let retx = h
        .call(move |n, _| {
            let st = s.connection(&n.host).expect("the stream").stats();
            (st.retransmissions, st.timeouts)
        })
        .await
        .unwrap();
    (start, retx)
}

fn xstream_embedded(bytes: u64, verify: bool, run: usize) -> Sample {
    let net = xia_net(false, false, run);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let h2 = net.hosts[1].handle.clone();
    net.hosts[1].rt.spawn(async move {
        let end = embedded_receiver(h2, ready_tx, bytes, verify).await;
        done_tx.send(end).unwrap();
    });
    let to = ready_rx.recv().expect("the listener's DAG");
    debug_assert_eq!(to, net.service_dag());
    let (sent_tx, sent_rx) = mpsc::channel();
    let h1 = net.hosts[0].handle.clone();
    net.hosts[0].rt.spawn(async move {
        sent_tx.send(embedded_sender(h1, to, bytes).await).unwrap();
    });
    let end = done_rx.recv_timeout(STALL).expect("the receiver finished");
    let (start, retx) = sent_rx.recv_timeout(STALL).expect("the sender finished");
    net.stop();
    Mark::sample(start, end, Some(retx))
}

// ---- Linux TCP ----

fn linux_tcp(bytes: u64, verify: bool) -> Sample {
    let (addr_tx, addr_rx) = mpsc::channel();
    let receiver = spawn("tcp-recv", move || {
        runtime().block_on(async move {
            let l = tokio::net::TcpListener::bind(local()).await.expect("bind");
            addr_tx.send(l.local_addr().unwrap()).unwrap();
            let (mut s, _) = l.accept().await.expect("accept");
            let src = source();
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            while got < bytes {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "the stream ended after {got} bytes");
                if verify {
                    check(&src, got, &buf[..n]);
                }
                got += n as u64;
            }
            let end = Mark::now();
            while s.read(&mut buf).await.expect("read") > 0 {}
            s.shutdown().await.expect("close");
            end
        })
    });
    let sender = spawn("tcp-send", move || {
        runtime().block_on(async move {
            let to = addr_rx.recv().expect("the listener's address");
            let start = Mark::now();
            let mut s = tokio::net::TcpStream::connect(to).await.expect("connect");
            let src = source();
            let mut sent = 0u64;
            while sent < bytes {
                let chunk = next_slice(&src, sent, bytes - sent);
                s.write_all(chunk).await.expect("write");
                sent += chunk.len() as u64;
            }
            s.shutdown().await.expect("close");
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.expect("the peer's close");
            start
        })
    });
    let start = sender.join().expect("the sender");
    let end = receiver.join().expect("the receiver");
    Mark::sample(start, end, None)
}

// ---- smoltcp over a UDP tunnel ----

/// An IP device whose packets are datagrams: the driver loop fills `rx`
/// from the UDP socket and sends what collects in `tx`.
#[derive(Default)]
struct Tunnel {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<(u16, Vec<u8>)>,
}

struct TunnelRx(Vec<u8>);

struct TunnelTx<'a>(&'a mut Vec<(u16, Vec<u8>)>);

impl phy::RxToken for TunnelRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TunnelTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        // Port 0: the tunnel's only link.
        self.0.push((0, buf));
        r
    }
}

impl Device for Tunnel {
    type RxToken<'a> = TunnelRx;
    type TxToken<'a> = TunnelTx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(TunnelRx, TunnelTx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((TunnelRx(p), TunnelTx(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TunnelTx<'_>> {
        Some(TunnelTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = SMOL_MTU;
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}

const SMOL_SENDER: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const SMOL_RECEIVER: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const SMOL_PORT: u16 = 5001;

/// One end of the smoltcp transfer, driven with the real clock until the
/// transfer is over; returns when the receiver had every byte (receiver)
/// or when the sender started (sender).
async fn smoltcp_end(mut links: UdpLinks, sender: bool, bytes: u64, verify: bool) -> Mark {
    let start = Mark::now();
    let mut dev = Tunnel::default();
    let addr = if sender { SMOL_SENDER } else { SMOL_RECEIVER };
    let mut config = IfaceConfig::new(HardwareAddress::Ip);
    config.random_seed = u64::from(addr.octets()[3]);
    let mut iface = Interface::new(config, &mut dev, smoltcp::time::Instant::now());
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::Ipv4(addr), 24))
            .expect("one address");
    });
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; SMOL_BUFFER]),
        tcp::SocketBuffer::new(vec![0; SMOL_BUFFER]),
    );
    socket.set_ack_delay(None);
    socket.set_nagle_enabled(false);
    let mut sockets = SocketSet::new(Vec::new());
    let handle = sockets.add(socket);
    {
        let s = sockets.get_mut::<tcp::Socket>(handle);
        if sender {
            s.connect(iface.context(), (SMOL_RECEIVER, SMOL_PORT), 40000)
                .expect("connect");
        } else {
            s.listen(SMOL_PORT).expect("listen");
        }
    }
    let src = source();
    let mut sink = vec![0u8; CHUNK];
    let mut moved_bytes = 0u64;
    let mut closed = false;
    let mut end = None;
    let mut inbox = Vec::with_capacity(BATCH);
    loop {
        // Run the stack and the application until neither moves: one poll
        // sends at most one segment per socket.
        loop {
            let now = smoltcp::time::Instant::now();
            let mut moved =
                iface.poll(now, &mut dev, &mut sockets) == PollResult::SocketStateChanged;
            let s = sockets.get_mut::<tcp::Socket>(handle);
            if sender {
                while moved_bytes < bytes && s.can_send() {
                    let chunk = next_slice(&src, moved_bytes, bytes - moved_bytes);
                    match s.send_slice(chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(w) => {
                            moved_bytes += w as u64;
                            moved = true;
                        }
                    }
                }
                if moved_bytes == bytes && !closed {
                    s.close();
                    closed = true;
                    moved = true;
                }
            } else {
                while s.can_recv() {
                    match s.recv_slice(&mut sink) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if verify {
                                check(&src, moved_bytes, &sink[..n]);
                            }
                            moved_bytes += n as u64;
                            moved = true;
                        }
                    }
                }
                if moved_bytes >= bytes && end.is_none() {
                    end = Some(Mark::now());
                }
                if s.state() == tcp::State::CloseWait && !closed {
                    s.close();
                    closed = true;
                    moved = true;
                }
            }
            if dev.tx.len() >= BATCH {
                links.send(&dev.tx).await.expect("send");
                dev.tx.clear();
            }
            if !moved && dev.rx.is_empty() {
                break;
            }
        }
        if !dev.tx.is_empty() {
            links.send(&dev.tx).await.expect("send");
            dev.tx.clear();
        }
        let state = sockets.get::<tcp::Socket>(handle).state();
        let done = if sender {
            matches!(state, tcp::State::TimeWait | tcp::State::Closed)
        } else {
            end.is_some() && matches!(state, tcp::State::LastAck | tcp::State::Closed)
        };
        if done {
            break;
        }
        assert!(
            start.at.elapsed() < STALL,
            "smoltcp stalled at {moved_bytes} bytes in {state}"
        );
        let delay = iface
            .poll_delay(smoltcp::time::Instant::now(), &sockets)
            .map_or(Duration::from_millis(100), |d| {
                Duration::from_micros(d.total_micros())
            });
        tokio::select! {
            r = links.recv(&mut inbox) => {
                r.expect("receive");
                dev.rx.extend(inbox.drain(..).map(|(_, p)| p));
            }
            () = tokio::time::sleep(delay) => {}
        }
    }
    if sender {
        start
    } else {
        end.expect("all bytes arrived")
    }
}

fn smoltcp_tunnel(bytes: u64, verify: bool) -> Sample {
    let end = |name: &str, sender: bool| {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (peer_tx, peer_rx) = mpsc::channel::<SocketAddr>();
        let thread = spawn(name, move || {
            runtime().block_on(async move {
                let mut links = UdpLinks::bind(local(), vec![]).expect("bind UDP");
                addr_tx.send(links.local_addr().unwrap()).unwrap();
                links.add_peer(peer_rx.recv().unwrap()).unwrap();
                smoltcp_end(links, sender, bytes, verify).await
            })
        });
        (addr_rx.recv().expect("an address"), peer_tx, thread)
    };
    // The receiver listens before the sender's SYN can arrive.
    let (ra, rpeer, receiver) = end("smol-recv", false);
    let (sa, speer, sender) = end("smol-send", true);
    rpeer.send(sa).unwrap();
    speer.send(ra).unwrap();
    let start = sender.join().expect("the sender");
    let end = receiver.join().expect("the receiver");
    Mark::sample(start, end, None)
}

// ---- the comparison ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Api,
    Router,
    Embedded,
    Tcp,
    Smoltcp,
}

const VARIANTS: [(Variant, &str, &str); 5] = [
    (Variant::Api, "api", "XStream, API, host–host"),
    (Variant::Router, "router", "XStream, API, via a router"),
    (
        Variant::Embedded,
        "embedded",
        "XStream, embedded, host–host",
    ),
    (Variant::Tcp, "tcp", "Linux TCP, loopback"),
    (Variant::Smoltcp, "smoltcp", "smoltcp, UDP tunnel"),
];

fn run(v: Variant, bytes: u64, verify: bool, run: usize) -> Sample {
    match v {
        Variant::Api => xstream_api(false, bytes, verify, run),
        Variant::Router => xstream_api(true, bytes, verify, run),
        Variant::Embedded => xstream_embedded(bytes, verify, run),
        Variant::Tcp => linux_tcp(bytes, verify),
        Variant::Smoltcp => smoltcp_tunnel(bytes, verify),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let bytes =
        env_number("XIA_BENCH_MIB").map_or(if bench { BYTES } else { 4 << 20 }, |m| m << 20);
    let rounds = env_number("XIA_BENCH_ROUNDS").map_or(if bench { 7 } else { 0 }, |r| r as usize);
    let only = std::env::var("XIA_BENCH_ONLY").ok();
    let variants: Vec<_> = VARIANTS
        .iter()
        .filter(|(_, key, _)| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|k| k == *key))
        })
        .copied()
        .collect();
    println!(
        "{} MiB per transfer, {rounds} interleaved rounds after a checked warm-up round",
        bytes >> 20
    );
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    let mut n = 0;
    for round in 0..=rounds {
        let warm_up = round == 0;
        println!(
            "{}",
            if warm_up {
                "warm-up (every byte checked):".to_string()
            } else {
                format!("round {round}:")
            }
        );
        for (i, &(v, _, name)) in variants.iter().enumerate() {
            n += 1;
            let s = run(v, bytes, warm_up, n);
            let retx = s
                .retx
                .map(|(r, t)| format!("  retransmitted {r}, timeouts {t}"))
                .unwrap_or_default();
            println!(
                "  {name:<30} {:>9.1} Mbit/s  {:>7.3} s  CPU {:.2} user + {:.2} sys{retx}",
                s.mbps(bytes),
                s.secs,
                s.user,
                s.sys
            );
            if !warm_up {
                samples[i].push(s);
            }
        }
    }
    if rounds == 0 {
        return;
    }
    let rate = |i: usize| median(samples[i].iter().map(|s| s.mbps(bytes)).collect());
    let find = |want: Variant| variants.iter().position(|(v, _, _)| *v == want);
    let (tcp, smol) = (find(Variant::Tcp), find(Variant::Smoltcp));
    // Per-round ratios against a baseline measured in the same round.
    let ratio = |i: usize, base: Option<usize>| -> String {
        let Some(b) = base else {
            return "-".to_string();
        };
        let r: Vec<f64> = samples[i]
            .iter()
            .zip(&samples[b])
            .map(|(x, y)| x.mbps(bytes) / y.mbps(bytes))
            .collect();
        let (lo, hi) = r
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        format!("{:.3} ({lo:.3}–{hi:.3})", median(r))
    };
    println!();
    println!(
        "median of {rounds} rounds ({} MiB; ratios: median of the per-round ratios, range):",
        bytes >> 20
    );
    println!(
        "| {:<30} | {:>10} | {:>12} | {:>11} | {:>21} | {:>21} |",
        "variant", "Mbit/s", "range", "CPU s/GiB", "÷ Linux TCP", "÷ smoltcp"
    );
    for (i, &(_, _, name)) in variants.iter().enumerate() {
        let (lo, hi) = samples[i]
            .iter()
            .map(|s| s.mbps(bytes))
            .fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let cpu: f64 = samples[i].iter().map(|s| s.user + s.sys).sum();
        let gib = (bytes * samples[i].len() as u64) as f64 / (1u64 << 30) as f64;
        println!(
            "| {name:<30} | {:>10.1} | {:>12} | {:>11.2} | {:>21} | {:>21} |",
            rate(i),
            format!("{lo:.0}–{hi:.0}"),
            cpu / gib,
            ratio(i, tcp),
            ratio(i, smol),
        );
    }
}
