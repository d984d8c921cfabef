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
//! *Validate* applies the stateful rules in the contract's order
//! (`unknown_product`, `unknown_supplier`, then deduplication by `event_id`).
//! It holds messages of epoch `t` until both its inputs have passed `t`, so
//! that reference data committed up to `t` is known, and then handles the
//! epoch's messages in position order: the outcome does not depend on how
//! messages were spread over workers. It also sums the epoch's applied
//! events per product and per `sales_hourly` row before they leave it (a
//! combiner), so the differential operators downstream see a record per key
//! and epoch, not one per event.
//!
//! *Commit* gathers everything of epoch `t` on worker 0 and, once the
//! frontier has passed it, hands one [`EpochBatch`] to the driver, which
//! writes it in one transaction. Stock and sales leave the dataflow as net
//! changes per epoch (differential's diffs), so the database applies
//! increments: a product whose stock returns to exactly 0 is written as a
//! change of `-old`. Whether a product is low is decided where its stock
//! and reorder level are committed, in that transaction (the dataflow
//! holds no copy of either that could drift from the database): the
//! dataflow only names the products to check besides those its events
//! touched (*rechecks*: reference data that changed at `t`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use differential_dataflow::VecCollection;
use differential_dataflow::collection::AsCollection;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map, Partition};

use crate::dedup::{AppliedLookup, DedupState, IdKey, LookupError, Seen, id_key};
use crate::model::{ErrorCode, Rejection};
use crate::records::{
    Decoded, Epoch, EpochBatch, Outcome, RawMessage, RefUpdate, SalesDelta, SalesKey, SinkRecord,
};

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

/// Product or supplier ids (a fast hasher: looked up once per event).
type NameSet = HashSet<String, foldhash::fast::RandomState>;

type RecordStream<'scope, D> = Stream<'scope, Epoch, Vec<D>>;

/// What `Validate` emits: every message's outcome (for the commit), and
/// the epoch's applied events already summed per key on this worker (a
/// combiner: the aggregates downstream then sort hundreds of records per
/// epoch, not one per event).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Validated {
    Outcome(Outcome),
    /// Net stock change of a product.
    Stock(String, i64),
    /// Change to a `sales_hourly` row: units, revenue in cents, sale events.
    Sales(SalesKey, (i64, i128, i64)),
}

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
    let mut branches = validate(decoded, refs.clone(), config, stats).partition(3, |v| match v {
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
    .concat(sales.inner.map(|(key, t, (units, revenue_cents, orders))| {
        (SinkRecord::Sales(SalesDelta { key, units, revenue_cents, orders }), t)
    }))
    .concat(rechecks.inner.map(|(r, t, _)| (r, t)))
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

/// The stateful rules: reference data, then deduplication.
fn validate<'scope>(
    decoded: RecordStream<'scope, Decoded>,
    refs: RecordStream<'scope, RefUpdate>,
    config: GraphConfig,
    stats: Arc<GraphStats>,
) -> RecordStream<'scope, Validated> {
    let GraphConfig { dedup_horizon, dedup_max_ids, committed_epoch, mut lookup, preload, preload_floor } =
        config;
    decoded.binary_frontier(
        refs.broadcast(),
        Exchange::new(|d: &Decoded| d.route()),
        Pipeline,
        "Validate",
        move |_cap, _info| {
            let mut pending: BTreeMap<Epoch, (timely::dataflow::operators::Capability<Epoch>, Vec<Decoded>)> =
                BTreeMap::new();
            let mut pending_refs: BTreeMap<Epoch, Vec<RefUpdate>> = BTreeMap::new();
            let mut products: NameSet = NameSet::default();
            let mut suppliers: NameSet = NameSet::default();
            let mut dedup = DedupState::new(dedup_horizon, dedup_max_ids);
            for (id, hash, at) in preload {
                dedup.preload(id, hash, at);
            }
            if let Some(floor) = preload_floor {
                dedup.raise_floor(floor);
            }
            move |(input, frontier), (ref_input, ref_frontier), output| {
                input.for_each(|cap, data| {
                    let Some(t) = cap.least().copied() else { return };
                    let entry = pending.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                    entry.1.append(data);
                });
                ref_input.for_each(|cap, data| {
                    let Some(t) = cap.least().copied() else { return };
                    pending_refs.entry(t).or_default().append(data);
                });
                let ready = |t: &Epoch| !frontier.less_equal(t) && !ref_frontier.less_equal(t);
                // Reference updates at or before the epoch are applied before its messages.
                let mut times: Vec<Epoch> =
                    pending.keys().chain(pending_refs.keys()).copied().filter(|t| ready(t)).collect();
                times.sort_unstable();
                times.dedup();
                for t in times {
                    for u in pending_refs.remove(&t).unwrap_or_default() {
                        match u {
                            RefUpdate::ProductUpsert { product_id, .. } => {
                                products.insert(product_id);
                            }
                            RefUpdate::ProductRemoved { product_id, .. } => {
                                products.remove(&product_id);
                            }
                            RefUpdate::SupplierAdded(s) => {
                                suppliers.insert(s);
                            }
                            RefUpdate::SupplierRemoved(s) => {
                                suppliers.remove(&s);
                            }
                        }
                    }
                    let Some((cap, mut batch)) = pending.remove(&t) else { continue };
                    batch.sort_by_key(|d| d.msg.position());
                    let committed = committed_epoch.load(Ordering::Acquire);
                    dedup.committed(committed);
                    let from_db = match look_up_old_ids(&batch, &dedup, lookup.as_mut(), &stats) {
                        Ok(from_db) => from_db,
                        Err(e) => {
                            // Keep the epoch (and its capability, so the
                            // frontier stays before it) and stop deciding:
                            // the driver sees the failure and ends the run.
                            pending.insert(t, (cap, batch));
                            if let Ok(mut f) = stats.failure.lock() {
                                f.get_or_insert(e);
                            }
                            break;
                        }
                    };
                    let outcomes = decide_epoch(t, batch, &products, &suppliers, &mut dedup, from_db);
                    dedup.evict(committed);
                    stats.dedup_ids.store(dedup.len() as u64, Ordering::Relaxed);
                    stats.dedup_late.store(dedup.late_len() as u64, Ordering::Relaxed);
                    output.session(&cap).give_iterator(outcomes.into_iter());
                }
            }
        },
    )
}

