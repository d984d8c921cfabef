//! *Validate*: the stateful rules, as a timely operator over a state struct.
//!
//! The rules that need state are applied here, in the contract's order:
//! `unknown_product`, `unknown_supplier`, then deduplication by `event_id`
//! (`conflicting_duplicate`, or a silent duplicate). The stateless rules ran
//! before, in [`crate::validate::decode`].
//!
//! Why an epoch is held: the outcome of a message must not depend on how
//! messages were spread over workers or how reference data raced them. So
//! the operator stashes the messages of epoch `t` (with a capability for
//! `t`) until both its inputs, the messages and the broadcast reference
//! updates, have passed `t`; then it applies the reference updates of every
//! epoch up to `t` and decides `t`'s messages in position order
//! ([`crate::records::RawMessage::position`]). A message is decided exactly once: if the
//! look-up of old ids fails, the epoch stays stashed (its capability holds
//! the frontier before it) and the failure goes to [`GraphStats::failure`]
//! for the driver, which stops the run; the epoch is read again at the next
//! start.
//!
//! It also sums the epoch's applied events per product and per
//! `sales_hourly` row before they leave (a combiner): the differential
//! operators downstream see a record per key and epoch, not one per event.
//!
//! [`Validator`] holds all of that state and knows nothing of timely (the
//! capability is a type parameter), so the rules are unit-tested below
//! without a dataflow; [`ValidateExt::validate`] is the operator around it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;

use super::{GraphConfig, GraphStats, RecordStream};
use crate::dedup::{AppliedLookup, DedupState, Seen, id_key};
use crate::model::{ErrorCode, Event, Rejection, SaleSource};
use crate::records::{Decoded, Epoch, Outcome, RefUpdate, SalesKey, SalesSums};

/// What `Validate` emits: every message's outcome (for the commit), and
/// the epoch's applied events already summed per key on this worker.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Validated {
    /// What became of one message.
    Outcome(Outcome),
    /// Net stock change of a product.
    Stock(String, i64),
    /// Change to a `sales_hourly` row.
    Sales(SalesKey, SalesSums),
}

/// Product or supplier ids (a fast hasher: looked up once per event).
type NameSet = HashSet<String, foldhash::fast::RandomState>;

/// The *Validate* operator on a stream of decoded messages.
pub(crate) trait ValidateExt<'scope> {
    /// Applies the stateful rules to each message once both inputs have
    /// passed its epoch. Messages are exchanged by event id (copies of one
    /// id meet on one worker); `refs` is broadcast to every worker.
    ///
    /// ```text
    /// let validated = decoded.validate(refs, config, stats);
    /// ```
    fn validate(
        self,
        refs: RecordStream<'scope, RefUpdate>,
        config: GraphConfig,
        stats: Arc<GraphStats>,
    ) -> RecordStream<'scope, Validated>;
}

impl<'scope> ValidateExt<'scope> for RecordStream<'scope, Decoded> {
    fn validate(
        self,
        refs: RecordStream<'scope, RefUpdate>,
        config: GraphConfig,
        stats: Arc<GraphStats>,
    ) -> RecordStream<'scope, Validated> {
        self.binary_frontier(
            refs.broadcast(),
            Exchange::new(|d: &Decoded| d.route()),
            Pipeline,
            "Validate",
            move |_cap, _info| {
                let mut state = Validator::new(config, stats);
                move |(input, frontier), (ref_input, ref_frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(t) = cap.least().copied() else { return };
                        state.stash_messages(t, || cap.delayed(&t, 0), data);
                    });
                    ref_input.for_each(|cap, data| {
                        let Some(t) = cap.least().copied() else { return };
                        state.stash_refs(t, data);
                    });
                    let ready = |t: &Epoch| !frontier.less_equal(t) && !ref_frontier.less_equal(t);
                    for (cap, validated) in state.decide_ready(ready) {
                        output.session(&cap).give_iterator(validated.into_iter());
                    }
                }
            },
        )
    }
}

