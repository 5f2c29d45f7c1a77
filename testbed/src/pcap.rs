//! Link captures as pcap files: XIP in Ethernet frames with EtherType
//! 0xC0DE, so Wireshark's built-in XIP dissector decodes them. Timestamps
//! are virtual time; the file header is written big-endian with microsecond
//! timestamps on every machine, so the same run gives the same bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};
use xia_stack::time::Instant;

/// EtherType of XIP.
pub const ETHERTYPE_XIP: u16 = 0xc0de;

/// The MAC address of port `port` of node `node`: locally administered,
/// unique per interface.
pub fn mac(node: usize, port: usize) -> [u8; 6] {
    let n = (node as u16).to_be_bytes();
    let p = (port as u16).to_be_bytes();
    [0x02, 0x58, n[0], n[1], p[0], p[1]]
}

/// An Ethernet frame carrying an XIP packet.
pub fn frame(dst: [u8; 6], src: [u8; 6], xip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + xip.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE_XIP.to_be_bytes());
    f.extend_from_slice(xip);
    f
}

/// A pcap file being written.
pub struct Capture<W: Write> {
    writer: PcapWriter<W>,
}

impl Capture<BufWriter<File>> {
    /// Creates `path`.
    pub fn create(path: &Path) -> std::io::Result<Capture<BufWriter<File>>> {
        Capture::new(BufWriter::new(File::create(path)?))
    }
}

impl Capture<File> {
    /// Creates `path`, unbuffered: every frame is in the file as soon as it
    /// is written (a daemon may be killed at any time).
    pub fn create_unbuffered(path: &Path) -> std::io::Result<Capture<File>> {
        Capture::new(File::create(path)?)
    }
}

impl<W: Write> Capture<W> {
    /// A capture writing to `w`.
    pub fn new(w: W) -> std::io::Result<Capture<W>> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: 65535,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Big,
        };
        let writer = PcapWriter::with_header(w, header).map_err(std::io::Error::other)?;
        Ok(Capture { writer })
    }

    /// Writes one frame seen at `at`.
    pub fn write(&mut self, at: Instant, frame: &[u8]) -> std::io::Result<()> {
        let ts = Duration::from_nanos(at.as_nanos());
        let pkt = PcapPacket::new(ts, frame.len() as u32, frame);
        self.writer
            .write_packet(&pkt)
            .map(|_| ())
            .map_err(std::io::Error::other)
    }

    /// Flushes and returns the writer.
    pub fn finish(self) -> std::io::Result<W> {
        let mut w = self.writer.into_writer();
        w.flush()?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_frame_bytes() {
        let mut c = Capture::new(Vec::new()).unwrap();
        c.write(
            Instant::from_millis(1500),
            &frame(mac(1, 0), mac(2, 1), &[1, 2]),
        )
        .unwrap();
        let b = c.finish().unwrap();
        assert_eq!(
            &b[..4],
            &[0xa1, 0xb2, 0xc3, 0xd4],
            "big-endian microsecond magic"
        );
        assert_eq!(&b[20..24], &[0, 0, 0, 1], "Ethernet link type");
        assert_eq!(
            &b[24..32],
            &[0, 0, 0, 1, 0, 0x07, 0xa1, 0x20],
            "1 s + 500000 us"
        );
        assert_eq!(&b[40 + 12..40 + 14], &[0xc0, 0xde]);
    }
}
