//! A simulator pcap decodes in Wireshark's XIP dissector, checked with
//! tshark when it is installed (`apt-get install tshark`); skipped with a
//! printed reason otherwise.

use std::path::Path;
use std::process::Command;

use testbed::{run, SimConfig, Topology};

#[test]
fn tshark_decodes_simulator_pcaps_as_xip() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("skipped: tshark is not installed (apt-get install tshark to run this check)");
        return;
    }
    let topo =
        Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/three-ads.toml"))
            .unwrap();
    let dir = std::env::temp_dir().join(format!("xia-tshark-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    run(
        topo,
        &SimConfig {
            seed: 1,
            pcap_dir: Some(dir.clone()),
            ..SimConfig::default()
        },
    )
    .unwrap();
    let out = Command::new("tshark")
        .args([
            "-r",
            dir.join("rA-rB.pcap").to_str().unwrap(),
            "-T",
            "fields",
        ])
        .args([
            "-e",
            "frame.protocols",
            "-e",
            "xip.version",
            "-e",
            "xip.next_hdr",
            "-e",
            "xip.num_dst",
            "-e",
            "xip.last_node",
        ])
        .output()
        .expect("tshark runs");
    std::fs::remove_dir_all(&dir).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    // 3 echo requests, 3 replies, 200 datagrams and the 2 MB stream's
    // segments cross rA-rB.
    assert!(
        rows.iter()
            .all(|r| r[0] == "eth:ethertype:xip" && r[1] == "1" && r[4] == "126"),
        "{text}"
    );
    assert_eq!(rows.iter().filter(|r| r[2] == "2").count(), 200, "XDGRAM");
    assert_eq!(rows.iter().filter(|r| r[2] == "1").count(), 6, "XCMP");
    assert!(
        rows.iter().filter(|r| r[2] == "3").count() > 1000,
        "XSTREAM"
    );
}
