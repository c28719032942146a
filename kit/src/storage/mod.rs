//! Storage: each service owns one database, SQLite by default (a file in the instance's
//! data directory) or PostgreSQL (a database of its own), and its own migrations, which
//! run on start.
//!
//! One store implementation serves both backends: statements ([`sql`]) are written with
//! `$1`-style parameters, which SQLite and PostgreSQL both accept, and a service branches
//! on [`Database::backend`] only where the SQL really differs (full-text search, upserts,
//! locking). SQLite runs on the calling thread ([`sqlite`]); PostgreSQL through sqlx's
//! typed driver. Migrations run through sqlx's migrator on both.
//!
//! A `LIMIT` takes its parameter as `LIMIT CAST($n AS BIGINT)`: SQLite plans a statement
//! whose `LIMIT` is a bare parameter for the value bound, so it prepares it again on every
//! run (the cost of the whole query again).

mod postgres;
pub mod sql;
pub mod sqlite;

use std::borrow::Cow;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{Migration as SqlxMigration, MigrationType, Migrator};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, Connection, SqlSafeStr};
use tokio::sync::watch;

use crate::changes::{Changes, DataVersion};
pub use sql::{
    Connection as TransactionConnection, DbError, Decode, Done, Encode, Executor, FromRow, Row,
    Transaction, Value, query, query_as, query_scalar,
};

/// Why storage could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "the database URL {0:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DATABASE"
    )]
    UnsupportedUrl(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot open the database {url}: {source}")]
    Open { url: String, source: DbError },
    #[error(
        "cannot create the PostgreSQL database {database}: {source}; create it, or connect as a role allowed to"
    )]
    CreateDatabase {
        database: String,
        source: sqlx::Error,
    },
    #[error("cannot lock {path} to migrate the database: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("migrating the database {url} failed: {source}")]
    MigrateSqlite {
        url: String,
        source: sqlite::MigrateError,
    },
    #[error("migrating the database {url} failed: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// Which database engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One schema migration, embedded in the service's binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// A service's migrations, one list per backend.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub sqlite: &'static [Migration],
    pub postgres: &'static [Migration],
}

/// What runs statements: SQLite's two connections, or a PostgreSQL pool.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub enum Engine {
    Sqlite(Arc<sqlite::Sqlite>),
    Postgres(PgPool),
}

impl Engine {
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Self::Sqlite(engine) => engine.is_closed(),
            Self::Postgres(pool) => pool.is_closed(),
        }
    }
}

