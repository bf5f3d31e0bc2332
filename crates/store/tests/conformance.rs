//! The token store's specification: one suite of cases, written once, run against every
//! backend (SQLite in a file, PostgreSQL, Redis, a Redis Cluster of three masters started
//! by the harness). Each case gets its own fresh database or key prefix.

use futures::future::join_all;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tessera_backend::pace::Pace;
use tessera_backend::redis::RedisConnection;
use tessera_backend::sql::PgSync;
use tessera_entity::{AuthEphemeralToken, Challenge, Token, TokenType, Username};
use tessera_store::{
    Lookup, RedisTokenStore, SqlTokenStore, StoreError, TokenStore, Tokens, UserToken,
};
use tessera_testkit::{RedisCluster, TestDb, require_redis, unique_prefix};

/// Raw access to what a backend stores.
enum Raw {
    Sql(TestDb),
    Redis {
        conn: RedisConnection,
        store: RedisTokenStore,
        prefix: String,
    },
}

/// A backend under test, with the raw access some cases need to inspect or tamper with
/// what it stores.
struct Harness {
    tokens: Tokens,
    store: Arc<dyn TokenStore>,
    raw: Raw,
}

impl Harness {
    async fn sql(db: TestDb) -> Harness {
        let store: Arc<dyn TokenStore> = Arc::new(SqlTokenStore::new(db.db.clone()).unwrap());
        Harness {
            tokens: Tokens::new(store.clone()),
            store,
            raw: Raw::Sql(db),
        }
    }

    async fn redis_on(urls: &str) -> Harness {
        let conn = RedisConnection::connect(urls)
            .await
            .expect("Redis connects");
        let prefix = unique_prefix();
        let redis = RedisTokenStore::new(conn.clone()).with_prefix(&prefix);
        let store: Arc<dyn TokenStore> = Arc::new(redis.clone());
        Harness {
            tokens: Tokens::new(store.clone()),
            store,
            raw: Raw::Redis {
                conn,
                store: redis,
                prefix,
            },
        }
    }

    async fn redis() -> Harness {
        Harness::redis_on(&require_redis()).await
    }

    async fn redis_cluster() -> Harness {
        Harness::redis_on(&RedisCluster::shared_urls().await).await
    }

    fn db(&self) -> &TestDb {
        match &self.raw {
            Raw::Sql(db) => db,
            Raw::Redis { .. } => unreachable!("SQL access on a Redis harness"),
        }
    }

    /// Whether expired records stay until a purge (SQL) or vanish by themselves (Redis).
    fn purges(&self) -> bool {
        matches!(self.raw, Raw::Sql(_))
    }

    async fn sqlite() -> Harness {
        Harness::sql(TestDb::sqlite_file().await).await
    }

    async fn postgres() -> Harness {
        Harness::sql(TestDb::postgres().await).await
    }

    /// PostgreSQL with every write waiting for the flush (`TESSERA_PG_SYNC=all`).
    async fn postgres_sync_all() -> Harness {
        let db = TestDb::postgres().await;
        let store = SqlTokenStore::new(db.db.clone())
            .unwrap()
            .with_sync(PgSync::All);
        let store: Arc<dyn TokenStore> = Arc::new(store);
        Harness {
            tokens: Tokens::new(store.clone()),
            store,
            raw: Raw::Sql(db),
        }
    }

    fn backend(&self) -> DbBackend {
        self.db().db.get_database_backend()
    }

    /// Everything the store holds, as bytes: every column of every row, or every key and
    /// value.
    async fn dump(&self) -> Vec<u8> {
        if let Raw::Redis { conn, prefix, .. } = &self.raw {
            return redis_dump(conn, prefix).await;
        }
        let rows = self
            .db()
            .db
            .query_all_raw(Statement::from_string(
                self.backend(),
                "SELECT token_hash, token_type, username, provider_id, challenge_hash, sealed \
                 FROM auth_ephemeral_tokens",
            ))
            .await
            .unwrap();
        let mut out = Vec::new();
        for r in rows {
            for col in ["token_hash", "challenge_hash", "sealed"] {
                if let Some(b) = r.try_get::<Option<Vec<u8>>>("", col).unwrap() {
                    out.extend(b);
                }
            }
            for col in ["token_type", "username", "provider_id"] {
                if let Some(s) = r.try_get::<Option<String>>("", col).unwrap() {
                    out.extend(s.into_bytes());
                }
            }
        }
        out
    }

