//! PostgreSQL, through sqlx's typed driver: parameters and rows converted to and from
//! [`Value`]s.

use std::sync::Arc;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, Column, Postgres, Row as _, TypeInfo};

use super::sql::{DbError, Output, Row, Value, Want};

fn arguments(args: &[Value]) -> Result<PgArguments, DbError> {
    let mut arguments = PgArguments::default();
    for value in args {
        let added = match value {
            Value::Int(number) => arguments.add(*number),
            Value::Real(number) => arguments.add(*number),
            Value::Bool(flag) => arguments.add(*flag),
            Value::Text(text) => arguments.add(text.clone()),
            Value::Blob(bytes) => arguments.add(bytes.clone()),
        };
        added.map_err(|error| DbError::Postgres(sqlx::Error::Encode(error)))?;
    }
    Ok(arguments)
}

fn value(row: &PgRow, index: usize) -> Result<Value, DbError> {
    let column = &row.columns()[index];
    Ok(match column.type_info().name() {
        "INT8" => Value::Int(row.try_get::<Option<i64>, _>(index)?),
        "INT4" => Value::Int(row.try_get::<Option<i32>, _>(index)?.map(i64::from)),
        "INT2" => Value::Int(row.try_get::<Option<i16>, _>(index)?.map(i64::from)),
        "FLOAT8" => Value::Real(row.try_get::<Option<f64>, _>(index)?),
        "FLOAT4" => Value::Real(row.try_get::<Option<f32>, _>(index)?.map(f64::from)),
        "BOOL" => Value::Bool(row.try_get::<Option<bool>, _>(index)?),
        "BYTEA" => Value::Blob(row.try_get::<Option<Vec<u8>>, _>(index)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
            Value::Text(row.try_get::<Option<String>, _>(index)?)
        }
        other => {
            return Err(DbError::Postgres(sqlx::Error::ColumnDecode {
                index: column.name().to_owned(),
                source: format!(
                    "comb reads integers, reals, booleans, text and bytes; cast this {other} column to one of them"
                )
                .into(),
            }));
        }
    })
}

/// Runs one statement on a pool or a transaction's connection.
pub(super) async fn run<'e, E>(
    on: E,
    sql: &str,
    args: &[Value],
    want: Want,
) -> Result<Output, DbError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let statement = sqlx::query_with(sqlx::AssertSqlSafe(sql.to_owned()), arguments(args)?);
    let fetched = match want {
        Want::Nothing => {
            let done = statement.execute(on).await?;
            return Ok(Output {
                rows: Vec::new(),
                rows_affected: done.rows_affected(),
            });
        }
        Want::First => statement.fetch_optional(on).await?.into_iter().collect(),
        Want::All => statement.fetch_all(on).await?,
    };
    let Some(first) = fetched.first() else {
        return Ok(Output::default());
    };
    let columns: Arc<[String]> = first
        .columns()
        .iter()
        .map(|column| column.name().to_owned())
        .collect();
    let mut rows = Vec::with_capacity(fetched.len());
    for row in &fetched {
        let values = (0..columns.len())
            .map(|index| value(row, index))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(Row::new(Arc::clone(&columns), values));
    }
    Ok(Output {
        rows,
        rows_affected: 0,
    })
}
