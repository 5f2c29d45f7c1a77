//! `xia xip …`: XIP packets as hex.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use xia_stack::wire::dump::dump_packet;
use xia_stack::wire::xip::{NextHeader, XipRepr};
use xia_stack::Dag;

use crate::input::{arg_or_stdin, parse_hex, to_hex};

#[derive(Subcommand)]
pub enum XipCmd {
    /// Decode a hex XIP packet into a readable dump.
    Decode {
        /// The packet in hex (whitespace ignored), or `-` for stdin.
        hex: String,
    },
    /// Build an XIP packet and print it as hex.
    Encode {
        /// Destination address (RE or DAG form).
        #[arg(long)]
        dst: String,
        /// Source address (RE or DAG form).
        #[arg(long)]
        src: String,
        /// Next header: a number or data, xcmp, xdgram, xstream, fid.
        #[arg(long, default_value = "data")]
        nxt: String,
        /// Hop limit.
        #[arg(long, default_value_t = xia_stack::wire::xip::DEFAULT_HOP_LIMIT)]
        hlim: u8,
        /// Payload in hex.
        #[arg(long, default_value = "")]
        payload: String,
    },
}

fn next_header(text: &str) -> Result<NextHeader> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "data" => NextHeader::Data,
        "xcmp" => NextHeader::Xcmp,
        "xdgram" => NextHeader::Xdgram,
        "xstream" => NextHeader::Xstream,
        "fid" => NextHeader::Fid,
        n => match n.parse::<u8>() {
            Ok(v) => NextHeader::from(v),
            Err(_) => bail!("--nxt {text:?}: expected 0-255 or data, xcmp, xdgram, xstream, fid"),
        },
    })
}

pub fn run(cmd: XipCmd) -> Result<()> {
    match cmd {
        XipCmd::Decode { hex } => {
            let bytes = parse_hex(&arg_or_stdin(&hex)?)?;
            print!("{}", dump_packet(&bytes).context("not a valid XIP packet")?);
            Ok(())
        }
        XipCmd::Encode {
            dst,
            src,
            nxt,
            hlim,
            payload,
        } => {
            let dst = Dag::parse(&dst).context("--dst")?;
            let src = Dag::parse(&src).context("--src")?;
            let payload = parse_hex(&payload).context("--payload")?;
            let mut repr = XipRepr::new(dst, src, next_header(&nxt)?, payload.len());
            repr.hop_limit = hlim;
            println!("{}", to_hex(&repr.to_bytes(&payload)?));
            Ok(())
        }
    }
}
