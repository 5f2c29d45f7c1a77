//! Link-state routing in the simulator: convergence, reconvergence after
//! link and router failures, and streams that survive them.

use std::path::Path;

use testbed::{run, Report, SimConfig, Topology};

fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name);
    std::fs::read_to_string(path).expect("shipped topology")
}

fn sim(text: &str, seed: u64) -> Report {
    let topo = Topology::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}"));
    run(
        topo,
        &SimConfig {
            seed,
            ..SimConfig::default()
        },
    )
    .expect("runs")
}

/// (sequence number, RTT in ms) of each reply in a ping's output.
fn replies(lines: &[String]) -> Vec<(u32, f64)> {
    lines
        .iter()
        .filter_map(|l| {
            let seq = l
                .split("xcmp_seq=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            let ms = l.split("time=").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((seq, ms))
        })
        .collect()
}

#[test]
fn a_stream_survives_a_link_failure_and_routing_reconverges() {
    let r = sim(&shipped("link-failure.toml"), 1);
    let s = &r.streams[0];
    assert_eq!(s.received, 8_000_000, "{s:?}");
    assert_eq!(s.corrupt, 0);
    assert_eq!(s.error, None, "the stream is never reset");
    assert!(s.retransmissions > 0, "the outage cost retransmissions");
    let p = &r.pings[0];
    let got = replies(&p.lines);
    // Pings go every 250 ms from 1 s; the link fails at 2 s (seq 4).
    let rtt = |seq: u32| got.iter().find(|(s, _)| *s == seq).map(|(_, ms)| *ms);
    assert!(rtt(0).is_some_and(|ms| ms < 45.0), "short path: {got:?}");
    // Lost while rB and rC wait out the dead interval (2 s) ...
    assert_eq!(rtt(4), None, "{:?}", p.lines);
    assert_eq!(rtt(8), None, "{:?}", p.lines);
    // ... then via rD (40 ms longer), and back after the repair at 6 s.
    assert!(rtt(13).is_some_and(|ms| ms > 80.0), "{got:?}");
    assert!(rtt(30).is_some_and(|ms| ms < 45.0), "{got:?}");
    let lost = p.transmitted - p.received;
    assert!((4..=10).contains(&lost), "{lost} lost: {:?}", p.lines);
    assert!(r.changes.len() == 2 && r.changes[0].contains("link rB-rC down"));
}

const RING: &str = r#"
[routing]
protocol = "link-state"
hello = "200ms"
dead = "800ms"

[[ad]]
name = "A"
[[ad]]
name = "B"
[[ad]]
name = "C"
[[ad]]
name = "D"
[[router]]
name = "rA"
ad = "A"
[[router]]
name = "rB"
ad = "B"
[[router]]
name = "rC"
ad = "C"
[[router]]
name = "rD"
ad = "D"
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
delay = "10ms"
[[link]]
a = "rB"
b = "rC"
delay = "10ms"
[[link]]
a = "rA"
b = "rD"
delay = "30ms"
[[link]]
a = "rD"
b = "rC"
delay = "30ms"
[[link]]
a = "rC"
b = "h2"
"#;

#[test]
fn a_failed_router_is_routed_around_and_rejoins_after_a_restart() {
    let text = format!(
        "{RING}
[[event]]
at = \"2s\"
node = \"rB\"
state = \"down\"
[[event]]
at = \"4s\"
node = \"rB\"
state = \"up\"
[[run]]
at = \"1s\"
node = \"h1\"
command = \"ping -c 40 -i 0.125 @h2\"
"
    );
    let r = sim(&text, 3);
    let got = replies(&r.pings[0].lines);
    let rtt = |seq: u32| got.iter().find(|(s, _)| *s == seq).map(|(_, ms)| *ms);
    // Via rB: 2×(1+10+10+1) ms; via rD: 2×(1+30+30+1) ms.
    assert!(
        rtt(0).is_some_and(|ms| (44.0..45.0).contains(&ms)),
        "{got:?}"
    );
    assert!(
        rtt(16).is_some_and(|ms| (124.0..125.0).contains(&ms)),
        "{got:?}"
    );
    assert!(
        rtt(39).is_some_and(|ms| (44.0..45.0).contains(&ms)),
        "{got:?}"
    );
    let lost = r.pings[0].transmitted - r.pings[0].received;
    // The dead interval is 0.8 s: about 7 requests, plus those in flight.
    assert!((5..=10).contains(&lost), "{lost} lost: {got:?}");
    assert!(r.failed_router_drops > 0);
    let rb = &r.routers.iter().find(|(n, _)| n == "rB").unwrap().1;
    assert!(
        rb.routing_sent > 0,
        "rB runs routing again after its restart"
    );
}

#[test]
fn link_state_routes_carry_the_same_traffic_as_static_ones() {
    let three = shipped("three-ads.toml");
    let static_run = sim(&three, 1);
    let ls_run = sim(&format!("[routing]\nprotocol = \"link-state\"\n{three}"), 1);
    // The ping at 1 s finds converged routes along the same path.
    assert_eq!(static_run.pings[0].rtts, ls_run.pings[0].rtts);
    assert_eq!(static_run.flows, ls_run.flows);
    assert_eq!(static_run.streams[0].received, ls_run.streams[0].received);
}

#[test]
fn the_fallback_experiment_works_under_link_state_routing() {
    // rA is configured not to route AD D: the 4ID fallback is taken.
    let text = shipped("ipv4-fallback.toml");
    let r = sim(&format!("[routing]\nprotocol = \"link-state\"\n{text}"), 1);
    let s = sim(&text, 1);
    assert_eq!(
        r.pings.iter().map(|p| p.received).collect::<Vec<_>>(),
        s.pings.iter().map(|p| p.received).collect::<Vec<_>>()
    );
}

#[test]
fn a_moved_host_is_advertised_by_its_new_router() {
    let text = shipped("host-move.toml");
    let r = sim(&format!("[routing]\nprotocol = \"link-state\"\n{text}"), 1);
    let p = &r.pings[0];
    assert_eq!(p.received, 7, "{:?}", p.lines);
}

#[test]
fn bad_routing_and_event_sections_are_refused_with_their_line() {
    let err = |extra: &str| {
        Topology::parse("t.toml", &format!("{RING}{extra}"))
            .unwrap_err()
            .to_string()
    };
    let e = Topology::parse("t.toml", &RING.replace("link-state", "rip")).unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("\"rip\""), "{e}");
    let e = err("[[event]]\nat = \"1s\"\nlink = [\"rA\", \"rC\"]\nstate = \"down\"\n");
    assert!(e.contains("no link between \"rA\" and \"rC\""), "{e}");
    let e = err("[[event]]\nat = \"1s\"\nnode = \"h1\"\nstate = \"down\"\n");
    assert!(e.contains("is a host"), "{e}");
    let e = err("[[event]]\nat = \"1s\"\nnode = \"rA\"\nstate = \"sideways\"\n");
    assert!(e.contains("not \"up\" or \"down\""), "{e}");
    let e = Topology::parse("t.toml", &RING.replace("800ms", "100ms")).unwrap_err();
    assert!(e.message.contains("longer than the hello"), "{e}");
}
