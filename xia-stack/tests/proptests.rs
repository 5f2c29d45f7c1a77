//! Property tests for xia-stack's wire core: XIDs, DAG addresses (both text
//! forms and the wire form), the XIP header and XCMP.
//!
//! Two kinds of properties live here:
//!
//! - round trips on random *valid* values (text, RE text, wire, XIP packets,
//!   XCMP messages), plus differential checks of the DAG rules against an
//!   independent oracle;
//! - "never panics" checks on arbitrary and mutated input, with the rule
//!   that anything a parser accepts prints or emits back to the same value.

use std::net::Ipv4Addr;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use xia_stack::dag::{Dag, Edges, Node, MAX_EDGES, MAX_NODES};
use xia_stack::wire::dag::{EdgeMarks, EDGE_UNUSED, EDGE_VISITED, NODE_LEN};
use xia_stack::wire::xcmp::{self, Packet as XcmpPacket, Unreachable, XcmpRepr};
use xia_stack::wire::xip::{self, LastNode, NextHeader, Packet as XipPacket, XipRepr};
use xia_stack::xid::{Principal, Xid};

const CASES: u32 = 256;

/// `CASES` cases each, or `PROPTEST_CASES` if set (for longer runs, e.g.
/// `PROPTEST_CASES=20000 cargo test --release --test proptests`). Failures
/// print their shrunk input and are not persisted: proptest cannot find a
/// source root for an integration test, and the suite leaves no files.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

// ---------------------------------------------------------------------------
// Strategies: XIDs
// ---------------------------------------------------------------------------

fn principal() -> impl Strategy<Value = Principal> {
    prop_oneof![
        8 => prop::sample::select(vec![
            Principal::AD,
            Principal::HID,
            Principal::SID,
            Principal::CID,
            Principal::IP,
        ]),
        1 => prop::sample::select(vec![Principal::FID, Principal::NCID, Principal::ICID]),
        // Unnamed types, printed as `0x…`: small ones near the built-ins
        // and any 32-bit value but the two reserved ones.
        1 => (1u32..0x100)
            .prop_filter("reserved principal", |v| *v != 0xff)
            .prop_map(Principal::from_u32),
        2 => any::<u32>()
            .prop_filter("reserved principal", |v| *v != 0 && *v != 0xff)
            .prop_map(Principal::from_u32),
    ]
}

fn xid() -> impl Strategy<Value = Xid> {
    prop_oneof![
        9 => (principal(), any::<[u8; 20]>()).prop_map(|(p, id)| Xid::new(p, id)),
        1 => any::<[u8; 4]>().prop_map(|o| Xid::from_ipv4(Ipv4Addr::from(o))),
    ]
}

// ---------------------------------------------------------------------------
// Strategies: valid DAGs
// ---------------------------------------------------------------------------

/// How one node's (or the entry's) out-edges are drawn: up to three extra
/// forward targets, and optionally a permutation of the priorities.
#[derive(Debug, Clone)]
struct EdgePlan {
    extra: Vec<Index>,
    perm: Option<Index>,
}

fn edge_plan() -> impl Strategy<Value = EdgePlan> {
    (
        vec(any::<Index>(), 0..=MAX_EDGES - 1),
        prop::option::weighted(0.3, any::<Index>()),
    )
        .prop_map(|(extra, perm)| EdgePlan { extra, perm })
}

fn factorial(n: usize) -> usize {
    (1..=n).product()
}

/// Reorders `v` by the permutation `ix` picks among all `v.len()!` of them.
fn permute<T>(v: &mut Vec<T>, ix: Index) {
    let mut k = ix.index(factorial(v.len()));
    let mut out = Vec::with_capacity(v.len());
    while !v.is_empty() {
        let f = factorial(v.len() - 1);
        out.push(v.remove(k / f));
        k %= f;
    }
    *v = out;
}

/// `first`, then up to three distinct targets from `candidates`, in the
/// plan's priority order.
fn plan_edges(first: usize, mut candidates: Vec<usize>, plan: &EdgePlan) -> Vec<u8> {
    let mut targets = vec![first as u8];
    for ix in &plan.extra {
        if candidates.is_empty() {
            break;
        }
        targets.push(candidates.remove(ix.index(candidates.len())) as u8);
    }
    if let Some(p) = plan.perm {
        permute(&mut targets, p);
    }
    targets
}

/// Entry edges and nodes of a valid DAG in topological order: node `i`'s
/// edges go to nodes after it, the first to `i + 1` (so every node is
/// reachable and only the last is a sink), the entry's to 0 and others.
fn ordered_parts() -> impl Strategy<Value = (Edges, Vec<Node>)> {
    (1usize..=MAX_NODES)
        .prop_flat_map(|n| (vec(xid(), n), vec(edge_plan(), n)))
        .prop_map(|(xids, plans)| {
            let n = xids.len();
            // The last node has no edges, so its plan serves the entry.
            let entry = plan_edges(0, (1..n).collect(), &plans[n - 1]);
            let nodes = xids
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let edges = if i + 1 < n {
                        plan_edges(i + 1, (i + 2..n).collect(), &plans[i])
                    } else {
                        Vec::new()
                    };
                    Node::new(x, Edges::from_slice(&edges).expect("at most 4 edges"))
                })
                .collect();
            (Edges::from_slice(&entry).expect("at most 4 edges"), nodes)
        })
}