    /// Moves the record of `from` under the hash of `to` (deleting `to`'s own record): what an
    /// attacker with write access to the store might try.
    async fn move_record(&self, from: &Token, to: &Token) {
        if let Raw::Redis { conn, store, .. } = &self.raw {
            let mut c = conn.clone();
            let (from, to) = (store.token_key(&from.hash()), store.token_key(&to.hash()));
            let dumped: Vec<u8> = ::redis::cmd("DUMP")
                .arg(&from)
                .query_async(&mut c)
                .await
                .unwrap();
            let _: () = ::redis::cmd("DEL")
                .arg(&to)
                .query_async(&mut c)
                .await
                .unwrap();
            let _: () = ::redis::cmd("RESTORE")
                .arg(&to)
                .arg(60_000)
                .arg(dumped)
                .query_async(&mut c)
                .await
                .unwrap();
            let _: () = ::redis::cmd("DEL")
                .arg(&from)
                .query_async(&mut c)
                .await
                .unwrap();
            return;
        }
        let p = |n: usize| match self.backend() {
            DbBackend::Postgres => format!("${n}"),
            _ => format!("?{n}"),
        };
        let to_hash = to.hash().as_bytes().to_vec();
        self.db()
            .db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                format!(
                    "DELETE FROM auth_ephemeral_tokens WHERE token_hash = {}",
                    p(1)
                ),
                [to_hash.clone().into()],
            ))
            .await
            .unwrap();
        let moved = self
            .db()
            .db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                format!(
                    "UPDATE auth_ephemeral_tokens SET token_hash = {} WHERE token_hash = {}",
                    p(1),
                    p(2)
                ),
                [to_hash.into(), from.hash().as_bytes().to_vec().into()],
            ))
            .await
            .unwrap();
        assert_eq!(moved.rows_affected(), 1);
    }

    async fn finish(self) {
        if let Raw::Sql(db) = self.raw {
            db.finish().await;
        }
    }
}

/// Every key under `prefix` on every node, with its value.
async fn redis_dump(conn: &RedisConnection, prefix: &str) -> Vec<u8> {
    let mut c = conn.clone();
    let nodes: Vec<String> = match conn {
        RedisConnection::Single(_) => vec![String::new()],
        RedisConnection::Cluster(_) => RedisCluster::shared()
            .ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect(),
    };
    let mut keys: Vec<String> = Vec::new();
    for node in nodes {
        let found: Vec<String> = if node.is_empty() {
            ::redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut c)
                .await
                .unwrap()
        } else {
            let mut n = ::redis::Client::open(node)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            ::redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut n)
                .await
                .unwrap()
        };
        keys.extend(found);
    }
    assert!(!keys.is_empty(), "the dump found the store's keys");
    let mut out = Vec::new();
    for key in keys {
        out.extend(key.as_bytes());
        let kind: String = ::redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "hash" => ::redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap(),
            "set" => ::redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap(),
            other => panic!("unexpected {other} at {key}"),
        };
        for v in values {
            out.extend(v);
        }
    }
    out
}

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    match r {
        Err(StoreError::InvalidOrExpired) => {}
        other => panic!("expected InvalidOrExpired, got {other:?}"),
    }
}

mod cases {
    use super::*;

    /// A token that speaks for a user comes back with its name checked; asked for as a
    /// user's token, one that names none (an `oidc_state`) is refused like an unknown one.
    pub async fn user_tokens_carry_their_username(h: &Harness) {
        let c = Challenge::generate();
        let issued = h
            .tokens
            .issue(AuthEphemeralToken::new_pre_auth(
                user("alice"),
                Some(c.clone()),
            ))
            .await
            .unwrap();
        let t = issued.token.expose();
        let peeked = h.tokens.peek(TokenType::PreAuth, t, Some(&c)).await;
        let peeked = peeked.and_then(UserToken::try_from).unwrap();
        assert_eq!(peeked.username, user("alice"));
        let got = h.tokens.consume(TokenType::PreAuth, t, Some(&c)).await;
        let got = got.and_then(UserToken::try_from).unwrap();
        assert_eq!(got.username, user("alice"));
        assert_eq!(got.kind, TokenType::PreAuth);
        let state = h
            .tokens
            .issue(AuthEphemeralToken::new_oidc_state(
                "42",
                "n".into(),
                "v".into(),
            ))
            .await
            .unwrap();
        assert_invalid(
            h.tokens
                .consume(TokenType::OidcState, state.token.expose(), None)
                .await
                .and_then(UserToken::try_from),
        );
    }

