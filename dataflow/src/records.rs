//! The records that flow into, through and out of the dataflow.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Event, EventKind, Rejection, SaleSource};

/// An epoch: the dataflow's logical time. Sources stamp each message with the
/// epoch it was read in; everything of one epoch is committed together.
pub type Epoch = u64;

/// One input message as it came from the broker, value included (it is kept
/// in the audit log and the dead-letter record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawMessage {
    /// Which input topic it came from.
    pub kind: EventKind,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Broker/producer timestamp in Unix milliseconds, if any.
    pub timestamp_ms: Option<i64>,
    /// The key; an empty key counts as none.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

impl RawMessage {
    /// Sort key that makes every epoch's processing order deterministic.
    pub fn position(&self) -> (EventKind, i32, i64) {
        (self.kind, self.partition, self.offset)
    }

    /// The message without its key and value (a duplicate's record: its
    /// bytes are not kept).
    pub fn without_payload(self) -> Self {
        RawMessage { key: None, value: None, ..self }
    }
}

/// A message after [`crate::validate::decode`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decoded {
    /// The message.
    pub msg: RawMessage,
    /// The event, or why it fails a stateless rule (boxed: records move
    /// through several operators, and small records move cheaply).
    pub result: Result<Box<Event>, Box<Rejection>>,
}

impl Decoded {
    /// Decodes `msg`.
    pub fn new(msg: RawMessage) -> Self {
        let result = crate::validate::decode(msg.kind, msg.value.as_deref()).map(Box::new).map_err(Box::new);
        Decoded { msg, result }
    }

    /// The `event_id`, when it could be read.
    pub fn event_id(&self) -> Option<&str> {
        match &self.result {
            Ok(e) => Some(&e.event_id),
            Err(r) => r.event_id.as_deref(),
        }
    }

    /// Routing hash: by `event_id` when known (all messages of one id meet on
    /// one worker), else by position.
    pub fn route(&self) -> u64 {
        match self.event_id() {
            Some(id) => route_event_id(id),
            None => (self.msg.partition as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.msg.offset as u64,
        }
    }
}

/// The worker-routing hash of an event id (stable across processes).
pub fn route_event_id(event_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(event_id.as_bytes())
}

/// What became of one message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outcome {
    /// A new event: it changes stock (and sales).
    Applied {
        /// The message.
        msg: RawMessage,
        /// The event.
        event: Box<Event>,
        /// Its content fingerprint.
        hash: u128,
    },
    /// Not applied; goes to `dlq` and `events_log`.
    Rejected {
        /// The message.
        msg: RawMessage,
        /// Why.
        rejection: Box<Rejection>,
    },
    /// A plain duplicate of an applied event: counted, nothing else. The
    /// value is dropped; only the position (for offsets) is kept.
    Duplicate {
        /// The message, without its value.
        msg: RawMessage,
    },
}

impl Outcome {
    /// The message this outcome is about.
    pub fn msg(&self) -> &RawMessage {
        match self {
            Outcome::Applied { msg, .. } | Outcome::Rejected { msg, .. } | Outcome::Duplicate { msg } => msg,
        }
    }
}

/// A change to the reference data, fed by the driver of worker 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefUpdate {
    /// A product exists (again) with this reorder level.
    ProductUpsert {
        /// Product id.
        product_id: String,
        /// Its reorder level.
        reorder_level: i32,
    },
    /// A product was removed from the catalog.
    ProductRemoved {
        /// Product id.
        product_id: String,
        /// The reorder level it had.
        reorder_level: i32,
    },
    /// A supplier exists.
    SupplierAdded(String),
    /// A supplier was removed.
    SupplierRemoved(String),
}

impl RefUpdate {
    /// The updates that load reference data from scratch: every product
    /// with its reorder level, every supplier (what worker 0 sends first).
    pub fn load<'a>(
        products: impl IntoIterator<Item = (&'a String, &'a i32)>,
        suppliers: impl IntoIterator<Item = &'a String>,
    ) -> Vec<RefUpdate> {
        let mut v: Vec<RefUpdate> = products
            .into_iter()
            .map(|(p, level)| RefUpdate::ProductUpsert { product_id: p.clone(), reorder_level: *level })
            .collect();
        v.extend(suppliers.into_iter().map(|s| RefUpdate::SupplierAdded(s.clone())));
        v
    }
}

