//! The operator commands (contract 5.5), through the binary against real
//! PostgreSQL and Kafka: `reconcile` on a clean run and after plain-SQL
//! tampering, `stock --as-of` / `--processed-as-of` against a replay of the
//! events the test sent, `dlq redrive` after the fix, twice, with a
//! `kill -9` of the processor in between.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{TestEnv, send_raw};

fn sale(id: &str, product: &str, qty: u32, at: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"online_order","occurred_at":"{at}","product_id":"{product}","quantity":{qty},"order_id":"O-{id}","customer_id":"C-1","unit_price":2.50}}"#
    )
}

fn store_sale(id: &str, product: &str, qty: u32, at: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"store_sale","occurred_at":"{at}","product_id":"{product}","quantity":{qty},"order_id":"O-{id}","store_id":"ST-1","unit_price":1.25}}"#
    )
}

fn restock(id: &str, product: &str, qty: u32, supplier: &str, at: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"supplier_restock","occurred_at":"{at}","product_id":"{product}","quantity":{qty},"restock_id":"R-{id}","supplier_id":"{supplier}","unit_cost":1.00}}"#
    )
}

/// Sends `(topic, key, value)` messages.
fn send(env: &TestEnv, events: &[(&str, String, String)]) {
    let msgs: Vec<common::Outgoing<'_>> =
        events.iter().map(|(t, k, v)| (*t, Some(k.as_bytes()), Some(v.as_bytes()))).collect();
    send_raw(env, &msgs);
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `stock` CSV as `product -> quantity`, checking the header and the order.
fn parse_stock(csv: &str) -> BTreeMap<String, i64> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("product_id,quantity_on_hand"));
    let mut out = BTreeMap::new();
    let mut last = String::new();
    for l in lines {
        let (p, q) = l.rsplit_once(',').unwrap();
        assert!(p.as_bytes() > last.as_bytes(), "ordered by product_id in byte order: {last} then {p}");
        last = p.to_string();
        out.insert(p.to_string(), q.parse().unwrap());
    }
    out
}

/// Every product's `inventory.column` (0 without a row), by product.
async fn quantities(env: &TestEnv, column: &str) -> BTreeMap<String, i64> {
    env.rows(&format!(
        "SELECT p.product_id, coalesce(i.{column}, 0) FROM products p LEFT JOIN inventory i USING (product_id)"
    ))
    .await
    .iter()
    .map(|r| {
        let (p, q) = r.split_once('|').unwrap();
        (p.to_string(), q.parse().unwrap())
    })
    .collect()
}

/// Runs each `(statement, parameters)` of `edits` with `{op}` replaced by `op`.
async fn apply_edits(client: &tokio_postgres::Client, edits: &[(&str, Vec<&str>)], op: &str) {
    for (sql, params) in edits {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        client.execute(&sql.replace("{op}", op), &params).await.unwrap();
    }
}