    pub async fn issue_and_consume_every_kind(h: &Harness) {
        let c = Challenge::generate();
        let news = vec![
            AuthEphemeralToken::new_pre_auth(user("alice"), Some(c.clone())),
            AuthEphemeralToken::new_oidc_state("42", "nonce-1".into(), "verifier-1".into())
                .with_data(serde_json::json!({"return_to": "/app"})),
            AuthEphemeralToken::new_oidc_exchange(user("alice")),
            AuthEphemeralToken::new_password_reset(user("alice")),
            AuthEphemeralToken::new_email_otp_setup(user("alice"), "codehash".into()),
            AuthEphemeralToken::new_download(user("alice"), serde_json::json!("/files/1")),
            AuthEphemeralToken::new_mfa_enforce(user("alice"), c.clone()),
        ];
        for new in news {
            let kind = new.kind();
            let challenge = new.challenge().cloned();
            let payload = new.payload().clone();
            let issued = h.tokens.issue(new.clone()).await.unwrap();
            assert!(issued.token.expose().starts_with(kind.prefix()));
            let got = h
                .tokens
                .consume(kind, issued.token.expose(), challenge.as_ref())
                .await
                .unwrap();
            assert_eq!(got.kind, kind);
            assert_eq!(
                got.username.as_deref(),
                new.username().map(Username::as_str)
            );
            assert_eq!(got.provider_id.as_deref(), new.provider_id());
            assert!(got.payload == payload, "payload of {kind} round-trips");
            assert_eq!(got.expires_at, issued.expires_at);
            let lived = (got.expires_at - got.created_at).num_milliseconds();
            assert_eq!(lived, new.ttl().as_millis() as i64, "{kind} lives its TTL");
        }
    }

    pub async fn consume_is_single_use(h: &Harness) {
        let t = h
            .tokens
            .issue(AuthEphemeralToken::new_password_reset(user("bob")))
            .await
            .unwrap();
        let k = TokenType::PasswordReset;
        h.tokens.consume(k, t.token.expose(), None).await.unwrap();
        assert_invalid(h.tokens.consume(k, t.token.expose(), None).await);
        assert_invalid(h.tokens.peek(k, t.token.expose(), None).await);
    }

    pub async fn unknown_and_malformed_are_invalid(h: &Harness) {
        let k = TokenType::Download;
        let never_issued = Token::generate(k);
        assert_invalid(h.tokens.consume(k, never_issued.expose(), None).await);
        assert_invalid(h.tokens.peek(k, never_issued.expose(), None).await);
        for junk in [
            "",
            "tsr_dl_",
            "nonsense",
            "tsr_dl_!!!!",
            &"x".repeat(10_000),
        ] {
            assert_invalid(h.tokens.consume(k, junk, None).await);
        }
    }

    pub async fn wrong_kind_is_invalid_and_does_not_burn(h: &Harness) {
        let t = h
            .tokens
            .issue(AuthEphemeralToken::new_oidc_exchange(user("carol")))
            .await
            .unwrap();
        // Through the front, another kind's prefix never parses...
        assert_invalid(
            h.tokens
                .consume(TokenType::PasswordReset, t.token.expose(), None)
                .await,
        );
        // ...and the store itself refuses the right hash under every other kind.
        for other in [
            TokenType::PreAuth,
            TokenType::PasswordReset,
            TokenType::Download,
            TokenType::MfaEnforce,
        ] {
            for consume in [false, true] {
                let hash = t.token.hash();
                let lookup = Lookup {
                    kind: other,
                    hash: &hash,
                    challenge: None,
                    consume,
                };
                assert!(h.store.take(lookup).await.unwrap().is_none());
            }
        }
        h.tokens
            .consume(TokenType::OidcExchange, t.token.expose(), None)
            .await
            .unwrap();
    }

    /// Applications' own kinds share one token prefix, so only the stored kind keeps them
    /// apart: a token of one is never consumed, peeked at nor revoked as another. The
    /// longest name (34 characters) fits every backend.
    pub async fn custom_kinds_are_kept_apart(h: &Harness) {
        let long: TokenType = format!("x_{}", "k".repeat(32)).parse().unwrap();
        let invite: TokenType = "x_invite".parse().unwrap();
        let custom = |kind: TokenType| match kind {
            TokenType::Custom(c) => c,
            _ => unreachable!(),
        };
        let t = h
            .tokens
            .issue(
                AuthEphemeralToken::new_custom(custom(long), Some(user("dora")))
                    .with_data(serde_json::json!({"step": 2})),
            )
            .await
            .unwrap();
        assert!(t.token.expose().starts_with("tsr_x_"));
        assert_invalid(h.tokens.peek(invite, t.token.expose(), None).await);
        assert_invalid(h.tokens.consume(invite, t.token.expose(), None).await);
        assert_eq!(h.tokens.revoke(invite, &user("dora")).await.unwrap(), 0);
        let got = h
            .tokens
            .consume(long, t.token.expose(), None)
            .await
            .unwrap();
        assert_eq!(got.kind, long);
        assert_eq!(got.username.as_deref(), Some("dora"));
        assert_eq!(got.payload.data, Some(serde_json::json!({"step": 2})));
        // Without a username it is only ever found by the token itself.
        let anon = h
            .tokens
            .issue(AuthEphemeralToken::new_custom(custom(invite), None))
            .await
            .unwrap();
        let got = h
            .tokens
            .consume(invite, anon.token.expose(), None)
            .await
            .unwrap();
        assert_eq!(got.username, None);
        assert_invalid(h.tokens.consume(invite, anon.token.expose(), None).await);
    }