fn ordered_dag() -> impl Strategy<Value = Dag> {
    ordered_parts().prop_map(|(entry, nodes)| {
        // `generated_parts_are_valid` checks this against the oracle.
        Dag::new(entry, nodes).expect("generated DAG parts are valid")
    })
}

/// A valid DAG and a permutation of its node positions (`perm[new] = old`).
fn dag_and_perm() -> impl Strategy<Value = (Dag, Vec<usize>)> {
    ordered_dag().prop_flat_map(|d| {
        let n = d.len();
        (Just(d), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
    })
}

fn remap(edges: &Edges, f: impl Fn(usize) -> usize) -> Edges {
    let v: Vec<u8> = edges
        .as_slice()
        .iter()
        .map(|&t| f(t as usize) as u8)
        .collect();
    Edges::from_slice(&v).expect("same count")
}

/// `d`'s nodes stored in the order `perm` gives (`perm[new] = old`); the
/// sink ends up wherever the permutation puts it.
fn scramble(d: &Dag, perm: &[usize]) -> (Edges, Vec<Node>) {
    let mut new_of_old = vec![0; perm.len()];
    for (new, &old) in perm.iter().enumerate() {
        new_of_old[old] = new;
    }
    let nodes = perm
        .iter()
        .map(|&old| {
            let nd = &d.nodes()[old];
            Node::new(nd.xid, remap(&nd.edges, |t| new_of_old[t]))
        })
        .collect();
    (remap(d.entry_edges(), |t| new_of_old[t]), nodes)
}

/// An RE string made of main nodes, each optionally preceded by a
/// fallback list, at most 20 nodes in all.
fn re_text() -> impl Strategy<Value = String> {
    vec((vec(xid(), 0..=3), xid()), 1..=10).prop_map(|segments| {
        let mut total = 0;
        let mut s = String::from("RE");
        for (fallback, main) in segments {
            if total + fallback.len() + 1 > MAX_NODES {
                break;
            }
            total += fallback.len() + 1;
            if !fallback.is_empty() {
                s.push_str(" (");
                for x in fallback {
                    s.push(' ');
                    s.push_str(&x.to_string());
                }
                s.push_str(" )");
            }
            s.push(' ');
            s.push_str(&main.to_string());
        }
        s
    })
}

/// Any valid DAG: topologically ordered, built from a scrambled order with
/// [`Dag::from_unordered`], or read from RE text.
fn any_dag() -> impl Strategy<Value = Dag> {
    prop_oneof![
        3 => ordered_dag(),
        1 => dag_and_perm().prop_map(|(d, perm)| {
            let (entry, nodes) = scramble(&d, &perm);
            Dag::from_unordered(entry, nodes).expect("a scrambled valid DAG is valid")
        }),
        1 => re_text().prop_map(|t| Dag::parse(&t).expect("generated RE text parses")),
    ]
}

// ---------------------------------------------------------------------------
// An independent oracle for the DAG rules
// ---------------------------------------------------------------------------

/// The sink's index if `entry` and `nodes` (edge lists of at most four)
/// form a valid DAG address with the sink anywhere, else `None`.
fn oracle(entry: &[u8], nodes: &[Vec<u8>]) -> Option<usize> {
    let n = nodes.len();
    if n == 0 || n > MAX_NODES || entry.is_empty() {
        return None;
    }
    for (from, list) in std::iter::once((None, entry))
        .chain(nodes.iter().enumerate().map(|(i, l)| (Some(i), &l[..])))
    {
        if list.len() > MAX_EDGES {
            return None;
        }
        for (k, &t) in list.iter().enumerate() {
            if t as usize >= n || from == Some(t as usize) || list[..k].contains(&t) {
                return None;
            }
        }
    }
    let sinks: Vec<usize> = (0..n).filter(|&i| nodes[i].is_empty()).collect();
    if sinks.len() != 1 {
        return None;
    }
    // Kahn's algorithm: acyclic iff every node can be removed.
    let mut indegree = vec![0usize; n];
    for list in nodes {
        for &t in list {
            indegree[t as usize] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut removed = 0;
    while let Some(i) = ready.pop() {
        removed += 1;
        for &t in &nodes[i] {
            indegree[t as usize] -= 1;
            if indegree[t as usize] == 0 {
                ready.push(t as usize);
            }
        }
    }
    if removed != n {
        return None;
    }
    let mut seen = vec![false; n];
    let mut todo: Vec<usize> = entry.iter().map(|&t| t as usize).collect();
    while let Some(i) = todo.pop() {
        if !seen[i] {
            seen[i] = true;
            todo.extend(nodes[i].iter().map(|&t| t as usize));
        }
    }
    seen.iter().all(|&s| s).then_some(sinks[0])
}

fn parts_of(d: &Dag) -> (Vec<u8>, Vec<Vec<u8>>) {
    (
        d.entry_edges().as_slice().to_vec(),
        d.nodes()
            .iter()
            .map(|n| n.edges.as_slice().to_vec())
            .collect(),
    )
}

/// Everything a `Dag` promises, checked with the oracle.
fn assert_valid(d: &Dag) -> Result<(), TestCaseError> {
    let (entry, nodes) = parts_of(d);
    prop_assert_eq!(
        oracle(&entry, &nodes),
        Some(d.len() - 1),
        "invalid: {:?}",
        d
    );
    prop_assert!(d.nodes()[d.len() - 1].edges.is_empty());
    Ok(())
}

/// Raw graphs, mostly invalid: small random ones, and valid DAGs with one
/// edit (an edge added, removed or retargeted).
fn raw_graph() -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
    let random = (1usize..=6).prop_flat_map(|n| {
        let target = 0u8..(n as u8 + 1);
        (
            vec(target.clone(), 0..=MAX_EDGES),
            vec(vec(target, 0..=3), n),
        )
    });
    let edited = (
        ordered_dag(),
        any::<Index>(),
        any::<Index>(),
        0u8..3,
        any::<u8>(),
    )
        .prop_map(|(d, list_ix, edge_ix, op, target)| {
            let (mut entry, mut nodes) = parts_of(&d);
            let n = nodes.len();
            let li = list_ix.index(n + 1);
            let list = if li == n { &mut entry } else { &mut nodes[li] };
            let target = target % (n as u8 + 1);
            match op {
                0 if list.len() < MAX_EDGES => list.push(target),
                1 if !list.is_empty() => {
                    list.remove(edge_ix.index(list.len()));
                }
                _ if !list.is_empty() => {
                    let k = edge_ix.index(list.len());
                    list[k] = target;
                }
                _ => list.push(target),
            }
            (entry, nodes)
        });
    prop_oneof![random, edited]
}

fn dag_text_of(xids: &[Xid], entry: &[u8], nodes: &[Vec<u8>]) -> String {
    let mut s = String::from("DAG");
    for t in entry {
        s += &format!(" {t}");
    }
    for (x, list) in xids.iter().zip(nodes) {
        s += &format!(" - {x}");
        for t in list {
            s += &format!(" {t}");
        }
    }
    s
}

// ---------------------------------------------------------------------------
// Strategies: packets
// ---------------------------------------------------------------------------

/// Visited marks on existing edges of `d` only, chosen by `bits`.
fn marks_for(d: &Dag, bits: u128) -> EdgeMarks {
    let mut m = EdgeMarks::NONE;
    let n = d.len();
    for i in 0..n {
        let edges = if i == n - 1 {
            d.entry_edges()
        } else {
            &d.nodes()[i].edges
        };
        for slot in 0..edges.len() {
            if bits >> (i * MAX_EDGES + slot) & 1 == 1 {
                m.mark(i, slot);
            }
        }
    }
    m
}

fn mark_bits() -> impl Strategy<Value = u128> {
    prop_oneof![Just(0u128), any::<u128>()]
}

fn xip_repr() -> impl Strategy<Value = XipRepr> {
    (
        any_dag(),
        any_dag(),
        any::<u8>(),
        any::<u8>(),
        prop::option::of(any::<Index>()),
        mark_bits(),
        mark_bits(),
    )
        .prop_map(|(dst, src, nxt, hop_limit, last, dbits, sbits)| {
            let mut r = XipRepr::new(dst, src, NextHeader::from(nxt), 0);
            r.hop_limit = hop_limit;
            r.last = match last {
                None => LastNode::Entry,
                Some(ix) => LastNode::Node(ix.index(r.dst.len()) as u8),
            };
            r.dst_visited = marks_for(&r.dst, dbits);
            r.src_visited = marks_for(&r.src, sbits);
            r
        })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..300)
}

/// A valid XIP packet: its repr (with `payload_len` set) and bytes.
fn xip_packet() -> impl Strategy<Value = (XipRepr, Vec<u8>)> {
    (xip_repr(), payload()).prop_map(|(mut r, p)| {
        let bytes = r.to_bytes(&p).expect("payload fits");
        r.payload_len = p.len();
        (r, bytes)
    })
}

/// Byte values that matter to the parsers.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        0u8..=22,
        Just(xip::LAST_ENTRY),
        Just(EDGE_UNUSED),
        Just(EDGE_UNUSED | EDGE_VISITED),
        (0u8..=22).prop_map(|b| b | EDGE_VISITED),
        Just(xip::VERSION),
        any::<u8>(),
    ]
}

