//! The host daemon's side of the [application protocol](crate::api): one
//! task per Unix connection, each talking to the host through the
//! driver's [`NodeHandle`] and sleeping on the host's event log between
//! tries.
//!
//! In stream mode (after `Connected`/`Accepted`) the connection carries
//! [`StreamFrame`]s: data, end of stream, or the error that ended the
//! stream — so an application sees "connection timed out" rather than a
//! silent end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use xia_stack::dag::Dag;
use xia_stack::host::{HostEvent, NetError};
use xia_stack::naming::NameRequest;
use xia_stack::socket::{self, Peer, SocketError, StreamState, XDatagram, XListener, XStream};
use xia_stack::time::Instant;
use xia_stack::xid::Xid;

use crate::api::{read_frame, write_frame, FrameError, Request, Response};
use crate::host_node::HostNode;
use crate::node::{NodeHandle, Stopped};

/// How long a finished stream may take to close before it is reset.
pub const LINGER: Duration = Duration::from_secs(60);

/// Bytes moved per stream-mode frame at most.
pub const STREAM_FRAME: usize = 64 * 1024;

/// What travels on a connection in stream mode.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StreamFrame {
    /// Bytes of the stream (encoded as bytes, not as a sequence of
    /// numbers: a copy, not a loop).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The sender's direction has ended.
    End,
    /// The stream failed (daemon to application only).
    Failed(String),
}

/// Shared state of the daemon's connections.
struct Ctx {
    node: NodeHandle<HostNode>,
    changed: watch::Receiver<u64>,
    listeners: Mutex<HashMap<u64, XListener>>,
    next_listener: AtomicU64,
    next_ident: AtomicU16,
}

