//! The protocol between a host daemon and its applications, over a Unix
//! socket: many applications share one host (one HID, one set of
//! routes), as Xsocket applications share one Click process in xia-core.
//!
//! Each Unix connection starts with one [`Request`] and gets one
//! [`Response`], as length-prefixed frames (`u32` big-endian length, then
//! the message in postcard). What follows depends on the request:
//!
//! - `Connect` / `Accept`: after `Connected` / `Accepted` the connection
//!   *is* the stream — raw bytes both ways, half-close with `shutdown`,
//!   so the client's `XStream` is a plain `AsyncRead + AsyncWrite`.
//! - `Listen`: the connection holds the listener (closing it closes the
//!   listener); accept on new connections with `Accept { listener }`.
//! - `Bind`: datagram mode — `SendTo` frames one way, `Datagram` frames
//!   the other.
//! - anything else: more requests, each answered in turn.
//!
//! DAGs and XIDs travel as text (xia-core's forms); a name is resolved by
//! the daemon.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame: a 16 MiB chunk plus room.
pub const MAX_FRAME: usize = 17 << 20;

/// An application's request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Open a stream to a DAG (text) or, if `by_name`, a registered name.
    Connect {
        /// The DAG or name.
        to: String,
        /// Whether `to` is a name.
        by_name: bool,
    },
    /// Listen on a SID (text), or a fresh one.
    Listen {
        /// The SID.
        sid: Option<String>,
    },
    /// Wait for a connection on a listener this daemon gave out.
    Accept {
        /// The listener's id from `Listening`.
        listener: u64,
    },
    /// Bind a datagram socket on a SID, or a fresh one.
    Bind {
        /// The SID.
        sid: Option<String>,
    },
    /// In datagram mode: send one datagram.
    SendTo {
        /// Destination DAG.
        dst: String,
        /// Payload.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Resolve a name.
    Resolve {
        /// The name.
        name: String,
    },
    /// Register a name: a name-service registration signed by the
    /// application (the daemon never holds its key).
    Register {
        /// `NameRequest::Register` bytes.
        #[serde(with = "serde_bytes")]
        signed: Vec<u8>,
    },
    /// Publish a chunk; answered with the DAG to fetch it by.
    PutChunk {
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Fetch a chunk by its DAG (intent: the CID).
    FetchChunk {
        /// The DAG.
        dag: String,
    },
    /// One XCMP echo request; answered with its reply, an error or a
    /// timeout.
    Ping {
        /// Destination DAG.
        dst: String,
        /// Sequence number.
        seq: u16,
        /// Payload bytes.
        size: u16,
        /// Hop limit (`None`: the default).
        hop_limit: Option<u8>,
        /// How long to wait.
        timeout_ms: u32,
    },
    /// The host's addresses and settings.
    Info,
    /// The host's counters.
    Stats,
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The stream is open; raw bytes follow.
    Connected {
        /// Our DAG for it.
        local: String,
        /// The peer's.
        peer: String,
    },
    /// The listener is open.
    Listening {
        /// Its id, for `Accept`.
        listener: u64,
        /// Its DAG.
        dag: String,
    },
    /// A connection was accepted; raw bytes follow.
    Accepted {
        /// Our DAG for it.
        local: String,
        /// The peer's.
        peer: String,
    },
    /// Datagram mode: the socket's DAG.
    Bound {
        /// Its DAG.
        dag: String,
    },
    /// Datagram mode: a datagram arrived.
    Datagram {
        /// Sender's DAG.
        from: String,
        /// Payload.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A name's DAG.
    Resolved {
        /// The DAG.
        dag: String,
    },
    /// A registration was stored.
    Registered {
        /// Its sequence number.
        seq: u64,
    },
    /// A chunk was published.
    Published {
        /// The DAG to fetch it by.
        dag: String,
    },
    /// A chunk's verified bytes.
    Fetched {
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// An echo reply.
    Pong {
        /// Who answered.
        from: String,
        /// Hop limit left on arrival.
        hop_limit: u8,
        /// Round-trip time in microseconds.
        rtt_us: u64,
        /// Payload bytes.
        len: u32,
    },
    /// An XCMP error about the echo request.
    PingError {
        /// Who sent it.
        from: String,
        /// What it said.
        what: String,
    },
    /// No answer within the timeout.
    PingTimeout,
    /// The host's addresses.
    Info {
        /// Its HID.
        hid: String,
        /// Its DAG (`AD HID`).
        dag: String,
        /// The name server it uses.
        name_server: Option<String>,
        /// Its gateway router's HID (hosts: once XHCP has told it).
        gateway: Option<String>,
    },
    /// The host's counters, as text.
    Stats {
        /// One counter per line.
        text: String,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes is too long")]
    TooLong(usize),
    /// Bytes that are not a message.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
}

/// Writes one message as a frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let bytes = postcard::to_stdvec(msg)?;
    if bytes.len() > MAX_FRAME {
        return Err(FrameError::TooLong(bytes.len()));
    }
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame as a message.
pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(FrameError::TooLong(n));
    }
    let mut buf = vec![0; n];
    r.read_exact(&mut buf).await?;
    Ok(postcard::from_bytes(&buf)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_garbage_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = Request::Connect {
            to: "web.example".into(),
            by_name: true,
        };
        write_frame(&mut a, &req).await.unwrap();
        assert_eq!(read_frame::<_, Request>(&mut b).await.unwrap(), req);
        a.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(FrameError::Malformed(_))
        ));
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(FrameError::TooLong(_))
        ));
        drop(a);
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(FrameError::Closed)
        ));
    }
}
