//! History at scale (migration V7, `stockflow archive`), through the binary
//! against real PostgreSQL and Kafka: three batches committed on three
//! days (the first two moved back in commit time, as if committed then),
//! the oldest day archived; then reconcile and stock as of every instant
//! still held answer exactly what they answered before, an instant no
//! longer held is refused in one line, the files hold what the database
//! held (checksums, row counts, restored rows), a damaged file is found,
//! and the rule for a repeat of an archived event holds.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;

use chrono::{DateTime, Days, NaiveDate, Utc};
use common::{TestEnv, send_raw};
use futures_util::SinkExt;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Moves everything committed so far one day back in commit time, as if it
/// had been committed a day earlier: `processed_at` of the log and the
/// orders (into the day before's partitions), the epochs, the alerts and
/// the commit-time hours of `stock_hourly`.
async fn commit_a_day_earlier(env: &TestEnv) {
    let client = env.client().await;
    client
        .batch_execute(
            "SELECT stockflow_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 4, (now() AT TIME ZONE 'UTC')::date);
             UPDATE events_log SET processed_at = processed_at - interval '1 day';
             UPDATE orders SET processed_at = processed_at - interval '1 day';
             UPDATE epochs SET started_at = started_at - interval '1 day', committed_at = committed_at - interval '1 day';
             UPDATE stock_alerts SET raised_at = raised_at - interval '1 day';
             CREATE TEMP TABLE commit_hours AS SELECT * FROM stock_hourly WHERE axis = 'commit';
             DELETE FROM stock_hourly WHERE axis = 'commit';
             INSERT INTO stock_hourly SELECT axis, hour - interval '1 day', product_id, delta, events FROM commit_hours;
             DROP TABLE commit_hours;",
        )
        .await
        .unwrap();
}

fn stock(env: &TestEnv, flag: &str, t: DateTime<Utc>) -> std::process::Output {
    env.stockflow(&["stock", flag, &t.to_rfc3339()])
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap().and_utc()
}

