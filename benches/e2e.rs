//! End to end: pre-load N events (realistic mix from the simulated
//! producers) into fresh topics and a fresh database, time
//! `stockflow run --exit-when-idle` draining them with full audit, and, in
//! the same run, time plain PostgreSQL `COPY` of the same rows (`events_log`
//! + `orders`) into tables of the same shape: the database's own ceiling.
//!
//! Needs the local services (scripts/services.sh up). Settings:
//! STOCKFLOW_BENCH_EVENTS (default 1000000; a list such as
//! "100000,1000000,5000000" runs each size), STOCKFLOW_BENCH_WORKERS
//! (default "1,2"), STOCKFLOW_BENCH_RUNS (default 1: runs per size and
//! worker count; the median is printed at the end),
//! STOCKFLOW_BENCH_PARTITIONS (default 4), STOCKFLOW_BENCH_DAYS (default 3:
//! the days of event time the events spread over), STOCKFLOW_BENCH_CEILING
//! (default 1; 0 skips the COPY ceiling, e.g. for 20 M events).
//!
//! `cargo bench --bench e2e`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Instant;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};

const LOG_COLUMNS: &str = "event_id, topic, kafka_partition, kafka_offset, raw_event, status, error_code, error_detail, \
    event_type, product_id, delta, occurred_at, content_hash, epoch, processed_at, quantity_after, raw_is_base64, kafka_timestamp";
const ORDER_COLUMNS: &str =
    "event_id, order_id, product_id, quantity, unit_price, source, customer_id, store_id, occurred_at";

async fn copy_out(client: &tokio_postgres::Client, query: &str) -> Vec<Bytes> {
    let stream = client.copy_out(&format!("COPY ({query}) TO STDOUT (FORMAT binary)")).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut chunks = Vec::new();
    while let Some(c) = stream.next().await {
        chunks.push(c.unwrap());
    }
    chunks
}

async fn copy_in(tx: &tokio_postgres::Transaction<'_>, statement: &str, chunks: Vec<Bytes>) -> u64 {
    let sink = tx.copy_in(statement).await.unwrap();
    futures_util::pin_mut!(sink);
    for c in chunks {
        sink.send(c).await.unwrap();
    }
    sink.finish().await.unwrap()
}

/// Seconds to COPY the pipeline's events_log and orders rows into empty
/// tables of the same shape (columns, checks, the indexes of the
/// partitioned tables and the unique ones each day's partition has) in one
/// transaction.
async fn copy_ceiling(url: &str) -> (f64, u64) {
    let mut client = connect(url).await;
    client
        .batch_execute(
            "DROP SCHEMA IF EXISTS ceiling CASCADE; CREATE SCHEMA ceiling; \
             CREATE TABLE ceiling.events_log (LIKE public.events_log INCLUDING ALL); \
             CREATE TABLE ceiling.orders (LIKE public.orders INCLUDING ALL); \
             CREATE UNIQUE INDEX ON ceiling.events_log (event_id) WHERE status = 'applied'; \
             CREATE UNIQUE INDEX ON ceiling.orders (event_id);",
        )
        .await
        .unwrap();
    let log = copy_out(&client, &format!("SELECT {LOG_COLUMNS} FROM public.events_log")).await;
    let orders = copy_out(&client, &format!("SELECT {ORDER_COLUMNS} FROM public.orders")).await;
    let t = Instant::now();
    let tx = client.transaction().await.unwrap();
    let mut rows =
        copy_in(&tx, &format!("COPY ceiling.events_log ({LOG_COLUMNS}) FROM STDIN (FORMAT binary)"), log)
            .await;
    rows +=
        copy_in(&tx, &format!("COPY ceiling.orders ({ORDER_COLUMNS}) FROM STDIN (FORMAT binary)"), orders)
            .await;
    tx.commit().await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    client.batch_execute("DROP SCHEMA ceiling CASCADE").await.unwrap();
    (secs, rows)
}

async fn db_size(url: &str) -> i64 {
    connect(url).await.query_one("SELECT pg_database_size(current_database())", &[]).await.unwrap().get(0)
}

fn list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect()
}

