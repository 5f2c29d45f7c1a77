//! Simulator speed: a generated 100-node topology (20 ADs, each one router
//! and 4 hosts; routers in a ring with chords) running 60 s of virtual time
//! with 20 steady datagram flows (one 200-byte datagram every 5 ms each).
//!
//! Criterion reports the time per run and, since the event count of a run
//! is fixed by the seed, events per second as its throughput.
//!
//! cargo bench -p testbed --bench sim

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use testbed::synthetic::Synthetic;
use testbed::{run, SimConfig, Topology};

fn bench(c: &mut Criterion) {
    let spec = Synthetic {
        ads: 20,
        hosts_per_ad: 4,
        flows: 20,
        interval: Duration::from_millis(5),
        duration: Duration::from_secs(60),
        size: 200,
    };
    assert_eq!(spec.nodes(), 100);
    let topo =
        Topology::parse("synthetic-100", &spec.to_toml()).expect("generated topology parses");
    let config = SimConfig {
        seed: 1,
        ..SimConfig::default()
    };
    let events = run(topo.clone(), &config).expect("runs").events;
    let mut g = c.benchmark_group("sim");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(events));
    g.bench_function("100_nodes_60s_20_flows", |b| {
        b.iter(|| black_box(run(topo.clone(), &config).expect("runs").events))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
