//! Secrets at rest: TOTP secrets (and every other secret the service must read back) are
//! encrypted with XChaCha20-Poly1305 under a key derived by HKDF-SHA256 from
//! `TESSERA_SECRET_KEY`.
//!
//! Every ciphertext starts with the id of the key that sealed it, so a new key can be
//! rolled in while secrets sealed under the previous ones (`TESSERA_PREVIOUS_SECRET_KEYS`)
//! still open; `tessera keys rotate` then re-seals them under the current key. The caller
//! binds each ciphertext to its place (for example `totp:<user id>`) as associated data,
//! so a ciphertext copied to another row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;
use std::path::{Path, PathBuf};
use tessera_entity::hex;

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const HKDF_SALT: &[u8] = b"tessera/secrets-at-rest";

/// The shortest accepted `TESSERA_SECRET_KEY`, in characters.
pub const MIN_KEY_LEN: usize = 32;

/// Why a secret did not open, or a key was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The ciphertext names a key that is neither the current nor a previous one.
    #[error("sealed under an unknown key {0}; add it to TESSERA_PREVIOUS_SECRET_KEYS")]
    UnknownKey(String),
    /// The ciphertext is damaged, or belongs to another place.
    #[error("the secret does not open (damaged, or moved from another row)")]
    Corrupt,
    /// A configured key is too short.
    #[error("a secret key must be at least {MIN_KEY_LEN} characters")]
    TooShort,
    /// The generated key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One derived key and its id.
struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
    /// Keys [`KeyRing::mac`]: derived apart from the encryption key.
    mac_key: [u8; 32],
}

impl Key {
    fn derive(secret: &str) -> Result<Key, SecretError> {
        if secret.chars().count() < MIN_KEY_LEN {
            return Err(SecretError::TooShort);
        }
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), secret.as_bytes());
        let mut key = [0u8; 32];
        hk.expand(b"v1 encryption key", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut id = [0u8; KEY_ID_LEN];
        hk.expand(b"v1 key id", &mut id)
            .expect("8 bytes is a valid HKDF-SHA256 output length");
        let mut mac_key = [0u8; 32];
        hk.expand(b"v1 mac key", &mut mac_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(Key {
            id,
            cipher: XChaCha20Poly1305::new(&key.into()),
            mac_key,
        })
    }
}

