//! Forwarding-core micro-benchmarks in xia-core's shapes (NSDI 2012): the
//! DAG walk with no fallback, with 1, 2 and 3 fallbacks, and through a
//! local via point, each with and without the router's fast path, over AD
//! and HID tables of 10 K, 1 M and 10 M random entries; and, in the same
//! run, an IPv4 longest-prefix-match baseline (the `prefix-trie` crate) over
//! a table of the same number of prefixes.
//!
//! One criterion iteration is one packet (`Throughput::Elements(1)`). The
//! packets of a case are pre-built, stored back to back in one buffer, and
//! cycled; each has its own destination DAG, whose routed XID is drawn at
//! random from the table's entries, so the lookups spread over the table.
//! Two pool sizes:
//!
//! - `walk/…`, `fast/…`, `fast_hit/…`, `ipv4/lpm`: 1024 packets (the cache
//!   lines the lookups touch fit in the caches after the first pass);
//! - `cold/…`: 2¹⁸ packets, only `no_fallback`, `fallback_3` and IPv4, so
//!   the lookups touch more table than the 32 MiB L3 holds (for the 1 M and
//!   10 M tables) and the packets themselves stream from memory.
//!
//! Per packet, XIP (`walk/`): reset the bytes forwarding changes in place —
//! hop limit back to 250, `last` back to the entry, the visited bit of
//! every destination edge cleared (one 4-byte AND per destination node) —
//! then `walk::check` (lengths, version, `last`, every edge of both DAGs in
//! range) and `walk::route` (lookups, fallbacks, local advance, hop-limit
//! decrement). `fast/` calls `FastPath::route` (owned by the bench, fresh
//! per case) instead of `walk::route`, over the same kind of packets: the
//! cache is direct-mapped, so destinations that share a slot keep evicting
//! each other. `fast_hit/` keeps only packets with a slot of their own, so
//! once warm every packet hits (the fast path's best case). A fast path
//! that skips its cache where the packet has a single edge to try (as
//! `FastPath::route` does since e291a96) makes `fast/` and `fast_hit/` of
//! `no_fallback` and `via_point` the walk plus that test. Each case prints
//! the fast path's hit rate to stderr.
//!
//! Per packet, IPv4 (`ipv4/lpm`): reset the TTL byte to 64 in place, check
//! version/IHL (`0x45`) and that the total length equals the buffer's,
//! look the destination address up (`PrefixMap::get_lpm` on a /32), check
//! TTL > 1 and decrement it. No checksum is verified or updated (XIP has
//! none; a real IPv4 router's incremental update would cost IPv4 a little
//! more, so the ratios here are, if anything, unfavourable to XIP).
//!
//! `parts/…` (smallest table size only) time the resets and header checks
//! alone, so they can be subtracted.
//!
//! Run with `cargo bench -p xia-router --bench forward`; select with a
//! criterion filter, e.g. `-- forward_10M/` or `-- 'fast/fallback'`. Table
//! sizes default to 10 K, 1 M and 10 M; `XIA_BENCH_SIZES=10000,1000000`
//! picks others. A size's tables (~2 GB at 10 M) are built only when one
//! of its cases is selected, and dropped before the next size.

use std::cell::OnceCell;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use prefix_trie::PrefixMap;
use xia_router::fastpath::FastPath;
use xia_router::forward::walk::{self, Verdict};
use xia_router::forward::{Action, Lookup, Route, RouteTables};
use xia_stack::wire::dag::NODE_LEN;
use xia_stack::wire::xip::{NextHeader, XipRepr, DEFAULT_HOP_LIMIT, FIXED_LEN, LAST_ENTRY};
use xia_stack::{Dag, Principal, Xid};

/// Packets in the hot pools (`walk/`, `fast/`, `ipv4/`).
const HOT: usize = 1024;
/// Packets in the cold pools (`cold/`).
const COLD: usize = 1 << 18;
/// Output ports of the router; entry `i` of a table routes out port `i % PORTS`.
const PORTS: u64 = 4;
const IPV4_TTL: u8 = 64;

const SEED: u64 = 0x5eed_0f0a_2012_0001;
const TAG_AD: u64 = 1;
const TAG_HID: u64 = 2;
const TAG_MISS: u64 = 3;
const TAG_OTHER: u64 = 4;
const TAG_PICK: u64 = 5;
const TAG_V4: u64 = 6;
const TAG_NEIGH: u64 = 7;

