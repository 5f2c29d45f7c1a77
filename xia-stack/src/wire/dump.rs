//! A tcpdump-like, human-readable dump of an XIP packet: the header fields,
//! both DAGs node by node with their edges and visited marks, the transport
//! or XCMP header when there is one, and the payload in hex.
//!
//! Used by `xia xip decode` and by anything that traces packets.

use std::fmt::Write;

use super::dag::EdgeMarks;
use super::xcmp::{Packet as XcmpPacket, XcmpRepr};
use super::xip::{LastNode, NextHeader, Packet, XipError, XipRepr};
use crate::dag::Dag;

/// Dumps a whole XIP packet; the error says why the bytes are not one.
pub fn dump_packet(bytes: &[u8]) -> Result<String, XipError> {
    let packet = Packet::new_unchecked(bytes);
    let repr = XipRepr::parse(&packet)?;
    let mut out = String::new();
    let last = match repr.last {
        LastNode::Entry => "entry (0x7e)".to_string(),
        LastNode::Node(i) => format!("node {i}"),
    };
    let _ = writeln!(
        out,
        "XIP v1, next header {} ({}), hop limit {}, last {}, header {} + payload {} = {} bytes",
        repr.next_header,
        u8::from(repr.next_header),
        repr.hop_limit,
        last,
        repr.header_len(),
        repr.payload_len,
        bytes.len()
    );
    let cursor = match repr.last {
        LastNode::Entry => None,
        LastNode::Node(i) => Some(i as usize),
    };
    dump_dag(&mut out, "dst", &repr.dst, repr.dst_visited, Some(cursor));
    dump_dag(&mut out, "src", &repr.src, repr.src_visited, None);
    let payload = packet.payload();
    if repr.next_header == NextHeader::Xcmp {
        let line = match XcmpRepr::parse(&XcmpPacket::new_unchecked(payload)) {
            Ok(x) => x.to_string(),
            Err(e) => format!("XCMP (malformed: {e})"),
        };
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "  payload ({} bytes):", payload.len());
    hexdump(&mut out, payload, repr.header_len());
    Ok(out)
}

/// One DAG, node by node. `cursor` is `Some(last)` for the destination DAG
/// (marking where the packet is), `None` for the source.
fn dump_dag(
    out: &mut String,
    name: &str,
    dag: &Dag,
    marks: EdgeMarks,
    cursor: Option<Option<usize>>,
) {
    let form = dag
        .to_re_string()
        .unwrap_or_else(|| dag.to_string().replace(" \n", " "));
    let _ = writeln!(out, "  {name} ({} nodes): {form}", dag.len());
    let n = dag.len();
    // On the wire the entry's edges sit in the intent's slots: wire node n-1.
    let edges = |wire_node: usize, list: &[u8]| -> String {
        list.iter()
            .enumerate()
            .map(|(slot, t)| {
                let v = if marks.is_visited(wire_node, slot) {
                    "*"
                } else {
                    ""
                };
                format!("{t}{v}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let here = |i: Option<usize>| {
        if cursor == Some(i) {
            "   <- last"
        } else {
            ""
        }
    };
    let _ = writeln!(
        out,
        "    entry  -> {}{}",
        edges(n - 1, dag.entry_edges().as_slice()),
        here(None)
    );
    for (i, node) in dag.nodes().iter().enumerate() {
        let tail = if i == n - 1 {
            "(intent)".to_string()
        } else {
            format!("-> {}", edges(i, node.edges.as_slice()))
        };
        let ip = node
            .xid
            .ipv4()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default();
        let _ = writeln!(out, "    [{i}] {}{ip} {tail}{}", node.xid, here(Some(i)));
    }
}

fn hexdump(out: &mut String, bytes: &[u8], base: usize) {
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "    {:04x}  {:<47}  {}",
            base + row * 16,
            hex.join(" "),
            text
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_shows_nodes_edges_and_payload() {
        let dst = Dag::parse("RE ( IP:10.0.0.1 ) AD:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a SID:0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c").unwrap();
        let src = Dag::parse("RE HID:0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d").unwrap();
        let mut repr = XipRepr::new(dst, src, NextHeader::Data, 0);
        repr.last = LastNode::Node(1);
        repr.dst_visited.mark(2, 1);
        repr.dst_visited.mark(0, 0);
        let bytes = repr.to_bytes(b"hello").unwrap();
        let text = dump_packet(&bytes).unwrap();
        assert!(text.starts_with("XIP v1, next header DATA (0), hop limit 250, last node 1, header 120 + payload 5 = 125 bytes\n"), "{text}");
        assert!(text.contains("    entry  -> 1 0*\n"), "{text}");
        assert!(
            text.contains("    [0] IP:4500000000010000fafa0000000000000a000001 (10.0.0.1) -> 1*\n"),
            "{text}"
        );
        assert!(text.contains("-> 2   <- last\n"), "{text}");
        assert!(
            text.contains("    [2] SID:0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c (intent)\n"),
            "{text}"
        );
        assert!(text.contains("    0078  68 65 6c 6c 6f"), "{text}");
        assert!(text.ends_with("hello\n"), "{text}");
    }

    #[test]
    fn dump_refuses_garbage() {
        assert!(dump_packet(&[1, 2, 3]).is_err());
    }
}
