//! SVG plots of an experiment: each metric against the swept axis with
//! the most values, one line per mode (and per combination of the other
//! swept axes), averaged over seeds. The colour says the mode; the dash
//! and the marker say the combination of the other axes; smart has
//! hollow markers, so it stays visible where it retraces a fixed mode.
//! Drawn with plotters' SVG backend: text is written as `<text>`
//! elements, so no fonts are needed.

use std::collections::BTreeMap;

use plotters::coord::ranged1d::{AsRangedCoord, IntoSegmentedCoord, SegmentValue, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plan::{Axis, Plan, PlanMode};
use super::{ExperimentError, Row};

/// A metric to plot.
struct Metric {
    file: &'static str,
    title: &'static str,
    unit: &'static str,
    value: fn(&Row) -> Option<f64>,
}

const METRICS: &[Metric] = &[
    Metric {
        file: "total_time.svg",
        title: "Total migration time",
        unit: "total time (s)",
        value: |r| r.total.map(|d| d.as_secs_f64()),
    },
    Metric {
        file: "downtime.svg",
        title: "Downtime",
        unit: "downtime (ms)",
        value: |r| r.downtime.map(|d| d.as_secs_f64() * 1e3),
    },
    Metric {
        file: "bytes_sent.svg",
        title: "Bytes sent",
        unit: "sent (MB)",
        value: |r| r.bytes.map(|b| b as f64 / 1e6),
    },
    Metric {
        file: "client_gap.svg",
        title: "Longest gap the streaming client saw",
        unit: "gap (ms)",
        value: |r| Some(r.gap.as_secs_f64() * 1e3),
    },
    Metric {
        file: "lost_datagrams.svg",
        title: "Lost datagrams",
        unit: "datagrams lost",
        value: |r| r.datagrams.as_ref().map(|d| d.lost() as f64),
    },
];

fn color(mode: PlanMode) -> RGBColor {
    match mode {
        PlanMode::Full => RGBColor(0x1f, 0x77, 0xb4),
        PlanMode::Live => RGBColor(0xd6, 0x27, 0x28),
        PlanMode::LiveDeltas => RGBColor(0x2c, 0xa0, 0x2c),
        PlanMode::Smart => RGBColor(0x94, 0x67, 0xbd),
    }
}

// Dash and gap lengths per group (0: a solid line).
const DASHES: [(u32, u32); 4] = [(0, 0), (10, 5), (3, 4), (16, 4)];

/// The x axis: the swept axis (not the mode) with the most values; the
/// mode itself when nothing else varies.
pub(super) fn x_axis(plan: &Plan) -> Axis {
    let mut best = (Axis::Mode, 1);
    for a in Axis::ALL {
        if a == Axis::Mode {
            continue;
        }
        let n = plan.distinct(a);
        if n > best.1 {
            best = (a, n);
        }
    }
    best.0
}

/// One line: a mode at one combination of the other swept axes.
struct Line {
    label: String,
    mode: PlanMode,
    // Which combination of the other axes (its index in order met).
    group: usize,
    // Mean over seeds at each x category.
    points: Vec<(usize, f64)>,
}

fn lines(
    plan: &Plan,
    rows: &[Row],
    x: Axis,
    value: fn(&Row) -> Option<f64>,
) -> (Vec<String>, Vec<Line>) {
    let mut cats: Vec<String> = Vec::new();
    for p in &plan.points {
        let v = p.value(x);
        if !cats.contains(&v) {
            cats.push(v);
        }
    }
    let others: Vec<Axis> = plan
        .varying()
        .into_iter()
        .filter(|&a| a != x && a != Axis::Mode && a != Axis::Seed)
        .collect();
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut order: Vec<(PlanMode, usize)> = Vec::new();
    let mut acc: BTreeMap<(PlanMode, usize), BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for r in rows {
        let g: Vec<String> = others
            .iter()
            .map(|&a| {
                let unit = a.unit();
                let sep = if unit.is_empty() { "" } else { " " };
                format!("{} {}{sep}{unit}", a.name(), r.point.value(a))
            })
            .collect();
        let gi = match groups.iter().position(|x| *x == g) {
            Some(i) => i,
            None => {
                groups.push(g);
                groups.len() - 1
            }
        };
        let key = (r.point.mode, gi);
        if !order.contains(&key) {
            order.push(key);
        }
        let Some(v) = value(r) else { continue };
        let Some(xi) = cats.iter().position(|c| *c == r.point.value(x)) else {
            continue;
        };
        acc.entry(key).or_default().entry(xi).or_default().push(v);
    }
    let lines = order
        .into_iter()
        .filter_map(|key| {
            let pts = acc.remove(&key)?;
            let label = std::iter::once(key.0.name().to_string())
                .chain(groups[key.1].iter().cloned())
                .collect::<Vec<_>>()
                .join(", ");
            Some(Line {
                label,
                mode: key.0,
                group: key.1,
                points: pts
                    .into_iter()
                    .map(|(xi, vs)| (xi, vs.iter().sum::<f64>() / vs.len() as f64))
                    .collect(),
            })
        })
        .collect();
    (cats, lines)
}

/// Every plot: (file name, SVG text). Lost datagrams only with a
/// datagram client.
pub(super) fn plots(plan: &Plan, rows: &[Row]) -> Result<Vec<(String, String)>, ExperimentError> {
    let x = x_axis(plan);
    let x_desc = if x == Axis::Mode {
        x.label().to_string()
    } else {
        format!("{} (swept values, evenly spaced)", x.label())
    };
    let mut out = Vec::new();
    for m in METRICS {
        if m.file == "lost_datagrams.svg" && plan.datagrams.is_none() {
            continue;
        }
        let (cats, lines) = lines(plan, rows, x, m.value);
        let title = format!("{}: {}", plan.title, m.title);
        let svg = svg(&title, &x_desc, m.unit, &cats, &lines).map_err(|message| {
            ExperimentError::Plot {
                name: m.file.to_string(),
                message,
            }
        })?;
        out.push((m.file.to_string(), svg));
    }
    Ok(out)
}

const PLOT_WIDTH: u32 = 760;
const HEIGHT: u32 = 560;

fn svg(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    cats: &[String],
    lines: &[Line],
) -> Result<String, String> {
    // The legend goes right of the plot, as wide as its longest label
    // (about 7 px a character at 13 px).
    let longest = lines
        .iter()
        .map(|l| l.label.chars().count())
        .max()
        .unwrap_or(0);
    let legend_width = (longest as u32 * 7 + 60).clamp(140, 480);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (PLOT_WIDTH + legend_width, HEIGHT))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (plot, legend) = root.split_horizontally(PLOT_WIDTH);
        let ys: Vec<f64> = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .collect();
        let hi = ys.iter().copied().fold(0.0f64, f64::max);
        let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
        // A logarithmic y axis when the values span more than 30×.
        if lo > 0.0 && hi / lo > 30.0 {
            draw(
                &plot,
                title,
                x_desc,
                y_desc,
                cats,
                lines,
                (lo / 1.5..hi * 1.5).log_scale(),
            )?;
        } else {
            let top = if hi > 0.0 { hi * 1.15 } else { 1.0 };
            draw(&plot, title, x_desc, y_desc, cats, lines, 0.0..top)?;
        }
        draw_legend(&legend, lines)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

// The pieces of a dashed polyline through `pts` (pixels).
fn dashes(pts: &[(i32, i32)], dash: u32, gap: u32) -> Vec<Vec<(i32, i32)>> {
    if dash == 0 {
        return vec![pts.to_vec()];
    }
    let mut out = Vec::new();
    let mut on = true;
    let mut left = f64::from(dash);
    let mut cur: Vec<(i32, i32)> = pts.first().map(|&p| vec![p]).unwrap_or_default();
    for w in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (
            (f64::from(w[0].0), f64::from(w[0].1)),
            (f64::from(w[1].0), f64::from(w[1].1)),
        );
        let len = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
        let mut at = 0.0;
        while len - at > left {
            at += left;
            let p = (
                (x0 + (x1 - x0) * at / len).round() as i32,
                (y0 + (y1 - y0) * at / len).round() as i32,
            );
            if on {
                cur.push(p);
                out.push(std::mem::take(&mut cur));
            } else {
                cur = vec![p];
            }
            on = !on;
            left = f64::from(if on { dash } else { gap });
        }
        left -= len - at;
        if on {
            cur.push(w[1]);
        }
    }
    if on && cur.len() > 1 {
        out.push(cur);
    }
    out
}

