//! Migration experiments: sweep a VM migration scenario over memory,
//! dirtying, link and mode, run every point in the simulator, and write
//! what each point measured next to what the pre-copy model predicted.
//!
//! A [`Plan`] (TOML, see [`plan`]) is a base scenario — two ADs, a source
//! and a destination hypervisor, a VM serving a stream to a client in the
//! source's AD, optionally a datagram client — and lists of values for
//! some of its axes. [`run`] takes the product of the lists, builds each
//! point's topology ([`Plan::topology`]), runs it with the point's seed
//! and turns the simulator's [`Report`](crate::Report) into a [`Row`].
//! With a datagram client, each point runs a second time (the companion
//! run) with the VM serving datagrams instead of the stream: a VM has one
//! service. [`write_inputs`] puts the plan and every point's topology
//! into a directory, [`write_results`] `results.csv`, `results.md`, the
//! SVG plots and, when the plan has smart and a fixed mode,
//! `comparison.csv`.
//!
//! Everything written is a function of the plan and its seeds: the same
//! plan gives byte-identical files. Wall-clock times go only to
//! [`Progress`], for the caller to print.

pub mod plan;

mod output;
mod plot;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use xia_migrate::model::Prediction;

pub use output::{compare, Comparison, Objective};
pub use plan::{Axis, Plan, PlanMode, Point};

use crate::sim::{SimConfig, SimError};
use crate::topology::{Topology, TopologyError};

/// An experiment that could not run or be written.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The plan file is wrong (file, line, what).
    #[error("{0}")]
    Plan(#[from] TopologyError),
    /// A point's generated topology did not parse (a plan value the
    /// topology refuses).
    #[error("point {index} ({label}): {error}")]
    Topology {
        /// The point.
        index: usize,
        /// Its parameters.
        label: String,
        /// The topology parser's error.
        error: TopologyError,
    },
    /// The simulator could not set a point up.
    #[error("point {index} ({label}): {error}")]
    Sim {
        /// The point.
        index: usize,
        /// Its parameters.
        label: String,
        /// What failed.
        error: SimError,
    },
    /// Writing an output.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// Drawing a plot.
    #[error("plot {name}: {message}")]
    Plot {
        /// The plot's file name.
        name: String,
        /// What failed.
        message: String,
    },
}

/// What the companion run's datagram client saw.
#[derive(Clone, Debug, PartialEq)]
pub struct DatagramOutcome {
    /// Datagrams sent.
    pub sent: u32,
    /// Distinct datagrams the VM's service received.
    pub delivered: u64,
    /// The companion run's migration error, if it failed.
    pub migration_error: Option<String>,
}

impl DatagramOutcome {
    /// Sent but never delivered.
    pub fn lost(&self) -> u64 {
        u64::from(self.sent).saturating_sub(self.delivered)
    }
}

/// What one point measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The point.
    pub point: Point,
    /// Why the migration failed or did not finish (`None`: it finished).
    pub error: Option<String>,
    /// The strategy smart chose (smart points only).
    pub chose: Option<String>,
    /// From the start to the source's release of the VM.
    pub total: Option<Duration>,
    /// From the pause at the source to the activation at the destination.
    pub downtime: Option<Duration>,
    /// Bytes the source wrote to its connection.
    pub bytes: Option<u64>,
    /// Pre-copy rounds.
    pub rounds: Option<u32>,
    /// Pages in the final copy.
    pub final_pages: Option<usize>,
    /// Bandwidth the source measured at the pause, bytes per second
    /// (`None` when it had no measurement, as in full mode).
    pub bandwidth: Option<f64>,
    /// RTT the source measured by its offer.
    pub rtt: Option<Duration>,
    /// The physical limit of the downtime: the final copy's pages, whole,
    /// over the link's bandwidth, plus one RTT of the plan.
    pub limit: Option<Duration>,
    /// The same at the bandwidth the source measured (`None` without a
    /// measurement): what the connection could carry, not the wire.
    pub limit_measured: Option<Duration>,
    /// The lowest throttle auto-converge applied (1: none).
    pub throttle: Option<f64>,
    /// Whether the source paused without meeting the downtime target.
    pub target_missed: Option<bool>,
    /// The pre-copy model's prediction for the point
    /// ([`Plan::predict`]).
    pub model: Prediction,
    /// The longest time the streaming client got no new bytes.
    pub gap: Duration,
    /// Bytes the client received.
    pub received: u64,
    /// Bytes it should have.
    pub expected: u64,
    /// Received bytes that were wrong.
    pub corrupt: u64,
    /// Pages the source sent by CID (dedup).
    pub pages_by_cid: Option<u64>,
    /// Pages the destination's agent fetched by CID, and the fetches
    /// that failed (asked of the source instead).
    pub pages_fetched: u64,
    /// See `pages_fetched`.
    pub fetch_failures: u64,
    /// The companion run's datagrams, when the plan has a datagram
    /// client.
    pub datagrams: Option<DatagramOutcome>,
    /// Anything odd: a client error, a stream that ended before the
    /// activation (so its gap misses the downtime), a failed companion.
    pub notes: Vec<String>,
}

