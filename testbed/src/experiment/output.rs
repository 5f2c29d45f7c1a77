//! The experiment's tables: `results.csv`, `results.md` and the
//! smart-vs-fixed comparison (`comparison.csv` and a section of
//! `results.md`). Numbers have fixed precision so the files are
//! byte-identical from run to run.

use std::fmt::Write as _;
use std::time::Duration;

use super::plan::{fmt_f64, mib, ms, Axis, Plan, PlanMode, Point};
use super::{Results, Row};

/// What smart is judged by at a condition: the objective of its own rule
/// (`xia_migrate::model::choose`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Some fixed strategy met the downtime target: the fastest of those
    /// is best, and smart is compared by total time.
    Total,
    /// None did: the one with the least downtime is best, and smart is
    /// compared by downtime.
    Downtime,
}

/// Smart against the best fixed strategy at one condition (every axis
/// but the mode equal).
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The smart row's index in the rows.
    pub smart: usize,
    /// The best fixed row's index (`None`: no fixed run finished).
    pub best: Option<usize>,
    /// How "best" was decided.
    pub objective: Objective,
    /// (smart − best) ÷ best on the objective's metric, in percent:
    /// positive when smart is worse.
    pub percent: Option<f64>,
    /// "better", "worse", "equal", or why not comparable.
    pub verdict: String,
}

// The point with the mode left out, as a key.
fn condition(p: &Point) -> String {
    Axis::ALL
        .iter()
        .filter(|&&a| a != Axis::Mode)
        .map(|&a| p.value(a))
        .collect::<Vec<_>>()
        .join("|")
}

/// Compares every smart row with the best fixed-mode row of its
/// condition.
pub fn compare(plan: &Plan, rows: &[Row]) -> Vec<Comparison> {
    let has_fixed = plan.axes.mode.iter().any(|m| *m != PlanMode::Smart);
    if !has_fixed {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (si, s) in rows.iter().enumerate() {
        if s.point.mode != PlanMode::Smart {
            continue;
        }
        let key = condition(&s.point);
        let fixed: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.point.mode != PlanMode::Smart
                    && r.error.is_none()
                    && r.total.is_some()
                    && r.downtime.is_some()
                    && condition(&r.point) == key
            })
            .map(|(i, _)| i)
            .collect();
        let target = s.point.downtime_target;
        let meets = |i: &usize| rows[*i].downtime.is_some_and(|d| d <= target);
        let total = |i: &usize| rows[*i].total.unwrap_or(Duration::MAX);
        let down = |i: &usize| rows[*i].downtime.unwrap_or(Duration::MAX);
        // Ties go to the simpler strategy, as in the model's rule: the
        // first in the plan's mode order, which `PlanMode`'s order sorts.
        let by_simplicity = |a: &usize, b: &usize| rows[*a].point.mode.cmp(&rows[*b].point.mode);
        let (objective, best) = if fixed.iter().any(meets) {
            let best = fixed
                .iter()
                .filter(|i| meets(i))
                .min_by(|a, b| total(a).cmp(&total(b)).then(by_simplicity(a, b)))
                .copied();
            (Objective::Total, best)
        } else {
            let best = fixed
                .iter()
                .min_by(|a, b| down(a).cmp(&down(b)).then(by_simplicity(a, b)))
                .copied();
            (Objective::Downtime, best)
        };
        let metric = |r: &Row| match objective {
            Objective::Total => r.total,
            Objective::Downtime => r.downtime,
        };
        let (percent, verdict) = match best {
            None => (None, "no fixed run finished".to_string()),
            Some(_) if s.error.is_some() => (None, "smart failed".to_string()),
            Some(b) => {
                let (sv, bv) = (metric(s), metric(&rows[b]));
                let pct = sv.zip(bv).and_then(|(sv, bv)| {
                    (bv > Duration::ZERO)
                        .then(|| (sv.as_secs_f64() / bv.as_secs_f64() - 1.0) * 100.0)
                });
                let smart_meets = s.downtime.is_some_and(|d| d <= target);
                let verdict = match (objective, smart_meets, pct) {
                    (Objective::Total, false, _) => "worse (missed the target)".to_string(),
                    (Objective::Downtime, true, _) => "better (met the target)".to_string(),
                    (_, _, Some(p)) if p.abs() < 0.05 => "equal".to_string(),
                    (_, _, Some(p)) if p < 0.0 => "better".to_string(),
                    (_, _, Some(_)) => "worse".to_string(),
                    (_, _, None) => "not comparable".to_string(),
                };
                (pct, verdict)
            }
        };
        out.push(Comparison {
            smart: si,
            best,
            objective,
            percent,
            verdict,
        });
    }
    out
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(String::new, f)
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn millis(d: Duration) -> String {
    format!("{:.1}", ms(d))
}

