//! Policies: how many units per window, by which algorithm, for which event.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// How a window is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Every event is kept until it leaves the window: exact.
    #[default]
    SlidingLog,
    /// Two fixed-window counters, the previous one weighted by its overlap: constant memory,
    /// approximate (see the crate docs for the worst case).
    SlidingWindowCounter,
}

/// A limit of `limit` units per sliding `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Units admitted per window.
    pub limit: NonZeroU32,
    /// The window's length (whole milliseconds; at least one).
    pub window: Duration,
    /// How the window is counted.
    pub algorithm: Algorithm,
}

impl Policy {
    /// An exact policy of `limit` per `window`.
    ///
    /// # Panics
    ///
    /// If `window` is shorter than a millisecond.
    pub fn new(limit: NonZeroU32, window: Duration) -> Self {
        assert!(window.as_millis() >= 1, "a window lasts at least 1 ms");
        Policy {
            limit,
            window,
            algorithm: Algorithm::SlidingLog,
        }
    }

    /// `limit` per `seconds` seconds, exact.
    ///
    /// # Panics
    ///
    /// If `limit` or `seconds` is zero.
    pub fn per_seconds(limit: u32, seconds: u64) -> Self {
        Policy::new(
            NonZeroU32::new(limit).expect("a limit is at least 1"),
            Duration::from_secs(seconds),
        )
    }

    /// The same policy counted approximately, in constant memory.
    pub fn approximate(mut self) -> Self {
        self.algorithm = Algorithm::SlidingWindowCounter;
        self
    }

    /// The window in milliseconds.
    pub fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Why a policy string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a policy is LIMIT/WINDOW with WINDOW like 300s, 15m, 1h or 500ms, optionally followed by `~` for the approximate counter (for example 50/15m~): {0}"
)]
pub struct PolicyParseError(String);

impl FromStr for Policy {
    type Err = PolicyParseError;

    /// `5/300s`, `10/15m`, `3/1h`, `50/15m~` (approximate).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PolicyParseError(s.to_owned());
        let (body, approx) = match s.trim().strip_suffix('~') {
            Some(b) => (b, true),
            None => (s.trim(), false),
        };
        let (limit, window) = body.split_once('/').ok_or_else(err)?;
        let limit: NonZeroU32 = limit.trim().parse().map_err(|_| err())?;
        let window = window.trim();
        let split = window
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(window.len());
        let (n, unit) = window.split_at(split);
        let n: u64 = n.parse().map_err(|_| err())?;
        let ms = match unit {
            "ms" => n,
            "s" | "" => n.checked_mul(1000).ok_or_else(err)?,
            "m" => n.checked_mul(60_000).ok_or_else(err)?,
            "h" => n.checked_mul(3_600_000).ok_or_else(err)?,
            _ => return Err(err()),
        };
        if ms == 0 {
            return Err(err());
        }
        let p = Policy::new(limit, Duration::from_millis(ms));
        Ok(if approx { p.approximate() } else { p })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}ms", self.limit, self.window.as_millis())?;
        if self.algorithm == Algorithm::SlidingWindowCounter {
            f.write_str("~")?;
        }
        Ok(())
    }
}

/// The name of a rate-limited event (`login_attempt`, `my.event`): 1 to 64 characters of
/// `a-z`, `0-9`, `_`, `-`, `.`. The limiter knows no event of its own; its embedder names
/// them and gives their policies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Event(Cow<'static, str>);

/// Why a string is not an event name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event name is 1 to 64 characters of a-z, 0-9, `_`, `-`, `.`")]
pub struct InvalidEvent;

impl Event {
    /// An event name.
    pub fn custom(name: impl Into<String>) -> Result<Self, InvalidEvent> {
        let name = name.into();
        if valid(&name) {
            Ok(Event(Cow::Owned(name)))
        } else {
            Err(InvalidEvent)
        }
    }

    /// An event name known at compile time, without an allocation.
    pub fn from_static(name: &'static str) -> Result<Self, InvalidEvent> {
        if valid(name) {
            Ok(Event(Cow::Borrowed(name)))
        } else {
            Err(InvalidEvent)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Event {
    type Err = InvalidEvent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Event::custom(s)
    }
}

/// The policy of every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    map: BTreeMap<Event, Policy>,
    /// The policy of every event not in `map`, if any.
    default: Option<Policy>,
}

impl Policies {
    /// No policy at all.
    pub fn empty() -> Self {
        Policies {
            map: BTreeMap::new(),
            default: None,
        }
    }

    /// Sets (or replaces) the policy of `event`.
    pub fn set(&mut self, event: impl Into<Event>, policy: Policy) -> &mut Self {
        self.map.insert(event.into(), policy);
        self
    }

    /// Gives every event without a policy of its own `policy` (an embedder's events that
    /// nobody configured); without it, such an event is refused.
    pub fn set_default(&mut self, policy: Policy) -> &mut Self {
        self.default = Some(policy);
        self
    }

    /// The policy every event without one of its own gets, if any.
    pub fn default_policy(&self) -> Option<&Policy> {
        self.default.as_ref()
    }

    /// The policy of `event`: its own, else the default.
    pub fn get(&self, event: &Event) -> Option<&Policy> {
        self.map.get(event).or(self.default.as_ref())
    }

    /// Every event and its policy.
    pub fn iter(&self) -> impl Iterator<Item = (&Event, &Policy)> {
        self.map.iter()
    }

    /// Applies overrides like `2fa_attempt=5/5m,login_ip=100/15m~,my_event=3/1h`.
    pub fn apply_overrides(&mut self, spec: &str) -> Result<(), PolicyParseError> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, policy) = item
                .split_once('=')
                .ok_or_else(|| PolicyParseError(item.to_owned()))?;
            let event: Event = name
                .trim()
                .parse()
                .map_err(|_| PolicyParseError(item.to_owned()))?;
            self.set(event, policy.parse()?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!(
            "5/300s".parse::<Policy>().unwrap(),
            Policy::per_seconds(5, 300)
        );
        assert_eq!(
            "10/15m".parse::<Policy>().unwrap(),
            Policy::per_seconds(10, 900)
        );
        assert_eq!(
            "3/1h".parse::<Policy>().unwrap(),
            Policy::per_seconds(3, 3600)
        );
        assert_eq!(
            "50/15m~".parse::<Policy>().unwrap(),
            Policy::per_seconds(50, 900).approximate()
        );
        assert_eq!(
            "7/250ms".parse::<Policy>().unwrap().window,
            Duration::from_millis(250)
        );
        for bad in ["", "5", "0/1s", "5/0s", "5/1d", "x/1s", "5/s", "-1/1s"] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overrides() {
        let mut p = Policies::empty();
        p.set(
            Event::from_static("2fa_attempt").unwrap(),
            Policy::per_seconds(5, 300),
        );
        assert_eq!(
            p.get(&Event::from_static("2fa_attempt").unwrap()),
            Some(&Policy::per_seconds(5, 300))
        );
        p.apply_overrides("2fa_attempt=4/1m, my.event=2/10s~")
            .unwrap();
        assert_eq!(
            p.get(&Event::from_static("2fa_attempt").unwrap()),
            Some(&Policy::per_seconds(4, 60))
        );
        assert_eq!(
            p.get(&Event::custom("my.event").unwrap())
                .unwrap()
                .algorithm,
            Algorithm::SlidingWindowCounter
        );
        assert!(p.apply_overrides("Bad Name=1/1s").is_err());
        assert!(p.apply_overrides("login_ip").is_err());
    }
}
