//! The processor's Prometheus metrics and the HTTP endpoint (axum) serving them.

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
    pub dedup_beyond_history: Counter,
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
        let dedup_beyond_history = Counter::default();
        registry.register(
            "dedup_beyond_history",
            "Events applied whose ids are not in the held history and which occurred before its first \
             instant: each might repeat an archived event",
            dedup_beyond_history.clone(),
        );
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
            dedup_beyond_history,
            waiting,
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` (OpenMetrics text) and `GET /healthz` on `addr`,
/// on axum, in a task of its own; fails only if `addr` cannot be bound.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use axum::http::header;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics on /metrics");
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample name the registry can export: counters end in
    /// `_total`, histograms in `_bucket`, `_sum` and `_count`. A family is
    /// rendered only once it has a label set, so each gets one here (a new
    /// family left out fails the test below as soon as a query uses it).
    fn exported() -> std::collections::BTreeSet<String> {
        let m = Metrics::new();
        let _ = m.messages.get_or_create(&OutcomeLabel { outcome: "applied" });
        let _ = m.rejected.get_or_create(&CodeLabel { code: "malformed_json" });
        let _ = m.retries.get_or_create(&WhatLabel { what: "postgres" });
        let _ = m.consumer_lag_messages.get_or_create(&WorkerLabel { worker: 0 });
        let _ = m.read_delay_seconds.get_or_create(&WorkerLabel { worker: 0 });
        let _ = m.waiting.get_or_create(&WhatLabel { what: "kafka" });
        let mut names = std::collections::BTreeSet::new();
        for line in m.render().lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
            let (name, kind) = rest.split_once(' ').unwrap();
            match kind {
                "counter" => names.extend([format!("{name}_total"), format!("{name}_created")]),
                "histogram" => {
                    names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        }
        names
    }

    /// The `stockflow_*` names in `text`.
    fn referenced(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("stockflow_") {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                out.push(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
        out
    }

    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match x {
                        serde_json::Value::String(s) if k == "expr" => out.push(s.clone()),
                        _ => exprs(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
            _ => {}
        }
    }

    fn read(path: &str) -> String {
        std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_dashboard_and_the_alert_rules_use_only_exported_metrics() {
        let exported = exported();
        assert!(exported.contains("stockflow_messages_total") && exported.contains("stockflow_lag_seconds"));
        let dashboard: serde_json::Value =
            serde_json::from_str(&read("deploy/grafana/dashboards/stockflow.json")).unwrap();
        let mut queries = Vec::new();
        exprs(&dashboard, &mut queries);
        assert!(queries.len() >= 10, "the dashboard has its queries: {queries:?}");
        let rules = read("deploy/prometheus/alerts.yml");
        let mut used: Vec<(String, String)> = Vec::new();
        for q in &queries {
            used.extend(referenced(q).into_iter().map(|m| (m, "dashboard".to_string())));
        }
        used.extend(referenced(&rules).into_iter().map(|m| (m, "alert rules".to_string())));
        let missing: Vec<_> = used.iter().filter(|(m, _)| !exported.contains(m)).collect();
        assert!(missing.is_empty(), "not exported: {missing:?}; exported: {exported:?}");
        // Each panel the issue names is there.
        for needle in [
            "stockflow_messages_total",
            "stockflow_rejected_total",
            "stockflow_lag_seconds",
            "stockflow_commit_duration_seconds_bucket",
            "stockflow_low_stock_products",
            "stockflow_retries_total",
            "stockflow_waiting",
        ] {
            assert!(
                queries.iter().any(|q| referenced(q).iter().any(|m| m == needle)),
                "no panel reads {needle}"
            );
        }
    }

    #[test]
    fn referenced_names_are_whole_words() {
        assert_eq!(
            referenced("sum(rate(stockflow_messages_total[1m])) / x_stockflow_no + stockflow_lag_seconds"),
            ["stockflow_messages_total", "stockflow_lag_seconds"]
        );
        assert!(referenced(r#"up{job="stockflow-processor"}"#).is_empty());
    }
}
