//! Raw Ethernet links: XIP frames (EtherType 0xC0DE) and XARP (0x9990) on
//! a network interface through an AF_PACKET socket (`pnet_datalink`), for
//! veth and TAP setups. Needs CAP_NET_RAW (root).
//!
//! Receiving blocks, so each interface has a reader thread that hands the
//! frames of those two EtherTypes to the driver over a bounded channel
//! (frames are dropped, and counted, when the driver falls behind).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::xarp::{ETHERTYPE_XARP, ETHERTYPE_XIP};

/// Why an interface could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EtherError {
    /// No interface of that name.
    #[error("no network interface {0:?}")]
    NoInterface(String),
    /// It has no MAC address (not Ethernet).
    #[error("interface {0:?} has no MAC address")]
    NoMac(String),
    /// Opening the AF_PACKET socket failed (not root?).
    #[error("cannot open {name:?} for raw Ethernet: {source} (needs root or CAP_NET_RAW)")]
    Open {
        /// The interface.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not supported on this platform.
    #[error("raw Ethernet links need Linux")]
    Unsupported,
}

/// An open Ethernet interface.
pub struct EtherLink {
    name: String,
    mac: [u8; 6],
    #[cfg(target_os = "linux")]
    tx: Box<dyn pnet_datalink::DataLinkSender>,
    #[cfg(target_os = "linux")]
    rx: Option<Box<dyn pnet_datalink::DataLinkReceiver>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for EtherLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtherLink")
            .field("name", &self.name)
            .field("mac", &self.mac)
            .finish()
    }
}

impl EtherLink {
    /// Opens interface `name`.
    #[cfg(target_os = "linux")]
    pub fn open(name: &str) -> Result<EtherLink, EtherError> {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| EtherError::NoInterface(name.to_string()))?;
        let mac = iface
            .mac
            .ok_or_else(|| EtherError::NoMac(name.to_string()))?
            .octets();
        let config = pnet_datalink::Config {
            read_timeout: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let open = |source| EtherError::Open {
            name: name.to_string(),
            source,
        };
        match pnet_datalink::channel(&iface, config).map_err(open)? {
            pnet_datalink::Channel::Ethernet(tx, rx) => Ok(EtherLink {
                name: name.to_string(),
                mac,
                tx,
                rx: Some(rx),
                dropped: Arc::new(AtomicU64::new(0)),
            }),
            _ => Err(open(std::io::Error::other("not an Ethernet channel"))),
        }
    }

    /// Opens interface `name`.
    #[cfg(not(target_os = "linux"))]
    pub fn open(_name: &str) -> Result<EtherLink, EtherError> {
        Err(EtherError::Unsupported)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Frames dropped because the driver fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Starts the reader thread: frames go to `to` tagged with `index`.
    pub(crate) fn start_reader(&mut self, index: usize, to: mpsc::Sender<(usize, Vec<u8>)>) {
        #[cfg(target_os = "linux")]
        if let Some(mut rx) = self.rx.take() {
            let dropped = self.dropped.clone();
            let name = self.name.clone();
            let _ = std::thread::Builder::new()
                .name(format!("xia-ether-{name}"))
                .spawn(move || loop {
                    match rx.next() {
                        Ok(f) if f.len() >= 14 => {
                            let et = u16::from_be_bytes([f[12], f[13]]);
                            if et != ETHERTYPE_XIP && et != ETHERTYPE_XARP {
                                continue;
                            }
                            match to.try_send((index, f.to_vec())) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    dropped.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                        Ok(_) => {}
                        // Read timeouts let the thread notice the driver
                        // has gone.
                        Err(_) => {
                            if to.is_closed() {
                                return;
                            }
                        }
                    }
                });
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (index, to);
    }

    /// Puts a frame on the wire.
    pub(crate) fn send(&mut self, frame: &[u8]) {
        #[cfg(target_os = "linux")]
        if let Some(Err(e)) = self.tx.send_to(frame, None) {
            tracing::debug!("sending on {}: {e}", self.name);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = frame;
    }
}
