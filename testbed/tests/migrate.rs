//! A host that moves to another AD keeps its streams: its connections
//! send a signed MIGRATE with the new DAG, and the peer follows.

use std::path::Path;

use testbed::{run, SimConfig, Topology};

#[test]
fn a_moving_clients_stream_follows_it_with_a_signed_migrate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/host-move.toml");
    let text = std::fs::read_to_string(path).unwrap();
    // h1 streams 20 MB to h2 from 2.5 s; at 3 s it is re-plugged into AD B.
    let text = format!(
        "{text}\n[[stream]]\nfrom = \"h1\"\nto = \"h2\"\nat = \"2.5s\"\nbytes = 20_000_000\n"
    );
    let topo = Topology::parse("move.toml", &text).unwrap();
    let r = run(
        topo,
        &SimConfig {
            seed: 1,
            ..SimConfig::default()
        },
    )
    .unwrap();
    let s = &r.streams[0];
    assert_eq!(s.error, None, "{s:?}");
    assert_eq!(s.received, 20_000_000, "{s:?}");
    assert_eq!(s.corrupt, 0);
    let d = s.duration.expect("finished");
    assert!(d.as_secs_f64() > 0.5, "the transfer spans the move: {d:?}");
}
