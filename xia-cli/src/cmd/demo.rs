//! `xia demo`: the main demo. On the embedded default topology (two ADs, a
//! client streaming from a service in a VM) it live-migrates the VM in the
//! simulator and prints what the client saw; then it runs the routing demo
//! (a ping three ADs away needing a fallback) and shows the wire core under
//! the hood. It needs no files or network, and prints the same thing on
//! every machine.

use anyhow::Result;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use xia_stack::wire::dump::dump_packet;
use xia_stack::wire::xcmp::{quote, Packet as XcmpPacket, XcmpRepr};
use xia_stack::wire::xip::{NextHeader, XipRepr};
use xia_stack::{Dag, Identity, Principal};

use testbed::{SimConfig, Topology};

use crate::input::to_hex;

pub fn run() -> Result<()> {
    migration()?;
    println!();
    network()?;
    println!();
    wire_tour()
}

fn migration() -> Result<()> {
    let topo = Topology::parse("<embedded migration.toml>", testbed::MIGRATION_TOPOLOGY)?;
    println!("xia-rs demo: live migration of a VM between XIA networks (simulator, seed 1)\n");
    println!("  c1 --- rA ===== rB --- hv2");
    println!("         |  100 Mbit/s, 20 ms RTT");
    println!("        hv1 [vm1: 64 MiB, 8 MiB hot set, 2000 pages/s dirtied; serves \"video\"]\n");
    println!(
        "  At 2 s c1 resolves \"video\" and downloads a 30 MB checksummed stream at 20 Mbit/s."
    );
    println!("  At 3 s hv1 live-migrates vm1 to hv2, in another AD.\n");
    let report = testbed::run(
        topo,
        &SimConfig {
            seed: 1,
            ..SimConfig::default()
        },
    )?;
    let (Some(m), Some(c)) = (report.migrations.first(), report.vm_clients.first()) else {
        anyhow::bail!("the migration topology has a migration and a client");
    };
    let ms = |d: std::time::Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    match (&m.error, &m.session) {
        (None, Some(s)) => {
            println!("1. The migration (pre-copy, then a short stop-and-copy):");
            println!(
                "   {} pre-copy rounds, {:.1} MB sent, {} pages in the final copy",
                s.rounds,
                s.bytes as f64 / 1e6,
                s.final_pages
            );
            println!(
                "   bandwidth measured {:.1} Mbit/s, RTT {}; downtime estimated {}",
                s.bandwidth * 8.0 / 1e6,
                ms(s.rtt),
                ms(s.estimated_downtime)
            );
            println!(
                "   downtime {} (pause at hv1 to activation at hv2), total {}",
                m.downtime.map_or_else(|| "?".into(), ms),
                m.total.map_or_else(|| "?".into(), ms)
            );
        }
        (Some(e), _) => anyhow::bail!("the migration failed: {e}"),
        (None, None) => anyhow::bail!("the migration did not finish"),
    }
    let lost = c.expected.saturating_sub(c.received);
    println!("\n2. What the client saw:");
    println!(
        "   {} of {} bytes, {} corrupt, {lost} lost: every byte exactly once, in order",
        c.received, c.expected, c.corrupt
    );
    println!(
        "   longest gap between bytes: {}{}",
        ms(c.max_gap),
        c.gap_end
            .map(|t| format!(" (ending at {:.3} s)", t.as_secs_f64()))
            .unwrap_or_default()
    );
    println!(
        "   its connection moved {} time(s): a MIGRATE signed by the service's SID key",
        c.peer_moves
    );
    if let Some(h) = report.hypervisors.first() {
        println!(
            "\n3. Location management at hv1: {} packets held during the pause, {} re-addressed to the new AD, {} XCMP redirect(s)",
            h.counters.buffered, h.counters.forwarded, h.counters.redirects
        );
    }
    println!(
        "\n   Run it yourself: xia testbed run testbed/topologies/migration.toml ({} events)",
        report.events
    );
    Ok(())
}

