//! What a live token costs in Redis: `MEMORY USAGE` of its key, plus its entry in the
//! user's index; and the index of a user who is issued tokens without pause stays as small
//! as their live tokens.

use std::sync::Arc;
use std::time::Duration;
use tessera_backend::redis::RedisConnection;
use tessera_entity::{AuthEphemeralToken, Challenge, TokenType, Username};
use tessera_store::{RedisTokenStore, Tokens};
use tessera_testkit::{require_redis, unique_prefix};

async fn memory_usage(conn: &RedisConnection, key: &str) -> i64 {
    let mut c = conn.clone();
    ::redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// Measured under the production key prefix, `tessera:tok:`, for a `pre_auth` token with
/// an 11-character username and a challenge: the per-token figure the README reports.
#[tokio::test]
async fn a_live_token_costs_under_300_bytes() {
    let conn = RedisConnection::connect(&require_redis()).await.unwrap();
    let redis = RedisTokenStore::new(conn.clone());
    let tokens = Tokens::new(Arc::new(redis.clone()));
    // Eleven characters, and no other test's.
    let name = format!("mem-{}", &uuid::Uuid::new_v4().simple().to_string()[..7]);
    let user = Username::parse(name.clone()).unwrap();
    let index_key = format!("tessera:tok:ix:{{pre_auth:{name}}}");
    let issue = || async {
        tokens
            .issue(AuthEphemeralToken::new_pre_auth(
                user.clone(),
                Some(Challenge::generate()),
            ))
            .await
            .unwrap()
    };

    // A user's only token: its key and the whole index.
    let first = issue().await;
    let alone = memory_usage(&conn, &redis.token_key(&first.token.hash())).await;
    let index_alone = memory_usage(&conn, &index_key).await;

    // A hundred tokens of one user: the index shared among them.
    const N: i64 = 100;
    let mut total = alone;
    for _ in 1..N {
        let t = issue().await;
        total += memory_usage(&conn, &redis.token_key(&t.token.hash())).await;
    }
    let index = memory_usage(&conn, &index_key).await;
    let per_token = total / N + index / N;
    eprintln!(
        "a live pre_auth token costs {per_token} bytes in Redis (key {} + index entry {}); \
         a user's only token {} (key {alone} + index {index_alone})",
        total / N,
        index / N,
        alone + index_alone,
    );
    assert_eq!(
        tokens.revoke(TokenType::PreAuth, &user).await.unwrap(),
        N as u64
    );
    assert!(per_token < 300, "{per_token} bytes per token");
    assert!(alone + index_alone < 512, "{} bytes", alone + index_alone);
}

/// An attacker who keeps asking for tokens for one user (password resets by name, say)
/// adds an index entry each time, and each entry outlives its token's use: the expired ones
/// must go, or the index grows for as long as the requests keep coming.
#[tokio::test]
async fn expired_index_entries_go_as_new_ones_come() {
    let conn = RedisConnection::connect(&require_redis()).await.unwrap();
    let prefix = unique_prefix();
    let redis = RedisTokenStore::new(conn.clone()).with_prefix(&prefix);
    let tokens = Tokens::new(Arc::new(redis));
    let user = Username::parse("victim").unwrap();
    let index_key = format!("{prefix}ix:{{password_reset:victim}}");
    let hlen = || async {
        let mut c = conn.clone();
        ::redis::cmd("HLEN")
            .arg(&index_key)
            .query_async::<i64>(&mut c)
            .await
            .unwrap()
    };
    let issue = |ttl: Duration| {
        let tokens = tokens.clone();
        let user = user.clone();
        async move {
            tokens
                .issue(AuthEphemeralToken::new_password_reset(user).with_ttl(ttl))
                .await
                .unwrap()
        }
    };
    // 200 short-lived tokens, then one long-lived one every so often keeps the index alive.
    for _ in 0..200 {
        issue(Duration::from_secs(4)).await;
    }
    assert_eq!(hlen().await, 200);
    issue(Duration::from_secs(600)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The 200 have expired; 100 more live ones come in.
    for _ in 0..100 {
        issue(Duration::from_secs(600)).await;
    }
    let left = hlen().await;
    eprintln!("index entries after 200 expired and 101 live: {left}");
    assert!(left >= 101, "no live entry is dropped: {left}");
    assert!(left <= 111, "expired entries are dropped: {left}");
    // And revoke still finds every live one.
    assert_eq!(
        tokens
            .revoke(TokenType::PasswordReset, &user)
            .await
            .unwrap(),
        101
    );
}