/// A DAG node array: a valid DAG's (perhaps marked), or 0 to 21 random
/// nodes whose edge bytes are mostly ones the parser cares about.
fn node_array() -> impl Strategy<Value = Vec<u8>> {
    let random_node = (xid(), proptest::array::uniform4(interesting_byte())).prop_map(|(x, e)| {
        let mut v = x.to_wire().to_vec();
        v.extend_from_slice(&e);
        v
    });
    prop_oneof![
        2 => (any_dag(), mark_bits()).prop_map(|(d, bits)| {
            let mut v = vec![0u8; d.wire_len()];
            d.emit_wire_marked(&mut v, marks_for(&d, bits));
            v
        }),
        1 => vec(random_node, 0..=MAX_NODES + 1).prop_map(|nodes| nodes.concat()),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte with a non-zero value.
    Flip(Index, u8),
    /// Set a byte to an interesting value.
    Set(Index, u8),
    /// Set one of the first eight bytes (XIP's fixed header, XCMP's fixed
    /// part) to an interesting value.
    Header(usize, u8),
    /// Cut the buffer.
    Truncate(Index),
    /// Append bytes.
    Extend(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        3 => (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Set(i, b)),
        3 => (0usize..8, interesting_byte()).prop_map(|(i, b)| Mutation::Header(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..40).prop_map(Mutation::Extend),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        match m {
            Mutation::Flip(i, x) if !bytes.is_empty() => {
                let k = i.index(bytes.len());
                bytes[k] ^= x;
            }
            Mutation::Set(i, b) if !bytes.is_empty() => {
                let k = i.index(bytes.len());
                bytes[k] = *b;
            }
            Mutation::Header(i, b) if *i < bytes.len() => bytes[*i] = *b,
            Mutation::Truncate(i) => {
                let k = i.index(bytes.len() + 1);
                bytes.truncate(k);
            }
            Mutation::Extend(more) => bytes.extend_from_slice(more),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Strategies: text
// ---------------------------------------------------------------------------

fn xid_token() -> impl Strategy<Value = String> {
    let hex40 = "[0-9a-fA-F]{40}";
    prop_oneof![
        // Valid.
        4 => xid().prop_map(|x| x.to_string()),
        1 => xid().prop_map(|x| x.to_string().to_uppercase()),
        1 => any::<[u8; 4]>().prop_map(|o| format!("IP:{}", Ipv4Addr::from(o))),
        1 => hex40.prop_map(|h| format!("hid:{h}")),
        1 => (1u32.., hex40).prop_map(|(t, h)| format!("0x{t:x}:{h}")),
        // Invalid or borderline.
        1 => "(AD|HID|SID|IP|0x0|0xff|0xFF|0x|0x123456789|FOO|)(:?)[0-9a-fA-Fg.:é]{0,44}",
        1 => hex40.prop_map(|h| format!("0x0:{h}")),
        1 => hex40.prop_map(|h| format!("0xff:{h}")),
        1 => "IP:[0-9]{1,4}(\\.[0-9]{1,4}){0,4}",
        1 => (hex40, any::<char>()).prop_map(|(h, c)| format!("AD:{h}{c}")),
        1 => (hex40, any::<Index>(), any::<char>()).prop_map(|(h, i, c)| {
            let mut s: Vec<char> = format!("SID:{h}").chars().collect();
            let k = i.index(s.len());
            s[k] = c;
            s.into_iter().collect()
        }),
    ]
}

fn text_token() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec!["DAG", "RE", "(", ")", "-", "re", "dag", "0-", "(("])
            .prop_map(str::to_string),
        3 => (0u32..25).prop_map(|d| d.to_string()),
        1 => prop::sample::select(vec!["999", "1000", "0000", "-1", "1a", "٣"])
            .prop_map(str::to_string),
        3 => xid_token(),
    ]
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        " ", " ", " ", "", "\n", "\t", " \n", "\u{a0}", "\u{3000}",
    ])
}

