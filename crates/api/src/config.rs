//! Configuration: parsed once, in `main`, from flags and `TESSERA_*` variables.

use std::net::SocketAddr;
use std::time::Duration;

/// The embedded default: a SQLite file in the working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tessera.db?mode=rwc";

/// Where the state lives.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://FILE?mode=rwc` (the embedded default) or
    /// `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "TESSERA_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Largest number of pooled database connections per process.
    #[arg(long, env = "TESSERA_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Redis for tokens and rate limits (the database then keeps only the schema and
    /// accounts): `redis://HOST:PORT`, or a comma-separated list of node URLs for a Redis
    /// Cluster.
    #[arg(long, env = "TESSERA_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Which PostgreSQL writes wait for the flush to disk: `relaxed` lets rate-limit events
    /// and newly issued tokens commit without waiting (a database crash can lose the last
    /// few hundred milliseconds of them); consumes, revokes, `once` claims and the login
    /// tables always wait. `all` makes every write wait.
    #[arg(long, env = "TESSERA_PG_SYNC", default_value = "relaxed")]
    pub pg_sync: tessera_auth::open::PgSync,
}

impl DatabaseArgs {
    /// Whether the database is an embedded SQLite file (migrated automatically).
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }

    /// Opens the database.
    pub async fn open(&self) -> Result<sea_orm::DatabaseConnection, tessera_auth::open::OpenError> {
        tessera_auth::open::database(&self.database_url, self.db_max_connections).await
    }
}

/// Rate-limit policies.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Overrides of the rate-limit policies, comma-separated `EVENT=LIMIT/WINDOW`, a
    /// trailing `~` selecting the approximate counter: for example
    /// `2fa_attempt=5/5m,login_ip=100/15m~`. Unnamed events keep their defaults
    /// (2fa_attempt 5/5m, mfa_token_attempt 5/10m, email_send 3/10m, mail_to_address 10/1h,
    /// login_attempt 10/15m, login_ip 50/15m, login_user_ip 5/15m, password_reset_send
    /// 3/1h, password_reset_ip 10/1h, oidc_start_ip 50/15m).
    #[arg(long, env = "TESSERA_RATE_LIMITS", default_value = "")]
    pub rate_limits: String,
}

impl LimitArgs {
    /// The defaults with the overrides applied.
    pub fn policies(&self) -> Result<tessera_limiter::Policies, tessera_limiter::PolicyParseError> {
        let mut p = tessera_auth::throttle::default_policies();
        p.apply_overrides(&self.rate_limits)?;
        Ok(p)
    }
}

/// The key that encrypts secrets at rest (TOTP secrets, OIDC client secrets).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// Key (at least 32 characters) from which the encryption key for secrets at rest is
    /// derived; every worker must share it. Unset with the embedded SQLite default: a key is
    /// generated once into `DATABASE.key` (mode 0600). Unset with any other database: `serve`
    /// refuses to start.
    #[arg(long, env = "TESSERA_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Former secret keys, comma-separated, still accepted for reading secrets sealed before
    /// a rotation; `tessera keys rotate` re-seals those under the current key.
    #[arg(
        long,
        env = "TESSERA_PREVIOUS_SECRET_KEYS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub previous_secret_keys: String,
}

impl KeyArgs {
    /// The key ring for secrets at rest in the database `db` names.
    pub fn ring(
        &self,
        db: &DatabaseArgs,
    ) -> Result<tessera_auth::secrets::KeyRing, tessera_auth::open::OpenError> {
        tessera_auth::open::key_ring(
            &db.database_url,
            self.secret_key.as_deref(),
            &self.previous_secret_keys,
        )
    }
}

/// The login flows under `/auth`.
#[derive(clap::Args, Debug, Clone)]
pub struct AuthArgs {
    /// The URL users reach the service at. Cookies are `Secure` when it is https, links in
    /// mails are built from it, and a request whose `Origin` is not its origin is refused
    /// on cookie-authorized routes. Default: `http://` + the listen address.
    #[arg(long, env = "TESSERA_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Other origins whose browser apps may call `/auth` with credentials, comma-separated
    /// exact origins (`https://app.example.com`; never `*`): their preflights are answered
    /// and their `Origin` passes the CSRF check.
    #[arg(long, env = "TESSERA_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// `Domain` of the cookies, for apps on sibling subdomains (`example.com` when the
    /// public URL is `https://auth.example.com`); unset: cookies are host-only.
    #[arg(long, env = "TESSERA_COOKIE_DOMAIN")]
    pub cookie_domain: Option<String>,

