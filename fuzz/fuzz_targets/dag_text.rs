//! Arbitrary text as a DAG address in either of xia-core's text forms.
//!
//! Properties: `Dag::parse` never panics; a DAG it accepts reads back from
//! its DAG form (`Display`) and, when it has one, its RE form; and its wire
//! form reads back with no visited marks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xia_stack::wire::dag::EdgeMarks;
use xia_stack::Dag;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = Dag::parse(text) else {
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