/// The state of one worker's *Validate*: stashed epochs, the reference
/// data known so far, the dedup memory and the look-up of older ids. `C`
/// is what is kept with a stashed epoch (timely's capability; anything in
/// tests).
pub(crate) struct Validator<C> {
    /// Messages by epoch, with the capability to emit their outcomes.
    pending: BTreeMap<Epoch, (C, Vec<Decoded>)>,
    /// Reference updates by epoch, not applied yet.
    pending_refs: BTreeMap<Epoch, Vec<RefUpdate>>,
    products: NameSet,
    suppliers: NameSet,
    dedup: DedupState,
    lookup: Box<dyn AppliedLookup>,
    /// The last epoch the driver committed (it lets go of late ids).
    committed_epoch: Arc<AtomicU64>,
    stats: Arc<GraphStats>,
}

impl<C> Validator<C> {
    /// A validator with `config`'s dedup settings and start-up ids.
    pub(crate) fn new(config: GraphConfig, stats: Arc<GraphStats>) -> Self {
        let GraphConfig { dedup_horizon, dedup_max_ids, committed_epoch, lookup, preload, preload_floor } =
            config;
        let mut dedup = DedupState::new(dedup_horizon, dedup_max_ids);
        for (id, hash, at) in preload {
            dedup.preload(id, hash, at);
        }
        if let Some(floor) = preload_floor {
            dedup.raise_floor(floor);
        }
        Validator {
            pending: BTreeMap::new(),
            pending_refs: BTreeMap::new(),
            products: NameSet::default(),
            suppliers: NameSet::default(),
            dedup,
            lookup,
            committed_epoch,
            stats,
        }
    }

    /// Stashes messages of epoch `t`; `hold` makes the capability the
    /// first time `t` is seen.
    pub(crate) fn stash_messages(&mut self, t: Epoch, hold: impl FnOnce() -> C, data: &mut Vec<Decoded>) {
        self.pending.entry(t).or_insert_with(|| (hold(), Vec::new())).1.append(data);
    }

    /// Stashes reference updates of epoch `t`.
    pub(crate) fn stash_refs(&mut self, t: Epoch, data: &mut Vec<RefUpdate>) {
        self.pending_refs.entry(t).or_default().append(data);
    }

    /// Decides every stashed epoch that `ready` says both inputs have
    /// passed, in epoch order; reference updates of an epoch apply before
    /// its messages. Stops at the first epoch whose look-up fails: that
    /// epoch and the later ones stay stashed, and the failure is in
    /// [`GraphStats::failure`].
    pub(crate) fn decide_ready(&mut self, ready: impl Fn(&Epoch) -> bool) -> Vec<(C, Vec<Validated>)> {
        let mut times: Vec<Epoch> =
            self.pending.keys().chain(self.pending_refs.keys()).copied().filter(|t| ready(t)).collect();
        times.sort_unstable();
        times.dedup();
        let mut out = Vec::new();
        for t in times {
            for u in self.pending_refs.remove(&t).unwrap_or_default() {
                self.apply_reference(u);
            }
            let Some((cap, mut batch)) = self.pending.remove(&t) else { continue };
            batch.sort_by_key(|d| d.msg.position());
            let committed = self.committed_epoch.load(Ordering::Acquire);
            self.dedup.committed(committed);
            let from_db = match self.look_up_old_ids(&batch) {
                Ok(from_db) => from_db,
                Err(e) => {
                    // Keep the epoch (and its capability, so the frontier
                    // stays before it) and stop deciding: the driver sees
                    // the failure and ends the run.
                    self.pending.insert(t, (cap, batch));
                    if let Ok(mut f) = self.stats.failure.lock() {
                        f.get_or_insert(e);
                    }
                    break;
                }
            };
            let validated = self.decide_epoch(t, batch, &from_db);
            self.dedup.evict(committed);
            self.stats.dedup_ids.store(self.dedup.len() as u64, Ordering::Relaxed);
            self.stats.dedup_late.store(self.dedup.late_len() as u64, Ordering::Relaxed);
            out.push((cap, validated));
        }
        out
    }

    fn apply_reference(&mut self, u: RefUpdate) {
        match u {
            RefUpdate::ProductUpsert { product_id, .. } => {
                self.products.insert(product_id);
            }
            RefUpdate::ProductRemoved { product_id, .. } => {
                self.products.remove(&product_id);
            }
            RefUpdate::SupplierAdded(s) => {
                self.suppliers.insert(s);
            }
            RefUpdate::SupplierRemoved(s) => {
                self.suppliers.remove(&s);
            }
        }
    }

