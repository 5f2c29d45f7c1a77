//! `xia testbed up --netns`: one network namespace per node, veth pairs
//! for links. Needs root and iproute2; otherwise it prints why it skips.

use std::path::Path;
use std::process::Command;

fn xia() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xia"))
}

fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: network namespaces need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 (`ip`) is not installed".into());
    }
    let probe = "xia-probe-netns";
    let ok = Command::new("ip").args(["netns", "add", probe]).status();
    let _ = Command::new("ip").args(["netns", "del", probe]).status();
    if !ok.is_ok_and(|s| s.success()) {
        return Some("`ip netns add` fails here (no namespace support)".into());
    }
    None
}

#[test]
fn a_ping_crosses_namespaces() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping the netns test: {why}");
        return;
    }
    // XIP over UDP on the veths, then raw Ethernet frames with XARP.
    for mode in [&["--netns"][..], &["--netns", "--ethernet"][..]] {
        ping_across(mode);
    }
}

fn ping_across(mode: &[&str]) {
    let dir = std::env::temp_dir().join(format!("xia-netns-{}", std::process::id()));
    let topo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbed/topologies/three-ads.toml");
    let up = xia()
        .args(["testbed", "up"])
        .args(mode)
        .arg("--dir")
        .arg(&dir)
        .arg(&topo)
        .output()
        .unwrap();
    let down = || {
        xia()
            .args(["testbed", "down", "--dir"])
            .arg(&dir)
            .output()
            .unwrap()
    };
    if !up.status.success() {
        let _ = down();
        panic!("up failed: {}", String::from_utf8_lossy(&up.stderr));
    }
    let ping = xia()
        .args(["testbed", "exec", "--dir"])
        .arg(&dir)
        .args([
            "h1",
            "--",
            env!("CARGO_BIN_EXE_xia"),
            "ping",
            "-c",
            "2",
            "-i",
            "0.1",
            "@h2",
        ])
        .output()
        .unwrap();
    // h1 sees only its own veth: the ping really crossed namespaces.
    let addrs = xia()
        .args(["testbed", "exec", "--dir"])
        .arg(&dir)
        .args(["h1", "--", "ip", "-br", "addr"])
        .output()
        .unwrap();
    let d = down();
    let out = String::from_utf8_lossy(&ping.stdout);
    assert!(
        out.contains("2 packets transmitted, 2 received"),
        "{mode:?}: {out}"
    );
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(
        addrs.contains("10.200.0.1/24") && !addrs.contains("10.200.3."),
        "{addrs}"
    );
    assert!(d.status.success());
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.contains("xia-h1") && !left.contains("xia-rB"),
        "left behind: {left}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
