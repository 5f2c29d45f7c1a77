//! Migration experiment plans: a base scenario, the axes to sweep, and
//! the topology each point of the sweep runs.
//!
//! ```toml
//! title = "Live vs full"       # optional (default: the file's stem)
//!
//! [scenario]                   # the base point; every key is optional
//! memory = "64MiB"             # guest memory
//! page_size = 4096
//! dirty = "hot-set"            # uniform | hot-set | zipf
//! hot_set = "8MiB"             # the writable working set (hot-set)
//! zipf = 1.0                   # the exponent (zipf)
//! dirty_rate = 2000            # pages written per second
//! bandwidth = "100Mbps"        # the link between the two ADs
//! rtt = "20ms"                 # round trip between the hypervisors
//! queue = 500                  # packets (default: one BDP, at least 100)
//! access_bandwidth = "10Gbps"  # every other link
//! access_delay = "100us"       # every other link, one way
//! mode = "live"                # full | live | live-deltas | smart
//! downtime_target = "300ms"
//! max_rounds = 30
//! auto_converge = true
//! migrate_at = "2s"
//! seed = 1
//! image_share = 0.6            # the VM boots from a base image covering
//!                              # this share of its non-zero pages, held
//!                              # by an image store in the destination AD
//!                              # (default 0: no image)
//! dedup = true                 # send image pages by CID (needs an image)
//!
//! [stream]                     # the client streaming from the VM
//! rate = "20Mbps"
//! start = "1s"
//! # bytes = "30MB"             # default: enough to outlast the migration
//!                              # (rate × (migrate_at − start + 4 × the
//!                              # slowest predicted total + 5 s))
//! by_name = true
//!
//! [datagrams]                  # optional: a second run of each point in
//! interval = "5ms"             # which the VM serves datagrams to a client
//! size = 200
//! start = "1s"
//! # count = 2000               # default: until well after the migration
//!
//! [sweep]                      # lists; the runner takes their product
//! memory = ["32MiB", "64MiB"]
//! mode = ["full", "live", "smart"]
//! seeds = [1, 2]
//! ```
//!
//! An axis is either a `[scenario]` value or a `[sweep]` list, not both.
//! The sweepable axes are `memory`, `hot_set`, `dirty`, `dirty_rate`,
//! `bandwidth`, `rtt`, `mode`, `downtime_target`, `dedup` and `seeds` (the
//! sweep's name for `seed`). `hot_set` applies to hot-set points only: other
//! dirty models are not repeated for each of its values.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use xia_migrate::guest::{DirtyModel, ZERO_SHARE};
use xia_migrate::model::{self, Inputs, Prediction, Strategy};
use xia_migrate::source::ASSUMED_DELTA_RATIO;

use crate::migration::parse_size;
use crate::topology::{parse_bandwidth, parse_duration, Ctx, TopologyError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    title: Option<Spanned<String>>,
    scenario: Option<RawScenario>,
    stream: Option<RawStream>,
    datagrams: Option<RawDatagrams>,
    sweep: Option<RawSweep>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    memory: Option<Spanned<String>>,
    page_size: Option<Spanned<i64>>,
    dirty: Option<Spanned<String>>,
    hot_set: Option<Spanned<String>>,
    zipf: Option<Spanned<f64>>,
    dirty_rate: Option<Spanned<f64>>,
    bandwidth: Option<Spanned<String>>,
    rtt: Option<Spanned<String>>,
    queue: Option<Spanned<i64>>,
    access_bandwidth: Option<Spanned<String>>,
    access_delay: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    downtime_target: Option<Spanned<String>>,
    max_rounds: Option<Spanned<i64>>,
    auto_converge: Option<bool>,
    migrate_at: Option<Spanned<String>>,
    seed: Option<Spanned<i64>>,
    image_share: Option<Spanned<f64>>,
    dedup: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStream {
    rate: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    bytes: Option<Spanned<String>>,
    by_name: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatagrams {
    interval: Option<Spanned<String>>,
    size: Option<Spanned<i64>>,
    start: Option<Spanned<String>>,
    count: Option<Spanned<i64>>,
    by_name: Option<bool>,
}

type List<T> = Option<Spanned<Vec<Spanned<T>>>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    memory: List<String>,
    dirty: List<String>,
    hot_set: List<String>,
    dirty_rate: List<f64>,
    bandwidth: List<String>,
    rtt: List<String>,
    downtime_target: List<String>,
    seeds: List<i64>,
    mode: List<String>,
    dedup: List<bool>,
}

/// How the guest picks the pages it writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dirty {
    /// Every page alike.
    Uniform,
    /// 90 % of writes land in the hot set (`hot_set`).
    HotSet,
    /// Zipf over the pages, with the scenario's exponent.
    Zipf,
}

impl Dirty {
    /// The name a topology and a plan use.
    pub fn name(self) -> &'static str {
        match self {
            Dirty::Uniform => "uniform",
            Dirty::HotSet => "hot-set",
            Dirty::Zipf => "zipf",
        }
    }
}

/// The share of writes a hot set takes (as `testbed::migration` builds
/// it from a topology).
pub const HOT_SHARE: f64 = 0.9;

/// A migration mode as a plan names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlanMode {
    /// Stop and copy.
    Full,
    /// Pre-copy, pages whole.
    Live,
    /// Pre-copy with XOR deltas for re-sent pages.
    LiveDeltas,
    /// Measure, then let the model choose.
    Smart,
}

impl PlanMode {
    /// The name a plan uses.
    pub fn name(self) -> &'static str {
        match self {
            PlanMode::Full => "full",
            PlanMode::Live => "live",
            PlanMode::LiveDeltas => "live-deltas",
            PlanMode::Smart => "smart",
        }
    }

    /// The model's strategy for a fixed mode (`None` for smart).
    pub fn strategy(self) -> Option<Strategy> {
        match self {
            PlanMode::Full => Some(Strategy::Full),
            PlanMode::Live => Some(Strategy::Live),
            PlanMode::LiveDeltas => Some(Strategy::LiveDelta),
            PlanMode::Smart => None,
        }
    }

    fn parse(s: &str) -> Option<PlanMode> {
        Some(match s {
            "full" => PlanMode::Full,
            "live" => PlanMode::Live,
            "live-deltas" => PlanMode::LiveDeltas,
            "smart" => PlanMode::Smart,
            _ => return None,
        })
    }
}

