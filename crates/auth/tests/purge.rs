//! The background purge on PostgreSQL: one worker's at a time, its turn given back however
//! it ends, and explicit purges never kept waiting by it.

use sea_orm::ConnectionTrait;
use std::sync::Arc;
use std::time::Duration;
use tessera_auth::{Auth, AuthSettings};
use tessera_limiter::{Limiter, SqlLimiter};
use tessera_store::{SqlTokenStore, Tokens};
use tessera_testkit::TestDb;

/// A worker's handle on `db`: its own pool, as a separate process would have.
async fn worker(db: &TestDb, batch: u32) -> Auth {
    let conn = tessera_backend::sql::connect(&db.url, 4).await.unwrap();
    let tokens =
        Tokens::new(Arc::new(SqlTokenStore::new(conn.clone()).unwrap())).with_purge_batch(batch);
    let limiter = Limiter::new(
        Arc::new(SqlLimiter::new(conn.clone()).unwrap()),
        tessera_auth::throttle::default_policies(),
    );
    let outbox = std::env::temp_dir();
    Auth::new(conn, tokens, limiter, AuthSettings::ephemeral(outbox))
}

/// `n` expired tokens and one live one.
async fn expired_tokens(db: &TestDb, n: i64) {
    db.db
        .execute_unprepared(&format!(
            "INSERT INTO auth_ephemeral_tokens (token_hash, token_type, username, sealed, expires_at, created_at) \
             SELECT sha256(int8send(g)), 'pre_auth', 'u' || g, '\\x00', \
             now() + CASE WHEN g = 0 THEN interval '1 hour' ELSE interval '-1 hour' END, now() \
             FROM generate_series(0, {n}) g"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_background_purge_at_a_time_and_explicit_ones_alongside() {
    let db = TestDb::postgres().await;
    expired_tokens(&db, 4000).await;
    let (a, b, c) = (
        worker(&db, 100).await,
        worker(&db, 100).await,
        worker(&db, 100).await,
    );

    // a's paced purge takes its turn; b's, started while a's runs, skips it; c's explicit
    // purge runs alongside a's, and between them every expired row is deleted exactly once.
    let first = tokio::spawn(async move { a.purge_in_background().await.unwrap() });
    // Its first batch is gone: it holds the turn.
    while db.count("auth_ephemeral_tokens").await > 4001 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let skipped = b.purge_in_background().await.unwrap();
    assert_eq!(
        skipped, None,
        "a second background purge runs while the first does"
    );
    let explicit = c.purge().await.unwrap();
    let first = first
        .await
        .unwrap()
        .expect("the first background purge took its turn");
    assert_eq!(first.tokens + explicit.tokens, 4000);
    assert_eq!(
        db.count("auth_ephemeral_tokens").await,
        1,
        "the live token stays"
    );

    // The turn is given back: b's next background purge runs.
    assert!(b.purge_in_background().await.unwrap().is_some());
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_purge_cut_off_gives_its_turn_back() {
    let db = TestDb::postgres().await;
    expired_tokens(&db, 3000).await;
    let (a, b) = (worker(&db, 50).await, worker(&db, 50).await);
    // Cut off mid-way (as at shutdown), between or during its batches.
    let cut = tokio::time::timeout(Duration::from_millis(40), a.purge_in_background()).await;
    assert!(cut.is_err(), "the purge was still running when cut off");
    let left = db.count("auth_ephemeral_tokens").await;
    assert!(left > 1, "{left} rows left: the purge had not finished");
    // The other worker gets the turn within a moment, and finishes the work.
    let mut turn = None;
    for _ in 0..50 {
        turn = b.purge_in_background().await.unwrap();
        if turn.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let purged = turn.expect("the cut-off purge's turn was given back");
    assert_eq!(purged.tokens as i64, left - 1);
    assert_eq!(db.count("auth_ephemeral_tokens").await, 1);
    db.finish().await;
}
