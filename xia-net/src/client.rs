//! The application side of the [protocol](crate::api): the socket API
//! over a host daemon, in async Rust. Many applications share one daemon
//! (one host identity).
//!
//! ```no_run
//! # async fn demo() -> Result<(), xia_net::client::ClientError> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let host = xia_net::client::Client::new("/tmp/xia-h1.sock");
//! let mut s = host.connect("echo.example").await?;   // a name or DAG text
//! s.write_all(b"hello").await?;
//! s.shutdown().await?;
//! let mut back = Vec::new();
//! s.read_to_end(&mut back).await?;
//! # Ok(()) }
//! ```
//!
//! [`XStream`] is `AsyncRead + AsyncWrite`; `shutdown` ends our direction
//! (half-close), and a stream that fails (reset, timed out) reads as an
//! error naming why.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use xia_stack::dag::Dag;
use xia_stack::identity::Identity;
use xia_stack::naming::{NameRequest, Registration};
use xia_stack::xid::Xid;

use crate::api::{read_frame, write_frame, FrameError, Request, Response, MAX_FRAME};
use crate::server::{StreamFrame, STREAM_FRAME};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon's socket could not be reached.
    #[error("cannot reach the host daemon at {path}: {source}")]
    Connect {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The conversation with the daemon broke.
    #[error("host daemon: {0}")]
    Frame(#[from] FrameError),
    /// The daemon refused or the network failed (its message).
    #[error("{0}")]
    Failed(String),
    /// An answer that does not fit the request.
    #[error("unexpected answer from the host daemon: {0:?}")]
    Unexpected(Box<Response>),
    /// An address the daemon sent could not be read.
    #[error("bad address from the daemon: {0}")]
    BadAddress(String),
    /// Stream I/O.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a ping got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PingOutcome {
    /// An echo reply.
    Reply {
        /// From whom.
        from: String,
        /// Hop limit left on arrival.
        hop_limit: u8,
        /// Round-trip time.
        rtt: Duration,
        /// Payload bytes.
        len: u32,
    },
    /// An XCMP error.
    Error {
        /// From whom.
        from: String,
        /// What it said.
        what: String,
    },
    /// Nothing in time.
    Timeout,
}

impl PingOutcome {
    /// The ping(8)-style line for request `seq` to `label`; `name` says
    /// how to print the DAG text of an XCMP error's sender.
    pub fn line(&self, seq: u16, label: &str, name: impl Fn(&str) -> String) -> String {
        match self {
            PingOutcome::Reply {
                hop_limit,
                rtt,
                len,
                ..
            } => format!(
                "{} bytes from {label}: xcmp_seq={seq} hlim={hop_limit} time={:.3} ms",
                len + 8,
                rtt.as_secs_f64() * 1e3
            ),
            PingOutcome::Error { from, what } => {
                format!("From {}: xcmp_seq={seq} {what}", name(from))
            }
            PingOutcome::Timeout => format!("Request timeout for xcmp_seq {seq}"),
        }
    }
}

/// What a series of pings got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PingSummary {
    /// Requests sent.
    pub transmitted: u32,
    /// Round-trip times of the replies.
    pub rtts: Vec<Duration>,
    /// Hop limits left on the replies.
    pub hop_limits: Vec<u8>,
    /// XCMP errors.
    pub errors: u32,
}

/// The host's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Its HID.
    pub hid: String,
    /// Its DAG.
    pub dag: String,
    /// The name server it uses.
    pub name_server: Option<String>,
    /// Its gateway's HID, once known.
    pub gateway: Option<String>,
}

/// A host daemon, by the path of its application socket.
#[derive(Clone, Debug)]
pub struct Client {
    path: PathBuf,
}

fn dag(text: &str) -> Result<Dag, ClientError> {
    text.parse()
        .map_err(|_| ClientError::BadAddress(text.to_string()))
}

