//! Arbitrary text as a DAG address in either of xia-core's text forms.
//!
//! Properties: `Dag::parse` never panics; a DAG it accepts reads back from
//! its DAG form (`Display`) and, when it has one, its RE form; and its wire
//! form reads back with no visited marks.

#![no_main]

mod dag_props;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        dag_props::check_text(text);
    }
});
