//! Property test: the dataflow against a deliberately naive model written
//! here, for any input (valid events, exact duplicates, conflicting
//! duplicates, invalid quantities, unknown products and suppliers), any
//! split over epochs, 1 to 4 workers, and any interleaving of reference
//! changes (a product or the supplier added or removed in any epoch).
//! Compared: every message's outcome, each product's stock change, and
//! every hourly sales row.

use std::collections::{BTreeMap, HashMap};

use dataflow::harness;
use dataflow::records::{Outcome, RawMessage, RefUpdate};
use dataflow::{Catalog, EventKind, Product, SaleSource, Supplier};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// The products of the catalog at the start; P4 is not in it, but
/// reference changes may add it (and remove the others).
const PRODUCTS: [&str; 3] = ["P1", "P2", "P3"];

fn catalog() -> Catalog {
    let product = |id: &str| Product {
        product_id: id.into(),
        name: id.into(),
        category: "Test".into(),
        price: Decimal::new(100, 2),
        reorder_level: 3,
        supplier_id: None,
        quantity_on_hand: 10,
    };
    Catalog {
        products: PRODUCTS.iter().map(|p| product(p)).collect(),
        suppliers: vec![Supplier { supplier_id: "S1".into(), name: "S".into(), contact: String::new() }],
    }
}

/// One generated input event (before it becomes JSON).
#[derive(Clone, Debug)]
struct Gen {
    kind: EventKind,
    id: u8,
    product: &'static str,
    quantity: u32,
    /// Hour of 2026-11-20 the event happened in.
    hour: u32,
    cents: u32,
    supplier: &'static str,
}

impl Gen {
    fn json(&self) -> String {
        let (id, at, p, q) =
            (self.id, format!("2026-11-20T{:02}:15:00Z", self.hour), self.product, self.quantity);
        let price = format!("{}.{:02}", self.cents / 100, self.cents % 100);
        // The kind's own fields by their contract names; the supplier (the
        // `unknown_supplier` rule's field) is the generated one.
        let f = self.kind.fields();
        let party = if f.party == "supplier_id" { self.supplier } else { "c" };
        format!(
            r#"{{"event_id":"e{id}","event_type":"{}","occurred_at":"{at}","product_id":"{p}","quantity":{q},"{}":"r{id}","{}":"{party}","{}":{price}}}"#,
            self.kind.event_type(),
            f.reference,
            f.party,
            f.money
        )
    }
}

fn gen_event() -> impl Strategy<Value = Gen> {
    (
        proptest::sample::select(EventKind::ALL.to_vec()),
        0u8..12, // few ids: many duplicates
        prop_oneof![4 => Just("P1"), 4 => Just("P2"), 4 => Just("P3"), 2 => Just("P4"), 1 => Just("NOPE")],
        prop_oneof![9 => 1u32..6, 1 => Just(0u32)], // 0: invalid_quantity
        0u32..3,
        0u32..1000,
        prop_oneof![5 => Just("S1"), 1 => Just("S9")], // S9: unknown_supplier
    )
        .prop_map(|(kind, id, product, quantity, hour, cents, supplier)| Gen {
            kind,
            id,
            product,
            quantity,
            hour,
            cents,
            supplier,
        })
}

/// One reference change: a product or supplier added or removed.
#[derive(Clone, Debug)]
enum Change {
    Product(&'static str, bool),
    Supplier(bool),
}

impl Change {
    fn update(&self) -> RefUpdate {
        match self {
            Change::Product(p, true) => {
                RefUpdate::ProductUpsert { product_id: (*p).into(), reorder_level: 3 }
            }
            Change::Product(p, false) => {
                RefUpdate::ProductRemoved { product_id: (*p).into(), reorder_level: 3 }
            }
            Change::Supplier(true) => RefUpdate::SupplierAdded("S1".into()),
            Change::Supplier(false) => RefUpdate::SupplierRemoved("S1".into()),
        }
    }
}

fn gen_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (prop_oneof![Just("P1"), Just("P3"), Just("P4")], any::<bool>())
            .prop_map(|(p, on)| Change::Product(p, on)),
        any::<bool>().prop_map(Change::Supplier),
    ]
}

/// What the model says of the whole input.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tables {
    /// Offset -> "applied", "duplicate" or the rejection code.
    outcomes: BTreeMap<i64, String>,
    stock: BTreeMap<String, i64>,
    /// (hour, product, online?) -> (units, revenue cents, orders).
    sales: BTreeMap<(u32, String, bool), (i64, i128, i64)>,
}

