//! Issue + consume through the token store, against the bare statements the store runs,
//! through the same driver and connection pool, in the same run. The difference is the
//! store's own work: token generation, hashing, sealing and opening, row decoding.
//!
//! `cargo bench -p tessera-store --bench tokens` (PostgreSQL from
//! `TESSERA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use criterion::{Criterion, criterion_group, criterion_main};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tessera_entity::{AuthEphemeralToken, Challenge, TokenType, Username};
use tessera_store::{SqlTokenStore, Tokens, sql};
use tessera_testkit::TestDb;
use tokio::runtime::Runtime;

/// The bare round trips: the store's INSERT and DELETE ... RETURNING with precomputed
/// values of the same sizes.
async fn bare_issue_consume(db: &DatabaseConnection, n: u64) {
    let backend = db.get_database_backend();
    let s = sql::statements(backend).unwrap();
    let mut hash = [7u8; 32];
    hash[..8].copy_from_slice(&n.to_be_bytes());
    let challenge = vec![9u8; 32];
    let insert: Vec<Value> = vec![
        hash.to_vec().into(),
        "pre_auth".into(),
        Some("alice".to_owned()).into(),
        None::<String>.into(),
        Some(challenge.clone()).into(),
        vec![1u8; 19].into(),
        300_000i64.into(),
    ];
    let row = db
        .query_one_raw(Statement::from_sql_and_values(backend, s.issue, insert))
        .await
        .unwrap()
        .unwrap();
    let _: chrono::DateTime<chrono::Utc> = row.try_get("", "expires_at").unwrap();
    let lookup: Vec<Value> = vec![
        hash.to_vec().into(),
        "pre_auth".into(),
        Some(challenge).into(),
    ];
    let row = db
        .query_one_raw(Statement::from_sql_and_values(backend, s.consume, lookup))
        .await
        .unwrap()
        .expect("the row is there");
    let _: Vec<u8> = row.try_get("", "sealed").unwrap();
}

async fn store_issue_consume(tokens: &Tokens, user: &Username, challenge: &Challenge) {
    let t = tokens
        .issue(AuthEphemeralToken::new_pre_auth(
            user.clone(),
            Some(challenge.clone()),
        ))
        .await
        .unwrap();
    tokens
        .consume(TokenType::PreAuth, t.token.expose(), Some(challenge))
        .await
        .unwrap();
}

fn bench_backend(c: &mut Criterion, rt: &Runtime, name: &str, db: &TestDb) {
    let tokens = Tokens::new(Arc::new(SqlTokenStore::new(db.db.clone()).unwrap()));
    let user = Username::parse("alice").unwrap();
    let challenge = Challenge::generate();
    let counter = AtomicU64::new(0);
    let mut g = c.benchmark_group(format!("issue_consume/{name}"));
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("bare_sql", |b| {
        b.to_async(rt)
            .iter(|| bare_issue_consume(&db.db, counter.fetch_add(1, Ordering::Relaxed)))
    });
    g.bench_function("store", |b| {
        b.to_async(rt)
            .iter(|| store_issue_consume(&tokens, &user, &challenge))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tessera_testkit::bench_runtime();
    let sqlite = rt.block_on(TestDb::sqlite_file());
    bench_backend(c, &rt, "sqlite", &sqlite);
    rt.block_on(sqlite.finish());
    let pg = rt.block_on(TestDb::postgres());
    bench_backend(c, &rt, "postgres", &pg);
    rt.block_on(pg.finish());
}

criterion_group!(tokens, benches);
criterion_main!(tokens);
