//! The simulated upstream systems, one per kind of event ([`upstream`]),
//! and the invalid-message injector.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use dataflow::{ErrorCode, Event, EventDetail, EventKind};
use rand::Rng;
use rust_decimal::Decimal;

use super::{Expect, Market, SimMessage};

/// A system upstream of stockflow that emits events onto one input topic.
pub trait UpstreamSystem: Send {
    /// The kind of event (and so the topic) this system emits.
    fn kind(&self) -> EventKind;
    /// Its relative share of all traffic.
    fn share(&self) -> f64;
    /// Emits the next event at event time `at`, booking its effect in `market`.
    fn next_message(&mut self, market: &mut Market, at: DateTime<Utc>) -> SimMessage;
}

/// The simulated system that writes each input topic (a new kind of event
/// needs one here).
pub(super) fn upstream(kind: EventKind) -> Box<dyn UpstreamSystem> {
    match kind {
        EventKind::OnlineOrder => Box::new(WebShop),
        EventKind::StoreSale => Box::new(StoreTills::new(12)),
        EventKind::SupplierRestock => Box::new(Suppliers),
    }
}

fn message(event: &Event) -> SimMessage {
    SimMessage {
        kind: event.kind(),
        key: Some(event.product_id.clone()),
        value: event.to_json(),
        expect: Expect::Applied,
    }
}

/// Units per order line: mostly 1-3, sometimes a handful, rarely a bulk order.
fn sale_quantity(market: &mut Market) -> u32 {
    let r: f64 = market.rng().random();
    if r < 0.005 {
        market.rng().random_range(20..=200)
    } else if r < 0.12 {
        market.rng().random_range(4..=10)
    } else {
        market.rng().random_range(1..=3)
    }
}

/// Catalog price, with the odd promotion (10-30 % off, to the cent).
fn sale_price(market: &mut Market, product: usize) -> Decimal {
    let price = market.catalog.products[product].price;
    if market.rng().random_bool(0.08) {
        let pct = market.rng().random_range(70..=90);
        (price * Decimal::new(pct, 2)).round_dp(2)
    } else {
        price
    }
}

/// A sale of `quantity` of `product` at `at`, booked in the market; `detail`
/// gets the price. The event id is drawn before the price: the order of
/// the draws is part of what a seed produces.
fn sale(
    market: &mut Market,
    product: usize,
    quantity: u32,
    at: DateTime<Utc>,
    detail: impl FnOnce(Decimal) -> EventDetail,
) -> SimMessage {
    let event_id = market.event_id();
    let unit_price = sale_price(market, product);
    let event = Event {
        event_id,
        occurred_at: at,
        product_id: market.catalog.products[product].product_id.clone(),
        quantity,
        detail: detail(unit_price),
    };
    market.book(product, event.delta());
    message(&event)
}

/// The web shop: many customers, orders of one or more lines.
#[derive(Debug, Default)]
pub struct WebShop;

impl UpstreamSystem for WebShop {
    fn kind(&self) -> EventKind {
        EventKind::OnlineOrder
    }

    fn share(&self) -> f64 {
        0.45
    }

    fn next_message(&mut self, market: &mut Market, at: DateTime<Utc>) -> SimMessage {
        let product = market.popular_product();
        let quantity = sale_quantity(market);
        // Returning customers are common: a skewed pool of 50 000.
        let c: f64 = market.rng().random();
        let customer = (c * c * 50_000.0) as u64 + 1;
        let serial = market.serial();
        sale(market, product, quantity, at, |unit_price| EventDetail::OnlineOrder {
            order_id: format!("WEB-{serial:09}"),
            customer_id: format!("CUST-{customer:06}"),
            unit_price,
        })
    }
}

/// The tills of `stores` physical stores.
#[derive(Debug)]
pub struct StoreTills {
    stores: u32,
}

impl StoreTills {
    /// Tills in `stores` stores (at least one).
    pub fn new(stores: u32) -> Self {
        StoreTills { stores: stores.max(1) }
    }
}

impl UpstreamSystem for StoreTills {
    fn kind(&self) -> EventKind {
        EventKind::StoreSale
    }

    fn share(&self) -> f64 {
        0.47
    }

    fn next_message(&mut self, market: &mut Market, at: DateTime<Utc>) -> SimMessage {
        let product = market.popular_product();
        let quantity = sale_quantity(market);
        let store = market.rng().random_range(1..=self.stores);
        let serial = market.serial();
        sale(market, product, quantity, at, |unit_price| EventDetail::StoreSale {
            order_id: format!("S{store:03}-R{serial:09}"),
            store_id: format!("S{store:03}"),
            unit_price,
        })
    }
}

/// The suppliers: restock what ran low, plus the odd unprompted delivery.
#[derive(Debug, Default)]
pub struct Suppliers;

impl UpstreamSystem for Suppliers {
    fn kind(&self) -> EventKind {
        EventKind::SupplierRestock
    }

    fn share(&self) -> f64 {
        0.08
    }

