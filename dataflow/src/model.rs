//! The domain model: the kinds of input event, their effect on stock, and
//! the records that leave the dataflow.
//!
//! A kind of event is declared here and nowhere else: its `EventKind`
//! variant with the contract's names ([`EventKind::event_type`],
//! [`EventKind::topic`], [`EventKind::fields`]), its effect
//! ([`EventKind::stock_sign`], [`EventKind::sale_source`]) and its
//! `EventDetail` variant. Validation, the JSON form, the fingerprint, the
//! commit's `orders` rows and the database's `event_kinds` table are derived
//! from those (ARCHITECTURE.md, "Adding a topic").
//!
//! Everything here is plain data with serde derives, so timely can exchange
//! it between workers (stockflow does not use `abomonation`: timely and
//! differential dropped it, and it carries RUSTSEC-2021-0120).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The kinds of input event, one per input topic.
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

    /// The contract's names of the kind's own three fields, in the order
    /// the JSON form writes them.
    pub const fn fields(self) -> DetailFields {
        match self {
            EventKind::OnlineOrder => {
                DetailFields { reference: "order_id", party: "customer_id", money: "unit_price" }
            }
            EventKind::StoreSale => {
                DetailFields { reference: "order_id", party: "store_id", money: "unit_price" }
            }
            EventKind::SupplierRestock => {
                DetailFields { reference: "restock_id", party: "supplier_id", money: "unit_cost" }
            }
        }
    }

    /// The sign of the kind's effect on `quantity_on_hand`: -1 takes the
    /// quantity away, +1 adds it.
    pub const fn stock_sign(self) -> i64 {
        match self {
            EventKind::OnlineOrder | EventKind::StoreSale => -1,
            EventKind::SupplierRestock => 1,
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

    /// Dense index `0..ALL.len()`, for per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The contract's names of the three fields every kind has of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetailFields {
    /// The id of the document the event is a line of (order, receipt, delivery).
    pub reference: &'static str,
    /// The id of the other party (customer, store, supplier).
    pub party: &'static str,
    /// The money per unit, exact (price or cost).
    pub money: &'static str,
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

impl EventDetail {
    /// The detail of a `kind` event from its three own fields, in the
    /// order of [`EventKind::fields`].
    pub fn new(kind: EventKind, reference: String, party: String, money: Decimal) -> Self {
        match kind {
            EventKind::OnlineOrder => {
                EventDetail::OnlineOrder { order_id: reference, customer_id: party, unit_price: money }
            }
            EventKind::StoreSale => {
                EventDetail::StoreSale { order_id: reference, store_id: party, unit_price: money }
            }
            EventKind::SupplierRestock => {
                EventDetail::SupplierRestock { restock_id: reference, supplier_id: party, unit_cost: money }
            }
        }
    }

    /// The three own fields, in the order of [`EventKind::fields`]: the
    /// reference id, the party id and the money.
    pub fn parts(&self) -> (&str, &str, &Decimal) {
        match self {
            EventDetail::OnlineOrder { order_id, customer_id, unit_price } => {
                (order_id, customer_id, unit_price)
            }
            EventDetail::StoreSale { order_id, store_id, unit_price } => (order_id, store_id, unit_price),
            EventDetail::SupplierRestock { restock_id, supplier_id, unit_cost } => {
                (restock_id, supplier_id, unit_cost)
            }
        }
    }
}

/// An event that is a sale, as the `orders` table and the revenue see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sale<'a> {
    /// Where it was sold.
    pub source: SaleSource,
    /// The order (or receipt) id.
    pub order_id: &'a str,
    /// The buyer (online) or the selling store.
    pub party: &'a str,
    /// Price per unit, exact.
    pub unit_price: &'a Decimal,
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

    /// Signed change to `quantity_on_hand` ([`EventKind::stock_sign`]).
    pub fn delta(&self) -> i64 {
        self.kind().stock_sign() * i64::from(self.quantity)
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
        // The contract's `unknown_supplier` rule is about the field of that
        // name, whichever kind has it.
        let (_, party, _) = self.detail.parts();
        (self.kind().fields().party == "supplier_id").then_some(party)
    }

    /// The event as a sale, when its kind is one ([`EventKind::sale_source`]).
    pub fn sale(&self) -> Option<Sale<'_>> {
        let source = self.kind().sale_source()?;
        let (order_id, party, unit_price) = self.detail.parts();
        Some(Sale { source, order_id, party, unit_price })
    }

    /// Revenue of a sale (`quantity * unit_price`), exact; `None` for an
    /// event that is not a sale.
    pub fn revenue(&self) -> Option<Decimal> {
        self.sale().map(|s| *s.unit_price * Decimal::from(self.quantity))
    }

    /// [`Event::revenue`] in cents, exact (prices have at most 2 decimal
    /// places by the contract); 0 for an event that is not a sale.
    pub fn revenue_cents(&self) -> i128 {
        let Some(sale) = self.sale() else { return 0 };
        let price = *sale.unit_price;
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
        let (a, b, money) = self.detail.parts();
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

/// The names of the contract topics, with an optional common prefix.
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

    /// The output topics.
    pub fn outputs(&self) -> Vec<String> {
        vec![self.inventory_updates(), self.stock_alerts(), self.dlq()]
    }

    /// All topics: the inputs, then the outputs.
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

/// The contract's JSON form of an event: the common fields, then the
/// kind's own ([`EventKind::fields`]).
struct WireEvent<'a>(&'a Event);

impl Serialize for WireEvent<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let event = self.0;
        let kind = event.kind();
        let names = kind.fields();
        let (reference, party, money) = event.detail.parts();
        let mut map = serializer.serialize_map(Some(8))?;
        map.serialize_entry("event_id", &event.event_id)?;
        map.serialize_entry("event_type", kind.event_type())?;
        map.serialize_entry(
            "occurred_at",
            &event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )?;
        map.serialize_entry("product_id", &event.product_id)?;
        map.serialize_entry("quantity", &event.quantity)?;
        map.serialize_entry(names.reference, reference)?;
        map.serialize_entry(names.party, party)?;
        if let Some(literal) = money_literal(money) {
            map.serialize_entry(names.money, &literal)?;
        }
        map.end()
    }
}

