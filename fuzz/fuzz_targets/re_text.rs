//! Arbitrary text after `RE `: steers the fuzzer into the RE form's
//! parser (fallback lists, parentheses) instead of spending its time
//! finding the keyword.
//!
//! Properties: as in `dag_text`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xia_stack::wire::dag::EdgeMarks;
use xia_stack::Dag;

fuzz_target!(|data: &[u8]| {
    let Ok(rest) = std::str::from_utf8(data) else {
        return;
    };
    let text = format!("RE {rest}");
    let Ok(d) = Dag::parse(&text) else {
        return;
    };
    let dag_form = d.to_string();
    assert_eq!(
        Dag::parse(&dag_form),
        Ok(d.clone()),
        "DAG form {dag_form:?}"
    );
    if let Some(re) = d.to_re_string() {
        assert_eq!(Dag::parse(&re), Ok(d.clone()), "RE form {re:?}");
    }
    assert_eq!(Dag::parse_wire(&d.to_wire()), Ok((d, EdgeMarks::NONE)));
});
