//! History at scale (issue 14): what years of history cost the pipeline.
//!
//! 1. Pre-loads N events (the simulated mix, 3 days of event time) into
//!    fresh topics.
//! 2. Drains them into an empty database: events/s and peak RSS.
//! 3. Builds a database holding H events of history (synthesised by SQL in
//!    the shape the processor writes: `events_log` and `orders` in their
//!    day partitions over the D days before today, consistent `inventory`,
//!    `stock_hourly`, `sales_hourly`, `sales_daily`, `epochs`), then drains
//!    the same N events into it: events/s against the empty database, same
//!    run, and peak RSS.
//! 4. A storm of late events (each older than the dedup horizon, so looked
//!    up in the database) into both databases.
//! 5. Restart: more events, a processor killed (`kill -9`) after its first
//!    commit, a new one started: seconds from its exec to its first commit,
//!    on the database with history (and on the empty one, for comparison).
//! 6. `reconcile`, `stock --as-of` and `--processed-as-of` with all of the
//!    history held; then `stockflow archive` of every day but the last ten;
//!    then the same commands again (their answers at held instants compared
//!    with the ones before) and `archive --verify`.
//!
//! Needs the local services (scripts/services.sh up). Settings:
//! STOCKFLOW_BENCH_EVENTS (N, default 1000000), STOCKFLOW_BENCH_HISTORY
//! (H, default 20000000), STOCKFLOW_BENCH_HISTORY_DAYS (D, default 30),
//! STOCKFLOW_BENCH_WORKERS (default 1), STOCKFLOW_BENCH_REPEAT (default 3),
//! STOCKFLOW_BENCH_SEED (the producer's seed, default 1),
//! STOCKFLOW_BENCH_KEEP_DB (a database name: the history database is kept
//! and, when it exists, reused instead of built again).
//!
//! `cargo bench --bench history`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;

/// Events of history inserted per statement.
const CHUNK: i64 = 1_000_000;

/// Days between the end of the history and today: the drained events
/// spread over the last 3 days of event time.
const HISTORY_GAP: i32 = 3;