/// The key of a `sales_hourly` row: the UTC hour (on the hour) the sales
/// happened in, the product and the source. A `sales_daily` row sums the
/// hours of its day.
pub type SalesKey = (DateTime<Utc>, String, SaleSource);

/// Sums of sale events: what a `sales_hourly` row adds up. It is the diff
/// (differential's `Semigroup`) of the sales aggregate: updates to one row
/// in one epoch add up to one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SalesSums {
    /// Units sold.
    pub units: i64,
    /// Revenue in cents (exact).
    pub revenue_cents: i128,
    /// Sale events.
    pub orders: i64,
}

impl SalesSums {
    /// The sums of one sale of `units` for `revenue_cents`.
    pub fn sale(units: u32, revenue_cents: i128) -> Self {
        SalesSums { units: i64::from(units), revenue_cents, orders: 1 }
    }
}

impl std::ops::AddAssign for SalesSums {
    fn add_assign(&mut self, rhs: Self) {
        self.units += rhs.units;
        self.revenue_cents += rhs.revenue_cents;
        self.orders += rhs.orders;
    }
}

impl differential_dataflow::difference::IsZero for SalesSums {
    fn is_zero(&self) -> bool {
        *self == SalesSums::default()
    }
}

impl differential_dataflow::difference::Semigroup for SalesSums {
    fn plus_equals(&mut self, rhs: &Self) {
        *self += *rhs;
    }
}

impl differential_dataflow::difference::Monoid for SalesSums {
    fn zero() -> Self {
        SalesSums::default()
    }
}

/// A change to one `sales_hourly` row (and so to its day's `sales_daily`
/// row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesDelta {
    /// (UTC hour, product, source).
    pub key: SalesKey,
    /// Units, revenue in cents, sale events.
    pub sums: SalesSums,
}

/// What the commit of one epoch must write, gathered on one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpochBatch {
    /// The epoch.
    pub epoch: Epoch,
    /// Every message of the epoch (in position order once sealed).
    pub outcomes: Vec<Outcome>,
    /// Net stock change per product in this epoch (non-zero only).
    pub stock_deltas: Vec<(String, i64)>,
    /// Net `sales_hourly` changes in this epoch (non-zero only).
    pub sales: Vec<SalesDelta>,
    /// Products whose reference data changed at this epoch (new, or a new
    /// reorder level; at start: every product): the commit checks them for
    /// a reorder-level crossing even if no event touched them.
    pub rechecks: Vec<String>,
}

impl EpochBatch {
    /// Whether there is nothing to commit. Every field is named: a new
    /// kind of record must decide here whether it alone makes a commit (the
    /// committer skips empty batches).
    pub fn is_empty(&self) -> bool {
        let EpochBatch { epoch: _, outcomes, stock_deltas, sales, rechecks } = self;
        outcomes.is_empty() && stock_deltas.is_empty() && sales.is_empty() && rechecks.is_empty()
    }

    /// How many messages were applied, plain duplicates, and rejected.
    pub fn counts(&self) -> OutcomeCounts {
        let mut c = OutcomeCounts::default();
        for o in &self.outcomes {
            match o {
                Outcome::Applied { .. } => c.applied += 1,
                Outcome::Duplicate { .. } => c.duplicates += 1,
                Outcome::Rejected { .. } => c.rejected += 1,
            }
        }
        c
    }

    /// Puts the batch in its canonical order: messages by position (topic,
    /// partition, offset), changes by key. The order, and so everything
    /// written from it, does not depend on the number of workers.
    pub fn seal(&mut self) {
        self.outcomes.sort_by_key(|o| o.msg().position());
        self.stock_deltas.sort();
        self.sales.sort_by(|a, b| a.key.cmp(&b.key));
        self.rechecks.sort();
        self.rechecks.dedup();
    }

