//! One database and one role per service on a PostgreSQL server. Each service's role owns
//! its database and is the only role (besides superusers) that may connect to it, so a
//! service cannot read another's tables even by mistake. `comb up --postgres` provisions
//! them through an admin account; `comb export` writes the same statements as the
//! in-cluster server's init script.

use std::collections::BTreeMap;

use anyhow::Context;
use rand::Rng;
use std::str::FromStr;

use comb_kit::storage::redact;
use sqlx::{ConnectOptions, Connection};

/// A service's database and the role that owns it (both have the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDatabase {
    pub service: String,
    pub name: String,
    pub password: String,
}

impl ServiceDatabase {
    pub fn new(prefix: &str, service: &str, password: String) -> Self {
        Self {
            service: service.to_owned(),
            name: database_name(prefix, service),
            password,
        }
    }

    /// Creates the role if it is missing and (re)sets what it may do and its password.
    fn role_statements(&self) -> [String; 2] {
        let name = &self.name;
        [
            format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{name}') \
                 THEN CREATE ROLE \"{name}\"; END IF; END $$"
            ),
            format!(
                "ALTER ROLE \"{name}\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD '{}'",
                self.password.replace('\'', "''")
            ),
        ]
    }

    /// Gives the database to its role and closes it to everyone else.
    fn access_statements(&self) -> [String; 3] {
        let name = &self.name;
        [
            format!("ALTER DATABASE \"{name}\" OWNER TO \"{name}\""),
            format!("REVOKE ALL ON DATABASE \"{name}\" FROM PUBLIC"),
            format!("GRANT ALL ON DATABASE \"{name}\" TO \"{name}\""),
        ]
    }

    /// Run inside the database: its role owns the `public` schema, so its migrations may
    /// create tables there whatever the server's template says.
    fn schema_statement(&self) -> String {
        format!("ALTER SCHEMA public OWNER TO \"{}\"", self.name)
    }

    /// The URL the service connects with: the server of `admin_url`, as its own role.
    pub fn url(&self, admin_url: &str) -> anyhow::Result<String> {
        let mut url = reqwest::Url::parse(admin_url)
            .with_context(|| format!("{} is not a PostgreSQL URL", redact(admin_url)))?;
        let unchanged = "cannot set the role in a PostgreSQL URL";
        url.set_username(&self.name)
            .map_err(|()| anyhow::anyhow!(unchanged))?;
        url.set_password(Some(&self.password))
            .map_err(|()| anyhow::anyhow!(unchanged))?;
        url.set_path(&self.name);
        Ok(url.to_string())
    }
}

/// The database (and role) name of `service` under `prefix`.
pub fn database_name(prefix: &str, service: &str) -> String {
    format!("{prefix}_{}", service.replace('-', "_"))
}

/// A script for `psql` (as a PostgreSQL image's init script runs it) that provisions
/// every database; running it twice changes nothing.
pub fn init_script(databases: &[ServiceDatabase]) -> String {
    let mut script = String::from(
        "-- One database and one role per comb service; each database is closed to the other roles.\n",
    );
    for database in databases {
        script.push_str(&format!("\n-- {}\n", database.service));
        for statement in database.role_statements() {
            script.push_str(&statement);
            script.push_str(";\n");
        }
        script.push_str(&format!(
            "SELECT 'CREATE DATABASE \"{0}\"' WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = '{0}')\\gexec\n",
            database.name
        ));
        for statement in database.access_statements() {
            script.push_str(&statement);
            script.push_str(";\n");
        }
        script.push_str(&format!("\\connect \"{}\"\n", database.name));
        script.push_str(&database.schema_statement());
        script.push_str(";\n");
    }
    script
}

/// Provisions a database and role for each service through `admin_url` (an account that
/// may create roles and databases) and returns each service's own URL. Passwords are new
/// on every call, so only the instances started now know them.
pub async fn provision(
    admin_url: &str,
    prefix: &str,
    services: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {} to create the services' databases; \
                 check the server is running and the account may create roles and databases",
                redact(admin_url)
            )
        })?;
    let mut urls = BTreeMap::new();
    for service in services {
        let database = ServiceDatabase::new(prefix, service, new_password());
        let failed = || format!("cannot provision the database {}", database.name);
        for statement in database.role_statements() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut admin)
                .await
                .with_context(failed)?;
        }
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = $1)",
        )
        .bind(&database.name)
        .fetch_one(&mut admin)
        .await
        .with_context(failed)?;
        if !exists {
            let create = format!("CREATE DATABASE \"{}\"", database.name);
            match sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&mut admin)
                .await
            {
                Ok(_) => {}
                // 42P04: created meanwhile by another launcher with the same prefix.
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
                Err(error) => return Err(error).with_context(failed),
            }
        }
        for statement in database.access_statements() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut admin)
                .await
                .with_context(failed)?;
        }
        let mut inside = sqlx::postgres::PgConnectOptions::from_str(admin_url)
            .with_context(failed)?
            .database(&database.name)
            .connect()
            .await
            .with_context(failed)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(database.schema_statement()))
            .execute(&mut inside)
            .await
            .with_context(failed)?;
        let _ = inside.close().await;
        urls.insert(service.clone(), database.url(admin_url)?);
    }
    let _ = admin.close().await;
    Ok(urls)
}

fn new_password() -> String {
    let bytes: [u8; 18] = rand::thread_rng().r#gen();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_connects_as_its_own_role_to_its_own_database() {
        let database = ServiceDatabase::new("comb", "catalog", "s3cret".into());
        assert_eq!(
            database
                .url("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
                .expect("a PostgreSQL URL"),
            "postgres://comb_catalog:s3cret@127.0.0.1:5432/comb_catalog?sslmode=disable"
        );
        assert_eq!(database_name("t1", "order-history"), "t1_order_history");
    }

    #[test]
    fn the_init_script_closes_each_database_to_other_roles() {
        let script = init_script(&[ServiceDatabase::new("comb", "users", "pw'd".into())]);
        assert!(script.contains("PASSWORD 'pw''d'"), "{script}");
        assert!(script.contains("REVOKE ALL ON DATABASE \"comb_users\" FROM PUBLIC;"));
        assert!(script.contains("CREATE DATABASE \"comb_users\"'"));
        assert!(script.contains("\\gexec"));
        assert!(
            script
                .contains("\\connect \"comb_users\"\nALTER SCHEMA public OWNER TO \"comb_users\";")
        );
    }
}
