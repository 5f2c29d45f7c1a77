//! Self-certifying identities: Ed25519 keys whose SHA-1 is an XID.
//!
//! An AD, HID or SID *is* the SHA-1 of its owner's 32-byte Ed25519 public
//! key, so anyone holding the key and a signature can check a claim about
//! the XID without a certificate authority: "SHA-1(presented key) == XID,
//! and the signature verifies" — the rule xia-core uses with RSA-1024.
//!
//! Key generation takes the random number generator as an argument, so the
//! simulator can make reproducible identities from its seed.
//!
//! # Key files
//!
//! A key is stored as a small TOML file (documented in `docs/src/identity.md`):
//!
//! ```toml
//! format = "xia-rs-key-v1"
//! algorithm = "ed25519"
//! kind = "HID"
//! xid = "HID:…40 hex…"
//! public_key = "…64 hex…"
//! secret_key = "…64 hex…"   # absent in the .pub file
//! ```
//!
//! [`Identity::save`] writes `DIR/<kind>-<id hex>.key` with mode 0600 and the
//! public half to `….pub`. [`Identity::load`] refuses a secret key file that
//! others can read (mode & 0o077 ≠ 0) and any file whose `xid` does not
//! match its key.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

pub use ed25519_dalek::Signature;

use crate::xid::{decode_hex, hex_lower, sha1, Principal, Xid};

/// Length of a public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

const FORMAT: &str = "xia-rs-key-v1";
const ALGORITHM: &str = "ed25519";

/// A public key: what a peer presents to prove it owns an XID.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads 32 bytes; `None` if they are not a valid Ed25519 point.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Option<PublicKey> {
        VerifyingKey::from_bytes(bytes).ok().map(PublicKey)
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The XID of this key as a given principal: SHA-1 of the key bytes.
    pub fn xid(&self, principal: Principal) -> Xid {
        Xid::new(principal, sha1(self.0.as_bytes()))
    }

    /// Whether this key certifies `xid`: SHA-1(key) equals its identifier.
    pub fn certifies(&self, xid: &Xid) -> bool {
        sha1(self.0.as_bytes()) == *xid.id()
    }

    /// Checks a signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), IdentityError> {
        self.0
            .verify(message, signature)
            .map_err(|_| IdentityError::BadSignature)
    }

    /// The full self-certification check: the key certifies `xid` and the
    /// signature over `message` verifies.
    pub fn verify_for(
        &self,
        xid: &Xid,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), IdentityError> {
        if !self.certifies(xid) {
            return Err(IdentityError::KeyDoesNotCertify(*xid));
        }
        self.verify(message, signature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex_lower(self.0.as_bytes()))
    }
}

/// Why a signed claim is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// SHA-1 of the presented key is not the XID's identifier.
    #[error("the presented key does not certify {0}")]
    KeyDoesNotCertify(Xid),
    /// The signature does not verify under the key.
    #[error("bad signature")]
    BadSignature,
}

/// A key pair that owns one XID.
#[derive(Clone)]
pub struct Identity {
    principal: Principal,
    key: SigningKey,
}

impl Identity {
    /// A fresh identity of the given principal type (AD, HID, SID …).
    pub fn generate<R: CryptoRngCore + ?Sized>(principal: Principal, rng: &mut R) -> Identity {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Identity::from_secret_bytes(principal, &secret)
    }