/// An axis of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Axis {
    /// Guest memory.
    Memory,
    /// The dirty model.
    Dirty,
    /// The hot set's size.
    HotSet,
    /// Pages written per second.
    DirtyRate,
    /// The inter-AD link's bandwidth.
    Bandwidth,
    /// The hypervisors' round trip.
    Rtt,
    /// The downtime target.
    DowntimeTarget,
    /// Image pages sent by CID.
    Dedup,
    /// The seed.
    Seed,
    /// The migration mode.
    Mode,
}

impl Axis {
    /// Every axis, in the order points are enumerated (the last varies
    /// fastest).
    pub const ALL: [Axis; 10] = [
        Axis::Memory,
        Axis::Dirty,
        Axis::HotSet,
        Axis::DirtyRate,
        Axis::Bandwidth,
        Axis::Rtt,
        Axis::DowntimeTarget,
        Axis::Dedup,
        Axis::Seed,
        Axis::Mode,
    ];

    /// Its name in plans and in CSV headers.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Memory => "memory",
            Axis::Dirty => "dirty",
            Axis::HotSet => "hot_set",
            Axis::DirtyRate => "dirty_rate",
            Axis::Bandwidth => "bandwidth",
            Axis::Rtt => "rtt",
            Axis::DowntimeTarget => "downtime_target",
            Axis::Dedup => "dedup",
            Axis::Seed => "seed",
            Axis::Mode => "mode",
        }
    }

    /// Its unit ("" for none).
    pub fn unit(self) -> &'static str {
        match self {
            Axis::Memory | Axis::HotSet => "MiB",
            Axis::DirtyRate => "pages/s",
            Axis::Bandwidth => "Mbit/s",
            Axis::Rtt | Axis::DowntimeTarget => "ms",
            Axis::Dirty | Axis::Dedup | Axis::Seed | Axis::Mode => "",
        }
    }

    /// A description with its unit, for tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Axis::Memory => "memory (MiB)",
            Axis::Dirty => "dirty model",
            Axis::HotSet => "hot set (MiB)",
            Axis::DirtyRate => "dirty rate (pages/s)",
            Axis::Bandwidth => "bandwidth (Mbit/s)",
            Axis::Rtt => "RTT (ms)",
            Axis::DowntimeTarget => "downtime target (ms)",
            Axis::Dedup => "dedup",
            Axis::Seed => "seed",
            Axis::Mode => "mode",
        }
    }
}

/// The values of every axis (one for an axis that is not swept).
#[derive(Clone, Debug, PartialEq)]
pub struct Axes {
    /// Guest memory, bytes.
    pub memory: Vec<u64>,
    /// Dirty models.
    pub dirty: Vec<Dirty>,
    /// Hot-set sizes, bytes.
    pub hot_set: Vec<u64>,
    /// Pages written per second.
    pub dirty_rate: Vec<f64>,
    /// Inter-AD bandwidth, bits per second.
    pub bandwidth: Vec<u64>,
    /// Round trip between the hypervisors.
    pub rtt: Vec<Duration>,
    /// Downtime targets.
    pub downtime_target: Vec<Duration>,
    /// Dedup off or on.
    pub dedup: Vec<bool>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Modes.
    pub mode: Vec<PlanMode>,
}

/// The scenario's fixed parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Bytes per page.
    pub page_size: u64,
    /// The Zipf exponent.
    pub zipf: f64,
    /// Packets the inter-AD link queues (`None`: one BDP, at least 100).
    pub queue: Option<usize>,
    /// Every other link's bandwidth, bits per second.
    pub access_bandwidth: u64,
    /// Every other link's one-way delay.
    pub access_delay: Duration,
    /// At most this many pre-copy rounds.
    pub max_rounds: u32,
    /// Throttle a guest whose rounds stop shrinking.
    pub auto_converge: bool,
    /// When the migration starts.
    pub migrate_at: Duration,
    /// The share of the guest's non-zero pages its base image covers (0:
    /// no image, no store).
    pub image_share: f64,
}

/// The client that streams from the VM.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamClient {
    /// The service's pacing, bits per second.
    pub rate: u64,
    /// When the client connects.
    pub start: Duration,
    /// Bytes to download (`None`: enough to outlast the migration).
    pub bytes: Option<u64>,
    /// Resolve the service's name.
    pub by_name: bool,
}

/// The datagram client of the companion runs.
#[derive(Clone, Debug, PartialEq)]
pub struct DatagramClient {
    /// Between datagrams.
    pub interval: Duration,
    /// Bytes each.
    pub size: usize,
    /// When the first goes.
    pub start: Duration,
    /// How many (`None`: until well after the migration).
    pub count: Option<u32>,
    /// Resolve the service's name.
    pub by_name: bool,
}

/// One point of the sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Its number, from 1, in enumeration order.
    pub index: usize,
    /// Guest memory, bytes.
    pub memory: u64,
    /// The dirty model.
    pub dirty: Dirty,
    /// The hot set, bytes (hot-set points only).
    pub hot_set: Option<u64>,
    /// Pages written per second.
    pub dirty_rate: f64,
    /// Inter-AD bandwidth, bits per second.
    pub bandwidth: u64,
    /// Round trip between the hypervisors.
    pub rtt: Duration,
    /// The downtime target.
    pub downtime_target: Duration,
    /// Image pages go by CID.
    pub dedup: bool,
    /// The seed.
    pub seed: u64,
    /// The mode.
    pub mode: PlanMode,
}

