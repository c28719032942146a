//! Statements, their parameters and their rows, the same on both backends.
//!
//! A statement is written once with `$1`-style parameters (SQLite and PostgreSQL both
//! accept them) and run on a [`Database`] (outside any transaction) or on a
//! [`Transaction`]:
//!
//! ```ignore
//! let row = query("SELECT title, price_minor FROM products WHERE id = $1")
//!     .bind(&id)
//!     .fetch_optional(&db)
//!     .await?;
//! ```
//!
//! On SQLite a statement runs on the calling thread, from a per-connection cache of
//! prepared statements: a statement costs microseconds, less than handing it to another
//! thread and waiting for the answer would.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::{Engine, postgres, sqlite};

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the query returned no row")]
    RowNotFound,
    #[error("the query's result has no column {0:?}")]
    ColumnNotFound(String),
    #[error("column {column:?} holds {found}, which cannot be read as {wanted}")]
    Decode {
        column: String,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("the database is closed: the instance is shutting down")]
    Closed,
    #[error(
        "the SQLite database stayed locked by another instance for {0} ms; retry, or run fewer instances on one file"
    )]
    Busy(u64),
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
}

impl DbError {
    /// Whether a unique constraint refused the write (a duplicate key).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Sqlite(error) => matches!(
                error.sqlite_error().map(|error| error.extended_code),
                Some(
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                )
            ),
            Self::Postgres(sqlx::Error::Database(error)) => error.is_unique_violation(),
            _ => false,
        }
    }
}

/// One parameter or column value. A null keeps its type: PostgreSQL wants to know what a
/// null parameter would have been.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Self::Int(None)
            | Self::Real(None)
            | Self::Bool(None)
            | Self::Text(None)
            | Self::Blob(None) => "NULL",
            Self::Int(_) => "an integer",
            Self::Real(_) => "a real number",
            Self::Bool(_) => "a boolean",
            Self::Text(_) => "text",
            Self::Blob(_) => "bytes",
        }
    }
}

/// A Rust value that can be a statement's parameter.
pub trait Encode {
    fn encode(self) -> Value;
    /// The null of this type, for `None`.
    fn null() -> Value;
}

macro_rules! encode_as {
    ($variant:ident, $via:ty: $($rust:ty),*) => {$(
        impl Encode for $rust {
            fn encode(self) -> Value {
                Value::$variant(Some(<$via>::from(self)))
            }
            fn null() -> Value {
                Value::$variant(None)
            }
        }
    )*};
}

encode_as!(Int, i64: i64, i32, i16, u32, u16, u8);
encode_as!(Real, f64: f64, f32);
encode_as!(Bool, bool: bool);
encode_as!(Text, String: String, &str, &String, Box<str>);
encode_as!(Blob, Vec<u8>: Vec<u8>, &[u8]);

impl<T: Encode> Encode for Option<T> {
    fn encode(self) -> Value {
        self.map_or_else(T::null, T::encode)
    }
    fn null() -> Value {
        T::null()
    }
}

impl Encode for &Option<String> {
    fn encode(self) -> Value {
        Value::Text(self.clone())
    }
    fn null() -> Value {
        Value::Text(None)
    }
}

/// A Rust value a column can be read as.
pub trait Decode: Sized {
    fn decode(value: &Value, column: &str) -> Result<Self, DbError>;
}

fn wrong(value: &Value, column: &str, wanted: &'static str) -> DbError {
    DbError::Decode {
        column: column.to_owned(),
        found: value.kind(),
        wanted,
    }
}

impl Decode for i64 {
    fn decode(value: &Value, column: &str) -> Result<Self, DbError> {
        match value {
            Value::Int(Some(number)) => Ok(*number),
            Value::Bool(Some(flag)) => Ok(i64::from(*flag)),
            _ => Err(wrong(value, column, "an integer")),
        }
    }
}

macro_rules! decode_narrow {
    ($($rust:ty),*) => {$(
        impl Decode for $rust {
            fn decode(value: &Value, column: &str) -> Result<Self, DbError> {
                let wide = i64::decode(value, column)?;
                <$rust>::try_from(wide).map_err(|_| wrong(value, column, stringify!($rust)))
            }
        }
    )*};
}

decode_narrow!(i32, i16, u32, u16, u8, u64, usize);

impl Decode for f64 {
    fn decode(value: &Value, column: &str) -> Result<Self, DbError> {
        match value {
            Value::Real(Some(number)) => Ok(*number),
            // SQLite keeps a whole REAL as an integer when it can.
            Value::Int(Some(number)) => Ok(*number as f64),
            _ => Err(wrong(value, column, "a real number")),
        }
    }
}

impl Decode for bool {
    fn decode(value: &Value, column: &str) -> Result<Self, DbError> {
        match value {
            Value::Bool(Some(flag)) => Ok(*flag),
            // SQLite keeps booleans as 0 and 1.
            Value::Int(Some(number)) => Ok(*number != 0),
            _ => Err(wrong(value, column, "a boolean")),
        }
    }
}