    /// An identity from a 32-byte Ed25519 secret key.
    pub fn from_secret_bytes(principal: Principal, secret: &[u8; 32]) -> Identity {
        Identity {
            principal,
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The principal type this identity is used as.
    pub fn principal(&self) -> Principal {
        self.principal
    }

    /// The XID it owns.
    pub fn xid(&self) -> Xid {
        self.public_key().xid(self.principal)
    }

    /// Its public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }

    /// The file name [`Identity::save`] uses: `<kind>-<id hex>.key`.
    pub fn file_stem(&self) -> String {
        format!(
            "{}-{}",
            self.principal.to_string().to_ascii_lowercase(),
            self.xid().id_hex()
        )
    }

    /// Writes `DIR/<stem>.key` (mode 0600, refusing to overwrite) and
    /// `DIR/<stem>.pub`; returns the secret key file's path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, KeyFileError> {
        fs::create_dir_all(dir).map_err(|e| KeyFileError::io(dir, e))?;
        let secret_path = dir.join(format!("{}.key", self.file_stem()));
        let public_path = dir.join(format!("{}.pub", self.file_stem()));
        let mut file = KeyFile::public(self);
        write_new(&public_path, &file.render(), 0o644)?;
        file.secret_key = Some(hex_lower(self.key.as_bytes()));
        write_new(&secret_path, &file.render(), 0o600)?;
        Ok(secret_path)
    }

    /// Loads a secret key file written by [`Identity::save`].
    pub fn load(path: &Path) -> Result<Identity, KeyFileError> {
        match load_key_file(path)? {
            StoredKey::Secret(id) => Ok(id),
            StoredKey::Public { .. } => Err(KeyFileError::NoSecretKey(path.to_path_buf())),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "Identity({})", self.xid())
    }
}

/// An identity serializes as its principal, its XID and its 32-byte
/// secret seed; reading re-derives the key and refuses one whose XID does
/// not match. **The serialized form contains the secret key**: whatever
/// carries it (a host snapshot moving with a VM) must travel over an
/// authenticated, confidential channel and be stored like a key file.
impl Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.principal, self.xid(), self.key.to_bytes()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Identity, D::Error> {
        let (principal, xid, secret) = <(Principal, Xid, [u8; 32])>::deserialize(d)?;
        let id = Identity::from_secret_bytes(principal, &secret);
        if id.xid() != xid {
            return Err(crate::serde_util::invalid(format_args!(
                "the secret key of {xid} does not derive it"
            )));
        }
        Ok(id)
    }
}

/// What a key file holds.
#[derive(Debug, Clone)]
pub enum StoredKey {
    /// A whole identity (a `.key` file).
    Secret(Identity),
    /// A public key and the XID it certifies (a `.pub` file).
    Public {
        /// The XID.
        xid: Xid,
        /// The key.
        key: PublicKey,
    },
}

impl StoredKey {
    /// The XID the file is for.
    pub fn xid(&self) -> Xid {
        match self {
            StoredKey::Secret(id) => id.xid(),
            StoredKey::Public { xid, .. } => *xid,
        }
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            StoredKey::Secret(id) => id.public_key(),
            StoredKey::Public { key, .. } => *key,
        }
    }
}

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a key file of this format.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A secret key that others may read.
    #[error("{path}: secret key file has mode {mode:04o}; it must not be readable by group or others (chmod 600)")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A `.pub` file given where a secret key is needed.
    #[error("{0}: has no secret key")]
    NoSecretKey(PathBuf),
}

