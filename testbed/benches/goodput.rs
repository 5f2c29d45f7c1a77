//! XStream against smoltcp's TCP over the same link model
//! (`testbed::link::Direction`, i.e. `xia_net::impair`: bandwidth,
//! drop-tail queue, delay, seeded loss), in two parts:
//!
//! - **Simulated goodput** (virtual time, deterministic): a bulk transfer
//!   for [`SIM_SECONDS`] over a 100 Mbit/s path with a 50 ms RTT and a
//!   bottleneck queue of one BDP (417 packets of 1500 bytes), at 0 %,
//!   0.1 %, 1 % and 5 % random loss in each direction. Printed as a table
//!   before the Criterion benches: goodput in Mbit/s, link use (goodput ÷
//!   bandwidth) and XStream ÷ the best of smoltcp's three congestion
//!   controllers (none, Reno, CUBIC), each the mean of three seeds.
//! - **In-process goodput** (wall clock, Criterion): 16 MiB through an
//!   ideal link (unbounded bandwidth, no delay, no loss), so what is timed
//!   is the two stacks' per-packet work plus this harness. Before
//!   Criterion's own runs, eleven interleaved runs of each print the
//!   XStream ÷ smoltcp ratio of their medians.
//!
//! XStream is driven as the bare sans-IO `Connection` (no XIP, host or
//! router around it) with `Config::default()` but a 1460-byte MSS (CUBIC,
//! SACK, HyStart++, buffers autotuned up to 4 MiB); each of its segments is
//! charged 20 extra bytes on the link, as if carried by an IPv4-sized
//! network header (a real XIP header with 3-node DAGs is 176 bytes). smoltcp
//! runs two `Interface`s with `Medium::Ip` over an in-memory `phy::Device`;
//! its packets are real IPv4 packets, its sockets have 1 MiB buffers, no
//! ACK delay and no Nagle. Both use 1460-byte segments. smoltcp's checksums
//! are off (as with NIC offload): XStream has none to compute.
//!
//! cargo bench -p testbed --bench goodput

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use smoltcp::iface::{Config as IfaceConfig, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp::{self, CongestionControl};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use testbed::link::{Direction, Fate, Impairment};
use xia_stack::dag::Dag;
use xia_stack::stream::{Config, Connection, State};
use xia_stack::time::Instant;
use xia_stack::wire::xstream::{Flags, XstreamRepr};
use xia_stack::xid::{Principal, Xid};

/// Payload bytes per segment, for both stacks (smoltcp: a 1500-byte MTU).
const MSS: usize = 1460;
/// IPv4 MTU of the smoltcp devices.
const MTU: usize = 1500;
/// Bytes a network header would add to each XStream segment on the link.
const XSTREAM_NET_HEADER: usize = 20;
/// Bytes moved in the in-process (ideal link) comparison.
const IDEAL_BYTES: u64 = 16 << 20;
/// Virtual seconds of each simulated transfer.
const SIM_SECONDS: u64 = 60;
/// Simulated path: bandwidth and one-way delay.
const SIM_BPS: u64 = 100_000_000;
const SIM_ONE_WAY: Duration = Duration::from_millis(25);
/// smoltcp's socket buffers (it has no autotuning): the power of two
/// above the BDP (625 kB), below BDP plus queue (1.25 MB).
const SMOLTCP_BUFFER: usize = 1 << 20;
/// Loss rates of the simulated runs.
const LOSSES: [f64; 4] = [0.0, 0.001, 0.01, 0.05];
/// Seeds of the simulated runs (the table shows their mean).
const SEEDS: [u64; 3] = [1, 2, 3];

/// The bandwidth-delay product of the simulated path, in bytes.
fn bdp() -> usize {
    (SIM_BPS as u128 * 2 * SIM_ONE_WAY.as_nanos() / 8 / 1_000_000_000) as usize
}

/// The simulated link: 100 Mbit/s, 25 ms each way, a queue of one BDP.
fn sim_link(loss: f64) -> Impairment {
    Impairment {
        bandwidth_bps: SIM_BPS,
        delay: SIM_ONE_WAY,
        queue: bdp().div_ceil(MTU),
        loss,
        jitter: Duration::ZERO,
        reorder: 0.0,
        duplicate: 0.0,
    }
}

/// The ideal link: 1 ns per packet on the wire, no delay, no loss, no
/// queue limit.
fn ideal_link() -> Impairment {
    Impairment {
        bandwidth_bps: u64::MAX,
        delay: Duration::ZERO,
        queue: usize::MAX,
        loss: 0.0,
        jitter: Duration::ZERO,
        reorder: 0.0,
        duplicate: 0.0,
    }
}

/// A sender (end 0) and a receiver (end 1) of one bulk transfer.
trait Transfer {
    /// Hands a packet that crossed the link to end `to`.
    fn deliver(&mut self, to: usize, now: Instant, packet: Vec<u8>);
    /// Runs both stacks and applications at `now` until neither has more to
    /// do; appends what each end sends to `out[end]`.
    fn run(&mut self, now: Instant, out: &mut [Vec<Vec<u8>>; 2]);
    /// When `run` is next needed without a packet arriving.
    fn next_timer(&mut self, now: Instant) -> Option<Instant>;
    /// Bytes the receiving application has read.
    fn delivered(&self) -> u64;
    /// Bytes each packet occupies on the link beyond its length.
    fn overhead(&self) -> usize;
}

/// What a run measured.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    delivered: u64,
    end: Instant,
}

