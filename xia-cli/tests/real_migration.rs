//! VM migration with real daemons on loopback UDP, as a user runs it:
//! `xia testbed up` starts two ADs with a hypervisor in each (`xia
//! hypervisor`), a client downloads a checksummed stream from the VM's
//! service by name (`xia nc`), and `xia migrate` moves the VM live to the
//! other AD and back with stop-and-copy while the download runs. The
//! client gets every byte exactly once. No root needed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

fn xia() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xia"))
}

fn exec(dir: &Path, node: &str) -> Command {
    let mut c = xia();
    c.args(["testbed", "exec", "--dir"])
        .arg(dir)
        .arg(node)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_xia"));
    c
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let (ok, out, err) = run(cmd);
    assert!(ok, "{cmd:?} failed: {out}{err}");
    out
}

/// The agent DAG `xia hypervisor-info` prints.
fn agent_dag(dir: &Path, node: &str) -> String {
    let info = run_ok(exec(dir, node).arg("hypervisor-info"));
    info.lines()
        .find_map(|l| l.strip_prefix("agent: "))
        .unwrap_or_else(|| panic!("no agent line in {info}"))
        .to_string()
}

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
fn a_vm_moves_live_and_back_while_a_client_downloads_from_it() {
    let dir = std::env::temp_dir().join(format!("xia-real-mig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let topo = dir.join("migration.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let tb = dir.join("tb");
    run_ok(
        xia()
            .args(["testbed", "up", "--base-port", "15300", "--dir"])
            .arg(&tb)
            .arg(&topo),
    );
    let _down = Testbed(tb.clone());
    let (hv1, hv2) = (agent_dag(&tb, "hv1"), agent_dag(&tb, "hv2"));
    assert!(run_ok(exec(&tb, "hv1").arg("hypervisor-info")).contains("vm vm1: 8 MiB, running"));

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

    // The download, by name, 4 MB at 8 Mbit/s: about 4 s.
    let mut nc = exec(&tb, "c1")
        .args(["nc", "name:video"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));

    let out = run_ok(exec(&tb, "hv1").args(["migrate", "vm1", "--quiet", "--to", &hv2]));
    assert!(out.contains("the destination committed"), "{out}");
    assert!(out.contains("done: vm1 runs at"), "{out}");
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
}
