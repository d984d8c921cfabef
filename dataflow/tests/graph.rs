//! The dataflow in memory: stateful rules, stock and sales deltas, rechecks
//! of reference data, and 1 vs 2 workers.

use dataflow::harness;
use dataflow::records::{EpochBatch, Outcome, RawMessage};
use dataflow::{Catalog, ErrorCode, EventKind, Product, SaleSource, Supplier};
use rust_decimal::Decimal;

fn catalog() -> Catalog {
    let product = |id: &str, level: i32, stock: i64| Product {
        product_id: id.into(),
        name: id.into(),
        category: "Test".into(),
        price: Decimal::new(250, 2),
        reorder_level: level,
        supplier_id: None,
        quantity_on_hand: stock,
    };
    Catalog {
        products: vec![product("P1", 2, 5), product("P2", 0, 100), product("P3", 10, 0)],
        suppliers: vec![Supplier { supplier_id: "S1".into(), name: "S".into(), contact: String::new() }],
    }
}

fn sale(id: &str, product: &str, qty: u32, day: u32) -> String {
    harness::sale_json(SaleSource::Online, id, product, qty, &format!("2026-11-{day:02}T10:00:00Z"))
}

fn restock(id: &str, product: &str, qty: u32, supplier: &str) -> String {
    harness::restock_json(id, product, qty, supplier, "2026-11-20T10:00:00Z")
}

fn msg(kind: EventKind, offset: i64, value: &str) -> RawMessage {
    harness::message(kind, offset, value)
}

fn codes(b: &EpochBatch) -> Vec<Option<ErrorCode>> {
    b.outcomes
        .iter()
        .map(|o| match o {
            Outcome::Applied { .. } => None,
            Outcome::Rejected { rejection, .. } => Some(rejection.code),
            Outcome::Duplicate { .. } => Some(ErrorCode::MalformedJson).filter(|_| false),
        })
        .collect()
}

#[test]
fn stateful_rules_stock_sales_and_rechecks() {
    let o = EventKind::OnlineOrder;
    let r = EventKind::SupplierRestock;
    let epochs = vec![
        vec![
            msg(o, 0, &sale("e1", "P1", 3, 20)),
            msg(o, 1, &sale("e2", "NOPE", 1, 20)),
            msg(r, 0, &restock("e3", "P3", 20, "S9")),
        ],
        vec![
            msg(o, 2, &sale("e4", "P1", 2, 20)),
            msg(o, 3, &sale("e1", "P1", 3, 20)),
            msg(o, 4, &sale("e1", "P1", 4, 20)),
        ],
        vec![msg(r, 1, &restock("e5", "P1", 10, "S1")), msg(o, 5, &sale("e6", "P2", 1, 3))],
    ];
    let batches = harness::run(1, catalog(), epochs);
    assert_eq!(batches.len(), 4);
    // Epoch 0 holds the reference data: every product is to be checked
    // for a reorder-level crossing (the commit decides, from the database).
    assert!(batches[0].outcomes.is_empty());
    assert_eq!(batches[0].rechecks, vec!["P1".to_string(), "P2".to_string(), "P3".to_string()]);
    let b1 = &batches[1];
    assert_eq!(codes(b1), vec![None, Some(ErrorCode::UnknownProduct), Some(ErrorCode::UnknownSupplier)]);
    assert_eq!(b1.stock_deltas, vec![("P1".to_string(), -3)]);
    assert!(b1.rechecks.is_empty(), "no reference data changed");
    assert_eq!(b1.sales.len(), 1);
    assert_eq!(
        (b1.sales[0].sums.units, b1.sales[0].sums.revenue_cents, b1.sales[0].sums.orders),
        (3, 750, 1)
    );

    let b2 = &batches[2];
    // e4 applied (stock to exactly 0), e1 again = duplicate, e1 with other content = conflict.
    assert!(matches!(b2.outcomes[0], Outcome::Applied { .. }));
    assert!(matches!(b2.outcomes[1], Outcome::Duplicate { .. }));
    assert!(
        matches!(&b2.outcomes[2], Outcome::Rejected { rejection, .. } if rejection.code == ErrorCode::ConflictingDuplicate)
    );
    assert_eq!(b2.stock_deltas, vec![("P1".to_string(), -2)]);

    let b3 = &batches[3];
    assert_eq!(b3.stock_deltas, vec![("P1".to_string(), 10), ("P2".to_string(), -1)]);
    // A late sale lands on its own hour.
    assert_eq!(b3.sales[0].key.0.to_rfc3339(), "2026-11-03T10:00:00+00:00");
}

/// Everything a batch says, in a form that does not depend on the worker count.
fn summary(batches: &[EpochBatch]) -> Vec<String> {
    batches
        .iter()
        .map(|b| {
            let outcomes: Vec<String> = b
                .outcomes
                .iter()
                .map(|o| match o {
                    Outcome::Applied { msg, event, .. } => format!("A{}:{}", msg.offset, event.event_id),
                    Outcome::Rejected { msg, rejection } => format!("R{}:{}", msg.offset, rejection.code),
                    Outcome::Duplicate { msg } => format!("D{}", msg.offset),
                })
                .collect();
            format!("{} {:?} {:?} {:?} {:?}", b.epoch, outcomes, b.stock_deltas, b.sales, b.rechecks)
        })
        .collect()
}

#[test]
fn two_workers_agree_with_one() {
    let mut epochs = Vec::new();
    let mut offset = 0;
    for e in 0..20 {
        let mut v = Vec::new();
        for i in 0..50 {
            let id = format!("e{}", (e * 50 + i) % 700); // many duplicates
            let product = ["P1", "P2", "P3", "PX"][i % 4];
            let qty = if i % 7 == 0 { 2 } else { 1 };
            let value = if i % 11 == 0 {
                restock(&id, product, 5, "S1")
            } else {
                sale(&id, product, qty, 1 + (i % 5) as u32)
            };
            let kind = if i % 11 == 0 { EventKind::SupplierRestock } else { EventKind::OnlineOrder };
            v.push(msg(kind, offset, &value));
            offset += 1;
        }
        epochs.push(v);
    }
    let one = summary(&harness::run(1, catalog(), epochs.clone()));
    let two = summary(&harness::run(2, catalog(), epochs));
    assert_eq!(one, two);
}