/// Runs `t` over two directions of `spec` until the receiver has `bytes`
/// or virtual time reaches `until`.
fn drive(
    t: &mut impl Transfer,
    spec: &Impairment,
    seed: u64,
    bytes: u64,
    until: Instant,
) -> Outcome {
    let mut dirs = [
        Direction::new(spec.clone(), seed),
        Direction::new(spec.clone(), seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 1),
    ];
    // Packets on the wire, by destination; without jitter or reordering
    // each direction delivers in order.
    let mut wire: [VecDeque<(Instant, Vec<u8>)>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut out: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut now = Instant::ZERO;
    loop {
        t.run(now, &mut out);
        for (from, packets) in out.iter_mut().enumerate() {
            for p in packets.drain(..) {
                match dirs[from].send(now, p.len() + t.overhead()) {
                    Fate::Arrives(at) => wire[1 - from].push_back((at, p)),
                    Fate::Duplicated(at, again) => {
                        wire[1 - from].push_back((at, p.clone()));
                        wire[1 - from].push_back((again, p));
                    }
                    Fate::QueueDrop | Fate::Lost => {}
                }
            }
        }
        if t.delivered() >= bytes {
            break;
        }
        let next = [
            wire[0].front().map(|p| p.0),
            wire[1].front().map(|p| p.0),
            t.next_timer(now),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            break; // nothing left to happen
        };
        if next >= until {
            now = until;
            break;
        }
        now = now.max(next);
        for (to, queue) in wire.iter_mut().enumerate() {
            while queue.front().is_some_and(|p| p.0 <= now) {
                if let Some((_, p)) = queue.pop_front() {
                    t.deliver(to, now, p);
                }
            }
        }
    }
    Outcome {
        delivered: t.delivered(),
        end: now,
    }
}

/// Bytes the senders write, over and over.
fn source() -> Vec<u8> {
    (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

// ---- XStream ----

fn dag(n: u8) -> Dag {
    Dag::path(&[
        Xid::new(Principal::AD, [n; 20]),
        Xid::new(Principal::HID, [n; 20]),
        Xid::new(Principal::SID, [n; 20]),
    ])
    .expect("a path DAG")
}

struct XstreamTransfer {
    config: Config,
    client: Connection,
    server: Option<Connection>,
    /// Bytes the sender still has to write.
    to_send: u64,
    delivered: u64,
    source: Vec<u8>,
    sink: Vec<u8>,
}

impl XstreamTransfer {
    fn new(bytes: u64) -> XstreamTransfer {
        let config = Config {
            mss: MSS as u16,
            ..Config::default()
        };
        XstreamTransfer {
            client: Connection::connect(dag(1), dag(2), 7, Instant::ZERO, config.clone()),
            config,
            server: None,
            to_send: bytes,
            delivered: 0,
            source: source(),
            sink: vec![0; 64 * 1024],
        }
    }
}

impl Transfer for XstreamTransfer {
    fn deliver(&mut self, to: usize, now: Instant, packet: Vec<u8>) {
        if to == 0 {
            let _ = self.client.handle_bytes(now, &packet);
            return;
        }
        match self.server.as_mut() {
            Some(s) => {
                let _ = s.handle_bytes(now, &packet);
            }
            None => {
                let Ok(syn) = XstreamRepr::parse(&packet) else {
                    return;
                };
                if syn.flags == Flags::SYN {
                    self.server =
                        Connection::accept(dag(2), dag(1), &syn, 9, now, self.config.clone()).ok();
                }
            }
        }
    }

    fn run(&mut self, now: Instant, out: &mut [Vec<Vec<u8>>; 2]) {
        let c = &mut self.client;
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        if c.state() == State::Established {
            while self.to_send > 0 && c.writable() > 0 {
                let n = (self.to_send.min(self.source.len() as u64)) as usize;
                match c.write(&self.source[..n]) {
                    Ok(0) | Err(_) => break,
                    Ok(w) => self.to_send -= w as u64,
                }
            }
        }
        while let Some(p) = c.poll_transmit(now) {
            out[0].push(p);
        }
        while c.poll_event().is_some() {}
        if let Some(s) = self.server.as_mut() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
            loop {
                let n = s.read(&mut self.sink);
                if n == 0 {
                    break;
                }
                self.delivered += n as u64;
            }
            while let Some(p) = s.poll_transmit(now) {
                out[1].push(p);
            }
            while s.poll_event().is_some() {}
        }
    }

    fn next_timer(&mut self, _now: Instant) -> Option<Instant> {
        let s = self.server.as_ref().and_then(|s| s.poll_timeout());
        [self.client.poll_timeout(), s].into_iter().flatten().min()
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    fn overhead(&self) -> usize {
        XSTREAM_NET_HEADER
    }
}

// ---- smoltcp ----

/// An in-memory IP device: packets in, packets out.
#[derive(Default)]
struct Phy {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct PhyRx(Vec<u8>);

struct PhyTx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for PhyRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for PhyTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for Phy {
    type RxToken<'a> = PhyRx;
    type TxToken<'a> = PhyTx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(PhyRx, PhyTx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((PhyRx(p), PhyTx(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<PhyTx<'_>> {
        Some(PhyTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}

fn smol_time(t: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros((t.as_nanos() / 1000) as i64)
}

struct SmolEnd {
    iface: Interface,
    phy: Phy,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
}

impl SmolEnd {
    fn new(addr: Ipv4Address, cc: CongestionControl) -> SmolEnd {
        let mut phy = Phy::default();
        let mut config = IfaceConfig::new(HardwareAddress::Ip);
        config.random_seed = u64::from(addr.octets()[3]);
        let mut iface = Interface::new(config, &mut phy, smol_time(Instant::ZERO));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(addr), 24))
                .expect("one address");
        });
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SMOLTCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SMOLTCP_BUFFER]),
        );
        socket.set_ack_delay(None);
        socket.set_nagle_enabled(false);
        socket.set_congestion_control(cc);
        let mut sockets = SocketSet::new(Vec::new());
        let handle = sockets.add(socket);
        SmolEnd {
            iface,
            phy,
            sockets,
            handle,
        }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }
}