/// The epoch's ids older than the dedup horizon, looked up in one batch:
/// the fingerprint of each that was applied.
fn look_up_old_ids(
    batch: &[Decoded],
    dedup: &DedupState,
    lookup: &mut dyn AppliedLookup,
    stats: &GraphStats,
) -> Result<HashMap<String, u128>, LookupError> {
    let old: Vec<&crate::model::Event> = batch
        .iter()
        .filter_map(|d| d.result.as_deref().ok())
        .filter(|e| !dedup.covers(e.occurred_at))
        .collect();
    let Some(since) = old.iter().map(|e| e.occurred_at).min() else {
        return Ok(HashMap::new());
    };
    let old_ids: Vec<String> =
        old.iter().map(|e| e.event_id.clone()).collect::<HashSet<_>>().into_iter().collect();
    stats.dedup_lookups.fetch_add(1, Ordering::Relaxed);
    let found = lookup.applied(&old_ids, since)?;
    if let Some(held_from) = lookup.held_from() {
        let beyond = old
            .iter()
            .filter(|e| e.occurred_at < held_from && !found.contains_key(&e.event_id))
            .map(|e| e.event_id.as_str())
            .collect::<HashSet<_>>()
            .len();
        stats.dedup_beyond_history.fetch_add(beyond as u64, Ordering::Relaxed);
    }
    Ok(found)
}

