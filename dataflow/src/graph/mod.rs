//! The stockflow dataflow graph.
//!
//! ```text
//!  raw messages ──decode──▶ exchange(event_id) ──▶ Validate ──▶ outcomes ─┐
//!  reference updates ──broadcast────────────────────┘   │                  │
//!        │                        per-epoch sums of the │ applied events   │
//!        │     ┌─────────────────────────────────────────┘                  │
//!        │     ├─ (product, delta) ── consolidate ──▶ stock deltas ─────────┤
//!        │     └─ ((hour, product, source), (units, cents, orders))         │
//!        │                  ── consolidate ──▶ sales_hourly deltas ─────────┤
//!        └─ new products, new reorder levels ──▶ rechecks ──────────────────┤
//!                                                  exchange(0) ──▶ Commit ◀─┘
//! ```
//!
//! *Validate* ([`validate`]) applies the stateful rules in the contract's
//! order once both its inputs have passed an epoch, in position order, so
//! that outcomes do not depend on how messages were spread over workers;
//! it also sums the epoch's applied events per key (a combiner).
//!
//! *Commit* ([`commit`]) gathers everything of epoch `t` on worker 0 and,
//! once the frontier has passed it, hands one [`EpochBatch`] to the driver,
//! which commits it (one transaction per epoch, or per group of epochs
//! merged with [`EpochBatch::absorb`] when the committer is behind). Stock and sales leave the dataflow as net
//! changes per epoch (differential's diffs), so the database applies
//! increments: a product whose stock returns to exactly 0 is written as a
//! change of `-old`. Whether a product is low is decided where its stock
//! and reorder level are committed, in that transaction (the dataflow
//! holds no copy of either that could drift from the database): the
//! dataflow only names the products to check besides those its events
//! touched (*rechecks*: reference data that changed at `t`).

mod commit;
mod validate;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use differential_dataflow::VecCollection;
use differential_dataflow::collection::AsCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{ProbeHandle, Stream};

pub use commit::commit_sink;
use validate::{ValidateExt, Validated};

use crate::dedup::{AppliedLookup, IdKey, LookupError};
use crate::records::{Decoded, Epoch, EpochBatch, RawMessage, RefUpdate, SalesDelta, SinkRecord};

/// An applied id loaded from the database at start: its key, content
/// fingerprint and `occurred_at`.
pub type Preloaded = (IdKey, u128, chrono::DateTime<chrono::Utc>);

/// Settings of the graph.
pub struct GraphConfig {
    /// How far back in event time the dedup memory reaches.
    pub dedup_horizon: chrono::Duration,
    /// At most this many ids in one worker's dedup memory.
    pub dedup_max_ids: usize,
    /// The last epoch the driver has committed (process-local), so that
    /// late dedup ids can be forgotten once the database holds them.
    pub committed_epoch: Arc<AtomicU64>,
    /// Where the dedup state looks up ids older than the horizon.
    pub lookup: Box<dyn AppliedLookup>,
    /// Applied ids inside the horizon from earlier runs, for this worker
    /// (see [`crate::dedup::id_key`]).
    pub preload: Vec<Preloaded>,
    /// When the start-up load was cut short: events at or before this
    /// instant must be looked up, not answered from memory.
    pub preload_floor: Option<chrono::DateTime<chrono::Utc>>,
}

/// Per-worker counters the driver can read (metrics).
#[derive(Debug, Default)]
pub struct GraphStats {
    /// Ids in the dedup memory.
    pub dedup_ids: AtomicU64,
    /// Late ids waiting for their commit.
    pub dedup_late: AtomicU64,
    /// Look-ups of ids older than the horizon.
    pub dedup_lookups: AtomicU64,
    /// Events older than the horizon, not in the held history, and older
    /// than its first instant: applied, though they might repeat an
    /// archived event (see `dedup`).
    pub dedup_beyond_history: AtomicU64,
    /// Why `Validate` holds an epoch back (a lookup failed): the driver
    /// reads it and stops; the epoch is never emitted half-decided.
    pub failure: std::sync::Mutex<Option<LookupError>>,
}

