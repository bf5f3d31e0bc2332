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
    /// The rows of `table`.
    pub async fn count(&self, table: &str) -> i64 {
        let stmt = sea_orm::Statement::from_string(
            self.db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        );
        let row = self.db.query_one_raw(stmt).await.unwrap().unwrap();
        row.try_get("", "n").unwrap()
    }

    /// A migrated SQLite database in a file of a fresh temporary directory.
    pub async fn sqlite_file() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("tessera.db").display()
        );
        let db = tessera_backend::sql::connect(&url, 8)
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
        let db = tessera_backend::sql::connect(&url, 16)
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
            && let Ok(admin) = tessera_backend::sql::connect(&postgres_admin_url(), 1).await
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
    match tessera_backend::sql::connect(url, 1).await {
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

/// Where the tests find a standalone Redis.
pub fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Checks that the standalone Redis answers, or fails the test saying how to start it.
pub fn require_redis() -> String {
    let url = redis_url();
    let hostport = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    if std::net::TcpStream::connect(&hostport).is_err() {
        panic!(
            "Redis is required by this test and is not reachable at {url}.\n\
             Start it with: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no\n\
             or point TESSERA_TEST_REDIS_URL at one."
        );
    }
    url
}

/// The runtime benchmarks run their callers on: two worker threads, as on the CI machine.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A unique key prefix for one test on a shared Redis.
pub fn unique_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// A Redis Cluster of three masters on loopback ports, started by the tests.
pub struct RedisCluster {
    /// The node URLs, comma-separated, as `TESSERA_REDIS_URL` takes them.
    pub urls: String,
    /// The node ports.
    pub ports: Vec<u16>,
    // The watchdog shells, kept so that they are not reaped while the servers run.
    _watchdogs: std::sync::Mutex<Vec<std::process::Child>>,
}

static CLUSTER: std::sync::OnceLock<RedisCluster> = std::sync::OnceLock::new();

impl RedisCluster {
    /// The cluster of this test process, started on first use. Its servers stop by
    /// themselves within a second of this process exiting.
    pub fn shared() -> &'static RedisCluster {
        CLUSTER.get_or_init(RedisCluster::start)
    }

    /// The node URLs of [`RedisCluster::shared`], from async code (starting the cluster
    /// blocks, so it runs on a blocking thread).
    pub async fn shared_urls() -> String {
        tokio::task::spawn_blocking(|| RedisCluster::shared().urls.clone())
            .await
            .expect("the cluster starts")
    }

    fn start() -> RedisCluster {
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};
        for tool in ["redis-server", "redis-cli"] {
            if Command::new(tool).arg("--version").output().is_err() {
                panic!(
                    "{tool} is required to start a Redis Cluster for the tests: apt-get install redis-server"
                );
            }
        }
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        let ports = cluster_ports(3);
        let me = std::process::id();
        let mut watchdogs = Vec::new();
        for port in &ports {
            // A watchdog shell stops the server once this test process is gone.
            let script = format!(
                "redis-server --port {port} --bind 127.0.0.1 --cluster-enabled yes \
                 --cluster-config-file nodes-{port}.conf --dir {dir} --save '' --appendonly no \
                 --cluster-node-timeout 2000 >/dev/null 2>&1 & r=$!; \
                 while kill -0 {me} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 1; done; kill $r 2>/dev/null",
                dir = dir.display()
            );
            watchdogs.push(
                Command::new("sh")
                    .args(["-c", &script])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("sh starts redis-server"),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in &ports {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "redis-server on {port} did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for port in &ports {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli runs");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become ready"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster {
            urls: ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(","),
            ports,
            _watchdogs: std::sync::Mutex::new(watchdogs),
        }
    }
}

/// `n` free ports whose cluster-bus ports (port + 10000) are free too.
fn cluster_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let p = l.local_addr().unwrap().port();
        if p < 55_000
            && !ports.contains(&p)
            && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            ports.push(p);
        }
    }
    ports
}

/// One module per backend, one test per conformance case: `backend_cases!(sqlite: [case_a,
/// case_b] extra items...)` makes `mod sqlite` with a test per case that builds
/// `super::Harness::sqlite()`, runs `super::cases::case_a(&h)` and finishes the harness;
/// the extra items go into the module as they are.
#[macro_export]
macro_rules! backend_cases {
    ($backend:ident: [$($case:ident),* $(,)?] $($extra:item)*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let h = super::Harness::$backend().await;
                    super::cases::$case(&h).await;
                    h.finish().await;
                }
            )*
            $($extra)*
        }
    };
}