/// Text made of DAG-ish tokens, usually starting with a keyword: any
/// tokens, or mostly XIDs and parentheses after `RE`, or mostly small edge
/// numbers, `-` and XIDs after `DAG` (so that some of it parses).
fn token_text() -> impl Strategy<Value = String> {
    let valid_xid = || xid().prop_map(|x| x.to_string());
    let small = || (0u32..4).prop_map(|d| d.to_string());
    let sym = |s: &'static str| Just(s.to_string());
    let any_tokens = (
        prop_oneof![
            3 => Just("DAG".to_string()),
            3 => Just("RE".to_string()),
            1 => text_token(),
        ],
        vec((separator(), text_token()), 0..30),
    );
    let re_tokens = (
        Just("RE".to_string()),
        vec(
            (
                separator(),
                prop_oneof![6 => valid_xid(), 1 => sym("("), 1 => sym(")"), 1 => text_token()],
            ),
            0..25,
        ),
    );
    let dag_tokens = (
        Just("DAG".to_string()),
        vec(
            (
                separator(),
                prop_oneof![4 => small(), 3 => sym("-"), 3 => valid_xid(), 1 => text_token()],
            ),
            0..30,
        ),
    );
    (prop_oneof![any_tokens, re_tokens, dag_tokens], separator()).prop_map(
        |((first, rest), end)| {
            let mut s = first;
            for (sep, tok) in rest {
                s.push_str(sep);
                s.push_str(&tok);
            }
            s.push_str(end);
            s
        },
    )
}

/// The text of a valid DAG (either form) with token-level edits.
fn mutated_dag_text() -> impl Strategy<Value = String> {
    (
        any_dag(),
        any::<bool>(),
        vec((0u8..4, any::<Index>(), text_token()), 1..4),
    )
        .prop_map(|(d, re, edits)| {
            let text = if re {
                d.to_re_string().unwrap_or_else(|| d.to_string())
            } else {
                d.to_string()
            };
            let mut toks: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            for (op, ix, tok) in edits {
                let k = ix.index(toks.len() + 1);
                match op {
                    0 => toks.insert(k, tok),
                    1 if k < toks.len() => {
                        toks.remove(k);
                    }
                    2 if k < toks.len() => toks[k] = tok,
                    _ if k < toks.len() => {
                        let t = toks[k].clone();
                        toks.insert(k, t);
                    }
                    _ => toks.push(tok),
                }
            }
            toks.join(" ")
        })
}

// ---------------------------------------------------------------------------
// Shared checks
// ---------------------------------------------------------------------------

/// Whatever `Dag::parse` accepts is a valid DAG that prints back to itself.
fn check_dag_text(text: &str) -> Result<(), TestCaseError> {
    if let Ok(d) = Dag::parse(text) {
        assert_valid(&d)?;
        prop_assert_eq!(Dag::parse(&d.to_string()), Ok(d.clone()), "from {:?}", text);
        if let Some(re) = d.to_re_string() {
            prop_assert_eq!(Dag::parse(&re), Ok(d));
        }
    }
    Ok(())
}

