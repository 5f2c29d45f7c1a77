//! Router forwarding over UDP on loopback, against a bare UDP relay with
//! the same batching, in the same run.
//!
//! A generator thread sends 192-byte XIP packets (`AD HID` destination,
//! no fallback) as fast as it can to the node under test, which forwards
//! them to a sink thread that counts them. The node is either the XIA
//! router (`Driver<Router>`: batched receive, the whole forwarding path,
//! batched send) or a relay that moves each datagram to the other peer
//! without looking at it (the same `UdpLinks`, the same batches). The
//! node runs on its own thread; its CPU time comes from
//! `/proc/thread-self/stat`, so packets/s per core is forwarded packets
//! over the node thread's CPU seconds.
//!
//! `cargo bench -p xia-net --bench udp_forward` (Linux).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xia_net::clock::Clock;
use xia_net::node::Driver;
use xia_net::udp::UdpLinks;
use xia_router::forward::Route;
use xia_router::{Router, RouterConfig};
use xia_stack::wire::xip::{NextHeader, XipRepr};
use xia_stack::{Dag, Principal, Xid};

const PACKET: usize = 192;
const RUN: Duration = Duration::from_secs(3);

fn xid(p: Principal, b: u8) -> Xid {
    Xid::new(p, [b; 20])
}

/// A 192-byte XIP packet to `AD:2… HID:2…`.
fn packet() -> Vec<u8> {
    let dst = Dag::path(&[xid(Principal::AD, 2), xid(Principal::HID, 2)]).unwrap();
    let src = Dag::path(&[xid(Principal::AD, 1), xid(Principal::HID, 1)]).unwrap();
    let hdr = XipRepr::new(dst.clone(), src.clone(), NextHeader::Data, 0)
        .to_bytes(&[])
        .unwrap()
        .len();
    let payload = vec![0u8; PACKET - hdr];
    let p = XipRepr::new(dst, src, NextHeader::Data, payload.len())
        .to_bytes(&payload)
        .unwrap();
    assert_eq!(p.len(), PACKET);
    p
}

/// CPU seconds this thread has used.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct Outcome {
    forwarded: u64,
    wall: f64,
    cpu: f64,
}

/// Runs the generator and the sink around a node started by `node`
/// (given its own address's socket, the generator's and the sink's
/// addresses), for `RUN`.
type NodeFn =
    fn(UdpLinks, Arc<AtomicBool>) -> std::pin::Pin<Box<dyn std::future::Future<Output = f64>>>;

fn measure(node: NodeFn) -> Outcome {
    let gen = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (gen_addr, sink_addr) = (gen.local_addr().unwrap(), sink.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let stop_node = stop.clone();
    let node_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let links = UdpLinks::bind(local, vec![gen_addr, sink_addr]).unwrap();
            tx.send(links.local_addr().unwrap()).unwrap();
            node(links, stop_node).await
        })
    });
    let node_addr = rx.recv().unwrap();
    let counted = Arc::new(AtomicU64::new(0));
    let c2 = counted.clone();
    let stop_sink = stop.clone();
    let sink_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop_sink.load(Ordering::Relaxed) {
            if sink.recv(&mut buf).is_ok() {
                c2.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let p = packet();
    let stop_gen = stop.clone();
    let gen_thread = std::thread::spawn(move || {
        while !stop_gen.load(Ordering::Relaxed) {
            for _ in 0..64 {
                let _ = gen.send_to(&p, node_addr);
            }
        }
    });
    // Warm up, then count over RUN.
    std::thread::sleep(Duration::from_millis(300));
    let before = counted.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(RUN);
    let forwarded = counted.load(Ordering::Relaxed) - before;
    let wall = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    gen_thread.join().unwrap();
    sink_thread.join().unwrap();
    let cpu_total = node_thread.join().unwrap();
    Outcome {
        forwarded,
        wall,
        // The node's CPU over the whole run, scaled to the counted window.
        cpu: cpu_total * wall / (wall + 0.3),
    }
}

async fn relay(mut links: UdpLinks, stop: Arc<AtomicBool>) -> f64 {
    let cpu0 = thread_cpu();
    let mut inbox = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        inbox.clear();
        let got = tokio::time::timeout(Duration::from_millis(50), links.recv(&mut inbox)).await;
        if got.is_err() {
            continue;
        }
        // The other peer, untouched.
        let out: Vec<(u16, Vec<u8>)> = inbox.drain(..).map(|(p, d)| (1 - p, d)).collect();
        let _ = links.send(&out).await;
    }
    thread_cpu() - cpu0
}

async fn router(links: UdpLinks, stop: Arc<AtomicBool>) -> f64 {
    let cpu0 = thread_cpu();
    let mut cfg = RouterConfig::new(xid(Principal::AD, 9), xid(Principal::HID, 9), 2);
    cfg.xhcp_interval = None;
    let mut r = Router::new(cfg);
    r.tables_mut()
        .insert(xid(Principal::AD, 2), Route::via(1, xid(Principal::HID, 2)))
        .unwrap();
    let d = Driver::new(r, links, Clock::start());
    let shutdown = async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let r = d.run(shutdown).await.unwrap();
    assert!(r.counters().forwarded > 0);
    thread_cpu() - cpu0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let show = |name: &str, o: &Outcome| {
        let pps = o.forwarded as f64 / o.wall;
        let per_core = o.forwarded as f64 / o.cpu.max(1e-9);
        println!(
            "  {name:<7} {pps:>10.0} packets/s   {per_core:>10.0} packets/s per core   (node CPU {:.2} s of {:.2} s)",
            o.cpu, o.wall
        );
        (pps, per_core)
    };
    for round in 0..3 {
        println!("round {round} ({PACKET}-byte XIP packets, loopback UDP):");
        let (rp, rc) = show("relay", &measure(|l, s| Box::pin(relay(l, s))));
        let (xp, xc) = show("router", &measure(|l, s| Box::pin(router(l, s))));
        println!(
            "  router/relay = {:.2} (packets/s), {:.2} (per core)",
            xp / rp,
            xc / rc
        );
    }
}
