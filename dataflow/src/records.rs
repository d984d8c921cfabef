//! The records that flow into, through and out of the dataflow.

use chrono::NaiveDate;
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

/// The key of a `sales_daily` row.
pub type SalesKey = (NaiveDate, String, SaleSource);

/// A change to one `sales_daily` row: units, revenue in cents, order count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesDelta {
    /// (UTC day, product, source).
    pub key: SalesKey,
    /// Units sold.
    pub units: i64,
    /// Revenue in cents (exact).
    pub revenue_cents: i128,
    /// Sale events.
    pub orders: i64,
}

/// What the commit of one epoch must write, gathered on one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpochBatch {
    /// The epoch.
    pub epoch: Epoch,
    /// Every message of the epoch, in position order.
    pub outcomes: Vec<Outcome>,
    /// Net stock change per product in this epoch (non-zero only).
    pub stock_deltas: Vec<(String, i64)>,
    /// Net `sales_daily` changes in this epoch (non-zero only).
    pub sales: Vec<SalesDelta>,
    /// Products that became low (`true`) or stopped being low (`false`).
    pub low_stock_changes: Vec<(String, bool)>,
}

impl EpochBatch {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty() && self.low_stock_changes.is_empty()
    }
}

/// One record for the committing worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SinkRecord {
    /// A message's outcome.
    Outcome(Outcome),
    /// A product's net stock change.
    Stock(String, i64),
    /// A `sales_daily` change.
    Sales(SalesDelta),
    /// A low-stock set change.
    LowStock(String, bool),
}
