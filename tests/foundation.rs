//! The foundation against real services: schema, catalog, topics, and the
//! simulated producers, driven through the real `stockflow` binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{BIN, TestEnv, consume_all};
use dataflow::{ErrorCode, EventKind};
use serde_json::Value;

/// The contract's JSON Schemas: `../shared/contract/schemas` when present,
/// else the project's own copy in `tests/contract/schemas`.
fn schema_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/contract/schemas");
    if shared.join("online_order.json").exists() { shared } else { root.join("tests/contract/schemas") }
}

/// Compiles `name.json` with its `_common.json` references inlined.
fn validator(name: &str) -> jsonschema::Validator {
    let dir = schema_dir();
    let common: Value = serde_json::from_slice(&std::fs::read(dir.join("_common.json")).unwrap()).unwrap();
    let mut schema: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    fn inline(v: &mut Value, common: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref")
                    && let Some(def) = r.strip_prefix("_common.json#/$defs/")
                {
                    *v = common["$defs"][def].clone();
                    return;
                }
                m.values_mut().for_each(|x| inline(x, common));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| inline(x, common)),
            _ => {}
        }
    }
    inline(&mut schema, &common);
    if let Value::Object(m) = &mut schema {
        m.remove("$id");
    }
    jsonschema::options().should_validate_formats(true).build(&schema).unwrap()
}

#[test]
fn own_schema_copy_matches_the_contract() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/contract/schemas");
    if !shared.exists() {
        return; // no contract checkout beside this clone: nothing to compare
    }
    for entry in std::fs::read_dir(&shared).unwrap() {
        let path = entry.unwrap().path();
        let ours = root.join("tests/contract/schemas").join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&ours).unwrap(),
            "{} drifted",
            path.display()
        );
    }
}