impl Decode for String {
    fn decode(value: &Value, column: &str) -> Result<Self, DbError> {
        match value {
            Value::Text(Some(text)) => Ok(text.clone()),
            _ => Err(wrong(value, column, "text")),
        }
    }
}

impl Decode for Vec<u8> {
    fn decode(value: &Value, column: &str) -> Result<Self, DbError> {
        match value {
            Value::Blob(Some(bytes)) => Ok(bytes.clone()),
            Value::Text(Some(text)) => Ok(text.as_bytes().to_vec()),
            _ => Err(wrong(value, column, "bytes")),
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(value: &Value, column: &str) -> Result<Self, DbError> {
        match value {
            Value::Int(None)
            | Value::Real(None)
            | Value::Bool(None)
            | Value::Text(None)
            | Value::Blob(None) => Ok(None),
            _ => T::decode(value, column).map(Some),
        }
    }
}

/// One row of a result.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

/// What names a column: its name, or its position from 0.
pub trait ColumnIndex {
    fn position(&self, columns: &[String]) -> Result<usize, DbError>;
}

impl ColumnIndex for &str {
    fn position(&self, columns: &[String]) -> Result<usize, DbError> {
        columns
            .iter()
            .position(|name| name == self)
            .ok_or_else(|| DbError::ColumnNotFound((*self).to_owned()))
    }
}

impl ColumnIndex for usize {
    fn position(&self, columns: &[String]) -> Result<usize, DbError> {
        if *self < columns.len() {
            Ok(*self)
        } else {
            Err(DbError::ColumnNotFound(format!("#{self}")))
        }
    }
}

impl Row {
    pub(crate) fn new(columns: Arc<[String]>, values: Vec<Value>) -> Self {
        Self { columns, values }
    }

    /// The column `index` (a name or a position) read as `T`.
    pub fn try_get<T: Decode, I: ColumnIndex>(&self, index: I) -> Result<T, DbError> {
        let position = index.position(&self.columns)?;
        T::decode(&self.values[position], &self.columns[position])
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A type a whole row can be read as: a tuple of its columns, in order.
pub trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, DbError>;
}

impl FromRow for Row {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(row.clone())
    }
}

macro_rules! tuple_from_row {
    ($($name:ident $index:tt),+) => {
        impl<$($name: Decode),+> FromRow for ($($name,)+) {
            fn from_row(row: &Row) -> Result<Self, DbError> {
                Ok(($(row.try_get::<$name, usize>($index)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// How many rows a statement wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// None: run it for its effect.
    Nothing,
    /// The first, if any.
    First,
    All,
}

/// What a statement did.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub rows: Vec<Row>,
    pub rows_affected: u64,
}

/// What running a statement for its effect tells.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    rows_affected: u64,
}

impl Done {
    /// How many rows an `INSERT`, `UPDATE` or `DELETE` changed.
    pub fn rows_affected(&self) -> u64 {
        self.rows_affected
    }
}

/// Where a statement runs.
#[doc(hidden)]
pub enum Target<'c> {
    Engine(&'c Engine),
    Connection(&'c mut Connection),
}

/// Something a statement can run on: a [`Database`](super::Database) or a
/// [`Transaction`].
pub trait Executor<'c> {
    #[doc(hidden)]
    fn target(self) -> Target<'c>;
}

impl<'c> Executor<'c> for &'c super::Database {
    fn target(self) -> Target<'c> {
        Target::Engine(self.engine())
    }
}

impl<'c> Executor<'c> for &'c Engine {
    fn target(self) -> Target<'c> {
        Target::Engine(self)
    }
}

impl<'c> Executor<'c> for &'c mut Connection {
    fn target(self) -> Target<'c> {
        Target::Connection(self)
    }
}

impl<'c> Executor<'c> for &'c mut Transaction {
    fn target(self) -> Target<'c> {
        Target::Connection(&mut self.connection)
    }
}

async fn run(target: Target<'_>, sql: &str, args: &[Value], want: Want) -> Result<Output, DbError> {
    match target {
        Target::Engine(Engine::Sqlite(engine)) => engine.run(sql, args, want).await,
        Target::Engine(Engine::Postgres(pool)) => postgres::run(pool, sql, args, want).await,
        Target::Connection(Connection::Sqlite(held)) => sqlite::run_held(held, sql, args, want),
        Target::Connection(Connection::Postgres(tx)) => {
            postgres::run(&mut ***tx, sql, args, want).await
        }
    }
}

/// A statement and its parameters, answering rows.
#[must_use = "a query does nothing until it is run"]
pub struct Query<'q> {
    sql: Cow<'q, str>,
    args: Vec<Value>,
}

/// A statement with `$1`-style parameters; bind them in order with [`Query::bind`].
pub fn query<'q>(sql: impl Into<Cow<'q, str>>) -> Query<'q> {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

/// A statement whose rows are read as `T` (a tuple of the columns).
pub fn query_as<'q, T: FromRow>(sql: impl Into<Cow<'q, str>>) -> QueryAs<'q, T> {
    QueryAs {
        query: query(sql),
        output: std::marker::PhantomData,
    }
}

