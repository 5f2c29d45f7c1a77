//! XStream in the simulator under random impairments (loss, reordering,
//! duplication, jitter): every byte written arrives once and in order and
//! the connection closes cleanly, or the transfer ends with an error —
//! never a silent loss.

use proptest::prelude::*;
use testbed::{run, SimConfig, Topology};

fn topo(loss: f64, reorder: f64, duplicate: f64, jitter_ms: u32, bytes: u64) -> Topology {
    let text = format!(
        r#"
[[ad]]
name = "A"
[[ad]]
name = "B"
[[router]]
name = "rA"
ad = "A"
[[router]]
name = "rB"
ad = "B"
[[host]]
name = "h1"
ad = "A"
[[host]]
name = "h2"
ad = "B"
[[link]]
a = "h1"
b = "rA"
[[link]]
a = "rA"
b = "rB"
bandwidth = "20Mbps"
delay = "5ms"
loss = {loss}
reorder = {reorder}
duplicate = {duplicate}
jitter = "{jitter_ms}ms"
[[link]]
a = "rB"
b = "h2"
[[stream]]
from = "h1"
to = "h2"
at = "1s"
bytes = {bytes}
"#
    );
    Topology::parse("props.toml", &text).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_byte_arrives_once_in_order_or_an_error_is_reported(
        loss in 0.0f64..0.3,
        reorder in 0.0f64..0.2,
        duplicate in 0.0f64..0.2,
        jitter in 0u32..5,
        seed in any::<u64>(),
    ) {
        let r = run(topo(loss, reorder, duplicate, jitter, 60_000), &SimConfig { seed, ..SimConfig::default() }).unwrap();
        let s = &r.streams[0];
        prop_assert_eq!(s.corrupt, 0, "{:?}", s);
        prop_assert!(s.received <= 60_000);
        if s.error.is_none() {
            prop_assert_eq!(s.received, 60_000, "no error, so no loss: {:?}", s);
            prop_assert!(s.duration.is_some(), "the server saw the end of the stream: {:?}", s);
        }
    }
}