#[tokio::test]
async fn archive_keeps_what_is_held_exact_and_the_files_hold_the_rest() {
    let env = TestEnv::new("history").await;
    env.prepare(20, 2);
    let today = Utc::now().date_naive();
    let day = |n: u64| today.checked_sub_days(Days::new(n)).unwrap();
    // Batch 1: events of four days ago, committed two days ago; batch 2:
    // events of two days ago, committed yesterday.
    for (days_ago, seed) in [(4, "31"), (2, "32")] {
        let start = day(days_ago).to_string();
        env.produce_valid(&[
            "--count",
            "1500",
            "--start",
            &start,
            "--days",
            "1",
            "--duplicate-ratio",
            "0.05",
            "--invalid-ratio",
            "0.05",
            "--seed",
            seed,
        ]);
        env.run_to_idle(&[]);
        commit_a_day_earlier(&env).await;
    }
    // Batch 3: recent events, committed today.
    env.produce_valid(&["--count", "1500", "--days", "1", "--seed", "33"]);
    env.run_to_idle(&[]);

    let per_day = env
        .rows(
            "SELECT (processed_at AT TIME ZONE 'UTC')::date, count(*) FROM events_log GROUP BY 1 ORDER BY 1",
        )
        .await;
    assert_eq!(per_day.len(), 3, "three commit days: {per_day:?}");
    assert!(per_day[0].starts_with(&day(2).to_string()), "{per_day:?}");

    // What the commands answer before the archive.
    let held_from = midnight(day(1));
    let event_instants: Vec<DateTime<Utc>> = vec![
        midnight(day(2)) + chrono::Duration::minutes(7), // batch 2's events: held
        midnight(day(1)) + chrono::Duration::seconds(3601),
        Utc::now() + chrono::Duration::days(365),
        midnight(day(5)), // before every event
    ];
    let commit_instants: Vec<DateTime<Utc>> =
        vec![held_from, held_from + chrono::Duration::hours(13), Utc::now() + chrono::Duration::days(1)];
    let before_as_of: Vec<String> =
        event_instants.iter().map(|t| env.ok(&["stock", "--as-of", &t.to_rfc3339()])).collect();
    let before_processed: Vec<String> =
        commit_instants.iter().map(|t| env.ok(&["stock", "--processed-as-of", &t.to_rfc3339()])).collect();
    let inventory_before = env.rows("SELECT * FROM inventory_reconciliation ORDER BY product_id").await;
    let oldest_day = "(SELECT * FROM events_log WHERE processed_at < (now() AT TIME ZONE 'UTC')::date - 1)";
    let archived_log = env
        .rows(&format!(
            "SELECT count(*), sum(delta), md5(string_agg(concat_ws('|', log_id, event_id, topic, kafka_partition, \
             kafka_offset, raw_event, status, error_code, delta, occurred_at, processed_at), ',' ORDER BY log_id)) \
             FROM {oldest_day} e"
        ))
        .await;
    let archived_orders = env
        .count("SELECT count(*) FROM orders WHERE processed_at < (now() AT TIME ZONE 'UTC')::date - 1")
        .await;
    // An event of batch 1 (to be archived) and one of batch 2 (held), to send again later.
    let old_event = env
        .rows(&format!(
            "SELECT topic, product_id, raw_event, event_id FROM {oldest_day} e WHERE status = 'applied' \
             ORDER BY log_id LIMIT 1"
        ))
        .await;
    let held_event = env
        .rows(
            "SELECT topic, product_id, raw_event, event_id FROM events_log WHERE status = 'applied' \
             AND processed_at >= (now() AT TIME ZONE 'UTC')::date - 1 AND processed_at < (now() AT TIME ZONE 'UTC')::date ORDER BY log_id LIMIT 1",
        )
        .await;

    // A day to archive with an applied event of a kind event_kinds has no
    // row for: refused in one line naming it, before anything is archived.
    let dir = tempfile_dir();
    let before_arg = day(1).to_string();
    let client = env.client().await;
    let mystery = env
        .rows(&format!("SELECT log_id FROM {oldest_day} e WHERE status = 'applied' ORDER BY log_id LIMIT 1"))
        .await
        .remove(0);
    let set_type = |t: &str| format!("UPDATE events_log SET event_type = {t} WHERE log_id = {mystery}");
    let real_type =
        env.rows(&format!("SELECT event_type FROM events_log WHERE log_id = {mystery}")).await.remove(0);
    client.batch_execute(&set_type("'mystery'")).await.unwrap();
    let refused = env.stockflow(&["archive", "--before", &before_arg, "--to", dir.to_str().unwrap()]);
    common::assert_one_line_failure(&refused, "applied events of event_type `mystery`");
    assert!(stderr(&refused).contains("nothing was archived"), "{}", stderr(&refused));
    assert_eq!(env.count("SELECT count(*) FROM archived_partitions").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM archived_rollup").await, 0);
    client.batch_execute(&set_type(&format!("'{real_type}'"))).await.unwrap();

    // Archive the oldest day.
    let out = env.ok(&["archive", "--before", &before_arg, "--to", dir.to_str().unwrap()]);
    // The oldest day with rows, and the empty days the partitions were made for before it.
    assert!(out.starts_with("archive: 3 days archived"), "{out}");
    assert!(out.contains(&format!("history held from {}", held_from.to_rfc3339())), "{out}");
    let left = env
        .rows("SELECT (processed_at AT TIME ZONE 'UTC')::date FROM events_log GROUP BY 1 ORDER BY 1")
        .await;
    assert_eq!(left, vec![day(1).to_string(), today.to_string()]);
    let verify = env.ok(&["archive", "--verify", dir.to_str().unwrap()]);
    assert!(verify.contains("every checksum and row count as the manifest says"), "{verify}");

    // The manifest's rows are the database's rows; the file restores them.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    let file_of = |table: &str| {
        files.iter().find(|f| f["table"] == table && f["day"] == day(2).to_string()).unwrap().clone()
    };
    assert_eq!(files.len(), 6, "two files for each of the three days: {files:?}");
    let log_file = file_of("events_log");
    let archived_count: i64 = archived_log[0].split('|').next().unwrap().parse().unwrap();
    assert_eq!(log_file["rows"].as_i64().unwrap(), archived_count);
    assert_eq!(file_of("orders")["rows"].as_i64().unwrap(), archived_orders);
    client.batch_execute("CREATE TABLE restored (LIKE events_log)").await.unwrap();
    let mut csv = Vec::new();
    flate2::read::MultiGzDecoder::new(
        std::fs::File::open(dir.join(log_file["file"].as_str().unwrap())).unwrap(),
    )
    .read_to_end(&mut csv)
    .unwrap();
    let sink = client.copy_in("COPY restored FROM STDIN (FORMAT csv, HEADER)").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(csv)).await.unwrap();
    sink.as_mut().finish().await.unwrap();
    let restored = env
        .rows(
            "SELECT count(*), sum(delta), md5(string_agg(concat_ws('|', log_id, event_id, topic, kafka_partition, \
             kafka_offset, raw_event, status, error_code, delta, occurred_at, processed_at), ',' ORDER BY log_id)) \
             FROM restored e",
        )
        .await;
    assert_eq!(restored, archived_log, "the archived file restores the rows that were dropped");
    client.batch_execute("DROP TABLE restored").await.unwrap();

    // Everything still held answers as before.
    let clean = env.stockflow(&["reconcile"]);
    assert!(clean.status.success(), "{}{}", stdout(&clean), stderr(&clean));
    assert_eq!(
        env.rows("SELECT * FROM inventory_reconciliation ORDER BY product_id").await,
        inventory_before
    );
    for (t, before) in event_instants.iter().zip(&before_as_of) {
        let now = stock(&env, "--as-of", *t);
        assert!(now.status.success(), "as of {t}: {}", stderr(&now));
        assert_eq!(&stdout(&now), before, "stock as of {t}");
    }
    for (t, before) in commit_instants.iter().zip(&before_processed) {
        assert_eq!(&env.ok(&["stock", "--processed-as-of", &t.to_rfc3339()]), before, "processed as of {t}");
    }
    // An instant no longer held: one line, non-zero.
    let gone = stock(&env, "--processed-as-of", held_from - chrono::Duration::seconds(1));
    assert!(!gone.status.success());
    assert_eq!(stderr(&gone).lines().count(), 1, "{}", stderr(&gone));
    assert!(stderr(&gone).contains("before the oldest instant held in commit time"), "{}", stderr(&gone));
    // In event time, an instant that splits the archived events of its hour.
    let busy = env
        .rows(
            "SELECT first_occurred_at + (last_occurred_at - first_occurred_at) / 2 FROM archived_rollup \
             WHERE last_occurred_at > first_occurred_at ORDER BY events DESC LIMIT 1",
        )
        .await;
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(&busy[0]).unwrap().with_timezone(&Utc);
    let split = stock(&env, "--as-of", t);
    assert!(!split.status.success(), "{}", stdout(&split));
    assert!(stderr(&split).contains("falls among archived events"), "{}", stderr(&split));

    // A damaged file is found.
    let victim = dir.join(log_file["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let bad = env.stockflow(&["archive", "--verify", dir.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert_eq!(stderr(&bad).lines().count(), 1, "{}", stderr(&bad));
    assert!(stderr(&bad).contains(log_file["file"].as_str().unwrap()), "{}", stderr(&bad));

    // The rule beyond the history held: a held event sent again is still a
    // duplicate; an archived one is applied again, counted and logged.
    let applied_before = env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await;
    for e in [&held_event[0], &old_event[0]] {
        let f: Vec<&str> = e.splitn(4, '|').collect();
        let (topic, key, value) = (f[0], f[1], f[2]);
        send_raw(
            &env,
            &[(topic.strip_prefix(&env.prefix).unwrap(), Some(key.as_bytes()), Some(value.as_bytes()))],
        );
    }
    let out = env.run_to_idle(&[]);
    assert_eq!(
        env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await,
        applied_before + 1,
        "only the repeat of the archived event is applied"
    );
    let old_id = old_event[0].rsplit('|').next().unwrap();
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM events_log WHERE status = 'applied' AND event_id = '{old_id}'"
        ))
        .await,
        1
    );
    assert!(stderr(&out).contains("might repeat an archived event"), "{}", stderr(&out));
    let clean = env.stockflow(&["reconcile"]);
    assert!(clean.status.success(), "{}{}", stdout(&clean), stderr(&clean));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(common::unique("stockflow-archive"));
    std::fs::create_dir_all(&d).unwrap();
    d
}
