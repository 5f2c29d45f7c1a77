//! Real mode: every node of a topology file as a real process (`xia
//! router` / `xia host`), joined by UDP links on loopback — or, with
//! `netns`, each node in its own network namespace (`xia-NODE`), each
//! link a veth pair with a /24 of its own (`10.200.L.1`–`.2` for link
//! L), XIA over UDP port 13781 on it (root and iproute2 needed).
//!
//! `up` writes one daemon configuration per node into a directory, starts
//! the daemons, records what it started in a state file there, and waits
//! until every host has heard its router. `down` reads the state file and
//! stops everything, also after a crash of `up` or of a daemon; `exec`
//! runs a command with `XIA_HOST` set to a node's application socket.
//!
//! Node `i` listens on UDP port `base_port + i`; each link's impairments
//! (rate, delay, queue, loss, jitter, reordering, duplication) are applied
//! by the sending daemon in userspace, so a topology behaves as in the
//! simulator, modulo real time.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xia_stack::naming::NAME_SERVER_SID;

use crate::routes;
use crate::topology::{NodeKind, RoutingSpec, RoutingTimers, Topology};

/// The state file in a testbed directory.
pub const STATE_FILE: &str = "state.toml";

/// Why real mode failed.
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// A file or directory.
    #[error("{path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A testbed is already up in that directory.
    #[error("a testbed is already up in {0} (run `xia testbed down` first)")]
    AlreadyUp(PathBuf),
    /// No testbed is up there.
    #[error("no testbed in {0} (no {STATE_FILE})")]
    NotUp(PathBuf),
    /// A node's daemon did not start or did not come up in time.
    #[error("node {node}: {why} (see {log})")]
    Node {
        /// The node.
        node: String,
        /// What happened.
        why: String,
        /// Its log file.
        log: PathBuf,
    },
    /// No node of that name.
    #[error("no node {0:?} in the testbed")]
    NoNode(String),
    /// Making namespaces or veth pairs failed.
    #[error("{0} (netns mode needs root and iproute2)")]
    Netns(String),
    /// The state file is damaged.
    #[error("{0}: damaged state file: {1}")]
    BadState(PathBuf, String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RealError + '_ {
    move |source| RealError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One running node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeState {
    /// Its name.
    pub name: String,
    /// "router" or "host".
    pub kind: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Its UDP address.
    pub udp: String,
    /// Its control or application socket.
    pub socket: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// Its network namespace (netns mode).
    #[serde(default)]
    pub netns: Option<String>,
}

/// What `up` started.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// The topology file.
    pub topology: String,
    /// The nodes.
    #[serde(default)]
    pub node: Vec<NodeState>,
}

impl State {
    /// Reads the state of the testbed in `dir`.
    pub fn load(dir: &Path) -> Result<State, RealError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RealError::NotUp(dir.to_path_buf()))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        toml::from_str(&text).map_err(|e| RealError::BadState(path, e.message().to_string()))
    }

    fn save(&self, dir: &Path) -> Result<(), RealError> {
        let path = dir.join(STATE_FILE);
        let text = toml::to_string(self).expect("state serialises");
        std::fs::write(&path, text).map_err(io(&path))
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Result<&NodeState, RealError> {
        self.node
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| RealError::NoNode(name.to_string()))
    }
}

/// How to bring a topology up.
#[derive(Clone, Debug)]
pub struct UpConfig {
    /// Where configurations, sockets, logs and the state file go.
    pub dir: PathBuf,
    /// Node `i` listens on UDP `base_port + i`.
    pub base_port: u16,
    /// The `xia` executable to start daemons with.
    pub exe: PathBuf,
    /// Give up waiting for the network after this long.
    pub timeout: Duration,
    /// One network namespace per node, veth pairs for links.
    pub netns: bool,
    /// Each daemon writes `DIR/NODE.pcap`.
    pub pcap: bool,
    /// With `netns`: links are raw Ethernet on the veth pairs (XARP)
    /// instead of UDP over them.
    pub ethernet: bool,
    /// Nodes placed elsewhere: their UDP address (on another machine, say).
    /// Others listen on loopback (`base_port + i`).
    pub placed: std::collections::BTreeMap<String, SocketAddr>,
}