    pub async fn wrong_or_missing_challenge_is_invalid_and_does_not_burn(h: &Harness) {
        let right = Challenge::generate();
        let wrong = Challenge::generate();
        let k = TokenType::PreAuth;
        let t = h
            .tokens
            .issue(AuthEphemeralToken::new_pre_auth(
                user("dave"),
                Some(right.clone()),
            ))
            .await
            .unwrap();
        let s = t.token.expose();
        assert_invalid(h.tokens.consume(k, s, None).await);
        assert_invalid(h.tokens.consume(k, s, Some(&wrong)).await);
        assert_invalid(h.tokens.peek(k, s, None).await);
        assert_invalid(h.tokens.peek(k, s, Some(&wrong)).await);
        assert_eq!(
            h.tokens
                .peek(k, s, Some(&right))
                .await
                .unwrap()
                .username
                .as_deref(),
            Some("dave")
        );
        h.tokens.consume(k, s, Some(&right)).await.unwrap();
        assert_invalid(h.tokens.consume(k, s, Some(&right)).await);

        // A token bound to no challenge is not opened by one either.
        let free = h
            .tokens
            .issue(AuthEphemeralToken::new_pre_auth(user("dave"), None))
            .await
            .unwrap();
        assert_invalid(h.tokens.consume(k, free.token.expose(), Some(&right)).await);
        h.tokens
            .consume(k, free.token.expose(), None)
            .await
            .unwrap();
    }

    pub async fn peek_does_not_consume(h: &Harness) {
        let k = TokenType::Download;
        let t = h
            .tokens
            .issue(AuthEphemeralToken::new_download(
                user("erin"),
                serde_json::json!({"id": 7}),
            ))
            .await
            .unwrap();
        for _ in 0..3 {
            let p = h.tokens.peek(k, t.token.expose(), None).await.unwrap();
            assert_eq!(p.payload.data, Some(serde_json::json!({"id": 7})));
        }
        h.tokens.consume(k, t.token.expose(), None).await.unwrap();
        assert_invalid(h.tokens.peek(k, t.token.expose(), None).await);
    }

    pub async fn expiry_follows_the_store_clock(h: &Harness) {
        let k = TokenType::Download;
        let ttl = Duration::from_millis(400);
        let new =
            || AuthEphemeralToken::new_download(user("frank"), serde_json::json!(1)).with_ttl(ttl);
        let a = h.tokens.issue(new()).await.unwrap();
        let b = h.tokens.issue(new()).await.unwrap();
        let p = h.tokens.peek(k, a.token.expose(), None).await.unwrap();
        // The expiry is the store's creation instant plus the TTL, both on the store's clock.
        assert_eq!((p.expires_at - p.created_at).num_milliseconds(), 400);
        h.tokens.consume(k, a.token.expose(), None).await.unwrap();
        // Past the TTL (plus a margin for the round trip), the store refuses the twin.
        tokio::time::sleep(ttl + Duration::from_millis(150)).await;
        assert_invalid(h.tokens.peek(k, b.token.expose(), None).await);
        assert_invalid(h.tokens.consume(k, b.token.expose(), None).await);
    }

    pub async fn revoke_removes_one_kind_of_one_user(h: &Harness) {
        let mut alice = Vec::new();
        for _ in 0..3 {
            alice.push(
                h.tokens
                    .issue(AuthEphemeralToken::new_password_reset(user("alice")))
                    .await
                    .unwrap(),
            );
        }
        let bob = h
            .tokens
            .issue(AuthEphemeralToken::new_password_reset(user("bob")))
            .await
            .unwrap();
        let alice_dl = h
            .tokens
            .issue(AuthEphemeralToken::new_download(
                user("alice"),
                serde_json::json!(1),
            ))
            .await
            .unwrap();
        let n = h
            .tokens
            .revoke(TokenType::PasswordReset, &user("alice"))
            .await
            .unwrap();
        assert_eq!(n, 3);
        for t in &alice {
            assert_invalid(
                h.tokens
                    .consume(TokenType::PasswordReset, t.token.expose(), None)
                    .await,
            );
        }
        h.tokens
            .consume(TokenType::PasswordReset, bob.token.expose(), None)
            .await
            .unwrap();
        h.tokens
            .consume(TokenType::Download, alice_dl.token.expose(), None)
            .await
            .unwrap();
        assert_eq!(
            h.tokens
                .revoke(TokenType::PasswordReset, &user("alice"))
                .await
                .unwrap(),
            0
        );
    }