/// SplitMix64: a tiny seeded generator with random access by seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The `i`-th random 20-byte id of stream `tag`. Distinct `(tag, i)` give
/// distinct first 8 bytes (SplitMix's first output is a bijection of its
/// seed), so ids never collide.
fn id20(tag: u64, i: u64) -> [u8; 20] {
    let mut s = SplitMix(SEED.wrapping_add(tag << 48).wrapping_add(i));
    let (a, b, c) = (s.next(), s.next(), s.next());
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(&a.to_le_bytes());
    id[8..16].copy_from_slice(&b.to_le_bytes());
    id[16..].copy_from_slice(&c.to_le_bytes()[..4]);
    id
}

fn xid(p: Principal, tag: u64, i: u64) -> Xid {
    Xid::new(p, id20(tag, i))
}

fn local_ad() -> Xid {
    xid(Principal::AD, TAG_OTHER, u64::MAX >> 16)
}

fn local_hid() -> Xid {
    xid(Principal::HID, TAG_OTHER, (u64::MAX >> 16) - 1)
}

fn neighbour(port: u64) -> Xid {
    xid(Principal::HID, TAG_NEIGH, port)
}

/// The route of table entry `i`: out port `i % PORTS` to that port's
/// neighbour, as xia-core's tables hold (port, next-hop XID, flags).
fn route_of(i: u64) -> Route {
    let port = i % PORTS;
    Route::via(port as u16, neighbour(port))
}

fn expected(i: u64) -> Verdict {
    let port = i % PORTS;
    Verdict::Forward {
        port: port as u16,
        next_hop: Some(neighbour(port)),
    }
}

/// An IPv4 route: port and gateway.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct NextHop {
    port: u16,
    gateway: u32,
}

/// What the IPv4 baseline decides.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum V4Verdict {
    Forward(NextHop),
    Unreachable,
    TimeExceeded,
    Malformed,
}

/// One table size's state: the XIA tables and the IPv4 LPM table.
struct World {
    n: u64,
    tables: RouteTables,
    lpm: PrefixMap<(u32, u8), NextHop>,
    /// Every prefix in `lpm`, for picking lookups that hit.
    prefixes: Vec<(u32, u8)>,
}

fn build_world(n: u64) -> World {
    let t0 = Instant::now();
    // The tables `Router::new` makes, with its own AD/HID and broadcast.
    let mut tables = RouteTables::with_principals(&[
        Principal::AD,
        Principal::HID,
        Principal::SID,
        Principal::CID,
        Principal::IP,
    ]);
    tables.set_limit(32 << 20);
    tables.insert(local_ad(), Route::LOCAL).unwrap();
    tables.insert(local_hid(), Route::LOCAL).unwrap();
    tables
        .insert(Xid::BROADCAST_HID, Route::special(Action::Broadcast))
        .unwrap();
    for (p, tag) in [(Principal::AD, TAG_AD), (Principal::HID, TAG_HID)] {
        tables.add_table(p).reserve(n as usize);
        for i in 0..n {
            tables.insert(xid(p, tag, i), route_of(i)).unwrap();
        }
    }
    assert_eq!(tables.table(Principal::AD).unwrap().len() as u64, n + 1);
    assert_eq!(tables.table(Principal::HID).unwrap().len() as u64, n + 2);
    let t1 = Instant::now();

    // IPv4: n distinct prefixes, 60 % /24, 25 % /16–/23, 15 % /25–/32.
    let mut lpm = PrefixMap::new();
    let mut prefixes = Vec::with_capacity(n as usize);
    let mut rng = SplitMix(SEED ^ TAG_V4);
    while (prefixes.len() as u64) < n {
        let r = rng.below(100);
        let len: u8 = match r {
            0..60 => 24,
            60..85 => 16 + (r % 8) as u8,
            _ => 25 + (r % 8) as u8,
        };
        let addr = (rng.next() as u32) & mask(len);
        let i = prefixes.len() as u64;
        let nh = NextHop {
            port: (i % PORTS) as u16,
            gateway: 0x0a00_0001 + (i % PORTS) as u32,
        };
        // A prefix drawn twice is only counted once.
        if lpm.insert((addr, len), nh).is_none() {
            prefixes.push((addr, len));
        }
    }
    assert_eq!(lpm.len() as u64, n);
    let t2 = Instant::now();
    eprintln!(
        "[forward] {} entries: XIA AD+HID tables built in {:.1} s, IPv4 LPM in {:.1} s",
        label(n),
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64()
    );
    World {
        n,
        tables,
        lpm,
        prefixes,
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

fn label(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}K", n / 1_000),
        n => n.to_string(),
    }
}

