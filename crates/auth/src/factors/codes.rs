//! Second factors: TOTP (RFC 6238 through totp-rs), backup codes and mailed codes.
//!
//! TOTP here is what authenticator apps expect: 6 digits, 30-second windows, HMAC-SHA-1,
//! and the previous, current and next window accepted. [`matching_step`] answers *which*
//! window matched, because replay prevention records that window, not the moment of use.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Totp};

/// Digits of a TOTP code.
pub const DIGITS: u8 = 6;
/// Seconds per TOTP window.
pub const STEP: u64 = 30;
/// Windows accepted on each side of the current one.
pub const SKEW: u64 = 1;
/// Bytes of a new TOTP secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;
/// How many backup codes a user holds.
pub const BACKUP_CODES: usize = 10;

/// The alphabet of backup codes: no `0/O` or `1/I` to misread.
const BACKUP_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's generator is available");
    b
}

/// A fresh TOTP secret.
pub fn new_secret() -> Vec<u8> {
    random_bytes::<SECRET_BYTES>().to_vec()
}

fn totp_with(secret: &[u8], algorithm: Algorithm, digits: u8) -> Totp {
    Builder::new()
        .with_algorithm(algorithm)
        .with_digits(digits)
        .with_skew(SKEW as u16)
        .with_step_duration(STEP)
        .with_secret(secret.to_vec())
        .build_noncompliant()
}

/// The code of window `step` (Unix time / 30).
pub fn code_at(secret: &[u8], step: u64) -> String {
    totp_with(secret, Algorithm::SHA1, DIGITS)
        .generate(step * STEP)
        .to_string()
}

/// The window whose code `code` is, among the previous, current and next window at
/// `unix_time`; compared in constant time.
pub fn matching_step(secret: &[u8], code: &str, unix_time: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = unix_time / STEP;
    let mut found = None;
    // Every candidate is computed and compared, so the time taken does not tell which
    // window matched.
    for step in now.saturating_sub(SKEW)..=now + SKEW {
        let expected = code_at(secret, step);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

/// What a user needs to add the secret to an authenticator app.
pub struct Enrolment {
    /// The secret, base32 (to type in by hand).
    pub secret: String,
    /// The `otpauth://totp/...` URI.
    pub otpauth_uri: String,
    /// That URI as a QR code, a PNG, base64-encoded.
    pub qr_png_base64: String,
}

/// The enrolment data of `secret` for `account` at `issuer`.
pub fn enrolment(secret: &[u8], issuer: &str, account: &str) -> Result<Enrolment, String> {
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW as u16)
        .with_step_duration(STEP)
        .with_secret(secret.to_vec())
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Enrolment {
        secret: totp.secret().to_base32(),
        otpauth_uri: totp.to_url().map_err(|e| e.to_string())?,
        qr_png_base64: totp.to_qr_base64().map_err(|e| e.to_string())?,
    })
}

/// A fresh backup code, `XXXX-XXXX` (40 bits).
pub fn new_backup_code() -> String {
    let bytes = random_bytes::<8>();
    let chars: String = bytes
        .iter()
        .map(|b| BACKUP_ALPHABET[(b & 31) as usize] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// The canonical form of a typed backup code: case, spaces and the dash do not matter.
/// `None` when it cannot be one.
pub fn normalize_backup_code(input: &str) -> Option<String> {
    let chars: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (chars.len() == 8 && chars.bytes().all(|b| BACKUP_ALPHABET.contains(&b)))
        .then(|| format!("{}-{}", &chars[..4], &chars[4..]))
}

/// A fresh 6-digit code for mail, uniform over 000000..=999999.
pub fn new_email_code() -> String {
    loop {
        let n = u32::from_le_bytes(random_bytes::<4>());
        // Rejection sampling: the top partial range would bias low codes.
        if n < 4_294_000_000 {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

/// Whether `input` has the shape of a mailed code (six digits).
pub fn is_email_code(input: &str) -> bool {
    let t = input.trim();
    t.len() == 6 && t.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the same seed per algorithm, 8 digits, at the six test times.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let sha1 = b"12345678901234567890".to_vec();
        let sha256 = b"12345678901234567890123456789012".to_vec();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".to_vec();
        let cases: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, c1, c256, c512) in cases {
            assert_eq!(
                totp_with(&sha1, Algorithm::SHA1, 8).generate(t).to_string(),
                c1,
                "SHA1 t={t}"
            );
            assert_eq!(
                totp_with(&sha256, Algorithm::SHA256, 8)
                    .generate(t)
                    .to_string(),
                c256,
                "SHA256 t={t}"
            );
            assert_eq!(
                totp_with(&sha512, Algorithm::SHA512, 8)
                    .generate(t)
                    .to_string(),
                c512,
                "SHA512 t={t}"
            );
        }
        // Six digits are the low six of the same truncation.
        assert_eq!(code_at(&sha1, 59 / STEP), "287082");
    }

    #[test]
    fn the_matching_window_is_named_and_only_three_are_accepted() {
        let secret = new_secret();
        let now = 1_800_000_015;
        let step = now / STEP;
        for (s, expected) in [
            (step - 1, Some(step - 1)),
            (step, Some(step)),
            (step + 1, Some(step + 1)),
        ] {
            assert_eq!(matching_step(&secret, &code_at(&secret, s), now), expected);
        }
        for far in [step - 2, step + 2] {
            let code = code_at(&secret, far);
            // A far code may collide with a near one by chance (1 in 10^6 per window).
            if (step - 1..=step + 1).all(|s| code_at(&secret, s) != code) {
                assert_eq!(matching_step(&secret, &code, now), None);
            }
        }
        for bad in ["", "12345", "1234567", "abcdef", "12 456"] {
            assert_eq!(matching_step(&secret, bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn enrolment_names_the_issuer_and_account() {
        let secret = new_secret();
        let e = enrolment(&secret, "Tessera", "alice").unwrap();
        assert!(
            e.otpauth_uri.starts_with("otpauth://totp/Tessera:alice?"),
            "{}",
            e.otpauth_uri
        );
        assert!(e.otpauth_uri.contains(&format!("secret={}", e.secret)));
        assert_eq!(e.secret.len(), 32, "160 bits in base32");
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(&e.qr_png_base64)
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn backup_codes_are_normalised() {
        let code = new_backup_code();
        assert_eq!(code.len(), 9);
        assert_eq!(normalize_backup_code(&code).as_deref(), Some(code.as_str()));
        let sloppy = code.replace('-', " ").to_lowercase();
        assert_eq!(
            normalize_backup_code(&sloppy).as_deref(),
            Some(code.as_str())
        );
        assert_eq!(
            normalize_backup_code(&code.replace('-', "")).as_deref(),
            Some(code.as_str())
        );
        for bad in ["", "K7QD-M2X", "K7QD-M2XA1", "K7QD-M2X0", "K7QD_M2XA"] {
            assert_eq!(normalize_backup_code(bad), None, "{bad}");
        }
        let distinct: std::collections::HashSet<_> = (0..100).map(|_| new_backup_code()).collect();
        assert_eq!(distinct.len(), 100);
    }

    #[test]
    fn email_codes_are_six_digits() {
        for _ in 0..100 {
            let c = new_email_code();
            assert!(is_email_code(&c), "{c}");
        }
    }
}