    pub async fn revoke_racing_issues_loses_none(h: &Harness) {
        const ISSUERS: usize = 8;
        const EACH: usize = 25;
        let k = TokenType::PasswordReset;
        let done = Arc::new(AtomicUsize::new(0));
        let issuers = (0..ISSUERS).map(|_| {
            let tokens = h.tokens.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut issued = Vec::with_capacity(EACH);
                for _ in 0..EACH {
                    let t = tokens
                        .issue(AuthEphemeralToken::new_password_reset(user("ivan")))
                        .await
                        .unwrap();
                    issued.push(t.token.expose().to_owned());
                }
                done.fetch_add(1, Ordering::SeqCst);
                issued
            })
        });
        let issuers: Vec<_> = issuers.collect();
        // Revokes run while the tokens are being issued, each racing several issues.
        let revokers = (0..2).map(|_| {
            let tokens = h.tokens.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while done.load(Ordering::SeqCst) < ISSUERS {
                    tokens.revoke(k, &user("ivan")).await.unwrap();
                }
            })
        });
        join_all(revokers)
            .await
            .into_iter()
            .for_each(Result::unwrap);
        let issued: Vec<String> = join_all(issuers)
            .await
            .into_iter()
            .flat_map(Result::unwrap)
            .collect();
        assert_eq!(issued.len(), ISSUERS * EACH);
        // Every token was issued before this revoke began, so none may survive it.
        h.tokens.revoke(k, &user("ivan")).await.unwrap();
        let mut survivors = 0;
        for t in &issued {
            if h.tokens.consume(k, t, None).await.is_ok() {
                survivors += 1;
            }
        }
        assert_eq!(survivors, 0, "tokens that outlived a later revoke");
    }

    pub async fn purge_removes_only_expired(h: &Harness) {
        let short = Duration::from_millis(200);
        for _ in 0..5 {
            h.tokens
                .issue(AuthEphemeralToken::new_oidc_exchange(user("gina")).with_ttl(short))
                .await
                .unwrap();
        }
        let mut live = Vec::new();
        for _ in 0..4 {
            live.push(
                h.tokens
                    .issue(AuthEphemeralToken::new_oidc_exchange(user("gina")))
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(short + Duration::from_millis(150)).await;
        // Batches of 2, paced: the purge loops until a batch comes back short. Redis has
        // expired them by itself.
        let purged = h
            .tokens
            .clone()
            .with_purge_batch(2)
            .purge(Pace::share(3))
            .await
            .unwrap();
        assert_eq!(purged, if h.purges() { 5 } else { 0 });
        assert_eq!(h.tokens.purge(Pace::FULL).await.unwrap(), 0);
        for t in &live {
            h.tokens
                .consume(TokenType::OidcExchange, t.token.expose(), None)
                .await
                .unwrap();
        }
    }

    pub async fn concurrent_purges_agree(h: &Harness) {
        let short = Duration::from_millis(100);
        for _ in 0..60 {
            h.tokens
                .issue(AuthEphemeralToken::new_oidc_exchange(user("hal")).with_ttl(short))
                .await
                .unwrap();
        }
        tokio::time::sleep(short + Duration::from_millis(150)).await;
        let purgers = (0..6).map(|_| {
            let t = h.tokens.clone().with_purge_batch(5);
            tokio::spawn(async move { t.purge(Pace::FULL).await.unwrap() })
        });
        let total: u64 = join_all(purgers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .sum();
        let expected = if h.purges() { 60 } else { 0 };
        assert_eq!(total, expected, "every expired row deleted exactly once");
    }

    /// `claim_once`: the first claim of a key wins, later ones lose until it expires, and
    /// of 64 tasks racing for each of 20 keys exactly one wins each; namespaces are apart.
    pub async fn claims_are_won_once(h: &Harness) {
        use std::time::Duration;
        let key = format!("user:{}:123456", uuid::Uuid::new_v4());
        let long = Duration::from_secs(60);
        assert!(h.tokens.claim_once(&key, long).await.unwrap());
        assert!(!h.tokens.claim_once(&key, long).await.unwrap());
        let app = h.tokens.in_namespace("app");
        assert!(
            app.claim_once(&key, long).await.unwrap(),
            "another namespace's key"
        );
        assert!(!app.claim_once(&key, long).await.unwrap());
        let short = format!("short:{}", uuid::Uuid::new_v4());
        assert!(
            h.tokens
                .claim_once(&short, Duration::from_millis(300))
                .await
                .unwrap()
        );
        assert!(!h.tokens.claim_once(&short, long).await.unwrap());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            h.tokens.claim_once(&short, long).await.unwrap(),
            "claimable once expired"
        );

        let keys: Vec<String> = (0..20)
            .map(|i| format!("race:{i}:{}", uuid::Uuid::new_v4()))
            .collect();
        let mut tasks = Vec::new();
        for key in &keys {
            for _ in 0..64 {
                let (tokens, key) = (h.tokens.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    (key.clone(), tokens.claim_once(&key, long).await.unwrap())
                }));
            }
        }
        let mut wins = std::collections::HashMap::<String, usize>::new();
        for t in join_all(tasks).await {
            let (key, won) = t.unwrap();
            *wins.entry(key).or_default() += usize::from(won);
        }
        assert!(
            keys.iter().all(|k| wins[k] == 1),
            "one winner per key: {wins:?}"
        );
    }

    pub async fn racing_consumers_have_one_winner_each(h: &Harness) {
        const TOKENS: usize = 200;
        const RACERS: usize = 64;
        let k = TokenType::PreAuth;
        let c = Challenge::generate();
        let mut issued = Vec::with_capacity(TOKENS);
        for i in 0..TOKENS {
            issued.push(
                h.tokens
                    .issue(AuthEphemeralToken::new_pre_auth(
                        user(&format!("u{i}")),
                        Some(c.clone()),
                    ))
                    .await
                    .unwrap()
                    .token,
            );
        }
        let wins: Vec<Arc<AtomicUsize>> =
            (0..TOKENS).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        // Ten tokens at a time, each raced by 64 tasks: 640 consumers in flight.
        for (wave, wave_wins) in issued.chunks(10).zip(wins.chunks(10)) {
            let mut tasks = Vec::new();
            for (token, won) in wave.iter().zip(wave_wins) {
                for _ in 0..RACERS {
                    let tokens = h.tokens.clone();
                    let s = token.expose().to_owned();
                    let c = c.clone();
                    let won = won.clone();
                    tasks.push(tokio::spawn(async move {
                        match tokens.consume(k, &s, Some(&c)).await {
                            Ok(_) => {
                                won.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(StoreError::InvalidOrExpired) => {}
                            Err(e) => panic!("consume failed: {e}"),
                        }
                    }));
                }
            }
            join_all(tasks).await.into_iter().for_each(Result::unwrap);
        }
        let per_token: Vec<usize> = wins.iter().map(|w| w.load(Ordering::SeqCst)).collect();
        assert!(
            per_token.iter().all(|&n| n == 1),
            "every token has exactly one winner: {per_token:?}"
        );
        let challenge = c.hash();
        for t in &issued {
            let hash = t.hash();
            let lookup = Lookup {
                kind: k,
                hash: &hash,
                challenge: Some(&challenge),
                consume: false,
            };
            assert!(h.store.take(lookup).await.unwrap().is_none());
        }
    }

    pub async fn dump_reveals_no_secret(h: &Harness) {
        let c = Challenge::new("challenge-cookie-value");
        let mut secrets: Vec<String> = vec!["challenge-cookie-value".into()];
        let mut news = Vec::new();
        for i in 0..5 {
            let nonce = format!("nonce-secret-{i}");
            let verifier = format!("pkce-verifier-secret-{i}-abcdefghijklmnopqrstuvwxyz");
            let data = format!("/private/return-{i}");
            secrets.extend([nonce.clone(), verifier.clone(), data.clone()]);
            news.push(
                AuthEphemeralToken::new_oidc_state(format!("{i}"), nonce, verifier)
                    .with_data(serde_json::json!({ "return_to": data }))
                    .with_challenge(c.clone()),
            );
            let code_hash = format!("email-code-hash-{i}");
            secrets.push(code_hash.clone());
            news.push(AuthEphemeralToken::new_email_otp_setup(
                user("ivy"),
                code_hash,
            ));
            let resource = format!("download-resource-{i}");
            secrets.push(resource.clone());
            news.push(AuthEphemeralToken::new_download(
                user("ivy"),
                serde_json::json!(resource),
            ));
        }
        for new in news {
            let t = h.tokens.issue(new).await.unwrap();
            secrets.push(t.token.expose().to_owned());
            // The random part alone, too: a prefix-less copy is as good as the token.
            secrets.push(t.token.expose()[7..].to_owned());
        }
        let dump = h.dump().await;
        assert!(
            dump.windows(3).any(|w| w == b"ivy"),
            "the dump does show clear fields, so it is a real dump"
        );
        for s in &secrets {
            assert!(
                !dump.windows(s.len()).any(|w| w == s.as_bytes()),
                "the store dump contains a secret"
            );
        }
    }

    pub async fn moved_record_does_not_open(h: &Harness) {
        let k = TokenType::PreAuth;
        let victim = h
            .tokens
            .issue(AuthEphemeralToken::new_pre_auth(user("admin"), None))
            .await
            .unwrap();
        let attacker = h
            .tokens
            .issue(AuthEphemeralToken::new_pre_auth(user("mallory"), None))
            .await
            .unwrap();
        h.move_record(&victim.token, &attacker.token).await;
        assert_invalid(h.tokens.consume(k, attacker.token.expose(), None).await);
        assert_invalid(h.tokens.consume(k, victim.token.expose(), None).await);
    }
}

