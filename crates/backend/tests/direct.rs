//! PostgreSQL's direct pool: connections go back without a round trip, so what a caller
//! leaves behind must never reach the next one.

use sea_orm::{DbBackend, Statement};
use std::time::Duration;
use tessera_backend::direct::Direct;
use tessera_testkit::TestDb;
use tokio::time::timeout;

async fn one_connection(db: &TestDb) -> Direct {
    let main = tessera_backend::sql::connect(&db.url, 1).await.unwrap();
    Direct::for_postgres(&main).expect("a PostgreSQL database")
}

fn value(direct_row: Option<sea_orm::QueryResult>) -> i64 {
    direct_row.expect("one row").try_get("", "v").unwrap()
}

/// A request dropped while its statement runs (a client that went away, a timeout) leaves
/// a connection with an answer still on its way: it is closed, not handed to the next
/// caller, who would wait for that answer or read it as theirs.
#[tokio::test]
async fn a_statement_cancelled_halfway_does_not_reach_the_next_caller() {
    let db = TestDb::postgres().await;
    let direct = one_connection(&db).await;
    let slow = Statement::from_string(
        DbBackend::Postgres,
        "SELECT 1::bigint AS v FROM pg_sleep(3)",
    );
    assert!(
        timeout(Duration::from_millis(200), direct.query_one(slow))
            .await
            .is_err(),
        "the slow statement is cut off"
    );
    let fast = Statement::from_string(DbBackend::Postgres, "SELECT 2::bigint AS v");
    let row = timeout(Duration::from_secs(2), direct.query_one(fast))
        .await
        .expect("the next caller does not wait for the cancelled statement")
        .unwrap();
    assert_eq!(value(row), 2);
    db.finish().await;
}

/// A statement the server refuses leaves the connection fit, and the next caller gets
/// their own answer.
#[tokio::test]
async fn a_refused_statement_leaves_the_connection_usable() {
    let db = TestDb::postgres().await;
    let direct = one_connection(&db).await;
    let bad = Statement::from_string(DbBackend::Postgres, "SELECT 1 / 0 AS v");
    assert!(direct.query_one(bad).await.is_err());
    let ok = Statement::from_string(DbBackend::Postgres, "SELECT 7::bigint AS v");
    assert_eq!(value(direct.query_one(ok).await.unwrap()), 7);
    db.finish().await;
}

/// Many callers on few connections each get the answer to their own statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_each_get_their_own_answer() {
    let db = TestDb::postgres().await;
    let main = tessera_backend::sql::connect(&db.url, 3).await.unwrap();
    let direct = Direct::for_postgres(&main).unwrap();
    let tasks: Vec<_> = (0..300i64)
        .map(|i| {
            let direct = direct.clone();
            tokio::spawn(async move {
                let stmt = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT $1::bigint AS v",
                    [i.into()],
                );
                // Every tenth caller gives up early, as a dropped request would.
                if i % 10 == 0 {
                    let _ = timeout(Duration::from_micros(50), direct.query_one(stmt)).await;
                    return;
                }
                assert_eq!(value(direct.query_one(stmt).await.unwrap()), i);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    db.finish().await;
}