impl KeyFileError {
    fn io(path: &Path, source: std::io::Error) -> KeyFileError {
        KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn format(path: &Path, message: impl Into<String>) -> KeyFileError {
        KeyFileError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    algorithm: String,
    kind: String,
    xid: String,
    public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_key: Option<String>,
}

impl KeyFile {
    fn public(id: &Identity) -> KeyFile {
        KeyFile {
            format: FORMAT.into(),
            algorithm: ALGORITHM.into(),
            kind: id.principal.to_string(),
            xid: id.xid().to_string(),
            public_key: hex_lower(&id.public_key().to_bytes()),
            secret_key: None,
        }
    }

    fn render(&self) -> String {
        let what = if self.secret_key.is_some() {
            "# xia-rs identity key. Secret: keep this file private (mode 0600).\n"
        } else {
            "# xia-rs public key. Safe to share.\n"
        };
        format!(
            "{what}{}",
            toml::to_string(self).expect("plain strings serialize")
        )
    }
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), KeyFileError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|e| KeyFileError::io(path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| KeyFileError::io(path, e))
}

fn hex32(path: &Path, field: &str, text: &str) -> Result<[u8; 32], KeyFileError> {
    let mut out = [0u8; 32];
    if text.len() != 64 || !text.is_ascii() {
        return Err(KeyFileError::format(
            path,
            format!("{field} must be 64 hex digits"),
        ));
    }
    decode_hex(text.as_bytes(), &mut out).map_err(|pos| {
        KeyFileError::format(path, format!("{field}: character {pos} is not a hex digit"))
    })?;
    Ok(out)
}

/// Reads a `.key` or `.pub` file, checking the format, that the key
/// certifies the stated XID, and (for a secret key) the file's permissions.
pub fn load_key_file(path: &Path) -> Result<StoredKey, KeyFileError> {
    let text = fs::read_to_string(path).map_err(|e| KeyFileError::io(path, e))?;
    let file: KeyFile =
        toml::from_str(&text).map_err(|e| KeyFileError::format(path, e.message()))?;
    if file.format != FORMAT {
        return Err(KeyFileError::format(
            path,
            format!("format is {:?}, expected {FORMAT:?}", file.format),
        ));
    }
    if file.algorithm != ALGORITHM {
        return Err(KeyFileError::format(
            path,
            format!("algorithm is {:?}, expected {ALGORITHM:?}", file.algorithm),
        ));
    }
    let principal: Principal = file
        .kind
        .parse()
        .map_err(|e| KeyFileError::format(path, format!("kind: {e}")))?;
    let xid: Xid = file
        .xid
        .parse()
        .map_err(|e| KeyFileError::format(path, format!("xid: {e}")))?;
    let public_bytes = hex32(path, "public_key", &file.public_key)?;
    let key = PublicKey::from_bytes(&public_bytes)
        .ok_or_else(|| KeyFileError::format(path, "public_key is not a valid Ed25519 key"))?;
    if xid != key.xid(principal) {
        return Err(KeyFileError::format(
            path,
            format!("xid {xid} is not the SHA-1 of public_key as {principal}"),
        ));
    }
    let Some(secret) = file.secret_key else {
        return Ok(StoredKey::Public { xid, key });
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| KeyFileError::io(path, e))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let id = Identity::from_secret_bytes(principal, &hex32(path, "secret_key", &secret)?);
    if id.public_key() != key {
        return Err(KeyFileError::format(
            path,
            "secret_key does not match public_key",
        ));
    }
    Ok(StoredKey::Secret(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u8);
    impl rand_core::RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest {
                self.0 = self.0.wrapping_add(1);
                *d = self.0;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand_core::CryptoRng for Counter {}

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xia-identity-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn xid_is_sha1_of_public_key_and_signatures_check() {
        let id = Identity::generate(Principal::SID, &mut Counter(0));
        let pk = id.public_key();
        assert_eq!(id.xid().id(), &sha1(&pk.to_bytes()));
        assert_eq!(id.xid().principal(), Principal::SID);
        let sig = id.sign(b"move to AD:b");
        assert_eq!(pk.verify_for(&id.xid(), b"move to AD:b", &sig), Ok(()));
        assert_eq!(
            pk.verify_for(&id.xid(), b"move to AD:c", &sig),
            Err(IdentityError::BadSignature)
        );
        let other = Identity::generate(Principal::SID, &mut Counter(100));
        assert_eq!(
            other
                .public_key()
                .verify_for(&id.xid(), b"move to AD:b", &other.sign(b"move to AD:b")),
            Err(IdentityError::KeyDoesNotCertify(id.xid()))
        );
    }

    #[test]
    fn deterministic_from_rng() {
        let a = Identity::generate(Principal::HID, &mut Counter(7));
        let b = Identity::generate(Principal::HID, &mut Counter(7));
        assert_eq!(a.xid(), b.xid());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_round_trip_and_refuse_loose_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("files");
        let id = Identity::generate(Principal::HID, &mut Counter(3));
        let path = id.save(&dir).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Identity::load(&path).unwrap().xid(), id.xid());
        let public = path.with_extension("pub");
        match load_key_file(&public).unwrap() {
            StoredKey::Public { xid, .. } => assert_eq!(xid, id.xid()),
            other => panic!("expected a public key, got {other:?}"),
        }
        assert!(matches!(
            Identity::load(&public),
            Err(KeyFileError::NoSecretKey(_))
        ));
        assert!(matches!(id.save(&dir), Err(KeyFileError::Io { .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(KeyFileError::InsecurePermissions { mode: 0o644, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let tampered = dir.join("tampered.key");
        let other_xid = Xid::new(Principal::HID, [1; 20]).to_string();
        write_new(
            &tampered,
            &text.replace(&id.xid().to_string(), &other_xid),
            0o600,
        )
        .unwrap();
        let err = Identity::load(&tampered).unwrap_err().to_string();
        assert!(err.contains("is not the SHA-1 of public_key"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
