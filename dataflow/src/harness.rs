//! Runs the graph in memory: no Kafka, no PostgreSQL. For tests and
//! benchmarks, and as the smallest example of how a driver feeds the graph.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};

use crate::dedup::NoLookup;
use crate::graph::{self, GraphConfig, GraphStats};
use crate::model::Catalog;
use crate::records::{EpochBatch, RawMessage, RefUpdate};

/// Epochs a worker sends before it waits for the dataflow to finish older ones.
const IN_FLIGHT: u64 = 2;

/// Reference updates that load `catalog` (products with their reorder level, suppliers).
pub fn catalog_updates(catalog: &Catalog) -> Vec<RefUpdate> {
    let mut v: Vec<RefUpdate> = catalog
        .products
        .iter()
        .map(|p| RefUpdate::ProductUpsert {
            product_id: p.product_id.clone(),
            reorder_level: p.reorder_level,
        })
        .collect();
    v.extend(catalog.suppliers.iter().map(|s| RefUpdate::SupplierAdded(s.supplier_id.clone())));
    v
}

/// Runs `epochs` of messages (epoch `i + 1` holds `epochs[i]`) through the
/// graph on `workers` threads, with `catalog` as reference data and opening
/// stock, and returns the committed batches in epoch order.
pub fn run(workers: usize, catalog: Catalog, epochs: Vec<Vec<RawMessage>>) -> Vec<EpochBatch> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let rounds = epochs.len();
    // Each worker gets its share of every epoch up front (message j of an
    // epoch goes to worker j % workers), to send without copying.
    let workers = workers.max(1);
    let mut shares: Vec<Vec<Vec<RawMessage>>> = (0..workers).map(|_| Vec::with_capacity(rounds)).collect();
    for messages in epochs {
        let mut split: Vec<Vec<RawMessage>> = (0..workers).map(|_| Vec::new()).collect();
        for (j, m) in messages.into_iter().enumerate() {
            split[j % workers].push(m);
        }
        for (share, part) in shares.iter_mut().zip(split) {
            share.push(part);
        }
    }
    let shares: Arc<Vec<Mutex<Vec<Vec<RawMessage>>>>> =
        Arc::new(shares.into_iter().map(Mutex::new).collect());
    let catalog = Arc::new(catalog);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let sink = sink.clone();
        let mut raw = InputHandle::new();
        let mut refs = InputHandle::new();
        let probe = ProbeHandle::new();
        let mut opening = worker.dataflow::<u64, _, _>(|scope| {
            let (opening_input, opening) = scope.new_collection::<String, i64>();
            let config = GraphConfig {
                dedup_horizon: chrono::Duration::days(7),
                dedup_max_ids: 10_000_000,
                committed_epoch: Arc::new(AtomicU64::new(0)),
                lookup: Box::new(NoLookup),
                preload: Vec::new(),
                preload_floor: None,
            };
            let records = graph::build(
                raw.to_stream(scope),
                refs.to_stream(scope),
                opening,
                config,
                Arc::new(GraphStats::default()),
            );
            let records = records.probe_with(&probe);
            graph::commit_sink(records, move |batch| {
                if let Ok(mut v) = sink.lock() {
                    v.push(batch);
                }
            });
            opening_input
        });
        if index == 0 {
            for u in catalog_updates(&catalog) {
                refs.send(u);
            }
            for p in &catalog.products {
                opening.update(p.product_id.clone(), p.quantity_on_hand);
            }
        }
        let mine = shares[index].lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        for (i, mut messages) in mine.into_iter().enumerate() {
            let epoch = i as u64 + 1;
            raw.advance_to(epoch);
            refs.advance_to(epoch);
            opening.advance_to(epoch);
            opening.flush();
            raw.send_batch(&mut messages);
            // Like a real driver: read on while the dataflow keeps up, at
            // most a few epochs ahead of what it has finished.
            while probe.less_than(&epoch.saturating_sub(IN_FLIGHT)) {
                worker.step();
            }
        }
        let end = rounds as u64 + 1;
        raw.advance_to(end);
        refs.advance_to(end);
        opening.advance_to(end);
        opening.flush();
        while probe.less_than(&end) {
            worker.step();
        }
    });
    if let Ok(guards) = guards {
        drop(guards.join());
    }
    let mut v = out.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    v.sort_by_key(|b| b.epoch);
    for b in &mut v {
        b.seal();
    }
    v
}
