//! The `tessera` command: parses the command line and hands over to `tessera-api`.

use clap::{Parser, Subcommand};
use tessera_api::Application;
use tessera_api::config::{DatabaseArgs, KeyArgs, LimitArgs, ServeConfig};
use tessera_auth::open;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Single-use tokens and sliding-window rate limits shared by every worker of a web
/// deployment.
#[derive(Parser)]
#[command(name = "tessera", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(Box<ServeConfig>),
    /// Apply pending database migrations (idempotent).
    Migrate(DatabaseArgs),
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage OpenID providers (rows in the database: every worker sees them at once).
    #[command(subcommand)]
    Oidc(OidcCommand),
    /// Manage the key that encrypts secrets at rest.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Delete expired tokens, events, sessions and codes now, in bounded batches.
    Purge {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// Rows one statement deletes at most.
        #[arg(long, env = "TESSERA_PURGE_BATCH", default_value_t = tessera_store::DEFAULT_PURGE_BATCH)]
        purge_batch: u32,
    },
}

#[derive(Subcommand)]
enum OidcCommand {
    /// Add a provider. Register `PUBLIC_URL/auth/oidc/NAME/callback` as its redirect URI.
    Add {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        provider: ProviderArgs,
        /// Add it without fetching its discovery document first.
        #[arg(long)]
        no_check: bool,
    },
    /// List the providers (one JSON object per line, no secrets).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Remove a provider and the account links made through it.
    Remove {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The provider's name.
        name: String,
    },
}

/// A new OpenID provider.
#[derive(clap::Args)]
struct ProviderArgs {
    /// The name in the routes: `[a-z0-9_-]`, 1 to 64 characters.
    name: String,
    /// The issuer URL (discovery is read from ISSUER/.well-known/openid-configuration).
    #[arg(long)]
    issuer: String,
    /// The client id registered at the provider.
    #[arg(long)]
    client_id: String,
    /// The client secret (stored encrypted); omit for a public client.
    #[arg(long, env = "TESSERA_OIDC_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Scopes to ask for.
    #[arg(long, default_value = "openid email profile")]
    scopes: String,
    /// Trust the provider's authentication: no local second factor after it.
    #[arg(long)]
    skip_local_mfa: bool,
}