// A marker: circle, triangle, square or diamond by group; hollow for
// smart.
fn marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    group: usize,
    smart: bool,
    color: RGBColor,
) -> Result<(), String> {
    let style = if smart {
        color.stroke_width(2)
    } else {
        color.filled()
    };
    let r = if smart { 7 } else { 5 };
    let (x, y) = at;
    let shape: Vec<(i32, i32)> = match group % 4 {
        0 => {
            return area
                .draw(&Circle::new(at, r, style))
                .map_err(|e| e.to_string())
        }
        1 => vec![(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)],
        2 => vec![
            (x - r, y - r),
            (x + r, y - r),
            (x + r, y + r),
            (x - r, y + r),
        ],
        _ => vec![
            (x, y - r - 2),
            (x + r + 2, y),
            (x, y + r + 2),
            (x - r - 2, y),
        ],
    };
    if smart {
        let mut closed = shape.clone();
        closed.push(shape[0]);
        area.draw(&PathElement::new(closed, style))
    } else {
        area.draw(&Polygon::new(shape, style))
    }
    .map_err(|e| e.to_string())
}

fn draw<Y>(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    cats: &[String],
    lines: &[Line],
    y: Y,
) -> Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let n = cats.len().max(1) as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n - 1).into_segmented(), y)
        .map_err(|e| e.to_string())?;
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => cats.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(cats.len().max(1))
        .y_labels(12)
        .x_label_formatter(&label)
        .y_label_formatter(&|v: &f64| format_y(*v))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    // Lines and markers in pixels, on the plotting area.
    let plotting = chart.plotting_area();
    let (dx, dy) = plotting.get_base_pixel();
    for l in lines {
        let c = color(l.mode);
        let px: Vec<(i32, i32)> = l
            .points
            .iter()
            .map(|&(xi, v)| {
                let (x, y) = plotting.map_coordinate(&(SegmentValue::CenterOf(xi as i32), v));
                (x - dx, y - dy)
            })
            .collect();
        let (dash, gap) = DASHES[l.group % DASHES.len()];
        for piece in dashes(&px, dash, gap) {
            plotting
                .strip_coord_spec()
                .draw(&PathElement::new(piece, c.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
        for &p in &px {
            marker(
                &plotting.strip_coord_spec(),
                p,
                l.group,
                l.mode == PlanMode::Smart,
                c,
            )?;
        }
    }
    Ok(())
}

fn draw_legend(area: &DrawingArea<SVGBackend, Shift>, lines: &[Line]) -> Result<(), String> {
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    for (k, l) in lines.iter().enumerate() {
        let y = 60 + 22 * k as i32;
        let c = color(l.mode);
        let (dash, gap) = DASHES[l.group % DASHES.len()];
        for piece in dashes(&[(4, y), (40, y)], dash, gap) {
            area.draw(&PathElement::new(piece, c.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
        marker(area, (22, y), l.group, l.mode == PlanMode::Smart, c)?;
        area.draw(&Text::new(l.label.clone(), (50, y - 7), font.clone()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

// Tick labels: at most 3 significant decimals, no trailing zeros.
fn format_y(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::dashes;

    #[test]
    fn a_dashed_line_is_cut_into_dashes() {
        assert_eq!(
            dashes(&[(0, 0), (30, 0)], 0, 0),
            vec![vec![(0, 0), (30, 0)]]
        );
        assert_eq!(
            dashes(&[(0, 0), (30, 0)], 10, 5),
            vec![vec![(0, 0), (10, 0)], vec![(15, 0), (25, 0)]]
        );
        // Across a corner the dash goes on.
        let d = dashes(&[(0, 0), (6, 0), (6, 6)], 10, 5);
        assert_eq!(d[0], vec![(0, 0), (6, 0), (6, 4)]);
    }
}