/// Fills a migrated, seeded database (1 000 products) with `n` applied
/// events committed evenly over the `days` days that end [`HISTORY_GAP`]
/// days before today (where the drained events' event time begins: the
/// history comes before them, as in production), in the shape
/// the processor writes, with every derived table consistent with them
/// (reconcile holds). Event ids are random-looking (md5), as UUIDs are, so
/// that the per-day indexes on them behave as in production.
async fn synthesize_history(url: &str, n: i64, days: i32) {
    let client = connect(url).await;
    client
        .execute(
            "SELECT stockflow_ensure_partitions((now() AT TIME ZONE 'UTC')::date - $1::int - $2::int, \
                                                (now() AT TIME ZONE 'UTC')::date - $2::int - 1)",
            &[&days, &HISTORY_GAP],
        )
        .await
        .unwrap();
    let t = Instant::now();
    let mut from = 1i64;
    while from <= n {
        let to = (from + CHUNK - 1).min(n);
        client
            .execute(
                "WITH ev AS (
                   SELECT g, md5('history-' || g) AS id,
                          CASE WHEN g % 20 = 0 THEN 'supplier_restock' WHEN g % 2 = 0 THEN 'online_order'
                               ELSE 'store_sale' END AS kind,
                          'SKU-' || lpad((1 + (g * 7919) % 1000)::text, 6, '0') AS product,
                          1 + g % 5 AS qty,
                          ((now() AT TIME ZONE 'UTC')::date - $3::int - $5::int)::timestamp AT TIME ZONE 'UTC'
                            + (g - 1) * ($3::int * 86400.0 / $4::bigint) * interval '1 second' AS processed
                   FROM generate_series($1::bigint, $2::bigint) g),
                 logged AS (
                   INSERT INTO events_log (event_id, topic, kafka_partition, kafka_offset, raw_event, status,
                                           event_type, product_id, delta, occurred_at, content_hash, epoch,
                                           processed_at, quantity_after, kafka_timestamp, kafka_key)
                   SELECT id,
                          'history.' || CASE kind WHEN 'supplier_restock' THEN 'supplier_restocks'
                                                  WHEN 'online_order' THEN 'online_orders' ELSE 'store_sales' END,
                          (g % 4)::int, g / 4, 
                          format('{\"event_id\":\"%s\",\"event_type\":\"%s\",\"occurred_at\":\"%s\",\"product_id\":\"%s\",\"quantity\":%s,\"order_id\":\"O-%s\",\"customer_id\":\"C-%s\",\"unit_price\":9.99}',
                                 id, kind, to_char((processed - (g % 600) * interval '1 second') AT TIME ZONE 'UTC',
                                                   'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                                 product, qty, g, g % 100000),
                          'applied', kind, product,
                          CASE kind WHEN 'supplier_restock' THEN qty * 20 ELSE -qty END,
                          processed - (g % 600) * interval '1 second',
                          decode(md5('content-' || g), 'hex'),
                          1 + g / 5000, processed, 0, processed, convert_to(product, 'UTF8')
                   FROM ev
                   RETURNING event_id, event_type, product_id, delta, occurred_at, processed_at)
                 INSERT INTO orders (event_id, order_id, product_id, quantity, unit_price, source, customer_id,
                                     store_id, occurred_at, processed_at)
                 SELECT event_id, 'O-' || event_id, product_id, -delta, 9.99,
                        CASE event_type WHEN 'online_order' THEN 'online' ELSE 'store' END,
                        CASE event_type WHEN 'online_order' THEN 'C-1' END,
                        CASE event_type WHEN 'store_sale' THEN 'ST-1' END,
                        occurred_at, processed_at
                 FROM logged WHERE event_type <> 'supplier_restock'",
                &[&from, &to, &days, &n, &HISTORY_GAP],
            )
            .await
            .unwrap();
        println!("history: {to} of {n} events ({:.0} s)", since(t));
        from = to + 1;
    }
    // The derived tables, as the commits would have left them.
    client
        .batch_execute(
            "SET work_mem = '512MB';
             INSERT INTO stock_hourly (axis, hour, product_id, delta, events)
             SELECT 'event', date_trunc('hour', occurred_at, 'UTC'), product_id, sum(delta), count(*)
             FROM events_log WHERE status = 'applied' GROUP BY 2, 3;
             INSERT INTO stock_hourly (axis, hour, product_id, delta, events)
             SELECT 'commit', date_trunc('hour', processed_at, 'UTC'), product_id, sum(delta), count(*)
             FROM events_log WHERE status = 'applied' GROUP BY 2, 3;
             INSERT INTO sales_hourly (hour, product_id, source, units, revenue, order_count)
             SELECT date_trunc('hour', occurred_at, 'UTC'), product_id, source, sum(quantity),
                    sum(quantity * unit_price), count(*)
             FROM orders GROUP BY 1, 2, 3;
             INSERT INTO sales_daily (day, product_id, source, units, revenue, order_count)
             SELECT (hour AT TIME ZONE 'UTC')::date, product_id, source, sum(units), sum(revenue), sum(order_count)
             FROM sales_hourly GROUP BY 1, 2, 3;
             UPDATE inventory i SET quantity_on_hand = i.quantity_on_hand + d.delta
             FROM (SELECT product_id, sum(delta) AS delta FROM events_log GROUP BY 1) d
             WHERE d.product_id = i.product_id;
             INSERT INTO epochs (epoch, messages, applied, duplicates, rejected, started_at, committed_at)
             SELECT epoch, count(*), count(*), 0, 0, min(processed_at), max(processed_at)
             FROM events_log GROUP BY epoch;
             UPDATE stream_progress SET published_epoch = (SELECT max(epoch) FROM epochs);",
        )
        .await
        .unwrap();
    client.batch_execute("VACUUM ANALYZE").await.unwrap();
    println!("history: {n} events and their derived tables in {:.0} s", since(t));
}

/// Drains the pre-loaded topics into `url`; returns (events/s, peak RSS).
async fn drain(url: &str, prefix: &str, n: u64, workers: u16) -> (f64, u64) {
    let client = connect(url).await;
    let before: i64 = client.query_one("SELECT count(*) FROM epochs", &[]).await.unwrap().get(0);
    let started = Utc::now();
    let child = spawn(url, prefix, &["run", "--workers", &workers.to_string(), "--exit-when-idle", "2"]);
    let (status, rss) = wait_with_peak_rss(child);
    assert!(status.success(), "stockflow run failed: {status:?}");
    let r = client
        .query_one(
            "SELECT max(committed_at), sum(messages)::bigint, count(*) FROM epochs WHERE started_at >= $1",
            &[&started],
        )
        .await
        .unwrap();
    let (last, handled, commits): (DateTime<Utc>, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(handled as u64, n, "every message handled ({before} epochs before)");
    let secs = (last - started).num_milliseconds() as f64 / 1e3;
    let rate = n as f64 / secs;
    println!(
        "drain: {n} events in {secs:.2} s = {rate:.0} events/s, peak RSS {:.0} MB, {commits} commits",
        mb(rss)
    );
    (rate, rss)
}

/// Seconds from the exec of a new processor to its first commit, after the
/// one before it was killed (`kill -9`) just after a commit of its own.
async fn restart_to_first_commit(url: &str, prefix: &str) -> f64 {
    let client = connect(url).await;
    let newest = || async {
        client
            .query_one("SELECT max(committed_at) FROM epochs", &[])
            .await
            .unwrap()
            .get::<_, DateTime<Utc>>(0)
    };
    ok(
        url,
        prefix,
        &["produce", "--count", "300000", "--rate", "20000", "--seed", "9", "--days", "1", "--quiet"],
    );
    let t0 = Utc::now();
    let mut first = spawn(url, prefix, &["run", "--workers", "1"]);
    while newest().await <= t0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let t1 = Utc::now();
    let started = Instant::now();
    let mut second = spawn(url, prefix, &["run", "--workers", "1"]);
    while newest().await <= t1 {
        assert!(started.elapsed() < Duration::from_secs(120), "no commit within 2 minutes of the restart");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = since(started);
    second.kill().unwrap();
    second.wait().unwrap();
    secs
}

/// Times `reconcile` and `stock` at the given instants; returns the stock
/// answers (to compare after the archive).
fn operator_round(
    url: &str,
    label: &str,
    repeat: usize,
    as_of: &[DateTime<Utc>],
    processed: &[DateTime<Utc>],
) -> Vec<String> {
    let mut runs = Vec::new();
    for _ in 0..repeat {
        let (secs, out) = timed(url, &["reconcile"]);
        assert!(out.status.success(), "reconcile: {}", String::from_utf8_lossy(&out.stdout));
        runs.push(secs);
    }
    println!("{label}: reconcile {} (target < 30 s)", stats(runs));
    let mut answers = Vec::new();
    for (flag, instants) in [("--as-of", as_of), ("--processed-as-of", processed)] {
        let mut times = Vec::new();
        for k in 0..repeat {
            for t in instants {
                let (secs, out) = timed(url, &["stock", flag, &t.to_rfc3339()]);
                assert!(out.status.success(), "stock {flag} {t}: {}", String::from_utf8_lossy(&out.stderr));
                times.push(secs);
                if k == 0 {
                    answers.push(String::from_utf8_lossy(&out.stdout).into_owned());
                }
            }
        }
        println!(
            "{label}: stock {flag} (all products, {} instants) {} (target < 2 s)",
            instants.len(),
            stats(times)
        );
    }
    answers
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = env_or("STOCKFLOW_BENCH_EVENTS", 1_000_000);
    let h: i64 = env_or("STOCKFLOW_BENCH_HISTORY", 20_000_000);
    let days: i32 = env_or("STOCKFLOW_BENCH_HISTORY_DAYS", 30);
    let workers: u16 = env_or("STOCKFLOW_BENCH_WORKERS", 1);
    let repeat: usize = env_or("STOCKFLOW_BENCH_REPEAT", 3);
    let keep = std::env::var("STOCKFLOW_BENCH_KEEP_DB").ok();
    let stamp = stamp();
    println!("history: {n} events drained, {h} events of history over {days} days, {workers} worker(s)");

    // 1. The events to drain.
    let prefix = format!("bench_hist_{stamp}.");
    let load = fresh_db(&format!("sf_bench_hload_{stamp}")).await;
    ok(&load, &prefix, &["migrate"]);
    ok(&load, &prefix, &["seed", "--products", "1000", "--suppliers", "50"]);
    ok(&load, &prefix, &["topics", "--partitions", "4"]);
    let seed: u64 = env_or("STOCKFLOW_BENCH_SEED", 1);
    let summary = ok(
        &load,
        &prefix,
        &[
            "produce",
            "--count",
            &n.to_string(),
            "--seed",
            &seed.to_string(),
            "--days",
            "3",
            "--duplicate-ratio",
            "0.01",
            "--invalid-ratio",
            "0.005",
            "--quiet",
        ],
    );
    println!("produce: {}", summary.trim());
    let admin = connect(&url_with_db("postgres")).await;
    admin.batch_execute(&format!("DROP DATABASE sf_bench_hload_{stamp} WITH (FORCE)")).await.unwrap();

    // 2. Empty database.
    let empty_db = format!("sf_bench_hempty_{stamp}");
    let empty = fresh_db(&empty_db).await;
    ok(&empty, &prefix, &["migrate"]);
    ok(&empty, &prefix, &["seed", "--products", "1000", "--suppliers", "50"]);
    let (rate_empty, rss_empty) = drain(&empty, &prefix, n, workers).await;

    // 3. Database with history.
    let hist_db = keep.clone().unwrap_or_else(|| format!("sf_bench_hist_{stamp}"));
    let exists =
        admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&hist_db]).await.unwrap().is_some();
    let hist = url_with_db(&hist_db);
    if !(exists && keep.is_some()) {
        let hist = fresh_db(&hist_db).await;
        ok(&hist, &prefix, &["migrate"]);
        ok(&hist, &prefix, &["seed", "--products", "1000", "--suppliers", "50"]);
        synthesize_history(&hist, h, days).await;
    }
    let client = connect(&hist).await;
    let size: i64 =
        client.query_one("SELECT pg_database_size(current_database())", &[]).await.unwrap().get(0);
    let held: i64 = client.query_one("SELECT count(*) FROM events_log", &[]).await.unwrap().get(0);
    println!("history database: {held} events_log rows, {:.0} MB", mb(size as u64));
    let (rate_hist, rss_hist) = drain(&hist, &prefix, n, workers).await;
    println!(
        "drain with history: {:.0} % of the empty database's rate ({rate_hist:.0} against {rate_empty:.0} events/s; \
         target >= 80 %); peak RSS {:.0} MB against {:.0} MB",
        100.0 * rate_hist / rate_empty,
        mb(rss_hist),
        mb(rss_empty)
    );
    // A storm of late events: 100 000 that occurred on the history's last
    // day (3 days and more before the newest), every one older than the
    // dedup horizon, so each is looked up in the database.
    let late_start = (Utc::now().date_naive() - chrono::Days::new(HISTORY_GAP as u64 + 1)).to_string();
    let late = 100_000u64;
    let summary = ok(
        &empty,
        &prefix,
        &[
            "produce",
            "--count",
            &late.to_string(),
            "--seed",
            "77",
            "--start",
            &late_start,
            "--days",
            "1",
            "--quiet",
        ],
    );
    println!("late events: {}", summary.trim());
    let (late_empty, _) = drain(&empty, &prefix, late, workers).await;
    let (late_hist, _) = drain(&hist, &prefix, late, workers).await;
    println!(
        "late events with history: {:.0} % of the empty database's rate ({late_hist:.0} against {late_empty:.0} events/s)",
        100.0 * late_hist / late_empty
    );
    let restart_empty = restart_to_first_commit(&empty, &prefix).await;
    println!("restart (empty database): {restart_empty:.2} s from exec to the first commit");
    admin.batch_execute(&format!("DROP DATABASE {empty_db} WITH (FORCE)")).await.unwrap();
    let restart_hist = restart_to_first_commit(&hist, &prefix).await;
    println!("restart (with history): {restart_hist:.2} s from exec to the first commit (target <= 2 s)");

    // 4. Operator commands with everything held, then after the archive.
    let today = Utc::now().date_naive();
    let keep_from = (today - chrono::Days::new(10)).and_hms_opt(0, 0, 0).unwrap().and_utc();
    let now = Utc::now();
    // Event time: instants in the held days, none on an hour boundary;
    // commit time likewise.
    let as_of: Vec<DateTime<Utc>> = (0..9)
        .map(|k| keep_from + chrono::Duration::seconds(1_234 + k * (now - keep_from).num_seconds() / 9))
        .collect();
    let processed = as_of.clone();
    let before = operator_round(&hist, "all held", repeat, &as_of, &processed);
    let dir = std::env::temp_dir().join(format!("stockflow-bench-archive-{stamp}"));
    let t = Instant::now();
    let (secs, out) = timed(
        &hist,
        &["archive", "--before", &keep_from.date_naive().to_string(), "--to", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "archive: {}", String::from_utf8_lossy(&out.stderr));
    let files_mb: u64 = walk_size(&dir);
    println!(
        "archive: {secs:.1} s, {:.0} MB of files | {}",
        mb(files_mb),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let (vsecs, vout) = timed(&hist, &["archive", "--verify", dir.to_str().unwrap()]);
    assert!(vout.status.success());
    println!("archive --verify: {vsecs:.1} s | {}", String::from_utf8_lossy(&vout.stdout).trim());
    let size: i64 =
        client.query_one("SELECT pg_database_size(current_database())", &[]).await.unwrap().get(0);
    let held: i64 = client.query_one("SELECT count(*) FROM events_log", &[]).await.unwrap().get(0);
    println!(
        "after the archive: {held} events_log rows held, database {:.0} MB ({:.0} s)",
        mb(size as u64),
        since(t)
    );
    let after = operator_round(&hist, "after the archive", repeat, &as_of, &processed);
    assert_eq!(before, after, "stock as of every held instant is unchanged by the archive");
    println!("stock answers at the {} held instants: identical before and after the archive", before.len());
    let _ = std::fs::remove_dir_all(&dir);
    drop(client);
    if keep.is_none() {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {hist_db} WITH (FORCE)")).await.unwrap();
    }
    delete_topics(&prefix).await;
}

fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { walk_size(&p) } else { e.metadata().map(|m| m.len()).unwrap_or(0) }
                })
                .sum()
        })
        .unwrap_or(0)
}
