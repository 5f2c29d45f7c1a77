//! Arbitrary bytes as an XCMP message.
//!
//! Properties: nothing panics (the view's accessors after `new_checked`,
//! `parse`, `Display`); a message `XcmpRepr::parse` accepts re-emits to
//! bytes of the same length, with a valid checksum, that parse to the same
//! repr. (The bytes themselves may differ: parse ignores an echo's code and
//! the unused bytes of the second word, which emit writes as zeroes, and
//! drops the visited marks on a redirect's DAG.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use xia_stack::wire::xcmp::{Packet, XcmpRepr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (p.msg_type(), p.msg_code(), p.checksum());
        let _ = (p.echo_ident(), p.echo_seq_no(), p.redirect_count());
        let _ = (p.redirect_wire(), p.data(), p.verify_checksum());
    }
    let Ok(repr) = XcmpRepr::parse(&Packet::new_unchecked(data)) else {
        return;
    };
    let _ = (repr.to_string(), repr.is_error());
    let bytes = repr.to_bytes();
    assert_eq!(bytes.len(), repr.buffer_len());
    assert_eq!(
        bytes.len(),
        data.len(),
        "re-emitted message has another length"
    );
    let p = Packet::new_unchecked(&bytes[..]);
    assert!(p.verify_checksum(), "re-emitted message has a bad checksum");
    let again = XcmpRepr::parse(&p).expect("re-emitted message must parse");
    assert_eq!(again, repr, "re-emitted message parses to another repr");
});