impl From<ProviderArgs> for tessera_auth::oidc::NewProvider {
    fn from(p: ProviderArgs) -> Self {
        tessera_auth::oidc::NewProvider {
            name: p.name,
            issuer: p.issuer,
            client_id: p.client_id,
            client_secret: p.client_secret,
            scopes: p.scopes,
            skip_local_mfa: p.skip_local_mfa,
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-encrypt every secret at rest under TESSERA_SECRET_KEY; secrets sealed under a key
    /// in TESSERA_PREVIOUS_SECRET_KEYS are opened with it first. Run it after rolling in a
    /// new key, then drop the old one from TESSERA_PREVIOUS_SECRET_KEYS.
    Rotate {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        keys: KeyArgs,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. The password comes from TESSERA_USER_PASSWORD or, with
    /// --password-stdin, from the first line of standard input.
    Create {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The login name.
        username: String,
        /// The mail address (for second-factor codes and password resets).
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// List accounts, one JSON object per line (no secrets).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Refuse every login of an account.
    Disable {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The login name.
        username: String,
    },
    /// Accept an account's logins again.
    Enable {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The login name.
        username: String,
    },
    /// Set an account's password, as from TESSERA_USER_PASSWORD or --password-stdin; its
    /// sessions, logins in flight and reset links end, and its lock is cleared.
    SetPassword {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The login name.
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Delete an account with its sessions, second factors, OIDC links and tokens.
    Delete {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The login name.
        username: String,
    },
    /// Clear an account's failure count and lock.
    Unlock {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The login name.
        username: String,
    },
    /// Require a second factor before the account's next login completes.
    EnforceMfa {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The login name.
        username: String,
    },
}

/// Where a password given to the CLI comes from.
#[derive(clap::Args)]
struct PasswordArgs {
    /// Read the password from the first line of standard input (otherwise it is read from
    /// TESSERA_USER_PASSWORD).
    #[arg(long)]
    password_stdin: bool,
    #[arg(
        long,
        env = "TESSERA_USER_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    password: Option<String>,
}

impl PasswordArgs {
    fn read(self) -> anyhow::Result<tessera_auth::hashing::Password> {
        let password = if self.password_stdin {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        } else {
            self.password.ok_or_else(|| {
                anyhow::anyhow!(
                    "give the password in TESSERA_USER_PASSWORD or with --password-stdin"
                )
            })?
        };
        Ok(tessera_auth::hashing::Password::parse(password)?)
    }
}

async fn user_command(command: UserCommand) -> anyhow::Result<()> {
    use tessera_auth::accounts::{self as users, Change};
    let open = |database: DatabaseArgs| async move { schema_checked(&database).await };
    let name = |s: String| {
        tessera_entity::AccountName::parse(&s).map_err(|e| anyhow::anyhow!("invalid username: {e}"))
    };
    let (database, username, change) = match command {
        UserCommand::Create {
            database,
            username,
            email,
            password,
        } => {
            let password = password.read()?;
            let db = open(database).await?;
            let user = users::create(&db, name(username)?, email, password, None).await?;
            println!("{}", serde_json::to_string(&user)?);
            return Ok(());
        }
        UserCommand::List { database } => {
            let db = open(database).await?;
            for user in users::list(&db).await? {
                println!("{}", serde_json::to_string(&user)?);
            }
            return Ok(());
        }
        UserCommand::SetPassword {
            database,
            username,
            password,
        } => {
            let password = password.read()?;
            let (db, tokens) = open_with_tokens(&database).await?;
            let (username, ended) =
                users::set_password(&db, &tokens, &name(username)?, password).await?;
            println!("set the password of `{username}`; {ended} session(s) ended");
            return Ok(());
        }
        UserCommand::Delete { database, username } => {
            let (db, tokens) = open_with_tokens(&database).await?;
            let deleted = users::delete(&db, &tokens, &name(username)?).await?;
            println!(
                "deleted `{}` with {} session(s) and {} token(s)",
                deleted.username, deleted.sessions, deleted.tokens
            );
            return Ok(());
        }
        UserCommand::Disable { database, username } => (database, username, Change::Disable),
        UserCommand::Enable { database, username } => (database, username, Change::Enable),
        UserCommand::Unlock { database, username } => (database, username, Change::Unlock),
        UserCommand::EnforceMfa { database, username } => (database, username, Change::EnforceMfa),
    };
    let (db, tokens) = open_with_tokens(&database).await?;
    let username = users::change(&db, &name(username)?, change).await?;
    let done = match change {
        Change::Disable => {
            // Logins in flight end with the account: no pending second factor or OIDC
            // exchange completes after it.
            users::revoke_pending(&tokens, &username).await?;
            "disabled: every login is refused, and logins in flight have ended"
        }
        Change::Enable => "enabled: it can sign in again",
        Change::Unlock => "unlocked: its failure count and lock are cleared",
        Change::EnforceMfa => "must set up a second factor before its next login completes",
    };
    println!("`{username}` {done}");
    Ok(())
}

/// The database (its schema checked) and the token store of `database`.
async fn open_with_tokens(
    database: &DatabaseArgs,
) -> anyhow::Result<(sea_orm::DatabaseConnection, tessera_store::Tokens)> {
    let db = schema_checked(database).await?;
    let (tokens, _) = open::stores(
        db.clone(),
        database.redis_url.as_deref(),
        tessera_auth::throttle::default_policies(),
        tessera_store::DEFAULT_PURGE_BATCH,
        database.pg_sync,
    )
    .await?;
    Ok((db, tokens))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(config) = &cli.command {
        runtime.worker_threads(config.runtime_threads());
    }
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match std::env::var("TESSERA_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().init(),
        Ok("text") | Err(_) => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Ok(other) => anyhow::bail!("TESSERA_LOG_FORMAT is `text` or `json`, not `{other}`"),
    }
    match cli.command {
        Command::Serve(config) => {
            let app = Application::build(*config).await?;
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Migrate(database) => {
            let db = database.open().await?;
            let n = open::migrate(&db).await?;
            println!("{n} migration(s) applied; the schema is up to date");
        }
        Command::User(command) => user_command(command).await?,
        Command::Purge {
            database,
            limits,
            purge_batch,
        } => {
            let db = database.open().await?;
            let redis_url = database.redis_url.as_deref();
            let (tokens, limiter) = open::stores(
                db.clone(),
                redis_url,
                limits.policies()?,
                purge_batch,
                database.pg_sync,
            )
            .await?;
            let purged = tessera_auth::purge::purge(&db, &tokens, &limiter).await?;
            println!("{}", serde_json::to_string(&purged)?);
        }
        Command::Oidc(command) => oidc_command(command).await?,
        Command::Keys(KeysCommand::Rotate { database, keys }) => {
            let ring = keys.ring(&database)?;
            let db = schema_checked(&database).await?;
            let report = tessera_auth::rotation::rotate_secrets(&db, &ring).await?;
            println!(
                "{} secret(s) re-encrypted under key {}, {} already under it",
                report.rotated,
                ring.current_id(),
                report.current
            );
        }
    }
    Ok(())
}

async fn oidc_command(command: OidcCommand) -> anyhow::Result<()> {
    use tessera_auth::oidc;
    match command {
        OidcCommand::Add {
            database,
            keys,
            provider,
            no_check,
        } => {
            if !no_check {
                let issuer = &provider.issuer;
                oidc::OidcClients::default()
                    .check_issuer(issuer)
                    .await
                    .map_err(|why| {
                        anyhow::anyhow!(
                            "the issuer `{issuer}` did not answer with a discovery document \
                             ({}/.well-known/openid-configuration): {why}\n\
                             Check --issuer, or add the provider anyway with --no-check.",
                            issuer.trim_end_matches('/')
                        )
                    })?;
            }
            let ring = keys.ring(&database)?;
            let db = schema_checked(&database).await?;
            let added = oidc::add_provider(&db, &ring, provider.into()).await?;
            println!("{}", serde_json::to_string(&added)?);
        }
        OidcCommand::List { database } => {
            let db = schema_checked(&database).await?;
            for p in oidc::list_providers(&db).await? {
                println!("{}", serde_json::to_string(&p)?);
            }
        }
        OidcCommand::Remove { database, name } => {
            let db = schema_checked(&database).await?;
            oidc::remove_provider(&db, &name).await?;
            println!("removed `{name}`");
        }
    }
    Ok(())
}

/// The database of `database`, migrated when it is the embedded SQLite default and
/// refused when its schema is not this build's otherwise (as `serve` without `--migrate`).
async fn schema_checked(database: &DatabaseArgs) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = database.open().await?;
    open::prepare_schema(&db, database.is_sqlite()).await?;
    Ok(db)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
