//! Passwords: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane), always on a
//! blocking thread, never on the async runtime.
//!
//! At most one hash per CPU runs at a time ([`SHARED`]): twenty logins at once queue for
//! the CPUs instead of all sharing them, so the runtime's own threads keep getting theirs
//! and every other request (`/healthz` included) answers as fast as before. Sign-ins from
//! known devices have a lane of their own ([`KNOWN`]), so a flood cannot keep them out.

// The only place argon2 is called: every call is inside spawn_blocking.
#![allow(clippy::disallowed_methods)]

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use tokio::sync::Semaphore;

/// A way into the hashing CPUs: permits to run (hashes at once) and places in its queue
/// (running hashes included); past them a request is refused at once with 503
/// `overloaded` instead of waiting ever longer.
struct Lane {
    cpu: Arc<Semaphore>,
    queue: Arc<Semaphore>,
    places: usize,
}

impl Lane {
    fn new(cpus: usize, places: usize) -> Lane {
        Lane {
            cpu: Arc::new(Semaphore::new(cpus)),
            queue: Arc::new(Semaphore::new(places)),
            places,
        }
    }
}

/// Everyone's lane: one hash per CPU, [`QUEUE_PER_CPU`] places per CPU.
static SHARED: LazyLock<Lane> = LazyLock::new(|| Lane::new(cpus(), cpus() * QUEUE_PER_CPU));

/// The lane of sign-ins from a device that completed one before (its `tessera_device`
/// cookie, which nobody else can make): one hash beside the CPUs' and a few places, so a
/// flood of anonymous requests that fills the shared queue cannot keep the owners of
/// accounts out.
static KNOWN: LazyLock<Lane> = LazyLock::new(|| Lane::new(1, KNOWN_PLACES));

/// Queue places per CPU in the shared lane, running hashes included: enough to keep every
/// CPU busy, few enough that an admitted request waits about one hash and that a flood
/// admits few requests into the database before the rest are refused.
pub const QUEUE_PER_CPU: usize = 2;

/// Places in the lane of known devices.
pub const KNOWN_PLACES: usize = 8;

/// Whose hash it is: which lane it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Anyone: the shared lane.
    Anyone,
    /// A sign-in from a device that completed one to this account before.
    KnownDevice,
}

impl Priority {
    fn lane(self) -> &'static Lane {
        match self {
            Priority::Anyone => &SHARED,
            Priority::KnownDevice => &KNOWN,
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A place in a lane's queue, taken before a request does any other work, so that an
/// overloaded worker refuses anonymous requests before they cost it a database write.
pub struct Place {
    lane: &'static Lane,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// Takes a place in `priority`'s lane: 503 `overloaded` at once when the lane is full.
pub fn reserve(priority: Priority) -> Result<Place, AuthError> {
    let lane = priority.lane();
    let permit = lane
        .queue
        .clone()
        .try_acquire_owned()
        .map_err(|_| AuthError::Overloaded)?;
    Ok(Place { lane, permit })
}

/// Runs argon2 work `f` on a blocking thread once `place`'s lane has a CPU for it.
///
/// Both permits move into the blocking closure: a request that times out (or whose client
/// goes away) drops its future, but the hash already running goes on to the end on its
/// thread, and its CPU and queue place stay taken until then. Releasing them with the
/// future would let timed-out requests start ever more hashes at once.
async fn on_blocking_thread<T: Send + 'static>(
    place: Place,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    let cpu = place
        .lane
        .cpu
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| AuthError::internal(e.to_string()))?;
    let permit = place.permit;
    tokio::task::spawn_blocking(move || {
        RUNNING.fetch_add(1, Ordering::SeqCst);
        let out = f();
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        drop((cpu, permit));
        out
    })
    .await
    .map_err(|e| AuthError::internal(e.to_string()))
}

/// Hashes running or waiting now, in every lane.
pub fn queued() -> usize {
    [&*SHARED, &*KNOWN]
        .iter()
        .map(|l| l.places - l.queue.available_permits())
        .sum()
}

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Hashes running now, on blocking threads: never more than [`max_running`].
pub fn running() -> usize {
    RUNNING.load(Ordering::SeqCst)
}

/// The most hashes that may run at once: one per CPU, and one for known devices.
pub fn max_running() -> usize {
    cpus() + 1
}

use crate::error::AuthError;

/// OWASP's argon2id parameters: 19 MiB, 2 passes, 1 lane.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("OWASP's argon2id parameters are valid")
}

/// argon2's work memory (19 MiB a hash), kept for the next hash instead of freed: the
/// allocator would keep freed 19 MiB areas in each thread's arena anyway, and across the
/// blocking pool's changing threads that grew a worker by hundreds of megabytes after a
/// burst. At most [`max_running`] hashes run at once, so the pool never holds more areas.
static WORK_AREAS: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

fn with_work_area<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    let mut area = WORK_AREAS
        .lock()
        .expect("the pool lock is never poisoned")
        .pop()
        .filter(|a| a.len() == blocks)
        .unwrap_or_else(|| vec![Block::default(); blocks]);
    let out = f(&mut area);
    WORK_AREAS
        .lock()
        .expect("the pool lock is never poisoned")
        .push(area);
    out
}

