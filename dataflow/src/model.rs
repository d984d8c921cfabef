//! The domain model: the three kinds of input event, their effect on stock,
//! and the records that leave the dataflow.
//!
//! Everything here is plain data with serde derives, so timely can exchange
//! it between workers (stockflow does not use `abomonation`: timely and
//! differential dropped it, and it carries RUSTSEC-2021-0120).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The three kinds of input event, one per input topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A web-shop order line, from topic `online_orders`.
    OnlineOrder,
    /// A till receipt line, from topic `store_sales`.
    StoreSale,
    /// A delivery from a supplier, from topic `supplier_restocks`.
    SupplierRestock,
}

impl EventKind {
    /// All kinds, in the order of their `index` (per-kind arrays use it): a
    /// new kind goes at the end.
    pub const ALL: [EventKind; 3] =
        [EventKind::OnlineOrder, EventKind::StoreSale, EventKind::SupplierRestock];

    /// The contract's `event_type` value.
    pub const fn event_type(self) -> &'static str {
        match self {
            EventKind::OnlineOrder => "online_order",
            EventKind::StoreSale => "store_sale",
            EventKind::SupplierRestock => "supplier_restock",
        }
    }

    /// The contract's (unprefixed) input topic for this kind.
    pub const fn topic(self) -> &'static str {
        match self {
            EventKind::OnlineOrder => "online_orders",
            EventKind::StoreSale => "store_sales",
            EventKind::SupplierRestock => "supplier_restocks",
        }
    }

    /// Parses an `event_type` value.
    pub fn from_event_type(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.event_type() == s)
    }

    /// The `source` column of `orders`/`sales_daily`, for sales.
    pub const fn sale_source(self) -> Option<SaleSource> {
        match self {
            EventKind::OnlineOrder => Some(SaleSource::Online),
            EventKind::StoreSale => Some(SaleSource::Store),
            EventKind::SupplierRestock => None,
        }
    }

    /// Dense index 0..3, for per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Where a sale happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SaleSource {
    /// The web shop.
    Online,
    /// A store till.
    Store,
}

impl SaleSource {
    /// The value stored in the `source` columns.
    pub const fn as_str(self) -> &'static str {
        match self {
            SaleSource::Online => "online",
            SaleSource::Store => "store",
        }
    }
}

/// The fields that only one kind of event has.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventDetail {
    /// `online_order` fields.
    OnlineOrder {
        /// The order this line belongs to.
        order_id: String,
        /// The buying customer.
        customer_id: String,
        /// Price per unit, exact.
        unit_price: Decimal,
    },
    /// `store_sale` fields.
    StoreSale {
        /// The receipt id.
        order_id: String,
        /// The selling store.
        store_id: String,
        /// Price per unit, exact.
        unit_price: Decimal,
    },
    /// `supplier_restock` fields.
    SupplierRestock {
        /// The delivery id.
        restock_id: String,
        /// The delivering supplier (must exist in `suppliers`).
        supplier_id: String,
        /// Cost per unit, exact.
        unit_cost: Decimal,
    },
}

/// A validated input event: every field of the contract, typed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Globally unique identity; 1..=128 code points.
    pub event_id: String,
    /// Event time, normalised to UTC.
    pub occurred_at: DateTime<Utc>,
    /// The product whose stock changes.
    pub product_id: String,
    /// 1..=1_000_000 units.
    pub quantity: u32,
    /// The kind-specific fields.
    pub detail: EventDetail,
}