/// The current key and the previous ones still accepted for opening.
pub struct KeyRing {
    current: Key,
    previous: Vec<Key>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &hex(&self.current.id))
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl KeyRing {
    /// A ring sealing with `current` and also opening with each of `previous`.
    pub fn new(current: &str, previous: &[&str]) -> Result<KeyRing, SecretError> {
        Ok(KeyRing {
            current: Key::derive(current)?,
            previous: previous
                .iter()
                .map(|k| Key::derive(k))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A ring over a fresh random key, for tests and throwaway instances.
    pub fn ephemeral() -> KeyRing {
        KeyRing::new(&random_key(), &[]).expect("a generated key is long enough")
    }

    /// The id of the current key, as hex.
    pub fn current_id(&self) -> String {
        hex(&self.current.id)
    }

    /// Seals `plain`, bound to `place`, under the current key.
    pub fn seal(&self, place: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's generator is available");
        let body = self
            .current
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: place.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a small message cannot fail");
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// HMAC-SHA256 of `data` under the current key, bound to `place`, as hex: a keyed hash
    /// for values that must be compared but never stored in clear (used TOTP codes).
    /// HKDF's extract step is exactly HMAC(salt, input), so no second MAC crate is needed.
    pub fn mac(&self, place: &str, data: &[u8]) -> String {
        hex(&self.mac_bytes(place, data))
    }

    /// [`KeyRing::mac`] as its 32 bytes.
    pub fn mac_bytes(&self, place: &str, data: &[u8]) -> Vec<u8> {
        let mut input = Vec::with_capacity(place.len() + 1 + data.len());
        input.extend_from_slice(place.as_bytes());
        input.push(0);
        input.extend_from_slice(data);
        let (tag, _) = Hkdf::<Sha256>::extract(Some(&self.current.mac_key), &input);
        tag.to_vec()
    }

    /// Opens a ciphertext made by [`KeyRing::seal`] for `place`, with whichever key it names.
    pub fn open(&self, place: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < 1 + KEY_ID_LEN + NONCE_LEN || sealed[0] != VERSION {
            return Err(SecretError::Corrupt);
        }
        let id = &sealed[1..1 + KEY_ID_LEN];
        let nonce: [u8; NONCE_LEN] = sealed[1 + KEY_ID_LEN..1 + KEY_ID_LEN + NONCE_LEN]
            .try_into()
            .expect("sliced to the nonce length");
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| SecretError::UnknownKey(hex(id)))?;
        key.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[1 + KEY_ID_LEN + NONCE_LEN..],
                    aad: place.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Corrupt)
    }

    /// Whether `sealed` is under the current key (else `tessera keys rotate` re-seals it).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.get(1..1 + KEY_ID_LEN) == Some(&self.current.id[..])
    }
}

/// 32 random bytes, base64url: a fresh secret key.
pub fn random_key() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's generator is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The key file kept beside an embedded SQLite database: `FILE.key`.
pub fn key_file_for(database_url: &str) -> Option<PathBuf> {
    let path = tessera_backend::sql::sqlite_file(database_url)?;
    Some(PathBuf::from(format!("{}.key", path.display())))
}

/// Reads the key at `path`, or creates it (mode 0600) on first use; answers the key and
/// whether it was just created.
pub fn load_or_create_key_file(path: &Path) -> Result<(String, bool), SecretError> {
    let err = |source| SecretError::KeyFile {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(k) => return Ok((k.trim().to_owned(), false)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        Err(_) => {}
    }
    let key = random_key();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(key.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
            Ok((key, true))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path)
            .map(|k| (k.trim().to_owned(), false))
            .map_err(err),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn seals_open_only_in_their_place_and_under_a_known_key() {
        let ring = KeyRing::new(A, &[]).unwrap();
        let sealed = ring.seal("totp:1", b"JBSWY3DPEHPK3PXP");
        assert_eq!(ring.open("totp:1", &sealed).unwrap(), b"JBSWY3DPEHPK3PXP");
        assert!(matches!(
            ring.open("totp:2", &sealed),
            Err(SecretError::Corrupt)
        ));
        assert!(
            !sealed.windows(16).any(|w| w == b"JBSWY3DPEHPK3PXP"),
            "the plain secret is not in the ciphertext"
        );
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(matches!(
            ring.open("totp:1", &damaged),
            Err(SecretError::Corrupt)
        ));

        let other = KeyRing::new(B, &[]).unwrap();
        assert!(matches!(
            other.open("totp:1", &sealed),
            Err(SecretError::UnknownKey(_))
        ));
    }

    #[test]
    fn a_rotated_ring_opens_old_secrets_and_knows_what_to_reseal() {
        let old = KeyRing::new(A, &[]).unwrap();
        let sealed = old.seal("totp:7", b"secret");
        let rotated = KeyRing::new(B, &[A]).unwrap();
        assert_eq!(rotated.open("totp:7", &sealed).unwrap(), b"secret");
        assert!(!rotated.is_current(&sealed));
        let resealed = rotated.seal("totp:7", b"secret");
        assert!(rotated.is_current(&resealed));
        assert_ne!(old.current_id(), rotated.current_id());
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            KeyRing::new("short", &[]),
            Err(SecretError::TooShort)
        ));
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let path = key_file_for(&url).unwrap();
        assert_eq!(path, dir.path().join("t.db.key"));
        let (k1, created) = load_or_create_key_file(&path).unwrap();
        assert!(created);
        let (k2, created) = load_or_create_key_file(&path).unwrap();
        assert!(!created);
        assert_eq!(k1, k2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(key_file_for("postgres://x/y").is_none());
    }
}