/// A checked plan and its points.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The file's stem (the default output directory's name).
    pub name: String,
    /// Its title.
    pub title: String,
    /// The text it was read from.
    pub text: String,
    /// Fixed parameters.
    pub scenario: Scenario,
    /// The streaming client.
    pub stream: StreamClient,
    /// The datagram client, when the plan has one.
    pub datagrams: Option<DatagramClient>,
    /// Every axis's values.
    pub axes: Axes,
    /// The points, in order.
    pub points: Vec<Point>,
}

// An axis value and where it was written.
type At<T> = (T, Range<usize>);

// One axis: a scenario value (or the default) or a sweep list.
fn axis<T, U>(
    cx: &Ctx,
    key: &str,
    one: &Option<Spanned<T>>,
    list: &List<T>,
    default: U,
    parse: impl Fn(&T) -> Result<U, String>,
) -> Result<Vec<At<U>>, TopologyError>
where
    U: PartialEq,
{
    match (one, list) {
        (Some(_), Some(l)) => cx.err(
            l.span(),
            format!("{key} is both in [scenario] and in [sweep]: keep one"),
        ),
        (Some(v), None) => match parse(v.get_ref()) {
            Ok(u) => Ok(vec![(u, v.span())]),
            Err(e) => cx.err(v.span(), format!("{key}: {e}")),
        },
        (None, Some(l)) => {
            if l.get_ref().is_empty() {
                return cx.err(l.span(), format!("sweep.{key} is an empty list"));
            }
            let mut out: Vec<At<U>> = Vec::new();
            for v in l.get_ref() {
                let u = match parse(v.get_ref()) {
                    Ok(u) => u,
                    Err(e) => return cx.err(v.span(), format!("sweep.{key}: {e}")),
                };
                if out.iter().any(|(o, _)| *o == u) {
                    return cx.err(v.span(), format!("sweep.{key} lists a value twice"));
                }
                out.push((u, v.span()));
            }
            Ok(out)
        }
        (None, None) => Ok(vec![(default, 0..0)]),
    }
}

fn values<T>(v: Vec<At<T>>) -> Vec<T> {
    v.into_iter().map(|(x, _)| x).collect()
}

fn size(s: &String) -> Result<u64, String> {
    match parse_size(s) {
        Some(b) if b > 0 => Ok(b),
        _ => Err(format!("{s:?} is not a size like \"64MiB\"")),
    }
}

fn bandwidth(s: &String) -> Result<u64, String> {
    parse_bandwidth(s).ok_or_else(|| format!("{s:?} is not a bandwidth like \"100Mbps\""))
}

fn duration(s: &String) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?} is not a time like \"20ms\""))
}

fn positive_duration(s: &String) -> Result<Duration, String> {
    match parse_duration(s) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{s:?} is not a positive time like \"20ms\"")),
    }
}

impl Plan {
    /// Reads a plan file.
    pub fn load(path: &Path) -> Result<Plan, TopologyError> {
        let (file, text) = crate::topology::read_config(path)?;
        Plan::parse(&file, &text)
    }

