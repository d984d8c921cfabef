//! The output messages: `inventory_updates` (one per applied event),
//! `dlq` (one per rejected message) and `stock_alerts` (one per crossing of
//! a reorder level), built from a committed batch or, after a crash, from
//! what the database holds; and the at-least-once producer
//! (`--outputs at-least-once`). The exactly-once one is in
//! `transactional.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use dataflow::records::{EpochBatch, Outcome, RawMessage};
use dataflow::{EventKind, TopicNames};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde::Serialize;

use crate::postgres::{StockAlert, StockLevel, UnpublishedRow};
use crate::{SinkError, Wait};

/// A DLQ payload longer than this is cut (the full value stays in
/// `events_log.raw_event`), so that the record fits the broker's default
/// 1 MB message limit.
pub const MAX_DLQ_PAYLOAD: usize = 900_000;

/// One message for an output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMessage {
    /// Topic name.
    pub topic: String,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// JSON value.
    pub payload: Vec<u8>,
}

#[derive(Serialize)]
struct InventoryUpdate<'a> {
    event_id: &'a str,
    event_type: &'a str,
    product_id: &'a str,
    delta: i64,
    quantity_on_hand: i64,
    low_stock: bool,
    committed_at: String,
}

#[derive(Serialize)]
struct AlertMessage<'a> {
    alert_id: &'a str,
    product_id: &'a str,
    kind: &'a str,
    quantity_on_hand: i64,
    reorder_level: i32,
    raised_at: String,
}

#[derive(Serialize)]
struct DlqError<'a> {
    code: &'a str,
    detail: &'a str,
}

#[derive(Serialize)]
struct DlqRecord<'a> {
    source_topic: &'a str,
    partition: i32,
    offset: i64,
    payload: String,
    payload_encoding: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    payload_truncated: bool,
    payload_bytes: usize,
    event_id: Option<&'a str>,
    error: DlqError<'a>,
    failed_at: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The DLQ payload of a value: text when UTF-8, else base64; cut when huge.
fn dlq_payload(value: Option<&[u8]>) -> (String, &'static str, bool, usize) {
    let bytes = value.unwrap_or_default();
    let (mut text, encoding) = match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), "utf8"),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(bytes), "base64"),
    };
    let truncated = text.len() > MAX_DLQ_PAYLOAD;
    if truncated {
        let mut cut = MAX_DLQ_PAYLOAD;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    (text, encoding, truncated, bytes.len())
}

#[allow(clippy::too_many_arguments)]
fn dlq_message(
    topics: &TopicNames,
    kind: EventKind,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<&[u8]>,
    event_id: Option<&str>,
    code: &str,
    detail: &str,
    at: DateTime<Utc>,
) -> OutputMessage {
    let (payload, payload_encoding, payload_truncated, payload_bytes) = dlq_payload(value);
    let record = DlqRecord {
        source_topic: kind.topic(),
        partition,
        offset,
        payload,
        payload_encoding,
        payload_truncated,
        payload_bytes,
        event_id,
        error: DlqError { code, detail },
        failed_at: rfc3339(at),
    };
    OutputMessage { topic: topics.dlq(), key, payload: serde_json::to_vec(&record).unwrap_or_default() }
}

fn key_of(msg: &RawMessage) -> Option<Vec<u8>> {
    msg.key.clone().filter(|k| !k.is_empty())
}

/// The `stock_alerts` messages of `alerts` (keyed by product).
pub fn alert_messages<'a>(
    topics: &TopicNames,
    alerts: impl IntoIterator<Item = &'a StockAlert>,
    out: &mut Vec<OutputMessage>,
) {
    for a in alerts {
        let m = AlertMessage {
            alert_id: &a.alert_id,
            product_id: &a.product_id,
            kind: &a.kind,
            quantity_on_hand: a.quantity_on_hand,
            reorder_level: a.reorder_level,
            raised_at: rfc3339(a.raised_at),
        };
        out.push(OutputMessage {
            topic: topics.stock_alerts(),
            key: Some(a.product_id.as_bytes().to_vec()),
            payload: serde_json::to_vec(&m).unwrap_or_default(),
        });
    }
}

/// The output messages of a committed epoch, in commit order: one
/// `inventory_updates` message per applied event and one `dlq` record per
/// rejection (with the input message's key), in message order, then the
/// commit's alerts.
pub fn epoch_messages(
    topics: &TopicNames,
    batch: &EpochBatch,
    stock: &HashMap<String, StockLevel>,
    alerts: &[StockAlert],
    committed_at: DateTime<Utc>,
) -> Vec<OutputMessage> {
    let mut out = Vec::with_capacity(batch.outcomes.len() + alerts.len());
    for o in &batch.outcomes {
        match o {
            Outcome::Applied { event, .. } => {
                let level = stock
                    .get(&event.product_id)
                    .copied()
                    .unwrap_or(StockLevel { quantity_on_hand: 0, low: true });
                let u = InventoryUpdate {
                    event_id: &event.event_id,
                    event_type: event.kind().event_type(),
                    product_id: &event.product_id,
                    delta: event.delta(),
                    quantity_on_hand: level.quantity_on_hand,
                    low_stock: level.low,
                    committed_at: rfc3339(committed_at),
                };
                out.push(OutputMessage {
                    topic: topics.inventory_updates(),
                    key: Some(event.product_id.as_bytes().to_vec()),
                    payload: serde_json::to_vec(&u).unwrap_or_default(),
                });
            }
            Outcome::Rejected { msg, rejection } => out.push(dlq_message(
                topics,
                msg.kind,
                msg.partition,
                msg.offset,
                key_of(msg),
                msg.value.as_deref(),
                rejection.event_id.as_deref(),
                rejection.code.as_str(),
                &rejection.detail,
                committed_at,
            )),
            Outcome::Duplicate { .. } => {}
        }
    }
    alert_messages(topics, alerts, &mut out);
    out
}

