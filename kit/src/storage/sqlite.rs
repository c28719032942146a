//! SQLite, run on the calling thread.
//!
//! An instance holds two connections to its file: a writer, taken whole by a transaction
//! or by a statement that writes, and a reader for every statement that only reads (in WAL
//! mode a reader never waits for the writer). Each keeps its prepared statements.
//!
//! Another instance sharing the file may hold the write lock. The writer then does not
//! block the thread in SQLite's busy handler, which would stop every other request of this
//! instance: it tries again after a short async pause, for up to [`BUSY_TIMEOUT`].

use std::ops::DerefMut;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{OpenFlags, ToSql};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::sql::{DbError, Output, Row, Value, Want};

/// How long a write waits for another instance's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements each connection keeps: every statement a service runs, with room.
const STATEMENT_CACHE: usize = 128;

/// Set on both connections: concurrent readers beside one writer (WAL), durable at
/// checkpoints (a killed process loses nothing; a power cut may lose the last
/// transactions), references enforced, and the WAL checkpointed every 4,000 pages rather
/// than 1,000 (a checkpoint writes and syncs every page it copies, so fewer of them copy a
/// page changed many times once). Pages are not memory-mapped: mapped pages count in every
/// instance's resident memory, for no measurable gain here.
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 4000;";

/// The two connections of an instance to its SQLite file.
pub struct Sqlite {
    writer: Arc<Mutex<rusqlite::Connection>>,
    reader: Mutex<rusqlite::Connection>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite").finish_non_exhaustive()
    }
}

fn open(path: &Path, busy: Duration) -> Result<rusqlite::Connection, rusqlite::Error> {
    let connection = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.execute_batch(PRAGMAS)?;
    connection.busy_timeout(busy)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

impl Sqlite {
    /// Opens the writer and the reader on the (already created and migrated) file.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        Ok(Self {
            // The writer never waits inside SQLite: see the module doc.
            writer: Arc::new(Mutex::new(open(path, Duration::ZERO)?)),
            // A reader in WAL mode waits only in rare moments (recovery of the log).
            reader: Mutex::new(open(path, BUSY_TIMEOUT)?),
            closed: AtomicBool::new(false),
        })
    }

    fn check_open(&self) -> Result<(), DbError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DbError::Closed);
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits for the statement or transaction in progress, then refuses every later one.
    pub async fn close(&self) {
        let _writer = self.writer.lock().await;
        let _reader = self.reader.lock().await;
        self.closed.store(true, Ordering::Release);
    }

    /// Runs one statement outside any transaction: on the reader when it only reads,
    /// else on the writer.
    pub(crate) async fn run(
        &self,
        sql: &str,
        args: &[Value],
        want: Want,
    ) -> Result<Output, DbError> {
        self.check_open()?;
        {
            let reader = self.reader.lock().await;
            let statement = reader.prepare_cached(sql)?;
            if statement.readonly() {
                return execute(&reader, statement, args, want);
            }
        }
        let mut writer = self.writer.lock().await;
        self.check_open()?;
        retry_busy(&mut writer, |connection| {
            execute(connection, connection.prepare_cached(sql)?, args, want)
        })
        .await
    }

    /// Takes the writer and begins a transaction that holds the write lock from the start
    /// (`BEGIN IMMEDIATE`): two transactions that read and then write would otherwise both
    /// fail instead of taking turns.
    pub async fn begin(&self) -> Result<Held, DbError> {
        self.check_open()?;
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        self.check_open()?;
        retry_busy(&mut writer, |connection| {
            Ok(connection
                .prepare_cached("BEGIN IMMEDIATE")?
                .raw_execute()?)
        })
        .await?;
        Ok(Held {
            connection: writer,
            open: true,
        })
    }
}

/// Why a migration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {version} ({description}) failed: {source}")]
    Failed {
        version: i64,
        description: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "migration {0} was applied from different SQL than this build has: the database was migrated by another version of the service; use a database of its own"
    )]
    Changed(i64),
    #[error(
        "migration {0} is marked as failed in the database; restore a backup or start from an empty database"
    )]
    Dirty(i64),
    #[error("cannot read the applied migrations: {0}")]
    Read(#[from] rusqlite::Error),
}

impl Sqlite {
    /// Applies `migrations` not yet recorded in `table`, each in its own transaction, and
    /// records them as sqlx's migrator does (so a database it migrated carries on).
    pub async fn migrate(
        &self,
        table: &str,
        migrations: &[super::Migration],
    ) -> Result<(), MigrateError> {
        let writer = self.writer.lock().await;
        writer.busy_timeout(BUSY_TIMEOUT)?;
        let migrated = migrate(&writer, table, migrations);
        writer.busy_timeout(Duration::ZERO)?;
        migrated
    }
}