/// The destination-DAG shapes.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `RE AD:x HID:h SID:s`; AD:x is routed out a port: one lookup.
    NoFallback,
    /// The entry has `m + 1` edges: `m` unknown ADs (table misses), then a
    /// routed AD; every AD → HID → SID.
    Fallback(usize),
    /// `RE AD:local HID:h SID:s` at AD:local's router: AD is local
    /// (advance), HID:h routed out a port.
    ViaPoint,
}

impl Shape {
    fn name(self) -> String {
        match self {
            Shape::NoFallback => "no_fallback".into(),
            Shape::Fallback(m) => format!("fallback_{m}"),
            Shape::ViaPoint => "via_point".into(),
        }
    }

    /// Destination text of packet `j` whose routed entry is `k`.
    fn dst(self, j: u64, k: u64) -> String {
        let sid = xid(Principal::SID, TAG_OTHER, 2 * j);
        let hid = xid(Principal::HID, TAG_OTHER, 2 * j + 1);
        match self {
            Shape::NoFallback => format!("RE {} {hid} {sid}", xid(Principal::AD, TAG_AD, k)),
            Shape::Fallback(m) => {
                // Nodes 0..m: missing ADs; m: the routed AD; m+1: HID; m+2: SID.
                let entry: Vec<String> = (0..=m).map(|q| q.to_string()).collect();
                let mut text = format!("DAG {} - ", entry.join(" "));
                for q in 0..m as u64 {
                    let miss = xid(Principal::AD, TAG_MISS, 4 * j + q);
                    text += &format!("{miss} {} - ", m + 1);
                }
                text += &format!(
                    "{} {} - {hid} {} - {sid}",
                    xid(Principal::AD, TAG_AD, k),
                    m + 1,
                    m + 2
                );
                text
            }
            Shape::ViaPoint => {
                format!(
                    "RE {} {} {sid}",
                    local_ad(),
                    xid(Principal::HID, TAG_HID, k)
                )
            }
        }
    }
}

/// Packets stored back to back, all the same length.
struct Pool {
    bytes: Vec<u8>,
    stride: usize,
    mask: usize,
    dnode: usize,
    next: usize,
}

impl Pool {
    fn count(&self) -> usize {
        self.mask + 1
    }

    /// The next packet of the cycle.
    #[inline(always)]
    fn next_packet(&mut self) -> &mut [u8] {
        let at = self.next * self.stride;
        self.next = (self.next + 1) & self.mask;
        &mut self.bytes[at..at + self.stride]
    }
}

/// Undo what forwarding changed: hop limit, `last`, visited bits.
#[inline(always)]
fn reset_xip(p: &mut [u8], dnode: usize) {
    p[4] = DEFAULT_HOP_LIMIT;
    p[7] = LAST_ENTRY;
    for node in 0..dnode {
        let at = FIXED_LEN + node * NODE_LEN + NODE_LEN - 4;
        let e: &mut [u8; 4] = (&mut p[at..at + 4]).try_into().unwrap();
        *e = (u32::from_ne_bytes(*e) & 0x7f7f_7f7f).to_ne_bytes();
    }
}

#[inline(always)]
fn walk_one(tables: &RouteTables, p: &mut [u8]) -> Verdict {
    match walk::check(p) {
        Ok(mut c) => walk::route(tables, &mut c),
        Err(_) => Verdict::Discard,
    }
}

#[inline(always)]
fn fast_one(fast: &mut FastPath, tables: &RouteTables, p: &mut [u8]) -> Verdict {
    match walk::check(p) {
        Ok(mut c) => fast.route(tables, &mut c),
        Err(_) => Verdict::Discard,
    }
}