/// The namespace of a node in netns mode.
pub fn namespace(node: &str) -> String {
    format!("xia-{node}")
}

/// Link `li`'s address at its `a` end (`end` 0) or `b` end (1).
fn veth_ip(li: usize, end: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, li as u8, 1 + end as u8)
}

fn veth_name(li: usize, end: usize) -> String {
    format!("xv{li}{}", if end == 0 { 'a' } else { 'b' })
}

fn dur(d: Duration) -> String {
    format!("{}ns", d.as_nanos())
}

/// The daemon configuration of node `i` (TOML).
pub fn daemon_config(topo: &Topology, i: usize, cfg: &UpConfig, seed: u64) -> String {
    let ports = routes::ports(topo);
    let node = &topo.nodes[i];
    let addr = |n: usize| {
        cfg.placed
            .get(&topo.nodes[n].name)
            .copied()
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.base_port + n as u16)))
    };
    let listen = if cfg.netns {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, xia_net::udp::DEFAULT_PORT))
    } else {
        addr(i)
    };
    let peer_addr = |li: usize, peer: usize| {
        if cfg.netns {
            let end = usize::from(topo.links[li].b == peer);
            SocketAddr::from((veth_ip(li, end), xia_net::udp::DEFAULT_PORT))
        } else {
            addr(peer)
        }
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Generated by `xia testbed up` for node {} of {}.\n",
        node.name,
        topo.ads.len()
    );
    for ad in &topo.ads {
        let _ = writeln!(t, "[[ad]]\nname = {:?}\n", ad.name);
    }
    let ad = &topo.ads[node.ad].name;
    match &node.kind {
        NodeKind::Router {
            ipv4,
            unknown_ads,
            cache_bytes,
        } => {
            let _ = writeln!(t, "[[router]]\nname = {:?}\nad = {ad:?}", node.name);
            if let Some(a) = ipv4 {
                let _ = writeln!(t, "ipv4 = \"{a}\"");
            }
            if *cache_bytes > 0 {
                let _ = writeln!(t, "cache_bytes = {cache_bytes}");
            }
            if !unknown_ads.is_empty() {
                let names: Vec<String> = unknown_ads
                    .iter()
                    .map(|&a| format!("{:?}", topo.ads[a].name))
                    .collect();
                let _ = writeln!(t, "unknown_ads = [{}]", names.join(", "));
            }
        }
        NodeKind::Host => match topo.migration.hypervisor(i) {
            Some(h) => {
                let _ = writeln!(
                    t,
                    "[[hypervisor]]\nname = {:?}\nad = {ad:?}\ncapacity = \"{}B\"\n",
                    node.name, h.capacity
                );
                let vms: Vec<_> = topo
                    .migration
                    .vms
                    .iter()
                    .filter(|v| v.hypervisor == i)
                    .collect();
                // The images its VMs boot from, each once.
                let mut images: Vec<&crate::migration::ImageSpec> = Vec::new();
                for v in &vms {
                    let im = topo
                        .migration
                        .images
                        .iter()
                        .find(|x| Some(x.image) == v.image);
                    if let Some(im) = im.filter(|im| !images.iter().any(|x| x.name == im.name)) {
                        images.push(im);
                    }
                }
                for im in &images {
                    let _ = writeln!(
                        t,
                        "[[image]]\nname = {:?}\nhost = {:?}\nshare = {:?}\n",
                        im.name, topo.nodes[im.host].name, im.image.share
                    );
                }
                for v in vms {
                    let image = images.iter().find(|x| Some(x.image) == v.image);
                    let image = image.map(|x| x.name.as_str());
                    let _ = writeln!(t, "{}", crate::hypervisor::vm_section(v, &node.name, image));
                }
            }
            None => {
                let _ = writeln!(t, "[[host]]\nname = {:?}\nad = {ad:?}\n", node.name);
                // An image store: what the simulator's store publishes.
                for (im, e) in topo.migration.image_extents(i) {
                    let _ = writeln!(
                        t,
                        "[[image]]\nname = {:?}\nhost = {:?}\nshare = {:?}\nmemory = \"{}B\"\npage_size = {}\n",
                        im.name,
                        node.name,
                        im.image.share,
                        e.pages as u64 * e.page_size as u64,
                        e.page_size
                    );
                }
            }
        },
    }
    if cfg.pcap {
        let pcap = cfg.dir.join(format!("{}.pcap", node.name));
        let _ = writeln!(t, "\n[daemon]\npcap = {:?}", pcap.display().to_string());
    } else {
        let _ = writeln!(t, "\n[daemon]");
    }
    if topo.name_server.is_none() && topo.migration.hypervisor(i).is_some() {
        // No name server to register the agent's name with.
        let _ = writeln!(t, "agent_name = \"\"");
    }
    if let Some(store) = topo
        .migration
        .hypervisor(i)
        .and_then(|_| topo.content_store(i))
    {
        let _ = writeln!(t, "content_store = {:?}", store.to_line());
    }
    let _ = writeln!(
        t,
        "listen = \"{}\"\nsocket = {:?}\nseed = {seed}\n",
        listen,
        cfg.dir
            .join(format!("{}.sock", node.name))
            .display()
            .to_string()
    );
    for &(li, peer) in &ports[i] {
        let l = &topo.links[li];
        let _ = writeln!(
            t,
            "[[link]]\n{}\nbandwidth = \"{}bps\"\ndelay = \"{}\"\nqueue = {}\nloss = {:?}\njitter = \"{}\"\nreorder = {:?}\nduplicate = {:?}\n",
            if cfg.ethernet {
                // This node's own end of the link's veth pair.
                format!("interface = \"{}\"", veth_name(li, usize::from(l.b == i)))
            } else {
                format!("peer = \"{}\"", peer_addr(li, peer))
            },
            l.bandwidth_bps,
            dur(l.delay),
            l.queue,
            l.loss,
            dur(l.jitter),
            l.reorder,
            l.duplicate
        );
    }
    if let RoutingSpec::LinkState(RoutingTimers {
        hello,
        dead,
        refresh,
    }) = topo.routing
    {
        let _ = writeln!(
            t,
            "[routing]\nhello = \"{}\"\ndead = \"{}\"\nrefresh = \"{}\"\n",
            dur(hello),
            dur(dead),
            dur(refresh)
        );
    }
    if let Some(x) = topo.xhcp_interval {
        let _ = writeln!(t, "[xhcp]\ninterval = \"{}\"\n", dur(x));
    }
    if let Some(ns) = topo.name_server {
        if ns == i {
            let _ = writeln!(t, "[name_server]\nserve = true");
        } else if matches!(node.kind, NodeKind::Router { .. }) {
            let dag = topo
                .node_dag(ns)
                .append_xid(NAME_SERVER_SID)
                .expect("three nodes");
            let text = dag.to_re_string().unwrap_or_default();
            let _ = writeln!(t, "[name_server]\ndag = {text:?}");
        }
    }
    t
}