    /// Parses plan text; `file` names it in errors, and its stem names
    /// the plan.
    pub fn parse(file: &str, text: &str) -> Result<Plan, TopologyError> {
        let cx = Ctx { file, text };
        let raw: RawPlan = cx.toml()?;
        let name = Path::new(file)
            .file_stem()
            .map_or_else(|| "plan".to_string(), |s| s.to_string_lossy().into_owned());
        let sc = raw.scenario.unwrap_or_default();
        let sw = raw.sweep.unwrap_or_default();

        let page_size = crate::migration::parse_page_size(&cx, &sc.page_size)? as u64;
        let memory = axis(&cx, "memory", &sc.memory, &sw.memory, 64 << 20, |s| {
            let b = size(s)?;
            if b % page_size != 0 || b > 64 << 30 {
                return Err(format!(
                    "{s:?} must be a multiple of the page size ({page_size}), at most 64 GiB"
                ));
            }
            Ok(b)
        })?;
        let dirty = axis(
            &cx,
            "dirty",
            &sc.dirty,
            &sw.dirty,
            Dirty::HotSet,
            |s| match s.as_str() {
                "uniform" => Ok(Dirty::Uniform),
                "hot-set" => Ok(Dirty::HotSet),
                "zipf" => Ok(Dirty::Zipf),
                other => Err(format!("{other:?} is not uniform, hot-set or zipf")),
            },
        )?;
        let hot_set = axis(&cx, "hot_set", &sc.hot_set, &sw.hot_set, 8 << 20, |s| {
            let b = size(s)?;
            if b < page_size || b % page_size != 0 {
                return Err(format!(
                    "{s:?} must be a multiple of the page size ({page_size})"
                ));
            }
            Ok(b)
        })?;
        let dirty_rate = axis(
            &cx,
            "dirty_rate",
            &sc.dirty_rate,
            &sw.dirty_rate,
            2000.0,
            |r| {
                if r.is_finite() && *r >= 0.0 {
                    Ok(*r)
                } else {
                    Err(format!("{r} is not pages per second, at least 0"))
                }
            },
        )?;
        let bw = axis(
            &cx,
            "bandwidth",
            &sc.bandwidth,
            &sw.bandwidth,
            100_000_000,
            bandwidth,
        )?;
        let rtt = axis(
            &cx,
            "rtt",
            &sc.rtt,
            &sw.rtt,
            Duration::from_millis(20),
            duration,
        )?;
        let target = axis(
            &cx,
            "downtime_target",
            &sc.downtime_target,
            &sw.downtime_target,
            Duration::from_millis(300),
            positive_duration,
        )?;
        let seeds = axis(&cx, "seeds", &sc.seed, &sw.seeds, 1, |s| {
            u64::try_from(*s).map_err(|_| format!("{s} is not a seed (0 or more)"))
        })?;
        let dedup = axis(&cx, "dedup", &sc.dedup, &sw.dedup, false, |b| Ok(*b))?;
        let mode = axis(&cx, "mode", &sc.mode, &sw.mode, PlanMode::Live, |s| {
            PlanMode::parse(s)
                .ok_or_else(|| format!("{s:?} is not full, live, live-deltas or smart"))
        })?;

        let zipf = match &sc.zipf {
            None => 1.0,
            Some(z) if z.get_ref().is_finite() && *z.get_ref() > 0.0 => *z.get_ref(),
            Some(z) => return cx.err(z.span(), "zipf must be an exponent above 0"),
        };
        let queue = match &sc.queue {
            None => None,
            Some(q) if (1..=1_000_000).contains(q.get_ref()) => Some(*q.get_ref() as usize),
            Some(q) => {
                return cx.err(
                    q.span(),
                    format!("queue {} must be 1 to 1000000 packets", q.get_ref()),
                )
            }
        };
        let one = |f: &Option<Spanned<String>>,
                   key: &str,
                   default,
                   parse: fn(&String) -> Result<Duration, String>|
         -> Result<Duration, TopologyError> {
            match f {
                None => Ok(default),
                Some(s) => parse(s.get_ref()).or_else(|e| cx.err(s.span(), format!("{key}: {e}"))),
            }
        };
        let access_bandwidth = match &sc.access_bandwidth {
            None => 10_000_000_000,
            Some(s) => bandwidth(s.get_ref())
                .or_else(|e| cx.err(s.span(), format!("access_bandwidth: {e}")))?,
        };
        let access_delay = one(
            &sc.access_delay,
            "access_delay",
            Duration::from_micros(100),
            duration,
        )?;
        let max_rounds = match &sc.max_rounds {
            None => 30,
            Some(r) => match u32::try_from(*r.get_ref()) {
                Ok(n) if n >= 1 => n,
                _ => return cx.err(r.span(), "max_rounds must be at least 1"),
            },
        };
        let migrate_at = one(
            &sc.migrate_at,
            "migrate_at",
            Duration::from_secs(2),
            duration,
        )?;

        let st = raw.stream.unwrap_or_default();
        let rate = match &st.rate {
            None => 20_000_000,
            Some(s) => {
                bandwidth(s.get_ref()).or_else(|e| cx.err(s.span(), format!("rate: {e}")))?
            }
        };
        let start = one(&st.start, "start", Duration::from_secs(1), duration)?;
        if start >= migrate_at {
            let span = st.start.as_ref().map_or(0..0, |s| s.span());
            return cx.err(
                span,
                format!(
                    "the stream starts at {start:?}, not before the migration ({migrate_at:?})"
                ),
            );
        }
        let bytes = match &st.bytes {
            None => None,
            Some(s) => {
                Some(size(s.get_ref()).or_else(|e| cx.err(s.span(), format!("bytes: {e}")))?)
            }
        };
        let stream = StreamClient {
            rate,
            start,
            bytes,
            by_name: st.by_name.unwrap_or(true),
        };
        let datagrams = match &raw.datagrams {
            None => None,
            Some(d) => {
                let interval = one(
                    &d.interval,
                    "interval",
                    Duration::from_millis(5),
                    positive_duration,
                )?;
                let size = match &d.size {
                    None => 200,
                    Some(n) => match usize::try_from(*n.get_ref()) {
                        Ok(v) if (8..=1400).contains(&v) => v,
                        _ => return cx.err(n.span(), "size must be 8 to 1400 bytes"),
                    },
                };
                let start = one(&d.start, "start", Duration::from_secs(1), duration)?;
                let count = match &d.count {
                    None => None,
                    Some(n) => match u32::try_from(*n.get_ref()) {
                        Ok(v) if v > 0 => Some(v),
                        _ => return cx.err(n.span(), "count must be a positive number"),
                    },
                };
                Some(DatagramClient {
                    interval,
                    size,
                    start,
                    count,
                    by_name: d.by_name.unwrap_or(true),
                })
            }
        };
        let image_share = match &sc.image_share {
            None => 0.0,
            Some(x) if (0.0..=1.0).contains(x.get_ref()) => *x.get_ref(),
            Some(x) => return cx.err(x.span(), "image_share must be 0 to 1"),
        };
        if image_share == 0.0 {
            if let Some((_, span)) = dedup.iter().find(|(d, _)| *d) {
                return cx.err(
                    span.clone(),
                    "dedup needs a base image: set image_share (the share of the guest's non-zero pages the image covers) above 0",
                );
            }
        }
        let scenario = Scenario {
            page_size,
            zipf,
            queue,
            access_bandwidth,
            access_delay,
            max_rounds,
            auto_converge: sc.auto_converge.unwrap_or(true),
            migrate_at,
            image_share,
        };
        // Cross-checks, at the value to blame.
        for (r, span) in &rtt {
            if *r < scenario.access_delay * 4 {
                return cx.err(
                    span.clone(),
                    format!(
                        "rtt {r:?} is shorter than the access links' share (4 × access_delay = {:?})",
                        scenario.access_delay * 4
                    ),
                );
            }
        }
        let uses_hot_set = dirty.iter().any(|(d, _)| *d == Dirty::HotSet);
        let (smallest, memory_span) = memory
            .iter()
            .min_by_key(|(m, _)| *m)
            .cloned()
            .unwrap_or((0, 0..0));
        if uses_hot_set {
            for (h, span) in &hot_set {
                if *h > smallest {
                    // Blame the hot set if it was written, else the memory.
                    let (which, span) = if span.is_empty() {
                        ("the default hot_set", memory_span.clone())
                    } else {
                        ("hot_set", span.clone())
                    };
                    return cx.err(
                        span,
                        format!(
                            "{which} ({} MiB) is larger than the memory ({} MiB)",
                            fmt_f64(mib(*h)),
                            fmt_f64(mib(smallest))
                        ),
                    );
                }
            }
        }
        let axes = Axes {
            memory: values(memory),
            dirty: values(dirty),
            hot_set: values(hot_set),
            dirty_rate: values(dirty_rate),
            bandwidth: values(bw),
            rtt: values(rtt),
            downtime_target: values(target),
            dedup: values(dedup),
            seeds: values(seeds),
            mode: values(mode),
        };
        let points = enumerate(&axes);
        let title = raw
            .title
            .map_or_else(|| name.clone(), |t| t.get_ref().clone());
        Ok(Plan {
            name,
            title,
            text: text.to_string(),
            scenario,
            stream,
            datagrams,
            axes,
            points,
        })
    }