/// A decimal as a JSON number literal in plain notation (never via `f64`).
fn money_literal(d: &Decimal) -> Option<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(d.to_string()).ok()
}

impl Event {
    /// The event as the contract's JSON message value, with `occurred_at` in
    /// UTC with milliseconds and money as plain decimal literals.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&WireEvent(self)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::decode;

    /// `event_type`, topic, own fields, stock sign, sale source.
    type Declaration = (&'static str, &'static str, [&'static str; 3], i64, Option<&'static str>);

    /// Each kind's declaration, in the contract's words (its README's topic
    /// table, the kind's fields, its effect on inventory): a new kind adds
    /// its row here.
    const CONTRACT: [Declaration; 3] = [
        ("online_order", "online_orders", ["order_id", "customer_id", "unit_price"], -1, Some("online")),
        ("store_sale", "store_sales", ["order_id", "store_id", "unit_price"], -1, Some("store")),
        ("supplier_restock", "supplier_restocks", ["restock_id", "supplier_id", "unit_cost"], 1, None),
    ];

    #[test]
    fn kinds_are_declared_as_the_contract_says() {
        assert_eq!(EventKind::ALL.len(), CONTRACT.len(), "every kind in ALL and in CONTRACT");
        for (i, kind) in EventKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i, "ALL is in index order");
            let f = kind.fields();
            let declared = (
                kind.event_type(),
                kind.topic(),
                [f.reference, f.party, f.money],
                kind.stock_sign(),
                kind.sale_source().map(SaleSource::as_str),
            );
            assert_eq!(declared, CONTRACT[i], "{kind:?}");
            assert_eq!(EventKind::from_event_type(kind.event_type()), Some(kind));
        }
    }

    #[test]
    fn every_kind_round_trips_with_its_effect() {
        let at = DateTime::from_timestamp(1_795_000_000, 123_000_000).unwrap_or_default();
        for kind in EventKind::ALL {
            let detail = EventDetail::new(kind, "r-1".into(), "S1".into(), Decimal::new(450, 2));
            let event = Event {
                event_id: "e1".into(),
                occurred_at: at,
                product_id: "P1".into(),
                quantity: 3,
                detail,
            };
            assert_eq!(event.kind(), kind);
            assert_eq!(event.detail.parts(), ("r-1", "S1", &Decimal::new(450, 2)));
            assert_eq!(event.delta(), 3 * kind.stock_sign());
            let f = kind.fields();
            assert_eq!(event.supplier_id(), (f.party == "supplier_id").then_some("S1"), "{kind:?}");
            let sale = event.sale();
            assert_eq!(sale.map(|s| s.source), kind.sale_source());
            assert_eq!(event.revenue(), sale.map(|_| Decimal::new(1350, 2)));
            assert_eq!(event.revenue_cents(), if sale.is_some() { 1350 } else { 0 });

            // The JSON form holds the common fields and the kind's own, by name.
            let json = event.to_json();
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&json).expect("JSON");
            let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut expected = vec![
                "event_id",
                "event_type",
                "occurred_at",
                "product_id",
                "quantity",
                f.reference,
                f.party,
                f.money,
            ];
            expected.sort_unstable();
            assert_eq!(keys, expected, "{kind:?}");
            let text = String::from_utf8_lossy(&json);
            assert!(text.contains(&format!(r#""{}":4.50"#, f.money)), "money exactly: {text}");

            // It reads back as the same event, on its own topic only.
            let again = decode(kind, Some(&json)).expect("valid by the contract");
            assert_eq!(again, event);
            assert_eq!(again.content_hash(), event.content_hash());
            for other in EventKind::ALL.into_iter().filter(|k| *k != kind) {
                let code = decode(other, Some(&json)).err().map(|r| r.code);
                assert_eq!(code, Some(ErrorCode::WrongTopic), "{kind:?} on {other:?}'s topic");
            }
            for own in [f.reference, f.party, f.money] {
                let mut without = map.clone();
                without.remove(own);
                let bytes = serde_json::to_vec(&without).expect("JSON");
                let code = decode(kind, Some(&bytes)).err().map(|r| r.code);
                assert_eq!(code, Some(ErrorCode::SchemaViolation), "{kind:?} without {own}");
            }
        }
    }
}
