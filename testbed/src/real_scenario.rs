//! A topology's scenario on a real testbed: the `[[run]]` pings and
//! `[[stream]]` transfers, at their times, through the host daemons'
//! application API, and the `[[migration]]`s and download `[[client]]`s
//! of VMs through the hypervisor daemons' control sockets — so the same
//! file gives comparable results in the simulator and in real mode
//! (modulo timing). Other scenario entries (`[[flow]]`, `[[fetch]]`,
//! `[[move]]`, `[[event]]`, datagram clients) run in the simulator only,
//! and are reported as skipped.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xia_net::client::{Client, PingOutcome};
use xia_stack::xid::Principal;

use xia_migrate::vm::ServiceSpec;

use crate::apps::{fill_stream, stream_mismatches};
use crate::migration::ClientKind;
use crate::real::State;
use crate::topology::{derived_identity, Command, Target, Topology};

/// What one ping printed and counted.
#[derive(Clone, Debug, PartialEq)]
pub struct RealPing {
    /// The node and command.
    pub title: String,
    /// ping(8)-style lines.
    pub lines: Vec<String>,
    /// Requests sent.
    pub transmitted: u32,
    /// Replies.
    pub received: u32,
    /// Hop limits of the replies.
    pub hop_limits: Vec<u8>,
}

/// One stream transfer.
#[derive(Clone, Debug, PartialEq)]
pub struct RealStream {
    /// Client and server names.
    pub from: String,
    /// Server.
    pub to: String,
    /// Bytes to send.
    pub bytes: u64,
    /// Bytes the server received.
    pub received: u64,
    /// Bytes that were not the pattern's.
    pub corrupt: u64,
    /// Wall time from connect to the server seeing the end.
    pub duration: Option<Duration>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// One VM migration, through the source hypervisor's control socket.
#[derive(Clone, Debug, PartialEq)]
pub struct RealMigration {
    /// The VM.
    pub vm: String,
    /// Source and destination hypervisors.
    pub from: String,
    /// Destination.
    pub to: String,
    /// The mode asked for.
    pub mode: String,
    /// What the source reported, or why it failed.
    pub result: Result<crate::hypervisor::Summary, String>,
}

/// A client downloading a VM's stream service.
#[derive(Clone, Debug, PartialEq)]
pub struct RealVmClient {
    /// Its host.
    pub host: String,
    /// The VM.
    pub vm: String,
    /// Bytes the service sends.
    pub expected: u64,
    /// Bytes received.
    pub received: u64,
    /// Bytes that were not the pattern's.
    pub corrupt: u64,
    /// The longest wait between two reads, after the first byte.
    pub longest_gap: Duration,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// What the scenario did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RealReport {
    /// Pings, in file order.
    pub pings: Vec<RealPing>,
    /// Streams, in file order.
    pub streams: Vec<RealStream>,
    /// VM migrations, in file order.
    pub migrations: Vec<RealMigration>,
    /// VM clients, in file order.
    pub vm_clients: Vec<RealVmClient>,
    /// Each hypervisor's agent counters at the end (name, counters), when
    /// the topology migrated VMs.
    pub hypervisors: Vec<(String, String)>,
    /// Scenario entries not run in real mode.
    pub skipped: Vec<String>,
}

impl std::fmt::Display for RealReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.pings {
            writeln!(f, "{}", p.title)?;
            for l in &p.lines {
                writeln!(f, "  {l}")?;
            }
            writeln!(f)?;
        }
        if !self.streams.is_empty() {
            writeln!(f, "streams:")?;
            for s in &self.streams {
                let mut line = format!(
                    "  {} -> {}: {} of {} bytes",
                    s.from, s.to, s.received, s.bytes
                );
                if let Some(d) = s.duration {
                    let secs = d.as_secs_f64();
                    let _ = write!(
                        line,
                        " in {secs:.3} s, {:.2} Mbit/s",
                        s.received as f64 * 8.0 / secs / 1e6
                    );
                }
                if s.corrupt > 0 {
                    let _ = write!(line, ", {} CORRUPT bytes", s.corrupt);
                }
                if let Some(e) = &s.error {
                    let _ = write!(line, ", error: {e}");
                }
                writeln!(f, "{line}")?;
            }
            writeln!(f)?;
        }
        if !self.migrations.is_empty() {
            writeln!(f, "migrations:")?;
            for m in &self.migrations {
                let head = format!("  {} {} -> {} {}", m.vm, m.from, m.to, m.mode);
                match &m.result {
                    Ok(s) => writeln!(
                        f,
                        "{head}: done; downtime {:.1} ms as the source saw it (estimated {:.1} ms{}), total {:.1} ms, {} rounds, {:.2} MB sent, {} pages in the final copy{}, {:.1} Mbit/s, RTT {:.1} ms",
                        s.downtime_ms,
                        s.estimated_downtime_ms,
                        if s.target_missed { ", target missed" } else { "" },
                        s.total_ms,
                        s.rounds,
                        s.bytes as f64 / 1e6,
                        s.final_pages,
                        // As the simulator's report says it.
                        if s.cid_pages > 0 {
                            format!(", {} pages by CID", s.cid_pages)
                        } else {
                            String::new()
                        },
                        s.bandwidth * 8.0 / 1e6,
                        s.rtt_ms
                    )?,
                    Err(e) => writeln!(f, "{head}: FAILED: {e}")?,
                }
            }
            writeln!(f)?;
        }
        if !self.vm_clients.is_empty() {
            writeln!(f, "vm clients:")?;
            for c in &self.vm_clients {
                let mut line = format!(
                    "  {} <- {} (download): {} of {} bytes, {} corrupt, longest gap {:.1} ms",
                    c.host,
                    c.vm,
                    c.received,
                    c.expected,
                    c.corrupt,
                    c.longest_gap.as_secs_f64() * 1e3
                );
                if let Some(e) = &c.error {
                    let _ = write!(line, ", error: {e}");
                }
                writeln!(f, "{line}")?;
            }
            writeln!(f)?;
        }
        if !self.hypervisors.is_empty() {
            writeln!(f, "hypervisors:")?;
            for (name, counters) in &self.hypervisors {
                writeln!(f, "  {name}: {counters}")?;
            }
            writeln!(f)?;
        }
        for s in &self.skipped {
            writeln!(f, "skipped (simulator only): {s}")?;
        }
        Ok(())
    }
}

