//! The migration fault matrix through a simulated topology: every fault
//! (`link-cut`, `dest-crash`, `source-crash`, `loss`, `stall`) injected
//! the first time the source reaches each phase (Negotiating, PreCopy,
//! StopAndCopy, AwaitCommit, Released), with a client downloading a
//! checksummed stream from the VM throughout (topologies/
//! migration-fault.toml: a 4 MiB VM, a 2 MB stream, two ADs joined by
//! 100 Mbit/s and a 20 ms RTT).
//!
//! Afterwards exactly one copy of the VM runs, the client has every byte
//! exactly once (late, perhaps), and the migration says how it ended:
//! done, or failed in a phase with a cause — each cell as the table in
//! docs/src/migration.md says. One cell cannot keep the VM: the
//! destination crashing once it has started the VM and told the source so
//! (Released) takes the only copy with it, as any crash of a hypervisor
//! takes its VMs; that cell is asserted as exactly that.
//!
//! `cargo test -p testbed --test vm_faults -- --nocapture` prints the
//! matrix.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use testbed::{run, Report, SimConfig, Topology};

const BASE: &str = include_str!("../topologies/migration-fault.toml");

const PHASES: [(&str, &str); 5] = [
    ("negotiating", "Negotiating"),
    ("precopy", "PreCopy"),
    ("stop-and-copy", "StopAndCopy"),
    ("await-commit", "AwaitCommit"),
    ("released", "Released"),
];

/// The faults as the matrix injects them: link faults long enough to
/// outlast both sides' 10 s timeouts (as the engine test's), loss short
/// and light enough to be ridden out.
const FAULTS: [(&str, &str); 5] = [
    ("link-cut", "kind = \"link-cut\", duration = \"12s\""),
    ("dest-crash", "kind = \"dest-crash\""),
    ("source-crash", "kind = \"source-crash\", duration = \"1s\""),
    ("loss", "kind = \"loss\", rate = 0.05, duration = \"3s\""),
    ("stall", "kind = \"stall\", duration = \"15s\""),
];

/// How a cell must end: `done` and where the VM runs, or the phase and
/// cause the failure names. Rows are phases, columns faults, in the order
/// above.
const EXPECTED: [[&str; 5]; 5] = [
    // link-cut, dest-crash, source-crash, loss, stall
    [
        "failed in Negotiating: no word from the other side for 10s",
        "done",
        "failed in Negotiating: cancelled: the source agent restarted",
        "done",
        "failed in Negotiating: no word from the other side for 10s",
    ],
    [
        "failed in PreCopy: no word from the other side for 10s",
        "failed in PreCopy: no word from the other side for 10s",
        "failed in PreCopy: cancelled: the source agent restarted",
        "done",
        "failed in PreCopy: no word from the other side for 10s",
    ],
    [
        "failed in StopAndCopy: no word from the other side for 10s",
        "failed in StopAndCopy: no word from the other side for 10s",
        IN_DOUBT_ABORTED,
        "done",
        "failed in StopAndCopy: no word from the other side for 10s",
    ],
    [
        IN_DOUBT_ABORTED,
        IN_DOUBT_ABORTED,
        IN_DOUBT_ABORTED,
        "done",
        IN_DOUBT_ABORTED,
    ],
    ["done", "done", "done", "done", "done"],
];

const IN_DOUBT_ABORTED: &str =
    "failed in InDoubt: the destination aborted: the destination did not commit (in-doubt resolution)";

fn topo(phase: &str, fault: &str) -> Topology {
    let line = format!("fault = {{ phase = \"{phase}\", {fault} }}");
    let text: String = BASE
        .lines()
        .map(|l| if l.starts_with("fault = ") { &line } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains(&line));
    Topology::parse("migration-fault.toml", &text).unwrap()
}