/// A command run in `netns` if given (`ip netns exec` execs it there, so
/// its pid is the command's).
pub fn command_in(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn spawn(
    exe: &Path,
    kind: &str,
    conf: &Path,
    log: &Path,
    netns: Option<&str>,
) -> Result<u32, RealError> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(log))?;
    let child = command_in(netns, exe)
        .arg(kind)
        .arg("--config")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().map_err(io(log))?)
        .stderr(logf)
        .spawn()
        .map_err(io(exe))?;
    // The child is reaped by `down` (or init); we do not wait for it.
    Ok(child.id())
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops one node's daemon at once (SIGKILL: a crash, as in a failure
/// experiment); `start` brings it back.
pub fn kill(dir: &Path, node: &str) -> Result<(), RealError> {
    let state = State::load(dir)?;
    let n = state.node(node)?;
    let _ = Command::new("kill")
        .args(["-KILL", &n.pid.to_string()])
        .stderr(Stdio::null())
        .status();
    while alive(n.pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Starts a node's daemon again from its configuration (after `kill` or
/// a crash); it comes back with empty state, as after a reboot.
pub fn start(dir: &Path, node: &str, exe: &Path) -> Result<(), RealError> {
    let mut state = State::load(dir)?;
    let i = state
        .node
        .iter()
        .position(|n| n.name == node)
        .ok_or_else(|| RealError::NoNode(node.to_string()))?;
    if alive(state.node[i].pid) {
        return Err(RealError::Node {
            node: node.to_string(),
            why: "is running".into(),
            log: state.node[i].log.clone(),
        });
    }
    let conf = dir.join(format!("{node}.toml"));
    let n = &state.node[i];
    let pid = spawn(exe, &n.kind, &conf, &n.log, n.netns.as_deref())?;
    state.node[i].pid = pid;
    state.save(dir)
}

/// Writes every node's daemon configuration into `cfg.dir` without
/// starting anything: for topologies that span machines, where each
/// machine runs its nodes' daemons (`xia router --config …`).
pub fn write_configs(
    topo: &Topology,
    cfg: &UpConfig,
    seed: u64,
) -> Result<Vec<PathBuf>, RealError> {
    std::fs::create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
    let mut out = Vec::new();
    for (i, node) in topo.nodes.iter().enumerate() {
        let conf = cfg.dir.join(format!("{}.toml", node.name));
        std::fs::write(&conf, daemon_config(topo, i, cfg, seed)).map_err(io(&conf))?;
        out.push(conf);
    }
    Ok(out)
}

/// Starts every node of `topo`; returns what it started.
pub fn up(
    topo: &Topology,
    topo_path: &Path,
    cfg: &UpConfig,
    seed: u64,
) -> Result<State, RealError> {
    std::fs::create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
    if cfg.dir.join(STATE_FILE).exists() {
        return Err(RealError::AlreadyUp(cfg.dir.clone()));
    }
    let mut state = State {
        topology: topo_path.display().to_string(),
        node: Vec::new(),
    };
    // Recorded as each daemon starts, so `down` cleans up even if we stop
    // half-way.
    state.save(&cfg.dir)?;
    if cfg.netns {
        make_namespaces(topo, &cfg.dir, &mut state)?;
    }
    for (i, node) in topo.nodes.iter().enumerate() {
        let conf = cfg.dir.join(format!("{}.toml", node.name));
        std::fs::write(&conf, daemon_config(topo, i, cfg, seed)).map_err(io(&conf))?;
        let log = cfg.dir.join(format!("{}.log", node.name));
        let _ = std::fs::remove_file(&log);
        // A fresh testbed: no hypervisor restarts from an old run's log.
        let _ = std::fs::remove_file(cfg.dir.join(format!("{}.migrations.log", node.name)));
        let kind = match node.kind {
            NodeKind::Router { .. } => "router",
            NodeKind::Host if topo.migration.hypervisor(i).is_some() => "hypervisor",
            NodeKind::Host => "host",
        };
        let netns = cfg.netns.then(|| namespace(&node.name));
        let pid = spawn(&cfg.exe, kind, &conf, &log, netns.as_deref())?;
        let udp = if cfg.netns {
            let ips: Vec<String> = routes::ports(topo)[i]
                .iter()
                .map(|&(li, _)| veth_ip(li, usize::from(topo.links[li].b == i)).to_string())
                .collect();
            format!("{}:{}", ips.join(","), xia_net::udp::DEFAULT_PORT)
        } else {
            format!("127.0.0.1:{}", cfg.base_port + i as u16)
        };
        let entry = NodeState {
            name: node.name.clone(),
            kind: kind.to_string(),
            pid,
            udp,
            socket: cfg.dir.join(format!("{}.sock", node.name)),
            log,
            netns,
        };
        match state.node.iter_mut().find(|n| n.name == node.name) {
            Some(n) => *n = entry,
            None => state.node.push(entry),
        }
        state.save(&cfg.dir)?;
    }
    wait_ready(&state, cfg.timeout)?;
    wait_routes(topo, &state, cfg.timeout)?;
    Ok(state)
}

/// Waits until the first host reaches every other host (routing has
/// converged enough for the scenario to start).
fn wait_routes(topo: &Topology, state: &State, timeout: Duration) -> Result<(), RealError> {
    let hosts: Vec<usize> = (0..topo.nodes.len())
        .filter(|&i| topo.nodes[i].kind == NodeKind::Host)
        .collect();
    let Some((&first, rest)) = hosts.split_first() else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io(Path::new("tokio")))?;
    let client = xia_net::client::Client::new(&state.node[first].socket);
    let start = Instant::now();
    for &h in rest {
        let dst = topo.node_dag(h);
        let mut seq = 0u16;
        loop {
            seq = seq.wrapping_add(1);
            let ok = rt.block_on(client.ping(&dst, seq, 8, None, Duration::from_millis(300)));
            if matches!(ok, Ok(xia_net::client::PingOutcome::Reply { .. })) {
                break;
            }
            if start.elapsed() > timeout {
                return Err(RealError::Node {
                    node: topo.nodes[h].name.clone(),
                    why: format!(
                        "not reachable from {} after {timeout:?}",
                        topo.nodes[first].name
                    ),
                    log: state.node[h].log.clone(),
                });
            }
        }
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), RealError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(io(Path::new("ip")))?;
    if !out.status.success() {
        return Err(RealError::Netns(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// One namespace per node, one veth pair per link; recorded in the state
/// before anything is made, so `down` removes whatever exists.
fn make_namespaces(topo: &Topology, dir: &Path, state: &mut State) -> Result<(), RealError> {
    for n in &topo.nodes {
        state.node.push(NodeState {
            name: n.name.clone(),
            kind: String::new(),
            pid: 0,
            udp: String::new(),
            socket: dir.join(format!("{}.sock", n.name)),
            log: dir.join(format!("{}.log", n.name)),
            netns: Some(namespace(&n.name)),
        });
    }
    state.save(dir)?;
    for n in &topo.nodes {
        let ns = namespace(&n.name);
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    for (li, l) in topo.links.iter().enumerate() {
        if l.initially_down {
            continue;
        }
        let (va, vb) = (veth_name(li, 0), veth_name(li, 1));
        let (na, nb) = (
            namespace(&topo.nodes[l.a].name),
            namespace(&topo.nodes[l.b].name),
        );
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        for (v, ns, end) in [(&va, &na, 0), (&vb, &nb, 1)] {
            ip(&["link", "set", v, "netns", ns])?;
            let cidr = format!("{}/24", veth_ip(li, end));
            ip(&["-n", ns, "addr", "add", &cidr, "dev", v])?;
            ip(&["-n", ns, "link", "set", v, "up"])?;
        }
    }
    Ok(())
}

/// Waits until every daemon's socket answers, every host knows its
/// gateway's AD (XHCP has run) and every agent's and VM's name is
/// registered.
fn wait_ready(state: &State, timeout: Duration) -> Result<(), RealError> {
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io(Path::new("tokio")))?;
    for n in &state.node {
        loop {
            if !alive(n.pid) {
                return Err(RealError::Node {
                    node: n.name.clone(),
                    why: "the daemon exited".into(),
                    log: n.log.clone(),
                });
            }
            let ready = rt.block_on(async {
                if n.kind == "hypervisor" {
                    // Ready when it and its VMs can be found by name.
                    return crate::hypervisor::info(&n.socket)
                        .await
                        .is_ok_and(|i| i.attached && i.named && i.vms.iter().all(|v| v.named));
                }
                let c = xia_net::client::Client::new(&n.socket);
                match c.info().await {
                    Ok(info) => n.kind == "router" || info.gateway.is_some(),
                    Err(_) => false,
                }
            });
            if ready {
                break;
            }
            if start.elapsed() > timeout {
                return Err(RealError::Node {
                    node: n.name.clone(),
                    why: format!("not ready after {timeout:?}"),
                    log: n.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Stops the testbed in `dir`: SIGTERM to every daemon, SIGKILL to any
/// still running after two seconds; then removes the directory's files.
pub fn down(dir: &Path) -> Result<State, RealError> {
    let state = State::load(dir)?;
    for n in state.node.iter().filter(|n| n.pid > 0) {
        let _ = Command::new("kill")
            .args(["-TERM", &n.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && state.node.iter().any(|n| n.pid > 0 && alive(n.pid)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in state.node.iter().filter(|n| n.pid > 0 && alive(n.pid)) {
        let _ = Command::new("kill")
            .args(["-KILL", &n.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    for n in &state.node {
        let _ = std::fs::remove_file(&n.socket);
        // Deleting a namespace deletes its veth ends too.
        if let Some(ns) = &n.netns {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
    let path = dir.join(STATE_FILE);
    std::fs::remove_file(&path).map_err(io(&path))?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::DaemonConfig;

    fn configs(text: &str) -> (Topology, Vec<DaemonConfig>) {
        let topo = Topology::parse("t.toml", text).unwrap();
        let cfg = UpConfig {
            dir: PathBuf::from("/tmp/xia-configs-test"),
            base_port: 14000,
            exe: PathBuf::from("xia"),
            timeout: Duration::ZERO,
            netns: false,
            pcap: false,
            ethernet: false,
            placed: Default::default(),
        };
        let daemons = (0..topo.nodes.len())
            .map(|i| {
                let text = daemon_config(&topo, i, &cfg, 1);
                let name = format!("{}.toml", topo.nodes[i].name);
                DaemonConfig::parse(&name, &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
            })
            .collect();
        (topo, daemons)
    }

    #[test]
    fn daemons_get_the_simulator_s_images_vms_and_content_stores() {
        let (topo, daemons) = configs(include_str!("../topologies/migration-dedup.toml"));
        let node = |n: &str| topo.node(n).unwrap();
        // The store publishes the very pages (so the very CIDs) the
        // simulator's store does.
        let store = node("store");
        let sim: Vec<_> = topo.migration.image_pages(store).collect();
        let real: Vec<_> =
            crate::migration::published_pages(daemons[store].images.clone()).collect();
        assert!(sim.len() > 5000, "{}", sim.len());
        assert_eq!(real, sim);
        // The VM boots from the image; the hypervisor in the store's AD
        // fetches from the store, the other has no store nearby.
        let (hv1, hv2) = (node("hv1"), node("hv2"));
        assert_eq!(daemons[hv1].vms[0].image, topo.migration.vms[0].image);
        assert!(daemons[hv1].vms[0].image.is_some());
        assert_eq!(daemons[hv1].content_store, None);
        assert_eq!(daemons[hv2].content_store, topo.content_store(hv2));
        assert_eq!(
            daemons[hv2].content_store.as_ref().unwrap().to_line(),
            topo.node_dag(store).to_line()
        );
        // Nobody else holds images.
        for (i, d) in daemons.iter().enumerate() {
            assert!(i == store || d.images.is_empty(), "{}", d.name);
        }
    }
}
