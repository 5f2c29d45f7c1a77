//! Applications over a host daemon, modelled on xia-core's: `ping`,
//! `traceroute`, `echo`, `nc`, `put`/`get`, `name`, `stats`.
//!
//! Each talks to the host daemon whose socket `--host` (or `XIA_HOST`)
//! names; `xia testbed exec NODE -- …` sets `XIA_HOST` for a node.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xia_net::client::{Client, PingOutcome};
use xia_stack::dag::Dag;

/// Which host daemon to use.
#[derive(Args, Clone)]
pub struct HostArg {
    /// The host daemon's socket (default: $XIA_HOST).
    #[arg(long, env = "XIA_HOST")]
    host: PathBuf,
}

impl HostArg {
    fn client(&self) -> Client {
        Client::new(&self.host)
    }
}

#[derive(Args)]
pub struct PingArgs {
    #[command(flatten)]
    host: HostArg,
    /// Stop after this many requests.
    #[arg(short = 'c', default_value_t = 4)]
    count: u16,
    /// Seconds between requests.
    #[arg(short = 'i', default_value_t = 1.0)]
    interval: f64,
    /// Payload bytes.
    #[arg(short = 's', default_value_t = 56)]
    size: u16,
    /// Hop limit.
    #[arg(short = 't')]
    ttl: Option<u8>,
    /// Seconds to wait for each reply.
    #[arg(short = 'W', default_value_t = 2.0)]
    wait: f64,
    /// Destination: a DAG, or `name:NAME` to resolve first.
    dst: Vec<String>,
}

#[derive(Args)]
pub struct TracerouteArgs {
    #[command(flatten)]
    host: HostArg,
    /// Most hops.
    #[arg(short = 'm', default_value_t = 30)]
    max_hops: u8,
    /// Destination: a DAG or `name:NAME`.
    dst: Vec<String>,
}

#[derive(Subcommand)]
pub enum EchoCmd {
    /// Serve echo on a SID: streams and datagrams are sent back.
    Server {
        #[command(flatten)]
        host: HostArg,
        /// Register under this name (needs --key).
        #[arg(long)]
        name: Option<String>,
        /// The SID's key file (`xia key new --kind sid`); without it a
        /// fresh SID is used.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Serve datagrams instead of streams.
        #[arg(long)]
        datagram: bool,
    },
    /// Send lines from stdin (or `--message`) and print what comes back.
    Client {
        #[command(flatten)]
        host: HostArg,
        /// Use a datagram socket.
        #[arg(long)]
        datagram: bool,
        /// Send this instead of stdin.
        #[arg(long)]
        message: Option<String>,
        /// The server: a DAG or a name.
        to: Vec<String>,
    },
}

#[derive(Args)]
pub struct NcArgs {
    #[command(flatten)]
    host: HostArg,
    /// Listen (on --key's SID, or a fresh one) instead of connecting.
    #[arg(short = 'l')]
    listen: bool,
    /// The SID's key file, to listen on a known SID (and register --name).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Register under this name when listening (needs --key).
    #[arg(long)]
    name: Option<String>,
    /// Where to connect: a DAG or a name.
    to: Vec<String>,
}

#[derive(Args)]
pub struct PutArgs {
    #[command(flatten)]
    host: HostArg,
    /// Bytes per chunk.
    #[arg(long, default_value_t = 1 << 20)]
    chunk: usize,
    /// The file to publish.
    file: PathBuf,
}

#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    host: HostArg,
    /// The manifest `xia put` printed (a file, or - for stdin).
    manifest: PathBuf,
    /// Where to write the file.
    #[arg(short = 'o')]
    output: PathBuf,
}