/// The output messages of commits not yet published (after a crash),
/// rebuilt from `events_log` and `stock_alerts` as they were first meant:
/// per commit, its rows in log order, then its alerts.
pub fn republish_messages(
    topics: &TopicNames,
    rows: &[UnpublishedRow],
    alerts: &[StockAlert],
) -> Vec<OutputMessage> {
    let mut out = Vec::with_capacity(rows.len() + alerts.len());
    let mut alerts = alerts.iter().peekable();
    for r in rows {
        // The alerts of earlier commits go before this commit's rows.
        let earlier = std::iter::from_fn(|| alerts.next_if(|a| a.epoch < r.epoch));
        alert_messages(topics, earlier, &mut out);
        let Some(kind) = topics.kind_of(&r.topic) else { continue };
        if r.applied {
            let (Some(event_id), Some(product_id)) = (&r.event_id, &r.product_id) else { continue };
            let q = r.quantity_after.unwrap_or_default();
            let u = InventoryUpdate {
                event_id,
                event_type: r.event_type.as_deref().unwrap_or(kind.event_type()),
                product_id,
                delta: r.delta.unwrap_or_default(),
                quantity_on_hand: q,
                low_stock: r.low.unwrap_or(true),
                committed_at: rfc3339(r.processed_at),
            };
            out.push(OutputMessage {
                topic: topics.inventory_updates(),
                key: Some(product_id.as_bytes().to_vec()),
                payload: serde_json::to_vec(&u).unwrap_or_default(),
            });
        } else {
            let value: Option<Vec<u8>> =
                r.raw.as_ref().map(|raw| crate::postgres::raw_bytes(raw, r.raw_is_base64));
            let (code, detail) = r.error.clone().unwrap_or_default();
            out.push(dlq_message(
                topics,
                kind,
                r.partition,
                r.offset,
                r.key.clone(),
                value.as_deref(),
                r.event_id.as_deref(),
                &code,
                &detail,
                r.processed_at,
            ));
        }
    }
    alert_messages(topics, alerts, &mut out);
    out
}

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct OutputContext(Arc<Deliveries>);

impl ClientContext for OutputContext {}

impl ProducerContext for OutputContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut f) = self.0.first_error.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Sends output messages and waits until the broker has them.
///
/// Configured so that a broker outage makes it wait, not drop:
/// `message.timeout.ms = 0` (retry until delivered) and idempotence on, so
/// retries keep per-partition order (per product, commit order). Both can be
/// overridden through the pass-through options.
pub struct OutputProducer {
    producer: ThreadedProducer<OutputContext>,
    deliveries: Arc<Deliveries>,
}

impl OutputProducer {
    /// A producer from the shared client configuration.
    pub fn new(base: &ClientConfig) -> Result<Self, SinkError> {
        // A clone, never a copy of `config_map()` (which hides passwords).
        let mut config = base.clone();
        for (k, v) in [
            ("message.timeout.ms", "0"),
            ("enable.idempotence", "true"),
            ("linger.ms", "2"),
            ("compression.type", "none"),
        ] {
            if base.get(k).is_none() {
                config.set(k, v);
            }
        }
        let deliveries = Arc::new(Deliveries::default());
        let producer = config
            .create_with_context(OutputContext(deliveries.clone()))
            .map_err(|cause| SinkError::Kafka { context: "create output producer".into(), cause })?;
        Ok(OutputProducer { producer, deliveries })
    }

    /// Sends `messages` in order and blocks until all are acknowledged.
    /// While the broker does not acknowledge (down, restarting), logs one
    /// "waiting for Kafka" line and calls `waiting(true)`; `waiting(false)`
    /// once it has. A process that stops meanwhile gets
    /// [`SinkError::Interrupted`]: the next start re-sends what was not
    /// acknowledged.
    pub fn publish(&self, messages: &[OutputMessage], wait: Wait<'_>) -> Result<(), SinkError> {
        let failed_before = self.deliveries.failed.load(Ordering::Relaxed);
        for m in messages {
            let mut record = BaseRecord::to(&m.topic).payload(&m.payload);
            if let Some(k) = &m.key {
                record = record.key(k);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        if wait.stopping() {
                            return Err(SinkError::Interrupted("Kafka"));
                        }
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((cause, _)) => {
                        return Err(SinkError::Kafka { context: format!("send to {}", m.topic), cause });
                    }
                }
            }
        }
        let started = Instant::now();
        let mut waited = false;
        while let Err(e) = self.producer.flush(Duration::from_secs(2)) {
            if wait.stopping() {
                if waited {
                    (wait.waiting)(false);
                }
                return Err(SinkError::Interrupted("Kafka"));
            }
            if !waited {
                waited = true;
                (wait.waiting)(true);
                tracing::warn!(error = %e, "waiting for Kafka: output messages not acknowledged within 2 s");
            }
        }
        if waited {
            (wait.waiting)(false);
            tracing::info!(waited_s = started.elapsed().as_secs(), "Kafka acknowledged the output messages");
        }
        let failed = self.deliveries.failed.load(Ordering::Relaxed) - failed_before;
        if failed > 0 {
            let first = self.deliveries.first_error.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
            return Err(SinkError::Inconsistent(format!(
                "{failed} output messages were refused by the broker: {first}"
            )));
        }
        Ok(())
    }
}