impl Event {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self.detail {
            EventDetail::OnlineOrder { .. } => EventKind::OnlineOrder,
            EventDetail::StoreSale { .. } => EventKind::StoreSale,
            EventDetail::SupplierRestock { .. } => EventKind::SupplierRestock,
        }
    }

    /// Signed change to `quantity_on_hand`: sales take away, restocks add.
    pub fn delta(&self) -> i64 {
        let q = i64::from(self.quantity);
        match self.detail {
            EventDetail::OnlineOrder { .. } | EventDetail::StoreSale { .. } => -q,
            EventDetail::SupplierRestock { .. } => q,
        }
    }

    /// The UTC day the event belongs to, for daily windows.
    pub fn day(&self) -> NaiveDate {
        self.occurred_at.date_naive()
    }

    /// The UTC hour the event belongs to (its start, on the hour), for
    /// hourly windows. It depends on the instant only, not on the offset
    /// `occurred_at` was written with (`+05:30` included).
    pub fn hour(&self) -> DateTime<Utc> {
        let t = self.occurred_at.timestamp();
        DateTime::from_timestamp(t - t.rem_euclid(3600), 0).unwrap_or(self.occurred_at)
    }

    /// The supplier a restock names, if this is one.
    pub fn supplier_id(&self) -> Option<&str> {
        match &self.detail {
            EventDetail::SupplierRestock { supplier_id, .. } => Some(supplier_id),
            EventDetail::OnlineOrder { .. } | EventDetail::StoreSale { .. } => None,
        }
    }

    /// Revenue of a sale (`quantity * unit_price`), exact; `None` for restocks.
    pub fn revenue(&self) -> Option<Decimal> {
        match &self.detail {
            EventDetail::OnlineOrder { unit_price, .. } | EventDetail::StoreSale { unit_price, .. } => {
                Some(*unit_price * Decimal::from(self.quantity))
            }
            EventDetail::SupplierRestock { .. } => None,
        }
    }

    /// [`Event::revenue`] in cents, exact (prices have at most 2 decimal
    /// places by the contract); 0 for a restock.
    pub fn revenue_cents(&self) -> i128 {
        let price = match &self.detail {
            EventDetail::OnlineOrder { unit_price, .. } | EventDetail::StoreSale { unit_price, .. } => {
                *unit_price
            }
            EventDetail::SupplierRestock { .. } => return 0,
        };
        let q = i128::from(self.quantity);
        match price.scale() {
            0 => price.mantissa() * 100 * q,
            1 => price.mantissa() * 10 * q,
            2 => price.mantissa() * q,
            _ => (price * Decimal::ONE_HUNDRED).trunc().mantissa() * q,
        }
    }

    /// A 128-bit fingerprint of the event's contract content.
    ///
    /// Two messages with the same `event_id` are the *same* event when every
    /// contract field has the same value: numbers compared as exact decimals
    /// (`5` = `5.00`), `occurred_at` as an instant. Formatting, field order and
    /// unknown extra fields do not count. The fingerprint hashes a canonical,
    /// length-prefixed encoding of exactly those values, so it is stable across
    /// processes and versions (xxh3-128 is a fixed algorithm).
    pub fn content_hash(&self) -> u128 {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(256));
        }
        BUF.with_borrow_mut(|buf| {
            buf.clear();
            self.fingerprint_bytes(buf);
            xxhash_rust::xxh3::xxh3_128(buf)
        })
    }

    /// The bytes [`Event::content_hash`] hashes.
    fn fingerprint_bytes(&self, buf: &mut Vec<u8>) {
        use std::io::Write;
        fn put(buf: &mut Vec<u8>, s: &str) {
            buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        put(buf, self.kind().event_type());
        put(buf, &self.event_id);
        buf.extend_from_slice(&self.occurred_at.timestamp().to_le_bytes());
        buf.extend_from_slice(&self.occurred_at.timestamp_subsec_nanos().to_le_bytes());
        put(buf, &self.product_id);
        buf.extend_from_slice(&self.quantity.to_le_bytes());
        let (a, b, money) = match &self.detail {
            EventDetail::OnlineOrder { order_id, customer_id, unit_price } => {
                (order_id, customer_id, unit_price)
            }
            EventDetail::StoreSale { order_id, store_id, unit_price } => (order_id, store_id, unit_price),
            EventDetail::SupplierRestock { restock_id, supplier_id, unit_cost } => {
                (restock_id, supplier_id, unit_cost)
            }
        };
        put(buf, a);
        put(buf, b);
        // The money's text, length first, written in place.
        let at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        // Writing to a Vec cannot fail.
        let _ = write!(buf, "{}", money.normalize());
        let len = (buf.len() - at - 4) as u32;
        buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// The contract's rejection codes, in the order the rules are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Not UTF-8 JSON, or not a JSON object.
    MalformedJson,
    /// A required field missing, null, of the wrong type or length, or a bad timestamp.
    SchemaViolation,
    /// `event_type` does not belong to the topic.
    WrongTopic,
    /// `quantity` outside 1..=1_000_000.
    InvalidQuantity,
    /// A negative price or one with more than 2 decimal places.
    InvalidPrice,
    /// `product_id` not in `products`.
    UnknownProduct,
    /// `supplier_id` not in `suppliers`.
    UnknownSupplier,
    /// An applied `event_id` arrived again with different content.
    ConflictingDuplicate,
}

impl ErrorCode {
    /// All codes, in rule order.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::MalformedJson,
        ErrorCode::SchemaViolation,
        ErrorCode::WrongTopic,
        ErrorCode::InvalidQuantity,
        ErrorCode::InvalidPrice,
        ErrorCode::UnknownProduct,
        ErrorCode::UnknownSupplier,
        ErrorCode::ConflictingDuplicate,
    ];

    /// The contract's wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::SchemaViolation => "schema_violation",
            ErrorCode::WrongTopic => "wrong_topic",
            ErrorCode::InvalidQuantity => "invalid_quantity",
            ErrorCode::InvalidPrice => "invalid_price",
            ErrorCode::UnknownProduct => "unknown_product",
            ErrorCode::UnknownSupplier => "unknown_supplier",
            ErrorCode::ConflictingDuplicate => "conflicting_duplicate",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message was not applied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rejection {
    /// The first rule that failed.
    pub code: ErrorCode,
    /// Human-readable, names the offending field.
    pub detail: String,
    /// The message's `event_id`, when it could be read.
    pub event_id: Option<String>,
}

impl Rejection {
    /// A rejection with the given code and detail.
    pub fn new(code: ErrorCode, detail: impl Into<String>, event_id: Option<String>) -> Self {
        Rejection { code, detail: detail.into(), event_id }
    }
}

/// A product of the catalog, as the simulation and the seed see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Primary key.
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Shop category.
    pub category: String,
    /// List price, exact.
    pub price: Decimal,
    /// Low stock when `quantity_on_hand <= reorder_level`.
    pub reorder_level: i32,
    /// The supplier that usually restocks it.
    pub supplier_id: Option<String>,
    /// Stock on hand (the opening stock when seeding).
    pub quantity_on_hand: i64,
}