fn sim(t: Topology) -> Report {
    run(
        t,
        &SimConfig {
            seed: 1,
            // An in-doubt source that never learnt the outcome would ask
            // forever; nothing here takes more than half a minute.
            until: Some(Duration::from_secs(90)),
            ..SimConfig::default()
        },
    )
    .unwrap()
}

/// What one cell ended as, for the table.
fn outcome(r: &Report) -> String {
    let m = &r.migrations[0];
    match (&m.error, &m.session) {
        (Some(e), _) => e.clone(),
        (None, Some(_)) => "done".into(),
        (None, None) => "unfinished".into(),
    }
}

/// An outcome as the table shows it: "failed in PreCopy (timeout)".
fn short(outcome: &str) -> String {
    let Some((phase, cause)) = outcome.split_once(": ") else {
        return outcome.to_string();
    };
    let cause = match cause {
        "no word from the other side for 10s" => "timeout",
        "cancelled: the source agent restarted" => "agent restarted",
        c if c.ends_with("(in-doubt resolution)") => "not committed",
        c => c,
    };
    format!("{phase} ({cause})")
}

/// Checks one cell; returns its table entry.
fn check(p: usize, f: usize, r: &Report) -> String {
    let (phase, phase_name) = PHASES[p];
    let (fault, _) = FAULTS[f];
    let cell = format!("{fault} in {phase}");
    let m = &r.migrations[0];
    let c = &r.vm_clients[0];
    let fired = m.fault.as_deref().unwrap_or("");
    assert!(
        fired.contains(&format!("in {phase_name} at ")),
        "{cell}: the fault fired in its phase: {fired}\n{r}"
    );
    let got = outcome(r);
    assert_eq!(got, EXPECTED[p][f], "{cell}\n{r}");
    // A failure names its phase and its cause.
    if let Some(e) = &m.error {
        let (where_, cause) = e.split_once(": ").expect("phase: cause");
        assert!(where_.starts_with("failed in "), "{cell}: {e}");
        assert!(!cause.is_empty(), "{cell}: {e}");
    }
    let on = |v: &[String]| v.join("+");
    if (fault, phase) == ("dest-crash", "released") {
        // The destination had started the VM and said so (its Activated
        // was on the wire when it crashed): the source let go, and the
        // only copy died with the destination. Nothing runs; the client
        // has what that copy sent before it died, every byte right, and
        // no more.
        assert_eq!(got, "done", "{cell}\n{r}");
        assert!(
            m.running_on.is_empty() && m.paused_on.is_empty(),
            "{cell}\n{r}"
        );
        assert_eq!(c.corrupt, 0, "{cell}\n{r}");
        assert!(c.received < c.expected, "{cell}\n{r}");
        assert_eq!(c.finished, None, "{cell}\n{r}");
        return format!("done, VM lost, {} of {} B", c.received, c.expected);
    }
    // Exactly one copy runs: where the outcome says.
    let want = if got == "done" { "hv2" } else { "hv1" };
    assert_eq!(on(&m.running_on), want, "{cell}\n{r}");
    assert!(m.paused_on.is_empty(), "{cell}\n{r}");
    // Every byte, exactly once, none wrong; late perhaps.
    assert_eq!(
        (c.received, c.corrupt, c.error.as_deref()),
        (c.expected, 0, None),
        "{cell}\n{r}"
    );
    assert!(c.finished.is_some(), "{cell}\n{r}");
    format!(
        "{} -> {want}, gap {:.1} s",
        short(&got),
        c.max_gap.as_secs_f64()
    )
}