impl Row {
    /// Downtime ÷ its physical limit.
    pub fn ratio(&self) -> Option<f64> {
        let (d, l) = (self.downtime?, self.limit?);
        (l > Duration::ZERO).then(|| d.as_secs_f64() / l.as_secs_f64())
    }

    /// Downtime ÷ the limit at the measured bandwidth.
    pub fn ratio_measured(&self) -> Option<f64> {
        let (d, l) = (self.downtime?, self.limit_measured?);
        (l > Duration::ZERO).then(|| d.as_secs_f64() / l.as_secs_f64())
    }

    /// Whether the migration finished within its downtime target.
    pub fn meets_target(&self) -> Option<bool> {
        Some(self.error.is_none() && self.downtime? <= self.point.downtime_target)
    }
}

/// What [`run`] reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A point started.
    Started {
        /// The point.
        point: &'a Point,
        /// Points in the plan.
        of: usize,
    },
    /// A point finished.
    Finished {
        /// Its row.
        row: &'a Row,
        /// Points finished so far.
        done: usize,
        /// Points in the plan.
        of: usize,
        /// Wall-clock time it took (its runs together).
        wall: Duration,
    },
}

/// Every point's row, in point order, and the smart-vs-fixed comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Results {
    /// One per point.
    pub rows: Vec<Row>,
    /// One per smart point that has fixed-mode neighbours (empty
    /// otherwise).
    pub comparisons: Vec<Comparison>,
}

/// Runs one point: its main run and, with a datagram client, its
/// companion run.
pub fn run_point(plan: &Plan, p: &Point) -> Result<Row, ExperimentError> {
    let report = simulate(plan, p, false)?;
    let model = plan.predict(p);
    let mut notes = Vec::new();
    let m = report.migrations.first();
    let session = m.and_then(|m| m.session.as_ref());
    let error = migration_error(&report);
    let page = plan.scenario.page_size as f64;
    let final_bytes = session.map(|s| s.final_pages as f64 * page);
    // Seconds to a duration, `None` if out of range.
    let secs = |s: f64| Duration::try_from_secs_f64(s).ok();
    let limit = final_bytes
        .and_then(|b| secs(b * 8.0 / p.bandwidth as f64))
        .map(|d| d + p.rtt);
    let limit_measured = final_bytes
        .zip(session.map(|s| s.bandwidth).filter(|b| *b > 0.0))
        .and_then(|(b, bw)| secs(b / bw))
        .map(|d| d + p.rtt);
    let client = report.vm_clients.first();
    if let Some(c) = client {
        if let Some(e) = &c.error {
            notes.push(format!("client error: {e}"));
        }
        if let (Some(f), Some(a)) = (c.finished, m.and_then(|m| m.activated)) {
            if f < a {
                notes.push("the stream ended before the activation".into());
            }
        }
        if c.received != c.expected {
            notes.push("the stream did not finish".into());
        }
    }
    let datagrams = match &plan.datagrams {
        None => None,
        Some(_) => {
            let r = simulate(plan, p, true)?;
            let c = r.vm_clients.first();
            let migration_error = migration_error(&r);
            if let Some(e) = &migration_error {
                notes.push(format!("companion run: {e}"));
            }
            Some(DatagramOutcome {
                sent: c.map_or(0, |c| c.sent),
                delivered: c.map_or(0, |c| c.delivered),
                migration_error,
            })
        }
    };
    Ok(Row {
        point: p.clone(),
        error,
        chose: m.and_then(|m| m.chose.clone()),
        total: m.and_then(|m| m.total),
        downtime: m.and_then(|m| m.downtime),
        bytes: session.map(|s| s.bytes),
        rounds: session.map(|s| s.rounds),
        final_pages: session.map(|s| s.final_pages),
        pages_by_cid: session.map(|s| s.pages.cid),
        pages_fetched: report
            .hypervisors
            .iter()
            .map(|h| h.counters.pages_fetched)
            .sum(),
        fetch_failures: report
            .hypervisors
            .iter()
            .map(|h| h.counters.fetch_failures)
            .sum(),
        bandwidth: session.map(|s| s.bandwidth).filter(|b| *b > 0.0),
        rtt: session.map(|s| s.rtt),
        limit,
        limit_measured,
        throttle: session.map(|s| s.throttle),
        target_missed: session.map(|s| s.target_missed),
        model,
        gap: client.map_or(Duration::ZERO, |c| c.max_gap),
        received: client.map_or(0, |c| c.received),
        expected: client.map_or(0, |c| c.expected),
        corrupt: client.map_or(0, |c| c.corrupt),
        datagrams,
        notes,
    })
}

// Why a run's migration failed or did not finish (`None`: it finished).
fn migration_error(r: &crate::Report) -> Option<String> {
    match r.migrations.first() {
        None => Some("no migration ran".to_string()),
        Some(m) => m
            .error
            .clone()
            .or_else(|| m.session.is_none().then(|| "unfinished".to_string())),
    }
}