/// Serves applications on `listener` until the node stops.
pub async fn serve(listener: UnixListener, node: NodeHandle<HostNode>) -> Result<(), Stopped> {
    let changed = node.call(|n, _| n.subscribe()).await?;
    let ctx = Arc::new(Ctx {
        node,
        changed,
        listeners: Mutex::new(HashMap::new()),
        next_listener: AtomicU64::new(1),
        next_ident: AtomicU16::new(1),
    });
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(conn, &ctx).await {
                tracing::debug!("application connection ended: {e}");
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Stopped(#[from] Stopped),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn error(e: impl std::fmt::Display) -> Response {
    Response::Error {
        message: e.to_string(),
    }
}

fn parse_dag(text: &str) -> Result<Dag, Response> {
    text.parse::<Dag>()
        .map_err(|e| error(format!("bad DAG {text:?}: {e}")))
}

fn parse_sid(text: &Option<String>) -> Result<Option<Xid>, Response> {
    match text {
        None => Ok(None),
        Some(t) => t
            .parse::<Xid>()
            .map(Some)
            .map_err(|e| error(format!("bad SID {t:?}: {e}"))),
    }
}

/// Calls `f` until it gives an answer, sleeping on the event log between
/// tries; `None` after `timeout`.
async fn wait_for<R, F>(ctx: &Ctx, f: F, timeout: Option<Duration>) -> Result<Option<R>, Stopped>
where
    F: Fn(&mut HostNode, Instant) -> Option<R> + Clone + Send + 'static,
    R: Send + 'static,
{
    let mut rx = ctx.changed.clone();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        rx.borrow_and_update();
        let g = f.clone();
        if let Some(r) = ctx.node.call(move |n, now| g(n, now)).await? {
            return Ok(Some(r));
        }
        let changed = rx.changed();
        match deadline {
            Some(d) => {
                if tokio::time::timeout_at(d, changed).await.is_err() {
                    return Ok(None);
                }
            }
            None => {
                if changed.await.is_err() {
                    return Err(Stopped);
                }
            }
        }
    }
}

/// The value, or: the error answered on the connection, and on to the
/// next request.
macro_rules! or_answer {
    ($conn:expr, $result:expr) => {
        match $result {
            Ok(v) => v,
            Err(answer) => {
                write_frame(&mut $conn, &answer).await?;
                continue;
            }
        }
    };
}

async fn connection(mut conn: UnixStream, ctx: &Ctx) -> Result<(), ConnError> {
    loop {
        let req: Request = match read_frame(&mut conn).await {
            Ok(r) => r,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => {
                let _ = write_frame(&mut conn, &error(&e)).await;
                return Err(e.into());
            }
        };
        match req {
            Request::Connect { to, by_name } => {
                let peer = if by_name {
                    Peer::Name(to)
                } else {
                    Peer::Dag(or_answer!(conn, parse_dag(&to)))
                };
                let opened = ctx
                    .node
                    .call(move |n, now| XStream::connect(&mut n.host, now, peer))
                    .await?;
                let s = or_answer!(conn, opened.map_err(error));
                let state = wait_for(
                    ctx,
                    move |n, _| match s.state(&n.host) {
                        StreamState::Resolving | StreamState::Connecting => None,
                        other => Some(other),
                    },
                    None,
                )
                .await?
                .expect("no timeout");
                if let StreamState::Failed(e) = state {
                    ctx.node
                        .call(move |n, now| s.release(&mut n.host, now))
                        .await?;
                    write_frame(&mut conn, &error(e)).await?;
                    continue;
                }
                let (local, peer) = dags(ctx, s).await?;
                write_frame(&mut conn, &Response::Connected { local, peer }).await?;
                return pump(conn, ctx, s).await;
            }
            Request::Listen { sid } => {
                let sid = or_answer!(conn, parse_sid(&sid));
                let bound = ctx
                    .node
                    .call(move |n, _| {
                        let l = XListener::bind(&mut n.host, sid)?;
                        let dag = l.local_dag(&n.host).map(|d| d.to_line());
                        Ok::<_, SocketError>((l, dag.unwrap_or_default()))
                    })
                    .await?;
                let (l, dag) = or_answer!(conn, bound.map_err(error));
                let id = ctx.next_listener.fetch_add(1, Ordering::Relaxed);
                ctx.listeners.lock().expect("not poisoned").insert(id, l);
                write_frame(&mut conn, &Response::Listening { listener: id, dag }).await?;
                // The listener lives as long as this connection.
                let mut sink = [0u8; 64];
                while conn.read(&mut sink).await.unwrap_or(0) > 0 {}
                ctx.listeners.lock().expect("not poisoned").remove(&id);
                ctx.node
                    .call(move |n, now| {
                        let _ = l.close(&mut n.host, now);
                    })
                    .await?;
                return Ok(());
            }
            Request::Accept { listener } => {
                let l = ctx
                    .listeners
                    .lock()
                    .expect("not poisoned")
                    .get(&listener)
                    .copied();
                let l = or_answer!(
                    conn,
                    l.ok_or_else(|| error(format!("no listener {listener}")))
                );
                let got = wait_for(
                    ctx,
                    move |n, _| match l.accept(&mut n.host) {
                        Err(SocketError::WouldBlock) => None,
                        other => Some(other),
                    },
                    None,
                )
                .await?
                .expect("no timeout");
                let s = or_answer!(conn, got.map_err(error));
                let (local, peer) = dags(ctx, s).await?;
                write_frame(&mut conn, &Response::Accepted { local, peer }).await?;
                return pump(conn, ctx, s).await;
            }
            Request::Bind { sid } => {
                let sid = or_answer!(conn, parse_sid(&sid));
                let bound = ctx
                    .node
                    .call(move |n, _| {
                        let s = XDatagram::bind(&mut n.host, sid)?;
                        Ok::<_, SocketError>((
                            s,
                            s.local_dag(&n.host).unwrap_or_else(|| n.host.dag()),
                        ))
                    })
                    .await?;
                let (s, dag) = or_answer!(conn, bound.map_err(error));
                write_frame(&mut conn, &Response::Bound { dag: dag.to_line() }).await?;
                let r = datagrams(&mut conn, ctx, s).await;
                ctx.node.call(move |n, _| s.close(&mut n.host)).await?;
                return r;
            }
            Request::SendTo { .. } => {
                write_frame(
                    &mut conn,
                    &error("SendTo needs a bound socket (Bind first)"),
                )
                .await?
            }
            other => {
                let r = request(ctx, other).await?;
                write_frame(&mut conn, &r).await?;
            }
        }
    }
}

async fn dags(ctx: &Ctx, s: XStream) -> Result<(String, String), Stopped> {
    ctx.node
        .call(move |n, _| {
            let show = |d: Option<Dag>| d.map(|d| d.to_line()).unwrap_or_default();
            (show(s.local_dag(&n.host)), show(s.peer_dag(&n.host)))
        })
        .await
}

/// The requests answered with one response.
async fn request(ctx: &Ctx, req: Request) -> Result<Response, Stopped> {
    Ok(match req {
        Request::Info => {
            ctx.node
                .call(|n, _| Response::Info {
                    hid: n.host.hid().to_string(),
                    dag: n.host.dag().to_line(),
                    name_server: n.host.name_server().map(Dag::to_line),
                    gateway: n.host.interfaces()[0].gateway.map(|g| g.to_string()),
                })
                .await?
        }
        Request::Stats => {
            ctx.node
                .call(|n, _| Response::Stats {
                    text: format!("{:#?}", n.host.counters()),
                })
                .await?
        }
        Request::Resolve { name } => {
            let q = {
                let name = name.clone();
                ctx.node
                    .call(move |n, now| {
                        let pos = n.position();
                        socket::resolve(&mut n.host, now, &name).map(|q| (q, pos))
                    })
                    .await?
            };
            match q {
                Err(e) => error(e),
                Ok((q, pos)) => {
                    let answer = wait_for(
                        ctx,
                        move |n, _| n.events_since(pos).find_map(|e| q.answer(e)),
                        None,
                    )
                    .await?
                    .expect("no timeout");
                    match answer {
                        Ok(dag) => Response::Resolved { dag: dag.to_line() },
                        Err(e) => error(e),
                    }
                }
            }
        }
        Request::Register { signed } => {
            let sent = ctx
                .node
                .call(move |n, now| {
                    let pos = n.position();
                    let req = NameRequest::parse(&signed).map_err(|e| e.to_string())?;
                    if !matches!(req, NameRequest::Register(_)) {
                        return Err("not a registration".to_string());
                    }
                    let server = n
                        .host
                        .name_server()
                        .cloned()
                        .ok_or_else(|| "no name server known".to_string())?;
                    let id = n
                        .host
                        .name_request(now, &server, &req)
                        .map_err(|e| e.to_string())?;
                    Ok((id, pos))
                })
                .await?;
            match sent {
                Err(e) => error(e),
                Ok((id, pos)) => {
                    let answer = wait_for(
                        ctx,
                        move |n, _| {
                            n.events_since(pos).find_map(|e| match e {
                                HostEvent::NameAnswer { id: i, answer } if *i == id => {
                                    Some(answer.clone())
                                }
                                _ => None,
                            })
                        },
                        None,
                    )
                    .await?
                    .expect("no timeout");
                    match answer {
                        Ok(xia_stack::naming::NameResponse::Registered { seq }) => {
                            Response::Registered { seq }
                        }
                        Ok(other) => error(format!("refused: {other:?}")),
                        Err(why) => error(why),
                    }
                }
            }
        }
        Request::PutChunk { data } => {
            ctx.node
                .call(move |n, _| match socket::put_chunk(&mut n.host, &data) {
                    Ok(dag) => Response::Published { dag: dag.to_line() },
                    Err(e) => error(e),
                })
                .await?
        }
        Request::FetchChunk { dag } => {
            let dag = match parse_dag(&dag) {
                Ok(d) => d,
                Err(r) => return Ok(r),
            };
            let started = ctx
                .node
                .call(move |n, now| socket::fetch_chunk(&mut n.host, now, &dag).map(|f| f.id()))
                .await?;
            match started {
                Err(e) => error(e),
                Ok(id) => {
                    let result = wait_for(ctx, move |n, _| n.take_fetched(id), None)
                        .await?
                        .expect("no timeout");
                    match result {
                        Ok(data) => Response::Fetched { data },
                        Err(e) => error(e),
                    }
                }
            }
        }
        Request::Ping {
            dst,
            seq,
            size,
            hop_limit,
            timeout_ms,
        } => {
            let dst = match parse_dag(&dst) {
                Ok(d) => d,
                Err(r) => return Ok(r),
            };
            let ident = ctx.next_ident.fetch_add(1, Ordering::Relaxed);
            let sent = ctx
                .node
                .call(move |n, now| {
                    let pos = n.position();
                    let data = vec![0x58u8; usize::from(size)];
                    n.host
                        .ping(&dst, ident, seq, &data, hop_limit)
                        .map(|()| (pos, now))
                        .map_err(|e| e.to_string())
                })
                .await?;
            match sent {
                Err(e) => error(e),
                Ok((pos, t0)) => {
                    let answer = wait_for(
                        ctx,
                        move |n, _| {
                            n.events_since(pos).find_map(|e| match e {
                                HostEvent::EchoReply {
                                    from,
                                    ident: i,
                                    seq_no,
                                    hop_limit,
                                    len,
                                    at,
                                } if *i == ident && *seq_no == seq => Some(Response::Pong {
                                    from: from.to_line(),
                                    hop_limit: *hop_limit,
                                    rtt_us: (*at - t0).as_micros() as u64,
                                    len: *len as u32,
                                }),
                                HostEvent::Error {
                                    echo: Some((i, s)),
                                    error,
                                    ..
                                } if *i == ident && *s == seq => Some(ping_error(error)),
                                _ => None,
                            })
                        },
                        Some(Duration::from_millis(u64::from(timeout_ms))),
                    )
                    .await?;
                    answer.unwrap_or(Response::PingTimeout)
                }
            }
        }
        Request::Connect { .. }
        | Request::Listen { .. }
        | Request::Accept { .. }
        | Request::Bind { .. }
        | Request::SendTo { .. } => unreachable!("handled by the connection"),
    })
}

fn ping_error(e: &NetError) -> Response {
    let (from, what) = match e {
        NetError::Unreachable { reason, from } => {
            (from, format!("destination unreachable ({reason})"))
        }
        NetError::TimeExceeded { from } => (from, "time exceeded".to_string()),
        NetError::Redirect { to, from } => (from, format!("redirect to {to}")),
    };
    Response::PingError {
        from: from.to_line(),
        what,
    }
}

/// Datagram mode: `SendTo` frames in, `Datagram` frames out.
async fn datagrams(conn: &mut UnixStream, ctx: &Ctx, s: XDatagram) -> Result<(), ConnError> {
    let (mut rd, mut wr) = conn.split();
    let mut rx = ctx.changed.clone();
    let mut incoming = Box::pin(read_frame::<_, Request>(&mut rd));
    loop {
        rx.borrow_and_update();
        let got = ctx
            .node
            .call(move |n, _| {
                let mut out = Vec::new();
                let mut buf = vec![0u8; 65_536];
                while let Ok((len, from)) = s.recv_from(&mut n.host, &mut buf) {
                    out.push((from.to_line(), buf[..len].to_vec()));
                }
                out
            })
            .await?;
        for (from, data) in got {
            write_frame(&mut wr, &Response::Datagram { from, data }).await?;
        }
        tokio::select! {
            r = &mut incoming => {
                match r {
                    Ok(Request::SendTo { dst, data }) => {
                        let sent = match parse_dag(&dst) {
                            Ok(d) => ctx.node.call(move |n, _| s.send_to(&mut n.host, &d, &data).map_err(error)).await?,
                            Err(r) => Err(r),
                        };
                        if let Err(r) = sent {
                            write_frame(&mut wr, &r).await?;
                        }
                    }
                    Ok(_) => write_frame(&mut wr, &error("only SendTo in datagram mode")).await?,
                    Err(FrameError::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                drop(incoming);
                incoming = Box::pin(read_frame::<_, Request>(&mut rd));
            }
            r = rx.changed() => if r.is_err() { return Err(Stopped.into()) },
        }
    }
}

/// Stream mode: moves bytes between the application and the XStream
/// until both directions end or the stream fails; then releases it.
///
/// The two directions run concurrently: an application that writes
/// before it reads (an echo server) must not stop us from reading what
/// the network delivers, nor the other way round.
async fn pump(conn: UnixStream, ctx: &Ctx, s: XStream) -> Result<(), ConnError> {
    let (mut rd, mut wr) = conn.into_split();
    // Application to network: frames in, written to the stream as the send
    // buffer allows; its end closes our direction.
    let up = async {
        let mut rx = ctx.changed.clone();
        loop {
            let mut data = match read_frame::<_, StreamFrame>(&mut rd).await {
                Ok(StreamFrame::Data(d)) => d,
                Ok(StreamFrame::End | StreamFrame::Failed(_)) | Err(FrameError::Closed) => break,
                Err(e) => return Err(ConnError::from(e)),
            };
            while !data.is_empty() {
                rx.borrow_and_update();
                let chunk = std::mem::take(&mut data);
                let (rest, done) = ctx
                    .node
                    .call(move |n, now| match s.write(&mut n.host, now, &chunk) {
                        Ok(k) => (chunk[k..].to_vec(), false),
                        Err(SocketError::WouldBlock) => (chunk, false),
                        // The stream failed: the other direction reports it.
                        Err(_) => (Vec::new(), true),
                    })
                    .await?;
                if done {
                    return Ok(());
                }
                data = rest;
                if !data.is_empty() && rx.changed().await.is_err() {
                    return Err(Stopped.into());
                }
            }
        }
        ctx.node
            .call(move |n, now| {
                let _ = s.close(&mut n.host, now);
            })
            .await?;
        Ok(())
    };
    // Network to application: read what arrives; then the end or the
    // error that ended the stream.
    let down = async {
        let mut rx = ctx.changed.clone();
        loop {
            rx.borrow_and_update();
            let (out, end, failure) = ctx
                .node
                .call(move |n, now| {
                    // Read until the frame is full, nothing is left, or the
                    // end: a short read may be followed by the end of the
                    // stream, which no further event would announce.
                    let mut out = Vec::new();
                    let mut buf = vec![0u8; STREAM_FRAME];
                    let (mut end, mut failure) = (false, None);
                    while out.len() < STREAM_FRAME {
                        let room = STREAM_FRAME - out.len();
                        match s.read(&mut n.host, now, &mut buf[..room]) {
                            Ok(0) => {
                                end = true;
                                break;
                            }
                            Ok(k) => out.extend_from_slice(&buf[..k]),
                            Err(SocketError::WouldBlock) => break,
                            Err(e) => {
                                failure = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    (out, end, failure)
                })
                .await?;
            let full = out.len() == STREAM_FRAME;
            if !out.is_empty() && write_frame(&mut wr, &StreamFrame::Data(out)).await.is_err() {
                return Ok(()); // the application went away
            }
            if let Some(f) = failure {
                let _ = write_frame(&mut wr, &StreamFrame::Failed(f)).await;
                return Ok(());
            }
            if end {
                let _ = write_frame(&mut wr, &StreamFrame::End).await;
                return Ok(());
            }
            if !full && rx.changed().await.is_err() {
                return Err(ConnError::from(Stopped));
            }
        }
    };
    let (u, d) = tokio::join!(up, down);
    let _ = wr.shutdown().await;
    // Our FIN may still be unacknowledged: let the connection finish
    // (a bounded wait) before releasing it, which would reset it.
    let _ = wait_for(
        ctx,
        move |n, _| {
            matches!(
                s.state(&n.host),
                StreamState::Closed | StreamState::Failed(_)
            )
            .then_some(())
        },
        Some(LINGER),
    )
    .await?;
    ctx.node
        .call(move |n, now| s.release(&mut n.host, now))
        .await?;
    u.and(d)
}

/// Serves a router's control socket: `Info` and `Stats` requests.
pub async fn serve_router(
    listener: UnixListener,
    node: NodeHandle<xia_router::Router>,
) -> Result<(), Stopped> {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            while let Ok(req) = read_frame::<_, Request>(&mut conn).await {
                let resp = match req {
                    Request::Stats => {
                        node.call(|r, _| {
                            let mut text = format!("{}\n", r.counters());
                            if let Some(c) = r.routing_counters() {
                                text.push_str(&format!("{c:#?}\n"));
                            }
                            let routes: usize = r.tables().tables().iter().map(|t| t.len()).sum();
                            text.push_str(&format!("routes: {routes}\n"));
                            Response::Stats { text }
                        })
                        .await
                    }
                    Request::Info => {
                        node.call(|r, _| Response::Info {
                            hid: r.config().hid.to_string(),
                            dag: r.own_dag().to_line(),
                            name_server: r.config().name_server.as_ref().map(Dag::to_line),
                            gateway: None,
                        })
                        .await
                    }
                    _ => Ok(error("a router answers only Info and Stats")),
                };
                let Ok(resp) = resp else { return };
                if write_frame(&mut conn, &resp).await.is_err() {
                    return;
                }
            }
        });
    }
}
