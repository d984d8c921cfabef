//! The processor's Prometheus metrics and the tiny HTTP endpoint serving them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    pub worker: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabel {
    pub what: &'static str,
}

/// Every metric of `stockflow run`.
pub struct Metrics {
    pub registry: Registry,
    pub messages: Family<OutcomeLabel, Counter>,
    pub rejected: Family<CodeLabel, Counter>,
    pub epochs_committed: Counter,
    pub commit_seconds: Histogram,
    pub retries: Family<WhatLabel, Counter>,
    pub consumer_errors: Counter,
    pub lag_seconds: Gauge<f64, AtomicU64>,
    pub consumer_lag_messages: Family<WorkerLabel, Gauge>,
    pub read_delay_seconds: Family<WorkerLabel, Gauge<f64, AtomicU64>>,
    pub last_committed_epoch: Gauge,
    pub low_stock_products: Gauge,
    pub stock_alerts: Counter,
    pub dedup_ids: Gauge,
    pub waiting: Family<WhatLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("stockflow");
        let messages = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "messages",
            "Input messages by outcome (applied, duplicate, rejected)",
            messages.clone(),
        );
        let rejected = Family::<CodeLabel, Counter>::default();
        registry.register("rejected", "Rejected messages by contract code", rejected.clone());
        let epochs_committed = Counter::default();
        registry.register("epochs_committed", "Epochs committed to PostgreSQL", epochs_committed.clone());
        let commit_seconds =
            Histogram::new([0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "commit_duration_seconds",
            "Time to commit one epoch (transaction + output messages)",
            commit_seconds.clone(),
        );
        let retries = Family::<WhatLabel, Counter>::default();
        registry.register("retries", "Retries after a retriable error, by dependency", retries.clone());
        let consumer_errors = Counter::default();
        registry.register(
            "consumer_errors",
            "Errors reported by the Kafka consumers",
            consumer_errors.clone(),
        );
        let lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "lag_seconds",
            "Commit time minus the oldest Kafka timestamp of the last committed epoch",
            lag_seconds.clone(),
        );
        let consumer_lag_messages = Family::<WorkerLabel, Gauge>::default();
        registry.register(
            "consumer_lag_messages",
            "Messages behind the brokers' high watermarks, per worker (as brokers report them)",
            consumer_lag_messages.clone(),
        );
        let read_delay_seconds = Family::<WorkerLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "read_delay_seconds",
            "Read time minus the Kafka timestamp of the last message each worker read",
            read_delay_seconds.clone(),
        );
        let last_committed_epoch = Gauge::default();
        registry.register("last_committed_epoch", "The last committed epoch", last_committed_epoch.clone());
        let low_stock_products = Gauge::default();
        registry.register(
            "low_stock_products",
            "Products whose last stock alert said low (at or below their reorder level)",
            low_stock_products.clone(),
        );
        let stock_alerts = Counter::default();
        registry.register("stock_alerts", "Stock alerts raised (low and recovered)", stock_alerts.clone());
        let dedup_ids = Gauge::default();
        registry.register("dedup_ids", "Event ids held in the in-memory dedup horizon", dedup_ids.clone());
        let waiting = Family::<WhatLabel, Gauge>::default();
        registry.register("waiting", "1 while waiting for an unavailable dependency", waiting.clone());
        Arc::new(Metrics {
            registry,
            messages,
            rejected,
            epochs_committed,
            commit_seconds,
            retries,
            consumer_errors,
            lag_seconds,
            consumer_lag_messages,
            read_delay_seconds,
            last_committed_epoch,
            low_stock_products,
            stock_alerts,
            dedup_ids,
            waiting,
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` (Prometheus text format) and `GET /healthz` on `addr`.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics on /metrics");
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Read the request head, however the client's writes were
                // split into segments (up to 4 KiB, 5 s).
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout_at(deadline, socket.read(&mut buf[n..])).await {
                        Ok(Ok(0)) => break,
                        Ok(Ok(read)) => n += read,
                        _ => return,
                    }
                }
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, content_type, body) = match path {
                    "/metrics" => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        metrics.render(),
                    ),
                    "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                    _ => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(())
}
