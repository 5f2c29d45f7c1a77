//! Arbitrary text after `RE `: steers the fuzzer into the RE form's
//! parser (fallback lists, parentheses) instead of spending its time
//! finding the keyword.
//!
//! Properties: as in `dag_text`.

#![no_main]

mod dag_props;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rest) = std::str::from_utf8(data) {
        dag_props::check_text(&format!("RE {rest}"));
    }
});