#[tokio::test]
async fn reconcile_holds_on_a_clean_run_and_names_each_tampered_row() {
    let env = TestEnv::new("reconcile").await;
    env.prepare(20, 2);
    env.produce_valid(&[
        "--count",
        "4000",
        "--days",
        "3",
        "--duplicate-ratio",
        "0.05",
        "--invalid-ratio",
        "0.05",
        "--seed",
        "11",
    ]);
    env.run_to_idle(&["--workers", "2"]);
    let clean = env.stockflow(&["reconcile"]);
    assert!(clean.status.success(), "{}{}", stdout(&clean), String::from_utf8_lossy(&clean.stderr));
    assert!(stdout(&clean).starts_with("reconcile: all hold"), "{}", stdout(&clean));

    // Plain SQL behind the processor's back, one change per table.
    let client = env.client().await;
    let product = env
        .rows("SELECT product_id, quantity_on_hand FROM inventory ORDER BY product_id COLLATE \"C\" LIMIT 1")
        .await
        .remove(0);
    let (product, qty) = product.split_once('|').unwrap();
    let qty: i64 = qty.parse().unwrap();
    let hour_row = env
        .rows(
            "SELECT to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"'), product_id, source \
             FROM sales_hourly ORDER BY 1, 2, 3 OFFSET 5 LIMIT 1",
        )
        .await
        .remove(0);
    let h: Vec<&str> = hour_row.split('|').collect();
    let day_row = env
        .rows("SELECT day, product_id, source FROM sales_daily ORDER BY 1 DESC, 2, 3 LIMIT 1")
        .await
        .remove(0);
    let d: Vec<&str> = day_row.split('|').collect();
    // Each edit with `{op}` for `+` (tamper) or `-` (put back).
    let edits: [(&str, Vec<&str>); 3] = [
        (
            "UPDATE inventory SET quantity_on_hand = quantity_on_hand {op} 7 WHERE product_id = $1",
            vec![product],
        ),
        (
            "UPDATE sales_hourly SET units = units {op} 1 \
             WHERE hour = $1::text::timestamptz AND product_id = $2 AND source = $3",
            h.clone(),
        ),
        (
            "UPDATE sales_daily SET revenue = revenue {op} 0.01 \
             WHERE day = $1::text::date AND product_id = $2 AND source = $3",
            d.clone(),
        ),
    ];
    apply_edits(&client, &edits, "+").await;

    let tampered = env.stockflow(&["reconcile"]);
    assert_eq!(tampered.status.code(), Some(3), "{}", String::from_utf8_lossy(&tampered.stderr));
    let lines: Vec<String> = stdout(&tampered).lines().map(str::to_string).collect();
    let expect_inventory = format!(
        "inventory product_id={product}: quantity_on_hand={}, expected quantity_on_hand={qty} ",
        qty + 7
    );
    assert!(lines.iter().any(|l| l.starts_with(&expect_inventory)), "{expect_inventory:?} in {lines:#?}");
    let hour_key = format!("sales_hourly hour={} product_id={} source={}: ", h[0], h[1], h[2]);
    assert!(lines.iter().any(|l| l.starts_with(&hour_key)), "{hour_key:?} in {lines:#?}");
    let day_key = format!("sales_daily day={} product_id={} source={}: ", d[0], d[1], d[2]);
    assert!(lines.iter().any(|l| l.starts_with(&day_key)), "{day_key:?} in {lines:#?}");
    // The hourly edit also breaks its day's sum of hours, the daily edit
    // both the day's sales and its sum of hours: five lines, no more.
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("sales_daily (sum of its sales_hourly) ")).count(),
        2,
        "{lines:#?}"
    );

    // Put everything back: all hold again.
    apply_edits(&client, &edits, "-").await;
    assert!(env.stockflow(&["reconcile"]).status.success());

    // A deleted orders row: the applied sale has no price any more.
    let sale_id =
        env.rows("SELECT event_id, product_id FROM orders ORDER BY event_id LIMIT 1").await.remove(0);
    let (sale_id, sale_product) = sale_id.split_once('|').unwrap();
    client.execute("DELETE FROM orders WHERE event_id = $1", &[&sale_id]).await.unwrap();
    let orders_out = env.stockflow(&["reconcile"]);
    assert_eq!(orders_out.status.code(), Some(3));
    assert!(
        stdout(&orders_out)
            .lines()
            .any(|l| l.starts_with(&format!("orders product_id={sale_product}: missing=1"))),
        "{}",
        stdout(&orders_out)
    );

    // An applied event of a kind event_kinds has no row for (a restock,
    // so no sales change): named as such, not counted as a sale.
    let restock = env
        .rows(
            "SELECT log_id FROM events_log WHERE status = 'applied' AND event_type = 'supplier_restock' \
             ORDER BY log_id LIMIT 1",
        )
        .await
        .remove(0);
    let mystery = format!("UPDATE events_log SET event_type = 'mystery' WHERE log_id = {restock}");
    client.batch_execute(&mystery).await.unwrap();
    let out = env.stockflow(&["reconcile"]);
    assert_eq!(out.status.code(), Some(3));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let kinds: Vec<&String> = lines.iter().filter(|l| l.starts_with("event_kinds ")).collect();
    assert_eq!(
        kinds,
        [
            "event_kinds event_type=mystery: no row, expected a row (run `stockflow migrate` with the binary that wrote it)"
        ],
        "{lines:#?}"
    );
    let others: Vec<&str> =
        lines.iter().filter(|l| !l.starts_with("event_kinds ")).map(|l| l.as_str()).collect();
    assert_eq!(others, stdout(&orders_out).lines().collect::<Vec<_>>(), "nothing else changes");
    client
        .batch_execute(&format!(
            "UPDATE events_log SET event_type = 'supplier_restock' WHERE log_id = {restock}"
        ))
        .await
        .unwrap();

    // A kind of this binary missing from event_kinds: the processor
    // refuses to start, in one line; migrate writes the row back.
    client.batch_execute("DELETE FROM event_kinds WHERE event_type = 'store_sale'").await.unwrap();
    let refused = env.stockflow(&["run", "--exit-when-idle", "1"]);
    common::assert_one_line_failure(
        &refused,
        "event_kinds has no row for `store_sale` (run `stockflow migrate` with this binary)",
    );
    env.ok(&["migrate"]);
    assert_eq!(env.count("SELECT count(*) FROM event_kinds WHERE event_type = 'store_sale'").await, 1);

    // Cannot do its job: one line, not exit 3.
    let mut bad = env.command(&["reconcile"]);
    bad.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none");
    let out = bad.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
}

