//! The migration experiment runner end to end: a tiny plan (a 4 MiB VM,
//! full and live at two bandwidths, a datagram companion run) runs in the
//! simulator, and its tables are compared with snapshots. The plots must
//! be SVG with their titles and text, and every file must be the same
//! whatever the number of jobs.

use std::path::{Path, PathBuf};

use testbed::experiment::{self, Plan};

const PLAN: &str = r#"title = "Tiny migration sweep"

[scenario]
memory = "4MiB"
hot_set = "512KiB"
dirty_rate = 1000
rtt = "10ms"
migrate_at = "1s"

[stream]
rate = "2Mbps"
start = "500ms"
bytes = "1MB"

[datagrams]
interval = "20ms"
start = "500ms"
count = 150

[sweep]
bandwidth = ["50Mbps", "100Mbps"]
mode = ["full", "live"]
"#;

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xia-experiment-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(jobs: usize, dir: &Path) -> Vec<PathBuf> {
    let plan = Plan::parse("tiny.toml", PLAN).unwrap();
    experiment::write_inputs(&plan, dir).unwrap();
    let mut started = 0;
    let results = experiment::run(&plan, jobs, &mut |p| {
        if let experiment::Progress::Started { .. } = p {
            started += 1;
        }
    })
    .unwrap();
    assert_eq!(started, 4);
    experiment::write_results(&plan, &results, dir).unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn a_tiny_plan_runs_and_writes_stable_outputs() {
    let (a, b) = (out_dir("a"), out_dir("b"));
    let written = run(2, &a);
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "results.csv",
            "results.md",
            "total_time.svg",
            "downtime.svg",
            "bytes_sent.svg",
            "client_gap.svg",
            "lost_datagrams.svg"
        ],
        "no smart run, so no comparison"
    );
    let csv = read(&a, "results.csv");
    let md = read(&a, "results.md");
    insta::assert_snapshot!("results_csv", csv);
    insta::assert_snapshot!("results_md", md);
    // Every point finished, and the client got its whole stream.
    for line in csv.lines().skip(1) {
        assert!(line.contains(",ok,"), "{line}");
    }
    // The inputs are there to rerun a point alone.
    assert_eq!(read(&a, "plan.toml"), PLAN);
    let point = read(&a.join("topologies"), "point-002.toml");
    testbed::Topology::parse("point-002.toml", &point).unwrap();
    assert!(a.join("topologies/point-004-datagrams.toml").exists());

    for (file, title) in [
        ("total_time.svg", "Total migration time"),
        ("downtime.svg", "Downtime"),
        ("bytes_sent.svg", "Bytes sent"),
        ("client_gap.svg", "Longest gap the streaming client saw"),
        ("lost_datagrams.svg", "Lost datagrams"),
    ] {
        let svg = read(&a, file);
        assert!(svg.starts_with("<svg "), "{file}");
        assert!(svg.trim_end().ends_with("</svg>"), "{file}");
        assert_eq!(
            svg.matches("<text").count(),
            svg.matches("</text>").count(),
            "{file}"
        );
        // Text is drawn without fonts: the title, the axis and the legend.
        let text = svg.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            format!("Tiny migration sweep: {title}"),
            "bandwidth (Mbit/s)".into(),
            "> 50 <".into(),
            "> full <".into(),
            "> live <".into(),
        ] {
            assert!(text.contains(&want), "{file} lacks {want:?}");
        }
    }

    // One job or two, the same bytes.
    run(1, &b);
    for name in names {
        assert_eq!(read(&a, &name), read(&b, &name), "{name} differs");
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn a_bad_plan_names_the_key_and_its_line() {
    let bad = PLAN.replace("rtt = \"10ms\"", "rtt = \"10ms\"\nlink = \"fast\"");
    let e = Plan::parse("tiny.toml", &bad).unwrap_err();
    assert_eq!(e.line, 8, "{e}");
    assert!(
        e.to_string()
            .starts_with("tiny.toml:8: unknown field `link`"),
        "{e}"
    );
    let bad = PLAN.replace("\"100Mbps\"]", "\"100Mbps\", \"fast\"]");
    let e = Plan::parse("tiny.toml", &bad).unwrap_err();
    assert_eq!(e.line, 21, "{e}");
    assert!(
        e.message
            .contains("sweep.bandwidth: \"fast\" is not a bandwidth"),
        "{e}"
    );
}