fn migrate(
    connection: &rusqlite::Connection,
    table: &str,
    migrations: &[super::Migration],
) -> Result<(), MigrateError> {
    use sha2::{Digest, Sha384};
    connection.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)"
    ))?;
    let mut applied = std::collections::HashMap::new();
    {
        let mut statement =
            connection.prepare(&format!("SELECT version, checksum, success FROM {table}"))?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let version: i64 = row.get(0)?;
            if !row.get::<_, bool>(2)? {
                return Err(MigrateError::Dirty(version));
            }
            applied.insert(version, row.get::<_, Vec<u8>>(1)?);
        }
    }
    for migration in migrations {
        let checksum = Sha384::digest(migration.sql.as_bytes()).to_vec();
        match applied.get(&migration.version) {
            Some(recorded) if *recorded == checksum => continue,
            Some(_) => return Err(MigrateError::Changed(migration.version)),
            None => {}
        }
        let started = Instant::now();
        let failed = |source| MigrateError::Failed {
            version: migration.version,
            description: migration.description,
            source,
        };
        connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(failed)?;
        let applied = connection.execute_batch(migration.sql).and_then(|()| {
            connection.execute(
                &format!(
                    "INSERT INTO {table} (version, description, success, checksum, execution_time) \
                     VALUES (?1, ?2, TRUE, ?3, ?4)"
                ),
                rusqlite::params![
                    migration.version,
                    migration.description,
                    checksum,
                    i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)
                ],
            )
        });
        match applied {
            Ok(_) => connection.execute_batch("COMMIT").map_err(failed)?,
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                return Err(failed(error));
            }
        }
    }
    Ok(())
}

/// The writer, held by a transaction.
pub struct Held {
    connection: OwnedMutexGuard<rusqlite::Connection>,
    open: bool,
}

impl Held {
    pub fn commit(mut self) -> Result<(), DbError> {
        self.open = false;
        if let Err(error) = self
            .connection
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.raw_execute())
        {
            // A failed COMMIT may leave the transaction open; end it so the writer is usable.
            let _ = self.connection.execute_batch("ROLLBACK");
            return Err(error.into());
        }
        Ok(())
    }

    pub fn rollback(mut self) -> Result<(), DbError> {
        self.open = false;
        self.connection.execute_batch("ROLLBACK")?;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.open {
            // Dropped without a commit: nothing of it happened.
            let _ = self.connection.execute_batch("ROLLBACK");
        }
    }
}

/// Runs one statement inside the transaction holding the writer.
pub(crate) fn run_held(
    held: &mut Held,
    sql: &str,
    args: &[Value],
    want: Want,
) -> Result<Output, DbError> {
    let statement = held.connection.prepare_cached(sql)?;
    execute(&held.connection, statement, args, want)
}

fn is_busy(error: &DbError) -> bool {
    matches!(
        error,
        DbError::Sqlite(error) if matches!(
            error.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    )
}

/// Runs `attempt` on the writer until another instance's write lock lets it, pausing
/// without blocking the thread.
async fn retry_busy<G, T>(
    writer: &mut G,
    mut attempt: impl FnMut(&rusqlite::Connection) -> Result<T, DbError>,
) -> Result<T, DbError>
where
    G: DerefMut<Target = rusqlite::Connection>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let result = attempt(writer);
        match result {
            Err(error) if is_busy(&error) => {
                if started.elapsed() >= BUSY_TIMEOUT {
                    return Err(DbError::Busy(BUSY_TIMEOUT.as_millis() as u64));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Int(Some(number)) => ValueRef::Integer(*number),
            Value::Real(Some(number)) => ValueRef::Real(*number),
            Value::Bool(Some(flag)) => ValueRef::Integer(i64::from(*flag)),
            Value::Text(Some(text)) => ValueRef::Text(text.as_bytes()),
            Value::Blob(Some(bytes)) => ValueRef::Blob(bytes),
            _ => ValueRef::Null,
        }))
    }
}

/// Binds `args` to the statement's parameters by their numbers (`$2` takes the second
/// argument wherever it appears), runs it and collects what `want` asks for.
fn execute(
    connection: &rusqlite::Connection,
    mut statement: rusqlite::CachedStatement<'_>,
    args: &[Value],
    want: Want,
) -> Result<Output, DbError> {
    for index in 1..=statement.parameter_count() {
        let number = match statement.parameter_name(index) {
            Some(name) => name
                .trim_start_matches(['$', '?'])
                .parse::<usize>()
                .map_err(|_| rusqlite::Error::InvalidParameterName(name.to_owned()))?,
            None => index,
        };
        let value = args
            .get(number - 1)
            .ok_or(rusqlite::Error::InvalidParameterCount(number, args.len()))?;
        statement.raw_bind_parameter(index, value)?;
    }
    let writes = !statement.readonly();
    let columns: Arc<[String]> = if want == Want::Nothing {
        Arc::from(Vec::new())
    } else {
        statement
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let width = statement.column_count();
    let mut output = Output::default();
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next()? {
        let keep = match want {
            Want::Nothing => false,
            Want::First => output.rows.is_empty(),
            Want::All => true,
        };
        if keep {
            let mut values = Vec::with_capacity(width);
            for index in 0..width {
                values.push(match row.get_ref(index)? {
                    ValueRef::Null => Value::Text(None),
                    ValueRef::Integer(number) => Value::Int(Some(number)),
                    ValueRef::Real(number) => Value::Real(Some(number)),
                    ValueRef::Text(text) => {
                        Value::Text(Some(String::from_utf8(text.to_vec()).map_err(|error| {
                            rusqlite::Error::Utf8Error(index, error.utf8_error())
                        })?))
                    }
                    ValueRef::Blob(bytes) => Value::Blob(Some(bytes.to_vec())),
                });
            }
            output.rows.push(Row::new(Arc::clone(&columns), values));
        } else if !writes {
            // A read's remaining rows are not wanted; a write runs to its end.
            break;
        }
    }
    if writes {
        output.rows_affected = connection.changes();
    }
    Ok(output)
}