fn network() -> Result<()> {
    let topo = Topology::parse("<embedded demo.toml>", testbed::DEMO_TOPOLOGY)?;
    println!("Routing with fallbacks: an XIA network in the deterministic simulator (seed 1)\n");
    println!("  h1 --- rA ==== rB ==== rC ==== rD --- h2 [service echo]");
    println!("        (A)     (B)     (C)     (D)");
    println!("  Links rA-rB-rC-rD: 100 Mbit/s, 10 ms; rC-rD loses 2 % of packets.");
    println!("  rA has no route to AD D. rC is a 4ID gateway (IP:10.0.0.3).\n");
    let report = testbed::run(
        topo,
        &SimConfig {
            seed: 1,
            ..SimConfig::default()
        },
    )?;
    let [plain, fallback] = &report.pings[..] else {
        anyhow::bail!("the demo topology has two pings");
    };
    println!("1. h1 pings h2 at its plain address (RE AD:D HID:h2): rA cannot reach AD D");
    for l in &plain.lines[1..] {
        println!("   {l}");
    }
    println!("\n2. h1 pings the echo service with a 4ID fallback, RE ( IP:10.0.0.3 ) AD:D HID:h2 SID:echo:");
    println!("   rA falls back to edge 1 (the 4ID); rC knows AD D and takes it from there");
    for l in &fallback.lines[1..] {
        println!("   {l}");
    }
    if let Some(f) = report.flows.first() {
        println!(
            "\n3. h1 sends {} datagrams to a socket on h2, same fallback DAG:",
            f.sent
        );
        println!(
            "   {} delivered, {} lost — every loss one the rC-rD link drew from the seed",
            f.delivered, f.lost
        );
    }
    println!("\n4. What the routers counted:");
    for (name, c) in &report.routers {
        println!("   {name:<3} {c}");
    }
    println!("\n   {} events, {} of virtual time. Run it yourself: xia testbed run testbed/topologies/demo.toml", report.events, report.end);
    Ok(())
}

fn wire_tour() -> Result<()> {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let ad = Identity::generate(Principal::AD, &mut rng);
    let host = Identity::generate(Principal::HID, &mut rng);
    let service = Identity::generate(Principal::SID, &mut rng);
    let client = Identity::generate(Principal::HID, &mut rng);

    println!("Under the hood: XIA's wire core (identities from seed 2026)\n");

    println!("1. Self-certifying identities: Ed25519 keys, XID = SHA-1 of the public key");
    for id in [&ad, &host, &service] {
        println!("   {}", id.xid());
    }

    let re = format!(
        "RE ( IP:10.0.0.1 ) {} {} {}",
        ad.xid(),
        host.xid(),
        service.xid()
    );
    let dst = Dag::parse(&re)?;
    println!("\n2. A DAG address: to the service via its AD and host; a router that does not");
    println!("   know the AD falls back to the IPv4 island (edge 1 from the entry)");
    println!("   {re}");
    println!("   as xia-core prints it:");
    for line in dst.to_string().lines() {
        println!("     {line}");
    }
    println!(
        "   on the wire: {} nodes x 28 bytes = {} bytes",
        dst.len(),
        dst.wire_len()
    );

    let src = Dag::path(&[
        Dag::parse("RE IP:10.0.0.2")?.intent().to_owned(),
        client.xid(),
    ])?;
    let packet = XipRepr::new(dst.clone(), src, NextHeader::Data, 0).to_bytes(b"hello, XIA")?;
    println!("\n3. An XIP packet to it ({} bytes):", packet.len());
    println!("   {}", to_hex(&packet));
    for line in dump_packet(&packet)?.lines() {
        println!("   {line}");
    }

    println!("\n4. A signed claim: the service says where it is; anyone can check it");
    let claim = format!(
        "{} is at {}",
        service.xid(),
        dst.to_re_string().unwrap_or_default()
    );
    let sig = service.sign(claim.as_bytes());
    let verdict = |r: Result<(), xia_stack::identity::IdentityError>| match r {
        Ok(()) => "accepted".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    let sid = service.xid();
    println!(
        "   the SID's own key:      {}",
        verdict(
            service
                .public_key()
                .verify_for(&sid, claim.as_bytes(), &sig)
        )
    );
    println!(
        "   another key:            {}",
        verdict(client.public_key().verify_for(
            &sid,
            claim.as_bytes(),
            &client.sign(claim.as_bytes())
        ))
    );
    println!(
        "   a tampered claim:       {}",
        verdict(service.public_key().verify_for(&sid, b"elsewhere", &sig))
    );

    println!("\n5. XCMP: a router whose hop limit ran out quotes the header back");
    let xcmp = XcmpRepr::TimeExceeded {
        code: 0,
        quoted: quote(&packet),
    }
    .to_bytes();
    let parsed = XcmpRepr::parse(&XcmpPacket::new_unchecked(&xcmp[..]))?;
    println!("   {} bytes: {parsed}", xcmp.len());

    println!("\n6. Bad input gets an error that says what and where, never a crash");
    let bad = [
        "RE AD:0x12".to_string(),
        format!("RE ( {} SID:{}", ad.xid(), "0".repeat(40)),
        format!(
            "DAG 0 - {} 1 - {} 0 - {}",
            ad.xid(),
            host.xid(),
            service.xid()
        ),
        "XRE AD:1".to_string(),
    ];
    for text in bad {
        let short: String = text.chars().take(40).collect();
        let err = Dag::parse(&text).expect_err("the demo's bad inputs are bad");
        println!("   {short:<40} → {err}");
    }

    println!("\nNext: `xia dag parse --format dot ADDRESS`, `xia key new --dir keys`,");
    println!("`xia xip encode --dst ADDR --src ADDR --payload HEX | xia xip decode -`.");
    Ok(())
}