fn simulate(plan: &Plan, p: &Point, datagrams: bool) -> Result<crate::Report, ExperimentError> {
    let text = plan.topology(p, datagrams);
    let topo = Topology::parse(&point_file(p, datagrams), &text).map_err(|error| {
        ExperimentError::Topology {
            index: p.index,
            label: p.label(),
            error,
        }
    })?;
    let config = SimConfig {
        seed: p.seed,
        until: Some(plan.until(p)),
        ..SimConfig::default()
    };
    crate::run(topo, &config).map_err(|error| ExperimentError::Sim {
        index: p.index,
        label: p.label(),
        error,
    })
}

/// The name of point `p`'s topology file in the output directory.
pub fn point_file(p: &Point, datagrams: bool) -> String {
    if datagrams {
        format!("point-{:03}-datagrams.toml", p.index)
    } else {
        format!("point-{:03}.toml", p.index)
    }
}

/// Runs every point of `plan`, `jobs` at a time (at least 1), telling
/// `progress` as points start and finish. The rows come back in point
/// order whatever the number of jobs.
pub fn run(
    plan: &Plan,
    jobs: usize,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Results, ExperimentError> {
    enum Msg {
        Started(usize),
        Finished(usize, Box<Result<Row, ExperimentError>>, Duration),
    }
    let n = plan.points.len();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut rows: Vec<Option<Row>> = vec![None; n];
    let mut first_error: Option<(usize, ExperimentError)> = None;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..jobs.clamp(1, n.max(1)) {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n || stop.load(Ordering::SeqCst) {
                    break;
                }
                let _ = tx.send(Msg::Started(i));
                let wall = std::time::Instant::now();
                let r = run_point(plan, &plan.points[i]);
                if tx
                    .send(Msg::Finished(i, Box::new(r), wall.elapsed()))
                    .is_err()
                {
                    break;
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for msg in rx {
            match msg {
                Msg::Started(i) => progress(Progress::Started {
                    point: &plan.points[i],
                    of: n,
                }),
                Msg::Finished(i, r, wall) => match *r {
                    Ok(row) => {
                        done += 1;
                        progress(Progress::Finished {
                            row: &row,
                            done,
                            of: n,
                            wall,
                        });
                        rows[i] = Some(row);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                            first_error = Some((i, e));
                        }
                    }
                },
            }
        }
    });
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    let rows: Vec<Row> = rows.into_iter().flatten().collect();
    let comparisons = compare(plan, &rows);
    Ok(Results { rows, comparisons })
}

fn write_files(files: Vec<(PathBuf, String)>) -> Result<Vec<PathBuf>, ExperimentError> {
    let mut written = Vec::new();
    for (path, text) in files {
        std::fs::write(&path, text).map_err(|error| ExperimentError::Io {
            path: path.clone(),
            error,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Writes what the runs are made of into `dir` (created if needed):
/// `plan.toml` (the plan as read) and `topologies/point-NNN.toml` (each
/// point's topology; `-datagrams` for companion runs), so any point can
/// be run alone with `xia testbed run`. Call it before [`run`]: a point
/// that fails can then be looked at. Returns the files written.
pub fn write_inputs(plan: &Plan, dir: &Path) -> Result<Vec<PathBuf>, ExperimentError> {
    let topo_dir = dir.join("topologies");
    std::fs::create_dir_all(&topo_dir).map_err(|error| ExperimentError::Io {
        path: topo_dir.clone(),
        error,
    })?;
    let mut files: Vec<(PathBuf, String)> = vec![(dir.join("plan.toml"), plan.text.clone())];
    for p in &plan.points {
        files.push((topo_dir.join(point_file(p, false)), plan.topology(p, false)));
        if plan.datagrams.is_some() {
            files.push((topo_dir.join(point_file(p, true)), plan.topology(p, true)));
        }
    }
    write_files(files)
}

/// Writes the results into `dir` (which [`write_inputs`] made):
/// `results.csv`, `results.md`, `comparison.csv` (when there is a
/// comparison) and the SVG plots. Returns the files written.
pub fn write_results(
    plan: &Plan,
    results: &Results,
    dir: &Path,
) -> Result<Vec<PathBuf>, ExperimentError> {
    let mut files = vec![
        (
            dir.join("results.csv"),
            output::results_csv(plan, &results.rows),
        ),
        (dir.join("results.md"), output::markdown(plan, results)),
    ];
    if !results.comparisons.is_empty() {
        files.push((
            dir.join("comparison.csv"),
            output::comparison_csv(plan, &results.rows, &results.comparisons),
        ));
    }
    for (name, svg) in plot::plots(plan, &results.rows)? {
        files.push((dir.join(name), svg));
    }
    write_files(files)
}

/// The Markdown report (`results.md`'s text).
pub fn markdown(plan: &Plan, results: &Results) -> String {
    output::markdown(plan, results)
}
