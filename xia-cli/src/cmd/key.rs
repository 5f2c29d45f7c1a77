//! `xia key …`: self-certifying identities on disk.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use xia_stack::identity::{load_key_file, StoredKey};
use xia_stack::{Identity, Principal};

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Make a new Ed25519 key pair; print the XID it owns.
    New {
        /// Directory for the key files (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// What the XID names.
        #[arg(long, value_enum, default_value_t = Kind::Hid)]
        kind: Kind,
    },
    /// Show the XID and public key in a .key or .pub file.
    Show {
        /// The key file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    /// A host.
    Hid,
    /// A service.
    Sid,
    /// An administrative domain (network).
    Ad,
}

impl Kind {
    fn principal(self) -> Principal {
        match self {
            Kind::Hid => Principal::HID,
            Kind::Sid => Principal::SID,
            Kind::Ad => Principal::AD,
        }
    }
}

pub fn run(cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::New { dir, kind } => {
            let id = Identity::generate(kind.principal(), &mut rand_core::OsRng);
            let path = id.save(&dir)?;
            println!("{}", id.xid());
            eprintln!("wrote {} (secret, mode 0600) and its .pub", path.display());
            Ok(())
        }
        KeyCmd::Show { file } => {
            let stored = load_key_file(&file)?;
            let key = stored.public_key();
            println!("xid:        {}", stored.xid());
            println!("kind:       {}", stored.xid().principal());
            println!(
                "public key: {}",
                key.to_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            let secret = match stored {
                StoredKey::Secret(_) => "present",
                StoredKey::Public { .. } => "absent (public key file)",
            };
            println!("secret key: {secret}");
            Ok(())
        }
    }
}
