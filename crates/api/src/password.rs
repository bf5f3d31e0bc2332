//! Passwords: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane), always on a
//! blocking thread, never on the async runtime.
//!
//! At most one hash per CPU runs at a time ([`HASHING`]): twenty logins at once queue for
//! the CPUs instead of all sharing them, so the runtime's own threads keep getting theirs
//! and every other request (`/healthz` included) answers as fast as before.

// The only place argon2 is called: every call is inside spawn_blocking.
#![allow(clippy::disallowed_methods)]

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use tokio::sync::Semaphore;

/// Permits to hash: one per CPU.
static HASHING: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(cpus())));

/// Places in the hashing queue, running hashes included: past them a request is refused at
/// once with 503 `overloaded` instead of waiting ever longer.
static QUEUE: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(cpus() * QUEUE_PER_CPU)));

/// Queue places per CPU. At about 50 ms a hash, a full queue waits about 0.8 s.
pub const QUEUE_PER_CPU: usize = 16;

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs argon2 work `f` on a blocking thread once a CPU is free for it.
///
/// Both permits move into the blocking closure: a request that times out (or whose client
/// goes away) drops its future, but the hash already running goes on to the end on its
/// thread, and its CPU and queue place stay taken until then. Releasing them with the
/// future would let timed-out requests start ever more hashes at once.
async fn on_blocking_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    let place = QUEUE
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::Overloaded)?;
    let cpu = HASHING
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        RUNNING.fetch_add(1, Ordering::SeqCst);
        let out = f();
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        drop((cpu, place));
        out
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))
}

/// Hashes running or waiting now.
pub fn queued() -> usize {
    cpus() * QUEUE_PER_CPU - QUEUE.available_permits()
}

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Hashes running now, on blocking threads: never more than the CPUs.
pub fn running() -> usize {
    RUNNING.load(Ordering::SeqCst)
}

/// The most hashes that may run at once: one per CPU.
pub fn max_running() -> usize {
    cpus()
}

use crate::AppError;

/// The argon2id instance every hash and check uses.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP's argon2id parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A password as a user chose it: 8 to 1024 characters. Never printed.
pub struct Password(String);

impl Password {
    /// Checks a chosen password.
    pub fn parse(value: String) -> Result<Self, AppError> {
        let n = value.chars().count();
        if (8..=1024).contains(&n) {
            Ok(Password(value))
        } else {
            Err(AppError::field(
                "password",
                "a password is 8 to 1024 characters",
            ))
        }
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Hashes `password` (PHC string, random salt).
pub async fn hash(password: Password) -> Result<String, AppError> {
    on_blocking_thread(move || {
        let hash: PasswordHash = argon2()
            .hash_password(password.0.as_bytes())
            .map_err(|e| AppError::Internal(format!("argon2: {e}")))?;
        Ok(hash.to_string())
    })
    .await?
}

/// Hashes each of `codes` (backup codes, mailed codes) with argon2id, on one blocking
/// thread.
pub async fn hash_codes(codes: Vec<String>) -> Result<Vec<String>, AppError> {
    on_blocking_thread(move || {
        let a = argon2();
        codes
            .iter()
            .map(|c| {
                a.hash_password(c.as_bytes())
                    .map(|h| h.to_string())
                    .map_err(|e| AppError::Internal(format!("argon2: {e}")))
            })
            .collect()
    })
    .await?
}

/// Hashes one code.
pub async fn hash_code(code: String) -> Result<String, AppError> {
    Ok(hash_codes(vec![code])
        .await?
        .pop()
        .expect("one hash per code"))
}

/// Whether `input` matches the argon2id `hash`.
pub async fn code_matches(input: String, hash: String) -> Result<bool, AppError> {
    Ok(first_match(input, vec![(0, hash)]).await?.is_some())
}

/// The id of the first of `candidates` (id, argon2id hash) that `input` matches. Every
/// candidate is checked, so the time taken does not tell which one matched.
pub async fn first_match(
    input: String,
    candidates: Vec<(i64, String)>,
) -> Result<Option<i64>, AppError> {
    on_blocking_thread(move || {
        let a = argon2();
        let mut found = None;
        for (id, hash) in &candidates {
            let ok = a.verify_password(input.as_bytes(), hash.as_str()).is_ok();
            if ok && found.is_none() {
                found = Some(*id);
            }
        }
        found
    })
    .await
}

/// A hash of a password nobody knows, checked when the account does not exist, so that an
/// unknown user costs the same time as a wrong password.
static DECOY: LazyLock<String> = LazyLock::new(|| {
    let secret = uuid::Uuid::new_v4();
    let hash: PasswordHash = argon2()
        .hash_password(secret.as_bytes())
        .expect("hashing a random password succeeds");
    hash.to_string()
});

/// Whether `password` matches `stored`; with no stored hash, checks a decoy and answers
/// false, taking the same time.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, AppError> {
    on_blocking_thread(move || {
        let target = stored.as_deref().unwrap_or(DECOY.as_str());
        let ok = argon2()
            .verify_password(password.as_bytes(), target)
            .is_ok();
        ok && stored.is_some()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let h = hash(Password::parse("correct horse".into()).unwrap())
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(
            verify("correct horse".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify("wrong horse!".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("correct horse".into(), None).await.unwrap());
        let again = hash(Password::parse("correct horse".into()).unwrap())
            .await
            .unwrap();
        assert_ne!(h, again, "every hash has its own salt");
    }

    #[test]
    fn passwords_are_checked_and_never_printed() {
        assert!(Password::parse("short".into()).is_err());
        let p = Password::parse("long enough".into()).unwrap();
        assert!(!format!("{p:?}").contains("long"));
    }
}
