//! The round-trip properties both text-form targets check.

use xia_stack::wire::dag::EdgeMarks;
use xia_stack::Dag;

/// If `text` parses, the DAG reads back from its DAG form, from its RE form
/// when it has one, and from its wire form with no visited marks.
pub fn check_text(text: &str) {
    let Ok(d) = Dag::parse(text) else {
        return;
    };
    let dag_form = d.to_string();
    assert_eq!(Dag::parse(&dag_form), Ok(d.clone()), "DAG form {dag_form:?}");
    if let Some(re) = d.to_re_string() {
        assert_eq!(Dag::parse(&re), Ok(d.clone()), "RE form {re:?}");
    }
    assert_eq!(Dag::parse_wire(&d.to_wire()), Ok((d, EdgeMarks::NONE)));
}
