//! `stockflow run` against the real PostgreSQL and broker, through the real
//! binary: rejection codes, duplicates, late events, zero and negative
//! stock, reference data at run time, 1 vs 2 workers, 2 processes, metrics.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, TestEnv, send_raw};
use serde_json::Value;

fn order(id: &str, product: &str, qty: i64, at: &str, price: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"online_order","occurred_at":"{at}","product_id":"{product}","quantity":{qty},"order_id":"o-{id}","customer_id":"c1","unit_price":{price}}}"#
    )
}

fn sale(id: &str, product: &str, qty: i64, at: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"store_sale","occurred_at":"{at}","product_id":"{product}","quantity":{qty},"order_id":"r-{id}","store_id":"S001","unit_price":2.50}}"#
    )
}

fn restock(id: &str, product: &str, qty: i64, supplier: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"supplier_restock","occurred_at":"2026-11-20T08:00:00Z","product_id":"{product}","quantity":{qty},"restock_id":"po-{id}","supplier_id":"{supplier}","unit_cost":1.25}}"#
    )
}

const T: &str = "2026-11-20T10:00:00Z";

#[tokio::test]
async fn every_rejection_code_duplicates_and_bad_bytes() {
    let env = TestEnv::new("reject").await;
    env.prepare(20, 1);
    let client = env.client().await;
    client
        .batch_execute("UPDATE inventory SET quantity_on_hand = 10, opening_quantity = 10 WHERE product_id = 'SKU-000001'")
        .await
        .unwrap();
    let huge = format!(r#"{{"event_id":"huge","padding":"{}"}}"#, "x".repeat(1_100_000));
    let same_content_other_form = r#"{"unit_price":5.00,"quantity":2,"customer_id":"c1","order_id":"o-d1","product_id":"SKU-000001","occurred_at":"2026-11-20T11:00:00+01:00","event_type":"online_order","event_id":"d1","extra":true}"#;
    let o = "online_orders";
    type Owned<'a> = (&'a str, Option<Vec<u8>>, Option<Vec<u8>>);
    let messages: Vec<Owned<'_>> = vec![
        (o, Some(b"SKU-000001".to_vec()), Some(order("d1", "SKU-000001", 2, T, "5").into_bytes())),
        (o, None, Some(b"\x00\xff garbage".to_vec())),
        (o, None, Some(b"not json".to_vec())),
        (o, None, Some(Vec::new())),
        (o, None, None),
        (o, None, Some(b"[1,2,3]".to_vec())),
        (o, None, Some(huge.clone().into_bytes())),
        (o, None, Some(order("s1", "SKU-000001", 2, T, "\"5.00\"").into_bytes())),
        (o, None, Some(order("s2", "SKU-000001", 2, "yesterday", "5").into_bytes())),
        (o, None, Some(order("q1", "SKU-000001", 0, T, "5").into_bytes())),
        (o, None, Some(order("q2", "SKU-000001", 99_999_999_999_999_999, T, "5").into_bytes())),
        (o, None, Some(order("p1", "SKU-000001", 1, T, "5.001").into_bytes())),
        (o, None, Some(order("p2", "SKU-000001", 1, T, "-1").into_bytes())),
        (o, None, Some(order("u1", "NOPE", 1, T, "5").into_bytes())),
        ("supplier_restocks", None, Some(restock("u2", "SKU-000001", 5, "SUP-NOPE").into_bytes())),
        ("store_sales", None, Some(order("w1", "SKU-000001", 1, T, "5").into_bytes())),
        // Plain duplicates: byte-identical, and the same content written differently.
        (o, Some(b"SKU-000001".to_vec()), Some(order("d1", "SKU-000001", 2, T, "5").into_bytes())),
        (o, Some(b"SKU-000001".to_vec()), Some(same_content_other_form.as_bytes().to_vec())),
        // Conflicting duplicate: same id, other quantity.
        (o, Some(b"SKU-000001".to_vec()), Some(order("d1", "SKU-000001", 3, T, "5").into_bytes())),
    ];
    let refs: Vec<common::Outgoing<'_>> =
        messages.iter().map(|(t, k, v)| (*t, k.as_deref(), v.as_deref())).collect();
    // Kafka's default limit is about 1 MB; the huge message needs more.
    common::allow_message_bytes(&env, o, 2_000_000).await;
    send_raw(&env, &refs);
    env.run_to_idle(&[]);

    let rejected = env
        .rows("SELECT error_code, count(*) FROM events_log WHERE status = 'rejected' GROUP BY 1 ORDER BY 1")
        .await;
    assert_eq!(
        rejected,
        vec![
            "conflicting_duplicate|1",
            "invalid_price|2",
            "invalid_quantity|2",
            "malformed_json|5",
            "schema_violation|3",
            "unknown_product|1",
            "unknown_supplier|1",
            "wrong_topic|1",
        ]
    );
    assert_eq!(env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await, 1);
    assert_eq!(
        env.rows("SELECT quantity_on_hand FROM inventory WHERE product_id = 'SKU-000001'").await,
        vec!["8"]
    );
    // Non-UTF-8 is kept as base64, the huge value whole.
    assert_eq!(
        env.count("SELECT count(*) FROM events_log WHERE raw_event LIKE 'base64:%' AND raw_is_base64").await,
        1
    );
    assert_eq!(env.count("SELECT max(length(raw_event))::bigint FROM events_log").await, huge.len() as i64);
    assert_eq!(env.count("SELECT count(*) FROM events_log WHERE raw_event IS NULL").await, 1, "tombstone");

    // Outputs: one dlq record per rejection, one update per applied event.
    let dlq = env.read_topic("dlq", 16);
    assert_eq!(dlq.len(), 16);
    let mut codes = BTreeMap::new();
    for r in &dlq {
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        for field in ["source_topic", "partition", "offset", "payload", "error", "failed_at"] {
            assert!(v.get(field).is_some(), "dlq record lacks {field}: {v}");
        }
        assert!(!v["error"]["detail"].as_str().unwrap().is_empty());
        *codes.entry(v["error"]["code"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(codes["malformed_json"], 5);
    let updates = env.read_topic("inventory_updates", 1);
    assert_eq!(updates.len(), 1);
    let u: Value = serde_json::from_slice(updates[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(
        (u["event_id"].as_str(), u["delta"].as_i64(), u["quantity_on_hand"].as_i64()),
        (Some("d1"), Some(-2), Some(8))
    );
    assert_eq!(updates[0].key.as_deref(), Some(&b"SKU-000001"[..]));

    // A later run sees the same ids as already applied.
    send_raw(&env, &[(o, None, Some(order("d1", "SKU-000001", 2, T, "5").as_bytes()))]);
    env.run_to_idle(&[]);
    assert_eq!(
        env.count("SELECT count(*) FROM events_log").await,
        17,
        "a duplicate after a restart leaves no row"
    );
    assert_eq!(
        env.rows("SELECT quantity_on_hand FROM inventory WHERE product_id = 'SKU-000001'").await,
        vec!["8"]
    );

    // The start-up check of resume points compares the last logged message
    // byte for byte: whatever it was (base64-stored bytes, NUL in UTF-8, an
    // empty value, a tombstone), a restart on the same topic is accepted.
    let odd: [Option<&[u8]>; 4] = [Some(b"\x00\xff\xfe bytes"), Some(b"nul\x00inside"), Some(b""), None];
    for value in odd {
        send_raw(&env, &[(o, None, value)]);
        env.run_to_idle(&[]);
        env.run_to_idle(&[]);
    }
    assert_eq!(env.count("SELECT count(*) FROM events_log").await, 21);
}

#[tokio::test]
async fn late_events_zero_and_negative_stock() {
    let env = TestEnv::new("stock").await;
    env.prepare(5, 2);
    let client = env.client().await;
    client
        .batch_execute(
            "UPDATE inventory SET quantity_on_hand = 3, opening_quantity = 3 WHERE product_id = 'SKU-000001'; \
             UPDATE inventory SET quantity_on_hand = 1, opening_quantity = 1 WHERE product_id = 'SKU-000002'; \
             DELETE FROM inventory WHERE product_id = 'SKU-000003';",
        )
        .await
        .unwrap();
    let a = order("z1", "SKU-000001", 3, "2026-11-20T10:00:00Z", "4.99");
    let b = sale("n1", "SKU-000002", 4, "2026-11-20T11:00:00Z");
    let c = sale("m1", "SKU-000003", 2, "2026-11-20T12:00:00Z");
    send_raw(
        &env,
        &[
            ("online_orders", Some(b"SKU-000001"), Some(a.as_bytes())),
            ("store_sales", Some(b"SKU-000002"), Some(b.as_bytes())),
            ("store_sales", Some(b"SKU-000003"), Some(c.as_bytes())),
        ],
    );
    env.run_to_idle(&[]);
    let stock = env.rows("SELECT product_id, quantity_on_hand FROM inventory WHERE product_id IN ('SKU-000001','SKU-000002','SKU-000003') ORDER BY 1").await;
    assert_eq!(
        stock,
        vec!["SKU-000001|0", "SKU-000002|-3", "SKU-000003|-2"],
        "zero shows 0, backorders go negative, a missing row starts at 0"
    );

    // A late event, two days old, corrects its own day.
    let late = order("late1", "SKU-000001", 1, "2026-11-18T23:59:59.999+00:00", "4.99");
    send_raw(&env, &[("online_orders", Some(b"SKU-000001"), Some(late.as_bytes()))]);
    env.run_to_idle(&[]);
    let daily = env
        .rows("SELECT day, product_id, source, units, revenue, order_count FROM sales_daily ORDER BY 1, 2, 3")
        .await;
    assert_eq!(
        daily,
        vec![
            "2026-11-18|SKU-000001|online|1|4.99|1",
            "2026-11-20|SKU-000001|online|3|14.97|1",
            "2026-11-20|SKU-000002|store|4|10.00|1",
            "2026-11-20|SKU-000003|store|2|5.00|1",
        ]
    );
    assert_eq!(
        env.rows("SELECT quantity_on_hand FROM inventory WHERE product_id = 'SKU-000001'").await,
        vec!["-1"]
    );
    assert_eq!(env.count("SELECT count(*) FROM inventory_reconciliation WHERE NOT balanced").await, 0);
}

/// Tables as outside readers see them, without per-run columns (commit
/// times, epochs, the stock level between epochs).
async fn tables(env: &TestEnv) -> Vec<String> {
    let mut out = Vec::new();
    for q in [
        "SELECT event_id, topic, kafka_partition, kafka_offset, raw_event, status, error_code, error_detail, event_type, \
         product_id, delta, occurred_at, encode(content_hash, 'hex') FROM events_log ORDER BY topic, kafka_partition, kafka_offset",
        "SELECT event_id, order_id, product_id, quantity, unit_price, source, customer_id, store_id, occurred_at \
         FROM orders ORDER BY event_id",
        "SELECT product_id, quantity_on_hand, opening_quantity FROM inventory ORDER BY product_id",
        "SELECT day, product_id, source, units, revenue, order_count FROM sales_daily ORDER BY 1, 2, 3",
        "SELECT topic, kafka_partition, next_offset FROM source_offsets ORDER BY 1, 2",
    ] {
        out.push(format!("-- {q}"));
        out.extend(env.rows(q).await);
    }
    out
}

#[tokio::test]
async fn one_and_two_workers_give_identical_tables() {
    let one = TestEnv::new("w1").await;
    one.prepare(80, 3);
    one.ok(&[
        "produce",
        "--count",
        "6000",
        "--seed",
        "21",
        "--duplicate-ratio",
        "0.05",
        "--invalid-ratio",
        "0.03",
        "--quiet",
    ]);
    // A second database reads the very same topics.
    let mut two = TestEnv::new("w2").await;
    two.prefix = one.prefix.clone();
    two.ok(&["migrate"]);
    two.ok(&["seed", "--products", "80", "--suppliers", "10"]);
    one.run_to_idle(&["--workers", "1"]);
    two.run_to_idle(&["--workers", "2"]);
    let a = tables(&one).await;
    let b = tables(&two).await;
    assert!(a.len() > 6000, "{}", a.len());
    if a != b {
        let diff: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).take(5).collect();
        panic!("1 and 2 workers differ: {diff:?}");
    }
}

#[tokio::test]
async fn two_processes_on_loopback() {
    let env = TestEnv::new("procs").await;
    env.prepare(50, 4);
    env.ok(&["produce", "--count", "4000", "--seed", "5", "--duplicate-ratio", "0.05", "--quiet"]);
    let hosts = format!("127.0.0.1:{},127.0.0.1:{}", common::free_port(), common::free_port());
    let spawn = |i: &str| {
        env.spawn(&[
            "run",
            "--exit-when-idle",
            "1",
            "--epoch-ms",
            "50",
            "--workers",
            "2",
            "--processes",
            "2",
            "--process",
            i,
            "--hosts",
            &hosts,
        ])
    };
    let p0 = spawn("0");
    let p1 = spawn("1");
    let o0 = p0.wait_with_output().unwrap();
    let o1 = p1.wait_with_output().unwrap();
    assert!(o0.status.success(), "{}", String::from_utf8_lossy(&o0.stderr));
    assert!(o1.status.success(), "{}", String::from_utf8_lossy(&o1.stderr));
    // Every message was handled exactly once, by one of the four workers.
    let distinct = env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await;
    let offsets = env.count("SELECT sum(next_offset)::bigint FROM source_offsets").await;
    assert_eq!(offsets, 4000);
    assert!(distinct > 3700 && distinct < 4000, "{distinct}");
    assert_eq!(env.count("SELECT count(*) FROM inventory_reconciliation WHERE NOT balanced").await, 0);
}

#[tokio::test]
async fn reference_data_added_while_running_and_metrics() {
    let env = TestEnv::new("refdata").await;
    env.prepare(5, 1);
    let port = common::free_port();
    let mut child = env.spawn(&[
        "run",
        "--epoch-ms",
        "50",
        "--reference-refresh-ms",
        "300",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let client = env.client().await;
    client
        .batch_execute(
            "INSERT INTO suppliers (supplier_id, name, contact) VALUES ('SUP-NEW', 'New Co', 'x@new.example'); \
             INSERT INTO products (product_id, name, category, price, reorder_level) VALUES ('NEW-1', 'New thing', 'Misc', 9.99, 1);",
        )
        .await
        .unwrap();
    // Well inside the contract's 10 seconds.
    std::thread::sleep(Duration::from_secs(2));
    send_raw(
        &env,
        &[
            ("online_orders", Some(b"NEW-1"), Some(order("n1", "NEW-1", 2, T, "9.99").as_bytes())),
            ("supplier_restocks", Some(b"NEW-1"), Some(restock("n2", "NEW-1", 5, "SUP-NEW").as_bytes())),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.count("SELECT count(*) FROM events_log").await < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // The counters move right after the output messages are acknowledged.
    let mut metrics = http_get(port, "/metrics");
    while !metrics.contains("outcome=\"applied\"} 2") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        metrics = http_get(port, "/metrics");
    }
    // A request that reaches the endpoint in pieces is answered as a whole.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET ").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b"/healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n"), "{answer}");
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");
    assert_eq!(
        env.rows("SELECT event_id, status FROM events_log ORDER BY 1").await,
        vec!["n1|applied", "n2|applied"]
    );
    assert_eq!(
        env.rows("SELECT quantity_on_hand FROM inventory WHERE product_id = 'NEW-1'").await,
        vec!["3"]
    );
    for needle in [
        "stockflow_messages_total{outcome=\"applied\"} 2",
        "stockflow_epochs_committed_total",
        "stockflow_commit_duration_seconds_bucket",
        "stockflow_consumer_lag_messages",
        "stockflow_lag_seconds",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}:\n{metrics}");
    }
}

fn http_get(port: u16, path: &str) -> String {
    common::http_get(&format!("127.0.0.1:{port}"), path).1
}

#[test]
fn run_reports_a_missing_topic_in_one_line() {
    let out = Command::new(BIN)
        .args(["run", "--exit-when-idle", "1"])
        .env("KAFKA_BROKERS", common::brokers())
        .env("STOCKFLOW_TOPIC_PREFIX", "no-such-prefix.")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    common::assert_one_line_failure(&out, "cannot connect to PostgreSQL");
}

#[tokio::test]
async fn dedup_beyond_a_short_horizon_over_many_epochs() {
    // Five days of traffic, a one-hour dedup horizon and small epochs: ids
    // leave memory before their epoch commits, late events are looked up in
    // PostgreSQL, and still nothing is applied twice.
    let env = TestEnv::new("horizon").await;
    env.prepare(60, 3);
    let valid =
        env.produce_valid(&["--count", "8000", "--seed", "31", "--days", "5", "--duplicate-ratio", "0.08"]);
    env.run_to_idle(&["--dedup-horizon-hours", "1", "--max-epoch-messages", "300"]);
    assert_eq!(env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await, valid);
    // A replay of everything after a restart, with the same short horizon
    // and a tiny id cap: the start-up load is cut short and most ids are
    // evicted by the cap, so the database answers for them.
    env.client().await.batch_execute("DELETE FROM source_offsets").await.unwrap();
    env.run_to_idle(&["--dedup-horizon-hours", "1", "--max-epoch-messages", "300", "--dedup-max-ids", "100"]);
    assert_eq!(env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await, valid);
    assert_eq!(env.count("SELECT count(*) FROM inventory_reconciliation WHERE NOT balanced").await, 0);
}

#[tokio::test]
async fn epochs_keep_increasing_when_the_epoch_length_changes() {
    let env = TestEnv::new("epochlen").await;
    env.prepare(20, 1);
    let first = env.produce_valid(&["--count", "300", "--seed", "41"]);
    env.ok(&["run", "--exit-when-idle", "1", "--epoch-ms", "20"]);
    let second = env.produce_valid(&["--count", "300", "--seed", "42"]);
    env.ok(&["run", "--exit-when-idle", "1", "--epoch-ms", "1000"]);
    assert_eq!(env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await, first + second);
    // Epochs are Unix milliseconds: within a day of now.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM epochs WHERE abs(epoch - extract(epoch FROM now()) * 1000) > 86400000"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn resuming_into_a_recreated_topic_is_refused() {
    // A first run stores its offsets; the topics are then "recreated": other
    // topics with other messages stand where the stored offsets point (the
    // rows are moved over, as if the broker had lost and re-made the topics).
    let env = TestEnv::new("recreated").await;
    env.prepare(20, 1);
    env.produce_valid(&["--count", "200", "--seed", "51", "--invalid-ratio", "0.05"]);
    env.run_to_idle(&[]);
    // A restart on the same topics passes the check.
    env.produce_valid(&["--count", "50", "--seed", "52"]);
    env.run_to_idle(&[]);
    let applied = env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await;

    let other = format!("{}again.", env.prefix);
    let with_other = |args: &[&str]| {
        let out = env.command(args).env("STOCKFLOW_TOPIC_PREFIX", &other).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(with_other(&["topics", "--partitions", "1"]).0);
    assert!(with_other(&["produce", "--quiet", "--count", "400", "--seed", "53"]).0);
    let client = env.client().await;
    let moved = format!(
        "UPDATE source_offsets SET topic = '{other}' || substr(topic, {len}) WHERE topic LIKE '{prefix}%'; \
         UPDATE events_log SET topic = '{other}' || substr(topic, {len}) WHERE topic LIKE '{prefix}%';",
        prefix = env.prefix,
        len = env.prefix.len() + 1
    );
    client.batch_execute(&moved).await.unwrap();

    let (ok, stderr) = with_other(&["run", "--exit-when-idle", "1"]);
    assert!(!ok, "the run must refuse to resume: {stderr}");
    assert!(stderr.contains("recreated"), "{stderr}");
    assert!(stderr.contains("new database"), "the message says what to do: {stderr}");
    assert_eq!(
        env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await,
        applied,
        "nothing was applied from the other topics"
    );

    // Recreated and still empty: the partitions end before the stored offsets.
    let empty = format!("{}empty.", env.prefix);
    let out =
        env.command(&["topics", "--partitions", "1"]).env("STOCKFLOW_TOPIC_PREFIX", &empty).output().unwrap();
    assert!(out.status.success());
    client
        .batch_execute(&format!(
            "UPDATE source_offsets SET topic = '{empty}' || substr(topic, {len}) WHERE topic LIKE '{other}%'; \
             UPDATE events_log SET topic = '{empty}' || substr(topic, {len}) WHERE topic LIKE '{other}%';",
            len = other.len() + 1
        ))
        .await
        .unwrap();
    let out = env
        .command(&["run", "--exit-when-idle", "1"])
        .env("STOCKFLOW_TOPIC_PREFIX", &empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("recreated or truncated"), "{stderr}");
}