macro_rules! every_backend {
    ($($backend:ident),*) => {
        $(
            tessera_testkit::backend_cases!($backend: [
                issue_and_consume_every_kind,
                user_tokens_carry_their_username,
                consume_is_single_use,
                unknown_and_malformed_are_invalid,
                wrong_kind_is_invalid_and_does_not_burn,
                custom_kinds_are_kept_apart,
                wrong_or_missing_challenge_is_invalid_and_does_not_burn,
                peek_does_not_consume,
                expiry_follows_the_store_clock,
                revoke_removes_one_kind_of_one_user,
                revoke_racing_issues_loses_none,
                purge_removes_only_expired,
                concurrent_purges_agree,
                racing_consumers_have_one_winner_each,
                claims_are_won_once,
                dump_reveals_no_secret,
                moved_record_does_not_open,
            ]);
        )*
    };
}

every_backend!(sqlite, postgres, postgres_sync_all, redis, redis_cluster);

/// The embedded database holds password hashes and sessions: its file, and the write-ahead
/// log SQLite makes beside it, are the owner's alone.
#[tokio::test]
async fn a_new_sqlite_database_is_readable_by_its_owner_only() {
    use sea_orm::ConnectionTrait;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.db");
    let db = tessera_backend::sql::connect(&format!("sqlite://{}?mode=rwc", file.display()), 2)
        .await
        .unwrap();
    db.execute_unprepared("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    for name in ["tessera.db", "tessera.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    db.close().await.unwrap();
}

/// The `synchronous_commit` in force on `conn` (in its transaction, if it is one).
async fn synchronous_commit(conn: &impl ConnectionTrait) -> String {
    conn.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT current_setting('synchronous_commit') AS s",
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get::<String>("", "s")
    .unwrap()
}

/// On PostgreSQL a relaxed issue turns `synchronous_commit` off for its own transaction
/// only, in the same statement; the plain issue and consume leave it on.
#[tokio::test]
async fn a_relaxed_issue_commits_without_waiting_and_only_it() {
    let db = TestDb::postgres().await;
    let sql = tessera_store::sql::statements(DbBackend::Postgres).unwrap();
    let setting_after = |statement: &'static str, values: Vec<sea_orm::Value>| {
        let conn = db.db.clone();
        async move {
            use sea_orm::TransactionTrait;
            let txn = conn.begin().await.unwrap();
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                statement,
                values,
            ))
            .await
            .unwrap();
            let setting = synchronous_commit(&txn).await;
            txn.rollback().await.unwrap();
            setting
        }
    };
    let issue_values = || -> Vec<sea_orm::Value> {
        vec![
            vec![7u8; 32].into(),
            "pre_auth".into(),
            Some("ann".to_owned()).into(),
            None::<String>.into(),
            None::<Vec<u8>>.into(),
            vec![0u8].into(),
            60_000i64.into(),
        ]
    };
    let relaxed = sql.issue_relaxed.expect("PostgreSQL has a relaxed issue");
    assert_eq!(setting_after(relaxed, issue_values()).await, "off");
    assert_eq!(setting_after(sql.issue, issue_values()).await, "on");
    let consume_values = vec![
        vec![7u8; 32].into(),
        "pre_auth".into(),
        None::<Vec<u8>>.into(),
    ];
    assert_eq!(setting_after(sql.consume, consume_values).await, "on");
    // Outside its transaction the session keeps the server's setting.
    assert_eq!(synchronous_commit(&db.db).await, "on");
    db.finish().await;
}