    fn next_message(&mut self, market: &mut Market, at: DateTime<Utc>) -> SimMessage {
        let product = match market.reorder_queue.pop_front() {
            Some(p) => p,
            // An unprompted delivery tops up the emptiest of a few popular products.
            None => {
                let candidates =
                    [market.popular_product(), market.popular_product(), market.popular_product()];
                let fill = |m: &Market, i: usize| {
                    m.believed_stock[i] as f64 / f64::from(m.catalog.products[i].reorder_level.max(1))
                };
                candidates
                    .into_iter()
                    .fold(candidates[0], |a, b| if fill(market, b) < fill(market, a) { b } else { a })
            }
        };
        let p = market.catalog.products[product].clone();
        let level = i64::from(p.reorder_level.max(1));
        let believed = market.believed_stock[product];
        // Order up to four times the reorder level, in cases of 6 (at least one case).
        let wanted = (4 * level - believed).max(0);
        let quantity = (((wanted + 5) / 6) * 6).clamp(6, 1_000_000) as u32;
        let supplier_id = match (&p.supplier_id, market.catalog.suppliers.len()) {
            (Some(s), _) => s.clone(),
            (None, 0) => "SUP-0001".to_string(),
            (None, n) => {
                let i = market.rng().random_range(0..n);
                market.catalog.suppliers[i].supplier_id.clone()
            }
        };
        // Wholesale cost: 45-70 % of the shop price.
        let pct = market.rng().random_range(45..=70);
        let unit_cost = (p.price * Decimal::new(pct, 2)).round_dp(2);
        let product_id = p.product_id.clone();
        let serial = market.serial();
        let event = Event {
            event_id: market.event_id(),
            occurred_at: at,
            product_id,
            quantity,
            detail: EventDetail::SupplierRestock {
                restock_id: format!("PO-{serial:09}"),
                supplier_id,
                unit_cost,
            },
        };
        market.book(product, event.delta());
        message(&event)
    }
}

/// A message that breaks the rule `code` (and no earlier rule), or `None`
/// when it cannot be made yet (a conflicting duplicate needs an earlier event).
pub(super) fn invalid_message(
    market: &mut Market,
    code: ErrorCode,
    at: DateTime<Utc>,
    recent: &VecDeque<SimMessage>,
) -> Option<SimMessage> {
    let product = market.popular_product();
    let product_id = market.catalog.products[product].product_id.clone();
    let mut event = Event {
        event_id: market.event_id(),
        occurred_at: at,
        product_id: product_id.clone(),
        quantity: 1,
        detail: EventDetail::OnlineOrder {
            order_id: format!("WEB-{:09}", market.serial()),
            customer_id: "CUST-000001".into(),
            unit_price: market.catalog.products[product].price,
        },
    };
    let json = |e: &Event| String::from_utf8(e.to_json()).unwrap_or_default();
    let (kind, value) = match code {
        ErrorCode::MalformedJson => (EventKind::OnlineOrder, b"{\"event_id\": \"truncated".to_vec()),
        ErrorCode::SchemaViolation => (
            EventKind::OnlineOrder,
            json(&event).replace("\"quantity\":1", "\"quantity\":\"1\"").into_bytes(),
        ),
        ErrorCode::WrongTopic => (EventKind::StoreSale, event.to_json()),
        ErrorCode::InvalidQuantity => {
            (EventKind::OnlineOrder, json(&event).replace("\"quantity\":1", "\"quantity\":0").into_bytes())
        }
        ErrorCode::InvalidPrice => {
            let price = market.catalog.products[product].price.to_string();
            let bad = json(&event).replace(&format!("\"unit_price\":{price}"), "\"unit_price\":-1.999");
            (EventKind::OnlineOrder, bad.into_bytes())
        }
        ErrorCode::UnknownProduct => {
            event.product_id = format!("SKU-UNKNOWN-{}", market.serial());
            (EventKind::OnlineOrder, event.to_json())
        }
        ErrorCode::UnknownSupplier => {
            event.detail = EventDetail::SupplierRestock {
                restock_id: format!("PO-{:09}", market.serial()),
                supplier_id: "SUP-UNKNOWN".into(),
                unit_cost: Decimal::new(100, 2),
            };
            (EventKind::SupplierRestock, event.to_json())
        }
        ErrorCode::ConflictingDuplicate => {
            // Re-send an earlier valid event with the same id but another quantity.
            let original = recent.iter().rev().find(|m| m.expect == Expect::Applied)?;
            let mut e = dataflow::validate::decode(original.kind, Some(&original.value)).ok()?;
            e.quantity = if e.quantity == 1_000_000 { 1 } else { e.quantity + 1 };
            let key = Some(e.product_id.clone());
            return Some(SimMessage {
                kind: original.kind,
                key,
                value: e.to_json(),
                expect: Expect::Rejected(code),
            });
        }
    };
    Some(SimMessage { kind, key: Some(product_id), value, expect: Expect::Rejected(code) })
}
