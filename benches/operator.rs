//! Operator commands over a large history (contract 5.5): loads N events
//! (realistic mix from the simulated producers, over several days) through
//! the real pipeline into a fresh database, then times `stockflow
//! reconcile`, `stockflow stock --as-of T` for all products at instants
//! spread over the history, and `--processed-as-of`.
//!
//! Needs the local services (scripts/services.sh up). Settings:
//! STOCKFLOW_BENCH_EVENTS (default 5000000), STOCKFLOW_BENCH_DAYS (event
//! time spread, default 5), STOCKFLOW_BENCH_REPEAT (timed runs of each
//! command, default 3), STOCKFLOW_BENCH_KEEP_DB (a database name: load into
//! it once and keep it; a later run with the same name reuses it).
//!
//! `cargo bench --bench operator`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Instant;

use common::*;

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = env_or("STOCKFLOW_BENCH_EVENTS", 5_000_000);
    let days: f64 = env_or("STOCKFLOW_BENCH_DAYS", 5.0);
    let repeat: usize = env_or("STOCKFLOW_BENCH_REPEAT", 3);
    let keep = std::env::var("STOCKFLOW_BENCH_KEEP_DB").ok();
    let db = keep.clone().unwrap_or_else(|| format!("sf_bench_operator_{}", stamp()));
    let admin = connect(&url_with_db("postgres")).await;
    let exists =
        admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db]).await.unwrap().is_some();
    let url = url_with_db(&db);
    let loaded: i64 = if exists && keep.is_some() {
        connect(&url).await.query_one("SELECT count(*) FROM events_log", &[]).await.unwrap().get(0)
    } else {
        0
    };
    if loaded == 0 {
        let url = fresh_db(&db).await;
        let prefix = format!("bench_op_{}.", stamp());
        ok(&url, &prefix, &["migrate"]);
        ok(&url, &prefix, &["seed", "--products", "1000", "--suppliers", "50"]);
        ok(&url, &prefix, &["topics", "--partitions", "4"]);
        let t = Instant::now();
        ok(
            &url,
            &prefix,
            &[
                "produce",
                "--count",
                &n.to_string(),
                "--seed",
                "5",
                "--days",
                &days.to_string(),
                "--duplicate-ratio",
                "0.01",
                "--invalid-ratio",
                "0.005",
                "--quiet",
            ],
        );
        let produced = since(t);
        let t = Instant::now();
        ok(&url, &prefix, &["run", "--workers", "2", "--exit-when-idle", "2"]);
        println!("load: {n} events produced in {produced:.1} s, drained in {:.1} s", since(t));
        delete_topics(&prefix).await;
    }
    let client = connect(&url).await;
    let (events, first, last): (i64, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = {
        let r = client
            .query_one(
                "SELECT count(*), min(occurred_at), max(occurred_at) FROM events_log WHERE status = 'applied'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let size: i64 =
        client.query_one("SELECT pg_database_size(current_database())", &[]).await.unwrap().get(0);
    println!("operator: {events} applied events from {first} to {last}, database {:.0} MB", mb(size as u64));

    let mut runs = Vec::new();
    for _ in 0..repeat {
        let (secs, out) = timed(&url, &["reconcile"]);
        assert!(out.status.success(), "reconcile: {}", String::from_utf8_lossy(&out.stdout));
        runs.push(secs);
    }
    println!("reconcile: {} (target < 30 s)", stats(runs));

    // Instants spread over the history, none on an hour boundary.
    let span = (last - first).num_milliseconds();
    let instants: Vec<chrono::DateTime<chrono::Utc>> =
        (1..=9).map(|k| first + chrono::Duration::milliseconds(span * k / 10 + 1_234_567)).collect();
    for (flag, name) in [("--as-of", "stock --as-of"), ("--processed-as-of", "stock --processed-as-of")] {
        let range: Vec<chrono::DateTime<chrono::Utc>> = if flag == "--as-of" {
            instants.clone()
        } else {
            let r = client
                .query_one("SELECT min(processed_at), max(processed_at) FROM events_log", &[])
                .await
                .unwrap();
            let (a, b): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = (r.get(0), r.get(1));
            let s = (b - a).num_milliseconds();
            (1..=9).map(|k| a + chrono::Duration::milliseconds(s * k / 10)).collect()
        };
        let mut times = Vec::new();
        for _ in 0..repeat {
            for t in &range {
                let (secs, out) = timed(&url, &["stock", flag, &t.to_rfc3339()]);
                assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
                times.push(secs);
            }
        }
        println!("{name} (all products, 9 instants): {} (target < 2 s)", stats(times));
    }
    if keep.is_none() {
        drop(client);
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await.unwrap();
    }
}