fn check_xid_text(text: &str) -> Result<(), TestCaseError> {
    if let Ok(x) = text.parse::<Xid>() {
        prop_assert_eq!(x.to_string().parse::<Xid>(), Ok(x), "from {:?}", text);
    }
    Ok(())
}

/// Every accessor of an XIP view, once its length checks pass.
fn poke_xip(bytes: &[u8]) {
    let p = XipPacket::new_unchecked(bytes);
    let _ = p.to_string();
    if p.check_header_len().is_ok() {
        let _ = (p.version(), p.next_header(), p.payload_len(), p.hop_limit());
        let _ = (p.dst_count(), p.src_count(), p.last_raw(), p.header_len());
        let _ = (p.total_len(), p.dst_wire(), p.src_wire());
        for i in 0..25 {
            let _ = (p.dst_node(i), p.src_node(i));
            if let Some(n) = p.dst_node(i) {
                for slot in 0..6 {
                    let _ = (n.edge_target(slot), n.edge_visited(slot));
                }
            }
        }
    }
    if p.check_len().is_ok() {
        let _ = p.payload();
        let mut copy = bytes.to_vec();
        let mut m = XipPacket::new_unchecked(&mut copy[..]);
        for node in 0..22 {
            for slot in 0..5 {
                m.mark_dst_edge(node, slot);
            }
        }
        let _ = (m.dst_wire_mut().len(), m.src_wire_mut().len());
        let _ = m.payload_mut().len();
    }
}

/// Every accessor of an XCMP view, once its length check passes.
fn poke_xcmp(bytes: &[u8]) {
    let p = XcmpPacket::new_unchecked(bytes);
    if p.check_len().is_ok() {
        let _ = (
            p.msg_type(),
            p.msg_code(),
            p.checksum(),
            p.verify_checksum(),
        );
        let _ = (p.echo_ident(), p.echo_seq_no(), p.redirect_count());
        let _ = (p.redirect_wire(), p.data());
        let mut copy = bytes.to_vec();
        let mut m = XcmpPacket::new_unchecked(&mut copy[..]);
        let _ = m.data_mut().len();
        m.fill_checksum();
    }
}

/// Parses `bytes` as XIP; if accepted, re-emitting gives the same bytes and
/// the same repr.
fn check_xip_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    poke_xip(bytes);
    let p = XipPacket::new_unchecked(bytes);
    let header = XipRepr::parse_header(&p);
    if let Ok(r) = XipRepr::parse(&p) {
        prop_assert_eq!(header, Ok(r.clone()));
        assert_valid(&r.dst)?;
        assert_valid(&r.src)?;
        let _ = r.to_string();
        let again = r.to_bytes(p.payload()).expect("parsed payload fits");
        prop_assert_eq!(XipRepr::parse(&XipPacket::new_unchecked(&again[..])), Ok(r));
        prop_assert_eq!(&again[..], bytes, "re-emitted bytes differ");
    } else if let Ok(r) = header {
        assert_valid(&r.dst)?;
        assert_valid(&r.src)?;
    }
    Ok(())
}

/// Parses `bytes` as XCMP; if accepted, re-emitting parses to the same repr
/// (unused words are not checked on input, so bytes may differ there).
fn check_xcmp_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    poke_xcmp(bytes);
    if let Ok(r) = XcmpRepr::parse(&XcmpPacket::new_unchecked(bytes)) {
        let _ = r.to_string();
        let again = r.to_bytes();
        prop_assert_eq!(again.len(), bytes.len());
        prop_assert_eq!(
            XcmpRepr::parse(&XcmpPacket::new_unchecked(&again[..])),
            Ok(r)
        );
    }
    Ok(())
}

