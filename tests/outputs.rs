//! The second edition's outputs (contract 5.2-5.4, 5.6): stock alerts
//! against a reference replayed in the test from the events it sent,
//! hourly sales against the raw stream, a second processor started by
//! mistake, and `--outputs at-least-once`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use common::{TestEnv, consume, reference, send_raw};
use serde_json::Value;

fn sale(topic_type: &str, id: &str, product: &str, qty: u32, at: &str) -> String {
    let (event_type, extra) = match topic_type {
        "store" => ("store_sale", r#""store_id":"ST-1""#),
        _ => ("online_order", r#""customer_id":"C-1""#),
    };
    format!(
        r#"{{"event_id":"{id}","event_type":"{event_type}","occurred_at":"{at}","product_id":"{product}","quantity":{qty},"order_id":"O-{id}",{extra},"unit_price":2.50}}"#
    )
}

fn restock(id: &str, product: &str, qty: u32, supplier: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"supplier_restock","occurred_at":"2026-11-20T10:00:00Z","product_id":"{product}","quantity":{qty},"restock_id":"R-{id}","supplier_id":"{supplier}","unit_cost":1.00}}"#
    )
}

/// Sends events `(topic, product, json)` keyed by product.
fn send(env: &TestEnv, events: &[(&str, String, String)]) {
    let owned: Vec<(&str, Vec<u8>, Vec<u8>)> =
        events.iter().map(|(t, p, v)| (*t, p.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
    let msgs: Vec<common::Outgoing<'_>> =
        owned.iter().map(|(t, k, v)| (*t, Some(k.as_slice()), Some(v.as_slice()))).collect();
    send_raw(env, &msgs);
}

fn terminate(child: std::process::Child) -> std::process::Output {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    common::output_within(child, Duration::from_secs(30))
}

/// The alert the replay expects when a product's state flips.
fn flip(state: &mut HashMap<String, bool>, p: &str, q: i64, r: i64, out: &mut BTreeMap<String, Vec<String>>) {
    let low = q <= r;
    let was = state.get(p).copied().unwrap_or(false);
    if low != was {
        state.insert(p.to_string(), low);
        let kind = if low { "low" } else { "recovered" };
        out.entry(p.to_string()).or_default().push(format!("{kind}|{q}|{r}"));
    }
}

#[tokio::test]
async fn stock_alerts_follow_committed_crossings() {
    let env = TestEnv::new("alerts").await;
    env.prepare(12, 2);
    let client = env.client().await;
    let products: Vec<String> =
        env.rows("SELECT product_id FROM products ORDER BY product_id COLLATE \"C\"").await;
    let supplier = env.rows("SELECT supplier_id FROM suppliers ORDER BY 1 LIMIT 1").await.remove(0);
    // A known start: every product at 100 with level 10 (not low), except
    // p[0] at 3 with level 5: low when first known.
    client
        .batch_execute(&format!(
            "UPDATE inventory SET quantity_on_hand = 100, opening_quantity = 100; \
             UPDATE products SET reorder_level = 10; \
             UPDATE inventory SET quantity_on_hand = 3, opening_quantity = 3 WHERE product_id = '{0}'; \
             UPDATE products SET reorder_level = 5 WHERE product_id = '{0}'",
            products[0]
        ))
        .await
        .unwrap();
    let mut qty: HashMap<String, i64> = products.iter().map(|p| (p.clone(), 100)).collect();
    let mut level: HashMap<String, i64> = products.iter().map(|p| (p.clone(), 10)).collect();
    qty.insert(products[0].clone(), 3);
    level.insert(products[0].clone(), 5);
    let (p0, p1, p2, p3, p4) = (&products[0], &products[1], &products[2], &products[3], &products[4]);

    // Phase 1: p1 falls to 5 (low); p2 dips to 5 and is restocked to 100
    // in the same commit (no alert). Epochs are wall-clock slots, so the
    // pair is sent just after a slot begins, to a processor already
    // reading: both are read well inside one 10 s slot however long the
    // start-up took (sending before the start once split the pair in CI,
    // the start-up ending near a slot's end). One worker: a single
    // consumer fetches every partition.
    let at = "2026-11-20T10:00:00Z";
    let phase1 = vec![
        ("online_orders", p1.clone(), sale("online", "a1", p1, 95, at)),
        ("online_orders", p2.clone(), sale("online", "a2", p2, 95, at)),
        ("supplier_restocks", p2.clone(), restock("a3", p2, 95, &supplier)),
    ];
    let first = env.spawn(&["run", "--epoch-ms", "10000", "--workers", "1"]);
    let started = Instant::now();
    // The status heartbeat begins once the consumers are assigned.
    while env.count("SELECT count(*) FROM processor_status").await < 1 {
        assert!(started.elapsed() < Duration::from_secs(60), "the processor did not start within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slot_ms = 10_000;
    let into_slot = Utc::now().timestamp_millis() % slot_ms;
    tokio::time::sleep(Duration::from_millis((slot_ms - into_slot + 200) as u64)).await;
    send(&env, &phase1);
    while env.count("SELECT count(*) FROM events_log").await < 3 {
        assert!(started.elapsed() < Duration::from_secs(90), "phase 1 was not committed within 90 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = terminate(first);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let epochs =
        env.rows("SELECT event_id, epoch FROM events_log WHERE event_id IN ('a2', 'a3') ORDER BY 1").await;
    let e: Vec<&str> = epochs.iter().map(|r| r.split('|').nth(1).unwrap()).collect();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0], e[1], "the dip and the recovery of {p2} were meant to be one commit: {epochs:?}");

    // Phase 2, while a processor runs: reorder-level edits both ways and a
    // product added low (no inventory row: 0 <= 5).
    let processor =
        env.spawn(&["run", "--workers", "2", "--epoch-ms", "50", "--reference-refresh-ms", "200"]);
    std::thread::sleep(Duration::from_secs(3));
    let before = env.count("SELECT count(*) FROM stock_alerts").await;
    client
        .batch_execute(&format!(
            "UPDATE products SET reorder_level = 200 WHERE product_id = '{p4}'; \
             UPDATE products SET reorder_level = 2 WHERE product_id = '{p1}'; \
             INSERT INTO products (product_id, name, category, price, reorder_level) \
               VALUES ('NEW-1', 'New', 'Test', 1.00, 5)"
        ))
        .await
        .unwrap();
    let edited = Instant::now();
    while env.count("SELECT count(*) FROM stock_alerts").await < before + 3 {
        assert!(edited.elapsed() < Duration::from_secs(10), "reorder-level edits raise alerts within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = terminate(processor);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));

    // Phase 3, after a restart: p0 recovers, p3 falls.
    let phase3 = vec![
        ("supplier_restocks", p0.clone(), restock("c1", p0, 10, &supplier)),
        ("store_sales", p3.clone(), sale("store", "c2", p3, 91, at)),
    ];
    send(&env, &phase3);
    env.run_to_idle(&["--workers", "2"]);
    // Phase 4: a restart with nothing new raises nothing.
    let count = env.count("SELECT count(*) FROM stock_alerts").await;
    env.run_to_idle(&["--workers", "2"]);
    assert_eq!(env.count("SELECT count(*) FROM stock_alerts").await, count, "a restart raises nothing again");

    // The replay: committed state after every commit (grouped as
    // events_log says), the edits between phases 1 and 3.
    let deltas: HashMap<&str, (&str, i64)> = [
        ("a1", (p1.as_str(), -95)),
        ("a2", (p2.as_str(), -95)),
        ("a3", (p2.as_str(), 95)),
        ("c1", (p0.as_str(), 10)),
        ("c2", (p3.as_str(), -91)),
    ]
    .into_iter()
    .collect();
    let commits = env.rows("SELECT epoch, event_id FROM events_log ORDER BY epoch, log_id").await;
    let mut by_commit: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for r in &commits {
        let (epoch, id) = r.split_once('|').unwrap();
        by_commit.entry(epoch.parse().unwrap()).or_default().push(id.to_string());
    }
    let mut state: HashMap<String, bool> = HashMap::new();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut all: Vec<String> = products.clone();
    // Run 1 knows every product at its first commit.
    for p in &all {
        flip(&mut state, p, qty[p], level[p], &mut expected);
    }
    let mut edits_applied = false;
    for ids in by_commit.values() {
        if !edits_applied && ids.iter().any(|id| id.starts_with('c')) {
            // Phase 2 happened before phase 3's first commit.
            level.insert(p4.clone(), 200);
            level.insert(p1.clone(), 2);
            qty.insert("NEW-1".into(), 0);
            level.insert("NEW-1".into(), 5);
            all.push("NEW-1".into());
            for p in &all {
                flip(&mut state, p, qty[p], level[p], &mut expected);
            }
            edits_applied = true;
        }
        for id in ids {
            let (p, d) = deltas[id.as_str()];
            *qty.get_mut(p).unwrap() += d;
        }
        for p in &all {
            flip(&mut state, p, qty[p], level[p], &mut expected);
        }
    }
    assert!(edits_applied);
    let mut actual: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in env
        .rows("SELECT product_id, kind, quantity_on_hand, reorder_level FROM stock_alerts ORDER BY raised_at, alert_id")
        .await
    {
        let (p, rest) = r.split_once('|').unwrap();
        actual.entry(p.to_string()).or_default().push(rest.to_string());
    }
    assert_eq!(actual, expected, "stock_alerts per product, in commit order");
    assert_eq!(expected[p0], ["low|3|5", "recovered|13|5"]);
    assert!(!expected.contains_key(p2.as_str()), "a dip inside one commit raises nothing");

    // 5.6: an alert's raised_at is its commit's processed_at; one
    // processed_at per commit.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM stock_alerts a JOIN events_log e USING (epoch) WHERE a.raised_at <> e.processed_at"
        )
        .await,
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM (SELECT epoch FROM events_log GROUP BY epoch HAVING count(DISTINCT processed_at) > 1) x")
            .await,
        0
    );
    // The topic, read_committed: exactly the table's alerts.
    let messages = env.read_until_quiet(&["stock_alerts"], Duration::from_secs(2));
    let mut topic: Vec<String> = messages
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(m.value.as_ref().unwrap()).unwrap();
            assert_eq!(m.key.as_deref(), v["product_id"].as_str().map(str::as_bytes));
            format!(
                "{}|{}|{}",
                v["alert_id"].as_str().unwrap(),
                v["product_id"].as_str().unwrap(),
                v["kind"].as_str().unwrap()
            )
        })
        .collect();
    topic.sort();
    let mut table = env.rows("SELECT alert_id, product_id, kind FROM stock_alerts").await;
    table.sort();
    assert_eq!(topic, table);
}

/// `(hour as YYYY-MM-DDTHH, product, source) -> (units, cents, orders)` of
/// the applied sales, from the raw JSON of the input topics.
async fn hourly_reference(env: &TestEnv) -> BTreeMap<(String, String, String), (i64, i64, i64)> {
    let applied: std::collections::BTreeSet<String> =
        env.rows("SELECT topic || '/' || kafka_partition || '/' || kafka_offset FROM events_log WHERE status = 'applied'")
            .await
            .into_iter()
            .collect();
    let topics: Vec<String> = ["online_orders", "store_sales"].iter().map(|t| env.topic(t)).collect();
    let mut out = BTreeMap::new();
    for r in consume(&env.brokers, &topics, usize::MAX, Duration::from_secs(60), Some(Duration::from_secs(2)))
    {
        if !applied.contains(&format!("{}/{}/{}", r.topic, r.partition, r.offset)) {
            continue;
        }
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let at: DateTime<Utc> =
            DateTime::parse_from_rfc3339(v["occurred_at"].as_str().unwrap()).unwrap().into();
        let hour = at.with_minute(0).unwrap().with_second(0).unwrap().with_nanosecond(0).unwrap();
        let source = if v["event_type"] == "online_order" { "online" } else { "store" };
        let price = v["unit_price"].to_string();
        let (int, frac) = price.split_once('.').unwrap_or((&price, ""));
        let cents = int.parse::<i64>().unwrap() * 100 + format!("{frac:0<2}")[..2].parse::<i64>().unwrap();
        let q = v["quantity"].as_i64().unwrap();
        let e = out
            .entry((
                hour.format("%Y-%m-%dT%H").to_string(),
                v["product_id"].as_str().unwrap().to_string(),
                source.to_string(),
            ))
            .or_insert((0, 0, 0));
        e.0 += q;
        e.1 += q * cents;
        e.2 += 1;
    }
    out
}

#[tokio::test]
async fn hourly_sales_sum_to_days_and_take_late_events() {
    let env = TestEnv::new("hourly").await;
    env.prepare(30, 2);
    env.produce_valid(&[
        "--count",
        "3000",
        "--seed",
        "5",
        "--days",
        "2",
        "--start",
        "2026-11-20",
        "--duplicate-ratio",
        "0.02",
    ]);
    // A product of its own for the crafted events, added after the
    // simulated traffic (which draws from the catalog) was sent.
    let p = "HOUR-1".to_string();
    env.client()
        .await
        .batch_execute("INSERT INTO products (product_id, name, category, price, reorder_level) VALUES ('HOUR-1', 'H', 'Test', 2.50, 0)")
        .await
        .unwrap();
    // Around midnight, in several offsets; the instant decides the hour.
    let crafted = vec![
        ("online_orders", p.clone(), sale("online", "h1", &p, 1, "2026-11-20T23:30:00-02:00")), // 21st 01:30Z
        ("online_orders", p.clone(), sale("online", "h2", &p, 2, "2026-11-21T00:30:00+05:30")), // 20th 19:00Z
        ("online_orders", p.clone(), sale("online", "h3", &p, 3, "2026-11-20T23:59:59.999Z")),
        ("online_orders", p.clone(), sale("online", "h4", &p, 4, "2026-11-21T00:00:00Z")),
        ("store_sales", p.clone(), sale("store", "h5", &p, 5, "2026-11-21T05:45:00+05:45")), // 21st 00:00Z
    ];
    send(&env, &crafted);
    env.run_to_idle(&["--workers", "2"]);
    // A late event, hours after its window was written: it corrects its hour.
    send(&env, &[("online_orders", p.clone(), sale("online", "h6", &p, 7, "2026-11-20T19:59:00Z"))]);
    env.run_to_idle(&["--workers", "2"]);

    let expected: Vec<String> = hourly_reference(&env)
        .await
        .iter()
        .map(|((h, p, s), (u, c, o))| format!("{h}|{p}|{s}|{u}|{}.{:02}|{o}", c / 100, c % 100))
        .collect();
    let actual = env
        .rows(
            "SELECT to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24'), product_id, source, units, revenue, order_count \
             FROM sales_hourly ORDER BY 1, product_id COLLATE \"C\", 3",
        )
        .await;
    assert_eq!(actual, expected, "sales_hourly against the raw stream");
    let hour = |h: &str, source: &str| {
        actual.iter().find(|r| r.starts_with(&format!("{h}|{p}|{source}|"))).cloned().unwrap_or_default()
    };
    assert_eq!(
        hour("2026-11-20T19", "online"),
        format!("2026-11-20T19|{p}|online|9|22.50|2"),
        "h2 (+05:30) and the late h6"
    );
    assert_eq!(hour("2026-11-20T23", "online"), format!("2026-11-20T23|{p}|online|3|7.50|1"));
    assert_eq!(hour("2026-11-21T00", "online"), format!("2026-11-21T00|{p}|online|4|10.00|1"));
    assert_eq!(
        hour("2026-11-21T00", "store"),
        format!("2026-11-21T00|{p}|store|5|12.50|1"),
        "h5 (+05:45) is 00:00Z"
    );
    assert_eq!(hour("2026-11-21T01", "online"), format!("2026-11-21T01|{p}|online|1|2.50|1"), "h1 (-02:00)");
    // Hours sum to days, for every (day, product, source), both ways.
    let mismatched = env
        .count(
            "SELECT count(*) FROM sales_daily d FULL JOIN ( \
               SELECT (hour AT TIME ZONE 'UTC')::date AS day, product_id, source, sum(units) AS units, \
                      sum(revenue) AS revenue, sum(order_count) AS order_count \
               FROM sales_hourly GROUP BY 1, 2, 3) h USING (day, product_id, source) \
             WHERE d.units IS DISTINCT FROM h.units OR d.revenue IS DISTINCT FROM h.revenue \
                OR d.order_count IS DISTINCT FROM h.order_count",
        )
        .await;
    assert_eq!(mismatched, 0);
    assert!(
        env.count("SELECT count(*) FROM sales_hourly").await > 48,
        "traffic over two days fills many hours"
    );
}

#[tokio::test]
async fn a_second_processor_takes_over_and_the_first_stops() {
    let env = TestEnv::new("twoproc").await;
    env.prepare(80, 3);
    let opening = reference::opening_stock(&env).await;
    let producer = env.spawn(&[
        "produce",
        "--count",
        "12000",
        "--rate",
        "3000",
        "--seed",
        "21",
        "--quiet",
        "--duplicate-ratio",
        "0.03",
        "--invalid-ratio",
        "0.01",
    ]);
    let first = env.spawn(&["run", "--epoch-ms", "50", "--workers", "2"]);
    std::thread::sleep(Duration::from_secs(2));
    // Started by mistake on the same database and topics.
    let second = env.spawn(&["run", "--epoch-ms", "50"]);
    let out = common::output_within(first, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the older processor stops: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("another `stockflow run`"), "one line says why: {last}");
    assert!(producer.wait_with_output().unwrap().status.success());
    env.wait_caught_up(Duration::from_secs(120)).await;
    let done = terminate(second);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let checked = reference::assert_exactly_once(&env, 80, &opening).await;
    assert_eq!(checked.messages, 12_000);
}

#[tokio::test]
async fn at_least_once_outputs_on_request() {
    let env = TestEnv::new("alo").await;
    env.prepare(40, 2);
    let valid = env.produce_valid(&["--count", "2000", "--seed", "3", "--invalid-ratio", "0.02"]);
    env.run_to_idle(&["--outputs", "at-least-once"]);
    let updates = env.read_topic("inventory_updates", valid as usize);
    assert_eq!(updates.len() as i64, valid, "one update per applied event without a crash");
    let rejected = env.count("SELECT count(*) FROM events_log WHERE status = 'rejected'").await;
    assert_eq!(env.read_topic("dlq", rejected as usize).len() as i64, rejected);
    let bad = env.stockflow(&["run", "--outputs", "twice"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid value 'twice'"));
}