/// Builds `count` packets of `shape` whose routed entries are spread over
/// the table, and checks each one: the walk meets exactly the intended
/// misses before its hit, the verdict is the expected forward (walk and
/// fast path, cache miss and hit), and the reset restores the bytes.
///
/// With `distinct_slots`, a packet is kept only if it shares no fast-path
/// slot with one kept before (the cache is direct-mapped), so that once
/// warm every packet hits: the fast path's best case.
fn xip_pool(world: &World, shape: Shape, count: usize, salt: u64, distinct_slots: bool) -> Pool {
    assert!(count.is_power_of_two());
    let src = Dag::parse(&format!(
        "RE {} {} {}",
        xid(Principal::AD, TAG_OTHER, 1 << 40),
        xid(Principal::HID, TAG_OTHER, (1 << 40) + 1),
        xid(Principal::SID, TAG_OTHER, (1 << 40) + 2),
    ))
    .unwrap();
    let mut rng = SplitMix(SEED ^ (TAG_PICK << 48) ^ salt);
    let mut bytes = Vec::new();
    let mut stride = 0;
    let mut dnode = 0;
    let mut fast = FastPath::default();
    let mut probe = FastPath::default();
    let mut kept = 0;
    let mut j = 0u64;
    while kept < count {
        j += 1;
        assert!(
            j < 64 * count as u64,
            "cannot find {count} packets for {shape:?}"
        );
        let k = rng.below(world.n);
        let dst = Dag::parse(&shape.dst(j, k)).unwrap();
        let pkt = XipRepr::new(dst, src.clone(), NextHeader::Data, 0)
            .to_bytes(&[])
            .unwrap();
        if kept == 0 {
            stride = pkt.len();
            dnode = pkt[5] as usize;
            bytes.reserve_exact(stride * count);
        }
        assert_eq!(pkt.len(), stride);
        verify_xip(world, shape, &pkt, k, &mut fast);
        bytes.extend_from_slice(&pkt);
        if distinct_slots && !all_hit(world, &mut probe, &mut bytes, stride, dnode) {
            // It evicted a kept packet: drop it, and put the kept ones
            // back in the cache.
            bytes.truncate(bytes.len() - stride);
            all_hit(world, &mut probe, &mut bytes, stride, dnode);
            continue;
        }
        kept += 1;
    }
    Pool {
        bytes,
        stride,
        mask: count - 1,
        dnode,
        next: 0,
    }
}

/// Routes every packet of `bytes` through `fast` twice; whether the second
/// round had no cache miss (each packet hit, or did not consult the cache:
/// the fast path skips it at a node with a single out-edge).
fn all_hit(
    world: &World,
    fast: &mut FastPath,
    bytes: &mut [u8],
    stride: usize,
    dnode: usize,
) -> bool {
    for p in bytes.chunks_exact_mut(stride) {
        fast_one(fast, &world.tables, p);
        reset_xip(p, dnode);
    }
    let before = fast.misses();
    for p in bytes.chunks_exact_mut(stride) {
        fast_one(fast, &world.tables, p);
        reset_xip(p, dnode);
    }
    fast.misses() == before
}

fn verify_xip(world: &World, shape: Shape, pkt: &[u8], k: u64, fast: &mut FastPath) {
    let tables = &world.tables;
    let mut b = pkt.to_vec();
    let c = walk::check(&mut b).unwrap();
    let entry = c.dnode() - 1;
    match shape {
        Shape::NoFallback => {
            assert_eq!(c.edge(entry, 0), Some(0));
            assert!(matches!(tables.lookup(&c.dst_xid(0)), Lookup::Hit(r) if r == route_of(k)));
        }
        Shape::Fallback(m) => {
            for slot in 0..m {
                let target = c.edge(entry, slot).unwrap();
                assert_eq!(tables.lookup(&c.dst_xid(target)), Lookup::Miss);
            }
            let target = c.edge(entry, m).unwrap();
            assert!(
                matches!(tables.lookup(&c.dst_xid(target)), Lookup::Hit(r) if r == route_of(k))
            );
            assert_eq!(c.edge(entry, m + 1), None, "no edge after the hit");
        }
        Shape::ViaPoint => {
            assert_eq!(c.edge(entry, 0), Some(0));
            assert_eq!(tables.lookup(&c.dst_xid(0)), Lookup::Hit(Route::LOCAL));
            assert_eq!(c.edge(0, 0), Some(1));
            assert!(matches!(tables.lookup(&c.dst_xid(1)), Lookup::Hit(r) if r == route_of(k)));
        }
    }
    let dnode = c.dnode();
    let want = expected(k);
    assert_eq!(walk_one(tables, &mut b), want, "{shape:?}");
    assert_eq!(b[4], DEFAULT_HOP_LIMIT - 1);
    if let Shape::ViaPoint = shape {
        assert_eq!(b[7], 0, "advanced past the local AD");
    }
    reset_xip(&mut b, dnode);
    assert_eq!(b, pkt, "reset restores the packet");
    // Fast path: a miss (full walk) then, normally, a hit (replay).
    for _ in 0..2 {
        assert_eq!(fast_one(fast, tables, &mut b), want, "{shape:?} fast");
        assert_eq!(b[4], DEFAULT_HOP_LIMIT - 1);
        reset_xip(&mut b, dnode);
        assert_eq!(b, pkt);
    }
}

