//! Account names as people type them: one account per name however it is spelt.

use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// The name of an account, normalised: NFKC, surrounding white space trimmed, with no
/// control or invisible character (a zero-width space, a bidi override) left in it. Two
/// names that differ only in case or Unicode form have one [`key`](AccountName::key), and
/// the key is what accounts and their counters are found by, so `LOCK`, ` lock` and
/// `lock\u{200b}` cannot split `lock`'s accounts or attempt budgets.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountName {
    display: String,
    key: String,
}

/// Why a string is not an [`AccountName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a username is 1 to 255 characters, without control or invisible characters and without white space at its ends"
)]
pub struct InvalidAccountName;

impl AccountName {
    /// Normalises and checks a name as typed.
    pub fn parse(input: &str) -> Result<Self, InvalidAccountName> {
        let display: String = input.nfkc().collect::<String>().trim().to_owned();
        let n = display.chars().count();
        if !(1..=255).contains(&n) || display.chars().any(|c| invisible(c) || c.is_control()) {
            return Err(InvalidAccountName);
        }
        // Case folding can leave a string that is no longer NFKC: normalise again.
        let key = display.to_lowercase().nfkc().collect();
        Ok(AccountName { display, key })
    }

    /// The name as shown (and as stored in `users.username`).
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// What the account is found and counted by (`users.username_key`).
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountName({:?})", self.display)
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// Characters that show nothing (Unicode's default-ignorable code points and the
/// separators other than the plain space): in a name they only make look-alikes.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    ) || (c.is_whitespace() && c != ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_share_one_key() {
        let lock = AccountName::parse("lock").unwrap();
        for same in ["LOCK", " lock", "lock ", "Lock", "ｌｏｃｋ"] {
            let other = AccountName::parse(same).unwrap();
            assert_eq!(other.key(), lock.key(), "{same:?}");
        }
        assert_eq!(AccountName::parse(" Alice ").unwrap().as_str(), "Alice");
        assert_eq!(AccountName::parse("Straße").unwrap().key(), "straße");
    }

    #[test]
    fn invisible_and_control_characters_are_refused() {
        for bad in [
            "lock\u{200b}",
            "lo\u{202e}ck",
            "lock\u{feff}",
            "a\u{0}b",
            "a\nb",
            "a\u{1680}b",
            "",
            "   ",
        ] {
            assert!(AccountName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AccountName::parse(&"x".repeat(256)).is_err());
        assert!(
            AccountName::parse("Ann Lee").is_ok(),
            "a plain space inside is a name"
        );
        assert_eq!(
            AccountName::parse("Ann\u{a0}Lee").unwrap().as_str(),
            "Ann Lee"
        );
    }
}
