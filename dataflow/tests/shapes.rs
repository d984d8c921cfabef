//! Sizes and shapes a hostile or broken producer can send: ten thousand
//! unknown fields, nesting past serde_json's recursion limit (no crash at
//! any depth), lone UTF-16 surrogates, and a million distinct bad event
//! ids, which the dedup memory must not keep (only applied ids are
//! remembered). A value at the broker's maximum size is sent through the
//! real broker in `tests/processor.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dataflow::graph::GraphStats;
use dataflow::harness;
use dataflow::records::{Outcome, RawMessage};
use dataflow::validate::decode;
use dataflow::{Catalog, ErrorCode, EventKind, Product, Supplier};
use rust_decimal::Decimal;

fn order(id: &str, product: &str, extra: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"online_order","occurred_at":"2026-11-20T10:00:00Z","product_id":"{product}","quantity":1,"order_id":"o","customer_id":"c","unit_price":2.50{extra}}}"#
    )
}

fn code(value: &str) -> Option<ErrorCode> {
    decode(EventKind::OnlineOrder, Some(value.as_bytes())).err().map(|r| r.code)
}

#[test]
fn ten_thousand_unknown_fields_are_ignored() {
    let extra: String = (0..10_000).map(|i| format!(r#","unknown_{i}":{{"n":[{i},"x"]}}"#)).collect();
    let value = order("e1", "P1", &extra);
    assert!(value.len() > 250_000);
    let event = decode(EventKind::OnlineOrder, Some(value.as_bytes())).expect("unknown fields are ignored");
    assert_eq!(event.event_id, "e1");
}

#[test]
fn nesting_never_crashes() {
    // In an unknown field, skipped without recursion: any depth is fine.
    for depth in [129, 10_000, 1_000_000] {
        let nested = format!(r#","deep":{}1{}"#, "[".repeat(depth), "]".repeat(depth));
        assert_eq!(code(&order("e1", "P1", &nested)), None, "depth {depth} in an unknown field");
    }
    // In a field the contract names: the wrong type.
    let deep = format!(r#"{}"x"{}"#, "[".repeat(200), "]".repeat(200));
    let known = order("e1", "P1", "").replace(r#""customer_id":"c""#, &format!(r#""customer_id":{deep}"#));
    assert_eq!(code(&known), Some(ErrorCode::SchemaViolation));
    // As the whole value, past serde_json's recursion limit: malformed.
    assert_eq!(code(&"[".repeat(100_000)), Some(ErrorCode::MalformedJson));
    assert_eq!(code(&format!("{}1{}", "[".repeat(1000), "]".repeat(1000))), Some(ErrorCode::MalformedJson));
}

#[test]
fn lone_surrogates_in_named_fields_are_rejected() {
    for bad in [r#""\ud800""#, r#""\udfff""#, r#""a\ud83dz""#] {
        let in_id = order("e1", "P1", "").replace(r#""event_id":"e1""#, &format!(r#""event_id":{bad}"#));
        assert_eq!(code(&in_id), Some(ErrorCode::SchemaViolation), "{bad} as the event id");
        let in_customer =
            order("e1", "P1", "").replace(r#""customer_id":"c""#, &format!(r#""customer_id":{bad}"#));
        assert_eq!(code(&in_customer), Some(ErrorCode::SchemaViolation), "{bad} as the customer id");
        // In an unknown field it is never read as a string: ignored.
        assert_eq!(code(&order("e1", "P1", &format!(r#","note":{bad}"#))), None, "{bad} in an unknown field");
    }
    // A proper pair is one character.
    let event = decode(EventKind::OnlineOrder, Some(order(r"e\ud83d\ude00", "P1", "").as_bytes())).unwrap();
    assert_eq!(event.event_id, "e\u{1F600}");
}

#[test]
fn distinct_bad_event_ids_are_not_remembered() {
    let catalog = Catalog {
        products: vec![Product {
            product_id: "P1".into(),
            name: "P1".into(),
            category: "Test".into(),
            price: Decimal::new(250, 2),
            reorder_level: 0,
            supplier_id: None,
            quantity_on_hand: 0,
        }],
        suppliers: vec![Supplier { supplier_id: "S1".into(), name: "S".into(), contact: String::new() }],
    };
    // A million messages with distinct ids, every one rejected (unknown
    // product), then 10 valid ones.
    let bad = 1_000_000;
    let mut epochs: Vec<Vec<RawMessage>> = Vec::new();
    let mut offset = 0;
    for chunk in 0..20 {
        let mut v = Vec::with_capacity(bad / 20);
        for i in 0..bad / 20 {
            let id = format!("bad-{chunk}-{i}");
            v.push(RawMessage {
                kind: EventKind::OnlineOrder,
                partition: 0,
                offset,
                timestamp_ms: None,
                key: None,
                value: Some(order(&id, "NOPE", "").into_bytes()),
            });
            offset += 1;
        }
        epochs.push(v);
    }
    epochs.push(
        (0..10)
            .map(|i| RawMessage {
                kind: EventKind::OnlineOrder,
                partition: 0,
                offset: offset + i,
                timestamp_ms: None,
                key: None,
                value: Some(order(&format!("good-{i}"), "P1", "").into_bytes()),
            })
            .collect(),
    );
    let stats = Arc::new(GraphStats::default());
    let batches = harness::run_with_stats(1, catalog, epochs, stats.clone());
    let rejected =
        batches.iter().flat_map(|b| &b.outcomes).filter(|o| matches!(o, Outcome::Rejected { .. })).count();
    assert_eq!(rejected, bad);
    assert_eq!(stats.dedup_ids.load(Ordering::Relaxed), 10, "only the applied ids are remembered");
}