/// A handle to the service's own database; clones share its connections.
#[derive(Debug, Clone)]
pub struct Database {
    engine: Engine,
    /// How far the data has moved on; shared by every clone of this handle.
    changes: Arc<Changes>,
    backend: Backend,
    url: String,
    /// The SQLite file, which replicas of a service share.
    sqlite_file: Option<PathBuf>,
}

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections each instance may hold on PostgreSQL. A whole system (12 services, some
/// scaled out) must fit in the server's default limit of 100 with room to spare; the
/// services' transactions are short, so a few connections keep up with 2 cores.
const POSTGRES_POOL: u32 = 5;

impl Database {
    /// Opens the database at `url`, creating the SQLite file (and its directory) or the
    /// PostgreSQL database when it does not exist yet.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url).await
        } else {
            Err(StorageError::UnsupportedUrl(redact(url)))
        }
    }

    fn connect_sqlite(url: &str) -> Result<Self, StorageError> {
        let file = sqlite_path(url).ok_or_else(|| StorageError::UnsupportedUrl(url.to_owned()))?;
        if let Some(parent) = file
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| StorageError::DataDir {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let engine = sqlite::Sqlite::open(&file).map_err(|source| StorageError::Open {
            url: url.to_owned(),
            source: source.into(),
        })?;
        Ok(Self {
            engine: Engine::Sqlite(Arc::new(engine)),
            changes: Arc::default(),
            backend: Backend::Sqlite,
            url: url.to_owned(),
            sqlite_file: Some(file),
        })
    }

    async fn connect_postgres(url: &str) -> Result<Self, StorageError> {
        let connect_error = |source| StorageError::Connect {
            url: redact(url),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(connect_error)?;
        match options.connect().await {
            Ok(connection) => {
                let _ = connection.close().await;
            }
            Err(error) if is_missing_database(&error) => create_postgres_database(&options).await?,
            Err(error) => return Err(connect_error(error)),
        }
        let pool = PoolOptions::<sqlx::Postgres>::new()
            .max_connections(POSTGRES_POOL)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(Self {
            engine: Engine::Postgres(pool),
            changes: Arc::default(),
            backend: Backend::Postgres,
            url: url.to_owned(),
            sqlite_file: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What runs this database's statements.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The newest version of the data this instance knows of (see [`crate::changes`]).
    pub fn data_version(&self) -> DataVersion {
        self.changes.current(&self.engine)
    }

    /// Every new version of the data, as it is seen.
    pub fn watch_data_version(&self) -> watch::Receiver<DataVersion> {
        self.changes.subscribe(&self.engine)
    }

    /// Tells the version's watcher that this instance just committed a change, so feed
    /// readers and caches hear of it now rather than at the next poll.
    pub fn changed(&self) {
        self.changes.nudge();
    }

    /// Reads the version now: after a write its writer's next read must see.
    pub async fn refresh_data_version(&self) -> Result<DataVersion, DbError> {
        self.changes.refresh(&self.engine).await
    }

    /// Opens the database at `url` and brings its schema up to date: what every service
    /// does first.
    pub async fn open(url: &str, migrations: &Migrations) -> Result<Self, StorageError> {
        let db = Self::connect(url).await?;
        db.migrate(migrations).await?;
        Ok(db)
    }

    /// Brings the schema up to date: the kit's own tables (the event outbox, inbox and
    /// feed positions), then the service's migrations for this backend.
    ///
    /// Replicas starting together migrate one at a time: PostgreSQL through sqlx's advisory
    /// lock, SQLite through an exclusive lock on a file beside the database.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<(), StorageError> {
        let (kit, list, _lock) = match self.backend {
            Backend::Sqlite => (
                KIT_MIGRATIONS.sqlite,
                migrations.sqlite,
                self.lock_sqlite_file().await?,
            ),
            Backend::Postgres => (KIT_MIGRATIONS.postgres, migrations.postgres, None),
        };
        let migrate_error = |source| StorageError::Migrate {
            url: redact(&self.url),
            source,
        };
        match &self.engine {
            Engine::Postgres(pool) => {
                let mut kit_migrator = migrator(kit);
                kit_migrator.dangerous_set_table_name(KIT_MIGRATIONS_TABLE);
                kit_migrator.run(pool).await.map_err(migrate_error)?;
                migrator(list).run(pool).await.map_err(migrate_error)
            }
            Engine::Sqlite(engine) => {
                let sqlite_error = |source| StorageError::MigrateSqlite {
                    url: self.url.clone(),
                    source,
                };
                engine
                    .migrate(KIT_MIGRATIONS_TABLE, kit)
                    .await
                    .map_err(sqlite_error)?;
                engine
                    .migrate("_sqlx_migrations", list)
                    .await
                    .map_err(sqlite_error)
            }
        }
    }

    async fn lock_sqlite_file(&self) -> Result<Option<std::fs::File>, StorageError> {
        let Some(database) = &self.sqlite_file else {
            return Ok(None);
        };
        let mut name = database.clone().into_os_string();
        name.push(".migrate-lock");
        let path = PathBuf::from(name);
        let lock_error = |source| StorageError::Lock {
            path: path.display().to_string(),
            source,
        };
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_error)?;
        // Blocks until another replica's migration is done.
        let locked = tokio::task::spawn_blocking(move || opened.lock().map(|()| opened))
            .await
            .map_err(|join| lock_error(std::io::Error::other(join)))?
            .map_err(lock_error)?;
        Ok(Some(locked))
    }

    /// What a `SELECT` inside a write transaction appends to lock the rows it reads until
    /// the transaction ends: `FOR UPDATE` on PostgreSQL; nothing on SQLite, where a write
    /// transaction ([`Database::begin_write`]) already holds the only write lock.
    pub fn lock_rows(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// A transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): two transactions that read and then write would otherwise
    /// both fail with "database is locked" instead of waiting their turn.
    pub async fn begin_write(&self) -> Result<Transaction, DbError> {
        let connection = match &self.engine {
            Engine::Sqlite(engine) => sql::Connection::Sqlite(engine.begin().await?),
            Engine::Postgres(pool) => sql::Connection::Postgres(Box::new(pool.begin().await?)),
        };
        Ok(Transaction::new(connection))
    }

    /// A transaction. On SQLite every transaction is a write transaction
    /// ([`Database::begin_write`]): reads outside one never wait.
    pub async fn begin(&self) -> Result<Transaction, DbError> {
        self.begin_write().await
    }

    /// Closes the database, waiting for what is in use; later statements fail.
    pub async fn close(&self) {
        match &self.engine {
            Engine::Sqlite(engine) => engine.close().await,
            Engine::Postgres(pool) => pool.close().await,
        }
    }
}

/// Where the kit's own migrations are recorded (the service's are in sqlx's usual table).
const KIT_MIGRATIONS_TABLE: &str = "_comb_kit_migrations";

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names; anything after `?` is ignored.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    // Each connection to an in-memory database would have a database of its own.
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// The kit's own tables, in every service's database.
const KIT_MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "events",
        sql: include_str!("../../migrations/sqlite/0001_events.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "events",
        sql: include_str!("../../migrations/postgres/0001_events.sql"),
    }],
};

fn migrator(migrations: &[Migration]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|migration| {
                SqlxMigration::new(
                    migration.version,
                    Cow::Borrowed(migration.description),
                    MigrationType::Simple,
                    migration.sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

fn is_missing_database(error: &sqlx::Error) -> bool {
    // 3D000: invalid_catalog_name, PostgreSQL's "database does not exist".
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000"))
}

async fn create_postgres_database(options: &PgConnectOptions) -> Result<(), StorageError> {
    let database = options.get_database().unwrap_or_default().to_owned();
    let create_error = |source| StorageError::CreateDatabase {
        database: database.clone(),
        source,
    };
    if database.is_empty()
        || !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(create_error(sqlx::Error::Configuration(
            "a database comb creates must be named with letters, digits and underscores".into(),
        )));
    }
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(create_error)?;
    let statement = format!("CREATE DATABASE \"{database}\"");
    let result = sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    match result {
        Ok(_) => Ok(()),
        // 42P04: duplicate_database, another instance created it first.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => Ok(()),
        Err(error) => Err(create_error(error)),
    }
}

/// A database URL with its password hidden, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATIONS: Migrations = Migrations {
        sqlite: &[Migration {
            version: 1,
            description: "notes",
            sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        }],
        postgres: &[],
    };

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://comb:secret@db:5432/x"),
            "postgres://comb:***@db:5432/x"
        );
        assert_eq!(redact("postgres://comb@db/x"), "postgres://comb@db/x");
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }

    #[tokio::test]
    async fn sqlite_file_and_directory_are_created_and_migrated_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::config::sqlite_url(&dir.path().join("nested/dir/service.db"));
        let database = Database::connect(&url).await.expect("connect");
        assert_eq!(database.backend(), Backend::Sqlite);
        database.migrate(&MIGRATIONS).await.expect("migrate");
        database
            .migrate(&MIGRATIONS)
            .await
            .expect("migrating again is a no-op");
        query("INSERT INTO notes (body) VALUES ($1)")
            .bind("hello")
            .execute(&database)
            .await
            .expect("insert into migrated table");
        let (mode,): (String,) = query_as("PRAGMA journal_mode")
            .fetch_one(&database)
            .await
            .expect("journal mode");
        assert_eq!(mode, "wal");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn replicas_sharing_a_sqlite_file_migrate_one_at_a_time() {
        const MANY: Migrations = Migrations {
            sqlite: &[
                Migration {
                    version: 1,
                    description: "a",
                    sql: "CREATE TABLE a (id INTEGER PRIMARY KEY);",
                },
                Migration {
                    version: 2,
                    description: "b",
                    sql: "CREATE TABLE b (id INTEGER PRIMARY KEY);",
                },
            ],
            postgres: &[],
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::config::sqlite_url(&dir.path().join("shared.db"));
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let replica = Database::connect(&url).await.expect("connect");
            starting.spawn(async move { replica.migrate(&MANY).await });
        }
        while let Some(result) = starting.join_next().await {
            result.expect("task").expect("every replica starts");
        }
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite://data/a.db"),
            Some(PathBuf::from("data/a.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///abs/a.db?mode=rwc"),
            Some(PathBuf::from("/abs/a.db"))
        );
        assert_eq!(sqlite_path("sqlite:a.db"), Some(PathBuf::from("a.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://"), None);
    }

    #[tokio::test]
    async fn a_migration_changed_after_it_was_applied_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::config::sqlite_url(&dir.path().join("changed.db"));
        Database::open(&url, &MIGRATIONS)
            .await
            .expect("first start");
        const CHANGED: Migrations = Migrations {
            sqlite: &[Migration {
                version: 1,
                description: "notes",
                sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
            }],
            postgres: &[],
        };
        let error = Database::open(&url, &CHANGED).await.expect_err("refused");
        assert!(error.to_string().contains("migration 1"), "{error}");
    }

    #[tokio::test]
    async fn a_failing_migration_leaves_nothing_half_done() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::config::sqlite_url(&dir.path().join("failing.db"));
        const FAILING: Migrations = Migrations {
            sqlite: &[Migration {
                version: 1,
                description: "half",
                sql: "CREATE TABLE half (id INTEGER PRIMARY KEY); INSERT INTO nowhere VALUES (1);",
            }],
            postgres: &[],
        };
        let error = Database::open(&url, &FAILING).await.expect_err("fails");
        assert!(
            error.to_string().contains("migration 1 (half) failed"),
            "{error}"
        );
        let database = Database::open(&url, &MIGRATIONS)
            .await
            .expect("a fixed migration runs");
        let tables: Vec<String> =
            query_scalar("SELECT name FROM sqlite_master WHERE name = 'half'")
                .fetch_all(&database)
                .await
                .expect("tables");
        assert!(
            tables.is_empty(),
            "the failed migration's table is gone: {tables:?}"
        );
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_with_advice() {
        let error = Database::connect("mysql://x")
            .await
            .expect_err("unsupported");
        assert!(error.to_string().contains("sqlite://"), "{error}");
    }
}