/// One drain of the pre-loaded topics by `stockflow run --workers w` into a
/// fresh database, then the COPY ceiling of its rows. Returns events/s.
async fn drain(n: u64, w: u16, prefix: &str, db: &str) -> f64 {
    let url = fresh_db(db).await;
    ok(&url, prefix, &["migrate"]);
    ok(&url, prefix, &["seed", "--products", "1000", "--suppliers", "50"]);
    let before = db_size(&url).await;
    let started = chrono::Utc::now();
    let child = spawn(&url, prefix, &["run", "--workers", &w.to_string(), "--exit-when-idle", "2"]);
    let (status, rss) = wait_with_peak_rss(child);
    assert!(status.success(), "stockflow run failed: {status:?}");
    let client = connect(&url).await;
    let last: chrono::DateTime<chrono::Utc> =
        client.query_one("SELECT max(committed_at) FROM epochs", &[]).await.unwrap().get(0);
    let handled: i64 =
        client.query_one("SELECT sum(messages)::bigint FROM epochs", &[]).await.unwrap().get(0);
    let commits: i64 = client.query_one("SELECT count(*) FROM epochs", &[]).await.unwrap().get(0);
    assert_eq!(handled as u64, n, "every message handled");
    let drain = (last - started).num_milliseconds() as f64 / 1e3;
    let written = (db_size(&url).await - before).max(0) as u64;
    let (ceiling, rows) =
        if env_or("STOCKFLOW_BENCH_CEILING", 1) == 1 { copy_ceiling(&url).await } else { (f64::NAN, 0) };
    let rate = n as f64 / drain;
    let ceiling_rate = n as f64 / ceiling;
    println!(
        "{n} | {w} | {drain:.2} | {rate:.0} | {ceiling:.2} ({rows} rows) | {ceiling_rate:.0} | {:.0}% | {:.0} | {:.0} | {commits}",
        100.0 * rate / ceiling_rate,
        mb(rss),
        mb(written)
    );
    drop(client);
    let admin = connect(&url_with_db("postgres")).await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await.unwrap();
    rate
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`: nothing to enumerate
    }
    let sizes: Vec<u64> = list("STOCKFLOW_BENCH_EVENTS", "1000000");
    let partitions: u32 = env_or("STOCKFLOW_BENCH_PARTITIONS", 4);
    let workers: Vec<u16> = list("STOCKFLOW_BENCH_WORKERS", "1,2");
    let runs: usize = env_or("STOCKFLOW_BENCH_RUNS", 1);
    let days: f64 = env_or("STOCKFLOW_BENCH_DAYS", 3.0);
    let stamp = stamp();
    println!(
        "e2e: events {sizes:?}, {partitions} partitions per topic, workers {workers:?}, {runs} run(s) each"
    );
    let mut medians = Vec::new();
    for n in sizes {
        let prefix = format!("bench_{stamp}_{n}.");
        let load_db = format!("sf_bench_load_{stamp}");
        let load_url = fresh_db(&load_db).await;
        ok(&load_url, &prefix, &["migrate"]);
        ok(&load_url, &prefix, &["seed", "--products", "1000", "--suppliers", "50"]);
        ok(&load_url, &prefix, &["topics", "--partitions", &partitions.to_string()]);
        let t = Instant::now();
        let summary = ok(
            &load_url,
            &prefix,
            &[
                "produce",
                "--count",
                &n.to_string(),
                "--seed",
                "1",
                "--days",
                &days.to_string(),
                "--duplicate-ratio",
                "0.01",
                "--invalid-ratio",
                "0.005",
                "--quiet",
            ],
        );
        println!("produce {n}: {:.0} events/s ({:.1} s) | {}", n as f64 / since(t), since(t), summary.trim());
        let admin = connect(&url_with_db("postgres")).await;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {load_db} WITH (FORCE)")).await.unwrap();
        println!(
            "events | workers | drain s | events/s | COPY ceiling s | ceiling events/s | ratio | peak RSS MB | DB bytes written MB | commits"
        );
        for &w in &workers {
            let mut rates = Vec::new();
            for run in 0..runs {
                rates.push(drain(n, w, &prefix, &format!("sf_bench_w{w}_{run}_{stamp}")).await);
            }
            rates.sort_by(f64::total_cmp);
            medians.push((n, w, rates[rates.len() / 2], rates.len()));
        }
        delete_topics(&prefix).await;
    }
    println!("median events/s: events | workers | events/s | runs");
    for (n, w, rate, k) in medians {
        println!("{n} | {w} | {rate:.0} | {k}");
    }
}
