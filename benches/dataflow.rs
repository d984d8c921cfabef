//! The dataflow in memory (no Kafka, no PostgreSQL): decode, reference
//! checks, dedup, stock and sales_daily deltas, low-stock set, gathering per
//! epoch; at 1 and 2 workers, in events/s (criterion).
//!
//! `cargo bench --bench dataflow` (STOCKFLOW_BENCH_EVENTS, default 200000)

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dataflow::harness;
use dataflow::records::RawMessage;
use sources::sim::{SimOptions, Simulation, catalog};

fn messages(n: u64) -> (dataflow::Catalog, Vec<Vec<RawMessage>>) {
    let catalog = catalog::generate(1_000, 50);
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z").expect("ts").to_utc();
    let options =
        SimOptions { seed: 1, count: Some(n), start, days: 3.0, duplicate_ratio: 0.01, invalid_ratio: 0.005 };
    let sim = Simulation::new(catalog.clone(), options).expect("catalog");
    let mut epochs = Vec::new();
    let mut current = Vec::with_capacity(10_000);
    for (offset, m) in sim.enumerate() {
        current.push(RawMessage {
            kind: m.kind,
            partition: 0,
            offset: offset as i64,
            timestamp_ms: None,
            key: m.key.map(String::into_bytes),
            value: Some(m.value),
        });
        if current.len() == 10_000 {
            epochs.push(std::mem::take(&mut current));
        }
    }
    epochs.push(current);
    (catalog, epochs)
}

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("STOCKFLOW_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let (catalog, epochs) = messages(n);
    let mut group = c.benchmark_group("dataflow");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    for workers in [1, 2] {
        group.bench_function(format!("{workers}_workers"), |b| {
            // The input is built (and split over the workers, as the
            // sources' partitions would be) and the output dropped outside
            // the timed region. Timed: the workers and the committer
            // thread's sealing, until the last epoch is sealed.
            b.iter_batched(
                || (catalog.clone(), harness::split(workers, epochs.clone())),
                |(catalog, shares)| harness::run_shares(catalog, shares),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