/// Reserves the work areas of every hash that may run at once ([`max_running`] × 19 MiB)
/// and makes the decoy hash, at start: a worker's memory then stays flat under any load of
/// logins instead of growing with the first burst.
pub fn prewarm() {
    let blocks = params().block_count();
    let areas: Vec<Vec<Block>> = (0..max_running())
        .map(|_| vec![Block::default(); blocks])
        .collect();
    WORK_AREAS
        .lock()
        .expect("the pool lock is never poisoned")
        .extend(areas);
    LazyLock::force(&DECOY);
}

/// Hashes `secret` with a fresh salt; the PHC string.
fn hash_blocking(secret: &[u8]) -> Result<String, AuthError> {
    let internal = |e: &dyn std::fmt::Display| AuthError::internal(format!("argon2: {e}"));
    let params = params();
    let mut salt = [0u8; Salt::RECOMMENDED_LENGTH];
    getrandom::fill(&mut salt).map_err(|e| internal(&e))?;
    let mut out = [0u8; 32];
    with_work_area(params.block_count(), |area| {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(secret, &salt, &mut out, area)
    })
    .map_err(|e| internal(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| internal(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| internal(&e))?),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `secret` matches the PHC string `phc` (with the parameters it names), compared
/// in constant time.
fn matches_blocking(secret: &[u8], phc: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
        parsed.salt.as_ref(),
        parsed.hash.as_ref(),
    ) else {
        return false;
    };
    let version = parsed
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .unwrap_or(Version::V0x13);
    let mut out = vec![0u8; expected.len()];
    let done = with_work_area(params.block_count(), |area| {
        Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
            secret,
            salt.as_ref(),
            &mut out,
            area,
        )
    });
    done.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// A password as a user chose it: 8 to 1024 characters. Never printed.
pub struct Password(String);

impl Password {
    /// Checks a chosen password.
    pub fn parse(value: String) -> Result<Self, AuthError> {
        let n = value.chars().count();
        if (8..=1024).contains(&n) {
            Ok(Password(value))
        } else {
            Err(AuthError::invalid(
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
pub async fn hash(password: Password) -> Result<String, AuthError> {
    hash_in(reserve(Priority::Anyone)?, password).await
}

/// [`hash`] in a place taken before.
pub async fn hash_in(place: Place, password: Password) -> Result<String, AuthError> {
    on_blocking_thread(place, move || hash_blocking(password.0.as_bytes())).await?
}

/// Hashes each of `codes` (backup codes, mailed codes) with argon2id, on one blocking
/// thread.
pub async fn hash_codes(codes: Vec<String>) -> Result<Vec<String>, AuthError> {
    on_blocking_thread(reserve(Priority::Anyone)?, move || {
        codes.iter().map(|c| hash_blocking(c.as_bytes())).collect()
    })
    .await?
}

/// Hashes one code.
pub async fn hash_code(code: String) -> Result<String, AuthError> {
    Ok(hash_codes(vec![code])
        .await?
        .pop()
        .expect("one hash per code"))
}

/// Whether `input` matches the argon2id `hash`.
pub async fn code_matches(input: String, hash: String) -> Result<bool, AuthError> {
    Ok(first_match(input, vec![(0, hash)]).await?.is_some())
}

/// The id of the first of `candidates` (id, argon2id hash) that `input` matches. Every
/// candidate is checked, so the time taken does not tell which one matched.
pub async fn first_match(
    input: String,
    candidates: Vec<(i64, String)>,
) -> Result<Option<i64>, AuthError> {
    on_blocking_thread(reserve(Priority::Anyone)?, move || {
        let mut found = None;
        for (id, hash) in &candidates {
            let ok = matches_blocking(input.as_bytes(), hash);
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
    hash_blocking(secret.as_bytes()).expect("hashing a random password succeeds")
});

/// Whether `password` matches `stored`; with no stored hash, checks a decoy and answers
/// false, taking the same time. Runs in `place`.
pub async fn verify(
    place: Place,
    password: String,
    stored: Option<String>,
) -> Result<bool, AuthError> {
    on_blocking_thread(place, move || {
        let target = stored.as_deref().unwrap_or(DECOY.as_str());
        matches_blocking(password.as_bytes(), target) && stored.is_some()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn checks(priority: Priority, password: &str, stored: Option<&String>) -> bool {
        let place = reserve(priority).unwrap();
        verify(place, password.into(), stored.cloned())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let new_hash = || hash(Password::parse("correct horse".into()).unwrap());
        let h = new_hash().await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(checks(Priority::KnownDevice, "correct horse", Some(&h)).await);
        assert!(!checks(Priority::Anyone, "wrong horse!", Some(&h)).await);
        assert!(!checks(Priority::Anyone, "correct horse", None).await);
        let again = new_hash().await.unwrap();
        assert_ne!(h, again, "every hash has its own salt");
    }

    #[test]
    fn passwords_are_checked_and_never_printed() {
        assert!(Password::parse("short".into()).is_err());
        let p = Password::parse("long enough".into()).unwrap();
        assert!(!format!("{p:?}").contains("long"));
    }
}
