//! Arbitrary bytes as an XIP packet.
//!
//! Properties: nothing panics (the view's accessors after `new_checked`,
//! `parse`, `parse_header`, `Display`); for a packet `XipRepr::parse`
//! accepts, `parse_header` reads the same header, and re-emitting it with
//! its payload gives bytes that parse to the same repr. Since the wire form
//! is canonical (strict edge bytes, exact length), those bytes are the
//! input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xia_stack::wire::xip::{Packet, XipRepr};

fuzz_target!(|data: &[u8]| {
    // The zero-copy view: after check_len no accessor may panic.
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (p.version(), p.next_header(), p.hop_limit(), p.last_raw());
        for i in 0..=p.dst_count() as usize {
            let _ = p.dst_node(i);
        }
        for i in 0..=p.src_count() as usize {
            let _ = p.src_node(i);
        }
        let _ = p.payload();
        let _ = p.to_string();
    }
    let packet = Packet::new_unchecked(data);
    // Header-only parsing (what XCMP does with a quoted header).
    let header = XipRepr::parse_header(&packet);
    let Ok(repr) = XipRepr::parse(&packet) else {
        return;
    };
    assert_eq!(
        header.as_ref(),
        Ok(&repr),
        "parse and parse_header disagree"
    );
    let _ = repr.to_string();
    let payload = packet.payload();
    let bytes = repr
        .to_bytes(payload)
        .expect("a parsed repr's payload fits plen");
    let again =
        XipRepr::parse(&Packet::new_unchecked(&bytes[..])).expect("re-emitted packet must parse");
    assert_eq!(again, repr, "re-emitted packet parses to another repr");
    assert_eq!(bytes, data, "accepted packet is not byte-canonical");
});
