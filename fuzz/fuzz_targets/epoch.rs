//! Whole epochs through the dataflow in memory (decode, Validate with the
//! catalog as reference data, dedup, stock and sales aggregates), on one or
//! two workers. Input: lines, each one message (its first byte picks the
//! topic, the rest is the value); a line that is just `--` starts the next
//! epoch. Checked: no panic, and every message gets exactly one outcome
//! (applied, rejected or a duplicate).
#![no_main]

use dataflow::harness;
use dataflow::records::RawMessage;
use dataflow::{Catalog, EventKind, Product, Supplier};
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;

fn catalog() -> Catalog {
    let product = |id: &str, level: i32, stock: i64| Product {
        product_id: id.into(),
        name: id.into(),
        category: "Fuzz".into(),
        price: Decimal::new(250, 2),
        reorder_level: level,
        supplier_id: None,
        quantity_on_hand: stock,
    };
    Catalog {
        products: vec![product("SKU-000001", 5, 10), product("SKU-000002", 0, 0), product("P1", 2, 5)],
        suppliers: vec![Supplier {
            supplier_id: "SUP-0001".into(),
            name: "S".into(),
            contact: String::new(),
        }],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else { return };
    let workers = 1 + usize::from(shape & 1);
    let mut epochs: Vec<Vec<RawMessage>> = vec![Vec::new()];
    let mut offset = 0i64;
    for line in rest.split(|b| *b == b'\n') {
        if line == b"--" {
            epochs.push(Vec::new());
            continue;
        }
        let Some((&topic, value)) = line.split_first() else { continue };
        let kind = EventKind::ALL[usize::from(topic) % EventKind::ALL.len()];
        offset += 1;
        let msg = RawMessage {
            kind,
            partition: 0,
            offset,
            timestamp_ms: Some(1_764_000_000_000),
            key: None,
            value: Some(value.to_vec()),
        };
        if let Some(epoch) = epochs.last_mut() {
            epoch.push(msg);
        }
    }
    let sent: usize = epochs.iter().map(Vec::len).sum();
    if sent > 2000 || epochs.len() > 50 {
        return;
    }
    let batches = harness::run(workers, catalog(), epochs);
    let outcomes: usize = batches.iter().map(|b| b.outcomes.len()).sum();
    assert_eq!(outcomes, sent, "every message has exactly one outcome");
});
