//! Latency at a steady rate: the producer sends R events/s for S seconds
//! while `stockflow run` processes them; then the produce -> committed
//! delay of every applied event is read from the database: the Kafka
//! timestamp the producer stamped (`events_log.kafka_timestamp`) against the
//! moment its epoch's transaction finished (`epochs.committed_at`).
//!
//! Needs the local services. Settings: STOCKFLOW_BENCH_RATE (default
//! 10000), STOCKFLOW_BENCH_SECONDS (default 60), STOCKFLOW_BENCH_WORKERS
//! (default 2), STOCKFLOW_BENCH_EPOCH_MS (default 100).
//!
//! `cargo bench --bench latency`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rate: u64 = env_or("STOCKFLOW_BENCH_RATE", 10_000);
    let seconds: u64 = env_or("STOCKFLOW_BENCH_SECONDS", 60);
    let workers: u16 = env_or("STOCKFLOW_BENCH_WORKERS", 2);
    let epoch_ms: u64 = env_or("STOCKFLOW_BENCH_EPOCH_MS", 100);
    let stamp = stamp();
    let prefix = format!("lat_{stamp}.");
    let db = format!("sf_lat_{stamp}");
    let url = fresh_db(&db).await;
    ok(&url, &prefix, &["migrate"]);
    ok(&url, &prefix, &["seed", "--products", "1000", "--suppliers", "50"]);
    ok(&url, &prefix, &["topics", "--partitions", "4"]);
    println!("latency: {rate} events/s for {seconds} s, {workers} workers, epoch {epoch_ms} ms");
    let processor = spawn(
        &url,
        &prefix,
        &[
            "run",
            "--workers",
            &workers.to_string(),
            "--epoch-ms",
            &epoch_ms.to_string(),
            "--exit-when-idle",
            "3",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let count = (rate * seconds).to_string();
    ok(
        &url,
        &prefix,
        &["produce", "--count", &count, "--rate", &rate.to_string(), "--days", "0.01", "--quiet"],
    );
    let (status, rss) = wait_with_peak_rss(processor);
    assert!(status.success());
    let client = connect(&url).await;
    let row = client
        .query_one(
            "WITH d AS (SELECT extract(epoch FROM (p.committed_at - e.kafka_timestamp)) * 1000 AS ms \
                        FROM events_log e JOIN epochs p USING (epoch) WHERE e.status = 'applied') \
             SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)::float8 FROM d",
            &[],
        )
        .await
        .unwrap();
    let (n, p50, p99, max): (i64, f64, f64, f64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    // Where the time goes: an event's epoch is the wall-clock slot in which
    // the processor read it (epoch = slot start, Unix ms). So
    //   produce -> read     = slot start - Kafka timestamp (producer, broker, fetch; at most one slot early)
    //   read -> committed   = commit end - slot start (the processor's own share, the slot's wait included)
    let split = client
        .query_one(
            "WITH d AS (SELECT extract(epoch FROM (to_timestamp(p.epoch / 1000.0) - e.kafka_timestamp)) * 1000 AS broker,                                extract(epoch FROM (p.committed_at - to_timestamp(p.epoch / 1000.0))) * 1000 AS own                         FROM events_log e JOIN epochs p USING (epoch) WHERE e.status = 'applied')              SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY broker), percentile_cont(0.99) WITHIN GROUP (ORDER BY broker),                     percentile_cont(0.5) WITHIN GROUP (ORDER BY own), percentile_cont(0.99) WITHIN GROUP (ORDER BY own),                     max(own)::float8 FROM d",
            &[],
        )
        .await
        .unwrap();
    let (b50, b99, o50, o99, omax): (f64, f64, f64, f64, f64) =
        (split.get(0), split.get(1), split.get(2), split.get(3), split.get(4));
    let commit = client
        .query_one(
            "WITH c AS (SELECT extract(epoch FROM (committed_at - started_at)) * 1000 AS ms FROM epochs) \
             SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM c",
            &[],
        )
        .await
        .unwrap();
    let (epochs, c50, c99): (i64, f64, f64) = (commit.get(0), commit.get(1), commit.get(2));
    println!("produce -> committed over {n} events: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
    println!("  produce -> read (producer, broker, fetch): p50 {b50:.1} ms, p99 {b99:.1} ms");
    println!(
        "  read -> committed (the processor, epoch wait included): p50 {o50:.1} ms, p99 {o99:.1} ms, max {omax:.1} ms"
    );
    println!(
        "transaction per epoch over {epochs} epochs: p50 {c50:.1} ms, p99 {c99:.1} ms; peak RSS {:.0} MB",
        mb(rss)
    );
    drop(client);
    let admin = connect(&url_with_db("postgres")).await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await.unwrap();
    delete_topics(&prefix).await;
}