/// Parses `bytes` as a DAG node array; if accepted, emitting with the same
/// marks gives the same bytes.
fn check_wire_dag(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok((d, marks)) = Dag::parse_wire(bytes) {
        assert_valid(&d)?;
        let mut again = vec![0u8; d.wire_len()];
        d.emit_wire_marked(&mut again, marks);
        prop_assert_eq!(&again[..], bytes);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Properties: generators and the DAG rules
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// The generator's parts are valid by the oracle, and `Dag::new` agrees.
    #[test]
    fn generated_parts_are_valid((entry, nodes) in ordered_parts()) {
        let lists: Vec<Vec<u8>> = nodes.iter().map(|n| n.edges.as_slice().to_vec()).collect();
        prop_assert_eq!(oracle(entry.as_slice(), &lists), Some(nodes.len() - 1));
        let d = Dag::new(entry, nodes.clone());
        prop_assert!(d.is_ok(), "{:?}", d);
        let d = d.unwrap();
        prop_assert_eq!(d.entry_edges(), &entry);
        prop_assert_eq!(d.nodes(), &nodes[..]);
    }

    /// `from_unordered` accepts any node order of a valid DAG and stores it
    /// with the sink moved last and the other nodes in their given order.
    #[test]
    fn from_unordered_moves_sink_last((d, perm) in dag_and_perm()) {
        let n = d.len();
        let (entry, nodes) = scramble(&d, &perm);
        let got = Dag::from_unordered(entry, nodes.clone());
        prop_assert!(got.is_ok(), "{:?}", got);
        let got = got.unwrap();
        assert_valid(&got)?;
        // Expected: perm's order, old node n-1 (the sink) moved last.
        let order: Vec<usize> = perm.iter().copied().filter(|&o| o != n - 1)
            .chain(std::iter::once(n - 1)).collect();
        let mut pos_of_old = vec![0; n];
        for (pos, &old) in order.iter().enumerate() {
            pos_of_old[old] = pos;
        }
        let want_nodes = order.iter().map(|&old| {
            let nd = &d.nodes()[old];
            Node::new(nd.xid, remap(&nd.edges, |t| pos_of_old[t]))
        }).collect();
        let want = Dag::new(remap(d.entry_edges(), |t| pos_of_old[t]), want_nodes);
        prop_assert_eq!(Ok(got.clone()), want);
        // Dag::new takes the scrambled order only if the sink stayed last.
        let sink_last = perm[n - 1] == n - 1;
        prop_assert_eq!(Dag::new(entry, nodes).is_ok(), sink_last);
        // And the DAG text of the scrambled order reads to the same DAG.
        let xids: Vec<Xid> = perm.iter().map(|&o| d.nodes()[o].xid).collect();
        let (e, lists) = {
            let (e, ns) = scramble(&d, &perm);
            (e.as_slice().to_vec(), ns.iter().map(|n| n.edges.as_slice().to_vec()).collect::<Vec<_>>())
        };
        prop_assert_eq!(Dag::parse(&dag_text_of(&xids, &e, &lists)), Ok(got));
    }

    /// `Dag::new`, `Dag::from_unordered`, the DAG text parser and the wire
    /// parser all accept exactly what the oracle accepts.
    #[test]
    fn dag_rules_match_oracle((entry, lists) in raw_graph(), seed in any::<u8>()) {
        let n = lists.len();
        let want = oracle(&entry, &lists);
        let e = Edges::from_slice(&entry).expect("at most 4");
        let xids: Vec<Xid> = (0..n)
            .map(|i| Xid::new(Principal::AD, [seed.wrapping_add(i as u8); 20]))
            .collect();
        let nodes: Vec<Node> = xids.iter().zip(&lists)
            .map(|(&x, l)| Node::new(x, Edges::from_slice(l).expect("at most 4")))
            .collect();
        let unordered = Dag::from_unordered(e, nodes.clone());
        prop_assert_eq!(unordered.is_ok(), want.is_some(), "{:?}", unordered);
        prop_assert_eq!(Dag::new(e, nodes).is_ok(), want == Some(n - 1));
        let text = dag_text_of(&xids, &entry, &lists);
        let parsed = Dag::parse(&text);
        prop_assert_eq!(parsed.is_ok(), want.is_some(), "{:?} -> {:?}", text, parsed);
        if let (Ok(p), Ok(u)) = (parsed, unordered) {
            prop_assert_eq!(p, u);
        }
        // On the wire the last node's slots hold the entry's edges, so the
        // last node's own edges cannot be written.
        let mut wire_lists = lists.clone();
        wire_lists[n - 1].clear();
        let want_wire = oracle(&entry, &wire_lists) == Some(n - 1);
        let mut wire = Vec::new();
        for (i, x) in xids.iter().enumerate() {
            wire.extend_from_slice(&x.to_wire());
            let l = if i == n - 1 { &entry } else { &lists[i] };
            for slot in 0..MAX_EDGES {
                wire.push(l.get(slot).copied().unwrap_or(EDGE_UNUSED));
            }
        }
        let w = Dag::parse_wire(&wire);
        prop_assert_eq!(w.is_ok(), want_wire, "{:?}", w);
    }
}

// ---------------------------------------------------------------------------
// Properties: round trips
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// (a) DAG text round trip.
    #[test]
    fn dag_text_round_trip(d in any_dag()) {
        assert_valid(&d)?;
        let text = d.to_string();
        prop_assert_eq!(Dag::parse(&text), Ok(d.clone()));
        prop_assert_eq!(text.parse::<Dag>(), Ok(d.clone()));
        // One line, as XipRepr's Display prints it, reads the same.
        prop_assert_eq!(Dag::parse(&text.replace(" \n", " ")), Ok(d.clone()));
        // Every XID's text reads back.
        for n in d.nodes() {
            prop_assert_eq!(n.xid.to_string().parse::<Xid>(), Ok(n.xid));
            prop_assert_eq!(n.xid.principal().to_string().parse::<Principal>(), Ok(n.xid.principal()));
        }
    }

    /// (b) RE text round trip, whenever there is an RE form.
    #[test]
    fn dag_re_round_trip(d in any_dag()) {
        if let Some(s) = d.to_re_string() {
            prop_assert!(s.starts_with("RE"));
            prop_assert_eq!(Dag::parse(&s), Ok(d));
        }
    }

    /// (b') RE text built as RE reads, and prints back to the same text.
    #[test]
    fn re_text_round_trip(text in re_text()) {
        let d = Dag::parse(&text);
        prop_assert!(d.is_ok(), "{:?}", d);
        let d = d.unwrap();
        assert_valid(&d)?;
        prop_assert_eq!(d.to_re_string(), Some(text));
        prop_assert_eq!(Dag::parse(&d.to_string()), Ok(d));
    }

    /// (c) Wire round trip, with and without visited marks.
    #[test]
    fn dag_wire_round_trip(d in any_dag(), bits in any::<u128>()) {
        let wire = d.to_wire();
        prop_assert_eq!(wire.len(), d.len() * NODE_LEN);
        prop_assert_eq!(wire.len(), d.wire_len());
        prop_assert_eq!(Dag::parse_wire(&wire), Ok((d.clone(), EdgeMarks::NONE)));
        let marks = marks_for(&d, bits);
        let mut marked = vec![0u8; d.wire_len()];
        d.emit_wire_marked(&mut marked, marks);
        prop_assert_eq!(Dag::parse_wire(&marked), Ok((d.clone(), marks)));
        // Marks on slots without an edge are not written.
        let mut all = EdgeMarks::NONE;
        for node in 0..MAX_NODES {
            for slot in 0..MAX_EDGES {
                all.mark(node, slot);
            }
        }
        let mut full = vec![0u8; d.wire_len()];
        d.emit_wire_marked(&mut full, all);
        prop_assert_eq!(Dag::parse_wire(&full), Ok((d.clone(), marks_for(&d, u128::MAX))));
    }

    /// (d) XIP round trip: a fresh header, then random hop limit, `last`,
    /// next header and visited marks.
    #[test]
    fn xip_round_trip(
        r in xip_repr(),
        p in payload(),
    ) {
        // A fresh header as XipRepr::new makes it.
        let fresh = XipRepr::new(r.dst.clone(), r.src.clone(), NextHeader::Xdgram, p.len());
        let bytes = fresh.to_bytes(&p).expect("payload fits");
        let packet = XipPacket::new_unchecked(&bytes[..]);
        prop_assert_eq!(XipRepr::parse(&packet), Ok(fresh.clone()));
        prop_assert_eq!(packet.payload(), &p[..]);
        prop_assert_eq!(packet.dst_wire(), &r.dst.to_wire()[..]);
        prop_assert_eq!(packet.src_wire(), &r.src.to_wire()[..]);
        prop_assert_eq!(bytes.len(), fresh.header_len() + p.len());

        // Random fields.
        let mut want = r.clone();
        want.payload_len = p.len();
        let bytes = r.to_bytes(&p).expect("payload fits");
        let packet = XipPacket::new_checked(&bytes[..]);
        prop_assert!(packet.is_ok());
        let packet = packet.unwrap();
        prop_assert_eq!(XipRepr::parse(&packet), Ok(want.clone()));
        prop_assert_eq!(XipRepr::parse_header(&packet), Ok(want.clone()));
        prop_assert_eq!(packet.payload(), &p[..]);
        prop_assert_eq!(packet.hop_limit(), r.hop_limit);
        prop_assert_eq!(packet.last_raw(), r.last.to_byte());
        prop_assert_eq!(packet.dst_count() as usize, r.dst.len());
        prop_assert_eq!(packet.src_count() as usize, r.src.len());
        for i in 0..r.dst.len() {
            prop_assert_eq!(packet.dst_node(i).map(|n| n.xid), Some(r.dst.nodes()[i].xid));
        }
        prop_assert_eq!(packet.dst_node(r.dst.len()), None);
        prop_assert_eq!(packet.src_node(r.src.len()), None);

        // emit into a buffer of buffer_len + payload gives the same bytes.
        let mut buf = vec![0u8; want.buffer_len() + p.len()];
        let mut view = XipPacket::new_unchecked(&mut buf[..]);
        prop_assert_eq!(want.emit(&mut view), Ok(()));
        view.payload_mut().copy_from_slice(&p);
        prop_assert_eq!(&buf, &bytes);

        // The quote an XCMP error carries parses as a header.
        let q = xcmp::quote(&bytes);
        prop_assert_eq!(q.len(), want.header_len() + p.len().min(xcmp::QUOTED_PAYLOAD_LEN));
        prop_assert_eq!(XipRepr::parse_header(&XipPacket::new_unchecked(q)), Ok(want));
    }

    /// (e) XCMP echo request and reply round trip.
    #[test]
    fn xcmp_echo_round_trip(
        reply in any::<bool>(),
        ident in any::<u16>(),
        seq_no in any::<u16>(),
        data in vec(any::<u8>(), 0..200),
    ) {
        let r = if reply {
            XcmpRepr::EchoReply { ident, seq_no, data: &data }
        } else {
            XcmpRepr::EchoRequest { ident, seq_no, data: &data }
        };
        let bytes = r.to_bytes();
        prop_assert_eq!(bytes.len(), r.buffer_len());
        let p = XcmpPacket::new_checked(&bytes[..]);
        prop_assert!(p.is_ok());
        let p = p.unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(p.echo_ident(), ident);
        prop_assert_eq!(p.echo_seq_no(), seq_no);
        prop_assert_eq!(p.data(), &data[..]);
        prop_assert_eq!(XcmpRepr::parse(&p), Ok(r.clone()));
        prop_assert!(!r.is_error());
    }

    /// (e) XCMP unreachable, time exceeded and redirect round trip.
    #[test]
    fn xcmp_error_round_trip(
        (_, offending) in xip_packet(),
        kind in 0u8..3,
        code in any::<u8>(),
        new_dst in any_dag(),
    ) {
        let quoted = xcmp::quote(&offending);
        let r = match kind {
            0 => XcmpRepr::Unreachable { reason: Unreachable::from(code), quoted },
            1 => XcmpRepr::TimeExceeded { code, quoted },
            _ => XcmpRepr::Redirect { code, new_dst, quoted },
        };
        let bytes = r.to_bytes();
        prop_assert_eq!(bytes.len(), r.buffer_len());
        let p = XcmpPacket::new_checked(&bytes[..]);
        prop_assert!(p.is_ok());
        let p = p.unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(p.data(), quoted);
        prop_assert_eq!(u8::from(p.msg_type()), [3, 11, 5][kind as usize]);
        prop_assert_eq!(XcmpRepr::parse(&p), Ok(r.clone()));
        prop_assert!(r.is_error());
        let _ = r.to_string();
    }
}

