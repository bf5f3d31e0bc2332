//! Test harness for Tessera: each test gets its own real database — a SQLite file in a
//! temporary directory, or a PostgreSQL database named by a UUID — migrated and ready.
//!
//! A missing service fails the test with a message that names it and says how to start
//! it; nothing is skipped.

use sea_orm::{ConnectionTrait, DatabaseConnection};
use tempfile::TempDir;
use tessera_migration::{Migrator, MigratorTrait};

/// Where the tests find PostgreSQL (a database the test user may create databases from).
pub fn postgres_admin_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of one test: dropped by [`TestDb::finish`].
pub struct TestDb {
    /// The connection URL, for processes the test starts.
    pub url: String,
    /// An open, migrated connection.
    pub db: DatabaseConnection,
    pg_name: Option<String>,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// A migrated SQLite database in a file of a fresh temporary directory.
    pub async fn sqlite_file() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("tessera.db").display()
        );
        let db = tessera_store::sql::connect(&url, 8)
            .await
            .expect("SQLite opens");
        Migrator::up(&db, None).await.expect("migrations apply");
        TestDb {
            url,
            db,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, named by a UUID, migrated.
    pub async fn postgres() -> TestDb {
        let db = TestDb::postgres_unmigrated().await;
        Migrator::up(&db.db, None).await.expect("migrations apply");
        db
    }

    /// A fresh, empty PostgreSQL database.
    pub async fn postgres_unmigrated() -> TestDb {
        let admin_url = postgres_admin_url();
        let admin = require_postgres(&admin_url).await;
        let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("CREATE DATABASE");
        admin.close().await.ok();
        let url = replace_db_name(&admin_url, &name);
        let db = tessera_store::sql::connect(&url, 16)
            .await
            .expect("the new database opens");
        TestDb {
            url,
            db,
            pg_name: Some(name),
            _dir: None,
        }
    }

    /// Closes the pool and drops the database (PostgreSQL) or its directory (SQLite).
    pub async fn finish(self) {
        self.db.close().await.ok();
        if let Some(name) = self.pg_name
            && let Ok(admin) = tessera_store::sql::connect(&postgres_admin_url(), 1).await
        {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .ok();
            admin.close().await.ok();
        }
    }
}

async fn require_postgres(url: &str) -> DatabaseConnection {
    match tessera_store::sql::connect(url, 1).await {
        Ok(db) => db,
        Err(e) => panic!(
            "PostgreSQL is required by this test and is not reachable at {url}: {e}\n\
             Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
             or point TESSERA_TEST_POSTGRES_URL at a server where this user may CREATE DATABASE."
        ),
    }
}

/// `url` with its database name replaced by `name`.
pub fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}