    /// SMTP server for mail, for example `smtp://127.0.0.1:2525` (`smtps://` for TLS, user
    /// and password in the URL). Unset: mail is written to the outbox folder.
    #[arg(long, env = "TESSERA_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Folder that receives mail when no SMTP server is configured.
    #[arg(long, env = "TESSERA_OUTBOX_DIR", default_value = "./outbox")]
    pub outbox_dir: std::path::PathBuf,

    /// Sender of the service's mail.
    #[arg(
        long,
        env = "TESSERA_MAIL_FROM",
        default_value = "Tessera <tessera@localhost>"
    )]
    pub mail_from: String,

    /// Whether `POST /auth/register` creates accounts (`false`: 403 `registration_disabled`).
    #[arg(long, env = "TESSERA_REGISTRATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub registration: bool,

    /// Whether sign-in links can be mailed (`/auth/magic-link/...`; `false`: 403
    /// `magic_links_disabled`).
    #[arg(long, env = "TESSERA_MAGIC_LINKS", default_value_t = true, action = clap::ArgAction::Set)]
    pub magic_links: bool,

    /// Seconds a session lasts.
    #[arg(long, env = "TESSERA_SESSION_TTL", default_value_t = 12 * 60 * 60)]
    pub session_ttl: u64,

    /// Second-factor failures that lock an account. They accumulate until a complete
    /// sign-in (a correct password does not reset them), and every further this many lock
    /// again. Wrong passwords never lock: they are throttled.
    #[arg(long, env = "TESSERA_LOCKOUT_THRESHOLD", default_value_t = 10)]
    pub lockout_threshold: u32,

    /// Minutes the first lock lasts; the second lasts twice as long, every later one 24
    /// hours. At the defaults: at most 30 second-factor guesses per account in any 24 hours.
    #[arg(long, env = "TESSERA_LOCKOUT_MINUTES", default_value_t = 30)]
    pub lockout_minutes: u64,

    /// Where the OIDC callback sends the browser, with `#oidc_exchange=...` or
    /// `#oidc_error=...`; a `return_to` path is taken on its origin. Default: the public
    /// URL + `/login`, the sign-in page, which finishes the exchange itself.
    #[arg(long, env = "TESSERA_OIDC_RETURN_URL")]
    pub oidc_return_url: Option<String>,

    /// Whether an OIDC login of an unknown subject creates an account (`false`: it ends in
    /// `#oidc_error=user_creation_disabled`).
    #[arg(long, env = "TESSERA_OIDC_CREATE_USERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub oidc_create_users: bool,

    /// Issuer name shown by authenticator apps.
    #[arg(long, env = "TESSERA_TOTP_ISSUER", default_value = "Tessera")]
    pub totp_issuer: String,
}

/// `tessera serve`.
impl AuthArgs {
    /// The login domain's settings, with `keys` and `listen` (for the default public URL).
    pub fn settings(
        &self,
        keys: tessera_auth::secrets::KeyRing,
        listen: SocketAddr,
    ) -> Result<tessera_auth::AuthSettings, String> {
        use tessera_auth::settings::origin_of;
        let public_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        let public_url = public_url.trim_end_matches('/').to_owned();
        let public_origin =
            origin_of(&public_url).map_err(|e| format!("TESSERA_PUBLIC_URL: {e}"))?;
        let cors_origins = self
            .cors_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(tessera_auth::settings::exact_origin)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("TESSERA_CORS_ORIGINS: {e}"))?;
        let cookie_domain = self
            .cookie_domain
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .map(|d| tessera_auth::settings::cookie_domain_for(d, &public_origin))
            .transpose()
            .map_err(|e| format!("TESSERA_COOKIE_DOMAIN: {e}"))?;
        let mailer = tessera_auth::mail::Mailer::new(
            self.smtp_url.as_deref(),
            self.outbox_dir.clone(),
            &self.mail_from,
        )
        .map_err(|e| format!("mail: {e}"))?;
        let oidc_return_url = self
            .oidc_return_url
            .clone()
            .unwrap_or_else(|| format!("{public_url}/login"));
        origin_of(&oidc_return_url).map_err(|e| format!("TESSERA_OIDC_RETURN_URL: {e}"))?;
        Ok(tessera_auth::AuthSettings {
            keys,
            mailer,
            oidc_return_url,
            oidc_create_users: self.oidc_create_users,
            oidc: Default::default(),
            secure_cookies: public_origin.starts_with("https://"),
            cors_origins,
            cookie_domain,
            public_url,
            public_origin,
            registration: self.registration,
            magic_links: self.magic_links,
            session_ttl: Duration::from_secs(self.session_ttl.max(60)),
            lockout_threshold: self.lockout_threshold.max(1),
            lockout_duration: Duration::from_secs(self.lockout_minutes.max(1) * 60),
            clock: Default::default(),
            totp_issuer: self.totp_issuer.clone(),
        })
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub keys: KeyArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// Address to listen on.
    #[arg(long, env = "TESSERA_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Port to listen on, overriding the port of --bind (to run several workers on one
    /// machine).
    #[arg(long, env = "TESSERA_PORT")]
    pub port: Option<u16>,

