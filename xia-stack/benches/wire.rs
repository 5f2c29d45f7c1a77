//! Wire-core micro-benchmarks: DAG text parsing and printing, and the XIP
//! header's parse, emit and zero-copy read paths.
//!
//! `xip/baseline_memcpy` copies the same packet's bytes into a preallocated
//! buffer. It is measured in the same run so the other numbers can be
//! reported as ratios against it (see docs/src/benchmarks.md): on a noisy
//! shared machine the ratio moves much less than the absolute time.
//!
//! Run with `cargo bench -p xia-stack --bench wire`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xia_stack::wire::xip::{NextHeader, Packet, XipRepr, LAST_ENTRY};
use xia_stack::Dag;

const AD: &str = "AD:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
const HID: &str = "HID:0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";
const SID: &str = "SID:0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c";
const SRC_HID: &str = "HID:1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d";
const SRC_SID: &str = "SID:1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e";
const IP: &str = "IP:4500000000010000fafa0000000000000a000001";

const PAYLOAD_LEN: usize = 64;

/// A plain three-node path: `RE AD HID SID`.
fn re_3_nodes() -> String {
    format!("RE {AD} {HID} {SID}")
}

/// xia-core's 4ID fallback: `RE ( IP:10.0.0.1 ) AD HID SID`.
fn re_fallback_4id() -> String {
    format!("RE ( IP:10.0.0.1 ) {AD} {HID} {SID}")
}

/// xia-core's four-way web-server DAG in the DAG form (no RE form exists).
fn dag_four_way() -> String {
    format!("DAG 3 0 1 - \n{AD} 3 2 - \n{IP} 3 0 - \n{HID} 3 - \n{SID}")
}

/// A fresh packet: 3-node destination, 3-node source, 64-byte payload.
fn packet() -> (XipRepr, Vec<u8>, Vec<u8>) {
    let dst = Dag::parse(&re_3_nodes()).expect("destination DAG");
    let src = Dag::parse(&format!("RE {AD} {SRC_HID} {SRC_SID}")).expect("source DAG");
    let payload: Vec<u8> = (0..PAYLOAD_LEN as u8).collect();
    let repr = XipRepr::new(dst, src, NextHeader::Xdgram, PAYLOAD_LEN);
    let bytes = repr.to_bytes(&payload).expect("packet");
    (repr, payload, bytes)
}

fn dag_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("dag_parse");
    g.throughput(Throughput::Elements(1));
    let cases = [
        ("re_3_nodes", re_3_nodes()),
        ("dag_fallback_4ID", re_fallback_4id()),
        ("dag_form_four_way", dag_four_way()),
    ];
    for (name, text) in &cases {
        Dag::parse(text).expect("benchmark input parses");
        g.bench_function(*name, |b| b.iter(|| Dag::parse(black_box(text))));
    }
    g.finish();
}

fn dag_print(c: &mut Criterion) {
    let mut g = c.benchmark_group("dag_print");
    g.throughput(Throughput::Elements(1));
    let d = Dag::parse(&dag_four_way()).expect("four-way DAG");
    g.bench_function("dag_form", |b| b.iter(|| black_box(&d).to_string()));
    g.finish();
}

fn xip(c: &mut Criterion) {
    let (repr, payload, bytes) = packet();
    assert_eq!(
        XipRepr::parse(&Packet::new_unchecked(&bytes[..])).as_ref(),
        Ok(&repr)
    );

    let mut g = c.benchmark_group("xip");
    g.throughput(Throughput::Elements(1));

    g.bench_function("parse", |b| {
        b.iter(|| XipRepr::parse(&Packet::new_unchecked(black_box(&bytes[..]))))
    });

    // Header and payload into a preallocated buffer: no allocation.
    let mut out = vec![0u8; bytes.len()];
    g.bench_function("emit", |b| {
        b.iter(|| {
            let mut p = Packet::new_unchecked(&mut out[..]);
            black_box(&repr).emit(&mut p).expect("emit");
            p.payload_mut().copy_from_slice(black_box(&payload));
            black_box(&out);
        })
    });
    assert_eq!(out, bytes);

    // What a router reads before it looks anything up: the hop limit, where
    // the packet is in its DAG, and that node's edges (the entry's edges
    // sit in the last node's slots).
    g.bench_function("view_read_fields", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&bytes[..])).expect("valid packet");
            let hlim = p.hop_limit();
            let last = p.last_raw();
            let at = if last == LAST_ENTRY {
                p.dst_count() as usize - 1
            } else {
                last as usize
            };
            (hlim, last, p.dst_node(at))
        })
    });

    let mut copy = vec![0u8; bytes.len()];
    g.bench_function("baseline_memcpy", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(&bytes[..]));
            black_box(&copy);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = dag_parse, dag_print, xip
}
criterion_main!(benches);
