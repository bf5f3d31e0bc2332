//! The answer of a limiter, and its rendering as HTTP headers.

use std::time::Duration;

/// What a limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the hit was admitted (for peek: whether a hit of cost 1 would be).
    pub allowed: bool,
    /// The policy's limit.
    pub limit: u32,
    /// Units still available in the current window after this decision.
    pub remaining: u32,
    /// Time until the full limit is available again.
    pub reset_after: Duration,
    /// Time until the same request would be admitted; zero when it was.
    pub retry_after: Duration,
}

impl Decision {
    /// The `RateLimit-Policy` header value of the IETF draft's structured-field form:
    /// `"2fa_attempt";q=5;w=300`.
    pub fn policy_header(&self, name: &str, window: Duration) -> String {
        format!(
            "\"{}\";q={};w={}",
            escape(name),
            self.limit,
            window.as_secs().max(1)
        )
    }

    /// The `RateLimit` header value: `"2fa_attempt";r=0;t=42` (remaining units, seconds until
    /// the limit resets, rounded up).
    pub fn ratelimit_header(&self, name: &str) -> String {
        format!(
            "\"{}\";r={};t={}",
            escape(name),
            self.remaining,
            ceil_secs(self.reset_after)
        )
    }

    /// The `Retry-After` value in whole seconds (rounded up, at least 1), for a denial.
    pub fn retry_after_header(&self) -> Option<String> {
        (!self.allowed).then(|| ceil_secs(self.retry_after).max(1).to_string())
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn escape(name: &str) -> String {
    name.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_structured_field_form() {
        let d = Decision {
            allowed: false,
            limit: 5,
            remaining: 0,
            reset_after: Duration::from_millis(41_200),
            retry_after: Duration::from_millis(1_001),
        };
        assert_eq!(
            d.policy_header("2fa_attempt", Duration::from_secs(300)),
            "\"2fa_attempt\";q=5;w=300"
        );
        assert_eq!(
            d.ratelimit_header("2fa_attempt"),
            "\"2fa_attempt\";r=0;t=42"
        );
        assert_eq!(d.retry_after_header().as_deref(), Some("2"));
        let ok = Decision { allowed: true, ..d };
        assert_eq!(ok.retry_after_header(), None);
    }
}