const SMOL_CLIENT: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const SMOL_SERVER: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

struct SmolTransfer {
    ends: [SmolEnd; 2],
    to_send: u64,
    delivered: u64,
    source: Vec<u8>,
    sink: Vec<u8>,
}

impl SmolTransfer {
    fn new(bytes: u64, cc: CongestionControl) -> SmolTransfer {
        let mut client = SmolEnd::new(SMOL_CLIENT, cc);
        let mut server = SmolEnd::new(SMOL_SERVER, cc);
        server.socket().listen(5001).expect("listen");
        let h = client.handle;
        let s = client.sockets.get_mut::<tcp::Socket>(h);
        s.connect(client.iface.context(), (SMOL_SERVER, 5001), 40000)
            .expect("connect");
        SmolTransfer {
            ends: [client, server],
            to_send: bytes,
            delivered: 0,
            source: source(),
            sink: vec![0; 64 * 1024],
        }
    }
}

impl Transfer for SmolTransfer {
    fn deliver(&mut self, to: usize, _now: Instant, packet: Vec<u8>) {
        self.ends[to].phy.rx.push_back(packet);
    }

    fn run(&mut self, now: Instant, out: &mut [Vec<Vec<u8>>; 2]) {
        let ts = smol_time(now);
        for (i, e) in self.ends.iter_mut().enumerate() {
            loop {
                // One poll sends at most one segment per socket: repeat
                // until neither the stack nor the application moves.
                let mut moved =
                    e.iface.poll(ts, &mut e.phy, &mut e.sockets) == PollResult::SocketStateChanged;
                let s = e.sockets.get_mut::<tcp::Socket>(e.handle);
                if i == 0 {
                    while self.to_send > 0 && s.can_send() {
                        let n = (self.to_send.min(self.source.len() as u64)) as usize;
                        match s.send_slice(&self.source[..n]) {
                            Ok(0) | Err(_) => break,
                            Ok(w) => {
                                self.to_send -= w as u64;
                                moved = true;
                            }
                        }
                    }
                } else {
                    while s.can_recv() {
                        match s.recv_slice(&mut self.sink) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                self.delivered += n as u64;
                                moved = true;
                            }
                        }
                    }
                }
                if !moved && e.phy.rx.is_empty() {
                    break;
                }
            }
            out[i].append(&mut e.phy.tx);
        }
    }

    fn next_timer(&mut self, now: Instant) -> Option<Instant> {
        let ts = smol_time(now);
        self.ends
            .iter_mut()
            .filter_map(|e| e.iface.poll_at(ts, &e.sockets))
            .map(|at| {
                let at = Instant::from_nanos(at.total_micros().max(0) as u64 * 1000);
                // smoltcp's clock has microseconds; never ask for the past.
                at.max(now + Duration::from_micros(1))
            })
            .min()
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    fn overhead(&self) -> usize {
        0
    }
}