fn mb(bytes: f64) -> String {
    format!("{:.2}", bytes / 1e6)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn status(r: &Row) -> String {
    match &r.error {
        None => "ok".into(),
        Some(e) => format!("failed: {e}"),
    }
}

// The model's strategy name as the source reports it.
fn model_strategy(r: &Row) -> String {
    r.model.strategy.to_string()
}

type Column = (&'static str, fn(&Row) -> String);

const COLUMNS: &[Column] = &[
    ("point", |r| r.point.index.to_string()),
    ("mode", |r| r.point.mode.name().into()),
    ("memory_mib", |r| r.point.value(Axis::Memory)),
    ("dirty", |r| r.point.value(Axis::Dirty)),
    ("hot_set_mib", |r| opt(r.point.hot_set, |h| fmt_f64(mib(h)))),
    ("dirty_rate", |r| r.point.value(Axis::DirtyRate)),
    ("bandwidth_mbps", |r| r.point.value(Axis::Bandwidth)),
    ("rtt_ms", |r| r.point.value(Axis::Rtt)),
    ("downtime_target_ms", |r| {
        r.point.value(Axis::DowntimeTarget)
    }),
    ("dedup", |r| r.point.value(Axis::Dedup)),
    ("seed", |r| r.point.seed.to_string()),
    ("status", status),
    ("chose", |r| r.chose.clone().unwrap_or_default()),
    ("total_s", |r| opt(r.total, secs)),
    ("downtime_ms", |r| opt(r.downtime, millis)),
    ("bytes_sent", |r| opt(r.bytes, |b| b.to_string())),
    ("rounds", |r| opt(r.rounds, |n| n.to_string())),
    ("final_pages", |r| opt(r.final_pages, |n| n.to_string())),
    ("pages_by_cid", |r| opt(r.pages_by_cid, |n| n.to_string())),
    ("pages_fetched", |r| r.pages_fetched.to_string()),
    ("fetch_failures", |r| r.fetch_failures.to_string()),
    ("bandwidth_measured_mbps", |r| {
        opt(r.bandwidth, |b| format!("{:.1}", b * 8.0 / 1e6))
    }),
    ("rtt_measured_ms", |r| opt(r.rtt, millis)),
    ("limit_ms", |r| opt(r.limit, millis)),
    ("downtime_over_limit", |r| {
        opt(r.ratio(), |x| format!("{x:.3}"))
    }),
    ("limit_at_measured_bw_ms", |r| opt(r.limit_measured, millis)),
    ("downtime_over_limit_at_measured_bw", |r| {
        opt(r.ratio_measured(), |x| format!("{x:.3}"))
    }),
    ("model_strategy", model_strategy),
    ("model_total_s", |r| secs(r.model.total)),
    ("model_downtime_ms", |r| millis(r.model.downtime)),
    ("model_bytes", |r| format!("{:.0}", r.model.bytes)),
    ("model_rounds", |r| r.model.rounds.to_string()),
    ("throttle", |r| opt(r.throttle, |t| format!("{t:.2}"))),
    ("target_missed", |r| opt(r.target_missed, |t| t.to_string())),
    ("client_gap_ms", |r| millis(r.gap)),
    ("client_received", |r| r.received.to_string()),
    ("client_expected", |r| r.expected.to_string()),
    ("client_corrupt", |r| r.corrupt.to_string()),
    ("datagrams_sent", |r| {
        opt(r.datagrams.as_ref(), |d| d.sent.to_string())
    }),
    ("datagrams_delivered", |r| {
        opt(r.datagrams.as_ref(), |d| d.delivered.to_string())
    }),
    ("datagrams_lost", |r| {
        opt(r.datagrams.as_ref(), |d| d.lost().to_string())
    }),
    ("notes", |r| r.notes.join("; ")),
];

/// `results.csv`: one line per point, every figure.
pub(super) fn results_csv(_plan: &Plan, rows: &[Row]) -> String {
    let mut s = String::new();
    let header: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
    let _ = writeln!(s, "{}", header.join(","));
    for r in rows {
        let fields: Vec<String> = COLUMNS.iter().map(|c| csv_field(&(c.1)(r))).collect();
        let _ = writeln!(s, "{}", fields.join(","));
    }
    s
}

// The axes shown per row in Markdown: those that vary, but the mode.
fn shown_axes(plan: &Plan) -> Vec<Axis> {
    plan.varying()
        .into_iter()
        .filter(|&a| a != Axis::Mode)
        .collect()
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn fixed_parameters(plan: &Plan) -> String {
    let Some(p) = plan.points.first() else {
        return "no points".into();
    };
    let varying = plan.varying();
    let mut parts = Vec::new();
    for a in Axis::ALL {
        if varying.contains(&a) || (a == Axis::HotSet && p.hot_set.is_none()) {
            continue;
        }
        parts.push(format!("{} {}", a.label(), p.value(a)));
    }
    let sc = &plan.scenario;
    parts.push(format!("page size {} B", sc.page_size));
    parts.push(format!(
        "access links {} Mbit/s, {} ms one way",
        fmt_f64(sc.access_bandwidth as f64 / 1e6),
        fmt_f64(ms(sc.access_delay))
    ));
    parts.push(format!(
        "inter-AD queue {}",
        sc.queue.map_or_else(
            || "one BDP (at least 100 packets)".into(),
            |q| format!("{q} packets")
        )
    ));
    if sc.image_share > 0.0 {
        parts.push(format!(
            "base image covering {} % of the non-zero pages, its store in AD B",
            fmt_f64(sc.image_share * 100.0)
        ));
    }
    parts.push(format!("max {} rounds", sc.max_rounds));
    parts.push(format!(
        "auto-converge {}",
        if sc.auto_converge { "on" } else { "off" }
    ));
    parts.push(format!(
        "migration at {} s",
        fmt_f64(sc.migrate_at.as_secs_f64())
    ));
    let st = &plan.stream;
    parts.push(format!(
        "stream {} Mbit/s from {} s{}",
        fmt_f64(st.rate as f64 / 1e6),
        fmt_f64(st.start.as_secs_f64()),
        st.bytes
            .map_or_else(String::new, |b| format!(", {b} bytes"))
    ));
    if let Some(d) = &plan.datagrams {
        parts.push(format!(
            "datagrams (companion runs) of {} B every {} ms from {} s",
            d.size,
            fmt_f64(ms(d.interval)),
            fmt_f64(d.start.as_secs_f64())
        ));
    }
    parts.join("; ")
}

/// `results.md`: the parameters, the results table and, when the plan
/// has one, the smart-vs-fixed comparison.
pub(super) fn markdown(plan: &Plan, results: &Results) -> String {
    let rows = &results.rows;
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", md_escape(&plan.title));
    let _ = writeln!(
        s,
        "Plan `{}.toml`: {} points. Fixed: {}.\n",
        plan.name,
        plan.points.len(),
        fixed_parameters(plan)
    );
    let _ = writeln!(
        s,
        "Times by the simulation's clock. *limit*: the final copy's pages, whole, \
         over the link's bandwidth, plus one RTT; *model*: the pre-copy model \
         (`xia_migrate::model`) fed the plan's parameters; *gap*: the longest time the \
         streaming client got no new bytes.\n"
    );
    let axes = shown_axes(plan);
    let dgrams = plan.datagrams.is_some();
    let dedup = plan.axes.dedup.contains(&true);
    let mut head: Vec<String> = vec!["#".into()];
    head.extend(axes.iter().map(|a| a.label().to_string()));
    head.extend(
        [
            "mode",
            "chose",
            "total (s)",
            "downtime (ms)",
            "limit (ms)",
            "× limit",
            "model total (s)",
            "model downtime (ms)",
            "sent (MB)",
            "model sent (MB)",
            "rounds",
            "final pages",
            "gap (ms)",
            "received / expected (MB)",
        ]
        .map(String::from),
    );
    if dedup {
        head.push("by CID / fetched / failed".into());
    }
    if dgrams {
        head.push("datagrams lost".into());
    }
    head.push("notes".into());
    table_head(&mut s, &head);
    for r in rows {
        let mut cells: Vec<String> = vec![r.point.index.to_string()];
        cells.extend(axes.iter().map(|&a| r.point.value(a)));
        let cell = |v: Option<String>| v.unwrap_or_else(|| "–".into());
        cells.push(r.point.mode.name().into());
        cells.push(cell(r.chose.clone()));
        cells.push(cell(r.total.map(secs)));
        cells.push(cell(r.downtime.map(millis)));
        cells.push(cell(r.limit.map(millis)));
        cells.push(cell(r.ratio().map(|x| format!("{x:.2}"))));
        cells.push(secs(r.model.total));
        cells.push(millis(r.model.downtime));
        cells.push(cell(r.bytes.map(|b| mb(b as f64))));
        cells.push(mb(r.model.bytes));
        cells.push(cell(r.rounds.map(|n| n.to_string())));
        cells.push(cell(r.final_pages.map(|n| n.to_string())));
        cells.push(millis(r.gap));
        cells.push(format!(
            "{} / {}",
            mb(r.received as f64),
            mb(r.expected as f64)
        ));
        if dedup {
            cells.push(format!(
                "{} / {} / {}",
                cell(r.pages_by_cid.map(|n| n.to_string())),
                r.pages_fetched,
                r.fetch_failures
            ));
        }
        if dgrams {
            cells.push(cell(
                r.datagrams
                    .as_ref()
                    .map(|d| format!("{} of {}", d.lost(), d.sent)),
            ));
        }
        let mut notes = r.notes.clone();
        if let Some(e) = &r.error {
            notes.insert(0, format!("failed: {e}"));
        }
        if r.target_missed == Some(true) {
            notes.push("target missed".into());
        }
        if let Some(t) = r.throttle.filter(|t| *t < 1.0) {
            notes.push(format!("throttled to {:.0} %", t * 100.0));
        }
        cells.push(notes.join("; "));
        table_row(&mut s, &cells);
    }
    if !results.comparisons.is_empty() {
        comparison_md(&mut s, plan, rows, &results.comparisons);
    }
    s
}

fn table_head(s: &mut String, head: &[String]) {
    let _ = writeln!(
        s,
        "| {} |",
        head.iter()
            .map(|h| md_escape(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|{}", head.iter().map(|_| "---|").collect::<String>());
}

fn table_row(s: &mut String, cells: &[String]) {
    let _ = writeln!(
        s,
        "| {} |",
        cells
            .iter()
            .map(|c| md_escape(c))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "–".into(), |p| format!("{p:+.1} %"))
}

// Whether smart's choice was the best fixed run's strategy.
fn picked_best(rows: &[Row], c: &Comparison) -> Option<bool> {
    let best = rows[c.best?].point.mode.strategy()?;
    Some(rows[c.smart].chose.as_deref() == Some(best.to_string().as_str()))
}

fn comparison_md(s: &mut String, plan: &Plan, rows: &[Row], cmp: &[Comparison]) {
    let _ = writeln!(s, "\n## Smart vs the best fixed strategy\n");
    let _ = writeln!(
        s,
        "For each condition (every axis but the mode), the best fixed run by smart's own \
         objective: among those that met the downtime target the fastest, else the one \
         with the least downtime (ties to the simpler mode). *vs best*: smart's total time \
         (objective *total*) or downtime (*downtime*) relative to it; positive is worse.\n"
    );
    let axes: Vec<Axis> = shown_axes(plan);
    let mut head: Vec<String> = axes.iter().map(|a| a.label().to_string()).collect();
    head.extend(
        [
            "smart chose",
            "smart total (s)",
            "smart downtime (ms)",
            "best fixed",
            "its total (s)",
            "its downtime (ms)",
            "objective",
            "vs best",
            "verdict",
        ]
        .map(String::from),
    );
    table_head(s, &head);
    for c in cmp {
        let sm = &rows[c.smart];
        let mut cells: Vec<String> = axes.iter().map(|&a| sm.point.value(a)).collect();
        let dash = || "–".to_string();
        cells.push(sm.chose.clone().unwrap_or_else(dash));
        cells.push(sm.total.map_or_else(dash, secs));
        cells.push(sm.downtime.map_or_else(dash, millis));
        match c.best.map(|b| &rows[b]) {
            Some(b) => {
                cells.push(b.point.mode.name().into());
                cells.push(b.total.map_or_else(dash, secs));
                cells.push(b.downtime.map_or_else(dash, millis));
            }
            None => cells.extend([dash(), dash(), dash()]),
        }
        cells.push(objective_name(c.objective).into());
        cells.push(pct(c.percent));
        cells.push(c.verdict.clone());
        table_row(s, &cells);
    }
    let n = cmp.len();
    let picked = cmp
        .iter()
        .filter(|c| picked_best(rows, c) == Some(true))
        .count();
    let worse = cmp
        .iter()
        .filter(|c| c.verdict.starts_with("worse"))
        .count();
    let pcts: Vec<f64> = cmp.iter().filter_map(|c| c.percent).collect();
    let _ = writeln!(
        s,
        "\nSmart picked the best fixed strategy in {picked} of {n} conditions and did worse \
         than it in {worse}."
    );
    if !pcts.is_empty() {
        let mean = pcts.iter().sum::<f64>() / pcts.len() as f64;
        let max = pcts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = pcts.iter().copied().fold(f64::INFINITY, f64::min);
        let _ = writeln!(
            s,
            "Smart vs best: mean {mean:+.1} %, from {min:+.1} % to {max:+.1} %."
        );
    }
}

fn objective_name(o: Objective) -> &'static str {
    match o {
        Objective::Total => "total",
        Objective::Downtime => "downtime",
    }
}

/// `comparison.csv`: one line per smart point.
pub(super) fn comparison_csv(_plan: &Plan, rows: &[Row], cmp: &[Comparison]) -> String {
    let mut s = String::new();
    let mut head: Vec<&str> = Axis::ALL
        .iter()
        .filter(|&&a| a != Axis::Mode)
        .map(|a| a.name())
        .collect();
    head.extend([
        "smart_point",
        "smart_chose",
        "smart_total_s",
        "smart_downtime_ms",
        "smart_meets_target",
        "best_fixed",
        "best_point",
        "best_total_s",
        "best_downtime_ms",
        "objective",
        "smart_vs_best_pct",
        "picked_best",
        "verdict",
    ]);
    let _ = writeln!(s, "{}", head.join(","));
    for c in cmp {
        let sm = &rows[c.smart];
        let mut f: Vec<String> = Axis::ALL
            .iter()
            .filter(|&&a| a != Axis::Mode)
            .map(|&a| sm.point.value(a))
            .collect();
        f.push(sm.point.index.to_string());
        f.push(sm.chose.clone().unwrap_or_default());
        f.push(opt(sm.total, secs));
        f.push(opt(sm.downtime, millis));
        f.push(opt(sm.meets_target(), |m| m.to_string()));
        let b = c.best.map(|b| &rows[b]);
        f.push(opt(b, |b| b.point.mode.name().into()));
        f.push(opt(b, |b| b.point.index.to_string()));
        f.push(opt(b.and_then(|b| b.total), secs));
        f.push(opt(b.and_then(|b| b.downtime), millis));
        f.push(objective_name(c.objective).into());
        f.push(opt(c.percent, |p| format!("{p:.1}")));
        f.push(opt(picked_best(rows, c), |p| p.to_string()));
        f.push(c.verdict.clone());
        let f: Vec<String> = f.iter().map(|x| csv_field(x)).collect();
        let _ = writeln!(s, "{}", f.join(","));
    }
    s
}