#[test]
fn every_fault_in_every_phase_leaves_one_vm_and_a_whole_stream() {
    let cells: Vec<(usize, usize)> = (0..PHASES.len())
        .flat_map(|p| (0..FAULTS.len()).map(move |f| (p, f)))
        .collect();
    let results: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; cells.len()]);
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(p, f)) = cells.get(k) else {
                    return;
                };
                let r = sim(topo(PHASES[p].0, FAULTS[f].1));
                let entry = check(p, f, &r);
                results.lock().unwrap()[k] = Some(entry);
            });
        }
    });
    // Phase × fault -> outcome, where the VM runs, the client's longest
    // gap.
    let results: Vec<String> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|e| e.unwrap_or_else(|| "?".into()))
        .collect();
    let width = results.iter().map(String::len).max().unwrap_or(0);
    let mut table = format!("{:<14}", "phase \\ fault");
    for (f, _) in FAULTS {
        table.push_str(&format!(" | {f:<width$}"));
    }
    table.push('\n');
    for (p, (phase, _)) in PHASES.iter().enumerate() {
        table.push_str(&format!("{phase:<14}"));
        for e in &results[p * FAULTS.len()..][..FAULTS.len()] {
            table.push_str(&format!(" | {e:<width$}"));
        }
        table.push('\n');
    }
    println!("{table}");
}

#[test]
fn a_short_cut_is_ridden_out() {
    // Shorter than the timeouts: XStream retransmits once the link is back
    // and the migration finishes, later.
    let r = sim(topo("precopy", "kind = \"link-cut\", duration = \"2s\""));
    let m = &r.migrations[0];
    assert_eq!(outcome(&r), "done", "{r}");
    assert_eq!(m.running_on, ["hv2"], "{r}");
    assert!(m.total.unwrap() > Duration::from_secs(2), "{r}");
    let c = &r.vm_clients[0];
    assert_eq!((c.received, c.corrupt), (c.expected, 0), "{r}");
    // The report says what happened.
    let text = r.to_string();
    assert!(
        text.contains("; fault: link-cut for 2 s in PreCopy at 1.0"),
        "{text}"
    );
    assert!(text.contains("; runs on hv2"), "{text}");
}

#[test]
fn a_fault_run_is_deterministic() {
    let once = || sim(topo("await-commit", FAULTS[2].1)).to_string();
    assert_eq!(once(), once());
}

#[test]
fn bad_fault_keys_name_the_line() {
    let bad = |fault: &str, want: &str| {
        let line = format!("fault = {fault}");
        let text: String = BASE
            .lines()
            .map(|l| if l.starts_with("fault = ") { &line } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        let e = Topology::parse("t.toml", &text).unwrap_err();
        let at = text.lines().position(|l| l == line).unwrap() + 1;
        assert!(e.to_string().contains(want), "{e}");
        assert_eq!(e.line, at, "{e}");
    };
    bad(
        "{ phase = \"paused\", kind = \"stall\", duration = \"1s\" }",
        "fault phase \"paused\" is not negotiating, precopy",
    );
    bad(
        "{ phase = \"precopy\", kind = \"meteor\" }",
        "fault kind \"meteor\" is not link-cut, stall, loss, dest-crash or source-crash",
    );
    bad(
        "{ phase = \"precopy\", kind = \"link-cut\" }",
        "a link-cut fault needs duration",
    );
    bad(
        "{ phase = \"precopy\", kind = \"stall\", duration = \"0s\" }",
        "a stall fault needs duration",
    );
    bad(
        "{ phase = \"precopy\", kind = \"stall\", duration = \"soon\" }",
        "fault duration \"soon\" is not a time",
    );
    bad(
        "{ phase = \"precopy\", kind = \"loss\", duration = \"1s\" }",
        "a loss fault needs rate",
    );
    bad(
        "{ phase = \"precopy\", kind = \"loss\", rate = 1.5, duration = \"1s\" }",
        "fault rate must be above 0 and at most 1",
    );
    bad(
        "{ phase = \"precopy\", kind = \"stall\", rate = 0.5, duration = \"1s\" }",
        "fault rate is for kind = \"loss\" only",
    );
    bad(
        "{ phase = \"precopy\", kind = \"stall\", duration = \"1s\", when = 3 }",
        "unknown field `when`",
    );
    bad("\"precopy\"", "invalid type");
}
