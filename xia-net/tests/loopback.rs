//! Real routers and hosts on loopback UDP, each node its own driver task:
//! XHCP configures the hosts, link-state routing the routers, and a ping
//! crosses two ADs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use xia_net::clock::Clock;
use xia_net::node::{Driver, NodeHandle};
use xia_net::udp::UdpLinks;
use xia_router::routing::LinkStateConfig;
use xia_router::{Router, RouterConfig};
use xia_stack::host::{Host, HostConfig, HostEvent};
use xia_stack::{Dag, Identity, Principal, Xid};

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn id(p: Principal, b: u8) -> Identity {
    Identity::from_secret_bytes(p, &[b; 32])
}

fn router(ad: Xid, hid: Xid, ports: u16) -> Router {
    let mut cfg = RouterConfig::new(ad, hid, ports);
    cfg.xhcp_interval = Some(Duration::from_millis(200));
    cfg.routing = Some(LinkStateConfig {
        hello_interval: Duration::from_millis(100),
        dead_interval: Duration::from_millis(400),
        ..LinkStateConfig::default()
    });
    Router::new(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_crosses_two_ads_over_udp() {
    let (ad1, ad2) = (id(Principal::AD, 1).xid(), id(Principal::AD, 2).xid());
    let (r1id, r2id) = (id(Principal::HID, 11), id(Principal::HID, 12));
    let (h1id, h2id) = (id(Principal::HID, 21), id(Principal::HID, 22));
    let h2_hid = h2id.xid();
    // h1 — r1 — r2 — h2: bind first, then join the links.
    let mut l_h1 = UdpLinks::bind(local(), vec![]).unwrap();
    let mut l_r1 = UdpLinks::bind(local(), vec![]).unwrap();
    let mut l_r2 = UdpLinks::bind(local(), vec![]).unwrap();
    let mut l_h2 = UdpLinks::bind(local(), vec![]).unwrap();
    let a = |l: &UdpLinks| l.local_addr().unwrap();
    let (ah1, ar1, ar2, ah2) = (a(&l_h1), a(&l_r1), a(&l_r2), a(&l_h2));
    l_h1.add_peer(ar1).unwrap();
    l_r1.add_peer(ah1).unwrap();
    l_r1.add_peer(ar2).unwrap();
    l_r2.add_peer(ar1).unwrap();
    l_r2.add_peer(ah2).unwrap();
    l_h2.add_peer(ar2).unwrap();

    let clock = Clock::start();
    let mut stops = Vec::new();
    let mut spawn_router = |r: Router, l: UdpLinks| {
        let (stop, rx) = oneshot::channel::<()>();
        stops.push(stop);
        let d = Driver::new(r, l, clock);
        tokio::spawn(d.run(async {
            let _ = rx.await;
        }))
    };
    let t1 = spawn_router(router(ad1, r1id.xid(), 2), l_r1);
    let t2 = spawn_router(router(ad2, r2id.xid(), 2), l_r2);
    // Hosts start in no particular AD: XHCP tells them theirs.
    let nowhere = Xid::new(Principal::AD, [0; 20]);
    let h1 = Driver::new(Host::new(HostConfig::new(h1id, nowhere, None)), l_h1, clock);
    let h2 = Driver::new(Host::new(HostConfig::new(h2id, nowhere, None)), l_h2, clock);
    let (hh1, hh2): (NodeHandle<Host>, NodeHandle<Host>) = (h1.handle(), h2.handle());
    let (stop1, rx1) = oneshot::channel::<()>();
    let (stop2, rx2) = oneshot::channel::<()>();
    let th1 = tokio::spawn(h1.run(async {
        let _ = rx1.await;
    }));
    let th2 = tokio::spawn(h2.run(async {
        let _ = rx2.await;
    }));

    // Ping h2 until a reply comes (routing converges within a second).
    let dst = Dag::path(&[ad2, h2_hid]).unwrap();
    let mut replied = false;
    for seq in 0..60u16 {
        let d = dst.clone();
        let _ = hh1
            .call(move |h, _| h.ping(&d, 7, seq, b"hello", None))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let events = hh1
            .call(|h, _| std::iter::from_fn(|| h.poll_event()).collect::<Vec<_>>())
            .await
            .unwrap();
        if events
            .iter()
            .any(|e| matches!(e, HostEvent::EchoReply { ident: 7, .. }))
        {
            replied = true;
            break;
        }
    }
    assert!(replied, "no echo reply within 3 s");
    let h2_dag = hh2.call(|h, _| h.dag()).await.unwrap();
    assert_eq!(h2_dag, dst, "h2 learnt its AD from XHCP");

    for s in stops {
        let _ = s.send(());
    }
    let _ = stop1.send(());
    let _ = stop2.send(());
    let r1 = t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
    th1.await.unwrap().unwrap();
    th2.await.unwrap().unwrap();
    assert!(r1.routing_counters().unwrap().adjacencies_up >= 1);
    assert!(r1.counters().forwarded > 0);
}