/// A statement whose rows are read as the `T` of their first column.
pub fn query_scalar<'q, T: Decode>(sql: impl Into<Cow<'q, str>>) -> QueryScalar<'q, T> {
    QueryScalar {
        query: query(sql),
        output: std::marker::PhantomData,
    }
}

impl<'q> Query<'q> {
    /// Binds the next parameter (`$1`, then `$2`, ...).
    pub fn bind(mut self, value: impl Encode) -> Self {
        self.args.push(value.encode());
        self
    }

    /// Runs it for its effect.
    pub async fn execute<'c>(self, on: impl Executor<'c>) -> Result<Done, DbError> {
        let output = run(on.target(), &self.sql, &self.args, Want::Nothing).await?;
        Ok(Done {
            rows_affected: output.rows_affected,
        })
    }

    pub async fn fetch_all<'c>(self, on: impl Executor<'c>) -> Result<Vec<Row>, DbError> {
        Ok(run(on.target(), &self.sql, &self.args, Want::All)
            .await?
            .rows)
    }

    pub async fn fetch_optional<'c>(self, on: impl Executor<'c>) -> Result<Option<Row>, DbError> {
        Ok(run(on.target(), &self.sql, &self.args, Want::First)
            .await?
            .rows
            .into_iter()
            .next())
    }

    /// The first row; [`DbError::RowNotFound`] when there is none.
    pub async fn fetch_one<'c>(self, on: impl Executor<'c>) -> Result<Row, DbError> {
        self.fetch_optional(on).await?.ok_or(DbError::RowNotFound)
    }
}

/// A [`Query`] whose rows are read as `T`.
#[must_use = "a query does nothing until it is run"]
pub struct QueryAs<'q, T> {
    query: Query<'q>,
    output: std::marker::PhantomData<fn() -> T>,
}

impl<'q, T: FromRow> QueryAs<'q, T> {
    pub fn bind(mut self, value: impl Encode) -> Self {
        self.query = self.query.bind(value);
        self
    }

    pub async fn fetch_all<'c>(self, on: impl Executor<'c>) -> Result<Vec<T>, DbError> {
        self.query
            .fetch_all(on)
            .await?
            .iter()
            .map(T::from_row)
            .collect()
    }

    pub async fn fetch_optional<'c>(self, on: impl Executor<'c>) -> Result<Option<T>, DbError> {
        self.query
            .fetch_optional(on)
            .await?
            .as_ref()
            .map(T::from_row)
            .transpose()
    }

    pub async fn fetch_one<'c>(self, on: impl Executor<'c>) -> Result<T, DbError> {
        T::from_row(&self.query.fetch_one(on).await?)
    }
}

/// A [`Query`] whose rows are read as the `T` of their first column.
#[must_use = "a query does nothing until it is run"]
pub struct QueryScalar<'q, T> {
    query: Query<'q>,
    output: std::marker::PhantomData<fn() -> T>,
}

impl<'q, T: Decode> QueryScalar<'q, T> {
    pub fn bind(mut self, value: impl Encode) -> Self {
        self.query = self.query.bind(value);
        self
    }

    pub async fn fetch_all<'c>(self, on: impl Executor<'c>) -> Result<Vec<T>, DbError> {
        self.query
            .fetch_all(on)
            .await?
            .iter()
            .map(|row| row.try_get(0usize))
            .collect()
    }

    pub async fn fetch_optional<'c>(self, on: impl Executor<'c>) -> Result<Option<T>, DbError> {
        self.query
            .fetch_optional(on)
            .await?
            .map(|row| row.try_get(0usize))
            .transpose()
    }

    pub async fn fetch_one<'c>(self, on: impl Executor<'c>) -> Result<T, DbError> {
        self.query.fetch_one(on).await?.try_get(0usize)
    }
}

/// The connection a [`Transaction`] holds.
pub enum Connection {
    #[doc(hidden)]
    Sqlite(sqlite::Held),
    #[doc(hidden)]
    Postgres(Box<sqlx::Transaction<'static, sqlx::Postgres>>),
}

/// A transaction: its statements take effect together at [`Transaction::commit`], or not
/// at all when it is dropped or rolled back.
pub struct Transaction {
    connection: Connection,
}

impl Transaction {
    pub(crate) fn new(connection: Connection) -> Self {
        Self { connection }
    }

    pub async fn commit(self) -> Result<(), DbError> {
        match self.connection {
            Connection::Sqlite(held) => held.commit(),
            Connection::Postgres(tx) => Ok(tx.commit().await?),
        }
    }

    pub async fn rollback(self) -> Result<(), DbError> {
        match self.connection {
            Connection::Sqlite(held) => held.rollback(),
            Connection::Postgres(tx) => Ok(tx.rollback().await?),
        }
    }
}

impl Deref for Transaction {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.connection
    }
}

impl DerefMut for Transaction {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}