async fn catalog_snapshot(c: &tokio_postgres::Client) -> Vec<String> {
    let rows = c
        .query(
            "SELECT p.product_id || '|' || p.name || '|' || p.category || '|' || p.price || '|' || p.reorder_level \
                    || '|' || i.quantity_on_hand || '|' || i.opening_quantity \
             FROM products p JOIN inventory i USING (product_id) ORDER BY p.product_id",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn migrate_and_seed_are_idempotent_and_complete() {
    let env = TestEnv::new("schema").await;
    assert!(env.ok(&["migrate"]).contains("applied V1__init"));
    assert!(env.ok(&["migrate"]).contains("up to date"));
    // event_kinds is the binary's model, one row per kind; migrate writes
    // it back when a row is missing or differs, and keeps other kinds' rows.
    let kinds_sql = "SELECT event_type, topic, coalesce(sale_source, '-') FROM event_kinds ORDER BY 1";
    let mut model: Vec<String> = EventKind::ALL
        .iter()
        .map(|k| format!("{}|{}|{}", k.event_type(), k.topic(), k.sale_source().map_or("-", |s| s.as_str())))
        .collect();
    model.sort();
    assert_eq!(env.rows(kinds_sql).await, model);
    env.client()
        .await
        .batch_execute(
            "DELETE FROM event_kinds WHERE event_type = 'store_sale'; \
             UPDATE event_kinds SET sale_source = 'store' WHERE event_type = 'supplier_restock'; \
             INSERT INTO event_kinds VALUES ('older_kind', 'older_kinds', NULL);",
        )
        .await
        .unwrap();
    assert!(env.ok(&["migrate"]).contains("up to date"));
    let mut with_older = model.clone();
    with_older.push("older_kind|older_kinds|-".into());
    with_older.sort();
    assert_eq!(env.rows(kinds_sql).await, with_older);
    let first = env.ok(&["seed", "--products", "120", "--suppliers", "9"]);
    assert!(first.contains("120 new products, 9 new suppliers, 120 new inventory rows"), "{first}");
    let client = env.client().await;
    client
        .batch_execute("UPDATE inventory SET quantity_on_hand = 7 WHERE product_id = 'SKU-000001'")
        .await
        .unwrap();
    let before = catalog_snapshot(&client).await;
    let second = env.ok(&["seed", "--products", "120", "--suppliers", "9"]);
    assert!(second.contains("0 new products, 0 new suppliers, 0 new inventory rows"), "{second}");
    assert_eq!(
        before,
        catalog_snapshot(&client).await,
        "a second seed must change nothing (stock not reset)"
    );
    assert!(before[0].contains("|7|"), "stock kept: {}", before[0]);

    // Every contract table and column exists with its contract type.
    let expected: &[(&str, &str, &str)] = &[
        ("products", "product_id", "text"),
        ("products", "name", "text"),
        ("products", "category", "text"),
        ("products", "price", "numeric"),
        ("products", "reorder_level", "integer"),
        ("suppliers", "supplier_id", "text"),
        ("suppliers", "name", "text"),
        ("suppliers", "contact", "text"),
        ("inventory", "product_id", "text"),
        ("inventory", "quantity_on_hand", "bigint"),
        ("inventory", "last_updated", "timestamp with time zone"),
        ("orders", "order_id", "text"),
        ("orders", "event_id", "text"),
        ("orders", "product_id", "text"),
        ("orders", "quantity", "integer"),
        ("orders", "unit_price", "numeric"),
        ("orders", "source", "text"),
        ("orders", "occurred_at", "timestamp with time zone"),
        ("events_log", "event_id", "text"),
        ("events_log", "topic", "text"),
        ("events_log", "raw_event", "text"),
        ("events_log", "status", "text"),
        ("events_log", "error_code", "text"),
        ("events_log", "processed_at", "timestamp with time zone"),
        ("sales_daily", "day", "date"),
        ("sales_daily", "product_id", "text"),
        ("sales_daily", "source", "text"),
        ("sales_daily", "units", "bigint"),
        ("sales_daily", "revenue", "numeric"),
        ("reports", "report_date", "date"),
        ("reports", "total_units", "bigint"),
        ("reports", "total_revenue", "numeric"),
        ("reports", "order_count", "bigint"),
        ("reports", "top_sellers", "jsonb"),
        ("reports", "low_stock", "jsonb"),
    ];
    for (table, column, ty) in expected {
        let row = client
            .query_opt(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
                &[table, column],
            )
            .await
            .unwrap();
        let got: Option<String> = row.map(|r| r.get(0));
        assert_eq!(got.as_deref(), Some(*ty), "{table}.{column}");
    }
    // Money is numeric(12,2) where the contract says so.
    let scale: i32 = client
        .query_one("SELECT numeric_scale FROM information_schema.columns WHERE table_name = 'products' AND column_name = 'price'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(scale, 2);
    // Operators can insert reference data naming only the contract's columns.
    client
        .batch_execute(
            "INSERT INTO suppliers (supplier_id, name, contact) VALUES ('SUP-X', 'X', 'x@example.com'); \
             INSERT INTO products (product_id, name, category, price, reorder_level) VALUES ('P-X', 'X', 'Misc', 1.50, 3);",
        )
        .await
        .unwrap();
    // The opening balance reconciles before any event.
    let unbalanced: i64 = client
        .query_one(
            "SELECT count(*) FROM inventory_reconciliation WHERE NOT balanced AND product_id <> 'SKU-000001'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unbalanced, 0);
}

#[tokio::test]
async fn topics_are_created_once() {
    let env = TestEnv::new("topics").await;
    let first = env.ok(&["topics", "--partitions", "2"]);
    let all = dataflow::TopicNames::with_prefix("").all();
    assert_eq!(first.matches("created").count(), all.len(), "{first}");
    let second = env.ok(&["topics", "--partitions", "2"]);
    assert_eq!(second.matches("exists (2 partitions)").count(), all.len(), "{second}");
    for t in &all {
        assert!(second.contains(&env.topic(t)), "{second}");
    }
}

#[tokio::test]
async fn produced_events_follow_the_contract_and_come_back_from_the_broker() {
    let env = TestEnv::new("produce").await;
    env.ok(&["migrate"]);
    env.ok(&["seed", "--products", "300", "--suppliers", "12"]);
    env.ok(&["topics", "--partitions", "3"]);
    let n = 3_000;
    let out = env.stockflow(&["produce", "--count", &n.to_string(), "--seed", "11", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("produce: {n} messages")), "{stderr}");

    let inputs: Vec<String> = EventKind::ALL.iter().map(|k| env.topic(k.topic())).collect();
    let records = consume_all(&inputs, n, Duration::from_secs(60));
    assert_eq!(records.len(), n, "every produced message comes back");
    let validators: BTreeMap<&str, jsonschema::Validator> =
        EventKind::ALL.iter().map(|k| (k.event_type(), validator(k.event_type()))).collect();
    let mut per_kind = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    let mut products = BTreeMap::new();
    for r in &records {
        let kind = EventKind::ALL.into_iter().find(|k| r.topic == env.topic(k.topic())).unwrap();
        let value: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let v = &validators[kind.event_type()];
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{value} breaks {}: {errors:?}", kind.event_type());
        let event =
            dataflow::validate::decode(kind, r.value.as_deref()).expect("passes stockflow's own validation");
        assert_eq!(r.key.as_deref(), Some(event.product_id.as_bytes()), "keyed by product_id");
        assert!(ids.insert(event.event_id.clone()), "event ids are unique");
        *per_kind.entry(kind).or_insert(0) += 1;
        *products.entry(event.product_id.clone()).or_insert(0u32) += event.quantity;
    }
    // Realistic mix: all three systems speak, sales dominate, restocks happen.
    assert!(
        per_kind[&EventKind::OnlineOrder] > n / 4 && per_kind[&EventKind::StoreSale] > n / 4,
        "{per_kind:?}"
    );
    assert!(per_kind.get(&EventKind::SupplierRestock).copied().unwrap_or(0) > 0, "{per_kind:?}");
    // Skewed popularity: the best-seller moves far more than the median product.
    let mut volumes: Vec<u32> = products.values().copied().collect();
    volumes.sort_unstable();
    assert!(volumes[volumes.len() - 1] > 10 * volumes[volumes.len() / 2], "{volumes:?}");
}

fn produce_lines(env: &TestEnv, seed: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec![
        "produce",
        "--count",
        "2000",
        "--seed",
        seed,
        "--start",
        "2026-11-20",
        "--days",
        "2",
        "--output",
        "-",
    ];
    args.extend_from_slice(extra);
    let out = env.stockflow(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test]
async fn same_seed_gives_the_same_bytes() {
    let env = TestEnv::new("seeded").await;
    env.ok(&["migrate"]);
    env.ok(&["seed", "--products", "50", "--suppliers", "5"]);
    let a = produce_lines(&env, "42", &["--duplicate-ratio", "0.05", "--invalid-ratio", "0.05"]);
    let b = produce_lines(&env, "42", &["--duplicate-ratio", "0.05", "--invalid-ratio", "0.05"]);
    let c = produce_lines(&env, "43", &["--duplicate-ratio", "0.05", "--invalid-ratio", "0.05"]);
    assert_eq!(a.len(), b.len());
    assert!(a == b, "same seed, same bytes");
    assert!(a != c, "another seed, another stream");
    // occurred_at stays inside the window and has a day/night rhythm.
    let text = String::from_utf8(a).unwrap();
    let mut hours = [0u32; 24];
    for line in text.lines() {
        let value = line.splitn(3, '\t').nth(2).unwrap();
        if let Ok(v) = serde_json::from_str::<Value>(value)
            && let Some(ts) = v["occurred_at"].as_str()
        {
            assert!(ts.starts_with("2026-11-20") || ts.starts_with("2026-11-21"), "{ts}");
            hours[ts[11..13].parse::<usize>().unwrap()] += 1;
        }
    }
    assert!(hours[19] > 4 * hours[3], "{hours:?}");
}

#[tokio::test]
async fn injected_faults_cover_every_rejection_code() {
    let env = TestEnv::new("faults").await;
    env.ok(&["migrate"]);
    env.ok(&["seed", "--products", "50", "--suppliers", "5"]);
    let lines = produce_lines(&env, "5", &["--invalid-ratio", "0.3", "--duplicate-ratio", "0.1"]);
    let text = String::from_utf8(lines).unwrap();
    let mut codes = BTreeMap::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut exact_dups = 0;
    for line in text.lines() {
        let mut parts = line.splitn(3, '\t');
        let topic = parts.next().unwrap();
        let _key = parts.next().unwrap();
        let value = parts.next().unwrap();
        let kind = EventKind::ALL.into_iter().find(|k| topic.ends_with(k.topic())).unwrap();
        match dataflow::validate::decode(kind, Some(value.as_bytes())) {
            Err(r) => *codes.entry(r.code).or_insert(0) += 1,
            Ok(e) => {
                if !e.product_id.starts_with("SKU-0") {
                    *codes.entry(ErrorCode::UnknownProduct).or_insert(0) += 1;
                } else if e.supplier_id().is_some_and(|s| s == "SUP-UNKNOWN") {
                    *codes.entry(ErrorCode::UnknownSupplier).or_insert(0) += 1;
                }
                match seen.get(&e.event_id) {
                    Some(prev) if prev == value => exact_dups += 1,
                    Some(_) => *codes.entry(ErrorCode::ConflictingDuplicate).or_insert(0) += 1,
                    None => {
                        seen.insert(e.event_id.clone(), value.to_string());
                    }
                }
            }
        }
    }
    for code in ErrorCode::ALL {
        assert!(codes.get(&code).copied().unwrap_or(0) > 0, "no {code} injected: {codes:?}");
    }
    assert!(exact_dups > 50, "{exact_dups}");
}

fn assert_one_line_failure(args: &[&str], envs: &[(&str, &str)], needle: &str) {
    let out =
        Command::new(BIN).args(args).envs(envs.iter().copied()).env("RUST_LOG", "off").output().unwrap();
    common::assert_one_line_failure(&out, needle);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("stockflow: error: "), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_input_gives_one_line_errors() {
    assert_one_line_failure(&["--bogus"], &[], "--bogus");
    assert_one_line_failure(&["seed", "--products", "many"], &[], "many");
    assert_one_line_failure(
        &["produce", "--invalid-ratio", "2"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")],
        "--invalid-ratio",
    );
    assert_one_line_failure(
        &["migrate"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")],
        "cannot connect to PostgreSQL",
    );
    assert_one_line_failure(&["migrate", "--database-url", "not a url"], &[], "PostgreSQL");
    assert_one_line_failure(&["topics"], &[("KAFKA_BROKERS", "127.0.0.1:1")], "cannot reach Kafka");
    // A long-running processor too: an unreachable database at start is a
    // wrong setting, not an outage to wait for.
    assert_one_line_failure(
        &["run", "--exit-when-idle", "1"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")],
        "cannot connect to PostgreSQL",
    );
    assert_one_line_failure(
        &["produce", "--count", "1"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")],
        "cannot connect",
    );
}
