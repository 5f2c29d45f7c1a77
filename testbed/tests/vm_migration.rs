//! VM migration in the simulator, as a user runs it: a VM live- or
//! full-migrated between two ADs while clients talk to its service. The
//! client of a checksummed stream sees every byte exactly once; a datagram
//! flow loses nothing; a client that connects by name after the move
//! reaches the new location.

use std::time::Duration;

use testbed::{run, SimConfig, Topology};

const BASE: &str = include_str!("../topologies/migration.toml");

/// The shipped topology with a smaller VM (8 MiB, 1 MiB hot) and the
/// given VM service, clients and migration.
fn topo(service: &str, clients: &str, migration: &str) -> Topology {
    Topology::parse("vm.toml", &topo_text(service, clients, migration)).unwrap()
}

/// [`topo`]'s text, for tests that change the network too.
fn topo_text(service: &str, clients: &str, migration: &str) -> String {
    let base = BASE.split("[[vm]]").next().unwrap();
    format!(
        "{base}[[vm]]\nname = \"vm1\"\nhypervisor = \"hv1\"\nmemory = \"8MiB\"\ndirty_rate = 2000\n\
         dirty = \"hot-set\"\nhot_set = \"1MiB\"\nservice_name = \"video\"\n{service}\n{clients}\n{migration}\n"
    )
}

const STREAM: &str = "service = \"stream\"\nbytes = \"20MB\"\nrate = \"20Mbps\"";

fn download(at: &str) -> String {
    format!("[[client]]\nhost = \"c1\"\nvm = \"vm1\"\nat = \"{at}\"\nkind = \"download\"\nby_name = true\n")
}

fn migration(mode: &str) -> String {
    format!("[[migration]]\nvm = \"vm1\"\nto = \"hv2\"\nat = \"3s\"\nmode = \"{mode}\"\ndowntime_target = \"300ms\"\n")
}

