//! Applications on two host daemons, over the Unix-socket API, across two
//! routers on loopback UDP (5 ms apart): a stream by name with a 1 MB echo, a
//! datagram round trip, a chunk put on one host and fetched on the other,
//! and ping.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xia_net::client::{Client, PingOutcome};
use xia_net::clock::Clock;
use xia_net::host_node::HostNode;
use xia_net::node::Driver;
use xia_net::udp::UdpLinks;
use xia_router::routing::LinkStateConfig;
use xia_router::{Router, RouterConfig};
use xia_stack::host::{Host, HostConfig};
use xia_stack::naming::NAME_SERVER_SID;
use xia_stack::{Dag, Identity, Principal, Xid};

fn id(p: Principal, b: u8) -> Identity {
    Identity::from_secret_bytes(p, &[b; 32])
}

/// h1 — r1 — r2 — h2; h2 serves names and the routers announce it. The
/// nodes run until the test's runtime ends.
async fn net(tag: &str) -> (Client, Client, Dag) {
    let (h1, h2, dag, _) = net_with(tag, xia_stack::stream::Config::default()).await;
    (h1, h2, dag)
}

/// As [`net`], with the hosts' stream settings; also returns a way to
/// crash r2 (its driver task).
async fn net_with(
    tag: &str,
    stream: xia_stack::stream::Config,
) -> (Client, Client, Dag, tokio::task::AbortHandle) {
    let dir: PathBuf = std::env::temp_dir().join(format!("xia-net-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ad1, ad2) = (id(Principal::AD, 1).xid(), id(Principal::AD, 2).xid());
    let (h1id, h2id) = (id(Principal::HID, 21), id(Principal::HID, 22));
    let ns = Dag::path(&[ad2, h2id.xid(), NAME_SERVER_SID]).unwrap();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // Nodes in line order: h1, r1, r2, h2.
    let mut links: Vec<UdpLinks> = (0..4)
        .map(|_| UdpLinks::bind(local, vec![]).unwrap())
        .collect();
    let addr: Vec<SocketAddr> = links.iter().map(|l| l.local_addr().unwrap()).collect();
    for (a, b) in [(0, 1), (1, 2), (2, 3)] {
        links[a].add_peer(addr[b]).unwrap();
        links[b].add_peer(addr[a]).unwrap();
    }
    let clock = Clock::start();
    let mut links = links.into_iter();
    let mut routers = Vec::new();
    let (l_h1, l_r1, l_r2, l_h2) = (
        links.next().unwrap(),
        links.next().unwrap(),
        links.next().unwrap(),
        links.next().unwrap(),
    );
    for (ad, b, l) in [(ad1, 11, l_r1), (ad2, 12, l_r2)] {
        let mut cfg = RouterConfig::new(ad, id(Principal::HID, b).xid(), 2);
        cfg.xhcp_interval = Some(Duration::from_millis(200));
        cfg.name_server = Some(ns.clone());
        cfg.routing = Some(LinkStateConfig {
            hello_interval: Duration::from_millis(100),
            dead_interval: Duration::from_millis(400),
            ..LinkStateConfig::default()
        });
        let mut d = Driver::new(Router::new(cfg), l, clock);
        // 5 ms each way between the routers (port 1 of r1, port 0 of r2).
        let imp = xia_net::impair::Impairment {
            delay: Duration::from_millis(5),
            ..Default::default()
        };
        d.impair(1 - (b - 11) as u16, xia_net::impair::Direction::new(imp, 1));
        routers.push(tokio::spawn(d.run(std::future::pending())).abort_handle());
    }
    let mut clients = Vec::new();
    for (hid, ad, l, serve) in [(h1id, ad1, l_h1, false), (h2id, ad2, l_h2, true)] {
        let mut cfg = HostConfig::new(hid, ad, None);
        cfg.stream = stream.clone();
        let mut host = Host::new(cfg);
        if serve {
            host.serve_names(1000);
        }
        let d = Driver::new(HostNode::new(host), l, clock);
        let path = dir.join(format!("h{}.sock", clients.len() + 1));
        let api = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(xia_net::server::serve(api, d.handle()));
        tokio::spawn(d.run(std::future::pending()));
        clients.push(Client::new(&path));
    }
    let h2 = clients.pop().unwrap();
    let h1 = clients.pop().unwrap();
    // Wait for XHCP and routing: h1 pings h2 until it answers.
    let h2_dag = Dag::path(&[ad2, h2id_xid()]).unwrap();
    for seq in 0..50 {
        if let Ok(PingOutcome::Reply { .. }) = h1
            .ping(&h2_dag, seq, 8, None, Duration::from_millis(100))
            .await
        {
            return (h1, h2, h2_dag, routers.pop().unwrap());
        }
    }
    panic!("the network did not converge in 5 s");
}

fn h2id_xid() -> Xid {
    id(Principal::HID, 22).xid()
}

#[tokio::test]
async fn a_stream_by_name_echoes_1_mb_as_it_arrives() {
    let (h1, h2, _) = net("stream").await;
    let svc = id(Principal::SID, 0x42);
    let listener = h2.listen(Some(svc.xid())).await.unwrap();
    let seq = h2
        .register(&svc, "echo.example", listener.dag(), 1)
        .await
        .unwrap();
    assert_eq!(seq, 1);
    // A replayed registration is refused with the name server's reason.
    let e = h2
        .register(&svc, "echo.example", listener.dag(), 1)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not above"), "{e}");
    let server = tokio::spawn(async move {
        // Echo as it comes, as `xia echo server` does.
        let mut s = listener.accept().await.unwrap();
        let (mut r, mut w) = tokio::io::split(&mut s);
        let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
        n as usize
    });
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut s = h1.connect("echo.example").await.unwrap();
    assert_eq!(s.peer_dag().intent(), &svc.xid());
    let (mut rd, mut wr) = tokio::io::split(&mut s);
    let send = {
        let data = data.clone();
        async move {
            wr.write_all(&data).await.unwrap();
            wr.shutdown().await.unwrap();
        }
    };
    let recv = async move {
        let mut back = Vec::new();
        rd.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::join!(send, recv);
    assert_eq!(server.await.unwrap(), data.len());
    assert!(back == data, "echoed bytes differ");
    // An unknown name is a clear error.
    let e = h1.connect("nobody.example").await.unwrap_err();
    assert!(e.to_string().contains("nobody.example"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_chunks_and_ping() {
    let (h1, h2, h2_dag) = net("dgram").await;
    let mut a = h1.bind(None).await.unwrap();
    let mut b = h2.bind(Some(id(Principal::SID, 0x51).xid())).await.unwrap();
    let b_dag = b.dag().clone();
    a.send_to(&b_dag, b"ping?").await.unwrap();
    let (data, from) = b.recv_from().await.unwrap();
    assert_eq!(data, b"ping?");
    b.send_to(&from, b"pong!").await.unwrap();
    let (data, _) = a.recv_from().await.unwrap();
    assert_eq!(data, b"pong!");

    let chunk: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let cid_dag = h2.put_chunk(chunk.clone()).await.unwrap();
    assert_eq!(cid_dag.intent(), &Xid::cid_of(&chunk));
    assert_eq!(h1.fetch_chunk(&cid_dag).await.unwrap(), chunk);

    match h1
        .ping(&h2_dag, 1, 56, None, Duration::from_secs(1))
        .await
        .unwrap()
    {
        PingOutcome::Reply { len, .. } => assert_eq!(len, 56),
        other => panic!("{other:?}"),
    }
    // Hop limit 2 runs out at r2 (the host's own forwarding is a hop).
    match h1
        .ping(&h2_dag, 2, 8, Some(2), Duration::from_secs(1))
        .await
        .unwrap()
    {
        PingOutcome::Error { what, .. } => assert!(what.contains("time exceeded"), "{what}"),
        other => panic!("{other:?}"),
    }
    let info = h1.info().await.unwrap();
    assert!(info.name_server.is_some(), "learnt from XHCP: {info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_router_dies_fails_with_a_clear_timeout() {
    // Short timers so the test is quick; the default gives up after
    // twelve retransmissions, minutes later.
    let stream = xia_stack::stream::Config {
        initial_rto: Duration::from_millis(100),
        min_rto: Duration::from_millis(50),
        max_rto: Duration::from_millis(400),
        max_retransmissions: 4,
        ..Default::default()
    };
    let (h1, h2, _, r2) = net_with("timeout", stream).await;
    let listener = h2
        .listen(Some(id(Principal::SID, 0x61).xid()))
        .await
        .unwrap();
    let dag = listener.dag().clone();
    let server = tokio::spawn(async move {
        let mut s = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        // Read a little, then wait: the client keeps sending.
        let _ = s.read(&mut buf).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut s = h1.connect(&dag.to_line()).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    r2.abort();
    // Data now goes nowhere: the stream fails, and the application hears
    // why instead of waiting forever.
    let started = std::time::Instant::now();
    let failed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Err(e) = s.write_all(&[7u8; 65536]).await {
                return e;
            }
            let mut b = [0u8; 16];
            match tokio::time::timeout(Duration::from_millis(10), s.read(&mut b)).await {
                Ok(Err(e)) => return e,
                Ok(Ok(0)) => return std::io::Error::other("clean end"),
                _ => {}
            }
        }
    })
    .await
    .expect("the stream failed within 20 s");
    assert!(failed.to_string().contains("timed out"), "{failed}");
    assert!(started.elapsed() < Duration::from_secs(20));
    server.abort();
}
