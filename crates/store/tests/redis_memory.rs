//! What a live token costs in Redis: `MEMORY USAGE` of its key, plus its entry in the
//! user's index set.

use std::sync::Arc;
use tessera_backend::redis::RedisConnection;
use tessera_entity::{AuthEphemeralToken, Challenge, Username};
use tessera_store::{RedisTokenStore, Tokens};
use tessera_testkit::{require_redis, unique_prefix};

#[tokio::test]
async fn a_live_token_costs_a_few_hundred_bytes() {
    let conn = RedisConnection::connect(&require_redis()).await.unwrap();
    let prefix = unique_prefix();
    let redis = RedisTokenStore::new(conn.clone()).with_prefix(&prefix);
    let tokens = Tokens::new(Arc::new(redis.clone()));
    let user = Username::parse("memory-user").unwrap();
    let mut c = conn.clone();
    let mut total = 0i64;
    const N: i64 = 100;
    for _ in 0..N {
        let t = tokens
            .issue(AuthEphemeralToken::new_pre_auth(
                user.clone(),
                Some(Challenge::generate()),
            ))
            .await
            .unwrap();
        let bytes: i64 = ::redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(redis.token_key(&t.token.hash()))
            .query_async(&mut c)
            .await
            .unwrap();
        total += bytes;
    }
    let index: i64 = ::redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("{prefix}idx:{{pre_auth:memory-user}}"))
        .query_async(&mut c)
        .await
        .unwrap();
    let per_token = total / N + index / N;
    eprintln!(
        "a live pre_auth token costs {} bytes in Redis (key {} + index {})",
        per_token,
        total / N,
        index / N
    );
    assert!(
        per_token > 0 && per_token < 1024,
        "{per_token} bytes per token"
    );
}
