//! Real daemons on loopback UDP, as a user runs them: `xia testbed up`
//! starts a three-AD topology (two hosts, three routers), then ping, echo
//! (also across a crash and restart of the middle router) and a file
//! transfer over content chunks cross it, and `down` stops everything.
//! Two ADs with a hypervisor in each (`xia hypervisor`): `xia migrate`
//! moves a VM live and back while `xia nc` downloads from it by name (the
//! way there given by the destination agent's name, the way back by its
//! DAG); a hypervisor restarted from its migration log does not start the
//! VM that left it, registers its name again, and takes the VM back.
//! With an image store in the destination AD, `xia migrate --dedup`
//! sends a VM's base-image pages by CID and the destination fetches them
//! from the store. No root needed.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn xia() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xia"))
}

fn topology(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testbed/topologies")
        .join(name)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `xia testbed exec --dir DIR NODE -- xia`: a command for a node's
/// host daemon.
fn exec(dir: &Path, node: &str) -> Command {
    let mut c = xia();
    c.args(["testbed", "exec", "--dir"])
        .arg(dir)
        .arg(node)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_xia"));
    c
}

/// The first line a child prints on stderr (`stderr`) or stdout.
fn first_line(child: &mut std::process::Child, stderr: bool) -> String {
    let mut line = String::new();
    if stderr {
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
    } else {
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
    }
    line
}

/// Brings a testbed down when dropped, whatever happened.
struct Testbed(PathBuf);

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = xia()
            .args(["testbed", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

#[test]
fn ping_echo_and_a_file_transfer_through_two_routers() {
    let dir = std::env::temp_dir().join(format!("xia-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let up = run_ok(
        xia()
            .args(["testbed", "up", "--pcap", "--base-port", "15100", "--dir"])
            .arg(&dir)
            .arg(topology("three-ads.toml")),
    );
    let tb = Testbed(dir.clone());
    assert!(up.contains("h1") && up.contains("rB"), "{up}");
    let exec = |node: &str| exec(&dir, node);

    // ping: three ADs, the simulator's hop limit on arrival.
    let ping = run_ok(exec("h1").args(["ping", "-c", "3", "-i", "0.1", "@h2"]));
    assert!(ping.contains("3 packets transmitted, 3 received"), "{ping}");
    assert!(ping.contains("hlim=246"), "{ping}");

    // echo: a server on h2 prints its DAG; a client on h1 gets its bytes
    // back.
    let mut server = exec("h2")
        .args(["echo", "server"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = first_line(&mut server, false);
    let echoed =
        run_ok(exec("h1").args(["echo", "client", "--message", "hello over XIA", line.trim()]));
    assert_eq!(echoed, "hello over XIA");
    let _ = server.kill();
    let _ = server.wait();

    // A file as content chunks: put on h2, fetch by the manifest on h1.
    let data: Vec<u8> = (0..700_000u32)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    let file = dir.join("file.bin");
    std::fs::write(&file, &data).unwrap();
    let manifest = run_ok(exec("h2").args(["put", "--chunk", "262144"]).arg(&file));
    assert_eq!(
        manifest.lines().filter(|l| l.starts_with("RE")).count(),
        3,
        "{manifest}"
    );
    let mpath = dir.join("manifest.txt");
    std::fs::write(&mpath, &manifest).unwrap();
    let got = dir.join("got.bin");
    run_ok(exec("h1").arg("get").arg(&mpath).arg("-o").arg(&got));
    assert!(std::fs::read(&got).unwrap() == data, "fetched file differs");

    // down stops every daemon.
    let state = std::fs::read_to_string(dir.join("state.toml")).unwrap();
    let down = run_ok(xia().args(["testbed", "down", "--dir"]).arg(&dir));
    assert!(down.contains("stopped 5 nodes"), "{down}");
    for pid in state.lines().filter_map(|l| l.strip_prefix("pid = ")) {
        let alive = Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!alive.success(), "daemon {pid} still running");
    }
    // Every daemon wrote its packets: h1's pcap holds the pings, echoes
    // and chunk pieces (a 24-byte header, then Ethernet/XIP frames).
    let pcap = std::fs::read(dir.join("h1.pcap")).unwrap();
    assert!(pcap.len() > 700_000, "h1.pcap has {} bytes", pcap.len());
    assert_eq!(&pcap[..4], &[0xa1, 0xb2, 0xc3, 0xd4]);
    assert_eq!(
        &pcap[24 + 16 + 12..24 + 16 + 14],
        &[0xc0, 0xde],
        "EtherType 0xC0DE"
    );
    std::mem::forget(tb);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_daemon_config_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(format!("xia-badconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("r.toml");
    std::fs::write(
        &conf,
        "[[ad]]\nname = \"A\"\n[[router]]\nname = \"r\"\nad = \"A\"\n[[link]]\npeer = \"not an address\"\n",
    )
    .unwrap();
    let out = xia()
        .args(["router", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("r.toml:7:") && err.contains("not an address"),
        "{err}"
    );
    // A host config given to `xia router` is refused by name.
    std::fs::write(
        &conf,
        "[[ad]]\nname = \"A\"\n[[host]]\nname = \"h\"\nad = \"A\"\n",
    )
    .unwrap();
    let out = xia()
        .args(["router", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xia host --config"), "{err}");
    // No daemon behind the socket: said so, at once.
    let out = xia()
        .args(["ping", "--host"])
        .arg(dir.join("nobody.sock"))
        .arg("RE AD:0000000000000000000000000000000000000001 HID:0000000000000000000000000000000000000002")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot reach the host daemon"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_same_topology_gives_the_same_results_in_the_simulator_and_real_mode() {
    let topo = topology("three-ads.toml");
    let sim = run_ok(xia().args(["testbed", "run"]).arg(&topo));
    let dir = std::env::temp_dir().join(format!("xia-same-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let real = run_ok(
        xia()
            .args(["testbed", "up", "--run", "--base-port", "15200", "--dir"])
            .arg(&dir)
            .arg(&topo),
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The same pings, answered by the same host with the same hop limit;
    // the same stream, every byte delivered (timing differs).
    let replies = |out: &str| {
        out.lines()
            .filter(|l| l.contains("bytes from h2"))
            .map(|l| l.split(" time=").next().unwrap().trim().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(replies(&sim), replies(&real), "sim:\n{sim}\nreal:\n{real}");
    assert_eq!(replies(&real).len(), 3);
    assert!(sim.contains("h1 -> h2: 2000000 of 2000000 bytes"), "{sim}");
    assert!(
        real.contains("h1 -> h2: 2000000 of 2000000 bytes"),
        "{real}"
    );
    assert!(
        real.contains("skipped (simulator only): [[flow]]"),
        "{real}"
    );
}

#[test]
fn names_netcat_and_datagram_echo() {
    let dir = std::env::temp_dir().join(format!("xia-names-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    run_ok(
        xia()
            .args(["testbed", "up", "--base-port", "15300", "--dir"])
            .arg(&dir)
            .arg(topology("name-and-stream.toml")),
    );
    let _tb = Testbed(dir.clone());
    let exec = |node: &str| exec(&dir, node);

    // An echo service on h2 under a name, signed with its SID's key.
    let keys = dir.join("keys");
    let made = run_ok(
        xia()
            .args(["key", "new", "--kind", "sid", "--dir"])
            .arg(&keys),
    );
    let sid = made.trim().to_string();
    let key = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "key"))
        .unwrap();
    let mut server = exec("h2")
        .args(["echo", "server", "--name", "echo.test", "--key"])
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let registered = first_line(&mut server, true);
    assert!(registered.contains("registered echo.test"), "{registered}");
    let resolved = run_ok(exec("h1").args(["name", "resolve", "echo.test"]));
    assert!(resolved.trim().ends_with(&sid), "{resolved} vs {sid}");
    let echoed = run_ok(exec("h1").args(["echo", "client", "--message", "by name", "echo.test"]));
    assert_eq!(echoed, "by name");
    let _ = server.kill();
    let _ = server.wait();

    // Datagram echo.
    let mut dserver = exec("h2")
        .args(["echo", "server", "--datagram"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ddag = first_line(&mut dserver, false);
    let back = run_ok(exec("h1").args([
        "echo",
        "client",
        "--datagram",
        "--message",
        "one datagram",
        ddag.trim(),
    ]));
    assert_eq!(back, "one datagram");
    let _ = dserver.kill();
    let _ = dserver.wait();

    // netcat: h1's stdin ends up on h2's stdout.
    let mut listener = exec("h2")
        .args(["nc", "-l"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let listening = first_line(&mut listener, true);
    let ndag = listening
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let mut sender = exec("h1")
        .arg("nc")
        .arg(&ndag)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sender.stdin.take().unwrap(), b"over netcat\n").unwrap();
    let got = listener.wait_with_output().unwrap();
    let _ = sender.wait();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "over netcat\n");
}

/// Two ADs, a hypervisor in each, a client and a name server in A; the
/// VM serves a 4 MB checksummed stream at 8 Mbit/s by name.
const TOPOLOGY: &str = r#"
[[ad]]
name = "A"
[[ad]]
name = "B"
[[router]]
name = "rA"
ad = "A"
[[router]]
name = "rB"
ad = "B"
[[host]]
name = "c1"
ad = "A"
[[host]]
name = "ns"
ad = "A"
[[hypervisor]]
name = "hv1"
ad = "A"
[[hypervisor]]
name = "hv2"
ad = "B"
[[link]]
a = "c1"
b = "rA"
[[link]]
a = "ns"
b = "rA"
[[link]]
a = "hv1"
b = "rA"
[[link]]
a = "rA"
b = "rB"
bandwidth = "200Mbps"
delay = "5ms"
queue = 200
[[link]]
a = "rB"
b = "hv2"
[xhcp]
interval = "300ms"
[name_server]
host = "ns"
[[vm]]
name = "vm1"
hypervisor = "hv1"
memory = "8MiB"
dirty_rate = 500
dirty = "hot-set"
hot_set = "1MiB"
service = "stream"
service_name = "video"
bytes = "4MB"
rate = "8Mbps"
"#;

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The agent DAG `xia hypervisor-info` prints.
fn agent_dag(dir: &Path, node: &str) -> String {
    let info = run_ok(exec(dir, node).arg("hypervisor-info"));
    info.lines()
        .find_map(|l| l.strip_prefix("agent: "))
        .unwrap_or_else(|| panic!("no agent line in {info}"))
        .to_string()
}

#[test]
fn a_vm_moves_live_and_back_while_a_client_downloads_from_it() {
    let dir = std::env::temp_dir().join(format!("xia-real-mig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let topo = dir.join("migration.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let tb = dir.join("tb");
    run_ok(
        xia()
            .args(["testbed", "up", "--base-port", "15400", "--dir"])
            .arg(&tb)
            .arg(&topo),
    );
    let _down = Testbed(tb.clone());
    let (hv1, hv2) = (agent_dag(&tb, "hv1"), agent_dag(&tb, "hv2"));
    let info = run_ok(exec(&tb, "hv1").arg("hypervisor-info"));
    assert!(info.contains("vm vm1: 8 MiB, running"), "{info}");
    // `up` waited until the agents' names were registered.
    assert!(info.contains("\nname: hv1\n"), "{info}");
    let log1 = tb.join("hv1.migrations.log");
    assert!(info.contains(&format!("log: {}", log1.display())), "{info}");

    // Wrong requests are refused with what is wrong, and change nothing.
    let (ok, _, err) = run(exec(&tb, "hv1").args(["migrate", "vm9", "--to", &hv2]));
    assert!(!ok && err.contains("no VM named \"vm9\" here"), "{err}");
    let (ok, _, err) =
        run(exec(&tb, "hv1").args(["migrate", "vm1", "--mode", "warp", "--to", &hv2]));
    assert!(
        !ok && err.contains("unknown migration mode \"warp\""),
        "{err}"
    );
    let (ok, _, err) = run(exec(&tb, "hv1").args(["migrate", "vm1", "--to", "AD:nonsense"]));
    assert!(!ok && err.contains("is not a DAG"), "{err}");
    let (ok, _, err) = run(exec(&tb, "hv1").args(["migrate", "vm1", "--to", "hv9"]));
    assert!(
        !ok && err.contains("no agent named \"hv9\": name not known"),
        "{err}"
    );
    let (ok, _, err) = run(exec(&tb, "hv1").args(["migrate", "vm1", "--to", "hv1"]));
    assert!(!ok && err.contains("this hypervisor's own agent"), "{err}");
    assert!(run_ok(exec(&tb, "hv1").arg("hypervisor-info")).contains("vm vm1: 8 MiB, running"));

    // The download, by name, 4 MB at 8 Mbit/s: about 4 s.
    let mut nc = exec(&tb, "c1")
        .args(["nc", "name:video"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));

    // By name: the source resolves "hv2" to hv2's agent DAG.
    let out = run_ok(exec(&tb, "hv1").args(["migrate", "vm1", "--quiet", "--to", "hv2"]));
    assert!(out.contains("the destination committed"), "{out}");
    assert!(
        out.contains(&format!("done: vm1 runs at hv2 ({hv2})")),
        "{out}"
    );
    assert!(out.contains("mode live"), "{out}");
    assert!(!run_ok(exec(&tb, "hv1").arg("hypervisor-info")).contains("vm vm1"));
    assert!(run_ok(exec(&tb, "hv2").arg("hypervisor-info")).contains("vm vm1: 8 MiB, running"));

    let out = run_ok(
        exec(&tb, "hv2").args(["migrate", "vm1", "--quiet", "--mode", "full", "--to", &hv1]),
    );
    assert!(
        out.contains("mode full (strategy Full), 0 pre-copy rounds"),
        "{out}"
    );
    assert!(run_ok(exec(&tb, "hv1").arg("hypervisor-info")).contains("vm vm1: 8 MiB, running"));

    let mut got = Vec::new();
    nc.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    let status = nc.wait().unwrap();
    let mut err = String::new();
    nc.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "nc: {err}");
    assert_eq!(got.len(), 4_000_000, "{err}");
    let bad = got
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b != xia_migrate::vm::stream_byte(i as u64))
        .count();
    assert_eq!(bad, 0);
    // The source forwarded what reached it for the moved VM.
    let info = run_ok(exec(&tb, "hv1").arg("hypervisor-info"));
    assert!(info.contains("0 forged"), "{info}");

    // The migration log: vm1 leaves hv1 again, and hv1 crashes and
    // restarts from its log: it does not start the VM that left, and it
    // registers its name again (a higher sequence number than before the
    // crash), so vm1 can come back by name.
    run_ok(exec(&tb, "hv1").args(["migrate", "vm1", "--quiet", "--mode", "full", "--to", "hv2"]));
    let logged = std::fs::read_to_string(&log1).unwrap();
    assert!(
        logged.starts_with("{\"Start\"") && logged.contains("\"Committed\""),
        "{logged}"
    );
    run_ok(xia().args(["testbed", "kill", "--dir"]).arg(&tb).arg("hv1"));
    run_ok(
        xia()
            .args(["testbed", "start", "--dir"])
            .arg(&tb)
            .arg("hv1"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let info = loop {
        let (ok, info, _) = run(exec(&tb, "hv1").arg("hypervisor-info"));
        if ok && info.contains("\nname: hv1\n") {
            break info;
        }
        assert!(std::time::Instant::now() < deadline, "hv1 not back: {info}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(!info.contains("vm vm1"), "{info}");
    let daemon_log = std::fs::read_to_string(tb.join("hv1.log")).unwrap();
    assert!(
        daemon_log.contains("restarting the agent from its log"),
        "{daemon_log}"
    );
    let out = run_ok(
        exec(&tb, "hv2").args(["migrate", "vm1", "--quiet", "--mode", "full", "--to", "hv1"]),
    );
    assert!(out.contains("done: vm1 runs at hv1"), "{out}");
    assert!(run_ok(exec(&tb, "hv1").arg("hypervisor-info")).contains("vm vm1: 8 MiB, running"));
}

/// The figure before `what` on the line of `out` that holds it (`  808
/// pages by CID` gives 808 for " pages by CID").
fn figure(out: &str, what: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} in {out}"));
    let before = &line[..line.find(what).unwrap()];
    let n = before.rsplit([' ', ',']).next().unwrap_or_default();
    n.parse()
        .unwrap_or_else(|_| panic!("{n:?} before {what:?} in {line:?}"))
}

#[test]
fn a_vm_moved_with_dedup_gets_its_image_pages_from_a_store_in_the_destination_ad() {
    let dir = std::env::temp_dir().join(format!("xia-real-dedup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    run_ok(
        xia()
            .args(["testbed", "up", "--base-port", "15500", "--dir"])
            .arg(&dir)
            .arg(topology("migration-dedup-real.toml")),
    );
    let down = Testbed(dir.clone());
    let info = |node: &str| run_ok(exec(&dir, node).arg("hypervisor-info"));
    // hv2 fetches from the store in its AD; hv1 has no store in its own.
    let store = run_ok(exec(&dir, "store").arg("stats"));
    let store_dag = store
        .lines()
        .find_map(|l| l.strip_prefix("DAG "))
        .unwrap_or_else(|| panic!("no DAG in {store}"));
    assert!(
        info("hv2").contains(&format!("content store: {store_dag}\n")),
        "{}",
        info("hv2")
    );
    assert!(!info("hv1").contains("content store"), "{}", info("hv1"));

    // The baseline: vm2, booted from the same image, moves without dedup.
    let plain = run_ok(exec(&dir, "hv1").args(["migrate", "vm2", "--quiet", "--to", "hv2"]));
    assert!(plain.contains("done: vm2 runs at hv2"), "{plain}");
    assert!(!plain.contains("by CID"), "{plain}");
    assert!(!info("hv2").contains("fetched by CID"), "{}", info("hv2"));

    let out =
        run_ok(exec(&dir, "hv1").args(["migrate", "vm1", "--quiet", "--dedup", "--to", "hv2"]));
    assert!(out.contains("done: vm1 runs at hv2"), "{out}");
    // 8 MiB: 2048 pages, three quarters non-zero, 60 % of those the
    // image's (fewer if the guest wrote some before they left).
    let by_cid = figure(&out, " pages by CID");
    assert!((600..=1000).contains(&by_cid), "{out}");
    // Every one was fetched from the store (a failed fetch would have
    // been asked of the source, and counted).
    let hv2 = info("hv2");
    assert!(hv2.contains("vm vm1: 8 MiB, running"), "{hv2}");
    let fetched = figure(&hv2, " pages fetched by CID");
    let failed = figure(&hv2, " fetches failed");
    assert!(fetched > 0, "{hv2}");
    assert_eq!(fetched + failed, by_cid, "{hv2}");
    // `xia stats` prints the host's counters as `chunks_served: N,`.
    let stats = run_ok(exec(&dir, "store").arg("stats"));
    let served: u64 = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("chunks_served: "))
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no chunks_served in {stats}"));
    assert!(served >= fetched, "the store served {served} of {fetched}");
    // The image's pages stayed off the link between the ADs.
    let bytes = |out: &str| figure(out, " bytes sent at ");
    assert!(
        (bytes(&out) as f64) < 0.8 * bytes(&plain) as f64,
        "{} bytes with dedup, {} without",
        bytes(&out),
        bytes(&plain)
    );
    // The figures docs/src/benchmarks.md quotes (`-- --nocapture`).
    let downtime = |out: &str| {
        out.split("downtime ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or("?")
            .to_string()
    };
    eprintln!(
        "dedup: {by_cid} pages by CID, {fetched} fetched, {failed} failed, {served} served by the store; {} bytes sent vs {} without; downtime {} ms vs {} ms without",
        bytes(&out),
        bytes(&plain),
        downtime(&out),
        downtime(&plain)
    );
    // Passed: the daemons' logs are not needed.
    drop(down);
    let _ = std::fs::remove_dir_all(&dir);
}
