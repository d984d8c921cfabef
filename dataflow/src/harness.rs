//! Runs the graph in memory: no Kafka, no PostgreSQL. For tests and
//! benchmarks, and as the smallest example of how a driver feeds the graph.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use timely::dataflow::{InputHandle, ProbeHandle};

use crate::dedup::NoLookup;
use crate::graph::{self, GraphConfig, GraphStats};
use crate::model::{Catalog, EventKind, SaleSource};
use crate::records::{EpochBatch, RawMessage, RefUpdate};

/// Epochs a worker sends before it waits for the dataflow to finish older ones.
const IN_FLIGHT: u64 = 2;

/// A message of `kind` at `offset` of partition 0, without key or
/// timestamp: for tests and examples.
pub fn message(kind: EventKind, offset: i64, value: &str) -> RawMessage {
    RawMessage {
        kind,
        partition: 0,
        offset,
        timestamp_ms: None,
        key: None,
        value: Some(value.as_bytes().to_vec()),
    }
}

/// The value of an `online_order` message (`Online`) or a `store_sale`
/// one (`Store`), as the contract writes them, at 2.50 a unit: for tests
/// and examples.
pub fn sale_json(source: SaleSource, id: &str, product: &str, quantity: u32, occurred_at: &str) -> String {
    let (event_type, party) = match source {
        SaleSource::Online => ("online_order", r#""customer_id":"c""#),
        SaleSource::Store => ("store_sale", r#""store_id":"s""#),
    };
    format!(
        r#"{{"event_id":"{id}","event_type":"{event_type}","occurred_at":"{occurred_at}","product_id":"{product}","quantity":{quantity},"order_id":"o-{id}",{party},"unit_price":2.50}}"#
    )
}

/// The value of a `supplier_restock` message, at 1 a unit: for tests and
/// examples.
pub fn restock_json(id: &str, product: &str, quantity: u32, supplier: &str, occurred_at: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"supplier_restock","occurred_at":"{occurred_at}","product_id":"{product}","quantity":{quantity},"restock_id":"r-{id}","supplier_id":"{supplier}","unit_cost":1}}"#
    )
}

/// Reference updates that load `catalog` (products with their reorder level, suppliers).
pub fn catalog_updates(catalog: &Catalog) -> Vec<RefUpdate> {
    RefUpdate::load(
        catalog.products.iter().map(|p| (&p.product_id, &p.reorder_level)),
        catalog.suppliers.iter().map(|s| &s.supplier_id),
    )
}

/// Runs `epochs` of messages (epoch `i + 1` holds `epochs[i]`) through the
/// graph on `workers` threads, with `catalog` as reference data, and returns the committed batches in epoch order.
pub fn run(workers: usize, catalog: Catalog, epochs: Vec<Vec<RawMessage>>) -> Vec<EpochBatch> {
    run_shares(catalog, split(workers, epochs))
}

/// [`run`], reporting into `stats` (shared by the workers: its gauges hold
/// the last worker's figure, exact with one worker).
pub fn run_with_stats(
    workers: usize,
    catalog: Catalog,
    epochs: Vec<Vec<RawMessage>>,
    stats: Arc<GraphStats>,
) -> Vec<EpochBatch> {
    run_shares_with(catalog, split(workers, epochs), Vec::new(), stats)
}

/// [`run`] with reference data changing as it goes: `reference[i]` is sent
/// in the epoch of `epochs[i]` (so it applies to that epoch's messages, as
/// a driver's refresh does).
pub fn run_with_reference(
    workers: usize,
    catalog: Catalog,
    epochs: Vec<Vec<RawMessage>>,
    reference: Vec<Vec<RefUpdate>>,
) -> Vec<EpochBatch> {
    run_shares_with(catalog, split(workers, epochs), reference, Arc::new(GraphStats::default()))
}