    /// The epoch's ids older than the dedup horizon, looked up in one
    /// batch: the fingerprint of each that was applied.
    fn look_up_old_ids(
        &mut self,
        batch: &[Decoded],
    ) -> Result<HashMap<String, u128>, crate::dedup::LookupError> {
        let old: Vec<&Event> = batch
            .iter()
            .filter_map(|d| d.result.as_deref().ok())
            .filter(|e| !self.dedup.covers(e.occurred_at))
            .collect();
        let Some(since) = old.iter().map(|e| e.occurred_at).min() else {
            return Ok(HashMap::new());
        };
        let old_ids: Vec<String> =
            old.iter().map(|e| e.event_id.clone()).collect::<HashSet<_>>().into_iter().collect();
        self.stats.dedup_lookups.fetch_add(1, Ordering::Relaxed);
        let found = self.lookup.applied(&old_ids, since)?;
        if let Some(held_from) = self.lookup.held_from() {
            let beyond = old
                .iter()
                .filter(|e| e.occurred_at < held_from && !found.contains_key(&e.event_id))
                .map(|e| e.event_id.as_str())
                .collect::<HashSet<_>>()
                .len();
            self.stats.dedup_beyond_history.fetch_add(beyond as u64, Ordering::Relaxed);
        }
        Ok(found)
    }

    /// Decides every message of one epoch, in position order (`from_db`:
    /// the answer of [`Validator::look_up_old_ids`]).
    fn decide_epoch(
        &mut self,
        epoch: Epoch,
        batch: Vec<Decoded>,
        from_db: &HashMap<String, u128>,
    ) -> Vec<Validated> {
        let mut out = Vec::with_capacity(batch.len());
        let mut sums = EpochSums::default();
        for Decoded { msg, result } in batch {
            let event = match result {
                Ok(e) => e,
                Err(rejection) => {
                    out.push(Validated::Outcome(Outcome::Rejected { msg, rejection }));
                    continue;
                }
            };
            if let Some(rejection) = self.reference_rule(&event) {
                out.push(Validated::Outcome(Outcome::Rejected { msg, rejection: Box::new(rejection) }));
                continue;
            }
            let hash = event.content_hash();
            let stored = if from_db.is_empty() { None } else { from_db.get(&event.event_id).copied() };
            let outcome =
                match self.dedup.admit(id_key(&event.event_id), hash, event.occurred_at, epoch, stored) {
                    Seen::New => {
                        sums.add(&event);
                        Outcome::Applied { msg, event, hash }
                    }
                    Seen::Same => Outcome::Duplicate { msg: msg.without_payload() },
                    Seen::Conflict => {
                        let rejection = Rejection::new(
                            ErrorCode::ConflictingDuplicate,
                            format!(
                                "event_id {:?} was applied before with different content",
                                event.event_id
                            ),
                            Some(event.event_id.clone()),
                        );
                        Outcome::Rejected { msg, rejection: Box::new(rejection) }
                    }
                };
            out.push(Validated::Outcome(outcome));
        }
        sums.emit(&mut out);
        out
    }

    /// `unknown_product`, then `unknown_supplier`: the rules that need
    /// reference data.
    fn reference_rule(&self, event: &Event) -> Option<Rejection> {
        if !self.products.contains(&event.product_id) {
            return Some(Rejection::new(
                ErrorCode::UnknownProduct,
                format!("field `product_id`: product {:?} is not in the catalog", event.product_id),
                Some(event.event_id.clone()),
            ));
        }
        if let Some(s) = event.supplier_id()
            && !self.suppliers.contains(s)
        {
            return Some(Rejection::new(
                ErrorCode::UnknownSupplier,
                format!("field `supplier_id`: supplier {s:?} is not known"),
                Some(event.event_id.clone()),
            ));
        }
        None
    }
}

/// The combiner of one epoch: per product, its net stock change and its
/// sales rows (`(hour, source)`: a handful per epoch, a short list). One
/// look-up by `&str` per applied event; the id is copied once per product.
#[derive(Default)]
struct EpochSums {
    by_product: HashMap<String, ProductSums, foldhash::fast::RandomState>,
}

#[derive(Default)]
struct ProductSums {
    stock: i64,
    sales: Vec<((DateTime<Utc>, SaleSource), SalesSums)>,
}