// ---- part b: simulated goodput ----

/// The smoltcp congestion controllers, in table order.
const SMOL_CCS: [(CongestionControl, &str); 3] = [
    (CongestionControl::None, "none"),
    (CongestionControl::Reno, "Reno"),
    (CongestionControl::Cubic, "CUBIC"),
];

/// Mean goodput in Mbit/s over the seeds.
fn simulated(loss: f64, run: &dyn Fn(&Impairment, u64) -> Outcome) -> f64 {
    let spec = sim_link(loss);
    let until = Instant::from_secs(SIM_SECONDS);
    let total: f64 = SEEDS
        .iter()
        .map(|&seed| {
            let o = run(&spec, seed);
            o.delivered as f64 * 8.0 / until.as_secs_f64() / 1e6
        })
        .sum();
    total / SEEDS.len() as f64
}

fn xstream_sim(spec: &Impairment, seed: u64) -> Outcome {
    let until = Instant::from_secs(SIM_SECONDS);
    drive(
        &mut XstreamTransfer::new(u64::MAX),
        spec,
        seed,
        u64::MAX,
        until,
    )
}

fn smoltcp_sim(cc: CongestionControl) -> impl Fn(&Impairment, u64) -> Outcome {
    move |spec, seed| {
        let until = Instant::from_secs(SIM_SECONDS);
        drive(
            &mut SmolTransfer::new(u64::MAX, cc),
            spec,
            seed,
            u64::MAX,
            until,
        )
    }
}