    /// Adds one record of this epoch.
    pub fn add(&mut self, record: SinkRecord) {
        match record {
            SinkRecord::Outcome(o) => self.outcomes.push(o),
            SinkRecord::Stock(p, d) => self.stock_deltas.push((p, d)),
            SinkRecord::Sales(s) => self.sales.push(s),
            SinkRecord::Recheck(p) => self.rechecks.push(p),
        }
    }

    /// Takes in the batch of a later epoch, so both commit in one
    /// transaction as if they were one epoch (`later`'s): messages stay in
    /// epoch order, stock and sales changes are summed, rechecks united.
    pub fn absorb(&mut self, later: EpochBatch) {
        debug_assert!(later.epoch >= self.epoch, "epochs merge in order");
        self.epoch = later.epoch;
        self.outcomes.extend(later.outcomes);
        let mut stock: std::collections::BTreeMap<String, i64> =
            std::mem::take(&mut self.stock_deltas).into_iter().collect();
        for (p, d) in later.stock_deltas {
            *stock.entry(p).or_insert(0) += d;
        }
        // A product whose changes cancel out keeps a 0 entry: harmless, the
        // commit writes an increment of 0 for it.
        self.stock_deltas = stock.into_iter().collect();
        let mut sales: std::collections::BTreeMap<SalesKey, SalesSums> =
            std::mem::take(&mut self.sales).into_iter().map(|s| (s.key, s.sums)).collect();
        for s in later.sales {
            *sales.entry(s.key).or_default() += s.sums;
        }
        self.sales = sales.into_iter().map(|(key, sums)| SalesDelta { key, sums }).collect();
        self.rechecks.extend(later.rechecks);
        self.rechecks.sort();
        self.rechecks.dedup();
    }
}

/// Messages of a batch by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// New events applied.
    pub applied: u32,
    /// Plain duplicates.
    pub duplicates: u32,
    /// Rejected messages.
    pub rejected: u32,
}

/// One record for the committing worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SinkRecord {
    /// A message's outcome.
    Outcome(Outcome),
    /// A product's net stock change.
    Stock(String, i64),
    /// A `sales_hourly` change.
    Sales(SalesDelta),
    /// A product to check for a reorder-level crossing.
    Recheck(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SaleSource;

    #[test]
    fn absorbing_a_later_epoch_sums_changes_and_keeps_message_order() {
        let msg = |offset| Outcome::Duplicate {
            msg: RawMessage {
                kind: EventKind::OnlineOrder,
                partition: 0,
                offset,
                timestamp_ms: None,
                key: None,
                value: None,
            },
        };
        let hour = "2026-11-26T10:00:00Z".parse::<DateTime<Utc>>().expect("hour");
        let sale = |units| SalesDelta {
            key: (hour, "P1".into(), SaleSource::Online),
            sums: SalesSums { units, revenue_cents: 100 * i128::from(units), orders: 1 },
        };
        let mut a = EpochBatch {
            epoch: 10,
            outcomes: vec![msg(1), msg(2)],
            stock_deltas: vec![("P1".into(), -3), ("P2".into(), 5)],
            sales: vec![sale(3)],
            rechecks: vec!["P1".into()],
        };
        let b = EpochBatch {
            epoch: 20,
            outcomes: vec![msg(3)],
            stock_deltas: vec![("P1".into(), 3), ("P3".into(), -1)],
            sales: vec![sale(2)],
            rechecks: vec!["P1".into(), "P3".into()],
        };
        a.absorb(b);
        assert_eq!(a.epoch, 20);
        assert_eq!(a.outcomes.iter().map(|o| o.msg().offset).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(a.stock_deltas, [("P1".to_string(), 0), ("P2".to_string(), 5), ("P3".to_string(), -1)]);
        assert_eq!(
            a.sales,
            [SalesDelta {
                key: (hour, "P1".into(), SaleSource::Online),
                sums: SalesSums { units: 5, revenue_cents: 500, orders: 2 }
            }]
        );
        assert_eq!(a.rechecks, ["P1".to_string(), "P3".to_string()]);
    }
}