impl GraphStats {
    /// The failure `Validate` reported, if any.
    pub fn failure(&self) -> Option<LookupError> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }
}

/// The streams of the graph: records of one type, at an epoch.
pub(crate) type RecordStream<'scope, D> = Stream<'scope, Epoch, Vec<D>>;

/// Builds the graph; returns the stream of records for the commit, already
/// routed to worker 0.
pub fn build<'scope>(
    raw: RecordStream<'scope, RawMessage>,
    refs: RecordStream<'scope, RefUpdate>,
    config: GraphConfig,
    stats: Arc<GraphStats>,
) -> RecordStream<'scope, (SinkRecord, Epoch)> {
    let decoded = raw.map(Decoded::new);
    // Validate emits each outcome (for the commit) and the epoch's sums (for
    // the aggregates). `partition` moves each record to one branch: nothing
    // heavy (raw values, whole events) is cloned.
    let mut branches = decoded.validate(refs.clone(), config, stats).partition(3, |v| match v {
        Validated::Outcome(_) => (0, v),
        Validated::Stock(..) => (1, v),
        Validated::Sales(..) => (2, v),
    });
    let sales_in = branches.pop().expect("three branches");
    let stock_in = branches.pop().expect("three branches");
    let outcomes_in = branches.pop().expect("three branches");

    // Net stock change per product and epoch, over all workers.
    let stock_deltas = as_updates(stock_in, |v| match v {
        Validated::Stock(p, d) => Some((p, d)),
        _ => None,
    })
    .consolidate();

    // Net sales_hourly change per (hour, product, source) and epoch.
    let sales = as_updates(sales_in, |v| match v {
        Validated::Sales(key, diff) => Some((key, diff)),
        _ => None,
    })
    .consolidate();

    // Products whose reference data changed: a new product, or a new
    // reorder level (an upsert; worker 0 feeds every product at start).
    let rechecks = as_updates(refs, |u| match u {
        RefUpdate::ProductUpsert { product_id, .. } => Some((SinkRecord::Recheck(product_id), 1i64)),
        _ => None,
    });

    // Differential sends updates of several times under one capability, so
    // each record carries its own epoch to the commit.
    as_updates(outcomes_in, |v| match v {
        Validated::Outcome(o) => Some((SinkRecord::Outcome(o), 1i64)),
        _ => None,
    })
    .inner
    .map(|(r, t, _)| (r, t))
    .concat(stock_deltas.inner.map(|(p, t, d)| (SinkRecord::Stock(p, d), t)))
    .concat(sales.inner.map(|(key, t, sums)| (SinkRecord::Sales(SalesDelta { key, sums }), t)))
    .concat(rechecks.inner.map(|(r, t, _)| (r, t)))
}

/// The whole graph in a dataflow scope, as every driver wires it: [`build`]
/// over the two inputs, `probe` after it (how far the commit has got),
/// [`commit_sink`] calling `on_epoch` with each finished epoch on worker 0.
pub fn install<'scope, F>(
    raw: RecordStream<'scope, RawMessage>,
    refs: RecordStream<'scope, RefUpdate>,
    config: GraphConfig,
    stats: Arc<GraphStats>,
    probe: &ProbeHandle<Epoch>,
    on_epoch: F,
) where
    F: FnMut(EpochBatch) + 'static,
{
    let records = build(raw, refs, config, stats).probe_with(probe);
    commit_sink(records, on_epoch);
}

/// The records of a stream that `f` keeps, as `(data, diff)`, in a
/// differential collection at their epoch. The one way the graph turns
/// plain streams (outcomes, per-epoch sums, reference updates) into updates.
fn as_updates<'scope, I: Clone + 'static, D: Clone + 'static, R: Clone + 'static>(
    s: RecordStream<'scope, I>,
    mut f: impl FnMut(I) -> Option<(D, R)> + 'static,
) -> VecCollection<'scope, Epoch, D, R> {
    s.unary(Pipeline, "AsUpdates", move |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let Some(t) = cap.least().copied() else { return };
                let mut session = output.session(&cap);
                for (d, r) in data.drain(..).filter_map(&mut f) {
                    session.give((d, t, r));
                }
            });
        }
    })
    .as_collection()
}