    /// The number of distinct values an axis takes over the points.
    pub fn distinct(&self, axis: Axis) -> usize {
        let mut seen = BTreeSet::new();
        for p in &self.points {
            if axis != Axis::HotSet || p.hot_set.is_some() {
                seen.insert(p.value(axis));
            }
        }
        seen.len()
    }

    /// The axes that take more than one value, in [`Axis::ALL`] order.
    pub fn varying(&self) -> Vec<Axis> {
        Axis::ALL
            .into_iter()
            .filter(|&a| self.distinct(a) > 1)
            .collect()
    }

    /// The topology point `p` runs: the stream client, or with
    /// `datagrams` the companion run's datagram client.
    pub fn topology(&self, p: &Point, datagrams: bool) -> String {
        let sc = &self.scenario;
        let bw = p.bandwidth;
        // One-way delay of the inter-AD link: the hypervisors' round trip
        // crosses two access links at each end.
        let inter = (p.rtt / 2).saturating_sub(sc.access_delay * 2);
        let queue = sc.queue.unwrap_or_else(|| default_queue(bw, p.rtt));
        let horizon = self.horizon(p);
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# {} — point {} of {}: {}\n# {}",
            self.title.replace(['\n', '\r'], " "),
            p.index,
            self.points.len(),
            p.label(),
            if datagrams {
                "companion run: the VM serves datagrams to c1"
            } else {
                "c1 streams from the VM"
            }
        );
        let _ = writeln!(
            t,
            "# alone, as the experiment runs it: xia testbed run {} --seed {} --until {}",
            crate::experiment::point_file(p, datagrams),
            p.seed,
            fmt_f64(self.until(p).as_secs_f64())
        );
        let image = sc.image_share > 0.0;
        let _ = writeln!(
            t,
            "#\n#   c1, ns --- rA ===== rB --- hv2{}\n#              |\n#             hv1 (runs vm1)\n",
            if image { ", store" } else { "" }
        );
        for ad in ["A", "B"] {
            let _ = writeln!(t, "[[ad]]\nname = \"{ad}\"");
        }
        for (r, ad) in [("rA", "A"), ("rB", "B")] {
            let _ = writeln!(t, "[[router]]\nname = \"{r}\"\nad = \"{ad}\"");
        }
        for h in ["c1", "ns"] {
            let _ = writeln!(t, "[[host]]\nname = \"{h}\"\nad = \"A\"");
        }
        // The image store sits in the destination AD, so its hypervisor
        // fetches image pages there instead of over the inter-AD link.
        if image {
            let _ = writeln!(t, "[[host]]\nname = \"store\"\nad = \"B\"");
        }
        for (h, ad) in [("hv1", "A"), ("hv2", "B")] {
            let _ = writeln!(t, "[[hypervisor]]\nname = \"{h}\"\nad = \"{ad}\"");
        }
        let access = format!(
            "bandwidth = \"{}\"\ndelay = \"{}\"",
            fmt_bandwidth(sc.access_bandwidth),
            fmt_duration(sc.access_delay)
        );
        for (a, b) in [("c1", "rA"), ("ns", "rA"), ("hv1", "rA"), ("rB", "hv2")] {
            let _ = writeln!(t, "[[link]]\na = \"{a}\"\nb = \"{b}\"\n{access}");
        }
        if image {
            let _ = writeln!(t, "[[link]]\na = \"store\"\nb = \"rB\"\n{access}");
            let _ = writeln!(
                t,
                "[[image]]\nname = \"base\"\nhost = \"store\"\nshare = {}",
                fmt_f64(sc.image_share)
            );
        }
        let _ = writeln!(
            t,
            "[[link]]\na = \"rA\"\nb = \"rB\"\nbandwidth = \"{}\"\ndelay = \"{}\"\nqueue = {queue}",
            fmt_bandwidth(bw),
            fmt_duration(inter)
        );
        let _ = writeln!(
            t,
            "\n[xhcp]\ninterval = \"500ms\"\n\n[name_server]\nhost = \"ns\"\n"
        );
        let _ = writeln!(
            t,
            "[[vm]]\nname = \"vm1\"\nhypervisor = \"hv1\"\nmemory = \"{}\"\npage_size = {}\ndirty_rate = {}\ndirty = \"{}\"",
            fmt_size(p.memory),
            sc.page_size,
            fmt_f64(p.dirty_rate),
            p.dirty.name()
        );
        match p.dirty {
            Dirty::HotSet => {
                let _ = writeln!(
                    t,
                    "hot_set = \"{}\"",
                    fmt_size(p.hot_set.unwrap_or(p.memory))
                );
            }
            Dirty::Zipf => {
                let _ = writeln!(t, "zipf = {}", fmt_f64(sc.zipf));
            }
            Dirty::Uniform => {}
        }
        if image {
            let _ = writeln!(t, "image = \"base\"");
        }
        let _ = writeln!(t, "service_name = \"vm1-service\"");
        let lead = sc.migrate_at.saturating_sub(if datagrams {
            self.datagrams.as_ref().map_or(Duration::ZERO, |d| d.start)
        } else {
            self.stream.start
        });
        match (&self.datagrams, datagrams) {
            (Some(d), true) => {
                let count = d.count.unwrap_or_else(|| {
                    let secs = (lead + horizon).as_secs_f64() / d.interval.as_secs_f64();
                    secs.ceil().clamp(1.0, u32::MAX as f64) as u32
                });
                let _ = writeln!(
                    t,
                    "service = \"datagrams\"\n\n[[client]]\nhost = \"c1\"\nvm = \"vm1\"\nat = \"{}\"\nkind = \"datagrams\"\nby_name = {}\ncount = {count}\ninterval = \"{}\"\nsize = {}",
                    fmt_duration(d.start),
                    d.by_name,
                    fmt_duration(d.interval),
                    d.size
                );
            }
            _ => {
                let s = &self.stream;
                let bytes = s.bytes.unwrap_or_else(|| {
                    let b = (s.rate / 8) as f64 * (lead + horizon).as_secs_f64();
                    b.ceil().max(1.0) as u64
                });
                let _ = writeln!(
                    t,
                    "service = \"stream\"\nbytes = \"{}\"\nrate = \"{}\"\n\n[[client]]\nhost = \"c1\"\nvm = \"vm1\"\nat = \"{}\"\nkind = \"download\"\nby_name = {}",
                    fmt_size(bytes),
                    fmt_bandwidth(s.rate),
                    fmt_duration(s.start),
                    s.by_name
                );
            }
        }
        let (mode, deltas) = match p.mode {
            PlanMode::Full => ("full", false),
            PlanMode::Live => ("live", false),
            PlanMode::LiveDeltas => ("live", true),
            PlanMode::Smart => ("smart", false),
        };
        let _ = writeln!(
            t,
            "\n[[migration]]\nvm = \"vm1\"\nto = \"hv2\"\nat = \"{}\"\nmode = \"{mode}\"\ndeltas = {deltas}\ndowntime_target = \"{}\"\nmax_rounds = {}\nauto_converge = {}\ndedup = {}",
            fmt_duration(sc.migrate_at),
            fmt_duration(p.downtime_target),
            sc.max_rounds,
            sc.auto_converge,
            p.dedup
        );
        t
    }

    /// The guest's dirty model at point `p`, as the topology builds it.
    pub fn dirty_model(&self, p: &Point) -> DirtyModel {
        match p.dirty {
            Dirty::Uniform => DirtyModel::Uniform,
            Dirty::HotSet => DirtyModel::HotSet {
                pages: (p.hot_set.unwrap_or(p.memory) / self.scenario.page_size) as usize,
                share: HOT_SHARE,
            },
            Dirty::Zipf => DirtyModel::Zipf {
                s: self.scenario.zipf,
            },
        }
    }

    /// What the pre-copy model is given for point `p`, from the plan's
    /// parameters alone: the non-zero share of the memory, the link's
    /// bandwidth, the hypervisors' RTT, no device state, and as the dirty
    /// rate the distinct pages the guest is expected to dirty during
    /// round 0 (memory ÷ bandwidth), per second.
    pub fn model_inputs(&self, p: &Point) -> Inputs {
        let memory = p.memory as f64 * (1.0 - ZERO_SHARE);
        let bandwidth = p.bandwidth as f64 / 8.0;
        let t0 = memory / bandwidth;
        let pages = (p.memory / self.scenario.page_size) as usize;
        let distinct = distinct_pages(self.dirty_model(p), pages, p.dirty_rate, t0);
        Inputs {
            memory,
            bandwidth,
            rtt: p.rtt,
            dirty_rate: if t0 > 0.0 {
                distinct / t0 * self.scenario.page_size as f64
            } else {
                0.0
            },
            device: 0.0,
            target: p.downtime_target,
            max_rounds: self.scenario.max_rounds,
            delta_ratio: ASSUMED_DELTA_RATIO,
            encode_rate: None,
        }
    }

    /// The model's prediction for point `p` (for smart, of the strategy
    /// the rule picks from these inputs).
    pub fn predict(&self, p: &Point) -> Prediction {
        let x = self.model_inputs(p);
        match p.mode.strategy() {
            Some(s) => model::predict(s, &x),
            None => {
                let (pick, all) = model::choose(&x);
                all.into_iter()
                    .find(|q| q.strategy == pick)
                    .unwrap_or_else(|| model::predict(pick, &x))
            }
        }
    }

    // The slowest strategy's predicted total.
    fn worst_total(&self, p: &Point) -> Duration {
        let x = self.model_inputs(p);
        [Strategy::Full, Strategy::Live, Strategy::LiveDelta]
            .into_iter()
            .map(|s| model::predict(s, &x).total)
            .max()
            .unwrap_or_default()
            .min(Duration::from_secs(3600))
    }

    // How long after the migration starts the clients keep going: four
    // times the slowest strategy's predicted total (the model knows
    // nothing of auto-converge, which can take many more rounds), plus
    // 5 s.
    fn horizon(&self, p: &Point) -> Duration {
        self.worst_total(p) * 4 + Duration::from_secs(5)
    }

    /// When point `p`'s simulation stops: the migration's start plus 20
    /// times the slowest predicted total plus 120 s. Every run has this
    /// limit, so that a stalled migration (or a service that keeps
    /// streaming) cannot run a point for ever; a migration still going at
    /// the limit is reported unfinished.
    pub fn until(&self, p: &Point) -> Duration {
        self.scenario.migrate_at + self.worst_total(p) * 20 + Duration::from_secs(120)
    }
}

