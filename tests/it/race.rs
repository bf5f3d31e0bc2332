//! Several OS processes consume the same tokens on one PostgreSQL database: exactly one
//! winner per token.
//!
//! The test binary is its own child: the parent issues the tokens and starts three copies
//! of this binary running [`child_consumer`], each of which races 16 tasks per token
//! against the other processes.

use futures::future::join_all;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tessera_entity::{AuthEphemeralToken, Challenge, TokenType, Username};
use tessera_store::{SqlTokenStore, StoreError, Tokens};
use tessera_testkit::TestDb;

use crate::helpers::{race_children, wait_for_go};

const PROCESSES: usize = 3;
const TOKENS: usize = 200;
const TASKS_PER_TOKEN: usize = 16;
/// Pooled connections per child process.
const POOL: usize = 16;

#[tokio::test]
async fn three_processes_race_to_consume_each_token_once() {
    let db = TestDb::postgres().await;
    let tokens = Tokens::new(Arc::new(SqlTokenStore::new(db.db.clone()).unwrap()));
    let challenge = Challenge::generate();
    let mut issued = Vec::new();
    for i in 0..TOKENS {
        let u = Username::parse(format!("racer{i}")).unwrap();
        let t = tokens
            .issue(AuthEphemeralToken::new_pre_auth(u, Some(challenge.clone())))
            .await
            .unwrap();
        issued.push(t.token.expose().to_owned());
    }
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("tokens");
    std::fs::write(&list, issued.join("\n")).unwrap();
    let children = race_children(
        dir.path(),
        "race::child_consumer",
        PROCESSES,
        &[
            ("TESSERA_RACE_DB", &db.url),
            ("TESSERA_RACE_TOKENS", list.to_str().unwrap()),
            ("TESSERA_RACE_CHALLENGE", challenge.expose()),
        ],
    );

    let mut wins: HashMap<String, usize> = HashMap::new();
    let mut per_process = Vec::new();
    for (mut child, out) in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "a consumer process failed: {status}");
        let won = std::fs::read_to_string(&out).unwrap();
        let won: Vec<&str> = won.lines().filter(|l| !l.is_empty()).collect();
        per_process.push(won.len());
        for t in won {
            *wins.entry(t.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(wins.len(), TOKENS, "every token was consumed by someone");
    assert!(
        wins.values().all(|&n| n == 1),
        "no token was consumed twice"
    );
    assert_eq!(per_process.iter().sum::<usize>(), TOKENS);
    eprintln!("wins per process: {per_process:?}");
    db.finish().await;
}

/// The child side of the race; does nothing unless started by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "started as a child process by three_processes_race_to_consume_each_token_once"]
async fn child_consumer() {
    let Ok(url) = std::env::var("TESSERA_RACE_DB") else {
        return;
    };
    let var = |k: &str| PathBuf::from(std::env::var(k).unwrap());
    let db = tessera_backend::sql::connect(&url, POOL as u32)
        .await
        .unwrap();
    let tokens = Tokens::new(Arc::new(SqlTokenStore::new(db).unwrap()));
    let list = std::fs::read_to_string(var("TESSERA_RACE_TOKENS")).unwrap();
    let challenge = Challenge::new(std::env::var("TESSERA_RACE_CHALLENGE").unwrap());
    let out = wait_for_go().await;
    // The tasks queue here, not in the pool: 3200 of them waiting on 16 connections would
    // outlast the pool's 5-second acquire timeout on a loaded machine. The 16 consumers of a
    // token are spawned together, so they still race each other and the other processes.
    let slots = Arc::new(tokio::sync::Semaphore::new(POOL));
    let mut tasks = Vec::new();
    for token in list.lines() {
        for _ in 0..TASKS_PER_TOKEN {
            let tokens = tokens.clone();
            let token = token.to_owned();
            let challenge = challenge.clone();
            let slots = slots.clone();
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire().await.expect("the semaphore stays open");
                match tokens
                    .consume(TokenType::PreAuth, &token, Some(&challenge))
                    .await
                {
                    Ok(_) => Some(token),
                    Err(StoreError::InvalidOrExpired) => None,
                    Err(e) => panic!("consume failed: {e}"),
                }
            }));
        }
    }
    let won: Vec<String> = join_all(tasks)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap())
        .collect();
    std::fs::write(out, won.join("\n")).unwrap();
}
