//! Migration with content dedup in the simulator: a VM booted from a base
//! image that a store in the destination AD holds. The source sends the
//! image's pages as CIDs; the destination fetches them from the store,
//! and asks the source for any it cannot fetch. Either way the client's
//! stream is exact and the destination commits only a verified image.

use testbed::{run, Report, SimConfig, Topology};

const DEDUP: &str = include_str!("../topologies/migration-dedup.toml");

fn sim(text: &str) -> Report {
    let t = Topology::parse("dedup.toml", text).unwrap();
    run(
        t,
        &SimConfig {
            seed: 1,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

fn check_client(r: &Report) {
    let c = &r.vm_clients[0];
    assert_eq!((c.received, c.corrupt), (30_000_000, 0), "{r}");
    assert_eq!(c.peer_moves, 1, "{r}");
}

#[test]
fn image_pages_come_from_the_store_not_over_the_wan() {
    let with = sim(DEDUP);
    let without = sim(&DEDUP.replace("dedup = true", "dedup = false"));
    for r in [&with, &without] {
        assert_eq!(r.migrations[0].error, None, "{r}");
        check_client(r);
    }
    let (a, b) = (
        with.migrations[0].session.as_ref().unwrap(),
        without.migrations[0].session.as_ref().unwrap(),
    );
    // 64 MiB, three quarters non-zero, 60 % of those the image's.
    assert!((5500..7000).contains(&a.pages.cid), "{with}");
    assert_eq!(b.pages.cid, 0);
    let hv2 = &with.hypervisors[1].counters;
    assert_eq!(
        (hv2.pages_fetched, hv2.fetch_failures),
        (a.pages.cid, 0),
        "{with}"
    );
    // The image's pages stay off the link between the ADs.
    assert!(
        (a.bytes as f64) < 0.7 * b.bytes as f64,
        "{} vs {} bytes",
        a.bytes,
        b.bytes
    );
    assert!(with.migrations[0].total < without.migrations[0].total);
}

#[test]
fn without_a_store_nearby_the_destination_asks_the_source() {
    // The store moves to the source's AD: hv2 has none in its own, so
    // every page sent by CID is asked for and comes whole.
    let text = DEDUP.replace(
        "[[host]]\nname = \"store\"\nad = \"B\"",
        "[[host]]\nname = \"store\"\nad = \"A\"",
    );
    let text = text.replace("a = \"rB\"\nb = \"store\"", "a = \"rA\"\nb = \"store\"");
    let r = sim(&text);
    assert_eq!(r.migrations[0].error, None, "{r}");
    check_client(&r);
    let s = r.migrations[0].session.as_ref().unwrap();
    assert!(s.pages.cid > 5000, "{r}");
    let hv2 = &r.hypervisors[1].counters;
    assert_eq!((hv2.pages_fetched, hv2.fetch_failures), (0, 0), "{r}");
}

#[test]
fn an_unknown_image_names_the_line() {
    let text = DEDUP.replace("image = \"base\"", "image = \"nope\"");
    let e = Topology::parse("dedup.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown image \"nope\""), "{e}");
    assert!(e.contains("dedup.toml:"), "{e}");
}