/// The naive model: epoch by epoch, each epoch in position order (topic,
/// partition, offset), the contract's rules in their order, then dedup by
/// event id against what was applied before.
fn model(epochs: &[Vec<(i64, Gen)>], changes: &[Vec<Change>]) -> Tables {
    let mut t = Tables::default();
    let mut applied: HashMap<u8, String> = HashMap::new();
    let mut products: Vec<&str> = PRODUCTS.to_vec();
    let mut supplier = true;
    for (i, epoch) in epochs.iter().enumerate() {
        // An epoch's reference changes apply to its own messages.
        for c in changes.get(i).into_iter().flatten() {
            match c {
                Change::Product(p, true) if !products.contains(p) => products.push(p),
                Change::Product(p, false) => products.retain(|q| q != p),
                Change::Supplier(on) => supplier = *on,
                Change::Product(..) => {}
            }
        }
        let mut order: Vec<&(i64, Gen)> = epoch.iter().collect();
        order.sort_by_key(|(offset, g)| (g.kind, *offset));
        for (offset, g) in order {
            let code = if g.quantity == 0 {
                Some("invalid_quantity")
            } else if !products.contains(&g.product) {
                Some("unknown_product")
            } else if g.kind.fields().party == "supplier_id" && !(supplier && g.supplier == "S1") {
                Some("unknown_supplier")
            } else {
                match applied.get(&g.id) {
                    Some(same) if *same == g.json() => {
                        t.outcomes.insert(*offset, "duplicate".into());
                        continue;
                    }
                    Some(_) => Some("conflicting_duplicate"),
                    None => None,
                }
            };
            if let Some(code) = code {
                t.outcomes.insert(*offset, code.into());
                continue;
            }
            applied.insert(g.id, g.json());
            t.outcomes.insert(*offset, "applied".into());
            let q = i64::from(g.quantity);
            match g.kind.sale_source() {
                Some(source) => {
                    *t.stock.entry(g.product.into()).or_insert(0) -= q;
                    let row = t
                        .sales
                        .entry((g.hour, g.product.into(), source == SaleSource::Online))
                        .or_insert((0, 0, 0));
                    row.0 += q;
                    row.1 += i128::from(g.cents) * i128::from(g.quantity);
                    row.2 += 1;
                }
                None => *t.stock.entry(g.product.into()).or_insert(0) += q,
            }
        }
    }
    t
}

/// The same tables from the dataflow's batches.
fn dataflow_tables(workers: usize, epochs: &[Vec<(i64, Gen)>], changes: &[Vec<Change>]) -> Tables {
    let input: Vec<Vec<RawMessage>> = epochs
        .iter()
        .map(|e| {
            e.iter()
                .map(|(offset, g)| RawMessage {
                    kind: g.kind,
                    partition: 0,
                    offset: *offset,
                    timestamp_ms: None,
                    key: None,
                    value: Some(g.json().into_bytes()),
                })
                .collect()
        })
        .collect();
    let mut t = Tables::default();
    let reference = changes.iter().map(|cs| cs.iter().map(Change::update).collect()).collect();
    for b in harness::run_with_reference(workers, catalog(), input, reference) {
        for o in &b.outcomes {
            let (offset, what) = match o {
                Outcome::Applied { msg, .. } => (msg.offset, "applied".to_string()),
                Outcome::Duplicate { msg } => (msg.offset, "duplicate".to_string()),
                Outcome::Rejected { msg, rejection } => (msg.offset, rejection.code.as_str().to_string()),
            };
            assert!(t.outcomes.insert(offset, what).is_none(), "message {offset} has two outcomes");
        }
        for (p, d) in &b.stock_deltas {
            *t.stock.entry(p.clone()).or_insert(0) += d;
        }
        for s in &b.sales {
            let hour = s.key.0.format("%H").to_string().parse().unwrap_or(99);
            let row =
                t.sales.entry((hour, s.key.1.clone(), s.key.2 == SaleSource::Online)).or_insert((0, 0, 0));
            row.0 += s.sums.units;
            row.1 += s.sums.revenue_cents;
            row.2 += s.sums.orders;
        }
    }
    // Net-zero entries say nothing about the tables.
    t.stock.retain(|_, d| *d != 0);
    t.sales.retain(|_, r| *r != (0, 0, 0));
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn dataflow_matches_the_naive_model(
        events in prop::collection::vec(gen_event(), 1..80),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        workers in 1usize..=4,
        changes in prop::collection::vec(prop::collection::vec(gen_change(), 0..3), 0..7),
    ) {
        // Offsets in input order; the epochs are consecutive runs of it.
        let numbered: Vec<(i64, Gen)> = events.into_iter().enumerate().map(|(i, g)| (i as i64, g)).collect();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(numbered.len() + 1)).collect();
        bounds.extend([0, numbered.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let epochs: Vec<Vec<(i64, Gen)>> = bounds.windows(2).map(|w| numbered[w[0]..w[1]].to_vec()).collect();
        let mut want = model(&epochs, &changes);
        want.stock.retain(|_, d| *d != 0);
        want.sales.retain(|_, r| *r != (0, 0, 0));
        let got = dataflow_tables(workers, &epochs, &changes);
        prop_assert_eq!(got, want);
    }
}