fn sim(t: Topology) -> testbed::Report {
    run(
        t,
        &SimConfig {
            seed: 1,
            ..SimConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn live_migration_keeps_a_checksummed_stream_whole() {
    let r = sim(topo(STREAM, &download("2s"), &migration("live")));
    let m = &r.migrations[0];
    assert_eq!(m.error, None, "{r}");
    let s = m.session.as_ref().expect("finished");
    assert!(s.rounds >= 1, "{s:?}");
    let down = m.downtime.unwrap();
    assert!(down < Duration::from_millis(300), "{down:?}");
    let c = &r.vm_clients[0];
    assert_eq!(
        (c.received, c.corrupt, c.error.as_deref()),
        (20_000_000, 0, None),
        "{r}"
    );
    assert_eq!(c.peer_moves, 1, "the connection followed a signed MIGRATE");
    assert!(c.finished.is_some());
    // What the client saw: no longer than the pause plus a round trip
    // (20 ms) and a little queueing.
    assert!(
        c.max_gap <= down + Duration::from_millis(40),
        "{:?} vs {down:?}",
        c.max_gap
    );
    // Nothing was dropped for the move; what came during the pause went on.
    let hv1 = &r.hypervisors[0].counters;
    assert_eq!(hv1.buffer_drops, 0);
    assert!(hv1.forwarded >= hv1.buffered, "{r}");
    // The same run twice is the same run.
    let again = sim(topo(STREAM, &download("2s"), &migration("live")));
    assert_eq!(r.to_string(), again.to_string());
}

#[test]
fn full_migration_pauses_longer_and_loses_nothing() {
    let r = sim(topo(STREAM, &download("2s"), &migration("full")));
    let m = &r.migrations[0];
    assert_eq!(m.error, None, "{r}");
    assert_eq!(m.session.as_ref().unwrap().rounds, 0);
    // About 6 MiB of non-zero pages at 100 Mbit/s.
    let down = m.downtime.unwrap().as_secs_f64();
    assert!((0.4..1.0).contains(&down), "{down}");
    let c = &r.vm_clients[0];
    assert_eq!((c.received, c.corrupt), (20_000_000, 0), "{r}");
    assert_eq!(c.peer_moves, 1);
}

#[test]
fn a_datagram_flow_through_the_move_loses_nothing() {
    let clients = "[[client]]\nhost = \"c1\"\nvm = \"vm1\"\nat = \"2s\"\nkind = \"datagrams\"\n\
                   by_name = true\ncount = 2000\ninterval = \"2ms\"\nsize = 200\n";
    let r = sim(topo("service = \"datagrams\"", clients, &migration("live")));
    assert_eq!(r.migrations[0].error, None, "{r}");
    let c = &r.vm_clients[0];
    assert_eq!(c.sent, 2000, "{r}");
    assert_eq!(c.delivered, 2000, "every datagram reached the VM: {r}");
    // Datagrams that went to the old address during and after the pause
    // were buffered or forwarded, and the client was told.
    let hv1 = &r.hypervisors[0].counters;
    assert!(hv1.buffered > 0 && hv1.forwarded >= hv1.buffered, "{r}");
    assert!(
        c.redirects >= 1 && c.dst_changes == 1,
        "the client looked the name up again: {r}"
    );
}

#[test]
fn a_client_connecting_by_name_after_the_move_reaches_the_new_location() {
    let clients = format!("{}{}", download("2s"), download("9s"));
    let r = sim(topo(STREAM, &clients, &migration("live")));
    assert_eq!(r.migrations[0].error, None, "{r}");
    let activated = r.migrations[0].activated.unwrap();
    assert!(activated < Duration::from_secs(9));
    let late = &r.vm_clients[1];
    assert_eq!((late.received, late.corrupt), (20_000_000, 0), "{r}");
    assert_eq!(
        late.peer_moves, 0,
        "it connected to the new DAG directly: {r}"
    );
}

#[test]
fn bad_migration_sections_name_the_line() {
    let bad = |extra: &str, want: &str| {
        let base = BASE.split("[[vm]]").next().unwrap();
        let vm = "[[vm]]\nname = \"vm1\"\nhypervisor = \"hv1\"\nmemory = \"8MiB\"\n";
        let e = Topology::parse("t.toml", &format!("{base}{vm}{extra}")).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        assert!(e.line > 0, "{e}");
    };
    bad(
        "[[migration]]\nvm = \"vm9\"\nto = \"hv2\"\nat = \"1s\"\n",
        "unknown VM \"vm9\"",
    );
    bad(
        "[[migration]]\nvm = \"vm1\"\nto = \"c1\"\nat = \"1s\"\n",
        "is not a [[hypervisor]]",
    );
    bad(
        "[[migration]]\nvm = \"vm1\"\nto = \"hv2\"\nat = \"1s\"\nmode = \"fast\"\n",
        "unknown migration mode",
    );
    bad(
        "[[client]]\nhost = \"c1\"\nvm = \"vm1\"\nat = \"1s\"\nkind = \"download\"\n",
        "needs a VM with service = \"stream\"",
    );
    bad(
        "[[run]]\nat = \"1s\"\nnode = \"hv1\"\ncommand = \"ping @c1\"\n",
        "is a hypervisor",
    );
}

#[test]
fn a_vm_registers_its_name_once_the_name_server_can_be_reached() {
    // The name server's link is down for the first 8 s: every
    // registration the VM sends meanwhile goes unanswered. It keeps
    // trying, so a client looking the name up at 12 s finds it.
    let events = "[[event]]\nat = \"0s\"\nlink = [\"ns\", \"rA\"]\nstate = \"down\"\n\
                  [[event]]\nat = \"8s\"\nlink = [\"ns\", \"rA\"]\nstate = \"up\"\n";
    let r = sim(topo(STREAM, &format!("{}{events}", download("12s")), ""));
    let c = &r.vm_clients[0];
    assert_eq!((c.received, c.corrupt), (20_000_000, 0), "{r}");
}

#[test]
fn datagrams_held_through_a_full_migration_all_arrive_on_a_slow_link() {
    // A full migration pauses the VM for the whole copy (about 1.3 s at
    // 50 Mbit/s): some 140 datagrams are held at hv1. Released at the
    // commit as one burst they would overflow the 100-packet queue of the
    // link between the ADs; paced, every one arrives.
    let clients = "[[client]]\nhost = \"c1\"\nvm = \"vm1\"\nat = \"2s\"\nkind = \"datagrams\"\n\
                   by_name = true\ncount = 500\ninterval = \"10ms\"\nsize = 200\n";
    let text = topo_text("service = \"datagrams\"", clients, &migration("full"))
        .replace("bandwidth = \"100Mbps\"", "bandwidth = \"50Mbps\"")
        .replace("queue = 200", "queue = 100");
    let r = sim(Topology::parse("vm.toml", &text).unwrap());
    assert_eq!(r.migrations[0].error, None, "{r}");
    let c = &r.vm_clients[0];
    let hv1 = &r.hypervisors[0].counters;
    let inter = r
        .links
        .iter()
        .find(|l| (l.a.as_str(), l.b.as_str()) == ("rA", "rB"));
    eprintln!(
        "sent {} delivered {} buffered {} forwarded {} dropped {} longest hold {:?} \
         longest pacer wait {:?} rA->rB queue drops {}",
        c.sent,
        c.delivered,
        hv1.buffered,
        hv1.forwarded,
        hv1.buffer_drops,
        hv1.max_hold,
        hv1.max_pacer_wait,
        inter.unwrap().dirs[0].queue_drops
    );
    assert!(hv1.buffered > 100, "{r}");
    assert_eq!(hv1.buffer_drops, 0, "{r}");
    assert!(hv1.forwarded >= hv1.buffered, "{r}");
    assert_eq!(c.sent, 500, "{r}");
    assert_eq!(c.delivered, 500, "every datagram reached the VM: {r}");
    // Paced at the copy's measured rate (about 42 Mbit/s), the held
    // datagrams (some 60 kB) take about 10 ms to leave: the last one
    // waits that much longer than the pause, not more.
    assert!(
        hv1.max_pacer_wait < Duration::from_millis(50),
        "{:?}",
        hv1.max_pacer_wait
    );
}

#[test]
fn a_run_whose_stream_closes_during_the_migration_goes_quiet() {
    // The 1 MB stream ends while the VM is being copied: its connection
    // moves in TIME-WAIT, and the MIGRATE it sends is never answered (the
    // client has closed). When TIME-WAIT ends nothing may stay armed — a
    // repetition left on the closed connection woke the VM every 12.8 s
    // for ever, and the run never ended without a time limit.
    let stream = "service = \"stream\"\nbytes = \"1MB\"\nrate = \"20Mbps\"";
    let t = topo(stream, &download("2.9s"), &migration("live"));
    // Without a time limit a run ends when nothing but background work
    // (the routers' beacons) is left. Should it not, the test fails after
    // a minute of wall time rather than hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sim(t));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the run ended by itself");
    assert_eq!(r.migrations[0].error, None, "{r}");
    let c = &r.vm_clients[0];
    assert_eq!((c.received, c.corrupt), (1_000_000, 0), "{r}");
    let activated = r.migrations[0].activated.unwrap();
    assert!(c.finished.unwrap() > Duration::from_secs(3) && c.finished.unwrap() < activated);
    // It went quiet within seconds of the move.
    assert!(r.end.as_secs_f64() < 30.0, "ended at {}: {r}", r.end);
}
