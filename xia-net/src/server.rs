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

/// Bytes moved per stream-mode frame at most.
pub const STREAM_FRAME: usize = 64 * 1024;

/// What travels on a connection in stream mode.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StreamFrame {
    /// Bytes of the stream.
    Data(Vec<u8>),
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
                    match parse_dag(&to) {
                        Ok(d) => Peer::Dag(d),
                        Err(r) => {
                            write_frame(&mut conn, &r).await?;
                            continue;
                        }
                    }
                };
                let opened = ctx
                    .node
                    .call(move |n, now| XStream::connect(&mut n.host, now, peer))
                    .await?;
                let s = match opened {
                    Ok(s) => s,
                    Err(e) => {
                        write_frame(&mut conn, &error(e)).await?;
                        continue;
                    }
                };
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
                let sid = match parse_sid(&sid) {
                    Ok(s) => s,
                    Err(r) => {
                        write_frame(&mut conn, &r).await?;
                        continue;
                    }
                };
                let bound = ctx
                    .node
                    .call(move |n, _| {
                        let l = XListener::bind(&mut n.host, sid)?;
                        let dag = l.local_dag(&n.host).map(|d| d.to_string());
                        Ok::<_, SocketError>((l, dag.unwrap_or_default()))
                    })
                    .await?;
                let (l, dag) = match bound {
                    Ok(x) => x,
                    Err(e) => {
                        write_frame(&mut conn, &error(e)).await?;
                        continue;
                    }
                };
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
                let Some(l) = l else {
                    write_frame(&mut conn, &error(format!("no listener {listener}"))).await?;
                    continue;
                };
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
                let s = match got {
                    Ok(s) => s,
                    Err(e) => {
                        write_frame(&mut conn, &error(e)).await?;
                        continue;
                    }
                };
                let (local, peer) = dags(ctx, s).await?;
                write_frame(&mut conn, &Response::Accepted { local, peer }).await?;
                return pump(conn, ctx, s).await;
            }
            Request::Bind { sid } => {
                let sid = match parse_sid(&sid) {
                    Ok(s) => s,
                    Err(r) => {
                        write_frame(&mut conn, &r).await?;
                        continue;
                    }
                };
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
                match bound {
                    Ok((s, dag)) => {
                        write_frame(
                            &mut conn,
                            &Response::Bound {
                                dag: dag.to_string(),
                            },
                        )
                        .await?;
                        let r = datagrams(&mut conn, ctx, s).await;
                        ctx.node.call(move |n, _| s.close(&mut n.host)).await?;
                        return r;
                    }
                    Err(e) => write_frame(&mut conn, &error(e)).await?,
                }
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
            let show = |d: Option<Dag>| d.map(|d| d.to_string()).unwrap_or_default();
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
                    dag: n.host.dag().to_string(),
                    name_server: n.host.name_server().map(|d| d.to_string()),
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
                        Ok(dag) => Response::Resolved {
                            dag: dag.to_string(),
                        },
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
                    Ok(dag) => Response::Published {
                        dag: dag.to_string(),
                    },
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
                                    from: from.to_string(),
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
        from: from.to_string(),
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
                    out.push((from.to_string(), buf[..len].to_vec()));
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
async fn pump(conn: UnixStream, ctx: &Ctx, s: XStream) -> Result<(), ConnError> {
    let (mut rd, mut wr) = conn.into_split();
    let mut rx = ctx.changed.clone();
    let mut pending: Vec<u8> = Vec::new();
    let (mut app_done, mut net_done, mut closed) = (false, false, false);
    let mut incoming = Box::pin(read_frame_owned(&mut rd));
    let result = loop {
        rx.borrow_and_update();
        let data = std::mem::take(&mut pending);
        let close_now = app_done && !closed;
        let step = ctx
            .node
            .call(move |n, now| {
                let host = &mut n.host;
                let mut written = 0;
                let mut failure = None;
                if !data.is_empty() {
                    match s.write(host, now, &data) {
                        Ok(k) => written = k,
                        Err(SocketError::WouldBlock) => {}
                        Err(e) => failure = Some(e.to_string()),
                    }
                }
                let mut did_close = false;
                if close_now && written == data.len() && failure.is_none() {
                    let _ = s.close(host, now);
                    did_close = true;
                }
                // Read until the frame is full, nothing is left, or the
                // end: a short read may be followed by the end of the
                // stream, which no further event would announce.
                let mut out = Vec::new();
                let mut buf = vec![0u8; STREAM_FRAME];
                let mut end = false;
                while out.len() < STREAM_FRAME {
                    let room = STREAM_FRAME - out.len();
                    match s.read(host, now, &mut buf[..room]) {
                        Ok(0) => {
                            end = true;
                            break;
                        }
                        Ok(k) => out.extend_from_slice(&buf[..k]),
                        Err(SocketError::WouldBlock) => break,
                        Err(e) => {
                            failure.get_or_insert(e.to_string());
                            break;
                        }
                    }
                }
                let over = matches!(s.state(host), StreamState::Closed | StreamState::Failed(_));
                (data, written, did_close, out, end, failure, over)
            })
            .await;
        let (data, written, did_close, out, end, failure, over) = match step {
            Ok(x) => x,
            Err(e) => break Err(e.into()),
        };
        pending = data[written..].to_vec();
        closed |= did_close;
        let more = out.len() == STREAM_FRAME && !end;
        if !out.is_empty() && write_frame(&mut wr, &StreamFrame::Data(out)).await.is_err() {
            break Ok(()); // the application went away
        }
        if let Some(f) = failure {
            let _ = write_frame(&mut wr, &StreamFrame::Failed(f)).await;
            break Ok(());
        }
        if end && !net_done {
            net_done = true;
            let _ = write_frame(&mut wr, &StreamFrame::End).await;
        }
        if over && net_done && (closed || app_done) {
            break Ok(());
        }
        if more {
            continue;
        }
        tokio::select! {
            r = &mut incoming, if pending.is_empty() && !app_done => {
                match r {
                    Ok(StreamFrame::Data(d)) => pending = d,
                    Ok(StreamFrame::End) | Err(FrameError::Closed) => app_done = true,
                    Ok(StreamFrame::Failed(_)) => app_done = true,
                    Err(e) => break Err(e.into()),
                }
                drop(incoming);
                incoming = Box::pin(read_frame_owned(&mut rd));
            }
            r = rx.changed() => if r.is_err() { break Err(Stopped.into()) },
        }
    };
    drop(incoming);
    let _ = wr.shutdown().await;
    ctx.node
        .call(move |n, now| s.release(&mut n.host, now))
        .await?;
    result
}

async fn read_frame_owned(
    rd: &mut tokio::net::unix::OwnedReadHalf,
) -> Result<StreamFrame, FrameError> {
    read_frame(rd).await
}