/// IPv4 headers (20 bytes, no payload) to addresses inside random present
/// prefixes; the lookup result is whatever the longest match is (a longer
/// prefix may cover the address), and must exist.
fn ipv4_pool(world: &World, count: usize, salt: u64) -> Pool {
    assert!(count.is_power_of_two());
    let mut rng = SplitMix(SEED ^ (TAG_PICK << 48) ^ (salt + 1));
    let mut bytes = Vec::with_capacity(20 * count);
    for j in 0..count {
        let (addr, len) = world.prefixes[rng.below(world.prefixes.len() as u64) as usize];
        let dst = addr | (rng.next() as u32 & !mask(len));
        let h = ipv4_header(0xc0a8_0001, dst, j as u16);
        let mut b = h;
        let v = ipv4_one(&world.lpm, &mut b);
        assert!(matches!(v, V4Verdict::Forward(_)), "{v:?}");
        assert_eq!(b[8], IPV4_TTL - 1);
        b[8] = IPV4_TTL;
        assert_eq!(b, h);
        bytes.extend_from_slice(&h);
    }
    Pool {
        bytes,
        stride: 20,
        mask: count - 1,
        dnode: 0,
        next: 0,
    }
}

fn ipv4_header(src: u32, dst: u32, id: u16) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&20u16.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[8] = IPV4_TTL;
    h[9] = 17;
    h[12..16].copy_from_slice(&src.to_be_bytes());
    h[16..20].copy_from_slice(&dst.to_be_bytes());
    let mut sum: u32 = h
        .chunks_exact(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h
}

#[inline(always)]
fn ipv4_check(h: &[u8]) -> bool {
    h.len() >= 20 && h[0] == 0x45 && u16::from_be_bytes([h[2], h[3]]) as usize == h.len()
}

#[inline(always)]
fn ipv4_one(lpm: &PrefixMap<(u32, u8), NextHop>, h: &mut [u8]) -> V4Verdict {
    if !ipv4_check(h) {
        return V4Verdict::Malformed;
    }
    let dst = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
    let Some((_, nh)) = lpm.get_lpm(&(dst, 32)) else {
        return V4Verdict::Unreachable;
    };
    if h[8] <= 1 {
        return V4Verdict::TimeExceeded;
    }
    h[8] -= 1;
    V4Verdict::Forward(*nh)
}

fn sizes() -> Vec<u64> {
    match std::env::var("XIA_BENCH_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .expect("XIA_BENCH_SIZES: comma-separated counts")
            })
            .collect(),
        Err(_) => vec![10_000, 1_000_000, 10_000_000],
    }
}

/// How the XIP side routes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// `walk::route`.
    Walk,
    /// `FastPath::route` over packets drawn like the others (some share a
    /// direct-mapped slot and keep evicting each other).
    Fast,
    /// `FastPath::route` over packets that all have a slot of their own:
    /// every packet hits once the cache is warm.
    FastHit,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Walk => "walk",
            Mode::Fast => "fast",
            Mode::FastHit => "fast_hit",
        }
    }
}

fn xip_case(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    world: &OnceCell<World>,
    build: &dyn Fn() -> World,
    shape: Shape,
    mode: Mode,
    count: usize,
) {
    let prefix = if count == HOT { "" } else { "cold/" };
    let id = format!("{prefix}{}/{}", mode.name(), shape.name());
    let mut state: Option<(Pool, FastPath)> = None;
    g.bench_function(&id, |b| {
        let w = world.get_or_init(build);
        let (pool, fast) = state.get_or_insert_with(|| {
            let pool = xip_pool(w, shape, count, count as u64, mode == Mode::FastHit);
            (pool, FastPath::default())
        });
        let dnode = pool.dnode;
        let tables = &w.tables;
        if mode == Mode::Walk {
            b.iter(|| {
                let p = pool.next_packet();
                reset_xip(p, dnode);
                walk_one(tables, p)
            })
        } else {
            b.iter(|| {
                let p = pool.next_packet();
                reset_xip(p, dnode);
                fast_one(fast, tables, p)
            })
        }
    });
    if let Some((pool, fast)) = &state {
        if mode != Mode::Walk {
            let (h, m) = (fast.hits(), fast.misses());
            if h + m == 0 {
                eprintln!("[forward] {id}: fast path cache never consulted");
            } else {
                eprintln!(
                    "[forward] {id}: fast path {h} hits, {m} misses ({:.1} % hits) over {} packets",
                    100.0 * h as f64 / (h + m) as f64,
                    pool.count()
                );
            }
        }
    }
}

