//! The independent reference the fault tests check a processor's work
//! against: a second database that processes the same topics without any
//! fault, and stock and daily sales recomputed in the test from the raw
//! JSON of the applied events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use dataflow::EventKind;
use serde_json::Value;

use super::{Record, TestEnv, consume};

/// `product_id -> quantity_on_hand` as seeded, before any event.
pub async fn opening_stock(env: &TestEnv) -> HashMap<String, i64> {
    env.rows("SELECT product_id, quantity_on_hand FROM inventory")
        .await
        .iter()
        .map(|r| {
            let (p, q) = r.split_once('|').unwrap();
            (p.to_string(), q.parse().unwrap())
        })
        .collect()
}

/// Cents from a JSON number literal with at most 2 decimals ("4.5" -> 450).
fn cents(v: &Value) -> i64 {
    let s = v.to_string();
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let frac = format!("{frac:0<2}");
    int.parse::<i64>().unwrap() * 100 + frac[..2].parse::<i64>().unwrap()
}

/// What [`assert_exactly_once`] counted.
#[derive(Debug)]
pub struct Checked {
    pub messages: usize,
    pub applied: usize,
    pub rejected: usize,
    pub updates: usize,
    pub dlq: usize,
    pub alerts: usize,
}

/// Asserts that `env`'s database holds exactly what one fault-free run over
/// the same input topics gives (`products` seeded products, `opening`
/// stock), that every input message was handled once, and that the output
/// topics, read `read_committed`, carry exactly one `inventory_updates`
/// message per applied event (per product in commit order), one `dlq`
/// record per rejection (with the input's key) and one `stock_alerts`
/// message per alert row. Reads the outputs before the reference run,
/// which writes its own to the same topics.
pub async fn assert_exactly_once(env: &TestEnv, products: u32, opening: &HashMap<String, i64>) -> Checked {
    let quiet = Duration::from_secs(3);
    let updates = env.read_until_quiet(&["inventory_updates"], quiet);
    let dlq = env.read_until_quiet(&["dlq"], quiet);
    let alerts = env.read_until_quiet(&["stock_alerts"], quiet);
    let inputs: Vec<Record> = {
        let topics: Vec<String> = dataflow::EventKind::ALL.iter().map(|k| env.topic(k.topic())).collect();
        consume(&env.brokers, &topics, usize::MAX, Duration::from_secs(120), Some(quiet))
    };
    let messages: BTreeMap<(String, i32, i64), Record> =
        inputs.into_iter().map(|r| ((r.topic.clone(), r.partition, r.offset), r)).collect();

    // Reference: a second database processes the same topics without faults.
    let mut clean = TestEnv::new("clean").await;
    clean.prefix = env.prefix.clone();
    clean.brokers = env.brokers.clone();
    clean.ok(&["migrate"]);
    clean.ok(&["seed", "--products", &products.to_string(), "--suppliers", "10"]);
    clean.run_to_idle(&[]);

    // Every message: one log row, the same rows as the clean run.
    let key = "SELECT topic, kafka_partition, kafka_offset, status, coalesce(error_code, '') FROM events_log ORDER BY 1, 2, 3";
    let log = env.rows(key).await;
    assert_eq!(log, clean.rows(key).await, "events_log rows differ from a run without faults");
    assert_eq!(
        env.count("SELECT count(*) FROM (SELECT 1 FROM events_log GROUP BY topic, kafka_partition, kafka_offset HAVING count(*) > 1) d").await,
        0
    );
    assert_eq!(env.count("SELECT sum(next_offset)::bigint FROM source_offsets").await, messages.len() as i64);

    // Independent reference: stock and daily sales from the raw JSON of the applied events.
    let applied: Vec<(String, String, i32, i64)> = env
        .rows(
            "SELECT event_id, topic, kafka_partition, kafka_offset FROM events_log WHERE status = 'applied'",
        )
        .await
        .iter()
        .map(|r| {
            let v: Vec<&str> = r.split('|').collect();
            (v[0].to_string(), v[1].to_string(), v[2].parse().unwrap(), v[3].parse().unwrap())
        })
        .collect();
    let distinct_ids: BTreeSet<&String> = applied.iter().map(|a| &a.0).collect();
    assert_eq!(distinct_ids.len(), applied.len(), "no event id applied twice");
    // Messages without a log row are plain duplicates (contract: not
    // logged, not in dlq): their event id was applied from another message.
    let logged: BTreeSet<(String, i32, i64)> = env
        .rows("SELECT topic, kafka_partition, kafka_offset FROM events_log")
        .await
        .iter()
        .map(|r| {
            let v: Vec<&str> = r.split('|').collect();
            (v[0].to_string(), v[1].parse().unwrap(), v[2].parse().unwrap())
        })
        .collect();
    assert!(logged.iter().all(|k| messages.contains_key(k)), "every log row is an input message");
    for (k, r) in messages.iter().filter(|(k, _)| !logged.contains(*k)) {
        let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or_default()).unwrap_or(Value::Null);
        let id = v["event_id"].as_str().unwrap_or_default().to_string();
        assert!(
            distinct_ids.contains(&id),
            "message {k:?} has no log row and is not a duplicate of an applied event"
        );
    }
    let mut stock = opening.clone();
    let mut daily: BTreeMap<(String, String, &str), (i64, i64, i64)> = BTreeMap::new();
    for (_, topic, partition, offset) in &applied {
        let r = &messages[&(topic.clone(), *partition, *offset)];
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let product = v["product_id"].as_str().unwrap().to_string();
        let q = v["quantity"].as_i64().unwrap();
        // The effect of each kind as the model declares it (pinned to the
        // contract's words by `dataflow::model`'s unit tests); what this
        // checks is that each applied event counts once.
        let kind =
            EventKind::from_event_type(v["event_type"].as_str().unwrap()).expect("a contract event type");
        let (sign, source) = (kind.stock_sign(), kind.sale_source().map(|s| s.as_str()));
        *stock.entry(product.clone()).or_insert(0) += sign * q;
        if let Some(source) = source {
            let day = v["occurred_at"].as_str().unwrap()[..10].to_string();
            let e = daily.entry((day, product, source)).or_default();
            e.0 += q;
            e.1 += q * cents(&v["unit_price"]);
            e.2 += 1;
        }
    }
    let expected_stock: BTreeSet<String> = stock.iter().map(|(p, q)| format!("{p}|{q}")).collect();
    let actual_stock: BTreeSet<String> =
        env.rows("SELECT product_id, quantity_on_hand FROM inventory").await.into_iter().collect();
    assert_eq!(actual_stock, expected_stock);
    let expected_daily: Vec<String> = daily
        .iter()
        .map(|((d, p, s), (u, c, o))| format!("{d}|{p}|{s}|{u}|{}.{:02}|{o}", c / 100, c % 100))
        .collect();
    assert_eq!(
        env.rows(
            "SELECT day, product_id, source, units, revenue, order_count FROM sales_daily ORDER BY 1, 2, 3"
        )
        .await,
        expected_daily
    );
    let sales = daily.values().map(|v| v.2).sum::<i64>();
    assert_eq!(env.count("SELECT count(*) FROM orders").await, sales);

    // Outputs (contract 5.2), read with read_committed: exactly one message
    // per applied event, per rejected message and per alert; per product in
    // commit order, each update carrying the level its commit left.
    let by_position = |mut v: Vec<Record>| {
        v.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
        v
    };
    let updates = by_position(updates);
    let mut updated: BTreeSet<String> = BTreeSet::new();
    let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &updates {
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let id = v["event_id"].as_str().unwrap().to_string();
        let product = v["product_id"].as_str().unwrap().to_string();
        assert_eq!(r.key.as_deref(), Some(product.as_bytes()), "inventory_updates is keyed by product_id");
        assert!(updated.insert(id.clone()), "inventory_updates carries {id} more than once");
        sent.entry(product).or_default().push(format!("{id}|{}", v["quantity_on_hand"]));
    }
    let ids: BTreeSet<String> = distinct_ids.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = ids.difference(&updated).take(5).collect();
    assert!(missing.is_empty(), "applied events without an inventory_updates message: {missing:?}");
    let extra: Vec<_> = updated.difference(&ids).take(5).collect();
    assert!(extra.is_empty(), "inventory_updates for events never applied: {extra:?}");
    let mut committed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in env
        .rows(
            "SELECT product_id, event_id, quantity_after FROM events_log WHERE status = 'applied' \
             ORDER BY epoch, log_id",
        )
        .await
    {
        let v: Vec<&str> = r.split('|').collect();
        committed.entry(v[0].to_string()).or_default().push(format!("{}|{}", v[1], v[2]));
    }
    assert!(
        sent == committed,
        "per product, inventory_updates are not in commit order with the committed levels"
    );

    let rejected = env.count("SELECT count(*) FROM events_log WHERE status = 'rejected'").await as usize;
    let mut dlq_positions: BTreeSet<(String, i32, i64)> = BTreeSet::new();
    for r in &dlq {
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let position = (
            env.topic(v["source_topic"].as_str().unwrap()),
            v["partition"].as_i64().unwrap() as i32,
            v["offset"].as_i64().unwrap(),
        );
        let input = &messages[&position];
        let key = input.key.as_deref().filter(|k| !k.is_empty());
        assert_eq!(r.key.as_deref(), key, "the dlq record of {position:?} carries the input message's key");
        assert!(dlq_positions.insert(position.clone()), "dlq carries {position:?} more than once");
    }
    assert_eq!(dlq_positions.len(), rejected, "one dlq record per rejected message");

    let mut alert_ids = BTreeSet::new();
    let mut alert_rows = Vec::new();
    for r in by_position(alerts) {
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let id = v["alert_id"].as_str().unwrap().to_string();
        assert!(alert_ids.insert(id.clone()), "stock_alerts carries {id} more than once");
        alert_rows.push(format!(
            "{id}|{}|{}|{}|{}",
            v["product_id"].as_str().unwrap(),
            v["kind"].as_str().unwrap(),
            v["quantity_on_hand"],
            v["reorder_level"]
        ));
    }
    alert_rows.sort();
    let mut table = env
        .rows("SELECT alert_id, product_id, kind, quantity_on_hand, reorder_level FROM stock_alerts")
        .await;
    table.sort();
    assert_eq!(alert_rows, table, "one stock_alerts message per stock_alerts row");
    Checked {
        messages: messages.len(),
        applied: applied.len(),
        rejected,
        updates: updates.len(),
        dlq: dlq.len(),
        alerts: table.len(),
    }
}