impl Client {
    /// The daemon listening at `path`.
    pub fn new(path: impl AsRef<Path>) -> Client {
        Client {
            path: path.as_ref().to_path_buf(),
        }
    }

    async fn open(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.path)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.path.clone(),
                source,
            })
    }

    async fn ask(&self, req: Request) -> Result<Response, ClientError> {
        let mut c = self.open().await?;
        write_frame(&mut c, &req).await?;
        match read_frame(&mut c).await? {
            Response::Error { message } => Err(ClientError::Failed(message)),
            r => Ok(r),
        }
    }

    /// Opens a stream to a DAG (xia-core text) or a registered name.
    pub async fn connect(&self, to: &str) -> Result<XStream, ClientError> {
        let (to, by_name) = match to.parse::<Dag>() {
            Ok(d) => (d.to_line(), false),
            Err(_) => (to.to_string(), true),
        };
        let mut c = self.open().await?;
        write_frame(&mut c, &Request::Connect { to, by_name }).await?;
        match read_frame(&mut c).await? {
            Response::Connected { local, peer } => XStream::new(c, &local, &peer),
            Response::Error { message } => Err(ClientError::Failed(message)),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }

    /// Listens on `sid` (or a fresh SID).
    pub async fn listen(&self, sid: Option<Xid>) -> Result<XListener, ClientError> {
        let mut c = self.open().await?;
        write_frame(
            &mut c,
            &Request::Listen {
                sid: sid.map(|s| s.to_string()),
            },
        )
        .await?;
        match read_frame(&mut c).await? {
            Response::Listening { listener, dag: d } => Ok(XListener {
                client: self.clone(),
                _hold: c,
                id: listener,
                dag: dag(&d)?,
            }),
            Response::Error { message } => Err(ClientError::Failed(message)),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }

    /// Binds a datagram socket on `sid` (or a fresh SID).
    pub async fn bind(&self, sid: Option<Xid>) -> Result<XDatagram, ClientError> {
        let mut c = self.open().await?;
        write_frame(
            &mut c,
            &Request::Bind {
                sid: sid.map(|s| s.to_string()),
            },
        )
        .await?;
        match read_frame(&mut c).await? {
            Response::Bound { dag: d } => Ok(XDatagram {
                conn: c,
                dag: dag(&d)?,
            }),
            Response::Error { message } => Err(ClientError::Failed(message)),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }

    /// Resolves a name to its DAG.
    pub async fn resolve(&self, name: &str) -> Result<Dag, ClientError> {
        match self
            .ask(Request::Resolve {
                name: name.to_string(),
            })
            .await?
        {
            Response::Resolved { dag: d } => dag(&d),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }

    /// Registers `name → dag`, signed here by `owner` (whose key must
    /// certify the DAG's intent), with sequence number `seq`.
    pub async fn register(
        &self,
        owner: &Identity,
        name: &str,
        dag: &Dag,
        seq: u64,
    ) -> Result<u64, ClientError> {
        let reg = Registration::sign(owner, name, dag, seq)
            .map_err(|e| ClientError::Failed(e.to_string()))?;
        let signed = NameRequest::Register(Box::new(reg)).to_bytes();
        match self.ask(Request::Register { signed }).await? {
            Response::Registered { seq } => Ok(seq),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }

    /// Publishes a chunk; returns the DAG to fetch it by.
    pub async fn put_chunk(&self, data: Vec<u8>) -> Result<Dag, ClientError> {
        if data.len() > MAX_FRAME - 64 {
            return Err(ClientError::Failed(format!(
                "a chunk of {} bytes is too large",
                data.len()
            )));
        }
        match self.ask(Request::PutChunk { data }).await? {
            Response::Published { dag: d } => dag(&d),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }

    /// Fetches a chunk by its DAG; the bytes are checked against the CID.
    pub async fn fetch_chunk(&self, from: &Dag) -> Result<Vec<u8>, ClientError> {
        match self
            .ask(Request::FetchChunk {
                dag: from.to_line(),
            })
            .await?
        {
            Response::Fetched { data } => Ok(data),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }

    /// Sends one echo request and waits up to `timeout` for its answer.
    pub async fn ping(
        &self,
        dst: &Dag,
        seq: u16,
        size: u16,
        hop_limit: Option<u8>,
        timeout: Duration,
    ) -> Result<PingOutcome, ClientError> {
        let req = Request::Ping {
            dst: dst.to_line(),
            seq,
            size,
            hop_limit,
            timeout_ms: timeout.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        match self.ask(req).await? {
            Response::Pong {
                from,
                hop_limit,
                rtt_us,
                len,
            } => Ok(PingOutcome::Reply {
                from,
                hop_limit,
                rtt: Duration::from_micros(rtt_us),
                len,
            }),
            Response::PingError { from, what } => Ok(PingOutcome::Error { from, what }),
            Response::PingTimeout => Ok(PingOutcome::Timeout),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }

    /// `count` echo requests `interval` apart, each waiting up to `wait`
    /// (ping(8)'s loop); `each` sees every outcome as it comes.
    #[allow(clippy::too_many_arguments)]
    pub async fn ping_series(
        &self,
        dst: &Dag,
        count: u16,
        interval: Duration,
        size: u16,
        hop_limit: Option<u8>,
        wait: Duration,
        mut each: impl FnMut(u16, &PingOutcome),
    ) -> Result<PingSummary, ClientError> {
        let mut sum = PingSummary::default();
        for seq in 0..count {
            if seq > 0 {
                tokio::time::sleep(interval).await;
            }
            sum.transmitted += 1;
            let out = self.ping(dst, seq, size, hop_limit, wait).await?;
            match &out {
                PingOutcome::Reply { hop_limit, rtt, .. } => {
                    sum.rtts.push(*rtt);
                    sum.hop_limits.push(*hop_limit);
                }
                PingOutcome::Error { .. } => sum.errors += 1,
                PingOutcome::Timeout => {}
            }
            each(seq, &out);
        }
        Ok(sum)
    }

    /// The host's addresses.
    pub async fn info(&self) -> Result<Info, ClientError> {
        match self.ask(Request::Info).await? {
            Response::Info {
                hid,
                dag,
                name_server,
                gateway,
            } => Ok(Info {
                hid,
                dag,
                name_server,
                gateway,
            }),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }

    /// The host's counters, as text.
    pub async fn stats(&self) -> Result<String, ClientError> {
        match self.ask(Request::Stats).await? {
            Response::Stats { text } => Ok(text),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }
}

/// A listening stream socket; it closes when dropped.
#[derive(Debug)]
pub struct XListener {
    client: Client,
    // The connection that holds the listener open at the daemon.
    _hold: UnixStream,
    id: u64,
    dag: Dag,
}

impl XListener {
    /// Its DAG (`AD HID SID`).
    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> Result<XStream, ClientError> {
        let mut c = self.client.open().await?;
        write_frame(&mut c, &Request::Accept { listener: self.id }).await?;
        match read_frame(&mut c).await? {
            Response::Accepted { local, peer } => XStream::new(c, &local, &peer),
            Response::Error { message } => Err(ClientError::Failed(message)),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }
}

/// A datagram socket.
#[derive(Debug)]
pub struct XDatagram {
    conn: UnixStream,
    dag: Dag,
}

impl XDatagram {
    /// Its DAG.
    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    /// Sends one datagram.
    pub async fn send_to(&mut self, dst: &Dag, data: &[u8]) -> Result<(), ClientError> {
        write_frame(
            &mut self.conn,
            &Request::SendTo {
                dst: dst.to_line(),
                data: data.to_vec(),
            },
        )
        .await?;
        Ok(())
    }

    /// Waits for the next datagram; returns it and its sender.
    pub async fn recv_from(&mut self) -> Result<(Vec<u8>, Dag), ClientError> {
        match read_frame(&mut self.conn).await? {
            Response::Datagram { from, data } => Ok((data, dag(&from)?)),
            Response::Error { message } => Err(ClientError::Failed(message)),
            r => Err(ClientError::Unexpected(Box::new(r))),
        }
    }
}

/// A stream connection: `AsyncRead + AsyncWrite`.
#[derive(Debug)]
pub struct XStream {
    rd: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    wr: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    unread: Bytes,
    ended: bool,
    local: Dag,
    peer: Dag,
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

impl XStream {
    fn new(c: UnixStream, local: &str, peer: &str) -> Result<XStream, ClientError> {
        let (r, w) = c.into_split();
        Ok(XStream {
            rd: FramedRead::new(r, codec()),
            wr: FramedWrite::new(w, codec()),
            unread: Bytes::new(),
            ended: false,
            local: dag(local)?,
            peer: dag(peer)?,
        })
    }

    /// Our DAG for this connection.
    pub fn local_dag(&self) -> &Dag {
        &self.local
    }

    /// The peer's DAG.
    pub fn peer_dag(&self) -> &Dag {
        &self.peer
    }
}

impl XStream {
    /// After a write failed: the reason the daemon sent, if it sent one
    /// (the stream failed, so it stopped reading) — "connection timed
    /// out" says more than "broken pipe". Data still unread is kept.
    fn why_failed(&mut self, cx: &mut Context<'_>, err: io::Error) -> io::Error {
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut self.rd).poll_next(cx) {
            match postcard::from_bytes::<StreamFrame>(&frame) {
                Ok(StreamFrame::Failed(why)) => {
                    return io::Error::new(io::ErrorKind::ConnectionReset, why);
                }
                Ok(StreamFrame::Data(d)) => {
                    let mut all = self.unread.to_vec();
                    all.extend_from_slice(&d);
                    self.unread = Bytes::from(all);
                }
                _ => break,
            }
        }
        err
    }
}

fn frame_bytes(f: &StreamFrame) -> io::Result<Bytes> {
    postcard::to_stdvec(f)
        .map(Bytes::from)
        .map_err(io::Error::other)
}

impl AsyncRead for XStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.unread.is_empty() {
                let n = self.unread.len().min(buf.remaining());
                let chunk = self.unread.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.rd).poll_next(cx)) {
                None => {
                    self.ended = true;
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                Some(Ok(frame)) => match postcard::from_bytes::<StreamFrame>(&frame) {
                    Ok(StreamFrame::Data(d)) => self.unread = Bytes::from(d),
                    Ok(StreamFrame::End) => self.ended = true,
                    Ok(StreamFrame::Failed(why)) => {
                        self.ended = true;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            why,
                        )));
                    }
                    Err(e) => return Poll::Ready(Err(io::Error::other(e))),
                },
            }
        }
    }
}

impl AsyncWrite for XStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = ready!(Sink::<Bytes>::poll_ready(Pin::new(&mut self.wr), cx)) {
            return Poll::Ready(Err(self.why_failed(cx, e)));
        }
        let n = buf.len().min(STREAM_FRAME);
        let frame = frame_bytes(&StreamFrame::Data(buf[..n].to_vec()))?;
        if let Err(e) = Sink::<Bytes>::start_send(Pin::new(&mut self.wr), frame) {
            return Poll::Ready(Err(self.why_failed(cx, e)));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Sink::<Bytes>::poll_flush(Pin::new(&mut self.wr), cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(self.why_failed(cx, e))),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Sink::<Bytes>::poll_ready(Pin::new(&mut self.wr), cx))?;
        let end = frame_bytes(&StreamFrame::End)?;
        Sink::<Bytes>::start_send(Pin::new(&mut self.wr), end)?;
        Sink::<Bytes>::poll_close(Pin::new(&mut self.wr), cx)
    }
}
