//! Scenarios in the simulator: what a researcher would try first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testbed::{run, Report, SimConfig, Topology};

fn shipped(name: &str) -> Topology {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name);
    Topology::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn sim(topo: Topology, seed: u64) -> Report {
    run(
        topo,
        &SimConfig {
            seed,
            ..SimConfig::default()
        },
    )
    .expect("runs")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn ping_across_three_ads() {
    let r = sim(shipped("three-ads.toml"), 1);
    let p = &r.pings[0];
    assert_eq!((p.transmitted, p.received, p.errors), (3, 3, 0));
    // Two 10 ms and two 1 ms hops each way, plus serialisation.
    for rtt in &p.rtts {
        assert!((44.0..44.5).contains(&ms(*rtt)), "{rtt:?}");
    }
    assert!(p.lines[1].contains("hlim=246"), "{:?}", p.lines);
    assert_eq!(r.flows[0].delivered, 200);
    assert!(r.routers.iter().all(|(_, c)| c.dropped_total() == 0));
}

#[test]
fn fallback_taken_when_the_primary_ad_is_unknown() {
    let r = sim(shipped("ipv4-fallback.toml"), 1);
    // Without a fallback edge rA has nowhere to go.
    let plain = &r.pings[0];
    assert_eq!((plain.received, plain.errors), (0, 2));
    assert!(
        plain.lines[1].starts_with("From rA: xcmp_seq=0 Destination Unreachable"),
        "{:?}",
        plain.lines
    );
    // With the 4ID edge, the packets go through the IPv4 gateway rB.
    let fb = &r.pings[1];
    assert_eq!((fb.received, fb.errors), (2, 0));
    let ra = &r.routers.iter().find(|(n, _)| n == "rA").unwrap().1;
    assert_eq!(ra.forwarded, 4, "2 requests + 2 replies");
}

#[test]
fn unknown_principal_falls_back() {
    let r = sim(shipped("unknown-principal.toml"), 1);
    assert_eq!(r.pings[0].received, 3);
    assert!(r.routers.iter().all(|(_, c)| c.dropped_total() == 0));
}

const LINE: &str = r#"
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
[[link]]
a = "h1"
b = "rA"
[[link]]
a = "rA"
b = "rB"
LOSS
[[link]]
a = "rB"
b = "rC"
[[link]]
a = "rC"
b = "h2"
"#;

fn line(loss: &str, scenario: &str) -> Topology {
    let text = format!("{}{scenario}", LINE.replace("LOSS", loss));
    Topology::parse("line.toml", &text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn hop_limit_expiry_gives_time_exceeded() {
    // h1 spends one hop leaving, rA another: rB sees hop limit 1.
    let r = sim(
        line(
            "",
            "[[run]]\nat = \"1s\"\nnode = \"h1\"\ncommand = \"ping -c 1 -t 3 @h2\"\n",
        ),
        1,
    );
    let p = &r.pings[0];
    assert_eq!((p.received, p.errors), (0, 1));
    assert!(
        p.lines[1].contains("From rB: xcmp_seq=0 Time to live exceeded"),
        "{:?}",
        p.lines
    );
    let rb = &r.routers.iter().find(|(n, _)| n == "rB").unwrap().1;
    assert_eq!(rb.dropped(xia_router::Drop::HopLimit), 1);
}

#[test]
fn unreachable_intent_gives_unreachable() {
    let nobody = "HID:0000000000000000000000000000000000000042";
    let cmd =
        format!("[[run]]\nat = \"1s\"\nnode = \"h1\"\ncommand = \"ping -c 1 RE @C {nobody}\"\n");
    let r = sim(line("", &cmd), 1);
    let p = &r.pings[0];
    assert_eq!((p.received, p.errors), (0, 1));
    assert!(
        p.lines[1].starts_with("From rC: xcmp_seq=0 Destination Unreachable"),
        "{:?}",
        p.lines
    );
}

#[test]
fn datagram_loss_matches_the_link_losses_the_seed_produced() {
    let flow = "[[flow]]\nfrom = \"h1\"\nto = \"h2\"\nat = \"1s\"\ncount = 2000\ninterval = \"1ms\"\nsize = 100\n";
    let mut seen = Vec::new();
    for seed in [1, 2, 3] {
        let r = sim(line("loss = 0.1", flow), seed);
        let f = &r.flows[0];
        let link_losses: u64 = r
            .links
            .iter()
            .map(|l| {
                l.dirs[0].lost + l.dirs[1].lost + l.dirs[0].queue_drops + l.dirs[1].queue_drops
            })
            .sum();
        assert_eq!(f.sent, 2000);
        assert_eq!(
            f.lost as u64, link_losses,
            "seed {seed}: every loss is a link loss"
        );
        assert_eq!(f.delivered + f.lost, 2000);
        assert!(
            (140..260).contains(&f.lost),
            "seed {seed}: {} lost of 2000 at 10 %",
            f.lost
        );
        // Same seed, same losses.
        assert_eq!(sim(line("loss = 0.1", flow), seed).flows[0], *f);
        seen.push(f.lost);
    }
    assert!(
        seen[0] != seen[1] || seen[1] != seen[2],
        "seeds change the draws: {seen:?}"
    );
}

fn pcap_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xia-pcap-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn pcaps(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_same_seed_gives_identical_pcaps() {
    let flow = "[[flow]]\nfrom = \"h1\"\nto = \"h2\"\nat = \"1s\"\ncount = 300\ninterval = \"1ms\"\n[[run]]\nat = \"1s\"\nnode = \"h1\"\ncommand = \"ping -c 2 @h2\"\n";
    let topo = || line("loss = 0.05\njitter = \"2ms\"\nreorder = 0.05", flow);
    let go = |tag: &str, seed: u64| {
        let dir = pcap_dir(tag);
        let cfg = SimConfig {
            seed,
            pcap_dir: Some(dir.clone()),
            ..SimConfig::default()
        };
        let report = run(topo(), &cfg).unwrap();
        let files = pcaps(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        (report, files)
    };
    let (r1, a) = go("a", 7);
    let (r2, b) = go("b", 7);
    let (_, c) = go("c", 8);
    assert_eq!(a.len(), 4, "one pcap per link");
    assert!(a.iter().all(|(_, bytes)| bytes.len() > 24));
    assert_eq!(a, b, "byte-identical pcaps for the same seed");
    assert_eq!(r1, r2);
    assert_ne!(a, c, "another seed draws other losses");
}

#[test]
fn pcap_frames_are_ethernet_with_xip_ethertype() {
    let dir = pcap_dir("frames");
    let cfg = SimConfig {
        seed: 1,
        pcap_dir: Some(dir.clone()),
        ..SimConfig::default()
    };
    run(
        line(
            "",
            "[[run]]\nat = \"1s\"\nnode = \"h1\"\ncommand = \"ping -c 1 @h2\"\n",
        ),
        &cfg,
    )
    .unwrap();
    let bytes = std::fs::read(dir.join("h1-rA.pcap")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    // Global header 24 bytes, record header 16, then the frame.
    let frame = &bytes[40..];
    assert_eq!(&frame[12..14], &[0xc0, 0xde]);
    assert_eq!(frame[14], 1, "XIP version");
    assert_eq!(frame[15], 1, "next header XCMP");
}

#[test]
fn reordering_and_jitter_are_reported() {
    let flow =
        "[[flow]]\nfrom = \"h1\"\nto = \"h2\"\nat = \"1s\"\ncount = 1000\ninterval = \"100us\"\n";
    let r = sim(line("jitter = \"1ms\"\nreorder = 0.1", flow), 4);
    let f = &r.flows[0];
    assert_eq!(f.delivered, 1000);
    assert!(f.reordered > 0);
}

#[test]
fn broadcast_ping_reaches_every_host_and_learnt_routes_expire() {
    let cmd = "[[run]]\nat = \"1s\"\nnode = \"h1\"\ncommand = \"ping -c 1 RE HID:ffffffffffffffffffffffffffffffffffffffff\"\n";
    let cfg = SimConfig {
        seed: 1,
        until: Some(Duration::from_secs(400)),
        ..SimConfig::default()
    };
    let r = run(line("", cmd), &cfg).unwrap();
    let p = &r.pings[0];
    assert_eq!(p.received, 1, "h2 answers the broadcast: {:?}", p.lines);
    assert!(p.lines[1].starts_with("64 bytes from h2"), "{:?}", p.lines);
    for (name, c) in &r.routers {
        assert_eq!(c.broadcast, 1, "{name}");
        // rA has a configured route to h1, its own host, so learning leaves
        // it alone; rB and rC learn h1 and forget it after 300 s.
        let learnt = u64::from(name != "rA");
        assert_eq!(c.neighbours_learned, learnt, "{name}");
        assert_eq!(c.neighbours_expired, learnt, "{name}");
    }
    assert!(
        r.end >= xia_stack::time::Instant::from_secs(301),
        "{}",
        r.end
    );
}

#[test]
fn xhcp_beacons_reach_hosts_and_do_not_keep_the_run_alive() {
    let text = "[xhcp]\ninterval = \"500ms\"\n[[run]]\nat = \"2s\"\nnode = \"h1\"\ncommand = \"ping -c 2 @h2\"\n";
    let r = sim(line("", text), 1);
    assert_eq!(r.pings[0].received, 2);
    // The run ends after the last ping's timeout, not never.
    assert!(r.end < xia_stack::time::Instant::from_secs(10), "{}", r.end);
    for (name, c) in &r.routers {
        assert!(c.beacons_sent >= 2 * 6, "{name}: {c:?}");
        assert_eq!(c.dropped_total(), 0, "{name}: beacons are not drops");
    }
    // Routers hear each other's beacons and never flood them.
    let rb = &r.routers.iter().find(|(n, _)| n == "rB").unwrap().1;
    assert!(rb.beacons_heard > 0 && rb.broadcast == 0, "{rb:?}");
}

#[test]
fn a_stream_crosses_three_ads_over_a_lossy_link() {
    let text = "[[stream]]\nfrom = \"h1\"\nto = \"h2\"\nat = \"1s\"\nbytes = 500000\n";
    let r = sim(line("loss = 0.02\nbandwidth = \"10Mbps\"", text), 3);
    let s = &r.streams[0];
    assert_eq!(s.error, None);
    assert_eq!((s.received, s.corrupt), (500_000, 0), "{s:?}");
    assert!(
        s.retransmissions > 0,
        "2 % loss costs retransmissions: {s:?}"
    );
    let g = s.goodput_mbps().unwrap();
    assert!(
        g > 0.5 && g < 10.0,
        "goodput {g} Mbit/s on a 10 Mbit/s link"
    );
    assert_eq!(
        sim(line("loss = 0.02\nbandwidth = \"10Mbps\"", text), 3).streams[0],
        *s,
        "deterministic"
    );
}

#[test]
fn a_client_resolves_a_name_and_streams_10_mb_three_ads_away() {
    let r = sim(shipped("name-and-stream.toml"), 1);
    let p = &r.pings[0];
    assert_eq!(p.received, 2, "ping name:web: {:?}", p.lines);
    assert!(p.lines[0].contains("(web)"), "{:?}", p.lines);
    let s = &r.streams[0];
    assert_eq!(
        (s.received, s.corrupt, s.error.clone()),
        (10_000_000, 0, None),
        "{s:?}"
    );
    // A name nobody registered is reported, not guessed.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/name-and-stream.toml"),
    )
    .unwrap()
    .replace("ping -c 2 name:web", "ping -c 2 name:nobody")
    .replace("bytes = 10000000", "bytes = 1000");
    let r = sim(Topology::parse("t.toml", &text).unwrap(), 1);
    assert!(
        r.pings[0]
            .lines
            .iter()
            .any(|l| l.contains("nobody: Name or service not known")),
        "{:?}",
        r.pings[0].lines
    );
    // Streams to a service need a name server.
    let no_ns = text.replace("[name_server]\nhost = \"hN\"\n", "");
    let e = Topology::parse("t.toml", &no_ns).unwrap_err();
    assert!(e.message.contains("add a [name_server]"), "{e}");
}

#[test]
fn a_second_fetch_is_served_by_the_on_path_router_cache() {
    let r = sim(shipped("content-cache.toml"), 1);
    let [first, second] = &r.fetches[..] else {
        panic!("two fetches")
    };
    assert_eq!(first.result, Some(Ok(100_000)));
    assert_eq!(second.result, Some(Ok(100_000)));
    let ra = &r.routers.iter().find(|(n, _)| n == "rA").unwrap().1;
    assert_eq!((ra.chunks_cached, ra.chunks_served), (1, 1));
    let rb = &r.routers.iter().find(|(n, _)| n == "rB").unwrap().1;
    // Only the first fetch crossed rB: its request and 84 pieces.
    assert_eq!(rb.forwarded, 85);
    assert!(
        second.duration.unwrap() * 10 < first.duration.unwrap(),
        "{first:?} {second:?}"
    );
}

#[test]
fn a_host_that_moves_reconfigures_from_xhcp_and_keeps_pinging() {
    let r = sim(shipped("host-move.toml"), 1);
    let p = &r.pings[0];
    assert_eq!(p.transmitted, 8);
    assert_eq!(
        p.received, 7,
        "one request lost while unplugged: {:?}",
        p.lines
    );
    // Before the move through rA and rB (44 ms), after it from AD B (24 ms).
    assert!(
        ms(p.rtts[0]) > 40.0 && ms(*p.rtts.last().unwrap()) < 30.0,
        "{:?}",
        p.rtts
    );
    let rb = &r.routers.iter().find(|(n, _)| n == "rB").unwrap().1;
    assert_eq!(rb.hosts_registered, 1, "h1 registered with its new gateway");
}

#[test]
fn a_host_never_drops_at_its_own_full_link_queue_it_waits() {
    // The sender's own link is the bottleneck and queues 5 packets: slow
    // start's bursts would overflow it at once if the simulated NIC took
    // whatever the stack handed it. A host's NIC holds back instead, and
    // the stream's segments wait in the stack.
    let text = LINE.replace("LOSS", "").replacen(
        "a = \"h1\"\nb = \"rA\"\n",
        "a = \"h1\"\nb = \"rA\"\nbandwidth = \"10Mbps\"\nqueue = 5\n",
        1,
    ) + "[[stream]]\nfrom = \"h1\"\nto = \"h2\"\nat = \"1s\"\nbytes = 2000000\n";
    let topo = Topology::parse("nic.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let r = sim(topo, 1);
    let s = &r.streams[0];
    assert_eq!(
        (s.received, s.corrupt, s.error.clone()),
        (2_000_000, 0, None),
        "{s:?}"
    );
    let first = &r.links[0];
    assert_eq!((first.a.as_str(), first.b.as_str()), ("h1", "rA"));
    assert_eq!(first.dirs[0].queue_drops, 0, "{:?}", first.dirs[0]);
    assert!(
        r.nic_waits > 0,
        "the 5-packet queue filled and the NIC waited"
    );
    assert_eq!(r.send_queue_drops, 0);
    assert_eq!(s.retransmissions, 0, "nothing was lost: {s:?}");
    // It still uses the link: 2 MB at 10 Mbit/s is 1.6 s.
    let g = s.goodput_mbps().unwrap();
    assert!(
        g > 8.0 && g <= 10.0,
        "goodput {g} Mbit/s on a 10 Mbit/s link"
    );
}