// ---------------------------------------------------------------------------
// Properties: no panics on arbitrary input
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Random bytes into every parser and every accessor.
    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..700)) {
        check_xip_bytes(&bytes)?;
        check_wire_dag(&bytes)?;
        check_xcmp_bytes(&bytes)?;
        // With a right checksum XCMP's parser goes further.
        if bytes.len() >= xcmp::HEADER_LEN {
            let mut fixed = bytes.clone();
            XcmpPacket::new_unchecked(&mut fixed[..]).fill_checksum();
            check_xcmp_bytes(&fixed)?;
        }
        let _ = xcmp::quote(&bytes);
    }

    /// Plausible XIP packets: version 1, node counts near the real ones,
    /// node arrays that are valid DAGs or random nodes with parser-relevant
    /// edge bytes, `plen` usually matching, so parsing gets to the DAGs.
    #[test]
    fn plausible_xip_never_panics(
        nxt in any::<u8>(),
        hlim in any::<u8>(),
        dst in node_array(),
        src in node_array(),
        counts in prop::option::weighted(0.3, (0u8..=22, 0u8..=22)),
        last in interesting_byte(),
        tail in vec(any::<u8>(), 0..40),
        plen_fix in any::<bool>(),
    ) {
        let (dnode, snode) = counts.unwrap_or((
            (dst.len() / NODE_LEN) as u8,
            (src.len() / NODE_LEN) as u8,
        ));
        let mut bytes = vec![xip::VERSION, nxt, 0, 0, hlim, dnode, snode, last];
        bytes.extend_from_slice(&dst);
        bytes.extend_from_slice(&src);
        bytes.extend_from_slice(&tail);
        let header = xip::FIXED_LEN + NODE_LEN * (dnode as usize + snode as usize);
        if plen_fix && bytes.len() >= header {
            let plen = (bytes.len() - header) as u16;
            bytes[2..4].copy_from_slice(&plen.to_be_bytes());
        }
        check_xip_bytes(&bytes)?;
        check_wire_dag(&dst)?;
    }

    /// Valid XIP packets with random damage: parsing never panics, and
    /// whatever it accepts re-emits to the same bytes and repr.
    #[test]
    fn mutated_xip_never_panics(
        (_, mut bytes) in xip_packet(),
        mutations in vec(mutation(), 1..6),
    ) {
        mutate(&mut bytes, &mutations);
        check_xip_bytes(&bytes)?;
        // Also as an XCMP quote and as a node array.
        if bytes.len() > xip::FIXED_LEN {
            check_wire_dag(&bytes[xip::FIXED_LEN..])?;
        }
    }

    /// A valid DAG's node array with random damage.
    #[test]
    fn mutated_wire_dag_never_panics(
        d in any_dag(),
        mutations in vec(mutation(), 1..4),
    ) {
        let mut bytes = d.to_wire();
        mutate(&mut bytes, &mutations);
        check_wire_dag(&bytes)?;
    }

    /// Valid XCMP messages with random damage, checksum fixed afterwards.
    #[test]
    fn mutated_xcmp_never_panics(
        (_, offending) in xip_packet(),
        kind in 0u8..4,
        code in any::<u8>(),
        new_dst in any_dag(),
        mutations in vec(mutation(), 1..6),
        fix_checksum in any::<bool>(),
    ) {
        let quoted = xcmp::quote(&offending);
        let r = match kind {
            0 => XcmpRepr::Unreachable { reason: Unreachable::from(code), quoted },
            1 => XcmpRepr::TimeExceeded { code, quoted },
            2 => XcmpRepr::Redirect { code, new_dst, quoted },
            _ => XcmpRepr::EchoRequest { ident: code as u16, seq_no: 7, data: quoted },
        };
        let mut bytes = r.to_bytes();
        mutate(&mut bytes, &mutations);
        if fix_checksum && bytes.len() >= xcmp::HEADER_LEN {
            XcmpPacket::new_unchecked(&mut bytes[..]).fill_checksum();
        }
        check_xcmp_bytes(&bytes)?;
    }

    /// Arbitrary Unicode into the DAG and XID parsers.
    #[test]
    fn random_strings_never_panic(s in any::<String>()) {
        check_dag_text(&s)?;
        check_xid_text(&s)?;
        check_dag_text(&format!("DAG {s}"))?;
        check_dag_text(&format!("RE {s}"))?;
        check_xid_text(&format!("AD:{s}"))?;
        check_xid_text(&format!("IP:{s}"))?;
        let _ = s.parse::<Principal>();
    }

    /// Text made of DAG tokens into the DAG and XID parsers.
    #[test]
    fn token_strings_never_panic(s in token_text()) {
        check_dag_text(&s)?;
        check_xid_text(&s)?;
    }

    /// Valid DAG text with token-level edits.
    #[test]
    fn mutated_dag_text_never_panics(s in mutated_dag_text()) {
        check_dag_text(&s)?;
    }

    /// XID-like tokens: whatever parses prints back to itself.
    #[test]
    fn xid_strings_round_trip(s in xid_token()) {
        check_xid_text(&s)?;
        check_xid_text(&s.to_lowercase())?;
        check_xid_text(&s.to_uppercase())?;
    }
}