/// Tokens a Redis store holds from earlier versions are still consumed with their
/// challenge, carry their expiry, and are revoked by their user: challenge hashes kept in
/// hex, the expiry kept as field `e`, and index entries (the token hash in hex or as bytes)
/// kept in a set under `idx:`.
#[tokio::test]
async fn redis_tokens_in_earlier_forms_still_work() {
    let url = require_redis();
    let conn = RedisConnection::connect(&url)
        .await
        .expect("Redis connects");
    let prefix = unique_prefix();
    let store = RedisTokenStore::new(conn.clone()).with_prefix(&prefix);
    let tokens = Tokens::new(Arc::new(store.clone()));
    let challenge = Challenge::generate();
    let mut c = conn.clone();
    let mut old_form = Vec::new();
    let expires_field = 4_000_000_000_000i64;
    let legacy_index = format!("{prefix}idx:{{pre_auth:olga}}");
    for i in 0..3 {
        let t = tokens
            .issue(AuthEphemeralToken::new_pre_auth(
                user("olga"),
                Some(challenge.clone()),
            ))
            .await
            .unwrap();
        let key = store.token_key(&t.token.hash());
        // Rewrite it as earlier versions held it.
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let _: () = ::redis::cmd("HSET")
            .arg(&key)
            .arg("c")
            .arg(hex(&challenge.hash().0))
            .arg("e")
            .arg(expires_field)
            .query_async(&mut c)
            .await
            .unwrap();
        let index: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{prefix}ix:*"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(index, [format!("{prefix}ix:{{pre_auth:olga}}")]);
        let raw = t.token.hash().as_bytes().to_vec();
        let _: () = ::redis::cmd("HDEL")
            .arg(&index[0])
            .arg(&raw)
            .query_async(&mut c)
            .await
            .unwrap();
        let entry = if i == 0 {
            t.token.hash().to_hex().into_bytes()
        } else {
            raw
        };
        let _: () = ::redis::cmd("SADD")
            .arg(&legacy_index)
            .arg(entry)
            .query_async(&mut c)
            .await
            .unwrap();
        old_form.push(t);
    }
    // One of today's form beside them.
    let new_form = tokens
        .issue(AuthEphemeralToken::new_pre_auth(
            user("olga"),
            Some(challenge.clone()),
        ))
        .await
        .unwrap();
    assert_invalid(
        tokens
            .consume(TokenType::PreAuth, old_form[0].token.expose(), None)
            .await,
    );
    let got = tokens
        .consume(
            TokenType::PreAuth,
            old_form[0].token.expose(),
            Some(&challenge),
        )
        .await
        .unwrap();
    assert_eq!(got.username.as_deref(), Some("olga"));
    assert_eq!(got.expires_at.timestamp_millis(), expires_field);
    assert_eq!(
        tokens
            .revoke(TokenType::PreAuth, &user("olga"))
            .await
            .unwrap(),
        3
    );
    for t in old_form.iter().skip(1).chain([&new_form]) {
        assert_invalid(
            tokens
                .consume(TokenType::PreAuth, t.token.expose(), Some(&challenge))
                .await,
        );
    }
}