fn ipv4_case(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    world: &OnceCell<World>,
    build: &dyn Fn() -> World,
    count: usize,
) {
    let id = if count == HOT {
        "ipv4/lpm"
    } else {
        "cold/ipv4/lpm"
    };
    let mut state: Option<Pool> = None;
    g.bench_function(id, |b| {
        let w = world.get_or_init(build);
        let pool = state.get_or_insert_with(|| ipv4_pool(w, count, count as u64));
        let lpm = &w.lpm;
        b.iter(|| {
            let h = pool.next_packet();
            h[8] = IPV4_TTL;
            ipv4_one(lpm, h)
        })
    });
}

/// Reset and header-check costs alone (no lookup), to subtract.
fn parts(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    world: &OnceCell<World>,
    build: &dyn Fn() -> World,
) {
    for (name, shape) in [
        ("no_fallback", Shape::NoFallback),
        ("fallback_3", Shape::Fallback(3)),
    ] {
        let mut state: Option<Pool> = None;
        g.bench_function(format!("parts/xip_reset/{name}"), |b| {
            let w = world.get_or_init(build);
            let pool = state.get_or_insert_with(|| xip_pool(w, shape, HOT, HOT as u64, false));
            let dnode = pool.dnode;
            b.iter(|| {
                let p = pool.next_packet();
                reset_xip(p, dnode);
                p[4]
            })
        });
        g.bench_function(format!("parts/xip_reset_check/{name}"), |b| {
            let w = world.get_or_init(build);
            let pool = state.get_or_insert_with(|| xip_pool(w, shape, HOT, HOT as u64, false));
            let dnode = pool.dnode;
            b.iter(|| {
                let p = pool.next_packet();
                reset_xip(p, dnode);
                walk::check(p).map(|c| c.dnode()).unwrap_or(0)
            })
        });
    }
    let mut state: Option<Pool> = None;
    g.bench_function("parts/ipv4_reset", |b| {
        let w = world.get_or_init(build);
        let pool = state.get_or_insert_with(|| ipv4_pool(w, HOT, HOT as u64));
        b.iter(|| {
            let h = pool.next_packet();
            h[8] = IPV4_TTL;
            h[8]
        })
    });
    g.bench_function("parts/ipv4_reset_check", |b| {
        let w = world.get_or_init(build);
        let pool = state.get_or_insert_with(|| ipv4_pool(w, HOT, HOT as u64));
        b.iter(|| {
            let h = pool.next_packet();
            h[8] = IPV4_TTL;
            ipv4_check(h)
        })
    });
}

fn forward(c: &mut Criterion) {
    let sizes = sizes();
    for (at, &n) in sizes.iter().enumerate() {
        let world = OnceCell::new();
        let build = move || build_world(n);
        let mut g = c.benchmark_group(format!("forward_{}", label(n)));
        g.throughput(Throughput::Elements(1));
        ipv4_case(&mut g, &world, &build, HOT);
        for shape in [
            Shape::NoFallback,
            Shape::Fallback(1),
            Shape::Fallback(2),
            Shape::Fallback(3),
            Shape::ViaPoint,
        ] {
            for mode in [Mode::Walk, Mode::Fast, Mode::FastHit] {
                xip_case(&mut g, &world, &build, shape, mode, HOT);
            }
        }
        ipv4_case(&mut g, &world, &build, COLD);
        for shape in [Shape::NoFallback, Shape::Fallback(3)] {
            for mode in [Mode::Walk, Mode::Fast] {
                xip_case(&mut g, &world, &build, shape, mode, COLD);
            }
        }
        if at == 0 {
            parts(&mut g, &world, &build);
        }
        g.finish();
        // `world` (the tables) is dropped here, before the next size.
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(2500));
    targets = forward
}
criterion_main!(benches);