/// Each worker's share of every epoch (message `j` of an epoch goes to
/// worker `j % workers`), as the sources would read them.
pub fn split(workers: usize, epochs: Vec<Vec<RawMessage>>) -> Vec<Vec<Vec<RawMessage>>> {
    let workers = workers.max(1);
    let mut shares: Vec<Vec<Vec<RawMessage>>> =
        (0..workers).map(|_| Vec::with_capacity(epochs.len())).collect();
    for messages in epochs {
        let mut parts: Vec<Vec<RawMessage>> = (0..workers).map(|_| Vec::new()).collect();
        for (j, m) in messages.into_iter().enumerate() {
            parts[j % workers].push(m);
        }
        for (share, part) in shares.iter_mut().zip(parts) {
            share.push(part);
        }
    }
    shares
}

/// [`run`] on input already split by [`split`]: one worker per share. Like
/// the real driver, a committer thread receives each epoch's batch while
/// the workers go on, and seals it ([`EpochBatch::seal`]).
pub fn run_shares(catalog: Catalog, shares: Vec<Vec<Vec<RawMessage>>>) -> Vec<EpochBatch> {
    run_shares_with(catalog, shares, Vec::new(), Arc::new(GraphStats::default()))
}

fn run_shares_with(
    catalog: Catalog,
    shares: Vec<Vec<Vec<RawMessage>>>,
    reference: Vec<Vec<RefUpdate>>,
    stats: Arc<GraphStats>,
) -> Vec<EpochBatch> {
    let reference = Arc::new(reference);
    let workers = shares.len().max(1);
    let rounds = shares.iter().map(Vec::len).max().unwrap_or(0);
    let (sender, receiver) = std::sync::mpsc::channel::<EpochBatch>();
    let committer = std::thread::spawn(move || {
        let mut v: Vec<EpochBatch> = receiver
            .into_iter()
            .map(|mut b| {
                b.seal();
                b
            })
            .collect();
        v.sort_by_key(|b| b.epoch);
        v
    });
    let sink = Arc::new(Mutex::new(Some(sender)));
    let sender_slot = sink.clone();
    let shares: Arc<Vec<Mutex<Vec<Vec<RawMessage>>>>> =
        Arc::new(shares.into_iter().map(Mutex::new).collect());
    let catalog = Arc::new(catalog);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let sink = sink.clone();
        let stats = stats.clone();
        let reference = reference.clone();
        let mut raw = InputHandle::new();
        let mut refs = InputHandle::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let config = GraphConfig {
                dedup_horizon: chrono::Duration::days(7),
                dedup_max_ids: 10_000_000,
                committed_epoch: Arc::new(AtomicU64::new(0)),
                lookup: Box::new(NoLookup),
                preload: Vec::new(),
                preload_floor: None,
            };
            let sender = sink.lock().ok().and_then(|s| s.clone());
            graph::install(
                raw.to_stream(scope),
                refs.to_stream(scope),
                config,
                stats,
                &probe,
                move |batch| {
                    if let Some(tx) = &sender {
                        let _ = tx.send(batch);
                    }
                },
            );
        });
        if index == 0 {
            for u in catalog_updates(&catalog) {
                refs.send(u);
            }
        }
        let mine = shares[index].lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        for (i, mut messages) in mine.into_iter().enumerate() {
            let epoch = i as u64 + 1;
            raw.advance_to(epoch);
            refs.advance_to(epoch);
            if index == 0 {
                for u in reference.get(i).into_iter().flatten() {
                    refs.send(u.clone());
                }
            }
            raw.send_batch(&mut messages);
            // Like a real driver: read on while the dataflow keeps up, at
            // most a few epochs ahead of what it has finished.
            while probe.less_than(&epoch.saturating_sub(IN_FLIGHT)) {
                worker.step_or_park(None);
            }
        }
        let end = rounds as u64 + 1;
        raw.advance_to(end);
        refs.advance_to(end);
        while probe.less_than(&end) {
            worker.step_or_park(None);
        }
    });
    if let Ok(guards) = guards {
        drop(guards.join());
    }
    // The last sender goes: the committer sees the end of its input.
    if let Ok(mut slot) = sender_slot.lock() {
        slot.take();
    }
    committer.join().unwrap_or_default()
}
