//! Decode + validate one message of each type (criterion).
//!
//! `cargo bench --bench decode`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dataflow::EventKind;
use dataflow::validate::decode;
use std::hint::black_box;

const ORDER: &str = r#"{"event_id":"b5c5488e-7609-4fe0-beff-8a17b5ea8d36","event_type":"online_order","occurred_at":"2026-11-25T14:03:07.123Z","product_id":"SKU-000012","quantity":3,"order_id":"WEB-000000001","customer_id":"CUST-041734","unit_price":5.80}"#;
const SALE: &str = r#"{"event_id":"298bbae1-7af5-468c-b470-39e657fbae92","event_type":"store_sale","occurred_at":"2026-11-25T13:45:17.217Z","product_id":"SKU-000041","quantity":1,"order_id":"S001-R000000003","store_id":"S001","unit_price":44.95}"#;
const RESTOCK: &str = r#"{"event_id":"7391671d-7415-4fbf-b2a6-fbe243901a0b","event_type":"supplier_restock","occurred_at":"2026-11-25T10:45:43.578Z","product_id":"SKU-000058","quantity":18,"restock_id":"PO-000000002","supplier_id":"SUP-0014","unit_cost":55.83}"#;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, kind, value) in [
        ("online_order", EventKind::OnlineOrder, ORDER),
        ("store_sale", EventKind::StoreSale, SALE),
        ("supplier_restock", EventKind::SupplierRestock, RESTOCK),
        ("rejected_malformed", EventKind::OnlineOrder, "{\"event_id\": \"trunc"),
    ] {
        group.bench_function(name, |b| b.iter(|| decode(kind, Some(black_box(value.as_bytes())))));
    }
    group.bench_function("content_hash", |b| {
        let e = decode(EventKind::OnlineOrder, Some(ORDER.as_bytes())).expect("valid");
        b.iter(|| black_box(&e).content_hash())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
