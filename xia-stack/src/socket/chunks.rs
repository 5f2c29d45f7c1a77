//! Content: [`put_chunk`] and [`fetch_chunk`].

use super::SocketError;
use crate::dag::Dag;
use crate::host::{Host, HostEvent};
use crate::time::Instant;
use crate::xid::Xid;

/// Publishes `bytes` as a chunk on this host (xia-core's `XputChunk`) and
/// returns the DAG to fetch it by: `RE ( AD HID ) CID`, whose intent is
/// the chunk's CID (SHA-1 of the bytes), so that any node on the way
/// holding the chunk may answer.
pub fn put_chunk(host: &mut Host, bytes: &[u8]) -> Result<Dag, SocketError> {
    let cid = host.put_chunk(bytes)?;
    Ok(host.content_dag(cid))
}

/// Fetches the chunk `dag` names (its intent is the CID; typically what
/// [`put_chunk`] returned at the publisher) — xia-core's `XfetchChunk`.
/// The host asks again for missing pieces after a timeout and checks the
/// bytes against the CID; the result comes as a
/// [`HostEvent::ChunkFetched`], which [`ChunkFetch::result`] reads.
pub fn fetch_chunk(host: &mut Host, now: Instant, dag: &Dag) -> Result<ChunkFetch, SocketError> {
    let id = host.fetch_chunk(dag, now)?;
    Ok(ChunkFetch {
        id,
        cid: *dag.intent(),
    })
}

/// A chunk fetch under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkFetch {
    id: u32,
    cid: Xid,
}

impl ChunkFetch {
    /// The request id its [`HostEvent::ChunkFetched`] carries.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The CID asked for.
    pub fn cid(&self) -> Xid {
        self.cid
    }

    /// If `event` ends this fetch: the verified bytes, or why not
    /// ([`SocketError::Content`]: a hash mismatch, or no answer after
    /// every retry).
    pub fn result<'e>(&self, event: &'e HostEvent) -> Option<Result<&'e [u8], SocketError>> {
        match event {
            HostEvent::ChunkFetched { id, result, .. } if *id == self.id => Some(
                result
                    .as_deref()
                    .map_err(|e| SocketError::Content(e.clone())),
            ),
            _ => None,
        }
    }
}
