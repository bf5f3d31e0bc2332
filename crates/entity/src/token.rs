//! Tokens, their hashes and challenges.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;

use crate::TokenType;

/// Number of random bytes in a token.
pub const TOKEN_BYTES: usize = 32;
/// Length of the base64url body of a token (32 bytes, no padding).
const BODY_LEN: usize = 43;

/// A token as handed to its holder: a per-kind prefix and 32 random bytes in base64url.
///
/// Neither `Debug` nor `Display` shows the secret; read it with [`Token::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    kind: TokenType,
    value: String,
}

impl Token {
    /// Draws a fresh token of `kind` from the operating system's random generator.
    ///
    /// # Panics
    ///
    /// Only when the operating system cannot provide randomness at all, in which case no
    /// token may be issued safely.
    pub fn generate(kind: TokenType) -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
        let mut value = String::with_capacity(kind.prefix().len() + BODY_LEN);
        value.push_str(kind.prefix());
        URL_SAFE_NO_PAD.encode_string(bytes, &mut value);
        Token { kind, value }
    }

    /// Reads a token presented by a client as a token of `kind`.
    ///
    /// Answers `None` for anything that is not a well-formed token of that kind; callers treat
    /// that exactly like an unknown token, so the answer reveals nothing.
    pub fn parse(kind: TokenType, presented: &str) -> Option<Self> {
        let body = presented.strip_prefix(kind.prefix())?;
        if body.len() != BODY_LEN
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        // 43 characters of base64url carry 258 bits: the last character must leave the two
        // spare bits at zero, or the same 32 bytes would have four spellings.
        let mut bytes = [0u8; TOKEN_BYTES];
        let n = URL_SAFE_NO_PAD.decode_slice(body, &mut bytes).ok()?;
        (n == TOKEN_BYTES).then(|| Token {
            kind,
            value: presented.to_owned(),
        })
    }

    /// The kind this token was made for.
    pub fn kind(&self) -> TokenType {
        self.kind
    }

    /// The secret itself, to hand to its holder once.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The SHA-256 of the token: the only form in which it is stored.
    pub fn hash(&self) -> TokenHash {
        TokenHash(sha256(self.value.as_bytes()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}<redacted>)", self.kind.prefix())
    }
}

/// SHA-256 of a token: the key it is stored and looked up under.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash as bytes, for a binary column.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, for key-value stores.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but a short form is enough to correlate log lines.
        write!(f, "TokenHash({}…)", &hex(&self.0[..4]))
    }
}

/// A value a token is bound to, held by the client somewhere other than the token (an
/// HttpOnly cookie, for example), so that the token alone is useless.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge(String);

impl Challenge {
    /// Wraps a challenge value.
    pub fn new(value: impl Into<String>) -> Self {
        Challenge(value.into())
    }

    /// A fresh random challenge (32 bytes, base64url), for cookies.
    ///
    /// # Panics
    ///
    /// Only when the operating system cannot provide randomness.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
        Challenge(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The value, to hand to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the challenge: the only form in which it is stored.
    pub fn hash(&self) -> ChallengeHash {
        ChallengeHash(sha256(self.0.as_bytes()))
    }
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Challenge(<redacted>)")
    }
}

/// SHA-256 of a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChallengeHash(pub [u8; 32]);

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_prefix_and_43_char_body_and_parse_back() {
        let custom: TokenType = "x_invite".parse().unwrap();
        for kind in TokenType::BUILTIN.into_iter().chain([custom]) {
            let t = Token::generate(kind);
            assert!(t.expose().starts_with(kind.prefix()));
            assert_eq!(t.expose().len(), kind.prefix().len() + BODY_LEN);
            let parsed = Token::parse(kind, t.expose()).expect("own token parses");
            assert_eq!(parsed.hash(), t.hash());
        }
    }

    #[test]
    fn tokens_are_distinct() {
        let a = Token::generate(TokenType::PreAuth);
        let b = Token::generate(TokenType::PreAuth);
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn parse_rejects_other_kinds_and_malformed_input() {
        let t = Token::generate(TokenType::PreAuth);
        assert!(Token::parse(TokenType::PasswordReset, t.expose()).is_none());
        assert!(Token::parse(TokenType::PreAuth, "").is_none());
        assert!(Token::parse(TokenType::PreAuth, "tsr_pa_short").is_none());
        let mut bad = t.expose().to_owned();
        bad.pop();
        bad.push('!');
        assert!(Token::parse(TokenType::PreAuth, &bad).is_none());
        let mut long = t.expose().to_owned();
        long.push('A');
        assert!(Token::parse(TokenType::PreAuth, &long).is_none());
        // Non-canonical last character (spare bits set) is refused.
        let mut noncanon = format!("tsr_pa_{}", "A".repeat(42));
        noncanon.push('B');
        assert!(Token::parse(TokenType::PreAuth, &noncanon).is_none());
        assert!(Token::parse(TokenType::PreAuth, &format!("tsr_pa_{}", "A".repeat(43))).is_some());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = Token::generate(TokenType::Download);
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.expose()[7..]));
        let c = Challenge::generate();
        assert!(!format!("{c:?}").contains(c.expose()));
    }

    #[test]
    fn hash_is_sha256_of_the_whole_token() {
        // SHA-256("abc") from FIPS 180-2.
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