    /// Apply pending migrations at start instead of refusing an unmigrated schema (SQLite
    /// databases are always migrated at start).
    #[arg(long = "migrate", env = "TESSERA_AUTO_MIGRATE")]
    pub auto_migrate: bool,

    /// Seconds between two purges of expired tokens; 0 turns the background purge off.
    #[arg(long, env = "TESSERA_PURGE_INTERVAL", default_value_t = 60)]
    pub purge_interval: u64,

    /// Service keys for `/v1`, comma-separated; with none, `/v1` refuses every request.
    #[arg(
        long,
        env = "TESSERA_API_KEYS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub api_keys: String,

    /// Proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` header
    /// gives the client address; from anyone else the header is ignored.
    #[arg(long, env = "TESSERA_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// IPv6 clients are counted by their network of this prefix length in per-address
    /// limits (one host usually holds a whole /64).
    #[arg(long, env = "TESSERA_IPV6_PREFIX", default_value_t = crate::http::client_ip::DEFAULT_IPV6_PREFIX)]
    pub ipv6_prefix: u8,

    /// Largest request body in bytes; larger ones get 413 `body_too_large`.
    #[arg(long, env = "TESSERA_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Seconds a client has to send a request's headers (on a new connection or between
    /// requests of a kept-alive one) before the connection is closed: a client that
    /// trickles its headers (slowloris) cannot hold a connection.
    #[arg(long, env = "TESSERA_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,

    /// Connections served at once; further ones wait in the listen queue until one ends,
    /// so a flood cannot use up the process's file descriptors.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Seconds a request may take before it is answered 503 `timeout`.
    #[arg(long, env = "TESSERA_REQUEST_TIMEOUT", default_value_t = 10)]
    pub request_timeout: u64,

    /// Rows one purge statement deletes at most, so that a purge never holds long locks.
    #[arg(long, env = "TESSERA_PURGE_BATCH", default_value_t = tessera_store::DEFAULT_PURGE_BATCH)]
    pub purge_batch: u32,

    /// Threads that run requests (1 to 1024); by default half the CPUs the process may
    /// use, at least one (see [`ServeConfig::runtime_threads`]). Hashing runs on threads of
    /// its own either way.
    #[arg(long, env = "TESSERA_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

impl ServeConfig {
    /// How many threads run requests: `--worker-threads`, or half the CPUs the process may
    /// use, at least one. A worker shares its machine with its proxy, its database or
    /// Redis and the argon2 hashing threads; a request that is woken on another runtime
    /// thread than the one it last ran on costs a context switch, and on a machine where
    /// every core is busy that costs more than the second thread brings.
    pub fn runtime_threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            usize::from,
        )
    }

    /// The address to bind: --bind with --port applied.
    pub fn listen_addr(&self) -> SocketAddr {
        let mut addr = self.bind;
        if let Some(port) = self.port {
            addr.set_port(port);
        }
        addr
    }

    /// The purge interval, or `None` when the background purge is off.
    pub fn purge_every(&self) -> Option<Duration> {
        (self.purge_interval > 0).then(|| Duration::from_secs(self.purge_interval))
    }
}