/// Runs `topo`'s pings and streams on the testbed `state` describes;
/// times are from now.
pub async fn run(topo: &Topology, state: &State) -> RealReport {
    let mut report = RealReport::default();
    for m in &topo.moves {
        report.skipped.push(format!(
            "[[move]] of {} at {:?}",
            topo.nodes[m.host].name, m.at
        ));
    }
    for e in &topo.events {
        report.skipped.push(format!("[[event]] at {:?}", e.at));
    }
    for f in &topo.flows {
        report.skipped.push(format!(
            "[[flow]] {} -> {}",
            topo.nodes[f.from].name, topo.nodes[f.to].name
        ));
    }
    for f in &topo.fetches {
        report
            .skipped
            .push(format!("[[fetch]] on {}", topo.nodes[f.node].name));
    }
    let client = |n: usize| Client::new(&state.node[n].socket);
    let t0 = tokio::time::Instant::now();
    let name_of = |dag: &str| -> String {
        topo.nodes
            .iter()
            .enumerate()
            .find(|(i, _)| topo.node_dag(*i).to_line() == dag)
            .map_or_else(|| dag.to_string(), |(_, n)| n.name.clone())
    };
    let pings = topo.runs.iter().map(|run| {
        let c = client(run.node);
        let title = format!("[{}] {}", topo.nodes[run.node].name, run.text);
        async move {
            let Command::Ping {
                dst,
                count,
                interval,
                size,
                timeout,
                hop_limit,
            } = &run.command;
            tokio::time::sleep_until(t0 + run.at).await;
            let mut p = RealPing {
                title,
                lines: Vec::new(),
                transmitted: 0,
                received: 0,
                hop_limits: Vec::new(),
            };
            let (dag, label) = match dst {
                Target::Dag(d) => (
                    d.clone(),
                    topo.name_of(d.intent()).unwrap_or_else(|| d.to_line()),
                ),
                Target::Name(n) => match c.resolve(n).await {
                    Ok(d) => (d, n.clone()),
                    Err(e) => {
                        p.lines.push(format!("ping: {n}: {e}"));
                        return p;
                    }
                },
            };
            p.lines.push(format!(
                "PING {} ({label}): {size} data bytes",
                dag.to_line()
            ));
            let size16 = u16::try_from(*size).unwrap_or(u16::MAX);
            let count16 = u16::try_from(*count).unwrap_or(u16::MAX);
            let mut lines = Vec::new();
            // Timeouts print nothing, as in the simulator's ping.
            let sum = c
                .ping_series(
                    &dag,
                    count16,
                    *interval,
                    size16,
                    *hop_limit,
                    *timeout,
                    |seq, out| {
                        if !matches!(out, PingOutcome::Timeout) {
                            lines.push(out.line(seq, &label, name_of));
                        }
                    },
                )
                .await;
            p.lines.extend(lines);
            match sum {
                Ok(sum) => {
                    p.transmitted = sum.transmitted;
                    p.received = sum.rtts.len() as u32;
                    p.hop_limits = sum.hop_limits;
                }
                Err(e) => p.lines.push(format!("ping: {e}")),
            }
            p.lines.push(format!("--- {label} ping statistics ---"));
            p.lines.push(format!(
                "{} packets transmitted, {} received, {}% packet loss",
                p.transmitted,
                p.received,
                (p.transmitted - p.received) * 100 / p.transmitted.max(1)
            ));
            p
        }
    });
    let streams = topo.streams.iter().enumerate().map(|(k, st)| {
        let (cc, sc) = (client(st.from), client(st.to));
        async move {
            let mut r = RealStream {
                from: topo.nodes[st.from].name.clone(),
                to: topo.nodes[st.to].name.clone(),
                bytes: st.bytes,
                received: 0,
                corrupt: 0,
                duration: None,
                error: None,
            };
            // The server listens at once, on the SID the simulator uses.
            let (sid, name) = match st.service {
                Some(i) => (
                    topo.services[i].sid,
                    Some(topo.services[i].name.to_ascii_lowercase()),
                ),
                None => (
                    derived_identity(Principal::SID, &format!("stream {k} server")).xid(),
                    None,
                ),
            };
            let listener = match sc.listen(Some(sid)).await {
                Ok(l) => l,
                Err(e) => {
                    r.error = Some(format!("server: {e}"));
                    return r;
                }
            };
            if let (Some(i), Some(name)) = (st.service, &name) {
                let owner = derived_identity(
                    Principal::SID,
                    &format!("service {}", topo.services[i].name),
                );
                if let Err(e) = sc.register(&owner, name, listener.dag(), 1).await {
                    r.error = Some(format!("registering {name}: {e}"));
                    return r;
                }
            }
            let server = async {
                let mut s = listener.accept().await?;
                let (mut got, mut corrupt) = (0u64, 0u64);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    corrupt += stream_mismatches(got, &buf[..n]);
                    got += n as u64;
                }
                s.shutdown().await?;
                Ok::<_, xia_net::client::ClientError>((got, corrupt, Instant::now()))
            };
            let client = async {
                tokio::time::sleep_until(t0 + st.at).await;
                let start = Instant::now();
                let to = match &name {
                    Some(n) => n.clone(),
                    None => {
                        let base = st.dag.clone().unwrap_or_else(|| topo.node_dag(st.to));
                        base.append_xid(sid).expect("room for the SID").to_line()
                    }
                };
                let mut s = cc.connect(&to).await?;
                let mut sent = 0u64;
                let mut chunk = vec![0u8; 64 * 1024];
                while sent < st.bytes {
                    let n = (st.bytes - sent).min(chunk.len() as u64) as usize;
                    fill_stream(sent, &mut chunk[..n]);
                    s.write_all(&chunk[..n]).await?;
                    sent += n as u64;
                }
                s.shutdown().await?;
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await?;
                Ok::<_, xia_net::client::ClientError>(start)
            };
            let (srv, cli) = tokio::join!(server, client);
            match (srv, cli) {
                (Ok((got, corrupt, end)), Ok(start)) => {
                    r.received = got;
                    r.corrupt = corrupt;
                    r.duration = Some(end.saturating_duration_since(start));
                }
                (Err(e), _) | (_, Err(e)) => r.error = Some(e.to_string()),
            }
            r
        }
    });
    let migrations = run_migrations(topo, state, t0);
    let vm_clients = topo.migration.clients.iter().filter_map(|c| {
        let v = &topo.migration.vms[c.vm];
        let ServiceSpec::StreamSource { bytes, .. } = v.service else {
            return None;
        };
        if c.kind != ClientKind::Download {
            return None;
        }
        let cc = client(c.host);
        let dag = topo.vm_service_dag(c.vm);
        let to = match (&v.service_name, c.by_name) {
            (Some(n), true) => n.clone(),
            _ => dag.to_line(),
        };
        Some(async move {
            let mut r = RealVmClient {
                host: topo.nodes[c.host].name.clone(),
                vm: v.name.clone(),
                expected: bytes,
                received: 0,
                corrupt: 0,
                longest_gap: Duration::ZERO,
                error: None,
            };
            tokio::time::sleep_until(t0 + c.at).await;
            let got = async {
                let mut s = cc.connect(&to).await?;
                let mut buf = vec![0u8; 64 * 1024];
                let mut last: Option<Instant> = None;
                loop {
                    let n = s.read(&mut buf).await?;
                    let now = Instant::now();
                    if let Some(l) = last {
                        r.longest_gap = r.longest_gap.max(now - l);
                    }
                    if n == 0 {
                        break;
                    }
                    last = Some(now);
                    r.corrupt += stream_mismatches(r.received, &buf[..n]);
                    r.received += n as u64;
                }
                Ok::<_, xia_net::client::ClientError>(())
            }
            .await;
            if let Err(e) = got {
                r.error = Some(e.to_string());
            }
            r
        })
    });
    for c in &topo.migration.clients {
        if c.kind != ClientKind::Download {
            report.skipped.push(format!(
                "[[client]] {} of {} (datagrams)",
                topo.nodes[c.host].name, topo.migration.vms[c.vm].name
            ));
        }
    }
    let (pings, streams, migrations, vm_clients) = tokio::join!(
        join_all(pings),
        join_all(streams),
        migrations,
        join_all(vm_clients)
    );
    report.pings = pings;
    report.streams = streams;
    report.migrations = migrations;
    report.vm_clients = vm_clients;
    // What the agents counted (pages fetched by CID, packets forwarded),
    // as the simulator's report ends with.
    if !report.migrations.is_empty() {
        for n in state.node.iter().filter(|n| n.kind == "hypervisor") {
            let counters = match crate::hypervisor::info(&n.socket).await {
                Ok(i) => i.counters,
                Err(e) => format!("unknown ({e})"),
            };
            report.hypervisors.push((n.name.clone(), counters));
        }
    }
    report
}