/// Distinct pages a guest of `pages` pages writing `rate` pages per
/// second by `model` is expected to have dirtied after `t` seconds.
pub fn distinct_pages(model: DirtyModel, pages: usize, rate: f64, t: f64) -> f64 {
    let n = pages as f64;
    let writes = rate * t;
    // `k` pages sharing `w` uniform writes: k (1 − e^(−w/k)).
    let fill = |k: f64, w: f64| {
        if k <= 0.0 {
            0.0
        } else {
            k * -(-w / k).exp_m1()
        }
    };
    match model {
        DirtyModel::Uniform => fill(n, writes),
        DirtyModel::HotSet { pages: hot, share } => {
            let hot = (hot.clamp(1, pages.max(1))) as f64;
            if hot >= n {
                fill(n, writes)
            } else {
                fill(hot, share * writes) + fill(n - hot, (1.0 - share) * writes)
            }
        }
        DirtyModel::Zipf { s } => {
            let weight = |k: usize| 1.0 / (k as f64).powf(s.max(1e-6));
            let total: f64 = (1..=pages).map(weight).sum();
            (1..=pages)
                .map(|k| -(-writes * weight(k) / total).exp_m1())
                .sum()
        }
    }
}

// One BDP of 1500-byte packets, at least 100.
fn default_queue(bandwidth: u64, rtt: Duration) -> usize {
    let bdp = bandwidth as f64 / 8.0 * rtt.as_secs_f64();
    ((bdp / 1500.0).ceil() as usize).clamp(100, 1_000_000)
}