#[derive(Subcommand)]
pub enum NameCmd {
    /// Register NAME → DAG, signed with the key of the DAG's intent.
    Register {
        #[command(flatten)]
        host: HostArg,
        /// The intent's key file.
        #[arg(long)]
        key: PathBuf,
        /// Sequence number (must grow with each update).
        #[arg(long, default_value_t = 1)]
        seq: u64,
        /// The name.
        name: String,
        /// The DAG.
        dag: Vec<String>,
    },
    /// Print the DAG registered under NAME.
    Resolve {
        #[command(flatten)]
        host: HostArg,
        /// The name.
        name: String,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn secs(s: f64, what: &str) -> Result<Duration> {
    if !(s.is_finite() && s >= 0.0) {
        bail!("{what} {s}: expected seconds, 0 or more");
    }
    Ok(Duration::from_secs_f64(s))
}

/// A destination: `name:NAME` is resolved, anything else is DAG text.
async fn target(c: &Client, words: &[String]) -> Result<(Dag, String)> {
    let text = words.join(" ");
    if let Some(name) = text.strip_prefix("name:") {
        let dag = c.resolve(name).await?;
        return Ok((dag, name.to_string()));
    }
    let dag: Dag = text
        .parse()
        .map_err(|e| anyhow::anyhow!("destination {text:?}: {e}"))?;
    Ok((dag, text))
}

fn load_key(path: &std::path::Path) -> Result<xia_stack::Identity> {
    xia_stack::Identity::load(path).with_context(|| format!("key {}", path.display()))
}

pub fn ping(a: PingArgs) -> Result<()> {
    let interval = secs(a.interval, "-i")?;
    let wait = secs(a.wait, "-W")?;
    runtime()?.block_on(async {
        let c = a.host.client();
        let (dst, label) = target(&c, &a.dst).await?;
        println!("PING {label}: {} data bytes", a.size);
        let start = Instant::now();
        let sum = c
            .ping_series(&dst, a.count, interval, a.size, a.ttl, wait, |seq, out| {
                println!("{}", out.line(seq, &label, str::to_string));
            })
            .await?;
        let rtts: Vec<f64> = sum.rtts.iter().map(|r| r.as_secs_f64() * 1e3).collect();
        let n = sum.transmitted;
        let got = rtts.len() as u32;
        println!("--- {label} ping statistics ---");
        let errs = if sum.errors > 0 {
            format!(", +{} errors", sum.errors)
        } else {
            String::new()
        };
        println!(
            "{n} packets transmitted, {got} received{errs}, {}% packet loss, time {}ms",
            (n - got) * 100 / n.max(1),
            start.elapsed().as_millis()
        );
        if got > 0 {
            let min = rtts.iter().copied().fold(f64::MAX, f64::min);
            let max = rtts.iter().copied().fold(0.0, f64::max);
            let avg = rtts.iter().sum::<f64>() / f64::from(got);
            println!("rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
        }
        if got == 0 {
            bail!("no replies");
        }
        Ok(())
    })
}

pub fn traceroute(a: TracerouteArgs) -> Result<()> {
    runtime()?.block_on(async {
        let c = a.host.client();
        let (dst, label) = target(&c, &a.dst).await?;
        println!("traceroute to {label}, {} hops max", a.max_hops);
        // The host's own forwarding takes one hop: hop limit h+1 reaches
        // the h-th router.
        for hop in 1..=a.max_hops {
            let out = c
                .ping(
                    &dst,
                    u16::from(hop),
                    8,
                    hop.checked_add(1),
                    Duration::from_secs(2),
                )
                .await?;
            match out {
                PingOutcome::Error { from, what } => {
                    println!("{hop:>2}  {from}  {what}");
                    if !what.contains("time exceeded") {
                        break;
                    }
                }
                PingOutcome::Reply { from, rtt, .. } => {
                    println!(
                        "{hop:>2}  {from}  {:.3} ms (destination)",
                        rtt.as_secs_f64() * 1e3
                    );
                    break;
                }
                PingOutcome::Timeout => println!("{hop:>2}  *"),
            }
        }
        Ok(())
    })
}

async fn register_if(
    c: &Client,
    key: &Option<PathBuf>,
    name: &Option<String>,
    dag: &Dag,
) -> Result<()> {
    if let Some(name) = name {
        let Some(k) = key else {
            bail!("--name needs --key: a registration is signed by the SID's key");
        };
        let id = load_key(k)?;
        c.register(&id, name, dag, now_seq()).await?;
        eprintln!("registered {name} -> {}", dag.to_line());
    }
    Ok(())
}

/// A sequence number that grows across restarts: seconds since 1970.
fn now_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
}

pub fn echo(cmd: EchoCmd) -> Result<()> {
    runtime()?.block_on(async {
        match cmd {
            EchoCmd::Server {
                host,
                name,
                key,
                datagram,
            } => {
                let c = host.client();
                let sid = match &key {
                    Some(k) => Some(load_key(k)?.xid()),
                    None => None,
                };
                if datagram {
                    let mut s = c.bind(sid).await?;
                    println!("{}", s.dag().to_line());
                    register_if(&c, &key, &name, &s.dag().clone()).await?;
                    loop {
                        let (data, from) = s.recv_from().await?;
                        s.send_to(&from, &data).await?;
                    }
                }
                let l = c.listen(sid).await?;
                println!("{}", l.dag().to_line());
                std::io::stdout().flush()?;
                register_if(&c, &key, &name, l.dag()).await?;
                loop {
                    let mut s = l.accept().await?;
                    tokio::spawn(async move {
                        let (mut r, mut w) = tokio::io::split(&mut s);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    });
                }
            }
            EchoCmd::Client {
                host,
                datagram,
                message,
                to,
            } => {
                let c = host.client();
                let input = match message {
                    Some(m) => m.into_bytes(),
                    None => {
                        let mut v = Vec::new();
                        tokio::io::stdin().read_to_end(&mut v).await?;
                        v
                    }
                };
                if datagram {
                    let (dst, _) = target(&c, &to).await?;
                    let mut s = c.bind(None).await?;
                    s.send_to(&dst, &input).await?;
                    let (back, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from())
                        .await
                        .context("no echo within 5 s")??;
                    std::io::stdout().write_all(&back)?;
                    return Ok(());
                }
                let text = to.join(" ");
                let mut s = c
                    .connect(text.strip_prefix("name:").unwrap_or(&text))
                    .await?;
                // Read while writing: the echo comes back while we send,
                // and a full receive buffer would stop the server.
                let (mut r, mut w) = tokio::io::split(&mut s);
                let send = async {
                    w.write_all(&input).await?;
                    w.shutdown().await
                };
                let recv = async {
                    let mut back = Vec::new();
                    r.read_to_end(&mut back).await.map(|_| back)
                };
                let (sent, back) = tokio::join!(send, recv);
                sent?;
                let back = back?;
                std::io::stdout().write_all(&back)?;
                if back != input {
                    bail!(
                        "the echo differs from what was sent ({} vs {} bytes)",
                        back.len(),
                        input.len()
                    );
                }
                Ok(())
            }
        }
    })
}

pub fn nc(a: NcArgs) -> Result<()> {
    runtime()?.block_on(async {
        let c = a.host.client();
        let mut s = if a.listen {
            let sid = match &a.key {
                Some(k) => Some(load_key(k)?.xid()),
                None => None,
            };
            let l = c.listen(sid).await?;
            eprintln!("listening on {}", l.dag().to_line());
            register_if(&c, &a.key, &a.name, l.dag()).await?;
            l.accept().await?
        } else {
            let text = a.to.join(" ");
            c.connect(text.strip_prefix("name:").unwrap_or(&text))
                .await?
        };
        let (mut r, mut w) = tokio::io::split(&mut s);
        let up = async {
            tokio::io::copy(&mut tokio::io::stdin(), &mut w).await?;
            w.shutdown().await
        };
        let down = async {
            let mut out = tokio::io::stdout();
            tokio::io::copy(&mut r, &mut out).await?;
            out.flush().await
        };
        let (u, d) = tokio::join!(up, down);
        d?;
        u?;
        Ok(())
    })
}

pub fn put(a: PutArgs) -> Result<()> {
    if a.chunk == 0 || a.chunk > 16 << 20 {
        bail!("--chunk {}: 1 byte to 16 MiB", a.chunk);
    }
    let data = std::fs::read(&a.file).with_context(|| format!("{}", a.file.display()))?;
    runtime()?.block_on(async {
        let c = a.host.client();
        // The manifest: one DAG per line, in order; then the size.
        let mut manifest = String::new();
        for piece in data.chunks(a.chunk) {
            let dag = c.put_chunk(piece.to_vec()).await?;
            manifest.push_str(&format!("{}\n", dag.to_line()));
        }
        manifest.push_str(&format!("# {} bytes\n", data.len()));
        print!("{manifest}");
        Ok(())
    })
}

pub fn get(a: GetArgs) -> Result<()> {
    let text = if a.manifest.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&a.manifest).with_context(|| format!("{}", a.manifest.display()))?
    };
    runtime()?.block_on(async {
        let c = a.host.client();
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let dag: Dag = line
                .parse()
                .map_err(|e| anyhow::anyhow!("manifest line {}: {e}", i + 1))?;
            out.extend(
                c.fetch_chunk(&dag)
                    .await
                    .with_context(|| format!("chunk on manifest line {}", i + 1))?,
            );
        }
        std::fs::write(&a.output, &out).with_context(|| format!("{}", a.output.display()))?;
        eprintln!("{} bytes, every chunk verified against its CID", out.len());
        Ok(())
    })
}

pub fn name(cmd: NameCmd) -> Result<()> {
    runtime()?.block_on(async {
        match cmd {
            NameCmd::Register {
                host,
                key,
                seq,
                name,
                dag,
            } => {
                let text = dag.join(" ");
                let dag: Dag = text
                    .parse()
                    .map_err(|e| anyhow::anyhow!("DAG {text:?}: {e}"))?;
                let id = load_key(&key)?;
                let seq = host.client().register(&id, &name, &dag, seq).await?;
                println!("registered {name} (seq {seq})");
            }
            NameCmd::Resolve { host, name } => {
                println!("{}", host.client().resolve(&name).await?.to_line());
            }
        }
        Ok(())
    })
}

pub fn stats(host: HostArg) -> Result<()> {
    runtime()?.block_on(async {
        let c = host.client();
        let info = c.info().await?;
        println!("HID {}\nDAG {}", info.hid, info.dag);
        if let Some(ns) = info.name_server {
            println!("name server {ns}");
        }
        print!("{}", c.stats().await?);
        println!();
        Ok(())
    })
}