/// Decides every message of one epoch, in position order (`from_db`: the
/// answer of [`look_up_old_ids`]).
fn decide_epoch(
    epoch: Epoch,
    batch: Vec<Decoded>,
    products: &NameSet,
    suppliers: &NameSet,
    dedup: &mut DedupState,
    from_db: HashMap<String, u128>,
) -> Vec<Validated> {
    let mut out = Vec::with_capacity(batch.len());
    // The combiner: per product, its net stock change and its sales rows
    // ((hour, source) -> (units, cents, orders); a handful per epoch). One
    // lookup by `&str` per applied event; the id is copied once per product.
    type Sums = (i64, Vec<((chrono::DateTime<chrono::Utc>, crate::model::SaleSource), (i64, i128, i64))>);
    let mut sums: HashMap<String, Sums, foldhash::fast::RandomState> = HashMap::default();
    for Decoded { msg, result } in batch {
        let event = match result {
            Ok(e) => e,
            Err(rejection) => {
                out.push(Validated::Outcome(Outcome::Rejected { msg, rejection }));
                continue;
            }
        };
        if !products.contains(&event.product_id) {
            let rejection = Rejection::new(
                ErrorCode::UnknownProduct,
                format!("field `product_id`: product {:?} is not in the catalog", event.product_id),
                Some(event.event_id.clone()),
            );
            out.push(Validated::Outcome(Outcome::Rejected { msg, rejection: Box::new(rejection) }));
            continue;
        }
        if let Some(s) = event.supplier_id()
            && !suppliers.contains(s)
        {
            let rejection = Rejection::new(
                ErrorCode::UnknownSupplier,
                format!("field `supplier_id`: supplier {s:?} is not known"),
                Some(event.event_id.clone()),
            );
            out.push(Validated::Outcome(Outcome::Rejected { msg, rejection: Box::new(rejection) }));
            continue;
        }
        let hash = event.content_hash();
        let stored = if from_db.is_empty() { None } else { from_db.get(&event.event_id).copied() };
        match dedup.admit(id_key(&event.event_id), hash, event.occurred_at, epoch, stored) {
            Seen::New => {
                let product = match sums.get_mut(event.product_id.as_str()) {
                    Some(p) => p,
                    None => sums.entry(event.product_id.clone()).or_default(),
                };
                product.0 += event.delta();
                if let Some(source) = event.kind().sale_source() {
                    let key = (event.hour(), source);
                    let row = match product.1.iter().position(|(k, _)| *k == key) {
                        Some(i) => &mut product.1[i].1,
                        None => {
                            product.1.push((key, (0, 0, 0)));
                            &mut product.1.last_mut().expect("just pushed").1
                        }
                    };
                    row.0 += i64::from(event.quantity);
                    row.1 += event.revenue_cents();
                    row.2 += 1;
                }
                out.push(Validated::Outcome(Outcome::Applied { msg, event, hash }));
            }
            Seen::Same => {
                let RawMessage { kind, partition, offset, timestamp_ms, .. } = msg;
                out.push(Validated::Outcome(Outcome::Duplicate {
                    msg: RawMessage { kind, partition, offset, timestamp_ms, key: None, value: None },
                }));
            }
            Seen::Conflict => {
                let rejection = Rejection::new(
                    ErrorCode::ConflictingDuplicate,
                    format!("event_id {:?} was applied before with different content", event.event_id),
                    Some(event.event_id.clone()),
                );
                out.push(Validated::Outcome(Outcome::Rejected { msg, rejection: Box::new(rejection) }));
            }
        }
    }
    for (product, (stock, sales)) in sums {
        for ((hour, source), diff) in sales {
            out.push(Validated::Sales((hour, product.clone(), source), diff));
        }
        if stock != 0 {
            out.push(Validated::Stock(product, stock));
        }
    }
    out
}

/// Gathers the records of each epoch on worker 0 and calls `on_epoch` once
/// the frontier has passed it, in epoch order. The batch is not in a
/// canonical order yet: the receiver calls [`EpochBatch::seal`] (off the
/// worker thread, in the driver's committer). Returns nothing; attach a
/// probe to `records` to know how far the commit has got.
pub fn commit_sink<'scope, F>(records: RecordStream<'scope, (SinkRecord, Epoch)>, on_epoch: F)
where
    F: FnMut(EpochBatch) + 'static,
{
    let on_epoch = Rc::new(RefCell::new(on_epoch));
    let mut stash: BTreeMap<Epoch, EpochBatch> = BTreeMap::new();
    records.sink(Exchange::new(|_| 0), "Commit", move |(input, frontier)| {
        input.for_each(|_cap, data| {
            // Records of one epoch come in runs: one map lookup per run.
            let mut records = data.drain(..).peekable();
            while let Some((first, t)) = records.next() {
                let batch = stash.entry(t).or_insert_with(|| EpochBatch { epoch: t, ..Default::default() });
                let rest = std::iter::from_fn(|| records.next_if(|(_, u)| *u == t).map(|(r, _)| r));
                for r in std::iter::once(first).chain(rest) {
                    match r {
                        SinkRecord::Outcome(o) => batch.outcomes.push(o),
                        SinkRecord::Stock(p, d) => batch.stock_deltas.push((p, d)),
                        SinkRecord::Sales(s) => batch.sales.push(s),
                        SinkRecord::Recheck(p) => batch.rechecks.push(p),
                    }
                }
            }
        });
        while let Some((&t, _)) = stash.first_key_value() {
            if frontier.less_equal(&t) {
                break;
            }
            let Some((_, batch)) = stash.pop_first() else { break };
            (on_epoch.borrow_mut())(batch);
        }
    });
}
