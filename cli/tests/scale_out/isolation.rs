//! One database and one role per service: a service's role works in its own database and
//! is refused at the door of every other one.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

use crate::{Comb, repo_topology, scale_out_backends_reachable, text};

#[tokio::test]
async fn a_services_role_cannot_open_another_services_database() {
    if !scale_out_backends_reachable() {
        return;
    }
    let comb = Comb::scale_out(&repo_topology(), &[]);
    let prefix = comb.prefix.clone().unwrap();
    let databases = comb.databases().await;
    assert_eq!(
        databases.len(),
        12,
        "a database for every service but the gateway and the media workers: {databases:?}"
    );
    assert!(!databases.contains_key("gateway") && !databases.contains_key("media-worker"));
    // Without the operator token the launcher shows no password.
    let shown: std::collections::BTreeMap<String, String> = comb
        .http
        .get(format!("{}/databases", comb.dashboard()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (service, url) in &shown {
        assert!(url.contains(":***@"), "{service}: {url}");
        let password = databases[service]
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(credentials, _)| credentials.split_once(':'))
            .map(|(_, password)| password)
            .unwrap();
        assert!(!url.contains(password), "{service}: {url}");
    }

    // In its own database the catalog's role reads its tables.
    let catalog = PgConnectOptions::from_str(&databases["catalog"]).unwrap();
    assert_eq!(catalog.get_username(), format!("{prefix}_catalog"));
    let mut own = catalog.connect().await.unwrap();
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&mut own)
        .await
        .unwrap();
    assert!(products > 0, "the catalog is seeded");
    let role = sqlx::query(
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut own)
    .await
    .unwrap();
    for privilege in ["rolsuper", "rolcreatedb", "rolcreaterole"] {
        assert!(!role.get::<bool, _>(privilege), "the role has {privilege}");
    }
    own.close().await.unwrap();

    // Every other service's database refuses it, and refuses the others in turn.
    for (service, url) in &databases {
        if service == "catalog" {
            continue;
        }
        let theirs = PgConnectOptions::from_str(url).unwrap();
        let database = theirs.get_database().unwrap().to_owned();
        let error = catalog
            .clone()
            .database(&database)
            .connect()
            .await
            .err()
            .unwrap_or_else(|| panic!("the catalog's role opened {database}"));
        let sqlx::Error::Database(error) = error else {
            panic!("not a refusal by the server: {error}");
        };
        // 42501: insufficient_privilege ("permission denied for database").
        assert_eq!(error.code().as_deref(), Some("42501"), "{error}");
        let intruder = theirs.clone().database(&format!("{prefix}_catalog"));
        assert!(
            intruder.connect().await.is_err(),
            "{service}'s role opened the catalog's database"
        );
    }
}

#[tokio::test]
async fn unreachable_backends_are_reported_with_advice() {
    let comb = Comb::unstarted();
    let output = comb.try_up(
        &repo_topology(),
        &["--postgres", "postgres://comb@127.0.0.1:1/postgres"],
        &[],
    );
    assert!(!output.status.success());
    let message = text(&output);
    assert!(
        message.contains("cannot connect to PostgreSQL at postgres://comb@127.0.0.1:1/postgres"),
        "{message}"
    );
    let output = comb.try_up(&repo_topology(), &["--nats", "nats://127.0.0.1:1"], &[]);
    assert!(
        text(&output).contains("cannot reach NATS at nats://127.0.0.1:1"),
        "{}",
        text(&output)
    );
    let output = comb.run(&["up", "--postgres", "mysql://x"]);
    assert!(
        text(&output).contains("must start with postgres://"),
        "{}",
        text(&output)
    );
}

/// The script the in-cluster PostgreSQL runs at its first start (from `comb export`)
/// provisions what the launcher does: run twice through psql, each role may create tables
/// in its own database and cannot open another's.
#[tokio::test]
async fn the_exported_init_script_isolates_the_services_too() {
    if !scale_out_backends_reachable() {
        return;
    }
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let databases: Vec<comb::postgres::ServiceDatabase> = ["catalog", "orders"]
        .iter()
        .map(|service| {
            comb::postgres::ServiceDatabase::new(&prefix, service, format!("pw-{service}"))
        })
        .collect();
    let script = comb::postgres::init_script(&databases);
    let admin = crate::postgres_admin_url();
    for _ in 0..2 {
        let mut psql = std::process::Command::new("psql")
            .arg(&admin)
            .args([
                "--quiet",
                "--no-psqlrc",
                "-v",
                "ON_ERROR_STOP=1",
                "--file",
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("psql runs the init script (apt-get install postgresql-client)");
        std::io::Write::write_all(&mut psql.stdin.take().unwrap(), script.as_bytes()).unwrap();
        let output = psql.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "the init script failed: {}",
            text(&output)
        );
    }
    let catalog = PgConnectOptions::from_str(&databases[0].url(&admin).unwrap()).unwrap();
    let mut own = catalog.connect().await.unwrap();
    sqlx::raw_sql("CREATE TABLE things (id INT PRIMARY KEY); INSERT INTO things VALUES (1)")
        .execute(&mut own)
        .await
        .unwrap();
    own.close().await.unwrap();
    let refused = catalog
        .clone()
        .database(&databases[1].name)
        .connect()
        .await
        .expect_err("the catalog's role opened the orders database");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    let mut cleanup = std::process::Command::new("psql");
    cleanup.arg(&admin).args(["--quiet", "--no-psqlrc"]);
    for database in &databases {
        cleanup
            .arg("--command")
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                database.name
            ))
            .arg("--command")
            .arg(format!("DROP ROLE IF EXISTS \"{}\"", database.name));
    }
    let _ = cleanup.output();
}
