//! Least privilege: `stockflow migrate --roles` creates the group roles and
//! grants them this database's tables. The processor runs a whole run as a
//! login in `stockflow_processor` (checked against the independent
//! reference) and cannot do what it does not need; reporting and read-only
//! logins read, and write only what is theirs.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestEnv, reference, unique};
use tokio_postgres::error::SqlState;

/// `url` with the user replaced by `user` (no password: trust on loopback).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host_and_db}")
}

/// Runs `sql` as `url`'s user and returns the SQLSTATE of its error (None: it worked).
async fn refusal(url: &str, sql: &str) -> Option<SqlState> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(sql).await.err().and_then(|e| e.code().cloned())
}

#[tokio::test]
async fn each_service_gets_only_what_it_needs() {
    let env = TestEnv::new("roles").await;
    env.ok(&["migrate", "--roles"]);
    let again = env.ok(&["migrate", "--roles"]);
    assert!(again.contains("roles"), "idempotent: {again}");
    env.ok(&["seed", "--products", "40", "--suppliers", "10"]);
    env.ok(&["topics", "--partitions", "2"]);
    let opening = reference::opening_stock(&env).await;

    // A login per service, as an operator would make them.
    let admin = env.client().await;
    let mut logins = Vec::new();
    for group in ["stockflow_processor", "stockflow_reporting", "stockflow_readonly"] {
        let name = unique("sf_login");
        admin.batch_execute(&format!("CREATE ROLE {name} LOGIN IN ROLE {group}")).await.unwrap();
        logins.push(name);
    }
    let (processor, reporting, readonly) = (
        as_user(&env.database_url, &logins[0]),
        as_user(&env.database_url, &logins[1]),
        as_user(&env.database_url, &logins[2]),
    );

    // The processor does its whole job under its role.
    env.produce_valid(&["--count", "3000", "--seed", "81", "--invalid-ratio", "0.02"]);
    let run = common::output_within(
        env.command(&["run", "--exit-when-idle", "1", "--epoch-ms", "50", "--workers", "2"])
            .env("DATABASE_URL", &processor)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(300),
    );
    assert!(run.status.success(), "run as stockflow_processor: {}", String::from_utf8_lossy(&run.stderr));
    let checked = reference::assert_exactly_once(&env, 40, &opening).await;
    assert_eq!(checked.messages, 3000, "{checked:?}");

    // ... and nothing else: no DDL, no deletes, no catalog edits, no reports.
    let denied = Some(SqlState::INSUFFICIENT_PRIVILEGE);
    for sql in [
        "CREATE TABLE sneaky (i int)",
        "DELETE FROM events_log",
        "UPDATE products SET reorder_level = 0",
        "TRUNCATE inventory",
        "SELECT * FROM reports",
        "INSERT INTO dlq_redrives DEFAULT VALUES",
    ] {
        assert_eq!(refusal(&processor, sql).await, denied, "processor: {sql}");
    }

    // Reporting reads everything and writes reports only; reconcile works.
    let out = env.command(&["reconcile"]).env("DATABASE_URL", &reporting).output().unwrap();
    assert!(
        out.status.success(),
        "reconcile as stockflow_reporting: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(refusal(&reporting, "SELECT count(*) FROM events_log").await, None);
    assert_eq!(refusal(&reporting, "UPDATE inventory SET quantity_on_hand = 0").await, denied);

    // Read-only reads, and nothing more.
    let out = env
        .command(&["stock", "--as-of", "2100-01-01T00:00:00Z"])
        .env("DATABASE_URL", &readonly)
        .output()
        .unwrap();
    assert!(out.status.success(), "stock as stockflow_readonly: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(refusal(&readonly, "SELECT count(*) FROM reports").await, None);
    assert_eq!(refusal(&readonly, "UPDATE reports SET reconciled = true").await, denied);
    assert_eq!(refusal(&readonly, "INSERT INTO epochs DEFAULT VALUES").await, denied);

    for name in &logins {
        let _ = admin.batch_execute(&format!("DROP ROLE {name}")).await;
    }
}
