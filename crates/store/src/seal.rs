//! Sealing of token payloads.
//!
//! The key is derived from the token itself (HKDF-SHA256 over the full token string), so
//! only a holder of the token can open its record: neither a database dump nor an operator
//! with the server's secret key can. The record's clear fields (kind, username, provider,
//! challenge hash) are bound as associated data, so a record edited in the store, or a
//! sealed payload moved under another token's hash, fails to open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use tessera_entity::{ChallengeHash, Payload, Token, TokenType};

/// Format version, the first byte of every sealed payload.
const VERSION: u8 = 1;
const HKDF_SALT: &[u8] = b"tessera/token-seal";
const HKDF_INFO: &[u8] = b"v1 payload key";

/// The clear fields of a record, bound to its seal as associated data.
pub struct Binding<'a> {
    /// The kind.
    pub kind: TokenType,
    /// The user.
    pub username: Option<&'a str>,
    /// The OIDC provider.
    pub provider_id: Option<&'a str>,
    /// The challenge hash.
    pub challenge_hash: Option<&'a ChallengeHash>,
}

impl Binding<'_> {
    fn associated_data(&self) -> Vec<u8> {
        // Length-prefixed fields: no two different bindings encode alike.
        let mut aad = Vec::with_capacity(128);
        let mut field = |bytes: Option<&[u8]>| match bytes {
            None => aad.push(0),
            Some(b) => {
                aad.push(1);
                aad.extend_from_slice(&(b.len() as u32).to_be_bytes());
                aad.extend_from_slice(b);
            }
        };
        field(Some(self.kind.as_ref().as_bytes()));
        field(self.username.map(str::as_bytes));
        field(self.provider_id.map(str::as_bytes));
        field(self.challenge_hash.map(|h| &h.0[..]));
        aad
    }
}

fn cipher(token: &Token) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), token.expose().as_bytes());
    let mut key = [0u8; 32];
    hk.expand(HKDF_INFO, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    ChaCha20Poly1305::new(&Key::from(key))
}

// Every token is 256 fresh random bits, so every derived key seals exactly one message:
// a fixed nonce is safe and saves storing one.
fn nonce() -> Nonce {
    Nonce::from([0u8; 12])
}

/// Seals `payload` for `token`, bound to the record's clear fields.
pub fn seal(token: &Token, binding: &Binding<'_>, payload: &Payload) -> Vec<u8> {
    let plain = serde_json::to_vec(payload).expect("a payload always serialises");
    let aad = binding.associated_data();
    let sealed = cipher(token)
        .encrypt(
            &nonce(),
            AeadPayload {
                msg: &plain,
                aad: &aad,
            },
        )
        .expect("ChaCha20-Poly1305 encryption of a small message cannot fail");
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a sealed payload; `None` if it was not sealed for this token and binding.
pub fn open(token: &Token, binding: &Binding<'_>, sealed: &[u8]) -> Option<Payload> {
    let (&version, body) = sealed.split_first()?;
    if version != VERSION {
        return None;
    }
    let aad = binding.associated_data();
    let plain = cipher(token)
        .decrypt(
            &nonce(),
            AeadPayload {
                msg: body,
                aad: &aad,
            },
        )
        .ok()?;
    serde_json::from_slice(&plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_entity::Challenge;

    fn payload() -> Payload {
        Payload {
            nonce: Some("n-123".into()),
            code_verifier: Some("verifier-xyz".into()),
            code_hash: None,
            data: Some(serde_json::json!({"return_to": "/home"})),
            provider_id_is_number: false,
        }
    }

    fn binding(username: Option<&str>) -> Binding<'_> {
        Binding {
            kind: TokenType::OidcState,
            username,
            provider_id: Some("1"),
            challenge_hash: None,
        }
    }

    #[test]
    fn round_trip() {
        let t = Token::generate(TokenType::OidcState);
        let sealed = seal(&t, &binding(None), &payload());
        assert_eq!(open(&t, &binding(None), &sealed), Some(payload()));
    }

    #[test]
    fn sealed_bytes_do_not_contain_the_secrets() {
        let t = Token::generate(TokenType::OidcState);
        let sealed = seal(&t, &binding(None), &payload());
        let hay = String::from_utf8_lossy(&sealed);
        assert!(!hay.contains("verifier-xyz") && !hay.contains("n-123") && !hay.contains("/home"));
    }

    #[test]
    fn other_token_or_edited_binding_does_not_open() {
        let t = Token::generate(TokenType::OidcState);
        let other = Token::generate(TokenType::OidcState);
        let sealed = seal(&t, &binding(None), &payload());
        assert!(open(&other, &binding(None), &sealed).is_none());
        assert!(open(&t, &binding(Some("mallory")), &sealed).is_none());
        let ch = Challenge::new("c").hash();
        let bound = Binding {
            challenge_hash: Some(&ch),
            ..binding(None)
        };
        assert!(open(&t, &bound, &sealed).is_none());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(open(&t, &binding(None), &flipped).is_none());
        assert!(open(&t, &binding(None), &[]).is_none());
    }
}