impl EpochSums {
    fn add(&mut self, event: &Event) {
        let product = match self.by_product.get_mut(event.product_id.as_str()) {
            Some(p) => p,
            None => self.by_product.entry(event.product_id.clone()).or_default(),
        };
        product.stock += event.delta();
        if let Some(source) = event.kind().sale_source() {
            let key = (event.hour(), source);
            let sale = SalesSums::sale(event.quantity, event.revenue_cents());
            match product.sales.iter_mut().find(|(k, _)| *k == key) {
                Some((_, row)) => *row += sale,
                None => product.sales.push((key, sale)),
            }
        }
    }

    fn emit(self, out: &mut Vec<Validated>) {
        for (product, ProductSums { stock, sales }) in self.by_product {
            for ((hour, source), sums) in sales {
                out.push(Validated::Sales((hour, product.clone(), source), sums));
            }
            if stock != 0 {
                out.push(Validated::Stock(product, stock));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use chrono::{DateTime, Utc};

    use super::{Validated, Validator};
    use crate::dedup::{AppliedLookup, LookupError, NoLookup};
    use crate::graph::{GraphConfig, GraphStats};
    use crate::harness;
    use crate::model::{ErrorCode, EventKind, SaleSource};
    use crate::records::{Decoded, Outcome, RefUpdate, SalesSums};

    fn config(lookup: Box<dyn AppliedLookup>) -> GraphConfig {
        GraphConfig {
            dedup_horizon: chrono::Duration::days(7),
            dedup_max_ids: 1_000,
            committed_epoch: Arc::new(AtomicU64::new(0)),
            lookup,
            preload: Vec::new(),
            preload_floor: None,
        }
    }

    fn validator(lookup: Box<dyn AppliedLookup>) -> (Validator<u64>, Arc<GraphStats>) {
        let stats = Arc::new(GraphStats::default());
        (Validator::new(config(lookup), stats.clone()), stats)
    }

    fn sale(id: &str, product: &str, qty: u32, at: &str) -> String {
        harness::sale_json(SaleSource::Online, id, product, qty, at)
    }

    fn restock(id: &str, product: &str, qty: u32, supplier: &str) -> String {
        harness::restock_json(id, product, qty, supplier, AT)
    }

    fn decoded(kind: EventKind, offset: i64, value: &str) -> Decoded {
        Decoded::new(harness::message(kind, offset, value))
    }

    fn refs() -> Vec<RefUpdate> {
        vec![
            RefUpdate::ProductUpsert { product_id: "P1".into(), reorder_level: 1 },
            RefUpdate::ProductUpsert { product_id: "P2".into(), reorder_level: 1 },
            RefUpdate::SupplierAdded("S1".into()),
        ]
    }

    /// `(offset, code)` of each outcome: `None` applied, `Some(None)` a
    /// duplicate, `Some(Some(code))` a rejection.
    fn outcomes(v: &[Validated]) -> Vec<(i64, Option<Option<ErrorCode>>)> {
        v.iter()
            .filter_map(|v| match v {
                Validated::Outcome(Outcome::Applied { msg, .. }) => Some((msg.offset, None)),
                Validated::Outcome(Outcome::Duplicate { msg }) => Some((msg.offset, Some(None))),
                Validated::Outcome(Outcome::Rejected { msg, rejection }) => {
                    Some((msg.offset, Some(Some(rejection.code))))
                }
                _ => None,
            })
            .collect()
    }

    const AT: &str = "2026-11-20T10:00:00Z";

    #[test]
    fn an_epoch_waits_until_both_inputs_passed_it() {
        let (mut v, _) = validator(Box::new(NoLookup));
        v.stash_refs(1, &mut refs());
        v.stash_messages(1, || 1, &mut vec![decoded(EventKind::OnlineOrder, 0, &sale("a", "P1", 1, AT))]);
        assert!(v.decide_ready(|_| false).is_empty(), "nothing is decided before the frontier passes");
        let done = v.decide_ready(|t| *t <= 1);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, 1, "the outcomes leave under the epoch's own capability");
        assert_eq!(outcomes(&done[0].1), [(0, None)]);
        assert!(v.decide_ready(|_| true).is_empty(), "an epoch is decided once");
    }

    #[test]
    fn reference_data_of_an_epoch_applies_to_its_messages_not_earlier_ones() {
        let (mut v, _) = validator(Box::new(NoLookup));
        v.stash_refs(1, &mut vec![RefUpdate::ProductUpsert { product_id: "P1".into(), reorder_level: 1 }]);
        v.stash_messages(1, || 1, &mut vec![decoded(EventKind::OnlineOrder, 0, &sale("a", "P2", 1, AT))]);
        v.stash_refs(2, &mut vec![RefUpdate::ProductUpsert { product_id: "P2".into(), reorder_level: 1 }]);
        v.stash_messages(2, || 2, &mut vec![decoded(EventKind::OnlineOrder, 1, &sale("b", "P2", 1, AT))]);
        let done = v.decide_ready(|_| true);
        assert_eq!(done.len(), 2);
        assert_eq!(outcomes(&done[0].1), [(0, Some(Some(ErrorCode::UnknownProduct)))]);
        assert_eq!(outcomes(&done[1].1), [(1, None)]);
    }

    #[test]
    fn rules_in_the_contracts_order_and_messages_in_position_order() {
        let (mut v, _) = validator(Box::new(NoLookup));
        v.stash_refs(1, &mut refs());
        // Arrival order is not position order: the later offset comes first.
        let mut batch = vec![
            decoded(EventKind::OnlineOrder, 5, &sale("x", "P1", 2, AT)),
            decoded(EventKind::OnlineOrder, 4, &sale("x", "P1", 1, AT)),
            decoded(EventKind::OnlineOrder, 6, &sale("x", "P1", 1, AT)),
            decoded(EventKind::OnlineOrder, 7, &sale("y", "NOPE", 1, AT)),
            decoded(EventKind::SupplierRestock, 0, &restock("z", "NOPE", 1, "S9")),
            decoded(EventKind::SupplierRestock, 1, &restock("w", "P1", 1, "S9")),
            decoded(EventKind::OnlineOrder, 8, "{not json"),
        ];
        v.stash_messages(1, || 1, &mut batch);
        let done = v.decide_ready(|_| true);
        assert_eq!(
            outcomes(&done[0].1),
            [
                (4, None),
                (5, Some(Some(ErrorCode::ConflictingDuplicate))),
                (6, Some(None)),
                (7, Some(Some(ErrorCode::UnknownProduct))),
                (8, Some(Some(ErrorCode::MalformedJson))),
                // A restock naming an unknown product is told of the product first.
                (0, Some(Some(ErrorCode::UnknownProduct))),
                (1, Some(Some(ErrorCode::UnknownSupplier))),
            ]
        );
    }

    #[test]
    fn applied_events_are_summed_per_product_and_sales_row() {
        let (mut v, _) = validator(Box::new(NoLookup));
        v.stash_refs(1, &mut refs());
        let mut batch = vec![
            decoded(EventKind::OnlineOrder, 0, &sale("a", "P1", 2, "2026-11-20T10:05:00Z")),
            decoded(EventKind::OnlineOrder, 1, &sale("b", "P1", 3, "2026-11-20T10:55:00Z")),
            decoded(EventKind::OnlineOrder, 2, &sale("c", "P1", 1, "2026-11-20T11:00:00Z")),
            decoded(EventKind::SupplierRestock, 0, &restock("d", "P1", 6, "S1")),
            decoded(EventKind::SupplierRestock, 1, &restock("e", "P2", 4, "S1")),
            decoded(EventKind::OnlineOrder, 3, &sale("f", "P2", 4, AT)),
        ];
        v.stash_messages(1, || 1, &mut batch);
        let done = v.decide_ready(|_| true);
        let mut stock: Vec<(String, i64)> = Vec::new();
        let mut sales: HashMap<(DateTime<Utc>, String, SaleSource), SalesSums> = HashMap::new();
        for r in &done[0].1 {
            match r {
                Validated::Stock(p, d) => stock.push((p.clone(), *d)),
                Validated::Sales(k, s) => assert!(sales.insert(k.clone(), *s).is_none(), "one row per key"),
                Validated::Outcome(_) => {}
            }
        }
        // Each product's sales and restocks cancel out: no stock record.
        assert!(stock.is_empty(), "{stock:?}");
        let hour = |h: &str| DateTime::parse_from_rfc3339(h).expect("ts").to_utc();
        let row = |h: &str, p: &str| sales[&(hour(h), p.to_string(), SaleSource::Online)];
        assert_eq!(row("2026-11-20T10:00:00Z", "P1"), SalesSums { units: 5, revenue_cents: 1250, orders: 2 });
        assert_eq!(row("2026-11-20T11:00:00Z", "P1"), SalesSums { units: 1, revenue_cents: 250, orders: 1 });
        assert_eq!(row("2026-11-20T10:00:00Z", "P2"), SalesSums { units: 4, revenue_cents: 1000, orders: 1 });
        assert_eq!(sales.len(), 3);
    }

    #[test]
    fn net_stock_change_per_product() {
        let (mut v, _) = validator(Box::new(NoLookup));
        v.stash_refs(1, &mut refs());
        let mut batch = vec![
            decoded(EventKind::OnlineOrder, 0, &sale("a", "P1", 2, AT)),
            decoded(EventKind::SupplierRestock, 0, &restock("b", "P1", 7, "S1")),
            decoded(EventKind::StoreSale, 0, &harness::sale_json(SaleSource::Store, "c", "P2", 3, AT)),
        ];
        v.stash_messages(1, || 1, &mut batch);
        let done = v.decide_ready(|_| true);
        let mut stock: Vec<(String, i64)> = done[0]
            .1
            .iter()
            .filter_map(|r| match r {
                Validated::Stock(p, d) => Some((p.clone(), *d)),
                _ => None,
            })
            .collect();
        stock.sort();
        assert_eq!(stock, [("P1".to_string(), 5), ("P2".to_string(), -3)]);
    }

    /// A store that knows one applied id, or fails.
    struct Store {
        known: HashMap<String, u128>,
        fail: bool,
    }

    impl AppliedLookup for Store {
        fn applied(
            &mut self,
            ids: &[String],
            _since: DateTime<Utc>,
        ) -> Result<HashMap<String, u128>, LookupError> {
            if self.fail {
                return Err(LookupError::Failed("the store is away".into()));
            }
            Ok(ids.iter().filter_map(|i| self.known.get(i).map(|h| (i.clone(), *h))).collect())
        }
    }

    #[test]
    fn ids_older_than_the_horizon_are_looked_up() {
        let old = sale("old", "P1", 1, "2020-01-01T00:00:00Z");
        let hash = decoded(EventKind::OnlineOrder, 0, &old).result.expect("valid").content_hash();
        let store = Store { known: [("old".to_string(), hash)].into(), fail: false };
        let (mut v, stats) = validator(Box::new(store));
        v.stash_refs(1, &mut refs());
        // The newest event seen sets the horizon (7 days before it).
        v.stash_messages(1, || 1, &mut vec![decoded(EventKind::OnlineOrder, 0, &sale("new", "P1", 1, AT))]);
        let mut batch = vec![
            decoded(EventKind::OnlineOrder, 1, &old),
            decoded(EventKind::OnlineOrder, 2, &sale("old2", "P1", 1, "2020-01-01T00:00:00Z")),
            decoded(EventKind::OnlineOrder, 3, &sale("recent", "P1", 1, "2026-11-19T00:00:00Z")),
        ];
        v.stash_messages(2, || 2, &mut batch);
        let done = v.decide_ready(|_| true);
        assert_eq!(outcomes(&done[0].1), [(0, None)]);
        assert_eq!(stats.dedup_lookups.load(Ordering::Relaxed), 1, "one look-up, for the epoch with old ids");
        assert_eq!(outcomes(&done[1].1), [(1, Some(None)), (2, None), (3, None)]);
    }

    #[test]
    fn a_failed_look_up_holds_the_epoch_and_reports_it() {
        let store = Store { known: HashMap::new(), fail: true };
        let (mut v, stats) = validator(Box::new(store));
        v.stash_refs(1, &mut refs());
        v.stash_messages(1, || 1, &mut vec![decoded(EventKind::OnlineOrder, 0, &sale("a", "P1", 1, AT))]);
        let old = sale("b", "P1", 1, "2020-01-01T00:00:00Z");
        v.stash_messages(2, || 2, &mut vec![decoded(EventKind::OnlineOrder, 1, &old)]);
        v.stash_messages(3, || 3, &mut vec![decoded(EventKind::OnlineOrder, 2, &sale("c", "P1", 1, AT))]);
        let done = v.decide_ready(|_| true);
        assert_eq!(done.len(), 1, "the epoch before the failed one is decided, no later one");
        assert_eq!(stats.failure(), Some(LookupError::Failed("the store is away".into())));
        assert_eq!(
            v.pending.keys().copied().collect::<Vec<_>>(),
            [2, 3],
            "both are kept, with their capabilities"
        );
    }
}