/// The topology's migrations, in time order, each through the control
/// socket of the hypervisor its VM is on by then.
async fn run_migrations(
    topo: &Topology,
    state: &State,
    t0: tokio::time::Instant,
) -> Vec<RealMigration> {
    let plan = &topo.migration;
    let mut order: Vec<usize> = (0..plan.migrations.len()).collect();
    order.sort_by_key(|&k| plan.migrations[k].at);
    let mut on: Vec<usize> = plan.vms.iter().map(|v| v.hypervisor).collect();
    let mut out: Vec<Option<RealMigration>> = vec![None; plan.migrations.len()];
    for k in order {
        let m = &plan.migrations[k];
        let from = on[m.vm];
        let dest = &topo.nodes[m.to];
        let to = xia_stack::dag::Dag::path(&[
            topo.ads[dest.ad].xid,
            dest.hid(),
            crate::hypervisor::agent_key(&dest.name).xid(),
        ])
        .expect("three nodes");
        let c = &m.config;
        let req = crate::hypervisor::MigrateRequest {
            vm: plan.vms[m.vm].name.clone(),
            to: to.to_line(),
            mode: c.mode.to_string(),
            downtime_target_ms: c.downtime_target.as_millis() as u64,
            max_bandwidth: c.max_bandwidth,
            deltas: c.delta_cache > 0,
            auto_converge: c.auto_converge,
            dedup: c.dedup,
        };
        tokio::time::sleep_until(t0 + m.at).await;
        let result = crate::hypervisor::migrate_via(&state.node[from].socket, &req, |_| {})
            .await
            .map_err(|e| e.to_string());
        if result.is_ok() {
            on[m.vm] = m.to;
        }
        out[k] = Some(RealMigration {
            vm: req.vm,
            from: topo.nodes[from].name.clone(),
            to: dest.name.clone(),
            mode: req.mode,
            result,
        });
    }
    out.into_iter().flatten().collect()
}