/// On PostgreSQL, in one burst of mixed concurrent consumes each caller hears only of its
/// own request: a token asked for by three callers goes to one, and a wrong kind, a wrong
/// or missing challenge, an expired or an unknown token wins nothing and burns nobody's
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_mixed_consumes_answers_each_caller_its_own() {
    use tessera_entity::{ChallengeHash, TokenHash};
    use tessera_store::SealedToken;
    const TOKENS: u8 = 100;
    let db = TestDb::postgres().await;
    let store: Arc<dyn TokenStore> = Arc::new(SqlTokenStore::new(db.db.clone()).unwrap());
    let hash = |i: u8, salt: u8| {
        let mut h = [7u8; 32];
        h[0] = i;
        h[1] = salt;
        TokenHash(h)
    };
    let right = ChallengeHash([1; 32]);
    let wrong = ChallengeHash([2; 32]);
    let issue = |i: u8, salt: u8, ttl: Duration| SealedToken {
        hash: hash(i, salt),
        kind: TokenType::PreAuth,
        username: Some(format!("u{i}")),
        provider_id: None,
        challenge_hash: Some(right),
        sealed: vec![i],
        ttl,
    };
    for i in 0..TOKENS {
        store
            .issue(issue(i, 0, Duration::from_secs(60)))
            .await
            .unwrap();
        store
            .issue(issue(i, 1, Duration::from_millis(1)))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    // (token, salt, kind, challenge, whether it may win)
    let mut requests = Vec::new();
    for i in 0..TOKENS {
        for _ in 0..3 {
            requests.push((i, 0, TokenType::PreAuth, Some(right), true));
        }
        requests.push((i, 0, TokenType::PreAuth, Some(wrong), false));
        requests.push((i, 0, TokenType::PreAuth, None, false));
        requests.push((i, 0, TokenType::PasswordReset, Some(right), false));
        requests.push((i, 1, TokenType::PreAuth, Some(right), false)); // expired
        requests.push((i, 2, TokenType::PreAuth, Some(right), false)); // never issued
    }
    // Interleaved, so that a batch holds requests for many tokens at once.
    requests.sort_by_key(|&(i, salt, ..)| (salt, i % 7, i));
    let answers = join_all(requests.iter().map(|&(i, salt, kind, challenge, _)| {
        let store = store.clone();
        tokio::spawn(async move {
            let h = hash(i, salt);
            let lookup = Lookup {
                kind,
                hash: &h,
                challenge: challenge.as_ref(),
                consume: true,
            };
            store.take(lookup).await.unwrap()
        })
    }))
    .await;
    let mut wins = vec![0; usize::from(TOKENS)];
    for (&(i, _, _, _, may_win), answer) in requests.iter().zip(answers) {
        if let Some(record) = answer.unwrap() {
            assert!(
                may_win,
                "request {i} won with the wrong kind, challenge or token"
            );
            assert_eq!(record.username.as_deref(), Some(format!("u{i}").as_str()));
            assert_eq!(record.sealed, vec![i]);
            wins[usize::from(i)] += 1;
        }
    }
    assert!(
        wins.iter().all(|&n| n == 1),
        "one winner per token: {wins:?}"
    );
    db.finish().await;
}