impl Point {
    /// The value of `axis` at this point, as text for tables (numbers in
    /// the axis's unit).
    pub fn value(&self, axis: Axis) -> String {
        match axis {
            Axis::Memory => fmt_f64(mib(self.memory)),
            Axis::Dirty => self.dirty.name().to_string(),
            Axis::HotSet => self.hot_set.map_or_else(|| "-".into(), |h| fmt_f64(mib(h))),
            Axis::DirtyRate => fmt_f64(self.dirty_rate),
            Axis::Bandwidth => fmt_f64(self.bandwidth as f64 / 1e6),
            Axis::Rtt => fmt_f64(ms(self.rtt)),
            Axis::DowntimeTarget => fmt_f64(ms(self.downtime_target)),
            Axis::Dedup => self.dedup.to_string(),
            Axis::Seed => self.seed.to_string(),
            Axis::Mode => self.mode.name().to_string(),
        }
    }

    /// "memory=64MiB mode=live …": every parameter, for progress lines
    /// and topology headers.
    pub fn label(&self) -> String {
        Axis::ALL
            .iter()
            .filter(|&&a| a != Axis::HotSet || self.hot_set.is_some())
            .map(|&a| format!("{}={}", a.name(), self.value(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

// The product of the axes, `Axis::ALL` order (the last varies fastest),
// hot_set only for hot-set.
fn enumerate(a: &Axes) -> Vec<Point> {
    // Everything up to the dirty rate, then the rest: two shallow
    // products instead of ten nested loops.
    let mut guests = Vec::new();
    for &memory in &a.memory {
        for &dirty in &a.dirty {
            let hot: Vec<Option<u64>> = if dirty == Dirty::HotSet {
                a.hot_set.iter().map(|&h| Some(h)).collect()
            } else {
                vec![None]
            };
            for &hot_set in &hot {
                for &dirty_rate in &a.dirty_rate {
                    guests.push((memory, dirty, hot_set, dirty_rate));
                }
            }
        }
    }
    let mut points = Vec::new();
    for &(memory, dirty, hot_set, dirty_rate) in &guests {
        for &bandwidth in &a.bandwidth {
            for &rtt in &a.rtt {
                for &downtime_target in &a.downtime_target {
                    for &dedup in &a.dedup {
                        for &seed in &a.seeds {
                            for &mode in &a.mode {
                                points.push(Point {
                                    index: points.len() + 1,
                                    memory,
                                    dirty,
                                    hot_set,
                                    dirty_rate,
                                    bandwidth,
                                    rtt,
                                    downtime_target,
                                    dedup,
                                    seed,
                                    mode,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    points
}

/// Bytes in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A number without trailing zeros, at most 3 decimals ("64", "0.5").
pub fn fmt_f64(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

// Exact values in the largest unit that keeps them whole, as the
// topology parser reads them ("1Gbps", "24800us", "64MiB").
fn exact(v: u128, units: &[(u128, &str)]) -> String {
    let (scale, unit) = units
        .iter()
        .find(|(scale, _)| v % scale == 0 && v > 0)
        .copied()
        .unwrap_or((1, units.last().map_or("", |u| u.1)));
    format!("{}{unit}", v / scale)
}

fn fmt_bandwidth(bps: u64) -> String {
    exact(
        bps.into(),
        &[
            (1_000_000_000, "Gbps"),
            (1_000_000, "Mbps"),
            (1000, "kbps"),
            (1, "bps"),
        ],
    )
}

fn fmt_duration(d: Duration) -> String {
    exact(
        d.as_nanos(),
        &[
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
            (1000, "us"),
            (1, "ns"),
        ],
    )
}

fn fmt_size(bytes: u64) -> String {
    exact(
        bytes.into(),
        &[
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
            (1, "B"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    const PLAN: &str = r#"title = "test"
[scenario]
memory = "8MiB"
hot_set = "1MiB"
rtt = "10ms"

[datagrams]
interval = "10ms"

[sweep]
bandwidth = ["100Mbps", "1Gbps"]
dirty = ["uniform", "hot-set"]
mode = ["live", "smart"]
"#;

    #[test]
    fn a_dedup_sweep_boots_the_guest_from_an_image_held_in_the_destination_ad() {
        let text = "[scenario]\nmemory = \"8MiB\"\nhot_set = \"1MiB\"\nimage_share = 0.5\n[sweep]\ndedup = [false, true]\n";
        let p = Plan::parse("d.toml", text).unwrap();
        assert_eq!(p.varying(), vec![Axis::Dedup]);
        assert_eq!(
            p.points.iter().map(|x| x.dedup).collect::<Vec<_>>(),
            [false, true]
        );
        for pt in &p.points {
            let t = p.topology(pt, false);
            assert!(t.contains("name = \"store\"\nad = \"B\""), "{t}");
            assert!(
                t.contains("[[image]]\nname = \"base\"\nhost = \"store\"\nshare = 0.5"),
                "{t}"
            );
            assert!(t.contains("image = \"base\""), "{t}");
            assert!(t.contains(&format!("dedup = {}", pt.dedup)), "{t}");
            let topo = crate::Topology::parse("t.toml", &t).unwrap_or_else(|e| panic!("{e}\n{t}"));
            assert_eq!(topo.migration.images.len(), 1);
        }
        // Without an image there is nothing to send by CID: refused where
        // dedup is asked for.
        let e = Plan::parse("d.toml", "[sweep]\ndedup = [false, true]\n").unwrap_err();
        assert!(e.message.contains("dedup needs a base image"), "{e}");
        assert_eq!(e.line, 2, "{e}");
        let e = Plan::parse("d.toml", "[scenario]\nimage_share = 1.5\n").unwrap_err();
        assert!(e.message.contains("image_share must be 0 to 1"), "{e}");
        // No image: no store host in the topology.
        let p = Plan::parse("d.toml", "").unwrap();
        assert!(!p.topology(&p.points[0], false).contains("store"));
    }

    #[test]
    fn a_plan_is_the_product_of_its_axes() {
        let p = Plan::parse("plans/small.toml", PLAN).unwrap();
        assert_eq!(p.name, "small");
        assert_eq!(p.title, "test");
        assert_eq!(p.points.len(), 8);
        assert_eq!(p.varying(), vec![Axis::Dirty, Axis::Bandwidth, Axis::Mode]);
        let first = &p.points[0];
        assert_eq!(
            first.label(),
            "memory=8 dirty=uniform dirty_rate=2000 bandwidth=100 rtt=10 downtime_target=300 dedup=false seed=1 mode=live"
        );
        assert_eq!(p.points[1].mode, PlanMode::Smart);
        assert_eq!(p.points[4].hot_set, Some(1 << 20));
        // Every point's topologies parse, with the plan's guest.
        for pt in &p.points {
            for dg in [false, true] {
                let text = p.topology(pt, dg);
                let t =
                    Topology::parse("point.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
                let vm = &t.migration.vms[0];
                assert_eq!(vm.pages * vm.page_size, pt.memory as usize);
                assert_eq!(vm.model, p.dirty_model(pt));
            }
        }
    }

    #[test]
    fn the_generated_path_has_the_plan_s_rtt() {
        let p = Plan::parse("p.toml", PLAN).unwrap();
        let t = Topology::parse("point.toml", &p.topology(&p.points[0], false)).unwrap();
        // hv1 - rA - rB - hv2, one way.
        let one_way: Duration = t
            .links
            .iter()
            .filter(|l| {
                let (a, b) = (&t.nodes[l.a].name, &t.nodes[l.b].name);
                matches!(
                    (a.as_str(), b.as_str()),
                    ("hv1", "rA") | ("rA", "rB") | ("rB", "hv2")
                )
            })
            .map(|l| l.delay)
            .sum();
        assert_eq!(one_way * 2, Duration::from_millis(10));
    }

    #[test]
    fn live_deltas_is_live_with_deltas() {
        let p = Plan::parse("p.toml", "[scenario]\nmode = \"live-deltas\"\n").unwrap();
        let text = p.topology(&p.points[0], false);
        assert!(text.contains("mode = \"live\"\ndeltas = true"), "{text}");
        let t = Topology::parse("point.toml", &text).unwrap();
        assert!(t.migration.migrations[0].config.delta_cache > 0);
    }

    #[test]
    fn bad_plans_name_the_key_and_line() {
        let err = |text: &str| Plan::parse("bad.toml", text).unwrap_err();
        let e = err("[scenario]\nmemory = \"8MiB\"\nbandwith = \"1Gbps\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().contains("unknown field `bandwith`"), "{e}");
        assert!(e.to_string().starts_with("bad.toml:3: "), "{e}");
        let e = err("[sweep]\nmode = [\"live\", \"fast\"]\n");
        assert_eq!(e.line, 2);
        assert!(
            e.message.contains("sweep.mode: \"fast\" is not full, live"),
            "{e}"
        );
        let e = err("[scenario]\nmemory = \"8MiB\"\n[sweep]\nmemory = [\"16MiB\"]\n");
        assert_eq!(e.line, 4);
        assert!(
            e.message.contains("both in [scenario] and in [sweep]"),
            "{e}"
        );
        let e = err("[scenario]\nmemory = \"4MiB\"\nhot_set = \"8MiB\"\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("larger than the memory"), "{e}");
        let e = err("[sweep]\nseeds = [1, 1]\n");
        assert!(e.message.contains("twice"), "{e}");
        let e = err("[sweep]\nrtt = []\n");
        assert!(e.message.contains("empty"), "{e}");
        let e = err("[stream]\nstart = \"5s\"\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not before the migration"), "{e}");
        let e = err("[sweep]\ndirty_rate = [\"fast\"]\n");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn topology_values_are_exact_in_readable_units() {
        assert_eq!(fmt_bandwidth(1_000_000_000), "1Gbps");
        assert_eq!(fmt_bandwidth(2_500_000), "2500kbps");
        assert_eq!(fmt_duration(Duration::from_micros(24_800)), "24800us");
        assert_eq!(fmt_duration(Duration::ZERO), "0ns");
        assert_eq!(fmt_size(64 << 20), "64MiB");
        assert_eq!(fmt_size(88_047_280), "88047280B");
        for d in [
            Duration::from_micros(24_800),
            Duration::from_nanos(1_234_567),
        ] {
            assert_eq!(parse_duration(&fmt_duration(d)), Some(d));
        }
        assert_eq!(parse_bandwidth(&fmt_bandwidth(2_500_000)), Some(2_500_000));
        assert_eq!(parse_size(&fmt_size(3 << 30)), Some(3 << 30));
    }

    #[test]
    fn the_expected_dirty_set_saturates() {
        let hot = DirtyModel::HotSet {
            pages: 1000,
            share: 0.9,
        };
        // Few writes: nearly all distinct.
        let d = distinct_pages(hot, 100_000, 100.0, 1.0);
        assert!((95.0..100.0).contains(&d), "{d}");
        // Many: the hot set is full, the rest fills slowly.
        let d = distinct_pages(hot, 100_000, 100_000.0, 1.0);
        assert!((1000.0 + 9000.0 * 0.9..11_000.0).contains(&d), "{d}");
        let z = distinct_pages(DirtyModel::Zipf { s: 1.0 }, 1000, 1e6, 1.0);
        assert!(z <= 1000.0 && z > 900.0, "{z}");
    }
}