/// A small deterministic generator (the test must not depend on a crate's RNG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// An event the test sent: its time, product, delta and message.
type Sent = (DateTime<Utc>, String, i64, (&'static str, String, String));

/// UTC+05:30.
fn ist() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap()
}

#[tokio::test]
async fn stock_as_of_any_instant_matches_a_replay_of_the_events() {
    let env = TestEnv::new("asof").await;
    env.prepare(6, 2);
    let products: Vec<String> =
        env.rows("SELECT product_id FROM products ORDER BY product_id COLLATE \"C\"").await;
    let supplier = env.rows("SELECT supplier_id FROM suppliers ORDER BY 1 LIMIT 1").await.remove(0);
    let opening = quantities(&env, "opening_quantity").await;

    // Three days of events on the first five products (the sixth never
    // moves), some sent late (after later ones), a few exact duplicates,
    // several UTC offsets, and times on hour boundaries.
    let base = DateTime::parse_from_rfc3339("2026-11-10T00:00:00Z").unwrap().with_timezone(&Utc);
    let mut rng = Lcg(7);
    let mut events: Vec<Sent> = Vec::new();
    for i in 0..300 {
        let at = if i % 25 == 0 {
            base + chrono::Duration::hours(rng.next(72) as i64)
        } else {
            base + chrono::Duration::milliseconds(rng.next(3 * 86_400_000) as i64)
        };
        let shown = match i % 3 {
            0 => at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            1 => at.with_timezone(&ist()).to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            _ => at
                .with_timezone(&chrono::FixedOffset::west_opt(8 * 3600).unwrap())
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        };
        let p = &products[rng.next(5) as usize];
        let q = 1 + rng.next(9) as u32;
        let id = format!("ev-{i}");
        let (topic, json, delta) = match rng.next(3) {
            0 => ("online_orders", sale(&id, p, q, &shown), -i64::from(q)),
            1 => ("store_sales", store_sale(&id, p, q, &shown), -i64::from(q)),
            _ => ("supplier_restocks", restock(&id, p, q, &supplier, &shown), i64::from(q)),
        };
        events.push((at, p.clone(), delta, (topic, p.clone(), json)));
    }
    // Phase 1: the events of days 1 and 3; phase 2: day 2 (late), plus
    // duplicates of phase 1.
    let day2 =
        |t: &DateTime<Utc>| *t >= base + chrono::Duration::days(1) && *t < base + chrono::Duration::days(2);
    let phase1: Vec<_> = events.iter().filter(|e| !day2(&e.0)).map(|e| e.3.clone()).collect();
    let mut phase2: Vec<_> = events.iter().filter(|e| day2(&e.0)).map(|e| e.3.clone()).collect();
    phase2.extend(phase1.iter().take(10).cloned());

    let before_any = Utc::now();
    send(&env, &phase1);
    env.run_to_idle(&["--workers", "2"]);
    let between = Utc::now();
    std::thread::sleep(Duration::from_millis(20));
    send(&env, &phase2);
    env.run_to_idle(&[]);
    let after_all = Utc::now();

    let replay = |t: DateTime<Utc>, only: &dyn Fn(&DateTime<Utc>) -> bool| -> BTreeMap<String, i64> {
        let mut s = opening.clone();
        for (at, p, d, _) in &events {
            if *at <= t && only(at) {
                *s.get_mut(p).unwrap() += d;
            }
        }
        s
    };
    // Instants: before everything, every event's own time and 1 ms either
    // side, hour boundaries, the day boundaries, after everything.
    let mut instants = vec![base - chrono::Duration::days(1), base + chrono::Duration::days(10)];
    for (at, ..) in events.iter().step_by(7) {
        instants.extend([
            *at,
            *at - chrono::Duration::milliseconds(1),
            *at + chrono::Duration::milliseconds(1),
        ]);
    }
    for h in (0..=72).step_by(5) {
        instants.push(base + chrono::Duration::hours(h));
    }
    for t in &instants {
        // Shown with an offset half the time: any offset is accepted.
        let arg = if t.timestamp_millis() % 2 == 0 {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        } else {
            t.with_timezone(&ist()).to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
        };
        let got = parse_stock(&env.ok(&["stock", "--as-of", &arg]));
        assert_eq!(got, replay(*t, &|_| true), "stock as of {arg}");
    }
    // After the last event: exactly inventory.
    let inventory = quantities(&env, "quantity_on_hand").await;
    assert_eq!(parse_stock(&env.ok(&["stock", "--as-of", "2030-01-01T00:00:00Z"])), inventory);

    // One product, and one that does not exist (0).
    let t = base + chrono::Duration::hours(30);
    let one = env.ok(&["stock", "--as-of", &t.to_rfc3339(), "--product", &products[2]]);
    assert_eq!(
        one,
        format!("product_id,quantity_on_hand\n{},{}\n", products[2], replay(t, &|_| true)[&products[2]])
    );
    let none = env.ok(&["stock", "--as-of", &t.to_rfc3339(), "--product", "NO-SUCH"]);
    assert_eq!(none, "product_id,quantity_on_hand\nNO-SUCH,0\n");

    // Processing time: nothing before the first commit, phase 1 after the
    // first run (day 2 not yet sent), everything after the second.
    let at = |t: DateTime<Utc>| parse_stock(&env.ok(&["stock", "--processed-as-of", &t.to_rfc3339()]));
    assert_eq!(at(before_any), opening);
    assert_eq!(at(between), replay(base + chrono::Duration::days(10), &|t| !day2(t)));
    assert_eq!(at(after_all), inventory);

    // Wrong input: one line, exit 2 (usage).
    for args in [
        vec!["stock"],
        vec!["stock", "--as-of", "yesterday"],
        vec!["stock", "--as-of", "2026-11-10T00:00:00Z", "--processed-as-of", "2026-11-10T00:00:00Z"],
    ] {
        let out = env.stockflow(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1, "{args:?}");
    }
}

/// `redrive: N messages re-sent` -> N.
fn redriven(env: &TestEnv, args: &[&str]) -> usize {
    let mut all = vec!["dlq", "redrive"];
    all.extend_from_slice(args);
    let out = env.ok(&all);
    let n = out.trim().strip_prefix("redrive: ").and_then(|r| r.split(' ').next()).unwrap();
    n.parse().unwrap()
}

#[tokio::test]
async fn dlq_redrive_after_the_fix_twice_with_a_crash_between() {
    let env = TestEnv::new("redrive").await;
    env.prepare(4, 2);
    let known = env.rows("SELECT product_id FROM products ORDER BY 1 LIMIT 1").await.remove(0);
    let supplier = env.rows("SELECT supplier_id FROM suppliers ORDER BY 1 LIMIT 1").await.remove(0);
    let at = "2026-11-20T10:00:00Z";
    // 40 sales and 20 restocks of a product not yet in the catalog, 30
    // restocks from a supplier not yet known, 5 messages that no fix helps.
    let mut msgs = Vec::new();
    for i in 0..40 {
        msgs.push(("online_orders", "NEW-P".to_string(), sale(&format!("np-s{i}"), "NEW-P", 1, at)));
    }
    for i in 0..20 {
        msgs.push((
            "supplier_restocks",
            "NEW-P".to_string(),
            restock(&format!("np-r{i}"), "NEW-P", 5, &supplier, at),
        ));
    }
    for i in 0..30 {
        msgs.push((
            "supplier_restocks",
            known.clone(),
            restock(&format!("ns-{i}"), &known, 2, "SUP-NEW", at),
        ));
    }
    for i in 0..5 {
        msgs.push(("store_sales", known.clone(), format!("{{\"event_id\":\"bad-{i}\",")));
    }
    send(&env, &msgs);
    env.run_to_idle(&["--workers", "2"]);
    let known_before =
        env.count(&format!("SELECT quantity_on_hand FROM inventory WHERE product_id = '{known}'")).await;
    assert_eq!(redriven(&env, &["--code", "unknown_product", "--dry-run"]), 60);
    assert_eq!(redriven(&env, &["--code", "unknown_supplier", "--dry-run"]), 30);
    assert_eq!(redriven(&env, &["--code", "unknown_product", "--since", "2099-01-01T00:00:00Z"]), 0);

    // A redrive before the fix: re-sent, rejected again. The copy is the
    // same message: the next redrive sends each once, not twice.
    assert_eq!(redriven(&env, &["--code", "unknown_product"]), 60);
    env.run_to_idle(&[]);
    assert_eq!(env.count("SELECT count(*) FROM events_log WHERE error_code = 'unknown_product'").await, 120);
    // The re-sent copies kept the key and the value.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM (SELECT topic, kafka_key, raw_event FROM events_log \
             WHERE error_code = 'unknown_product' GROUP BY 1, 2, 3 HAVING count(*) = 2 \
             AND bool_and(kafka_key = 'NEW-P'::bytea)) x"
        )
        .await,
        60
    );

    // The fix, then a redrive with the processor running, killed -9 while
    // it works through the copies.
    let client = env.client().await;
    client
        .batch_execute(
            "INSERT INTO products (product_id, name, category, price, reorder_level) VALUES ('NEW-P', 'New', 'Test', 2.50, 0); \
             INSERT INTO suppliers (supplier_id, name) VALUES ('SUP-NEW', 'New supplier')",
        )
        .await
        .unwrap();
    let processor = env.spawn(&["run", "--epoch-ms", "50", "--reference-refresh-ms", "200"]);
    // The running processor learns of the new rows within its refresh.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(redriven(&env, &["--code", "unknown_product"]), 60);
    assert_eq!(redriven(&env, &["--code", "unknown_supplier"]), 30);
    let started = Instant::now();
    while env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the processor applies the copies");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::process::Command::new("kill").args(["-KILL", &processor.id().to_string()]).status();
    let _ = common::output_within(processor, Duration::from_secs(10));

    // The second redrive, after the crash: nothing whose copy was applied,
    // nothing whose copy is still waiting to be read.
    assert_eq!(redriven(&env, &["--code", "unknown_product"]), 0);
    assert_eq!(redriven(&env, &["--code", "unknown_supplier"]), 0);
    env.run_to_idle(&[]);
    assert_eq!(redriven(&env, &["--code", "unknown_product", "--dry-run"]), 0);
    assert_eq!(redriven(&env, &["--code", "unknown_supplier"]), 0);
    // A malformed message is sent back as it is (and rejected again).
    assert_eq!(redriven(&env, &["--code", "malformed_json", "--dry-run"]), 5);

    // Every event applied exactly once, the stock as the events say.
    assert_eq!(
        env.count("SELECT count(*) FROM events_log WHERE status = 'applied' AND (event_id LIKE 'np-%' OR event_id LIKE 'ns-%')")
            .await,
        90
    );
    assert_eq!(
        env.count("SELECT quantity_on_hand FROM inventory WHERE product_id = 'NEW-P'").await,
        20 * 5 - 40
    );
    assert_eq!(
        env.count(&format!("SELECT quantity_on_hand FROM inventory WHERE product_id = '{known}'")).await,
        known_before + 30 * 2
    );
    let rec = env.stockflow(&["reconcile"]);
    assert!(rec.status.success(), "{}", stdout(&rec));
}