fn print_simulated() {
    let link = sim_link(0.0);
    let mbps = SIM_BPS as f64 / 1e6;
    eprintln!();
    eprintln!(
        "Simulated goodput: {mbps} Mbit/s, RTT {} ms, bottleneck queue {} packets (BDP {} bytes), \
         loss in both directions, {SIM_SECONDS} s of virtual time, mean of seeds {SEEDS:?}",
        2 * SIM_ONE_WAY.as_millis(),
        link.queue,
        bdp(),
    );
    eprintln!(
        "{:>6} | {:>16} | {:>16} | {:>16} | {:>16} | {:>12}",
        "loss", "XStream", "smoltcp none", "smoltcp Reno", "smoltcp CUBIC", "X / best smol"
    );
    let cell = |g: f64| format!("{g:6.2} ({:5.1} %)", g / mbps * 100.0);
    for loss in LOSSES {
        let started = std::time::Instant::now();
        let x = simulated(loss, &xstream_sim);
        let smol: Vec<f64> = SMOL_CCS
            .iter()
            .map(|&(cc, _)| simulated(loss, &smoltcp_sim(cc)))
            .collect();
        let best = smol.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "{:>5.1}% | {} | {} | {} | {} | {:>11.2}×   ({:.1} s wall)",
            loss * 100.0,
            cell(x),
            cell(smol[0]),
            cell(smol[1]),
            cell(smol[2]),
            x / best,
            started.elapsed().as_secs_f64(),
        );
    }
    eprintln!(
        "(goodput in Mbit/s and, in brackets, as a share of the link's {mbps} Mbit/s; headers \
         cap it at {:.1} % for XStream, {:.1} % for smoltcp)",
        100.0 * MSS as f64 / (MSS + 16 + XSTREAM_NET_HEADER) as f64,
        100.0 * MSS as f64 / MTU as f64,
    );
    eprintln!();
}

// ---- part a: in-process goodput ----

fn ideal_xstream() -> u64 {
    let mut t = XstreamTransfer::new(IDEAL_BYTES);
    let o = drive(
        &mut t,
        &ideal_link(),
        1,
        IDEAL_BYTES,
        Instant::from_secs(3600),
    );
    assert_eq!(o.delivered, IDEAL_BYTES, "XStream stalled at {:?}", o.end);
    o.delivered
}

fn ideal_smoltcp() -> u64 {
    let mut t = SmolTransfer::new(IDEAL_BYTES, CongestionControl::None);
    let o = drive(
        &mut t,
        &ideal_link(),
        1,
        IDEAL_BYTES,
        Instant::from_secs(3600),
    );
    assert_eq!(o.delivered, IDEAL_BYTES, "smoltcp stalled at {:?}", o.end);
    o.delivered
}

/// Runs of each, interleaved after two warm-up runs, so both see the
/// same machine; prints the medians and their ratio.
const IDEAL_RUNS: usize = 11;

fn print_ideal_ratio() {
    let time = |f: fn() -> u64| {
        let t = std::time::Instant::now();
        black_box(f());
        t.elapsed().as_secs_f64()
    };
    for _ in 0..2 {
        time(ideal_xstream);
        time(ideal_smoltcp);
    }
    let (mut x, mut s) = (Vec::new(), Vec::new());
    for _ in 0..IDEAL_RUNS {
        x.push(time(ideal_xstream));
        s.push(time(ideal_smoltcp));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (x, s) = (median(&mut x), median(&mut s));
    let rate = |secs: f64| IDEAL_BYTES as f64 * 8.0 / secs / 1e9;
    eprintln!(
        "In-process goodput, ideal link, {} MiB, median of {IDEAL_RUNS} interleaved runs: \
         XStream {:.2} Gbit/s ({:.1} ms), smoltcp {:.2} Gbit/s ({:.1} ms), XStream / smoltcp = {:.2}×",
        IDEAL_BYTES >> 20,
        rate(x),
        x * 1e3,
        rate(s),
        s * 1e3,
        s / x
    );
    eprintln!();
}

fn bench_ideal(c: &mut Criterion) {
    let mut g = c.benchmark_group("goodput_ideal");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(IDEAL_BYTES));
    g.bench_function("xstream_16MiB", |b| b.iter(ideal_xstream));
    g.bench_function("smoltcp_16MiB", |b| b.iter(ideal_smoltcp));
    g.finish();
}

criterion_group!(benches, bench_ideal);

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // Criterion runs each bench once as a test, and the tables are skipped.
    if std::env::args().any(|a| a == "--bench") {
        print_simulated();
        print_ideal_ratio();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