/// A supplier of the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supplier {
    /// Primary key.
    pub supplier_id: String,
    /// Company name.
    pub name: String,
    /// Where to send purchase orders.
    pub contact: String,
}

/// The reference data: products and suppliers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Every product, ordered by `product_id`.
    pub products: Vec<Product>,
    /// Every supplier, ordered by `supplier_id`.
    pub suppliers: Vec<Supplier>,
}

/// The names of the six contract topics, with an optional common prefix.
///
/// The prefix is empty in production (the contract's names); tests and
/// benchmarks set one so that runs sharing a broker never see each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicNames {
    prefix: String,
}

impl TopicNames {
    /// Topic names with `prefix` before each contract name.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        TopicNames { prefix: prefix.into() }
    }

    /// The input topic for events of `kind`.
    pub fn input(&self, kind: EventKind) -> String {
        format!("{}{}", self.prefix, kind.topic())
    }

    /// The output topic for committed stock changes.
    pub fn inventory_updates(&self) -> String {
        format!("{}inventory_updates", self.prefix)
    }

    /// The dead-letter topic.
    pub fn dlq(&self) -> String {
        format!("{}dlq", self.prefix)
    }

    /// The output topic for reorder-level crossings.
    pub fn stock_alerts(&self) -> String {
        format!("{}stock_alerts", self.prefix)
    }

    /// The three output topics.
    pub fn outputs(&self) -> Vec<String> {
        vec![self.inventory_updates(), self.stock_alerts(), self.dlq()]
    }

    /// All six topics: the three inputs, then the three outputs.
    pub fn all(&self) -> Vec<String> {
        let mut v: Vec<String> = EventKind::ALL.iter().map(|k| self.input(*k)).collect();
        v.extend(self.outputs());
        v
    }

    /// The prefix before every topic name (empty by default).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Which input kind a (prefixed) topic name carries.
    pub fn kind_of(&self, topic: &str) -> Option<EventKind> {
        let bare = topic.strip_prefix(self.prefix.as_str())?;
        EventKind::ALL.into_iter().find(|k| k.topic() == bare)
    }
}

/// The contract's JSON form of an event, field by field.
#[derive(Serialize)]
struct WireEvent<'a> {
    event_id: &'a str,
    event_type: &'static str,
    occurred_at: String,
    product_id: &'a str,
    quantity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restock_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supplier_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_price: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_cost: Option<Box<serde_json::value::RawValue>>,
}

/// A decimal as a JSON number literal in plain notation (never via `f64`).
fn money_literal(d: &Decimal) -> Option<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(d.to_string()).ok()
}

impl Event {
    /// The event as the contract's JSON message value, with `occurred_at` in
    /// UTC with milliseconds and money as plain decimal literals.
    pub fn to_json(&self) -> Vec<u8> {
        let mut w = WireEvent {
            event_id: &self.event_id,
            event_type: self.kind().event_type(),
            occurred_at: self.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            product_id: &self.product_id,
            quantity: self.quantity,
            order_id: None,
            customer_id: None,
            store_id: None,
            restock_id: None,
            supplier_id: None,
            unit_price: None,
            unit_cost: None,
        };
        match &self.detail {
            EventDetail::OnlineOrder { order_id, customer_id, unit_price } => {
                w.order_id = Some(order_id);
                w.customer_id = Some(customer_id);
                w.unit_price = money_literal(unit_price);
            }
            EventDetail::StoreSale { order_id, store_id, unit_price } => {
                w.order_id = Some(order_id);
                w.store_id = Some(store_id);
                w.unit_price = money_literal(unit_price);
            }
            EventDetail::SupplierRestock { restock_id, supplier_id, unit_cost } => {
                w.restock_id = Some(restock_id);
                w.supplier_id = Some(supplier_id);
                w.unit_cost = money_literal(unit_cost);
            }
        }
        serde_json::to_vec(&w).unwrap_or_default()
    }
}
